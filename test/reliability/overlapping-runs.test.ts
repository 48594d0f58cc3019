/**
 * Two passes at once on one target, as when a CronJob overlaps: two
 * providers (two processes) plan from the same state and write different
 * desired sets at the same time; then passes with the second set run until
 * the target equals it.
 *
 * Required: right after the overlap, only valid rules of ours (no rule
 * corrupted, no unclaimed entry that would stop the target); then, within K
 * passes, exactly the second set with no address held twice; at every
 * state, no whitelisted address covered and no foreign rule changed. A run
 * refused with an ownership conflict is the safe outcome and is counted.
 * Addresses held twice right after the overlap (both runs added the same
 * CIDR to different rules) are reported as a figure: the next pass removes
 * them, and a deny listed twice opens nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS } from './adapters/index.js';
import { publish, type Row } from './figures.js';
import { K, median, runOverlap, type OverlapOutcome, type TargetAdapter } from './harness.js';

const SEEDS = Number(process.env.RELIABILITY_OVERLAP_SEEDS ?? 10);

const adapters: TargetAdapter[] = ADAPTERS.map((make) => make());
const rows: Row[] = [];

beforeAll(async () => {
  for (const a of adapters) await a.start();
});

afterAll(async () => {
  for (const a of adapters) await a.stop();
  publish('overlappingRuns', `overlapping runs (two passes at once, then at most K = ${K} passes)`, rows, { K, seeds: SEEDS });
});

function row(adapter: TargetAdapter, outcomes: OverlapOutcome[]): Row {
  const passes = outcomes.filter((o) => o.converged).map((o) => o.passesAfter);
  return {
    provider: adapter.kind,
    overlaps: outcomes.length,
    'invalid rules': outcomes.reduce((s, o) => s + o.invalid.length, 0),
    'addresses held twice after overlap': outcomes.reduce((s, o) => s + o.duplicates, 0),
    'runs refusing a write': outcomes.reduce((s, o) => s + o.runsRefused, 0),
    converged: outcomes.filter((o) => o.converged).length,
    'passes after max': passes.length ? Math.max(...passes) : 0,
    'passes after median': median(passes),
    'foreign touched': outcomes.reduce((s, o) => s + o.foreignTouched, 0),
    'whitelisted covered': outcomes.reduce((s, o) => s + o.whitelistCovered, 0),
  };
}

for (const adapter of adapters) {
  describe(`reliability/${adapter.kind}: overlapping runs`, () => {
    it(`two runs at once leave only valid rules, and the next passes converge to one run's set with no address held twice (${SEEDS} seeds)`, async () => {
      const outcomes: OverlapOutcome[] = [];
      for (let seed = 1; seed <= SEEDS; seed++) outcomes.push(await runOverlap(adapter, seed));
      rows.push(row(adapter, outcomes));
      const bad = outcomes
        .filter((o) => o.invalid.length > 0 || !o.converged || o.foreignTouched > 0 || o.whitelistCovered > 0)
        .map((o) => ({ seed: o.seed, invalid: o.invalid, duplicates: o.duplicates, passesAfter: o.passesAfter, why: o.why, errors: [...new Set(o.errors)].slice(0, 4) }));
      expect(bad).toEqual([]);
      if (adapter.kind === 'aws-nacl') {
        // The apply lease: of two overlapping runs exactly one writes; the other stops with a retryable
        // lease error before any entry write, and the passes after the overlap run without errors.
        expect(outcomes.map((o) => o.runsRefused)).toEqual(outcomes.map(() => 1));
        for (const o of outcomes) {
          expect(o.errors).toHaveLength(1);
          expect(o.errors[0]).toMatch(/another run (is applying|took the lease)/);
        }
      }
    });
  });
}
