/**
 * The `gcp-firewall` target: bans as VPC firewall rules that deny every
 * protocol, written through `@google-cloud/compute` (REST transport) with
 * Application Default Credentials or Workload Identity.
 *
 * Design:
 * - One pool per target, named after the direction (`ingress` by default).
 *   Its slots are rule names `<name_prefix>-<owner>-<nnn>` (e.g.
 *   `cloud-bouncer-default-001`, 1 ≤ nnn ≤ `max_rules`). Names are unique per
 *   project across networks, so a free slot is a name no rule of the project
 *   uses. Slot n gets priority `band.start + n - 1`, clamped to `band.end`; a
 *   single `priority` is a band of one that every rule shares. GCP orders
 *   rules by priority, not by name, and a deny wins a tie, so priorities
 *   need not be unique. `describeSlot` gives `{ name, priority, direction }`.
 * - Rule body: `denied: [{IPProtocol: all}]`, the CIDRs in `sourceRanges`
 *   (EGRESS: `destinationRanges`), one address family per rule, optional
 *   `targetTags` or `targetServiceAccounts`, `logConfig.enable` from `log`.
 *   The description is the marker `cloud-bouncer owner=<owner> exp=<unix>`:
 *   it records the rule's expiry, so rules are removed on time with every
 *   source down. Rules hold up to `ranges_per_rule` CIDRs (default 256, the
 *   value peers use; the VPC quota page allows 5000), grouped by expiry
 *   bucket (`bucket`, default 1 h).
 * - Capacity: `max_rules` rules (default 10) × `ranges_per_rule`. GCP caps
 *   ranges per rule, not per network, so foreign rules take no capacity.
 * - Ownership: a rule is ours when its name, marker, network, direction and
 *   shape all match. A rule with our name prefix (`<name_prefix>-<owner>-`)
 *   that is not fully ours is a conflict: it is reported and nothing is
 *   written. Foreign rules are read for warnings: a foreign allow rule of our
 *   network and direction with a lower priority number than one of our deny
 *   rules (so evaluated first) whose ranges include everything or a banned
 *   CIDR. Foreign rules at priorities inside our band are not conflicts:
 *   names, not priorities, identify GCP rules.
 * - Writes: insert for a create, one PATCH per changed rule (stable
 *   placement: one new ban, or one lift, is one PATCH), delete for a rule
 *   left empty. Just before writing, the rules are listed again and the
 *   plan is refused if a slot changed owner or content (`staleChanges`).
 *   GCP firewall rules have no fingerprint (last writer wins), so that check
 *   is the guard against a concurrent writer.
 * - Operations: every mutation returns a global Operation; it is waited for
 *   (`globalOperations.wait`, bounded by `operation_timeout`) until DONE and
 *   its `error` checked. An operation that ends with an error is a failed
 *   write, never a success; the next pass plans again from what is there.
 * - Idempotency: each write carries a `requestId` (a UUID) that stays the
 *   same across the retries of that write, so a write whose answer was lost
 *   is never applied twice: Compute returns the first request's operation.
 *   A new write (another pass) gets a new id, so a legitimate repeat is never
 *   swallowed by the server's de-duplication.
 * - Rate limits (Compute API rate quotas): `403 rateLimitExceeded`, `429`,
 *   5xx, timeouts and dropped connections are retried (bounded, with backoff
 *   and jitter, honouring `Retry-After`), then left to the next pass. The
 *   default queue runs 4 writes at once and starts at most 10 per second.
 * - Project quota: when an insert is refused with `QUOTA_EXCEEDED` (the
 *   project's firewall-rule quota, often 100-500), the change fails with a
 *   QuotaExceededError and no further insert is tried in that apply. For
 *   `quota_recheck` (default 1 h) this provider then caps its rules at the
 *   number it owns (`ruleLimitReason: quota`): existing rules keep being
 *   filled and updated, and bans that need a new rule are reported as
 *   `unenforced: quota`.
 *
 * Config keys (besides the common ones): `project`, `network`,
 * `name_prefix` (default `cloud-bouncer`), `priority` or `priority_band:
 * {start, end}` (default band 900-999, before the default priority 1000 of
 * most allow rules), `direction` (INGRESS|EGRESS, default INGRESS),
 * `ranges_per_rule`, `max_rules`, `target_tags`, `target_service_accounts`,
 * `log`, `bucket`, `endpoint`, `request_timeout`, `operation_timeout`,
 * `poll_interval`, `quota_recheck`, `queue`, `retry`.
 */
import { randomUUID } from 'node:crypto';
import type PQueue from 'p-queue';
import { z } from 'zod';
import { FatalError, OwnershipConflictError, QuotaExceededError, RetryableError } from '../../core/errors.js';
import { applyPhased, createQueue, realSleep, withRetry, type QueueOptions, type RetryOptions, type Sleep } from '../../core/queue.js';
import { duration, queueOptions, queueSchema, retryOptions, retrySchema } from '../../schema.js';
import { countCall, emptyStats, assertPlanStillHolds } from '../provider.js';
import type { ApplyContext, ApplyResult, CallStats, Provider, ProviderContext, ProviderModule } from '../provider.js';
import type { Change, TargetState } from '../../core/types.js';
import { createFirewallApi, type CallRecord, type FirewallApi, type GcpOperation, type GoogleAuthClient } from './client.js';
import { GCP_LIMITS, NAME_RE, firewallsToState, parseNetworkRef, ruleBody, rulePatch, slotIndex, slotPriority, type Direction, type Layout } from './mapping.js';

const priority = () =>
  z
    .number()
    .int()
    .min(GCP_LIMITS.minPriority, `expected a priority >= ${GCP_LIMITS.minPriority}`)
    .max(GCP_LIMITS.maxPriority - 1, `expected a priority <= ${GCP_LIMITS.maxPriority - 1} (65535 is the priority of the implied rules, which would win)`);

/** Project ids (6-30 characters), optionally domain-scoped (`example.com:my-project`). */
const PROJECT_RE = /^(?:[a-z][-a-z0-9.]{0,61}[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$/;
const LABEL = 'lower-case letters, digits and dashes, starting with a letter and not ending with a dash';

export const DEFAULT_BAND = { start: 900, end: 999 } as const;

export const gcpFirewallConfigSchema = z
  .object({
    project: z.string().regex(PROJECT_RE, 'expected a project id: 6-30 lower-case letters, digits and dashes, starting with a letter'),
    network: z.string().min(1),
    /** At most 28 characters, so `<prefix>-<owner>-<nnn>` fits GCP's 63 for any owner id (30 characters at most). */
    name_prefix: z
      .string()
      .regex(/^[a-z](?:[-a-z0-9]{0,26}[a-z0-9])?$/, `expected 1-28 ${LABEL}`)
      .default('cloud-bouncer'),
    priority: priority().optional(),
    priority_band: z
      .object({ start: priority(), end: priority() })
      .strict()
      .refine((b) => b.start <= b.end, { error: (i) => `expected start <= end, got start ${(i.input as { start: number }).start} and end ${(i.input as { end: number }).end}` })
      .optional(),
    direction: z.enum(['INGRESS', 'EGRESS']).default('INGRESS'),
    ranges_per_rule: z.number().int().min(1).max(GCP_LIMITS.rangesPerRule, `expected at most ${GCP_LIMITS.rangesPerRule} (the VPC limit of source ranges per rule)`).default(256),
    max_rules: z.number().int().min(1).max(GCP_LIMITS.maxRules, `expected at most ${GCP_LIMITS.maxRules} (slot names end in three digits)`).default(10),
    target_tags: z.array(z.string().regex(NAME_RE, `expected network tags of 1-63 ${LABEL}`)).max(256).optional(),
    target_service_accounts: z.array(z.string().email('expected service account emails')).max(10).optional(),
    log: z.boolean().default(false),
    bucket: duration().default(3_600_000),
    endpoint: z
      .string()
      .url()
      .refine((u) => /^https?:\/\//.test(u), { message: 'expected an http:// or https:// URL' })
      .optional(),
    request_timeout: duration().default(30_000),
    operation_timeout: duration().default(300_000),
    poll_interval: duration().default(1_000),
    quota_recheck: duration().default(3_600_000),
    queue: queueSchema.optional(),
    retry: retrySchema.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.priority !== undefined && c.priority_band !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['priority_band'], message: 'expected either priority or priority_band, not both' });
    }
    if (c.target_tags?.length && c.target_service_accounts?.length) {
      ctx.addIssue({ code: 'custom', path: ['target_service_accounts'], message: 'expected either target_tags or target_service_accounts, not both (GCP refuses rules with both)' });
    }
    const net = parseNetworkRef(c.network, c.project);
    if (!net) {
      ctx.addIssue({ code: 'custom', path: ['network'], message: `expected a network name or URL (projects/${c.project}/global/networks/NAME), got ${JSON.stringify(c.network)}` });
    } else if (net.project !== c.project) {
      ctx.addIssue({ code: 'custom', path: ['network'], message: `expected a network of project ${c.project} (firewall rules live in the network's project; set project to ${net.project}), got ${JSON.stringify(c.network)}` });
    }
  });

export type GcpFirewallConfig = z.infer<typeof gcpFirewallConfigSchema>;

/** Test seams: an auth client instead of ADC, a recording sleep, a seeded random. */
export interface GcpFirewallDeps {
  authClient?: GoogleAuthClient | undefined;
  sleep?: Sleep | undefined;
  random?: (() => number) | undefined;
}

/** 4 writes in flight, at most 10 started per second (600 a minute); lower `queue` to fit the project's Compute API rate quota. */
export const DEFAULT_QUEUE: QueueOptions = { concurrency: 4, intervalCap: 10, intervalMs: 1_000 };

/** The server-side `wait` returns after at most 2 minutes; give each wait call a little more. */
const WAIT_CALL_MS = 130_000;

export class GcpFirewallProvider implements Provider {
  readonly kind = 'gcp-firewall';
  readonly target: string;
  private readonly layout: Layout;
  private readonly calls: CallStats = emptyStats();
  private readonly retry: RetryOptions;
  private readonly queue: PQueue;
  private apiPromise: Promise<FirewallApi> | undefined;
  /** Set when an insert hit the project's firewall quota: rules owned then, and until when the cap holds. */
  private quota: { rules: number; until: number } | undefined;

  constructor(
    private readonly cfg: GcpFirewallConfig,
    private readonly ctx: ProviderContext,
    private readonly deps: GcpFirewallDeps = {},
  ) {
    this.target = ctx.target;
    const band = cfg.priority_band ?? (cfg.priority !== undefined ? { start: cfg.priority, end: cfg.priority } : DEFAULT_BAND);
    const net = parseNetworkRef(cfg.network, cfg.project);
    if (!net) throw new FatalError(`config: network: expected a network name or URL, got ${JSON.stringify(cfg.network)}`, { code: 'config' });
    this.layout = {
      project: cfg.project,
      network: net.network,
      owner: ctx.owner,
      namePrefix: cfg.name_prefix,
      direction: cfg.direction as Direction,
      band: { start: band.start, end: band.end },
      rangesPerRule: cfg.ranges_per_rule,
      maxRules: cfg.max_rules,
      bucketMs: cfg.bucket,
      log: cfg.log,
      targetTags: cfg.target_tags ?? [],
      targetServiceAccounts: cfg.target_service_accounts ?? [],
    };
    this.retry = retryOptions(cfg.retry);
    this.queue = createQueue(queueOptions(cfg.queue, DEFAULT_QUEUE));
  }

  stats(): CallStats {
    return { ...this.calls, errors: { ...this.calls.errors } };
  }

  private record = (c: CallRecord): void => {
    countCall(this.calls, c.kind, c.errorCode);
  };

  private api(): Promise<FirewallApi> {
    this.apiPromise ??= createFirewallApi({
      project: this.cfg.project,
      endpoint: this.cfg.endpoint,
      authClient: this.deps.authClient,
      requestTimeoutMs: this.cfg.request_timeout,
      onCall: this.record,
    }).catch((err: unknown) => {
      this.apiPromise = undefined;
      throw err;
    });
    return this.apiPromise;
  }

  private retrying<T>(what: string, slot: string | undefined, fn: () => Promise<T>, signal?: AbortSignal, final?: (err: RetryableError) => boolean): Promise<T> {
    return withRetry(fn, {
      ...this.retry,
      ...(final ? { final } : {}),
      sleep: this.deps.sleep,
      random: this.deps.random,
      // After an abort the attempt in flight finishes, but no new attempt starts.
      signal,
      onRetry: (err, n, delayMs) => {
        this.ctx.log.warn({ target: this.target, what, slot, code: err.code, attempt: n, delayMs }, 'gcp call failed, retrying');
      },
    });
  }

  private quotaCap(): number | undefined {
    if (this.quota && this.ctx.now() < this.quota.until) return this.quota.rules;
    this.quota = undefined;
    return undefined;
  }

  async read(): Promise<TargetState> {
    const api = await this.api();
    const rules = await this.retrying('list rules', undefined, () => api.list());
    return firewallsToState(this.layout, rules, { quotaRules: this.quotaCap() });
  }

  describeSlot(_pool: string, slot: string): Record<string, string | number> {
    const n = slotIndex(this.layout, slot);
    return { name: slot, priority: n === undefined ? 'unknown' : slotPriority(this.layout, n), direction: this.layout.direction };
  }

  /** Waits until the operation is DONE (bounded), then fails the write if it ended with an error. */
  private async settle(api: FirewallApi, first: GcpOperation, c: Change): Promise<void> {
    const deadline = Date.now() + this.cfg.operation_timeout;
    const sleep = this.deps.sleep ?? realSleep;
    let op = first;
    const timedOut = (cause: unknown) =>
      new RetryableError(`${c.kind} of rule ${c.slot}: operation ${op.name} is still ${op.status} after ${this.cfg.operation_timeout} ms; the next pass reads what it did`, {
        cause,
        code: 'OperationTimeout',
      });
    while (op.status !== 'DONE') {
      if (deadline - Date.now() <= 0) throw timedOut(op);
      const name = op.name;
      const before = op.status;
      // A wait call gets what is left of operation_timeout; one that this cut short is the operation's timeout, not retried.
      let cut = false;
      const waitOnce = () => {
        const left = Math.max(1, deadline - Date.now());
        cut = left < WAIT_CALL_MS;
        return api.wait(name, Math.min(left, WAIT_CALL_MS));
      };
      const ownDeadline = (err: RetryableError) => err.code === 'timeout' && cut;
      try {
        // The write is in flight: its wait is not cut short by an abort.
        op = await this.retrying('wait operation', c.slot, waitOnce, undefined, ownDeadline);
      } catch (err) {
        if (err instanceof RetryableError && ownDeadline(err)) throw timedOut(err);
        throw err;
      }
      if (op.status !== 'DONE' && op.status === before) await sleep(this.cfg.poll_interval);
    }
    const failure = op.error?.errors[0];
    if (!failure) return;
    this.calls.errors[`operation:${failure.code}`] = (this.calls.errors[`operation:${failure.code}`] ?? 0) + 1;
    const detail = `${op.error!.errors.map((e) => `${e.code}: ${e.message}`).join('; ')}${op.httpErrorStatusCode ? ` (HTTP ${op.httpErrorStatusCode})` : ''}`;
    const what = `${c.kind} of rule ${c.slot}: operation ${op.name} ended with an error: ${detail}`;
    if (failure.code === 'QUOTA_EXCEEDED' && c.kind === 'create') throw new QuotaExceededError(what, { cause: op, code: 'QUOTA_EXCEEDED' });
    const status = op.httpErrorStatusCode;
    if (status !== undefined && status >= 400 && status < 500 && status !== 429 && status !== 408) throw new FatalError(what, { cause: op, code: failure.code });
    throw new RetryableError(what, { cause: op, code: `operation:${failure.code}` });
  }

  private async writeOne(api: FirewallApi, c: Change, state: { quotaHit?: QuotaExceededError | undefined }, signal: AbortSignal | undefined): Promise<void> {
    if (slotIndex(this.layout, c.slot) === undefined) {
      throw new OwnershipConflictError(this.target, [c.slot], `slot ${c.slot} is not one of ours (${this.layout.namePrefix}-${this.layout.owner}-NNN)`);
    }
    // One id per write, reused by every retry of it: Compute answers a repeat with the first request's operation.
    const requestId = randomUUID();
    let op: GcpOperation | undefined;
    try {
      if (c.kind === 'create') {
        if (state.quotaHit) {
          throw new QuotaExceededError(`create of rule ${c.slot}: not tried, an insert of this apply already hit the project's firewall-rule quota`, { cause: state.quotaHit });
        }
        const body = ruleBody(this.layout, c.slot, c.after!.cidrs, c.after!.expiresAt);
        op = await this.retrying('insert rule', c.slot, () => api.insert(body, requestId), signal);
      } else if (c.kind === 'update') {
        const body = rulePatch(this.layout, c.slot, c.after!.cidrs, c.after!.expiresAt);
        op = await this.retrying('patch rule', c.slot, () => api.patch(c.slot, body, requestId), signal);
      } else {
        op = await this.retrying('delete rule', c.slot, () => api.delete(c.slot, requestId), signal);
      }
      // A delete answered 404: the rule is already gone, which is what the change wanted.
      if (op) await this.settle(api, op, c);
    } catch (err) {
      if (err instanceof QuotaExceededError) state.quotaHit ??= err;
      // The name was taken, or the rule removed, after the fresh read: an insert never overwrites and a
      // patch of a missing rule changes nothing, so this write just failed. The next pass reads the rule
      // and decides (ours, e.g. an insert of a run that died before its operation finished; or a conflict).
      if (err instanceof FatalError && err.code === 'alreadyExists' && c.kind === 'create') {
        throw new RetryableError(`create of rule ${c.slot}: a rule of that name appeared since the plan was made; the next pass reads it`, { cause: err, code: 'stale_plan' });
      }
      if (err instanceof FatalError && err.code === 'notFound' && c.kind === 'update') {
        throw new RetryableError(`update of rule ${c.slot}: the rule disappeared since the plan was made; the next pass plans again`, { cause: err, code: 'stale_plan' });
      }
      throw err;
    }
    this.ctx.log.debug({ target: this.target, kind: c.kind, slot: c.slot, operation: op?.name, added: c.added.length, removed: c.removed.length }, 'wrote firewall rule');
  }

  async apply(changes: readonly Change[], actx: ApplyContext): Promise<ApplyResult> {
    const before = this.calls.total;
    if (changes.length === 0) return { outcomes: [], calls: 0 };
    const api = await this.api();
    // Ownership is checked again against a fresh read, just before writing.
    const fresh = await this.read();
    assertPlanStillHolds(this.target, changes, fresh);
    const state: { quotaHit?: QuotaExceededError | undefined } = {};
    const outcomes = await applyPhased(changes, (c) => this.writeOne(api, c, state, actx.signal), { queue: this.queue, budget: actx.budget, signal: actx.signal });
    const applied = (kind: Change['kind']) => outcomes.filter((o) => o.status === 'applied' && o.change.kind === kind).length;
    if (state.quotaHit) {
      const owned = fresh.rules.length + applied('create') - applied('delete');
      this.quota = { rules: owned, until: this.ctx.now() + this.cfg.quota_recheck };
      this.ctx.log.warn({ target: this.target, ownedRules: owned, recheckMs: this.cfg.quota_recheck }, "project firewall-rule quota exhausted; capping rules at what we own");
    }
    const count = (s: string) => outcomes.filter((o) => o.status === s).length;
    this.ctx.log.info(
      { target: this.target, applied: count('applied'), failed: count('failed'), skipped: count('skipped'), calls: this.calls.total - before },
      'applied changes to firewall rules',
    );
    return { outcomes, calls: this.calls.total - before };
  }

  async close(): Promise<void> {
    const p = this.apiPromise;
    this.apiPromise = undefined;
    if (p) await (await p.catch(() => undefined))?.close();
  }
}

export const provider: ProviderModule<GcpFirewallConfig> = {
  kind: 'gcp-firewall',
  // Rule names (`<name_prefix>-<owner>-<nnn>`) are unique per project, across networks.
  resource: (config) => ({ key: `${config.project}/${config.name_prefix}`, what: `rule names ${config.name_prefix}-<owner>-… in project ${config.project}`, merge: 'a name_prefix of its own for each' }),
  configSchema: gcpFirewallConfigSchema as unknown as z.ZodType<GcpFirewallConfig>,
  async create(config, ctx) {
    return new GcpFirewallProvider(config, ctx);
  },
};
