/**
 * Reading a LAPI `startup=true` response whose `deleted` history dwarfs
 * `new`, over loopback HTTP: what the client process peaks at.
 *
 * A server process serves one synthetic body (N active decisions, 10 × N
 * expired ones in `deleted`, history first as the LAPI sends it) from a
 * file, with its Content-Length. Each client is a fresh process:
 *
 * - `source`: cloud-bouncer's LAPI source (`createLapiSource(...).snapshot()`),
 *   which reads the body as it arrives and drops the history on the way;
 * - `buffered`: the same reader given the whole body at once, after it was
 *   read into one Buffer (what the source did before it streamed);
 * - `json`: the body read into one Buffer and `JSON.parse`d whole, as a
 *   client that builds every item does (the floor of the pipeline table,
 *   on this body);
 * - `drain`: every chunk read and dropped, nothing parsed: what Node itself
 *   costs to receive the body.
 *
 * Reports time from the request to the parsed result, and peak RSS. Median
 * of 3 runs (1 with `--smoke`); asserts nothing.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createReadStream, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { StreamBodyReader } from '../src/core/decisions.js';
import { createLapiSource, lapiSourceSchema } from '../src/sources/lapi.js';
import { body } from './lib/lapi-body.js';

const SELF = fileURLToPath(import.meta.url);
const NOW = Date.UTC(2026, 10, 23, 8, 0, 0);
const HISTORY = 10;
const KINDS = ['source', 'buffered', 'json', 'drain'] as const;
type Kind = (typeof KINDS)[number];
const LABELS: Record<Kind, string> = {
  source: "cloud-bouncer's LAPI source (reads the body as it arrives)",
  buffered: 'the whole body buffered, then the same reader',
  json: 'the whole body buffered, then `JSON.parse`',
  drain: 'every chunk read and dropped, nothing parsed (Node alone)',
};

interface ClientResult {
  kind: Kind;
  ms: number;
  peakRssMb: number;
  decisions: number;
}

/** Reads the body: into one Buffer, or (`keep` false) dropping every chunk. */
function fetchBody(url: string, keep: boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    request(new URL('v1/decisions/stream?startup=true', url), (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => keep && chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
}

async function client(kind: Kind, url: string): Promise<ClientResult> {
  const t = performance.now();
  let decisions: number;
  if (kind === 'source') {
    const cfg = lapiSourceSchema.parse({ name: 'bench', type: 'lapi', api_url: url, api_key: 'bench-key', timeout: 600 });
    const src = createLapiSource(cfg, { log: pino({ level: 'silent' }), userAgent: 'cloud-bouncer-bench' });
    decisions = (await src.snapshot({ now: NOW })).decisions.length;
  } else if (kind === 'drain') {
    await fetchBody(url, false);
    decisions = -1;
  } else {
    const whole = await fetchBody(url, true);
    if (kind === 'buffered') {
      const r = new StreamBodyReader({ source: 'bench', now: NOW });
      r.push(whole);
      decisions = r.finish().decisions.length;
    } else decisions = (JSON.parse(whole.toString('utf8')) as { new: unknown[] }).new.length;
  }
  const ms = performance.now() - t;
  return { kind, ms: Math.round(ms), peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024), decisions };
}

function serve(path: string): void {
  const size = statSync(path).size;
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': size });
    createReadStream(path).pipe(res);
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const smoke = process.argv.includes('--smoke');
  const n = smoke ? 1_000 : 100_000;
  const runs = smoke ? 1 : 3;
  const dir = 'build/bench';
  mkdirSync(dir, { recursive: true });
  const path = `${dir}/stream-body-${n}.json`;
  writeFileSync(path, body(n, 0, n * HISTORY));
  const bytes = statSync(path).size;
  const server = spawn(process.execPath, [SELF, 'serve', path], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      server.stdout.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { port: number }).port));
      server.once('exit', (code) => reject(new Error(`bench server exited (${code})`)));
    });
    const url = `http://127.0.0.1:${port}/`;
    const rows: string[] = [];
    for (const kind of KINDS) {
      const rs: ClientResult[] = [];
      for (let i = 0; i < runs; i++) {
        const out = execFileSync(process.execPath, ['--max-old-space-size=8192', SELF, 'client', kind, url], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
        const r = JSON.parse(out.trim().split('\n').pop()!) as ClientResult;
        if (kind !== 'drain' && r.decisions !== n) throw new Error(`${kind}: read ${r.decisions} decisions, expected ${n}`);
        rs.push(r);
        console.log(JSON.stringify(r));
      }
      rows.push(`| ${LABELS[kind]} | ${median(rs.map((r) => r.ms))} | ${median(rs.map((r) => r.peakRssMb))} |`);
    }
    const markdown = [
      `**Streaming the response** (${n.toLocaleString('en')} active decisions and ${(n * HISTORY).toLocaleString('en')} expired ones in \`deleted\`, ${(bytes / 1e6).toFixed(0)} MB, served over loopback HTTP; median of ${runs} fresh processes):`,
      '',
      '| client | request to parsed result, ms | peak RSS MB |',
      '|---|---:|---:|',
      ...rows,
    ].join('\n');
    console.log(JSON.stringify({ markdown }));
  } finally {
    server.kill();
    rmSync(path, { force: true });
  }
}

const mode = process.argv[2];
if (mode === 'serve') serve(process.argv[3]!);
else if (mode === 'client') console.log(JSON.stringify(await client(process.argv[3] as Kind, process.argv[4]!)));
else await main();
