/**
 * Shared set-up for the aws-nacl tests: a fake EC2 server, a NACL, and the
 * real provider (real `EC2Client`, credentials from the SDK's default chain:
 * the environment variables set here).
 */
import { pino } from 'pino';
import { awsNaclConfigSchema, provider as awsNacl } from '../../../src/providers/aws-nacl/index.js';
import { startFakeEc2, type FakeEc2, type SeedAcl } from '../../fakes/ec2/server.js';
import type { FakeEntry } from '../../fakes/ec2/state.js';
import type { Provider } from '../../../src/providers/provider.js';
import { NOW } from '../../helpers/bans.js';

export const OWNER = 'test';
export const log = pino({ level: 'silent' });

/** The default chain reads these first; no IMDS lookups in tests. */
export function useEnvCredentials(): () => void {
  const saved = { ...process.env };
  process.env.AWS_ACCESS_KEY_ID = 'AKIAFAKEFAKEFAKEFAKE';
  process.env.AWS_SECRET_ACCESS_KEY = 'fake-secret-for-the-local-fake-only';
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  delete process.env.AWS_PROFILE;
  delete process.env.AWS_SESSION_TOKEN;
  return () => {
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_EC2_METADATA_DISABLED', 'AWS_PROFILE', 'AWS_SESSION_TOKEN']) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  };
}

/** A NACL as an operator would have it: allow-all at rule 100 (IPv4 and IPv6) in both directions, plus the `*` entries. */
export const TYPICAL_ACL: SeedAcl = {
  entries: [
    { rule: 100, cidr: '0.0.0.0/0' },
    { rule: 101, cidr: '::/0' },
    { rule: 100, cidr: '0.0.0.0/0', egress: true },
    { rule: 101, cidr: '::/0', egress: true },
  ],
  tags: { Name: 'pbx-subnets' },
};

export interface Harness {
  fake: FakeEc2;
  aclId: string;
  provider: Provider;
  /**
   * A new provider instance, as the next process would create it (nothing
   * kept in memory). The instances created before are closed first, as a
   * process that exits closes its provider (which releases the apply lease).
   */
  fresh(over?: Record<string, unknown>, now?: number): Promise<Provider>;
  /** Closes every instance this harness created (the end of the last run). */
  closeAll(): Promise<void>;
  config: Record<string, unknown>;
}

export async function harness(opts: { acl?: SeedAcl; quota?: number; config?: Record<string, unknown>; fake?: FakeEc2; now?: () => number } = {}): Promise<Harness> {
  const fake = opts.fake ?? (await startFakeEc2({ quota: opts.quota }));
  const aclId = fake.addAcl(opts.acl ?? TYPICAL_ACL);
  const config: Record<string, unknown> = {
    region: 'eu-west-1',
    network_acl_id: aclId,
    endpoint: fake.url,
    rule_band: { start: 10, end: 99 },
    sdk_max_attempts: 2,
    request_timeout: '5s',
    // Tests do not wait on the production rate limit; the default queue is asserted separately.
    queue: { concurrency: 4, interval_cap: 1000, interval: '1s' },
    retry: { attempts: 4, base_delay: '5ms', max_delay: '40ms' },
    // The lease's read-back wait is 2 s in production; tests need only the order of events.
    lease_settle: '50ms',
    lease_ttl: '30s',
    ...opts.config,
  };
  const created: Provider[] = [];
  const closeAll = async () => {
    for (const p of created.splice(0)) await p.close?.();
  };
  const fresh = async (over: Record<string, unknown> = {}, now?: number) => {
    await closeAll();
    const p = await awsNacl.create(awsNaclConfigSchema.parse({ ...config, ...over }), { target: 'pbx-nacl', owner: OWNER, log, now: now !== undefined ? () => now : (opts.now ?? (() => NOW)) });
    created.push(p);
    return p;
  };
  return { fake, aclId, provider: await fresh(), fresh, closeAll, config };
}

export interface ClaimRecord {
  rule: number;
  cidr: string;
  expSeconds: number;
}

/**
 * Our claims as the NACL's tags hold them, parsed here with a plain regex
 * (not the module under test): `cloud-bouncer:test:<dir>:<base>` = `<rule>=<cidr>@<sec> …`.
 */
export function claimsInTags(tags: Record<string, string>, egress = false): ClaimRecord[] {
  const dir = egress ? 'egress' : 'ingress';
  const out: ClaimRecord[] = [];
  for (const [key, value] of Object.entries(tags)) {
    const m = new RegExp(`^cloud-bouncer:${OWNER}:${dir}:(\\d+)$`).exec(key);
    if (!m) continue;
    for (const rec of value.split(' ')) {
      const r = /^(\d+)=(\S+)@(\d+)$/.exec(rec);
      if (!r) throw new Error(`unreadable claim record ${rec} in ${key}`);
      out.push({ rule: Number(r[1]), cidr: r[2]!, expSeconds: Number(r[3]) });
    }
  }
  return out.sort((a, b) => a.rule - b.rule);
}

export function cidrOf(e: FakeEntry): string {
  return (e.cidrBlock ?? e.ipv6CidrBlock)!;
}

export function bandEntries(fake: FakeEc2, aclId: string, egress = false, band = { start: 10, end: 99 }): FakeEntry[] {
  return fake
    .entries(aclId)
    .filter((e) => e.egress === egress && e.ruleNumber >= band.start && e.ruleNumber <= band.end)
    .sort((a, b) => a.ruleNumber - b.ruleNumber);
}

/**
 * The ownership invariant, checked on the NACL itself: every entry in the
 * band is a deny-all entry recorded by a claim with the same CIDR, every
 * claim has its entry, and no claim tag is empty or left over.
 */
export function ownershipProblems(fake: FakeEc2, aclId: string, egress = false): string[] {
  const problems: string[] = [];
  const tags = fake.tags(aclId);
  const claims = claimsInTags(tags, egress);
  const entries = bandEntries(fake, aclId, egress);
  const byRule = new Map(claims.map((c) => [c.rule, c]));
  for (const e of entries) {
    const c = byRule.get(e.ruleNumber);
    if (!c) problems.push(`entry ${e.ruleNumber} has no claim`);
    else if (c.cidr !== cidrOf(e)) problems.push(`entry ${e.ruleNumber} holds ${cidrOf(e)} but its claim says ${c.cidr}`);
    if (e.ruleAction !== 'deny' || e.protocol !== '-1') problems.push(`entry ${e.ruleNumber} is not deny-all`);
  }
  for (const c of claims) if (!entries.some((e) => e.ruleNumber === c.rule)) problems.push(`claim ${c.rule} has no entry (orphan claim)`);
  if (new Set(claims.map((c) => c.rule)).size !== claims.length) problems.push('a rule is claimed twice');
  for (const [k, v] of Object.entries(tags)) if (k.startsWith('cloud-bouncer:') && v.trim() === '') problems.push(`empty claim tag ${k}`);
  return problems;
}

export const LEASE_KEY = `cloud-bouncer:${OWNER}:lease`;

/**
 * Time passes between scheduled runs: a lease that a crashed run left behind
 * has expired by the next one (`lease_ttl` bounds it). Moves the expiry of a
 * leftover lease into the past instead of waiting; true when there was one.
 */
export function expireLease(fake: FakeEc2, aclId: string): boolean {
  const value = fake.tags(aclId)[LEASE_KEY];
  if (value === undefined) return false;
  fake.setTag(aclId, LEASE_KEY, value.replace(/@\d+$/, '@1'));
  return true;
}
