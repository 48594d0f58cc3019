/**
 * Plan renderers: human text, and the versioned JSON contract (`"version": 1`,
 * documented in README.md). Pure.
 */
import type { Change, Plan, TargetPlan, Unenforced } from './types.js';

/** Items listed per target in JSON before `unenforced` is truncated (counts stay exact). */
export const DEFAULT_UNENFORCED_LIMIT = 1000;

const iso = (ms: number) => (Number.isFinite(ms) ? new Date(ms).toISOString().replace('.000Z', 'Z') : String(ms));

function countBy<T>(items: readonly T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const i of items) {
    const k = key(i);
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

export interface JsonOptions {
  unenforcedLimit?: number;
}

/** The plan as the JSON contract. `unenforced` lists at most `unenforcedLimit` items per target; `unenforced_by_reason` is exact. */
export function planToJson(plan: Plan, opts: JsonOptions = {}): unknown {
  const limit = opts.unenforcedLimit ?? DEFAULT_UNENFORCED_LIMIT;
  return {
    version: plan.version,
    generated_at: plan.generatedAt,
    fail_static: plan.failStatic,
    sources: plan.sources.map((s) => ({ name: s.name, ok: s.ok, error: s.error ?? null, decisions: s.decisions, skipped: s.skipped, whitelist: s.whitelist, duration_ms: s.durationMs })),
    refused: plan.refused.map((r) => ({ value: r.value, reason: r.reason, detail: r.detail ?? null, source: r.source ?? null, origin: r.origin ?? null, scenario: r.scenario ?? null })),
    targets: plan.targets.map((t) => targetToJson(t, limit)),
    summary: {
      create: sum(plan.targets, (t) => t.summary.create),
      update: sum(plan.targets, (t) => t.summary.update),
      delete: sum(plan.targets, (t) => t.summary.delete),
      unenforced: sum(plan.targets, (t) => t.summary.unenforced),
      refused: plan.refused.length,
      errors: plan.targets.filter((t) => t.error).length + plan.sources.filter((s) => !s.ok).length,
    },
  };
}

function sum<T>(xs: readonly T[], f: (x: T) => number): number {
  return xs.reduce((n, x) => n + f(x), 0);
}

function changeToJson(c: Change, t: TargetPlan): unknown {
  return {
    kind: c.kind,
    pool: c.pool,
    slot: c.slot,
    family: `ipv${c.family}`,
    phase: c.phase,
    provider_terms: t.slots?.[`${c.pool}/${c.slot}`] ?? null,
    before: c.before ? { cidrs: c.before.cidrs, expires_at: iso(c.before.expiresAt) } : null,
    after: c.after ? { cidrs: c.after.cidrs, expires_at: iso(c.after.expiresAt) } : null,
    added: c.added,
    removed: c.removed,
    reason: c.reason,
  };
}

function unenforcedToJson(u: Unenforced): unknown {
  return { cidr: u.cidr, family: `ipv${u.family}`, expires_at: iso(u.expiresAt), origin: u.origin, origin_class: u.originClass, reason: u.reason };
}

function targetToJson(t: TargetPlan, limit: number): unknown {
  return {
    name: t.target,
    provider: t.provider,
    error: t.error ?? null,
    changes: t.changes.map((c) => changeToJson(c, t)),
    unenforced: t.unenforced.slice(0, limit).map(unenforcedToJson),
    unenforced_truncated: t.unenforced.length > limit,
    unenforced_by_reason: countBy(t.unenforced, (u) => u.reason),
    capacity: t.capacity.map((c) => ({ pool: c.pool, rules: c.rules, cidrs: c.cidrs })),
    conflicts: t.conflicts,
    warnings: t.warnings,
    summary: t.summary,
  };
}

// ---------------------------------------------------------------------------

function terms(t: TargetPlan, c: Change): string {
  const d = t.slots?.[`${c.pool}/${c.slot}`];
  if (!d) return c.slot;
  return Object.entries(d)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
}

const SIGN: Record<Change['kind'], string> = { create: '+', update: '~', delete: '-' };

export interface TextOptions {
  /** CIDRs listed per change before eliding. */
  cidrLimit?: number;
  unenforcedLimit?: number;
  /** The plan of `flush`: every owned rule goes. */
  flush?: boolean;
}

export function planToText(plan: Plan, opts: TextOptions = {}): string {
  const cidrLimit = opts.cidrLimit ?? 20;
  const uLimit = opts.unenforcedLimit ?? 10;
  const out: string[] = [];
  // The whitelist fails static too: an address to trust may be missing.
  const why = plan.sources.some((s) => !s.ok) ? 'a source failed' : 'the whitelist is incomplete';
  out.push(`cloud-bouncer ${opts.flush ? 'flush ' : ''}plan at ${plan.generatedAt}${plan.failStatic ? `  [FAIL-STATIC: ${why}; only expired or whitelisted rules are removed]` : ''}`);
  for (const s of plan.sources) {
    // A source's error already starts with "source NAME: "; the line names it once.
    const error = s.error?.startsWith(`source ${s.name}: `) ? s.error.slice(`source ${s.name}: `.length) : s.error;
    out.push(s.ok ? `source ${s.name}: ok, ${s.decisions} decisions${s.skipped ? `, ${s.skipped} invalid skipped` : ''}${s.whitelist ? `, ${s.whitelist} whitelist entries` : ''}` : `source ${s.name}: FAILED: ${error}`);
  }
  if (plan.refused.length) {
    const by = countBy(plan.refused, (r) => r.reason);
    out.push(`refused: ${plan.refused.length} (${Object.entries(by).map(([k, v]) => `${k} ${v}`).join(', ')})`);
    for (const r of plan.refused.slice(0, uLimit)) out.push(`  ! ${r.value}: ${r.reason}${r.detail ? ` (${r.detail})` : ''}`);
    if (plan.refused.length > uLimit) out.push(`  … ${plan.refused.length - uLimit} more`);
  }
  for (const t of plan.targets) {
    out.push('');
    const s = t.summary;
    out.push(`target ${t.target} (${t.provider}): ${s.create} to create, ${s.update} to update, ${s.delete} to delete, ${s.unchanged} unchanged`);
    if (t.error) out.push(`  ERROR: ${t.error}`);
    for (const w of t.warnings) out.push(`  WARNING: ${w}`);
    for (const c of t.changes) {
      const exp = c.after ? ` expires ${iso(c.after.expiresAt)}` : '';
      out.push(`  ${SIGN[c.kind]} ${c.kind} ${terms(t, c)} [IPv${c.family}]${exp} — ${c.reason}`);
      for (const cidr of c.added.slice(0, cidrLimit)) out.push(`      + ${cidr}`);
      if (c.added.length > cidrLimit) out.push(`      … ${c.added.length - cidrLimit} more added`);
      for (const cidr of c.removed.slice(0, cidrLimit)) out.push(`      - ${cidr}`);
      if (c.removed.length > cidrLimit) out.push(`      … ${c.removed.length - cidrLimit} more removed`);
    }
    if (t.unenforced.length) {
      const by = countBy(t.unenforced, (u) => u.reason);
      out.push(`  unenforced: ${t.unenforced.length} (${Object.entries(by).map(([k, v]) => `${k} ${v}`).join(', ')})`);
      for (const u of t.unenforced.slice(0, uLimit)) out.push(`      ${u.cidr} (${u.reason}, ${u.originClass}, expires ${iso(u.expiresAt)})`);
      if (t.unenforced.length > uLimit) out.push(`      … ${t.unenforced.length - uLimit} more`);
    }
    for (const c of t.capacity) out.push(`  capacity ${c.pool}: rules ${c.rules.used}/${c.rules.total}, CIDRs ${c.cidrs.used}/${c.cidrs.total}`);
  }
  const total = (k: 'create' | 'update' | 'delete') => sum(plan.targets, (t) => t.summary[k]);
  out.push('');
  out.push(`Plan: ${total('create')} to create, ${total('update')} to update, ${total('delete')} to delete.`);
  return `${out.join('\n')}\n`;
}
