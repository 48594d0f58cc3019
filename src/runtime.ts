/**
 * Builds what a pass needs from a validated config: sources, providers
 * (created lazily through the registry), the DNS resolver, guards.
 */
import { lookup } from 'node:dns/promises';
import type { Logger } from 'pino';
import type { Config, TargetConfig } from './config.js';
import { ConfigError } from './core/errors.js';
import type { PassDeps, PassTarget } from './core/reconcile.js';
import type { Resolver } from './core/whitelist.js';
import { loadProvider } from './providers/registry.js';
import type { Provider } from './providers/provider.js';
import { createSource } from './sources/index.js';

export const dnsResolver: Resolver = async (host) => (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

export interface TargetSelection {
  /** `--target NAME` */
  name?: string | undefined;
  /** `--target-index N` (Kubernetes Indexed Job: `JOB_COMPLETION_INDEX`) */
  index?: number | undefined;
}

export function selectTargets(config: Config, sel: TargetSelection): TargetConfig[] {
  if (sel.name !== undefined) {
    const t = config.targets.find((x) => x.name === sel.name);
    if (!t) throw new ConfigError('--target', `no target named ${JSON.stringify(sel.name)}; configured: ${config.targets.map((x) => x.name).join(', ')}`);
    return [t];
  }
  if (sel.index !== undefined) {
    const t = config.targets[sel.index];
    if (!t) throw new ConfigError('--target-index', `index ${sel.index} is out of range; ${config.targets.length} targets are configured`);
    return [t];
  }
  return config.targets;
}

export async function createProviders(config: Config, targets: readonly TargetConfig[], log: Logger, now: () => number = Date.now): Promise<Array<{ cfg: TargetConfig; provider: Provider }>> {
  const out: Array<{ cfg: TargetConfig; provider: Provider }> = [];
  for (const t of targets) {
    const mod = await loadProvider(t.provider);
    const provider = await mod.create(t.settings, { target: t.name, owner: config.owner, log: log.child({ target: t.name }), now });
    out.push({ cfg: t, provider });
  }
  return out;
}

export interface Runtime {
  deps: PassDeps;
  providers: Provider[];
  close(): Promise<void>;
}

export async function createRuntime(config: Config, log: Logger, sel: TargetSelection = {}, extra: Partial<PassDeps> = {}): Promise<Runtime> {
  const targets = selectTargets(config, sel);
  const created = await createProviders(config, targets, log);
  // Each source names itself in its log lines.
  const sources = config.sources.map((s) => createSource(s, log));
  const passTargets: PassTarget[] = created.map(({ cfg, provider }) => ({ provider, maxWritesPerRun: cfg.max_writes_per_run }));
  const deps: PassDeps = {
    sources,
    targets: passTargets,
    log,
    now: Date.now,
    resolve: dnsResolver,
    whitelist: { cidrs: config.whitelist.cidrs, hostnames: config.whitelist.hostnames, neverBan: config.never_ban },
    guards: { minPrefix: { 4: config.guards.min_prefix_v4, 6: config.guards.min_prefix_v6 }, maxTtlMs: config.guards.max_ttl },
    policy: { refreshMarginMs: config.expiry.refresh_margin },
    originClasses: { manual: config.priority.manual_origins, local: config.priority.local_origins },
    ...extra,
  };
  return {
    deps,
    providers: created.map((c) => c.provider),
    async close() {
      await Promise.allSettled([...sources.map((s) => s.close?.()), ...created.map((c) => c.provider.close?.())]);
    },
  };
}
