/**
 * API efficiency per provider: the real providers and the real `runPass`
 * against the in-repo fakes, fed by an in-memory decision source. Counts
 * the calls each fake receives per pass:
 *
 * - initial: an empty target gets the whole ban set;
 * - steady: the same decisions every pass (target: 1 read, 0 writes);
 * - sliding: every expiry moves forward by the pass interval, as a MikoPBX
 *   source reports them (target: 0 writes; the refresh margin absorbs it);
 * - churn: 1% of the bans replaced per pass (target: writes within 10% of
 *   the planned rule changes, the rules whose content must change).
 *
 * After every pass the CIDRs on the fake are compared with the desired set,
 * so a cheap pass that did not converge shows. Prints one JSON line per
 * provider and scenario, then one with a `markdown` table. Asserts nothing.
 */
import { pino } from 'pino';
import { runPass, type PassDeps } from '../src/core/reconcile.js';
import { DEFAULT_PLAN_POLICY } from '../src/core/plan.js';
import { AddressPool, MemorySource, decision, seeded } from './lib/decisions.js';
import { benchTargets, type BenchFake, type BenchSession, type BenchTarget } from './lib/targets/index.js';
import type { Decision, Family } from '../src/core/types.js';

const smoke = process.argv.includes('--smoke');
const PASSES = smoke ? 3 : 30;
/** A scheduled job every minute (EventBridge `rate(1 minute)`), the Lambda deployment's default. */
const INTERVAL_MS = 60_000;
const START = Date.UTC(2026, 10, 23, 8, 0, 0);
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const CHURN = 0.01;

type Scenario = 'initial' | 'steady' | 'sliding' | 'churn';

interface PassFigures {
  reads: number;
  writes: number;
  byOp: Record<string, number>;
  /** Rules with a create, update or delete in the plan. */
  planned: number;
  /** Planned changes that lift a CIDR: those rules must be rewritten whatever the placement. */
  lifting: number;
  /** Calls the provider counted itself (cross-checked against the wire). */
  counted: number;
  converged: boolean;
  unenforced: number;
  errors: string[];
}

interface ScenarioFigures {
  provider: string;
  shape: string;
  scenario: Scenario;
  bans: number;
  passes: PassFigures[];
}

/** A ban's duration: 4 h plus up to 30 min, so every rule's members share one expiry bucket (default 1 h). */
function duration(random: () => number): number {
  return 4 * HOUR + Math.floor(random() * 30) * MINUTE;
}

/** A ban as the bench's source reports it (not the core `Ban`: only what the source needs). */
interface SourceBan {
  value: string;
  family: Family;
  durationMs: number;
  /** Fixed expiry (steady, churn); sliding recomputes it from `durationMs` every pass. */
  expiresAt: number;
}

function initialBans(target: BenchTarget, addresses: AddressPool, random: () => number): SourceBan[] {
  const out: SourceBan[] = [];
  for (const family of [4, 6] as const) {
    for (let i = 0; i < target.bans[family]; i++) {
      const d = duration(random);
      out.push({ value: addresses.take(family), family, durationMs: d, expiresAt: START + d });
    }
  }
  return out;
}

function toDecisions(bans: readonly SourceBan[], now: number, sliding: boolean): Decision[] {
  return bans.map((b) => decision(b.value, sliding ? now + b.durationMs : b.expiresAt));
}

async function onePass(session: BenchSession, deps: PassDeps, source: MemorySource): Promise<PassFigures> {
  const before = session.wire();
  const result = await runPass(deps, 'apply');
  const after = session.wire();
  const plan = result.plan.targets[0]!;
  const byOp: Record<string, number> = {};
  for (const [op, n] of Object.entries(after.byOp)) {
    const d = n - (before.byOp[op] ?? 0);
    if (d > 0) byOp[op] = d;
  }
  const desired = source.decisions.map((d) => d.cidr).sort();
  const enforced = await session.enforced();
  return {
    reads: after.reads - before.reads,
    writes: after.writes - before.writes,
    byOp,
    planned: plan.changes.length,
    lifting: plan.changes.filter((c) => c.removed.length > 0).length,
    counted: result.outcomes[0]?.calls ?? 0,
    converged: desired.length === enforced.length && desired.every((c, i) => c === enforced[i]),
    unenforced: plan.summary.unenforced,
    errors: result.errors,
  };
}

async function runScenario(target: BenchTarget, fake: BenchFake, scenario: Exclude<Scenario, 'initial'>): Promise<ScenarioFigures[]> {
  let now = START;
  const session = await fake.session(() => now);
  const random = seeded(7);
  const addresses = new AddressPool();
  const source = new MemorySource();
  const deps: PassDeps = {
    sources: [source],
    targets: [{ provider: session.provider, maxWritesPerRun: 100_000 }],
    log: pino({ level: 'silent' }),
    now: () => now,
    resolve: async () => [],
    whitelist: { cidrs: [], hostnames: [], neverBan: [] },
  };
  const bans = initialBans(target, addresses, random);
  source.decisions = toDecisions(bans, now, false);
  const initial = await onePass(session, deps, source);

  const passes: PassFigures[] = [];
  const replace = Math.max(1, Math.round(bans.length * CHURN));
  for (let p = 1; p <= PASSES; p++) {
    now = START + p * INTERVAL_MS;
    if (scenario === 'churn') {
      // Replace `replace` distinct bans, each by a new address of the same family.
      const picked = new Set<number>();
      while (picked.size < replace) picked.add(Math.floor(random() * bans.length));
      for (const i of picked) {
        const family = bans[i]!.family;
        const d = duration(random);
        bans[i] = { value: addresses.take(family), family, durationMs: d, expiresAt: now + d };
      }
    }
    source.decisions = toDecisions(bans, now, scenario === 'sliding');
    passes.push(await onePass(session, deps, source));
  }
  await session.provider.close?.();
  const base = { provider: target.kind, shape: target.shape, bans: bans.length };
  return [
    ...(scenario === 'steady' ? [{ ...base, scenario: 'initial' as const, passes: [initial] }] : []),
    { ...base, scenario, passes },
  ];
}

// --- Report -------------------------------------------------------------------

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const fmt = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(2));

function perPass(xs: number[]): string {
  const mean = sum(xs) / xs.length;
  const min = Math.min(...xs);
  const max = Math.max(...xs);
  return min === max ? fmt(mean) : `${fmt(mean)} (${min}–${max})`;
}

function meetsTarget(s: ScenarioFigures): string {
  const p = s.passes;
  if (s.scenario === 'initial') return '–';
  if (s.scenario === 'steady' || s.scenario === 'sliding') {
    const reads = p.every((x) => x.reads === 1);
    const writes = p.every((x) => x.writes === 0);
    return reads && writes ? 'yes' : `no (${[reads ? '' : 'reads > 1', writes ? '' : 'writes > 0'].filter(Boolean).join(', ')})`;
  }
  const planned = sum(p.map((x) => x.planned));
  const writes = sum(p.map((x) => x.writes));
  if (writes <= 1.1 * planned) return 'yes';
  const minimum = apiMinimum(s);
  const vsMinimum = minimum > planned ? `; ${writes <= 1.1 * minimum ? 'within' : 'over'} 10% of the API minimum` : '';
  return `no (+${Math.round((writes / planned - 1) * 100)}%${vsMinimum})`;
}

/** Rules that must change plus the writes the cloud needs outside the rules (metadataWrites), summed over the passes. */
function apiMinimum(s: ScenarioFigures): number {
  const extra = benchTargets.find((t) => t.kind === s.provider)?.metadataWrites ?? (() => 0);
  return sum(s.passes.map((x) => x.planned + extra(x.planned)));
}

function row(s: ScenarioFigures): string {
  const p = s.passes;
  const planned = sum(p.map((x) => x.planned));
  const writes = sum(p.map((x) => x.writes));
  const converged = p.filter((x) => x.converged).length;
  const wrote = p.filter((x) => x.writes > 0).length;
  return [
    s.provider,
    s.scenario === 'initial' ? `${s.bans.toLocaleString('en')} bans` : s.scenario === 'churn' ? `${Math.max(1, Math.round(s.bans * CHURN))} of ${s.bans.toLocaleString('en')} replaced` : `${s.bans.toLocaleString('en')} bans`,
    s.scenario,
    String(p.length),
    perPass(p.map((x) => x.reads)),
    `${perPass(p.map((x) => x.writes))}${s.scenario === 'sliding' ? ` [${wrote} of ${p.length} passes wrote]` : ''}`,
    perPass(p.map((x) => x.planned)),
    s.scenario === 'churn' ? perPass(p.map((x) => x.lifting)) : '–',
    planned === 0 ? '–' : `${(writes / planned).toFixed(2)}×`,
    planned === 0 ? '–' : `${(writes / apiMinimum(s)).toFixed(2)}×`,
    converged === p.length ? 'yes' : `${converged} of ${p.length}`,
    meetsTarget(s),
  ].join(' | ');
}

function opsLine(s: ScenarioFigures): string {
  const totals: Record<string, number> = {};
  for (const x of s.passes) for (const [op, n] of Object.entries(x.byOp)) totals[op] = (totals[op] ?? 0) + n;
  const ops = Object.entries(totals)
    .sort((a, b) => b[1] - a[1])
    .map(([op, n]) => `${op} ${fmt(Number((n / s.passes.length).toFixed(2)))}`)
    .join(', ');
  return `| ${s.provider} | ${s.scenario} | ${ops || 'none'} |`;
}

function markdown(all: ScenarioFigures[]): string {
  const lines = [
    `## API calls per pass (real providers and runPass against the in-repo fakes; one pass a minute, ${PASSES} passes per scenario)`,
    '',
    `Reads and writes are the calls each fake received. Planned = rules with a create, update or delete in the plan (the lower bound for writes). API minimum = planned plus the writes a cloud needs outside its rules (aws-nacl: one CreateTags for the claims of a pass that changes entries). Lifting = planned rules that lose a CIDR, which must be rewritten whatever the placement. Converged = the CIDRs on the fake equal the desired set after the pass. Targets: steady and sliding 1 read and 0 writes per pass; churn writes within 10% of planned.`,
    '',
    '| provider | bans | scenario | passes | reads / pass | writes / pass | planned / pass | lifting / pass | writes ÷ planned | writes ÷ API minimum | converged | meets target |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|',
    ...all.map((s) => `| ${row(s)} |`),
    '',
    'Calls per pass by operation:',
    '',
    '| provider | scenario | operation: calls per pass |',
    '|---|---|---|',
    ...all.filter((s) => s.scenario === 'initial' || s.scenario === 'churn' || s.scenario === 'sliding').map(opsLine),
  ];
  const notes: string[] = ['Every pass that writes reads the target twice: the plan\'s read, and a fresh read just before writing (ownership is checked again).'];
  for (const t of benchTargets) if (t.note && all.some((s) => s.provider === t.kind)) notes.push(`${t.kind}: ${t.note}`);
  const sliding = all.filter((s) => s.scenario === 'sliding' && s.passes.some((p) => p.writes > 0));
  if (sliding.length > 0) {
    notes.push(
      `Sliding: a recorded expiry is rewritten once it lags the desired one by more than the refresh margin (${DEFAULT_PLAN_POLICY.refreshMarginMs / MINUTE} min), so with one pass a minute every rule is refreshed about every ${Math.floor(DEFAULT_PLAN_POLICY.refreshMarginMs / INTERVAL_MS) + 1} passes; the other passes write nothing.`,
    );
  }
  for (const s of all) {
    const mismatched = s.passes.filter((p) => p.counted !== p.reads + p.writes).length;
    if (mismatched > 0) notes.push(`${s.provider} ${s.scenario}: the provider's own call count differs from the wire in ${mismatched} of ${s.passes.length} passes.`);
    const errors = [...new Set(s.passes.flatMap((p) => p.errors))];
    if (errors.length > 0) notes.push(`${s.provider} ${s.scenario}: errors: ${errors.slice(0, 3).join('; ')}`);
    const unenforced = Math.max(...s.passes.map((p) => p.unenforced));
    if (unenforced > 0) notes.push(`${s.provider} ${s.scenario}: up to ${unenforced} bans unenforced in a pass.`);
  }
  if (notes.length > 0) lines.push('', ...notes.map((n) => `- ${n}`));
  return lines.join('\n');
}

const all: ScenarioFigures[] = [];
for (const target of benchTargets) {
  const fake = await target.start();
  try {
    for (const scenario of ['steady', 'sliding', 'churn'] as const) {
      for (const s of await runScenario(target, fake, scenario)) {
        all.push(s);
        const p = s.passes;
        console.log(
          JSON.stringify({
            bench: 'api',
            provider: s.provider,
            scenario: s.scenario,
            bans: s.bans,
            passes: p.length,
            reads: p.map((x) => x.reads),
            writes: p.map((x) => x.writes),
            planned: p.map((x) => x.planned),
            lifting: p.map((x) => x.lifting),
            converged: p.every((x) => x.converged),
            errors: [...new Set(p.flatMap((x) => x.errors))],
          }),
        );
      }
    }
  } finally {
    await fake.close();
  }
}
console.log(JSON.stringify({ bench: 'api', markdown: markdown(all) }));
