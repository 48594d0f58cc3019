/**
 * The CrowdSec LAPI / MikoPBX `firewall-bouncer` stream client.
 *
 * A job asks for the full snapshot (`GET <api_url>/v1/decisions/stream?startup=true`)
 * on every pass. A daemon (`allowDelta`) may poll deltas after a full
 * snapshot and merge them into the last one, but resyncs from a full snapshot
 * every `resync_frequency` and after any error: lost or repeated deltas are a
 * known source of desync (cs-firewall-bouncer #243, #506; crowdsec #1158).
 *
 * Filters are pushed down as query parameters and applied again locally, as
 * the LAPI does not filter on decision type. `dedup=false` goes with an
 * origin filter: the LAPI dedups across origins before filtering, which hides
 * IPs (crowdsec #3373).
 *
 * Every failure (connection, TLS, timeout, non-200, too large, malformed
 * body) becomes a `SourceError` naming the source; the pass then runs
 * fail-static. The API key is sent in a header only: it never appears in a
 * message or a log line.
 *
 * Several instances sharing one key steal each other's deltas on LAPIs that
 * track the last pull per key (crowdsec #1602, #3255): give each instance its
 * own key, or run jobs, which always read full snapshots.
 */
import { readFile } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Logger } from 'pino';
import { z } from 'zod';
import { StreamBodyReader, StreamFormatError, type ParseResult } from '../core/decisions.js';
import { SourceError, errorLine } from '../core/errors.js';
import type { Decision } from '../core/types.js';
import { registerSecret, scrub } from '../log.js';
import { duration } from '../schema.js';
import type { DecisionFilters, DecisionSource, SnapshotOptions, SourceSnapshot } from './source.js';

export const SOURCE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

const nonEmpty = z.string().trim().min(1, 'expected a non-empty string');

/** Filter keys shared by every source type (CrowdSec bouncer names). */
export const filterKeys = {
  /** Decision types kept (`ban`, `captcha`, ...); case-insensitive. */
  supported_decisions_types: z.array(nonEmpty).min(1, 'expected at least one decision type').default(['ban']),
  /** Scopes kept; case-insensitive (`Ip`/`ip` both occur on the wire). */
  scopes: z
    .array(
      nonEmpty.refine((v) => ['ip', 'range'].includes(v.toLowerCase()), {
        // Country and AS decisions name no address a firewall rule can hold; accepted, they were only counted as skipped.
        error: (i) => `expected ip or range (country and AS decisions name no addresses a rule can hold), got ${JSON.stringify(i.input)}`,
      }),
    )
    .min(1, 'expected at least one scope')
    .default(['ip', 'range']),
  /** Exact origins kept; empty keeps all. */
  origins: z.array(nonEmpty).default([]),
  scenarios_containing: z.array(nonEmpty).default([]),
  scenarios_not_containing: z.array(nonEmpty).default([]),
};

export interface FilterConfig {
  supported_decisions_types: string[];
  scopes: string[];
  origins: string[];
  scenarios_containing: string[];
  scenarios_not_containing: string[];
}

export function filtersFromConfig(cfg: FilterConfig): DecisionFilters {
  return {
    types: cfg.supported_decisions_types.map((t) => t.toLowerCase()),
    scopes: cfg.scopes.map((s) => s.toLowerCase()),
    origins: [...cfg.origins],
    scenariosContaining: [...cfg.scenarios_containing],
    scenariosNotContaining: [...cfg.scenarios_not_containing],
  };
}

const MiB = 1024 * 1024;
const MAX_TIMER_MS = 2_147_483_647;

const httpUrl = z.string().transform((v, ctx) => {
  let u: URL;
  try {
    u = new URL(v.trim());
  } catch {
    ctx.addIssue({ code: 'custom', message: `expected an http(s) URL like "http://127.0.0.1:8080/", got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    ctx.addIssue({ code: 'custom', message: `expected an http:// or https:// URL, got ${JSON.stringify(u.protocol)}` });
    return z.NEVER;
  }
  if (u.search || u.hash) {
    ctx.addIssue({ code: 'custom', message: 'expected a base URL without query or fragment' });
    return z.NEVER;
  }
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u.href;
});

export const lapiSourceSchema = z
  .object({
    name: z.string().regex(SOURCE_NAME_PATTERN, 'expected a name of letters, digits, dot, dash or underscore (at most 63)'),
    type: z.enum(['lapi', 'mikopbx']),
    /** LAPI root (`http://127.0.0.1:8080/`) or MikoPBX base (`https://pbx/pbxcore/api/v3/firewall-bouncer/`). */
    api_url: httpUrl,
    api_key: nonEmpty.optional(),
    /** A file holding the key (Kubernetes/Docker secret); read on every request, so rotation needs no restart. */
    api_key_file: nonEmpty.optional(),
    /** `api_key` sends `X-Api-Key`; `bearer` sends `Authorization: Bearer` (MikoPBX accepts both). */
    auth: z.enum(['api_key', 'bearer']).default('api_key'),
    insecure_skip_verify: z.boolean().default(false),
    /** Client certificate and key (PEM) for mTLS; the LAPI then needs no API key. */
    cert_path: nonEmpty.optional(),
    key_path: nonEmpty.optional(),
    /** CA bundle (PEM) that signed the LAPI's certificate. */
    ca_cert_path: nonEmpty.optional(),
    /** Whole request: connect, headers and body. */
    timeout: duration().default(30_000),
    /**
     * Largest response body read. The `deleted` history of a startup snapshot
     * is dropped as it arrives; the rest (100k decisions: about 14 MB) is held.
     */
    max_response_bytes: z
      .number()
      .int()
      .min(1024)
      .max(4 * 1024 * MiB)
      .default(512 * MiB),
    /** Daemon: the source polls at most this often; passes in between reuse the last answer. */
    update_frequency: duration().default(10_000),
    /** Daemon: a full `startup=true` snapshot at least this often. */
    resync_frequency: duration().default(600_000),
    ...filterKeys,
    /** Fetch `<api_url>/v1/whitelist` (a flat JSON array). Default: true for mikopbx, false for lapi. */
    whitelist: z.boolean().optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const mtls = c.cert_path !== undefined && c.key_path !== undefined;
    if (c.api_key !== undefined && c.api_key_file !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['api_key_file'], message: 'set either api_key or api_key_file, not both' });
    } else if (c.api_key === undefined && c.api_key_file === undefined && !mtls) {
      ctx.addIssue({ code: 'custom', path: ['api_key'], message: 'expected api_key or api_key_file (or cert_path and key_path for mTLS), got neither' });
    }
    if ((c.cert_path === undefined) !== (c.key_path === undefined)) {
      ctx.addIssue({ code: 'custom', path: [c.cert_path === undefined ? 'cert_path' : 'key_path'], message: 'cert_path and key_path go together (mTLS client certificate and its key)' });
    }
    if (c.resync_frequency < c.update_frequency) {
      ctx.addIssue({ code: 'custom', path: ['resync_frequency'], message: `expected at least update_frequency (${c.update_frequency / 1000}s)` });
    }
    if (c.timeout <= 0) ctx.addIssue({ code: 'custom', path: ['timeout'], message: 'expected a duration above 0' });
    // Node.js fires a timer longer than 2^31-1 ms after 1 ms (TimeoutOverflowWarning).
    if (c.timeout > MAX_TIMER_MS) ctx.addIssue({ code: 'custom', path: ['timeout'], message: `expected at most ${MAX_TIMER_MS / 1000}s (the longest timer Node.js can set), got ${c.timeout / 1000}s` });
  });

export type LapiSourceConfig = z.infer<typeof lapiSourceSchema>;

export interface LapiSourceDeps {
  log: Logger;
  /** `crowdsec-cloud-bouncer/v<version>`: the LAPI records it as the bouncer's type and version. */
  userAgent: string;
}

// ---------------------------------------------------------------------------
// HTTP: one GET with a deadline over the whole exchange and a bound on the body.

interface HttpResult {
  status: number;
  statusText: string;
  /** The body, unless a 200 body went to `sink`. */
  body: Buffer;
  /** Bytes of the body received. */
  size: number;
}

interface GetOptions {
  headers: Record<string, string>;
  agent: HttpAgent;
  timeoutMs: number;
  maxBytes: number;
  signal?: AbortSignal | undefined;
  /**
   * Takes a 200 body chunk by chunk as it arrives instead of it being held.
   * An error it throws ends the request at once (the connection is dropped).
   */
  sink?: ((chunk: Buffer) => void) | undefined;
}

class TooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`response larger than max_response_bytes (${limit} bytes)`);
    this.name = 'TooLargeError';
  }
}

class DeadlineError extends Error {
  constructor(readonly ms: number) {
    super(`timed out after ${formatMs(ms)}`);
    this.name = 'DeadlineError';
  }
}

class CallerAbortError extends Error {
  constructor() {
    super('aborted');
    this.name = 'CallerAbortError';
  }
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function httpGet(url: URL, opts: GetOptions): Promise<HttpResult> {
  return new Promise<HttpResult>((resolve, reject) => {
    let settled = false;
    let res: IncomingMessage | undefined;
    const finish = (err: Error | undefined, value?: HttpResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) {
        // Destroying with the cause makes sure no late event resolves anything.
        req.destroy();
        res?.destroy();
        reject(err);
      } else resolve(value!);
    };
    const onAbort = () => finish(new CallerAbortError());
    const timer = setTimeout(() => finish(new DeadlineError(opts.timeoutMs)), opts.timeoutMs);
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, { method: 'GET', headers: opts.headers, agent: opts.agent });
    req.on('error', (err) => finish(err));
    req.on('response', (r) => {
      res = r;
      const status = r.statusCode ?? 0;
      // Error bodies are only read for their message.
      const limit = status === 200 ? opts.maxBytes : Math.min(opts.maxBytes, 64 * 1024);
      const declared = Number(r.headers['content-length']);
      if (status === 200 && Number.isFinite(declared) && declared > limit) return finish(new TooLargeError(limit));
      const sink = status === 200 ? opts.sink : undefined;
      const chunks: Buffer[] = [];
      let size = 0;
      const result = (): HttpResult => ({ status, statusText: r.statusMessage ?? '', body: Buffer.concat(chunks), size });
      r.on('data', (chunk: Buffer) => {
        if (settled) return;
        size += chunk.length;
        if (size > limit) {
          if (status === 200) return finish(new TooLargeError(limit));
          return finish(undefined, result());
        }
        if (!sink) return void chunks.push(chunk);
        try {
          sink(chunk);
        } catch (err) {
          finish(err as Error);
        }
      });
      r.on('error', (err) => finish(err));
      r.on('close', () => {
        if (!r.complete) finish(Object.assign(new Error('connection closed before the body was complete'), { code: 'ECONNRESET' }));
      });
      r.on('end', () => {
        // A body shorter than its Content-Length means the connection dropped mid-body.
        if (Number.isFinite(declared) && size < declared) {
          return finish(Object.assign(new Error(`connection closed after ${size} of ${declared} bytes`), { code: 'ECONNRESET' }));
        }
        finish(undefined, result());
      });
    });
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    req.end();
  });
}

const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);

/** One line for an error from `httpGet`; never includes request headers. */
function describeHttpError(err: unknown, where: string, caPath?: string): { message: string; code: string } {
  if (err instanceof DeadlineError) return { message: `${where}: ${err.message}`, code: 'timeout' };
  if (err instanceof CallerAbortError) return { message: `${where}: aborted`, code: 'aborted' };
  if (err instanceof TooLargeError) return { message: `${where}: ${err.message}`, code: 'too_large' };
  const e = err as NodeJS.ErrnoException & { reason?: string };
  const code = typeof e?.code === 'string' ? e.code : 'ERROR';
  if (TLS_CODES.has(code)) {
    const hint =
      code === 'CERT_HAS_EXPIRED'
        ? 'the server certificate has expired'
        : code === 'CERT_NOT_YET_VALID'
          ? 'the server certificate is not valid yet (check the clocks)'
          : code === 'ERR_TLS_CERT_ALTNAME_INVALID'
            ? `the server certificate does not name the host of api_url${e.reason ? ` (${firstLine(e.reason)})` : ''}`
            : caPath
              ? `the CA in ca_cert_path ${caPath} did not sign it`
              : 'set ca_cert_path to the CA that signed it';
    return { message: `${where}: TLS certificate not trusted (${code}); ${hint}`, code };
  }
  if (code.startsWith('ERR_SSL') || /alert|handshake|certificate/i.test(e?.message ?? '')) {
    return { message: `${where}: TLS handshake failed (${code}: ${firstLine(e.message)})`, code };
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    return { message: `${where}: connection dropped before the response was complete (${code})`, code };
  }
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return { message: `${where}: cannot connect (${code})`, code };
  }
  return { message: `${where}: ${firstLine(e?.message ?? String(err))}${code !== 'ERROR' && !(e?.message ?? '').includes(code) ? ` (${code})` : ''}`, code };
}

function firstLine(s: string): string {
  const line = s.split('\n')[0] ?? '';
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** `{"message": "access forbidden"}` → `access forbidden`; anything else, a short printable excerpt. */
function serverMessage(body: Buffer): string {
  const text = body.toString('utf8').trim();
  if (!text) return '';
  try {
    const j = JSON.parse(text) as unknown;
    if (j && typeof j === 'object' && typeof (j as { message?: unknown }).message === 'string') return firstLine((j as { message: string }).message);
  } catch {
    // not JSON: fall through
  }
  return firstLine(text.replace(/[^\x20-\x7e]+/g, ' '));
}

// ---------------------------------------------------------------------------

interface TlsMaterial {
  ca?: Buffer | undefined;
  cert?: Buffer | undefined;
  key?: Buffer | undefined;
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.equals(b));
}

/** Decisions merged from deltas, keyed by (scope, type, CIDR) as the LAPI dedups them. */
interface DeltaState {
  decisions: Map<string, Decision>;
  lastFull: number;
  lastPoll: number;
  whitelist: string[];
}

const keyOf = (d: Decision) => `${d.scope}|${d.type}|${d.cidr}`;

export function createLapiSource(cfg: LapiSourceConfig, deps: LapiSourceDeps): DecisionSource {
  const log = deps.log;
  const name = cfg.name;
  const base = new URL(cfg.api_url);
  const where = `${base.origin}${base.pathname}`;
  const streamUrl = new URL('v1/decisions/stream', base);
  const whitelistUrl = new URL('v1/whitelist', base);
  const filters = filtersFromConfig(cfg);
  const fetchWhitelist = cfg.whitelist ?? cfg.type === 'mikopbx';
  const isHttps = base.protocol === 'https:';
  if (cfg.api_key) registerSecret(cfg.api_key);
  if (isHttps && cfg.insecure_skip_verify) {
    log.warn({ source: name, api_url: where }, 'insecure_skip_verify is set: the TLS certificate of the source is not verified');
  }
  if (!isHttps && (cfg.ca_cert_path || cfg.cert_path)) {
    log.warn({ source: name, api_url: where }, 'ca_cert_path/cert_path are ignored: api_url is not https');
  }

  let tls: TlsMaterial | undefined;
  let agent: HttpAgent | undefined;
  let state: DeltaState | undefined;

  // A message may carry what the server sent back (status line, body): every known secret is taken out here,
  // because it also reaches the plan output, which is not a log line.
  const fail = (message: string, code: string, cause?: unknown): SourceError => new SourceError(name, scrub(message), { cause, code });

  async function readPem(key: 'ca_cert_path' | 'cert_path' | 'key_path'): Promise<Buffer | undefined> {
    const path = cfg[key];
    if (!path || !isHttps) return undefined;
    let pem: Buffer;
    try {
      pem = await readFile(path);
    } catch (err) {
      throw fail(`cannot read ${key} ${path}: ${(err as NodeJS.ErrnoException).code ?? errorLine(err)}`, 'config', err);
    }
    // Node skips what is not PEM without a word; the handshake would then blame the server.
    const want = key === 'key_path' ? /-----BEGIN [A-Z ]*PRIVATE KEY-----/ : /-----BEGIN CERTIFICATE-----/;
    if (!want.test(pem.toString('latin1'))) throw fail(`${key} ${path} holds no PEM ${key === 'key_path' ? 'private key' : 'certificate'}`, 'config');
    return pem;
  }

  /** (Re)builds the agent when the certificate files change (cert-manager renewals), checked on full snapshots. */
  async function ensureAgent(reload: boolean): Promise<HttpAgent> {
    if (agent && !reload) return agent;
    const next: TlsMaterial = { ca: await readPem('ca_cert_path'), cert: await readPem('cert_path'), key: await readPem('key_path') };
    if (agent && tls && sameBytes(tls.ca, next.ca) && sameBytes(tls.cert, next.cert) && sameBytes(tls.key, next.key)) return agent;
    agent?.destroy();
    tls = next;
    // keepAlive: a daemon polls every few seconds; close() releases the sockets.
    agent = isHttps
      ? new HttpsAgent({ keepAlive: true, maxSockets: 2, ca: next.ca, cert: next.cert, key: next.key, rejectUnauthorized: !cfg.insecure_skip_verify })
      : new HttpAgent({ keepAlive: true, maxSockets: 2 });
    return agent;
  }

  async function apiKey(): Promise<string | undefined> {
    if (cfg.api_key !== undefined) return cfg.api_key;
    if (cfg.api_key_file === undefined) return undefined;
    let key: string;
    try {
      key = (await readFile(cfg.api_key_file, 'utf8')).trim();
    } catch (err) {
      throw fail(`cannot read api_key_file ${cfg.api_key_file}: ${(err as NodeJS.ErrnoException).code ?? errorLine(err)}`, 'config', err);
    }
    if (!key) throw fail(`api_key_file ${cfg.api_key_file} is empty`, 'config');
    registerSecret(key);
    return key;
  }

  async function headers(): Promise<Record<string, string>> {
    const h: Record<string, string> = { 'user-agent': deps.userAgent, accept: 'application/json' };
    const key = await apiKey();
    if (key !== undefined) {
      if (cfg.auth === 'bearer') h.authorization = `Bearer ${key}`;
      else h['x-api-key'] = key;
    }
    return h;
  }

  const malformed = (what: string, err: StreamFormatError) => fail(`${what} ${where}: malformed response: ${err.message}`, 'format', err);

  /** A 200 body is returned whole, or handed to `sink` chunk by chunk (then `body` is empty). */
  async function get(url: URL, what: string, hdrs: Record<string, string>, ag: HttpAgent, signal: AbortSignal | undefined, sink?: (chunk: Buffer) => void): Promise<HttpResult> {
    let res: HttpResult;
    try {
      res = await httpGet(url, { headers: hdrs, agent: ag, timeoutMs: cfg.timeout, maxBytes: cfg.max_response_bytes, signal, sink });
    } catch (err) {
      // The sink refused the body at its first bad byte; the rest was not read.
      if (err instanceof StreamFormatError) throw malformed(what, err);
      const d = describeHttpError(err, `${what} ${where}`, cfg.ca_cert_path);
      throw fail(d.message, d.code, err);
    }
    if (res.status !== 200) {
      // A server that echoes the request must not leak the key into our message.
      const secret = hdrs['x-api-key'] ?? hdrs.authorization?.slice('Bearer '.length);
      const msg = secret ? serverMessage(res.body).split(secret).join('[REDACTED]') : serverMessage(res.body);
      const hint = res.status === 401 || res.status === 403 ? ' (check api_key / auth, or the client certificate)' : '';
      throw fail(`${what} ${where}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${msg ? `: ${msg}` : ''}${hint}`, `HTTP_${res.status}`);
    }
    return res;
  }

  async function getWhitelist(hdrs: Record<string, string>, ag: HttpAgent, signal: AbortSignal | undefined): Promise<{ entries: string[]; bytes: number }> {
    const { body } = await get(whitelistUrl, 'whitelist', hdrs, ag, signal);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw fail(`whitelist ${where}: malformed response: not valid JSON (${firstLine((err as Error).message)})`, 'format', err);
    }
    if (parsed === null) return { entries: [], bytes: body.length };
    if (!Array.isArray(parsed)) throw fail(`whitelist ${where}: malformed response: expected a JSON array of CIDRs`, 'format');
    // Non-string entries are passed on (stringified) so the whitelist reports them by value.
    return { entries: parsed.map((e) => (typeof e === 'string' ? e : JSON.stringify(e))), bytes: body.length };
  }

  async function fetchOnce(full: boolean, opts: SnapshotOptions) {
    const ag = await ensureAgent(full);
    const hdrs = await headers();
    const url = new URL(streamUrl);
    // Only the literal `true` counts as startup (`1` and `True` do not).
    if (full) url.searchParams.set('startup', 'true');
    url.searchParams.set('scopes', filters.scopes.join(','));
    if (filters.origins.length > 0) {
      url.searchParams.set('origins', filters.origins.join(','));
      url.searchParams.set('dedup', 'false');
    }
    if (filters.scenariosContaining.length > 0) url.searchParams.set('scenarios_containing', filters.scenariosContaining.join(','));
    if (filters.scenariosNotContaining.length > 0) url.searchParams.set('scenarios_not_containing', filters.scenariosNotContaining.join(','));
    // One failed request cancels the other: the snapshot fails as a whole.
    const ctl = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, ctl.signal]) : ctl.signal;
    const guard = <T>(p: Promise<T>) =>
      p.catch((err: unknown) => {
        ctl.abort();
        throw err;
      });
    // MikoPBX sends the whole snapshot in `new` on every poll, so its `deleted` is never needed.
    const includeDeleted = !full && cfg.type === 'lapi';
    // The body is read as it arrives: the `deleted` history is counted and dropped on the way.
    const reader = new StreamBodyReader({ source: name, now: opts.now, filters, includeDeleted });
    const [res, wl] = await Promise.all([
      guard(get(url, 'decisions', hdrs, ag, signal, (chunk) => reader.push(chunk))),
      fetchWhitelist ? guard(getWhitelist(hdrs, ag, signal)) : Promise.resolve(undefined),
    ]);
    let parsed: ParseResult;
    try {
      parsed = reader.finish();
    } catch (err) {
      if (err instanceof StreamFormatError) throw malformed('decisions', err);
      throw fail(`decisions ${where}: ${errorLine(err)}`, 'format', err);
    }
    return { parsed, whitelist: wl?.entries ?? [], bytes: res.size + (wl?.bytes ?? 0) };
  }

  async function snapshot(opts: SnapshotOptions): Promise<SourceSnapshot> {
    const now = opts.now;
    if (opts.signal?.aborted) throw fail('aborted before the request', 'aborted');
    const delta = opts.allowDelta === true && state !== undefined && now - state.lastFull < cfg.resync_frequency;
    if (delta && state && now - state.lastPoll < cfg.update_frequency) {
      // Polled moments ago: answer from memory and keep the LAPI's load bounded.
      return { decisions: live(state, now), whitelist: state.whitelist, skipped: 0, skippedSamples: [], deletedCount: 0, bytes: 0, kind: 'delta' };
    }
    const started = performance.now();
    let got: Awaited<ReturnType<typeof fetchOnce>>;
    try {
      got = await fetchOnce(!delta, opts);
    } catch (err) {
      // Whatever we merged may have missed a delta: the next call starts from a full snapshot.
      state = undefined;
      log.debug({ source: name, err: errorLine(err) }, 'decision fetch failed');
      throw err instanceof SourceError ? err : fail(errorLine(err), 'error', err);
    }
    const { parsed, whitelist, bytes } = got;
    let decisions: Decision[];
    let kind: SourceSnapshot['kind'] = 'full';
    if (!delta || cfg.type === 'mikopbx') {
      decisions = parsed.decisions;
      state = opts.allowDelta ? { decisions: indexDecisions(parsed.decisions), lastFull: delta && state ? state.lastFull : now, lastPoll: now, whitelist } : undefined;
    } else {
      const s = state!;
      // Deletions first, then additions: a ban lifted and set again between two polls survives.
      // A deletion only removes the decision it names (by id): the LAPI repeats deletions
      // for 2-3 polls, and a repeat must not remove a newer decision for the same value.
      for (const d of parsed.deleted) {
        const k = keyOf(d);
        const cur = s.decisions.get(k);
        if (cur && (cur.id === undefined || d.id === undefined || cur.id === d.id)) s.decisions.delete(k);
      }
      for (const d of parsed.decisions) {
        const k = keyOf(d);
        const cur = s.decisions.get(k);
        if (!cur || d.expiresAt >= cur.expiresAt || cur.id === d.id) s.decisions.set(k, d);
      }
      s.lastPoll = now;
      s.whitelist = whitelist;
      decisions = live(s, now);
      kind = 'delta';
    }
    log.debug(
      { source: name, kind, bytes, decisions: decisions.length, received: parsed.decisions.length, deleted: parsed.deletedCount, skipped: parsed.skipped, filtered: parsed.filtered, ms: Math.round(performance.now() - started) },
      'fetched decisions',
    );
    return { decisions, whitelist, skipped: parsed.skipped, skippedSamples: parsed.skippedSamples, deletedCount: parsed.deletedCount, bytes, kind };
  }

  return {
    name,
    publishesWhitelist: fetchWhitelist,
    snapshot,
    async close() {
      agent?.destroy();
      agent = undefined;
      state = undefined;
    },
  };
}

function indexDecisions(list: readonly Decision[]): Map<string, Decision> {
  const m = new Map<string, Decision>();
  for (const d of list) {
    const k = keyOf(d);
    const cur = m.get(k);
    if (!cur || d.expiresAt > cur.expiresAt) m.set(k, d);
  }
  return m;
}

/** The merged decisions still running at `now`; expired ones are dropped from the state too. */
function live(s: DeltaState, now: number): Decision[] {
  const out: Decision[] = [];
  for (const [k, d] of s.decisions) {
    if (d.expiresAt > now) out.push(d);
    else s.decisions.delete(k);
  }
  return out;
}
