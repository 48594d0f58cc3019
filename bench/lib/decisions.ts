/**
 * Synthetic decisions for the API benchmark: distinct /32 and /128 bans
 * from the benchmark and documentation ranges (198.18.0.0/15, RFC 2544;
 * 2001:db8::/32, RFC 3849), and an in-memory `DecisionSource` so the real
 * `runPass` drives the providers.
 */
import { parseCidr } from '../../src/core/cidr.js';
import type { Decision, Family } from '../../src/core/types.js';
import type { DecisionSource, SourceSnapshot } from '../../src/sources/source.js';

/** Hands out addresses never used before in this process, so a replaced ban is always a new CIDR. */
export class AddressPool {
  private next: Record<Family, number> = { 4: 0, 6: 0 };

  take(family: Family): string {
    const i = this.next[family]++;
    if (family === 4) {
      if (i >= 1 << 17) throw new RangeError('benchmark IPv4 range 198.18.0.0/15 is used up');
      return `198.${18 + ((i >> 16) & 1)}.${(i >> 8) & 255}.${i & 255}`;
    }
    return `2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`;
  }
}

let nextId = 1;

/** A ban decision as a LAPI source would yield it after normalisation (origin `crowdsec`: a local detection). */
export function decision(value: string, expiresAt: number): Decision {
  const p = parseCidr(value);
  return {
    source: 'bench',
    id: nextId++,
    origin: 'crowdsec',
    originClass: 'local',
    scenario: 'crowdsecurity/ssh-bf',
    scope: 'ip',
    type: 'ban',
    value,
    cidr: p.cidr,
    family: p.family,
    prefix: p.prefix,
    expiresAt,
  };
}

/** A source whose snapshot is whatever the benchmark set last; it never fails. */
export class MemorySource implements DecisionSource {
  readonly name = 'bench';
  decisions: Decision[] = [];

  async snapshot(): Promise<SourceSnapshot> {
    return { decisions: this.decisions, whitelist: [], skipped: 0, skippedSamples: [], deletedCount: 0, bytes: 0, kind: 'full' };
  }
}

/** Seeded PRNG (mulberry32, shared with the fakes), so every run replaces the same bans. */
export { prng as seeded } from '../../test/fakes/faults.js';
