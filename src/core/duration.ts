/**
 * Go duration strings, as CrowdSec writes them: `3h59m58.5s`, `-16.960276ms`,
 * `1m29.089988758s`, `0s`. Units: ns, us, µs, ms, s, m, h. Returns
 * milliseconds (fractional kept). Throws a `RangeError` naming the input.
 */
/** Longest duration accepted: Go's time.Duration maximum, 2562047h47m16.854775807s (the LAPI sends up to this). */
export const MAX_DURATION_MS = 9_223_372_036_854.775; // ms, to the precision a double keeps

function bad(text: string, why = 'expected a Go duration like "3h59m58.5s"'): RangeError {
  return new RangeError(`invalid duration ${JSON.stringify(text)}: ${why}`);
}

/** Hand-rolled: this runs once per decision, up to a million times a pass. */
export function parseGoDuration(text: string): number {
  if (typeof text !== 'string' || text.length === 0 || text.length > 64) throw bad(String(text));
  const n = text.length;
  let i = 0;
  let sign = 1;
  const c0 = text.charCodeAt(0);
  if (c0 === 45 || c0 === 43) {
    sign = c0 === 45 ? -1 : 1;
    i = 1;
  }
  if (i === n - 1 && text.charCodeAt(i) === 48) return 0;
  if (i >= n) throw bad(text);
  let total = 0;
  while (i < n) {
    // number: digits [. digits]
    let int = 0;
    let frac = 0;
    let scale = 1;
    let digits = 0;
    let c = text.charCodeAt(i);
    while (c >= 48 && c <= 57) {
      int = int * 10 + (c - 48);
      digits++;
      c = text.charCodeAt(++i);
    }
    if (c === 46) {
      c = text.charCodeAt(++i);
      while (c >= 48 && c <= 57) {
        if (scale < 1e15) {
          frac = frac * 10 + (c - 48);
          scale *= 10;
        }
        digits++;
        c = text.charCodeAt(++i);
      }
    }
    if (digits === 0) throw bad(text);
    let unit: number;
    if (c === 104) unit = 3_600_000; // h
    else if (c === 115) unit = 1000; // s
    else if (c === 109) {
      if (text.charCodeAt(i + 1) === 115) {
        unit = 1; // ms
        i++;
      } else unit = 60_000; // m
    } else if (c === 117 || c === 181 || c === 956) {
      // us, µs (micro sign), μs (greek mu)
      if (text.charCodeAt(i + 1) !== 115) throw bad(text);
      unit = 1e-3;
      i++;
    } else if (c === 110) {
      if (text.charCodeAt(i + 1) !== 115) throw bad(text);
      unit = 1e-6;
      i++;
    } else throw bad(text);
    i++;
    total += (int + frac / scale) * unit;
  }
  if (!Number.isFinite(total) || total > MAX_DURATION_MS) throw bad(text, `longer than ${MAX_DURATION_MS / 3_600_000}h`);
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
