/**
 * One reconcile pass: fetch → desired → (per target) read → plan → apply.
 *
 * Fail static: when a source fails (unreachable, 5xx, 403, garbage) or the
 * whitelist is incomplete (a hostname did not resolve), nothing is removed
 * because of the outage. The desired state then also holds every owned CIDR
 * whose recorded expiry has not passed, so only expired rules go. Bans from
 * sources that did answer are still added, unless the whitelist itself is
 * incomplete: then nothing new is added either.
 *
 * The only module in core that does I/O (through the providers and sources
 * it is given) and reads the clock (through `now`).
 */
import type { Logger } from 'pino';
import { DEFAULT_GUARDS, bansFromRules, computeDesired, type Guards } from './desired.js';
import { buildWhitelist, type Resolver, type WhitelistInput } from './whitelist.js';
import { originClassOf } from './decisions.js';
import { planTarget, type PlanPolicy } from './plan.js';
import { WriteBudget, type ChangeOutcome } from './queue.js';
import { OwnershipConflictError, QuotaExceededError, errorLine, isRetryable } from './errors.js';
import type { Ban, Decision, Plan, SourceStatus, TargetPlan, Unenforced } from './types.js';
import type { DecisionSource } from '../sources/source.js';
import type { Provider } from '../providers/provider.js';

export type PassMode = 'plan' | 'apply' | 'flush';

export interface PassTarget {
  provider: Provider;
  maxWritesPerRun: number;
}

export interface PassDeps {
  sources: readonly DecisionSource[];
  targets: readonly PassTarget[];
  log: Logger;
  now: () => number;
  resolve: Resolver;
  whitelist: Omit<WhitelistInput, 'remote'>;
  guards?: Guards | undefined;
  policy?: Partial<PlanPolicy> | undefined;
  originClasses?: { manual: string[]; local: string[] } | undefined;
  /** After abort, no new write starts (Lambda deadline, SIGTERM). */
  signal?: AbortSignal | undefined;
  /** Daemon mode: sources may poll deltas. */
  allowDelta?: boolean | undefined;
  /** Observers for metrics. */
  onSourceFetched?: ((status: SourceStatus) => void) | undefined;
}

export interface TargetOutcome {
  target: string;
  provider: string;
  applied: number;
  /** Applied changes by kind. */
  appliedByKind: Record<'create' | 'update' | 'delete', number>;
  failed: number;
  skipped: number;
  /** API calls made for this target in this pass (reads and writes). */
  calls: number;
  errors: string[];
  fatal: boolean;
}

export interface PassResult {
  plan: Plan;
  outcomes: TargetOutcome[];
  /** One-line errors: sources, whitelist, targets. Empty on a clean pass. */
  errors: string[];
  /** True when some error is fatal (auth, config, ownership conflict), not just retryable. */
  fatal: boolean;
  /** Decisions seen across healthy sources. */
  decisions: number;
}

interface Fetched {
  decisions: Decision[];
  statuses: SourceStatus[];
  remote: Array<{ source: string; entries: readonly string[] }>;
  errors: string[];
  /** Failed sources that publish a whitelist: their entries are unknown this pass. */
  whitelistUnknown: string[];
}

async function fetchSources(deps: PassDeps, now: number): Promise<Fetched> {
  const results = await Promise.all(
    deps.sources.map(async (s) => {
      const started = performance.now();
      try {
        const snap = await s.snapshot({ now, signal: deps.signal, allowDelta: deps.allowDelta });
        const status: SourceStatus = {
          name: s.name,
          ok: true,
          decisions: snap.decisions.length,
          skipped: snap.skipped,
          whitelist: snap.whitelist.length,
          durationMs: Math.round(performance.now() - started),
        };
        if (snap.skipped > 0) deps.log.warn({ source: s.name, skipped: snap.skipped, samples: snap.skippedSamples }, 'skipped invalid decisions');
        return { status, snap };
      } catch (err) {
        const status: SourceStatus = { name: s.name, ok: false, error: errorLine(err), decisions: 0, skipped: 0, whitelist: 0, durationMs: Math.round(performance.now() - started) };
        return { status, snap: undefined };
      }
    }),
  );
  const out: Fetched = { decisions: [], statuses: [], remote: [], errors: [], whitelistUnknown: [] };
  results.forEach((r, i) => {
    out.statuses.push(r.status);
    deps.onSourceFetched?.(r.status);
    if (!r.snap) {
      out.errors.push(r.status.error!.startsWith('source ') ? r.status.error! : `source ${r.status.name}: ${r.status.error}`);
      if (deps.sources[i]!.publishesWhitelist) out.whitelistUnknown.push(r.status.name);
      return;
    }
    for (const d of r.snap.decisions) out.decisions.push(d);
    if (r.snap.whitelist.length) out.remote.push({ source: r.status.name, entries: r.snap.whitelist });
  });
  return out;
}

function emptyTargetPlan(p: Provider, error: string): TargetPlan {
  return {
    target: p.target,
    provider: p.kind,
    changes: [],
    unenforced: [],
    capacity: [],
    conflicts: [],
    warnings: [],
    error,
    summary: { create: 0, update: 0, delete: 0, unchanged: 0, enforced: 0, unenforced: 0 },
  };
}

/** Merge fail-static bans into the healthy set: longest expiry wins. */
function mergeBans(base: readonly Ban[], extra: readonly Ban[]): Ban[] {
  if (extra.length === 0) return base as Ban[];
  const m = new Map(base.map((b) => [b.cidr, b]));
  for (const b of extra) {
    const prev = m.get(b.cidr);
    if (!prev || b.expiresAt > prev.expiresAt) m.set(b.cidr, prev ? { ...prev, expiresAt: b.expiresAt } : b);
  }
  return [...m.values()];
}

export async function runPass(deps: PassDeps, mode: PassMode): Promise<PassResult> {
  const now = deps.now();
  const log = deps.log;
  const guards = deps.guards ?? DEFAULT_GUARDS;
  const classes = deps.originClasses;
  const classify = (o: string) => originClassOf(o, classes);
  const errors: string[] = [];

  // 1. Fetch (flush ignores the sources: it removes every owned rule).
  const fetched: Fetched = mode === 'flush' ? { decisions: [], statuses: [], remote: [], errors: [], whitelistUnknown: [] } : await fetchSources(deps, now);
  errors.push(...fetched.errors);
  let failStatic = fetched.errors.length > 0;

  // 2. Whitelist (static, never_ban, remote, DNS re-resolved on every pass).
  const wl = await buildWhitelist({ ...deps.whitelist, remote: fetched.remote }, deps.resolve);
  for (const e of wl.errors) log.warn({ problem: e }, 'whitelist problem');
  let decisions = fetched.decisions;
  if ((wl.incomplete || fetched.whitelistUnknown.length > 0) && mode !== 'flush') {
    // An address we should trust may be missing: add nothing new, remove nothing because of it.
    failStatic = true;
    decisions = [];
    errors.push(...wl.errors.filter((e) => e.startsWith('whitelist hostname')));
    if (fetched.whitelistUnknown.length > 0) {
      log.warn({ sources: fetched.whitelistUnknown }, 'a failed source publishes a whitelist: nothing new is added until it answers');
    }
  }

  // 3. Desired bans from healthy sources (pure; shared by every target).
  const desired = computeDesired(decisions, wl.index, guards, now, classify);

  // 4. Per target: read → plan → apply, concurrently, each with its own queue.
  const outcomes: TargetOutcome[] = [];
  const targetPlans = await Promise.all(
    deps.targets.map(async (t): Promise<TargetPlan> => {
      const p = t.provider;
      const outcome: TargetOutcome = { target: p.target, provider: p.kind, applied: 0, appliedByKind: { create: 0, update: 0, delete: 0 }, failed: 0, skipped: 0, calls: 0, errors: [], fatal: false };
      outcomes.push(outcome);
      const callsBefore = p.stats().total;
      try {
        const state = await p.read();
        let bans: readonly Ban[] = desired.bans;
        if (mode === 'flush') bans = [];
        else if (failStatic) {
          // Keep what is enforced until its recorded expiry; whitelist and guards still apply.
          const kept = computeDesired([], wl.index, guards, now, classify, bansFromRules(state.rules, now));
          bans = mergeBans(desired.bans, kept.bans);
        }
        const plan = planTarget({
          target: p.target,
          provider: p.kind,
          bans,
          bansIndex: bans === desired.bans ? desired.index : undefined,
          state,
          now,
          policy: deps.policy,
          describeSlot: p.describeSlot?.bind(p),
        });
        if (mode === 'flush') for (const c of plan.changes) c.reason = `flush: remove ${c.removed.length} CIDR${c.removed.length === 1 ? '' : 's'}`;
        for (const w of plan.warnings) log.warn({ target: p.target, warning: w }, 'target warning');
        if (plan.error) {
          outcome.errors.push(`target ${p.target}: ${plan.error}`);
          outcome.fatal = true;
          return plan;
        }
        if (mode === 'plan' || plan.changes.length === 0) return plan;
        const result = await p.apply(plan.changes, { budget: new WriteBudget(t.maxWritesPerRun), signal: deps.signal });
        recordOutcomes(plan, result.outcomes, outcome);
        log.info(
          { target: p.target, provider: p.kind, create: plan.summary.create, update: plan.summary.update, delete: plan.summary.delete, applied: outcome.applied, failed: outcome.failed, skipped: outcome.skipped },
          'applied plan',
        );
        return plan;
      } catch (err) {
        outcome.errors.push(errorLine(err).startsWith('target ') ? errorLine(err) : `target ${p.target}: ${errorLine(err)}`);
        outcome.fatal = !isRetryable(err) || err instanceof OwnershipConflictError;
        return emptyTargetPlan(p, errorLine(err));
      } finally {
        outcome.calls = p.stats().total - callsBefore;
      }
    }),
  );
  outcomes.sort((a, b) => deps.targets.findIndex((t) => t.provider.target === a.target) - deps.targets.findIndex((t) => t.provider.target === b.target));
  for (const o of outcomes) errors.push(...o.errors);

  const plan: Plan = {
    version: 1,
    generatedAt: new Date(now).toISOString(),
    failStatic,
    sources: fetched.statuses,
    refused: desired.refused,
    targets: targetPlans,
  };
  return { plan, outcomes, errors, fatal: outcomes.some((o) => o.fatal), decisions: decisions.length };
}

/** Folds apply outcomes into the plan's report: failed creates hit by a quota become `unenforced: quota`. */
function recordOutcomes(plan: TargetPlan, results: readonly ChangeOutcome[], outcome: TargetOutcome): void {
  const extra: Unenforced[] = [];
  for (const r of results) {
    if (r.status === 'applied') {
      outcome.applied++;
      outcome.appliedByKind[r.change.kind]++;
    }
    else if (r.status === 'skipped') outcome.skipped++;
    else {
      outcome.failed++;
      const err = r.error;
      const reason = err instanceof QuotaExceededError ? 'quota' : 'write_failed';
      for (const cidr of r.change.added) {
        extra.push({ cidr, family: r.change.family, expiresAt: r.change.after?.expiresAt ?? 0, origin: '', originClass: 'list', reason });
      }
      outcome.errors.push(`target ${plan.target}: ${r.change.kind} ${r.change.slot}: ${errorLine(err)}`);
      if (!isRetryable(err) && !(err instanceof QuotaExceededError)) outcome.fatal = true;
    }
  }
  plan.unenforced.push(...extra);
  plan.summary.unenforced = plan.unenforced.length;
}
