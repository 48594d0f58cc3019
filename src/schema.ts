/**
 * zod helpers shared by the config loader and provider config schemas, so a
 * message always names what was expected and what was found.
 */
import { z } from 'zod';
import { MAX_DURATION_MS, parseGoDuration } from './core/duration.js';
import { tryParseCidr } from './core/cidr.js';
import { DEFAULT_RETRY, type QueueOptions, type RetryOptions } from './core/queue.js';

/** A Go-style duration string (`90s`, `1h30m`) or a number of seconds; parsed to milliseconds. */
export const duration = () =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    if (typeof v === 'number') {
      if (!Number.isFinite(v) || v < 0 || v * 1000 > MAX_DURATION_MS) {
        ctx.addIssue({ code: 'custom', message: `expected a duration like "90s" or a number of seconds >= 0, got ${v}` });
        return z.NEVER;
      }
      return v * 1000;
    }
    try {
      const ms = parseGoDuration(v.trim());
      if (ms < 0) throw new RangeError('negative');
      return ms;
    } catch {
      ctx.addIssue({ code: 'custom', message: `expected a duration like "90s" or "1h30m", got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
  });

/** A canonical CIDR (bare addresses accepted and widened to /32 or /128). */
export const cidr = () =>
  z.string().transform((v, ctx) => {
    const p = tryParseCidr(v.trim());
    if (!p) {
      ctx.addIssue({ code: 'custom', message: `expected an IP address or CIDR like "192.0.2.0/24", got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return p.cidr;
  });

/** Optional `queue` override for a target: concurrency and requests per interval. */
export const queueSchema = z
  .object({
    concurrency: z.number().int().min(1).max(64).optional(),
    interval_cap: z.number().int().min(1).max(10_000).optional(),
    interval: duration().optional(),
  })
  .strict();

export const retrySchema = z
  .object({
    attempts: z.number().int().min(1).max(10).optional(),
    base_delay: duration().optional(),
    max_delay: duration().optional(),
  })
  .strict();

/** A target's `queue` keys over the provider's defaults. */
export function queueOptions(c: z.infer<typeof queueSchema> | undefined, defaults: QueueOptions): QueueOptions {
  return {
    concurrency: c?.concurrency ?? defaults.concurrency,
    intervalCap: c?.interval_cap ?? defaults.intervalCap,
    intervalMs: c?.interval ?? defaults.intervalMs,
  };
}

/** A target's `retry` keys over the shared defaults. */
export function retryOptions(c: z.infer<typeof retrySchema> | undefined, defaults: RetryOptions = DEFAULT_RETRY): RetryOptions {
  return {
    attempts: c?.attempts ?? defaults.attempts,
    baseDelayMs: c?.base_delay ?? defaults.baseDelayMs,
    maxDelayMs: c?.max_delay ?? defaults.maxDelayMs,
  };
}
