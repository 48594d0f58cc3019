import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { NetIndex, contains, formatV6, merge, netToCidr, overlaps, parseCidr, parseV4, parseV6, subtract, toNet, tryParseCidr } from '../../src/core/cidr.js';

const v4 = fc.tuple(fc.nat(0xffffffff), fc.integer({ min: 0, max: 32 })).map(([n, p]) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/${p}`);
const v6 = fc.tuple(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 0, max: 128 })).map(([n, p]) => `${formatV6(n)}/${p}`);
const v4host = fc.nat(0xffffffff).map((n) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`);

describe('core/cidr', () => {
  it.each([
    ['192.0.2.10', '192.0.2.10/32', 4],
    ['192.0.2.10/32', '192.0.2.10/32', 4],
    ['203.0.113.77/24', '203.0.113.0/24', 4],
    ['192.0.2.10/032', '192.0.2.10/32', 4],
    ['192.0.2.10/8', '192.0.0.0/8', 4],
    ['0.0.0.0/0', '0.0.0.0/0', 4],
    ['2001:DB8::1', '2001:db8::1/128', 6],
    ['2001:db8:1::/48', '2001:db8:1::/48', 6],
    ['2001:db8:1:2:3:4:5:6/48', '2001:db8:1::/48', 6],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1/128', 6],
    ['::ffff:192.0.2.1', '192.0.2.1/32', 4],
    ['::FFFF:c000:0201', '192.0.2.1/32', 4],
    ['0:0:0:0:0:ffff:192.0.2.77/120', '192.0.2.0/24', 4],
    ['::ffff:0:0/96', '0.0.0.0/0', 4],
    ['::ffff:0:0/95', '::fffe:0:0/95', 6],
    ['::fffe:192.0.2.1', '::fffe:c000:201/128', 6],
    ['64:ff9b::192.0.2.1', '64:ff9b::c000:201/128', 6],
    ['::', '::/128', 6],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1/128', 6],
  ])('canonicalises %s to %s', (input, cidr, family) => {
    expect(parseCidr(input)).toMatchObject({ cidr, family });
  });

  it.each(['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.4/33', '1.2.3.4/x', '2001:db8::1::1', 'fe80::1%eth0', '2001:db8::/129', 'not-an-ip', '1.2.3.4/', ' 1.2.3.4'])(
    'refuses %j with a message naming it',
    (input) => {
      expect(() => parseCidr(input)).toThrow(/invalid IP or CIDR/);
    },
  );

  it('round-trips every IPv4 CIDR through parse and format', () => {
    fc.assert(
      fc.property(v4, (c) => {
        const p = parseCidr(c);
        expect(parseCidr(p.cidr).cidr).toBe(p.cidr);
        expect(contains(toNet(p.cidr), toNet(`${c.split('/')[0]}/32`))).toBe(true);
      }),
    );
  });

  it('reads every IPv4-mapped IPv6 address or range as the IPv4 one', () => {
    fc.assert(
      fc.property(v4, fc.boolean(), (c, hex) => {
        const [addr, p] = c.split('/') as [string, string];
        const o = addr.split('.').map(Number) as [number, number, number, number];
        const mapped = hex ? `::ffff:${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}` : `::ffff:${addr}`;
        expect(parseCidr(`${mapped}/${Number(p) + 96}`)).toEqual(parseCidr(c));
      }),
    );
  });

  it('round-trips every IPv6 CIDR through parse and format', () => {
    fc.assert(
      fc.property(v6, (c) => {
        const p = parseCidr(c);
        expect(parseCidr(p.cidr).cidr).toBe(p.cidr);
        expect(parseV6(p.cidr.split('/')[0]!)).toBe(toNet(p.cidr).start);
      }),
    );
  });

  it('agrees with ipaddr.js on every IPv6 address, in full, compressed and mixed notation, with or without a prefix', () => {
    // Groups biased towards zeros, so "::" runs of every length and position occur.
    const group = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
    fc.assert(
      fc.property(
        fc.array(group, { minLength: 8, maxLength: 8 }),
        fc.option(fc.integer({ min: 0, max: 128 })),
        fc.constantFrom('full', 'short', 'plain', 'mixed'),
        fc.boolean(),
        (groups, prefix, style, padPrefix) => {
          const addr = ipaddr.IPv6.parse(groups.map((g) => g.toString(16)).join(':'));
          // `short` is canonical (the text is kept as is when it has no host bits); the others must be rewritten.
          const text =
            style === 'full'
              ? groups.map((g) => g.toString(16).padStart(4, '0').toUpperCase()).join(':')
              : style === 'short'
                ? addr.toRFC5952String()
                : style === 'plain'
                  ? groups.map((g) => g.toString(16)).join(':')
                  : `${groups.slice(0, 6).map((g) => g.toString(16)).join(':')}:${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`;
          const p = prefix ?? 128;
          const input = prefix === null ? text : `${text}/${padPrefix ? String(prefix).padStart(3, '0') : prefix}`;
          if (addr.isIPv4MappedAddress() && p >= 96) {
            // Folded to the IPv4 address or range.
            const v4net = ipaddr.IPv4.networkAddressFromCIDR(`${addr.toIPv4Address().toString()}/${p - 96}`).toString();
            expect(parseCidr(input)).toEqual({ cidr: `${v4net}/${p - 96}`, family: 4, prefix: p - 96 });
            return;
          }
          const expected = ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/${p}`).toRFC5952String();
          expect(parseCidr(input)).toEqual({ cidr: `${expected}/${p}`, family: 6, prefix: p });
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('agrees with ipaddr.js on every IPv4 address and range, host bits and a padded prefix included', () => {
    fc.assert(
      fc.property(fc.nat(0xffffffff), fc.option(fc.integer({ min: 0, max: 32 })), fc.boolean(), (n, prefix, padPrefix) => {
        const text = `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
        const p = prefix ?? 32;
        const expected = ipaddr.IPv4.networkAddressFromCIDR(`${text}/${p}`).toString();
        const input = prefix === null ? text : `${text}/${padPrefix ? String(prefix).padStart(3, '0') : prefix}`;
        expect(parseCidr(input)).toEqual({ cidr: `${expected}/${p}`, family: 4, prefix: p });
      }),
      { numRuns: 2000 },
    );
  });

  it('NetIndex.overlapsCidr answers like a scan of every entry, for IPv4 and IPv6', () => {
    // Nets drawn near each other (a shared high part), so overlaps and near misses both occur; the leading
    // octet or group also varies (a few values, and short prefixes spanning several), for the lead-table shortcut.
    const v6lead = fc.oneof(fc.constant(0x2001n), fc.constant(0x2002n), fc.constant(0n), fc.bigInt({ min: 0n, max: 0xffffn }));
    const v6near = fc
      .tuple(v6lead, fc.integer({ min: 0, max: 3 }), fc.bigInt({ min: 0n, max: (1n << 80n) - 1n }), fc.integer({ min: 1, max: 128 }))
      .map(([lead, hi, lo, p]) => parseCidr(`${formatV6((lead << 112n) | (0x0db8n << 96n) | (BigInt(hi) << 80n) | lo)}/${p}`).cidr);
    const v4lead = fc.oneof(fc.constant(10), fc.constant(11), fc.constant(0), fc.nat(255));
    const v4near = fc.tuple(v4lead, fc.nat(0xffff), fc.integer({ min: 1, max: 32 })).map(([a, n, p]) => parseCidr(`${a}.${n >> 8}.${n & 255}.${(n * 7) & 255}/${p}`).cidr);
    const cidr = fc.oneof(v6near, v4near);
    fc.assert(
      fc.property(fc.array(cidr, { maxLength: 8 }), fc.array(cidr, { minLength: 1, maxLength: 20 }), (entries, probes) => {
        const nets = entries.map(toNet);
        const index = new NetIndex(nets);
        for (const c of probes) {
          const p = parseCidr(c);
          expect(index.overlapsCidr(p.cidr, p.family, p.prefix), `${c} against ${entries.join(', ')}`).toBe(nets.some((n) => overlaps(n, toNet(c))));
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('parses dotted quads exactly', () => {
    fc.assert(fc.property(fc.nat(0xffffffff), (n) => parseV4(`${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`) === n));
  });

  it('subtract never covers an address of a hole and covers every other address', () => {
    fc.assert(
      fc.property(fc.integer({ min: 8, max: 30 }), fc.array(v4host, { minLength: 1, maxLength: 6 }), v4host, (prefix, holes, base) => {
        const net = toNet(`${base}/${prefix}`);
        const holeNets = holes.map((h) => toNet(`${h}/32`));
        // put some holes inside the net
        const inside = holeNets.map((h, i) => (i % 2 === 0 ? { ...h, start: net.start + (h.start % (net.end - net.start + 1n)), end: net.start + (h.start % (net.end - net.start + 1n)) } : h));
        const pieces = subtract(net, inside);
        for (const p of pieces) {
          expect(contains(net, p)).toBe(true);
          for (const h of inside) expect(overlaps(p, h)).toBe(false);
        }
        const covered = pieces.reduce((n, p) => n + (p.end - p.start + 1n), 0n);
        const holeAddrs = new Set(inside.filter((h) => overlaps(h, net)).map((h) => h.start)).size;
        expect(covered).toBe(net.end - net.start + 1n - BigInt(holeAddrs));
      }),
    );
  });

  it('splits a /24 around one whitelisted address into 8 CIDRs', () => {
    const pieces = subtract(toNet('203.0.113.0/24'), [toNet('203.0.113.5/32')]).map(netToCidr);
    expect(pieces).toHaveLength(8);
    expect(pieces).not.toContain('203.0.113.5/32');
    expect(pieces).toContain('203.0.113.128/25');
  });

  it('merges adjacent siblings and drops contained nets', () => {
    const m = merge(['10.0.0.0/25', '10.0.0.128/25', '10.0.0.7/32', '2001:db8::/33', '2001:db8:8000::/33'].map(toNet)).map(netToCidr);
    expect(m).toEqual(['10.0.0.0/24', '2001:db8::/32']);
  });

  it('NetIndex finds exactly the overlapping whitelist entries', () => {
    fc.assert(
      fc.property(fc.array(v4, { minLength: 1, maxLength: 20 }), v4, (wl, probe) => {
        const idx = new NetIndex(wl.map((c) => toNet(parseCidr(c).cidr)));
        const p = toNet(parseCidr(probe).cidr);
        const brute = wl.some((c) => overlaps(toNet(parseCidr(c).cidr), p));
        expect(idx.overlapping(p).length > 0).toBe(brute);
      }),
    );
  });

  it('tryParseCidr returns undefined instead of throwing', () => {
    expect(tryParseCidr('999.1.1.1')).toBeUndefined();
  });
});
