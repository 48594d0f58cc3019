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

export async function handler(_event: unknown, context: LambdaContext): Promise<PassSummary> {
  const env = process.env;
  const config = await loadConfig({ env });
  const log = createLogger(config.log_level).child({ request_id: context.awsRequestId });
  const margin = Number(env.CLOUD_BOUNCER_DEADLINE_MARGIN_MS ?? 10_000);
  const stop = new AbortController();
  const budget = Math.max(0, context.getRemainingTimeInMillis() - margin);
  const timer = setTimeout(() => {
    log.warn({ margin_ms: margin }, 'deadline near: starting no new writes');
    stop.abort();
  }, budget);
  const runtime = await createRuntime(config, log, {}, { signal: stop.signal });
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
