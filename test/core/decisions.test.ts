import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StreamFormatError, parseStreamBody } from '../../src/core/decisions.js';
import { parseGoDuration } from '../../src/core/duration.js';
import { NOW } from '../helpers/bans.js';

const SAMPLES = new URL('../fixtures/lapi/', import.meta.url);

/** Body of a captured HTTP response (after the blank line). */
function sampleBody(name: string): string {
  const text = readFileSync(new URL(name, SAMPLES), 'utf8');
  return text.slice(text.indexOf('\n\n') + 2).trim();
}

const opts = { source: 'lapi', now: NOW };

describe('core/duration', () => {
  it.each([
    ['3h59m58.5s', 3 * 3_600_000 + 59 * 60_000 + 58_500],
    ['1m29.089988758s', 89_089.988758],
    ['-16.960276ms', -16.960276],
    ['-3.049606594s', -3_049.606594],
    ['0s', 0],
    ['0', 0],
    ['1.5h', 5_400_000],
    ['250us', 0.25],
    ['10ns', 0.00001],
  ])('parses %s', (text, ms) => {
    expect(parseGoDuration(text)).toBeCloseTo(ms, 6);
  });

  it.each(['', 'h', '1d', '1h-2m', 'abc', '--1s', '1e9h', '99999999999999h'])('refuses %j naming the input', (text) => {
    expect(() => parseGoDuration(text)).toThrow(/invalid duration/);
  });
});

describe('core/decisions', () => {
  it('reads a real startup snapshot: bans only, expired history counted not built', () => {
    const r = parseStreamBody(sampleBody('07-startup-full-includes-expired-as-deleted.txt'), opts);
    expect(r.deletedCount).toBe(1);
    expect(r.deleted).toEqual([]);
    expect(r.filtered).toBe(2); // two captcha decisions
    expect(r.decisions.map((d) => d.cidr).sort()).toEqual(['100.64.0.0/10', '192.0.2.10/32', '192.0.2.60/32', '2001:db8:1::/48', '2001:db8::1/128', '203.0.113.0/24']);
    const v4 = r.decisions.find((d) => d.cidr === '192.0.2.10/32')!;
    expect(v4.expiresAt).toBeCloseTo(NOW + parseGoDuration('3h59m54.91194994s'), 0);
    expect(v4).toMatchObject({ scope: 'ip', type: 'ban', origin: 'cscli', family: 4, prefix: 32 });
  });

  it('reads `new` exactly as a plain JSON.parse of the whole body does, whatever the strings hold', () => {
    // Strings full of JSON punctuation (the `deleted` scanner must not be fooled), nested extra keys, long lists.
    const tricky = fc.string({ unit: fc.constantFrom('a', ',', '[', ']', '{', '}', '"', '\\', ':', ' ', 'é', '\n'), maxLength: 12 });
    const item = fc.record({ n: fc.nat(255), scenario: tricky, extra: fc.option(fc.array(fc.dictionary(tricky, tricky, { maxKeys: 2 }), { maxLength: 2 })), range: fc.boolean() });
    fc.assert(
      fc.property(fc.array(item, { minLength: 0, maxLength: 40 }), fc.oneof(fc.constantFrom(0, 1998, 1999, 2000, 2001, 3999, 4000), fc.integer({ min: 0, max: 4100 })), fc.boolean(), (items, pad, newFirst) => {
        // The padding's strings hold unbalanced brackets and commas too.
        const list: typeof items = [...Array.from({ length: pad }, (_, i) => ({ n: i % 256, scenario: i % 2 ? '{,' : '},', extra: null, range: false })), ...items];
        const news = list.map((x, i) => ({
          duration: '1h',
          id: i,
          origin: 'crowdsec',
          scenario: x.scenario,
          scope: x.range ? 'Range' : 'Ip',
          type: 'ban',
          value: x.range ? `10.${x.n}.0.0/16` : `192.0.2.${x.n}`,
          ...(x.extra ? { meta: x.extra } : {}),
        }));
        const deleted = [{ duration: '-1s', origin: 'x', scenario: ',]}"', scope: 'Ip', type: 'ban', value: '192.0.2.1' }];
        const body = newFirst ? JSON.stringify({ new: news, deleted }) : JSON.stringify({ deleted, new: news });
        const pieces = parseStreamBody(Buffer.from(body), opts);
        const whole = parseStreamBody(Buffer.from(body), { ...opts, includeDeleted: true });
        expect(pieces.decisions).toEqual(whole.decisions);
        expect(pieces.decisions).toHaveLength(news.length);
        expect(pieces.deletedCount).toBe(1);
      }),
      { numRuns: 60 },
    );
  });

  it('refuses a trailing comma in `new` wherever it falls, as JSON.parse does', () => {
    const item = '{"duration":"1h","origin":"crowdsec","scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.1"}';
    for (const n of [1, 1999, 2000, 2001, 4000]) {
      const body = `{"deleted":[],"new":[${Array(n).fill(item).join(',')},]}`;
      expect(() => JSON.parse(body)).toThrow();
      expect(() => parseStreamBody(Buffer.from(body), opts), `${n} items`).toThrow(StreamFormatError);
    }
    // A missing element between commas, and garbage inside a later piece.
    expect(() => parseStreamBody(Buffer.from(`{"deleted":null,"new":[${Array(2500).fill(item).join(',')},,${item}]}`), opts)).toThrow(StreamFormatError);
    expect(() => parseStreamBody(Buffer.from(`{"deleted":null,"new":[${Array(2500).fill(item).join(',')},{"value":tru}]}`), opts)).toThrow(StreamFormatError);
  });

  it('accepts null lists', () => {
    const r = parseStreamBody(sampleBody('01-startup-empty.txt'), opts);
    expect(r.decisions).toEqual([]);
    expect(r.deletedCount).toBe(0);
  });

  it('materialises deleted items only when asked (daemon deltas)', () => {
    const r = parseStreamBody(sampleBody('04-nonstartup-after-delete.txt'), { ...opts, includeDeleted: true });
    expect(r.deleted.map((d) => d.cidr)).toEqual(['192.0.2.99/32']);
  });

  it('handles scope casing, Ip values carrying a prefix, and drops expired items in new', () => {
    const body = JSON.stringify({
      new: [
        { duration: '1h', origin: 'cscli', scenario: 's', scope: 'ip', type: 'ban', value: '192.0.2.1' },
        { duration: '1h', origin: 'cscli', scenario: 's', scope: 'IP', type: 'BAN', value: '192.0.2.2/32' },
        { duration: '1h', origin: 'cscli', scenario: 's', scope: 'Ip', type: 'ban', value: '10.1.0.0/24' },
        { duration: '1h', origin: 'cscli', scenario: 's', scope: 'RANGE', type: 'ban', value: '10.2.0.0/24' },
        { duration: '-1s', origin: 'cscli', scenario: 's', scope: 'Ip', type: 'ban', value: '192.0.2.3' },
        { duration: '1h', origin: 'CAPI', scenario: 's', scope: 'Country', type: 'ban', value: 'FR' },
      ],
      deleted: null,
    });
    const r = parseStreamBody(body, opts);
    expect(r.decisions.map((d) => d.cidr)).toEqual(['192.0.2.1/32', '192.0.2.2/32', '10.1.0.0/24', '10.2.0.0/24']);
    expect(r.expired).toBe(1);
    expect(r.filtered).toBe(1);
    expect(r.skipped).toBe(0);
  });

  it('skips and counts bad items with a reason; never fails the snapshot for them', () => {
    const body = JSON.stringify({
      new: [
        { duration: '1h', origin: 'cscli', scenario: 's', scope: 'Ip', type: 'ban', value: '192.0.2.1' },
        { duration: 5, origin: 'cscli', scenario: 's', scope: 'Ip', type: 'ban', value: '192.0.2.2' },
        { duration: '1h', origin: 'cscli', scenario: 's', scope: 'Ip', type: 'ban', value: 'not-an-ip' },
        { duration: 'forever', origin: 'cscli', scenario: 's', scope: 'Ip', type: 'ban', value: '192.0.2.4' },
        'garbage',
        null,
      ],
      deleted: [],
    });
    const r = parseStreamBody(body, opts);
    expect(r.decisions.map((d) => d.cidr)).toEqual(['192.0.2.1/32']);
    expect(r.skipped).toBe(5);
    expect(r.skippedSamples[0]).toMatch(/new\[1\]: duration/);
    expect(r.skippedSamples.join('\n')).toMatch(/not-an-ip/);
    expect(r.skippedSamples.join('\n')).toMatch(/invalid duration "forever"/);
  });

  it('applies origin and scenario filters', () => {
    const body = sampleBody('07-startup-full-includes-expired-as-deleted.txt');
    const base = { types: ['ban'], scopes: ['ip', 'range'], origins: [] as string[], scenariosContaining: [] as string[], scenariosNotContaining: [] as string[] };
    expect(parseStreamBody(body, { ...opts, filters: { ...base, origins: ['cscli-import'] } }).decisions.map((d) => d.value).sort()).toEqual(['100.64.0.0/10', '192.0.2.60']);
    expect(parseStreamBody(body, { ...opts, filters: { ...base, scenariosContaining: ['range'] } }).decisions).toHaveLength(2);
    expect(parseStreamBody(body, { ...opts, filters: { ...base, scenariosNotContaining: ['import', 'range'] } }).decisions.map((d) => d.value).sort()).toEqual(['192.0.2.10', '2001:db8::1']);
    expect(parseStreamBody(body, { ...opts, filters: { ...base, types: ['ban', 'captcha'] } }).decisions).toHaveLength(8);
  });

  it.each([
    ['garbage', 'not json at all'],
    ['truncated', sampleBody('07-startup-full-includes-expired-as-deleted.txt').slice(0, 600)],
    ['truncated inside deleted', '{"deleted":[{"duration":"-1s","value":"1.2.3.4"'],
    ['array', '[]'],
    ['missing new', '{"deleted":null}'],
    ['new is a string', '{"new":"x","deleted":null}'],
    ['trailing data', '{"new":null,"deleted":null} x'],
    ['html error page', '<html><body>502 Bad Gateway</body></html>'],
  ])('throws StreamFormatError on a malformed body (%s)', (_name, body) => {
    expect(() => parseStreamBody(body, opts)).toThrow(StreamFormatError);
  });

  it('reads the 10k sample shape with values carrying /32 and unknown extra keys', () => {
    const j = JSON.parse(readFileSync(new URL('18-startup-after-10k-load-TRIMMED.json', SAMPLES), 'utf8')) as Record<string, unknown>;
    const r = parseStreamBody(JSON.stringify(j), opts);
    expect(r.decisions.map((d) => d.cidr)).toEqual(['2001:db8:1::/48', '100.64.2.0/24', '10.0.0.0/32', '10.0.0.78/32']);
  });
});
