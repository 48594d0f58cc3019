import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { NetIndex, overlaps, toNet, parseCidr } from '../../src/core/cidr.js';
import { DEFAULT_GUARDS, bansFromRules, computeDesired } from '../../src/core/desired.js';
import { originClassOf } from '../../src/core/decisions.js';
import { planTarget } from '../../src/core/plan.js';
import type { Decision, TargetState } from '../../src/core/types.js';
import { HOUR, NOW } from '../helpers/bans.js';

function decision(value: string, o: Partial<Decision> = {}): Decision {
  const p = parseCidr(value);
  return { source: 's', origin: 'crowdsec', originClass: originClassOf(o.origin ?? 'crowdsec'), scenario: 'x', scope: p.prefix === (p.family === 4 ? 32 : 128) ? 'ip' : 'range', type: 'ban', value, cidr: p.cidr, family: p.family, prefix: p.prefix, expiresAt: NOW + HOUR, ...o };
}

const wl = (...c: string[]) => new NetIndex(c.map((x) => toNet(parseCidr(x).cidr)));

describe('core/desired', () => {
  it('keeps the longest expiry of a duplicated value', () => {
    const r = computeDesired([decision('192.0.2.1', { expiresAt: NOW + HOUR }), decision('192.0.2.1/32', { expiresAt: NOW + 3 * HOUR, origin: 'CAPI' })], wl(), DEFAULT_GUARDS, NOW, originClassOf);
    expect(r.bans).toHaveLength(1);
    expect(r.bans[0]).toMatchObject({ cidr: '192.0.2.1/32', expiresAt: NOW + 3 * HOUR, originClass: 'local' });
  });

  it('refuses bans broader than the minimum prefix, 0.0.0.0/0 and ::/0 included', () => {
    const r = computeDesired([decision('0.0.0.0/0'), decision('10.0.0.0/8'), decision('::/0'), decision('2001:db8::/32'), decision('10.1.0.0/16'), decision('2001:db8:1::/48')], wl(), DEFAULT_GUARDS, NOW, originClassOf);
    expect(r.bans.map((b) => b.cidr).sort()).toEqual(['10.1.0.0/16', '2001:db8:1::/48']);
    expect(r.refused.map((x) => [x.value, x.reason])).toEqual([
      ['0.0.0.0/0', 'min_prefix'],
      ['10.0.0.0/8', 'min_prefix'],
      ['::/0', 'min_prefix'],
      ['2001:db8::/32', 'min_prefix'],
    ]);
    expect(r.refused[0]!.detail).toMatch(/broader than \/16/);
  });

  it('caps every expiry at max_ttl', () => {
    const r = computeDesired([decision('192.0.2.1', { expiresAt: NOW + 1000 * HOUR })], wl(), { ...DEFAULT_GUARDS, maxTtlMs: 24 * HOUR }, NOW, originClassOf);
    expect(r.bans[0]!.expiresAt).toBe(NOW + 24 * HOUR);
  });

  it('splits a range around a whitelisted address and refuses a fully whitelisted ban', () => {
    const r = computeDesired([decision('203.0.113.0/24'), decision('198.51.100.7')], wl('203.0.113.5', '198.51.100.0/24'), DEFAULT_GUARDS, NOW, originClassOf);
    expect(r.bans).toHaveLength(8);
    expect(r.bans.some((b) => overlaps(toNet(b.cidr), toNet('203.0.113.5/32')))).toBe(false);
    expect(r.refused.find((x) => x.value === '198.51.100.7/32')).toMatchObject({ reason: 'whitelisted' });
  });

  it('bansFromRules keeps only rules whose recorded expiry has not passed', () => {
    const bans = bansFromRules(
      [
        { pool: 'p', slot: 'a', family: 4, cidrs: ['192.0.2.1/32'], expiresAt: NOW + 1 },
        { pool: 'p', slot: 'b', family: 4, cidrs: ['192.0.2.2/32'], expiresAt: NOW },
      ],
      NOW,
    );
    expect(bans.map((b) => b.cidr)).toEqual(['192.0.2.1/32']);
  });

  it('no planned rule ever covers a whitelisted address (property)', () => {
    const v4 = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 16, max: 32 })).map(([a, b, p]) => `10.${a}.${b}.0/${Math.min(p, 24)}`);
    const host = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 })).map(([a, b, c]) => `10.${a}.${b}.${c}`);
    const v6 = fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 48, max: 128 })).map(([a, p]) => `2001:db8:${a.toString(16)}::/${p}`);
    fc.assert(
      fc.property(fc.array(fc.oneof(v4, host, v6), { maxLength: 40 }), fc.array(fc.oneof(host, v6), { minLength: 1, maxLength: 8 }), (banned, white) => {
        const index = wl(...white);
        const desired = computeDesired(banned.map((b) => decision(b)), index, DEFAULT_GUARDS, NOW, originClassOf);
        const state: TargetState = {
          pools: [{ id: 'main', families: [4, 6], cidrsPerRule: 16, maxRules: 1000, maxCidrs: 100_000, freeSlots: Array.from({ length: 1000 }, (_, i) => `r${i}`), bucketMs: HOUR }],
          rules: [],
          foreign: [],
          conflicts: [],
          warnings: [],
        };
        const plan = planTarget({ target: 't', provider: 'file', bans: desired.bans, state, now: NOW });
        const written = plan.changes.flatMap((c) => c.after?.cidrs ?? []);
        for (const c of written) expect(index.overlapping(toNet(c))).toEqual([]);
        // everything banned and not whitelisted is still covered
        for (const b of banned) {
          const n = toNet(parseCidr(b).cidr);
          if (index.overlapping(n).length === 0 && n.prefix >= (n.family === 4 ? 16 : 48)) expect(written.some((w) => overlaps(toNet(w), n))).toBe(true);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('returns the position of every ban as its index, refused and split bans included, and planning with that index gives the same plan (property)', () => {
    const addr = fc.oneof(
      fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 15 })).map(([a, b]) => `10.0.${a}.${b}`),
      fc.integer({ min: 0, max: 15 }).map((a) => `2001:db8::${a.toString(16)}`),
      fc.constantFrom('10.1.0.0/24', '10.0.0.0/8', '2001:db8:1::/64', '10.0.1.0/28', '10.0.1.0/30'),
    );
    const item = fc.tuple(addr, fc.integer({ min: -1, max: 6 }), fc.constantFrom('crowdsec', 'CAPI', 'cscli'));
    fc.assert(
      fc.property(fc.array(item, { maxLength: 60 }), fc.array(addr, { maxLength: 30 }), fc.boolean(), fc.boolean(), (items, held, whitelisted, v4Only) => {
        const decisions = items.map(([v, h, origin]) => decision(v, { expiresAt: NOW + h * HOUR + 1, origin }));
        const desired = computeDesired(decisions, whitelisted ? wl('10.0.1.3') : wl(), DEFAULT_GUARDS, NOW, originClassOf);
        expect(desired.index.size).toBe(desired.bans.length);
        desired.bans.forEach((b, i) => expect(desired.index.get(b.cidr)).toBe(i));
        for (const r of desired.refused) if (!desired.bans.some((b) => b.cidr === r.value)) expect(desired.index.get(r.value)).toBeUndefined();
        const heldCidrs = [...new Set(held.map((h) => parseCidr(h).cidr))].sort();
        const pool = { id: 'main', families: v4Only ? ([4] as const) : ([4, 6] as const), cidrsPerRule: 4, maxRules: 12, maxCidrs: 40, freeSlots: Array.from({ length: 12 }, (_, i) => `r${String(i).padStart(2, '0')}`), bucketMs: HOUR };
        const rules = [4, 6].flatMap((f) => {
          const of = heldCidrs.filter((c) => (c.includes(':') ? 6 : 4) === f);
          return of.length ? [{ pool: 'main', slot: f === 4 ? 'r00' : 'r01', family: f as 4 | 6, cidrs: of, expiresAt: NOW + 2 * HOUR }] : [];
        });
        const state: TargetState = { pools: [{ ...pool, families: [...pool.families], freeSlots: pool.freeSlots.slice(2) }], rules, foreign: [], conflicts: [], warnings: [] };
        const without = planTarget({ target: 't', provider: 'file', bans: desired.bans, state, now: NOW });
        const withIndex = planTarget({ target: 't', provider: 'file', bans: desired.bans, bansIndex: desired.index, state, now: NOW });
        expect(withIndex).toEqual(without);
      }),
      { numRuns: 300 },
    );
  });
});
