/**
 * The one shared vocabulary of cloud-bouncer. A `Ban` is a `Ban` from the
 * desired state through fitting and planning to every provider's mapping.
 *
 * Times are milliseconds since the Unix epoch. CIDRs are canonical strings
 * (host bits cleared, `/32` or `/128` added to bare addresses, IPv6
 * compressed and lower-case), so string equality is CIDR equality.
 */

export type Family = 4 | 6;

/** Canonical CIDR string, e.g. `192.0.2.0/24`, `2001:db8::/48`. */
export type Cidr = string;

/**
 * Origin classes rank bans when a target is full: an operator's manual ban
 * beats a local detection, which beats a community list entry.
 */
export type OriginClass = 'manual' | 'local' | 'list';

export const ORIGIN_CLASS_RANK: Record<OriginClass, number> = { manual: 0, local: 1, list: 2 };

/**
 * One decision from a stream, validated and normalised. It carries every
 * field of a `Ban`, so the desired state can use it as one without copying
 * (a million decisions per pass is a real size).
 */
export interface Decision {
  /** Name of the source (config `sources[].name`). */
  source: string;
  id?: number | undefined;
  origin: string;
  originClass: OriginClass;
  scenario: string;
  /** Lower-cased scope: `ip` or `range`. */
  scope: string;
  /** Lower-cased decision type, e.g. `ban`, `captcha`. */
  type: string;
  /** The value as received. */
  value: string;
  cidr: Cidr;
  family: Family;
  prefix: number;
  expiresAt: number;
}

/** A CIDR that should be denied at the cloud edge until `expiresAt`. */
export interface Ban {
  cidr: Cidr;
  family: Family;
  prefix: number;
  expiresAt: number;
  origin: string;
  originClass: OriginClass;
  scenario: string;
  source: string;
}

/** Why a ban (or part of one) is not written to a target. */
export type UnenforcedReason =
  /** The target has no room left for it (rules, CIDRs per rule, total CIDRs). */
  | 'capacity'
  /** The cloud's quota (e.g. GCP firewall rules per project) is exhausted. */
  | 'quota'
  /** The last apply of this item failed; it is retried on the next pass. */
  | 'write_failed'
  /** It sits in an owned rule someone switched off (GCP `disabled`); it is enforced again once the rule is enabled. */
  | 'disabled';

/** Why a decision was refused before fitting. Reported, never silently dropped. */
export type RefusedReason =
  /** Broader than the family's minimum prefix (e.g. wider than /16 for IPv4). */
  | 'min_prefix'
  /** Entirely covered by the whitelist or `never_ban`. */
  | 'whitelisted'
  /** Expired before this pass (negative or zero duration). */
  | 'expired';

export interface Refused {
  value: string;
  reason: RefusedReason;
  detail?: string | undefined;
  source?: string | undefined;
  origin?: string | undefined;
  scenario?: string | undefined;
}

export interface Unenforced {
  cidr: Cidr;
  family: Family;
  expiresAt: number;
  origin: string;
  originClass: OriginClass;
  reason: UnenforcedReason;
}

/**
 * A group of slots that the fitter fills. Most targets have one pool; an AWS
 * NACL managed in both directions has one per direction. Every desired ban
 * is fitted into every pool independently.
 */
export interface Pool {
  id: string;
  /** Families this pool may hold. One family per rule always holds. */
  families: Family[];
  /** CIDRs one rule may hold (1 for AWS NACL entries). */
  cidrsPerRule: number;
  /** Owned rules allowed in this pool, foreign usage already deducted. */
  maxRules: number;
  /** Per-family cap on owned rules (AWS counts IPv4 and IPv6 entries separately). */
  maxRulesPerFamily?: Partial<Record<Family, number>> | undefined;
  /** CIDRs allowed across all owned rules, foreign usage deducted (Azure: 4000 per NSG). */
  maxCidrs: number;
  /** Slot ids not used by any rule (owned or foreign), in the order they should be taken. */
  freeSlots: string[];
  /**
   * Width of an expiry bucket (ms). Rules that hold many CIDRs group them so
   * no CIDR outlives its own expiry by more than this. Ignored when
   * `cidrsPerRule` is 1: the expiry is then exact per rule.
   */
  bucketMs: number;
  /** Which reason to report when `maxRules` is what runs out. Default `capacity`. */
  ruleLimitReason?: UnenforcedReason | undefined;
  /** Totals before foreign deductions, for the capacity report. */
  totals?: { rules: number; cidrs: number } | undefined;
}

/** An owned rule as read from (or planned for) a target. */
export interface Rule {
  pool: string;
  /** Provider-native identity of the slot: NACL rule number, GCP/Azure rule name. */
  slot: string;
  family: Family;
  /** Sorted canonical CIDRs. Empty when the target records a claim whose rule is missing (aws-nacl after an interrupted pass): the planner reuses or deletes it. */
  cidrs: Cidr[];
  /** Recorded expiry: the rule is removed once this passes, even with every source down. */
  expiresAt: number;
  /**
   * Someone switched the rule off (GCP `disabled: true`): its CIDRs are not enforced. The switch is
   * respected: the planner adds nothing to the rule and moves nothing out of it, reports its CIDRs
   * unenforced (`disabled`), lets them leave as their bans end, and deletes the rule once it is empty.
   */
  disabled?: true | undefined;
  /**
   * The target holds the rule in a state that may not enforce it (Azure `provisioningState: Failed`):
   * it is written again with its content even when nothing changed. The text is the change's reason.
   */
  repair?: string | undefined;
}

/** A rule we do not own. Read only to count capacity and to warn. */
export interface ForeignRule {
  pool?: string | undefined;
  slot: string;
  /** What the provider wants the user to see, e.g. `rule 100 allow 0.0.0.0/0`. */
  description: string;
}

/** A foreign rule inside our band, or a name we would claim. The target fails, touching nothing. */
export interface Conflict {
  slot: string;
  message: string;
}

/** What `Provider.read()` returns. */
export interface TargetState {
  pools: Pool[];
  rules: Rule[];
  foreign: ForeignRule[];
  conflicts: Conflict[];
  warnings: string[];
}

export interface RuleContent {
  cidrs: Cidr[];
  expiresAt: number;
}

export type ChangeKind = 'create' | 'update' | 'delete';

/**
 * One write to one rule. `phase` orders writes: every phase-1 change
 * (removals only) finishes before any phase-2 change (additions) starts, and
 * phase-2 changes are sorted so the total CIDR count only grows. Phase 3 runs
 * once every phase-2 change succeeded: the changes that take away a CIDR
 * whose addresses stay banned through a CIDR another change adds (a range
 * split around a new whitelist entry, a CIDR moved to a rule of its expiry
 * bucket), so those addresses are never unprotected (make before break).
 */
export interface Change {
  kind: ChangeKind;
  pool: string;
  slot: string;
  family: Family;
  phase: 1 | 2 | 3;
  before?: RuleContent | undefined;
  after?: RuleContent | undefined;
  /** CIDRs added and removed by this change (derived from before/after). */
  added: Cidr[];
  removed: Cidr[];
  reason: string;
}

export interface CapacityUse {
  pool: string;
  rules: { used: number; total: number };
  cidrs: { used: number; total: number };
}

export interface TargetPlan {
  target: string;
  provider: string;
  changes: Change[];
  unenforced: Unenforced[];
  capacity: CapacityUse[];
  conflicts: Conflict[];
  warnings: string[];
  /** Provider-specific rendering of slots (e.g. AWS rule number and direction). */
  slots?: Record<string, Record<string, string | number>> | undefined;
  /** Set when the target could not be planned (read failed, conflict). */
  error?: string | undefined;
  summary: {
    create: number;
    update: number;
    delete: number;
    unchanged: number;
    enforced: number;
    unenforced: number;
  };
}

export interface SourceStatus {
  name: string;
  ok: boolean;
  error?: string | undefined;
  decisions: number;
  skipped: number;
  whitelist: number;
  durationMs: number;
}

/** The versioned plan contract (`--output json`). Documented in README. */
export interface Plan {
  version: 1;
  generatedAt: string;
  /** True when a source failed or the whitelist is incomplete: only expired or whitelisted rules are removed, nothing new is added from failed sources. */
  failStatic: boolean;
  sources: SourceStatus[];
  refused: Refused[];
  targets: TargetPlan[];
}

/** CIDR → position in a list of bans (a Map is one): `computeDesired` returns it with its bans, for the planner. */
export interface CidrIndex {
  get(cidr: Cidr): number | undefined;
  readonly size: number;
}
