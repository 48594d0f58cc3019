/**
 * A stateful fake of the Compute Engine v1 REST endpoints the `gcp-firewall`
 * provider uses, for the real `FirewallsClient` / `GlobalOperationsClient`
 * (REST transport) on loopback.
 *
 * Shapes follow the Compute v1 discovery document (googleapis/
 * discovery-artifact-manager, discoveries/compute.v1.json): the `Firewall`,
 * `FirewallList` and `Operation` schemas (field names, `status` PENDING →
 * RUNNING → DONE, `error.errors[].code/message`, `httpErrorStatusCode`,
 * `clientOperationId`), the method paths and their `requestId`,
 * `maxResults` (0-500, default 500) and `pageToken` parameters. Errors use
 * Google's JSON shape `{error:{code,message,errors:[{message,domain,reason}],
 * status}}` with the reasons Compute uses (`invalid`, `required`,
 * `notFound`, `alreadyExists`, `resourceNotReady`, `quotaExceeded`,
 * `rateLimitExceeded`, `backendError`).
 *
 * Covered:
 * - firewalls list (paged), get, insert, patch (JSON merge patch), delete;
 *   globalOperations get and wait. Every mutation answers with an Operation
 *   that goes PENDING → RUNNING → DONE (one step per `get`, all the way on
 *   `wait`, or by itself after `operationMs`); the change lands when it is
 *   DONE. Some end DONE with an `error` (`lateFailureRate`): nothing changes;
 * - `requestId`: a repeated id returns the first request's operation and
 *   applies nothing (`dedupedRequests`); it must be a non-zero UUID;
 * - validation: names (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63), priority
 *   0..65535, direction, network existence, exactly one of allowed/denied,
 *   protocols and ports, CIDR syntax, ranges per rule (default 5000), one
 *   address family per range list, target tags vs service accounts, name
 *   and network unchanged by a PATCH;
 * - a per-project rule quota: 403 `quotaExceeded` (`Quota 'FIREWALLS'
 *   exceeded`), or, with `quotaStyle: 'operation'`, an operation that ends
 *   with `QUOTA_EXCEEDED`; 409 `alreadyExists`; 404 `notFound`; 400
 *   `resourceNotReady` while another operation on the rule is running;
 * - faults from `Faults`: throttling (403 `rateLimitExceeded` or 429), 5xx,
 *   latency, dropped connections, `failAfterWrites`, late operation errors;
 *   and scripted ones (`failNext`): a missing IAM permission (403
 *   `forbidden`), and a write applied whose answer is lost.
 *
 * Messages whose exact wording could not be confirmed from public sources are
 * marked below; their status and reason follow the documented error model.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tryParseCidr } from '../../../src/core/cidr.js';
import { Faults, dropConnection, prng, readBody, type FaultConfig } from '../faults.js';

const API = 'https://www.googleapis.com/compute/v1';
const NAME_RE = /^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const PROTOCOLS = new Set(['tcp', 'udp', 'icmp', 'esp', 'ah', 'sctp', 'ipip', 'all']);
const WITH_PORTS = new Set(['tcp', 'udp', 'sctp']);

export interface FakeComputeOptions {
  limits?: {
    /** Source (or destination) ranges per rule (VPC quotas page: 5000). */
    rangesPerRule?: number;
    /** Firewall rules per project (the FIREWALLS quota; 100-500 is common). */
    rulesPerProject?: number;
  };
}

export interface FakeBehaviour {
  /** `operations.get` answers before DONE (default 2: RUNNING, then DONE). */
  pollsUntilDone?: number;
  /** `operations.wait` drives the operation to DONE (default true); false: one step per wait, like a wait that timed out. */
  waitCompletes?: boolean;
  /** With `waitCompletes: false`, how long a wait holds its answer first (default 0), as the server-side long poll does (up to 2 min). */
  waitHoldsMs?: number;
  /** An operation nobody polls finishes by itself after this long (default 200 ms), as Compute's do when the client has gone. */
  operationMs?: number;
  /** What an injected throttle looks like (default `mixed`: 403 rateLimitExceeded or 429, seeded). */
  throttleStyle?: 'mixed' | '403' | '429';
  /** `Retry-After` (seconds) on 429 answers (default: none). */
  retryAfterSec?: number | undefined;
  /** How the rule quota is refused (default `http`: 403 on the insert; `operation`: an operation ending QUOTA_EXCEEDED). */
  quotaStyle?: 'http' | 'operation';
  /** Largest list page (default 500, the API's maximum). */
  pageSize?: number;
}

/** A firewall rule as stored and answered (output-only fields included). */
export interface FakeFirewall {
  kind?: string;
  id?: string;
  creationTimestamp?: string;
  name: string;
  description?: string;
  network?: string;
  priority?: number;
  sourceRanges?: string[];
  destinationRanges?: string[];
  sourceTags?: string[];
  targetTags?: string[];
  sourceServiceAccounts?: string[];
  targetServiceAccounts?: string[];
  allowed?: { IPProtocol: string; ports?: string[] }[];
  denied?: { IPProtocol: string; ports?: string[] }[];
  direction?: string;
  logConfig?: { enable: boolean; metadata?: string };
  disabled?: boolean;
  selfLink?: string;
}

export type OpStatus = 'PENDING' | 'RUNNING' | 'DONE';

interface Op {
  id: string;
  name: string;
  project: string;
  type: 'insert' | 'patch' | 'delete';
  target: string;
  requestId?: string | undefined;
  status: OpStatus;
  pollsLeft: number;
  deadline: number;
  failure?: { code: string; message: string; http: number; httpMessage: string } | undefined;
  /** Makes the change (called once, when DONE without error). */
  commit: () => void;
  insertTime: string;
  startTime?: string | undefined;
  endTime?: string | undefined;
}

interface ProjectState {
  networks: Set<string>;
  rules: Map<string, FakeFirewall>;
  /** Rule name → the operation in progress on it (an insert reserves the name). */
  busy: Map<string, Op>;
  ops: Map<string, Op>;
  requestIds: Map<string, Op>;
}

type Scripted = 'rateLimit403' | 'tooMany429' | 'backendError' | 'forbidden' | 'lostAnswer';

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly extra: { domain?: string; retryAfterSec?: number | undefined } = {},
  ) {
    super(message);
  }
}

const STATUS_TEXT: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  405: 'UNIMPLEMENTED',
  409: 'ALREADY_EXISTS',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
};

const invalid = (field: string, value: unknown, why: string) => new ApiError(400, 'invalid', `Invalid value for field '${field}': '${typeof value === 'string' ? value : JSON.stringify(value)}'. ${why}`);

export class FakeCompute {
  readonly faults = new Faults();
  /** Requests received, in total, by HTTP method and by API method (`firewalls.insert`, `globalOperations.wait`...). */
  readonly calls = { total: 0, byMethod: {} as Record<string, number>, byOp: {} as Record<string, number> };
  /** Error answers sent, by reason (injected ones included). */
  readonly answered: Record<string, number> = {};
  /** Error answers sent, by HTTP status. */
  readonly answeredStatus: Record<number, number> = {};
  readonly userAgents = new Set<string>();
  readonly apiClients = new Set<string>();
  /** Mutations accepted (insert/patch/delete answered with a new operation). */
  acceptedWrites = 0;
  /** Changes made to the rules (operations DONE without error). */
  committedWrites = 0;
  /** Operations that ended DONE with an error. */
  lateFailures = 0;
  /** Requests answered with an existing operation because their requestId was seen before. */
  dedupedRequests = 0;
  /** Called after each accepted write with the running count (lets a test stop a client mid-apply). */
  onWriteAccepted: ((n: number) => void) | undefined;
  /** Bearer tokens seen on authenticated requests (which credential reached the API). */
  readonly bearerTokens = new Set<string>();
  url = '';

  private server: Server | undefined;
  private readonly projects = new Map<string, ProjectState>();
  private behaviour: Required<Omit<FakeBehaviour, 'retryAfterSec'>> & { retryAfterSec?: number | undefined };
  private styleRandom = prng(7);
  private scripted: Scripted[] = [];
  private failingOps = 0;
  private readonly limits: { rangesPerRule: number; rulesPerProject: number };
  private nextId = 1_000_000_000_000n;

  constructor(opts: FakeComputeOptions = {}) {
    this.limits = { rangesPerRule: opts.limits?.rangesPerRule ?? 5000, rulesPerProject: opts.limits?.rulesPerProject ?? 500 };
    this.behaviour = FakeCompute.defaults();
  }

  private static defaults(): FakeCompute['behaviour'] {
    return { pollsUntilDone: 2, waitCompletes: true, waitHoldsMs: 0, operationMs: 200, throttleStyle: 'mixed', retryAfterSec: undefined, quotaStyle: 'http', pageSize: 500 };
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.sendError(res, new ApiError(500, 'internalError', `fake: ${String(err)}`));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
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

  /** Waits held by `waitHoldsMs` whose client hung up before the answer. */
  abandonedWaits = 0;

  setBehaviour(b: FakeBehaviour): void {
    this.behaviour = { ...this.behaviour, ...b };
  }

  setLimits(l: FakeComputeOptions['limits']): void {
    if (l?.rangesPerRule !== undefined) this.limits.rangesPerRule = l.rangesPerRule;
    if (l?.rulesPerProject !== undefined) this.limits.rulesPerProject = l.rulesPerProject;
  }

  /** Back to the defaults: no faults, no scripted failures, default behaviour. */
  reset(): void {
    this.setFaults({});
    this.behaviour = FakeCompute.defaults();
    this.scripted = [];
    this.failingOps = 0;
    this.onWriteAccepted = undefined;
  }

  /** The next `n` operations started end DONE with an error, whatever `lateFailureRate` draws. */
  failOperations(n: number): void {
    this.failingOps += n;
  }

  /** The next `n` mutating requests fail this way, before anything else is checked (`lostAnswer`: applied, then the connection drops). */
  failNext(n: number, kind: Scripted): void {
    for (let i = 0; i < n; i++) this.scripted.push(kind);
  }

  resetCounters(): void {
    this.calls.total = 0;
    this.calls.byMethod = {};
    this.calls.byOp = {};
    for (const k of Object.keys(this.answered)) delete this.answered[k];
    for (const k of Object.keys(this.answeredStatus)) delete this.answeredStatus[Number(k)];
    this.acceptedWrites = 0;
    this.committedWrites = 0;
    this.lateFailures = 0;
    this.dedupedRequests = 0;
  }

  /** Creates (or replaces) a project with its networks and rules, as a test fixture. */
  seedProject(project: string, opts: { networks?: string[]; rules?: FakeFirewall[] } = {}): void {
    const p: ProjectState = { networks: new Set(opts.networks ?? ['default']), rules: new Map(), busy: new Map(), ops: new Map(), requestIds: new Map() };
    this.projects.set(project, p);
    for (const r of opts.rules ?? []) this.setRuleDirect(project, r);
  }

  /** Adds or replaces one rule directly (someone else editing the project), filling the output-only fields. */
  setRuleDirect(project: string, rule: FakeFirewall): void {
    const p = this.project(project);
    const network = this.resolveNetwork(project, rule.network ?? 'global/networks/default');
    p.rules.set(rule.name, this.normalise(project, { ...structuredClone(rule), network }));
  }

  deleteRuleDirect(project: string, name: string): void {
    this.project(project).rules.delete(name);
  }

  /** Snapshot of a project's rules, sorted by name. */
  rules(project: string): FakeFirewall[] {
    return [...this.project(project).rules.values()].map((r) => structuredClone(r)).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** Operations of a project, oldest first. */
  operations(project: string): { name: string; type: string; target: string; status: OpStatus; error?: string | undefined; requestId?: string | undefined }[] {
    return [...this.project(project).ops.values()].map((o) => ({ name: o.name, type: o.type, target: o.target, status: o.status, error: o.failure?.code, requestId: o.requestId }));
  }

  /** Finishes every operation in progress now (time passing while no client polls). */
  settle(): void {
    for (const p of this.projects.values()) for (const op of p.ops.values()) this.finish(p, op);
  }

  // ---------------------------------------------------------------------------

  private project(project: string): ProjectState {
    const p = this.projects.get(project);
    if (!p) throw new Error(`no project ${project}`);
    return p;
  }

  private resolveNetwork(project: string, ref: string): string {
    const m = /(?:^|\/)projects\/([^/]+)\/global\/networks\/([^/]+)$/.exec(ref) ?? /^(?:global\/networks\/)?()([a-z][-a-z0-9]*)$/.exec(ref);
    if (!m) throw invalid('resource.network', ref, 'The URL is malformed.');
    const p = m[1] || project;
    const name = m[2]!;
    if (p !== project) throw invalid('resource.network', ref, 'The network must belong to the project of the firewall rule.');
    if (!this.projects.get(p)?.networks.has(name)) throw new ApiError(404, 'notFound', `The resource 'projects/${p}/global/networks/${name}' was not found`);
    return `${API}/projects/${p}/global/networks/${name}`;
  }

  /** Output form: defaults filled, empty lists dropped (as the API answers). */
  private normalise(project: string, r: FakeFirewall): FakeFirewall {
    const out: FakeFirewall = {
      kind: 'compute#firewall',
      id: r.id ?? String(this.nextId++),
      creationTimestamp: r.creationTimestamp ?? new Date().toISOString(),
      name: r.name,
      ...(r.description !== undefined ? { description: r.description } : {}),
      network: r.network!,
      priority: r.priority ?? 1000,
      direction: r.direction ?? 'INGRESS',
      logConfig: { enable: r.logConfig?.enable ?? false, ...(r.logConfig?.enable && r.logConfig.metadata ? { metadata: r.logConfig.metadata } : {}) },
      disabled: r.disabled ?? false,
      selfLink: `${API}/projects/${project}/global/firewalls/${r.name}`,
    };
    const lists = ['sourceRanges', 'destinationRanges', 'sourceTags', 'targetTags', 'sourceServiceAccounts', 'targetServiceAccounts'] as const;
    for (const k of lists) if ((r[k] ?? []).length > 0) out[k] = [...r[k]!];
    if ((r.allowed ?? []).length > 0) out.allowed = r.allowed!.map((a) => ({ IPProtocol: a.IPProtocol, ...((a.ports ?? []).length > 0 ? { ports: [...a.ports!] } : {}) }));
    if ((r.denied ?? []).length > 0) out.denied = r.denied!.map((a) => ({ IPProtocol: a.IPProtocol, ...((a.ports ?? []).length > 0 ? { ports: [...a.ports!] } : {}) }));
    // The API fills a missing source (INGRESS) or destination (EGRESS) with everything.
    if (out.direction === 'INGRESS' && !out.sourceRanges && !out.sourceTags && !out.sourceServiceAccounts) out.sourceRanges = ['0.0.0.0/0'];
    if (out.direction === 'EGRESS' && !out.destinationRanges) out.destinationRanges = ['0.0.0.0/0'];
    return out;
  }

  private send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': String(Buffer.byteLength(text)), ...headers });
    res.end(text);
  }

  private sendError(res: ServerResponse, e: ApiError): void {
    this.answered[e.reason] = (this.answered[e.reason] ?? 0) + 1;
    this.answeredStatus[e.status] = (this.answeredStatus[e.status] ?? 0) + 1;
    const headers: Record<string, string> = {};
    if (e.extra.retryAfterSec !== undefined) headers['retry-after'] = String(e.extra.retryAfterSec);
    this.send(
      res,
      e.status,
      { error: { code: e.status, message: e.message, errors: [{ message: e.message, domain: e.extra.domain ?? 'global', reason: e.reason }], status: STATUS_TEXT[e.status] ?? 'UNKNOWN' } },
      headers,
    );
  }

  private throttleError(style: FakeBehaviour['throttleStyle'], project: string): ApiError {
    let s = style ?? 'mixed';
    if (s === 'mixed') s = this.styleRandom() < 0.5 ? '403' : '429';
    if (s === '429') return new ApiError(429, 'rateLimitExceeded', 'Too Many Requests', { domain: 'usageLimits', retryAfterSec: this.behaviour.retryAfterSec });
    // The wording Compute uses for its per-minute rate quotas.
    return new ApiError(
      403,
      'rateLimitExceeded',
      `Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute' of service 'compute.googleapis.com' for consumer 'project_number:${project.length}'.`,
      { domain: 'usageLimits' },
    );
  }

  private opJson(op: Op): unknown {
    return {
      kind: 'compute#operation',
      id: op.id,
      name: op.name,
      operationType: op.type,
      targetLink: `${API}/projects/${op.project}/global/firewalls/${op.target}`,
      targetId: op.id,
      status: op.status,
      user: `cloud-bouncer@${op.project}.iam.gserviceaccount.com`,
      progress: op.status === 'DONE' ? 100 : 0,
      insertTime: op.insertTime,
      ...(op.startTime ? { startTime: op.startTime } : {}),
      ...(op.endTime ? { endTime: op.endTime } : {}),
      ...(op.requestId ? { clientOperationId: op.requestId } : {}),
      ...(op.status === 'DONE' && op.failure
        ? { error: { errors: [{ code: op.failure.code, message: op.failure.message }] }, httpErrorStatusCode: op.failure.http, httpErrorMessage: op.failure.httpMessage }
        : {}),
      selfLink: `${API}/projects/${op.project}/global/operations/${op.name}`,
    };
  }

  private finish(p: ProjectState, op: Op): void {
    if (op.status === 'DONE') return;
    op.status = 'DONE';
    op.startTime ??= new Date().toISOString();
    op.endTime = new Date().toISOString();
    if (p.busy.get(op.target) === op) p.busy.delete(op.target);
    if (op.failure) {
      this.lateFailures++;
      return;
    }
    op.commit();
    this.committedWrites++;
  }

  private step(p: ProjectState, op: Op, toDone: boolean): void {
    if (op.status === 'DONE') return;
    if (toDone || Date.now() >= op.deadline || op.pollsLeft <= 1) return this.finish(p, op);
    op.pollsLeft--;
    op.status = 'RUNNING';
    op.startTime ??= new Date().toISOString();
  }

  private settleExpired(): void {
    const now = Date.now();
    for (const p of this.projects.values()) for (const op of p.ops.values()) if (op.status !== 'DONE' && now >= op.deadline) this.finish(p, op);
  }

  private startOp(p: ProjectState, project: string, type: Op['type'], target: string, requestId: string | undefined, commit: () => void, failure?: Op['failure']): Op {
    const id = String(this.nextId++);
    const late = this.faults.lateFailure() || (this.failingOps > 0 && this.failingOps-- > 0);
    const op: Op = {
      id,
      name: `operation-${Date.now()}-${randomUUID().slice(0, 13)}-${id.slice(-8)}`,
      project,
      type,
      target,
      requestId,
      status: 'PENDING',
      pollsLeft: this.behaviour.pollsUntilDone,
      deadline: Date.now() + this.behaviour.operationMs,
      failure: failure ?? (late ? { code: 'INTERNAL_ERROR', message: 'Internal error. Please try again or contact Google Support.', http: 500, httpMessage: 'INTERNAL SERVER ERROR' } : undefined),
      commit,
      insertTime: new Date().toISOString(),
    };
    p.ops.set(op.name, op);
    p.busy.set(target, op);
    if (requestId) p.requestIds.set(requestId, op);
    this.acceptedWrites++;
    this.faults.wrote();
    this.onWriteAccepted?.(this.acceptedWrites);
    return op;
  }

  // --- validation --------------------------------------------------------------

  private parseBody(text: string): FakeFirewall {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new ApiError(400, 'parseError', 'Parse Error');
    }
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new ApiError(400, 'parseError', 'Parse Error');
    return body as FakeFirewall;
  }

  /** Validates a complete rule (after defaults and merge). Messages not confirmed verbatim are marked. */
  private validate(project: string, r: FakeFirewall): void {
    if (!r.name) throw new ApiError(400, 'required', "Required field 'resource.name' not specified");
    if (r.name.length > 63 || !NAME_RE.test(r.name)) throw invalid('resource.name', r.name, "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'");
    const prio = r.priority ?? 1000;
    if (!Number.isInteger(prio)) throw invalid('resource.priority', prio, 'Must be an integer.');
    if (prio < 0) throw invalid('resource.priority', prio, 'Must be greater than or equal to 0');
    if (prio > 65535) throw invalid('resource.priority', prio, 'Must be less than or equal to 65535');
    const dir = r.direction ?? 'INGRESS';
    if (dir !== 'INGRESS' && dir !== 'EGRESS') throw invalid('resource.direction', dir, "Must be one of 'INGRESS', 'EGRESS'.");
    if ((r.description ?? '').length > 2048) throw invalid('resource.description', `${r.description!.slice(0, 20)}…`, 'Must be at most 2048 characters.'); // wording unconfirmed
    const allowed = r.allowed ?? [];
    const denied = r.denied ?? [];
    if ((allowed.length > 0) === (denied.length > 0)) throw new ApiError(400, 'invalid', "Exactly one of 'allowed' or 'denied' must be specified."); // wording unconfirmed
    for (const [field, list] of [['allowed', allowed], ['denied', denied]] as const) {
      list.forEach((a, i) => {
        const proto = String(a.IPProtocol ?? '').toLowerCase();
        const numeric = /^\d{1,3}$/.test(proto) && Number(proto) <= 255;
        if (!PROTOCOLS.has(proto) && !numeric) throw invalid(`resource.${field}[${i}].IPProtocol`, a.IPProtocol ?? '', 'Must be a protocol name or number.');
        if ((a.ports ?? []).length > 0 && !WITH_PORTS.has(proto)) throw invalid(`resource.${field}[${i}].ports`, a.ports, 'Ports can only be specified for the tcp, udp and sctp protocols.');
      });
    }
    for (const field of ['sourceRanges', 'destinationRanges'] as const) {
      const ranges = r[field] ?? [];
      if (ranges.length > this.limits.rangesPerRule) {
        // wording unconfirmed; the limit is the VPC quotas page's "source/destination ranges per firewall rule".
        throw invalid(`resource.${field}`, `${ranges.length} ranges`, `A firewall rule can have at most ${this.limits.rangesPerRule} ${field}.`);
      }
      const families = new Set<number>();
      ranges.forEach((v, i) => {
        const p = tryParseCidr(String(v));
        if (!p) throw invalid(`resource.${field}[${i}]`, v, 'Must be a valid IPv4 or IPv6 CIDR range.');
        families.add(p.family);
      });
      // wording unconfirmed: VPC firewall rules hold IPv4 or IPv6 ranges, not both.
      if (families.size > 1) throw invalid(`resource.${field}`, ranges.slice(0, 4).join(','), 'IPv4 and IPv6 ranges cannot be mixed in one firewall rule.');
    }
    if (dir === 'EGRESS' && (r.sourceTags ?? []).length > 0) throw invalid('resource.sourceTags', r.sourceTags, 'Source tags cannot be set for EGRESS rules.');
    if ((r.targetTags ?? []).length > 0 && (r.targetServiceAccounts ?? []).length > 0) {
      throw invalid('resource.targetServiceAccounts', r.targetServiceAccounts, 'targetServiceAccounts cannot be used at the same time as targetTags or sourceTags.');
    }
    this.resolveNetwork(project, r.network ?? 'global/networks/default');
  }

  // --- routing -----------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    this.calls.total++;
    this.calls.byMethod[method] = (this.calls.byMethod[method] ?? 0) + 1;
    if (req.headers['user-agent']) this.userAgents.add(req.headers['user-agent']);
    const apiClient = req.headers['x-goog-api-client'];
    if (typeof apiClient === 'string') this.apiClients.add(apiClient);
    const url = new URL(req.url ?? '/', 'http://fake');
    const path = url.pathname;
    const routes: [string, RegExp][] = [
      ['firewalls.list', /^\/compute\/v1\/projects\/([^/]+)\/global\/firewalls$/],
      ['firewalls.one', /^\/compute\/v1\/projects\/([^/]+)\/global\/firewalls\/([^/]+)$/],
      ['globalOperations.wait', /^\/compute\/v1\/projects\/([^/]+)\/global\/operations\/([^/]+)\/wait$/],
      ['globalOperations.get', /^\/compute\/v1\/projects\/([^/]+)\/global\/operations\/([^/]+)$/],
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
    let op = route;
    if (route === 'firewalls.list' && method === 'POST') op = 'firewalls.insert';
    if (route === 'firewalls.one') op = { GET: 'firewalls.get', PATCH: 'firewalls.patch', DELETE: 'firewalls.delete', PUT: 'firewalls.update' }[method] ?? 'firewalls.unknown';
    this.calls.byOp[op] = (this.calls.byOp[op] ?? 0) + 1;
    const mutating = op === 'firewalls.insert' || op === 'firewalls.patch' || op === 'firewalls.delete';

    await this.faults.delay();
    const body = method === 'POST' || method === 'PATCH' ? await readBody(req) : '';
    try {
      if (!/^Bearer \S+/.test(req.headers.authorization ?? '')) {
        throw new ApiError(401, 'required', 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
      }
      this.bearerTokens.add(req.headers.authorization!.slice('Bearer '.length).trim());
      if (!m) throw new ApiError(404, 'notFound', `No route for ${method} ${path}.`);
      const project = decodeURIComponent(m[1]!);
      this.settleExpired();

      const scripted = mutating ? this.scripted.shift() : undefined;
      const verdict = scripted ? 'ok' : this.faults.decide(mutating);
      if (verdict === 'drop') return dropConnection(req, res);
      if (verdict === 'server_error' || scripted === 'backendError') throw new ApiError(503, 'backendError', 'Backend Error');
      if (verdict === 'throttle') throw this.throttleError(this.behaviour.throttleStyle, project);
      if (scripted === 'rateLimit403') throw this.throttleError('403', project);
      if (scripted === 'tooMany429') throw this.throttleError('429', project);
      if (scripted === 'forbidden') {
        const perm = { 'firewalls.insert': 'create', 'firewalls.patch': 'update', 'firewalls.delete': 'delete' }[op] ?? op;
        throw new ApiError(403, 'forbidden', `Required 'compute.firewalls.${perm}' permission for 'projects/${project}/global/firewalls/${m[2] ?? ''}'`);
      }

      const p = this.projects.get(project);
      if (!p) throw new ApiError(404, 'notFound', `The resource 'projects/${project}' was not found`);
      const answer = (status: number, json: unknown) => {
        // A lost answer: the request was processed, the client never hears back.
        if (scripted === 'lostAnswer') return dropConnection(req, res);
        this.send(res, status, json);
      };

      if (op === 'firewalls.list' && method === 'GET') return this.list(res, project, p, url);
      if (op === 'globalOperations.get' || op === 'globalOperations.wait') {
        if (op === 'globalOperations.get' && method !== 'GET') throw new ApiError(405, 'methodNotAllowed', `Method ${method} is not allowed.`);
        const o = p.ops.get(decodeURIComponent(m[2]!));
        if (!o) throw new ApiError(404, 'notFound', `The resource 'projects/${project}/global/operations/${m[2]}' was not found`);
        const holds = op === 'globalOperations.wait' && !this.behaviour.waitCompletes ? this.behaviour.waitHoldsMs : 0;
        if (holds > 0 && o.status !== 'DONE') await new Promise((resolve) => setTimeout(resolve, holds));
        if (holds > 0 && (res.destroyed || req.destroyed)) {
          // The client gave up on the wait before the server answered.
          this.abandonedWaits++;
          return;
        }
        this.step(p, o, op === 'globalOperations.wait' && this.behaviour.waitCompletes);
        return this.send(res, 200, this.opJson(o));
      }
      if (mutating) {
        const requestId = url.searchParams.get('requestId') ?? undefined;
        if (requestId !== undefined && (!UUID_RE.test(requestId) || /^[0-]+$/.test(requestId))) {
          throw invalid('requestId', requestId, 'The request ID must be a valid UUID with the exception that zero UUID is not supported (00000000-0000-0000-0000-000000000000).');
        }
        const seen = requestId ? p.requestIds.get(requestId) : undefined;
        if (seen) {
          // The same request again: answer with its operation, change nothing.
          this.dedupedRequests++;
          return answer(200, this.opJson(seen));
        }
      }
      if (op === 'firewalls.insert') return answer(200, this.opJson(this.insert(project, p, body, url)));
      if (op === 'firewalls.get') {
        const r = p.rules.get(decodeURIComponent(m[2]!));
        if (!r) throw new ApiError(404, 'notFound', `The resource 'projects/${project}/global/firewalls/${m[2]}' was not found`);
        return this.send(res, 200, r);
      }
      if (op === 'firewalls.patch') return answer(200, this.opJson(this.patch(project, p, decodeURIComponent(m[2]!), body, url)));
      if (op === 'firewalls.delete') return answer(200, this.opJson(this.remove(project, p, decodeURIComponent(m[2]!), url)));
      throw new ApiError(405, 'methodNotAllowed', `Method ${method} is not implemented by this fake for ${path}.`);
    } catch (err) {
      if (err instanceof ApiError) return this.sendError(res, err);
      throw err;
    }
  }

  private list(res: ServerResponse, project: string, p: ProjectState, url: URL): void {
    if (url.searchParams.has('filter')) throw new ApiError(400, 'invalid', 'fake: list filters are not implemented');
    const max = url.searchParams.has('maxResults') ? Number(url.searchParams.get('maxResults')) : 500;
    if (!Number.isInteger(max) || max < 0 || max > 500) throw invalid('maxResults', String(max), 'Must be between 0 and 500.');
    const size = Math.min(max === 0 ? 500 : max, this.behaviour.pageSize);
    const all = [...p.rules.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
    const token = url.searchParams.get('pageToken');
    const start = token ? Number(Buffer.from(token, 'base64url').toString('utf8')) : 0;
    if (!Number.isInteger(start) || start < 0) throw invalid('pageToken', token ?? '', 'Invalid page token.');
    const page = all.slice(start, start + size);
    const more = start + size < all.length;
    this.send(res, 200, {
      kind: 'compute#firewallList',
      id: `projects/${project}/global/firewalls`,
      items: page,
      ...(more ? { nextPageToken: Buffer.from(String(start + size)).toString('base64url') } : {}),
      selfLink: `${API}/projects/${project}/global/firewalls`,
    });
  }

  private insert(project: string, p: ProjectState, text: string, url: URL): Op {
    const body = this.parseBody(text);
    const { kind: _k, id: _i, creationTimestamp: _c, selfLink: _s, ...input } = body;
    const network = this.resolveNetwork(project, input.network ?? 'global/networks/default');
    const rule = this.normalise(project, { ...input, network });
    this.validate(project, rule);
    if (p.rules.has(rule.name) || p.busy.get(rule.name)?.type === 'insert') {
      throw new ApiError(409, 'alreadyExists', `The resource 'projects/${project}/global/firewalls/${rule.name}' already exists`);
    }
    const pendingInserts = [...p.busy.values()].filter((o) => o.type === 'insert' && o.status !== 'DONE').length;
    const full = p.rules.size + pendingInserts >= this.limits.rulesPerProject;
    const requestId = url.searchParams.get('requestId') ?? undefined;
    const quotaMessage = `Quota 'FIREWALLS' exceeded.  Limit: ${this.limits.rulesPerProject}.0 globally.`;
    if (full && this.behaviour.quotaStyle === 'http') throw new ApiError(403, 'quotaExceeded', quotaMessage, { domain: 'usageLimits' });
    const quota = full ? { code: 'QUOTA_EXCEEDED', message: quotaMessage, http: 403, httpMessage: 'FORBIDDEN' } : undefined;
    return this.startOp(p, project, 'insert', rule.name, requestId, () => p.rules.set(rule.name, rule), quota);
  }

  private patch(project: string, p: ProjectState, name: string, text: string, url: URL): Op {
    const current = p.rules.get(name);
    if (!current) throw new ApiError(404, 'notFound', `The resource 'projects/${project}/global/firewalls/${name}' was not found`);
    if (p.busy.has(name)) throw new ApiError(400, 'resourceNotReady', `The resource 'projects/${project}/global/firewalls/${name}' is not ready`);
    const body = this.parseBody(text);
    if (body.name !== undefined && body.name !== name) throw invalid('resource.name', body.name, 'The name of a firewall rule cannot be changed.');
    if (body.network !== undefined && this.resolveNetwork(project, body.network) !== current.network) throw invalid('resource.network', body.network, 'The network of a firewall rule cannot be changed.');
    if (body.direction !== undefined && body.direction !== current.direction) throw invalid('resource.direction', body.direction, 'The direction of a firewall rule cannot be changed.');
    // JSON merge patch: a field present replaces the stored one; output-only fields are ignored.
    const { kind: _k, id: _i, creationTimestamp: _c, selfLink: _s, ...input } = body;
    const merged: FakeFirewall = { ...structuredClone(current), ...input, name, network: current.network! };
    if (input.allowed !== undefined && input.denied === undefined) delete merged.denied;
    if (input.denied !== undefined && input.allowed === undefined) delete merged.allowed;
    const rule = this.normalise(project, { ...merged, id: current.id!, creationTimestamp: current.creationTimestamp! });
    this.validate(project, rule);
    return this.startOp(p, project, 'patch', name, url.searchParams.get('requestId') ?? undefined, () => p.rules.set(name, rule));
  }

  private remove(project: string, p: ProjectState, name: string, url: URL): Op {
    if (!p.rules.has(name)) throw new ApiError(404, 'notFound', `The resource 'projects/${project}/global/firewalls/${name}' was not found`);
    if (p.busy.has(name)) throw new ApiError(400, 'resourceNotReady', `The resource 'projects/${project}/global/firewalls/${name}' is not ready`);
    return this.startOp(p, project, 'delete', name, url.searchParams.get('requestId') ?? undefined, () => p.rules.delete(name));
  }
}

export async function startFakeCompute(opts: FakeComputeOptions = {}): Promise<FakeCompute> {
  const fake = new FakeCompute(opts);
  await fake.start();
  return fake;
}
