/**
 * Pure translation between Azure NSG security rules and the core vocabulary
 * (pools, slots, rules, conflicts). No I/O, no SDK: the shapes below are the
 * subset of the ARM `SecurityRule` / `NetworkSecurityGroup` models we read,
 * as the REST spec defines them (Microsoft.Network/stable/2024-05-01/
 * networkSecurityGroup.json; the SDK flattens `properties`).
 */
import { overlaps, toNet, tryParseCidr } from '../../core/cidr.js';
import { OwnershipConflictError, RetryableError } from '../../core/errors.js';
import { formatMarker, parseMarker } from '../../core/marker.js';
import type { Change, Conflict, Family, ForeignRule, Pool, Rule, TargetState } from '../../core/types.js';

export type Direction = 'Inbound' | 'Outbound';

/** The flattened ARM security rule, as `@azure/arm-network` reads and writes it. */
export interface ArmSecurityRule {
  name?: string | undefined;
  id?: string | undefined;
  etag?: string | undefined;
  description?: string | undefined;
  protocol?: string | undefined;
  sourcePortRange?: string | undefined;
  sourcePortRanges?: string[] | undefined;
  destinationPortRange?: string | undefined;
  destinationPortRanges?: string[] | undefined;
  sourceAddressPrefix?: string | undefined;
  sourceAddressPrefixes?: string[] | undefined;
  destinationAddressPrefix?: string | undefined;
  destinationAddressPrefixes?: string[] | undefined;
  sourceApplicationSecurityGroups?: unknown[] | undefined;
  destinationApplicationSecurityGroups?: unknown[] | undefined;
  access?: string | undefined;
  priority?: number | undefined;
  direction?: string | undefined;
  provisioningState?: string | undefined;
}

export interface ArmNetworkSecurityGroup {
  id?: string | undefined;
  name?: string | undefined;
  securityRules?: ArmSecurityRule[] | undefined;
  defaultSecurityRules?: ArmSecurityRule[] | undefined;
  provisioningState?: string | undefined;
  /** Re-evaluate established flows when rules change (off by default: a flow open before a Deny survives it). */
  flushConnection?: boolean | undefined;
  /** What the NSG is associated with (read-only). With neither, its rules filter no traffic. */
  subnets?: Array<{ id?: string | undefined }> | undefined;
  networkInterfaces?: Array<{ id?: string | undefined }> | undefined;
}

/** Azure limits (Azure networking limits, "Network security groups"). */
export const AZURE_LIMITS = {
  /** Security rules per NSG, both directions together. */
  rulesPerNsg: 1000,
  /** Source (and, separately, destination) address prefixes across all rules of one NSG. */
  prefixesPerNsg: 4000,
  minPriority: 100,
  maxPriority: 4096,
  nameLength: 80,
  descriptionLength: 140,
} as const;

/** Where our rules live and what they look like; derived from the target config. */
export interface Layout {
  owner: string;
  namePrefix: string;
  direction: Direction;
  band: { start: number; end: number };
  prefixesPerRule: number;
  /** NSG prefix cap on our side (source for Inbound, destination for Outbound), foreign rules included. */
  maxPrefixes: number;
  /** Owned rules allowed (config `max_rules`, at most the band size). */
  maxRules: number;
  bucketMs: number;
}

/** The single pool of an NSG target is named after the direction it writes. */
export function poolId(layout: Layout): string {
  return layout.direction.toLowerCase();
}

function ownNamePrefix(layout: Layout): string {
  return `${layout.namePrefix}-${layout.owner}-`;
}

/**
 * A slot is a rule name that encodes its priority, zero-padded so that name
 * order is priority order: `cloud-bouncer-default-0100`. A free slot is a
 * priority in the band that no rule of our direction uses.
 */
export function slotName(layout: Layout, priority: number): string {
  return `${ownNamePrefix(layout)}${String(priority).padStart(4, '0')}`;
}

/** The priority a slot name encodes; `undefined` when the name is not one of our slots. */
export function slotPriority(layout: Layout, name: string): number | undefined {
  const prefix = ownNamePrefix(layout);
  if (!name.startsWith(prefix)) return undefined;
  const rest = name.slice(prefix.length);
  if (!/^\d{4}$/.test(rest)) return undefined;
  return Number(rest);
}

/** Service tags and wildcards that stand for every address (REST spec: `sourceAddressPrefix`). */
const EVERYTHING = new Set(['*', 'any', 'internet', '0.0.0.0/0', '::/0']);

function isEverything(prefix: string): boolean {
  return EVERYTHING.has(prefix.trim().toLowerCase());
}

type Side = 'source' | 'destination';

/** Our side of a rule: the banned addresses go in the source for Inbound, in the destination for Outbound. */
function ourSide(layout: Layout): Side {
  return layout.direction === 'Inbound' ? 'source' : 'destination';
}

/** Every address prefix a rule lists on one side (singular and plural fields together). */
export function sidePrefixes(rule: ArmSecurityRule, side: Side): string[] {
  const one = side === 'source' ? rule.sourceAddressPrefix : rule.destinationAddressPrefix;
  const many = side === 'source' ? rule.sourceAddressPrefixes : rule.destinationAddressPrefixes;
  const out = [...(many ?? [])];
  if (one !== undefined && one !== null && one !== '') out.push(one);
  return out;
}

/**
 * Prefixes that count towards the NSG's 4000-prefix cap on one side: every
 * IP or CIDR, singular or plural. Service tags and `*` do not count (the cap
 * is on "IP addresses and ranges", Azure networking limits).
 */
export function countedPrefixes(rule: ArmSecurityRule, side: Side): number {
  return sidePrefixes(rule, side).filter((p) => tryParseCidr(p.trim()) !== undefined).length;
}

/** The rule body we write for a slot: a deny of every protocol and port from (or to) the CIDRs. */
export function ruleBody(layout: Layout, priority: number, cidrs: readonly string[], expiresAt: number): ArmSecurityRule {
  const description = formatMarker({ owner: layout.owner, expiresAt });
  const base: ArmSecurityRule = {
    description,
    protocol: '*',
    sourcePortRange: '*',
    destinationPortRange: '*',
    access: 'Deny',
    priority,
    direction: layout.direction,
  };
  // A single CIDR still goes in the plural field: Azure accepts a one-item list, and one shape keeps reads simple.
  return layout.direction === 'Inbound'
    ? { ...base, sourceAddressPrefixes: [...cidrs], destinationAddressPrefix: '*' }
    : { ...base, sourceAddressPrefix: '*', destinationAddressPrefixes: [...cidrs] };
}

/** Azure reports enums in their documented case, but accept any case when reading. */
function same(a: string | undefined, b: string): boolean {
  return (a ?? '').toLowerCase() === b.toLowerCase();
}

function portsAreAll(rule: ArmSecurityRule): boolean {
  const all = (one: string | undefined, many: string[] | undefined) => (one === '*' && (many ?? []).length === 0) || (one === undefined && (many ?? []).length === 1 && many![0] === '*');
  return all(rule.sourcePortRange, rule.sourcePortRanges) && all(rule.destinationPortRange, rule.destinationPortRanges);
}

export type OwnedCheck = { kind: 'owned'; rule: Rule } | { kind: 'conflict'; message: string } | { kind: 'foreign' };

/**
 * Classifies one security rule for this layout:
 * - `owned`: our name (`<prefix>-<owner>-NNNN`), our marker, a Deny of our
 *   direction at the priority the name encodes, all protocols and ports, one
 *   family of CIDRs on our side and `*` on the other;
 * - `conflict`: our name prefix without all of the above (someone else wrote
 *   or edited it: we do not touch it, and the target fails);
 * - `foreign`: anything else (read for capacity and warnings only).
 */
export function classifyRule(layout: Layout, r: ArmSecurityRule): OwnedCheck {
  const name = r.name ?? '';
  if (!name.startsWith(ownNamePrefix(layout))) return { kind: 'foreign' };
  const why = (text: string): OwnedCheck => ({ kind: 'conflict', message: `rule ${name} uses our name prefix ${ownNamePrefix(layout)} but ${text}` });
  const marker = parseMarker(r.description);
  if (!marker || marker.owner !== layout.owner) return why(`has no ownership marker for owner ${layout.owner}`);
  const priority = slotPriority(layout, name);
  if (priority === undefined) return why('its name does not end in a 4-digit priority');
  if (r.priority !== priority) return why(`its priority ${String(r.priority)} differs from the ${priority} its name encodes`);
  if (!same(r.direction, layout.direction)) return why(`its direction is ${String(r.direction)}, not ${layout.direction}`);
  if (!same(r.access, 'Deny')) return why(`its access is ${String(r.access)}, not Deny`);
  if (r.protocol !== '*' || !portsAreAll(r)) return why('it was narrowed to a protocol or port (we write protocol * and ports *)');
  const side = ourSide(layout);
  const other: Side = side === 'source' ? 'destination' : 'source';
  const otherPrefixes = sidePrefixes(r, other);
  if (otherPrefixes.length !== 1 || otherPrefixes[0] !== '*') return why(`its ${other} is not * (we write * there)`);
  const raw = sidePrefixes(r, side);
  if (raw.length === 0) return why(`it lists no ${side} prefix`);
  const cidrs: string[] = [];
  const families = new Set<Family>();
  for (const p of raw) {
    const parsed = tryParseCidr(p.trim());
    // A wildcard or service tag in one of our rules would deny far more than any ban: never adopt it.
    if (!parsed) return why(`its ${side} lists ${JSON.stringify(p)}, which is not an IP or CIDR`);
    cidrs.push(parsed.cidr);
    families.add(parsed.family);
  }
  if (families.size !== 1) return why(`it mixes IPv4 and IPv6 ${side} prefixes`);
  const family = [...families][0]!;
  const unique = [...new Set(cidrs)].sort();
  return { kind: 'owned', rule: { pool: poolId(layout), slot: name, family, cidrs: unique, expiresAt: marker.expiresAt } };
}

function describeForeign(r: ArmSecurityRule): string {
  const src = sidePrefixes(r, 'source');
  const dst = sidePrefixes(r, 'destination');
  const list = (xs: string[]) => (xs.length > 3 ? `${xs.slice(0, 3).join(',')},…(${xs.length})` : xs.join(',') || '-');
  return `${r.name ?? '?'} ${r.access ?? '?'} ${r.direction ?? '?'} priority ${String(r.priority)} from ${list(src)} to ${list(dst)} protocol ${r.protocol ?? '?'}`;
}

/**
 * The NSG as the core sees it: one pool of slots (priorities of the band),
 * owned rules with their recorded expiry, foreign rules, conflicts and
 * warnings. Default security rules (priority 65000+) are fixed, count
 * toward no limit and are ignored.
 */
export function nsgToState(layout: Layout, nsg: ArmNetworkSecurityGroup): TargetState {
  const rules: Rule[] = [];
  const foreign: ForeignRule[] = [];
  const conflicts: Conflict[] = [];
  const warnings: string[] = [];
  const side = ourSide(layout);
  const usedPriorities = new Set<number>();
  const usedNames = new Set<string>();
  let foreignRules = 0;
  let foreignPrefixes = 0;
  const foreignRaw: ArmSecurityRule[] = [];

  for (const r of nsg.securityRules ?? []) {
    const name = r.name ?? '';
    usedNames.add(name);
    if (same(r.direction, layout.direction) && typeof r.priority === 'number') usedPriorities.add(r.priority);
    const failed = r.provisioningState !== undefined && same(r.provisioningState, 'Failed');
    const c = classifyRule(layout, r);
    if (failed) {
      warnings.push(`rule ${name} is in provisioning state Failed; Azure may not enforce it until it is written again${c.kind === 'owned' ? ', which the next apply does' : ''}`);
    }
    if (c.kind === 'owned') {
      // Written again with its own content, even when nothing else changes.
      rules.push(failed ? { ...c.rule, repair: 'rewrite a rule Azure left in provisioning state Failed' } : c.rule);
      continue;
    }
    if (c.kind === 'conflict') {
      conflicts.push({ slot: name, message: c.message });
      // Counted as foreign too: it takes capacity whether or not it is ours.
    }
    foreign.push({ slot: name, description: describeForeign(r) });
    foreignRaw.push(r);
    foreignRules++;
    foreignPrefixes += countedPrefixes(r, side);
    const inBand = typeof r.priority === 'number' && r.priority >= layout.band.start && r.priority <= layout.band.end;
    if (c.kind === 'foreign' && inBand && same(r.direction, layout.direction)) {
      conflicts.push({
        slot: name,
        message: `foreign rule ${name} (${layout.direction}, priority ${r.priority}) sits inside our priority band ${layout.band.start}-${layout.band.end}`,
      });
    }
  }

  // A foreign Allow evaluated before our band (lower number) lets traffic through before our Deny is reached.
  const ownNets = rules.flatMap((r) => r.cidrs.map((c) => toNet(c)));
  for (const r of foreignRaw) {
    if (!same(r.access, 'Allow') || !same(r.direction, layout.direction)) continue;
    if (typeof r.priority !== 'number' || r.priority >= layout.band.start) continue;
    const prefixes = sidePrefixes(r, side);
    const broad = prefixes.some(isEverything);
    const nets = prefixes.map((p) => tryParseCidr(p.trim())).filter((p) => p !== undefined).map((p) => toNet(p.cidr));
    if (broad || nets.some((n) => ownNets.some((o) => overlaps(n, o)))) {
      const ports = r.destinationPortRange ?? (r.destinationPortRanges ?? []).join(',');
      warnings.push(
        `foreign allow rule ${r.name ?? '?'} (priority ${r.priority}, protocol ${r.protocol ?? '?'}, ports ${ports || '?'}) is evaluated before our deny rules (band ${layout.band.start}-${layout.band.end}) and lets ${broad ? 'every address' : 'some banned addresses'} through`,
      );
    }
  }

  const freeSlots: string[] = [];
  for (let p = layout.band.start; p <= layout.band.end; p++) {
    const name = slotName(layout, p);
    if (!usedPriorities.has(p) && !usedNames.has(name)) freeSlots.push(name);
  }
  const bandSize = layout.band.end - layout.band.start + 1;
  const ruleCap = Math.min(layout.maxRules, bandSize);
  const pool: Pool = {
    id: poolId(layout),
    families: [4, 6],
    cidrsPerRule: layout.prefixesPerRule,
    maxRules: Math.max(0, Math.min(ruleCap, AZURE_LIMITS.rulesPerNsg - foreignRules)),
    maxCidrs: Math.max(0, layout.maxPrefixes - foreignPrefixes),
    freeSlots,
    bucketMs: layout.bucketMs,
    totals: { rules: ruleCap, cidrs: layout.maxPrefixes },
  };
  if ((nsg.subnets ?? []).length === 0 && (nsg.networkInterfaces ?? []).length === 0) {
    // An NSG filters only the subnets and network interfaces associated with it: with none, every ban is a no-op.
    warnings.push(`NSG ${nsg.name ?? '?'} is associated with no subnet or network interface: its rules filter no traffic, so no ban is enforced until it is associated with what it should protect`);
  }
  if (nsg.flushConnection !== true) {
    // NSG rules are stateful: without it, a connection opened before its address was banned (a SIP
    // registration over TCP, a UDP flow kept alive) stays open after our Deny lands.
    warnings.push(`NSG ${nsg.name ?? '?'} has flushConnection off: flows opened before an address was banned stay open until they end; enable flushConnection on the NSG to cut them when a Deny lands`);
  }
  return { pools: [pool], rules, foreign, conflicts, warnings };
}

/** What to do with one change, given the rule as it is right now (`undefined`: absent). */
export type WriteVerdict = 'write' | 'done';

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The per-write ownership check, run against a fresh GET of the rule just
 * before each PUT or DELETE (and again before every retry). It makes writes
 * idempotent (a retry after a lost response finds its own result and stops)
 * and refuses to overwrite anything another writer changed since the plan.
 */
export function writeVerdict(layout: Layout, target: string, change: Change, current: ArmSecurityRule | undefined): WriteVerdict {
  const stale = (why: string) => new OwnershipConflictError(target, [change.slot], `rule ${change.slot} ${why} since the plan was made; re-run to plan again`);
  if (!current) {
    if (change.kind === 'create') return 'write';
    if (change.kind === 'delete') return 'done';
    throw stale('was deleted');
  }
  const c = classifyRule(layout, current);
  if (c.kind !== 'owned') throw stale(c.kind === 'conflict' ? `changed owner (${c.message})` : 'was taken by a foreign rule');
  const state = current.provisioningState ?? 'Succeeded';
  if (same(state, 'Updating') || same(state, 'Deleting')) {
    // Our own earlier attempt (its response lost) or another writer's: wait for it to settle, then look again.
    throw new RetryableError(`rule ${change.slot} is ${state}`, { code: 'RuleNotSettled' });
  }
  const cidrs = c.rule.cidrs;
  const settled = !same(state, 'Failed');
  if (change.kind === 'delete') {
    if (sameList(cidrs, change.before?.cidrs ?? [])) return 'write';
    throw stale('was rewritten');
  }
  const after = change.after!;
  if (settled && sameList(cidrs, after.cidrs) && c.rule.expiresAt === Math.ceil(after.expiresAt / 1000) * 1000) return 'done';
  if (change.kind === 'create') {
    // A Failed create of ours holding our planned CIDRs is rewritten; anything else was created by someone else.
    if (!settled && sameList(cidrs, after.cidrs)) return 'write';
    throw stale('was created by another writer');
  }
  if (sameList(cidrs, change.before?.cidrs ?? []) || sameList(cidrs, after.cidrs)) return 'write';
  throw stale('was rewritten');
}
