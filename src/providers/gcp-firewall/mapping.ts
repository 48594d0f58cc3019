/**
 * GCP VPC firewall rules ⇄ the core vocabulary (`Rule`, `Pool`,
 * `TargetState`). Pure: no SDK, no I/O, no clock.
 *
 * Field names follow the `Firewall` schema of the Compute Engine v1
 * discovery document (googleapis/discovery-artifact-manager,
 * discoveries/compute.v1.json), as the REST transport of
 * `@google-cloud/compute` sends and returns them.
 */
import { looksLikeMarker, formatMarker, parseMarker } from '../../core/marker.js';
import { overlaps, toNet, tryParseCidr, type Net } from '../../core/cidr.js';
import type { Cidr, Conflict, Family, ForeignRule, Pool, Rule, TargetState } from '../../core/types.js';

export type Direction = 'INGRESS' | 'EGRESS';

/** The subset of the Compute `Firewall` resource this provider reads and writes. */
export interface GcpFirewall {
  name?: string | null | undefined;
  description?: string | null | undefined;
  network?: string | null | undefined;
  priority?: number | null | undefined;
  direction?: string | null | undefined;
  sourceRanges?: string[] | null | undefined;
  destinationRanges?: string[] | null | undefined;
  sourceTags?: string[] | null | undefined;
  sourceServiceAccounts?: string[] | null | undefined;
  targetTags?: string[] | null | undefined;
  targetServiceAccounts?: string[] | null | undefined;
  allowed?: GcpProtocolPorts[] | null | undefined;
  denied?: GcpProtocolPorts[] | null | undefined;
  disabled?: boolean | null | undefined;
  logConfig?: { enable?: boolean | null | undefined; metadata?: string | null | undefined } | null | undefined;
  selfLink?: string | null | undefined;
}

export interface GcpProtocolPorts {
  IPProtocol?: string | null | undefined;
  ports?: string[] | null | undefined;
}

/** Limits of VPC firewall rules (Compute API reference, `Firewall`; VPC quotas and limits). */
export const GCP_LIMITS = {
  /** RFC 1035 label: `[a-z]([-a-z0-9]*[a-z0-9])?`, 1-63 characters. */
  nameLength: 63,
  minPriority: 0,
  /** 65535 is the priority of the implied rules; a rule there never beats them. */
  maxPriority: 65535,
  /** Source (or destination) ranges per rule, per the VPC quotas page. Peers hard-code 256 (see REFERENCE.md). */
  rangesPerRule: 5000,
  /** Slot names end in three digits. */
  maxRules: 999,
} as const;

export const NAME_RE = /^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/;

/** Where our rules live and what they look like; derived from the target config. */
export interface Layout {
  project: string;
  /** Network name (the last path segment). */
  network: string;
  owner: string;
  namePrefix: string;
  direction: Direction;
  band: { start: number; end: number };
  rangesPerRule: number;
  /** Owned rules allowed (config `max_rules`). */
  maxRules: number;
  bucketMs: number;
  log: boolean;
  targetTags: string[];
  targetServiceAccounts: string[];
}

/** The single pool of a target is named after its direction. */
export function poolId(layout: Layout): string {
  return layout.direction.toLowerCase();
}

/** The partial URL we write into `network`; the API accepts it and answers with the full URL. */
export function networkPath(layout: Layout): string {
  return `projects/${layout.project}/global/networks/${layout.network}`;
}

/**
 * `{ project, network }` of a network reference: a full URL, a partial
 * `projects/P/global/networks/N`, `global/networks/N` or a bare name (the
 * project is then `defaultProject`).
 */
export function parseNetworkRef(ref: string, defaultProject: string): { project: string; network: string } | undefined {
  const m = /(?:^|\/)projects\/([^/]+)\/global\/networks\/([^/?#]+)$/.exec(ref);
  if (m) return { project: m[1]!, network: m[2]! };
  const g = /^(?:\/?global\/networks\/)?([a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)$/.exec(ref);
  if (g) return { project: defaultProject, network: g[1]! };
  return undefined;
}

function sameNetwork(layout: Layout, ref: string | null | undefined): boolean {
  if (!ref) return false;
  const n = parseNetworkRef(ref, layout.project);
  return !!n && n.project === layout.project && n.network === layout.network;
}

function ownNamePrefix(layout: Layout): string {
  return `${layout.namePrefix}-${layout.owner}-`;
}

/** Slot `n` (1-based) is the rule name `<name_prefix>-<owner>-<nnn>`, e.g. `cloud-bouncer-default-001`. */
export function slotName(layout: Layout, n: number): string {
  return `${ownNamePrefix(layout)}${String(n).padStart(3, '0')}`;
}

/** The slot number a rule name encodes; `undefined` when the name is not one of our slots. */
export function slotIndex(layout: Layout, name: string): number | undefined {
  const prefix = ownNamePrefix(layout);
  if (!name.startsWith(prefix)) return undefined;
  const rest = name.slice(prefix.length);
  if (!/^\d{3}$/.test(rest)) return undefined;
  const n = Number(rest);
  return n >= 1 ? n : undefined;
}

/**
 * Priority of slot `n`: one step per slot from the start of the band,
 * clamped to its end (a single `priority` is a band of one, shared by every
 * rule). Priorities do not identify rules in GCP (names do), so sharing one
 * is harmless; distinct ones keep the console listing in slot order.
 */
export function slotPriority(layout: Layout, n: number): number {
  return Math.min(layout.band.start + n - 1, layout.band.end);
}

/** Our side of a rule: banned addresses are sources for INGRESS, destinations for EGRESS. */
function ourRangesField(direction: Direction): 'sourceRanges' | 'destinationRanges' {
  return direction === 'INGRESS' ? 'sourceRanges' : 'destinationRanges';
}

export function ourRanges(rule: GcpFirewall, direction: Direction): string[] {
  return [...(rule[ourRangesField(direction)] ?? [])];
}

/** The body of an insert: a deny of every protocol from (or to) the CIDRs, the marker in the description. */
export function ruleBody(layout: Layout, slot: string, cidrs: readonly Cidr[], expiresAt: number): GcpFirewall {
  const n = slotIndex(layout, slot);
  if (n === undefined) throw new RangeError(`not one of our slots: ${slot}`);
  return {
    name: slot,
    description: formatMarker({ owner: layout.owner, expiresAt }),
    network: networkPath(layout),
    priority: slotPriority(layout, n),
    direction: layout.direction,
    denied: [{ IPProtocol: 'all' }],
    [ourRangesField(layout.direction)]: [...cidrs],
    logConfig: { enable: layout.log },
    ...(layout.targetTags.length > 0 ? { targetTags: [...layout.targetTags] } : {}),
    ...(layout.targetServiceAccounts.length > 0 ? { targetServiceAccounts: [...layout.targetServiceAccounts] } : {}),
  };
}

/**
 * The body of a PATCH (JSON merge patch: a list given replaces the stored
 * one). It carries the ranges, the marker, and the shape the config asks
 * for, so a rule whose priority or logging drifted is corrected by its next
 * write. Empty lists are not sent by the REST transport (proto3 JSON drops
 * them), so target tags removed from the config stay until the rule is
 * recreated; `disabled` is left alone so an operator's switch is respected.
 */
export function rulePatch(layout: Layout, slot: string, cidrs: readonly Cidr[], expiresAt: number): GcpFirewall {
  const { name: _name, network: _network, direction: _direction, denied: _denied, ...rest } = ruleBody(layout, slot, cidrs, expiresAt);
  return rest;
}

export type Classified =
  | { kind: 'owned'; rule: Rule; drift: string[] }
  | { kind: 'conflict'; message: string }
  | { kind: 'foreign' }
  /** Another cloud-bouncer owner's rule (its marker and name agree). */
  | { kind: 'other-owner' };

function deniesEverything(r: GcpFirewall): boolean {
  const denied = r.denied ?? [];
  return denied.length === 1 && (denied[0]!.IPProtocol ?? '').toLowerCase() === 'all' && (denied[0]!.ports ?? []).length === 0 && (r.allowed ?? []).length === 0;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const x = [...new Set(a)].sort();
  const y = [...new Set(b)].sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/**
 * Classifies one firewall rule of the project:
 * - `owned`: our slot name, our marker, our network and direction, a deny
 *   of every protocol, nothing but one family of CIDRs on our side. Drift in
 *   what we set from config (priority, logging, targets) is reported as a
 *   warning and corrected by the next PATCH; a rule someone disabled stays
 *   disabled and is marked so (`Rule.disabled`);
 * - `conflict`: our name prefix (`<name_prefix>-<owner>-`) on anything else:
 *   someone wrote or edited a rule under our name. Nothing is written;
 * - `other-owner`: a rule whose marker names another owner and whose name
 *   carries that owner's prefix (owners `web` and `web-2` never collide);
 * - `foreign`: anything else.
 */
export function classifyFirewall(layout: Layout, r: GcpFirewall): Classified {
  const name = r.name ?? '';
  const prefix = ownNamePrefix(layout);
  if (!name.startsWith(prefix)) return { kind: 'foreign' };
  const marker = parseMarker(r.description);
  if (marker && marker.owner !== layout.owner && name.startsWith(`${layout.namePrefix}-${marker.owner}-`)) return { kind: 'other-owner' };
  const why = (text: string): Classified => ({ kind: 'conflict', message: `rule ${name} uses our name prefix ${prefix} but ${text}` });
  if (!marker || marker.owner !== layout.owner) {
    return why(looksLikeMarker(r.description) ? `its marker is not owner ${layout.owner}'s` : `has no ownership marker for owner ${layout.owner} in its description`);
  }
  const n = slotIndex(layout, name);
  if (n === undefined) return why('its name does not end in a 3-digit slot number');
  if (!sameNetwork(layout, r.network)) {
    return why(`belongs to network ${r.network ?? '(none)'}, not ${networkPath(layout)} (targets on different networks of one project need different name_prefix or owner values)`);
  }
  if ((r.direction ?? 'INGRESS') !== layout.direction) return why(`its direction is ${String(r.direction)}, not ${layout.direction}`);
  if (!deniesEverything(r)) return why('it is not a deny of every protocol (we write denied: [{IPProtocol: all}])');
  const field = ourRangesField(layout.direction);
  const otherField = field === 'sourceRanges' ? 'destinationRanges' : 'sourceRanges';
  if ((r[otherField] ?? []).length > 0) return why(`it lists ${otherField} (we write none)`);
  if ((r.sourceTags ?? []).length > 0 || (r.sourceServiceAccounts ?? []).length > 0) return why('it matches source tags or service accounts (we match addresses only)');
  const raw = r[field] ?? [];
  if (raw.length === 0) return why(`it lists no ${field}`);
  const cidrs: Cidr[] = [];
  const families = new Set<Family>();
  for (const v of raw) {
    const p = tryParseCidr(v.trim());
    if (!p) return why(`its ${field} lists ${JSON.stringify(v)}, which is not an IP or CIDR`);
    cidrs.push(p.cidr);
    families.add(p.family);
  }
  if (families.size !== 1) return why(`it mixes IPv4 and IPv6 ${field}`);
  const drift: string[] = [];
  const priority = slotPriority(layout, n);
  if (r.priority !== priority) drift.push(`priority ${String(r.priority)} (config: ${priority})`);
  if (!!r.logConfig?.enable !== layout.log) drift.push(`logging ${r.logConfig?.enable ? 'on' : 'off'} (config: ${layout.log ? 'on' : 'off'})`);
  if (!sameSet(r.targetTags ?? [], layout.targetTags)) drift.push(`target tags [${(r.targetTags ?? []).join(', ')}] (config: [${layout.targetTags.join(', ')}])`);
  if (!sameSet(r.targetServiceAccounts ?? [], layout.targetServiceAccounts)) drift.push('target service accounts differ from config');
  const family = [...families][0]!;
  const rule: Rule = { pool: poolId(layout), slot: name, family, cidrs: [...new Set(cidrs)].sort(), expiresAt: marker.expiresAt };
  // The operator's switch is respected (a PATCH leaves `disabled` alone): the planner puts nothing new
  // into the rule and reports its ranges unenforced until someone enables it.
  if (r.disabled) rule.disabled = true;
  return { kind: 'owned', rule, drift };
}

function list(xs: readonly string[]): string {
  return xs.length > 3 ? `${xs.slice(0, 3).join(',')},…(${xs.length})` : xs.join(',') || '-';
}

function protocols(ps: readonly GcpProtocolPorts[] | null | undefined): string {
  return (ps ?? []).map((p) => `${p.IPProtocol ?? '?'}${(p.ports ?? []).length > 0 ? `:${(p.ports ?? []).join(',')}` : ''}`).join(' ') || '-';
}

export function describeFirewall(r: GcpFirewall): string {
  const action = (r.allowed ?? []).length > 0 ? `allow ${protocols(r.allowed)}` : `deny ${protocols(r.denied)}`;
  const dir = r.direction ?? 'INGRESS';
  const ranges = dir === 'INGRESS' ? `from ${list(r.sourceRanges ?? [])}` : `to ${list(r.destinationRanges ?? [])}`;
  return `${r.name ?? '?'} ${dir} priority ${String(r.priority ?? 1000)} ${action} ${ranges}${r.disabled ? ' (disabled)' : ''}`;
}

function isEverything(range: string): boolean {
  const p = tryParseCidr(range.trim());
  return !!p && p.prefix === 0;
}

export interface ReadOptions {
  /** Lower the rule cap to this many owned rules and report `quota` (the project's firewall quota was hit). */
  quotaRules?: number | undefined;
}

/**
 * The project's firewall rules as the core sees them: one pool (slots are
 * rule names, so free slots are names no rule of the project uses: names are
 * unique per project, across networks), owned rules with their recorded
 * expiry, foreign rules of our network, conflicts and warnings.
 */
export function firewallsToState(layout: Layout, rules: readonly GcpFirewall[], opts: ReadOptions = {}): TargetState {
  const owned: Rule[] = [];
  const ownedPriority = new Map<string, number>();
  const foreign: ForeignRule[] = [];
  const conflicts: Conflict[] = [];
  const warnings: string[] = [];
  const names = new Set<string>();
  const allows: GcpFirewall[] = [];

  for (const r of rules) {
    const name = r.name ?? '';
    names.add(name);
    const c = classifyFirewall(layout, r);
    if (c.kind === 'owned') {
      owned.push(c.rule);
      ownedPriority.set(c.rule.slot, r.priority ?? 1000);
      if (c.drift.length > 0) warnings.push(`rule ${name} drifted from the config: ${c.drift.join('; ')}; its next write restores the configured shape`);
      if (c.rule.disabled) {
        const n = c.rule.cidrs.length;
        warnings.push(`rule ${name} is disabled: its ${n} range${n === 1 ? ' is' : 's are'} not enforced (listed unenforced: disabled); nothing new goes into it, and it is deleted once its bans end; enable it to enforce them again`);
      }
      continue;
    }
    if (c.kind === 'conflict') conflicts.push({ slot: name, message: c.message });
    if (!sameNetwork(layout, r.network) && c.kind !== 'conflict') continue;
    // A conflict takes its slot whether or not it is ours; a foreign rule of our network is read for warnings.
    foreign.push({ slot: name, description: describeFirewall(r) });
    if (c.kind === 'foreign' && (r.allowed ?? []).length > 0 && !r.disabled && (r.direction ?? 'INGRESS') === layout.direction) allows.push(r);
  }

  // A foreign allow evaluated before a deny of ours (lower number; deny wins ties) lets banned traffic through.
  const ours = owned.flatMap((rule) => rule.cidrs.map((cidr) => ({ cidr, net: toNet(cidr), priority: ownedPriority.get(rule.slot)! })));
  for (const a of allows) {
    const p = a.priority ?? 1000;
    const ranges = ourRanges(a, layout.direction);
    const broad = ranges.some(isEverything);
    const nets: Net[] = ranges.map((v) => tryParseCidr(v.trim())).filter((p) => p !== undefined).map((p) => toNet(p.cidr));
    const shadowed = ours.filter((o) => o.priority > p && (broad || nets.some((n) => overlaps(n, o.net))));
    const before = ours.length === 0 ? p < layout.band.start : shadowed.length > 0;
    if (!before || (!broad && shadowed.length === 0)) continue;
    const tags = (a.targetTags ?? []).length > 0 ? `, on instances tagged ${(a.targetTags ?? []).join(',')}` : '';
    warnings.push(
      `foreign allow rule ${a.name ?? '?'} (priority ${p}, ${protocols(a.allowed)}${tags}) is evaluated before our deny rules (priority ${layout.band.start}${layout.band.end !== layout.band.start ? `-${layout.band.end}` : ''}) and lets ${broad ? 'every address' : `${shadowed.length} banned CIDR${shadowed.length === 1 ? '' : 's'}`} through`,
    );
  }

  const freeSlots: string[] = [];
  for (let n = 1; n <= layout.maxRules; n++) {
    const name = slotName(layout, n);
    if (!names.has(name)) freeSlots.push(name);
  }
  const quota = opts.quotaRules !== undefined;
  const maxRules = quota ? Math.min(layout.maxRules, Math.max(owned.length, opts.quotaRules!)) : layout.maxRules;
  const pool: Pool = {
    id: poolId(layout),
    families: [4, 6],
    cidrsPerRule: layout.rangesPerRule,
    maxRules,
    maxCidrs: layout.maxRules * layout.rangesPerRule,
    freeSlots,
    bucketMs: layout.bucketMs,
    ...(quota ? { ruleLimitReason: 'quota' as const } : {}),
    totals: { rules: layout.maxRules, cidrs: layout.maxRules * layout.rangesPerRule },
  };
  if (quota) warnings.push(`the project's firewall-rule quota was exhausted: new rules are not created (${owned.length} owned rules in use); bans that need one are reported as unenforced (quota)`);
  return { pools: [pool], rules: owned, foreign, conflicts, warnings };
}
