/**
 * The harness checks itself: for every target, the watch sees a whitelisted
 * address covered and a foreign rule changed when they happen, and the
 * convergence check refuses a target that holds other addresses. Without
 * these, a green fault matrix could mean the checks never look.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS } from './adapters/index.js';
import { Watch, convergence, pass, type TargetAdapter } from './harness.js';
import { scenario, type StreamItem } from './scenario.js';

const adapters: TargetAdapter[] = ADAPTERS.map((make) => make());

beforeAll(async () => {
  for (const a of adapters) await a.start();
});

afterAll(async () => {
  for (const a of adapters) await a.stop();
});

/** A range around whitelisted 198.51.100.7 and never_ban 192.0.2.1. */
const AROUND_WHITELIST: StreamItem[] = [
  { duration: '4h0m0s', id: 1, origin: 'crowdsec', scenario: 'crowdsecurity/ssh-bf', scope: 'Range', type: 'ban', value: '198.51.100.0/28' },
  { duration: '4h0m0s', id: 2, origin: 'cscli', scenario: 'manual', scope: 'Range', type: 'ban', value: '192.0.2.0/29' },
];

for (const adapter of adapters) {
  describe(`reliability/harness: ${adapter.kind}`, () => {
    it('sees, from inside the writes, a whitelisted address covered by a run that ignores the whitelist', async () => {
      // Prepare
      await adapter.newTarget();
      const watch = new Watch(adapter);
      // Act
      const withWhitelist = await pass(adapter, AROUND_WHITELIST, 'apply');
      const coveredWithWhitelist = watch.covered.size;
      const statesBefore = watch.states;
      const without = await pass(adapter, AROUND_WHITELIST, 'apply', { ignoreWhitelist: true });
      const coveredDuringWrites = watch.covered.size;
      watch.stop();
      // Assess
      expect(withWhitelist.errors).toEqual([]);
      expect(coveredWithWhitelist).toBe(0);
      expect(without.errors).toEqual([]);
      expect(coveredDuringWrites).toBe(2);
      expect(watch.states - statesBefore).toBeGreaterThan(1);
      expect(watch.foreignChanges.size).toBe(0);
    });

    it('sees a foreign rule changed behind our back', async () => {
      await adapter.newTarget();
      const watch = new Watch(adapter);
      adapter.tamperForeign();
      watch.stop();
      expect(watch.foreignChanges.size).toBe(2);
    });

    it('calls a target converged only when it holds exactly the desired addresses and a fresh plan is empty', async () => {
      const sc = scenario(3);
      await adapter.newTarget();
      await pass(adapter, sc.initial.items, 'apply');
      await adapter.settle();
      expect(await convergence(adapter, sc.initial)).toEqual({ converged: true, why: '' });
      expect((await convergence(adapter, sc.desired)).converged).toBe(false);
    });
  });
}
