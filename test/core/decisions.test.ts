import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StreamBodyReader, StreamFormatError, parseStreamBody, type ParseOptions } from '../../src/core/decisions.js';
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

  it.each([
    ['every item invalid', [{ ...ITEM, duration: 14_400 }, { ...ITEM, value: 42 }]],
    ['the rest filtered out (a captcha)', [{ ...ITEM, type: 'captcha' }, { ...ITEM, value: 42 }, { ...ITEM, value: 43 }]],
    ['the rest already expired', [{ ...ITEM, duration: '-1.5ms' }, { ...ITEM, duration: '3d' }, { ...ITEM, duration: '4d' }]],
  ])('refuses a full snapshot with no usable ban and some invalid items: %s', (_n, items) => {
    // An empty result would empty every target; a broken producer is not "every ban was lifted".
    const body = JSON.stringify({ new: items, deleted: null });
    expect(() => parseStreamBody(body, opts)).toThrow(StreamFormatError);
    expect(errorOf(() => parseStreamBody(body, opts))).toMatch(/^no item of "new" is a usable ban: \d of \d failed validation \(new\[\d\]: /);
  });

  it('accepts a delta whose only items are filtered or expired beside invalid ones (a delta only adds)', () => {
    const body = JSON.stringify({ new: [{ ...ITEM, type: 'captcha' }, { ...ITEM, value: 42 }], deleted: [] });
    const r = parseStreamBody(body, { ...opts, includeDeleted: true });
    expect(r).toMatchObject({ decisions: [], skipped: 1, filtered: 1 });
    expect(() => parseStreamBody(JSON.stringify({ new: [{ ...ITEM, value: 42 }], deleted: [] }), { ...opts, includeDeleted: true })).toThrow(/no item of "new" is a usable ban: 1 of 1/);
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

/** Pushes `body` cut at `cuts` (offsets, any order, repeats allowed) and returns the reader. */
function pushCut(body: Buffer, cuts: readonly number[], o: ParseOptions = opts): StreamBodyReader {
  const r = new StreamBodyReader(o);
  let prev = 0;
  for (const c of [...cuts].sort((a, b) => a - b)) {
    r.push(body.subarray(prev, c));
    prev = c;
  }
  r.push(body.subarray(prev));
  return r;
}

/** The error `f` throws, with the excerpt of a non-object body left out (a chunk may cut it short). */
function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(StreamFormatError);
    return (err as Error).message.replace(/^(expected a JSON object, got ).*/, '$1…');
  }
  return 'no error';
}

const ITEM = { duration: '1h', origin: 'crowdsec', scenario: 's', scope: 'Ip', type: 'ban', value: '192.0.2.1' };

describe('core/decisions: a body read chunk by chunk (StreamBodyReader)', () => {
  it('reads the same snapshot wherever the chunks break, and holds none of the deleted history', () => {
    // Strings with JSON punctuation, escapes and multi-byte characters, which a chunk can split anywhere.
    const tricky = fc.string({ unit: fc.constantFrom('a', ',', '[', ']', '{', '}', '"', '\\', ':', ' ', 'é', '€', '\n'), maxLength: 10 });
    const item = fc.record({ n: fc.nat(255), scenario: tricky, meta: fc.option(fc.dictionary(tricky, fc.oneof(tricky, fc.integer(), fc.array(tricky, { maxLength: 2 })), { maxKeys: 2 })) });
    const doc = fc.record({
      news: fc.array(item, { maxLength: 8 }),
      deleted: fc.option(fc.array(item, { maxLength: 8 })),
      extra: fc.option(fc.dictionary(fc.constantFrom('meta', 'x', 'count'), fc.oneof(tricky, fc.integer(), fc.constant(null), fc.array(tricky, { maxLength: 2 })), { maxKeys: 2 })),
      order: fc.constantFrom('deleted-first', 'new-first', 'extra-between'),
      indent: fc.constantFrom(0, 1, 2),
    });
    fc.assert(
      fc.property(doc, fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 }), (d, fractions) => {
        const items = (xs: typeof d.news, expired: boolean) =>
          xs.map((x, i) => ({ ...ITEM, duration: expired ? '-2s' : '1h', id: i, scenario: x.scenario, value: `192.0.2.${x.n}`, ...(x.meta ? { meta: x.meta } : {}) }));
        const news = items(d.news, false);
        const deleted = d.deleted === null ? null : items(d.deleted, true);
        const extra = d.extra ?? {};
        const obj =
          d.order === 'deleted-first' ? { deleted, new: news, ...extra } : d.order === 'new-first' ? { new: news, ...extra, deleted } : { ...extra, new: news, deleted };
        const body = Buffer.from(JSON.stringify(obj, null, d.indent));
        const whole = parseStreamBody(body, { ...opts, includeDeleted: true });
        const cuts = fractions.map((f) => Math.floor(f * body.length));
        const r = pushCut(body, cuts);
        const got = r.finish();
        expect(got.decisions).toEqual(whole.decisions);
        expect(got.decisions).toHaveLength(news.length);
        expect(got.deletedCount).toBe(deleted?.length ?? 0);
        expect(r.receivedBytes).toBe(body.length);
        // What is held is the body with the `deleted` value replaced by `null`.
        const deletedText = JSON.stringify(deleted, null, d.indent).replace(/\n/g, `\n${' '.repeat(d.indent)}`);
        expect(r.heldBytes).toBe(body.length - Buffer.byteLength(deletedText) + 4);
      }),
      { numRuns: 300 },
    );
  });

  it('keeps track of escapes in the deleted history wherever a chunk ends (after a backslash included)', () => {
    // Escaped quotes and backslashes, and strings that end in an escaped backslash, with brackets after them.
    const scenarios = ['a"]b', 'c\\', '\\"}', 'x\\\\', '"{[', 'é\\"'];
    const deleted = scenarios.map((scenario, i) => ({ ...ITEM, duration: '-1s', id: i, scenario }));
    const body = Buffer.from(JSON.stringify({ deleted, new: [ITEM, { ...ITEM, value: '192.0.2.2', scenario: '\\"]' }] }));
    const want = parseStreamBody(body, { ...opts, includeDeleted: true });
    const held = body.length - Buffer.byteLength(JSON.stringify(deleted)) + 4;
    for (let k = 0; k <= body.length; k++) {
      for (const cuts of [[k], [k, k + 1], [k, k + 2]]) {
        const r = pushCut(body, cuts);
        const got = r.finish();
        expect(got.decisions, `cuts ${cuts.join(',')}`).toEqual(want.decisions);
        expect(got.deletedCount).toBe(scenarios.length);
        expect(r.heldBytes, `cuts ${cuts.join(',')}`).toBe(held);
      }
    }
  });

  it('reads a real startup snapshot one byte at a time', () => {
    const body = Buffer.from(sampleBody('07-startup-full-includes-expired-as-deleted.txt'));
    const r = pushCut(body, Array.from({ length: body.length }, (_, i) => i));
    expect(r.finish()).toEqual(parseStreamBody(body, opts));
  });

  it('drops a large history as it passes: what is held does not grow with it', () => {
    const deleted = JSON.stringify(Array.from({ length: 5000 }, (_, i) => ({ ...ITEM, duration: '-3s', id: i, value: `10.0.${i >> 8}.${i & 255}` })));
    const body = Buffer.from(`{"deleted":${deleted},"new":[${JSON.stringify(ITEM)}]}`);
    const r = new StreamBodyReader(opts);
    const heldAfter: number[] = [];
    for (let i = 0; i < body.length; i += 4096) {
      r.push(body.subarray(i, i + 4096));
      heldAfter.push(r.heldBytes);
    }
    expect(body.length).toBeGreaterThan(500_000);
    // While the history passes only `{"deleted":null` is held; then `new`.
    expect(heldAfter.slice(0, -1).every((h) => h === '{"deleted":null'.length)).toBe(true);
    expect(r.heldBytes).toBe(body.length - deleted.length + 4);
    const got = r.finish();
    expect(got.deletedCount).toBe(5000);
    expect(got.decisions.map((d) => d.cidr)).toEqual(['192.0.2.1/32']);
  });

  it.each([
    ['garbage', 'not json at all'],
    ['an HTML error page', '<html><body>502 Bad Gateway</body></html>'],
    ['an empty body', ''],
    ['an array', '[]'],
    ['truncated inside deleted', '{"deleted":[{"duration":"-1s","value":"1.2.3.4"'],
    ['truncated inside a deleted string', '{"deleted":[{"duration":"-1s","value":"1.2.'],
    ['truncated inside a key', '{"dele'],
    ['truncated after deleted', '{"deleted":[],"new":[{"value":"1'],
    ['truncated in new, before deleted', '{"new":[{"value":"1.2.3.4"},'],
    ['deleted as an object', '{"deleted":{},"new":[]}'],
    ['deleted as a string', '{"deleted":"x","new":[]}'],
    ['deleted as a misspelt null', '{"deleted":nul,"new":[]}'],
    ['deleted as a longer literal', '{"deleted":nullnull,"new":[]}'],
    ['mismatched brackets in deleted', '{"deleted":[{"a":1]},"new":[]}'],
    ['deleted nested too deep', `{"deleted":${'['.repeat(70)}${']'.repeat(70)},"new":[]}`],
    ['a missing colon', '{"deleted" []}'],
    ['a missing comma', '{"x":1 "deleted":[]}'],
    ['a key that is not a string', '{deleted:[]}'],
    ['missing new', '{"deleted":null}'],
    ['missing deleted', '{"new":null}'],
    ['new as a string', '{"new":"x","deleted":null}'],
    ['trailing data', '{"new":null,"deleted":null} x'],
    ['a second object', '{"deleted":[],"new":[]}{"new":[]}'],
  ])('refuses %s wherever the chunks break, with the same message', (_name, text) => {
    const body = Buffer.from(text);
    const want = errorOf(() => parseStreamBody(body, opts));
    expect(want).not.toBe('no error');
    for (let k = 0; k <= body.length; k++) {
      expect(errorOf(() => pushCut(body, [k]).finish()), `cut at ${k}`).toBe(want);
    }
  });

  it('refuses a body that is not an object at its first byte, before the rest arrives', () => {
    const r = new StreamBodyReader(opts);
    expect(() => r.push(Buffer.from('  <html>'))).toThrow(/expected a JSON object, got "<html>"/);
    const d = new StreamBodyReader(opts);
    d.push(Buffer.from('{"deleted":[{"id":1}'));
    expect(() => d.push(Buffer.from(',{"id":2]'))).toThrow(/mismatched '\]' at offset 28/);
  });

  it('finds deleted under an escaped spelling of its key, and only the top-level one', () => {
    // Keys holding escaped quotes and backslashes end where JSON says they do.
    const body = `{"x\\"y\\\\":{"deleted":[1]},"del\\u0065ted":[${JSON.stringify({ ...ITEM, duration: '-1s' })}],"new":[${JSON.stringify(ITEM)}]}`;
    const r = pushCut(Buffer.from(body), [4, 7, 30]);
    const got = r.finish();
    expect(got.deletedCount).toBe(1);
    expect(got.decisions).toHaveLength(1);
    expect(r.heldBytes).toBeLessThan(body.length - 60);
  });

  it('holds the whole body when the deleted items are wanted (daemon deltas)', () => {
    const body = Buffer.from(sampleBody('04-nonstartup-after-delete.txt'));
    const r = pushCut(body, [10, 50], { ...opts, includeDeleted: true });
    expect(r.heldBytes).toBe(body.length);
    expect(r.finish().deleted.map((d) => d.cidr)).toEqual(['192.0.2.99/32']);
  });
});
