/**
 * The provider contract. A provider translates and does I/O; the algorithm
 * (fitting, planning, ordering) lives in core. Two required methods, as in
 * external-dns: `read()` and `apply()`.
 */
import type { Logger } from 'pino';
import type { ChangeOutcome, WriteBudget } from '../core/queue.js';
import { OwnershipConflictError } from '../core/errors.js';
import type { Change, TargetState } from '../core/types.js';
import type { z } from 'zod';

export interface ProviderContext {
  /** Target name from config. */
  target: string;
  /** Ownership id written into every marker (config `owner`, default `default`). */
  owner: string;
  log: Logger;
  now: () => number;
}

export interface ApplyContext {
  budget: WriteBudget;
  /** After abort, no new write starts; the write in flight finishes. */
  signal?: AbortSignal | undefined;
}

export interface ApplyResult {
  outcomes: ChangeOutcome[];
  /** Every API call made during this apply (reads included), for reports and metrics. */
  calls: number;
}

/** Counts API calls by operation and outcome code; surfaced in reports and `/metrics`. */
export interface CallStats {
  total: number;
  reads: number;
  writes: number;
  errors: Record<string, number>;
}

export interface Provider {
  readonly kind: string;
  readonly target: string;
  /** Owned rules, foreign rules (for capacity and warnings), conflicts and pools. Makes no writes. */
  read(): Promise<TargetState>;
  /**
   * Applies `changes` in the order the planner gave (phases). Ownership is
   * checked again just before writing: an update or delete of a slot that is
   * not ours, or a create on an occupied slot, is refused.
   */
  apply(changes: readonly Change[], ctx: ApplyContext): Promise<ApplyResult>;
  /** Provider terms for a slot, for `plan` output (rule number, direction, priority, name...). */
  describeSlot?(pool: string, slot: string): Record<string, string | number>;
  /** API calls made since construction. */
  stats(): CallStats;
  close?(): Promise<void>;
}

/** A provider module, loaded lazily by the registry. Its SDK is loaded lazily again inside `create`. */
export interface ProviderModule<C = unknown> {
  kind: string;
  /** zod schema of the provider-specific target keys. */
  configSchema: z.ZodType<C>;
  create(config: C, ctx: ProviderContext): Promise<Provider>;
  /**
   * What a target writes to, as far as ownership goes: two targets of one config (one owner) with
   * the same `key` would each remove the other's rules, so the config refuses them. `what` names it.
   */
  resource?(config: C): { key: string; what: string; merge?: string | undefined };
}

export function emptyStats(): CallStats {
  return { total: 0, reads: 0, writes: 0, errors: {} };
}

export function countCall(stats: CallStats, kind: 'read' | 'write', errorCode?: string): void {
  stats.total++;
  if (kind === 'read') stats.reads++;
  else stats.writes++;
  if (errorCode) stats.errors[errorCode] = (stats.errors[errorCode] ?? 0) + 1;
}

/**
 * The registry-style ownership filter, run just before writing against a
 * fresh read: updates and deletes must target owned rules with the content
 * the plan saw (and an addition a rule that is not disabled); creates must
 * target free slots. Returns the conflicting
 * slots (empty when the plan is still safe to write).
 */
export function staleChanges(changes: readonly Change[], fresh: TargetState): string[] {
  const owned = new Map(fresh.rules.map((r) => [`${r.pool}\u0000${r.slot}`, r]));
  // A foreign rule without a pool (e.g. a GCP or Azure rule name) blocks that slot in every pool.
  const foreign = new Set(fresh.foreign.map((f) => `${f.pool ?? ''}\u0000${f.slot}`));
  const foreignAnyPool = new Set(fresh.foreign.filter((f) => f.pool === undefined).map((f) => f.slot));
  const bad: string[] = [];
  for (const c of changes) {
    const key = `${c.pool}\u0000${c.slot}`;
    const rule = owned.get(key);
    if (c.kind === 'create') {
      if (rule || foreign.has(key) || foreignAnyPool.has(c.slot)) bad.push(c.slot);
    } else if (!rule || rule.cidrs.join(',') !== (c.before?.cidrs ?? []).join(',') || (rule.disabled === true && c.added.length > 0)) {
      // (A rule switched off since the plan would not enforce what the change adds.)
      bad.push(c.slot);
    }
  }
  return bad;
}

/**
 * Refuses, before any write, a plan that no longer matches a fresh read of
 * the target: a foreign rule in our band, or a slot whose owner or content
 * changed since the plan was made.
 */
export function assertPlanStillHolds(target: string, changes: readonly Change[], fresh: TargetState): void {
  if (fresh.conflicts.length > 0) {
    throw new OwnershipConflictError(target, fresh.conflicts.map((c) => c.slot), fresh.conflicts.map((c) => c.message).join('; '));
  }
  const stale = staleChanges(changes, fresh);
  if (stale.length > 0) {
    throw new OwnershipConflictError(target, stale, `rules changed since the plan was made: ${stale.join(', ')}; re-run to plan again`);
  }
}
