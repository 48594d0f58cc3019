/**
 * pino logger factory. Secrets never reach a log line: known secret keys are
 * redacted by path, and every secret value the process loads (API keys,
 * tokens) is registered here and scrubbed from the final line as a last
 * line of defence, wherever it appears.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

const secrets = new Set<string>();

/** Registers a secret value so it is scrubbed from every log line and error message we print. */
export function registerSecret(value: string | undefined): void {
  if (value && value.length >= 4) secrets.add(value);
}

/** A piece of a secret at least this long is a leak too (a message that cuts a body short can cut a key). */
const PIECE = 12;
/** Probes are STRIDE apart and PROBE long, so every run of PIECE characters of a secret holds one whole probe. */
const PROBE = 6;
const STRIDE = PIECE - PROBE + 1;

/**
 * Replaces every registered secret in `text`, and every piece of one that is
 * at least 12 characters long (or the whole secret, if shorter), with
 * `[REDACTED]`.
 */
export function scrub(text: string): string {
  if (secrets.size === 0) return text;
  const runs: Array<[number, number]> = [];
  for (const s of secrets) {
    const min = Math.min(PIECE, s.length);
    const probe = Math.min(PROBE, s.length);
    for (let o = 0; o + probe <= s.length; o += STRIDE) {
      const p = s.slice(o, o + probe);
      for (let t = text.indexOf(p); t >= 0; t = text.indexOf(p, t + 1)) {
        // Grow the hit both ways while text and secret agree; keep it if it is long enough.
        let a = t;
        let sa = o;
        while (a > 0 && sa > 0 && text[a - 1] === s[sa - 1]) {
          a--;
          sa--;
        }
        let b = t + probe;
        let sb = o + probe;
        while (b < text.length && sb < s.length && text[b] === s[sb]) {
          b++;
          sb++;
        }
        if (b - a >= min) runs.push([a, b]);
      }
    }
  }
  if (runs.length === 0) return text;
  runs.sort((x, y) => x[0] - y[0]);
  let out = '';
  let at = 0;
  for (const [a, b] of runs) {
    if (b <= at) continue;
    if (a >= at) out += `${text.slice(at, a)}[REDACTED]`;
    at = b;
  }
  return out + text.slice(at);
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const REDACT_PATHS = [
  'api_key',
  '*.api_key',
  '*.*.api_key',
  'apiKey',
  '*.apiKey',
  'token',
  '*.token',
  'password',
  '*.password',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'headers["x-api-key"]',
  '*.headers.authorization',
  '*.headers["x-api-key"]',
];

export function createLogger(level: LogLevel = 'info', destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'cloud-bouncer' },
      redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      hooks: {
        streamWrite: (s: string) => (secrets.size > 0 ? scrub(s) : s),
      },
    },
    destination ?? pino.destination({ dest: 2, sync: true }),
  );
}
