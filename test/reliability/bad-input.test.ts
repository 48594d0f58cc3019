/**
 * Bad input through the real code paths: a decision source on loopback
 * answers garbage, wrong types, invalid addresses, huge values, over-broad
 * ranges, negative and overflowing durations, 50 MB bodies and slowloris
 * trickles; the LAPI client, the config loader, the runtime and `runPass`
 * handle it against a `file` target seeded with foreign and owned rules.
 *
 * Required: no crash (no unhandled rejection or exception); when the
 * snapshot is invalid the target stays byte-identical and one error names
 * the source; a bad config is a `ConfigError` naming a key, and no target
 * is touched. The inputs tried are counted, printed with a `[bad-input]`
 * prefix and written to build/reliability/bad-input.json.
 *
 * Knobs: RELIABILITY_FUZZ_RUNS (default 150 runs per property),
 * RELIABILITY_FUZZ_SEED (default 8; a failing seed and path replay).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig, validateConfig } from '../../src/config.js';
import { ConfigError } from '../../src/core/errors.js';
import { toRange } from './addresses.js';
import { envelope, invalidBody, streamItem, validItem, type GenItem } from './fuzz-items.js';
import { startScripted, type ScriptedServer } from './fuzz-server.js';
import { HOUR, T0, Tally, cli, configDoc, ownedRule, passFromConfig, seedFirewall, tempDir, watchCrashes, writeConfig, type Firewall } from './fuzz-world.js';
import { lapiAvailable, startLapi, type StartedLapi } from '../helpers/lapi.js';

const RUNS = Number(process.env.RELIABILITY_FUZZ_RUNS ?? 150);
const SEED = Number(process.env.RELIABILITY_FUZZ_SEED ?? 8);
const KEY = 'bad-input-key-0123456789abcdef';
const MiB = 1024 * 1024;

const tally = new Tally();
let server: ScriptedServer;
let crashes: ReturnType<typeof watchCrashes>;

beforeAll(async () => {
  crashes = watchCrashes();
  server = await startScripted();
});

afterAll(async () => {
  crashes.stop();
  await server?.close();
  tally.publish({ runsPerProperty: RUNS, seed: SEED, note: 'the "items" group counts stream items one by one (RUNS bodies of 1-41 items each); every other group counts whole inputs' });
});

/** A fresh target: an operator's rules around one live owned rule (fail-static keeps it, so nothing may change). */
function world(tag: string): { fw: Firewall; before: string; doc: (source?: Record<string, unknown>, top?: Record<string, unknown>) => Record<string, unknown> } {
  const dir = tempDir(tag);
  const fw = seedFirewall(dir, 'fuzz', [ownedRule('fuzz', 1, ['192.0.2.200/32'], T0 + 2 * HOUR)]);
  return { fw, before: fw.bytes(), doc: (source = {}, top = {}) => configDoc({ source: { api_url: server.url, api_key: KEY, ...source }, firewall: fw.path, top }) };
}

/** The pass refused the snapshot as a whole: one error naming the source, fail-static, target byte-identical. */
function expectRefused(r: Awaited<ReturnType<typeof passFromConfig>>, w: { fw: Firewall; before: string }, message: RegExp): void {
  expect(r.errors).toHaveLength(1);
  expect(r.errors[0]).toMatch(/^source lapi: /);
  expect(r.errors[0]).toMatch(message);
  expect(r.plan.failStatic).toBe(true);
  expect(r.plan.sources).toMatchObject([{ name: 'lapi', ok: false }]);
  expect(r.plan.targets[0]!.changes).toEqual([]);
  expect(w.fw.bytes()).toBe(w.before);
}

const ownedRanges = (fw: Firewall) =>
  new Set(
    fw.owned().flatMap((r) =>
      r.cidrs.map((c) => {
        const x = toRange(c)!;
        return `${x.family}:${x.start}-${x.end}`;
      }),
    ),
  );

describe('bad input: decision stream bodies', () => {
  it('refuses a body that is not a snapshot, names the source, and leaves the target byte-identical', async () => {
    // Prepare
    const w = world('not-snapshot');

    // Act + Assess, per input
    await fc.assert(
      fc.asyncProperty(invalidBody, async ({ body }) => {
        server.reply = { kind: 'body', body };
        const r = await passFromConfig(w.doc(), { now: T0 });
        tally.add('stream: not a snapshot (random JSON, bytes, cut)', 'refused');
        expectRefused(r, w, /^source lapi: decisions http:\/\/127\.0\.0\.1:\d+\/: malformed response: /);
      }),
      { numRuns: RUNS * 2, seed: SEED },
    );
  });

  it('writes exactly the valid items of a snapshot and skips, counts or refuses every other one', async () => {
    // Prepare
    const w = world('items');
    const foreign = w.fw.foreign();

    await fc.assert(
      // At least one valid item: a snapshot whose every item is invalid is the case below.
      fc.asyncProperty(fc.tuple(fc.array(streamItem, { maxLength: 40 }), validItem, fc.nat()).map(([rest, one, at]) => rest.toSpliced(at % (rest.length + 1), 0, one)), async (items: GenItem[]) => {
        // Act
        server.reply = { kind: 'body', body: envelope(items) };
        const r = await passFromConfig(w.doc(), { now: T0 });
        tally.add('stream: items (wrong types, bad IPs, huge, /0, durations)', 'accepted', items.length);

        // Assess
        const count = (f: GenItem['fate']) => items.filter((i) => i.fate === f).length;
        expect(r.errors).toEqual([]);
        expect(r.plan.sources).toMatchObject([{ name: 'lapi', ok: true, skipped: count('skipped') }]);
        const valid = new Set(items.filter((i) => i.fate === 'valid').map((i) => i.range!));
        expect(ownedRanges(w.fw)).toEqual(valid);
        for (const i of items.filter((x) => x.fate === 'refused')) {
          const cidrs = r.plan.refused.filter((x) => x.reason === 'min_prefix').map((x) => x.value);
          expect(cidrs.some((c) => `${toRange(c)!.family}:${toRange(c)!.start}-${toRange(c)!.end}` === i.range), i.note).toBe(true);
        }
        expect(w.fw.doc().rules.flatMap((x) => x.cidrs)).not.toContain('0.0.0.0/0');
        expect(w.fw.doc().rules.flatMap((x) => x.cidrs)).not.toContain('::/0');
        expect(w.fw.foreign()).toEqual(foreign);
      }),
      { numRuns: RUNS, seed: SEED },
    );
  });

  it('refuses a MikoPBX whitelist that is not a list, and skips list entries that are not addresses', async () => {
    // Prepare: the stream itself is fine and holds the live rule's address, so only the whitelist can change anything.
    const w = world('whitelist');
    const decisions = JSON.stringify({ new: [{ duration: '4h', origin: 'mikopbx', scenario: 'mikopbx/asterisk-bf', scope: 'Ip', type: 'ban', value: '192.0.2.200' }], deleted: [] });
    const live = toRange('192.0.2.200')!;
    const covers200 = (v: unknown) => {
      const r = typeof v === 'string' ? toRange(v.trim()) : undefined;
      return r !== undefined && r.family === 4 && r.start <= live.start && live.start <= r.end;
    };
    const body = fc.oneof(
      fc.jsonValue().filter((v) => !(Array.isArray(v) && v.some(covers200))),
      fc.array(fc.oneof(fc.constantFrom('999.1.1.1', '10.0.0.0/33', '', ' ', 'localhost', '::/129', '1.2.3.4/-1'), fc.string({ maxLength: 20 }), fc.integer(), fc.constant(null)), { maxLength: 8 }).filter((v) => !v.some(covers200)),
      fc.string({ maxLength: 50 }),
    );

    await fc.assert(
      fc.asyncProperty(body, async (wl) => {
        // Act
        const text = typeof wl === 'string' ? wl : JSON.stringify(wl);
        server.reply = (path) => (path.endsWith('/v1/whitelist') ? { kind: 'body', body: text } : { kind: 'body', body: decisions });
        const r = await passFromConfig(w.doc({ type: 'mikopbx' }), { now: T0 });
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        const isList = parsed === null || Array.isArray(parsed);
        tally.add('whitelist: random JSON and bad entries', isList ? 'accepted' : 'refused');

        // Assess
        if (!isList) expectRefused(r, w, /^source lapi: whitelist http:\/\/127\.0\.0\.1:\d+\/: malformed response: /);
        else {
          expect(r.errors).toEqual([]);
          expect(w.fw.bytes()).toBe(w.before);
        }
      }),
      { numRuns: RUNS, seed: SEED },
    );
  });

  it('keeps the target when every item of a non-empty snapshot fails validation (a changed wire format is not "no bans")', async () => {
    // Prepare: the live rule's ban is still in the stream, but `duration` now comes as a number of seconds.
    const w = world('all-invalid');
    const item = (value: string) => ({ duration: 14_400, id: 1, origin: 'crowdsec', scenario: 'crowdsecurity/ssh-bf', scope: 'Ip', type: 'ban', value });
    server.reply = { kind: 'body', body: JSON.stringify({ new: [item('192.0.2.200'), item('192.0.2.201')], deleted: null }) };

    // Act
    const r = await passFromConfig(w.doc(), { now: T0 });
    tally.add('stream: every item invalid', r.errors.length > 0 ? 'refused' : 'accepted');

    // Assess
    expectRefused(r, w, /malformed response: .*(no|every) item/);
  });

  it('never writes 0.0.0.0/0 or ::/0, reports them refused, and keeps the rest of the snapshot', async () => {
    // Prepare
    const w = world('slash-zero');
    const it4 = (value: string, scope = 'Range') => ({ duration: '4h', origin: 'cscli', scenario: 'manual', scope, type: 'ban', value });
    server.reply = { kind: 'body', body: JSON.stringify({ new: [it4('0.0.0.0/0'), it4('::/0'), it4('0.0.0.0/0', 'Ip'), it4('192.0.2.9', 'Ip')], deleted: null }) };

    // Act
    const r = await passFromConfig(w.doc(), { now: T0 });
    tally.add('stream: 0.0.0.0/0 and ::/0', 'accepted', 3);

    // Assess
    expect(r.plan.refused.filter((x) => x.reason === 'min_prefix').map((x) => x.value).sort()).toEqual(['0.0.0.0/0', '::/0']);
    expect(w.fw.owned().flatMap((x) => x.cidrs)).toEqual(['192.0.2.9/32']);
  });

  it('never writes 0.0.0.0/0, even when the operator lowers guards.min_prefix_v4 to 0 (DESIGN: "a 0.0.0.0/0 ban is never written")', async () => {
    // Prepare
    const w = world('slash-zero-guard');
    server.reply = { kind: 'body', body: JSON.stringify({ new: [{ duration: '4h', origin: 'cscli', scenario: 'manual', scope: 'Range', type: 'ban', value: '0.0.0.0/0' }], deleted: null }) };

    // Act: a config that validates or not; either way the catch-all must not reach the target.
    const r = await passFromConfig(w.doc({}, { guards: { min_prefix_v4: 0, min_prefix_v6: 0 } }), { now: T0 }).catch((err: unknown) => err);
    tally.add('stream: 0.0.0.0/0 with min_prefix_v4 0', r instanceof ConfigError ? 'refused' : 'accepted');

    // Assess
    if (!(r instanceof ConfigError)) expect(w.fw.doc().rules.flatMap((x) => x.cidrs)).not.toContain('0.0.0.0/0');
    else expect(w.fw.bytes()).toBe(w.before);
  });
});

describe('bad input: response size', () => {
  it.each([
    ['with Content-Length', true],
    ['chunked, without Content-Length', false],
  ])('refuses a 50 MB body over a lowered max_response_bytes (%s), hangs up, and leaves the target byte-identical', async (_name, contentLength) => {
    // Prepare
    const w = world('huge-refused');
    server.reply = { kind: 'huge', size: 50 * MiB, contentLength };

    // Act
    const r = await passFromConfig(w.doc({ max_response_bytes: 8 * MiB }), { now: T0 });
    tally.add('stream: 50 MB over max_response_bytes', 'refused');

    // Assess
    expectRefused(r, w, /response larger than max_response_bytes \(8388608 bytes\)/);
    await vi.waitFor(() => expect(server.seen.at(-1)!.clientClosedEarly).toBe(true));
  });

  it('accepts a 50 MB snapshot under a raised max_response_bytes and writes its live decisions', async () => {
    // Prepare: 50 MB, almost all of it expired history in `deleted` (what startup=true sends).
    const w = world('huge-accepted');
    server.reply = { kind: 'huge', size: 50 * MiB, contentLength: false, newItems: 3 };

    // Act
    const r = await passFromConfig(w.doc({ max_response_bytes: 64 * MiB }), { now: T0 });
    tally.add('stream: 50 MB under a raised bound', 'accepted');

    // Assess
    expect(r.errors).toEqual([]);
    expect(w.fw.owned().flatMap((x) => x.cidrs).sort()).toEqual(['192.0.2.1/32', '192.0.2.2/32', '192.0.2.3/32']);
  });

  it('reads at most 64 KiB of a 50 MB error body and reports the status', async () => {
    // Prepare
    const w = world('huge-error');
    server.reply = { kind: 'huge', status: 503, size: 50 * MiB, contentLength: false };

    // Act
    const r = await passFromConfig(w.doc(), { now: T0 });
    tally.add('stream: 50 MB error body', 'refused');

    // Assess
    expectRefused(r, w, /: HTTP 503 /);
    expect(r.errors[0]!.length).toBeLessThan(400);
  });

  it('refuses a body shorter than its Content-Length (connection dropped mid-body)', async () => {
    const w = world('short');
    server.reply = { kind: 'short', body: JSON.stringify({ new: [{ duration: '4h', origin: 'x', scenario: 'x', scope: 'Ip', type: 'ban', value: '192.0.2.1' }], deleted: null }) };
    const r = await passFromConfig(w.doc(), { now: T0 });
    tally.add('stream: dropped mid-body', 'refused');
    expectRefused(r, w, /connection (dropped|closed)/);
  });
});

describe('bad input: slowloris', () => {
  const valid = JSON.stringify({ new: Array.from({ length: 20 }, (_, i) => ({ duration: '4h', origin: 'crowdsec', scenario: 'crowdsecurity/ssh-bf', scope: 'Ip', type: 'ban', value: `192.0.2.${i + 1}` })), deleted: null });

  it.each([
    ['a valid body trickling 4 bytes every 50 ms', { kind: 'trickle-body', body: valid, chunk: 4, everyMs: 50 } as const],
    ['the status line and headers trickling one byte every 50 ms', { kind: 'trickle-headers', everyMs: 50 } as const],
    ['a server that accepts and never answers', { kind: 'silent' } as const],
  ])('gives up on %s at the timeout, hangs up, and leaves the target byte-identical', async (_name, reply) => {
    // Prepare
    const w = world('slow');
    server.reply = reply;

    // Act
    const r = await passFromConfig(w.doc({ timeout: '600ms' }), { now: T0 });
    tally.add('stream: slowloris past the timeout', 'refused');

    // Assess
    expectRefused(r, w, /: timed out after 600ms$/);
    await vi.waitFor(() => expect(server.seen.at(-1)!.clientClosedEarly).toBe(true));
  }, 30_000);

  it('gives up when only the MikoPBX whitelist trickles, and adds nothing from the decisions it did get', async () => {
    // Prepare
    const w = world('slow-whitelist');
    server.reply = (path) => (path.endsWith('/v1/whitelist') ? { kind: 'trickle-body', body: '["198.51.100.0/24"]', chunk: 1, everyMs: 100 } : { kind: 'body', body: valid });

    // Act
    const r = await passFromConfig(w.doc({ type: 'mikopbx', timeout: '600ms' }), { now: T0 });
    tally.add('whitelist: slowloris past the timeout', 'refused');

    // Assess
    expectRefused(r, w, /^source lapi: whitelist http:\/\/127\.0\.0\.1:\d+\/: timed out after 600ms$/);
  }, 30_000);

  it('accepts a body that trickles but completes within the timeout', async () => {
    // Prepare
    const w = world('slow-ok');
    server.reply = { kind: 'trickle-body', body: valid, chunk: 256, everyMs: 20 };

    // Act
    const r = await passFromConfig(w.doc({ timeout: '30s' }), { now: T0 });
    tally.add('stream: slow but within the timeout', 'accepted');

    // Assess
    expect(r.errors).toEqual([]);
    expect(w.fw.owned().flatMap((x) => x.cidrs)).toHaveLength(20);
  });
});

describe.skipIf(!lapiAvailable())('bad input: huge values from the real LAPI', () => {
  let lapi: StartedLapi;
  beforeAll(async () => {
    lapi = await startLapi();
  }, 120_000);
  afterAll(async () => {
    await lapi?.stop();
  });

  it('enforces a decision longer than 292 years (cscli accepts up to 2562047h), capped at guards.max_ttl', async () => {
    // Prepare: the LAPI answers `2561999h59m…`, past MAX_DURATION_MS (292 × 365 days).
    const dir = tempDir('lapi-huge');
    const fw = seedFirewall(dir, 'fuzz', []);
    await lapi.addDecision({ ip: '192.0.2.77', duration: '2562000h' });
    const now = Date.now();

    // Act
    const r = await passFromConfig(configDoc({ source: { api_url: lapi.url, api_key: lapi.apiKey }, firewall: fw.path, top: { guards: { max_ttl: '24h' } } }), { now });
    tally.add('real LAPI: 2562000h decision', r.plan.sources[0]?.skipped ? 'refused' : 'accepted');

    // Assess
    expect(r.plan.sources).toMatchObject([{ ok: true, skipped: 0 }]);
    expect(fw.owned().flatMap((x) => x.cidrs)).toContain('192.0.2.77/32');
  });
});

// ---------------------------------------------------------------------------
// Config

/** Every key an operator can set, with a valid value: the base every mutation starts from. */
function fullConfig(firewallPath: string): Record<string, unknown> {
  return {
    owner: 'fuzz',
    log_level: 'info',
    sources: [
      {
        name: 'lapi',
        type: 'lapi',
        api_url: 'http://127.0.0.1:1/',
        api_key: KEY,
        auth: 'api_key',
        insecure_skip_verify: false,
        timeout: '5s',
        max_response_bytes: 1_048_576,
        update_frequency: '10s',
        resync_frequency: '10m',
        supported_decisions_types: ['ban'],
        scopes: ['ip', 'range'],
        origins: ['crowdsec'],
        scenarios_containing: ['ssh'],
        scenarios_not_containing: ['http'],
        whitelist: false,
      },
    ],
    whitelist: { cidrs: ['203.0.113.7/32'], hostnames: ['admin.example.net'] },
    never_ban: ['198.51.100.10/32'],
    guards: { min_prefix_v4: 16, min_prefix_v6: 48, max_ttl: '168h' },
    priority: { manual_origins: ['cscli'], local_origins: ['crowdsec'] },
    expiry: { refresh_margin: '10m' },
    targets: [
      {
        name: 'fw',
        provider: 'file',
        max_writes_per_run: 500,
        path: firewallPath,
        rules: 8,
        cidrs_per_rule: 4,
        total_cidrs: 32,
        name_prefix: 'cloud-bouncer',
        bucket: '1h',
        lock_timeout: '30s',
        queue: { concurrency: 1, interval_cap: 100, interval: '1s' },
      },
    ],
    daemon: { interval: '60s', listen: '127.0.0.1:9090', delta: true },
  };
}

type Path = Array<string | number>;

function allPaths(v: unknown, at: Path = []): Path[] {
  const out: Path[] = at.length ? [at] : [];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...allPaths(x, [...at, i])));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...allPaths(x, [...at, k]));
  return out;
}

function keyOf(path: Path): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${p}` : p;
  return s;
}

/** A copy of `doc` with the value at `path` replaced (or removed when `value` is `undefined`). */
function mutate(doc: Record<string, unknown>, path: Path, value: unknown): Record<string, unknown> {
  const copy = structuredClone(doc);
  let node = copy as Record<string | number, unknown>;
  for (const p of path.slice(0, -1)) node = node[p] as Record<string | number, unknown>;
  const last = path.at(-1)!;
  if (value === undefined) {
    if (Array.isArray(node)) node.splice(last as number, 1);
    else delete node[last];
  } else node[last] = value;
  return copy;
}

const parentOf = (key: string) => key.replace(/(\.[^.[\]]+|\[\d+\])$/, '');

/** The error names the mutated key, a key inside it, or a sibling that a cross-key rule pairs it with. */
function namesKey(errKey: string, path: Path): boolean {
  const key = keyOf(path);
  return errKey === key || errKey.startsWith(`${key}.`) || errKey.startsWith(`${key}[`) || parentOf(errKey) === parentOf(key) || (path.length > 1 && errKey === parentOf(key));
}

const WRONG_VALUES: unknown[] = [undefined, null, true, 0, -1, 1.5, 1e308, -1e308, 2 ** 53, '', 'x', '-5s', '-1h', '1e400', '99999999999999h', 'NaN', [], ['x'], {}, { a: 1 }, '0.0.0.0/0'];

describe('bad input: config', () => {
  it('answers every wrong value of every key with a ConfigError naming that key, and the CLI touches no target', async () => {
    // Prepare
    const dir = tempDir('config-keys');
    const fw = seedFirewall(dir, 'fuzz', [ownedRule('fuzz', 1, ['192.0.2.200/32'], T0 + 2 * HOUR)]);
    const before = fw.bytes();
    const base = fullConfig(fw.path);
    await expect(validateConfig(base)).resolves.toBeTruthy();
    const paths = allPaths(base);
    const randomValues = fc.sample(fc.jsonValue({ maxDepth: 2 }), { numRuns: 3 * paths.length, seed: SEED });
    const cases: Array<[Path, unknown]> = [];
    paths.forEach((p, i) => {
      for (const v of WRONG_VALUES) cases.push([p, v]);
      for (const v of randomValues.slice(3 * i, 3 * i + 3)) cases.push([p, v]);
    });
    const unrelated: string[] = [];
    const notConfigErrors: string[] = [];

    for (const [path, value] of cases) {
      // Act
      const doc = mutate(base, path, value);
      const err = await validateConfig(doc).then(
        () => undefined,
        (e: unknown) => e,
      );

      // Assess
      if (err === undefined) {
        tally.add('config: wrong value per key', 'accepted');
        continue;
      }
      tally.add('config: wrong value per key', 'refused');
      if (!(err instanceof ConfigError)) {
        notConfigErrors.push(`${keyOf(path)} = ${JSON.stringify(value)}: ${String(err)}`);
        continue;
      }
      if (!namesKey(err.key, path)) unrelated.push(`${keyOf(path)} = ${JSON.stringify(value)} → ${err.message}`);
      const r = await cli(['apply', '--config', writeConfig(dir, doc)]);
      expect(r.code).toBe(1);
      expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
      expect(r.stderr).toMatch(/^cloud-bouncer: error: config: /);
      expect(fw.bytes()).toBe(before);
    }
    expect(notConfigErrors).toEqual([]);
    expect(unrelated).toEqual([]);
  });

  it('answers random YAML documents with one ConfigError line, never a crash', async () => {
    // Prepare
    const dir = tempDir('config-docs');
    const path = join(dir, 'config.yaml');
    const nasty = [
      // Billion laughs: the parser's alias limit must refuse it, not expand it.
      `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\nsources: *f\ntargets: *f\n`,
      'sources: !!js/function "function(){}"\n',
      'sources: !!binary aGVsbG8=\ntargets: []\n',
      'owner: a\nowner: b\n',
      '<<: {sources: 1}\n',
      '__proto__: {polluted: true}\nsources: []\n',
      'constructor: {prototype: {polluted: true}}\n',
      'sources: [{name: s, type: lapi, api_url: "http://[::1", api_key: k}]\ntargets: [{name: t, provider: file, path: x}]\n',
      `sources:\n  - name: s\n    type: file\n    path: examples/decisions.json\ntargets:\n  - name: t\n    provider: file\n    path: ${join(dir, 'never.json')}\n    rules: .inf\n`,
      `sources:\n  - name: s\n    type: file\n    path: examples/decisions.json\ntargets:\n  - name: t\n    provider: file\n    path: ${join(dir, 'never.json')}\n    rules: .nan\n`,
      `guards: {max_ttl: ${'9'.repeat(400)}}\n`,
      '\t- tab indented\n',
      '%YAML 9.9\n---\na: 1\n',
      '--- a\n--- b\n',
      `${'['.repeat(10_000)}${']'.repeat(10_000)}`,
      `key: "${'x'.repeat(5 * 1024 * 1024)}"\n`,
      '\u0000\u0001\u0002',
    ];
    const docs = [
      ...nasty,
      ...fc.sample(fc.jsonValue(), { numRuns: RUNS, seed: SEED }).map((v) => toYaml(v)),
      ...fc.sample(fc.string({ maxLength: 300 }), { numRuns: RUNS, seed: SEED + 1 }),
      ...fc.sample(fc.dictionary(fc.constantFrom('owner', 'log_level', 'sources', 'whitelist', 'never_ban', 'guards', 'priority', 'expiry', 'targets', 'daemon'), fc.jsonValue({ maxDepth: 3 })), { numRuns: RUNS, seed: SEED + 2 }).map((v) => toYaml(v)),
    ];

    for (const text of docs) {
      // Act
      writeFileSync(path, text);
      const err = await loadConfig({ path, env: {} }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const r = await cli(['apply', '--config', path]);
      tally.add('config: random YAML documents', err === undefined ? 'accepted' : 'refused');

      // Assess
      expect(err, text.slice(0, 200)).toBeInstanceOf(ConfigError);
      expect(r.code).toBe(1);
      expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
      expect(r.stderr).toMatch(/^cloud-bouncer: error: config: \S.*: .+/);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('answers random CLOUD_BOUNCER__* variables with a ConfigError or a valid config, never a crash, and touches no target', async () => {
    // Prepare
    const dir = tempDir('config-env');
    const fw = seedFirewall(dir, 'fuzz', [ownedRule('fuzz', 1, ['192.0.2.200/32'], T0 + 2 * HOUR)]);
    const before = fw.bytes();
    const cfgPath = writeConfig(dir, fullConfig(fw.path));
    const segment = fc.oneof(
      fc.constantFrom('OWNER', 'SOURCES', 'TARGETS', 'GUARDS', 'MAX_TTL', 'MIN_PREFIX_V4', 'API_KEY', 'TIMEOUT', 'RULES', 'PATH', 'PROVIDER', 'WHITELIST', 'CIDRS', 'NEVER_BAN', 'DAEMON', 'QUEUE', 'CONCURRENCY', 'TYPE', 'NAME', 'X'),
      fc.nat({ max: 3 }).map(String),
      fc.constantFrom('', '_', 'ÄÖ', '__PROTO__', 'CONSTRUCTOR', 'PROTOTYPE', '-1', '1.5'),
    );
    const value = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('-1', '0', '1e400', '.nan', '~', '[]', '{}', '{a: 1}', '${NOPE}', '${NOPE:-5s}', 'true', '"', '[', '- a\n- b', '0.0.0.0/0', '99999999999h'));
    const envs = fc.sample(fc.array(fc.tuple(fc.array(segment, { minLength: 1, maxLength: 4 }), value), { minLength: 1, maxLength: 3 }), { numRuns: RUNS * 2, seed: SEED });

    for (const vars of envs) {
      const env = Object.fromEntries(vars.map(([parts, v]) => [`CLOUD_BOUNCER__${parts.join('__')}`, v]));
      // Act
      const err = await loadConfig({ path: cfgPath, env }).then(
        () => undefined,
        (e: unknown) => e,
      );
      tally.add('config: random CLOUD_BOUNCER__* variables', err === undefined ? 'accepted' : 'refused');

      // Assess
      if (err === undefined) continue;
      expect(err, JSON.stringify(env)).toBeInstanceOf(ConfigError);
      const r = await cli(['apply', '--config', cfgPath], { env });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^cloud-bouncer: error: config: /);
      expect(fw.bytes()).toBe(before);
    }
  });

  it('refuses a list index far past the end of a list in a variable name, naming the variable', async () => {
    // Prepare: CLOUD_BOUNCER__SOURCES__1000000__NAME makes a million-slot list today (10^9 slots: minutes, then out of memory).
    const dir = tempDir('config-env-index');
    const cfgPath = writeConfig(dir, fullConfig(join(dir, 'fw.json')));

    // Act
    const err = await loadConfig({ path: cfgPath, env: { CLOUD_BOUNCER__SOURCES__1000000__NAME: 'x' } }).catch((e: unknown) => e);
    tally.add('config: huge list index in a variable', 'refused');

    // Assess
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe('CLOUD_BOUNCER__SOURCES__1000000__NAME');
  });

  it('refuses a source timeout too long for a timer instead of timing out at once', async () => {
    // Prepare: 9999999999 s does not fit a 32-bit timer; Node fires such a timer after 1 ms.
    const w = world('timeout-overflow');
    server.reply = { kind: 'body', body: '{"new":[{"duration":"4h","origin":"x","scenario":"x","scope":"Ip","type":"ban","value":"192.0.2.1"}],"deleted":null}' };

    // Act
    const r = await passFromConfig(w.doc({ timeout: 9_999_999_999 }), { now: T0 }).catch((e: unknown) => e);
    tally.add('config: timeout past the timer range', r instanceof ConfigError || (r as Awaited<ReturnType<typeof passFromConfig>>).errors.length > 0 ? 'refused' : 'accepted');

    // Assess: either the config says so, or the request is not cut short.
    if (r instanceof ConfigError) expect(r.key).toBe('sources[0].timeout');
    else expect((r as Awaited<ReturnType<typeof passFromConfig>>).errors).toEqual([]);
  });
});

describe('bad input: no crash', () => {
  it('saw no unhandled rejection or uncaught exception in any of the above', () => {
    expect(crashes.seen).toEqual([]);
    expect(tally.total()).toBeGreaterThan(0);
  });
});
