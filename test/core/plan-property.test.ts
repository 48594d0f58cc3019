/**
 * The planner over random pools and two random passes, write by write:
 * a CIDR that stays banned and enforced is never unprotected, no limit is
 * exceeded between two writes, and the next pass plans nothing.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planTarget } from '../../src/core/plan.js';
import type { Ban, Change, OriginClass, Pool, Rule, TargetState } from '../../src/core/types.js';
import { HOUR, NOW, ban } from '../helpers/bans.js';

const ADDRESSES = ['192.0.2.1', '192.0.2.2', '192.0.2.3', '198.51.100.0/30', '198.51.100.9', '203.0.113.5', '2001:db8::1', '2001:db8::2', '2001:db8:1::/64', '2001:db8::9'];
const CLASSES: OriginClass[] = ['manual', 'local', 'list'];

const banSet = fc.uniqueArray(
  fc.record({ at: fc.nat({ max: ADDRESSES.length - 1 }), hours: fc.integer({ min: 1, max: 200 }), cls: fc.nat({ max: 2 }) }),
  { selector: (b) => b.at, maxLength: ADDRESSES.length },
);

function toBans(set: Array<{ at: number; hours: number; cls: number }>): Ban[] {
  return set.map((b) => ban(ADDRESSES[b.at]!, { expiresAt: NOW + b.hours * HOUR, originClass: CLASSES[b.cls]! }));
}

function state(rules: Rule[], p: Pool): TargetState {
  const used = new Set(rules.map((r) => r.slot));
  return { pools: [{ ...p, freeSlots: p.freeSlots.filter((s) => !used.has(s)) }], rules, foreign: [], conflicts: [], warnings: [] };
}

function apply(rules: Rule[], c: Change): Rule[] {
  const out = rules.filter((r) => r.slot !== c.slot);
  if (c.kind !== 'delete') out.push({ pool: c.pool, slot: c.slot, family: c.family, cidrs: c.after!.cidrs, expiresAt: c.after!.expiresAt });
  return out.sort((a, b) => (a.slot < b.slot ? -1 : 1));
}

function limitProblems(rules: Rule[], p: Pool): string[] {
  const problems: string[] = [];
  if (rules.length > p.maxRules) problems.push(`${rules.length} rules > ${p.maxRules}`);
  for (const f of [4, 6] as const) {
    const n = rules.filter((r) => r.family === f).length;
    const cap = p.maxRulesPerFamily?.[f];
    if (cap !== undefined && n > cap) problems.push(`${n} IPv${f} rules > ${cap}`);
  }
  const total = rules.reduce((n, r) => n + r.cidrs.length, 0);
  if (total > p.maxCidrs) problems.push(`${total} CIDRs > ${p.maxCidrs}`);
  for (const r of rules) if (r.cidrs.length > p.cidrsPerRule) problems.push(`${r.slot} holds ${r.cidrs.length} > ${p.cidrsPerRule}`);
  return problems;
}

describe('core/plan (property)', () => {
  it('never leaves a CIDR that stays enforced unprotected, never exceeds a limit between writes, and converges (300 runs)', () => {
    const poolArb = fc.record({ cpr: fc.constantFrom(1, 2, 4), rules: fc.integer({ min: 1, max: 6 }), spare: fc.integer({ min: 0, max: 4 }), perFamily: fc.boolean() });
    fc.assert(
      fc.property(poolArb, banSet, banSet, (shape, first, second) => {
        const p: Pool = {
          id: 'main',
          families: [4, 6],
          cidrsPerRule: shape.cpr,
          maxRules: shape.rules,
          maxRulesPerFamily: shape.perFamily ? { 4: Math.ceil(shape.rules / 2), 6: Math.ceil(shape.rules / 2) } : undefined,
          maxCidrs: Math.min(shape.rules * shape.cpr, ADDRESSES.length) + shape.spare,
          freeSlots: Array.from({ length: shape.rules }, (_, i) => `r${i + 1}`),
          bucketMs: HOUR,
        };
        // Pass 1 from empty, applied whole.
        let rules: Rule[] = [];
        for (const c of planTarget({ target: 't', provider: 'file', bans: toBans(first), state: state(rules, p), now: NOW }).changes) rules = apply(rules, c);
        expect(limitProblems(rules, p)).toEqual([]);

        // Pass 2, write by write in the planned order.
        const bans = toBans(second);
        const plan = planTarget({ target: 't', provider: 'file', bans, state: state(rules, p), now: NOW });
        expect(plan.changes.map((c) => c.phase)).toEqual([...plan.changes.map((c) => c.phase)].sort());
        const finalRules = plan.changes.reduce(apply, rules);
        const enforcedAfter = new Set(finalRules.flatMap((r) => r.cidrs));
        const staying = rules.flatMap((r) => r.cidrs).filter((c) => enforcedAfter.has(c));
        for (const c of plan.changes) {
          rules = apply(rules, c);
          const held = new Set(rules.flatMap((r) => r.cidrs));
          expect(staying.filter((x) => !held.has(x)), `after ${c.kind} ${c.slot} (phase ${c.phase})`).toEqual([]);
          expect(limitProblems(rules, p), `after ${c.kind} ${c.slot} (phase ${c.phase})`).toEqual([]);
        }
        // Every enforced CIDR is wanted and none twice; what is left out is reported.
        const all = rules.flatMap((r) => r.cidrs);
        expect(new Set(all).size).toBe(all.length);
        expect(all.length + plan.unenforced.length).toBe(bans.length);

        // Pass 3: the same bans plan nothing, also when they slide forward with the clock.
        expect(planTarget({ target: 't', provider: 'file', bans, state: state(rules, p), now: NOW }).changes).toEqual([]);
        const slid = bans.map((b) => ({ ...b, expiresAt: b.expiresAt + 30_000 }));
        expect(planTarget({ target: 't', provider: 'file', bans: slid, state: state(rules, p), now: NOW + 30_000 }).changes).toEqual([]);
      }),
      { numRuns: 300, seed: 20261123 },
    );
  });
});
