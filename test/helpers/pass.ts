/**
 * One provider pass for tests: read → plan → (apply). The same steps the
 * reconcile loop takes, without sources.
 */
import { planTarget, type PlanPolicy } from '../../src/core/plan.js';
import { WriteBudget } from '../../src/core/queue.js';
import type { ApplyResult, Provider } from '../../src/providers/provider.js';
import type { Ban, TargetPlan } from '../../src/core/types.js';
import { NOW } from './bans.js';

export interface PassOptions {
  now?: number;
  /** Apply the plan (default true). */
  apply?: boolean;
  /** Write budget for the apply (default 10 000). */
  budget?: number;
  signal?: AbortSignal;
  policy?: Partial<PlanPolicy>;
}

export async function providerPass(provider: Provider, bans: Ban[], opts: PassOptions = {}): Promise<{ plan: TargetPlan; result?: ApplyResult }> {
  const now = opts.now ?? NOW;
  const state = await provider.read();
  const plan = planTarget({
    target: provider.target,
    provider: provider.kind,
    bans,
    state,
    now,
    policy: opts.policy,
    describeSlot: provider.describeSlot?.bind(provider),
  });
  if (opts.apply === false || plan.error || plan.changes.length === 0) return { plan };
  const result = await provider.apply(plan.changes, { budget: new WriteBudget(opts.budget ?? 10_000), signal: opts.signal });
  return { plan, result };
}
