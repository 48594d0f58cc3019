/**
 * Prometheus metrics for the `run` daemon (prom-client, own registry).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { PassResult } from './core/reconcile.js';
import type { SourceStatus } from './core/types.js';
import type { Provider } from './providers/provider.js';

export class Metrics {
  readonly registry = new Registry();
  readonly passes = new Counter({ name: 'cloud_bouncer_passes_total', help: 'Reconcile passes, by result', labelNames: ['result'] as const, registers: [this.registry] });
  readonly changes = new Counter({ name: 'cloud_bouncer_changes_total', help: 'Rule changes applied, by target and kind', labelNames: ['target', 'kind'] as const, registers: [this.registry] });
  readonly unenforced = new Gauge({ name: 'cloud_bouncer_unenforced', help: 'Bans not enforced in the last pass, by target and reason', labelNames: ['target', 'reason'] as const, registers: [this.registry] });
  readonly apiCalls = new Gauge({ name: 'cloud_bouncer_api_calls', help: 'Cloud API calls since start, by provider and target', labelNames: ['provider', 'target'] as const, registers: [this.registry] });
  readonly apiErrors = new Gauge({ name: 'cloud_bouncer_api_errors', help: 'Cloud API errors since start, by provider, target and code', labelNames: ['provider', 'target', 'code'] as const, registers: [this.registry] });
  readonly sourceLatency = new Histogram({
    name: 'cloud_bouncer_source_fetch_seconds',
    help: 'Decision source fetch latency',
    labelNames: ['source', 'result'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly decisions = new Gauge({ name: 'cloud_bouncer_decisions', help: 'Decisions seen in the last pass, by source', labelNames: ['source'] as const, registers: [this.registry] });
  readonly lastSuccess = new Gauge({ name: 'cloud_bouncer_last_success_timestamp_seconds', help: 'End of the last pass without errors', registers: [this.registry] });
  readonly failStatic = new Gauge({ name: 'cloud_bouncer_fail_static', help: '1 when the last pass ran fail-static', registers: [this.registry] });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry, prefix: 'cloud_bouncer_' });
  }

  onSourceFetched = (s: SourceStatus): void => {
    this.sourceLatency.observe({ source: s.name, result: s.ok ? 'ok' : 'error' }, s.durationMs / 1000);
    this.decisions.set({ source: s.name }, s.decisions);
  };

  recordPass(result: PassResult, providers: readonly Provider[], now: number): void {
    this.passes.inc({ result: result.errors.length ? 'error' : 'ok' });
    this.failStatic.set(result.plan.failStatic ? 1 : 0);
    if (!result.errors.length) this.lastSuccess.set(now / 1000);
    for (const o of result.outcomes) {
      for (const [kind, n] of Object.entries(o.appliedByKind)) if (n) this.changes.inc({ target: o.target, kind }, n);
    }
    this.unenforced.reset();
    for (const t of result.plan.targets) {
      const by: Record<string, number> = {};
      for (const u of t.unenforced) by[u.reason] = (by[u.reason] ?? 0) + 1;
      for (const [reason, n] of Object.entries(by)) this.unenforced.set({ target: t.target, reason }, n);
    }
    for (const p of providers) {
      const s = p.stats();
      this.apiCalls.set({ provider: p.kind, target: p.target }, s.total);
      for (const [code, n] of Object.entries(s.errors)) this.apiErrors.set({ provider: p.kind, target: p.target, code }, n);
    }
  }
}
