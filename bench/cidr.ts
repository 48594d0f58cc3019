/**
 * Why `src/core/cidr.ts` is hand-written: parse and canonicalise a million
 * mixed values (the per-decision hot path) with it and with ipaddr.js, a
 * well-kept CIDR library. Prints figures only.
 */
import ipaddr from 'ipaddr.js';
import { parseCidr } from '../src/core/cidr.js';

const smoke = process.argv.includes('--smoke');
const N = smoke ? 20_000 : 1_000_000;

const values: string[] = [];
for (let i = 0; i < N; i++) {
  const k = i * 2654435761;
  const r = i % 10;
  if (r < 7) values.push(`${11 + ((k >>> 24) & 127)}.${(k >>> 16) & 255}.${(k >>> 8) & 255}.${k & 255}`);
  else if (r < 9) values.push(`2001:db8:${((k >>> 16) & 0xffff).toString(16)}:${(k & 0xffff).toString(16)}::1`);
  else values.push(`${150 + ((k >>> 16) & 63)}.${(k >>> 8) & 255}.${k & 255}.7/24`);
}

function ours(v: string): string {
  return parseCidr(v).cidr;
}

/** The same result with ipaddr.js: parse, clear host bits, format (RFC 5952 for IPv6). */
function library(v: string): string {
  const [addr, prefix] = v.includes('/') ? ipaddr.parseCIDR(v) : [ipaddr.parse(v), v.includes(':') ? 128 : 32];
  const net = addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${prefix}`) : ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/${prefix}`);
  return `${net.toString()}/${prefix}`;
}

function time(f: (v: string) => string): { ms: number; out: string[] } {
  const out: string[] = new Array<string>(values.length);
  const t = performance.now();
  for (let i = 0; i < values.length; i++) out[i] = f(values[i]!);
  return { ms: performance.now() - t, out };
}

// Warm both up, then measure.
time(ours);
time(library);
const a = time(ours);
const b = time(library);
let mismatches = 0;
for (let i = 0; i < values.length; i++) if (a.out[i] !== b.out[i]) mismatches++;
const rows = [
  `## CIDR parsing and canonicalisation (${N.toLocaleString('en')} values: 70% IPv4, 20% IPv6, 10% ranges)`,
  '',
  '| implementation | ms | ns per value |',
  '|---|---:|---:|',
  `| src/core/cidr.ts | ${Math.round(a.ms)} | ${Math.round((a.ms * 1e6) / N)} |`,
  `| ipaddr.js ${(await import('ipaddr.js/package.json', { with: { type: 'json' } })).default.version} | ${Math.round(b.ms)} | ${Math.round((b.ms * 1e6) / N)} |`,
  '',
  `Same canonical output for ${N - mismatches} of ${N} values${mismatches ? ` (${mismatches} differ)` : ''}.`,
];
console.log(JSON.stringify({ ours: a.ms, library: b.ms, mismatches, markdown: rows.join('\n') }));
