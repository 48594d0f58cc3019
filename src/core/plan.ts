/**
 * The planner: a pure function of (actual owned rules, desired bans, target
 * capacity, now). `plan` and `apply` run the same code; only the last step
 * differs.
 */
import { MAX_PREFIX, NetIndex, familyOf, overlaps, toNet, type Net } from './cidr.js';
import { fitPool } from './fit.js';
import type { FitPolicy } from './fit.js';
import type { Ban, CapacityUse, Change, CidrIndex, Family, Pool, Rule, TargetPlan, TargetState, Unenforced } from './types.js';

export type PlanPolicy = FitPolicy;

export const DEFAULT_PLAN_POLICY: PlanPolicy = { refreshMarginMs: 10 * 60_000 };

export interface PlanTargetArgs {
  target: string;
  provider: string;
  bans: readonly Ban[];
  /** CIDR → position in `bans` (`DesiredResult.index`), when the caller has it; only valid for exactly these bans. */
  bansIndex?: CidrIndex | undefined;
  state: TargetState;
  now: number;
  policy?: Partial<PlanPolicy> | undefined;
  describeSlot?: ((pool: string, slot: string) => Record<string, string | number>) | undefined;
}

function isSorted(xs: readonly string[]): boolean {
  for (let i = 1; i < xs.length; i++) if (xs[i - 1]! > xs[i]!) return false;
  return true;
}

function sameCidrs(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function diffCidrs(before: readonly string[], after: readonly string[]): { added: string[]; removed: string[] } {
  if (!isSorted(before) || !isSorted(after)) {
    const b = new Set(before);
    const a = new Set(after);
    return { added: after.filter((c) => !b.has(c)), removed: before.filter((c) => !a.has(c)) };
  }
  // Both sorted (the planner keeps rule members sorted): one merge walk, no hashing of thousands of members.
  const added: string[] = [];
  const removed: string[] = [];
  let i = 0;
  let j = 0;
  while (i < before.length && j < after.length) {
    const x = before[i]!;
    const y = after[j]!;
    if (x === y) {
      i++;
      j++;
    } else if (x < y) {
      removed.push(x);
      i++;
    } else {
      added.push(y);
      j++;
    }
  }
  while (i < before.length) removed.push(before[i++]!);
  while (j < after.length) added.push(after[j++]!);
  return { added, removed };
}

/** Orders changes for apply: phase 1 (pure removals) first; phase 2 by CIDR delta so totals only grow. */
export function orderChanges(changes: Change[]): Change[] {
  const delta = (c: Change) => (c.after?.cidrs.length ?? 0) - (c.before?.cidrs.length ?? 0);
  return changes.sort((x, y) => x.phase - y.phase || delta(x) - delta(y) || (x.pool < y.pool ? -1 : x.pool > y.pool ? 1 : 0) || (x.slot < y.slot ? -1 : x.slot > y.slot ? 1 : 0));
}

/**
 * Moves to phase 3 the changes of one pool that take away a CIDR overlapping
 * a CIDR that another change adds: the addition must land first, or the
 * addresses they share are unprotected between the two writes (a range split
 * around a new whitelist entry; a CIDR moved to another rule). Until phase 3
 * runs, the deferred rules keep their old content, so a change is deferred
 * only while the pool's rule and CIDR limits hold that too; otherwise it
 * stays in its phase.
 */
export function deferBreaks(changes: Change[], pool: Pool, final: readonly Rule[]): void {
  const removing = changes.filter((c) => c.removed.length > 0);
  if (removing.length === 0) return;
  // The few added CIDRs that overlap anything removed, found through one index of every removed net.
  const removedIndex = new NetIndex(removing.flatMap((c) => c.removed.map(toNet)));
  const hits: Array<{ by: Change; net: Net }> = [];
  for (const c of changes) {
    for (const a of c.added) {
      const family = familyOf(a);
      const slash = a.indexOf('/');
      const prefix = slash === -1 ? MAX_PREFIX[family] : Number(a.slice(slash + 1));
      if (removedIndex.overlapsCidr(a, family, prefix)) hits.push({ by: c, net: toNet(a) });
    }
  }
  if (hits.length === 0) return;
  // Headroom while deferred rules still hold their old content.
  const rules: Record<Family, number> = { 4: 0, 6: 0 };
  let cidrs = 0;
  for (const r of final) {
    rules[r.family]++;
    cidrs += r.cidrs.length;
  }
  const ruleLimit = (f: Family) => Math.min(pool.maxRules, pool.maxRulesPerFamily?.[f] ?? pool.maxRules);
  for (const c of removing) {
    const nets = c.removed.map(toNet);
    if (!hits.some((h) => h.by !== c && nets.some((n) => overlaps(n, h.net)))) continue;
    const extraCidrs = (c.before?.cidrs.length ?? 0) - (c.after?.cidrs.length ?? 0);
    const extraRule = c.kind === 'delete' ? 1 : 0;
    if (cidrs + extraCidrs > pool.maxCidrs || rules[4] + rules[6] + extraRule > pool.maxRules || rules[c.family] + extraRule > ruleLimit(c.family)) continue;
    cidrs += extraCidrs;
    rules[c.family] += extraRule;
    c.phase = 3;
  }
}

/** Diff one pool's actual rules against its fitted rules. */
export function diffRules(actual: readonly Rule[], desired: readonly Rule[], vacated: readonly Rule[]): { changes: Change[]; unchanged: number } {
  const byKey = new Map(actual.map((r) => [r.slot, r]));
  const changes: Change[] = [];
  let unchanged = 0;
  for (const r of desired) {
    const before = byKey.get(r.slot);
    if (!before) {
      changes.push({
        kind: 'create',
        pool: r.pool,
        slot: r.slot,
        family: r.family,
        phase: 2,
        after: { cidrs: r.cidrs, expiresAt: r.expiresAt },
        added: r.cidrs,
        removed: [],
        reason: `ban ${r.cidrs.length} CIDR${r.cidrs.length === 1 ? '' : 's'}`,
      });
      continue;
    }
    const cidrsSame = sameCidrs(before.cidrs, r.cidrs) && before.family === r.family;
    if (cidrsSame && before.expiresAt === r.expiresAt && before.repair === undefined) {
      unchanged++;
      continue;
    }
    const { added, removed } = diffCidrs(before.cidrs, r.cidrs);
    const reason = cidrsSame
      ? before.expiresAt === r.expiresAt
        ? before.repair!
        : `refresh recorded expiry${before.repair !== undefined ? `; ${before.repair}` : ''}`
      : [added.length ? `ban ${added.length}` : '', removed.length ? `lift ${removed.length}` : '', before.repair ?? ''].filter(Boolean).join(', ');
    changes.push({
      kind: 'update',
      pool: r.pool,
      slot: r.slot,
      family: r.family,
      phase: added.length === 0 && before.family === r.family ? 1 : 2,
      before: { cidrs: before.cidrs, expiresAt: before.expiresAt },
      after: { cidrs: r.cidrs, expiresAt: r.expiresAt },
      added,
      removed,
      reason,
    });
  }
  for (const r of vacated) {
    changes.push({
      kind: 'delete',
      pool: r.pool,
      slot: r.slot,
      family: r.family,
      phase: 1,
      before: { cidrs: r.cidrs, expiresAt: r.expiresAt },
      added: [],
      removed: r.cidrs,
      reason: r.cidrs.length === 0 ? 'drop a record left without its rule (repair after an interrupted pass)' : `lift ${r.cidrs.length} CIDR${r.cidrs.length === 1 ? '' : 's'} (expired, no longer banned, or whitelisted)`,
    });
  }
  return { changes, unchanged };
}

export function planTarget(args: PlanTargetArgs): TargetPlan {
  const policy: PlanPolicy = { ...DEFAULT_PLAN_POLICY, ...args.policy };
  const { state } = args;
  const base = {
    target: args.target,
    provider: args.provider,
    conflicts: state.conflicts,
    warnings: [...state.warnings],
  };
  if (state.conflicts.length > 0) {
    // A foreign rule inside our band: nothing is planned, nothing is written.
    return {
      ...base,
      changes: [],
      unenforced: [],
      capacity: [],
      error: `ownership conflict: ${state.conflicts.map((c) => c.message).join('; ')}`,
      summary: { create: 0, update: 0, delete: 0, unchanged: 0, enforced: 0, unenforced: 0 },
    };
  }
  const changes: Change[] = [];
  const unenforced: Unenforced[] = [];
  const capacity: CapacityUse[] = [];
  let unchanged = 0;
  let enforced = 0;
  for (const pool of state.pools) {
    const actual = state.rules.filter((r) => r.pool === pool.id).map((r) => (isSorted(r.cidrs) ? r : { ...r, cidrs: [...r.cidrs].sort() }));
    const fit = fitPool(args.bans, pool, actual, policy, args.now, args.bansIndex);
    const d = diffRules(actual, fit.rules, fit.vacated);
    deferBreaks(d.changes, pool, fit.rules);
    changes.push(...d.changes);
    unchanged += d.unchanged;
    unenforced.push(...fit.unenforced);
    if (fit.bucketOverflow > 0) {
      base.warnings.push(`pool ${pool.id}: ${fit.bucketOverflow} CIDRs share a rule with a later expiry than their own bucket allows (not enough rules for every expiry bucket)`);
    }
    const cidrsUsed = fit.rules.reduce((n, r) => n + r.cidrs.length, 0);
    // A disabled rule's CIDRs take capacity but are not enforced (they are listed unenforced).
    enforced += fit.rules.reduce((n, r) => n + (r.disabled ? 0 : r.cidrs.length), 0);
    capacity.push({
      pool: pool.id,
      rules: { used: fit.rules.length, total: pool.maxRules },
      cidrs: { used: cidrsUsed, total: Math.min(pool.maxCidrs, pool.maxRules * Math.max(1, pool.cidrsPerRule)) },
    });
  }
  orderChanges(changes);
  let slots: TargetPlan['slots'];
  if (args.describeSlot) {
    slots = {};
    for (const c of changes) slots[`${c.pool}/${c.slot}`] = args.describeSlot(c.pool, c.slot);
  }
  return {
    ...base,
    changes,
    unenforced,
    capacity,
    slots,
    summary: {
      create: changes.filter((c) => c.kind === 'create').length,
      update: changes.filter((c) => c.kind === 'update').length,
      delete: changes.filter((c) => c.kind === 'delete').length,
      unchanged,
      enforced,
      unenforced: unenforced.length,
    },
  };
}
