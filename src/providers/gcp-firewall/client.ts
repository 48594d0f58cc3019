/**
 * The subset of `@google-cloud/compute` the firewall target uses, behind a
 * narrow interface: list the project's firewall rules, insert, patch and
 * delete one rule, and wait on a global operation.
 *
 * - REST transport (`fallback: true`, the library's default for Compute).
 *   Credentials come from Application Default Credentials (Workload Identity
 *   on GKE, the metadata server on Cloud Run, `GOOGLE_APPLICATION_CREDENTIALS`
 *   elsewhere); tests inject an `authClient` and an `endpoint`.
 * - The SDK (two Compute clients, `sdk.ts`) is imported lazily, so loading the provider module
 *   to validate config costs nothing.
 * - The SDK's own retries are switched off (`retry: null`): every method call
 *   is exactly one HTTP exchange, counted once, and retried (bounded, with
 *   backoff) by `core/queue.ts`.
 * - `Retry-After` is not surfaced by the SDK's errors. The REST transport
 *   sends every request through the auth client's `fetch`; a thin wrapper
 *   there records the header into the async context of the call that made
 *   the request, so concurrent calls never see each other's value.
 *
 * Every failure leaves here as a RetryableError, a FatalError or a
 * QuotaExceededError, with its cause.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { FirewallsClient } from './sdk.js';
import { FatalError, QuotaExceededError, RetryableError } from '../../core/errors.js';
import { USER_AGENT, VERSION } from '../../version.js';
import type { GcpFirewall } from './mapping.js';

/** A global operation, as much of it as we read. */
export interface GcpOperation {
  name: string;
  status: 'PENDING' | 'RUNNING' | 'DONE' | string;
  operationType?: string | undefined;
  targetLink?: string | undefined;
  clientOperationId?: string | undefined;
  httpErrorStatusCode?: number | undefined;
  httpErrorMessage?: string | undefined;
  error?: { errors: { code: string; message: string }[] } | undefined;
}

export type CallName = 'list' | 'insert' | 'patch' | 'delete' | 'wait';

/** One HTTP exchange, as the call counter sees it. */
export interface CallRecord {
  call: CallName;
  kind: 'read' | 'write';
  /** Google error reason, HTTP status or transport failure of a failed call. */
  errorCode?: string | undefined;
}

export interface FirewallApi {
  /** Every firewall rule of the project (all pages). */
  list(): Promise<GcpFirewall[]>;
  insert(rule: GcpFirewall, requestId: string): Promise<GcpOperation>;
  patch(name: string, patch: GcpFirewall, requestId: string): Promise<GcpOperation>;
  /** `undefined` when the rule does not exist (404). */
  delete(name: string, requestId: string): Promise<GcpOperation | undefined>;
  /** One `globalOperations.wait` call: returns when the operation is DONE or the server's wait (up to 2 min) ends. */
  wait(operation: string, timeoutMs: number): Promise<GcpOperation>;
  close(): Promise<void>;
}

/** The `authClient` option of the SDK clients (a google-auth-library client, e.g. an `OAuth2Client`). */
export type GoogleAuthClient = NonNullable<NonNullable<ConstructorParameters<typeof FirewallsClient>[0]>['authClient']>;

export interface FirewallApiOptions {
  project: string;
  /** Compute endpoint override, e.g. `http://127.0.0.1:PORT` for a local fake. */
  endpoint?: string | undefined;
  /** Injected auth client (tests); ADC otherwise. */
  authClient?: GoogleAuthClient | undefined;
  /** Per HTTP request (list, insert, patch, delete). */
  requestTimeoutMs: number;
  onCall?: ((call: CallRecord) => void) | undefined;
}

// ---------------------------------------------------------------------------
// Retry-After, per call

interface CallScope {
  retryAfterMs?: number | undefined;
}

const scope = new AsyncLocalStorage<CallScope>();
const WATCHED = Symbol.for('cloud-bouncer.gcp-firewall.retry-after');

/** `Retry-After` in seconds or as an HTTP date, in ms. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

interface HeaderBag {
  headers?: { get?(name: string): string | null | undefined } | undefined;
}

function noteRetryAfter(res: HeaderBag | undefined): void {
  const s = scope.getStore();
  const header = res?.headers?.get?.('retry-after');
  if (s && header) s.retryAfterMs = parseRetryAfter(header);
}

/** Wraps the auth client's `fetch` (the REST transport's one door to the network) to read `Retry-After`. Idempotent. */
function watchRetryAfter(auth: unknown): void {
  const a = auth as { fetch?: (...args: unknown[]) => Promise<unknown>; [WATCHED]?: true } | undefined;
  if (!a || typeof a.fetch !== 'function' || a[WATCHED]) return;
  const original = a.fetch;
  a.fetch = async function (this: unknown, ...args: unknown[]) {
    try {
      const res = await original.apply(this, args);
      noteRetryAfter(res as HeaderBag);
      return res;
    } catch (err) {
      noteRetryAfter((err as { response?: HeaderBag } | undefined)?.response);
      throw err;
    }
  };
  a[WATCHED] = true;
}

// ---------------------------------------------------------------------------
// Error classification

interface GoogleErrorLike {
  name?: string;
  message?: string;
  code?: number | string;
  httpStatusCode?: number;
  reason?: string;
}

/** google-gax attaches the raw error body under this registered symbol (its telemetry hook). */
const RAW_PAYLOAD = Symbol.for('google-gax.rawHttpResponsePayload');

/** The legacy `errors[].reason` of a Google JSON error (`rateLimitExceeded`, `quotaExceeded`, `notFound`...). */
function legacyReason(err: unknown): string | undefined {
  let raw: unknown;
  try {
    raw = (err as Record<symbol, unknown>)[RAW_PAYLOAD];
  } catch {
    return undefined;
  }
  if (typeof raw !== 'string') return undefined;
  try {
    const body = JSON.parse(raw) as { error?: { errors?: { reason?: unknown }[] } };
    const r = body.error?.errors?.[0]?.reason;
    return typeof r === 'string' ? r : undefined;
  } catch {
    return undefined;
  }
}

/** HTTP status, reason and message of an SDK failure. */
export function googleErrorFacts(err: unknown): { status?: number | undefined; reason?: string | undefined; message: string; grpcCode?: number | undefined } {
  const e = (err ?? {}) as GoogleErrorLike;
  const message = (e.message ?? String(err)).split('\n')[0]!;
  const status = typeof e.httpStatusCode === 'number' ? e.httpStatusCode : undefined;
  let reason = legacyReason(err) ?? (typeof e.reason === 'string' ? e.reason : undefined);
  if (!reason && status === 403 && /rate limit exceeded/i.test(message)) reason = 'rateLimitExceeded';
  if (!reason && status === 403 && /^Quota '.+' exceeded/i.test(message)) reason = 'quotaExceeded';
  return { status, reason, message, grpcCode: typeof e.code === 'number' ? e.code : undefined };
}

const norm = (s: string | undefined) => (s ?? '').replace(/_/g, '').toLowerCase();
const RATE_LIMIT_REASONS = new Set(['ratelimitexceeded', 'userratelimitexceeded']);

export function isNotFound(err: unknown): boolean {
  const f = googleErrorFacts(err);
  return f.status === 404;
}

/**
 * Classifies an SDK failure (Compute API errors, "Handling API errors"):
 * - retryable: `403 rateLimitExceeded` (Compute's rate limiting), `429`,
 *   408 and 5xx, `resourceNotReady` (another operation on the rule is
 *   running), timeouts and dropped connections (no HTTP answer);
 * - quota: `403 quotaExceeded` (e.g. `Quota 'FIREWALLS' exceeded`) on an
 *   insert is a QuotaExceededError: the rules we have keep working; on any
 *   other call it is retried;
 * - fatal: 401, any other 403 (permissions), 400 validation, 404, 409 and
 *   anything without a known transport code.
 */
export function classifyGoogleError(err: unknown, what: string, opts: { retryAfterMs?: number | undefined; insert?: boolean } = {}): RetryableError | FatalError | QuotaExceededError {
  if (err instanceof RetryableError || err instanceof FatalError || err instanceof QuotaExceededError) return err;
  const f = googleErrorFacts(err);
  const reason = norm(f.reason);
  const code = f.reason ?? (f.status !== undefined ? String(f.status) : undefined);
  const detail = `${f.status ?? 'no answer'}${f.reason ? ` ${f.reason}` : ''}: ${f.message}`;
  const retryAfterMs = opts.retryAfterMs;
  if (f.status === undefined) {
    // A credential the token endpoint refuses (revoked key, deleted service account) will not heal by retrying.
    if (/invalid_grant|unauthorized_client|invalid_client|Could not load the default credentials/i.test(f.message)) {
      return new FatalError(`${what}: no usable Google credential: ${f.message}`, { cause: err, code: 'auth' });
    }
    // No HTTP answer. gax maps a timeout to DEADLINE_EXCEEDED (4), a reset or refused connection to UNAVAILABLE (14).
    if (f.grpcCode === 4) return new RetryableError(`${what}: timed out (${f.message})`, { cause: err, code: 'timeout' });
    if (f.grpcCode === 14 || f.grpcCode === 1) return new RetryableError(`${what}: no answer (${f.message})`, { cause: err, code: 'network' });
    return new FatalError(`${what}: ${f.message}`, { cause: err, code: typeof (err as GoogleErrorLike)?.code === 'string' ? String((err as GoogleErrorLike).code) : 'unknown' });
  }
  if (f.status === 429 || RATE_LIMIT_REASONS.has(reason)) return new RetryableError(`${what}: rate limited (${detail})`, { cause: err, code: code ?? '429', retryAfterMs });
  if (reason === 'quotaexceeded') {
    if (opts.insert) return new QuotaExceededError(`${what}: the project's firewall-rule quota is exhausted (${detail})`, { cause: err, code: 'QUOTA_EXCEEDED' });
    return new RetryableError(`${what}: quota exceeded (${detail})`, { cause: err, code, retryAfterMs });
  }
  if (reason === 'resourcenotready') return new RetryableError(`${what}: ${detail}`, { cause: err, code, retryAfterMs: retryAfterMs ?? 1000 });
  if (f.status === 408 || f.status >= 500) return new RetryableError(`${what}: ${detail}`, { cause: err, code, retryAfterMs });
  if (f.status === 401 || f.status === 403) {
    return new FatalError(`${what}: not authorised (${detail}); see deploy/iam/README-gcp.md for the role it needs`, { cause: err, code });
  }
  return new FatalError(`${what}: ${detail}`, { cause: err, code });
}

// ---------------------------------------------------------------------------
// The client

/** Plain copies of what we read (the SDK's objects carry oneof markers such as `_name`). */
function toFirewall(x: Record<string, unknown>): GcpFirewall {
  const pick = <T>(k: string): T | undefined => (x[k] === null ? undefined : (x[k] as T | undefined));
  const ports = (ps: unknown): GcpFirewall['denied'] =>
    Array.isArray(ps) ? ps.map((p: Record<string, unknown>) => ({ IPProtocol: p.IPProtocol as string | undefined, ports: [...((p.ports as string[] | undefined) ?? [])] })) : [];
  const log = pick<Record<string, unknown>>('logConfig');
  return {
    name: pick('name'),
    description: pick('description'),
    network: pick('network'),
    priority: pick('priority'),
    direction: pick('direction'),
    sourceRanges: [...(pick<string[]>('sourceRanges') ?? [])],
    destinationRanges: [...(pick<string[]>('destinationRanges') ?? [])],
    sourceTags: [...(pick<string[]>('sourceTags') ?? [])],
    sourceServiceAccounts: [...(pick<string[]>('sourceServiceAccounts') ?? [])],
    targetTags: [...(pick<string[]>('targetTags') ?? [])],
    targetServiceAccounts: [...(pick<string[]>('targetServiceAccounts') ?? [])],
    allowed: ports(x.allowed),
    denied: ports(x.denied),
    disabled: pick('disabled'),
    logConfig: log ? { enable: log.enable as boolean | undefined, metadata: log.metadata as string | undefined } : undefined,
    selfLink: pick('selfLink'),
  };
}

function toOperation(x: Record<string, unknown> | null | undefined, what: string): GcpOperation {
  if (!x || typeof x.name !== 'string' || !x.name) throw new FatalError(`${what}: the answer is not an Operation`, { code: 'bad_answer' });
  const err = x.error as { errors?: { code?: string; message?: string }[] } | undefined | null;
  const errors = (err?.errors ?? []).map((e) => ({ code: e.code ?? 'UNKNOWN', message: e.message ?? '' }));
  return {
    name: x.name,
    status: String(x.status ?? ''),
    operationType: (x.operationType as string | undefined) ?? undefined,
    targetLink: (x.targetLink as string | undefined) ?? undefined,
    clientOperationId: (x.clientOperationId as string | undefined) ?? undefined,
    httpErrorStatusCode: (x.httpErrorStatusCode as number | undefined) ?? undefined,
    httpErrorMessage: (x.httpErrorMessage as string | undefined) ?? undefined,
    error: errors.length > 0 ? { errors } : undefined,
  };
}

/** Splits an endpoint override into the SDK's `apiEndpoint`, `port` and `protocol`. */
export function endpointOptions(endpoint: string | undefined): { apiEndpoint: string; port: number; protocol: 'http' | 'https' } | Record<string, never> {
  if (!endpoint) return {};
  const u = new URL(endpoint);
  const protocol = u.protocol === 'http:' ? 'http' : 'https';
  const port = u.port ? Number(u.port) : protocol === 'http' ? 80 : 443;
  return { apiEndpoint: u.hostname.replace(/^\[(.*)\]$/, '$1'), port, protocol };
}

export async function createFirewallApi(o: FirewallApiOptions): Promise<FirewallApi> {
  const { FirewallsClient, GlobalOperationsClient } = await import('./sdk.js');
  const base = {
    fallback: true,
    ...endpointOptions(o.endpoint),
    // Appended to x-goog-api-client, next to the library's own entries.
    libName: 'cloud-bouncer',
    libVersion: VERSION,
  };
  const firewalls = new FirewallsClient({ ...base, ...(o.authClient ? { authClient: o.authClient } : {}) });
  // One auth object for both clients: one token cache, one place that sees every request.
  const operations = new GlobalOperationsClient({ ...base, auth: firewalls.auth });
  watchRetryAfter(firewalls.auth);
  try {
    // Resolve credentials now. Left to the first call, a failure here becomes an
    // unhandled rejection inside the generated client.
    await firewalls.initialize();
    await operations.initialize();
  } catch (err) {
    await Promise.allSettled([firewalls.close(), operations.close()]);
    throw new FatalError(`no usable Google credential (Application Default Credentials or Workload Identity): ${(err as Error)?.message?.split('\n')[0] ?? String(err)}`, {
      cause: err,
      code: 'auth',
    });
  }

  const project = o.project;
  const headers = { 'User-Agent': USER_AGENT };
  const callOptions = (timeout: number) => ({ retry: null, timeout, otherArgs: { headers } });

  async function call<T>(name: CallName, what: string, fn: () => Promise<T>, opts: { insert?: boolean; notFoundOk?: boolean } = {}): Promise<T | undefined> {
    const s: CallScope = {};
    const kind = name === 'list' || name === 'wait' ? 'read' : 'write';
    try {
      const out = await scope.run(s, fn);
      o.onCall?.({ call: name, kind });
      return out;
    } catch (err) {
      if (opts.notFoundOk && isNotFound(err)) {
        // A 404 on a delete is an answer (the rule is gone), not a failed call.
        o.onCall?.({ call: name, kind });
        return undefined;
      }
      const classified = classifyGoogleError(err, what, { retryAfterMs: s.retryAfterMs, insert: opts.insert });
      o.onCall?.({ call: name, kind, errorCode: classified.code ?? 'unknown' });
      throw classified;
    }
  }

  return {
    async list() {
      const out: GcpFirewall[] = [];
      let pageToken: string | undefined;
      // Bounded: 500 rules per page (the API's maximum) and at most 100 pages.
      for (let page = 0; page < 100; page++) {
        const [items, next] = (await call('list', `list firewall rules of project ${project}`, () =>
          firewalls.list({ project, maxResults: 500, ...(pageToken ? { pageToken } : {}) }, { ...callOptions(o.requestTimeoutMs), autoPaginate: false }),
        ))!;
        for (const item of items) out.push(toFirewall(item as unknown as Record<string, unknown>));
        pageToken = next?.pageToken ?? undefined;
        if (!pageToken) return out;
      }
      throw new FatalError(`list firewall rules of project ${project}: more than 100 pages`, { code: 'too_many_pages' });
    },
    async insert(rule, requestId) {
      const what = `insert firewall rule ${rule.name ?? '?'}`;
      const [lro] = (await call('insert', what, () => firewalls.insert({ project, requestId, firewallResource: rule }, callOptions(o.requestTimeoutMs)), { insert: true }))!;
      return toOperation(lro.latestResponse as unknown as Record<string, unknown>, what);
    },
    async patch(name, patch, requestId) {
      const what = `patch firewall rule ${name}`;
      const [lro] = (await call('patch', what, () => firewalls.patch({ project, firewall: name, requestId, firewallResource: patch }, callOptions(o.requestTimeoutMs))))!;
      return toOperation(lro.latestResponse as unknown as Record<string, unknown>, what);
    },
    async delete(name, requestId) {
      const what = `delete firewall rule ${name}`;
      const res = await call('delete', what, () => firewalls.delete({ project, firewall: name, requestId }, callOptions(o.requestTimeoutMs)), { notFoundOk: true });
      return res ? toOperation(res[0].latestResponse as unknown as Record<string, unknown>, what) : undefined;
    },
    async wait(operation, timeoutMs) {
      const what = `wait for operation ${operation}`;
      const [op] = (await call('wait', what, () => operations.wait({ project, operation }, callOptions(timeoutMs))))!;
      return toOperation(op as unknown as Record<string, unknown>, what);
    },
    async close() {
      await Promise.allSettled([firewalls.close(), operations.close()]);
    },
  };
}
