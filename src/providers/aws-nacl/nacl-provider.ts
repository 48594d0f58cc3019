/**
 * The aws-nacl provider: read a NACL's entries and claim tags, and apply
 * planned changes in the crash-safe order documented in `index.ts`.
 */
import { randomBytes } from 'node:crypto';
import { FatalError, OwnershipConflictError, RetryableError } from '../../core/errors.js';
import { applyPhased, createQueue, realSleep, withRetry } from '../../core/queue.js';
import { tryParseCidr } from '../../core/cidr.js';
import { countCall, emptyStats, assertPlanStillHolds } from '../provider.js';
import { ClaimWriter } from './claim-writer.js';
import { createNaclClient } from './client.js';
import { RULE_NUMBER_MAX, RULE_NUMBER_MIN, describeEntry, directionOf, formatLease, leaseKey, parseLease, toState } from './mapping.js';
import type { ChangeOutcome, QueueOptions, RetryOptions, Sleep } from '../../core/queue.js';
import type { Change, TargetState } from '../../core/types.js';
import type { ApplyContext, ApplyResult, CallStats, Provider, ProviderContext } from '../provider.js';
import type { EntrySpec, NaclClient } from './client.js';
import type { Claim, Claims, Direction, NaclSnapshot, NaclState, NaclTag, RuleBand } from './mapping.js';

export interface AwsNaclOptions {
  region: string;
  networkAclId: string;
  directions: Direction[];
  band: RuleBand;
  entriesPerFamily: number;
  endpoint?: string | undefined;
  sdkMaxAttempts: number;
  requestTimeoutMs: number;
  queue: QueueOptions;
  retry: RetryOptions;
  /** Wait between writing the lease and reading it back. */
  leaseSettleMs: number;
  /** How long a lease holds if its run never releases it. */
  leaseTtlMs: number;
}

/** What the changes of one apply share. */
interface RunContext {
  client: NaclClient;
  writer: ClaimWriter;
  /** Our claims as read before this apply wrote anything. */
  original: Claims;
  signal?: AbortSignal | undefined;
  /** Renews the apply lease when half its TTL has passed (aborts `signal` when that fails). */
  renew: () => Promise<boolean>;
  /** Set when the claims of this apply could not be written: no entry may be created or replaced. */
  claimError: unknown;
}

/** A claim tag of the first read, as it was. */
function firstClaimTags(first: NaclState): NaclTag[] {
  return [...first.tags.ownKeys].map(([key, value]) => ({ key, value }));
}

/** The lease this apply wrote. */
interface HeldLease {
  key: string;
  runId: string;
  /** Values of ours the tag may hold (two while a renewal is in flight). */
  values: string[];
  /** Wall-clock ms after which the next change renews the lease first. */
  renewAt: number;
  /** The renewal in flight, shared by the changes that start meanwhile. */
  renewing?: Promise<boolean> | undefined;
  /** Another run's lease replaced ours: nothing of ours to release. */
  lost: boolean;
  released?: boolean | undefined;
  /** The state read under the lease; undefined when the lease write failed or the apply was aborted while the lease settled. */
  fresh: NaclState | undefined;
  /** Why the lease could not be written: every change fails with it. */
  writeError?: unknown;
}

export interface AwsNaclDeps {
  /** A ready client (tests); by default the SDK client is created on first use. */
  client?: NaclClient | undefined;
  sleep?: Sleep | undefined;
  random?: (() => number) | undefined;
  /** Wall clock of the lease (default `Date.now`). */
  clock?: (() => number) | undefined;
  /** Prefix of this instance's run ids (default random). */
  instanceId?: string | undefined;
}

export class AwsNaclProvider implements Provider {
  readonly kind = 'aws-nacl';
  readonly target: string;
  private readonly calls: CallStats = emptyStats();
  private client: Promise<NaclClient> | undefined;
  /** Run ids are `<instance>.<n>`: this instance's n-th apply. */
  private readonly instanceId: string;
  private applies = 0;
  /** The apply lease this instance holds between applies, until close() or its expiry. */
  private lease: HeldLease | undefined;
  /** Set once an apply was aborted (a deadline): the lease release on close() then makes no retries of its own. */
  private pastDeadline = false;

  constructor(
    private readonly opts: AwsNaclOptions,
    private readonly ctx: ProviderContext,
    private readonly deps: AwsNaclDeps = {},
  ) {
    this.target = ctx.target;
    if (deps.client) this.client = Promise.resolve(deps.client);
    this.instanceId = deps.instanceId ?? randomBytes(6).toString('hex');
  }

  stats(): CallStats {
    return { ...this.calls, errors: { ...this.calls.errors } };
  }

  private api(): Promise<NaclClient> {
    this.client ??= createNaclClient({
      region: this.opts.region,
      networkAclId: this.opts.networkAclId,
      endpoint: this.opts.endpoint,
      maxAttempts: this.opts.sdkMaxAttempts,
      requestTimeoutMs: this.opts.requestTimeoutMs,
      onAttempt: (op, code) => countCall(this.calls, op.startsWith('Describe') ? 'read' : 'write', code),
    });
    return this.client;
  }

  /** Our bounded retry around the SDK's own bounded retry. */
  private retry<T>(op: string, fn: () => Promise<T>, signal?: AbortSignal, attempts = this.opts.retry.attempts): Promise<T> {
    return withRetry(() => fn(), {
      ...this.opts.retry,
      attempts,
      sleep: this.deps.sleep,
      random: this.deps.random,
      signal,
      onRetry: (err, attempt, delayMs) => this.ctx.log.debug({ target: this.target, op, code: err.code, attempt, delayMs }, 'retrying EC2 call'),
    });
  }

  private async snapshot(signal?: AbortSignal): Promise<NaclSnapshot> {
    const client = await this.api();
    return this.retry('DescribeNetworkAcls', () => client.describe(), signal);
  }

  private state(snap: NaclSnapshot): NaclState {
    return toState({
      snapshot: snap,
      owner: this.ctx.owner,
      directions: this.opts.directions,
      band: this.opts.band,
      entriesPerFamily: this.opts.entriesPerFamily,
      now: this.ctx.now(),
    });
  }

  async read(): Promise<TargetState> {
    const { pools, rules, foreign, conflicts, warnings } = this.state(await this.snapshot());
    return { pools, rules, foreign, conflicts, warnings };
  }

  describeSlot(pool: string, slot: string): Record<string, string | number> {
    return { network_acl_id: this.opts.networkAclId, direction: pool, rule_number: Number(slot) };
  }

  /** Refuses, before any write, a change this provider cannot express. */
  private checkChange(c: Change): void {
    const rule = Number(c.slot);
    const bad = (why: string) => new FatalError(`target ${this.target}: cannot apply ${c.kind} of ${c.pool}/${c.slot}: ${why}`, { code: 'invalid_change' });
    if (!this.opts.directions.includes(c.pool as Direction)) throw bad(`pool must be one of ${this.opts.directions.join(', ')}`);
    if (!Number.isInteger(rule) || rule < RULE_NUMBER_MIN || rule > RULE_NUMBER_MAX || String(rule) !== c.slot) throw bad(`slot must be a rule number ${RULE_NUMBER_MIN}-${RULE_NUMBER_MAX}`);
    if (c.kind === 'delete') return;
    const cidrs = c.after?.cidrs ?? [];
    if (cidrs.length !== 1) throw bad(`a NACL entry holds exactly one CIDR, got ${cidrs.length}`);
    if (tryParseCidr(cidrs[0]!)?.family !== c.family) throw bad(`${cidrs[0]} is not an IPv${c.family} CIDR`);
  }

  /** The wall clock: a lease compares times written by different processes, so it never uses the plan clock. */
  private wallNow(): number {
    return (this.deps.clock ?? Date.now)();
  }

  /** Refuses, before any write, a plan that no longer matches the NACL. */
  private checkFresh(changes: readonly Change[], fresh: NaclState): void {
    assertPlanStillHolds(this.target, changes, fresh);
  }

  /**
   * The lease this instance already holds, when the fresh read shows it
   * still ours with enough time left: a daemon's later applies then write
   * no lease of their own and skip the read-back wait.
   */
  private heldLease(first: NaclState): HeldLease | undefined {
    const h = this.lease;
    const seen = first.tags.lease;
    if (!h || h.lost || h.released || !seen || !h.values.includes(seen.value)) return undefined;
    // A lease close to its end is taken again, as a new one: another run's clock may already call it expired.
    if (seen.expiresAt - this.wallNow() <= this.opts.leaseTtlMs / 4) return undefined;
    h.values = [seen.value];
    return h;
  }

  /**
   * Takes the apply lease (protocol in `index.ts`) in ONE CreateTags with the
   * claims already set in `writer`. Resolves with the lease and the state
   * read under it, or without a state when the apply was aborted while the
   * lease settled (the claims are withdrawn); throws `lease_held` or
   * `lease_lost` with no entry written.
   */
  private async takeLease(client: NaclClient, first: NaclState, writer: ClaimWriter, original: Claims, signal?: AbortSignal): Promise<HeldLease> {
    const key = leaseKey(this.ctx.owner);
    const held = first.tags.lease;
    const now = this.wallNow();
    // A lease left by an earlier apply of this same provider instance is stale: applies on one target do not overlap in a process.
    if (held && held.expiresAt > now && !held.runId.startsWith(`${this.instanceId}.`)) {
      throw new RetryableError(
        `target ${this.target}: another run is applying (run ${held.runId} holds the lease until ${new Date(held.expiresAt).toISOString()}); the next pass retries`,
        { code: 'lease_held' },
      );
    }
    if (held && held.expiresAt > now) this.ctx.log.debug({ target: this.target, holder: held.runId }, 'taking over a lease of this process');
    else if (held) this.ctx.log.warn({ target: this.target, holder: held.runId, expiresAt: held.expiresAt }, 'taking over an expired apply lease');
    const runId = `${this.instanceId}.${++this.applies}`;
    const lease: HeldLease = {
      key,
      runId,
      values: [formatLease(runId, now + this.opts.leaseTtlMs)],
      renewAt: now + this.opts.leaseTtlMs / 2,
      lost: false,
      fresh: undefined,
    };
    try {
      try {
        await writer.commitWith([{ key, value: lease.values[0]! }]);
      } catch (err) {
        // Like a failed claim write: every change of this apply fails with the call's error, and
        // the lease it may have left is released (bounded retries; otherwise it expires).
        lease.writeError = err;
        await this.releaseLease(client, lease);
        return lease;
      }
      // EC2 tag writes are eventually consistent (Amazon EC2 API reference, "Eventual consistency"):
      // a concurrent CreateTags of the same key may land after ours. Waiting lets the last write win
      // before we look, so of two runs that both wrote, at most one reads its own lease back.
      await (this.deps.sleep ?? realSleep)(this.opts.leaseSettleMs, signal);
      if (signal?.aborted) {
        // Stopped before any entry write: withdraw the claims (one attempt; a claim without its entry is repaired by the next pass).
        this.withdrawAll(writer, original);
        await writer.commit().catch((err: unknown) => this.ctx.log.warn({ target: this.target, err }, 'could not withdraw the claims of an aborted apply; the next pass drops them'));
        return lease;
      }
      const snap = await this.snapshot(signal);
      const seen = this.state(snap);
      if (seen.tags.lease?.value !== lease.values[0]) {
        lease.lost = true;
        const other = seen.tags.lease;
        throw new RetryableError(
          `target ${this.target}: another run took the lease while this run was taking it (${other ? `run ${other.runId}, until ${new Date(other.expiresAt).toISOString()}` : 'it is gone'}); no entry was written; the next pass retries`,
          { code: 'lease_lost' },
        );
      }
      // The claim tags we just wrote must read back as written, or another writer's CreateTags replaced
      // them after ours. (Other claim tags may hold claims of a run that lost the lease: claims
      // without entries, which the next apply repairs.)
      const tags = new Map(snap.tags.map((t) => [t.key, t.value]));
      const rewritten = writer.lastPut.filter((k) => tags.get(k) !== writer.written.get(k));
      if (rewritten.length > 0) {
        throw new RetryableError(`target ${this.target}: claim tags changed while this run took the lease (${rewritten.join(', ')}); no entry was written; the next pass retries`, {
          code: 'lease_lost',
        });
      }
      // Ownership is checked against the NACL as it was before our claims: put the first read's claim tags back in.
      lease.fresh = this.state({ ...snap, tags: [...snap.tags.filter((t) => !writer.written.has(t.key)), ...firstClaimTags(first)] });
      return lease;
    } catch (err) {
      await this.releaseLease(client, lease);
      throw err;
    }
  }

  /** Sets every claim back to what the first read held. */
  private withdrawAll(writer: ClaimWriter, original: Claims): void {
    for (const dir of ['ingress', 'egress'] as const) {
      const rules = new Set([...writer.claimedRules(dir), ...original[dir].keys()]);
      for (const rule of rules) writer.set(dir, rule, original[dir].get(rule));
    }
  }

  /**
   * Renews the lease once half its TTL has passed, so a long apply keeps it.
   * Returns false when the renewal failed: the caller stops starting writes.
   */
  private async renewLease(client: NaclClient, lease: HeldLease, signal?: AbortSignal): Promise<boolean> {
    const now = this.wallNow();
    if (now < lease.renewAt) return true;
    const value = formatLease(lease.runId, now + this.opts.leaseTtlMs);
    // The previous value stays listed until the write is known to have landed: release deletes either.
    lease.values.push(value);
    try {
      await this.retry('CreateTags', () => client.putTags([{ key: lease.key, value }]), signal);
      lease.values = [value];
      lease.renewAt = now + this.opts.leaseTtlMs / 2;
      return true;
    } catch (err) {
      this.ctx.log.warn({ target: this.target, err }, 'could not renew the apply lease; no further writes start in this pass');
      return false;
    }
  }

  /** Deletes our lease tag, only if it still holds our value. */
  private async releaseLease(client: NaclClient, lease: HeldLease): Promise<void> {
    if (this.lease === lease) this.lease = undefined;
    if (lease.lost || lease.released) return;
    lease.released = true;
    for (const value of lease.values) {
      try {
        // No abort signal: the release runs after an abort too. Past a deadline (a Lambda about to
        // time out) only the SDK's own attempts: a lease left behind expires by itself.
        await this.retry('DeleteTags', () => client.deleteTagIf(lease.key, value), undefined, this.pastDeadline ? 1 : undefined);
      } catch (err) {
        this.ctx.log.warn({ target: this.target, err, expiresAt: parseLease(value).expiresAt }, 'could not release the apply lease; it expires by itself');
      }
    }
  }

  async apply(changes: readonly Change[], ctx: ApplyContext): Promise<ApplyResult> {
    const before = this.calls.total;
    for (const c of changes) this.checkChange(c);
    const client = await this.api();
    // Ownership is checked against a fresh read before the lease is written, and again under it.
    const first = this.state(await this.snapshot(ctx.signal));
    this.checkFresh(changes, first);
    if (changes.length === 0) return { outcomes: [], calls: this.calls.total - before };
    // Stopped before the first write: not even the lease is written.
    if (ctx.signal?.aborted) return { outcomes: changes.map((change) => ({ change, status: 'skipped', skipReason: 'aborted' })), calls: this.calls.total - before };
    // A failed lease renewal stops new writes the way an abort does.
    const leaseLost = new AbortController();
    const signal = ctx.signal ? AbortSignal.any([ctx.signal, leaseLost.signal]) : leaseLost.signal;
    const original: Claims = { ingress: new Map(first.tags.claims.ingress), egress: new Map(first.tags.claims.egress) };
    const writer = new ClaimWriter(this.ctx.owner, first.tags.claims, first.tags.ownKeys, {
      putTags: (tags) => this.retry('CreateTags', () => client.putTags(tags), signal),
      deleteTags: (keys) => this.retry('DeleteTags', () => client.deleteTags(keys), signal),
    });
    // Claim up front, in one CreateTags, every rule number this apply may write: the changes the
    // write budget lets through, in the order applyPhased takes them. Claiming early is safe (a
    // claim without its entry is repaired by the next pass) and saves a tag write per entry.
    const runnable = [1, 2, 3].flatMap((phase) => changes.filter((c) => c.phase === phase)).slice(0, Math.max(0, ctx.budget.remaining));
    const claimed = runnable.filter((c) => c.kind !== 'delete');
    for (const c of claimed) writer.set(c.pool as Direction, Number(c.slot), { cidr: c.after!.cidrs[0]!, expiresAt: c.after!.expiresAt });

    let lease = this.heldLease(first);
    let fresh: NaclState | undefined;
    if (lease) {
      fresh = first;
      this.ctx.log.debug({ target: this.target, runId: lease.runId }, 'applying under the lease this process holds');
    } else {
      // A lease this process held but that lapsed (or another run took) is simply forgotten: taking
      // the lease overwrites the tag, so releasing it first would be a wasted call.
      this.lease = undefined;
      lease = await this.takeLease(client, first, writer, original, signal);
      if (lease.writeError !== undefined) return { outcomes: changes.map((change) => ({ change, status: 'failed', error: lease!.writeError })), calls: this.calls.total - before };
      // The lease is kept after the apply (released by close()), so the next apply of this process writes no lease of its own.
      this.lease = lease;
      fresh = lease.fresh;
      if (!fresh) return { outcomes: changes.map((change) => ({ change, status: 'skipped', skipReason: 'aborted' })), calls: this.calls.total - before };
      this.checkFresh(changes, fresh);
    }
    const outcomes = await this.applyUnderLease(changes, ctx, { client, writer, original, fresh, lease, claimed, signal, leaseLost });
    if (ctx.signal?.aborted) this.pastDeadline = true;
    this.ctx.log.debug({ target: this.target, changes: changes.length, calls: this.calls.total - before }, 'aws-nacl apply done');
    return { outcomes, calls: this.calls.total - before };
  }

  private async applyUnderLease(
    changes: readonly Change[],
    ctx: ApplyContext,
    a: { client: NaclClient; writer: ClaimWriter; original: Claims; fresh: NaclState; lease: HeldLease; claimed: Change[]; signal: AbortSignal; leaseLost: AbortController },
  ): Promise<ChangeOutcome[]> {
    const { client, writer, original, fresh, lease, claimed, signal, leaseLost } = a;
    const renew = async () => {
      lease.renewing ??= this.renewLease(client, lease, signal).finally(() => (lease.renewing = undefined));
      const ok = await lease.renewing;
      if (!ok) leaseLost.abort();
      return ok;
    };
    const withEntry = new Set(fresh.rules.filter((r) => r.cidrs.length > 0).map((r) => `${r.pool}/${r.slot}`));
    const run: RunContext = { client, writer, original, signal, renew, claimError: undefined };
    if (claimed.length > 0 && writer.dirty && !signal.aborted) {
      // Under a lease held from an earlier apply: the claims go out now, with the lease's renewal when it is due.
      const now = this.wallNow();
      const renewal = now >= lease.renewAt ? formatLease(lease.runId, now + this.opts.leaseTtlMs) : undefined;
      if (renewal) lease.values.push(renewal);
      try {
        await writer.commitWith(renewal ? [{ key: lease.key, value: renewal }] : []);
        if (renewal) {
          lease.values = [renewal];
          lease.renewAt = now + this.opts.leaseTtlMs / 2;
        }
      } catch (err) {
        // Bounded retries are spent (or the call is refused): no entry is created or replaced in
        // this apply, deletes still run, and the next pass tries again.
        run.claimError = err;
        for (const c of claimed) writer.set(c.pool as Direction, Number(c.slot), original[c.pool as Direction].get(Number(c.slot)));
      }
    }

    const queue = createQueue(this.opts.queue);
    const outcomes = await applyPhased(changes, (c) => this.writeChange(c, run, withEntry.has(`${c.pool}/${c.slot}`)), {
      queue,
      budget: ctx.budget,
      signal,
    });
    // Claims of changes that did not run are withdrawn; claims of deleted entries are dropped.
    for (const o of outcomes) {
      if (o.status === 'skipped' && o.change.kind !== 'delete') {
        const dir = o.change.pool as Direction;
        writer.set(dir, Number(o.change.slot), original[dir].get(Number(o.change.slot)));
      }
    }
    // Runs after an abort too (one attempt, no retry): it only restores the claims of changes that
    // did not run, so a stopped run leaves the NACL consistent. If it fails, the state is still
    // crash-safe (a claim without its entry, or a claimed entry with its old CIDR) and the next pass repairs it.
    if (writer.dirty) {
      try {
        await writer.commit();
      } catch (err) {
        this.ctx.log.warn({ target: this.target, err }, 'could not drop the claims of deleted or skipped entries; the next pass drops them');
      }
      if (writer.cleanupError) this.ctx.log.warn({ target: this.target, err: writer.cleanupError }, 'could not delete empty claim tags; the next pass deletes them');
    }
    this.ctx.log.debug({ target: this.target, tagFlushes: writer.flushes }, 'aws-nacl claims written');
    return outcomes;
  }

  /**
   * One change, in the crash-safe order: the claim is committed to the tags
   * before an entry is created or replaced; an entry is deleted before its
   * claim is dropped.
   */
  private async writeChange(c: Change, run: RunContext, hasEntry: boolean): Promise<void> {
    const { client, writer, original, signal } = run;
    if (!(await run.renew())) throw new RetryableError(`target ${this.target}: the apply lease could not be renewed; the next pass retries`, { code: 'lease_lost' });
    const dir = c.pool as Direction;
    const rule = Number(c.slot);
    const egress = dir === 'egress';
    const where = `rule ${rule} (${dir})`;
    const log = this.ctx.log;

    if (c.kind === 'delete') {
      if (hasEntry) await this.retry('DeleteNetworkAclEntry', () => client.deleteEntry(rule, egress), signal);
      writer.set(dir, rule, undefined);
      log.debug({ target: this.target, rule, direction: dir, removed: c.removed }, 'deleted NACL entry');
      return;
    }

    if (run.claimError) throw run.claimError;
    const cidr = c.after!.cidrs[0]!;
    const previous = original[dir].get(rule);
    let claim = writer.get(dir, rule);
    if (claim?.cidr !== cidr || claim.expiresAt !== c.after!.expiresAt) {
      claim = { cidr, expiresAt: c.after!.expiresAt };
      writer.set(dir, rule, claim);
    }
    try {
      await writer.commit({ dir, rule });
    } catch (err) {
      // Nothing was written to the entry: undo the claim in memory (a claim that did reach the NACL is harmless).
      if (writer.get(dir, rule) === claim) writer.set(dir, rule, previous);
      throw err;
    }
    if (hasEntry && c.before?.cidrs[0] === cidr) {
      log.debug({ target: this.target, rule, direction: dir, expiresAt: claim.expiresAt }, 'refreshed recorded expiry');
      return;
    }
    const spec: EntrySpec = { ruleNumber: rule, egress, cidr, family: c.family };
    if (hasEntry) {
      const r = await this.retry('ReplaceNetworkAclEntry', () => client.replaceEntry(spec), signal);
      if (r === 'absent') throw new RetryableError(`target ${this.target}: ${where} disappeared before it could be replaced; the next pass repairs it`, { code: 'InvalidNetworkAclEntry.NotFound' });
      log.debug({ target: this.target, rule, direction: dir, cidr, replaced: c.before?.cidrs }, 'replaced NACL entry');
      return;
    }
    const r = await this.retry('CreateNetworkAclEntry', () => client.createEntry(spec), signal);
    if (r === 'exists') await this.confirmOwnEntry(client, writer, spec, previous, signal);
    log.debug({ target: this.target, rule, direction: dir, cidr }, 'created NACL entry');
  }

  /**
   * CreateNetworkAclEntry said the rule number is taken. Either an earlier
   * attempt of ours landed and only its answer was lost (the entry is exactly
   * ours: done), or someone else took the rule number since our read: then
   * our claim is withdrawn so the entry shows as the conflict it is.
   */
  private async confirmOwnEntry(client: NaclClient, writer: ClaimWriter, spec: EntrySpec, previous: Claim | undefined, signal?: AbortSignal): Promise<void> {
    const snap = await this.retry('DescribeNetworkAcls', () => client.describe(), signal);
    const e = snap.entries.find((x) => x.ruleNumber === spec.ruleNumber && x.egress === spec.egress);
    if (e && e.action === 'deny' && e.protocol === '-1' && e.cidr === spec.cidr) return;
    const dir = directionOf(spec.egress);
    writer.set(dir, spec.ruleNumber, previous);
    await writer.commit().catch((err: unknown) => this.ctx.log.warn({ target: this.target, err }, 'could not withdraw a claim'));
    throw new OwnershipConflictError(this.target, [String(spec.ruleNumber)], `${e ? describeEntry(e) : `rule ${spec.ruleNumber} (${dir})`} was written by someone else while this pass was applying`);
  }

  /** Releases the apply lease this instance holds (the end of a one-shot run, or a daemon's shutdown), then the client. */
  async close(): Promise<void> {
    const c = await this.client?.catch(() => undefined);
    if (c && this.lease) await this.releaseLease(c, this.lease);
    c?.close();
  }
}
