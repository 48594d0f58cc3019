/**
 * The subset of the EC2 API the aws-nacl provider uses, behind a narrow
 * interface. `@aws-sdk/client-ec2` is imported lazily in
 * `createNaclClient`, so loading the provider module to validate a config
 * does not load the SDK.
 *
 * Credentials come only from the SDK's default chain (environment, shared
 * config/SSO, web identity/IRSA, ECS or EC2 instance role): the config has
 * no credential keys. `endpoint` exists for tests against a local server.
 *
 * Errors leave this file classified:
 * - throttling (`RequestLimitExceeded`…), 5xx and transport failures (reset,
 *   timeout, refused) → `RetryableError`, with the server's `Retry-After`
 *   when it sends one;
 * - `NetworkAclEntryLimitExceeded` → `QuotaExceededError` (the real quota is
 *   lower than `entries_per_family`);
 * - `TagLimitExceeded` → `QuotaExceededError`: `read()` only offers rule
 *   numbers whose claim tags fit in the 50 tags of the NACL, so this means
 *   another tool added tags between our read and our CreateTags (a capacity
 *   race, not a config or auth problem). The refused CreateTags wrote
 *   nothing, and no entry is written without its claim;
 * - auth (`AuthFailure`, `UnauthorizedOperation`, missing credentials) and
 *   every other 4xx → `FatalError`.
 * `NetworkAclEntryAlreadyExists` and `InvalidNetworkAclEntry.NotFound` are
 * answers, not errors, and come back as results.
 */
import type { EC2Client, NetworkAclEntry as SdkEntry } from '@aws-sdk/client-ec2';
import { FatalError, QuotaExceededError, RetryableError } from '../../core/errors.js';
import { tryParseCidr } from '../../core/cidr.js';
import { USER_AGENT } from '../../version.js';
import { MAX_TAGS, describeTagWrite } from './mapping.js';
import type { Cidr, Family } from '../../core/types.js';
import type { NaclEntry, NaclSnapshot, NaclTag } from './mapping.js';

export interface EntrySpec {
  ruleNumber: number;
  egress: boolean;
  cidr: Cidr;
  family: Family;
}

/** The EC2 calls we make, all on one NACL. */
export interface NaclClient {
  /** DescribeNetworkAcls: entries and tags of the NACL in one read. */
  describe(): Promise<NaclSnapshot>;
  /** CreateNetworkAclEntry (deny, protocol -1). `exists` when the rule number is taken. */
  createEntry(spec: EntrySpec): Promise<'created' | 'exists'>;
  /** ReplaceNetworkAclEntry (deny, protocol -1). `absent` when there is no entry to replace. */
  replaceEntry(spec: EntrySpec): Promise<'replaced' | 'absent'>;
  /** DeleteNetworkAclEntry. `absent` when it was already gone. */
  deleteEntry(ruleNumber: number, egress: boolean): Promise<'deleted' | 'absent'>;
  /** CreateTags on the NACL: adds or overwrites every tag given, in one call. */
  putTags(tags: readonly NaclTag[]): Promise<void>;
  /** DeleteTags on the NACL, by key. */
  deleteTags(keys: readonly string[]): Promise<void>;
  /**
   * DeleteTags of one tag given with its value: EC2 deletes it only if its
   * value still matches (EC2 API reference, DeleteTags), so a lease taken
   * over by another run is left alone.
   */
  deleteTagIf(key: string, value: string): Promise<void>;
  close(): void;
}

export interface NaclClientOptions {
  region: string;
  networkAclId: string;
  endpoint?: string | undefined;
  /** SDK attempts per call, first included (its standard retry mode: backoff with jitter, retry quota). */
  maxAttempts: number;
  /** Socket timeout of one HTTP attempt. */
  requestTimeoutMs: number;
  /** Called once per HTTP attempt, SDK retries included, with the error code when the attempt failed. */
  onAttempt?: ((operation: string, errorCode?: string) => void) | undefined;
}

const THROTTLING = new Set([
  'RequestLimitExceeded',
  'Throttling',
  'ThrottlingException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'SlowDown',
]);
const SERVER = new Set(['InternalError', 'InternalFailure', 'ServiceUnavailable', 'Unavailable']);
const TRANSPORT = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'TimeoutError', 'RequestTimeout']);

interface SdkErrorLike {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number; requestId?: string };
  $response?: { headers?: Record<string, string | undefined> };
}

/** The error code an SDK or transport error carries. */
export function errorCodeOf(err: unknown): string {
  const e = (err ?? {}) as SdkErrorLike;
  return e.Code ?? (e.name && e.name !== 'Error' ? e.name : undefined) ?? e.code ?? 'Unknown';
}

function retryAfterMs(e: SdkErrorLike): number | undefined {
  const h = e.$response?.headers?.['retry-after'];
  if (!h) return undefined;
  const s = Number(h);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const at = Date.parse(h);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

/** Classifies an error from the SDK or the socket into our two families (plus quota). */
export function classifyEc2Error(err: unknown, what: string): Error {
  const e = (err ?? {}) as SdkErrorLike;
  const code = errorCodeOf(err);
  const status = e.$metadata?.httpStatusCode;
  const detail = `${what}: ${code}${e.message && e.message !== code ? `: ${e.message.split('\n')[0]}` : ''}${e.$metadata?.requestId ? ` (request ${e.$metadata.requestId})` : ''}`;
  if (THROTTLING.has(code)) return new RetryableError(`${detail}; throttled by EC2`, { cause: err, code, retryAfterMs: retryAfterMs(e) });
  if (SERVER.has(code) || (status !== undefined && status >= 500)) return new RetryableError(detail, { cause: err, code, retryAfterMs: retryAfterMs(e) });
  if (code === 'NetworkAclEntryLimitExceeded') return new QuotaExceededError(`${detail}; the account's NACL quota is lower than entries_per_family`, { cause: err, code });
  if (code === 'TagLimitExceeded') {
    return new QuotaExceededError(
      `${detail}; the network ACL already holds ${MAX_TAGS} tags, the EC2 limit per resource (tags were added since it was read): these tags were not written, so no entry is written for their claims; remove unused tags from the NACL`,
      { cause: err, code },
    );
  }
  if (code === 'CredentialsProviderError') return new FatalError(`${what}: no AWS credentials from the default chain (environment, shared config, web identity, instance role)`, { cause: err, code });
  if (status === undefined && (TRANSPORT.has(code) || TRANSPORT.has(e.code ?? '') || /socket hang up|ECONNRESET|timed? ?out/i.test(e.message ?? ''))) {
    return new RetryableError(`${what}: connection failed: ${e.message ?? code}`, { cause: err, code });
  }
  return new FatalError(detail, { cause: err, code });
}

function toEntry(e: SdkEntry): NaclEntry {
  const raw = e.CidrBlock ?? e.Ipv6CidrBlock;
  const parsed = raw ? tryParseCidr(raw) : undefined;
  return {
    ruleNumber: e.RuleNumber ?? 0,
    egress: e.Egress === true,
    action: e.RuleAction ?? '',
    protocol: e.Protocol ?? '',
    cidr: parsed?.cidr,
    family: parsed?.family,
    portRange: e.PortRange ? { from: e.PortRange.From, to: e.PortRange.To } : undefined,
    icmp: e.IcmpTypeCode ? { type: e.IcmpTypeCode.Type, code: e.IcmpTypeCode.Code } : undefined,
  };
}

export async function createNaclClient(opts: NaclClientOptions): Promise<NaclClient> {
  const sdk = await import('./sdk.js');
  const ec2: EC2Client = new sdk.EC2Client({
    region: opts.region,
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    // Bounded: the SDK's standard mode retries throttling and transient errors with backoff; our own retry wraps it.
    maxAttempts: opts.maxAttempts,
    // Without throwOnRequestTimeout the handler only logs a warning when requestTimeout passes, and a hung call hangs the pass.
    requestHandler: { requestTimeout: opts.requestTimeoutMs, throwOnRequestTimeout: true, connectionTimeout: Math.min(opts.requestTimeoutMs, 5_000) },
    customUserAgent: USER_AGENT,
  });
  if (opts.onAttempt) {
    const onAttempt = opts.onAttempt;
    // Runs inside the SDK's retry loop, so every HTTP attempt is counted.
    ec2.middlewareStack.add(
      (next, context) => async (args) => {
        const op = (context.commandName ?? 'Unknown').replace(/Command$/, '');
        try {
          const out = await next(args);
          onAttempt(op);
          return out;
        } catch (err) {
          onAttempt(op, errorCodeOf(err));
          throw err;
        }
      },
      { step: 'deserialize', name: 'cloudBouncerAttemptCounter', priority: 'high' },
    );
  }
  const id = opts.networkAclId;
  const dirOf = (egress: boolean) => (egress ? 'egress' : 'ingress');
  const entryInput = (s: EntrySpec) => ({
    NetworkAclId: id,
    RuleNumber: s.ruleNumber,
    Egress: s.egress,
    RuleAction: 'deny' as const,
    Protocol: '-1',
    ...(s.family === 6 ? { Ipv6CidrBlock: s.cidr } : { CidrBlock: s.cidr }),
  });

  return {
    async describe() {
      try {
        const out = await ec2.send(new sdk.DescribeNetworkAclsCommand({ NetworkAclIds: [id] }));
        const acl = out.NetworkAcls?.find((a) => a.NetworkAclId === id);
        if (!acl) throw new FatalError(`DescribeNetworkAcls: network ACL ${id} not found in ${opts.region}`, { code: 'InvalidNetworkAclID.NotFound' });
        return {
          id,
          entries: (acl.Entries ?? []).map(toEntry),
          tags: (acl.Tags ?? []).map((t) => ({ key: t.Key ?? '', value: t.Value ?? '' })),
          subnetIds: (acl.Associations ?? []).flatMap((a) => (a.SubnetId ? [a.SubnetId] : [])),
        };
      } catch (err) {
        if (err instanceof FatalError) throw err;
        throw classifyEc2Error(err, `DescribeNetworkAcls ${id}`);
      }
    },
    async createEntry(s) {
      try {
        await ec2.send(new sdk.CreateNetworkAclEntryCommand(entryInput(s)));
        return 'created';
      } catch (err) {
        if (errorCodeOf(err) === 'NetworkAclEntryAlreadyExists') return 'exists';
        throw classifyEc2Error(err, `CreateNetworkAclEntry ${id} rule ${s.ruleNumber} (${dirOf(s.egress)})`);
      }
    },
    async replaceEntry(s) {
      try {
        await ec2.send(new sdk.ReplaceNetworkAclEntryCommand(entryInput(s)));
        return 'replaced';
      } catch (err) {
        if (errorCodeOf(err) === 'InvalidNetworkAclEntry.NotFound') return 'absent';
        throw classifyEc2Error(err, `ReplaceNetworkAclEntry ${id} rule ${s.ruleNumber} (${dirOf(s.egress)})`);
      }
    },
    async deleteEntry(ruleNumber, egress) {
      try {
        await ec2.send(new sdk.DeleteNetworkAclEntryCommand({ NetworkAclId: id, RuleNumber: ruleNumber, Egress: egress }));
        return 'deleted';
      } catch (err) {
        if (errorCodeOf(err) === 'InvalidNetworkAclEntry.NotFound') return 'absent';
        throw classifyEc2Error(err, `DeleteNetworkAclEntry ${id} rule ${ruleNumber} (${dirOf(egress)})`);
      }
    },
    async putTags(tags) {
      if (tags.length === 0) return;
      try {
        await ec2.send(new sdk.CreateTagsCommand({ Resources: [id], Tags: tags.map((t) => ({ Key: t.key, Value: t.value })) }));
      } catch (err) {
        throw classifyEc2Error(err, `CreateTags ${id} (${describeTagWrite(tags)})`);
      }
    },
    async deleteTags(keys) {
      if (keys.length === 0) return;
      try {
        await ec2.send(new sdk.DeleteTagsCommand({ Resources: [id], Tags: keys.map((k) => ({ Key: k })) }));
      } catch (err) {
        throw classifyEc2Error(err, `DeleteTags ${id} (${keys.length} tags)`);
      }
    },
    async deleteTagIf(key, value) {
      try {
        await ec2.send(new sdk.DeleteTagsCommand({ Resources: [id], Tags: [{ Key: key, Value: value }] }));
      } catch (err) {
        throw classifyEc2Error(err, `DeleteTags ${id} (${key} if unchanged)`);
      }
    },
    close() {
      ec2.destroy();
    },
  };
}
