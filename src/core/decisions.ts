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
// A small scanner over the top-level object. It finds the span of each value
// with string-aware bracket matching, so `deleted` is skipped without
// materialising it, and a truncated body is detected.

const STRUCT = /["[\]{}]/g;

function skipWs(s: string, i: number): number {
  while (i < s.length) {
    const c = s.charCodeAt(i);
    if (c === 32 || c === 10 || c === 13 || c === 9) i++;
    else break;
  }
  return i;
}

/** Index just past the string starting at `i` (which is a quote). */
function endOfString(s: string, i: number): number {
  let j = i + 1;
  for (;;) {
    const q = s.indexOf('"', j);
    if (q < 0) throw new StreamFormatError('unterminated string (truncated body?)');
    let bs = 0;
    for (let k = q - 1; k > i && s.charCodeAt(k) === 92; k--) bs++;
    if (bs % 2 === 0) return q + 1;
    j = q + 1;
  }
}

/**
 * Index just past the array/object starting at `i`; `items` counts the
 * top-level elements of an array (commas are not needed: elements of a
 * decisions array are objects, counted by their opening brace).
 */
function endOfContainer(s: string, i: number): { end: number; items: number } {
  let depth = 0;
  let items = 0;
  STRUCT.lastIndex = i;
  for (;;) {
    const m = STRUCT.exec(s);
    if (!m) throw new StreamFormatError('unexpected end of body (truncated JSON?)');
    const ch = m[0];
    const at = m.index;
    if (ch === '"') {
      STRUCT.lastIndex = endOfString(s, at);
      continue;
    }
    if (ch === '[' || ch === '{') {
      depth++;
      if (depth === 2 && ch === '{') items++;
    } else {
      depth--;
      if (depth === 0) return { end: at + 1, items };
      if (depth < 0) throw new StreamFormatError(`unbalanced ${ch} at offset ${at}`);
    }
  }
}

function endOfScalar(s: string, i: number): number {
  let j = i;
  while (j < s.length && !',}] \n\r\t'.includes(s[j]!)) j++;
  return j;
}

interface Spans {
  new?: [number, number] | undefined;
  deleted?: [number, number, number] | undefined;
}

function scanTopLevel(s: string): Spans {
  let i = skipWs(s, 0);
  if (s[i] !== '{') throw new StreamFormatError(`expected a JSON object, got ${JSON.stringify(s.slice(i, i + 20))}`);
  const spans: Spans = {};
  i = skipWs(s, i + 1);
  if (s[i] === '}') return checkTrailing(s, i + 1, spans);
  for (;;) {
    if (s[i] !== '"') throw new StreamFormatError(`expected a key at offset ${i}`);
    const kEnd = endOfString(s, i);
    const key = JSON.parse(s.slice(i, kEnd)) as string;
    i = skipWs(s, kEnd);
    if (s[i] !== ':') throw new StreamFormatError(`expected ':' at offset ${i}`);
    i = skipWs(s, i + 1);
    const vStart = i;
    let vEnd: number;
    let items = 0;
    const c = s[i];
    if (c === '[' || c === '{') ({ end: vEnd, items } = endOfContainer(s, i));
    else if (c === '"') vEnd = endOfString(s, i);
    else if (c === undefined) throw new StreamFormatError('unexpected end of body (truncated JSON?)');
    else vEnd = endOfScalar(s, i);
    if (key === 'new') spans.new = [vStart, vEnd];
    else if (key === 'deleted') spans.deleted = [vStart, vEnd, items];
    i = skipWs(s, vEnd);
    if (s[i] === ',') {
      i = skipWs(s, i + 1);
      continue;
    }
    if (s[i] === '}') return checkTrailing(s, i + 1, spans);
    throw new StreamFormatError(i >= s.length ? 'unexpected end of body (truncated JSON?)' : `expected ',' or '}' at offset ${i}`);
  }
}

function checkTrailing(s: string, i: number, spans: Spans): Spans {
  if (skipWs(s, i) !== s.length) throw new StreamFormatError(`unexpected data after the JSON object at offset ${i}`);
  return spans;
}

function parseList(s: string, span: [number, number] | undefined, key: string): unknown[] {
  if (!span) throw new StreamFormatError(`missing key "${key}"`);
  const text = s.slice(span[0], span[1]);
  if (text === 'null') return [];
  if (text[0] !== '[') throw new StreamFormatError(`"${key}" must be an array or null, got ${JSON.stringify(text.slice(0, 20))}`);
  try {
    return JSON.parse(text) as unknown[];
  } catch (err) {
    throw new StreamFormatError(`"${key}" is not valid JSON: ${(err as Error).message}`);
  }
}

function checkDeleted(s: string, span: [number, number, number] | undefined): number {
  if (!span) throw new StreamFormatError('missing key "deleted"');
  const head = s.slice(span[0], span[0] + 4);
  if (head === 'null') return 0;
  if (head[0] !== '[') throw new StreamFormatError(`"deleted" must be an array or null, got ${JSON.stringify(head)}`);
  return span[2];
}

/** Parses a `/v1/decisions/stream` body. Throws `StreamFormatError` on a malformed body. */
export function parseStreamBody(body: string, opts: ParseOptions): ParseResult {
  const spans = scanTopLevel(body);
  const rawNew = parseList(body, spans.new, 'new');
  const deletedCount = checkDeleted(body, spans.deleted);
  const c: Counters = { skipped: 0, skippedSamples: [], filtered: 0, expired: 0 };
  const decisions: Decision[] = [];
  for (let i = 0; i < rawNew.length; i++) {
    const d = toDecision(rawNew[i], i, 'new', opts, c);
    if (d) decisions.push(d);
  }
  const deleted: Decision[] = [];
  if (opts.includeDeleted) {
    const rawDeleted = parseList(body, spans.deleted && [spans.deleted[0], spans.deleted[1]], 'deleted');
    const dc: Counters = { skipped: 0, skippedSamples: [], filtered: 0, expired: 0 };
    for (let i = 0; i < rawDeleted.length; i++) {
      const d = toDecision(rawDeleted[i], i, 'deleted', opts, dc, true);
      if (d) deleted.push(d);
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
