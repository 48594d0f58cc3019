/**
 * A stateful fake of the Azure Resource Manager endpoints the `azure-nsg`
 * provider uses, served over TLS (the SDK's bearer policy refuses http).
 * Shapes follow the REST spec and its examples
 * (Azure/azure-rest-api-specs, specification/network/resource-manager/
 * Microsoft.Network/stable/2024-05-01/networkSecurityGroup.json and
 * examples/NetworkSecurityGroupGet.json, NetworkSecurityGroupRuleCreate.json,
 * NetworkSecurityGroupRuleList.json).
 *
 * Covered:
 * - NSG GET/PUT; security rules list (paged with nextLink), get, put, delete;
 * - PUT answers 200/201 with `Azure-AsyncOperation`; DELETE answers 202 with
 *   `Location` (204 when the rule does not exist); operation status goes
 *   InProgress → Succeeded, or Failed (`lateFailureRate`), in which case the
 *   change is rolled back. An operation nobody polls settles by itself after
 *   `operationMs`, as Azure's do when the client has gone away;
 * - validation with ARM error JSON (`{error:{code,message}}`): priority
 *   range (`SecurityRuleInvalidPriority`) and uniqueness per direction
 *   (`SecurityRuleConflict`), name (`InvalidResourceName`), description
 *   length, address prefixes (`SecurityRuleInvalidAddressPrefix`,
 *   `SecurityRuleParameterContainsUnsupportedValue`), mixed families
 *   (`ResourceCannotContainAddressPrefixesFromDifferentAddressFamilies`),
 *   1000 rules (`SecurityRuleCountLimitReached`) and 4000 source (and,
 *   separately, destination) prefixes per NSG
 *   (`SecurityRuleAddressesOrPortsPerSecurityGroupLimitReached`);
 * - a write while another operation on the NSG is in progress answers 409
 *   `AnotherOperationInProgress` or 429 `RetryableError`
 *   (`RetryableErrorDueToAnotherOperation`) with `Retry-After`;
 * - faults from `Faults`: throttling (429 `SubscriptionRequestsThrottled`
 *   with `Retry-After`, or one of the two "busy" answers), 5xx, latency,
 *   dropped connections, failAfterWrites, late operation failures.
 *
 * Error codes come from public Azure error reports; the one for an
 * over-long description could not be confirmed and is marked below.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tryParseCidr } from '../../../src/core/cidr.js';
import { Faults, dropConnection, prng, readBody, type FaultConfig } from '../faults.js';

export interface FakeArmOptions {
  tls: { key: string; cert: string };
  subscriptionId: string;
  location?: string;
  /** Azure's limits by default; lower them to test caps cheaply. */
  limits?: { rulesPerNsg?: number; prefixesPerNsg?: number };
}

export interface FakeBehaviour {
  /** Status polls answered InProgress before an operation settles (default 1). */
  pollsUntilDone?: number;
  /** An operation nobody polls settles by itself after this long (default 250 ms). */
  operationMs?: number;
  /** `Retry-After` (seconds) on 429 answers (default 1). */
  retryAfterSec?: number;
  /** `Retry-After` (seconds) on InProgress poll answers (default 0: the client's own interval). */
  pollRetryAfterSec?: number;
  /** What an injected throttle looks like (default `mixed`: one of the three, seeded). */
  throttleStyle?: 'mixed' | 'throttled' | 'busy409' | 'busy429';
  /** Page size of `securityRules` list answers (default 0: one page). */
  pageSize?: number;
}

/** The flattened rule properties, as stored and as sent in `properties`. */
export interface FakeRuleProps {
  description?: string;
  protocol?: string;
  sourcePortRange?: string;
  sourcePortRanges?: string[];
  destinationPortRange?: string;
  destinationPortRanges?: string[];
  sourceAddressPrefix?: string;
  sourceAddressPrefixes?: string[];
  destinationAddressPrefix?: string;
  destinationAddressPrefixes?: string[];
  access?: string;
  priority?: number;
  direction?: string;
}

export interface FakeRule extends FakeRuleProps {
  name: string;
  provisioningState: 'Succeeded' | 'Updating' | 'Deleting' | 'Failed';
}

interface StoredRule {
  name: string;
  props: FakeRuleProps;
  provisioningState: FakeRule['provisioningState'];
  etag: string;
}

interface Op {
  id: string;
  nsg: NsgState;
  kind: 'put' | 'delete' | 'nsg';
  ruleKey?: string;
  /** State before the operation, restored when it fails. */
  prevRule?: StoredRule | undefined;
  prevRules?: Map<string, StoredRule>;
  status: 'InProgress' | 'Succeeded' | 'Failed';
  pollsLeft: number;
  deadline: number;
  fail: boolean;
}

interface NsgState {
  rg: string;
  name: string;
  guid: string;
  etag: string;
  rules: Map<string, StoredRule>;
  active?: Op | undefined;
  /** `flushConnection`: Azure's default is off (established flows survive a new Deny). */
  flushConnection: boolean;
  /** Subnet ids the NSG is associated with (read-only in ARM; set by the fixture). */
  subnets: string[];
}

const DEFAULT_BEHAVIOUR: Required<FakeBehaviour> = { pollsUntilDone: 1, operationMs: 250, retryAfterSec: 1, pollRetryAfterSec: 0, throttleStyle: 'mixed', pageSize: 0 };

type ScriptedFailure = 'throttled' | 'busy409' | 'busy429' | 'server_error';

const RULE_NAME = /^[A-Za-z0-9_](?:[\w.-]{0,78}\w)?$/;
const PROTOCOLS = new Set(['tcp', 'udp', 'icmp', 'esp', '*', 'ah']);
const SERVICE_TAG = /^[A-Za-z][A-Za-z0-9.]*$/;

const DEFAULT_RULES: (FakeRuleProps & { name: string })[] = [
  { name: 'AllowVnetInBound', description: 'Allow inbound traffic from all VMs in VNET', sourceAddressPrefix: 'VirtualNetwork', destinationAddressPrefix: 'VirtualNetwork', access: 'Allow', priority: 65000, direction: 'Inbound' },
  { name: 'AllowAzureLoadBalancerInBound', description: 'Allow inbound traffic from azure load balancer', sourceAddressPrefix: 'AzureLoadBalancer', destinationAddressPrefix: '*', access: 'Allow', priority: 65001, direction: 'Inbound' },
  { name: 'DenyAllInBound', description: 'Deny all inbound traffic', sourceAddressPrefix: '*', destinationAddressPrefix: '*', access: 'Deny', priority: 65500, direction: 'Inbound' },
  { name: 'AllowVnetOutBound', description: 'Allow outbound traffic from all VMs to all VMs in VNET', sourceAddressPrefix: 'VirtualNetwork', destinationAddressPrefix: 'VirtualNetwork', access: 'Allow', priority: 65000, direction: 'Outbound' },
  { name: 'AllowInternetOutBound', description: 'Allow outbound traffic from all VMs to Internet', sourceAddressPrefix: '*', destinationAddressPrefix: 'Internet', access: 'Allow', priority: 65001, direction: 'Outbound' },
  { name: 'DenyAllOutBound', description: 'Deny all outbound traffic', sourceAddressPrefix: '*', destinationAddressPrefix: '*', access: 'Deny', priority: 65500, direction: 'Outbound' },
];

class ArmError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: { retryAfterSec?: number; details?: { code: string; message: string }[] } = {},
  ) {
    super(message);
  }
}

function etag(): string {
  return `W/"${randomUUID()}"`;
}

function isAddress(p: string): boolean {
  return tryParseCidr(p) !== undefined;
}

function counted(props: FakeRuleProps, side: 'source' | 'destination'): number {
  const one = side === 'source' ? props.sourceAddressPrefix : props.destinationAddressPrefix;
  const many = side === 'source' ? props.sourceAddressPrefixes : props.destinationAddressPrefixes;
  return [...(many ?? []), ...(one ? [one] : [])].filter(isAddress).length;
}

export class FakeArm {
  readonly faults = new Faults();
  /** Requests received, in total, by HTTP method and by operation (`rule.put`, `op.status`...). */
  readonly calls = { total: 0, byMethod: {} as Record<string, number>, byOp: {} as Record<string, number> };
  /** Error answers sent, by ARM code (injected ones included). */
  readonly answered: Record<string, number> = {};
  /** Error answers sent, by HTTP status. */
  readonly answeredStatus: Record<number, number> = {};
  /** User-Agent headers seen. */
  readonly userAgents = new Set<string>();
  /** Writes refused because another operation on the NSG was in progress (not injected). */
  realConflicts = 0;
  /** Operations that ended Failed. */
  lateFailures = 0;
  /** Writes accepted (PUT/DELETE answered 2xx). */
  acceptedWrites = 0;
  /** Called after each accepted write with the running count (lets a test kill a client mid-apply). */
  onWriteAccepted: ((n: number) => void) | undefined;
  /** Called after every change to the stored rules: a write accepted, or an operation settling (a delete taking effect, a failed one rolled back). */
  onStateChange: ((event: 'accepted' | 'settled') => void) | undefined;
  url = '';

  private server: Server | undefined;
  private readonly nsgs = new Map<string, NsgState>();
  private readonly ops = new Map<string, Op>();
  private behaviour: Required<FakeBehaviour> = { ...DEFAULT_BEHAVIOUR };
  private styleRandom = prng(7);
  private scripted: ScriptedFailure[] = [];
  private readonly location: string;
  private readonly limits: { rulesPerNsg: number; prefixesPerNsg: number };

  constructor(private readonly opts: FakeArmOptions) {
    this.location = opts.location ?? 'westeurope';
    this.limits = { rulesPerNsg: opts.limits?.rulesPerNsg ?? 1000, prefixesPerNsg: opts.limits?.prefixesPerNsg ?? 4000 };
  }

  async start(): Promise<string> {
    this.server = createServer({ key: this.opts.tls.key, cert: this.opts.tls.cert }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.send(res, 500, { error: { code: 'InternalServerError', message: String(err) } });
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }

  setFaults(cfg: FaultConfig): void {
    this.faults.set(cfg);
    this.styleRandom = prng((cfg.seed ?? 1) + 7);
  }

  setBehaviour(b: FakeBehaviour): void {
    this.behaviour = { ...this.behaviour, ...b };
  }

  /** Back to the defaults: no faults, one InProgress poll, `Retry-After: 1`. */
  reset(): void {
    this.setFaults({});
    this.behaviour = { ...DEFAULT_BEHAVIOUR };
    this.scripted = [];
    this.onWriteAccepted = undefined;
  }

  /** The next `n` writes fail this way, before any other check. */
  failNext(n: number, kind: ScriptedFailure): void {
    for (let i = 0; i < n; i++) this.scripted.push(kind);
  }

  resetCounters(): void {
    this.calls.total = 0;
    this.calls.byMethod = {};
    this.calls.byOp = {};
    for (const k of Object.keys(this.answered)) delete this.answered[k];
    for (const k of Object.keys(this.answeredStatus)) delete this.answeredStatus[Number(k)];
    this.realConflicts = 0;
    this.lateFailures = 0;
    this.acceptedWrites = 0;
  }

  /** Creates (or replaces) an NSG directly, as a test fixture. */
  seedNsg(rg: string, name: string, rules: (FakeRuleProps & { name: string })[] = [], opts: { flushConnection?: boolean; subnets?: string[] } = {}): void {
    // One associated subnet unless told otherwise, as for an NSG in use.
    const subnets = opts.subnets ?? [`/subscriptions/${this.opts.subscriptionId}/resourceGroups/${rg}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/${name}-subnet`];
    const nsg: NsgState = { rg, name, guid: randomUUID(), etag: etag(), rules: new Map(), flushConnection: opts.flushConnection ?? false, subnets };
    for (const r of rules) {
      const { name: ruleName, ...props } = r;
      nsg.rules.set(ruleName.toLowerCase(), { name: ruleName, props: this.normalise(props), provisioningState: 'Succeeded', etag: etag() });
    }
    this.nsgs.set(`${rg}/${name}`.toLowerCase(), nsg);
  }

  /** Adds or replaces one rule directly (another actor editing the NSG behind our back). */
  setRuleDirect(rg: string, name: string, rule: FakeRuleProps & { name: string }): void {
    const nsg = this.nsgs.get(`${rg}/${name}`.toLowerCase());
    if (!nsg) throw new Error(`no NSG ${rg}/${name}`);
    const { name: ruleName, ...props } = rule;
    nsg.rules.set(ruleName.toLowerCase(), { name: ruleName, props: this.normalise(props), provisioningState: 'Succeeded', etag: etag() });
    nsg.etag = etag();
  }

  /** Sets the provisioning state of one stored rule (a write Azure left Failed, as a test fixture). */
  setRuleStateDirect(rg: string, name: string, ruleName: string, state: FakeRule['provisioningState']): void {
    const rule = this.nsgs.get(`${rg}/${name}`.toLowerCase())?.rules.get(ruleName.toLowerCase());
    if (!rule) throw new Error(`no rule ${ruleName} in NSG ${rg}/${name}`);
    rule.provisioningState = state;
  }

  /** Snapshot of an NSG's custom rules, flattened. */
  rules(rg: string, name: string): FakeRule[] {
    const nsg = this.nsgs.get(`${rg}/${name}`.toLowerCase());
    if (!nsg) throw new Error(`no NSG ${rg}/${name}`);
    return [...nsg.rules.values()].map((r) => ({ name: r.name, provisioningState: r.provisioningState, ...structuredClone(r.props) }));
  }

  /** True while an operation on the NSG is in progress. */
  busy(rg: string, name: string): boolean {
    return !!this.nsgs.get(`${rg}/${name}`.toLowerCase())?.active;
  }

  /** Settles every operation in progress now (time passing while no client polls). */
  settle(): void {
    for (const nsg of this.nsgs.values()) if (nsg.active) this.finish(nsg.active);
  }

  // ---------------------------------------------------------------------------

  private normalise(p: FakeRuleProps): FakeRuleProps {
    // ARM answers carry the plural fields as empty lists when the singular ones are used.
    return {
      ...p,
      sourcePortRanges: p.sourcePortRanges ?? [],
      destinationPortRanges: p.destinationPortRanges ?? [],
      sourceAddressPrefixes: p.sourceAddressPrefixes ?? [],
      destinationAddressPrefixes: p.destinationAddressPrefixes ?? [],
    };
  }

  private nsgId(nsg: NsgState): string {
    return `/subscriptions/${this.opts.subscriptionId}/resourceGroups/${nsg.rg}/providers/Microsoft.Network/networkSecurityGroups/${nsg.name}`;
  }

  private ruleJson(nsg: NsgState, r: StoredRule): unknown {
    return {
      name: r.name,
      id: `${this.nsgId(nsg)}/securityRules/${r.name}`,
      etag: r.etag,
      type: 'Microsoft.Network/networkSecurityGroups/securityRules',
      properties: { provisioningState: r.provisioningState, ...r.props },
    };
  }

  private nsgJson(nsg: NsgState): unknown {
    const id = this.nsgId(nsg);
    return {
      name: nsg.name,
      id,
      etag: nsg.etag,
      type: 'Microsoft.Network/networkSecurityGroups',
      location: this.location,
      properties: {
        provisioningState: nsg.active ? 'Updating' : 'Succeeded',
        resourceGuid: nsg.guid,
        flushConnection: nsg.flushConnection,
        ...(nsg.subnets.length > 0 ? { subnets: nsg.subnets.map((id) => ({ id })) } : {}),
        securityRules: [...nsg.rules.values()].map((r) => this.ruleJson(nsg, r)),
        defaultSecurityRules: DEFAULT_RULES.map(({ name, ...props }) => ({
          name,
          id: `${id}/defaultSecurityRules/${name}`,
          etag: nsg.etag,
          type: 'Microsoft.Network/networkSecurityGroups/defaultSecurityRules',
          properties: { provisioningState: 'Succeeded', protocol: '*', sourcePortRange: '*', destinationPortRange: '*', ...this.normalise(props) },
        })),
      },
    };
  }

  private send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'x-ms-request-id': randomUUID(),
      'x-ms-correlation-request-id': randomUUID(),
      'content-length': String(Buffer.byteLength(text)),
      ...headers,
    });
    res.end(text);
  }

  private sendError(res: ServerResponse, e: ArmError): void {
    this.answered[e.code] = (this.answered[e.code] ?? 0) + 1;
    this.answeredStatus[e.status] = (this.answeredStatus[e.status] ?? 0) + 1;
    const headers: Record<string, string> = {};
    if (e.extra.retryAfterSec !== undefined) headers['retry-after'] = String(e.extra.retryAfterSec);
    this.send(res, e.status, { error: { code: e.code, message: e.message, ...(e.extra.details ? { details: e.extra.details } : {}) } }, headers);
  }

  private busyError(nsg: NsgState, style: 'busy409' | 'busy429'): ArmError {
    const opUri = nsg.active ? `/subscriptions/${this.opts.subscriptionId}/providers/Microsoft.Network/locations/${this.location}/operations/${nsg.active.id}` : '(none)';
    if (style === 'busy409') {
      return new ArmError(409, 'AnotherOperationInProgress', `Another operation on this or dependent resource is in progress. To retrieve status of the operation use uri: ${opUri}.`);
    }
    const after = this.behaviour.retryAfterSec;
    return new ArmError(429, 'RetryableError', 'A retryable error occurred.', {
      retryAfterSec: after,
      details: [{ code: 'RetryableErrorDueToAnotherOperation', message: `Operation PutSecurityRuleOperation is updating resource ${this.nsgId(nsg)}. The call can be retried in ${after} seconds.` }],
    });
  }

  private throttleError(nsg: NsgState | undefined, style: FakeBehaviour['throttleStyle']): ArmError {
    let s = style ?? 'mixed';
    if (s === 'mixed') s = (['throttled', 'busy409', 'busy429'] as const)[Math.floor(this.styleRandom() * 3)]!;
    if (s !== 'throttled' && nsg) return this.busyError(nsg, s);
    const after = this.behaviour.retryAfterSec;
    return new ArmError(
      429,
      'SubscriptionRequestsThrottled',
      `Number of 'write' requests for subscription '${this.opts.subscriptionId}' exceeded. Please try again after '${after}' seconds after the additional tokens are available.`,
      { retryAfterSec: after },
    );
  }

  private settleExpired(): void {
    const now = Date.now();
    for (const nsg of this.nsgs.values()) if (nsg.active && now >= nsg.active.deadline) this.finish(nsg.active);
  }

  private finish(op: Op): void {
    if (op.status !== 'InProgress') return;
    op.status = op.fail ? 'Failed' : 'Succeeded';
    const nsg = op.nsg;
    if (op.fail) this.lateFailures++;
    if (op.kind === 'nsg') {
      if (op.fail) nsg.rules = op.prevRules!;
      else for (const r of nsg.rules.values()) r.provisioningState = 'Succeeded';
    } else {
      const key = op.ruleKey!;
      const rule = nsg.rules.get(key);
      if (op.fail) {
        // The change is rolled back: the rule is as it was before the operation.
        if (op.prevRule) nsg.rules.set(key, op.prevRule);
        else nsg.rules.delete(key);
      } else if (op.kind === 'delete') {
        nsg.rules.delete(key);
      } else if (rule) {
        rule.provisioningState = 'Succeeded';
      }
    }
    nsg.etag = etag();
    if (nsg.active === op) nsg.active = undefined;
    this.onStateChange?.('settled');
  }

  private advance(op: Op): void {
    if (op.status !== 'InProgress') return;
    if (op.pollsLeft > 0 && Date.now() < op.deadline) {
      op.pollsLeft--;
      return;
    }
    this.finish(op);
  }

  private startOp(nsg: NsgState, init: Omit<Op, 'id' | 'nsg' | 'status' | 'pollsLeft' | 'deadline' | 'fail'>): Op {
    const op: Op = {
      id: randomUUID(),
      nsg,
      status: 'InProgress',
      pollsLeft: this.behaviour.pollsUntilDone,
      deadline: Date.now() + this.behaviour.operationMs,
      fail: this.faults.lateFailure(),
      ...init,
    };
    this.ops.set(op.id, op);
    nsg.active = op;
    return op;
  }

  private opUrl(req: IncomingMessage, kind: 'operations' | 'operationResults', op: Op, apiVersion: string): string {
    return `https://${req.headers.host ?? '127.0.0.1'}/subscriptions/${this.opts.subscriptionId}/providers/Microsoft.Network/locations/${this.location}/${kind}/${op.id}?api-version=${apiVersion}`;
  }

  private accepted(): void {
    this.faults.wrote();
    this.acceptedWrites++;
    this.onStateChange?.('accepted');
    this.onWriteAccepted?.(this.acceptedWrites);
  }

  /** Validates one rule against the NSG as it would be after the write; throws ArmError. */
  private validateRule(nsg: NsgState, name: string, props: FakeRuleProps, others: StoredRule[]): void {
    if (name.length > 80 || !RULE_NAME.test(name)) {
      throw new ArmError(400, 'InvalidResourceName', `Resource name ${name} is invalid. The name can be up to 80 characters long. It must begin with a word character, and it must end with a word character or with '_'. The name may contain word characters or '.', '-', '_'.`);
    }
    for (const k of ['protocol', 'access', 'direction', 'priority'] as const) {
      if (props[k] === undefined || props[k] === null) throw new ArmError(400, 'InvalidRequestFormat', `Cannot parse the request: required property '${k}' of security rule ${name} not found.`);
    }
    if (!PROTOCOLS.has(String(props.protocol).toLowerCase())) throw new ArmError(400, 'InvalidRequestFormat', `Security rule ${name} has invalid protocol ${String(props.protocol)}.`);
    if (!['allow', 'deny'].includes(String(props.access).toLowerCase())) throw new ArmError(400, 'InvalidRequestFormat', `Security rule ${name} has invalid access ${String(props.access)}.`);
    if (!['inbound', 'outbound'].includes(String(props.direction).toLowerCase())) throw new ArmError(400, 'InvalidRequestFormat', `Security rule ${name} has invalid direction ${String(props.direction)}.`);
    const prio = props.priority!;
    if (!Number.isInteger(prio) || prio < 100 || prio > 4096) {
      throw new ArmError(400, 'SecurityRuleInvalidPriority', `Security rule has invalid Priority. Value provided: ${String(prio)} Allowed range 100-4096.`);
    }
    if ((props.description ?? '').length > 140) {
      // Code unconfirmed: no public error report for this case was found; the 140-character limit is from the REST spec.
      throw new ArmError(400, 'SecurityRuleDescriptionTooLong', `Security rule ${name} has a description of ${props.description!.length} characters; at most 140 are allowed.`);
    }
    const families = new Set<number>();
    for (const side of ['source', 'destination'] as const) {
      const one = side === 'source' ? props.sourceAddressPrefix : props.destinationAddressPrefix;
      const many = (side === 'source' ? props.sourceAddressPrefixes : props.destinationAddressPrefixes) ?? [];
      const field = side === 'source' ? 'SourceAddressPrefix' : 'DestinationAddressPrefix';
      if (!one && many.length === 0) throw new ArmError(400, 'SecurityRuleInvalidAddressPrefix', `Security rule ${name} has no ${field} or ${field}es.`);
      if (one && many.length > 0) {
        throw new ArmError(400, 'SecurityRuleParameterContainsUnsupportedValue', `Security rule ${name} cannot specify both ${field} and ${field}es.`);
      }
      for (const p of many) {
        const parsed = tryParseCidr(p);
        if (!parsed) {
          throw new ArmError(400, 'SecurityRuleParameterContainsUnsupportedValue', `Security rule parameter ${field}es for rule with Id ${this.nsgId(nsg)}/securityRules/${name} cannot specify existing VIRTUALNETWORK, INTERNET, AZURELOADBALANCER, '*' or system tags. Unsupported value used: ${p}.`);
        }
        families.add(parsed.family);
      }
      if (one) {
        const parsed = tryParseCidr(one);
        if (parsed) families.add(parsed.family);
        else if (one !== '*' && !SERVICE_TAG.test(one)) throw new ArmError(400, 'SecurityRuleInvalidAddressPrefix', `Security rule ${name} has invalid Address prefix. Value provided: ${one}`);
      }
    }
    if (families.size > 1) {
      throw new ArmError(400, 'ResourceCannotContainAddressPrefixesFromDifferentAddressFamilies', `Resource ${this.nsgId(nsg)}/securityRules/${name} contains IP addresses or prefixes that belong to different address families. All IP addresses or prefixes in the resource should belong to the same address family.`);
    }
    const clash = others.find((o) => o.props.priority === prio && String(o.props.direction).toLowerCase() === String(props.direction).toLowerCase());
    if (clash) {
      throw new ArmError(400, 'SecurityRuleConflict', `Security rule ${clash.name} conflicts with rule ${name}. Rules cannot have the same Priority and Direction. To learn more, see aka.ms/nsgrules.`);
    }
  }

  /** NSG-wide limits after the change: rule count and prefixes per side. */
  private validateTotals(nsg: NsgState, all: FakeRuleProps[]): void {
    if (all.length > this.limits.rulesPerNsg) {
      throw new ArmError(400, 'SecurityRuleCountLimitReached', `A security group cannot have more than ${this.limits.rulesPerNsg} security rules.`);
    }
    for (const side of ['source', 'destination'] as const) {
      const n = all.reduce((s, p) => s + counted(p, side), 0);
      const what = side === 'source' ? 'SourceAddressPrefixes' : 'DestinationAddressPrefixes';
      if (n > this.limits.prefixesPerNsg) {
        throw new ArmError(400, 'SecurityRuleAddressesOrPortsPerSecurityGroupLimitReached', `Network security group ${this.nsgId(nsg)} has ${n} ${what}. A security group cannot have more than ${this.limits.prefixesPerNsg} ${what} as per the limit MaxSecurityRuleAddressesOrPortsPerSecurityGroup.`);
      }
    }
  }

  private parseRuleBody(text: string, name: string): FakeRuleProps {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new ArmError(400, 'InvalidRequestContent', 'The request content was invalid and could not be deserialized.');
    }
    const props = (body as { properties?: unknown } | null)?.properties;
    if (!props || typeof props !== 'object') throw new ArmError(400, 'InvalidRequestFormat', `Cannot parse the request: security rule ${name} has no properties.`);
    const p = props as Record<string, unknown>;
    const out: FakeRuleProps = {};
    const str = ['description', 'protocol', 'sourcePortRange', 'destinationPortRange', 'sourceAddressPrefix', 'destinationAddressPrefix', 'access', 'direction'] as const;
    for (const k of str) if (typeof p[k] === 'string') out[k] = p[k];
    const arr = ['sourcePortRanges', 'destinationPortRanges', 'sourceAddressPrefixes', 'destinationAddressPrefixes'] as const;
    for (const k of arr) if (Array.isArray(p[k])) out[k] = (p[k] as unknown[]).map(String);
    if (p.priority !== undefined) out.priority = p.priority as number;
    return out;
  }

  // ---------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    this.calls.total++;
    if (req.headers['user-agent']) this.userAgents.add(req.headers['user-agent']);
    this.calls.byMethod[method] = (this.calls.byMethod[method] ?? 0) + 1;
    const url = new URL(req.url ?? '/', 'https://fake');
    const path = url.pathname;
    const apiVersion = url.searchParams.get('api-version');
    const sub = '/subscriptions/([^/]+)';
    const nsgPath = `${sub}/resourceGroups/([^/]+)/providers/Microsoft\\.Network/networkSecurityGroups/([^/]+)`;
    const routes: [string, RegExp][] = [
      ['nsg', new RegExp(`^${nsgPath}$`, 'i')],
      ['rules.list', new RegExp(`^${nsgPath}/securityRules$`, 'i')],
      ['rule', new RegExp(`^${nsgPath}/securityRules/([^/]+)$`, 'i')],
      ['op.status', new RegExp(`^${sub}/providers/Microsoft\\.Network/locations/([^/]+)/operations/([^/]+)$`, 'i')],
      ['op.result', new RegExp(`^${sub}/providers/Microsoft\\.Network/locations/([^/]+)/operationResults/([^/]+)$`, 'i')],
    ];
    let route = 'unknown';
    let m: RegExpExecArray | null = null;
    for (const [name, re] of routes) {
      m = re.exec(path);
      if (m) {
        route = name;
        break;
      }
    }
    const opName = route === 'nsg' || route === 'rule' ? `${route}.${method.toLowerCase()}` : route;
    this.calls.byOp[opName] = (this.calls.byOp[opName] ?? 0) + 1;
    const mutating = method === 'PUT' || method === 'DELETE';

    await this.faults.delay();
    const body = mutating && method === 'PUT' ? await readBody(req) : '';
    try {
      if (!/^Bearer \S+/.test(req.headers.authorization ?? '')) {
        throw new ArmError(401, 'AuthenticationFailed', "Authentication failed. The 'Authorization' header is missing.");
      }
      if (!apiVersion) throw new ArmError(400, 'MissingApiVersionParameter', "The api-version query parameter (?api-version=) is required for all requests.");
      if (!m) throw new ArmError(404, 'NotFound', `No route for ${method} ${path}.`);
      if (m[1]!.toLowerCase() !== this.opts.subscriptionId.toLowerCase()) throw new ArmError(404, 'SubscriptionNotFound', `The subscription '${m[1]}' could not be found.`);
      this.settleExpired();

      const scripted = mutating ? this.scripted.shift() : undefined;
      const verdict = scripted ? 'scripted' : this.faults.decide(mutating);
      if (verdict === 'drop') return dropConnection(req, res);
      const nsg = route === 'nsg' || route === 'rules.list' || route === 'rule' ? this.nsgs.get(`${m[2]}/${m[3]}`.toLowerCase()) : undefined;
      if (verdict === 'server_error' || scripted === 'server_error') throw new ArmError(500, 'InternalServerError', 'An error occurred.');
      if (verdict === 'throttle') throw this.throttleError(nsg, this.behaviour.throttleStyle);
      if (scripted) throw this.throttleError(nsg, scripted as Exclude<ScriptedFailure, 'server_error'>);

      if (route === 'op.status' || route === 'op.result') return this.handleOp(req, res, route, m[3]!, apiVersion);
      if (route === 'nsg' && method === 'PUT') return this.putNsg(req, res, m[2]!, m[3]!, body, apiVersion);
      if (!nsg) {
        throw new ArmError(404, 'ResourceNotFound', `The Resource 'Microsoft.Network/networkSecurityGroups/${m[3]}' under resource group '${m[2]}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`);
      }
      if (route === 'nsg' && method === 'GET') return this.send(res, 200, this.nsgJson(nsg));
      if (route === 'rules.list' && method === 'GET') return this.listRules(req, res, nsg, url);
      if (route === 'rule') {
        const name = decodeURIComponent(m[4]!);
        if (method === 'GET') {
          const r = nsg.rules.get(name.toLowerCase());
          if (!r) throw new ArmError(404, 'NotFound', `Resource ${this.nsgId(nsg)}/securityRules/${name} not found.`);
          return this.send(res, 200, this.ruleJson(nsg, r));
        }
        if (method === 'PUT') return this.putRule(req, res, nsg, name, body, apiVersion);
        if (method === 'DELETE') return this.deleteRule(req, res, nsg, name, apiVersion);
      }
      throw new ArmError(405, 'MethodNotAllowed', `The requested method ${method} is not allowed for ${path}.`);
    } catch (err) {
      if (err instanceof ArmError) return this.sendError(res, err);
      throw err;
    }
  }

  private listRules(req: IncomingMessage, res: ServerResponse, nsg: NsgState, url: URL): void {
    const all = [...nsg.rules.values()];
    const size = this.behaviour.pageSize;
    const skip = Number(url.searchParams.get('$skiptoken') ?? 0);
    const page = size > 0 ? all.slice(skip, skip + size) : all;
    const more = size > 0 && skip + size < all.length;
    const next = new URL(url.toString());
    next.searchParams.set('$skiptoken', String(skip + size));
    this.send(res, 200, {
      value: page.map((r) => this.ruleJson(nsg, r)),
      ...(more ? { nextLink: `https://${req.headers.host ?? '127.0.0.1'}${next.pathname}${next.search}` } : {}),
    });
  }

  private putRule(req: IncomingMessage, res: ServerResponse, nsg: NsgState, name: string, text: string, apiVersion: string): void {
    if (nsg.active) {
      this.realConflicts++;
      throw this.busyError(nsg, this.styleRandom() < 0.5 ? 'busy409' : 'busy429');
    }
    const props = this.parseRuleBody(text, name);
    const key = name.toLowerCase();
    const prev = nsg.rules.get(key);
    const others = [...nsg.rules.values()].filter((r) => r.name.toLowerCase() !== key);
    this.validateRule(nsg, name, props, others);
    this.validateTotals(nsg, [...others.map((o) => o.props), props]);
    const stored: StoredRule = { name: prev?.name ?? name, props: this.normalise(props), provisioningState: 'Updating', etag: etag() };
    nsg.rules.set(key, stored);
    const op = this.startOp(nsg, { kind: 'put', ruleKey: key, prevRule: prev ? structuredClone(prev) : undefined });
    this.accepted();
    this.send(res, prev ? 200 : 201, this.ruleJson(nsg, stored), {
      'azure-asyncoperation': this.opUrl(req, 'operations', op, apiVersion),
      'retry-after': String(this.behaviour.pollRetryAfterSec),
    });
  }

  private deleteRule(req: IncomingMessage, res: ServerResponse, nsg: NsgState, name: string, apiVersion: string): void {
    if (nsg.active) {
      this.realConflicts++;
      throw this.busyError(nsg, this.styleRandom() < 0.5 ? 'busy409' : 'busy429');
    }
    const key = name.toLowerCase();
    const prev = nsg.rules.get(key);
    if (!prev) {
      this.accepted();
      return this.send(res, 204);
    }
    const op = this.startOp(nsg, { kind: 'delete', ruleKey: key, prevRule: structuredClone(prev) });
    prev.provisioningState = 'Deleting';
    this.accepted();
    this.send(res, 202, undefined, { location: this.opUrl(req, 'operationResults', op, apiVersion), 'retry-after': String(this.behaviour.pollRetryAfterSec) });
  }

  private putNsg(req: IncomingMessage, res: ServerResponse, rg: string, name: string, text: string, apiVersion: string): void {
    let nsg = this.nsgs.get(`${rg}/${name}`.toLowerCase());
    if (nsg?.active) {
      this.realConflicts++;
      throw this.busyError(nsg, this.styleRandom() < 0.5 ? 'busy409' : 'busy429');
    }
    let body: { location?: unknown; properties?: { flushConnection?: unknown; securityRules?: { name?: string; properties?: unknown }[] } };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new ArmError(400, 'InvalidRequestContent', 'The request content was invalid and could not be deserialized.');
    }
    if (typeof body.location !== 'string') throw new ArmError(400, 'LocationRequired', 'The location property is required for this definition.');
    const created = !nsg;
    nsg ??= { rg, name, guid: randomUUID(), etag: etag(), rules: new Map(), flushConnection: false, subnets: [] };
    if (typeof body.properties?.flushConnection === 'boolean') nsg.flushConnection = body.properties.flushConnection;
    const next = new Map<string, StoredRule>();
    for (const r of body.properties?.securityRules ?? []) {
      const ruleName = r.name ?? '';
      const props = this.parseRuleBody(JSON.stringify({ properties: r.properties }), ruleName);
      this.validateRule(nsg, ruleName, props, [...next.values()]);
      next.set(ruleName.toLowerCase(), { name: ruleName, props: this.normalise(props), provisioningState: 'Updating', etag: etag() });
    }
    this.validateTotals(nsg, [...next.values()].map((r) => r.props));
    const prevRules = nsg.rules;
    nsg.rules = next;
    this.nsgs.set(`${rg}/${name}`.toLowerCase(), nsg);
    const op = this.startOp(nsg, { kind: 'nsg', prevRules });
    this.accepted();
    this.send(res, created ? 201 : 200, this.nsgJson(nsg), {
      'azure-asyncoperation': this.opUrl(req, 'operations', op, apiVersion),
      'retry-after': String(this.behaviour.pollRetryAfterSec),
    });
  }

  private handleOp(req: IncomingMessage, res: ServerResponse, route: string, id: string, apiVersion: string): void {
    const op = this.ops.get(id);
    if (!op) throw new ArmError(404, 'NotFound', `Operation ${id} not found.`);
    this.advance(op);
    const retry = { 'retry-after': String(this.behaviour.pollRetryAfterSec) };
    if (route === 'op.status') {
      if (op.status === 'Failed') return this.send(res, 200, { status: 'Failed', error: { code: 'InternalServerError', message: 'An error occurred.' } });
      return this.send(res, 200, { status: op.status }, op.status === 'InProgress' ? retry : {});
    }
    // Location polling: 202 while running, 204 when done, the error status when it failed.
    if (op.status === 'InProgress') return this.send(res, 202, undefined, { location: this.opUrl(req, 'operationResults', op, apiVersion), ...retry });
    if (op.status === 'Failed') throw new ArmError(500, 'InternalServerError', 'An error occurred.');
    this.send(res, 204);
  }
}
