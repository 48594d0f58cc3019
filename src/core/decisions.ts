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
import { constants as bufferConstants, isAscii } from 'node:buffer';
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
  /** Other top-level keys to return as parsed, in `ParseResult.kept` (the file source's `whitelist`). */
  keep?: readonly string[] | undefined;
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
  /** The top-level keys named in `ParseOptions.keep` that the body has, as parsed. */
  kept: Record<string, unknown>;
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
// An incremental scanner over the top-level object, on the raw bytes. It is
// fed the body chunk by chunk as it arrives and finds the `deleted` value
// with string-aware bracket matching; the bytes of that value are counted
// and dropped as they pass, so the history is never held in memory, turned
// into a string, or into objects. Structural characters are ASCII, and
// UTF-8 never uses bytes below 0x80 inside multi-byte sequences, so bytes
// are safe to scan, and a chunk may end anywhere (inside a string, an
// escape or a multi-byte character).

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

const enum St {
  /** Before the opening `{`. */
  Start,
  /** After `{`: a key or `}`. */
  KeyOrClose,
  /** After `,`: a key. */
  Key,
  /** Inside a key string. */
  KeyString,
  /** After a key: `:`. */
  Colon,
  /** After `:`: the first byte of a value. */
  Value,
  /** Inside an array or object value. */
  Container,
  /** Inside a string value. */
  String,
  /** Inside a number or literal value. */
  Scalar,
  /** After a value: `,` or `}`. */
  AfterValue,
  /** `deleted` is behind us (or the object closed): the rest is kept unscanned, for JSON.parse. */
  Pass,
}

/** Nesting deeper than this inside `deleted` is refused; LAPI items are 2 deep. */
const MAX_DEPTH = 64;
/** A key longer than this is not `deleted`, even spelled with `\u` escapes (44 bytes). */
const MAX_KEY_BYTES = 64;
const NULL_BYTES = Buffer.from('null');

function isWs(c: number | undefined): boolean {
  return c === 32 || c === 10 || c === 13 || c === 9;
}

function isValueEnd(c: number): boolean {
  return c === Ch.Comma || c === Ch.RBrace || c === Ch.RBracket || isWs(c);
}

const TRUNCATED = 'unexpected end of body (truncated JSON?)';

/**
 * Reads a `/v1/decisions/stream` body incrementally: `push` each chunk as it
 * arrives, then `finish()`. Unless `includeDeleted` is set, the top-level
 * `deleted` value is walked and counted as it passes and its bytes are
 * dropped; everything else is held for one `JSON.parse` at the end, with
 * `deleted` replaced by `null`. A body that is not a JSON object, or a
 * malformed `deleted`, throws `StreamFormatError` from `push`, at the first
 * bad byte, so a caller can stop reading there. Chunks are held by
 * reference: they must not be modified after `push`.
 */
export class StreamBodyReader {
  /** The held part of the body: views of the pushed chunks, decoded once at the end. */
  private readonly held: Buffer[] = [];
  private heldSize = 0;
  private size = 0;
  private st = St.Start;
  /** Container state: open brackets, inside a string, after a backslash. */
  private readonly stack = new Uint8Array(MAX_DEPTH);
  private depth = 0;
  private inStr = false;
  private esc = false;
  /** Objects directly inside the dropped `deleted` array. */
  private items = 0;
  /** Whether the value being walked is `deleted`, and its first bytes if it is a literal. */
  private dropping = false;
  private literal = '';
  private key: number[] = [];
  private keyLong = false;
  private deletedCount = 0;
  private done = false;

  constructor(private readonly opts: ParseOptions) {}

  /** Bytes pushed so far. */
  get receivedBytes(): number {
    return this.size;
  }

  /** Bytes held for the final `JSON.parse` (the body without its `deleted` history). */
  get heldBytes(): number {
    return this.heldSize;
  }

  push(chunk: Uint8Array): void {
    if (this.done) throw new Error('StreamBodyReader: push after finish');
    const base = this.size;
    this.size += chunk.length;
    if (this.opts.includeDeleted || this.st === St.Pass) return this.hold(chunk);
    // Start of the part of this chunk that is held; -1 while `deleted` is being dropped.
    let keepFrom = this.dropping ? -1 : 0;
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      const c = chunk[i]!;
      switch (this.st) {
        case St.Start:
          if (isWs(c)) i++;
          else if (c === Ch.LBrace) {
            this.st = St.KeyOrClose;
            i++;
          } else throw new StreamFormatError(`expected a JSON object, got ${JSON.stringify(Buffer.from(chunk.subarray(i, i + 20)).toString('utf8'))}`);
          break;
        case St.KeyOrClose:
        case St.Key:
          if (isWs(c)) i++;
          else if (c === Ch.Quote) {
            this.st = St.KeyString;
            this.key = [c];
            this.keyLong = false;
            this.esc = false;
            i++;
          } else if (c === Ch.RBrace && this.st === St.KeyOrClose) {
            this.st = St.Pass;
            i = n;
          } else throw new StreamFormatError(`expected a key at offset ${base + i}`);
          break;
        case St.KeyString:
        case St.String: {
          const end = this.walkString(chunk, i, this.st === St.KeyString);
          if (end < 0) i = n;
          else {
            i = end;
            this.st = this.st === St.KeyString ? St.Colon : St.AfterValue;
          }
          break;
        }
        case St.Colon:
          if (isWs(c)) i++;
          else if (c === Ch.Colon) {
            this.st = St.Value;
            this.dropping = this.keyIs('deleted');
            i++;
          } else throw new StreamFormatError(`expected ':' at offset ${base + i}`);
          break;
        case St.Value:
          if (isWs(c)) {
            i++;
            break;
          }
          if (this.dropping) {
            if (c !== Ch.LBracket && c !== 110 /* n */) throw new StreamFormatError(`"deleted" must be an array or null`);
            if (keepFrom >= 0) this.hold(chunk.subarray(keepFrom, i));
            this.hold(NULL_BYTES);
            keepFrom = -1;
          }
          if (c === Ch.LBracket || c === Ch.LBrace) {
            this.st = St.Container;
            this.depth = 0;
            this.inStr = false;
            this.esc = false;
            this.items = 0;
          } else if (c === Ch.Quote) {
            this.st = St.String;
            this.esc = false;
            i++;
          } else {
            this.st = St.Scalar;
            this.literal = '';
          }
          break;
        case St.Container:
          i = this.walkContainer(chunk, i, base);
          if (this.depth === 0) this.endValue();
          break;
        case St.Scalar:
          for (; i < n; i++) {
            const d = chunk[i]!;
            if (isValueEnd(d)) {
              this.endValue();
              break;
            }
            if (this.dropping && this.literal.length < 5) this.literal += String.fromCharCode(d);
          }
          break;
        case St.AfterValue:
          if (isWs(c)) i++;
          else if (c === Ch.Comma) {
            this.st = St.Key;
            i++;
          } else if (c === Ch.RBrace) {
            this.st = St.Pass;
            i = n;
          } else throw new StreamFormatError(`expected ',' or '}' at offset ${base + i}`);
          break;
        case St.Pass:
          i = n;
          break;
      }
      // `deleted` just ended: the rest of the body is held from here.
      if (keepFrom < 0 && !this.dropping) keepFrom = i;
    }
    if (keepFrom >= 0) this.hold(keepFrom === 0 ? chunk : chunk.subarray(keepFrom));
  }

  /** The parsed snapshot; throws StreamFormatError on a truncated or malformed body. */
  finish(): ParseResult {
    this.done = true;
    if (this.opts.includeDeleted) {
      const obj = this.parseHeld();
      return readItems(obj, this.opts, listOf(obj, 'deleted').length);
    }
    if (this.st !== St.Pass) {
      if (this.st === St.Start) throw new StreamFormatError('expected a JSON object, got ""');
      if (this.st === St.KeyString || this.st === St.String || (this.st === St.Container && this.inStr)) throw new StreamFormatError('unterminated string (truncated body?)');
      // A literal that runs to the end of the body is cut short too: the object never closed.
      if (this.st === St.Scalar && this.dropping) this.checkLiteral();
      throw new StreamFormatError(TRUNCATED);
    }
    return readItems(this.parseHeld(), this.opts, this.deletedCount);
  }

  /** JSON.parse of what was held; the text is garbage as soon as this returns, before the items are read. */
  private parseHeld(): Record<string, unknown> {
    const obj = jsonParse(decodeAll(this.held, this.heldSize));
    this.held.length = 0;
    if (!isPlainObject(obj)) throw new StreamFormatError('expected a JSON object with "new" and "deleted"');
    return obj;
  }

  private hold(b: Uint8Array): void {
    if (b.length === 0) return;
    this.heldSize += b.length;
    if (this.heldSize > bufferConstants.MAX_STRING_LENGTH) {
      throw new StreamFormatError(`body too large: more than ${bufferConstants.MAX_STRING_LENGTH} bytes to parse besides the deleted history`);
    }
    this.held.push(Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  }

  private keyIs(name: string): boolean {
    if (this.keyLong) return false;
    const raw = Buffer.from(this.key).toString('utf8');
    // Plain keys are compared as written; one with escapes is decoded first.
    if (!raw.includes('\\')) return raw === `"${name}"`;
    try {
      return JSON.parse(raw) === name;
    } catch {
      throw new StreamFormatError(`invalid key ${raw.slice(0, 40)}`);
    }
  }

  private checkLiteral(): void {
    if (this.literal !== 'null') throw new StreamFormatError(`"deleted" must be an array or null`);
  }

  /** A value ended: after `deleted`, the rest passes unscanned; after any other key, scanning goes on. */
  private endValue(): void {
    if (this.dropping) {
      if (this.st === St.Scalar) this.checkLiteral();
      else this.deletedCount = this.items;
      this.dropping = false;
      this.st = St.Pass;
    } else this.st = St.AfterValue;
  }

  /** Walks a key or a string value from `i`, across chunks; returns the index past its closing quote, or -1 when the chunk ends first. */
  private walkString(b: Uint8Array, i: number, isKey: boolean): number {
    for (const n = b.length; i < n; i++) {
      const d = b[i]!;
      if (isKey) {
        if (this.key.length < MAX_KEY_BYTES) this.key.push(d);
        else this.keyLong = true;
      }
      if (this.esc) this.esc = false;
      else if (d === Ch.Backslash) this.esc = true;
      else if (d === Ch.Quote) return i + 1;
    }
    return -1;
  }

  /** Walks a container from `i`; returns where it stopped (end of chunk, or just past the closing bracket). */
  private walkContainer(b: Uint8Array, i: number, base: number): number {
    const n = b.length;
    const stack = this.stack;
    let depth = this.depth;
    let items = this.items;
    // The chunk before ended inside a string (maybe right after a backslash): finish that string first.
    if (this.inStr) {
      if (this.esc && i < n) i++;
      for (; i < n; i++) {
        const d = b[i];
        if (d === Ch.Quote) break;
        if (d === Ch.Backslash) i++;
      }
      if (i >= n) {
        // Ends inside the string again; `i > n` means its last byte was a backslash.
        this.esc = i > n;
        return n;
      }
      this.inStr = false;
      this.esc = false;
      i++;
    }
    for (; i < n; i++) {
      const c = b[i]!;
      if (c === Ch.Quote) {
        // Strings are most of the bytes: a tight loop to the closing quote.
        for (i++; i < n; i++) {
          const d = b[i];
          if (d === Ch.Quote) break;
          if (d === Ch.Backslash) i++;
        }
        if (i >= n) {
          this.inStr = true;
          this.esc = i > n;
          break;
        }
      } else if (c === Ch.LBracket || c === Ch.LBrace) {
        if (depth === MAX_DEPTH) throw new StreamFormatError(`nested more than ${MAX_DEPTH} deep at offset ${base + i}`);
        stack[depth++] = c;
        if (depth === 2 && c === Ch.LBrace) items++;
      } else if (c === Ch.RBracket || c === Ch.RBrace) {
        if (stack[--depth] !== c - 2) throw new StreamFormatError(`mismatched '${String.fromCharCode(c)}' at offset ${base + i}`);
        if (depth === 0) {
          i++;
          break;
        }
      }
    }
    this.depth = depth;
    this.items = items;
    return Math.min(i, n);
  }
}

/** The held pieces → text. LAPI bodies are ASCII in practice: then latin1 decodes the same text as UTF-8, without the UTF-8 decoder. */
function decodeAll(pieces: Buffer[], size: number): string {
  // One copy into a single buffer, then one string: 64 KiB strings per piece would cost more in young-generation churn.
  const all = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, size);
  return all.toString(isAscii(all) ? 'latin1' : 'utf8');
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

/** `new` (and, when asked, `deleted`) of a parsed body → decisions. */
function readItems(obj: Record<string, unknown>, opts: ParseOptions, deletedCount: number): ParseResult {
  const rawNew = listOf(obj, 'new');
  listOf(obj, 'deleted');
  const c: Counters = { skipped: 0, skippedSamples: [], filtered: 0, expired: 0 };
  const decisions: Decision[] = [];
  for (let i = 0; i < rawNew.length; i++) {
    const d = toDecision(rawNew[i], i, 'new', opts, c);
    if (d) decisions.push(d);
  }
  // No usable ban while some items failed validation: the format changed or the producer is broken;
  // it is not that every ban was lifted. Refusing the snapshot makes the pass fail static instead of
  // emptying the targets, even when the rest was filtered out or had expired. A delta only adds, so
  // there only a body whose every item failed is refused.
  const delta = opts.includeDeleted === true;
  if (c.skipped > 0 && decisions.length === 0 && (!delta || (c.filtered === 0 && c.expired === 0))) {
    throw new StreamFormatError(`no item of "new" is a usable ban: ${c.skipped} of ${rawNew.length} failed validation (${c.skippedSamples[0] ?? ''})`);
  }
  const deleted: Decision[] = [];
  if (opts.includeDeleted) {
    const rawDeleted = listOf(obj, 'deleted');
    const dc: Counters = { skipped: 0, skippedSamples: [], filtered: 0, expired: 0 };
    for (let i = 0; i < rawDeleted.length; i++) {
      const dd = toDecision(rawDeleted[i], i, 'deleted', opts, dc, true);
      if (dd) deleted.push(dd);
    }
  }
  const kept: Record<string, unknown> = {};
  for (const key of opts.keep ?? []) if (Object.hasOwn(obj, key)) kept[key] = obj[key];
  return { decisions, deleted, ...c, deletedCount, kept };
}

/**
 * Parses a whole `/v1/decisions/stream` body held in memory (a file, a
 * test): the same reader as a streamed response, given one chunk. Throws
 * `StreamFormatError` on a malformed body.
 */
export function parseStreamBody(body: string | Uint8Array, opts: ParseOptions): ParseResult {
  const reader = new StreamBodyReader(opts);
  reader.push(typeof body === 'string' ? Buffer.from(body, 'utf8') : body);
  return reader.finish();
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
