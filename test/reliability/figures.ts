/**
 * The figures of the reliability suite: one line per provider × fault on
 * stdout, and the same rows as JSON in `build/reliability/results.json`
 * (one section per test file, merged, so the README can quote them).
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '../../build/reliability/results.json');

export type Row = Record<string, string | number>;

function cell(v: string | number): string {
  return typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(1) : String(v);
}

/** A fixed-width table, header first. */
export function table(rows: readonly Row[]): string[] {
  if (rows.length === 0) return [];
  const cols = Object.keys(rows[0]!);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c] ?? '').length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(width[i]!)).join('  ').trimEnd();
  return [line(cols), ...rows.map((r) => line(cols.map((c) => cell(r[c] ?? ''))))];
}

/** Prints the rows and merges them into results.json under `section`. */
export function publish(section: string, title: string, rows: readonly Row[], meta: Record<string, unknown> = {}): void {
  console.log([`[reliability] ${title}`, ...table(rows).map((l) => `[reliability] ${l}`)].join('\n'));
  let doc: Record<string, unknown> = {};
  try {
    doc = JSON.parse(readFileSync(RESULTS_PATH, 'utf8')) as Record<string, unknown>;
  } catch {
    // First section written in this run, or an unreadable leftover: start over.
  }
  doc[section] = { title, generatedAt: new Date().toISOString(), ...meta, rows };
  mkdirSync(dirname(RESULTS_PATH), { recursive: true });
  const tmp = `${RESULTS_PATH}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(doc, null, 2)}\n`);
  renameSync(tmp, RESULTS_PATH);
}
