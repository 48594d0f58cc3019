/**
 * A scripted decision source on loopback for the bad-input and security
 * tests: every request is answered by what the test sets in `reply`, over
 * real HTTP (or HTTPS), so the LAPI client's own socket, deadline and size
 * handling run exactly as in production.
 *
 * Besides plain answers it can misbehave the ways a broken or hostile
 * server does: trickle the body or the status line byte by byte
 * (slowloris), never answer, send a huge body with or without
 * Content-Length, drop the connection mid-body, and echo the request's
 * credentials back in the status line, a header and the body.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export type Reply =
  /** A complete answer. `contentLength: false` sends it chunked. */
  | { kind: 'body'; status?: number; statusText?: string; body: string | Buffer; contentLength?: boolean; headers?: Record<string, string> }
  /** `size` bytes of a valid stream body, built lazily in 1 MiB chunks (no 50 MB string is held twice). */
  | { kind: 'huge'; status?: number; size: number; contentLength: boolean; newItems?: number }
  /** Headers at once, then `chunk` bytes of `body` every `everyMs`. */
  | { kind: 'trickle-body'; body: string; chunk: number; everyMs: number }
  /** The status line and headers themselves, one byte every `everyMs`, written raw on the socket. */
  | { kind: 'trickle-headers'; everyMs: number }
  /** Accept the request and never answer. */
  | { kind: 'silent' }
  /** Declare the length of `body`, send half of it, then drop the connection. */
  | { kind: 'short'; body: string }
  /** Echo every request header back: in the status text, a response header and a JSON (or non-JSON) body. */
  | { kind: 'echo'; status: number; json: boolean };

export interface RequestSeen {
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  /** True once the client hung up before the answer was complete. */
  clientClosedEarly: boolean;
}

export interface ScriptedServer {
  url: string;
  /** What the next requests get; a function sees the request path. */
  reply: Reply | ((path: string) => Reply);
  readonly seen: RequestSeen[];
  close(): Promise<void>;
}

const HUGE_ITEM = (i: number) => `{"duration":"-${1 + (i % 1000)}h","id":${i},"origin":"CAPI","scenario":"crowdsecurity/http-probing","scope":"Ip","type":"ban","value":"10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}"}`;

/** A valid stream body of exactly `size` bytes: `newItems` live decisions, then expired history in `deleted` up to the size. */
export function* hugeBody(size: number, newItems = 3): Generator<Buffer> {
  const fresh = Array.from({ length: newItems }, (_, i) => `{"duration":"4h","id":${i + 1},"origin":"crowdsec","scenario":"crowdsecurity/ssh-bf","scope":"Ip","type":"ban","value":"192.0.2.${i + 1}"}`);
  const head = `{"new":[${fresh.join(',')}],"deleted":[`;
  const tail = ']}';
  let used = head.length + tail.length;
  let out = head;
  let i = 0;
  for (;;) {
    const item = `${i === 0 ? '' : ','}${HUGE_ITEM(i)}`;
    // Pad the last item's scenario so the body is exactly `size` bytes.
    if (used + item.length > size) break;
    out += item;
    used += item.length;
    i++;
    if (out.length >= 1 << 20) {
      yield Buffer.from(out);
      out = '';
    }
  }
  const pad = size - used;
  if (pad > 0) out += ' '.repeat(pad);
  yield Buffer.from(`${out}${tail}`);
}

function handle(server: ScriptedServer, req: IncomingMessage, res: ServerResponse, timers: Set<NodeJS.Timeout>): void {
  const u = new URL(req.url ?? '/', 'http://scripted');
  const seen: RequestSeen = { path: u.pathname, query: u.searchParams, headers: req.headers, clientClosedEarly: false };
  server.seen.push(seen);
  res.on('close', () => {
    if (!res.writableFinished) seen.clientClosedEarly = true;
  });
  const r = typeof server.reply === 'function' ? server.reply(u.pathname) : server.reply;
  const every = (ms: number, step: () => boolean) => {
    const t = setInterval(() => {
      if (res.destroyed || !step()) {
        clearInterval(t);
        timers.delete(t);
      }
    }, ms);
    timers.add(t);
  };
  switch (r.kind) {
    case 'body': {
      const body = typeof r.body === 'string' ? Buffer.from(r.body) : r.body;
      const headers: Record<string, string | number> = { 'content-type': 'application/json', ...r.headers };
      if (r.contentLength !== false) headers['content-length'] = body.length;
      res.writeHead(r.status ?? 200, r.statusText ?? '', headers);
      res.end(body);
      return;
    }
    case 'huge': {
      const headers: Record<string, string | number> = { 'content-type': 'application/json' };
      if (r.contentLength) headers['content-length'] = r.size;
      res.writeHead(r.status ?? 200, headers);
      const parts = hugeBody(r.size, r.newItems);
      const pump = () => {
        for (;;) {
          if (res.destroyed) return;
          const next = parts.next();
          if (next.done) return void res.end();
          if (!res.write(next.value)) return void res.once('drain', pump);
        }
      };
      return pump();
    }
    case 'trickle-body': {
      res.writeHead(200, { 'content-type': 'application/json' });
      let i = 0;
      every(r.everyMs, () => {
        if (i >= r.body.length) {
          res.end();
          return false;
        }
        res.write(r.body.slice(i, i + r.chunk));
        i += r.chunk;
        return true;
      });
      return;
    }
    case 'trickle-headers': {
      const raw = 'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n{"new":null,"deleted":null}';
      const socket: Socket = req.socket;
      let i = 0;
      every(r.everyMs, () => {
        if (socket.destroyed || i >= raw.length) return false;
        socket.write(raw[i++]!);
        return true;
      });
      return;
    }
    case 'silent':
      return;
    case 'short': {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(r.body) });
      res.write(r.body.slice(0, Math.floor(r.body.length / 2)));
      const t = setTimeout(() => req.socket.destroy(), 20);
      timers.add(t);
      return;
    }
    case 'echo': {
      const creds = Object.entries(req.headers)
        .filter(([k]) => k === 'x-api-key' || k === 'authorization')
        .map(([k, v]) => `${k}: ${String(v)}`)
        .join('; ');
      const body = r.json ? JSON.stringify({ message: `access forbidden for ${creds}`, headers: req.headers }) : `<html>denied ${creds}</html>`;
      // Latin-1 only in a status line and header: the credentials are ASCII.
      res.writeHead(r.status, `Forbidden ${creds}`, { 'content-type': r.json ? 'application/json' : 'text/html', 'x-echo': creds, 'www-authenticate': `Key realm="${creds}"` });
      res.end(body);
      return;
    }
  }
}

/** Starts the server on 127.0.0.1, port 0. With `tls`, it speaks HTTPS with that key and certificate. */
export async function startScripted(opts: { tls?: { key: string; cert: string } } = {}): Promise<ScriptedServer> {
  const timers = new Set<NodeJS.Timeout>();
  const state: ScriptedServer = {
    url: '',
    reply: { kind: 'body', body: '{"new":null,"deleted":null}' },
    seen: [],
    close: async () => undefined,
  };
  const onRequest = (req: IncomingMessage, res: ServerResponse) => handle(state, req, res, timers);
  const server: Server = opts.tls ? createHttpsServer({ key: opts.tls.key, cert: opts.tls.cert }, onRequest) : createHttpServer(onRequest);
  // A slowloris answer must outlive the client's deadline, not the server's own timeouts.
  server.requestTimeout = 0;
  server.headersTimeout = 0;
  server.keepAliveTimeout = 100;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  state.close = async () => {
    for (const t of timers) clearTimeout(t);
    timers.clear();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return state;
}
