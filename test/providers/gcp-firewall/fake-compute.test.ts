/**
 * The fake Compute server on the wire: shapes, operations, validation,
 * idempotency and faults, spoken to with plain HTTP. The shapes are checked
 * against the message and method definitions `@google-cloud/compute` ships
 * (build/protos/protos.json, generated from the Compute v1 discovery
 * document), so the fake cannot answer a field the real API does not have.
 */
import { createRequire } from 'node:module';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { FakeCompute, FakeFirewall } from '../../fakes/gcp/compute-server.js';
import { newProject, startFake } from './setup.js';

interface ProtoMessage {
  fields: Record<string, { type: string; rule?: string }>;
  nested?: Record<string, unknown>;
}
interface ProtoService {
  methods: Record<string, { options: Record<string, string> }>;
}

const require = createRequire(import.meta.url);
const protos = require('@google-cloud/compute/build/protos/protos.json') as { nested: Record<string, { nested: Record<string, unknown> }> };
const v1 = (protos.nested.google!.nested.cloud as { nested: { compute: { nested: { v1: { nested: Record<string, unknown> } } } } }).nested.compute.nested.v1.nested;
const message = (name: string) => v1[name] as ProtoMessage;
const SCALARS = new Set(['string', 'bool', 'int32', 'uint32', 'int64', 'uint64', 'double', 'float']);

/** Every key of `value`, at any depth, is a field of `type` in the Compute v1 protos. */
function expectShape(value: unknown, type: string, path = type): void {
  const m = message(type);
  expect(m, `${path}: no message ${type}`).toBeDefined();
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const f = m.fields[k];
    expect(f, `${path}.${k} is not a field of ${type}`).toBeDefined();
    const items = f!.rule === 'repeated' ? (v as unknown[]) : [v];
    expect(Array.isArray(v), `${path}.${k}: repeated is ${f!.rule === 'repeated'}`).toBe(f!.rule === 'repeated');
    const enumType = m.nested?.[f!.type] as { values?: Record<string, number> } | undefined;
    for (const item of items) {
      if (enumType?.values) {
        expect(Object.keys(enumType.values), `${path}.${k}`).toContain(item);
      } else if (SCALARS.has(f!.type)) {
        const want = f!.type === 'bool' ? 'boolean' : /int32|double|float/.test(f!.type) ? 'number' : 'string';
        expect(typeof item, `${path}.${k}`).toBe(want);
      } else {
        expectShape(item, f!.type, `${path}.${k}`);
      }
    }
  }
}

let fake: FakeCompute;

beforeAll(async () => {
  fake = await startFake();
});

beforeEach(() => {
  fake.reset();
  fake.resetCounters();
});

afterAll(async () => {
  await fake.close();
});

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown> & { error?: { code: number; message: string; errors: { message: string; domain: string; reason: string }[]; status: string } };
}

async function call(method: string, path: string, body?: unknown, auth = true): Promise<Answer> {
  const res = await fetch(`${fake.url}/compute/v1${path}`, {
    method,
    headers: { ...(auth ? { authorization: 'Bearer t' } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Answer['body']) : {} };
}

const RID = () => crypto.randomUUID();
const deny = (name: string, ranges: string[], over: Partial<FakeFirewall> = {}): FakeFirewall => ({ name, network: 'global/networks/edge', denied: [{ IPProtocol: 'all' }], sourceRanges: ranges, ...over });

describe('fake compute: shapes', () => {
  it('serves exactly the paths and verbs of the Firewalls and GlobalOperations methods the provider uses', () => {
    const fw = (v1.Firewalls as ProtoService).methods;
    const ops = (v1.GlobalOperations as ProtoService).methods;
    expect(fw.List!.options['(google.api.http).get']).toBe('/compute/v1/projects/{project}/global/firewalls');
    expect(fw.Insert!.options['(google.api.http).post']).toBe('/compute/v1/projects/{project}/global/firewalls');
    expect(fw.Get!.options['(google.api.http).get']).toBe('/compute/v1/projects/{project}/global/firewalls/{firewall}');
    expect(fw.Patch!.options['(google.api.http).patch']).toBe('/compute/v1/projects/{project}/global/firewalls/{firewall}');
    expect(fw.Delete!.options['(google.api.http).delete']).toBe('/compute/v1/projects/{project}/global/firewalls/{firewall}');
    expect(ops.Get!.options['(google.api.http).get']).toBe('/compute/v1/projects/{project}/global/operations/{operation}');
    expect(ops.Wait!.options['(google.api.http).post']).toBe('/compute/v1/projects/{project}/global/operations/{operation}/wait');
    expect(Object.keys((message('Operation').nested!.Status as { values: Record<string, number> }).values).sort()).toEqual(['DONE', 'PENDING', 'RUNNING', 'UNDEFINED_STATUS']);
  });

  it('answers rules, lists and operations (failed ones included) with fields of the Compute v1 messages only', async () => {
    const project = newProject(fake, [{ name: 'allow-web', network: 'global/networks/edge', allowed: [{ IPProtocol: 'tcp', ports: ['80', '443'] }], sourceRanges: ['0.0.0.0/0'], targetTags: ['web'], description: 'web' }]);
    fake.setFaults({ lateFailureRate: 1 });
    const insert = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-1', ['192.0.2.0/24'], { logConfig: { enable: true }, priority: 900 }));
    const failed = await call('POST', `/projects/${project}/global/operations/${insert.body.name as string}/wait`);
    fake.setFaults({});
    await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-2', ['2001:db8::/64'], { direction: 'INGRESS' }));
    fake.settle();
    const list = await call('GET', `/projects/${project}/global/firewalls`);
    const one = await call('GET', `/projects/${project}/global/firewalls/cb-2`);
    expectShape(insert.body, 'Operation');
    expectShape(failed.body, 'Operation');
    expectShape(list.body, 'FirewallList');
    expectShape(one.body, 'Firewall');
    expect(failed.body).toMatchObject({ status: 'DONE', httpErrorStatusCode: 500, error: { errors: [{ code: 'INTERNAL_ERROR' }] } });
    expect(insert.body).toMatchObject({ kind: 'compute#operation', status: 'PENDING', operationType: 'insert' });
    expect((list.body.items as FakeFirewall[]).map((r) => r.name)).toEqual(['allow-web', 'cb-2']);
    expect(one.body).toMatchObject({ kind: 'compute#firewall', network: `https://www.googleapis.com/compute/v1/projects/${project}/global/networks/edge`, priority: 1000, direction: 'INGRESS' });
  });

  it("answers errors in Google's JSON shape", async () => {
    const project = newProject(fake);
    const missing = await call('GET', `/projects/${project}/global/firewalls/nope`);
    const anonymous = await call('GET', `/projects/${project}/global/firewalls`, undefined, false);
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({
      error: {
        code: 404,
        message: `The resource 'projects/${project}/global/firewalls/nope' was not found`,
        errors: [{ message: `The resource 'projects/${project}/global/firewalls/nope' was not found`, domain: 'global', reason: 'notFound' }],
        status: 'NOT_FOUND',
      },
    });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error).toMatchObject({ code: 401, errors: [{ reason: 'required' }], status: 'UNAUTHENTICATED' });
  });
});

describe('fake compute: operations', () => {
  it('moves an operation PENDING → RUNNING → DONE, one step per get, and makes the change only when DONE', async () => {
    const project = newProject(fake);
    const op = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-1', ['192.0.2.1/32']));
    const visibleWhilePending = (await call('GET', `/projects/${project}/global/firewalls`)).body.items;
    const polls = [];
    for (let i = 0; i < 3; i++) polls.push((await call('GET', `/projects/${project}/global/operations/${op.body.name as string}`)).body.status);
    const after = (await call('GET', `/projects/${project}/global/firewalls`)).body.items as FakeFirewall[];
    expect(op.body.status).toBe('PENDING');
    expect(visibleWhilePending).toEqual([]);
    expect(polls).toEqual(['RUNNING', 'DONE', 'DONE']);
    expect(after.map((r) => r.name)).toEqual(['cb-1']);
  });

  it('wait drives an operation to DONE; an operation ending with an error changes nothing', async () => {
    const project = newProject(fake);
    const ok = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-1', ['192.0.2.1/32']));
    const waited = await call('POST', `/projects/${project}/global/operations/${ok.body.name as string}/wait`);
    fake.setFaults({ lateFailureRate: 1 });
    const bad = await call('PATCH', `/projects/${project}/global/firewalls/cb-1?requestId=${RID()}`, { sourceRanges: ['198.51.100.1/32'] });
    const failed = await call('POST', `/projects/${project}/global/operations/${bad.body.name as string}/wait`);
    expect(waited.body).toMatchObject({ status: 'DONE', progress: 100 });
    expect(waited.body.error).toBeUndefined();
    expect(failed.body).toMatchObject({ status: 'DONE', error: { errors: [{ code: 'INTERNAL_ERROR' }] }, httpErrorStatusCode: 500, httpErrorMessage: 'INTERNAL SERVER ERROR' });
    expect(fake.rules(project)[0]!.sourceRanges).toEqual(['192.0.2.1/32']);
    expect(fake.lateFailures).toBe(1);
  });

  it('answers a repeated requestId with the first operation and applies nothing again; refuses a zero UUID', async () => {
    const project = newProject(fake);
    const id = RID();
    const first = await call('POST', `/projects/${project}/global/firewalls?requestId=${id}`, deny('cb-1', ['192.0.2.1/32']));
    const again = await call('POST', `/projects/${project}/global/firewalls?requestId=${id}`, deny('cb-1', ['192.0.2.1/32']));
    const zero = await call('POST', `/projects/${project}/global/firewalls?requestId=00000000-0000-0000-0000-000000000000`, deny('cb-2', ['192.0.2.2/32']));
    fake.settle();
    expect(again.status).toBe(200);
    expect(again.body.name).toBe(first.body.name);
    expect(again.body.clientOperationId).toBe(id);
    expect(fake.dedupedRequests).toBe(1);
    expect(fake.acceptedWrites).toBe(1);
    expect(zero.status).toBe(400);
    expect(fake.rules(project).map((r) => r.name)).toEqual(['cb-1']);
  });

  it('refuses a second write to a rule while its operation runs (resourceNotReady)', async () => {
    const project = newProject(fake, [deny('cb-1', ['192.0.2.1/32'])]);
    fake.setBehaviour({ operationMs: 60_000 });
    await call('PATCH', `/projects/${project}/global/firewalls/cb-1?requestId=${RID()}`, { sourceRanges: ['192.0.2.2/32'] });
    const busy = await call('DELETE', `/projects/${project}/global/firewalls/cb-1?requestId=${RID()}`);
    expect(busy.status).toBe(400);
    expect(busy.body.error!.errors[0]!.reason).toBe('resourceNotReady');
  });
});

describe('fake compute: validation and limits', () => {
  const cases: [string, FakeFirewall, number, RegExp][] = [
    ['a name with an upper-case letter', deny('Cb-1', ['192.0.2.1/32']), 400, /resource\.name.*Must be a match of regex/],
    ['a name of 64 characters', deny(`a${'b'.repeat(63)}`, ['192.0.2.1/32']), 400, /resource\.name/],
    ['a name ending with a dash', deny('cb-', ['192.0.2.1/32']), 400, /resource\.name/],
    ['priority 65536', deny('cb-1', ['192.0.2.1/32'], { priority: 65536 }), 400, /resource\.priority.*less than or equal to 65535/],
    ['priority -1', deny('cb-1', ['192.0.2.1/32'], { priority: -1 }), 400, /resource\.priority.*greater than or equal to 0/],
    ['IPv4 and IPv6 in one rule', deny('cb-1', ['192.0.2.1/32', '2001:db8::1/128']), 400, /cannot be mixed/],
    ['both allowed and denied', deny('cb-1', ['192.0.2.1/32'], { allowed: [{ IPProtocol: 'tcp' }] }), 400, /Exactly one of 'allowed' or 'denied'/],
    ['ports on protocol all', deny('cb-1', ['192.0.2.1/32'], { denied: [{ IPProtocol: 'all', ports: ['22'] }] }), 400, /ports/],
    ['a range that is not a CIDR', deny('cb-1', ['192.0.2.300/32']), 400, /sourceRanges\[0\]/],
    ['an unknown network', deny('cb-1', ['192.0.2.1/32'], { network: 'global/networks/nowhere' }), 404, /networks\/nowhere' was not found/],
    ['target tags and target service accounts', deny('cb-1', ['192.0.2.1/32'], { targetTags: ['a'], targetServiceAccounts: ['sa@p.iam.gserviceaccount.com'] }), 400, /targetServiceAccounts/],
  ];
  for (const [what, body, status, message] of cases) {
    it(`refuses ${what}`, async () => {
      const project = newProject(fake);
      const res = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, body);
      expect(res.status).toBe(status);
      expect(res.body.error!.message).toMatch(message);
      expect(fake.rules(project)).toEqual([]);
    });
  }

  it('enforces the ranges-per-rule limit (configurable; 5000 by default)', async () => {
    const project = newProject(fake);
    const ranges = (n: number) => Array.from({ length: n }, (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32`);
    const atLimit = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-1', ranges(5000)));
    const over = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-2', ranges(5001)));
    fake.setLimits({ rangesPerRule: 256 });
    const overLowered = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-3', ranges(257)));
    fake.setLimits({ rangesPerRule: 5000 });
    expect(atLimit.status).toBe(200);
    expect(over.status).toBe(400);
    expect(overLowered.status).toBe(400);
    expect(overLowered.body.error!.message).toMatch(/at most 256 sourceRanges/);
  });

  it('answers 409 alreadyExists for a taken name (a pending insert included) and refuses to change a name or network by PATCH', async () => {
    const project = newProject(fake, [deny('cb-1', ['192.0.2.1/32'])]);
    fake.setBehaviour({ operationMs: 60_000 });
    const taken = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-1', ['192.0.2.9/32']));
    await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-2', ['192.0.2.2/32']));
    const pending = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-2', ['192.0.2.3/32']));
    const rename = await call('PATCH', `/projects/${project}/global/firewalls/cb-1?requestId=${RID()}`, { name: 'cb-9' });
    const move = await call('PATCH', `/projects/${project}/global/firewalls/cb-1?requestId=${RID()}`, { network: 'global/networks/default' });
    expect([taken.status, pending.status]).toEqual([409, 409]);
    expect(taken.body.error!.errors[0]!.reason).toBe('alreadyExists');
    expect([rename.status, move.status]).toEqual([400, 400]);
  });

  it("enforces the project's rule quota with 403 quotaExceeded, or an operation ending QUOTA_EXCEEDED", async () => {
    const project = newProject(fake, [deny('cb-1', ['192.0.2.1/32'])]);
    fake.setLimits({ rulesPerProject: 1 });
    const refused = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-2', ['192.0.2.2/32']));
    fake.setBehaviour({ quotaStyle: 'operation' });
    const op = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-2', ['192.0.2.2/32']));
    const done = await call('POST', `/projects/${project}/global/operations/${op.body.name as string}/wait`);
    fake.setLimits({ rulesPerProject: 500 });
    expect(refused.status).toBe(403);
    expect(refused.body.error).toMatchObject({ code: 403, message: "Quota 'FIREWALLS' exceeded.  Limit: 1.0 globally.", errors: [{ domain: 'usageLimits', reason: 'quotaExceeded' }] });
    expect(done.body).toMatchObject({ status: 'DONE', httpErrorStatusCode: 403, error: { errors: [{ code: 'QUOTA_EXCEEDED' }] } });
    expect(fake.rules(project).map((r) => r.name)).toEqual(['cb-1']);
  });

  it('pages lists with maxResults and nextPageToken', async () => {
    const project = newProject(fake, ['a-1', 'a-2', 'a-3', 'a-4', 'a-5'].map((n) => deny(n, ['192.0.2.1/32'])));
    const names: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const res = await call('GET', `/projects/${project}/global/firewalls?maxResults=2${token ? `&pageToken=${token}` : ''}`);
      names.push(...(res.body.items as FakeFirewall[]).map((r) => r.name));
      token = res.body.nextPageToken as string | undefined;
      pages++;
    } while (token);
    const tooMany = await call('GET', `/projects/${project}/global/firewalls?maxResults=501`);
    expect(names).toEqual(['a-1', 'a-2', 'a-3', 'a-4', 'a-5']);
    expect(pages).toBe(3);
    expect(tooMany.status).toBe(400);
  });
});

describe('fake compute: faults', () => {
  it('throttles writes with 403 rateLimitExceeded or 429 (with Retry-After when set), at the configured rate', async () => {
    const project = newProject(fake);
    fake.setBehaviour({ retryAfterSec: 3 });
    fake.setFaults({ throttleRate: 1, seed: 3 });
    const answers = [];
    for (let i = 0; i < 12; i++) answers.push(await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny(`cb-${i}`, ['192.0.2.1/32'])));
    const read = await call('GET', `/projects/${project}/global/firewalls`);
    const statuses = new Set(answers.map((a) => a.status));
    expect(statuses).toEqual(new Set([403, 429]));
    for (const a of answers) expect(a.body.error!.errors[0]).toMatchObject({ reason: 'rateLimitExceeded', domain: 'usageLimits' });
    for (const a of answers.filter((x) => x.status === 429)) expect(a.headers.get('retry-after')).toBe('3');
    expect(read.status).toBe(200);
    expect(fake.rules(project)).toEqual([]);
  });

  it('drops every connection after failAfterWrites accepted writes', async () => {
    const project = newProject(fake);
    fake.setFaults({ failAfterWrites: 1 });
    const first = await call('POST', `/projects/${project}/global/firewalls?requestId=${RID()}`, deny('cb-1', ['192.0.2.1/32']));
    const second = call('GET', `/projects/${project}/global/firewalls`);
    expect(first.status).toBe(200);
    await expect(second).rejects.toThrow();
  });
});
