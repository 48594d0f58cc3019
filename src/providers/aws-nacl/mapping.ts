/**
 * NACL entries and tags ⇄ cloud-bouncer rules. Pure: no SDK, no clock, no I/O.
 *
 * NACL entries have no description field and no client token, so ownership
 * and expiry live in the NACL's tags (at most 50 tags, keys up to 128 and
 * values up to 256 characters: Amazon EC2 User Guide, "Tag restrictions").
 * Claims are packed four rule numbers to a tag:
 *
 *   key    cloud-bouncer:<owner>:<direction>:<base>      base = 4 × floor(rule / 4)
 *   value  <rule>=<cidr>@<expiry, unix seconds> …         records sorted by rule, one space apart
 *
 *   cloud-bouncer:default:ingress:12 = "12=192.0.2.7/32@1795420800 14=2001:db8::1/128@1795424400"
 *
 * One more tag per owner holds the apply lease (see `index.ts`):
 *
 *   cloud-bouncer:<owner>:lease = <run id>@<expiry, unix seconds>
 *
 * Why fixed groups of four: a record can live in exactly one tag, so a write
 * never moves a record between tags, two tags never disagree about a rule,
 * and a tag is only ever deleted once every rule it claimed is gone. Four
 * worst-case records (`32766=ffff:…:ffff/128@9999999999`, 60 characters)
 * take 243 characters, under the 256-character limit. Every character used
 * (digits, letters, `. : / = @` and space) is allowed in EC2 tag values.
 */
import { overlaps, toNet, tryParseCidr } from '../../core/cidr.js';
import { MARKER_PREFIX } from '../../core/marker.js';
import type { Cidr, Conflict, Family, ForeignRule, Pool, Rule, TargetState } from '../../core/types.js';

export type Direction = 'ingress' | 'egress';
export const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];

/** Rule numbers users may write (EC2 API reference, CreateNetworkAclEntry: 1 to 32766). */
export const RULE_NUMBER_MIN = 1;
export const RULE_NUMBER_MAX = 32766;
/**
 * The default `*` entries, one per family: DescribeNetworkAcls shows them as
 * rule number 32767 (IPv4) and 32768 (IPv6). They count toward the quota
 * (Amazon VPC user guide, "Amazon VPC quotas": the entry quota "includes the
 * default deny rules (rule number 32767 for IPv4 and 32768 for IPv6)").
 */
export const DEFAULT_RULE_NUMBER_V4 = 32767;
export const DEFAULT_RULE_NUMBER_V6 = 32768;

/** True for a default `*` entry's rule number (no rule number above 32766 can be written). */
export function isDefaultRule(ruleNumber: number): boolean {
  return ruleNumber === DEFAULT_RULE_NUMBER_V4 || ruleNumber === DEFAULT_RULE_NUMBER_V6;
}

/** The slot id an entry is reported under: `*` for the default entries, as the console shows them. */
export function slotOf(ruleNumber: number): string {
  return isDefaultRule(ruleNumber) ? '*' : String(ruleNumber);
}
/** Tag limits per resource (Amazon EC2 User Guide, "Tag restrictions"). */
export const MAX_TAGS = 50;
export const MAX_TAG_KEY = 128;
export const MAX_TAG_VALUE = 256;
/** Rule numbers per claim tag. Four worst-case records fit in 256 characters. */
export const GROUP_SIZE = 4;

export interface NaclEntry {
  ruleNumber: number;
  egress: boolean;
  /** `allow` or `deny`. */
  action: string;
  /** IANA protocol number as a string; `-1` means all traffic. */
  protocol: string;
  /** Canonical CIDR from `CidrBlock` or `Ipv6CidrBlock`; undefined when missing or not parsable. */
  cidr?: Cidr | undefined;
  family?: Family | undefined;
  portRange?: { from?: number | undefined; to?: number | undefined } | undefined;
  icmp?: { type?: number | undefined; code?: number | undefined } | undefined;
}

export interface NaclTag {
  key: string;
  value: string;
}

/** One DescribeNetworkAcls answer for our NACL. */
export interface NaclSnapshot {
  id: string;
  entries: NaclEntry[];
  tags: NaclTag[];
  /** Subnets the NACL is associated with (`Associations`). With none, its entries filter no traffic. */
  subnetIds: string[];
}

/** What a tag records about one rule number: the CIDR we wrote there and its expiry (ms). */
export interface Claim {
  cidr: Cidr;
  expiresAt: number;
}

export type Claims = Record<Direction, Map<number, Claim>>;

export interface RuleBand {
  start: number;
  end: number;
}

export function directionOf(egress: boolean): Direction {
  return egress ? 'egress' : 'ingress';
}

export function emptyClaims(): Claims {
  return { ingress: new Map(), egress: new Map() };
}

const KEY_PREFIX = `${MARKER_PREFIX}:`;

export function groupBase(rule: number): number {
  return Math.floor(rule / GROUP_SIZE) * GROUP_SIZE;
}

export function groupKey(owner: string, dir: Direction, rule: number): string {
  return `${KEY_PREFIX}${owner}:${dir}:${groupBase(rule)}`;
}

export function formatRecord(rule: number, claim: Claim): string {
  return `${rule}=${claim.cidr}@${Math.ceil(claim.expiresAt / 1000)}`;
}

/** The apply lease of one owner, as read from the tags. */
export interface Lease {
  /** The tag value as read, for the conditional release (DeleteTags with key and value). */
  value: string;
  /** The run that holds it; empty when the value is unreadable. */
  runId: string;
  /** ms; 0 when the value is unreadable (an unreadable lease counts as expired). */
  expiresAt: number;
}

export function leaseKey(owner: string): string {
  return `${KEY_PREFIX}${owner}:lease`;
}

/** Run ids are ours: letters, digits, `.` and `-`; the expiry is rounded up to the second. */
export function formatLease(runId: string, expiresAt: number): string {
  return `${runId}@${Math.ceil(expiresAt / 1000)}`;
}

const LEASE_KEY_RE = /^cloud-bouncer:([a-z0-9][a-z0-9-]{0,29}):lease$/;
const LEASE_VALUE_RE = /^([A-Za-z0-9.-]{1,64})@(\d{1,11})$/;

export function parseLease(value: string): Lease {
  const m = LEASE_VALUE_RE.exec(value);
  return m ? { value, runId: m[1]!, expiresAt: Number(m[2]) * 1000 } : { value, runId: '', expiresAt: 0 };
}

const KEY_RE = /^cloud-bouncer:([a-z0-9][a-z0-9-]{0,29}):(ingress|egress):(\d{1,5})$/;
const RECORD_RE = /^(\d{1,5})=([0-9A-Fa-f.:]{2,39}\/\d{1,3})@(\d{1,11})$/;

export interface ParsedTags {
  /** Our claims, by direction and rule number. */
  claims: Claims;
  /** Our claim tags as read (key → value), for the writer's diff. Malformed keys are not included. */
  ownKeys: Map<string, string>;
  /** Rules claimed by other cloud-bouncer owners (`<direction>:<rule>` → owner). */
  others: Map<string, string>;
  /** Tags that are not our claim tags (they use the 50-tag budget too). */
  foreignTags: number;
  /** Tags or records we could not read. Their rules count as unclaimed, which fails safe (a conflict). */
  problems: string[];
  /** Our owner's apply lease, when the tag exists. */
  lease?: Lease | undefined;
}

/** Reads the claim tags of `owner` (and notes other owners' claims) from a NACL's tags. */
export function parseTags(tags: readonly NaclTag[], owner: string): ParsedTags {
  const out: ParsedTags = { claims: emptyClaims(), ownKeys: new Map(), others: new Map(), foreignTags: 0, problems: [] };
  for (const { key, value } of tags) {
    if (!key.startsWith(KEY_PREFIX)) {
      out.foreignTags++;
      continue;
    }
    const lm = LEASE_KEY_RE.exec(key);
    if (lm) {
      if (lm[1] !== owner) {
        out.foreignTags++;
        continue;
      }
      out.lease = parseLease(value);
      if (!out.lease.runId) out.problems.push(`lease tag ${key} holds ${JSON.stringify(value.slice(0, 80))}, not <run id>@<unix seconds>; it counts as expired`);
      continue;
    }
    const m = KEY_RE.exec(key);
    const base = m ? Number(m[3]) : NaN;
    if (!m || base % GROUP_SIZE !== 0 || base > RULE_NUMBER_MAX) {
      out.foreignTags++;
      if (key.startsWith(`${KEY_PREFIX}${owner}:`)) out.problems.push(`tag ${key} looks like a claim tag of owner ${owner} but its key is malformed; it is left alone`);
      continue;
    }
    const tagOwner = m[1]!;
    const dir = m[2] as Direction;
    const mine = tagOwner === owner;
    if (mine) out.ownKeys.set(key, value);
    else out.foreignTags++;
    for (const rec of value.split(' ')) {
      if (rec === '') continue;
      const r = RECORD_RE.exec(rec);
      const rule = r ? Number(r[1]) : NaN;
      const parsed = r ? tryParseCidr(r[2]!) : undefined;
      const problem = !r
        ? 'is not <rule>=<cidr>@<unix seconds>'
        : rule < RULE_NUMBER_MIN || rule > RULE_NUMBER_MAX || groupBase(rule) !== base
          ? `claims rule ${rule}, outside the tag's rules ${base}-${base + GROUP_SIZE - 1}`
          : !parsed || parsed.cidr !== r[2]
            ? 'has a CIDR that is not canonical'
            : undefined;
      if (problem) {
        if (mine) out.problems.push(`tag ${key}: record ${JSON.stringify(rec.slice(0, 80))} ${problem}; ignored`);
        continue;
      }
      if (!mine) {
        out.others.set(`${dir}:${rule}`, tagOwner);
        continue;
      }
      if (out.claims[dir].has(rule)) {
        out.problems.push(`tag ${key}: rule ${rule} is recorded twice; the first record wins`);
        continue;
      }
      out.claims[dir].set(rule, { cidr: parsed!.cidr, expiresAt: Number(r![3]) * 1000 });
    }
  }
  return out;
}

/** The claim tags that record `claims`: one tag per non-empty group of four rule numbers. */
export function packClaims(owner: string, claims: Claims): Map<string, string> {
  const groups = new Map<string, Array<[number, Claim]>>();
  for (const dir of DIRECTIONS) {
    for (const [rule, claim] of claims[dir]) {
      const key = groupKey(owner, dir, rule);
      let list = groups.get(key);
      if (!list) groups.set(key, (list = []));
      list.push([rule, claim]);
    }
  }
  const out = new Map<string, string>();
  for (const [key, list] of groups) {
    list.sort((a, b) => a[0] - b[0]);
    const value = list.map(([rule, claim]) => formatRecord(rule, claim)).join(' ');
    // Cannot happen with four records per tag; checked so a format change cannot silently overflow.
    if (key.length > MAX_TAG_KEY || value.length > MAX_TAG_VALUE) throw new RangeError(`claim tag ${key} would exceed the EC2 tag limits (${value.length} characters)`);
    out.set(key, value);
  }
  return out;
}

/**
 * What one CreateTags carries, for error messages: the rule numbers of the
 * claims in it, by direction, and the apply lease, e.g. `claims of ingress
 * rules 10, 11, egress rule 16, and the apply lease of owner default`.
 */
export function describeTagWrite(tags: readonly NaclTag[]): string {
  // A write carries one owner's tags: read them as a read of the NACL would.
  const owner = tags.map((t) => KEY_RE.exec(t.key)?.[1] ?? LEASE_KEY_RE.exec(t.key)?.[1]).find((o) => o !== undefined) ?? '';
  const parsed = parseTags(tags, owner);
  const parts = DIRECTIONS.flatMap((dir) => {
    const list = [...parsed.claims[dir].keys()].sort((a, b) => a - b);
    return list.length > 0 ? [`${dir} rule${list.length === 1 ? '' : 's'} ${list.join(', ')}`] : [];
  });
  const out: string[] = [];
  if (parts.length > 0) out.push(`claims of ${parts.join(', ')}`);
  if (parsed.lease) out.push(`the apply lease of owner ${owner}`);
  if (parsed.foreignTags > 0) out.push(`${parsed.foreignTags} other tag${parsed.foreignTags === 1 ? '' : 's'}`);
  return out.length > 0 ? out.join(', and ') : 'no tags';
}

/** Human-readable traffic selector of an entry, e.g. `all`, `tcp 22`, `udp 5060-5061`, `icmp`. */
export function trafficOf(e: NaclEntry): string {
  const ports = e.portRange?.from === undefined ? '' : e.portRange.from === e.portRange.to ? ` ${e.portRange.from}` : ` ${e.portRange.from}-${e.portRange.to}`;
  switch (e.protocol) {
    case '-1':
      return 'all';
    case '6':
      return `tcp${ports}`;
    case '17':
      return `udp${ports}`;
    case '1':
      return 'icmp';
    case '58':
      return 'icmpv6';
    default:
      return `protocol ${e.protocol}`;
  }
}

function outsideBand(rule: number, dir: Direction, owner: string, band: { start: number; end: number }, what: string): string {
  return `rule ${rule} (${dir}), ${what}, is claimed by owner ${owner} but lies outside rule_band ${band.start}-${band.end}: another cloud-bouncer with owner ${owner} writes to this NACL, or the band was changed. Give each bouncer its own owner and a band of its own; to clear an old band, run flush --yes with that band`;
}

export function describeEntry(e: NaclEntry): string {
  return `rule ${slotOf(e.ruleNumber)} ${directionOf(e.egress)} ${e.action} ${trafficOf(e)} ${e.cidr ?? '(no CIDR)'}`;
}

export interface ToStateArgs {
  snapshot: NaclSnapshot;
  owner: string;
  directions: readonly Direction[];
  band: RuleBand;
  /** Entries allowed per direction and family, default entries included (20, or up to 40 after a quota raise). */
  entriesPerFamily: number;
  now: number;
}

/** Everything `read()` reports, plus the parsed tags `apply()` starts from. */
export interface NaclState extends TargetState {
  tags: ParsedTags;
}

/**
 * Turns one DescribeNetworkAcls answer into pools, owned rules, foreign
 * rules, conflicts and warnings.
 *
 * - An entry is ours when a claim of our owner records its rule number in
 *   its direction. If the claimed CIDR differs from the entry's (a pass
 *   stopped between updating the claim and replacing the entry), the rule is
 *   reported with the entry's CIDR and an expiry of `now` at the latest: we
 *   cannot prove how long that CIDR was meant to stay, and the interrupted
 *   pass was replacing it anyway.
 * - A claim without an entry (a pass stopped between writing a claim and
 *   creating the entry, or between deleting an entry and dropping its claim)
 *   is reported as an owned rule with no CIDRs, so the planner either reuses
 *   the slot or deletes it, which drops the claim.
 * - An entry inside the band that no claim of ours records is a conflict.
 */
export function toState(args: ToStateArgs): NaclState {
  const { snapshot, owner, band } = args;
  const tags = parseTags(snapshot.tags, owner);
  const rules: Rule[] = [];
  const foreign: ForeignRule[] = [];
  const conflicts: Conflict[] = [];
  const warnings: string[] = [...tags.problems];
  // A NACL filters only the traffic of the subnets associated with it (Amazon VPC user guide,
  // "Control subnet traffic with network access control lists"): with none, every ban is a no-op.
  if (snapshot.subnetIds.length === 0) {
    warnings.push(`network ACL ${snapshot.id} is associated with no subnet: its entries filter no traffic, so no ban is enforced until it is associated with the subnets to protect`);
  }
  const pools: Pool[] = [];
  const bandSize = band.end - band.start + 1;

  for (const dir of DIRECTIONS) {
    if (!args.directions.includes(dir) && tags.claims[dir].size > 0) {
      const list = [...tags.claims[dir].keys()].sort((a, b) => a - b);
      warnings.push(`owner ${owner} still claims ${dir} rules ${list.join(', ')} but ${dir} is not managed by this target; they are left alone (manage ${dir} again and flush to remove them)`);
    }
  }

  // Room for new claim tags: a new group of four rule numbers costs one tag. An apply also writes
  // the lease tag (one per owner) before its claims, so its room is kept when the lease is absent.
  const tagRoom = Math.max(0, MAX_TAGS - snapshot.tags.length - (tags.lease ? 0 : 1));
  let roomLeft = tagRoom;
  const managed = DIRECTIONS.filter((d) => args.directions.includes(d));

  managed.forEach((dir, poolIndex) => {
    const claims = tags.claims[dir];
    const entries = snapshot.entries.filter((e) => directionOf(e.egress) === dir);
    const used = new Set<number>();
    const foreignCount: Record<Family, number> = { 4: 0, 6: 0 };
    const ownedNets: ReturnType<typeof toNet>[] = [];
    const foreignEntries: NaclEntry[] = [];
    for (const e of entries) {
      used.add(e.ruleNumber);
      const claim = claims.get(e.ruleNumber);
      const inBand = e.ruleNumber >= band.start && e.ruleNumber <= band.end;
      if (claim && !isDefaultRule(e.ruleNumber) && !inBand) {
        // Ownership is the band AND the claim: an entry of our owner outside the band belongs to
        // another bouncer with the same owner, or to a band the config no longer names. Neither is
        // ours to remove, and writing the shared claim tags beside it is not safe either.
        conflicts.push({ slot: String(e.ruleNumber), message: outsideBand(e.ruleNumber, dir, owner, band, describeEntry(e)) });
        continue;
      }
      if (claim && !isDefaultRule(e.ruleNumber)) {
        if (e.action !== 'deny' || e.protocol !== '-1' || !e.cidr || !e.family) {
          conflicts.push({
            slot: String(e.ruleNumber),
            message: `${describeEntry(e)} is claimed by owner ${owner} but is not a deny-all entry: it was changed outside cloud-bouncer`,
          });
          continue;
        }
        let expiresAt = claim.expiresAt;
        if (claim.cidr !== e.cidr) {
          expiresAt = Math.min(claim.expiresAt, args.now);
          warnings.push(`rule ${e.ruleNumber} (${dir}) holds ${e.cidr} but its claim records ${claim.cidr} (an earlier pass stopped mid-replace); it is treated as expiring now`);
        }
        rules.push({ pool: dir, slot: String(e.ruleNumber), family: e.family, cidrs: [e.cidr], expiresAt });
        ownedNets.push(toNet(e.cidr));
        continue;
      }
      if (inBand) {
        const other = tags.others.get(`${dir}:${e.ruleNumber}`);
        conflicts.push({
          slot: String(e.ruleNumber),
          message: `${describeEntry(e)} is inside the ban band ${band.start}-${band.end} but ${other ? `belongs to cloud-bouncer owner ${other}` : `no claim tag of owner ${owner} records it`}`,
        });
        continue;
      }
      // Foreign: counted against the quota (default `*` entries included) and read for warnings.
      const family: Family = e.family ?? (e.cidr?.includes(':') ? 6 : 4);
      foreignCount[family]++;
      foreignEntries.push(e);
      foreign.push({ pool: dir, slot: slotOf(e.ruleNumber), description: describeEntry(e) });
    }
    // Claims whose entry is missing: owned rules with nothing in them.
    for (const [rule, claim] of claims) {
      if (used.has(rule)) continue;
      used.add(rule);
      if (rule < band.start || rule > band.end) {
        conflicts.push({ slot: String(rule), message: outsideBand(rule, dir, owner, band, `a claim for ${claim.cidr} without its entry`) });
        continue;
      }
      rules.push({ pool: dir, slot: String(rule), family: claim.cidr.includes(':') ? 6 : 4, cidrs: [], expiresAt: claim.expiresAt });
    }
    // A foreign allow entry evaluated before the band lets banned addresses through.
    for (const e of foreignEntries) {
      if (e.action !== 'allow' || e.ruleNumber >= band.start || !e.cidr) continue;
      const net = toNet(e.cidr);
      const broad = net.prefix === 0;
      if (broad || ownedNets.some((o) => overlaps(o, net))) {
        warnings.push(
          `rule ${e.ruleNumber} (${dir}) allows ${trafficOf(e)} ${dir === 'ingress' ? 'from' : 'to'} ${e.cidr} and is evaluated before the ban band ${band.start}-${band.end}: bans are useless for ${broad ? 'every address' : 'the banned addresses it covers'}${e.protocol === '-1' ? '' : ' on that traffic'}`,
        );
      }
    }

    // Free rule numbers, lowest first; a new group of four costs one tag from the shared budget.
    const poolRoom = Math.ceil(roomLeft / (managed.length - poolIndex));
    let opened = 0;
    const openGroups = new Set<number>();
    const freeSlots: string[] = [];
    let budgetCut = 0;
    for (let n = band.start; n <= band.end; n++) {
      if (used.has(n)) continue;
      const base = groupBase(n);
      const exists = tags.ownKeys.has(groupKey(owner, dir, n)) || openGroups.has(base);
      if (!exists) {
        if (opened >= poolRoom) {
          budgetCut++;
          continue;
        }
        opened++;
        openGroups.add(base);
      }
      freeSlots.push(String(n));
    }
    roomLeft -= opened;
    if (budgetCut > 0) {
      warnings.push(`the NACL has ${snapshot.tags.length} of ${MAX_TAGS} tags (${tags.foreignTags} not ours${tags.lease ? '' : ', one kept for the apply lease'}): ${budgetCut} free ${dir} rule numbers cannot be claimed; remove unused tags to make room`);
    }

    const q = args.entriesPerFamily;
    const perFamily: Record<Family, number> = { 4: Math.max(0, q - foreignCount[4]), 6: Math.max(0, q - foreignCount[6]) };
    const ownedHere = rules.filter((r) => r.pool === dir).length;
    const maxRules = Math.min(perFamily[4] + perFamily[6], ownedHere + freeSlots.length);
    pools.push({
      id: dir,
      families: [4, 6],
      // One CIDR per entry: the expiry is exact per entry, no bucketing.
      cidrsPerRule: 1,
      maxRules,
      maxRulesPerFamily: perFamily,
      maxCidrs: maxRules,
      freeSlots,
      bucketMs: 0,
      totals: { rules: Math.min(2 * q, bandSize), cidrs: Math.min(2 * q, bandSize) },
    });
  });

  return { pools, rules, foreign, conflicts, warnings, tags };
}
