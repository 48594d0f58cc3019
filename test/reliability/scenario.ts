/**
 * The desired states of the reliability scenarios, drawn from a seeded PRNG,
 * and the in-memory decision source that serves them to the real `runPass`.
 *
 * Every scenario uses the same whitelist, given three ways (static CIDRs,
 * `never_ban`, and a list the source publishes, as MikoPBX's `/v1/whitelist`
 * does), and its bans always include ranges that contain whitelisted
 * addresses, so the desired state holds ranges split around them.
 *
 * Sizes fit every target: at most 14 IPv4 and 7 IPv6 CIDRs after splitting,
 * under the 17 IPv4 / 18 IPv6 entries an AWS NACL leaves us next to the
 * seeded foreign entries (20 per family per direction, Amazon VPC quotas).
 */
import { parseStreamBody } from '../../src/core/decisions.js';
import type { DecisionSource, SourceSnapshot } from '../../src/sources/source.js';
import type { WhitelistInput } from '../../src/core/whitelist.js';
import { prng } from '../fakes/faults.js';
import { addressSet } from './addresses.js';

export const STATIC_WHITELIST = ['198.51.100.7/32', '2001:db8:1::5/128'];
/** Admin addresses that must always get in (`never_ban`). */
export const NEVER_BAN = ['192.0.2.1'];
/** Published by the source itself. */
export const SOURCE_WHITELIST = ['203.0.113.64/30'];

/** Every whitelisted address, for the coverage check. */
export const WHITELISTED = addressSet([...STATIC_WHITELIST, ...NEVER_BAN, ...SOURCE_WHITELIST]);

export const WHITELIST_INPUT: Omit<WhitelistInput, 'remote'> = { cidrs: STATIC_WHITELIST, neverBan: NEVER_BAN, hostnames: [] };

interface Candidate {
  value: string;
  scope: 'Ip' | 'Range';
}

/** Ranges that contain a whitelisted address: each is split into the CIDRs that remain. */
const SPLIT_RANGES: Candidate[] = [
  { value: '198.51.100.0/28', scope: 'Range' }, // around 198.51.100.7: 4 CIDRs
  { value: '203.0.113.64/28', scope: 'Range' }, // around 203.0.113.64/30: 2 CIDRs
  { value: '192.0.2.0/29', scope: 'Range' }, // around never_ban 192.0.2.1: 3 CIDRs
  { value: '2001:db8:1::/124', scope: 'Range' }, // around 2001:db8:1::5: 4 CIDRs
];

const OTHERS: Candidate[] = [
  { value: '198.18.1.0/30', scope: 'Range' },
  { value: '198.18.0.1', scope: 'Ip' },
  { value: '198.18.0.2', scope: 'Ip' },
  { value: '198.18.0.3', scope: 'Ip' },
  { value: '198.18.0.4/32', scope: 'Ip' },
  { value: '2001:db8:2::1', scope: 'Ip' },
  { value: '2001:db8:2::2', scope: 'Ip' },
  { value: '2001:db8:2::3', scope: 'Ip' },
  // Entirely whitelisted: refused, never written.
  { value: '198.51.100.7', scope: 'Ip' },
];

const ORIGINS = ['crowdsec', 'cscli', 'CAPI'];

export interface StreamItem {
  duration: string;
  id: number;
  origin: string;
  scenario: string;
  scope: string;
  type: string;
  value: string;
}

export interface DesiredSet {
  items: StreamItem[];
  /** The addresses the target must deny once converged: the bans minus the whitelist. */
  addresses: Set<string>;
}

function pick<T>(rand: () => number, from: readonly T[], p: number): T[] {
  return from.filter(() => rand() < p);
}

/** One desired set: one to four split ranges, some other bans, durations from 1 to 6 hours. */
export function desiredSet(rand: () => number): DesiredSet {
  let ranges = pick(rand, SPLIT_RANGES, 0.5);
  if (ranges.length === 0) ranges = [SPLIT_RANGES[Math.floor(rand() * SPLIT_RANGES.length)]!];
  const chosen = [...ranges, ...pick(rand, OTHERS, 0.5)];
  const items = chosen.map((c, i) => ({
    duration: `${1 + Math.floor(rand() * 6)}h${Math.floor(rand() * 60)}m0s`,
    id: i + 1,
    origin: ORIGINS[Math.floor(rand() * ORIGINS.length)]!,
    scenario: 'crowdsecurity/ssh-bf',
    scope: c.scope,
    type: 'ban',
    value: c.value,
  }));
  const banned = addressSet(chosen.map((c) => c.value));
  for (const a of WHITELISTED) banned.delete(a);
  return { items, addresses: banned };
}

export interface Scenario {
  seed: number;
  /** What the target holds before the faulty passes start. */
  initial: DesiredSet;
  desired: DesiredSet;
  /** A second desired set, for the overlapping-run tests. */
  other: DesiredSet;
  rand: () => number;
}

export function scenario(seed: number): Scenario {
  const rand = prng(seed * 7919 + 17);
  return { seed, initial: desiredSet(rand), desired: desiredSet(rand), other: desiredSet(rand), rand };
}

/**
 * A decision source held in memory: it serves a LAPI stream body
 * (`startup=true` shape), parsed by the real stream parser, and publishes
 * the whitelist a MikoPBX source would.
 */
export class MemorySource implements DecisionSource {
  readonly name = 'lapi';
  constructor(
    readonly items: StreamItem[],
    private readonly publishWhitelist = true,
  ) {}

  async snapshot(opts: { now: number }): Promise<SourceSnapshot> {
    const body = JSON.stringify({ new: this.items, deleted: null });
    const r = parseStreamBody(body, { source: this.name, now: opts.now });
    return {
      decisions: r.decisions,
      whitelist: this.publishWhitelist ? SOURCE_WHITELIST : [],
      skipped: r.skipped,
      skippedSamples: r.skippedSamples,
      deletedCount: r.deletedCount,
      bytes: body.length,
      kind: 'full',
    };
  }
}
