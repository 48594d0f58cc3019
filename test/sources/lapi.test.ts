/**
 * The LAPI source against the real CrowdSec LAPI (Debian's `crowdsec`,
 * started per suite by scripts/lapi.sh), plus the config schema and the
 * delta merge against a scripted server.
 */
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SourceError } from '../../src/core/errors.js';
import { createLapiSource, lapiSourceSchema } from '../../src/sources/lapi.js';
import type { DecisionSource, SourceSnapshot } from '../../src/sources/source.js';
import { USER_AGENT, VERSION } from '../../src/version.js';
import { captureLog, lapiAvailable, startLapi, type StartedLapi } from '../helpers/lapi.js';

const available = lapiAvailable();
const HOUR = 3_600_000;

function source(input: Record<string, unknown>, log = captureLog().log): DecisionSource {
  return createLapiSource(lapiSourceSchema.parse({ name: 'lapi-real', type: 'lapi', ...input }), { log, userAgent: USER_AGENT });
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

/** Forwards to `target` and records each request and the answer: what the client really sent and got. */
interface Recorder {
  url: string;
  seen: Array<{ path: string; query: URLSearchParams; headers: IncomingHttpHeaders; status: number; body: string }>;
  failNext: number;
  close(): Promise<void>;
}

async function recordingProxy(target: string): Promise<Recorder> {
  const rec: Recorder = { url: '', seen: [], failNext: 0, close: async () => undefined };
  const server: Server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', target);
    const entry = { path: u.pathname, query: u.searchParams, headers: req.headers, status: 0, body: '' };
    rec.seen.push(entry);
    if (rec.failNext > 0) {
      rec.failNext--;
      entry.status = 502;
      return void res.writeHead(502).end('bad gateway');
    }
    const up = request(u, { method: req.method, headers: { ...req.headers, host: u.host } }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => {
        entry.status = r.statusCode ?? 0;
        entry.body = Buffer.concat(chunks).toString('utf8');
        res.writeHead(entry.status, { 'content-type': String(r.headers['content-type'] ?? 'application/json') }).end(entry.body);
      });
    });
    up.on('error', () => res.writeHead(502).end());
    up.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  rec.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  rec.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return rec;
}

describe('test/helpers/lapi: availability', () => {
  it('reports the LAPI as unavailable when crowdsec is missing, and throws instead in CI', () => {
    expect(lapiAvailable({ PATH: '/nonexistent' })).toBe(false);
    expect(() => lapiAvailable({ PATH: '/nonexistent', CI: 'true' })).toThrow(/crowdsec, cscli, curl, openssl not installed.*never skipped in CI/);
  });
});

describe('sources/lapi: config schema', () => {
  const base = { name: 's', type: 'lapi', api_url: 'http://127.0.0.1:8080' };

  it('fills CrowdSec bouncer defaults and normalises the URL', () => {
    const c = lapiSourceSchema.parse({ ...base, api_key: 'k' });
    expect(c).toMatchObject({
      api_url: 'http://127.0.0.1:8080/',
      auth: 'api_key',
      insecure_skip_verify: false,
      timeout: 30_000,
      max_response_bytes: 512 * 1024 * 1024,
      update_frequency: 10_000,
      resync_frequency: 600_000,
      supported_decisions_types: ['ban'],
      scopes: ['ip', 'range'],
      origins: [],
    });
    expect(c.whitelist).toBeUndefined();
  });

  it.each([
    ['neither key nor certificate', {}, 'api_key', /expected api_key or api_key_file/],
    ['both key forms', { api_key: 'k', api_key_file: '/k' }, 'api_key_file', /either api_key or api_key_file/],
    ['a certificate without its key', { api_key: 'k', cert_path: '/c.pem' }, 'key_path', /cert_path and key_path go together/],
    ['a bad URL', { api_key: 'k', api_url: 'lapi:8080' }, 'api_url', /expected an http:\/\/ or https:\/\/ URL/],
    ['a bad duration', { api_key: 'k', timeout: '10 seconds' }, 'timeout', /expected a duration like "90s"/],
    ['an unknown key', { api_key: 'k', api_token: 'x' }, '', /api_token/],
  ])('refuses %s, naming the key', (_n, extra, key, message) => {
    const r = lapiSourceSchema.safeParse({ ...base, ...extra });
    expect(r.success).toBe(false);
    const issue = r.error!.issues[0]!;
    if (key) expect(issue.path).toEqual([key]);
    expect(`${issue.message} ${JSON.stringify(issue)}`).toMatch(message);
  });

  it('accepts mTLS without an API key', () => {
    expect(lapiSourceSchema.safeParse({ ...base, api_url: 'https://lapi:8080/', cert_path: '/c.pem', key_path: '/k.pem' }).success).toBe(true);
  });
});

describe.skipIf(!available)('sources/lapi against the real CrowdSec LAPI', () => {
  let lapi: StartedLapi;
  let proxy: Recorder;

  beforeAll(async () => {
    lapi = await startLapi();
    proxy = await recordingProxy(lapi.url);
    await lapi.addDecision({ ip: '192.0.2.10', duration: '4h', reason: 'test-v4' });
    await lapi.addDecision({ ip: '192.0.2.10', duration: '1h', reason: 'test-v4-shorter' });
    await lapi.addDecision({ ip: '2001:db8::10', duration: '2h', reason: 'test-v6' });
    await lapi.addDecision({ range: '198.51.100.0/24', duration: '3h', reason: 'test-range' });
    await lapi.addDecision({ range: '2001:db8:abcd::/48', duration: '1h', reason: 'test-range6' });
    await lapi.addDecision({ ip: '192.0.2.20', duration: '1h', type: 'captcha', reason: 'test-captcha' });
    await lapi.addDecision({ scope: 'Ip', value: '192.0.2.30/32', duration: '1h', reason: 'test-ip-with-prefix' });
    await lapi.addDecision({ ip: '192.0.2.40', duration: '-1s', reason: 'test-expired' });
    await lapi.importDecisions([{ value: '203.0.113.50', duration: '5h', reason: 'test-import' }], 'Ip');
  });

  afterAll(async () => {
    await proxy?.close();
    await lapi?.stop();
  });

  it('returns every active ban of a startup snapshot: IPv4, IPv6, ranges; captcha and expired absent', async () => {
    const now = Date.now();
    const snap = await source({ api_url: lapi.url, api_key: lapi.apiKey }).snapshot({ now });
    expect(snap.kind).toBe('full');
    expect(cidrs(snap)).toEqual(['192.0.2.10/32', '192.0.2.30/32', '198.51.100.0/24', '2001:db8:abcd::/48', '2001:db8::10/128', '203.0.113.50/32'].sort());
    // The longer of the two decisions on 192.0.2.10 wins; expiries are absolute.
    const v4 = snap.decisions.find((d) => d.cidr === '192.0.2.10/32')!;
    expect(v4.expiresAt).toBeGreaterThan(now + 3.9 * HOUR);
    expect(v4.expiresAt).toBeLessThanOrEqual(now + 4 * HOUR);
    expect(v4).toMatchObject({ source: 'lapi-real', origin: 'cscli', originClass: 'manual', scope: 'ip', type: 'ban', family: 4 });
    expect(snap.decisions.find((d) => d.cidr === '203.0.113.50/32')).toMatchObject({ origin: 'cscli-import', originClass: 'list' });
    expect(snap.deletedCount).toBeGreaterThanOrEqual(1); // the expired decision, counted not kept
    expect(snap.skipped).toBe(0);
    expect(snap.bytes).toBeGreaterThan(0);
  });

  it('keeps captcha decisions when supported_decisions_types asks for them', async () => {
    const snap = await source({ api_url: lapi.url, api_key: lapi.apiKey, supported_decisions_types: ['ban', 'Captcha'] }).snapshot({ now: Date.now() });
    expect(snap.decisions.find((d) => d.cidr === '192.0.2.20/32')).toMatchObject({ type: 'captcha' });
  });

  it('fails with a SourceError naming the source and the 403 on a wrong key, without the key', async () => {
    const wrong = 'wrong-key-0123456789abcdef';
    const cap = captureLog();
    const err = await rejection(source({ api_url: lapi.url, api_key: wrong }, cap.log).snapshot({ now: Date.now() }));
    expect(err.message).toMatch(/^source lapi-real: decisions http:\/\/127\.0\.0\.1:\d+\/: HTTP 403 Forbidden: access forbidden/);
    expect(err.source).toBe('lapi-real');
    expect(err.code).toBe('HTTP_403');
    expect(err.message).not.toContain(wrong);
    expect(cap.text()).not.toContain(wrong);
  });

  it('pushes the filters down as query parameters, with dedup=false when filtering by origin', async () => {
    const src = source({ api_url: proxy.url, api_key: lapi.apiKey, scopes: ['Range'], origins: ['cscli'], scenarios_containing: ['range'], scenarios_not_containing: ['range6'] });
    proxy.seen.length = 0;
    const snap = await src.snapshot({ now: Date.now() });
    const q = proxy.seen[0]!.query;
    expect(proxy.seen[0]!.path).toBe('/v1/decisions/stream');
    expect(Object.fromEntries(q)).toEqual({ startup: 'true', scopes: 'range', origins: 'cscli', dedup: 'false', scenarios_containing: 'range', scenarios_not_containing: 'range6' });
    // The LAPI applied them: only the IPv4 range from cscli is left.
    expect(cidrs(snap)).toEqual(['198.51.100.0/24']);
  });

  it('filters by origin on the LAPI: only the imported decision comes back', async () => {
    const snap = await source({ api_url: lapi.url, api_key: lapi.apiKey, origins: ['cscli-import'] }).snapshot({ now: Date.now() });
    expect(cidrs(snap)).toEqual(['203.0.113.50/32']);
  });

  it('identifies itself: cscli bouncers list shows type crowdsec-cloud-bouncer and our version', async () => {
    const key = await lapi.addBouncer('ua-check');
    await source({ api_url: lapi.url, api_key: key }).snapshot({ now: Date.now() });
    const row = (await lapi.bouncers()).find((b) => b.name === 'ua-check');
    expect(row).toMatchObject({ type: 'crowdsec-cloud-bouncer', version: `v${VERSION}`, auth_type: 'api-key' });
  });

  describe('daemon delta mode', () => {
    // Its own bouncer key: the LAPI tracks the last pull per bouncer.
    let src: DecisionSource;
    const poll = () => src.snapshot({ now: Date.now(), allowDelta: true });
    const lastQuery = () => proxy.seen.filter((s) => s.path === '/v1/decisions/stream').at(-1)!;

    beforeAll(async () => {
      const key = await lapi.addBouncer('delta-check');
      src = source({ api_url: proxy.url, api_key: key, update_frequency: 0 });
    });

    it('starts from a full snapshot, then merges additions from deltas', async () => {
      const first = await poll();
      expect(first.kind).toBe('full');
      expect(lastQuery().query.get('startup')).toBe('true');
      await lapi.addDecision({ ip: '192.0.2.77', duration: '2h', reason: 'delta-add' });
      const second = await poll();
      expect(second.kind).toBe('delta');
      expect(lastQuery().query.has('startup')).toBe(false);
      expect(cidrs(second)).toEqual([...cidrs(first), '192.0.2.77/32'].sort());
    });

    it('applies a deletion once and stays idempotent while the LAPI repeats it', async () => {
      const before = cidrs(await poll());
      await lapi.deleteDecision({ ip: '192.0.2.77' });
      const a = await poll();
      const b = await poll();
      const c = await poll();
      const expected = before.filter((x) => x !== '192.0.2.77/32');
      for (const s of [a, b, c]) expect(cidrs(s)).toEqual(expected);
    });

    it('keeps a ban lifted and set again between polls', async () => {
      await lapi.deleteDecision({ ip: '192.0.2.10' });
      const lifted = await poll();
      expect(cidrs(lifted)).not.toContain('192.0.2.10/32');
      await lapi.addDecision({ ip: '192.0.2.10', duration: '4h', reason: 'set-again' });
      const again = await poll();
      const later = await poll();
      expect(cidrs(again)).toContain('192.0.2.10/32');
      expect(cidrs(later)).toContain('192.0.2.10/32');
    });

    it('resyncs from a full snapshot every resync_frequency', async () => {
      const s = source({ api_url: proxy.url, api_key: await lapi.addBouncer('resync-check'), update_frequency: 0, resync_frequency: '1m' });
      const t0 = Date.now();
      await s.snapshot({ now: t0, allowDelta: true });
      expect((await s.snapshot({ now: t0 + 30_000, allowDelta: true })).kind).toBe('delta');
      const resynced = await s.snapshot({ now: t0 + 61_000, allowDelta: true });
      expect(resynced.kind).toBe('full');
      expect(lastQuery().query.get('startup')).toBe('true');
    });

    it('resyncs from a full snapshot after an error', async () => {
      await poll();
      proxy.failNext = 1;
      await rejection(poll());
      const after = await poll();
      expect(after.kind).toBe('full');
      expect(lastQuery().query.get('startup')).toBe('true');
    });
  });
});

describe.skipIf(!available)('sources/lapi against the real LAPI over TLS, with client certificates', () => {
  let lapi: StartedLapi;

  beforeAll(async () => {
    lapi = await startLapi({ tls: 'mtls' });
    await lapi.addDecision({ ip: '192.0.2.10', duration: '4h' });
  });

  afterAll(async () => {
    await lapi?.stop();
  });

  it('verifies the LAPI certificate against ca_cert_path', async () => {
    const snap = await source({ api_url: lapi.url, api_key: lapi.apiKey, ca_cert_path: lapi.tls!.ca }).snapshot({ now: Date.now() });
    expect(cidrs(snap)).toEqual(['192.0.2.10/32']);
  });

  it('refuses a certificate it cannot verify, by default', async () => {
    const err = await rejection(source({ api_url: lapi.url, api_key: lapi.apiKey }).snapshot({ now: Date.now() }));
    expect(err.message).toMatch(/^source lapi-real: decisions https:\/\/127\.0\.0\.1:\d+\/: TLS certificate not trusted \((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\)/);
  });

  it('says the CA in ca_cert_path did not sign the certificate, when another certificate is given there', async () => {
    const err = await rejection(source({ api_url: lapi.url, api_key: lapi.apiKey, ca_cert_path: lapi.tls!.bouncerCert }).snapshot({ now: Date.now() }));
    expect(err.message).toMatch(/TLS certificate not trusted \(\w+\); the CA in ca_cert_path \S+ did not sign it$/);
  });

  it('says the certificate does not name the host when api_url names another one, not that the CA is wrong', async () => {
    // The certificate names 127.0.0.1 and localhost; the IPv4-mapped address reaches the same listener.
    const url = lapi.url.replace('127.0.0.1', '[::ffff:127.0.0.1]');
    const err = await rejection(source({ api_url: url, api_key: lapi.apiKey, ca_cert_path: lapi.tls!.ca }).snapshot({ now: Date.now() }));
    expect(err.message).toMatch(/TLS certificate not trusted \(ERR_TLS_CERT_ALTNAME_INVALID\); the server certificate does not name the host of api_url/);
    expect(err.message).not.toMatch(/did not sign it/);
  });

  it('refuses a ca_cert_path or key_path that holds no PEM of its kind, before connecting', async () => {
    const notCa = await rejection(source({ api_url: lapi.url, api_key: lapi.apiKey, ca_cert_path: lapi.tls!.bouncerKey }).snapshot({ now: Date.now() }));
    const notKey = await rejection(source({ api_url: lapi.url, ca_cert_path: lapi.tls!.ca, cert_path: lapi.tls!.bouncerCert, key_path: lapi.tls!.bouncerCert }).snapshot({ now: Date.now() }));
    expect(notCa.message).toMatch(/^source lapi-real: ca_cert_path \S+ holds no PEM certificate$/);
    expect(notKey.message).toMatch(/^source lapi-real: key_path \S+ holds no PEM private key$/);
  });

  it('skips verification with insecure_skip_verify, and warns once', async () => {
    const cap = captureLog();
    const src = source({ api_url: lapi.url, api_key: lapi.apiKey, insecure_skip_verify: true }, cap.log);
    await src.snapshot({ now: Date.now() });
    const snap = await src.snapshot({ now: Date.now() });
    expect(cidrs(snap)).toEqual(['192.0.2.10/32']);
    expect(cap.lines().filter((l) => l.level === 40 && String(l.msg).includes('insecure_skip_verify'))).toHaveLength(1);
    await src.close?.();
  });

  it('authenticates with a client certificate alone (mTLS), registered by its CN', async () => {
    const src = source({ api_url: lapi.url, ca_cert_path: lapi.tls!.ca, cert_path: lapi.tls!.bouncerCert, key_path: lapi.tls!.bouncerKey });
    const snap = await src.snapshot({ now: Date.now() });
    expect(cidrs(snap)).toEqual(['192.0.2.10/32']);
    const row = (await lapi.bouncers()).find((b) => b.name.startsWith('cloud-bouncer-mtls@'));
    expect(row).toMatchObject({ auth_type: 'tls', type: 'crowdsec-cloud-bouncer', version: `v${VERSION}` });
    await src.close?.();
  });

  it('is refused with 403 when the certificate OU is not a bouncer OU', async () => {
    const src = source({ api_url: lapi.url, ca_cert_path: lapi.tls!.ca, cert_path: lapi.tls!.agentCert, key_path: lapi.tls!.agentKey });
    const err = await rejection(src.snapshot({ now: Date.now() }));
    expect(err.code).toBe('HTTP_403');
  });

  it('fails the TLS handshake with a certificate from a CA the LAPI does not trust', async () => {
    const src = source({ api_url: lapi.url, ca_cert_path: lapi.tls!.ca, cert_path: lapi.tls!.rogueCert, key_path: lapi.tls!.rogueKey });
    const err = await rejection(src.snapshot({ now: Date.now() }));
    expect(err.message).toMatch(/^source lapi-real: decisions https:\/\/127\.0\.0\.1:\d+\/: (TLS handshake failed|.*ECONNRESET)/);
  });
});

/** A stream endpoint that answers what the test scripts: for the merge rules that need a controlled clock. */
describe('sources/lapi delta merge (scripted server)', () => {
  let server: Server;
  let url = '';
  let answer = '{"new":null,"deleted":null}';
  const queries: URLSearchParams[] = [];
  const T0 = Date.UTC(2026, 10, 23, 8, 0, 0);
  const item = (value: string, duration: string, id: number) => ({ duration, id, origin: 'crowdsec', scenario: 'crowdsecurity/ssh-bf', scope: 'Ip', type: 'ban', value });

  beforeAll(async () => {
    server = createServer((req, res) => {
      queries.push(new URL(req.url ?? '/', 'http://x').searchParams);
      res.writeHead(200, { 'content-type': 'application/json' }).end(answer);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });

  afterAll(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );

  it('drops merged decisions once their expiry passes, without a deletion from the LAPI', async () => {
    const src = source({ api_url: url, api_key: 'k-123456', update_frequency: 0 });
    answer = JSON.stringify({ new: [item('192.0.2.1', '5m', 1), item('192.0.2.2', '4h', 2)], deleted: null });
    await src.snapshot({ now: T0, allowDelta: true });
    answer = '{"new":null,"deleted":null}';
    // 6 min later: past the first expiry, before the 10 min resync.
    const later = await src.snapshot({ now: T0 + 6 * 60_000, allowDelta: true });
    expect(later.kind).toBe('delta');
    expect(cidrs(later)).toEqual(['192.0.2.2/32']);
  });

  it('polls at most once per update_frequency and answers from memory in between', async () => {
    const src = source({ api_url: url, api_key: 'k-123456', update_frequency: '30s' });
    answer = JSON.stringify({ new: [item('192.0.2.1', '1h', 1)], deleted: null });
    queries.length = 0;
    await src.snapshot({ now: T0, allowDelta: true });
    const cached = await src.snapshot({ now: T0 + 10_000, allowDelta: true });
    expect(queries).toHaveLength(1);
    expect(cidrs(cached)).toEqual(['192.0.2.1/32']);
    await src.snapshot({ now: T0 + 31_000, allowDelta: true });
    expect(queries).toHaveLength(2);
  });

  it('asks for the full snapshot on every call without allowDelta', async () => {
    const src = source({ api_url: url, api_key: 'k-123456' });
    queries.length = 0;
    await src.snapshot({ now: T0 });
    await src.snapshot({ now: T0 + 60_000 });
    expect(queries.map((q) => q.get('startup'))).toEqual(['true', 'true']);
  });

  it('applies a deletion only to the decision it names: a repeated old deletion spares a newer ban on the same value', async () => {
    const src = source({ api_url: url, api_key: 'k-123456', update_frequency: 0 });
    answer = JSON.stringify({ new: [item('192.0.2.1', '4h', 1)], deleted: null });
    await src.snapshot({ now: T0, allowDelta: true });
    answer = JSON.stringify({ new: null, deleted: [item('192.0.2.1', '-1s', 1)] });
    expect(cidrs(await src.snapshot({ now: T0 + 1_000, allowDelta: true }))).toEqual([]);
    // Lifted and set again (id 2) in the same window: the deletion of id 1 comes with it, then once more alone.
    answer = JSON.stringify({ new: [item('192.0.2.1', '4h', 2)], deleted: [item('192.0.2.1', '-2s', 1)] });
    expect(cidrs(await src.snapshot({ now: T0 + 2_000, allowDelta: true }))).toEqual(['192.0.2.1/32']);
    answer = JSON.stringify({ new: null, deleted: [item('192.0.2.1', '-3s', 1)] });
    expect(cidrs(await src.snapshot({ now: T0 + 3_000, allowDelta: true }))).toEqual(['192.0.2.1/32']);
    // A deletion of the current decision still removes it.
    answer = JSON.stringify({ new: null, deleted: [item('192.0.2.1', '-1s', 2)] });
    expect(cidrs(await src.snapshot({ now: T0 + 4_000, allowDelta: true }))).toEqual([]);
  });

  it('keeps the longer expiry when a delta repeats a value with a shorter decision', async () => {
    const src = source({ api_url: url, api_key: 'k-123456', update_frequency: 0 });
    answer = JSON.stringify({ new: [item('192.0.2.1', '4h', 1)], deleted: null });
    await src.snapshot({ now: T0, allowDelta: true });
    answer = JSON.stringify({ new: [item('192.0.2.1', '1h', 2)], deleted: null });
    const s = await src.snapshot({ now: T0, allowDelta: true });
    expect(s.decisions[0]!.expiresAt).toBe(T0 + 4 * HOUR);
  });
});
