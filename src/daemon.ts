/**
 * `run`: the daemon loop. One apply pass every `daemon.interval`; LAPI
 * sources poll deltas between full resyncs. Serves `/metrics` (Prometheus)
 * and `/healthz`. On SIGTERM or SIGINT the write in flight finishes, no new
 * write starts, and the process exits 0.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { ConfigError, errorLine } from './core/errors.js';
import { runPass } from './core/reconcile.js';
import { realSleep } from './core/queue.js';
import { Metrics } from './metrics.js';
import { createRuntime, type TargetSelection } from './runtime.js';
import type { CliIo } from './cli.js';

export interface DaemonOptions {
  /** Stop after this many passes (tests). */
  maxPasses?: number;
  signal?: AbortSignal;
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the address is already in use (another daemon? pick another port)',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'no interface of this machine has that address',
  ENOTFOUND: 'the host name does not resolve',
};

/** A failed listen names the key that sets the address. */
function listenError(listen: string, err: NodeJS.ErrnoException): ConfigError {
  const why = (err.code && LISTEN_ERRORS[err.code]) ?? errorLine(err);
  return new ConfigError('daemon.listen', `cannot listen on ${listen}: ${why}${err.code ? ` (${err.code})` : ''}`, { cause: err });
}

function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  return { host, port: Number(listen.slice(i + 1)) };
}

/**
 * `/healthz`: healthy while passes keep completing, the first within 3 intervals (plus a minute) of
 * the start, then each within 3 intervals (plus a minute) of the one before. `since` is the end of
 * the last pass, or the start.
 */
export function healthy(now: number, since: number, intervalMs: number): boolean {
  return now - since < 3 * intervalMs + 60_000;
}

export async function runDaemon(config: Config, sel: TargetSelection, log: Logger, io: CliIo, opts: DaemonOptions = {}): Promise<number> {
  const stop = new AbortController();
  const onSignal = (sig: string) => {
    if (stop.signal.aborted) return;
    log.info({ signal: sig }, 'stopping: finishing the write in flight, starting no new one');
    stop.abort();
  };
  const onTerm = () => onSignal('SIGTERM');
  const onInt = () => onSignal('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  opts.signal?.addEventListener('abort', () => onSignal('abort'), { once: true });

  const metrics = new Metrics();
  const runtime = await createRuntime(config, log, sel, { allowDelta: config.daemon.delta, signal: stop.signal, onSourceFetched: metrics.onSourceFetched });
  let lastPassEnd = 0;
  let passes = 0;
  const started = Date.now();
  const server: Server = createServer((req, res) => {
    // Scrapers may add a query string (`/metrics?name[]=…`); only the path routes.
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path === '/metrics') {
      metrics.registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        })
        .catch((err: unknown) => {
          res.writeHead(500);
          res.end(errorLine(err));
        });
      return;
    }
    if (path === '/healthz') {
      const ok = healthy(Date.now(), lastPassEnd || started, config.daemon.interval);
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: ok ? 'ok' : 'stale', passes, last_pass_end: lastPassEnd ? new Date(lastPassEnd).toISOString() : null }));
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const { host, port } = splitHostPort(config.daemon.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(config.daemon.listen, err)));
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  log.info({ listen: typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : config.daemon.listen, interval_ms: config.daemon.interval }, 'daemon started');
  io.stderr(`cloud-bouncer: listening on ${typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : config.daemon.listen}\n`);

  try {
    while (!stop.signal.aborted) {
      const result = await runPass(runtime.deps, 'apply');
      passes++;
      lastPassEnd = Date.now();
      metrics.recordPass(result, runtime.providers, lastPassEnd);
      if (result.errors.length) log.warn({ errors: result.errors }, 'pass finished with errors');
      else log.info({ pass: passes }, 'pass finished');
      if (opts.maxPasses !== undefined && passes >= opts.maxPasses) break;
      await realSleep(config.daemon.interval, stop.signal);
    }
  } finally {
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await runtime.close();
  }
  log.info({ passes }, 'daemon stopped');
  return 0;
}
