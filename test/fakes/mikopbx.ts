/**
 * A MikoPBX-style `firewall-bouncer` export (MikoPBX docs, "External firewall
 * for Docker"), for the source tests:
 *
 * - `GET /pbxcore/api/v3/firewall-bouncer/v1/decisions/stream` with
 *   `X-Api-Key: <token>` or `Authorization: Bearer <token>`; anything else is
 *   403 `{"message":"access forbidden"}`.
 * - `new` is the full snapshot on every poll, with sliding durations: a ban
 *   with a fixed end reports the time left (`end - now`); a "rolling" ban
 *   reports the same duration on every poll, so its expiry slides forward.
 * - `deleted` is tracked per token: what was removed (or ran out) since that
 *   token's last pull. `startup=true` resets the token's tracking and
 *   answers `deleted: []`.
 * - `GET …/v1/whitelist` answers a flat JSON array of CIDRs.
 *
 * Failures are injected one request at a time (`fail()`): 5xx, garbage,
 * truncated JSON, a body that trickles in slowly, a connection reset, a
 * body that starts and never ends.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dropConnection } from './faults.js';

export const MIKOPBX_BASE_PATH = '/pbxcore/api/v3/firewall-bouncer/';

export interface FakeBanInput {
  value: string;
  /** Default `Ip`, or `Range` when the value has a prefix. */
  scope?: string;
  type?: string;
  origin?: string;
  scenario?: string;
  /** Fixed end (ms epoch): the reported duration shrinks as time passes. */
  until?: number;
  /** Rolling: the reported duration stays this long on every poll. */
  rollingMs?: number;
}

interface FakeBan {
  id: number;
  value: string;
  scope: string;
  type: string;
  origin: string;
  scenario: string;
  until?: number | undefined;
  rollingMs?: number | undefined;
}

export type FakeFault =
  | { kind: 'status'; status: number; body?: string }
  | { kind: 'garbage' }
  | { kind: 'truncated' }
  /** Headers at once, then the body in small chunks, `ms` apart. */
  | { kind: 'slow'; ms: number }
  /** Headers, part of the body, then the connection is destroyed. */
  | { kind: 'reset' }
  /** A raw body with status 200, e.g. `{"new":null,"deleted":null}` or items of the wrong shape. */
  | { kind: 'body'; body: string }
  /** Status 200 and the start of a body, then nothing more: the response never ends (counted in `stallsHungUp` when the client hangs up). */
  | { kind: 'stall'; body: string };

export type FakeEndpoint = 'stream' | 'whitelist';

export interface RecordedRequest {
  endpoint: FakeEndpoint | 'other';
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  /** The token the request authenticated with, when it did. */
  token: string | undefined;
  status: number;
}

export interface FakeMikoPbxOptions {
  tokens: readonly string[];
  /** Clock for durations and expiry (default `Date.now`). */
  now?: () => number;
  /** Send bodies chunked, without Content-Length. */
  chunked?: boolean;
}

/** Go duration text for `ms` (`3h59m58.5s`), as the stream carries it. */
export function goDuration(ms: number): string {
  const sign = ms < 0 ? '-' : '';
  let rest = Math.abs(ms);
  if (rest < 1000) return `${sign}${+rest.toFixed(3)}ms`;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const s = +(rest / 1000).toFixed(6);
  return `${sign}${h ? `${h}h` : ''}${h || m ? `${m}m` : ''}${s}s`;
}

export class FakeMikoPbx {
  readonly requests: RecordedRequest[] = [];
  private readonly server: Server;
  private readonly tokens: Set<string>;
  private readonly now: () => number;
  private readonly chunked: boolean;
  private bans = new Map<string, FakeBan>();
  private whitelist: string[] = [];
  private nextId = 1;
  /** Removals in order; each token remembers how far it has read. */
  private removals: Array<{ seq: number; ban: FakeBan; at: number }> = [];
  private seq = 0;
  private cursors = new Map<string, number>();
  private faults: Array<{ fault: FakeFault; endpoint: FakeEndpoint | 'any' }> = [];
  private port = 0;
  /** Stalled responses (`stall` fault) whose client hung up. */
  stallsHungUp = 0;

  private constructor(opts: FakeMikoPbxOptions) {
    this.tokens = new Set(opts.tokens);
    this.now = opts.now ?? Date.now;
    this.chunked = opts.chunked ?? false;
    this.server = createServer((req, res) => this.handle(req, res));
  }

  static async start(opts: FakeMikoPbxOptions): Promise<FakeMikoPbx> {
    const f = new FakeMikoPbx(opts);
    await new Promise<void>((resolve) => f.server.listen(0, '127.0.0.1', resolve));
    f.port = (f.server.address() as AddressInfo).port;
    return f;
  }

  /** `http://127.0.0.1:PORT/pbxcore/api/v3/firewall-bouncer/` */
  get url(): string {
    return `http://127.0.0.1:${this.port}${MIKOPBX_BASE_PATH}`;
  }

  addBan(b: FakeBanInput): number {
    const ban: FakeBan = {
      id: this.nextId++,
      value: b.value,
      scope: b.scope ?? (b.value.includes('/') ? 'Range' : 'Ip'),
      type: b.type ?? 'ban',
      origin: b.origin ?? 'mikopbx',
      scenario: b.scenario ?? 'mikopbx/asterisk-bf',
      until: b.until,
      rollingMs: b.rollingMs,
    };
    if (ban.until === undefined && ban.rollingMs === undefined) ban.rollingMs = 4 * 3_600_000;
    const prev = this.bans.get(this.key(ban));
    if (prev) this.remove(prev);
    this.bans.set(this.key(ban), ban);
    return ban.id;
  }

  /** Lifts the ban on `value` (every type); it shows up in each token's next `deleted`. */
  removeBan(value: string): void {
    for (const b of [...this.bans.values()]) if (b.value === value) this.remove(b);
  }

  setWhitelist(entries: readonly string[]): void {
    this.whitelist = [...entries];
  }

  addWhitelist(entry: string): void {
    if (!this.whitelist.includes(entry)) this.whitelist.push(entry);
  }

  removeWhitelist(entry: string): void {
    this.whitelist = this.whitelist.filter((e) => e !== entry);
  }

  /** The next matching request gets `fault` instead of its answer (queued; one request each). */
  fail(fault: FakeFault, endpoint: FakeEndpoint | 'any' = 'stream', times = 1): void {
    for (let i = 0; i < times; i++) this.faults.push({ fault, endpoint });
  }

  clearFaults(): void {
    this.faults = [];
  }

  streamRequests(): RecordedRequest[] {
    return this.requests.filter((r) => r.endpoint === 'stream');
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // -------------------------------------------------------------------------

  private key(b: FakeBan): string {
    return `${b.scope.toLowerCase()}|${b.type}|${b.value}`;
  }

  private remove(b: FakeBan): void {
    this.bans.delete(this.key(b));
    this.removals.push({ seq: ++this.seq, ban: b, at: this.now() });
  }

  /** Bans whose fixed end has passed leave the snapshot and count as removed. */
  private expire(): void {
    const now = this.now();
    for (const b of [...this.bans.values()]) if (b.until !== undefined && b.until <= now) this.remove(b);
  }

  private item(b: FakeBan, durationMs: number) {
    return { duration: goDuration(durationMs), id: b.id, origin: b.origin, scenario: b.scenario, scope: b.scope, type: b.type, value: b.value };
  }

  private tokenOf(req: IncomingMessage): string | undefined {
    const apiKey = req.headers['x-api-key'];
    if (typeof apiKey === 'string' && this.tokens.has(apiKey)) return apiKey;
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (m && this.tokens.has(m[1]!)) return m[1];
    return undefined;
  }

  private takeFault(endpoint: FakeEndpoint): FakeFault | undefined {
    const i = this.faults.findIndex((f) => f.endpoint === endpoint || f.endpoint === 'any');
    if (i < 0) return undefined;
    return this.faults.splice(i, 1)[0]!.fault;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const u = new URL(req.url ?? '/', 'http://fake');
    const endpoint: FakeEndpoint | 'other' =
      u.pathname === `${MIKOPBX_BASE_PATH}v1/decisions/stream` ? 'stream' : u.pathname === `${MIKOPBX_BASE_PATH}v1/whitelist` ? 'whitelist' : 'other';
    const token = this.tokenOf(req);
    const rec: RecordedRequest = { endpoint, path: u.pathname, query: u.searchParams, headers: req.headers, token, status: 0 };
    this.requests.push(rec);
    const send = (status: number, body: string) => {
      rec.status = status;
      const headers: Record<string, string | number> = { 'content-type': 'application/json; charset=utf-8' };
      if (!this.chunked) headers['content-length'] = Buffer.byteLength(body);
      res.writeHead(status, headers);
      res.end(body);
    };
    if (req.method !== 'GET' || endpoint === 'other') return send(404, '{"message":"not found"}');
    if (!token) return send(403, '{"message":"access forbidden"}');

    const body = endpoint === 'stream' ? this.stream(token, u.searchParams.get('startup') === 'true') : JSON.stringify(this.whitelist);
    const fault = this.takeFault(endpoint);
    if (!fault) return send(200, body);
    switch (fault.kind) {
      case 'status':
        return send(fault.status, fault.body ?? '{"message":"internal error"}');
      case 'garbage':
        return send(200, '<html><body>502 Bad Gateway</body></html>');
      case 'truncated':
        return send(200, body.slice(0, Math.max(1, Math.floor(body.length / 2))));
      case 'body':
        return send(200, fault.body);
      case 'slow': {
        rec.status = 200;
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
        let i = 0;
        const step = () => {
          if (res.destroyed) return;
          if (i >= body.length) return void res.end();
          res.write(body.slice(i, i + 8));
          i += 8;
          setTimeout(step, fault.ms).unref();
        };
        return step();
      }
      case 'stall': {
        rec.status = 200;
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
        res.write(fault.body);
        res.on('close', () => {
          if (!res.writableEnded) this.stallsHungUp++;
        });
        return;
      }
      case 'reset': {
        rec.status = 200;
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
        res.write(body.slice(0, Math.floor(body.length / 2)));
        setTimeout(() => dropConnection(req, res), 10).unref();
        return;
      }
    }
  }

  private stream(token: string, startup: boolean): string {
    this.expire();
    const now = this.now();
    const fresh = [...this.bans.values()].map((b) => this.item(b, b.rollingMs ?? b.until! - now));
    const cursor = this.cursors.get(token);
    this.cursors.set(token, this.seq);
    // A token's first pull, or startup=true: nothing to report as deleted.
    const deleted = startup || cursor === undefined ? [] : this.removals.filter((r) => r.seq > cursor).map((r) => this.item(r.ban, Math.min(-1, r.at - now)));
    return JSON.stringify({ new: fresh, deleted });
  }
}
