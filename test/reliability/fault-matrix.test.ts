/**
 * The fault matrix of issue 8, per provider, against the fakes: throttling
 * storms, 5xx bursts, 10 s latency, dropped connections, operations failing
 * late, and the process killed at a random write (RELIABILITY_SEEDS seeds,
 * default 50). Each scenario runs the real `runPass` with an in-memory
 * decision source and a whitelist that splits banned ranges.
 *
 * Required: converged within K passes; at every observed state, no
 * whitelisted address covered by a deny rule and no foreign rule changed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS } from './adapters/index.js';
import { FAULT_CASES, type FaultCase } from './fault-plans.js';
import { publish, type Row } from './figures.js';
import { K, median, runScenario, type ScenarioOutcome, type TargetAdapter } from './harness.js';

const KILL_SEEDS = Number(process.env.RELIABILITY_SEEDS ?? 50);
/** Seeds per storm (throttling, 5xx, drops, late failures): each scenario already draws hundreds of faults. */
const STORM_SEEDS = Number(process.env.RELIABILITY_STORM_SEEDS ?? 6);
/** Latency scenarios wait 10 s per slow request: one seed per target, all targets at once. */
const LATENCY_SEEDS = Number(process.env.RELIABILITY_LATENCY_SEEDS ?? 1);

const adapters: TargetAdapter[] = ADAPTERS.map((make) => make());
const rows: Row[] = [];

beforeAll(async () => {
  for (const a of adapters) await a.start();
});

afterAll(async () => {
  for (const a of adapters) await a.stop();
  const order = (r: Row) => `${adapters.findIndex((a) => a.kind === r.provider)} ${FAULT_CASES.findIndex((f) => f.id === r.fault)}`;
  rows.sort((a, b) => order(a).localeCompare(order(b)));
  publish('faultMatrix', `fault matrix (K = ${K} passes, ${KILL_SEEDS} kill seeds)`, rows, { K, killSeeds: KILL_SEEDS, stormSeeds: STORM_SEEDS, latencySeeds: LATENCY_SEEDS });
});

function row(adapter: TargetAdapter, fault: FaultCase, outcomes: ScenarioOutcome[]): Row {
  const converged = outcomes.filter((o) => o.converged);
  const passes = converged.map((o) => o.passes);
  return {
    provider: adapter.kind,
    fault: fault.id,
    scenarios: outcomes.length,
    converged: converged.length,
    'passes max': passes.length ? Math.max(...passes) : 0,
    'passes median': median(passes),
    'foreign touched': outcomes.reduce((s, o) => s + o.foreignTouched, 0),
    'whitelisted covered': outcomes.reduce((s, o) => s + o.whitelistCovered, 0),
    'faults injected': outcomes.reduce((s, o) => s + o.faultsInjected, 0),
    'api calls': outcomes.reduce((s, o) => s + o.apiCalls, 0),
    'states checked': outcomes.reduce((s, o) => s + o.states, 0),
  };
}

/** What a failing scenario looks like in the assertion message. */
function failures(outcomes: ScenarioOutcome[]) {
  return outcomes
    .filter((o) => !o.converged || o.foreignTouched > 0 || o.whitelistCovered > 0)
    .map((o) => ({ seed: o.seed, killedAfter: o.killedAfter, passes: o.passes, why: o.why, foreignTouched: o.foreignTouched, whitelistCovered: o.whitelistCovered, errors: [...new Set(o.errors)].slice(0, 4) }));
}

async function sweep(adapter: TargetAdapter, fault: FaultCase, seeds: number): Promise<ScenarioOutcome[]> {
  const out: ScenarioOutcome[] = [];
  for (let seed = 1; seed <= seeds; seed++) out.push(await runScenario(adapter, fault, seed));
  rows.push(row(adapter, fault, out));
  return out;
}

const isLatency = (f: FaultCase) => f.id === 'latency' || f.id === 'latency-timeout';

for (const adapter of adapters) {
  describe(`reliability/${adapter.kind}`, () => {
    for (const fault of FAULT_CASES.filter((f) => !isLatency(f) && adapter.supports.has(f.id))) {
      const seeds = fault.id === 'kill' ? KILL_SEEDS : STORM_SEEDS;
      it(`converges within ${K} passes with ${fault.label} (${seeds} seeds), never covering a whitelisted address nor changing a foreign rule`, async () => {
        const outcomes = await sweep(adapter, fault, seeds);
        expect(failures(outcomes)).toEqual([]);
        // The faults really struck: a sweep that injected nothing proves nothing.
        expect(outcomes.reduce((s, o) => s + o.faultsInjected, 0)).toBeGreaterThan(0);
        if (fault.id === 'kill') expect(outcomes.filter((o) => o.passes > 1).length).toBeGreaterThan(seeds / 4);
      });
    }
  });
}

describe('reliability: 10 s latency', () => {
  for (const fault of FAULT_CASES.filter(isLatency)) {
    const targets = adapters.filter((a) => a.supports.has(fault.id));
    it(`every target converges within ${K} passes with ${fault.label}, never covering a whitelisted address nor changing a foreign rule`, async () => {
      // The targets wait on their slow requests at the same time: wall time is one target's, not the sum.
      const all = await Promise.all(targets.map((a) => sweep(a, fault, LATENCY_SEEDS)));
      expect(all.flatMap(failures)).toEqual([]);
      for (const outcomes of all) expect(outcomes.reduce((s, o) => s + o.faultsInjected, 0)).toBeGreaterThan(0);
    });
  }
});
