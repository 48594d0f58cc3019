/**
 * A fake EC2 endpoint speaking the Query protocol for the calls the aws-nacl
 * provider makes: `POST /` with a form body (`Action=…&Version=2016-11-15&…`,
 * lists as `Name.N`), XML answers in the 2016-11-15 namespace with `<item>`
 * list members, and XML errors (`<Response><Errors><Error><Code>`) with a
 * RequestID. Shapes follow the EC2 model (`aws-models/ec2.json`, the
 * `ec2QueryName`/`xmlName` traits); the tests run the real `EC2Client`
 * against it.
 *
 * Operations: DescribeNetworkAcls, CreateNetworkAclEntry,
 * ReplaceNetworkAclEntry, DeleteNetworkAclEntry, CreateTags, DeleteTags,
 * DescribeTags. Faults come from the shared `Faults` (throttling answers
 * `RequestLimitExceeded` with HTTP 503, as EC2 does).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Faults, dropConnection, prng, readBody, type FaultConfig } from '../faults.js';
import { DEFAULT_RULE, DEFAULT_RULE_V6, Ec2Error, Ec2State, type FakeAcl, type FakeEntry } from './state.js';
import { errorXml, responseXml, type XmlNode } from './xml.js';

export const MUTATING_ACTIONS = new Set(['CreateNetworkAclEntry', 'ReplaceNetworkAclEntry', 'DeleteNetworkAclEntry', 'CreateTags', 'DeleteTags']);
const ACTIONS = new Set([...MUTATING_ACTIONS, 'DescribeNetworkAcls', 'DescribeTags']);

export interface SeedEntry {
  rule: number;
  egress?: boolean;
  action?: 'allow' | 'deny';
  /** `-1` (all), `6` (tcp), `17` (udp)… */
  protocol?: string;
  cidr: string;
  ports?: [number, number];
}

export interface SeedAcl {
  id?: string;
  vpcId?: string;
  isDefault?: boolean;
  /** The VPC has an IPv6 block: the default `*` entries exist for IPv6 too (default true). */
  ipv6?: boolean;
  /** Subnets associated with the NACL (default: one new subnet; `[]` for a NACL that filters nothing). */
  subnets?: string[];
  entries?: SeedEntry[];
  tags?: Record<string, string>;
}

export interface FakeEc2Options {
  /** Entries per direction per family, default entries included (default 20). */
  quota?: number;
  /** Tags per resource (default 50). */
  maxTags?: number;
}

/** `Prefix.1`, `Prefix.2`… values of a form. */
function list(p: URLSearchParams, prefix: string): string[] {
  const out: string[] = [];
  for (let i = 1; p.has(`${prefix}.${i}`); i++) out.push(p.get(`${prefix}.${i}`)!);
  return out;
}

/** `Prefix.N.Field` structures of a form, N from 1. */
function structs(p: URLSearchParams, prefix: string): Array<Map<string, string>> {
  const byIndex = new Map<number, Map<string, string>>();
  for (const [k, v] of p) {
    if (!k.startsWith(`${prefix}.`)) continue;
    const m = /^(\d+)\.(.+)$/.exec(k.slice(prefix.length + 1));
    if (!m) continue;
    const i = Number(m[1]);
    let s = byIndex.get(i);
    if (!s) byIndex.set(i, (s = new Map()));
    s.set(m[2]!, v);
  }
  return [...byIndex.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s);
}

function filtersOf(p: URLSearchParams): Array<{ name: string; values: string[] }> {
  return structs(p, 'Filter').map((s) => {
    const values: string[] = [];
    for (let i = 1; s.has(`Value.${i}`); i++) values.push(s.get(`Value.${i}`)!);
    return { name: s.get('Name') ?? '', values };
  });
}

function entryXml(e: FakeEntry): XmlNode {
  return {
    ruleNumber: e.ruleNumber,
    protocol: e.protocol,
    ruleAction: e.ruleAction,
    egress: e.egress,
    cidrBlock: e.cidrBlock,
    ipv6CidrBlock: e.ipv6CidrBlock,
    portRange: e.portRange ? { from: e.portRange.from, to: e.portRange.to } : undefined,
    icmpTypeCode: e.icmpTypeCode ? { code: e.icmpTypeCode.code, type: e.icmpTypeCode.type } : undefined,
  };
}

function aclXml(a: FakeAcl): XmlNode {
  const entries = [...a.entries].sort((x, y) => Number(x.egress) - Number(y.egress) || x.ruleNumber - y.ruleNumber);
  return {
    associationSet: a.associations.map((x) => ({ networkAclAssociationId: x.id, networkAclId: a.id, subnetId: x.subnetId })),
    entrySet: entries.map(entryXml),
    default: a.isDefault,
    networkAclId: a.id,
    tagSet: [...a.tags].map(([key, value]) => ({ key, value })),
    vpcId: a.vpcId,
    ownerId: a.ownerId,
  };
}

export class FakeEc2 {
  readonly state: Ec2State;
  readonly faults = new Faults();
  /** Requests received, by action, faulted ones included. */
  readonly calls: Record<string, number> = {};
  /** Error answers sent, by code (injected faults included). */
  readonly errors: Record<string, number> = {};
  /** Actions answered with UnauthorizedOperation (an IAM policy that lacks them). */
  readonly denied = new Set<string>();
  /** Called when a call passed auth and validation of its action, right before the state sees it (lets a test change the NACL between a read and a write, as another tool would). */
  beforeAction: ((action: string) => void) | undefined;
  /** Called right after each successful mutating call changed the state, before it is answered (lets a test check every intermediate state). */
  onMutation: ((action: string) => void) | undefined;
  /** Fraction of successful mutating calls whose answer is lost after the change is made. */
  private lossRate = 0;
  private lossRandom = prng(7);
  url = '';
  private server: Server | undefined;

  constructor(opts: FakeEc2Options = {}) {
    this.state = new Ec2State(opts.quota ?? 20, opts.maxTags ?? 50);
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const addr = this.server.address();
    if (!addr || typeof addr === 'string') throw new Error('fake EC2: no port');
    this.url = `http://127.0.0.1:${addr.port}`;
    return this;
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }

  setFaults(cfg: FaultConfig): void {
    this.faults.set(cfg);
  }

  /** After each successful mutating call, its answer is lost with this probability (the change stays made). */
  loseResponses(rate: number, seed = 7): void {
    this.lossRate = rate;
    this.lossRandom = prng(seed);
  }

  resetCounters(): void {
    for (const k of Object.keys(this.calls)) delete this.calls[k];
    for (const k of Object.keys(this.errors)) delete this.errors[k];
  }

  get totalCalls(): number {
    return Object.values(this.calls).reduce((a, b) => a + b, 0);
  }

  get mutatingCalls(): number {
    return Object.entries(this.calls)
      .filter(([k]) => MUTATING_ACTIONS.has(k))
      .reduce((a, [, n]) => a + n, 0);
  }

  /**
   * Adds a NACL with its default `*` deny entries (IPv4 at 32767, and IPv6 at
   * 32768 unless `ipv6: false`), associated with one new subnet unless
   * `subnets` says otherwise.
   */
  addAcl(seed: SeedAcl = {}): string {
    const id = seed.id ?? this.state.newAclId();
    const acl: FakeAcl = { id, vpcId: seed.vpcId ?? 'vpc-0a1b2c3d4e5f60718', ownerId: '111122223333', isDefault: seed.isDefault ?? false, entries: [], tags: new Map(), associations: [] };
    for (const egress of [false, true]) {
      acl.entries.push({ ruleNumber: DEFAULT_RULE, egress, protocol: '-1', ruleAction: 'deny', cidrBlock: '0.0.0.0/0' });
      if (seed.ipv6 !== false) acl.entries.push({ ruleNumber: DEFAULT_RULE_V6, egress, protocol: '-1', ruleAction: 'deny', ipv6CidrBlock: '::/0' });
    }
    this.state.acls.set(id, acl);
    for (const subnet of seed.subnets ?? [this.state.newSubnetId()]) this.state.associate(id, subnet);
    for (const e of seed.entries ?? []) this.putEntry(id, e);
    for (const [k, v] of Object.entries(seed.tags ?? {})) acl.tags.set(k, v);
    return id;
  }

  /** Seeds or overwrites an entry directly (no quota check), as another tool or a person would have. */
  putEntry(aclId: string, e: SeedEntry): void {
    const acl = this.state.acl(aclId);
    const egress = e.egress ?? false;
    const v6 = e.cidr.includes(':');
    const entry: FakeEntry = {
      ruleNumber: e.rule,
      egress,
      protocol: e.protocol ?? '-1',
      ruleAction: e.action ?? 'allow',
      ...(v6 ? { ipv6CidrBlock: e.cidr } : { cidrBlock: e.cidr }),
      ...(e.ports ? { portRange: { from: e.ports[0], to: e.ports[1] } } : {}),
    };
    const i = acl.entries.findIndex((x) => x.ruleNumber === e.rule && x.egress === egress);
    if (i >= 0) acl.entries[i] = entry;
    else acl.entries.push(entry);
  }

  removeEntry(aclId: string, rule: number, egress = false): void {
    const acl = this.state.acl(aclId);
    acl.entries = acl.entries.filter((x) => !(x.ruleNumber === rule && x.egress === egress));
  }

  entries(aclId: string): FakeEntry[] {
    return this.state.acl(aclId).entries.map((e) => ({ ...e }));
  }

  tags(aclId: string): Record<string, string> {
    return Object.fromEntries(this.state.acl(aclId).tags);
  }

  setTag(aclId: string, key: string, value: string | undefined): void {
    const tags = this.state.acl(aclId).tags;
    if (value === undefined) tags.delete(key);
    else tags.set(key, value);
  }

  private send(res: ServerResponse, status: number, body: string, requestId: string): void {
    res.writeHead(status, { 'content-type': 'text/xml;charset=UTF-8', 'x-amzn-requestid': requestId, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  private fail(res: ServerResponse, err: Ec2Error, requestId: string): void {
    this.errors[err.code] = (this.errors[err.code] ?? 0) + 1;
    this.send(res, err.status, errorXml(err.code, err.message, requestId), requestId);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = randomUUID();
    let params: URLSearchParams;
    try {
      const url = new URL(req.url ?? '/', 'http://fake');
      params = req.method === 'POST' ? new URLSearchParams(await readBody(req, 1024 * 1024)) : url.searchParams;
    } catch {
      this.fail(res, new Ec2Error('InvalidParameterValue', 'The request body could not be read'), requestId);
      return;
    }
    const action = params.get('Action') ?? '';
    this.calls[action] = (this.calls[action] ?? 0) + 1;
    const mutating = MUTATING_ACTIONS.has(action);

    await this.faults.delay();
    const verdict = this.faults.decide(mutating);
    if (verdict === 'drop') return dropConnection(req, res);
    if (verdict === 'server_error') return this.fail(res, new Ec2Error('InternalError', 'An internal error has occurred', 500), requestId);
    if (verdict === 'throttle') return this.fail(res, new Ec2Error('RequestLimitExceeded', 'Request limit exceeded.', 503), requestId);

    if (!/^AWS4-HMAC-SHA256 Credential=\S+/.test(req.headers.authorization ?? '')) {
      return this.fail(res, new Ec2Error('AuthFailure', 'AWS was not able to validate the provided access credentials', 401), requestId);
    }
    if (!ACTIONS.has(action)) return this.fail(res, new Ec2Error('InvalidAction', `The action ${action} is not valid for this web service.`), requestId);
    if (params.get('Version') !== '2016-11-15') return this.fail(res, new Ec2Error('InvalidParameterValue', `Unsupported Version ${params.get('Version') ?? ''}`), requestId);
    if (this.denied.has(action)) return this.fail(res, new Ec2Error('UnauthorizedOperation', 'You are not authorized to perform this operation.', 403), requestId);

    let body: XmlNode;
    try {
      this.beforeAction?.(action);
      body = this.dispatch(action, params);
    } catch (err) {
      if (err instanceof Ec2Error) return this.fail(res, err, requestId);
      return this.fail(res, new Ec2Error('InternalError', `fake EC2: ${(err as Error).message}`, 500), requestId);
    }
    if (mutating) {
      this.faults.wrote();
      this.onMutation?.(action);
      if (this.lossRate > 0 && this.lossRandom() < this.lossRate) return dropConnection(req, res);
    }
    this.send(res, 200, responseXml(action, requestId, body), requestId);
  }

  private dispatch(action: string, p: URLSearchParams): XmlNode {
    const s = this.state;
    const entryInput = () => ({
      networkAclId: p.get('NetworkAclId') ?? undefined,
      ruleNumber: p.get('RuleNumber') ?? undefined,
      protocol: p.get('Protocol') ?? undefined,
      ruleAction: p.get('RuleAction') ?? undefined,
      egress: p.get('Egress') ?? undefined,
      cidrBlock: p.get('CidrBlock') ?? undefined,
      ipv6CidrBlock: p.get('Ipv6CidrBlock') ?? undefined,
      portFrom: p.get('PortRange.From') ?? undefined,
      portTo: p.get('PortRange.To') ?? undefined,
      icmpType: p.get('Icmp.Type') ?? undefined,
      icmpCode: p.get('Icmp.Code') ?? undefined,
    });
    switch (action) {
      case 'DescribeNetworkAcls': {
        const ids = list(p, 'NetworkAclId');
        let acls = ids.length > 0 ? ids.map((id) => s.acl(id)) : [...s.acls.values()];
        for (const f of filtersOf(p)) {
          const pick: Record<string, (a: FakeAcl) => string> = { 'network-acl-id': (a) => a.id, 'vpc-id': (a) => a.vpcId, default: (a) => String(a.isDefault) };
          const get = pick[f.name];
          if (!get) throw new Ec2Error('InvalidParameterValue', `The filter '${f.name}' is invalid`);
          acls = acls.filter((a) => f.values.includes(get(a)));
        }
        return { networkAclSet: acls.map(aclXml) };
      }
      case 'CreateNetworkAclEntry':
        s.createEntry(entryInput());
        return { return: true };
      case 'ReplaceNetworkAclEntry':
        s.replaceEntry(entryInput());
        return { return: true };
      case 'DeleteNetworkAclEntry':
        s.deleteEntry({ networkAclId: p.get('NetworkAclId') ?? undefined, ruleNumber: p.get('RuleNumber') ?? undefined, egress: p.get('Egress') ?? undefined });
        return { return: true };
      case 'CreateTags':
        s.createTags(
          list(p, 'ResourceId'),
          structs(p, 'Tag').map((t) => ({ key: t.get('Key') ?? '', value: t.get('Value') ?? '' })),
        );
        return { return: true };
      case 'DeleteTags':
        s.deleteTags(
          list(p, 'ResourceId'),
          structs(p, 'Tag').map((t) => ({ key: t.get('Key') ?? '', value: t.get('Value') })),
        );
        return { return: true };
      case 'DescribeTags': {
        let rows = [...s.acls.values()].flatMap((a) => [...a.tags].map(([key, value]) => ({ resourceId: a.id, resourceType: 'network-acl', key, value })));
        const fields: Record<string, 'resourceId' | 'resourceType' | 'key' | 'value'> = { 'resource-id': 'resourceId', 'resource-type': 'resourceType', key: 'key', value: 'value' };
        for (const f of filtersOf(p)) {
          const field = fields[f.name];
          if (!field) throw new Ec2Error('InvalidParameterValue', `The filter '${f.name}' is invalid`);
          rows = rows.filter((r) => f.values.includes(r[field]));
        }
        const max = p.has('MaxResults') ? Number(p.get('MaxResults')) : 1000;
        if (!Number.isInteger(max) || max < 5 || max > 1000) throw new Ec2Error('InvalidParameterValue', `Value (${p.get('MaxResults')}) for parameter maxResults is invalid. Expecting a value between 5 and 1000.`);
        const start = p.has('NextToken') ? Number(p.get('NextToken')) : 0;
        if (!Number.isInteger(start) || start < 0) throw new Ec2Error('InvalidParameterValue', 'The token is invalid');
        const page = rows.slice(start, start + max);
        return { tagSet: page, nextToken: start + max < rows.length ? String(start + max) : undefined };
      }
      default:
        throw new Ec2Error('InvalidAction', `The action ${action} is not valid for this web service.`);
    }
  }
}

export async function startFakeEc2(opts: FakeEc2Options = {}): Promise<FakeEc2> {
  return new FakeEc2(opts).start();
}
