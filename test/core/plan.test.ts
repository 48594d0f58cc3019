import { describe, expect, it } from 'vitest';
import { contains, netToCidr, subtract, toNet } from '../../src/core/cidr.js';
import { planTarget } from '../../src/core/plan.js';
import type { Ban, Pool, Rule, TargetState } from '../../src/core/types.js';
import { HOUR, NOW, ban } from '../helpers/bans.js';

function pool(over: Partial<Pool> = {}): Pool {
  const maxRules = over.maxRules ?? 4;
  return {
    id: 'main',
    families: [4, 6],
    cidrsPerRule: 4,
    maxRules,
    maxCidrs: 1_000,
    freeSlots: Array.from({ length: maxRules }, (_, i) => `r${String(i + 1).padStart(2, '0')}`),
    bucketMs: HOUR,
    ...over,
  };
}

function state(rules: Rule[], p: Pool = pool()): TargetState {
  const used = new Set(rules.map((r) => r.slot));
  return { pools: [{ ...p, freeSlots: p.freeSlots.filter((s) => !used.has(s)) }], rules, foreign: [], conflicts: [], warnings: [] };
}

function rule(slot: string, cidrs: string[], expiresAt = NOW + 4 * HOUR, family: 4 | 6 = 4): Rule {
  return { pool: 'main', slot, family, cidrs: [...cidrs].sort(), expiresAt };
}

function plan(bans: Ban[], s: TargetState, now = NOW) {
  return planTarget({ target: 't', provider: 'file', bans, state: s, now });
}

/** Applies a plan's changes to a rule list, as a provider would. */
function applied(rules: Rule[], p: ReturnType<typeof plan>): Rule[] {
  const out = new Map(rules.map((r) => [r.slot, r]));
  for (const c of p.changes) {
    if (c.kind === 'delete') out.delete(c.slot);
    else out.set(c.slot, { pool: c.pool, slot: c.slot, family: c.family, cidrs: c.after!.cidrs, expiresAt: c.after!.expiresAt });
  }
  return [...out.values()];
}

describe('core/plan', () => {
  describe.each([
    {
      name: 'empty target, two bans of one family → one create',
      rules: [] as Rule[],
      bans: [ban('192.0.2.1'), ban('192.0.2.2')],
      expect: { create: 1, update: 0, delete: 0 },
    },
    {
      name: 'IPv4 and IPv6 never share a rule',
      rules: [],
      bans: [ban('192.0.2.1'), ban('2001:db8::1')],
      expect: { create: 2, update: 0, delete: 0 },
    },
    {
      name: 'steady state → nothing',
      rules: [rule('r01', ['192.0.2.1/32', '192.0.2.2/32'])],
      bans: [ban('192.0.2.1'), ban('192.0.2.2')],
      expect: { create: 0, update: 0, delete: 0 },
    },
    {
      name: 'one new ban joins a rule with space → one update',
      rules: [rule('r01', ['192.0.2.1/32'])],
      bans: [ban('192.0.2.1'), ban('192.0.2.9')],
      expect: { create: 0, update: 1, delete: 0 },
    },
    {
      name: 'every ban lifted → delete',
      rules: [rule('r01', ['192.0.2.1/32'])],
      bans: [],
      expect: { create: 0, update: 0, delete: 1 },
    },
    {
      name: 'a ban with a far later expiry gets its own bucket',
      rules: [rule('r01', ['192.0.2.1/32'])],
      bans: [ban('192.0.2.1'), ban('192.0.2.9', { expiresAt: NOW + 30 * HOUR })],
      expect: { create: 1, update: 0, delete: 0 },
    },
  ])('$name', (tc) => {
    it('plans exactly the expected changes', () => {
      const p = plan(tc.bans, state(tc.rules));
      expect(p.summary).toMatchObject(tc.expect);
      const after = applied(tc.rules, p);
      expect(after.flatMap((r) => r.cidrs).sort()).toEqual(tc.bans.map((b) => b.cidr).sort());
      for (const r of after) expect(new Set(r.cidrs.map((c) => c.includes(':')))).toHaveProperty('size', r.cidrs.length ? 1 : 0);
      // The next plan against the result is empty.
      expect(plan(tc.bans, state(after)).changes).toEqual([]);
    });
  });

  it('does not rewrite an expiry that moved less than the refresh margin', () => {
    const r = rule('r01', ['192.0.2.1/32'], NOW + 4 * HOUR);
    const p = plan([ban('192.0.2.1', { expiresAt: NOW + 4 * HOUR + 5 * 60_000 })], state([r]));
    expect(p.changes).toEqual([]);
  });

  it('records a shortened expiry at once, as a pure update', () => {
    const r = rule('r01', ['192.0.2.1/32'], NOW + 6 * HOUR);
    const p = plan([ban('192.0.2.1', { expiresAt: NOW + 2 * HOUR })], state([r]));
    expect(p.changes).toHaveLength(1);
    expect(p.changes[0]).toMatchObject({ kind: 'update', reason: 'refresh recorded expiry', added: [], removed: [] });
    expect(p.changes[0]!.after!.expiresAt).toBe(NOW + 2 * HOUR);
  });

  it('costs no write while a source reports the time left of a fixed ban, give or take a second', () => {
    const r = rule('r01', ['192.0.2.1/32'], NOW + HOUR);
    for (let minute = 1; minute < 60; minute++) {
      const now = NOW + minute * 60_000;
      const jitter = minute % 2 === 0 ? 1_000 : -1_000;
      expect(plan([ban('192.0.2.1', { expiresAt: NOW + HOUR + jitter })], state([r]), now).changes).toEqual([]);
    }
  });

  it('rewrites a duration that slides forward with the clock about once per half its length, not every pass', () => {
    const r = rule('r01', ['192.0.2.1/32'], NOW + HOUR);
    // A rolling ban: an hour from now, every minute. The unrecorded part (minute) passes what is left (60 - minute) after 30.
    for (let minute = 1; minute <= 30; minute++) {
      const now = NOW + minute * 60_000;
      expect(plan([ban('192.0.2.1', { expiresAt: now + HOUR })], state([r]), now).changes).toEqual([]);
    }
    const at = NOW + 31 * 60_000;
    const p = plan([ban('192.0.2.1', { expiresAt: at + HOUR })], state([r]), at);
    expect(p.changes).toHaveLength(1);
    expect(p.changes[0]).toMatchObject({ kind: 'update', added: [], removed: [] });
    expect(p.changes[0]!.after!.expiresAt).toBe(at + HOUR);
  });

  it('records at once a ban set again for longer, so an outage does not remove it at the old expiry', () => {
    const r = rule('r01', ['192.0.2.1/32'], NOW + HOUR);
    const p = plan([ban('192.0.2.1', { expiresAt: NOW + 24 * HOUR })], state([r]));
    expect(p.changes).toHaveLength(1);
    expect(p.changes[0]!.after!.expiresAt).toBe(NOW + 24 * HOUR);
    // Later by no more than the margin: not worth a write.
    expect(plan([ban('192.0.2.1', { expiresAt: NOW + HOUR + 9 * 60_000 })], state([r])).changes).toEqual([]);
  });

  it.each([
    ['one CIDR per rule (AWS)', pool({ cidrsPerRule: 1, maxRules: 12 })],
    ['many CIDRs per rule', pool({ cidrsPerRule: 4, maxRules: 4 })],
  ])('splits an enforced range around a new whitelist entry with no gap: the pieces land before the range goes (%s)', (_n, p1) => {
    // Prepare: r01 holds 10.0.0.0/24; 10.0.0.5 is now whitelisted, so the /24 becomes 8 pieces.
    const r = rule('r01', ['10.0.0.0/24']);
    const pieces = subtract(toNet('10.0.0.0/24'), [toNet('10.0.0.5/32')]).map(netToCidr);
    expect(pieces).toHaveLength(8);

    // Act
    const p = plan(pieces.map((c) => ban(c)), state([r], p1));

    // Assess: write by write, in the planned order, every piece stays covered by some rule.
    const covered = (rules: Rule[]) => pieces.every((c) => rules.some((x) => x.cidrs.some((y) => contains(toNet(y), toNet(c)))));
    let rules = [r];
    const phases = [...p.changes].sort((a, b) => a.phase - b.phase);
    expect(phases).toEqual(p.changes);
    for (const c of p.changes) {
      rules = applied(rules, { ...p, changes: [c] });
      expect(covered(rules), `after ${c.kind} ${c.slot}`).toBe(true);
    }
    expect(rules.flatMap((x) => x.cidrs).sort()).toEqual([...pieces].sort());
    expect(p.changes.filter((c) => c.removed.includes('10.0.0.0/24')).map((c) => c.phase)).toEqual([3]);
  });

  it('moves a CIDR whose ban was set again for much longer to a rule of its bucket, adding it before it leaves', () => {
    // Prepare: r01 holds .1 and .2, both for an hour (bucket 1 h); .2 is now banned for a week.
    const r = rule('r01', ['192.0.2.1/32', '192.0.2.2/32'], NOW + HOUR);
    const bans = [ban('192.0.2.1', { expiresAt: NOW + HOUR }), ban('192.0.2.2', { expiresAt: NOW + 168 * HOUR })];

    // Act
    const p = plan(bans, state([r]));

    // Assess: .2 gets a rule of its own first; r01 then drops it and keeps .1's expiry, so in an
    // outage .1 is not kept for a week.
    expect(p.changes.map((c) => [c.kind, c.slot, c.phase, c.added, c.removed, c.after!.expiresAt])).toEqual([
      ['create', 'r02', 2, ['192.0.2.2/32'], [], NOW + 168 * HOUR],
      ['update', 'r01', 3, [], ['192.0.2.2/32'], NOW + HOUR],
    ]);
    let rules = [r];
    for (const c of p.changes) {
      rules = applied(rules, { ...p, changes: [c] });
      expect(rules.flatMap((x) => x.cidrs)).toEqual(expect.arrayContaining(['192.0.2.1/32', '192.0.2.2/32']));
    }
    expect(plan(bans, state(rules)).changes).toEqual([]);
  });

  it('leaves such a CIDR in its rule, with a warning and no write for it, when no rule of its bucket can be had', () => {
    // One rule only: nowhere to move .2 to.
    const r = rule('r01', ['192.0.2.1/32', '192.0.2.2/32'], NOW + HOUR);
    const bans = [ban('192.0.2.1', { expiresAt: NOW + HOUR }), ban('192.0.2.2', { expiresAt: NOW + 168 * HOUR })];
    const p = plan(bans, state([r], pool({ maxRules: 1 })));
    expect(p.changes.map((c) => [c.kind, c.slot, c.added, c.removed])).toEqual([['update', 'r01', [], []]]);
    expect(p.warnings).toEqual([expect.stringMatching(/1 CIDRs share a rule with a later expiry than their own bucket allows/)]);
    // Once recorded, a week-long ban that slides forward with the clock costs no write on later passes.
    const after = applied([r], p);
    const later = NOW + 5 * 60_000;
    expect(plan([bans[0]!, ban('192.0.2.2', { expiresAt: later + 168 * HOUR })], state(after, pool({ maxRules: 1 })), later).changes).toEqual([]);
    // The pool's CIDR cap leaves no room to hold .2 twice while it moves: it stays too.
    expect(plan(bans, state([r], pool({ maxCidrs: 2 }))).changes.map((c) => [c.kind, c.slot, c.added, c.removed])).toEqual([['update', 'r01', [], []]]);
  });

  it('gives a selected ban of a family without a rule the slot of the smallest rule of the other family, merged first', () => {
    // Prepare: two rules, each holding one IPv4 list ban of its own expiry bucket; a manual IPv6 ban arrives.
    const p1 = pool({ maxRules: 2 });
    const r1 = rule('r01', ['198.51.100.1/32'], NOW + HOUR);
    const r2 = rule('r02', ['198.51.100.2/32'], NOW + 5 * HOUR);
    const bans = [
      ban('198.51.100.1', { originClass: 'list', expiresAt: NOW + HOUR }),
      ban('198.51.100.2', { originClass: 'list', expiresAt: NOW + 5 * HOUR }),
      ban('2001:db8::7', { originClass: 'manual', expiresAt: NOW + 2 * HOUR }),
    ];

    // Act
    const p = plan(bans, state([r1, r2], p1));

    // Assess: everything enforced; the IPv4 bans share r02 (past its bucket, reported), r01 turns IPv6
    // only after .1 is in r02.
    expect(p.unenforced).toEqual([]);
    expect(p.changes.map((c) => [c.slot, c.phase, c.family, c.added, c.removed])).toEqual([
      ['r02', 2, 4, ['198.51.100.1/32'], []],
      ['r01', 3, 6, ['2001:db8::7/128'], ['198.51.100.1/32']],
    ]);
    expect(p.warnings).toEqual([expect.stringMatching(/^pool main: 1 CIDRs share a rule/)]);
    let rules = [r1, r2];
    for (const c of p.changes) {
      rules = applied(rules, { ...p, changes: [c] });
      expect(rules.flatMap((x) => x.cidrs)).toEqual(expect.arrayContaining(['198.51.100.1/32', '198.51.100.2/32']));
    }
    expect(plan(bans, state(rules, p1)).changes).toEqual([]);
  });

  it('keeps the old order when deferring would break a limit in between (the total CIDR cap)', () => {
    // r01 also holds a lifted ban; the pool holds at most 9 CIDRs and the final state uses all 9, so r01 keeping
    // its two old CIDRs until phase 3 would make 10: the shrink cannot wait.
    const p1 = pool({ cidrsPerRule: 8, maxRules: 2, maxCidrs: 9 });
    const r1 = rule('r01', ['10.0.0.0/24', '198.51.100.1/32']);
    const r2 = rule('r02', ['192.0.2.1/32']);
    const pieces = subtract(toNet('10.0.0.0/24'), [toNet('10.0.0.5/32')]).map(netToCidr);
    const p = plan([...pieces, '192.0.2.1/32'].map((c) => ban(c)), state([r1, r2], p1));
    expect(p.changes.find((c) => c.slot === 'r01')).toMatchObject({ removed: ['10.0.0.0/24', '198.51.100.1/32'] });
    expect(p.changes.map((c) => c.phase)).not.toContain(3);
    // With room for one more CIDR it waits.
    expect(plan([...pieces, '192.0.2.1/32'].map((c) => ban(c)), state([r1, r2], { ...p1, maxCidrs: 10 })).changes.find((c) => c.slot === 'r01')!.phase).toBe(3);
  });

  it('enforces the highest-priority bans and reports the rest as unenforced: capacity', () => {
    const p1 = pool({ maxRules: 1, cidrsPerRule: 2, freeSlots: ['r01'] });
    const bans = [
      ban('198.51.100.1', { originClass: 'list', expiresAt: NOW + 40 * 60_000 }),
      ban('198.51.100.2', { originClass: 'manual', expiresAt: NOW + 10 * 60_000 }),
      ban('198.51.100.3', { originClass: 'local', expiresAt: NOW + 20 * 60_000 }),
      ban('198.51.100.4', { originClass: 'local', expiresAt: NOW + 30 * 60_000 }),
    ];
    const p = plan(bans, state([], p1));
    const written = p.changes.flatMap((c) => c.added);
    expect(written.sort()).toEqual(['198.51.100.2/32', '198.51.100.4/32']);
    expect(p.unenforced.map((u) => [u.cidr, u.reason])).toEqual([
      ['198.51.100.3/32', 'capacity'],
      ['198.51.100.1/32', 'capacity'],
    ]);
    expect(p.capacity[0]).toMatchObject({ rules: { used: 1, total: 1 }, cidrs: { used: 2, total: 2 } });
  });

  it('adding one ban to a full but stable target changes at most one rule', () => {
    const p4 = pool({ maxRules: 4, cidrsPerRule: 3 });
    const bans: Ban[] = [];
    for (let i = 0; i < 12; i++) bans.push(ban(`198.51.100.${i + 1}`, { originClass: 'list', expiresAt: NOW + (i + 1) * 60_000 }));
    const first = plan(bans, state([], p4));
    const rules = applied([], first);
    expect(rules.reduce((n, r) => n + r.cidrs.length, 0)).toBe(12);
    const more = [...bans, ban('203.0.113.50', { originClass: 'manual', expiresAt: NOW + 5 * 60_000 })];
    const second = plan(more, state(rules, p4));
    expect(second.changes).toHaveLength(1);
    expect(second.changes[0]!.added).toEqual(['203.0.113.50/32']);
    expect(second.changes[0]!.removed).toHaveLength(1);
    expect(second.unenforced).toHaveLength(1);
  });

  it('replaces in place on single-CIDR slots instead of delete + create', () => {
    const p1 = pool({ cidrsPerRule: 1, maxRules: 2, freeSlots: ['100', '101'] });
    const s = state([rule('100', ['192.0.2.1/32']), rule('101', ['192.0.2.2/32'])], p1);
    const p = plan([ban('192.0.2.2'), ban('192.0.2.3')], s);
    expect(p.changes).toHaveLength(1);
    expect(p.changes[0]).toMatchObject({ kind: 'update', slot: '100', added: ['192.0.2.3/32'], removed: ['192.0.2.1/32'] });
  });

  it('respects per-family rule limits (AWS counts IPv4 and IPv6 separately)', () => {
    const p1 = pool({ cidrsPerRule: 1, maxRules: 4, maxRulesPerFamily: { 4: 1, 6: 3 }, freeSlots: ['1', '2', '3', '4'] });
    const p = plan([ban('192.0.2.1'), ban('192.0.2.2'), ban('2001:db8::1'), ban('2001:db8::2')], state([], p1));
    expect(p.summary.create).toBe(3);
    expect(p.unenforced.map((u) => u.cidr)).toHaveLength(1);
    expect(p.unenforced[0]!.family).toBe(4);
  });

  it('keeps a CIDR that stays banned in its rule and orders removals before additions', () => {
    const p2 = pool({ maxRules: 2, cidrsPerRule: 2, freeSlots: ['r01', 'r02'] });
    const s = state([rule('r01', ['192.0.2.1/32', '192.0.2.2/32']), rule('r02', ['192.0.2.3/32', '192.0.2.4/32'])], p2);
    const p = plan([ban('192.0.2.1'), ban('192.0.2.3'), ban('192.0.2.5')], s);
    expect(p.changes.map((c) => c.phase)).toEqual([...p.changes.map((c) => c.phase)].sort());
    const after = applied(s.rules, p);
    expect(after.find((r) => r.slot === 'r01')!.cidrs).toContain('192.0.2.1/32');
    expect(after.find((r) => r.slot === 'r02')!.cidrs).toContain('192.0.2.3/32');
    // Never more than the cap mid-apply: walk the ordered changes.
    let total = s.rules.reduce((n, r) => n + r.cidrs.length, 0);
    for (const c of p.changes) {
      total += (c.after?.cidrs.length ?? 0) - (c.before?.cidrs.length ?? 0);
      expect(total).toBeLessThanOrEqual(4);
    }
  });

  it('drops a CIDR duplicated across rules (after a crash) from the later rule', () => {
    const s = state([rule('r01', ['192.0.2.1/32']), rule('r02', ['192.0.2.1/32'])]);
    const p = plan([ban('192.0.2.1')], s);
    expect(p.changes).toHaveLength(1);
    expect(p.changes[0]).toMatchObject({ kind: 'delete', slot: 'r02' });
  });

  it('plans nothing at all when the target reports a conflict', () => {
    const s = { ...state([]), conflicts: [{ slot: 'r01', message: 'rule r01 is not ours' }] };
    const p = plan([ban('192.0.2.1')], s);
    expect(p.changes).toEqual([]);
    expect(p.error).toMatch(/r01 is not ours/);
  });

  it('keeps a rule for a family that needs one instead of spending it on another family\'s expiry bucket', () => {
    const p2 = pool({ maxRules: 2, cidrsPerRule: 4, freeSlots: ['r01', 'r02'] });
    const bans = [
      ban('192.0.2.1', { originClass: 'manual', expiresAt: NOW + 10 * HOUR }),
      ban('192.0.2.2', { originClass: 'manual', expiresAt: NOW + 5 * HOUR }),
      ban('192.0.2.3', { originClass: 'list', expiresAt: NOW + 1 * HOUR }),
      ban('2001:db8::1', { originClass: 'local', expiresAt: NOW + 2 * HOUR }),
    ];
    const p = plan(bans, state([], p2));
    expect(p.unenforced).toEqual([]);
    expect(p.changes.map((c) => c.family).sort()).toEqual([4, 6]);
    expect(p.warnings.join()).toMatch(/share a rule with a later expiry/);
  });

  it('respects a rule someone disabled: adds nothing to it, moves nothing out of it, reports its CIDRs and deletes it once empty', () => {
    // Prepare: r01 (disabled) holds .1 and .2; .2 is now banned for a week (outside the bucket); .3 is new.
    const off: Rule = { ...rule('r01', ['192.0.2.1/32', '192.0.2.2/32'], NOW + HOUR), disabled: true };
    const bans = [ban('192.0.2.1', { expiresAt: NOW + HOUR }), ban('192.0.2.2', { expiresAt: NOW + 168 * HOUR }), ban('192.0.2.3', { expiresAt: NOW + HOUR })];
    // Act
    const p = plan(bans, state([off]));
    const emptied = plan([bans[2]!], state([off]));
    // Assess: .3 gets a new rule; .1 and .2 stay (the expiry of .2 is recorded), reported, not counted.
    expect(p.changes.map((c) => [c.kind, c.slot, c.added, c.removed])).toEqual([
      ['update', 'r01', [], []],
      ['create', 'r02', ['192.0.2.3/32'], []],
    ]);
    expect(p.unenforced.map((u) => [u.cidr, u.reason])).toEqual([
      ['192.0.2.1/32', 'disabled'],
      ['192.0.2.2/32', 'disabled'],
    ]);
    expect(p.summary.enforced).toBe(1);
    // Empty, it is deleted, not reused for .3 (a write would leave it disabled).
    expect(emptied.changes.map((c) => [c.kind, c.slot])).toEqual([
      ['delete', 'r01'],
      ['create', 'r02'],
    ]);
    // A new ban of the disabled rule's own bucket does not join it either.
    const same = plan([bans[0]!, bans[2]!], state([{ ...rule('r01', ['192.0.2.1/32'], NOW + HOUR), disabled: true }]));
    expect(same.changes.map((c) => [c.kind, c.slot, c.added])).toEqual([['create', 'r02', ['192.0.2.3/32']]]);
  });

  it('keeps a CIDR held twice in the enabled rule, not in a disabled one that sorts first', () => {
    const off: Rule = { ...rule('r01', ['192.0.2.1/32']), disabled: true };
    const on = rule('r02', ['192.0.2.1/32', '192.0.2.9/32']);
    const p = plan([ban('192.0.2.1', { expiresAt: NOW + 4 * HOUR }), ban('192.0.2.9', { expiresAt: NOW + 4 * HOUR })], state([off, on]));
    expect(p.changes.map((c) => [c.kind, c.slot, c.removed])).toEqual([['delete', 'r01', ['192.0.2.1/32']]]);
    expect(p.unenforced).toEqual([]);
  });

  it('rewrites a rule the target reports as needing repair, with its content, and only that rule', () => {
    const broken: Rule = { ...rule('r01', ['192.0.2.1/32']), repair: 'rewrite a rule left Failed' };
    const fine = rule('r02', ['192.0.2.2/32']);
    const bans = [ban('192.0.2.1', { expiresAt: NOW + 4 * HOUR }), ban('192.0.2.2', { expiresAt: NOW + 4 * HOUR })];
    const p = plan(bans, state([broken, fine]));
    expect(p.changes.map((c) => [c.kind, c.slot, c.after!.cidrs, c.reason])).toEqual([['update', 'r01', ['192.0.2.1/32'], 'rewrite a rule left Failed']]);
    expect(p.summary.unchanged).toBe(1);
  });

  it('groups CIDRs so none outlives its own expiry by more than the bucket', () => {
    const bans = Array.from({ length: 40 }, (_, i) => ban(`192.0.2.${i + 1}`, { expiresAt: NOW + (i * 17 * 60_000) }));
    const p = plan(bans, state([], pool({ maxRules: 20, cidrsPerRule: 8, freeSlots: Array.from({ length: 20 }, (_, i) => `r${i}`) })));
    const byCidr = new Map(bans.map((b) => [b.cidr, b.expiresAt]));
    for (const c of p.changes) {
      for (const cidr of c.after!.cidrs) expect(c.after!.expiresAt - byCidr.get(cidr)!).toBeLessThanOrEqual(HOUR);
    }
  });
});
