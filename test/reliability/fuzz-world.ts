/**
 * The world the bad-input, security and lockout tests run in: a `file`
 * target seeded with foreign and owned rules, a config document built the
 * way an operator writes one, a pass run through the real config loader,
 * runtime and `runPass` with a clock the test holds, and a tally of the
 * inputs tried (`build/reliability/bad-input.json`).
 */
import { mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { stringify as toYaml } from 'yaml';
import { validateConfig } from '../../src/config.js';
import { formatMarker } from '../../src/core/marker.js';
import { runPass, type PassMode, type PassResult } from '../../src/core/reconcile.js';
import type { Resolver } from '../../src/core/whitelist.js';
import { createRuntime } from '../../src/runtime.js';
import { main } from '../../src/cli.js';
import { toRange, type AddressRange } from './addresses.js';

/** A whole second, so recorded expiries (unix seconds) compare exactly. */
export const T0 = Date.UTC(2026, 10, 23, 8, 0, 0);
export const MINUTE = 60_000;
export const HOUR = 3_600_000;

export const silent = pino({ level: 'silent' });

/** No test resolves real names: a hostname resolves only when the test says so. */
export const noDns: Resolver = async (host) => {
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
};

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `cb-${tag}-`));
}

// ---------------------------------------------------------------------------
// The file target

export interface FileRuleJson {
  name: string;
  action: 'allow' | 'deny';
  family: 4 | 6;
  cidrs: string[];
  description?: string;
}

export interface FirewallDoc {
  capacity: { rules: number; cidrs_per_rule: number; total_cidrs?: number };
  rules: FileRuleJson[];
}

/** Rules nobody but their owner may touch: an operator's deny and allow, and another cloud-bouncer owner's rule. */
export function foreignRules(now: number): FileRuleJson[] {
  return [
    { name: 'ops-deny-scanner', action: 'deny', family: 4, cidrs: ['198.18.5.0/24'], description: 'manual block, ticket OPS-1234' },
    { name: 'cloud-bouncer-other-001', action: 'deny', family: 6, cidrs: ['2001:db8:dead::/48'], description: formatMarker({ owner: 'other', expiresAt: now + HOUR }) },
    { name: 'allow-office', action: 'allow', family: 4, cidrs: ['203.0.113.7/32'], description: 'office VPN, evaluated after the deny rules' },
  ];
}

export function ownedRule(owner: string, n: number, cidrs: string[], expiresAt: number, family: 4 | 6 = 4): FileRuleJson {
  return { name: `cloud-bouncer-${owner}-${String(n).padStart(3, '0')}`, action: 'deny', family, cidrs, description: formatMarker({ owner, expiresAt }) };
}

export interface Firewall {
  path: string;
  /** The file's bytes right now. */
  bytes(): string;
  doc(): FirewallDoc;
  /** Rules owned by `owner` (name prefix and marker). */
  owned(): FileRuleJson[];
  /** Every rule that is not `owner`'s, serialised one per entry, in file order. */
  foreign(): string[];
  /** Every CIDR a deny rule holds, ours or not. */
  denyRanges(): AddressRange[];
}

export function firewall(path: string, owner: string): Firewall {
  const doc = () => JSON.parse(readFileSync(path, 'utf8')) as FirewallDoc;
  const mine = (r: FileRuleJson) => r.name.startsWith(`cloud-bouncer-${owner}-`);
  return {
    path,
    bytes: () => readFileSync(path, 'utf8'),
    doc,
    owned: () => doc().rules.filter(mine),
    foreign: () => doc().rules.filter((r) => !mine(r)).map((r) => JSON.stringify(r)),
    denyRanges: () =>
      doc()
        .rules.filter((r) => r.action === 'deny')
        .flatMap((r) => r.cidrs.map((c) => toRange(c)!)),
  };
}

/** Writes a firewall file: foreign rules around `owned`, pretty-printed as the provider writes it. */
export function seedFirewall(dir: string, owner: string, owned: FileRuleJson[], opts: { now?: number; capacity?: FirewallDoc['capacity'] } = {}): Firewall {
  const path = join(dir, 'fw.json');
  const [opsDeny, other, allow] = foreignRules(opts.now ?? T0);
  const doc: FirewallDoc = { capacity: opts.capacity ?? { rules: 64, cidrs_per_rule: 64 }, rules: [opsDeny!, ...owned, other!, allow!] };
  writeFileSync(path, `${JSON.stringify(doc, null, 2)}\n`);
  return firewall(path, owner);
}

// ---------------------------------------------------------------------------
// Config documents and passes

export interface WorldConfig {
  owner?: string;
  /** The first source's keys (a LAPI source by default). */
  source: Record<string, unknown>;
  firewall: string;
  /** Extra keys for the file target. */
  target?: Record<string, unknown>;
  /** Extra top-level keys (whitelist, never_ban, guards, ...). */
  top?: Record<string, unknown>;
}

export function configDoc(w: WorldConfig): Record<string, unknown> {
  return {
    owner: w.owner ?? 'fuzz',
    sources: [{ name: 'lapi', type: 'lapi', ...w.source }],
    targets: [{ name: 'fw', provider: 'file', path: w.firewall, rules: 64, cidrs_per_rule: 64, ...w.target }],
    ...w.top,
  };
}

export function writeConfig(dir: string, doc: unknown, name = 'config.yaml'): string {
  const path = join(dir, name);
  writeFileSync(path, toYaml(doc));
  return path;
}

export interface PassOptions {
  now: number;
  mode?: PassMode;
  log?: Logger;
  resolve?: Resolver;
}

/** Config document → loader → runtime → one `runPass`, with the clock at `now`. */
export async function passFromConfig(doc: unknown, opts: PassOptions): Promise<PassResult> {
  const config = await validateConfig(doc);
  const rt = await createRuntime(config, opts.log ?? silent, {}, { now: () => opts.now, resolve: opts.resolve ?? noDns });
  try {
    return await runPass(rt.deps, opts.mode ?? 'apply');
  } finally {
    await rt.close();
  }
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI in this process (`main(argv, io)`), with a logger the caller may capture. */
export async function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; log?: Logger } = {}): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s), env: opts.env ?? {}, log: opts.log ?? silent });
  return { code, stdout, stderr };
}

// ---------------------------------------------------------------------------
// No crash: unhandled rejections and exceptions seen while a block runs.

export function watchCrashes(): { seen: unknown[]; stop(): void } {
  const seen: unknown[] = [];
  const onRejection = (reason: unknown) => void seen.push(reason);
  const onException = (err: unknown) => void seen.push(err);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return {
    seen,
    stop() {
      process.off('unhandledRejection', onRejection);
      process.off('uncaughtException', onException);
    },
  };
}

// ---------------------------------------------------------------------------
// The tally of inputs tried, printed and written to build/reliability/bad-input.json.

export const BAD_INPUT_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '../../build/reliability/bad-input.json');

export interface TallyRow {
  /** How many inputs were tried. */
  tried: number;
  /** Refused as a whole (snapshot failed, config error): the target stayed byte-identical. */
  refused: number;
  /** Accepted (possibly with items skipped or refused one by one). */
  accepted: number;
}

export class Tally {
  readonly rows = new Map<string, TallyRow>();

  add(group: string, outcome: 'refused' | 'accepted', n = 1): void {
    const row = this.rows.get(group) ?? { tried: 0, refused: 0, accepted: 0 };
    row.tried += n;
    row[outcome] += n;
    this.rows.set(group, row);
  }

  total(): number {
    let n = 0;
    for (const r of this.rows.values()) n += r.tried;
    return n;
  }

  /** Prints one line per group and writes the JSON file. */
  publish(meta: Record<string, unknown> = {}): void {
    const lines = [...this.rows].map(([g, r]) => `[bad-input] ${g.padEnd(44)} tried ${String(r.tried).padStart(6)}  refused ${String(r.refused).padStart(6)}  accepted ${String(r.accepted).padStart(6)}`);
    console.log([...lines, `[bad-input] total inputs tried: ${this.total()}`].join('\n'));
    mkdirSync(dirname(BAD_INPUT_PATH), { recursive: true });
    const tmp = `${BAD_INPUT_PATH}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ generatedAt: new Date().toISOString(), ...meta, total: this.total(), groups: Object.fromEntries(this.rows) }, null, 2)}\n`);
    renameSync(tmp, BAD_INPUT_PATH);
  }
}
