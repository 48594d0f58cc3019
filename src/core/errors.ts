/**
 * Two families of errors, as in external-dns: a retryable error means "log it
 * and try again on the next pass"; a fatal error stops the run with exit 1.
 * Every error carries its cause.
 */

export class CloudBouncerError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Throttling, 5xx, timeouts, dropped connections. The next pass retries. */
export class RetryableError extends CloudBouncerError {
  /** Provider or HTTP error code, e.g. `RequestLimitExceeded`, `429`. */
  readonly code: string | undefined;
  /** Server-suggested delay before the next attempt. */
  readonly retryAfterMs: number | undefined;
  constructor(message: string, options?: { cause?: unknown; code?: string | undefined; retryAfterMs?: number | undefined }) {
    super(message, options);
    this.code = options?.code;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/** Auth, config, ownership conflicts, validation errors from the cloud. The run fails. */
export class FatalError extends CloudBouncerError {
  readonly code: string | undefined;
  constructor(message: string, options?: { cause?: unknown; code?: string | undefined }) {
    super(message, options);
    this.code = options?.code;
  }
}

/** The configuration is invalid. Names the key, what was expected and what was found. */
export class ConfigError extends FatalError {
  readonly key: string;
  constructor(key: string, message: string, options?: { cause?: unknown }) {
    super(`config: ${key}: ${message}`, { ...options, code: 'config' });
    this.key = key;
  }
}

/** A foreign rule sits where we would write. Nothing is written to the target. */
export class OwnershipConflictError extends FatalError {
  readonly target: string;
  readonly slots: string[];
  constructor(target: string, slots: string[], message: string, options?: { cause?: unknown }) {
    super(`target ${target}: ownership conflict: ${message}`, { ...options, code: 'ownership_conflict' });
    this.target = target;
    this.slots = slots;
  }
}

/** A decision source failed (unreachable, 5xx, 403, garbage). The pass runs fail-static. */
export class SourceError extends RetryableError {
  readonly source: string;
  constructor(source: string, message: string, options?: { cause?: unknown; code?: string | undefined }) {
    super(`source ${source}: ${message}`, options);
    this.source = source;
  }
}

/** The cloud's quota (not our configured capacity) refused a create. */
export class QuotaExceededError extends CloudBouncerError {
  readonly code: string;
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options);
    this.code = options?.code ?? 'QUOTA_EXCEEDED';
  }
}

export function isRetryable(err: unknown): err is RetryableError {
  return err instanceof RetryableError;
}

/** One line, for stderr and log summaries. */
export function errorLine(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? err.name;
  return String(err);
}
