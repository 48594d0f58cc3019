/**
 * The aws-nacl provider end to end: the real EC2Client (credentials from the
 * SDK's default chain) against the fake EC2 server, through the same
 * read → plan → apply steps the reconcile loop takes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contains, netToCidr, subtract, toNet } from '../../../src/core/cidr.js';
import { FatalError, OwnershipConflictError, QuotaExceededError, RetryableError, SourceError } from '../../../src/core/errors.js';
import { planTarget } from '../../../src/core/plan.js';
import { WriteBudget } from '../../../src/core/queue.js';
import { runPass } from '../../../src/core/reconcile.js';
import { awsNaclConfigSchema } from '../../../src/providers/aws-nacl/index.js';
import { startFakeEc2, type FakeEc2 } from '../../fakes/ec2/server.js';
import { HOUR, NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import { TYPICAL_ACL, bandEntries, cidrOf, claimsInTags, harness, log, ownershipProblems, useEnvCredentials } from './harness.js';
import type { Decision } from '../../../src/core/types.js';
import type { DecisionSource } from '../../../src/sources/source.js';

let fake: FakeEc2;
let restoreEnv: () => void;

beforeAll(async () => {
  restoreEnv = useEnvCredentials();
  fake = await startFakeEc2();
});

afterAll(async () => {
  await fake.close();
  restoreEnv();
});

const sec = (ms: number) => Math.ceil(ms / 1000);
const foreignEntries = (aclId: string) => fake.entries(aclId).filter((e) => e.ruleNumber >= 100);

describe('providers/aws-nacl: applying bans', () => {
  it('applies N bans (IPv4 and IPv6) as exactly N deny entries in the band, records them in tags, and writes nothing on the second pass', async () => {
    const h = await harness({ fake });
    const before = foreignEntries(h.aclId);
    const bans = [ban('192.0.2.7'), ban('198.51.100.0/24'), ban('203.0.113.9'), ban('2001:db8::1'), ban('2001:db8:1::/48', { expiresAt: NOW + 2 * HOUR })];
    fake.resetCounters();

    const first = await providerPass(h.provider, bans);
    const firstCalls = { ...fake.calls };

    expect(first.result!.outcomes.map((o) => o.status)).toEqual(Array(5).fill('applied'));
    const entries = bandEntries(fake, h.aclId);
    expect(entries.map(cidrOf).sort()).toEqual(bans.map((b) => b.cidr).sort());
    expect(entries.every((e) => e.ruleAction === 'deny' && e.protocol === '-1')).toBe(true);
    expect(entries.map((e) => e.ruleNumber)).toEqual([10, 11, 12, 13, 14]);
    expect(claimsInTags(fake.tags(h.aclId))).toEqual(
      entries.map((e) => ({ rule: e.ruleNumber, cidr: cidrOf(e), expSeconds: sec(bans.find((b) => b.cidr === cidrOf(e))!.expiresAt) })),
    );
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
    expect(foreignEntries(h.aclId)).toEqual(before);
    expect(fake.tags(h.aclId).Name).toBe('pbx-subnets');

    await h.closeAll(); // the first run ends and releases its lease
    fake.resetCounters();
    const second = await providerPass(await h.fresh(), bans);
    expect(second.plan.changes).toEqual([]);
    expect(fake.calls).toEqual({ DescribeNetworkAcls: 1 });
    console.log(`aws-nacl: ${bans.length} bans from an empty band: pass 1 made ${JSON.stringify(firstCalls)}; pass 2 made ${JSON.stringify(fake.calls)}`);
    // One entry call per ban; the lease and every claim go out in one CreateTags.
    expect(firstCalls.CreateNetworkAclEntry).toBe(5);
    expect(firstCalls.CreateTags).toBe(1);
    expect(firstCalls.DeleteTags ?? 0).toBe(0);
  });

  it('enforces the highest-priority bans when they outnumber the free entries, reports the rest unenforced: capacity, and never hits the entry quota', async () => {
    // Quota 20 per family; `*` and rule 100/101 are foreign: 18 IPv4 and 18 IPv6 entries are ours to use.
    const h = await harness({ fake });
    const manual = ['192.0.2.1', '192.0.2.2', '192.0.2.3'].map((ip) => ban(ip, { originClass: 'manual' }));
    const list = Array.from({ length: 25 }, (_, i) => ban(`198.51.100.${i + 1}`, { originClass: 'list', expiresAt: NOW + (i + 1) * HOUR }));
    const v6 = Array.from({ length: 20 }, (_, i) => ban(`2001:db8::${(i + 1).toString(16)}`));
    fake.resetCounters();

    const { plan, result } = await providerPass(h.provider, [...list, ...v6, ...manual]);

    expect(result!.outcomes.every((o) => o.status === 'applied')).toBe(true);
    const v4Entries = bandEntries(fake, h.aclId).filter((e) => e.cidrBlock);
    const v6Entries = bandEntries(fake, h.aclId).filter((e) => e.ipv6CidrBlock);
    expect(v4Entries).toHaveLength(18);
    expect(v6Entries).toHaveLength(18);
    // Manual bans first, then the list bans that expire last.
    const kept = new Set(v4Entries.map(cidrOf));
    for (const b of manual) expect(kept.has(b.cidr)).toBe(true);
    expect(list.filter((b) => kept.has(b.cidr)).map((b) => b.cidr)).toEqual(list.slice(10).map((b) => b.cidr));
    expect(plan.unenforced.map((u) => u.reason)).toEqual(Array(12).fill('capacity'));
    expect(plan.unenforced.filter((u) => u.family === 4).map((u) => u.cidr).sort()).toEqual(list.slice(0, 10).map((b) => b.cidr).sort());
    expect(plan.unenforced.filter((u) => u.family === 6)).toHaveLength(2);
    expect(plan.capacity).toEqual([{ pool: 'ingress', rules: { used: 36, total: 36 }, cidrs: { used: 36, total: 36 } }]);
    // The NACL is exactly at its quota and the API never refused an entry.
    expect(fake.entries(h.aclId).filter((e) => !e.egress && e.cidrBlock)).toHaveLength(20);
    expect(fake.errors.NetworkAclEntryLimitExceeded).toBeUndefined();
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);

    // A new manual ban evicts the list ban that expires first, replacing its entry in place.
    fake.resetCounters();
    const extra = ban('192.0.2.99', { originClass: 'manual' });
    const next = await providerPass(await h.fresh(), [...list, ...v6, ...manual, extra]);
    expect(next.plan.changes.map((c) => [c.kind, c.removed, c.added])).toEqual([['update', [list[10]!.cidr], [extra.cidr]]]);
    expect(fake.calls.ReplaceNetworkAclEntry).toBe(1);
    expect(fake.calls.CreateNetworkAclEntry ?? 0).toBe(0);
    expect(fake.calls.DeleteNetworkAclEntry ?? 0).toBe(0);
    expect(fake.errors.NetworkAclEntryLimitExceeded).toBeUndefined();
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });

  it('offers only the rule numbers it can claim when the NACL has few tags left, so TagLimitExceeded never comes back', async () => {
    const tags = Object.fromEntries(Array.from({ length: 46 }, (_, i) => [`team-${i}`, 'x']));
    const h = await harness({ fake, acl: { ...TYPICAL_ACL, tags } }); // 46 tags: room for the apply lease and 3 claim tags of 4 rule numbers
    const bans = Array.from({ length: 15 }, (_, i) => ban(`203.0.113.${i + 1}`));

    const { plan } = await providerPass(h.provider, bans);

    // Rule numbers 10-11 (group 8), 12-15 and 16-19: ten entries.
    expect(bandEntries(fake, h.aclId).map((e) => e.ruleNumber)).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    expect(plan.unenforced).toHaveLength(5);
    expect(plan.warnings.join('\n')).toMatch(/46 of 50 tags \(46 not ours, one kept for the apply lease\)/);
    // 50 while the run holds its lease; the lease is released when the run ends.
    expect(Object.keys(fake.tags(h.aclId))).toHaveLength(50);
    await h.closeAll();
    expect(Object.keys(fake.tags(h.aclId))).toHaveLength(49);
    expect(fake.errors.TagLimitExceeded).toBeUndefined();
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });

  it('replaces the entry in place when the CIDR of a slot changes, and refreshes an expiry with a tag write only', async () => {
    const h = await harness({ fake });
    const a = ban('192.0.2.10');
    const b = ban('192.0.2.11', { expiresAt: NOW + 3 * HOUR });
    await providerPass(h.provider, [a, b]);
    fake.resetCounters();

    const c = ban('192.0.2.12');
    // A shortened ban is recorded at once.
    const moved = ban('192.0.2.11', { expiresAt: NOW + HOUR });
    const { plan } = await providerPass(await h.fresh(), [c, moved]);

    expect(plan.changes.map((x) => [x.kind, x.slot, x.reason])).toEqual([
      ['update', '11', 'refresh recorded expiry'],
      ['update', '10', 'ban 1, lift 1'],
    ]);
    expect(fake.calls.ReplaceNetworkAclEntry).toBe(1);
    expect(fake.calls.CreateNetworkAclEntry).toBeUndefined();
    expect(fake.calls.DeleteNetworkAclEntry).toBeUndefined();
    expect(bandEntries(fake, h.aclId).map((e) => [e.ruleNumber, cidrOf(e)])).toEqual([
      [10, c.cidr],
      [11, moved.cidr],
    ]);
    expect(claimsInTags(fake.tags(h.aclId))).toEqual([
      { rule: 10, cidr: c.cidr, expSeconds: sec(c.expiresAt) },
      { rule: 11, cidr: moved.cidr, expSeconds: sec(moved.expiresAt) },
    ]);
  });

  it('splits an enforced range around a new whitelist entry with every piece covered after each EC2 call', async () => {
    // Prepare: 10.0.0.0/24 is enforced; then 10.0.0.5 is whitelisted and the ban becomes 8 pieces.
    const h = await harness({ fake });
    await providerPass(h.provider, [ban('10.0.0.0/24')]);
    const pieces = subtract(toNet('10.0.0.0/24'), [toNet('10.0.0.5/32')]).map(netToCidr);
    const gaps: string[] = [];
    fake.onMutation = (action) => {
      const held = bandEntries(fake, h.aclId).map((e) => toNet(cidrOf(e)));
      const bare = pieces.filter((c) => !held.some((n) => contains(n, toNet(c))));
      if (bare.length > 0) gaps.push(`${action}: ${bare.join(' ')}`);
    };

    // Act
    try {
      const { result } = await providerPass(await h.fresh(), pieces.map((c) => ban(c)));
      expect(result!.outcomes.every((o) => o.status === 'applied')).toBe(true);
    } finally {
      fake.onMutation = undefined;
    }

    // Assess
    expect(gaps).toEqual([]);
    expect(bandEntries(fake, h.aclId).map(cidrOf).sort()).toEqual([...pieces].sort());
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });

  it('stops at the write budget without leaving claims for the entries it did not write, and goes on in the next run', async () => {
    const h = await harness({ fake });
    const bans = Array.from({ length: 10 }, (_, i) => ban(`192.0.2.${i + 1}`));

    const first = await providerPass(h.provider, bans, { budget: 3 });

    expect(first.result!.outcomes.filter((o) => o.status === 'applied')).toHaveLength(3);
    expect(first.result!.outcomes.filter((o) => o.skipReason === 'budget')).toHaveLength(7);
    expect(bandEntries(fake, h.aclId)).toHaveLength(3);
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
    await providerPass(await h.fresh(), bans, { budget: 100 });
    expect(bandEntries(fake, h.aclId).map(cidrOf).sort()).toEqual(bans.map((b) => b.cidr).sort());
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });

  it('starts no write once the run is aborted', async () => {
    const h = await harness({ fake });
    fake.resetCounters();

    const { result } = await providerPass(h.provider, [ban('192.0.2.1'), ban('192.0.2.2')], { signal: AbortSignal.abort() });

    expect(result!.outcomes.map((o) => o.skipReason)).toEqual(['aborted', 'aborted']);
    expect(fake.mutatingCalls).toBe(0);
  });

  it('after an abort mid-apply (a deadline), releases its lease on close with the SDK attempts only', async () => {
    // Prepare: the run is aborted as its first entry write goes out (one write at a time); then EC2 throttles every write.
    const h = await harness({ fake, config: { queue: { concurrency: 1, interval_cap: 1000, interval: '1s' } } });
    const stop = new AbortController();
    fake.beforeAction = (action) => {
      if (action === 'CreateNetworkAclEntry') stop.abort();
    };
    try {
      const { result } = await providerPass(h.provider, [ban('192.0.2.1'), ban('192.0.2.2')], { signal: stop.signal });
      expect(result!.outcomes.filter((o) => o.skipReason === 'aborted')).toHaveLength(1);
      fake.beforeAction = undefined;
      fake.setFaults({ throttleRate: 1 });
      fake.resetCounters();
      // Act
      await h.closeAll();
      // Assess: 2 SDK attempts (harness sdk_max_attempts), none of our own 4 around them.
      expect(fake.calls.DeleteTags).toBe(2);
    } finally {
      fake.beforeAction = undefined;
      fake.setFaults({});
    }
  });

  it('manages ingress and egress as two pools when direction is both', async () => {
    const h = await harness({ fake, config: { direction: 'both' } });
    const bans = [ban('192.0.2.7'), ban('2001:db8::7')];

    const { plan } = await providerPass(h.provider, bans);

    expect(plan.capacity.map((c) => c.pool)).toEqual(['ingress', 'egress']);
    expect(bandEntries(fake, h.aclId, false).map(cidrOf)).toEqual(['192.0.2.7/32', '2001:db8::7/128']);
    expect(bandEntries(fake, h.aclId, true).map(cidrOf)).toEqual(['192.0.2.7/32', '2001:db8::7/128']);
    expect(ownershipProblems(fake, h.aclId, false)).toEqual([]);
    expect(ownershipProblems(fake, h.aclId, true)).toEqual([]);
  });
});

describe('providers/aws-nacl: ownership', () => {
  it('fails with a conflict naming the rule number when a foreign entry sits in the band, and writes nothing', async () => {
    const h = await harness({ fake, acl: { ...TYPICAL_ACL, entries: [...TYPICAL_ACL.entries!, { rule: 15, cidr: '203.0.113.0/24', protocol: '6', ports: [22, 22] }] } });
    fake.resetCounters();

    const { plan, result } = await providerPass(h.provider, [ban('192.0.2.7')]);

    expect(plan.error).toMatch(/ownership conflict: rule 15 ingress allow tcp 22 203\.0\.113\.0\/24 is inside the ban band 10-99/);
    expect(plan.changes).toEqual([]);
    expect(result).toBeUndefined();
    expect(fake.mutatingCalls).toBe(0);
  });

  it("never removes entries of the same owner outside its band (another bouncer's): a conflict, and nothing written", async () => {
    // Prepare: bouncer A (band 10-19) enforces three bans; bouncer B shares the owner with band 20-30.
    const h = await harness({ fake, config: { rule_band: { start: 10, end: 19 } } });
    await providerPass(h.provider, [ban('192.0.2.7'), ban('198.51.100.0/24'), ban('2001:db8::7')]);
    const before = bandEntries(fake, h.aclId, false, { start: 10, end: 19 }).map(cidrOf);
    const b = await h.fresh({ rule_band: { start: 20, end: 30 } });
    fake.resetCounters();
    // Act: B's pass has one ban of its own.
    const { plan, result } = await providerPass(b, [ban('203.0.113.9')]);
    // Assess: B names the rule numbers, plans nothing and writes nothing; A's entries stay.
    expect(before).toHaveLength(3);
    expect(plan.error).toMatch(/rule 10 \(ingress\), rule 10 ingress deny all .* is claimed by owner test but lies outside rule_band 20-30: another cloud-bouncer with owner test writes to this NACL/);
    expect(plan.conflicts.map((c) => c.slot).sort()).toEqual(['10', '11', '12']);
    expect(plan.changes).toEqual([]);
    expect(result).toBeUndefined();
    expect(fake.mutatingCalls).toBe(0);
    expect(bandEntries(fake, h.aclId, false, { start: 10, end: 19 }).map(cidrOf)).toEqual(before);
  });

  it('refuses to apply a plan when a foreign entry appeared in the band since the plan, writing nothing', async () => {
    const h = await harness({ fake });
    const state = await h.provider.read();
    const plan = planTarget({ target: 'pbx-nacl', provider: 'aws-nacl', bans: [ban('192.0.2.7'), ban('192.0.2.8')], state, now: NOW });
    fake.putEntry(h.aclId, { rule: 11, cidr: '198.51.100.0/24', action: 'deny' });
    fake.resetCounters();

    const applying = h.provider.apply(plan.changes, { budget: new WriteBudget(100) });

    await expect(applying).rejects.toThrow(OwnershipConflictError);
    await expect(applying).rejects.toThrow(/rule 11 ingress deny all 198\.51\.100\.0\/24/);
    expect(fake.mutatingCalls).toBe(0);
  });

  it('reads the default entries (rule 32767 for IPv4, 32768 for IPv6) as slot *, one per family against the quota', async () => {
    const h = await harness({ fake });

    const state = await h.provider.read();

    expect(state.foreign.filter((f) => f.slot === '*').map((f) => f.description)).toEqual(['rule * ingress deny all 0.0.0.0/0', 'rule * ingress deny all ::/0']);
    expect(state.foreign.map((f) => f.slot)).not.toContain('32768');
    // 20 per family, minus `*` and the allow entry at 100 (IPv4) or 101 (IPv6).
    expect(state.pools[0]!.maxRulesPerFamily).toEqual({ 4: 18, 6: 18 });
  });

  it('warns that the NACL enforces nothing while it is associated with no subnet, and stops once a subnet is associated', async () => {
    const h = await harness({ fake, acl: { ...TYPICAL_ACL, subnets: [] } });
    const unassociated = /^network ACL acl-[0-9a-f]+ is associated with no subnet: its entries filter no traffic/;

    const before = await providerPass(h.provider, [ban('192.0.2.7')], { apply: false });
    fake.state.associate(h.aclId, 'subnet-0pbx0000000000001');
    const after = await providerPass(h.provider, [ban('192.0.2.7')], { apply: false });

    expect(before.plan.warnings).toEqual([expect.stringMatching(unassociated)]);
    expect(before.plan.warnings[0]).toContain(h.aclId);
    expect(after.plan.warnings).toEqual([]);
  });

  it('warns, naming the rule, when a foreign allow entry before the band lets everything in', async () => {
    const h = await harness({ fake, acl: { ...TYPICAL_ACL, entries: [...TYPICAL_ACL.entries!, { rule: 5, cidr: '0.0.0.0/0' }] } });
    const { plan } = await providerPass(h.provider, [ban('192.0.2.7')], { apply: false });
    expect(plan.warnings).toEqual([expect.stringMatching(/^rule 5 \(ingress\) allows all from 0\.0\.0\.0\/0 and is evaluated before the ban band 10-99: bans are useless/)]);
  });
});

function decision(value: string, expiresAt: number): Decision {
  const b = ban(value, { expiresAt });
  return { source: 'lapi', origin: 'crowdsec', originClass: 'local', scenario: 'crowdsecurity/ssh-bf', scope: 'ip', type: 'ban', value, cidr: b.cidr, family: b.family, prefix: b.prefix, expiresAt };
}

function source(answer: () => Decision[]): DecisionSource {
  return {
    name: 'lapi',
    async snapshot() {
      return { decisions: answer(), whitelist: [], skipped: 0, skippedSamples: [], deletedCount: 0, bytes: 0, kind: 'full' as const };
    },
  };
}

/** Fills the NACL's tags up to EC2's 50 with tags of another tool. */
function fillTags(aclId: string): void {
  for (let i = 0; Object.keys(fake.tags(aclId)).length < 50; i++) fake.setTag(aclId, `backup:policy-${i}`, 'daily');
}

describe('providers/aws-nacl: lifetimes and plan', () => {
  it('removes an entry on the next pass once the expiry recorded in its tags passes while the LAPI is down', async () => {
    const h = await harness({ fake });
    let up = true;
    const lapi = source(() => {
      if (!up) throw new SourceError('lapi', 'connect ECONNREFUSED 127.0.0.1:8080');
      return [decision('192.0.2.1', NOW + HOUR), decision('192.0.2.2', NOW + 5 * HOUR), decision('2001:db8::1', NOW + 30 * 60_000)];
    });
    const deps = (provider: typeof h.provider, now: number) => ({
      sources: [lapi],
      targets: [{ provider, maxWritesPerRun: 100 }],
      log,
      now: () => now,
      resolve: async () => [],
      whitelist: { cidrs: [], neverBan: [], hostnames: [] },
    });
    const first = await runPass(deps(h.provider, NOW), 'apply');
    expect(first.errors).toEqual([]);
    expect(bandEntries(fake, h.aclId).map(cidrOf).sort()).toEqual(['192.0.2.1/32', '192.0.2.2/32', '2001:db8::1/128']);
    const kept = bandEntries(fake, h.aclId).find((e) => cidrOf(e) === '192.0.2.2/32')!.ruleNumber;

    // Two hours later, in a new process, with the LAPI down: only the tags know the expiries.
    up = false;
    const later = NOW + 2 * HOUR;
    fake.resetCounters();
    const second = await runPass(deps(await h.fresh({}, later), later), 'apply');

    expect(second.plan.failStatic).toBe(true);
    expect(second.plan.targets[0]!.changes.map((c) => [c.kind, c.removed]).sort()).toEqual([
      ['delete', ['192.0.2.1/32']],
      ['delete', ['2001:db8::1/128']],
    ]);
    expect(bandEntries(fake, h.aclId).map(cidrOf)).toEqual(['192.0.2.2/32']);
    expect(claimsInTags(fake.tags(h.aclId))).toEqual([{ rule: kept, cidr: '192.0.2.2/32', expSeconds: sec(NOW + 5 * HOUR) }]);
    expect(fake.calls.CreateNetworkAclEntry).toBeUndefined();
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });

  it('never writes during plan: the fake sees only DescribeNetworkAcls calls', async () => {
    const h = await harness({ fake });
    await providerPass(h.provider, [ban('192.0.2.1'), ban('192.0.2.2', { expiresAt: NOW + HOUR })]);
    await h.closeAll();
    const before = fake.entries(h.aclId);
    const tagsBefore = fake.tags(h.aclId);
    fake.resetCounters();

    // Pending: a create, a delete (expired), a replace candidate and an expiry refresh.
    const bans = [ban('192.0.2.1', { expiresAt: NOW + 6 * HOUR }), ban('198.51.100.1'), ban('2001:db8::5')];
    const { plan, result } = await providerPass(await h.fresh(), bans, { apply: false, now: NOW + 2 * HOUR });

    expect(plan.changes.length).toBeGreaterThan(0);
    expect(result).toBeUndefined();
    expect(Object.keys(fake.calls)).toEqual(['DescribeNetworkAcls']);
    expect(fake.entries(h.aclId)).toEqual(before);
    expect(fake.tags(h.aclId)).toEqual(tagsBefore);
    // The plan speaks AWS: rule numbers and direction for every change, family on the change itself.
    for (const c of plan.changes) {
      expect(plan.slots![`${c.pool}/${c.slot}`]).toEqual({ network_acl_id: h.aclId, direction: 'ingress', rule_number: Number(c.slot) });
      expect([4, 6]).toContain(c.family);
    }
  });
});

describe('providers/aws-nacl: errors and config', () => {
  it('reports an action the IAM policy lacks as a fatal error, and makes no entry write', async () => {
    const h = await harness({ fake });
    fake.denied.add('CreateTags');
    try {
      fake.resetCounters();
      const { result } = await providerPass(h.provider, [ban('192.0.2.7')]);
      const o = result!.outcomes[0]!;
      expect(o.status).toBe('failed');
      expect(o.error).toBeInstanceOf(FatalError);
      expect((o.error as FatalError).code).toBe('UnauthorizedOperation');
      expect(fake.calls.CreateTags).toBe(1);
      expect(fake.calls.CreateNetworkAclEntry).toBeUndefined();
    } finally {
      fake.denied.clear();
    }
  });

  it('gives up on a throttled call after bounded SDK and own retries, as a retryable error', async () => {
    const h = await harness({ fake, config: { retry: { attempts: 2, base_delay: '5ms', max_delay: '40ms' } } }); // 2 SDK attempts × 2 own
    fake.setFaults({ throttleRate: 1 });
    try {
      fake.resetCounters();
      const { result } = await providerPass(h.provider, [ban('192.0.2.7')]);
      const o = result!.outcomes[0]!;
      expect(o.error).toBeInstanceOf(RetryableError);
      expect((o.error as RetryableError).code).toBe('RequestLimitExceeded');
      // The claim: 4 attempts. Then the tag it may have left is cleaned up, bounded the same way.
      expect(fake.calls.CreateTags).toBe(4);
      expect(fake.calls.DeleteTags).toBeLessThanOrEqual(4);
      expect(h.provider.stats().errors.RequestLimitExceeded).toBe(fake.calls.CreateTags! + (fake.calls.DeleteTags ?? 0));
      expect(fake.calls.CreateNetworkAclEntry).toBeUndefined();
      expect(bandEntries(fake, h.aclId)).toEqual([]);
    } finally {
      fake.setFaults({});
    }
  });

  it('fails a call EC2 does not answer within request_timeout as retryable, instead of waiting for it', async () => {
    // Every answer comes 4 s late; the per-request timeout is 1 s (the minimum; 2 SDK attempts × 2 own retries).
    const h = await harness({ fake, config: { request_timeout: '1s', retry: { attempts: 2, base_delay: '5ms', max_delay: '40ms' } } });
    fake.setFaults({ latencyMs: 4_000 });
    try {
      const err = await h.provider.read().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(RetryableError);
      expect((err as Error).message).toMatch(/DescribeNetworkAcls .*(timed? ?out|exceeded the configured 1000 ms)/i);
    } finally {
      fake.setFaults({});
    }
  });

  it('reports the bans as unenforced: quota and writes no entry when another tool fills the 50 tags between the read and the claim write', async () => {
    // Prepare: the read sees room for the claims; the NACL's tags are full when the CreateTags arrives.
    const h = await harness({ fake });
    const deps = {
      sources: [source(() => [decision('192.0.2.7', NOW + HOUR), decision('2001:db8::7', NOW + HOUR)])],
      targets: [{ provider: h.provider, maxWritesPerRun: 100 }],
      log,
      now: () => NOW,
      resolve: async () => [],
      whitelist: { cidrs: [], neverBan: [], hostnames: [] },
    };
    fake.beforeAction = (action) => {
      if (action === 'CreateTags') fillTags(h.aclId);
    };
    fake.resetCounters();

    // Act
    let pass: Awaited<ReturnType<typeof runPass>>;
    try {
      pass = await runPass(deps, 'apply');
    } finally {
      fake.beforeAction = undefined;
    }

    // Assess: a capacity race, not a fatal error; nothing written, no claim left behind.
    expect(pass.plan.targets[0]!.unenforced.map((u) => [u.cidr, u.reason])).toEqual([
      ['192.0.2.7/32', 'quota'],
      ['2001:db8::7/128', 'quota'],
    ]);
    expect(pass.fatal).toBe(false);
    expect(pass.errors.join('\n')).toMatch(/TagLimitExceeded.*already holds 50 tags/);
    expect(pass.errors.join('\n')).toMatch(/claims of ingress rules 10, 11/);
    expect(fake.errors.TagLimitExceeded).toBe(1);
    expect(fake.calls.CreateNetworkAclEntry).toBeUndefined();
    expect(bandEntries(fake, h.aclId)).toEqual([]);
    expect(claimsInTags(fake.tags(h.aclId))).toEqual([]);
    // The next pass sees the full tags and claims nothing it has no tag for.
    const next = await providerPass(await h.fresh(), [ban('192.0.2.7')], { apply: false });
    expect(next.plan.changes).toEqual([]);
    expect(next.plan.unenforced.map((u) => u.reason)).toEqual(['capacity']);
  });

  it('fails the creates with QuotaExceededError but writes no entry when the tags fill up under a lease held from an earlier apply', async () => {
    // Prepare: a first apply holds rules 10 and 11 (claim tag of group 8) and keeps its lease.
    const h = await harness({ fake });
    const held = [ban('192.0.2.1'), ban('192.0.2.2')];
    await providerPass(h.provider, held);
    fake.beforeAction = (action) => {
      if (action === 'CreateTags') fillTags(h.aclId);
    };
    fake.resetCounters();

    // Act: rule 12 needs a new claim tag (group 12).
    let result: Awaited<ReturnType<typeof providerPass>>['result'];
    try {
      ({ result } = await providerPass(h.provider, [...held, ban('192.0.2.3')]));
    } finally {
      fake.beforeAction = undefined;
    }

    // Assess
    const o = result!.outcomes[0]!;
    expect([o.change.kind, o.change.slot, o.status]).toEqual(['create', '12', 'failed']);
    expect(o.error).toBeInstanceOf(QuotaExceededError);
    expect((o.error as QuotaExceededError).message).toMatch(/claims of ingress rule 12\b/);
    expect(fake.calls.CreateTags).toBe(1);
    expect(fake.calls.CreateNetworkAclEntry).toBeUndefined();
    expect(bandEntries(fake, h.aclId).map(cidrOf)).toEqual(['192.0.2.1/32', '192.0.2.2/32']);
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });

  it('validates the target config with messages that name what was expected', () => {
    const base = { region: 'eu-west-1', network_acl_id: 'acl-0123456789abcdef0' };
    const defaults = awsNaclConfigSchema.parse(base);
    expect(defaults).toMatchObject({ direction: 'ingress', rule_band: { start: 10, end: 99 }, entries_per_family: 20, sdk_max_attempts: 3, request_timeout: 10_000, lease_settle: 1_000, lease_ttl: 120_000 });
    const issue = (over: Record<string, unknown>) => awsNaclConfigSchema.safeParse({ ...base, ...over }).error?.issues[0];
    expect(issue({ rule_band: { start: 120, end: 100 } })?.message).toBe('expected start <= end, got start 120 and end 100');
    expect(issue({ rule_band: { start: 1, end: 32767 } })?.message).toMatch(/<= 32766/);
    expect(issue({ entries_per_family: 41 })?.message).toMatch(/at most 40/);
    expect(issue({ network_acl_id: 'sg-123' })?.message).toMatch(/network ACL id/);
    expect(issue({ access_key_id: 'AKIA…' })?.code).toBe('unrecognized_keys');
    expect(issue({ lease_settle: '5s', lease_ttl: '5s' })).toMatchObject({ path: ['lease_ttl'], message: 'expected lease_ttl longer than lease_settle' });
    expect(issue({ lease_settle: '2m' })?.message).toMatch(/at most 1m/);
  });
});
