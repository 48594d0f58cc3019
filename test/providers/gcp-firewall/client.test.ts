/**
 * The transport: how the real SDK's failures are classified and retried,
 * Retry-After, operation waits (bounded, failures never counted as
 * success), aborts, paging and credentials.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FatalError, QuotaExceededError, RetryableError } from '../../../src/core/errors.js';
import { classifyGoogleError } from '../../../src/providers/gcp-firewall/client.js';
import { GcpFirewallProvider, gcpFirewallConfigSchema } from '../../../src/providers/gcp-firewall/index.js';
import type { FakeCompute } from '../../fakes/gcp/compute-server.js';
import { NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import { enforcedCidrs, makeProvider, newProject, rawConfig, recordingSleep, silentLog, startFake, writesSeen } from './setup.js';

let fake: FakeCompute;

beforeAll(async () => {
  fake = await startFake();
});

beforeEach(() => {
  fake.reset();
  fake.settle();
  fake.resetCounters();
});

afterAll(async () => {
  await fake.close();
});

/** What google-gax throws for an HTTP error (REST transport), with its raw body attached as gax does. */
function gaxError(status: number, reason: string | undefined, message = 'x', grpcCode = 2): Error {
  const e = Object.assign(new Error(message), { code: grpcCode, httpStatusCode: status });
  const body = JSON.stringify({ error: { code: status, message, errors: reason ? [{ message, domain: 'global', reason }] : [] } });
  Object.defineProperty(e, Symbol.for('google-gax.rawHttpResponsePayload'), { value: body });
  return e;
}

describe('providers/gcp-firewall/client: classifyGoogleError', () => {
  const cases: [string, unknown, { insert?: boolean }, string, string | undefined][] = [
    ['403 rateLimitExceeded', gaxError(403, 'rateLimitExceeded'), {}, 'RetryableError', 'rateLimitExceeded'],
    ['403 userRateLimitExceeded', gaxError(403, 'userRateLimitExceeded'), {}, 'RetryableError', 'userRateLimitExceeded'],
    ['403 "Rate Limit Exceeded" without a body', Object.assign(new Error('Rate Limit Exceeded'), { code: 7, httpStatusCode: 403 }), {}, 'RetryableError', 'rateLimitExceeded'],
    ['429', gaxError(429, undefined, 'Too Many Requests'), {}, 'RetryableError', '429'],
    ['503 backendError', gaxError(503, 'backendError'), {}, 'RetryableError', 'backendError'],
    ['400 resourceNotReady', gaxError(400, 'resourceNotReady'), {}, 'RetryableError', 'resourceNotReady'],
    ['a timeout (DEADLINE_EXCEEDED, no answer)', Object.assign(new Error('Deadline exceeded'), { code: 4 }), {}, 'RetryableError', 'timeout'],
    ['a dropped connection (UNAVAILABLE, no answer)', Object.assign(new Error('socket hang up'), { code: 14 }), {}, 'RetryableError', 'network'],
    ['403 quotaExceeded on an insert', gaxError(403, 'quotaExceeded', "Quota 'FIREWALLS' exceeded.  Limit: 100.0 globally."), { insert: true }, 'QuotaExceededError', 'QUOTA_EXCEEDED'],
    ['403 quotaExceeded on another call', gaxError(403, 'quotaExceeded'), {}, 'RetryableError', 'quotaExceeded'],
    ['403 forbidden', gaxError(403, 'forbidden', "Required 'compute.firewalls.create' permission"), {}, 'FatalError', 'forbidden'],
    ['401', gaxError(401, 'required'), {}, 'FatalError', 'required'],
    ['400 invalid', gaxError(400, 'invalid'), {}, 'FatalError', 'invalid'],
    ['409 alreadyExists', gaxError(409, 'alreadyExists'), {}, 'FatalError', 'alreadyExists'],
    ['an error without a transport code', new Error('boom'), {}, 'FatalError', 'unknown'],
    ['a credential the token endpoint refuses', Object.assign(new Error('invalid_grant: Invalid JWT Signature.'), { code: 14 }), {}, 'FatalError', 'auth'],
  ];
  for (const [what, err, opts, name, code] of cases) {
    it(`classifies ${what} as ${name}`, () => {
      const c = classifyGoogleError(err, 'call', opts);
      expect(c.name).toBe(name);
      expect(c.code).toBe(code);
      expect(c.cause).toBe(err);
    });
  }

  it('points a permission error at the IAM README', () => {
    expect(classifyGoogleError(gaxError(403, 'forbidden'), 'insert rule x').message).toMatch(/not authorised .*deploy\/iam\/README-gcp\.md/);
  });
});

describe('providers/gcp-firewall/client: retries with the real SDK', () => {
  for (const [kind, code] of [
    ['rateLimit403', 'rateLimitExceeded'],
    ['tooMany429', 'rateLimitExceeded'],
    ['backendError', 'backendError'],
  ] as const) {
    it(`retries a write answered ${kind} and then succeeds`, async () => {
      const project = newProject(fake);
      const { sleep, delays } = recordingSleep();
      const provider = makeProvider(fake, project, {}, { sleep });
      fake.failNext(1, kind);
      const { result } = await providerPass(provider, [ban('192.0.2.1')]);
      expect(result!.outcomes.map((o) => o.status)).toEqual(['applied']);
      expect(fake.calls.byOp['firewalls.insert']).toBe(2);
      expect(delays).toHaveLength(1);
      expect(provider.stats().errors).toEqual({ [code]: 1 });
    });
  }

  it('waits at least the Retry-After of a 429 before trying again', async () => {
    const project = newProject(fake);
    const { sleep, delays } = recordingSleep();
    const provider = makeProvider(fake, project, {}, { sleep });
    fake.setBehaviour({ retryAfterSec: 7 });
    fake.failNext(1, 'tooMany429');
    await providerPass(provider, [ban('192.0.2.1')]);
    expect(delays).toHaveLength(1);
    expect(delays[0]).toBeGreaterThanOrEqual(7000);
  });

  it('gives up after the configured attempts and leaves the write to the next pass', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { retry: { attempts: 3, base_delay: '1ms', max_delay: '1ms' } }, { sleep: recordingSleep().sleep });
    fake.failNext(3, 'rateLimit403');
    const first = await providerPass(provider, [ban('192.0.2.1')]);
    const second = await providerPass(provider, [ban('192.0.2.1')]);
    expect(first.result!.outcomes[0]).toMatchObject({ status: 'failed', error: expect.any(RetryableError) });
    expect(second.result!.outcomes.map((o) => o.status)).toEqual(['applied']);
    expect(fake.calls.byOp['firewalls.insert']).toBe(4);
  });

  it('does not retry a missing permission: the write fails with a fatal error', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project);
    fake.failNext(1, 'forbidden');
    const { result } = await providerPass(provider, [ban('192.0.2.1')]);
    expect(result!.outcomes[0]!.status).toBe('failed');
    expect(result!.outcomes[0]!.error).toBeInstanceOf(FatalError);
    expect((result!.outcomes[0]!.error as Error).message).toMatch(/Required 'compute\.firewalls\.create' permission/);
    expect(fake.calls.byOp['firewalls.insert']).toBe(1);
  });

  it('does not retry a rule the API refuses as invalid (more ranges than the API allows per rule)', async () => {
    const project = newProject(fake);
    fake.setLimits({ rangesPerRule: 2 });
    const provider = makeProvider(fake, project, { ranges_per_rule: 3 });
    const { result } = await providerPass(provider, [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3')]);
    fake.setLimits({ rangesPerRule: 5000 });
    expect(result!.outcomes[0]).toMatchObject({ status: 'failed', error: expect.any(FatalError) });
    expect((result!.outcomes[0]!.error as FatalError).code).toBe('invalid');
    expect(fake.calls.byOp['firewalls.insert']).toBe(1);
  });
});

describe('providers/gcp-firewall/client: operations', () => {
  it('never counts a write whose operation ended with an error as applied, and the next pass repairs it', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 1 });
    fake.setFaults({ lateFailureRate: 1 });
    const failed = await providerPass(provider, [ban('192.0.2.1'), ban('192.0.2.2')]);
    fake.setFaults({});
    const repaired = await providerPass(provider, [ban('192.0.2.1'), ban('192.0.2.2')]);
    expect(failed.result!.outcomes.map((o) => o.status)).toEqual(['failed', 'failed']);
    for (const o of failed.result!.outcomes) {
      expect(o.error).toBeInstanceOf(RetryableError);
      expect((o.error as RetryableError).code).toBe('operation:INTERNAL_ERROR');
      expect((o.error as Error).message).toMatch(/ended with an error: INTERNAL_ERROR: Internal error.*\(HTTP 500\)/);
    }
    expect(provider.stats().errors['operation:INTERNAL_ERROR']).toBe(2);
    expect(repaired.result!.outcomes.map((o) => o.status)).toEqual(['applied', 'applied']);
    expect(enforcedCidrs(fake, project)).toEqual(['192.0.2.1/32', '192.0.2.2/32']);
  });

  it('polls an operation that a wait leaves RUNNING until DONE, and gives up (retryable) at operation_timeout', async () => {
    const project = newProject(fake);
    // Each wait advances one step, as a server-side wait that ran out of time would.
    fake.setBehaviour({ waitCompletes: false, pollsUntilDone: 3, operationMs: 60_000 });
    const patient = makeProvider(fake, project);
    const ok = await providerPass(patient, [ban('192.0.2.1')]);
    const waitsForOne = fake.calls.byOp['globalOperations.wait'];
    fake.setBehaviour({ pollsUntilDone: 1_000_000 });
    const hasty = makeProvider(fake, project, { operation_timeout: '400ms', poll_interval: '20ms' });
    const timedOut = await providerPass(hasty, [ban('192.0.2.1'), ban('192.0.2.2')]);
    expect(ok.result!.outcomes.map((o) => o.status)).toEqual(['applied']);
    expect(waitsForOne).toBe(3);
    expect(timedOut.result!.outcomes[0]).toMatchObject({ status: 'failed', error: expect.any(RetryableError) });
    expect((timedOut.result!.outcomes[0]!.error as RetryableError).code).toBe('OperationTimeout');
  });

  it('cuts a long-polling wait at operation_timeout and reports OperationTimeout, without retrying the cut wait', async () => {
    const project = newProject(fake);
    // The server holds each wait far longer than the provider's budget, as a real 2-minute long poll can.
    fake.setBehaviour({ waitCompletes: false, waitHoldsMs: 3_000, pollsUntilDone: 1_000_000, operationMs: 60_000 });
    const provider = makeProvider(fake, project, { operation_timeout: '300ms', poll_interval: '20ms' });
    const before = fake.calls.byOp['globalOperations.wait'] ?? 0;
    const abandonedBefore = fake.abandonedWaits;
    const { result } = await providerPass(provider, [ban('192.0.2.1')]);
    // The server sees the client hang up on its held wait (after the pass, so give its timer time to fire).
    await new Promise((r) => setTimeout(r, 3_200));
    expect(result!.outcomes[0]).toMatchObject({ status: 'failed', error: expect.any(RetryableError) });
    expect((result!.outcomes[0]!.error as RetryableError).code).toBe('OperationTimeout');
    expect((result!.outcomes[0]!.error as Error).message).toMatch(/is still (PENDING|RUNNING) after 300 ms/);
    expect((fake.calls.byOp['globalOperations.wait'] ?? 0) - before).toBe(1);
    // The provider cut the wait at its own deadline: it did not sit through the server's hold.
    expect(fake.abandonedWaits - abandonedBefore).toBe(1);
  });

  it('starts no write after an abort and lets the one in flight finish', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 1, queue: { concurrency: 1, interval_cap: 100, interval: '1s' } });
    const controller = new AbortController();
    fake.onWriteAccepted = (n) => {
      if (n === 2) controller.abort();
    };
    const { result } = await providerPass(provider, [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3'), ban('192.0.2.4')], { signal: controller.signal });
    expect(result!.outcomes.map((o) => o.status)).toEqual(['applied', 'applied', 'skipped', 'skipped']);
    expect(result!.outcomes.filter((o) => o.status === 'skipped').every((o) => o.skipReason === 'aborted')).toBe(true);
    expect(ownedRulesCount(project)).toBe(2);
  });

  it('reports an insert refused for quota as a QuotaExceededError and tries no further insert in that apply', async () => {
    const project = newProject(fake, [{ name: 'x-1', network: 'global/networks/edge', allowed: [{ IPProtocol: 'tcp' }], sourceRanges: ['10.0.0.0/8'] }]);
    fake.setLimits({ rulesPerProject: 1 });
    const provider = makeProvider(fake, project, { ranges_per_rule: 1, queue: { concurrency: 1, interval_cap: 100, interval: '1s' } });
    const { result } = await providerPass(provider, [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3')]);
    fake.setLimits({ rulesPerProject: 500 });
    expect(result!.outcomes.map((o) => o.status)).toEqual(['failed', 'failed', 'failed']);
    for (const o of result!.outcomes) expect(o.error).toBeInstanceOf(QuotaExceededError);
    expect(fake.calls.byOp['firewalls.insert']).toBe(1);
  });
});

function ownedRulesCount(project: string): number {
  return fake.rules(project).filter((r) => r.name.startsWith('cloud-bouncer-test-')).length;
}

describe('providers/gcp-firewall/client: reads and credentials', () => {
  it('reads every page of a long rule list', async () => {
    const foreign = Array.from({ length: 7 }, (_, i) => ({ name: `allow-${i}`, network: 'global/networks/edge', allowed: [{ IPProtocol: 'tcp' }], sourceRanges: ['10.0.0.0/8'] }));
    const project = newProject(fake, foreign);
    fake.setBehaviour({ pageSize: 3 });
    const provider = makeProvider(fake, project);
    await providerPass(provider, [ban('192.0.2.1')]);
    fake.resetCounters();
    const state = await provider.read();
    expect(state.foreign).toHaveLength(7);
    expect(state.rules).toHaveLength(1);
    expect(fake.calls.byOp['firewalls.list']).toBe(3);
    expect(provider.stats().reads).toBeGreaterThanOrEqual(3);
  });

  it('fails with a fatal error, touching nothing, when Application Default Credentials are not usable', async () => {
    const project = newProject(fake);
    const saved = process.env.GOOGLE_APPLICATION_CREDENTIALS;
    process.env.GOOGLE_APPLICATION_CREDENTIALS = '/nonexistent/cloud-bouncer-test-credentials.json';
    try {
      const cfg = gcpFirewallConfigSchema.parse(rawConfig(fake, project));
      // No injected auth client: the library's ADC chain runs, and finds the configured file missing.
      const provider = new GcpFirewallProvider(cfg, { target: 'gcp-adc', owner: 'test', log: silentLog, now: () => NOW });
      const err = await provider.read().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(FatalError);
      expect((err as FatalError).code).toBe('auth');
      expect((err as Error).message).toMatch(/no usable Google credential .*GOOGLE_APPLICATION_CREDENTIALS/);
      expect(fake.calls.total).toBe(0);
      expect(writesSeen(fake)).toBe(0);
    } finally {
      if (saved === undefined) delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
      else process.env.GOOGLE_APPLICATION_CREDENTIALS = saved;
    }
  });
});
