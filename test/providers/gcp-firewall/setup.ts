/**
 * Shared fixtures for the gcp-firewall tests: the fake Compute server, and
 * providers pointed at it with the real `FirewallsClient` and a
 * google-auth-library `OAuth2Client` holding a static token.
 */
import { OAuth2Client } from 'google-auth-library';
import { pino } from 'pino';
import { OwnershipConflictError, RetryableError } from '../../../src/core/errors.js';
import type { Ban, TargetPlan } from '../../../src/core/types.js';
import { GcpFirewallProvider, gcpFirewallConfigSchema, type GcpFirewallDeps } from '../../../src/providers/gcp-firewall/index.js';
import type { GoogleAuthClient } from '../../../src/providers/gcp-firewall/client.js';
import { startFakeCompute, type FakeCompute, type FakeComputeOptions, type FakeFirewall } from '../../fakes/gcp/compute-server.js';
import { NOW } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';

export const silentLog = pino({ level: 'silent' });

/** A real OAuth2Client with a static token: the REST transport calls its `fetch` for every request. */
export function testAuthClient(): GoogleAuthClient {
  const c = new OAuth2Client();
  c.setCredentials({ access_token: 'test-token', expiry_date: Date.now() + 3_600_000 });
  return c as unknown as GoogleAuthClient;
}

export async function startFake(opts: FakeComputeOptions = {}): Promise<FakeCompute> {
  return startFakeCompute(opts);
}

let projectCounter = 0;

/** A new project on the fake (networks `default` and `edge`), with optional foreign rules; returns its id. */
export function newProject(fake: FakeCompute, rules: FakeFirewall[] = []): string {
  const project = `cb-proj-${process.pid % 1000}-${++projectCounter}`;
  fake.seedProject(project, { networks: ['default', 'edge'], rules });
  return project;
}

/** The target config the tests use, before zod parsing. */
export function rawConfig(fake: FakeCompute, project: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    project,
    network: 'edge',
    endpoint: fake.url,
    poll_interval: '5ms',
    retry: { attempts: 4, base_delay: '5ms', max_delay: '50ms' },
    queue: { interval_cap: 10_000, interval: '1s' },
    ...over,
  };
}

export function makeProvider(fake: FakeCompute, project: string, over: Record<string, unknown> = {}, deps: GcpFirewallDeps = {}, owner = 'test'): GcpFirewallProvider {
  const cfg = gcpFirewallConfigSchema.parse(rawConfig(fake, project, over));
  return new GcpFirewallProvider(cfg, { target: 'gcp-test', owner, log: silentLog, now: () => NOW }, { authClient: testAuthClient(), ...deps });
}

/** A sleep that remembers what it was asked and returns at once (retries stay fast; Retry-After is observable). */
export function recordingSleep(): { sleep: (ms: number) => Promise<void>; delays: number[] } {
  const delays: number[] = [];
  return {
    delays,
    sleep: async (ms: number) => {
      delays.push(ms);
      await new Promise((r) => setImmediate(r));
    },
  };
}

/** Our rules on the fake (slot names of `owner`). */
export function ownedRules(fake: FakeCompute, project: string, owner = 'test'): FakeFirewall[] {
  const slot = new RegExp(`^cloud-bouncer-${owner}-\\d{3}$`);
  return fake.rules(project).filter((r) => slot.test(r.name));
}

/** Every CIDR in our rules on our side, sorted, duplicates kept (a CIDR in two rules shows twice). */
export function enforcedCidrs(fake: FakeCompute, project: string, owner = 'test', side: 'sourceRanges' | 'destinationRanges' = 'sourceRanges'): string[] {
  return ownedRules(fake, project, owner)
    .flatMap((r) => r[side] ?? [])
    .sort();
}

/** Writes (insert, patch, delete) the fake has received. */
export function writesSeen(fake: FakeCompute): number {
  const b = fake.calls.byOp;
  return (b['firewalls.insert'] ?? 0) + (b['firewalls.patch'] ?? 0) + (b['firewalls.delete'] ?? 0);
}

export function sorted(xs: Iterable<string>): string[] {
  return [...xs].sort();
}

export interface Converged {
  /** Passes run, the last one planning nothing. */
  passes: number;
  /** API calls the provider made over all of them. */
  calls: number;
  plans: TargetPlan[];
}

/** Passes until the plan is empty; a pass whose read or apply throws a retryable error still counts. */
export async function converge(provider: GcpFirewallProvider, bans: Ban[], maxPasses = 15, now = NOW): Promise<Converged> {
  const start = provider.stats().total;
  const plans: TargetPlan[] = [];
  for (let pass = 1; pass <= maxPasses; pass++) {
    let plan: TargetPlan;
    try {
      ({ plan } = await providerPass(provider, bans, { now }));
    } catch (err) {
      if (err instanceof OwnershipConflictError || !(err instanceof RetryableError)) throw err;
      // A read that failed after its retries: the next pass tries again, as the next scheduled run would.
      continue;
    }
    plans.push(plan);
    if (plan.error) throw new Error(`pass ${pass}: ${plan.error}`);
    if (plan.changes.length === 0) return { passes: pass, calls: provider.stats().total - start, plans };
  }
  throw new Error(`did not converge in ${maxPasses} passes`);
}
