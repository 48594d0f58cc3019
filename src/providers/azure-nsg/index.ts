/**
 * The `azure-nsg` target: bans as Deny security rules of one Azure Network
 * Security Group, written through `@azure/arm-network` with the default
 * Azure credential chain (managed identity, workload identity, environment,
 * Azure CLI).
 *
 * Design:
 * - One pool per target, named after the direction (`inbound` by default).
 *   Its slots are the priorities of the configured band (`priority_band`,
 *   inside 100..4096). A slot is a rule name that encodes the priority,
 *   `<name_prefix>-<owner>-<NNNN>` (e.g. `cloud-bouncer-default-0100`), so a
 *   free slot is a band priority that no rule of our direction uses, and two
 *   owners can share an NSG in disjoint bands. `describeSlot` gives
 *   `{ name, priority, direction }` for `plan` output.
 * - Rule body: `access: Deny`, protocol `*`, ports `*`, the CIDRs in
 *   `sourceAddressPrefixes` and `*` as destination (Outbound: the CIDRs in
 *   `destinationAddressPrefixes`, `*` as source). A single CIDR still goes in
 *   the list: Azure accepts one item, and one shape keeps reads simple. One
 *   address family per rule (Azure refuses mixed families). The description
 *   is the marker `cloud-bouncer owner=<owner> exp=<unix>` (under Azure's
 *   140 characters), which records the expiry so rules are removed on time
 *   with every source down.
 * - Capacity: `prefixes_per_rule` CIDRs per rule (default 100); at most
 *   `max_rules` owned rules (default: the band size), and never more than
 *   Azure's 1000 rules per NSG minus the foreign ones; `max_prefixes` CIDRs
 *   in all (default 4000, Azure's cap per NSG on source prefixes, and
 *   separately on destination prefixes, across all rules), minus every IP or
 *   CIDR foreign rules list on our side (a singular `sourceAddressPrefix`
 *   counts as one when it is an address; service tags and `*` do not).
 *   So a write is never refused for a cap.
 * - Ownership: a rule is ours when its name, marker, priority, direction and
 *   shape all match. A foreign rule of our direction inside the band, or a
 *   rule with our name prefix that is not fully ours, is a conflict: it is
 *   reported and nothing is written to the NSG. A foreign Allow rule
 *   evaluated before the band (lower number) whose source is everything
 *   (`*`, `Internet`, `0.0.0.0/0`) or overlaps a banned CIDR gives a warning.
 * - Writes are serialised per NSG (one queue of concurrency 1 per NSG in the
 *   process): Azure rejects concurrent writes to one NSG with 409
 *   `AnotherOperationInProgress` or 429 `RetryableError`, and does not check
 *   the NSG ETag. The budget defaults to Microsoft.Network's 1000 writes per
 *   5 minutes. Before writing, the NSG is read again and the plan is refused
 *   if any slot changed (`staleChanges`); before each PUT or DELETE the rule
 *   itself is read again, so a retry after a lost answer finds its own
 *   result, and a racing writer's rule is never overwritten.
 * - Every PUT or DELETE is a long-running operation; its poller is awaited,
 *   `Retry-After` is honoured, and an operation that ends Failed is a failed
 *   write. Throttling, `AnotherOperationInProgress`, 5xx, timeouts and
 *   dropped connections are retryable (bounded retries, then the next
 *   pass); auth, validation and ownership errors are fatal.
 *
 * Config keys (besides the common ones): `subscription_id`, `resource_group`,
 * `nsg_name`, `priority_band: {start, end}`, `direction` (Inbound|Outbound,
 * default Inbound), `prefixes_per_rule`, `max_prefixes`, `max_rules`,
 * `name_prefix` (default `cloud-bouncer`), `bucket` (default 1h),
 * `endpoint` (https ARM override), `ca_cert_path` (extra CA to trust for
 * that endpoint, for tests against a local ARM server), `poll_interval`,
 * `request_timeout`, `operation_timeout`, `queue`, `retry`.
 */
import type PQueue from 'p-queue';
import { z } from 'zod';
import { OwnershipConflictError, RetryableError } from '../../core/errors.js';
import { applyPhased, createQueue, withRetry, type QueueOptions, type RetryOptions, type Sleep } from '../../core/queue.js';
import { duration, queueOptions, queueSchema, retryOptions, retrySchema } from '../../schema.js';
import { countCall, emptyStats, assertPlanStillHolds } from '../provider.js';
import type { ApplyContext, ApplyResult, CallStats, Provider, ProviderContext, ProviderModule } from '../provider.js';
import type { Change, TargetState } from '../../core/types.js';
import { createNsgClient, type CallRecord, type NsgClient } from './client.js';
import { AZURE_LIMITS, nsgToState, poolId, ruleBody, slotPriority, writeVerdict, type ArmSecurityRule, type Direction, type Layout, type WriteVerdict } from './mapping.js';
import type { TokenCredential } from '@azure/identity';

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const priority = () =>
  z
    .number()
    .int()
    .min(AZURE_LIMITS.minPriority, `expected a priority >= ${AZURE_LIMITS.minPriority} (Azure's lowest for custom rules)`)
    .max(AZURE_LIMITS.maxPriority, `expected a priority <= ${AZURE_LIMITS.maxPriority} (Azure's highest for custom rules)`);

export const azureNsgConfigSchema = z
  .object({
    subscription_id: z.string().regex(UUID, 'expected a subscription id (UUID like 00000000-0000-0000-0000-000000000000)'),
    resource_group: z.string().regex(/^[-\w.()]{0,89}[-\w()]$/, 'expected a resource group name: 1-90 letters, digits, _ - . ( ), not ending in .'),
    nsg_name: z.string().regex(/^[A-Za-z0-9](?:[\w.-]{0,78}\w)?$/, 'expected an NSG name: 1-80 letters, digits, _ - ., starting with a letter or digit and ending with a letter, digit or _'),
    priority_band: z
      .object({ start: priority(), end: priority() })
      .strict()
      .refine((b) => b.start <= b.end, { error: (i) => `expected start <= end, got start ${(i.input as { start: number }).start} and end ${(i.input as { end: number }).end}` }),
    direction: z.enum(['Inbound', 'Outbound']).default('Inbound'),
    prefixes_per_rule: z.number().int().min(1).max(AZURE_LIMITS.prefixesPerNsg).default(100),
    max_prefixes: z.number().int().min(1).max(AZURE_LIMITS.prefixesPerNsg).default(AZURE_LIMITS.prefixesPerNsg),
    max_rules: z.number().int().min(1).max(AZURE_LIMITS.rulesPerNsg).optional(),
    name_prefix: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,30}$/, 'expected lower-case letters, digits and dashes, starting with a letter (at most 31)')
      .default('cloud-bouncer'),
    bucket: duration().default(3_600_000),
    endpoint: z
      .string()
      .url()
      .refine((u) => u.startsWith('https://'), { message: 'expected an https:// URL (the Azure SDK sends bearer tokens over https only)' })
      .optional(),
    ca_cert_path: z.string().min(1).optional(),
    poll_interval: duration().default(2_000),
    request_timeout: duration().default(30_000),
    operation_timeout: duration().default(300_000),
    queue: queueSchema.optional(),
    retry: retrySchema.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.queue?.concurrency !== undefined && c.queue.concurrency !== 1) {
      ctx.addIssue({
        code: 'custom',
        path: ['queue', 'concurrency'],
        message: `expected 1 (Azure rejects concurrent writes to one NSG with AnotherOperationInProgress), got ${c.queue.concurrency}`,
      });
    }
    const band = c.priority_band.end - c.priority_band.start + 1;
    if (c.max_rules !== undefined && c.max_rules > band) {
      ctx.addIssue({ code: 'custom', path: ['max_rules'], message: `expected at most ${band} (the size of priority_band), got ${c.max_rules}` });
    }
  });

export type AzureNsgConfig = z.infer<typeof azureNsgConfigSchema>;

/** Test seams: a credential instead of DefaultAzureCredential, and a recording sleep. */
export interface AzureNsgDeps {
  credential?: TokenCredential | undefined;
  sleep?: Sleep | undefined;
  random?: (() => number) | undefined;
}

/** Microsoft.Network allows 1000 writes per 5 minutes per subscription (Azure throttling limits). */
const DEFAULT_QUEUE: QueueOptions = { concurrency: 1, intervalCap: 1000, intervalMs: 300_000 };

/** One write queue per NSG in this process, so two targets on one NSG never overlap their writes. */
const nsgQueues = new Map<string, PQueue>();

function queueFor(key: string, opts: QueueOptions): PQueue {
  let q = nsgQueues.get(key);
  if (!q) {
    q = createQueue(opts);
    nsgQueues.set(key, q);
  }
  return q;
}

export class AzureNsgProvider implements Provider {
  readonly kind = 'azure-nsg';
  readonly target: string;
  private readonly layout: Layout;
  private readonly calls: CallStats = emptyStats();
  private readonly retry: RetryOptions;
  private readonly queueOptions: QueueOptions;
  private readonly nsgKey: string;
  private clientPromise: Promise<NsgClient> | undefined;

  constructor(
    private readonly cfg: AzureNsgConfig,
    private readonly ctx: ProviderContext,
    private readonly deps: AzureNsgDeps = {},
  ) {
    this.target = ctx.target;
    const bandSize = cfg.priority_band.end - cfg.priority_band.start + 1;
    this.layout = {
      owner: ctx.owner,
      namePrefix: cfg.name_prefix,
      direction: cfg.direction as Direction,
      band: { start: cfg.priority_band.start, end: cfg.priority_band.end },
      prefixesPerRule: cfg.prefixes_per_rule,
      maxPrefixes: cfg.max_prefixes,
      maxRules: Math.min(cfg.max_rules ?? bandSize, bandSize, AZURE_LIMITS.rulesPerNsg),
      bucketMs: cfg.bucket,
    };
    this.retry = retryOptions(cfg.retry);
    // One write at a time whatever the config says: Azure runs one operation per NSG.
    this.queueOptions = { ...queueOptions(cfg.queue, DEFAULT_QUEUE), concurrency: 1 };
    this.nsgKey = `${cfg.endpoint ?? 'https://management.azure.com'}/subscriptions/${cfg.subscription_id}/resourceGroups/${cfg.resource_group}/providers/Microsoft.Network/networkSecurityGroups/${cfg.nsg_name}`.toLowerCase();
  }

  stats(): CallStats {
    return { ...this.calls, errors: { ...this.calls.errors } };
  }

  private record = (c: CallRecord): void => {
    countCall(this.calls, c.method === 'GET' ? 'read' : 'write', c.errorCode);
  };

  private client(): Promise<NsgClient> {
    this.clientPromise ??= createNsgClient({
      subscriptionId: this.cfg.subscription_id,
      resourceGroup: this.cfg.resource_group,
      nsgName: this.cfg.nsg_name,
      endpoint: this.cfg.endpoint,
      caCertPath: this.cfg.ca_cert_path,
      credential: this.deps.credential,
      pollIntervalMs: this.cfg.poll_interval,
      requestTimeoutMs: this.cfg.request_timeout,
      operationTimeoutMs: this.cfg.operation_timeout,
      onCall: this.record,
    }).catch((err: unknown) => {
      this.clientPromise = undefined;
      throw err;
    });
    return this.clientPromise;
  }

  private retrying<T>(what: string, slot: string | undefined, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const attempt = async (): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        // An operation that ended Failed answered its polls with 200: count it apart from the HTTP errors.
        if (err instanceof RetryableError && err.code === 'OperationFailed') this.calls.errors.OperationFailed = (this.calls.errors.OperationFailed ?? 0) + 1;
        throw err;
      }
    };
    return withRetry(attempt, {
      ...this.retry,
      sleep: this.deps.sleep,
      random: this.deps.random,
      // After an abort the attempt in flight finishes, but no new attempt starts.
      signal,
      onRetry: (err, n, delayMs) => {
        this.ctx.log.warn({ target: this.target, what, slot, code: err.code, attempt: n, delayMs }, 'azure call failed, retrying');
      },
    });
  }

  async read(): Promise<TargetState> {
    const client = await this.client();
    const nsg = await this.retrying('read nsg', undefined, () => client.getNsg());
    return nsgToState(this.layout, nsg);
  }

  describeSlot(_pool: string, slot: string): Record<string, string | number> {
    const p = slotPriority(this.layout, slot);
    return { name: slot, priority: p ?? 'unknown', direction: this.layout.direction };
  }

  private verdict(c: Change, current: ArmSecurityRule | undefined): WriteVerdict {
    try {
      return writeVerdict(this.layout, this.target, c, current);
    } catch (err) {
      // A rule still Updating or Deleting settles at the pace of Azure's operations: wait at least one poll interval.
      if (err instanceof RetryableError && err.code === 'RuleNotSettled') {
        throw new RetryableError(err.message, { cause: err, code: err.code, retryAfterMs: this.cfg.poll_interval });
      }
      throw err;
    }
  }

  private async writeOne(client: NsgClient, c: Change, signal: AbortSignal | undefined): Promise<void> {
    const priority = slotPriority(this.layout, c.slot);
    if (priority === undefined) {
      throw new OwnershipConflictError(this.target, [c.slot], `slot ${c.slot} is not one of ours (${poolId(this.layout)} band ${this.layout.band.start}-${this.layout.band.end})`);
    }
    await this.retrying(`${c.kind} rule`, c.slot, async () => {
      const current = await client.getRule(c.slot);
      if (this.verdict(c, current) === 'done') return;
      if (c.kind === 'delete') await client.deleteRule(c.slot);
      else await client.putRule(c.slot, ruleBody(this.layout, priority, c.after!.cidrs, c.after!.expiresAt));
    }, signal);
    this.ctx.log.debug({ target: this.target, kind: c.kind, slot: c.slot, priority, added: c.added.length, removed: c.removed.length }, 'wrote rule');
  }

  async apply(changes: readonly Change[], actx: ApplyContext): Promise<ApplyResult> {
    const before = this.calls.total;
    if (changes.length === 0) return { outcomes: [], calls: 0 };
    const client = await this.client();
    // Ownership is checked again against a fresh read, just before writing.
    const fresh = await this.read();
    assertPlanStillHolds(this.target, changes, fresh);
    const outcomes = await applyPhased(changes, (c) => this.writeOne(client, c, actx.signal), {
      queue: queueFor(this.nsgKey, this.queueOptions),
      budget: actx.budget,
      signal: actx.signal,
    });
    const count = (s: string) => outcomes.filter((o) => o.status === s).length;
    this.ctx.log.info(
      { target: this.target, applied: count('applied'), failed: count('failed'), skipped: count('skipped'), calls: this.calls.total - before },
      'applied changes to NSG',
    );
    return { outcomes, calls: this.calls.total - before };
  }
}

export const provider: ProviderModule<AzureNsgConfig> = {
  kind: 'azure-nsg',
  // Rule names (`<name_prefix>-<owner>-<priority>`) are unique per NSG, both directions; ARM names are case-insensitive.
  resource: (config) => ({
    key: `${config.subscription_id}/${config.resource_group}/${config.nsg_name}/${config.name_prefix}`.toLowerCase(),
    what: `rule names ${config.name_prefix}-<owner>-… in NSG ${config.nsg_name}`,
    merge: 'a name_prefix of its own for each',
  }),
  configSchema: azureNsgConfigSchema as unknown as z.ZodType<AzureNsgConfig>,
  async create(config, ctx) {
    return new AzureNsgProvider(config, ctx);
  },
};
