/**
 * The `aws-nacl` target: bans as deny entries in an AWS VPC network ACL.
 *
 * Entries. One CIDR per entry, `RuleAction=deny`, protocol `-1` (all
 * traffic), in a configured band of rule numbers (`rule_band`, default
 * 10-99). NACLs evaluate entries lowest rule number first and stop at the
 * first match, so the band must sit below the NACL's allow rules: the
 * default NACL allows everything at rule 100, and 1-9 stay free for the
 * operator's own early rules (an admin address that must always get in).
 * A foreign ALLOW entry numbered below the band that covers a banned
 * address, or everything (`0.0.0.0/0`, `::/0`), makes the bans useless: the
 * plan warns and names its rule number.
 *
 * Pools and capacity. One pool per managed direction (`direction`: `ingress`
 * by default, `egress` or `both`); slot id = rule number. AWS allows 20
 * entries per direction per family (IPv4 and IPv6 counted separately, the
 * default `*` entries included), 40 after a quota raise (Amazon VPC quotas,
 * "Rules per network ACL"): `entries_per_family`. A pool's capacity per
 * family is that quota minus the foreign entries of that family and
 * direction; free slots are the band's rule numbers that no entry and no
 * claim uses, lowest first. The core ranks the bans and reports what does
 * not fit as `unenforced: capacity`. Changing an entry's CIDR uses
 * ReplaceNetworkAclEntry (the planner reuses a vacated rule number), and
 * deletes run before creates, so no family ever holds more entries during an
 * apply than at its end: `NetworkAclEntryLimitExceeded` cannot come back
 * while `entries_per_family` matches the account's quota.
 *
 * Ownership and expiry. Entries have no description and no client token,
 * so claims live in the NACL's tags, packed four rule numbers to a tag
 * (format in `mapping.ts`): `cloud-bouncer:<owner>:<direction>:<base>` =
 * `<rule>=<cidr>@<unix seconds> …`. The expiry is exact per entry. An entry
 * inside the band that no claim of ours records is a conflict: the target
 * fails and nothing is written. A new group of four costs one of the 50
 * tags; when the NACL's other tags leave too little room, fewer free slots
 * are offered and the plan says why.
 *
 * Crash-safe write order. Invariant: an entry inside the band is written
 * only while a claim of ours for its rule number is in the tags, and a claim
 * is dropped only after its entry is gone. One apply:
 *   1. one CreateTags claims every rule number the write budget lets this
 *      apply create or replace, with the new CIDR and expiry (expiry
 *      refreshes are done by this call alone); the same call carries the
 *      apply lease when it is taken or renewed (below);
 *   2. phase 1: DeleteNetworkAclEntry for lifted bans (their claims stay);
 *   3. phase 2: CreateNetworkAclEntry / ReplaceNetworkAclEntry;
 *   4. one CreateTags drops the claims of deleted entries and withdraws those
 *      of changes that did not run (budget, abort, failed phase 1); a claim
 *      tag left empty is deleted (DeleteTags) after that CreateTags.
 * If step 1 fails, nothing is created or replaced in this apply. A claim
 * lives in exactly one tag and a tag is rewritten whole by one call, so a
 * stop at ANY point leaves one of: everything done; claims without their
 * entries (stopped between 1 and 3, or between 2 and 4); or a claimed entry
 * whose CIDR differs from its claim (stopped between 1 and a replace).
 * Never an unclaimed entry in the band, so the next pass never mistakes our
 * entry for a foreign one, never touches a foreign entry, and repairs the
 * rest: a claim without an entry shows as an owned rule with no CIDRs, which
 * the planner reuses or deletes (dropping the claim); a mismatched entry
 * shows as owned with its real CIDR and an expiry of "now" at the latest, so
 * the planner keeps and refreshes it, replaces it or deletes it. A retried
 * create that finds its rule number taken reads the entry back: if it is
 * exactly ours, the first attempt landed; otherwise the claim is withdrawn
 * and the target fails with a conflict.
 *
 * One writer per NACL and owner: the apply lease. CreateTags is
 * last-writer-wins and EC2 has no conditional write, so two overlapping
 * runs (a CronJob overlap, two Lambda invocations) would overwrite each
 * other's claim tags: a claim lost that way leaves an entry in the band that
 * no claim records, a conflict that stops the target until an operator
 * steps in. So an apply that has changes holds a lease in the NACL's tags,
 * `cloud-bouncer:<owner>:lease` = `<run id>@<unix seconds expiry>`
 * (plan and read never write it). Taking it:
 *   1. fresh read; a lease of another run that has not expired fails this
 *      apply with a RetryableError (`lease_held`) before any write;
 *   2. ONE CreateTags writes our lease (expiry now + `lease_ttl`) together
 *      with step 1 of the write order: taking the lease costs no call;
 *   3. wait `lease_settle` (default 1 s; raise it where tag writes are slow
 *      to show): EC2 is eventually consistent (Amazon EC2 API reference,
 *      "Eventual consistency"), and a rival CreateTags of the same key may
 *      still land; the last one wins;
 *   4. read again: if the lease is not ours, or a claim tag this call wrote
 *      holds something else, fail with a RetryableError (`lease_lost`) with
 *      no entry written (our claims without entries are repaired by the
 *      next apply). Otherwise this read is the state the apply checks
 *      ownership against (with the claim tags as they were before step 2)
 *      and writes entries from.
 * Keeping it: the process keeps the lease after the apply. Its next apply
 * finds its own lease in the first read with more than a quarter of
 * `lease_ttl` left and goes straight to the write order: no lease write, no
 * read-back, no wait (a daemon's steady passes); once half the TTL has
 * passed, the renewal rides in step 1's CreateTags (or, in an apply with no
 * claim to write, a CreateTags of its own before the first change; an apply
 * renews the same way before each change, and stops starting writes if a
 * renewal fails). Releasing it: when the process closes the provider (the
 * end of a one-shot run, a Lambda invocation or a daemon's shutdown), one
 * DeleteTags of the key given with our value, which EC2 applies only if the
 * value still matches (EC2 API reference, DeleteTags). A run that dies
 * holding the lease blocks the next runs for at most `lease_ttl` (default
 * 2 min). A lease left by an earlier apply of the same process is taken
 * over at once. Of two runs that write their lease within `lease_settle` of
 * each other, only the last writer reads it back; a run that reads after
 * the other's lease landed stops at step 1. Residual risk: a run whose
 * lease write reaches EC2 more than `lease_settle` after its first read
 * could still overlap another run; keep `concurrencyPolicy: Forbid`
 * (CronJob) or reserved concurrency 1 (Lambda) as the first line. If runs
 * overlap anyway, a lost claim makes its entry a conflict: the target stops
 * writing and names the rule numbers (it fails safe). The lease tag counts
 * toward the 50 tags: read() keeps room for it when it is absent.
 *
 * Rate limits. EC2 throttles per account and region with token buckets:
 * mutating calls burst 50, refill 5 per second; CreateTags has its own
 * bucket (burst 100, refill 10 per second) (Amazon EC2 API reference,
 * "Request throttling"). The default queue starts at most 4 changes per
 * second, 4 at a time; a change makes one entry call (an expiry refresh
 * none), and an apply adds one tag call whatever its size (two when it
 * deletes entries: their claims are dropped after them): N new bans cost
 * N + 1 writes, and a one-shot run one DeleteTags more when it exits. Retries are bounded twice: the SDK's standard
 * mode (`sdk_max_attempts`, default 3) inside our own backoff with jitter
 * (`retry`, default 3 attempts, 1 s base, 20 s cap).
 * `RequestLimitExceeded`, 5xx and dropped connections are retryable; auth
 * and validation errors are fatal.
 *
 * Credentials come only from the SDK's default chain (IAM role, IRSA,
 * environment, shared config). `endpoint` is for tests against a local
 * server. The SDK is loaded lazily, when the first call is made.
 */
import { z } from 'zod';
import { duration, queueOptions, queueSchema, retryOptions, retrySchema } from '../../schema.js';
import { AwsNaclProvider } from './nacl-provider.js';
import { RULE_NUMBER_MAX, RULE_NUMBER_MIN } from './mapping.js';
import type { ProviderModule } from '../provider.js';
import type { Direction } from './mapping.js';

/** Default queue: under the EC2 mutating bucket's refill of 5 per second. */
export const DEFAULT_QUEUE = { concurrency: 4, intervalCap: 4, intervalMs: 1_000 };
/** Our retry wraps the SDK's, so it starts slower and stops sooner than the core default. */
export const DEFAULT_RETRY = { attempts: 3, baseDelayMs: 1_000, maxDelayMs: 20_000 };
export const DEFAULT_BAND = { start: 10, end: 99 };

const ruleNumber = z
  .number()
  .int(`expected a whole rule number ${RULE_NUMBER_MIN}-${RULE_NUMBER_MAX}`)
  .min(RULE_NUMBER_MIN, `expected a rule number >= ${RULE_NUMBER_MIN}`)
  .max(RULE_NUMBER_MAX, `expected a rule number <= ${RULE_NUMBER_MAX} (32767 and up are reserved by AWS)`);

export const awsNaclConfigSchema = z
  .object({
    region: z.string().regex(/^[a-z]{2,6}(-[a-z]+)+-\d{1,2}$/, 'expected an AWS region like "eu-west-1"'),
    network_acl_id: z.string().regex(/^acl-([0-9a-f]{8}|[0-9a-f]{17})$/, 'expected a network ACL id like "acl-0123456789abcdef0"'),
    direction: z.enum(['ingress', 'egress', 'both']).default('ingress'),
    rule_band: z
      .object({ start: ruleNumber, end: ruleNumber })
      .strict()
      .refine((b) => b.start <= b.end, { error: (i) => `expected start <= end, got start ${(i.input as { start: number }).start} and end ${(i.input as { end: number }).end}` })
      .default(DEFAULT_BAND),
    /** Entries per direction per family, default entries included: 20, or up to 40 after a quota raise. */
    entries_per_family: z.number().int().min(1).max(40, 'expected at most 40 (the AWS maximum after a quota raise)').default(20),
    endpoint: z
      .string()
      .regex(/^https?:\/\/[^\s/]+(\/.*)?$/, 'expected an http(s) URL like "http://127.0.0.1:4566"')
      .optional(),
    /** Attempts per call inside the SDK (its standard retry mode), first included. */
    sdk_max_attempts: z.number().int().min(1).max(5).default(3),
    /** Socket timeout of one HTTP attempt. */
    request_timeout: duration()
      .refine((ms) => ms >= 1_000 && ms <= 120_000, { message: 'expected a duration between 1s and 2m' })
      .default(10_000),
    /** Wait between writing the apply lease and reading it back (EC2 tag writes are eventually consistent). */
    lease_settle: duration()
      .refine((ms) => ms <= 60_000, { message: 'expected a duration of at most 1m' })
      .default(1_000),
    /** How long an apply lease holds when its run dies without releasing it. */
    lease_ttl: duration()
      .refine((ms) => ms >= 10 && ms <= 3_600_000, { message: 'expected a duration between 10ms and 1h' })
      .default(120_000),
    queue: queueSchema.optional(),
    retry: retrySchema.optional(),
  })
  .strict()
  .refine((c) => c.lease_ttl > c.lease_settle, { message: 'expected lease_ttl longer than lease_settle', path: ['lease_ttl'] });

export type AwsNaclConfig = z.infer<typeof awsNaclConfigSchema>;

export function directionsOf(d: AwsNaclConfig['direction']): Direction[] {
  return d === 'both' ? ['ingress', 'egress'] : [d];
}

export const provider: ProviderModule<AwsNaclConfig> = {
  kind: 'aws-nacl',
  // The lease and the claim tags are per NACL and owner, whatever the band or direction.
  resource: (config) => ({ key: `${config.region}/${config.network_acl_id}`, what: `network ACL ${config.network_acl_id} in ${config.region}`, merge: 'one target with direction: both' }),
  configSchema: awsNaclConfigSchema as unknown as z.ZodType<AwsNaclConfig>,
  async create(config, ctx) {
    return new AwsNaclProvider(
      {
        region: config.region,
        networkAclId: config.network_acl_id,
        directions: directionsOf(config.direction),
        band: config.rule_band,
        entriesPerFamily: config.entries_per_family,
        endpoint: config.endpoint,
        sdkMaxAttempts: config.sdk_max_attempts,
        requestTimeoutMs: config.request_timeout,
        leaseSettleMs: config.lease_settle,
        leaseTtlMs: config.lease_ttl,
        queue: queueOptions(config.queue, DEFAULT_QUEUE),
        retry: retryOptions(config.retry, DEFAULT_RETRY),
      },
      ctx,
    );
  },
};

export { AwsNaclProvider } from './nacl-provider.js';
