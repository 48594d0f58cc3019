/**
 * Shared fixtures for the azure-nsg tests: a fake ARM server over TLS with a
 * throwaway CA, and providers pointed at it with the real SDK client.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import type { Ban } from '../../../src/core/types.js';
import { AzureNsgProvider, azureNsgConfigSchema, type AzureNsgDeps } from '../../../src/providers/azure-nsg/index.js';
import { FakeArm, type FakeArmOptions, type FakeRuleProps } from '../../fakes/azure/arm-server.js';
import { makeTestTls, type TestTls } from '../../fakes/azure/tls.js';
import { NOW } from '../../helpers/bans.js';

export const SUB = '6f1a5c2e-0000-4000-8000-00000000c0de';
export const RG = 'rg-edge';
export const NSG = 'nsg-pbx';

/** Any `{ getToken }` works: the fake checks that a bearer token is sent, not what it is. */
export const testCredential = {
  getToken: async () => ({ token: 'test-token', expiresOnTimestamp: Date.now() + 3_600_000 }),
};

export const silentLog = pino({ level: 'silent' });

export interface Env {
  fake: FakeArm;
  tls: TestTls;
  close(): Promise<void>;
}

export async function startFake(opts: { limits?: FakeArmOptions['limits']; rules?: (FakeRuleProps & { name: string })[] } = {}): Promise<Env> {
  const tls = makeTestTls();
  const fake = new FakeArm({ tls, subscriptionId: SUB, limits: opts.limits });
  await fake.start();
  fake.seedNsg(RG, NSG, opts.rules ?? []);
  return {
    fake,
    tls,
    async close() {
      await fake.close();
      tls.cleanup();
    },
  };
}

/** The target config the tests use, before zod parsing. */
export function rawConfig(env: Env, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    subscription_id: SUB,
    resource_group: RG,
    nsg_name: NSG,
    priority_band: { start: 100, end: 199 },
    endpoint: env.fake.url,
    ca_cert_path: env.tls.caPath,
    poll_interval: '5ms',
    retry: { attempts: 4, base_delay: '10ms', max_delay: '100ms' },
    queue: { interval_cap: 10_000, interval: '1s' },
    ...over,
  };
}

export function makeProvider(env: Env, over: Record<string, unknown> = {}, deps: AzureNsgDeps = {}, owner = 'test'): AzureNsgProvider {
  const cfg = azureNsgConfigSchema.parse(rawConfig(env, over));
  return new AzureNsgProvider(cfg, { target: 'azure-test', owner, log: silentLog, now: () => NOW }, { credential: testCredential, ...deps });
}

/**
 * A sleep that remembers what it was asked and waits `scale` of it (default:
 * not at all): retries stay fast, Retry-After is observable, and with a
 * scale the fake's operations still settle while the client backs off.
 */
export function recordingSleep(scale = 0): { sleep: (ms: number) => Promise<void>; delays: number[] } {
  const delays: number[] = [];
  return {
    delays,
    sleep: async (ms: number) => {
      delays.push(ms);
      if (scale > 0) await new Promise((r) => setTimeout(r, ms * scale));
    },
  };
}

let nsgCounter = 0;

/** A new, empty (or seeded) NSG on the fake; returns its name. */
export function newNsg(env: Env, rules: (FakeRuleProps & { name: string })[] = []): string {
  const name = `nsg-${++nsgCounter}`;
  env.fake.seedNsg(RG, name, rules);
  return name;
}

/** The rules we own on an NSG of the fake (name prefix of owner `test` unless told). */
export function ownedRules(env: Env, nsg: string, owner = 'test') {
  return env.fake.rules(RG, nsg).filter((r) => r.name.startsWith(`cloud-bouncer-${owner}-`));
}

/** Every CIDR in our rules on our side, sorted (duplicates kept, so a CIDR in two rules shows). */
export function enforcedCidrs(env: Env, nsg: string, owner = 'test', side: 'source' | 'destination' = 'source'): string[] {
  return ownedRules(env, nsg, owner)
    .flatMap((r) => (side === 'source' ? r.sourceAddressPrefixes : r.destinationAddressPrefixes) ?? [])
    .sort();
}

/** Writes (PUT + DELETE) the fake has received. */
export function writesSeen(env: Env): number {
  return (env.fake.calls.byMethod.PUT ?? 0) + (env.fake.calls.byMethod.DELETE ?? 0);
}

/** What the wire-shape tests read from an ARM answer (an empty answer reads as `{}`). */
export interface ArmBody {
  error?: { code: string; message: string; details?: { code: string; message: string }[] };
  status?: string;
  properties?: { defaultSecurityRules?: { name: string; properties: { priority: number } }[]; [k: string]: unknown };
  [k: string]: unknown;
}

/** One line a child pass prints. */
export interface ChildEvent {
  event: string;
  changes?: { kind: string; slot: string; after: string[] | null }[];
  outcomes?: { slot: string; status: string; error: string | null }[];
  error?: string | null;
  calls?: number;
}

/** One HTTPS request to the fake with the test CA, for wire-shape checks. */
export function armRequest(
  env: Env,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = { authorization: 'Bearer test-token' },
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: ArmBody }> {
  const u = new URL(path, env.fake.url);
  const text = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      u,
      { method, ca: env.tls.ca, headers: { ...headers, ...(text ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) } : {}) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: raw ? (JSON.parse(raw) as ArmBody) : {} });
        });
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

/** Bundles `child-pass.ts` (esbuild, node_modules left external) into `.tmp/` and returns its path. */
export async function bundleChild(): Promise<string> {
  const { build } = await import('esbuild');
  const outdir = fileURLToPath(new URL('../../../.tmp/', import.meta.url));
  mkdirSync(outdir, { recursive: true });
  const outfile = join(outdir, `azure-child-${process.pid}-${Date.now()}.mjs`);
  await build({
    entryPoints: [fileURLToPath(new URL('./child-pass.ts', import.meta.url))],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    packages: 'external',
    outfile,
    logLevel: 'silent',
  });
  return outfile;
}

export interface ChildRun {
  child: ChildProcess;
  /** Resolves with the first stdout event of that name. */
  next(event: string): Promise<ChildEvent>;
  go(): void;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

export function runChild(bundle: string, input: { config: Record<string, unknown>; owner: string; bans: Ban[]; now: number; waitForGo?: boolean }): ChildRun {
  const child = spawn(process.execPath, [bundle], { env: { ...process.env, CB_CHILD: JSON.stringify(input) }, stdio: ['pipe', 'pipe', 'pipe'] });
  const events: ChildEvent[] = [];
  const waiters: { event: string; resolve: (e: ChildEvent) => void }[] = [];
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let e: ChildEvent;
    try {
      e = JSON.parse(line) as ChildEvent;
    } catch {
      return;
    }
    events.push(e);
    for (const w of waiters.filter((x) => x.event === e.event)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(e);
    }
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, stderr })),
  );
  return {
    child,
    next(event) {
      const seen = events.find((e) => e.event === event);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.push({ event, resolve });
        void exit.then((x) => reject(new Error(`child exited (${x.code ?? x.signal}) before "${event}": ${x.stderr}`)));
      });
    },
    go() {
      child.stdin!.write('go\n');
    },
    exit,
  };
}
