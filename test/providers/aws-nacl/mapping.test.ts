import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  GROUP_SIZE,
  MAX_TAG_VALUE,
  describeTagWrite,
  emptyClaims,
  groupKey,
  packClaims,
  parseTags,
  toState,
  type Claims,
  type NaclEntry,
  type NaclSnapshot,
} from '../../../src/providers/aws-nacl/mapping.js';
import { formatV6 } from '../../../src/core/cidr.js';
import { HOUR, NOW } from '../../helpers/bans.js';

const OWNER = 'test';
const band = { start: 10, end: 99 };

function entry(ruleNumber: number, cidr: string, over: Partial<NaclEntry> = {}): NaclEntry {
  return { ruleNumber, egress: false, action: 'deny', protocol: '-1', cidr, family: cidr.includes(':') ? 6 : 4, ...over };
}

/** The `*` entries every NACL has, both directions: 32767 for IPv4 and 32768 for IPv6 (Amazon VPC quotas). */
const defaults: NaclEntry[] = [false, true].flatMap((egress) => [
  entry(32767, '0.0.0.0/0', { egress }),
  entry(32768, '::/0', { egress }),
]);

function snapshot(entries: NaclEntry[], tags: Record<string, string> = {}, subnetIds = ['subnet-0a1b2c3d4e5f60718']): NaclSnapshot {
  return { id: 'acl-0123456789abcdef0', entries: [...defaults, ...entries], tags: Object.entries(tags).map(([key, value]) => ({ key, value })), subnetIds };
}

function state(snap: NaclSnapshot, over: Partial<Parameters<typeof toState>[0]> = {}) {
  return toState({ snapshot: snap, owner: OWNER, directions: ['ingress'], band, entriesPerFamily: 20, now: NOW, ...over });
}

const sec = (ms: number) => Math.ceil(ms / 1000);

describe('providers/aws-nacl/mapping: claim tags', () => {
  it('packs four worst-case records (5-digit rule, longest IPv6 CIDR, 10-digit expiry) within the 256-character value limit', () => {
    const claims = emptyClaims();
    for (const rule of [32760, 32761, 32762, 32763]) claims.ingress.set(rule, { cidr: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127', expiresAt: 9_999_999_999_000 });
    const tags = packClaims(OWNER, claims);
    expect([...tags.keys()]).toEqual(['cloud-bouncer:test:ingress:32760']);
    const value = tags.get('cloud-bouncer:test:ingress:32760')!;
    expect(value.split(' ')).toHaveLength(4);
    expect(value.length).toBeLessThanOrEqual(MAX_TAG_VALUE);
  });

  it('puts each rule number in the one tag of its group of four, in a readable format', () => {
    const claims = emptyClaims();
    claims.ingress.set(14, { cidr: '2001:db8::1/128', expiresAt: NOW + HOUR });
    claims.ingress.set(12, { cidr: '192.0.2.7/32', expiresAt: NOW });
    claims.egress.set(16, { cidr: '198.51.100.0/24', expiresAt: NOW });
    expect(Object.fromEntries(packClaims(OWNER, claims))).toEqual({
      'cloud-bouncer:test:ingress:12': `12=192.0.2.7/32@${sec(NOW)} 14=2001:db8::1/128@${sec(NOW + HOUR)}`,
      'cloud-bouncer:test:egress:16': `16=198.51.100.0/24@${sec(NOW)}`,
    });
    expect(groupKey(OWNER, 'ingress', 15)).toBe('cloud-bouncer:test:ingress:12');
  });

  it('reads back exactly what it packed, expiry rounded up to the second (property)', () => {
    const v4 = fc.tuple(fc.nat(0xffffffff), fc.integer({ min: 8, max: 32 })).map(([n, p]) => {
      const start = p === 32 ? n : n - (n % 2 ** (32 - p));
      return `${start >>> 24}.${(start >>> 16) & 255}.${(start >>> 8) & 255}.${start & 255}/${p}`;
    });
    const v6 = fc.tuple(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 16, max: 128 })).map(([n, p]) => {
      const host = BigInt(128 - p);
      return `${formatV6((n >> host) << host)}/${p}`;
    });
    const claim = fc.record({ cidr: fc.oneof(v4, v6), expiresAt: fc.integer({ min: NOW, max: NOW + 400 * 24 * HOUR }) });
    fc.assert(
      fc.property(
        fc.dictionary(fc.integer({ min: 1, max: 32766 }).map(String), claim, { maxKeys: 60 }),
        fc.dictionary(fc.integer({ min: 1, max: 32766 }).map(String), claim, { maxKeys: 60 }),
        (inRaw, egRaw) => {
          const claims: Claims = { ingress: new Map(Object.entries(inRaw).map(([k, v]) => [Number(k), v])), egress: new Map(Object.entries(egRaw).map(([k, v]) => [Number(k), v])) };
          const tags = packClaims(OWNER, claims);
          for (const v of tags.values()) expect(v.length).toBeLessThanOrEqual(MAX_TAG_VALUE);
          const parsed = parseTags([...tags].map(([key, value]) => ({ key, value })), OWNER);
          expect(parsed.problems).toEqual([]);
          for (const dir of ['ingress', 'egress'] as const) {
            expect(parsed.claims[dir].size).toBe(claims[dir].size);
            for (const [rule, c] of claims[dir]) expect(parsed.claims[dir].get(rule)).toEqual({ cidr: c.cidr, expiresAt: sec(c.expiresAt) * 1000 });
            // At most one tag per group of four rule numbers.
            const groups = new Set([...claims[dir].keys()].map((r) => Math.floor(r / GROUP_SIZE)));
            expect([...tags.keys()].filter((k) => k.includes(`:${dir}:`))).toHaveLength(groups.size);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('names the claimed rule numbers and the lease a tag write carries, for error messages', () => {
    const text = describeTagWrite([
      { key: 'cloud-bouncer:test:lease', value: `run.1@${sec(NOW)}` },
      { key: 'cloud-bouncer:test:ingress:12', value: `14=192.0.2.7/32@1 12=2001:db8::1/128@1` },
      { key: 'cloud-bouncer:test:ingress:8', value: '10=192.0.2.8/32@1' },
      { key: 'cloud-bouncer:test:egress:16', value: '16=192.0.2.9/32@1' },
    ]);
    expect(text).toBe('claims of ingress rules 10, 12, 14, egress rule 16, and the apply lease of owner test');
  });

  it('ignores records it cannot read, and rules outside their tag, and says so', () => {
    const parsed = parseTags(
      [
        { key: 'cloud-bouncer:test:ingress:12', value: `12=192.0.2.7/32@${sec(NOW)} 13=garbage 20=192.0.2.8/32@1 14=192.0.2.9/24@1` },
        { key: 'cloud-bouncer:test:ingress:13', value: '13=192.0.2.1/32@1' },
        { key: 'cloud-bouncer:other:ingress:16', value: '16=192.0.2.1/32@1' },
        { key: 'Name', value: 'edge' },
      ],
      OWNER,
    );
    expect([...parsed.claims.ingress.keys()]).toEqual([12]);
    expect(parsed.problems).toHaveLength(4);
    expect(parsed.problems.join('\n')).toMatch(/13=garbage/);
    expect(parsed.problems.join('\n')).toMatch(/outside the tag's rules 12-15/);
    expect(parsed.problems.join('\n')).toMatch(/not canonical/);
    expect(parsed.problems.join('\n')).toMatch(/cloud-bouncer:test:ingress:13 .*malformed/);
    expect(parsed.others.get('ingress:16')).toBe('other');
    // Name, the other owner's tag and our malformed key are not ours to rewrite.
    expect(parsed.foreignTags).toBe(3);
    expect([...parsed.ownKeys.keys()]).toEqual(['cloud-bouncer:test:ingress:12']);
  });
});

describe('providers/aws-nacl/mapping: toState', () => {
  it('reports claimed entries as owned rules with the recorded expiry, and takes free slots lowest first', () => {
    const s = state(snapshot([entry(10, '192.0.2.7/32'), entry(100, '0.0.0.0/0', { action: 'allow' })], { 'cloud-bouncer:test:ingress:8': `10=192.0.2.7/32@${sec(NOW + HOUR)}` }));
    expect(s.conflicts).toEqual([]);
    expect(s.rules).toEqual([{ pool: 'ingress', slot: '10', family: 4, cidrs: ['192.0.2.7/32'], expiresAt: sec(NOW + HOUR) * 1000 }]);
    expect(s.pools).toHaveLength(1);
    expect(s.pools[0]!.freeSlots.slice(0, 3)).toEqual(['11', '12', '13']);
    expect(s.pools[0]!.freeSlots).toHaveLength(89);
  });

  it('counts foreign and default entries against the per-family quota of their direction only', () => {
    const s = state(
      snapshot([
        entry(100, '0.0.0.0/0', { action: 'allow' }),
        entry(110, '203.0.113.0/24', { action: 'allow' }),
        entry(120, '::/0', { action: 'allow' }),
        entry(100, '0.0.0.0/0', { action: 'allow', egress: true }),
      ]),
      { directions: ['ingress', 'egress'] },
    );
    const [ingress, egress] = s.pools;
    expect(ingress!.maxRulesPerFamily).toEqual({ 4: 17, 6: 18 }); // 20 − (*, 100, 110) and 20 − (*, 120)
    expect(egress!.maxRulesPerFamily).toEqual({ 4: 18, 6: 19 });
    expect(ingress!.maxRules).toBe(35);
    expect(ingress!.cidrsPerRule).toBe(1);
    expect(s.foreign.map((f) => `${f.pool}/${f.slot}`)).toContain('ingress/*');
  });

  it('reports the IPv6 default entry at rule 32768 as slot *, and counts one default entry per family', () => {
    const s = state(snapshot([]), { directions: ['ingress', 'egress'] });

    expect(s.foreign).toEqual([
      { pool: 'ingress', slot: '*', description: 'rule * ingress deny all 0.0.0.0/0' },
      { pool: 'ingress', slot: '*', description: 'rule * ingress deny all ::/0' },
      { pool: 'egress', slot: '*', description: 'rule * egress deny all 0.0.0.0/0' },
      { pool: 'egress', slot: '*', description: 'rule * egress deny all ::/0' },
    ]);
    expect(s.conflicts).toEqual([]);
    for (const pool of s.pools) expect(pool.maxRulesPerFamily).toEqual({ 4: 19, 6: 19 });
  });

  it('warns that a NACL associated with no subnet enforces nothing, and stays quiet when it has one', () => {
    const none = state(snapshot([], {}, []));
    const one = state(snapshot([]));

    expect(none.warnings).toEqual(['network ACL acl-0123456789abcdef0 is associated with no subnet: its entries filter no traffic, so no ban is enforced until it is associated with the subnets to protect']);
    expect(one.warnings).toEqual([]);
    // The warning changes nothing else: the pools are the same.
    expect(none.pools).toEqual(one.pools);
  });

  it('reports an unclaimed entry inside the band as a conflict naming its rule number and direction', () => {
    const s = state(snapshot([entry(42, '198.51.100.0/24', { action: 'allow', protocol: '6', portRange: { from: 22, to: 22 } })]));
    expect(s.conflicts).toEqual([{ slot: '42', message: expect.stringMatching(/^rule 42 ingress allow tcp 22 198\.51\.100\.0\/24 is inside the ban band 10-99/) }]);
  });

  it('names the other cloud-bouncer owner when its claimed entry sits in our band', () => {
    const s = state(snapshot([entry(20, '192.0.2.1/32')], { 'cloud-bouncer:blue:ingress:20': `20=192.0.2.1/32@${sec(NOW)}` }));
    expect(s.conflicts[0]!.message).toMatch(/belongs to cloud-bouncer owner blue/);
  });

  it('reports a claim without its entry as an owned rule with no CIDRs, and keeps its rule number out of the free slots', () => {
    const s = state(snapshot([], { 'cloud-bouncer:test:ingress:8': `11=2001:db8::1/128@${sec(NOW)}` }));
    expect(s.rules).toEqual([{ pool: 'ingress', slot: '11', family: 6, cidrs: [], expiresAt: sec(NOW) * 1000 }]);
    expect(s.pools[0]!.freeSlots).not.toContain('11');
    expect(s.conflicts).toEqual([]);
  });

  it('reports a claim of our owner outside the band, with or without its entry, as a conflict and owns nothing there', () => {
    const s = state(snapshot([entry(5, '192.0.2.1/32')], { 'cloud-bouncer:test:ingress:4': `5=192.0.2.1/32@${sec(NOW + HOUR)} 6=2001:db8::1/128@${sec(NOW)}` }));
    expect(s.rules).toEqual([]);
    expect(s.conflicts.map((c) => c.slot)).toEqual(['5', '6']);
    expect(s.conflicts[0]!.message).toMatch(/^rule 5 \(ingress\), rule 5 ingress deny all 192\.0\.2\.1\/32, is claimed by owner test but lies outside rule_band 10-99/);
    expect(s.conflicts[1]!.message).toMatch(/^rule 6 \(ingress\), a claim for 2001:db8::1\/128 without its entry, is claimed/);
  });

  it('reports an entry whose claim records another CIDR as owned, with its real CIDR, expiring now at the latest', () => {
    const s = state(snapshot([entry(10, '192.0.2.1/32')], { 'cloud-bouncer:test:ingress:8': `10=192.0.2.2/32@${sec(NOW + 3 * HOUR)}` }));
    expect(s.rules).toEqual([{ pool: 'ingress', slot: '10', family: 4, cidrs: ['192.0.2.1/32'], expiresAt: NOW }]);
    expect(s.warnings.join('\n')).toMatch(/rule 10 \(ingress\) holds 192\.0\.2\.1\/32 but its claim records 192\.0\.2\.2\/32/);
  });

  it('refuses to own a claimed entry that was turned into an allow rule', () => {
    const s = state(snapshot([entry(10, '192.0.2.1/32', { action: 'allow' })], { 'cloud-bouncer:test:ingress:8': `10=192.0.2.1/32@${sec(NOW)}` }));
    expect(s.rules).toEqual([]);
    expect(s.conflicts[0]!.message).toMatch(/rule 10 ingress allow all 192\.0\.2\.1\/32 is claimed .* but is not a deny-all entry/);
  });

  it('warns, naming the rule, when a foreign allow entry before the band covers everything or a banned address', () => {
    const s = state(
      snapshot(
        [
          entry(5, '0.0.0.0/0', { action: 'allow', protocol: '6', portRange: { from: 443, to: 443 } }),
          entry(6, '192.0.2.0/24', { action: 'allow' }),
          entry(7, '203.0.113.0/24', { action: 'allow' }),
          entry(10, '192.0.2.7/32'),
          entry(120, '0.0.0.0/0', { action: 'allow' }),
        ],
        { 'cloud-bouncer:test:ingress:8': `10=192.0.2.7/32@${sec(NOW + HOUR)}` },
      ),
    );
    expect(s.warnings).toHaveLength(2);
    expect(s.warnings[0]).toMatch(/^rule 5 \(ingress\) allows tcp 443 from 0\.0\.0\.0\/0 .* before the ban band 10-99: bans are useless for every address on that traffic$/);
    expect(s.warnings[1]).toMatch(/^rule 6 \(ingress\) allows all from 192\.0\.2\.0\/24 .*bans are useless for the banned addresses it covers$/);
  });

  it('offers fewer free slots when the NACL has little tag room left, and says why', () => {
    const tags = Object.fromEntries(Array.from({ length: 47 }, (_, i) => [`team-${i}`, 'x']));
    tags['cloud-bouncer:test:ingress:8'] = `10=192.0.2.7/32@${sec(NOW)}`;
    const s = state(snapshot([entry(10, '192.0.2.7/32')], tags)); // 48 tags: room for the apply lease and one more group of four
    expect(s.pools[0]!.freeSlots).toEqual(['11', '12', '13', '14', '15']);
    expect(s.pools[0]!.maxRules).toBe(6);
    expect(s.warnings.join('\n')).toMatch(/48 of 50 tags \(47 not ours, one kept for the apply lease\)/);
  });

  it('counts a lease tag as already in place, and reads it apart from the claims', () => {
    const tags = Object.fromEntries(Array.from({ length: 47 }, (_, i) => [`team-${i}`, 'x']));
    tags['cloud-bouncer:test:ingress:8'] = `10=192.0.2.7/32@${sec(NOW)}`;
    tags['cloud-bouncer:test:lease'] = `run-a.1@${sec(NOW + 60_000)}`;
    tags['cloud-bouncer:other:lease'] = `run-b.1@${sec(NOW + 60_000)}`;
    const s = state(snapshot([entry(10, '192.0.2.7/32')], tags)); // 50 tags, our lease among them: room for nothing more
    expect(s.tags.lease).toEqual({ value: `run-a.1@${sec(NOW + 60_000)}`, runId: 'run-a.1', expiresAt: sec(NOW + 60_000) * 1000 });
    expect(s.tags.problems).toEqual([]);
    expect(s.conflicts).toEqual([]);
    expect(s.pools[0]!.freeSlots).toEqual(['11']);
  });

  it('reads an unreadable lease of its owner as expired and says so', () => {
    const s = state(snapshot([], { 'cloud-bouncer:test:lease': 'garbage' }));
    expect(s.tags.lease).toMatchObject({ runId: '', expiresAt: 0 });
    expect(s.warnings.join('\n')).toMatch(/lease tag cloud-bouncer:test:lease holds "garbage".*counts as expired/);
  });

  it('warns about claims in a direction this target no longer manages', () => {
    const s = state(snapshot([entry(10, '192.0.2.7/32', { egress: true })], { 'cloud-bouncer:test:egress:8': `10=192.0.2.7/32@${sec(NOW)}` }));
    expect(s.pools.map((p) => p.id)).toEqual(['ingress']);
    expect(s.warnings.join('\n')).toMatch(/still claims egress rules 10/);
  });
});
