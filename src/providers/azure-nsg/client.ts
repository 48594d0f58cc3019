/**
 * The subset of `@azure/arm-network` the NSG target uses, behind a narrow
 * interface: get the NSG, get one rule, put one rule, delete one rule.
 * Writes are long-running operations: the poller follows
 * `Azure-AsyncOperation` (PUT) or `Location` (DELETE) until Succeeded or
 * Failed, honouring the `Retry-After` of each poll answer.
 *
 * The SDK (about 1 s to import) and `@azure/identity` are loaded lazily, so
 * loading the provider module to validate config costs nothing.
 *
 * Every failure leaves here as a RetryableError or a FatalError with its
 * cause; the SDK's own retry policy is switched off so each HTTP call is
 * retried (and counted) once, by the bounded retry in `core/queue.ts`.
 */
import { readFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';
import type { TokenCredential } from '@azure/identity';
import type { NetworkManagementClientOptionalParams } from '@azure/arm-network';
import { FatalError, RetryableError } from '../../core/errors.js';
import { USER_AGENT } from '../../version.js';
import type { ArmNetworkSecurityGroup, ArmSecurityRule } from './mapping.js';

export interface NsgClient {
  getNsg(): Promise<ArmNetworkSecurityGroup>;
  /** `undefined` when the rule does not exist. */
  getRule(name: string): Promise<ArmSecurityRule | undefined>;
  /** PUT and wait for the operation to succeed; a Failed operation throws. */
  putRule(name: string, rule: ArmSecurityRule): Promise<ArmSecurityRule>;
  /** DELETE and wait for the operation to succeed; a Failed operation throws. */
  deleteRule(name: string): Promise<void>;
}

/** One HTTP exchange, as the call counter sees it. */
export interface CallRecord {
  method: string;
  /** HTTP status; undefined when no answer came (timeout, dropped connection). */
  status?: number | undefined;
  /** ARM error code, HTTP status or socket error code of a failed call. */
  errorCode?: string | undefined;
}

export interface NsgClientOptions {
  subscriptionId: string;
  resourceGroup: string;
  nsgName: string;
  /** ARM endpoint override (https only: the SDK's bearer policy refuses http). */
  endpoint?: string | undefined;
  /** Extra CA (PEM file) to trust for the endpoint, e.g. a local test server's. */
  caCertPath?: string | undefined;
  /** Injected credential (tests); DefaultAzureCredential otherwise. */
  credential?: TokenCredential | undefined;
  /** Delay between polls when the service sends no Retry-After. */
  pollIntervalMs: number;
  /** Per HTTP request. */
  requestTimeoutMs: number;
  /** Whole long-running operation (PUT or DELETE plus polls). */
  operationTimeoutMs: number;
  onCall?: ((call: CallRecord) => void) | undefined;
}

type Policy = NonNullable<NetworkManagementClientOptionalParams['additionalPolicies']>[number]['policy'];

function armErrorCode(bodyText: string | undefined | null): string | undefined {
  if (!bodyText) return undefined;
  try {
    const body = JSON.parse(bodyText) as { error?: { code?: unknown } };
    return typeof body.error?.code === 'string' ? body.error.code : undefined;
  } catch {
    return undefined;
  }
}

/** Counts every HTTP exchange (initial calls, polls, final GETs) for `stats()`. */
function countingPolicy(onCall: (c: CallRecord) => void): Policy {
  return {
    name: 'cloudBouncerCallCounter',
    async sendRequest(request, next) {
      try {
        const response = await next(request);
        // A GET answered 404 is an answer (the rule is absent), not a failed call.
        const failed = response.status >= 400 && !(response.status === 404 && request.method === 'GET');
        const errorCode = failed ? (armErrorCode(response.bodyAsText) ?? String(response.status)) : undefined;
        onCall({ method: request.method, status: response.status, errorCode });
        return response;
      } catch (err) {
        const e = err as { code?: unknown; name?: unknown };
        onCall({ method: request.method, errorCode: typeof e.code === 'string' ? e.code : e.name === 'AbortError' ? 'timeout' : 'network' });
        throw err;
      }
    },
  };
}

/** Bounds every HTTP request: the SDK sets no timeout of its own. */
function timeoutPolicy(ms: number): Policy {
  return {
    name: 'cloudBouncerRequestTimeout',
    sendRequest(request, next) {
      if (!request.timeout || request.timeout > ms) request.timeout = ms;
      return next(request);
    },
  };
}

/** `Retry-After` in seconds or as an HTTP date, in ms. */
export function parseRetryAfter(value: string | undefined | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

interface RestErrorLike {
  name?: string;
  message?: string;
  code?: string;
  statusCode?: number;
  details?: { error?: { code?: string; details?: { code?: string }[] } };
  response?: { headers?: { get?(name: string): string | undefined }; bodyAsText?: string | null };
}

/** ARM codes that mean "an operation on this NSG is running, try again" (409 and 429 flavours). */
const BUSY_CODES = new Set(['AnotherOperationInProgress', 'RetryableError', 'RetryableErrorDueToAnotherOperation', 'ReferencedResourceNotProvisioned']);

/**
 * Classifies an SDK failure. Retryable: throttling (429, honour
 * `Retry-After`), `AnotherOperationInProgress` (409), 5xx, timeouts and
 * dropped connections, and operations that ended Failed (Azure reports
 * transient faults that way). Fatal: auth (401/403, no credential),
 * validation (400) and any other conflict.
 */
export function classifyAzureError(err: unknown, what: string): RetryableError | FatalError {
  if (err instanceof RetryableError || err instanceof FatalError) return err;
  const e = (err ?? {}) as RestErrorLike;
  const name = e.name ?? '';
  const message = e.message ?? String(err);
  if (name === 'CredentialUnavailableError' || name === 'AuthenticationError' || name === 'AggregateAuthenticationError') {
    return new FatalError(`${what}: no usable Azure credential: ${message.split('\n')[0]}`, { cause: err, code: 'auth' });
  }
  if (name === 'AbortError') return new RetryableError(`${what}: timed out`, { cause: err, code: 'timeout' });
  if (message.startsWith('The long-running operation has failed')) {
    return new RetryableError(`${what}: the operation ended Failed: ${message}`, { cause: err, code: 'OperationFailed' });
  }
  const status = e.statusCode;
  const code = e.details?.error?.code ?? e.code ?? armErrorCode(e.response?.bodyAsText);
  const retryAfterMs = parseRetryAfter(e.response?.headers?.get?.('retry-after'));
  const detail = `${status ?? 'no answer'}${code ? ` ${code}` : ''}: ${message}`;
  if (status === undefined) {
    // No HTTP answer: connection reset, refused, DNS, TLS. The request may or may not have been applied.
    return new RetryableError(`${what}: ${detail}`, { cause: err, code: code ?? 'network' });
  }
  if (status === 429 || status >= 500 || status === 408) {
    return new RetryableError(`${what}: ${detail}`, { cause: err, code: code ?? String(status), retryAfterMs });
  }
  if (status === 409 && code !== undefined && BUSY_CODES.has(code)) {
    return new RetryableError(`${what}: ${detail}`, { cause: err, code, retryAfterMs });
  }
  if (status === 401 || status === 403) {
    return new FatalError(`${what}: not authorised (${detail}); see deploy/iam/README-azure.md for the roles it needs`, { cause: err, code: code ?? String(status) });
  }
  return new FatalError(`${what}: ${detail}`, { cause: err, code: code ?? String(status) });
}

function isNotFound(err: unknown): boolean {
  return (err as RestErrorLike | undefined)?.statusCode === 404;
}

export async function createNsgClient(o: NsgClientOptions): Promise<NsgClient> {
  const [{ NetworkManagementClient }, credential] = await Promise.all([
    import('@azure/arm-network'),
    o.credential ? Promise.resolve(o.credential) : import('@azure/identity').then((m) => new m.DefaultAzureCredential()),
  ]);
  const extraCa = o.caCertPath ? await readFile(o.caCertPath, 'utf8') : undefined;
  const additionalPolicies: NonNullable<NetworkManagementClientOptionalParams['additionalPolicies']> = [
    { policy: timeoutPolicy(o.requestTimeoutMs), position: 'perCall' },
  ];
  if (o.onCall) additionalPolicies.push({ policy: countingPolicy(o.onCall), position: 'perRetry' });
  const sdk = new NetworkManagementClient(credential, o.subscriptionId, {
    // A sovereign cloud's ARM endpoint needs tokens for its own audience (the SDK would ask for management.azure.com).
    ...(o.endpoint ? { endpoint: o.endpoint.replace(/\/+$/, ''), credentials: { scopes: [`${new URL(o.endpoint).origin}/.default`] } } : {}),
    // One attempt per SDK call: retries are ours (bounded, counted, Retry-After honoured).
    retryOptions: { maxRetries: 0 },
    userAgentOptions: { userAgentPrefix: USER_AGENT },
    // Trust the extra CA on top of the public roots, only when configured.
    ...(extraCa ? { tlsOptions: { ca: [...rootCertificates, extraCa] } } : {}),
    additionalPolicies,
  });
  const rg = o.resourceGroup;
  const nsg = o.nsgName;
  const where = `NSG ${rg}/${nsg}`;
  return {
    async getNsg() {
      try {
        return (await sdk.networkSecurityGroups.get(rg, nsg)) as ArmNetworkSecurityGroup;
      } catch (err) {
        if (isNotFound(err)) throw new FatalError(`${where} not found in subscription ${o.subscriptionId}`, { cause: err, code: 'ResourceNotFound' });
        throw classifyAzureError(err, `read ${where}`);
      }
    },
    async getRule(name) {
      try {
        return (await sdk.securityRules.get(rg, nsg, name)) as ArmSecurityRule;
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw classifyAzureError(err, `read rule ${name} of ${where}`);
      }
    },
    async putRule(name, rule) {
      try {
        const poller = sdk.securityRules.createOrUpdate(rg, nsg, name, rule as Parameters<typeof sdk.securityRules.createOrUpdate>[3], {
          updateIntervalInMs: o.pollIntervalMs,
          abortSignal: AbortSignal.timeout(o.operationTimeoutMs),
        });
        return (await poller.pollUntilDone()) as ArmSecurityRule;
      } catch (err) {
        throw classifyAzureError(err, `write rule ${name} of ${where}`);
      }
    },
    async deleteRule(name) {
      try {
        const poller = sdk.securityRules.delete(rg, nsg, name, {
          updateIntervalInMs: o.pollIntervalMs,
          abortSignal: AbortSignal.timeout(o.operationTimeoutMs),
        });
        await poller.pollUntilDone();
      } catch (err) {
        throw classifyAzureError(err, `delete rule ${name} of ${where}`);
      }
    },
  };
}
