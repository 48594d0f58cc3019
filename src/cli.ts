#!/usr/bin/env node
/**
 * `cloud-bouncer` command line: plan | apply | run | status | flush | validate.
 *
 * Exit codes: 0 success; 1 error (always with one line on stderr);
 * 2 from `plan --detailed-exitcode` when there are changes.
 */
import { parseArgs } from 'node:util';
import { realpathSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { loadConfig, type Config } from './config.js';
import { ConfigError, errorLine } from './core/errors.js';
import { runPass, type PassResult } from './core/reconcile.js';
import { planToJson, planToText } from './core/render.js';
import { LOG_LEVELS, createLogger, scrub, type LogLevel } from './log.js';
import { createRuntime, selectTargets, createProviders } from './runtime.js';
import { runDaemon } from './daemon.js';
import { VERSION } from './version.js';
import type { Rule } from './core/types.js';

const USAGE = `Usage: cloud-bouncer <command> [options]

Commands:
  plan       show what apply would change (read-only)
  apply      run one reconcile pass and write the changes
  run        daemon: reconcile every daemon.interval, serve /metrics and /healthz
  status     list owned rules, their expiries and capacity use
  flush      remove every owned rule (needs --yes)
  validate   check the configuration and exit

Options:
  -c, --config FILE          YAML config (or CLOUD_BOUNCER_CONFIG / CLOUD_BOUNCER__* env)
  -t, --target NAME          act on one target only
      --target-index N       act on the Nth target (0-based; e.g. JOB_COMPLETION_INDEX)
  -o, --output text|json     plan and status output format (default text)
      --detailed-exitcode    plan: exit 0 when no changes, 2 when changes, 1 on error
      --yes                  flush: confirm
  -l, --log-level LEVEL      trace|debug|info|warn|error|fatal|silent (default from config, else info)
  -v, --version              print the version
  -h, --help                 this help
`;

export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  env: NodeJS.ProcessEnv;
  /** For tests: a logger to use instead of stderr. */
  log?: Logger;
}

class UsageError extends Error {}

function fail(io: CliIo, err: unknown): number {
  io.stderr(`cloud-bouncer: error: ${scrub(errorLine(err))}\n`);
  return 1;
}

function summaryLine(result: PassResult): string {
  const first = result.errors[0] ?? 'unknown error';
  const more = result.errors.length > 1 ? ` (+${result.errors.length - 1} more)` : '';
  return `${first}${more}`;
}

export async function main(argv: string[], io: CliIo): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        target: { type: 'string', short: 't' },
        'target-index': { type: 'string' },
        output: { type: 'string', short: 'o', default: 'text' },
        'detailed-exitcode': { type: 'boolean', default: false },
        yes: { type: 'boolean', default: false },
        'log-level': { type: 'string', short: 'l' },
        version: { type: 'boolean', short: 'v', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    // Node's parseArgs explains some mistakes over several lines (a value that starts with a dash): keep them all, on one line.
    const why = err instanceof Error ? err.message.split('\n').map((l) => l.trim()).filter(Boolean).join(' ') : errorLine(err);
    return fail(io, new UsageError(`${why} (see cloud-bouncer --help)`));
  }
  const { values, positionals } = args;
  if (values.version) {
    io.stdout(`cloud-bouncer v${VERSION}\n`);
    return 0;
  }
  const command = positionals[0];
  if (values.help) {
    io.stdout(USAGE);
    return 0;
  }
  if (!command) return fail(io, new UsageError('no command given; expected plan, apply, run, status, flush or validate (see cloud-bouncer --help)'));
  if (!['plan', 'apply', 'run', 'status', 'flush', 'validate'].includes(command)) {
    return fail(io, new UsageError(`unknown command ${JSON.stringify(command)}; expected plan, apply, run, status, flush or validate`));
  }
  if (positionals.length > 1) return fail(io, new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`));
  const output = values.output;
  if (output !== 'text' && output !== 'json') return fail(io, new UsageError(`--output: expected text or json, got ${JSON.stringify(output)}`));
  const logLevel = values['log-level'];
  if (logLevel !== undefined && !(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    return fail(io, new UsageError(`--log-level: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}`));
  }
  if (values.target !== undefined && values['target-index'] !== undefined) {
    return fail(io, new UsageError('--target and --target-index both select a target; give one of them'));
  }
  let targetIndex: number | undefined;
  if (values['target-index'] !== undefined) {
    if (!/^\d+$/.test(values['target-index'])) return fail(io, new UsageError(`--target-index: expected a number >= 0, got ${JSON.stringify(values['target-index'])}`));
    targetIndex = Number(values['target-index']);
  }
  if (command === 'flush' && !values.yes) {
    return fail(io, new UsageError('flush removes every rule this bouncer owns on the selected targets; pass --yes to confirm'));
  }

  let config: Config;
  try {
    config = await loadConfig({ path: values.config, env: io.env, sourcesUnused: command === 'status' || command === 'flush' });
  } catch (err) {
    return fail(io, err);
  }
  const log = io.log ?? createLogger((logLevel as LogLevel | undefined) ?? config.log_level);
  const sel = { name: values.target, index: targetIndex };

  if (command === 'validate') {
    try {
      selectTargets(config, sel);
      await checkSourceFiles(config);
    } catch (err) {
      return fail(io, err);
    }
    io.stdout(`configuration OK: ${config.sources.length} source(s) [${config.sources.map((s) => `${s.name}:${s.type}`).join(', ')}], ${config.targets.length} target(s) [${config.targets.map((t) => `${t.name}:${t.provider}`).join(', ')}]\n`);
    return 0;
  }

  if (command === 'status') return status(config, sel, log, io, output);

  if (command === 'run') {
    try {
      return await runDaemon(config, sel, log, io);
    } catch (err) {
      return fail(io, err);
    }
  }

  // SIGTERM/SIGINT (a CronJob deadline, `docker stop`, Ctrl-C): the write in flight finishes, no
  // new change starts, and the pass reports what it skipped; the next run converges.
  const stop = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (stop.signal.aborted) return;
    log.warn({ signal: sig }, 'stopping: finishing the write in flight, starting no new one');
    stop.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const detach = () => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
  let runtime;
  try {
    runtime = await createRuntime(config, log, sel, { signal: stop.signal });
  } catch (err) {
    detach();
    return fail(io, err);
  }
  try {
    const mode = command === 'plan' ? 'plan' : command === 'flush' ? 'flush' : 'apply';
    if (mode === 'plan') log.info('DRY-RUN: plan only, nothing is written');
    const result = await runPass(runtime.deps, mode);
    // The plan carries source error messages: scrub known secrets here too (stdout is not a log line).
    io.stdout(scrub(output === 'json' ? `${JSON.stringify(planToJson(result.plan), null, 2)}\n` : planToText(result.plan, { flush: mode === 'flush' })));
    if (mode !== 'plan') {
      for (const o of result.outcomes) {
        io.stderr(`${o.target}: applied ${o.applied}, failed ${o.failed}, skipped ${o.skipped}, API calls ${o.calls}\n`);
      }
    }
    if (result.errors.length > 0) {
      io.stderr(`cloud-bouncer: error: ${scrub(summaryLine(result))}\n`);
      return 1;
    }
    if (mode === 'plan' && values['detailed-exitcode']) {
      return result.plan.targets.some((t) => t.changes.length > 0) ? 2 : 0;
    }
    return 0;
  } catch (err) {
    return fail(io, err);
  } finally {
    detach();
    await runtime.close();
  }
}

/**
 * Files a source reads on every pass (key, CA, client certificate): validate makes sure each is a
 * file it can open now. The TLS files only count for an https api_url (a run ignores them otherwise).
 */
async function checkSourceFiles(config: Config): Promise<void> {
  for (const [i, s] of config.sources.entries()) {
    const fields = s as Partial<Record<'api_url' | 'api_key_file' | 'ca_cert_path' | 'cert_path' | 'key_path', string>>;
    const https = fields.api_url?.toLowerCase().startsWith('https:') ?? false;
    for (const key of ['api_key_file', ...(https ? (['ca_cert_path', 'cert_path', 'key_path'] as const) : [])] as const) {
      const path = fields[key];
      if (!path) continue;
      let problem: string | undefined;
      try {
        const handle = await open(path, 'r');
        try {
          if (!(await handle.stat()).isFile()) problem = 'not a file';
        } finally {
          await handle.close();
        }
      } catch (err) {
        problem = (err as NodeJS.ErrnoException).code ?? errorLine(err);
      }
      if (problem) throw new ConfigError(`sources[${i}].${key}`, `cannot read ${path}: ${problem}`);
    }
  }
}

async function status(config: Config, sel: { name?: string | undefined; index?: number | undefined }, log: Logger, io: CliIo, output: string): Promise<number> {
  try {
    const created = await createProviders(config, selectTargets(config, sel), log);
    const now = Date.now();
    const report: unknown[] = [];
    const lines: string[] = [];
    let errors = 0;
    for (const { cfg, provider } of created) {
      try {
        const state = await provider.read();
        const rules = [...state.rules].sort((a: Rule, b: Rule) => (a.pool + a.slot < b.pool + b.slot ? -1 : 1));
        report.push({
          name: cfg.name,
          provider: cfg.provider,
          rules: rules.map((r) => ({ pool: r.pool, slot: r.slot, terms: provider.describeSlot?.(r.pool, r.slot) ?? null, family: `ipv${r.family}`, cidrs: r.cidrs, expires_at: new Date(r.expiresAt).toISOString(), expired: r.expiresAt <= now, disabled: r.disabled === true })),
          capacity: state.pools.map((p) => {
            const own = rules.filter((r) => r.pool === p.id);
            return { pool: p.id, rules: { used: own.length, total: p.maxRules }, cidrs: { used: own.reduce((n, r) => n + r.cidrs.length, 0), total: Math.min(p.maxCidrs, p.maxRules * p.cidrsPerRule) } };
          }),
          foreign: state.foreign.length,
          conflicts: state.conflicts,
          warnings: state.warnings,
        });
        lines.push(`target ${cfg.name} (${cfg.provider}): ${rules.length} owned rule(s), ${state.foreign.length} foreign`);
        for (const r of rules) {
          const left = r.expiresAt - now;
          lines.push(`  ${r.pool}/${r.slot} [IPv${r.family}] ${r.cidrs.length} CIDR(s), expires ${new Date(r.expiresAt).toISOString()}${left <= 0 ? ' (EXPIRED: removed on the next apply)' : ''}${r.disabled ? ' (DISABLED on the target: not enforced)' : ''}`);
        }
        for (const p of state.pools) {
          const own = rules.filter((r) => r.pool === p.id);
          lines.push(`  capacity ${p.id}: rules ${own.length}/${p.maxRules}, CIDRs ${own.reduce((n, r) => n + r.cidrs.length, 0)}/${Math.min(p.maxCidrs, p.maxRules * p.cidrsPerRule)}`);
        }
        for (const c of state.conflicts) lines.push(`  CONFLICT: ${c.message}`);
        for (const w of state.warnings) lines.push(`  WARNING: ${w}`);
        if (state.conflicts.length) errors++;
      } catch (err) {
        errors++;
        lines.push(`target ${cfg.name} (${cfg.provider}): ERROR: ${errorLine(err)}`);
        report.push({ name: cfg.name, provider: cfg.provider, error: errorLine(err) });
      }
    }
    io.stdout(output === 'json' ? `${JSON.stringify({ version: 1, targets: report }, null, 2)}\n` : `${lines.join('\n')}\n`);
    if (errors) {
      io.stderr(`cloud-bouncer: error: ${errors} target(s) could not be read cleanly\n`);
      return 1;
    }
    return 0;
  } catch (err) {
    return fail(io, err);
  }
}

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const code = await main(process.argv.slice(2), {
    stdout: (s) => process.stdout.write(s),
    stderr: (s) => process.stderr.write(s),
    env: process.env,
  });
  process.exitCode = code;
}
