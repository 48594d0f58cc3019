/**
 * The file provider's writes go through a queue built from its `queue` key.
 * The queue's options are recorded (the queue itself is the real one), so
 * the test needs no clock.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import type * as QueueModule from '../../../src/core/queue.js';
import type { QueueOptions } from '../../../src/core/queue.js';
import { FileProvider, fileConfigSchema, type FileDoc } from '../../../src/providers/file/index.js';
import { NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';

const built = vi.hoisted(() => [] as QueueOptions[]);
vi.mock('../../../src/core/queue.js', async (importOriginal) => {
  const real = await importOriginal<typeof QueueModule>();
  return {
    ...real,
    createQueue: (o: QueueOptions) => {
      built.push(o);
      return real.createQueue(o);
    },
  };
});

function provider(queue?: Record<string, unknown>) {
  const path = join(mkdtempSync(join(tmpdir(), 'cb-file-queue-')), 'fw.json');
  const cfg = fileConfigSchema.parse({ path, rules: 3, cidrs_per_rule: 1, ...(queue ? { queue } : {}) });
  return { path, provider: new FileProvider(cfg, { target: 'demo', owner: 'test', log: pino({ level: 'silent' }), now: () => NOW }) };
}

describe('providers/file: queue', () => {
  it.each([
    ['the queue key', { interval_cap: 2, interval: '150ms' }, { concurrency: 1, intervalCap: 2, intervalMs: 150 }],
    ['the defaults', undefined, { concurrency: 1, intervalCap: 1_000, intervalMs: 1_000 }],
  ])('writes through a queue built from %s', async (_n, queue, want) => {
    built.length = 0;
    const { path, provider: p } = provider(queue);

    const pass = await providerPass(p, [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3')]);

    expect(built).toEqual([want]);
    expect(pass.result!.outcomes.map((o) => o.status)).toEqual(['applied', 'applied', 'applied']);
    expect((JSON.parse(readFileSync(path, 'utf8')) as FileDoc).rules).toHaveLength(3);
  });
});
