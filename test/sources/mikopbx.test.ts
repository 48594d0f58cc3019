/**
 * The `mikopbx` source type against the in-repo MikoPBX-style server, and the
 * source's HTTP failure handling (the fake injects the faults).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { SourceError } from '../../src/core/errors.js';
import { parseGoDuration } from '../../src/core/duration.js';
import { createLapiSource, lapiSourceSchema } from '../../src/sources/lapi.js';
import type { DecisionSource, SourceSnapshot } from '../../src/sources/source.js';
import { USER_AGENT } from '../../src/version.js';
import { FakeMikoPbx, goDuration } from '../fakes/mikopbx.js';
import { captureLog } from '../helpers/lapi.js';

const TOKEN = 'pbx-token-5f2a9c7e1b';
const OTHER = 'pbx-token-other-77';
const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 23, 8, 0, 0);

let clock = T0;
let pbx: FakeMikoPbx;

beforeAll(async () => {
  pbx = await FakeMikoPbx.start({ tokens: [TOKEN, OTHER], now: () => clock });
});
afterAll(async () => {
  await pbx.close();
});
afterEach(() => {
  pbx.clearFaults();
  for (const d of ['192.0.2.1', '192.0.2.2', '192.0.2.3', '198.51.100.0/24']) pbx.removeBan(d);
  pbx.setWhitelist([]);
  clock = T0;
});

function source(extra: Record<string, unknown> = {}, log = captureLog().log): DecisionSource {
  const cfg = lapiSourceSchema.parse({ name: 'pbx', type: 'mikopbx', api_url: pbx.url, api_key: TOKEN, auth: 'bearer', ...extra });
  return createLapiSource(cfg, { log, userAgent: USER_AGENT });
}

const cidrs = (s: SourceSnapshot) => s.decisions.map((d) => d.cidr).sort();

async function rejection(p: Promise<unknown>): Promise<SourceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SourceError);
  return err as SourceError;
}

async function raw(path: string, token = TOKEN): Promise<{ status: number; json: unknown }> {
  const r = await fetch(new URL(path, pbx.url), { headers: { authorization: `Bearer ${token}` } });
  return { status: r.status, json: await r.json() };
}

describe('fakes/mikopbx (the fake itself, as the MikoPBX docs describe the export)', () => {
  it('tracks deleted per token, and startup=true resets that token with deleted []', async () => {
    pbx.addBan({ value: '192.0.2.1' });
    pbx.addBan({ value: '192.0.2.2' });
    await raw('v1/decisions/stream?startup=true', TOKEN);
    await raw('v1/decisions/stream?startup=true', OTHER);
    pbx.removeBan('192.0.2.1');
    const mine = (await raw('v1/decisions/stream', TOKEN)).json as { new: Array<{ value: string }>; deleted: Array<{ value: string }> };
    expect(mine.new.map((i) => i.value)).toEqual(['192.0.2.2']);
    expect(mine.deleted.map((i) => i.value)).toEqual(['192.0.2.1']);
    // Read once by this token: not again.
    expect(((await raw('v1/decisions/stream', TOKEN)).json as { deleted: unknown[] }).deleted).toEqual([]);
    // Another token has its own cursor; startup resets it.
    expect(((await raw('v1/decisions/stream?startup=true', OTHER)).json as { deleted: unknown[] }).deleted).toEqual([]);
  });

  it('slides durations: fixed end counts down, rolling stays constant', async () => {
    pbx.addBan({ value: '192.0.2.1', until: T0 + 2 * HOUR });
    pbx.addBan({ value: '192.0.2.2', rollingMs: HOUR });
    clock = T0 + 30 * 60_000;
    const body = (await raw('v1/decisions/stream')).json as { new: Array<{ value: string; duration: string }> };
    const d = Object.fromEntries(body.new.map((i) => [i.value, parseGoDuration(i.duration)]));
    expect(d).toEqual({ '192.0.2.1': 1.5 * HOUR, '192.0.2.2': HOUR });
  });

  it('refuses a request without a known token with 403 access forbidden', async () => {
    expect(await raw('v1/decisions/stream', 'nope')).toEqual({ status: 403, json: { message: 'access forbidden' } });
  });

  it('writes Go durations the parser reads back', () => {
    for (const ms of [1.5, 999, 1000, 61_500, 3 * HOUR + 59 * 60_000 + 58_500, -3_060.5]) expect(parseGoDuration(goDuration(ms))).toBeCloseTo(ms, 3);
  });
});

describe('sources/lapi (type mikopbx)', () => {
  it('authenticates with Authorization: Bearer and reads the snapshot and the whitelist', async () => {
    pbx.addBan({ value: '192.0.2.1' });
    pbx.addBan({ value: '198.51.100.0/24', until: T0 + HOUR });
    pbx.addWhitelist('203.0.113.5');
    pbx.addWhitelist('198.51.100.7/32');
    pbx.addWhitelist('192.0.2.200');
    pbx.removeWhitelist('192.0.2.200');
    pbx.requests.length = 0;
    const snap = await source().snapshot({ now: T0 });
    expect(cidrs(snap)).toEqual(['192.0.2.1/32', '198.51.100.0/24']);
    expect(snap.whitelist).toEqual(['203.0.113.5', '198.51.100.7/32']);
    expect(snap.decisions[0]).toMatchObject({ source: 'pbx', origin: 'mikopbx', originClass: 'local' });
    expect(pbx.requests.map((r) => [r.endpoint, r.headers.authorization, r.headers['x-api-key'], r.headers['user-agent']])).toEqual(
      expect.arrayContaining([
        ['stream', `Bearer ${TOKEN}`, undefined, USER_AGENT],
        ['whitelist', `Bearer ${TOKEN}`, undefined, USER_AGENT],
      ]),
    );
    expect(pbx.requests.find((r) => r.endpoint === 'stream')!.query.get('startup')).toBe('true');
  });

  it('authenticates with X-Api-Key when auth is api_key', async () => {
    pbx.addBan({ value: '192.0.2.1' });
    pbx.requests.length = 0;
    const snap = await source({ auth: 'api_key' }).snapshot({ now: T0 });
    expect(cidrs(snap)).toEqual(['192.0.2.1/32']);
    expect(pbx.requests.every((r) => r.headers['x-api-key'] === TOKEN && r.headers.authorization === undefined)).toBe(true);
  });

  it('reads the key from api_key_file (trimmed)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cb-key-'));
    writeFileSync(join(dir, 'key'), `${TOKEN}\n`);
    pbx.addBan({ value: '192.0.2.1' });
    const snap = await source({ api_key: undefined, api_key_file: join(dir, 'key') }).snapshot({ now: T0 });
    expect(cidrs(snap)).toEqual(['192.0.2.1/32']);
    const err = await rejection(source({ api_key: undefined, api_key_file: join(dir, 'missing') }).snapshot({ now: T0 }));
    expect(err.message).toBe(`source pbx: cannot read api_key_file ${join(dir, 'missing')}: ENOENT`);
  });

  it('fails on a wrong token with the 403, naming the source and never the token', async () => {
    const cap = captureLog();
    const err = await rejection(source({ api_key: 'wrong-token-123' }, cap.log).snapshot({ now: T0 }));
    expect(err.message).toMatch(/^source pbx: (decisions|whitelist) http:\/\/127\.0\.0\.1:\d+\/pbxcore\/api\/v3\/firewall-bouncer\/: HTTP 403 Forbidden: access forbidden/);
    expect(`${err.message}${cap.text()}`).not.toContain('wrong-token-123');
  });

  it('never repeats the token, even from a server that echoes it in an error', async () => {
    pbx.fail({ kind: 'status', status: 500, body: `{"message":"bad request from Bearer ${TOKEN}"}` });
    const err = await rejection(source({ whitelist: false }).snapshot({ now: T0 }));
    expect(err.message).toMatch(/HTTP 500 Internal Server Error: bad request from Bearer \[REDACTED\]$/);
  });

  it('skips the whitelist when whitelist is false', async () => {
    pbx.requests.length = 0;
    const snap = await source({ whitelist: false }).snapshot({ now: T0 });
    expect(snap.whitelist).toEqual([]);
    // (A request of an earlier test may still arrive: count only this one's.)
    expect(pbx.requests.filter((r) => r.token === TOKEN).map((r) => r.endpoint)).toEqual(['stream']);
  });

  it('fails the whole snapshot when the whitelist fails: a partial whitelist could ban a trusted address', async () => {
    pbx.addBan({ value: '192.0.2.1' });
    pbx.fail({ kind: 'status', status: 500 }, 'whitelist');
    const err = await rejection(source().snapshot({ now: T0 }));
    expect(err.message).toMatch(/^source pbx: whitelist .*: HTTP 500/);
    pbx.fail({ kind: 'body', body: '{"result":true}' }, 'whitelist');
    expect((await rejection(source().snapshot({ now: T0 }))).message).toMatch(/whitelist .*expected a JSON array of CIDRs/);
  });

  it('keeps a fixed expiry steady across polls, and slides a rolling one forward', async () => {
    pbx.addBan({ value: '192.0.2.1', until: T0 + 2 * HOUR });
    pbx.addBan({ value: '192.0.2.2', rollingMs: HOUR });
    const src = source();
    const first = await src.snapshot({ now: T0 });
    clock = T0 + 20 * 60_000;
    const second = await src.snapshot({ now: clock });
    const exp = (s: SourceSnapshot, c: string) => s.decisions.find((d) => d.cidr === c)!.expiresAt;
    expect([exp(first, '192.0.2.1/32'), exp(second, '192.0.2.1/32')]).toEqual([T0 + 2 * HOUR, T0 + 2 * HOUR]);
    expect([exp(first, '192.0.2.2/32'), exp(second, '192.0.2.2/32')]).toEqual([T0 + HOUR, T0 + 20 * 60_000 + HOUR]);
  });

  it('in daemon mode polls without startup after the first pull and treats new as the whole snapshot', async () => {
    pbx.addBan({ value: '192.0.2.1' });
    pbx.addBan({ value: '192.0.2.2' });
    const src = source({ update_frequency: 0 });
    await src.snapshot({ now: T0, allowDelta: true });
    pbx.removeBan('192.0.2.1');
    pbx.addBan({ value: '192.0.2.3' });
    pbx.requests.length = 0;
    const next = await src.snapshot({ now: T0 + 10_000, allowDelta: true });
    expect(pbx.streamRequests()[0]!.query.has('startup')).toBe(false);
    expect(cidrs(next)).toEqual(['192.0.2.2/32', '192.0.2.3/32']);
  });
});

describe('sources/lapi: failures become SourceErrors naming the source', () => {
  it.each([
    ['a 5xx', { kind: 'status', status: 503, body: 'upstream down' }, /decisions .*: HTTP 503 Service Unavailable: upstream down$/, 'HTTP_503'],
    ['garbage', { kind: 'garbage' }, /decisions .*: malformed response: expected a JSON object/, 'format'],
    ['truncated JSON', { kind: 'truncated' }, /decisions .*: malformed response: .*truncated/, 'format'],
    ['lists that are not arrays', { kind: 'body', body: '{"new":{},"deleted":null}' }, /malformed response: "new" must be an array or null/, 'format'],
    ['a connection reset mid-body', { kind: 'reset' }, /decisions .*: connection dropped before the response was complete \(ECONNRESET\)$/, 'ECONNRESET'],
  ] as const)('on %s', async (_n, fault, message, code) => {
    pbx.addBan({ value: '192.0.2.1', scenario: 'x'.repeat(200) });
    pbx.fail(fault);
    const err = await rejection(source().snapshot({ now: T0 }));
    expect(err.message).toMatch(/^source pbx: /);
    expect(err.message).toMatch(message);
    expect(err.code).toBe(code);
    expect(err.message).not.toContain(TOKEN);
  });

  it('times out when the body trickles in past the deadline (the timeout covers the body)', async () => {
    pbx.addBan({ value: '192.0.2.1' });
    pbx.fail({ kind: 'slow', ms: 50 });
    const err = await rejection(source({ timeout: 0.3 }).snapshot({ now: T0 }));
    expect(err.message).toMatch(/^source pbx: decisions .*: timed out after 300ms$/);
    expect(err.code).toBe('timeout');
  });

  it.each([
    ['an HTML page', '<html><body>502 Bad Gateway', /malformed response: expected a JSON object, got "<html><body>502 Bad /],
    ['mismatched brackets in the deleted history', `{"deleted":[${'{"id":1},'.repeat(2000)}{"id":2]`, /malformed response: mismatched '\]' at offset 18019/],
  ])('refuses a body at its first bad byte (%s) and hangs up, without waiting for the rest', async (_n, body, message) => {
    // The response never ends: only reading it as it arrives can answer before the timeout.
    pbx.fail({ kind: 'stall', body });
    const before = pbx.stallsHungUp;
    const err = await rejection(source({ timeout: 20 }).snapshot({ now: T0 }));
    expect(err.code).toBe('format');
    expect(err.message).toMatch(message);
    await vi.waitFor(() => expect(pbx.stallsHungUp).toBe(before + 1));
  });

  it('stops reading past max_response_bytes, with or without Content-Length', async () => {
    for (let i = 1; i <= 40; i++) pbx.addBan({ value: `192.0.2.${100 + i}` });
    const err = await rejection(source({ max_response_bytes: 2048 }).snapshot({ now: T0 }));
    expect(err.message).toMatch(/response larger than max_response_bytes \(2048 bytes\)/);
    const chunked = await FakeMikoPbx.start({ tokens: [TOKEN], now: () => clock, chunked: true });
    try {
      for (let i = 1; i <= 40; i++) chunked.addBan({ value: `192.0.2.${100 + i}` });
      const cfg = lapiSourceSchema.parse({ name: 'pbx', type: 'mikopbx', api_url: chunked.url, api_key: TOKEN, max_response_bytes: 2048 });
      const err2 = await rejection(createLapiSource(cfg, { log: captureLog().log, userAgent: USER_AGENT }).snapshot({ now: T0 }));
      expect(err2.code).toBe('too_large');
      expect(chunked.streamRequests()[0]!.headers['user-agent']).toBe(USER_AGENT);
      // The same source reads it when the bound allows.
      const ok = await createLapiSource({ ...cfg, max_response_bytes: 1024 * 1024 }, { log: captureLog().log, userAgent: USER_AGENT }).snapshot({ now: T0 });
      expect(ok.decisions).toHaveLength(40);
    } finally {
      for (let i = 1; i <= 40; i++) pbx.removeBan(`192.0.2.${100 + i}`);
      await chunked.close();
    }
  });

  it('fails with cannot connect when nothing listens', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const cfg = lapiSourceSchema.parse({ name: 'down', type: 'lapi', api_url: `http://127.0.0.1:${port}/`, api_key: TOKEN });
    const err = await rejection(createLapiSource(cfg, { log: captureLog().log, userAgent: USER_AGENT }).snapshot({ now: T0 }));
    expect(err.message).toBe(`source down: decisions http://127.0.0.1:${port}/: cannot connect (ECONNREFUSED)`);
  });

  it('stops when the caller aborts', async () => {
    pbx.fail({ kind: 'slow', ms: 50 });
    const ctl = new AbortController();
    const p = source().snapshot({ now: T0, signal: ctl.signal });
    setTimeout(() => ctl.abort(), 20);
    expect((await rejection(p)).code).toBe('aborted');
  });
});

describe('sources/lapi: payloads', () => {
  it('accepts null lists', async () => {
    pbx.fail({ kind: 'body', body: '{"new":null,"deleted":null}' });
    const snap = await source().snapshot({ now: T0 });
    expect(snap).toMatchObject({ decisions: [], skipped: 0, deletedCount: 0, kind: 'full' });
  });

  it('skips and counts bad items without failing the snapshot', async () => {
    const good = { duration: '1h', id: 1, origin: 'mikopbx', scenario: 's', scope: 'Ip', type: 'ban', value: '192.0.2.1' };
    const body = JSON.stringify({
      new: [good, { ...good, id: 2, value: 'not-an-ip' }, { ...good, id: 3, duration: '1 hour' }, { ...good, id: 4, value: undefined }, 'junk'],
      deleted: null,
    });
    pbx.fail({ kind: 'body', body });
    const snap = await source().snapshot({ now: T0 });
    expect(cidrs(snap)).toEqual(['192.0.2.1/32']);
    expect(snap.skipped).toBe(4);
    expect(snap.skippedSamples).toHaveLength(4);
    expect(snap.skippedSamples[0]).toMatch(/^new\[1\]: value "not-an-ip"/);
  });
});
