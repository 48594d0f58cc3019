/**
 * A real CrowdSec LAPI for tests (Debian's `crowdsec` package), started on
 * loopback through `scripts/lapi.sh`: its own temp dir, sqlite database and
 * free port per suite, no agent, no Central API. Decisions go in through
 * `cscli`, as an operator would add them.
 *
 * Locally, without the package, suites use `describe.skipIf(!lapiAvailable())`
 * and are reported as skipped. In CI (`CI=true`) a missing package is an
 * error: `lapiAvailable()` throws, so the suite fails instead of skipping.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pino, type Logger } from 'pino';

const run = promisify(execFile);

export const LAPI_SCRIPT = fileURLToPath(new URL('../../scripts/lapi.sh', import.meta.url));

const REQUIRED = ['crowdsec', 'cscli', 'curl', 'openssl'] as const;

function onPath(cmd: string, env: NodeJS.ProcessEnv): boolean {
  try {
    execFileSync('/bin/sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', env });
    return true;
  } catch {
    return false;
  }
}

let cached: string[] | undefined;
let warned = false;

/**
 * True when the real LAPI can run here. In CI (`CI=true`) a missing tool
 * throws: the real-LAPI tests must run there, never be skipped.
 */
export function lapiAvailable(env: NodeJS.ProcessEnv = process.env): boolean {
  const missing = env === process.env ? (cached ??= REQUIRED.filter((c) => !onPath(c, env))) : REQUIRED.filter((c) => !onPath(c, env));
  if (missing.length === 0) return true;
  const what = `${missing.join(', ')} not installed`;
  if (env.CI === 'true') {
    throw new Error(`real-LAPI tests cannot run: ${what}. CI must install the crowdsec package (see .ci/run); these tests are never skipped in CI.`);
  }
  if (!warned && env === process.env) {
    warned = true;
    console.warn(`[lapi] ${what}: the real CrowdSec LAPI tests are SKIPPED (apt-get install crowdsec; see README.md)`);
  }
  return false;
}

/** A free TCP port on 127.0.0.1 (bind port 0, read it, release it). */
export async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface DecisionArgs {
  ip?: string;
  range?: string;
  /** With `scope`, e.g. an `Ip`-scope value that carries a prefix. */
  value?: string;
  scope?: string;
  /** Go duration; a negative one makes an already-expired decision. Default 4h. */
  duration?: string;
  type?: string;
  reason?: string;
}

export interface DeleteArgs {
  ip?: string;
  range?: string;
  id?: number;
  type?: string;
}

export interface ImportRow {
  value: string;
  duration?: string;
  type?: string;
  reason?: string;
}

export interface BouncerRow {
  name: string;
  type: string;
  version: string;
  ip_address: string;
  auth_type: string;
  last_pull: string;
  revoked: boolean;
}

export interface TlsFiles {
  ca: string;
  /** A client certificate with the OU the LAPI accepts for bouncers. */
  bouncerCert: string;
  bouncerKey: string;
  /** OU of agents: refused for bouncer requests. */
  agentCert: string;
  agentKey: string;
  /** Self-signed, from a CA the LAPI does not trust. */
  rogueCert: string;
  rogueKey: string;
}

export interface StartedLapi {
  /** `http(s)://127.0.0.1:PORT/` */
  url: string;
  /** A bouncer key registered with `cscli bouncers add`. */
  apiKey: string;
  bouncerName: string;
  dir: string;
  tls: TlsFiles | undefined;
  addDecision(args: DecisionArgs): Promise<void>;
  deleteDecision(args: DeleteArgs): Promise<void>;
  /** `cscli decisions import`; the LAPI ignores a per-row scope, so one scope per call. Origin is `cscli-import`. */
  importDecisions(rows: readonly ImportRow[], scope?: 'Ip' | 'Range'): Promise<void>;
  addBouncer(name: string, key?: string): Promise<string>;
  bouncers(): Promise<BouncerRow[]>;
  cscli(args: readonly string[]): Promise<string>;
  stop(): Promise<void>;
}

export interface StartLapiOptions {
  /** `tls`: HTTPS with a generated CA; `mtls`: also client-certificate auth for bouncers. */
  tls?: 'off' | 'tls' | 'mtls';
  bouncerName?: string;
}

function flag(out: string[], name: string, v: string | number | undefined): void {
  if (v !== undefined) out.push(name, String(v));
}

export async function startLapi(opts: StartLapiOptions = {}): Promise<StartedLapi> {
  lapiAvailable();
  const dir = mkdtempSync(join(tmpdir(), 'cb-lapi-'));
  const env = { ...process.env, LAPI_WATCH_PID: String(process.pid) };
  const tlsFlag = opts.tls === 'tls' ? ['--tls'] : opts.tls === 'mtls' ? ['--mtls'] : [];
  let port = 0;
  let lastErr: unknown;
  // The port is free when picked; another process may take it before the LAPI binds: retry.
  for (let attempt = 0; attempt < 3; attempt++) {
    port = await freePort();
    try {
      await run('bash', [LAPI_SCRIPT, 'start', dir, String(port), ...tlsFlag], { env, timeout: 60_000 });
      lastErr = undefined;
      break;
    } catch (err) {
      lastErr = err;
      await run('bash', [LAPI_SCRIPT, 'stop', dir], { env }).catch(() => undefined);
    }
  }
  if (lastErr) {
    const e = lastErr as { stderr?: string; message: string };
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`could not start the LAPI: ${e.stderr || e.message}`, { cause: lastErr });
  }
  const scheme = opts.tls && opts.tls !== 'off' ? 'https' : 'http';
  const url = `${scheme}://127.0.0.1:${port}/`;
  const cfg = join(dir, 'config.yaml');

  const cscli = async (args: readonly string[]): Promise<string> => {
    try {
      const { stdout } = await run('cscli', ['--error', '-c', cfg, ...args], { timeout: 60_000, maxBuffer: 64 * 1024 * 1024 });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`cscli ${args.slice(0, 2).join(' ')} failed: ${(e.stderr || e.message).trim()}`, { cause: err });
    }
  };

  const addBouncer = async (name: string, key = randomBytes(24).toString('hex')): Promise<string> => {
    await cscli(['bouncers', 'add', name, '-k', key]);
    return key;
  };

  const bouncerName = opts.bouncerName ?? 'cloud-bouncer-test';
  const apiKey = await addBouncer(bouncerName);
  const t = join(dir, 'tls');
  const tls: TlsFiles | undefined =
    scheme === 'https'
      ? {
          ca: join(t, 'ca.pem'),
          bouncerCert: join(t, 'bouncer.pem'),
          bouncerKey: join(t, 'bouncer-key.pem'),
          agentCert: join(t, 'agent.pem'),
          agentKey: join(t, 'agent-key.pem'),
          rogueCert: join(t, 'rogue.pem'),
          rogueKey: join(t, 'rogue-key.pem'),
        }
      : undefined;
  let imports = 0;
  let stopped = false;

  return {
    url,
    apiKey,
    bouncerName,
    dir,
    tls,
    cscli,
    addBouncer,
    async addDecision(a) {
      const args = ['decisions', 'add'];
      flag(args, '--ip', a.ip);
      flag(args, '--range', a.range);
      flag(args, '--scope', a.scope);
      flag(args, '--value', a.value);
      flag(args, '--duration', a.duration ?? '4h');
      flag(args, '--type', a.type);
      flag(args, '--reason', a.reason);
      await cscli(args);
    },
    async deleteDecision(a) {
      const args = ['decisions', 'delete'];
      flag(args, '--ip', a.ip);
      flag(args, '--range', a.range);
      flag(args, '--id', a.id);
      flag(args, '--type', a.type);
      await cscli(args);
    },
    async importDecisions(rows, scope = 'Ip') {
      const file = join(dir, `import-${++imports}.json`);
      writeFileSync(file, JSON.stringify(rows.map((r) => ({ value: r.value, duration: r.duration ?? '4h', type: r.type ?? 'ban', reason: r.reason ?? 'test-import' }))));
      const args = ['decisions', 'import', '-i', file];
      if (scope === 'Range') args.push('--scope', 'Range');
      await cscli(args);
    },
    async bouncers() {
      return JSON.parse(await cscli(['bouncers', 'list', '-o', 'json'])) as BouncerRow[];
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await run('bash', [LAPI_SCRIPT, 'stop', dir], { timeout: 30_000 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A debug-level pino logger whose lines the test can read (JSON objects). */
export function captureLog(): { log: Logger; lines: () => Array<Record<string, unknown>>; text: () => string } {
  const out: string[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void out.push(s) });
  return { log, lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>), text: () => out.join('') };
}
