/**
 * One provider pass in its own process, for the tests that need a second,
 * independent writer: a process killed mid-apply, and two passes racing on
 * one NSG. Bundled with esbuild by the test and run with `node`.
 *
 * Input (env `CB_CHILD`, JSON): `{ config, owner, bans, now, waitForGo }`.
 * Output (stdout, one JSON line each): `{"event":"planned",...}` after the
 * plan, then `{"event":"applied",...}`. With `waitForGo`, it waits for a
 * line on stdin between the two, so both racers write from stale plans.
 */
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { planTarget } from '../../../src/core/plan.js';
import { WriteBudget } from '../../../src/core/queue.js';
import { AzureNsgProvider, azureNsgConfigSchema } from '../../../src/providers/azure-nsg/index.js';
import type { Ban } from '../../../src/core/types.js';

interface ChildInput {
  config: Record<string, unknown>;
  owner: string;
  bans: Ban[];
  now: number;
  waitForGo?: boolean;
}

function emit(event: string, data: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ event, ...data })}\n`);
}

async function main(): Promise<void> {
  const input = JSON.parse(process.env.CB_CHILD ?? '{}') as ChildInput;
  const cfg = azureNsgConfigSchema.parse(input.config);
  const provider = new AzureNsgProvider(
    cfg,
    { target: 'azure-child', owner: input.owner, log: pino({ level: 'silent' }), now: () => input.now },
    { credential: { getToken: async () => ({ token: 'child-token', expiresOnTimestamp: Date.now() + 3_600_000 }) } },
  );
  const state = await provider.read();
  const plan = planTarget({ target: 'azure-child', provider: 'azure-nsg', bans: input.bans, state, now: input.now });
  emit('planned', { changes: plan.changes.map((c) => ({ kind: c.kind, slot: c.slot, after: c.after?.cidrs ?? null })), error: plan.error ?? null });
  if (input.waitForGo) {
    const rl = createInterface({ input: process.stdin });
    await new Promise<void>((resolve) => rl.once('line', () => resolve()));
    rl.close();
  }
  if (plan.error || plan.changes.length === 0) {
    emit('applied', { outcomes: [], calls: provider.stats().total });
    return;
  }
  try {
    const result = await provider.apply(plan.changes, { budget: new WriteBudget(10_000) });
    emit('applied', {
      outcomes: result.outcomes.map((o) => ({ slot: o.change.slot, status: o.status, error: o.error ? `${(o.error as Error).name}: ${(o.error as Error).message}` : null })),
      calls: provider.stats().total,
    });
  } catch (err) {
    emit('applied', { error: (err as Error).message, calls: provider.stats().total });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${String((err as Error)?.stack ?? err)}\n`);
    process.exit(1);
  },
);
