/**
 * A decision source read from disk: the LAPI stream shape
 * (`{"new": [...], "deleted": [...]}`), optionally with a sibling
 * `whitelist` array of CIDRs. It backs the quick start and lets an operator
 * feed decisions exported from elsewhere. The file is read on every pass, so
 * editing it is the way to change the decisions.
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { z } from 'zod';
import { StreamFormatError, parseStreamBody } from '../core/decisions.js';
import { SourceError, errorLine } from '../core/errors.js';
import { SOURCE_NAME_PATTERN, filterKeys, filtersFromConfig } from './lapi.js';
import type { DecisionSource, SnapshotOptions, SourceSnapshot } from './source.js';

export const fileSourceSchema = z
  .object({
    name: z.string().regex(SOURCE_NAME_PATTERN, 'expected a name of letters, digits, dot, dash or underscore (at most 63)'),
    type: z.literal('file'),
    /** Path of the JSON file, relative to the working directory. */
    path: z.string().trim().min(1, 'expected a file path'),
    ...filterKeys,
  })
  .strict();

export type FileSourceConfig = z.infer<typeof fileSourceSchema>;

const WHITELIST_KEY = Buffer.from('"whitelist"');

/** The optional `whitelist` key: null/absent → [], an array → its entries (non-strings stringified, reported later). */
function whitelistOf(bytes: Buffer): string[] | undefined {
  // Most files have none; only then is the body parsed a second time.
  if (!bytes.includes(WHITELIST_KEY)) return [];
  const doc = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  const wl = doc.whitelist;
  if (wl === undefined || wl === null) return [];
  if (!Array.isArray(wl)) return undefined;
  return wl.map((e) => (typeof e === 'string' ? e : JSON.stringify(e)));
}

export function createFileSource(cfg: FileSourceConfig, deps: { log: Logger }): DecisionSource {
  const name = cfg.name;
  const filters = filtersFromConfig(cfg);
  const fail = (message: string, code: string, cause?: unknown) => new SourceError(name, message, { cause, code });

  async function snapshot(opts: SnapshotOptions): Promise<SourceSnapshot> {
    let bytes: Buffer;
    try {
      bytes = await readFile(cfg.path, { signal: opts.signal });
    } catch (err) {
      throw fail(`cannot read ${cfg.path}: ${(err as NodeJS.ErrnoException).code ?? errorLine(err)}`, 'read', err);
    }
    let parsed: ReturnType<typeof parseStreamBody>;
    let whitelist: string[] | undefined;
    try {
      parsed = parseStreamBody(bytes, { source: name, now: opts.now, filters });
      whitelist = whitelistOf(bytes);
    } catch (err) {
      const why = err instanceof StreamFormatError ? err.message : errorLine(err);
      throw fail(`${cfg.path}: malformed decisions file: ${why}`, 'format', err);
    }
    if (whitelist === undefined) throw fail(`${cfg.path}: malformed decisions file: "whitelist" must be an array of CIDRs`, 'format');
    deps.log.debug({ source: name, path: cfg.path, bytes: bytes.length, decisions: parsed.decisions.length, skipped: parsed.skipped, filtered: parsed.filtered }, 'read decisions file');
    return {
      decisions: parsed.decisions,
      whitelist,
      skipped: parsed.skipped,
      skippedSamples: parsed.skippedSamples,
      deletedCount: parsed.deletedCount,
      bytes: bytes.length,
      kind: 'full',
    };
  }

  return { name, snapshot };
}
