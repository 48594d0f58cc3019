/**
 * AWS Lambda handler for a scheduled event (EventBridge `rate(1 minute)`):
 * one apply pass. Configuration comes from the environment
 * (`CLOUD_BOUNCER_CONFIG`, `CLOUD_BOUNCER__*`, or `CLOUD_BOUNCER_CONFIG_FILE`).
 *
 * Only the configured provider's module and SDK are loaded (the registry
 * imports lazily; the bundle is split per provider). New writes stop
 * `CLOUD_BOUNCER_DEADLINE_MARGIN_MS` (default 10 s) before the function
 * times out, so the target is always left consistent; what is left
 * converges on the next invocation.
 *
 * Returns a summary. Throws only for fatal errors (config, auth, ownership
 * conflict), so a retryable outage does not trigger Lambda's async retries.
 */
import { loadConfig } from './config.js';
import { ConfigError } from './core/errors.js';
import { runPass } from './core/reconcile.js';
import { createLogger, scrub } from './log.js';
import { createRuntime } from './runtime.js';

/** Lets tools (the cold-start bench) trigger a provider's lazy load through the bundle. */
export { loadProvider } from './providers/registry.js';

export interface LambdaContext {
  getRemainingTimeInMillis(): number;
  awsRequestId?: string;
}

export interface PassSummary {
  ok: boolean;
  failStatic: boolean;
  aborted: boolean;
  decisions: number;
  targets: Array<{
    name: string;
    provider: string;
    create: number;
    update: number;
    delete: number;
    applied: number;
    failed: number;
    skipped: number;
    unenforced: number;
    calls: number;
  }>;
  errors: string[];
}

const MARGIN_KEY = 'CLOUD_BOUNCER_DEADLINE_MARGIN_MS';

/**
 * The time kept free before the function's timeout, from `CLOUD_BOUNCER_DEADLINE_MARGIN_MS`
 * (default 10 s, or half the time left when that is less). A value that is not a whole number of milliseconds, or that leaves no time for
 * a pass, is a config error: read as NaN or as everything, it would stop every write at once.
 */
export function deadlineMargin(value: string | undefined, remainingMs: number): number {
  // The default leaves half the time to a function whose timeout is too short for it.
  if (value === undefined || value.trim() === '') return remainingMs > 10_000 ? 10_000 : Math.floor(remainingMs / 2);
  const text = value.trim();
  if (!/^\d+$/.test(text)) throw new ConfigError(MARGIN_KEY, `expected a whole number of milliseconds (e.g. 20000), got ${JSON.stringify(value)}`);
  const margin = Number(text);
  if (margin >= remainingMs) throw new ConfigError(MARGIN_KEY, `${margin} ms leaves no time for a pass: the function has ${remainingMs} ms left; lower it or raise the function timeout`);
  return margin;
}

export async function handler(_event: unknown, context: LambdaContext): Promise<PassSummary> {
  const env = process.env;
  const config = await loadConfig({ env });
  const log = createLogger(config.log_level).child({ request_id: context.awsRequestId });
  const remaining = context.getRemainingTimeInMillis();
  const margin = deadlineMargin(env[MARGIN_KEY], remaining);
  const stop = new AbortController();
  const timer = setTimeout(() => {
    log.warn({ margin_ms: margin }, 'deadline near: starting no new writes');
    stop.abort();
  }, remaining - margin);
  let runtime: Awaited<ReturnType<typeof createRuntime>>;
  try {
    runtime = await createRuntime(config, log, {}, { signal: stop.signal });
  } catch (err) {
    // A warm container would otherwise carry this timer into the next invocation.
    clearTimeout(timer);
    throw err;
  }
  try {
    const result = await runPass(runtime.deps, 'apply');
    const summary: PassSummary = {
      ok: result.errors.length === 0,
      failStatic: result.plan.failStatic,
      aborted: stop.signal.aborted,
      decisions: result.decisions,
      targets: result.outcomes.map((o) => {
        const t = result.plan.targets.find((x) => x.target === o.target)!;
        return {
          name: o.target,
          provider: o.provider,
          create: t.summary.create,
          update: t.summary.update,
          delete: t.summary.delete,
          applied: o.applied,
          failed: o.failed,
          skipped: o.skipped,
          unenforced: t.summary.unenforced,
          calls: o.calls,
        };
      }),
      errors: result.errors.map(scrub),
    };
    log.info({ summary }, 'pass finished');
    if (result.fatal) throw new Error(`cloud-bouncer: ${summary.errors[0] ?? 'fatal error'}`);
    return summary;
  } finally {
    clearTimeout(timer);
    await runtime.close();
  }
}
