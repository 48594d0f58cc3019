import { parseCidr } from '../../src/core/cidr.js';
import type { Ban, OriginClass } from '../../src/core/types.js';

/** Fixed clock for tests: 2026-11-23T08:00:00Z. */
export const NOW = Date.UTC(2026, 10, 23, 8, 0, 0);

export const HOUR = 3_600_000;

/** A ban for `cidr` (canonicalised), expiring in 4 h by default. */
export function ban(cidr: string, opts: { expiresAt?: number; originClass?: OriginClass; origin?: string; now?: number } = {}): Ban {
  const p = parseCidr(cidr);
  const originClass = opts.originClass ?? 'local';
  return {
    cidr: p.cidr,
    family: p.family,
    prefix: p.prefix,
    expiresAt: opts.expiresAt ?? (opts.now ?? NOW) + 4 * HOUR,
    origin: opts.origin ?? (originClass === 'manual' ? 'cscli' : originClass === 'local' ? 'crowdsec' : 'CAPI'),
    originClass,
    scenario: 'test',
    source: 'test',
  };
}

/** `n` distinct IPv4 /32 bans from 198.18.0.0/15 (benchmark range), then IPv6 /128s when `v6` > 0. */
export function manyBans(n: number, opts: { v6?: number; now?: number; expiresAt?: (i: number) => number; originClass?: OriginClass } = {}): Ban[] {
  const out: Ban[] = [];
  for (let i = 0; i < n; i++) {
    const ip = `198.${18 + ((i >> 16) & 1)}.${(i >> 8) & 255}.${i & 255}`;
    out.push(ban(ip, { now: opts.now, expiresAt: opts.expiresAt?.(i), originClass: opts.originClass }));
  }
  for (let i = 0; i < (opts.v6 ?? 0); i++) {
    out.push(ban(`2001:db8:ffff::${(i + 1).toString(16)}`, { now: opts.now, expiresAt: opts.expiresAt?.(n + i), originClass: opts.originClass }));
  }
  return out;
}
