/**
 * The `file` source: the stream JSON shape read from disk, with an optional
 * sibling `whitelist` array, read as a stream.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SourceError } from '../../src/core/errors.js';
import { createFileSource, fileSourceSchema } from '../../src/sources/file.js';
import type { SourceSnapshot } from '../../src/sources/source.js';
import { captureLog } from '../helpers/lapi.js';

const NOW = Date.UTC(2026, 10, 23, 8, 0, 0);
const cidrs = (s: SourceSnapshot) => s.decisions.map((d) => d.cidr).sort();

function source(extra: Record<string, unknown>) {
  return createFileSource(fileSourceSchema.parse({ name: 'disk', type: 'file', ...extra }), { log: captureLog().log });
}

function file(content: string): string {
  const p = join(mkdtempSync(join(tmpdir(), 'cb-src-')), 'decisions.json');
  writeFileSync(p, content);
  return p;
}

const item = (value: string, extra: Record<string, string> = {}) => ({ duration: '1h', origin: 'crowdsec', scenario: 'crowdsecurity/ssh-bf', scope: 'Ip', type: 'ban', value, ...extra });

async function rejection(p: Promise<unknown>): Promise<SourceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SourceError);
  return err as SourceError;
}

describe('sources/file', () => {
  it('reads the bundled sample: bans only, captcha and expired absent, history counted', async () => {
    const snap = await source({ path: 'examples/decisions.json' }).snapshot({ now: NOW });
    const got = cidrs(snap);
    expect(got).toContain('192.0.2.10/32');
    expect(got).toContain('2001:db8:1::/48');
    expect(got).toContain('198.51.100.20/32'); // an Ip-scope value carrying /32
    expect(got).not.toContain('198.51.100.7/32'); // captcha
    expect(got).not.toContain('192.0.2.99/32'); // expired
    expect(snap).toMatchObject({ kind: 'full', deletedCount: 1, skipped: 0, whitelist: [] });
    expect(snap.decisions.find((d) => d.cidr === '192.0.2.10/32')!.expiresAt).toBe(NOW + (3 * 3600 + 59 * 60 + 58) * 1000);
  });

  it('returns a sibling whitelist array as published', async () => {
    const p = file(JSON.stringify({ new: [item('192.0.2.1')], deleted: null, whitelist: ['203.0.113.5', '2001:db8::/64'] }));
    const snap = await source({ path: p }).snapshot({ now: NOW });
    expect(snap.whitelist).toEqual(['203.0.113.5', '2001:db8::/64']);
    expect(cidrs(snap)).toEqual(['192.0.2.1/32']);
  });

  it('applies the filters', async () => {
    const p = file(JSON.stringify({ new: [item('192.0.2.1'), item('192.0.2.2', { origin: 'CAPI' }), item('192.0.2.3', { scenario: 'crowdsecurity/http-probing' })], deleted: [] }));
    expect(cidrs(await source({ path: p, origins: ['crowdsec'] }).snapshot({ now: NOW }))).toEqual(['192.0.2.1/32', '192.0.2.3/32']);
    expect(cidrs(await source({ path: p, scenarios_not_containing: ['http'] }).snapshot({ now: NOW }))).toEqual(['192.0.2.1/32', '192.0.2.2/32']);
  });

  it('re-reads the file on every snapshot', async () => {
    const p = file(JSON.stringify({ new: [item('192.0.2.1')], deleted: null }));
    const src = source({ path: p });
    expect(cidrs(await src.snapshot({ now: NOW }))).toEqual(['192.0.2.1/32']);
    writeFileSync(p, JSON.stringify({ new: [item('192.0.2.2')], deleted: null }));
    expect(cidrs(await src.snapshot({ now: NOW }))).toEqual(['192.0.2.2/32']);
  });

  it('reads a file of many chunks: the history is counted, a whitelist after it is kept', async () => {
    // About 2 MB of history (30 read chunks), with strings that hold JSON punctuation.
    const history = Array.from({ length: 12_000 }, (_, i) => item(`10.${(i >> 8) & 255}.${i & 255}.1`, { scenario: `x/"]}[{,\\${i}` }));
    const body = `{"deleted": ${JSON.stringify(history)},\n "new": ${JSON.stringify([item('192.0.2.1'), item('2001:db8::/64', { scope: 'Range' })])},\n "whitelist": ["203.0.113.5"]}`;
    const p = file(body);
    const snap = await source({ path: p }).snapshot({ now: NOW });
    expect(cidrs(snap)).toEqual(['192.0.2.1/32', '2001:db8::/64']);
    expect(snap).toMatchObject({ deletedCount: 12_000, whitelist: ['203.0.113.5'], bytes: statSync(p).size });
  });

  it('refuses a malformed file at its first bad byte, without waiting for the rest', async () => {
    // A FIFO whose writer sends a broken history and then stays open: a reader that buffered the
    // whole file would wait for an end that never comes.
    const p = join(mkdtempSync(join(tmpdir(), 'cb-src-')), 'decisions.fifo');
    execFileSync('mkfifo', [p]);
    // The outcome is taken at once: the refusal may come before the writer below has finished.
    const pending = source({ path: p }).snapshot({ now: NOW }).then(
      () => undefined,
      (e: unknown) => e,
    );
    // Opened asynchronously: a FIFO's open waits for the other end, which the source opens on a later tick.
    const writer = await open(p, 'w');
    try {
      await writer.write('{"deleted": [{"value": "192.0.2.1"}}');
      const err = await pending;
      expect(err).toBeInstanceOf(SourceError);
      expect((err as SourceError).message).toMatch(/^source disk: .*decisions\.fifo: malformed decisions file: .*mismatched/);
    } finally {
      await writer.close();
    }
  }, 15_000);

  it.each([
    ['a missing file', undefined, /^source disk: cannot read .*missing\.json: ENOENT$/],
    ['a directory', 'directory', /^source disk: cannot read .*: EISDIR$/],
    ['truncated JSON', '{"new":[{"duration":"1h","origin":"crowdsec"', /^source disk: .*: malformed decisions file: .*truncated/],
    ['garbage', 'hello', /^source disk: .*: malformed decisions file: expected a JSON object/],
    ['a whitelist that is not a list', JSON.stringify({ new: null, deleted: null, whitelist: '203.0.113.5' }), /"whitelist" must be an array of CIDRs/],
  ])('fails with a SourceError naming the source on %s', async (_n, content, message) => {
    const p = content === undefined ? join(tmpdir(), 'cb-does-not-exist', 'missing.json') : content === 'directory' ? mkdtempSync(join(tmpdir(), 'cb-src-')) : file(content);
    const err = await rejection(source({ path: p }).snapshot({ now: NOW }));
    expect(err.message).toMatch(message);
    expect(err.source).toBe('disk');
  });

  it('validates its config strictly, naming the key', () => {
    const missing = fileSourceSchema.safeParse({ name: 'disk', type: 'file' });
    expect(missing.error?.issues[0]?.path).toEqual(['path']);
    const unknown = fileSourceSchema.safeParse({ name: 'disk', type: 'file', path: 'x.json', api_key: 'k' });
    expect(unknown.error?.issues[0]).toMatchObject({ code: 'unrecognized_keys', keys: ['api_key'] });
  });
});
