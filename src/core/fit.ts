/**
 * Fit desired bans into one pool of a target: choose what is enforced when
 * it does not all fit, and place each CIDR into a rule. Pure.
 *
 * Selection: bans are ranked by origin class (manual, local, list), then the
 * latest expiry, then the CIDR; the top of the ranking is taken while the
 * pool's limits allow (total CIDRs, rules, rules per family).
 *
 * Placement is stable:
 * - a CIDR that is already enforced stays in its rule, unless its expiry
 *   left the rule's bucket (a ban set again for longer): it then moves to a
 *   rule of its bucket, added there before it leaves (phase 3 in the plan),
 *   so a CIDR that stays banned is never unprotected, not even for one call;
 * - a new CIDR goes first into a rule being changed anyway, then into a rule
 *   of similar expiry with free space, then into a vacated rule (a slot whose
 *   CIDRs were all lifted: AWS replaces in place), then into a new rule, and
 *   only then into any rule with space (the expiry bucket is exceeded, which
 *   is reported as a warning);
 * - a selected ban whose family has no rule and none to add takes the slot
 *   of the other family's smallest rule, whose members are merged into that
 *   family's other rules first (the selection counts packed rules, so it
 *   never leaves a ranked ban out for want of a rule);
 * - rules that hold many CIDRs group them by expiry bucket, so with every
 *   source down no CIDR outlives its own expiry by more than the bucket.
 *
 * Fragmentation heals by itself: members of a rule share an expiry bucket,
 * so rules drain together when their bans expire.
 */
import { ORIGIN_CLASS_RANK } from './types.js';
import type { Ban, Cidr, CidrIndex, Family, Pool, Rule, Unenforced } from './types.js';

export interface FitPolicy {
  /**
   * Recorded expiries are rewritten lazily, so a steady state costs zero
   * writes even when a source slides every expiry forward on each poll
   * (MikoPBX): a later desired expiry is recorded only once the recorded one
   * would run out within this margin; an earlier one (a shortened ban) is
   * recorded as soon as it is more than this margin earlier. Rules that are
   * written anyway always record the exact expiry.
   */
  refreshMarginMs: number;
}

export interface FitResult {
  /** Final rules of this pool (unchanged, updated, created). Rules to delete are absent. */
  rules: Rule[];
  /** Existing rules that end up empty and are deleted. */
  vacated: Rule[];
  unenforced: Unenforced[];
  /** CIDRs placed past their expiry bucket because no compatible rule was left. */
  bucketOverflow: number;
}

interface Slotted {
  rule: Rule;
  members: Cidr[];
  /** How many leading members were kept from the existing rule, in its order (the rest were added). */
  kept: number;
  /** Smallest and largest member expiry, kept up to date as members are added. */
  minE: number;
  maxE: number;
  recorded: number; // expiry on the target (or planned)
  existing: boolean;
  touched: boolean;
  vacant: boolean;
  /** Switched off on the target (`Rule.disabled`): nothing is added to it or moved out of it. */
  frozen: boolean;
  original?: Rule | undefined;
}

/** Rank key: lower is more important. Manual beats local beats list; later expiry first. */
function rankKey(b: Ban): number {
  // 2^43 ms is year 2248: expiries fit below the class step.
  return ORIGIN_CLASS_RANK[b.originClass] * 2 ** 43 + (2 ** 43 - Math.min(b.expiresAt, 2 ** 43 - 1));
}

function compareBans(a: Ban, b: Ban): number {
  const d = rankKey(a) - rankKey(b);
  if (d !== 0) return d;
  return a.cidr < b.cidr ? -1 : a.cidr > b.cidr ? 1 : 0;
}

/** Sorts a copy of `bans` by priority; cheap when everything fits (no selection needed). */
export function rankBans(bans: readonly Ban[]): Ban[] {
  return [...bans].sort(compareBans);
}

/**
 * A rule's members in sorted order. The members kept from an existing rule
 * come first, in that rule's order, which is already sorted when this
 * planner wrote it: then only the added ones are sorted and merged in (a
 * churn pass touches rules of thousands of CIDRs to add a few).
 */
function sortedMembers(s: Slotted): Cidr[] {
  const m = s.members;
  const k = s.kept;
  for (let i = 1; i < k; i++) if (m[i - 1]! > m[i]!) return m.sort();
  if (k === m.length) return m;
  const added = m.slice(k).sort();
  if (k === 0) return added;
  const out: Cidr[] = new Array<Cidr>(m.length);
  let i = 0;
  let j = 0;
  let o = 0;
  while (i < k && j < added.length) out[o++] = m[i]! <= added[j]! ? m[i++]! : added[j++]!;
  while (i < k) out[o++] = m[i++]!;
  while (j < added.length) out[o++] = added[j++]!;
  return out;
}

/** The members whose expiries fall in the widest-populated window of `width` ms (ties: the earliest). */
function largestBucket(members: readonly Cidr[], expiryOf: (c: Cidr) => number, width: number): Set<Cidr> {
  const byE = members.map((c) => ({ c, e: expiryOf(c) })).sort((a, b) => a.e - b.e);
  let best = 0;
  let bestLen = 0;
  for (let i = 0, j = 0; i < byE.length; i++) {
    while (byE[i]!.e - byE[j]!.e > width) j++;
    if (i - j + 1 > bestLen) {
      bestLen = i - j + 1;
      best = j;
    }
  }
  return new Set(byE.slice(best, best + bestLen).map((x) => x.c));
}

function sameMembers(a: readonly Cidr[], b: readonly Cidr[]): boolean {
  const set = new Set(b);
  return a.every((c) => set.has(c));
}

function unenforcedOf(b: Ban, reason: Unenforced['reason']): Unenforced {
  return { cidr: b.cidr, family: b.family, expiresAt: b.expiresAt, origin: b.origin, originClass: b.originClass, reason };
}

/**
 * `index` (optional): CIDR → position in `bans`, as `computeDesired` returns
 * it. It is used when every ban is selected (then it is the selection's own
 * index), which spares hashing every CIDR again on each pass.
 */
export function fitPool(bans: readonly Ban[], pool: Pool, existing: readonly Rule[], policy: FitPolicy, now: number, index?: CidrIndex): FitResult {
  const families = new Set<Family>(pool.families);
  const cpr = Math.max(1, pool.cidrsPerRule);
  const limitReason = pool.ruleLimitReason ?? 'capacity';
  const perFamilyRules = (f: Family): number => Math.min(pool.maxRules, pool.maxRulesPerFamily?.[f] ?? pool.maxRules);
  const cidrCap = Math.min(pool.maxCidrs, pool.maxRules * cpr);

  const eligible = families.has(4) && families.has(6) ? bans : bans.filter((b) => families.has(b.family));
  const unenforced: Unenforced[] = [];

  // --- Selection -----------------------------------------------------------
  const count: Record<Family, number> = { 4: 0, 6: 0 };
  const rulesFor = (n: number) => Math.ceil(n / cpr);
  let selected: readonly Ban[];
  const fitsAll = (() => {
    for (const b of eligible) count[b.family]++;
    const ok =
      count[4] + count[6] <= cidrCap &&
      rulesFor(count[4]) + rulesFor(count[6]) <= pool.maxRules &&
      rulesFor(count[4]) <= perFamilyRules(4) &&
      rulesFor(count[6]) <= perFamilyRules(6);
    count[4] = 0;
    count[6] = 0;
    return ok;
  })();
  if (fitsAll) {
    selected = eligible;
  } else {
    const chosen: Ban[] = [];
    selected = chosen;
    for (const b of rankBans(eligible)) {
      const f = b.family;
      const other: Family = f === 4 ? 6 : 4;
      const n = count[f] + 1;
      const ruleLimited = rulesFor(n) + rulesFor(count[other]) > pool.maxRules || rulesFor(n) > perFamilyRules(f);
      const total = count[4] + count[6] + 1;
      if (total > cidrCap || ruleLimited) {
        // `capacity` only when the pool's own CIDR cap ran out; a cap derived from the rule limit carries that limit's reason.
        unenforced.push(unenforcedOf(b, total > pool.maxCidrs ? 'capacity' : limitReason));
        continue;
      }
      count[f] = n;
      chosen.push(b);
    }
  }
  // CIDR → index in `selected`; `placed` marks what an existing rule already holds
  // (a typed array, not Map deletes: this runs over every enforced CIDR every pass).
  let want: CidrIndex;
  if (index && selected === bans && index.size === bans.length) want = index;
  else {
    const own = new Map<Cidr, number>();
    for (let i = 0; i < selected.length; i++) own.set(selected[i]!.cidr, i);
    want = own;
  }
  const placed = new Uint8Array(selected.length);

  // --- Keep what is already enforced ----------------------------------------
  const slots: Slotted[] = [];
  // A CIDR taken out of its rule because its expiry left the rule's bucket, and that rule: when no
  // rule of its bucket can take it, it goes back there rather than to a third rule.
  const evictedFrom = new Map<Cidr, Slotted>();
  // Moving a CIDR adds it elsewhere before it leaves its rule, so the pool holds it twice in between:
  // only as many moves as the pool's CIDR cap leaves room for.
  let moveRoom = Math.max(0, pool.maxCidrs - selected.length);
  // Enabled rules first: a CIDR held twice (after a crash or race) is kept where it is enforced.
  const sortedExisting = [...existing].sort((a, b) => Number(a.disabled === true) - Number(b.disabled === true) || (a.slot < b.slot ? -1 : a.slot > b.slot ? 1 : 0));
  for (const r of sortedExisting) {
    let members: Cidr[] = [];
    let minE = Infinity;
    let maxE = -Infinity;
    for (const c of r.cidrs) {
      const i = want.get(c);
      if (i === undefined || placed[i]) continue; // not wanted, or already kept by an earlier rule (a duplicate after a crash or race)
      const b = selected[i]!;
      if (b.family === r.family) {
        members.push(c);
        placed[i] = 1;
        if (b.expiresAt < minE) minE = b.expiresAt;
        if (b.expiresAt > maxE) maxE = b.expiresAt;
      }
    }
    let evicted: Cidr[] = [];
    if (cpr > 1 && maxE - minE > pool.bucketMs && moveRoom > 0 && !r.disabled) {
      // A member's expiry moved out of the rule's bucket (a ban set again for longer): keep the
      // largest group that fits one bucket, and place the others again (moved, make before break).
      const keep = largestBucket(members, (c) => selected[want.get(c)!]!.expiresAt, pool.bucketMs);
      evicted = members.filter((c) => !keep.has(c)).slice(0, moveRoom);
      if (evicted.length > 0) {
        moveRoom -= evicted.length;
        const out = new Set(evicted);
        members = members.filter((c) => !out.has(c));
        minE = Infinity;
        maxE = -Infinity;
        for (const c of members) {
          const e = selected[want.get(c)!]!.expiresAt;
          if (e < minE) minE = e;
          if (e > maxE) maxE = e;
        }
        for (const c of evicted) placed[want.get(c)!] = 0;
      }
    }
    slots.push({
      rule: r,
      members,
      kept: members.length,
      minE,
      maxE,
      recorded: r.expiresAt,
      existing: true,
      touched: members.length !== r.cidrs.length,
      vacant: members.length === 0,
      frozen: r.disabled === true,
      original: r,
    });
    for (const c of evicted) evictedFrom.set(c, slots.at(-1)!);
  }

  // --- Place what is new ----------------------------------------------------
  // Selected order is rank order when selection ran.
  const toPlace = selected.filter((_, i) => placed[i] === 0);
  // When selection ran, `selected` is already in rank order; otherwise rank the new ones now.
  if (fitsAll && toPlace.length > 1) toPlace.sort(compareBans);
  const freeSlots = [...pool.freeSlots];
  const liveRules = (): Record<Family, number> => {
    const n: Record<Family, number> = { 4: 0, 6: 0 };
    for (const s of slots) if (!s.vacant) n[s.rule.family]++;
    return n;
  };
  const ruleCount = liveRules();
  // Non-vacant rules with space, by family: the candidates for new CIDRs.
  const open: Record<Family, Slotted[]> = { 4: [], 6: [] };
  // A disabled rule takes nothing new, and is not reused once empty (a write would leave it disabled): it is deleted.
  for (const s of slots) if (!s.vacant && !s.frozen && s.members.length < cpr) open[s.rule.family].push(s);
  const vacant = slots.filter((s) => s.vacant && !s.frozen);
  let bucketOverflow = 0;

  /** Expiry spread of a rule if a CIDR expiring at `e` joined it. */
  const spread = (s: Slotted, e: number): number => Math.max(e, s.recorded, s.maxE) - Math.min(e, s.minE);

  /** The rule of `list` whose expiry spread grows least if a CIDR expiring at `e` joined it. */
  const leastSpread = (list: readonly Slotted[], e: number): Slotted | undefined => {
    let best: Slotted | undefined;
    let bestScore = Infinity;
    for (const s of list) {
      const score = spread(s, e);
      if (score < bestScore) {
        best = s;
        bestScore = score;
      }
    }
    return best;
  };

  const put = (s: Slotted, b: Ban) => {
    s.members.push(b.cidr);
    if (b.expiresAt < s.minE) s.minE = b.expiresAt;
    if (b.expiresAt > s.maxE) s.maxE = b.expiresAt;
    s.touched = true;
    if (s.members.length >= cpr) {
      const list = open[s.rule.family];
      const i = list.indexOf(s);
      if (i >= 0) list.splice(i, 1);
    }
  };

  /**
   * Empties the rule of the other family with the fewest members into that family's other open
   * rules, and returns it, given to family `f`. Its members are added elsewhere before they leave
   * it (phase 3), so the pool holds them twice in between: only within the CIDR cap's room.
   */
  const freeRuleFor = (f: Family): Slotted | undefined => {
    if (cpr <= 1) return undefined;
    let donor: Slotted | undefined;
    for (const s of slots) {
      const g = s.rule.family;
      if (s.vacant || s.frozen || g === f || s.members.length > moveRoom) continue;
      if (donor && s.members.length >= donor.members.length) continue;
      let space = 0;
      for (const o of open[g]) if (o !== s) space += cpr - o.members.length;
      if (space >= s.members.length) donor = s;
    }
    if (!donor) return undefined;
    const g = donor.rule.family;
    const list = open[g];
    const at = list.indexOf(donor);
    if (at >= 0) list.splice(at, 1);
    const moving = donor.members;
    donor.members = [];
    donor.kept = 0;
    donor.minE = Infinity;
    donor.maxE = -Infinity;
    donor.rule = { ...donor.rule, family: f };
    donor.touched = true;
    ruleCount[g]--;
    moveRoom -= moving.length;
    for (const c of moving) {
      const mb = selected[want.get(c)!]!;
      const to = leastSpread(list, mb.expiresAt)!;
      if (spread(to, mb.expiresAt) > pool.bucketMs) bucketOverflow++;
      put(to, mb);
    }
    return donor;
  };

  // Bans of each family still to place, to keep enough rules for every family:
  // a new rule opened for one family's expiry bucket must not leave another
  // family without any rule (that family's bans then share a rule past their
  // bucket instead, which is reported).
  const pending: Record<Family, number> = { 4: 0, 6: 0 };
  for (const b of toPlace) pending[b.family]++;
  const rulesStillNeeded = (g: Family): number => {
    let space = 0;
    for (const s of open[g]) space += cpr - s.members.length;
    return Math.max(0, Math.ceil((pending[g] - space) / cpr));
  };

  for (const b of toPlace) {
    pending[b.family]--;
    const f = b.family;
    // 1. a compatible open rule (touched ones first, then the closest expiry)
    let best: Slotted | undefined;
    let bestScore = Infinity;
    if (cpr > 1) {
      for (const s of open[f]) {
        if (spread(s, b.expiresAt) > pool.bucketMs) continue;
        const score = (s.touched ? 0 : 1e15) + Math.abs(s.recorded - b.expiresAt);
        if (score < bestScore) {
          best = s;
          bestScore = score;
        }
      }
    }
    if (best) {
      put(best, b);
      continue;
    }
    // 2. a vacated slot (replace in place), then 3. a new rule in a free slot.
    //    Either adds a live rule, so the rule limits must allow one more.
    const canAddRule = ruleCount[4] + ruleCount[6] < pool.maxRules && ruleCount[f] < perFamilyRules(f);
    const other: Family = f === 4 ? 6 : 4;
    const rulesLeftAfter = Math.min(pool.maxRules - ruleCount[4] - ruleCount[6], vacant.length + freeSlots.length) - 1;
    // When this ban can share an open rule of its family anyway, do not take the last rules another family needs.
    const keepForOther = cpr > 1 && open[f].length > 0 && rulesLeftAfter < rulesStillNeeded(other);
    if (canAddRule && !keepForOther && (vacant.length > 0 || freeSlots.length > 0)) {
      let s: Slotted;
      const vi = vacant.findIndex((v) => v.rule.family === f);
      if (vacant.length > 0) {
        s = vacant.splice(vi >= 0 ? vi : 0, 1)[0]!;
        s.vacant = false;
        s.kept = 0;
        s.minE = Infinity;
        s.maxE = -Infinity;
        s.rule = { ...s.rule, family: f };
      } else {
        s = {
          rule: { pool: pool.id, slot: freeSlots.shift()!, family: f, cidrs: [], expiresAt: b.expiresAt },
          members: [],
          kept: 0,
          minE: Infinity,
          maxE: -Infinity,
          recorded: b.expiresAt,
          existing: false,
          touched: true,
          vacant: false,
          frozen: false,
        };
        slots.push(s);
      }
      s.touched = true;
      s.recorded = b.expiresAt;
      ruleCount[f]++;
      put(s, b);
      if (s.members.length < cpr) open[f].push(s);
      continue;
    }
    // 4. back to the rule it was taken from, else any open rule of the family, least expiry overshoot
    if (cpr > 1 && open[f].length > 0) {
      const home = evictedFrom.get(b.cidr);
      const fb = home && open[f].includes(home) ? home : leastSpread(open[f], b.expiresAt);
      if (fb) {
        bucketOverflow++;
        put(fb, b);
        continue;
      }
    }
    // 5. no rule of this family and none to add, while the selection counted room for it: the
    //    rules of the other family hold few CIDRs each (one per expiry bucket). Merge the
    //    smallest of them into its family's other rules (past their bucket, reported) and give
    //    its slot to this ban, rather than leave a selected ban out.
    const freed = ruleCount[f] < perFamilyRules(f) ? freeRuleFor(f) : undefined;
    if (freed) {
      freed.recorded = b.expiresAt;
      ruleCount[f]++;
      put(freed, b);
      if (freed.members.length < cpr) open[f].push(freed);
      continue;
    }
    unenforced.push(unenforcedOf(b, canAddRule ? 'capacity' : limitReason));
  }

  // --- Final content and recorded expiry -------------------------------------
  const rules: Rule[] = [];
  const vacated: Rule[] = [];
  for (const s of slots) {
    if (s.vacant) {
      if (s.existing) vacated.push(s.original!);
      continue;
    }
    // A rule whose evicted members all came back holds what it held: it is not rewritten for that.
    if (s.existing && s.touched && s.members.length === s.original!.cidrs.length && sameMembers(s.members, s.original!.cidrs)) s.touched = false;
    const maxE = s.maxE;
    let expiresAt = s.recorded;
    const m = policy.refreshMarginMs;
    const shortened = maxE < s.recorded - m;
    // Near its end a recorded expiry is brought up to date, unless it is off by mere jitter (a tenth of the margin).
    const runningOut = maxE - s.recorded > m / 10 && s.recorded - now < m;
    // The recorded expiry is what an outage honours. A later expiry is recorded once the part not
    // yet recorded is longer than the margin and than what is left of the recorded one: a ban set
    // again for longer is recorded at once, while a duration that slides forward with the clock is
    // rewritten about once per half its length, never every pass. So a rule outlives the first half of
    // its known lifetime in any outage.
    const behind = maxE - s.recorded > Math.max(m, s.recorded - now);
    if (!s.existing || s.touched || shortened || runningOut || behind) expiresAt = maxE;
    const cidrs = s.touched || !s.existing ? sortedMembers(s) : s.rule.cidrs;
    const rule: Rule = { pool: pool.id, slot: s.rule.slot, family: s.rule.family, cidrs, expiresAt };
    if (s.frozen) {
      rule.disabled = true;
      for (const c of cidrs) unenforced.push(unenforcedOf(selected[want.get(c)!]!, 'disabled'));
    }
    if (s.existing && s.rule.repair !== undefined) rule.repair = s.rule.repair;
    rules.push(rule);
  }
  return { rules, vacated, unenforced, bucketOverflow };
}
