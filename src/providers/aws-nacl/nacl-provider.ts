/**
 * The aws-nacl provider: read a NACL's entries and claim tags, and apply
 * planned changes in the crash-safe order documented in `index.ts`.
 */
import { FatalError, OwnershipConflictError, RetryableError } from '../../core/errors.js';
import { applyPhased, createQueue, withRetry } from '../../core/queue.js';
import { tryParseCidr } from '../../core/cidr.js';
import { countCall, emptyStats, staleChanges } from '../provider.js';
import { ClaimWriter } from './claim-writer.js';
import { createNaclClient } from './client.js';
import { RULE_NUMBER_MAX, RULE_NUMBER_MIN, describeEntry, directionOf, toState } from './mapping.js';
import type { QueueOptions, RetryOptions, Sleep } from '../../core/queue.js';
import type { Change, TargetState } from '../../core/types.js';
import type { ApplyContext, ApplyResult, CallStats, Provider, ProviderContext } from '../provider.js';
import type { EntrySpec, NaclClient } from './client.js';
import type { Claim, Claims, Direction, NaclSnapshot, NaclState, RuleBand } from './mapping.js';

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
}

/** What the changes of one apply share. */
interface RunContext {
  client: NaclClient;
  writer: ClaimWriter;
  /** Our claims as read before this apply wrote anything. */
  original: Claims;
  signal?: AbortSignal | undefined;
  /** Set when the claims of this apply could not be written: no entry may be created or replaced. */
  claimError: unknown;
}

export interface AwsNaclDeps {
  /** A ready client (tests); by default the SDK client is created on first use. */
  client?: NaclClient | undefined;
  sleep?: Sleep | undefined;
  random?: (() => number) | undefined;
}

export class AwsNaclProvider implements Provider {
  readonly kind = 'aws-nacl';
  readonly target: string;
  private readonly calls: CallStats = emptyStats();
  private client: Promise<NaclClient> | undefined;

  constructor(
    private readonly opts: AwsNaclOptions,
    private readonly ctx: ProviderContext,
    private readonly deps: AwsNaclDeps = {},
  ) {
    this.target = ctx.target;
    if (deps.client) this.client = Promise.resolve(deps.client);
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
  private retry<T>(op: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return withRetry(() => fn(), {
      ...this.opts.retry,
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

  async apply(changes: readonly Change[], ctx: ApplyContext): Promise<ApplyResult> {
    const before = this.calls.total;
    for (const c of changes) this.checkChange(c);
    const client = await this.api();
    // Ownership is checked again just before writing, against a fresh read.
    const fresh = this.state(await this.snapshot(ctx.signal));
    if (fresh.conflicts.length > 0) {
      throw new OwnershipConflictError(this.target, fresh.conflicts.map((c) => c.slot), fresh.conflicts.map((c) => c.message).join('; '));
    }
    const stale = staleChanges(changes, fresh);
    if (stale.length > 0) {
      throw new OwnershipConflictError(this.target, stale, `rules changed since the plan was made: ${stale.join(', ')}; re-run to plan again`);
    }
    const withEntry = new Set(fresh.rules.filter((r) => r.cidrs.length > 0).map((r) => `${r.pool}/${r.slot}`));
    const original: Claims = { ingress: new Map(fresh.tags.claims.ingress), egress: new Map(fresh.tags.claims.egress) };
    const writer = new ClaimWriter(this.ctx.owner, fresh.tags.claims, fresh.tags.ownKeys, {
      putTags: (tags) => this.retry('CreateTags', () => client.putTags(tags), ctx.signal),
      deleteTags: (keys) => this.retry('DeleteTags', () => client.deleteTags(keys), ctx.signal),
    });

    // Claim up front, in one CreateTags, every rule number this apply may write: the changes the
    // write budget lets through, in the order applyPhased takes them. Claiming early is safe (a
    // claim without its entry is repaired by the next pass) and saves a tag write per entry.
    const runnable = [...changes.filter((c) => c.phase === 1), ...changes.filter((c) => c.phase === 2)].slice(0, Math.max(0, ctx.budget.remaining));
    const claimed = runnable.filter((c) => c.kind !== 'delete');
    const run: RunContext = { client, writer, original, signal: ctx.signal, claimError: undefined };
    if (claimed.length > 0 && !ctx.signal?.aborted) {
      for (const c of claimed) writer.set(c.pool as Direction, Number(c.slot), { cidr: c.after!.cidrs[0]!, expiresAt: c.after!.expiresAt });
      try {
        await writer.commit();
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
      signal: ctx.signal,
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
    this.ctx.log.debug({ target: this.target, changes: changes.length, tagFlushes: writer.flushes, calls: this.calls.total - before }, 'aws-nacl apply done');
    return { outcomes, calls: this.calls.total - before };
  }

  /**
   * One change, in the crash-safe order: the claim is committed to the tags
   * before an entry is created or replaced; an entry is deleted before its
   * claim is dropped.
   */
  private async writeChange(c: Change, run: RunContext, hasEntry: boolean): Promise<void> {
    const { client, writer, original, signal } = run;
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

  async close(): Promise<void> {
    const c = await this.client?.catch(() => undefined);
    c?.close();
  }
}
