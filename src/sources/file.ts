/**
 * A decision source read from disk: the LAPI stream shape
 * (`{"new": [...], "deleted": [...]}`), optionally with a sibling
 * `whitelist` array of CIDRs. It backs the quick start and lets an operator
 * feed decisions exported from elsewhere. The file is read on every pass, so
 * editing it is the way to change the decisions.
 */
import { createReadStream } from 'node:fs';
import type { Logger } from 'pino';
import { z } from 'zod';
import { type ParseResult, StreamBodyReader, StreamFormatError } from '../core/decisions.js';
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

/** The optional `whitelist` key: null/absent → [], an array → its entries (non-strings stringified, reported later). */
function whitelistOf(kept: Record<string, unknown>): string[] | undefined {
  const wl = kept.whitelist;
  if (wl === undefined || wl === null) return [];
  if (!Array.isArray(wl)) return undefined;
  return wl.map((e) => (typeof e === 'string' ? e : JSON.stringify(e)));
}

/** A read error, kept apart from a format error so the two get their own messages. */
class ReadFailure {
  constructor(readonly cause: unknown) {}
}

export function createFileSource(cfg: FileSourceConfig, deps: { log: Logger }): DecisionSource {
  const name = cfg.name;
  const filters = filtersFromConfig(cfg);
  const fail = (message: string, code: string, cause?: unknown) => new SourceError(name, message, { cause, code });

  async function snapshot(opts: SnapshotOptions): Promise<SourceSnapshot> {
    // Read as a stream, like a LAPI response: the `deleted` history is dropped as it passes.
    const reader = new StreamBodyReader({ source: name, now: opts.now, filters, keep: ['whitelist'] });
    let parsed: ParseResult;
    let whitelist: string[] | undefined;
    try {
      await readInto(cfg.path, reader, opts.signal);
      parsed = reader.finish();
      whitelist = whitelistOf(parsed.kept);
    } catch (err) {
      if (err instanceof ReadFailure) {
        throw fail(`cannot read ${cfg.path}: ${(err.cause as NodeJS.ErrnoException).code ?? errorLine(err.cause)}`, 'read', err.cause);
      }
      const why = err instanceof StreamFormatError ? err.message : errorLine(err);
      throw fail(`${cfg.path}: malformed decisions file: ${why}`, 'format', err);
    }
    if (whitelist === undefined) throw fail(`${cfg.path}: malformed decisions file: "whitelist" must be an array of CIDRs`, 'format');
    const bytes = reader.receivedBytes;
    deps.log.debug({ source: name, path: cfg.path, bytes, decisions: parsed.decisions.length, skipped: parsed.skipped, filtered: parsed.filtered }, 'read decisions file');
    return {
      decisions: parsed.decisions,
      whitelist,
      skipped: parsed.skipped,
      skippedSamples: parsed.skippedSamples,
      deletedCount: parsed.deletedCount,
      bytes,
      kind: 'full',
    };
  }

  // The file may carry a whitelist: while it cannot be read, that whitelist is unknown.
  return { name, publishesWhitelist: true, snapshot };
}

/** Pushes the file to `reader` chunk by chunk. A read error is thrown as `ReadFailure`; the reader's own errors as they are. */
async function readInto(path: string, reader: StreamBodyReader, signal: AbortSignal | undefined): Promise<void> {
  const stream = createReadStream(path, { highWaterMark: 64 * 1024, ...(signal ? { signal } : {}) });
  try {
    for await (const chunk of stream) reader.push(chunk as Buffer);
  } catch (err) {
    throw err instanceof StreamFormatError ? err : new ReadFailure(err);
  } finally {
    stream.destroy();
  }
}
