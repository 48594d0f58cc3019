/**
 * fast-check arbitraries for decision-stream bodies. Each generated item
 * says what the pass must do with it, from how it was built rather than by
 * re-running the parser: `valid` items end up as exactly their CIDR on the
 * target, `skipped` ones are counted as invalid and never written, `expired`
 * and `filtered` ones are dropped quietly, `refused` ones (wider than the
 * minimum prefix, `0.0.0.0/0`, `::/0`) are reported in the plan and never
 * written.
 */
import fc from 'fast-check';
import { toRange } from './addresses.js';

export type Fate = 'valid' | 'skipped' | 'expired' | 'filtered' | 'refused';

export interface GenItem {
  /** The item's JSON text, as it goes into `new`. */
  text: string;
  fate: Fate;
  /** For `valid` and `refused`: the range it stands for (computed with test/reliability/addresses.ts). */
  range?: string | undefined;
  /** What was done to it, for a failing seed's report. */
  note: string;
}

const rangeKey = (cidr: string): string => {
  const r = toRange(cidr);
  if (!r) throw new Error(`test bug: ${cidr} is not a CIDR`);
  return `${r.family}:${r.start}-${r.end}`;
};

export const STRING_FIELDS = ['duration', 'origin', 'scenario', 'scope', 'type', 'value'] as const;

const octet = fc.integer({ min: 0, max: 255 });

/** Addresses and ranges the default guards accept (IPv4 /16 and longer, IPv6 /48 and longer), in the forms the wire uses. */
const validValue: fc.Arbitrary<{ value: string; scope: string; cidr: string }> = fc.oneof(
  fc.tuple(fc.constantFrom('192.0.2', '198.51.100', '203.0.113'), octet, fc.constantFrom('Ip', 'ip', 'IP'), fc.boolean()).map(([net, h, scope, slash]) => ({
    value: `${net}.${h}${slash ? '/32' : ''}`,
    scope,
    cidr: `${net}.${h}/32`,
  })),
  fc.tuple(octet, octet, fc.integer({ min: 16, max: 32 }), fc.constantFrom('Range', 'range')).map(([a, b, prefix, scope]) => ({
    // Host bits set on purpose: the wire carries them, the target must not.
    value: `172.${16 + (a % 16)}.${b}.${(a * 7) % 256}/${prefix}`,
    scope,
    cidr: `172.${16 + (a % 16)}.${b}.${(a * 7) % 256}/${prefix}`,
  })),
  fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 48, max: 128 }), fc.boolean()).map(([g, h, prefix, upper]) => {
    const text = `2001:db8:${g.toString(16)}:0:0:0:0:${h.toString(16)}`;
    return { value: `${upper ? text.toUpperCase() : text}/${prefix}`, scope: 'Range', cidr: `${text}/${prefix}` };
  }),
);

const validDuration = fc.constantFrom('4h', '3h59m58.5s', '1m29.089988758s', '240m', '14400s', '+1h', '90m0.5s', '2557919h', '1h0m0s', '45s', '500ms');

function item(fields: Record<string, unknown>): string {
  return JSON.stringify(fields);
}

const base = (value: string, scope: string, duration: string) => ({
  duration,
  id: 1,
  origin: 'crowdsec',
  scenario: 'crowdsecurity/ssh-bf',
  scope,
  type: 'ban',
  value,
});

export const validItem: fc.Arbitrary<GenItem> = fc
  .tuple(validValue, validDuration, fc.integer({ min: 1, max: 2 ** 53 - 1 }), fc.constantFrom('ban', 'Ban', 'BAN'), fc.option(fc.dictionary(fc.constantFrom('uuid', 'until', 'simulated', 'extra'), fc.constant('x')), { nil: undefined }))
  .map(([v, duration, id, type, extra]) => {
    const fields: Record<string, unknown> = { ...base(v.value, v.scope, duration), id, type };
    if (extra) for (const k of Object.keys(extra)) fields[k] = k === 'simulated' ? false : k === 'extra' ? { nested: [1, 2, 3] } : '2026-11-23T12:00:00Z';
    return { text: item(fields), fate: 'valid' as const, range: rangeKey(v.cidr), note: `valid ${v.value} ${duration}` };
  });

/** JSON values of every type but string. */
const notAString = fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.integer(), { maxKeys: 3 }));

const wrongType: fc.Arbitrary<GenItem> = fc.tuple(validValue, fc.constantFrom(...STRING_FIELDS), fc.option(notAString, { nil: undefined })).map(([v, field, bad]) => {
  const fields: Record<string, unknown> = base(v.value, v.scope, '4h');
  if (bad === undefined) delete fields[field];
  else fields[field] = bad;
  return { text: item(fields), fate: 'skipped' as const, note: `${field} = ${bad === undefined ? '(missing)' : JSON.stringify(bad)}` };
});

const badId: fc.Arbitrary<GenItem> = fc.constantFrom('1.5', '"7"', 'true', 'null', '1e400', '-1e400', '[1]', '{}').map((id) => ({
  text: item(base('192.0.2.1', 'Ip', '4h')).replace('"id":1', `"id":${id}`),
  fate: 'skipped' as const,
  note: `id ${id}`,
}));

/** Strings past each field's bound, and empty where a value is required. */
const tooLong: fc.Arbitrary<GenItem> = fc
  .constantFrom<[string, string]>(
    ['value', '1'.repeat(129)],
    ['value', `192.0.2.1${' '.repeat(200)}`],
    ['scenario', 's'.repeat(4097)],
    ['origin', 'o'.repeat(257)],
    ['duration', `${'1'.repeat(63)}hh`],
    ['scope', 'I'.repeat(65)],
    ['type', 'b'.repeat(65)],
    ['duration', ''],
    ['scope', ''],
    ['type', ''],
    ['value', ''],
    ['value', 'x'.repeat(10 * 1024 * 1024)],
  )
  .map(([field, v]) => ({ text: item({ ...base('192.0.2.1', 'Ip', '4h'), [field]: v }), fate: 'skipped' as const, note: `${field} of ${v.length} chars` }));

export const INVALID_VALUES = [
  '999.1.1.1', '1.2.3', '1.2.3.4.5', '1.2.3.4/33', '1.2.3.4/-1', '1.2.3.4/', '/24', '01.2.3.4', '1.2.3.4/24/8', '256.0.0.0',
  '::/129', 'gggg::1', '1:2:3:4:5:6:7:8:9', '1::2::3', '2001:db8::/1x', 'localhost', 'example.com', '1.2.3.4 5', '１.２.３.４',
  '1.2.3.4%eth0', 'fe80::1%eth0', '0x7f.0.0.1', '2130706433', '-1.2.3.4', '1.2.3.4\u0000', 'null', 'NaN', '*', '0/0',
] as const;

const invalidValue: fc.Arbitrary<GenItem> = fc.constantFrom(...INVALID_VALUES).map((v) => ({ text: item(base(v, 'Ip', '4h')), fate: 'skipped' as const, note: `value ${JSON.stringify(v)}` }));

export const INVALID_DURATIONS = [
  '5', 'h', '5x', '1e3h', '--5s', '5h-3m', '1.5.5s', ' 4h', '4h ', '4 h', 'four hours', '∞h', 'NaNh', '1d', '1w', '5us5', '.s', '-',
  `${'9'.repeat(30)}h`, '99999999h', '2562048h1s', `${'9'.repeat(60)}s`,
] as const;

const invalidDuration: fc.Arbitrary<GenItem> = fc.constantFrom(...INVALID_DURATIONS).map((d) => ({ text: item(base('192.0.2.1', 'Ip', d)), fate: 'skipped' as const, note: `duration ${JSON.stringify(d)}` }));

/** Negative and zero durations: already over, dropped quietly (the LAPI sends these for expired decisions). */
const expired: fc.Arbitrary<GenItem> = fc.tuple(validValue, fc.constantFrom('-1s', '-4h', '0s', '-0s', '0', '-0', '-16.960276ms', `-${'9'.repeat(5)}h`)).map(([v, d]) => ({
  text: item(base(v.value, v.scope, d)),
  fate: 'expired' as const,
  note: `duration ${d}`,
}));

/** Another type or scope: filtered out, never written. */
const filtered: fc.Arbitrary<GenItem> = fc
  .tuple(validValue, fc.constantFrom<[string, string]>(['type', 'captcha'], ['type', 'throttle'], ['scope', 'Country'], ['scope', 'AS'], ['scope', 'Username']))
  .map(([v, [field, val]]) => ({ text: item({ ...base(v.value, v.scope, '4h'), [field]: val }), fate: 'filtered' as const, note: `${field} ${val}` }));

/** Broader than the default minimum prefix: reported as refused, never written. */
export const OVERBROAD = ['0.0.0.0/0', '::/0', '128.0.0.0/1', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/15', '2001:db8::/32', '2000::/3', '::/1'] as const;

const refused: fc.Arbitrary<GenItem> = fc.constantFrom(...OVERBROAD).map((v) => ({ text: item(base(v, 'Range', '4h')), fate: 'refused' as const, range: rangeKey(v), note: `range ${v}` }));

/** Not an object at all. */
const notAnObject: fc.Arbitrary<GenItem> = fc.oneof(fc.integer(), fc.string({ maxLength: 20 }), fc.constant(null), fc.boolean(), fc.array(fc.integer(), { maxLength: 3 })).map((v) => ({
  text: JSON.stringify(v),
  fate: 'skipped' as const,
  note: `item ${JSON.stringify(v)}`,
}));

export const streamItem: fc.Arbitrary<GenItem> = fc.oneof(
  { arbitrary: validItem, weight: 6 },
  { arbitrary: wrongType, weight: 3 },
  { arbitrary: badId, weight: 1 },
  { arbitrary: tooLong, weight: 1 },
  { arbitrary: invalidValue, weight: 2 },
  { arbitrary: invalidDuration, weight: 2 },
  { arbitrary: expired, weight: 1 },
  { arbitrary: filtered, weight: 1 },
  { arbitrary: refused, weight: 1 },
  { arbitrary: notAnObject, weight: 1 },
);

export function envelope(items: readonly GenItem[], deleted = 'null'): string {
  return `{"new":[${items.map((i) => i.text).join(',')}],"deleted":${deleted}}`;
}

const isList = (v: unknown) => v === null || Array.isArray(v);

/** True when `v` is an object whose `new` and `deleted` are arrays or null: a snapshot the client accepts as a whole. */
export function isEnvelope(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && 'new' in v && 'deleted' in v && isList((v as { new: unknown }).new) && isList((v as { deleted: unknown }).deleted);
}

/**
 * Bodies that are not a snapshot at all: random JSON of every shape, the
 * envelope with `new`/`deleted` of the wrong type, a valid body cut short
 * or followed by garbage, random bytes, deep nesting.
 */
export const invalidBody: fc.Arbitrary<{ body: string; note: string }> = fc.oneof(
  fc
    .jsonValue()
    .filter((v) => !isEnvelope(v))
    .map((v) => ({ body: JSON.stringify(v), note: 'random JSON' })),
  fc
    .tuple(fc.oneof(fc.jsonValue().filter((v) => !isList(v)), fc.constant([])), fc.oneof(fc.jsonValue().filter((v) => !isList(v)), fc.constant(null)))
    .filter(([a, b]) => !isList(a) || !isList(b))
    .map(([a, b]) => ({ body: JSON.stringify({ new: a, deleted: b }), note: 'wrong types for new/deleted' })),
  fc.tuple(fc.array(validItem, { minLength: 1, maxLength: 5 }), fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true })).map(([items, at]) => {
    const full = envelope(items);
    return { body: full.slice(0, Math.floor(full.length * at)), note: `valid body cut at ${Math.floor(full.length * at)} of ${full.length} bytes` };
  }),
  fc.tuple(fc.array(validItem, { maxLength: 3 }), fc.string({ minLength: 1, maxLength: 20 }).filter((s) => s.trim().length > 0)).map(([items, junk]) => ({ body: `${envelope(items)}${junk}`, note: `valid body followed by ${JSON.stringify(junk)}` })),
  fc.string({ maxLength: 200 }).map((s) => ({ body: s, note: 'random text' })),
  fc.uint8Array({ maxLength: 200 }).map((b) => ({ body: Buffer.from(b).toString('latin1'), note: 'random bytes' })),
  fc.integer({ min: 1, max: 200_000 }).map((depth) => ({ body: `{"new":${'['.repeat(depth)}${']'.repeat(depth - 1)},"deleted":null`, note: `unbalanced nesting ${depth} deep` })),
  fc.constantFrom(
    '',
    ' ',
    'null',
    '\uFEFF{"new":null,"deleted":null}',
    '{"new":null}',
    '{"deleted":null}',
    '{"new":null,"deleted":null',
    '{"new":[],"deleted":{}}',
    '{"new":{},"deleted":[]}',
    '{"new":"[]","deleted":null}',
    '{"new":null,"deleted":"null"}',
    '{"new":[{"value":"1.2.3.4"}],"deleted":nul}',
    '{"new":null,"deleted":null}}',
    '{"new":null,,"deleted":null}',
    '{new:null,deleted:null}',
    "{'new':null,'deleted':null}",
    '<html><body>502 Bad Gateway</body></html>',
    '{"new":[{"duration":"4h","origin":"x","scenario":"x","scope":"Ip","type":"ban","value":"1.2.3.4"}],"deleted":[{"unterminated',
  ).map((body) => ({ body, note: `fixed case ${JSON.stringify(body.slice(0, 40))}` })),
);
