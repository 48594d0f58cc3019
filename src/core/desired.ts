/**
 * Decisions − whitelist − guards → bans. Pure.
 *
 * Order matters: duplicates are merged first (longest expiry wins), then the
 * minimum-prefix guard refuses over-broad bans, then the whitelist is
 * subtracted (a banned range that contains a whitelisted address is split
 * into the CIDRs that remain), then `max_ttl` caps every expiry.
 */
import { netToCidr, subtract, toNet, type NetIndex } from './cidr.js';
import { ORIGIN_CLASS_RANK } from './types.js';
import type { Ban, Cidr, CidrIndex, Decision, Family, OriginClass, Refused, Rule } from './types.js';

export interface Guards {
  /** Broadest prefix accepted per family (default /16 for IPv4, /48 for IPv6). */
  minPrefix: Record<Family, number>;
  /** Longest lifetime of a rule from now (ms); Infinity for none. */
  maxTtlMs: number;
}

export const DEFAULT_GUARDS: Guards = { minPrefix: { 4: 16, 6: 48 }, maxTtlMs: 7 * 24 * 3_600_000 };

export interface DesiredResult {
  bans: Ban[];
  refused: Refused[];
  /**
   * CIDR → its position in `bans`, built from the map that merged
   * duplicates: the planner looks CIDRs up in it instead of hashing every
   * one of them again.
   */
  index: CidrIndex;
}


/** Merge two bans of the same CIDR: longest expiry, strongest origin class. */
function mergeBan(a: Ban, b: Ban): Ban {
  const winner = b.expiresAt > a.expiresAt ? b : a;
  const cls: OriginClass = ORIGIN_CLASS_RANK[a.originClass] <= ORIGIN_CLASS_RANK[b.originClass] ? a.originClass : b.originClass;
  return winner.originClass === cls ? winner : { ...winner, originClass: cls };
}

export function computeDesired(
  decisions: Iterable<Decision>,
  whitelist: NetIndex,
  guards: Guards,
  now: number,
  classify: (origin: string) => OriginClass,
  extra: readonly Ban[] = [],
): DesiredResult {
  const refused: Refused[] = [];
  // CIDR → position in `all`: one lookup per ban, a second write only for a duplicate.
  const byCidr = new Map<Cidr, number>();
  const all: Ban[] = [];
  const add = (b: Ban) => {
    const i = byCidr.get(b.cidr);
    if (i === undefined) {
      byCidr.set(b.cidr, all.length);
      all.push(b);
    } else all[i] = mergeBan(all[i]!, b);
  };
  for (const d of decisions) {
    if (d.expiresAt <= now) {
      refused.push({ value: d.value, reason: 'expired', source: d.source, origin: d.origin, scenario: d.scenario });
      continue;
    }
    // A Decision is a Ban (it carries every Ban field): no copy unless the configured classes differ.
    const cls = classify(d.origin);
    add(cls === d.originClass ? d : { ...d, originClass: cls });
  }
  for (const b of extra) if (b.expiresAt > now) add(b);

  const bans: Ban[] = [];
  const pieces: Ban[] = [];
  const maxExpiry = now + guards.maxTtlMs;
  const hasWhitelist = whitelist.size > 0;
  // Position in `bans` of each entry of `all` (-1: refused); allocated at the first refusal.
  let pos: Int32Array | undefined;
  const drop = (a: number) => {
    if (!pos) {
      pos = new Int32Array(all.length);
      for (let k = 0; k < a; k++) pos[k] = k;
    }
    pos[a] = -1;
  };
  for (let a = 0; a < all.length; a++) {
    const b = all[a]!;
    if (b.prefix < guards.minPrefix[b.family]) {
      refused.push({
        value: b.cidr,
        reason: 'min_prefix',
        detail: `broader than /${guards.minPrefix[b.family]} (minimum prefix for IPv${b.family})`,
        source: b.source,
        origin: b.origin,
        scenario: b.scenario,
      });
      drop(a);
      continue;
    }
    const capped = b.expiresAt > maxExpiry ? { ...b, expiresAt: maxExpiry } : b;
    if (!hasWhitelist || !whitelist.overlapsCidr(b.cidr, b.family, b.prefix)) {
      if (pos) pos[a] = bans.length;
      bans.push(capped);
      continue;
    }
    drop(a);
    const net = toNet(b.cidr);
    const holes = whitelist.overlapping(net);
    const split = subtract(net, holes);
    const around = holes.map(netToCidr).join(', ');
    if (split.length === 0) {
      refused.push({ value: b.cidr, reason: 'whitelisted', detail: `covered by whitelist ${around}`, source: b.source, origin: b.origin, scenario: b.scenario });
      continue;
    }
    refused.push({ value: b.cidr, reason: 'whitelisted', detail: `split into ${split.length} CIDRs around whitelist ${around}`, source: b.source, origin: b.origin, scenario: b.scenario });
    for (const p of split) pieces.push({ ...capped, cidr: netToCidr(p), prefix: p.prefix });
  }
  if (!pos) return { bans, refused, index: byCidr };
  const kept = pos;
  // Pieces of a split range may coincide with another ban or another piece: merge those.
  const added = new Map<Cidr, number>();
  const index: CidrIndex = {
    get size() {
      return bans.length;
    },
    get(cidr) {
      const a = byCidr.get(cidr);
      if (a !== undefined && kept[a]! >= 0) return kept[a];
      return added.get(cidr);
    },
  };
  for (const p of pieces) {
    const i = index.get(p.cidr);
    if (i === undefined) {
      added.set(p.cidr, bans.length);
      bans.push(p);
    } else bans[i] = mergeBan(bans[i]!, p);
  }
  return { bans, refused, index };
}

/**
 * The fail-static desired state: every owned CIDR whose recorded expiry has
 * not passed, kept with top priority so nothing enforced is evicted while
 * the sources are silent.
 */
export function bansFromRules(rules: readonly Rule[], now: number): Ban[] {
  const out: Ban[] = [];
  for (const r of rules) {
    if (r.expiresAt <= now) continue;
    for (const cidr of r.cidrs) {
      const slash = cidr.indexOf('/');
      out.push({ cidr, family: r.family, prefix: Number(cidr.slice(slash + 1)), expiresAt: r.expiresAt, origin: 'fail-static', originClass: 'manual', scenario: 'recorded', source: 'target' });
    }
  }
  return out;
}
