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

/** Replaces every registered secret in `text` with `[REDACTED]`. */
export function scrub(text: string): string {
  let out = text;
  for (const s of secrets) if (out.includes(s)) out = out.split(s).join('[REDACTED]');
  return out;
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
