/**
 * Go duration strings, as CrowdSec writes them: `3h59m58.5s`, `-16.960276ms`,
 * `1m29.089988758s`, `0s`. Units: ns, us, µs, ms, s, m, h. Returns
 * milliseconds (fractional kept). Throws a `RangeError` naming the input.
 */
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  'µs': 1e-3,
  'μs': 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

const PART_RE = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/** Longest duration accepted (Go's time.Duration tops out near 292 years). */
export const MAX_DURATION_MS = 292 * 365 * 24 * 3_600_000;

export function parseGoDuration(text: string): number {
  if (typeof text !== 'string' || text.length === 0 || text.length > 64) {
    throw new RangeError(`invalid duration ${JSON.stringify(text)}: expected a Go duration like "3h59m58.5s"`);
  }
  let i = 0;
  let sign = 1;
  if (text[0] === '-' || text[0] === '+') {
    sign = text[0] === '-' ? -1 : 1;
    i = 1;
  }
  if (text.slice(i) === '0') return 0;
  let total = 0;
  let parts = 0;
  while (i < text.length) {
    PART_RE.lastIndex = i;
    const m = PART_RE.exec(text);
    if (!m) throw new RangeError(`invalid duration ${JSON.stringify(text)}: expected a Go duration like "3h59m58.5s"`);
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    i = PART_RE.lastIndex;
    parts++;
  }
  if (parts === 0) throw new RangeError(`invalid duration ${JSON.stringify(text)}: expected a Go duration like "3h59m58.5s"`);
  if (!Number.isFinite(total) || total > MAX_DURATION_MS) {
    throw new RangeError(`invalid duration ${JSON.stringify(text)}: longer than ${MAX_DURATION_MS / 3_600_000}h`);
  }
  return sign * total;
}

export function formatDuration(ms: number): string {
  const neg = ms < 0;
  let s = Math.round(Math.abs(ms) / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const out = `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s || (!h && !m) ? `${s}s` : ''}`;
  return neg ? `-${out}` : out;
}
