/**
 * Stream items → Decisions. Reads the LAPI `/v1/decisions/stream` body
 * (`{"new": [...] | null, "deleted": [...] | null}`) without building
 * objects for the `deleted` history, which on `startup=true` holds every
 * expired decision ever seen and can dwarf `new`.
 *
 * Each item is validated (zod schema, with a fast path that accepts exactly
 * what the schema accepts). A bad item is skipped and counted; it never sinks
 * the snapshot. A body that is not such an object (garbage, truncated JSON)
 * throws `StreamFormatError`, and the pass runs fail-static.
 */
import { isAscii } from 'node:buffer';
import { z } from 'zod';
import { tryParseCidr } from './cidr.js';
import { parseGoDuration } from './duration.js';
import type { DecisionFilters } from '../sources/source.js';
import type { Decision, OriginClass } from './types.js';

export class StreamFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StreamFormatError';
  }
}

/** One item of `new`/`deleted`. Unknown keys are allowed (the LAPI adds fields over time). */
export const streamItemSchema = z.looseObject({
  duration: z.string().min(1).max(64),
  id: z.number().int().optional(),
  origin: z.string().max(256),
  scenario: z.string().max(4096),
  scope: z.string().min(1).max(64),
  type: z.string().min(1).max(64),
  value: z.string().min(1).max(128),
  uuid: z.string().max(128).optional(),
  until: z.string().max(64).optional(),
  simulated: z.boolean().optional(),
});

export type StreamItem = z.infer<typeof streamItemSchema>;

export const DEFAULT_FILTERS: DecisionFilters = {
  types: ['ban'],
  scopes: ['ip', 'range'],
  origins: [],
  scenariosContaining: [],
  scenariosNotContaining: [],
};

export interface ParseOptions {
  source: string;
  now: number;
  filters?: DecisionFilters | undefined;
  /** Daemon delta mode needs the deleted items; a full snapshot only counts them. */
  includeDeleted?: boolean | undefined;
  /** Origin → class (default: `originClassOf` with the default classes). */
  classify?: ((origin: string) => OriginClass) | undefined;
}

export interface ParseResult {
  decisions: Decision[];
  deleted: Decision[];
  /** Items that failed validation (bad shape, bad value, bad duration). */
  skipped: number;
  skippedSamples: string[];
  /** Items dropped by the type/scope/origin/scenario filters. */
  filtered: number;
  /** Items in `new` whose duration had already run out. */
  expired: number;
  deletedCount: number;
}

const MAX_SAMPLES = 5;

function isStr(v: unknown, max: number, min = 0): v is string {
  return typeof v === 'string' && v.length >= min && v.length <= max;
}

/** Fast acceptance check; anything it refuses is re-checked by zod for a precise message. */
function fastValid(o: unknown): o is StreamItem {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return false;
  const r = o as Record<string, unknown>;
  return (
    isStr(r.duration, 64, 1) &&
    isStr(r.origin, 256) &&
    isStr(r.scenario, 4096) &&
    isStr(r.scope, 64, 1) &&
    isStr(r.type, 64, 1) &&
    isStr(r.value, 128, 1) &&
    (r.id === undefined || (typeof r.id === 'number' && Number.isInteger(r.id))) &&
    (r.uuid === undefined || isStr(r.uuid, 128)) &&
    (r.until === undefined || isStr(r.until, 64)) &&
    (r.simulated === undefined || typeof r.simulated === 'boolean')
  );
}

function describeIssue(o: unknown): string {
  const res = streamItemSchema.safeParse(o);
  if (res.success) return 'invalid item';
  const issue = res.error.issues[0]!;
  return `${issue.path.join('.') || 'item'}: ${issue.message}`;
}

export function passesFilters(item: StreamItem, scope: string, type: string, f: DecisionFilters): boolean {
  if (!f.types.includes(type)) return false;
  if (!f.scopes.includes(scope)) return false;
  if (f.origins.length > 0 && !f.origins.includes(item.origin)) return false;
  if (f.scenariosContaining.length > 0 && !f.scenariosContaining.some((s) => item.scenario.includes(s))) return false;
  if (f.scenariosNotContaining.some((s) => item.scenario.includes(s))) return false;
  return true;
}

type Counters = Pick<ParseResult, 'skipped' | 'skippedSamples' | 'filtered' | 'expired'>;

/** Validates and normalises one item; undefined when skipped, filtered or expired (counted in `c`). */
export function toDecision(raw: unknown, index: number, list: string, opts: ParseOptions, c: Counters, keepExpired = false): Decision | undefined {
  const skip = (why: string) => {
    c.skipped++;
    if (c.skippedSamples.length < MAX_SAMPLES) c.skippedSamples.push(`${list}[${index}]: ${why}`);
    return undefined;
  };
  if (!fastValid(raw)) return skip(describeIssue(raw));
  const scope = raw.scope.toLowerCase();
  const type = raw.type.toLowerCase();
  if (!passesFilters(raw, scope, type, opts.filters ?? DEFAULT_FILTERS)) {
    c.filtered++;
    return undefined;
  }
  let ms: number;
  try {
    ms = parseGoDuration(raw.duration);
  } catch (err) {
    return skip((err as Error).message);
  }
  if (ms <= 0 && !keepExpired) {
    c.expired++;
    return undefined;
  }
  const p = tryParseCidr(raw.value.trim());
  if (!p) return skip(`value ${JSON.stringify(raw.value)} is not an IP address or CIDR`);
  return {
    source: opts.source,
    id: raw.id,
    origin: raw.origin,
    originClass: (opts.classify ?? originClassOf)(raw.origin),
    scenario: raw.scenario,
    scope,
    type,
    value: raw.value,
    cidr: p.cidr,
    family: p.family,
    prefix: p.prefix,
    expiresAt: opts.now + ms,
  };
}

// ---------------------------------------------------------------------------
// A small scanner over the top-level object, on the raw bytes: it finds the
// `deleted` value with string-aware bracket matching, so the history is
// walked once and never turned into a string or objects, and a truncated
// body is detected. Structural characters are ASCII, and UTF-8 never uses
// bytes below 0x80 inside multi-byte sequences, so bytes are safe to scan.

const enum Ch {
  Quote = 34,
  Backslash = 92,
  LBracket = 91,
  RBracket = 93,
  LBrace = 123,
  RBrace = 125,
  Comma = 44,
  Colon = 58,
}

function isWs(c: number | undefined): boolean {
  return c === 32 || c === 10 || c === 13 || c === 9;
}

function skipWs(b: Uint8Array, i: number): number {
  while (i < b.length && isWs(b[i])) i++;
  return i;
}

/** Index just past the string starting at `i` (which is a quote). */
function endOfString(b: Uint8Array, i: number): number {
  const n = b.length;
  for (let j = i + 1; j < n; j++) {
    const d = b[j];
    if (d === Ch.Backslash) j++;
    else if (d === Ch.Quote) return j + 1;
  }
  throw new StreamFormatError('unterminated string (truncated body?)');
}

/**
 * Index just past the array/object starting at `i`; `items` counts the
 * objects directly inside it (the elements of a decisions array).
 */
function endOfContainer(b: Uint8Array, i: number): { end: number; items: number } {
  let depth = 0;
  let items = 0;
  const n = b.length;
  for (let j = i; j < n; j++) {
    const c = b[j];
    if (c === Ch.Quote) {
      for (j++; j < n; j++) {
        const d = b[j];
        if (d === Ch.Backslash) j++;
        else if (d === Ch.Quote) break;
      }
      if (j >= n) throw new StreamFormatError('unterminated string (truncated body?)');
    } else if (c === Ch.LBracket || c === Ch.LBrace) {
      depth++;
      if (depth === 2 && c === Ch.LBrace) items++;
    } else if (c === Ch.RBracket || c === Ch.RBrace) {
      depth--;
      if (depth === 0) return { end: j + 1, items };
    }
  }
  throw new StreamFormatError('unexpected end of body (truncated JSON?)');
}

function endOfScalar(b: Uint8Array, i: number): number {
  let j = i;
  while (j < b.length) {
    const c = b[j];
    if (c === Ch.Comma || c === Ch.RBrace || c === Ch.RBracket || isWs(c)) break;
    j++;
  }
  return j;
}

/** Finds the `deleted` value of the top-level object: [start, end, items]. */
function findDeleted(b: Uint8Array): [number, number, number] | undefined {
  let i = skipWs(b, 0);
  if (b[i] !== Ch.LBrace) {
    throw new StreamFormatError(`expected a JSON object, got ${JSON.stringify(Buffer.from(b.subarray(i, i + 20)).toString('utf8'))}`);
  }
  i = skipWs(b, i + 1);
  if (b[i] === Ch.RBrace) return undefined;
  for (;;) {
    if (b[i] !== Ch.Quote) throw new StreamFormatError(i >= b.length ? 'unexpected end of body (truncated JSON?)' : `expected a key at offset ${i}`);
    const kEnd = endOfString(b, i);
    const key = JSON.parse(Buffer.from(b.subarray(i, kEnd)).toString('utf8')) as string;
    i = skipWs(b, kEnd);
    if (b[i] !== Ch.Colon) throw new StreamFormatError(i >= b.length ? 'unexpected end of body (truncated JSON?)' : `expected ':' at offset ${i}`);
    i = skipWs(b, i + 1);
    const vStart = i;
    let vEnd: number;
    let items = 0;
    const c = b[i];
    if (c === Ch.LBracket || c === Ch.LBrace) ({ end: vEnd, items } = endOfContainer(b, i));
    else if (c === Ch.Quote) vEnd = endOfString(b, i);
    else if (c === undefined) throw new StreamFormatError('unexpected end of body (truncated JSON?)');
    else vEnd = endOfScalar(b, i);
    // The rest is checked by JSON.parse; `new` is not walked twice.
    if (key === 'deleted') return [vStart, vEnd, items];
    i = skipWs(b, vEnd);
    if (b[i] === Ch.Comma) {
      i = skipWs(b, i + 1);
      continue;
    }
    if (b[i] === Ch.RBrace) return undefined;
    throw new StreamFormatError(i >= b.length ? 'unexpected end of body (truncated JSON?)' : `expected ',' or '}' at offset ${i}`);
  }
}

function deletedItems(b: Uint8Array, span: [number, number, number]): number {
  const first = b[span[0]];
  if (first === Ch.LBracket) return span[2];
  if (span[1] - span[0] === 4 && Buffer.from(b.subarray(span[0], span[1])).toString('latin1') === 'null') return 0;
  throw new StreamFormatError(`"deleted" must be an array or null`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function listOf(obj: Record<string, unknown>, key: 'new' | 'deleted'): unknown[] {
  if (!(key in obj)) throw new StreamFormatError(`missing key "${key}"`);
  const v = obj[key];
  if (v === null) return [];
  if (!Array.isArray(v)) throw new StreamFormatError(`"${key}" must be an array or null, got ${typeof v}`);
  return v;
}

function jsonParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new StreamFormatError(`not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * Parses a `/v1/decisions/stream` body. Throws `StreamFormatError` on a
 * malformed body. Unless `includeDeleted` is set, the `deleted` history is
 * only walked (to count it and to check the body is complete), then cut out
 * before `JSON.parse`, so no object is built for it.
 */
export function parseStreamBody(body: string | Uint8Array, opts: ParseOptions): ParseResult {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let obj: unknown;
  let deletedCount: number;
  if (opts.includeDeleted) {
    obj = jsonParse(buf.toString('utf8'));
    if (!isPlainObject(obj)) throw new StreamFormatError('expected a JSON object with "new" and "deleted"');
    deletedCount = listOf(obj, 'deleted').length;
  } else {
    const d = findDeleted(buf);
    deletedCount = d ? deletedItems(buf, d) : 0;
    // LAPI bodies are ASCII in practice: then latin1 decodes the same text as UTF-8, without the UTF-8 decoder.
    const enc = isAscii(buf) ? 'latin1' : 'utf8';
    obj = jsonParse(d ? `${buf.toString(enc, 0, d[0])}null${buf.toString(enc, d[1])}` : buf.toString(enc));
    if (!isPlainObject(obj)) throw new StreamFormatError('expected a JSON object with "new" and "deleted"');
  }
  const rawNew = listOf(obj, 'new');
  listOf(obj, 'deleted');
  const c: Counters = { skipped: 0, skippedSamples: [], filtered: 0, expired: 0 };
  const decisions: Decision[] = [];
  for (let i = 0; i < rawNew.length; i++) {
    const d = toDecision(rawNew[i], i, 'new', opts, c);
    if (d) decisions.push(d);
  }
  // When every item fails validation, the format changed; it is not that every ban was lifted.
  // Refusing the snapshot makes the pass fail static instead of emptying the targets.
  if (c.skipped > 0 && decisions.length === 0 && c.filtered === 0 && c.expired === 0) {
    throw new StreamFormatError(`every item of "new" failed validation (${c.skipped}; ${c.skippedSamples[0] ?? ''})`);
  }
  const deleted: Decision[] = [];
  if (opts.includeDeleted) {
    const rawDeleted = listOf(obj as Record<string, unknown>, 'deleted');
    const dc: Counters = { skipped: 0, skippedSamples: [], filtered: 0, expired: 0 };
    for (let i = 0; i < rawDeleted.length; i++) {
      const dd = toDecision(rawDeleted[i], i, 'deleted', opts, dc, true);
      if (dd) deleted.push(dd);
    }
  }
  return { decisions, deleted, ...c, deletedCount };
}

/** Default origin classes. Anything else (CAPI, lists, cscli-import, ...) is a list entry. */
export const DEFAULT_ORIGIN_CLASSES: { manual: string[]; local: string[] } = {
  manual: ['cscli', 'console', 'manual'],
  local: ['crowdsec', 'appsec', 'fail2ban', 'mikopbx'],
};

export function originClassOf(origin: string, classes = DEFAULT_ORIGIN_CLASSES): OriginClass {
  if (classes.manual.includes(origin)) return 'manual';
  if (classes.local.includes(origin)) return 'local';
  return 'list';
}
