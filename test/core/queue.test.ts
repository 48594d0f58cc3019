import { describe, expect, it } from 'vitest';
import { RetryableError, FatalError } from '../../src/core/errors.js';
import { WriteBudget, applyPhased, backoffDelay, createQueue, validateQueueOptions, withRetry } from '../../src/core/queue.js';
import type { Change } from '../../src/core/types.js';

const noSleep = async () => undefined;

function change(slot: string, phase: Change['phase']): Change {
  return { kind: 'update', pool: 'p', slot, family: 4, phase, added: [], removed: [], reason: 'test' };
}

describe('core/queue', () => {
  it('retries retryable errors up to the bound, then rethrows the last one', async () => {
    let calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw new RetryableError('throttled', { code: 'RequestLimitExceeded' });
        },
        { attempts: 3, baseDelayMs: 1, maxDelayMs: 2, sleep: noSleep },
      ),
    ).rejects.toThrow('throttled');
    expect(calls).toBe(3);
  });

  it('never retries a fatal error', async () => {
    let calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw new FatalError('auth');
        },
        { attempts: 5, baseDelayMs: 1, maxDelayMs: 2, sleep: noSleep },
      ),
    ).rejects.toThrow('auth');
    expect(calls).toBe(1);
  });

  it('honours Retry-After when it is longer than the backoff', async () => {
    const delays: number[] = [];
    let n = 0;
    const v = await withRetry(
      async () => {
        if (n++ === 0) throw new RetryableError('429', { retryAfterMs: 7_000 });
        return 'ok';
      },
      { attempts: 3, baseDelayMs: 100, maxDelayMs: 1_000, random: () => 0.5, sleep: async (ms) => void delays.push(ms) },
    );
    expect(v).toBe('ok');
    expect(delays).toEqual([7_000]);
  });

  it('backs off exponentially with full jitter and a cap', () => {
    const o = { attempts: 10, baseDelayMs: 100, maxDelayMs: 1_000 };
    expect([1, 2, 3, 4, 5].map((r) => backoffDelay(r, o, () => 0.999))).toEqual([99, 199, 399, 799, 999]);
    expect(backoffDelay(3, o, () => 0)).toBe(0);
  });

  it('names the option, what was expected and what was received', () => {
    expect(() => validateQueueOptions({ concurrency: 0, intervalCap: 1, intervalMs: 1 })).toThrow('Expected `concurrency` to be a finite number >= 1, got `0` (number)');
    expect(() => validateQueueOptions({ concurrency: 1, intervalCap: 1, intervalMs: -1 })).toThrow('Expected `intervalMs` to be a finite number >= 0, got `-1` (number)');
  });

  it('finishes phase 1 before phase 2 starts and stops at the write budget', async () => {
    const order: string[] = [];
    const out = await applyPhased(
      [change('b', 2), change('a', 1), change('c', 2)],
      async (c) => {
        order.push(c.slot);
      },
      { queue: createQueue({ concurrency: 4, intervalCap: 100, intervalMs: 10 }), budget: new WriteBudget(2) },
    );
    expect(order[0]).toBe('a');
    expect(order).toHaveLength(2);
    expect(out.filter((o) => o.status === 'skipped').map((o) => o.skipReason)).toEqual(['budget']);
  });

  it('skips phase 2 when a phase-1 removal failed (its capacity may be needed)', async () => {
    const out = await applyPhased(
      [change('a', 1), change('b', 2)],
      async (c) => {
        if (c.slot === 'a') throw new RetryableError('503');
      },
      { queue: createQueue({ concurrency: 1, intervalCap: 100, intervalMs: 10 }), budget: new WriteBudget(10) },
    );
    expect(out.map((o) => [o.change.slot, o.status, o.skipReason])).toEqual([
      ['a', 'failed', undefined],
      ['b', 'skipped', 'phase'],
    ]);
  });

  it('runs phase 3 after every phase-2 addition, and not at all when one failed (the old content stays)', async () => {
    const order: string[] = [];
    const ok = await applyPhased([change('shrink', 3), change('piece1', 2), change('piece2', 2)], async (c) => void order.push(c.slot), {
      queue: createQueue({ concurrency: 4, intervalCap: 100, intervalMs: 10 }),
      budget: new WriteBudget(10),
    });
    expect(order.indexOf('shrink')).toBe(2);
    expect(ok.every((o) => o.status === 'applied')).toBe(true);

    const failed = await applyPhased(
      [change('shrink', 3), change('piece1', 2), change('piece2', 2)],
      async (c) => {
        if (c.slot === 'piece2') throw new RetryableError('429');
      },
      { queue: createQueue({ concurrency: 4, intervalCap: 100, intervalMs: 10 }), budget: new WriteBudget(10) },
    );
    expect(failed.map((o) => [o.change.slot, o.status, o.skipReason])).toEqual([
      ['piece1', 'applied', undefined],
      ['piece2', 'failed', undefined],
      ['shrink', 'skipped', 'phase'],
    ]);
  });

  it('starts no write after abort', async () => {
    const ac = new AbortController();
    const written: string[] = [];
    const out = await applyPhased(
      [change('a', 2), change('b', 2), change('c', 2)],
      async (c) => {
        written.push(c.slot);
        ac.abort();
      },
      { queue: createQueue({ concurrency: 1, intervalCap: 100, intervalMs: 10 }), budget: new WriteBudget(10), signal: ac.signal },
    );
    expect(written).toEqual(['a']);
    expect(out.filter((o) => o.skipReason === 'aborted')).toHaveLength(2);
  });
});
