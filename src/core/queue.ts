/**
 * Per-target write queue: a p-queue with a concurrency and a
 * requests-per-interval budget, bounded retries with exponential backoff,
 * full jitter and `Retry-After`, a per-run write budget, and an abort signal
 * after which no new write starts (the write in flight finishes).
 */
import PQueue from 'p-queue';
import { isRetryable, type RetryableError } from './errors.js';
import type { Change } from './types.js';

export interface QueueOptions {
  /** Writes in flight at once. Azure NSGs need 1. */
  concurrency: number;
  /** Writes started per `intervalMs`. */
  intervalCap: number;
  intervalMs: number;
}

export interface RetryOptions {
  /** Attempts in total, first included. Bounded: at most 10. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryOptions = { attempts: 4, baseDelayMs: 500, maxDelayMs: 20_000 };

export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

export const realSleep: Sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

export function validateQueueOptions(o: QueueOptions): QueueOptions {
  for (const [k, v, min] of [
    ['concurrency', o.concurrency, 1],
    ['intervalCap', o.intervalCap, 1],
    ['intervalMs', o.intervalMs, 0],
  ] as const) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
      throw new TypeError(`Expected \`${k}\` to be a finite number >= ${min}, got \`${String(v)}\` (${typeof v})`);
    }
  }
  return o;
}

/** Delay before attempt `n` (1-based retry count): exponential, capped, full jitter; `Retry-After` wins when larger. */
export function backoffDelay(retry: number, opts: RetryOptions, random: () => number, retryAfterMs?: number): number {
  const exp = Math.min(opts.maxDelayMs, opts.baseDelayMs * 2 ** (retry - 1));
  const jittered = Math.floor(random() * exp);
  if (retryAfterMs !== undefined && retryAfterMs > 0) return Math.min(Math.max(jittered, retryAfterMs), Math.max(opts.maxDelayMs, retryAfterMs));
  return jittered;
}

/**
 * Runs `fn` until it succeeds, throws a non-retryable error, or the attempts
 * run out (the last retryable error is rethrown). Never retries after abort.
 */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  opts: RetryOptions & {
    sleep?: Sleep;
    random?: () => number;
    signal?: AbortSignal;
    onRetry?: (err: RetryableError, attempt: number, delayMs: number) => void;
    /** A retryable error this accepts is thrown at once (e.g. the caller's own deadline has passed). */
    final?: (err: RetryableError) => boolean;
  },
): Promise<T> {
  const attempts = Math.max(1, Math.min(10, Math.floor(opts.attempts)));
  const sleep = opts.sleep ?? realSleep;
  const random = opts.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (!isRetryable(err) || attempt >= attempts || opts.signal?.aborted || opts.final?.(err)) throw err;
      const delay = backoffDelay(attempt, opts, random, err.retryAfterMs);
      opts.onRetry?.(err, attempt, delay);
      await sleep(delay, opts.signal);
      if (opts.signal?.aborted) throw err;
    }
  }
}

/** Writes allowed in one run; what is left converges on the next run. */
export class WriteBudget {
  private left: number;
  constructor(readonly limit: number) {
    this.left = limit;
  }
  /** Takes one write; false when the budget is spent. */
  take(): boolean {
    if (this.left <= 0) return false;
    this.left--;
    return true;
  }
  get remaining(): number {
    return this.left;
  }
}

export interface ChangeOutcome {
  change: Change;
  status: 'applied' | 'failed' | 'skipped';
  error?: unknown;
  /** Why a change was skipped: `budget`, `aborted`, `phase` (an earlier phase failed). */
  skipReason?: 'budget' | 'aborted' | 'phase' | undefined;
}

export interface PhasedApplyOptions {
  queue: PQueue;
  budget: WriteBudget;
  signal?: AbortSignal | undefined;
}

export function createQueue(opts: QueueOptions): PQueue {
  validateQueueOptions(opts);
  return new PQueue({ concurrency: opts.concurrency, intervalCap: opts.intervalCap, interval: opts.intervalMs, carryoverIntervalCount: true });
}

/**
 * Applies changes phase by phase through the queue. Every change of a phase
 * settles before the next phase starts. If a change of a phase fails or is
 * skipped, the later phases are skipped: phase 2's additions may rely on the
 * capacity phase 1 was to free, and phase 3 takes away CIDRs whose addresses
 * phase 2 was to cover. No change starts after `signal` aborts or the budget
 * runs out.
 */
export async function applyPhased(
  changes: readonly Change[],
  writeOne: (change: Change) => Promise<void>,
  opts: PhasedApplyOptions,
): Promise<ChangeOutcome[]> {
  const outcomes: ChangeOutcome[] = [];
  const phases = [1, 2, 3] as const;
  let earlierFailed = false;
  for (const phase of phases) {
    const batch = changes.filter((c) => c.phase === phase);
    if (earlierFailed) {
      for (const change of batch) outcomes.push({ change, status: 'skipped', skipReason: 'phase' });
      continue;
    }
    const results = await Promise.all(
      batch.map((change) =>
        opts.queue.add(async (): Promise<ChangeOutcome> => {
          if (opts.signal?.aborted) return { change, status: 'skipped', skipReason: 'aborted' };
          if (!opts.budget.take()) return { change, status: 'skipped', skipReason: 'budget' };
          try {
            await writeOne(change);
            return { change, status: 'applied' };
          } catch (error) {
            return { change, status: 'failed', error };
          }
        }) as Promise<ChangeOutcome>,
      ),
    );
    outcomes.push(...results);
    if (results.some((r) => r.status !== 'applied')) earlierFailed = true;
  }
  return outcomes;
}
