/**
 * The behaviours of issue 5, shown with the real `NetworkManagementClient`
 * against the fake ARM server over TLS. Figures (calls per pass, passes to
 * converge) are printed with a `[azure-nsg]` prefix.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { bansFromRules } from '../../../src/core/desired.js';
import { parseMarker } from '../../../src/core/marker.js';
import { planTarget } from '../../../src/core/plan.js';
import { WriteBudget } from '../../../src/core/queue.js';
import { OwnershipConflictError } from '../../../src/core/errors.js';
import { tryParseCidr } from '../../../src/core/cidr.js';
import type { Ban, TargetPlan } from '../../../src/core/types.js';
import type { AzureNsgProvider } from '../../../src/providers/azure-nsg/index.js';
import { HOUR, NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import type { FakeRule } from '../../fakes/azure/arm-server.js';
import {
  RG,
  bundleChild,
  enforcedCidrs,
  makeProvider,
  newNsg,
  ownedRules,
  rawConfig,
  recordingSleep,
  runChild,
  startFake,
  writesSeen,
  type Env,
} from './setup.js';

let env: Env;
let child: string;

beforeAll(async () => {
  env = await startFake();
  child = await bundleChild();
});

beforeEach(() => {
  env.fake.reset();
  env.fake.settle();
  env.fake.resetCounters();
});

afterAll(async () => {
  await env.close();
  rmSync(child, { force: true });
});

function report(line: string): void {
  console.log(`[azure-nsg] ${line}`);
}

function sorted(xs: Iterable<string>): string[] {
  return [...xs].sort();
}

/** Our rules are well formed: Deny, all protocols and ports, one family, marker within 140 chars, priority in band matching the name. */
function expectWellFormed(rules: FakeRule[], band = { start: 100, end: 199 }, direction: 'Inbound' | 'Outbound' = 'Inbound'): void {
  const priorities = new Set<number>();
  for (const r of rules) {
    expect(r.access).toBe('Deny');
    expect(r.protocol).toBe('*');
    expect(r.direction).toBe(direction);
    expect([r.sourcePortRange, r.destinationPortRange]).toEqual(['*', '*']);
    const cidrs = direction === 'Inbound' ? r.sourceAddressPrefixes! : r.destinationAddressPrefixes!;
    expect(direction === 'Inbound' ? r.destinationAddressPrefix : r.sourceAddressPrefix).toBe('*');
    expect(new Set(cidrs.map((c) => tryParseCidr(c)!.family)).size).toBe(1);
    expect(r.description!.length).toBeLessThanOrEqual(140);
    expect(parseMarker(r.description)?.owner).toBe('test');
    expect(r.priority).toBeGreaterThanOrEqual(band.start);
    expect(r.priority).toBeLessThanOrEqual(band.end);
    expect(r.name).toBe(`cloud-bouncer-test-${String(r.priority).padStart(4, '0')}`);
    priorities.add(r.priority!);
  }
  expect(priorities.size).toBe(rules.length);
}

/** Passes until the plan is empty (a pass whose apply throws still counts). */
async function converge(provider: AzureNsgProvider, bans: Ban[], maxPasses = 15, now = NOW): Promise<{ passes: number; calls: number; plans: TargetPlan[] }> {
  const start = provider.stats().total;
  const plans: TargetPlan[] = [];
  for (let pass = 1; pass <= maxPasses; pass++) {
    try {
      const { plan } = await providerPass(provider, bans, { now });
      plans.push(plan);
      if (plan.error) throw new Error(plan.error);
      if (plan.changes.length === 0) return { passes: pass, calls: provider.stats().total - start, plans };
    } catch (err) {
      if (err instanceof OwnershipConflictError) throw err;
      // A read that failed after its retries: the next pass tries again, as the next scheduled run would.
    }
  }
  throw new Error(`did not converge in ${maxPasses} passes`);
}

describe('providers/azure-nsg: behaviour 1 (apply, then a steady state)', () => {
  it('enforces IPv4 and IPv6 bans as Deny rules holding exactly those prefixes, one family per rule; the second pass writes nothing', async () => {
    // Prepare
    const web = { name: 'allow-https', access: 'Allow', direction: 'Inbound', priority: 300, protocol: 'Tcp', sourcePortRange: '*', destinationPortRange: '443', sourceAddressPrefix: 'Internet', destinationAddressPrefix: '*' };
    const nsg = newNsg(env, [web]);
    const provider = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 3 });
    const bans = [ban('192.0.2.1'), ban('192.0.2.2'), ban('198.51.100.0/24'), ban('203.0.113.9'), ban('203.0.113.10'), ban('2001:db8::1'), ban('2001:db8:1::/64')];
    // Act
    const first = await providerPass(provider, bans);
    const firstCalls = provider.stats().total;
    const writesAfterFirst = writesSeen(env);
    const second = await providerPass(provider, bans);
    // Assess
    expect(first.result!.outcomes.map((o) => o.status)).toEqual(first.plan.changes.map(() => 'applied'));
    const ours = ownedRules(env, nsg);
    expect(ours).toHaveLength(3); // 5 IPv4 in rules of 3, 2 IPv6 in one rule
    expectWellFormed(ours);
    expect(enforcedCidrs(env, nsg)).toEqual(sorted(bans.map((b) => b.cidr)));
    expect(env.fake.rules(RG, nsg).find((r) => r.name === 'allow-https')).toMatchObject(web);
    expect(second.plan.changes).toEqual([]);
    expect(writesSeen(env)).toBe(writesAfterFirst);
    expect([...env.fake.userAgents].every((ua) => ua.startsWith('crowdsec-cloud-bouncer/v'))).toBe(true);
    report(`behaviour 1: first pass ${firstCalls} calls for ${first.plan.changes.length} creates; second pass ${provider.stats().total - firstCalls} call(s), 0 writes`);
  });

  it('writes Outbound bans into destinationAddressPrefixes with * as source', async () => {
    const nsg = newNsg(env);
    const provider = makeProvider(env, { nsg_name: nsg, direction: 'Outbound', priority_band: { start: 3000, end: 3009 } });
    const bans = [ban('192.0.2.7'), ban('2001:db8::7')];
    await providerPass(provider, bans);
    const ours = ownedRules(env, nsg);
    expectWellFormed(ours, { start: 3000, end: 3009 }, 'Outbound');
    expect(enforcedCidrs(env, nsg, 'test', 'destination')).toEqual(sorted(bans.map((b) => b.cidr)));
    expect((await providerPass(provider, bans)).plan.changes).toEqual([]);
  });
});

describe('providers/azure-nsg: rules Azure left Failed, and flushConnection', () => {
  it('rewrites a rule of ours left in provisioning state Failed with its own content, then writes nothing', async () => {
    const nsg = newNsg(env);
    const provider = makeProvider(env, { nsg_name: nsg });
    const bans = [ban('192.0.2.1', { expiresAt: NOW + HOUR })];
    await providerPass(provider, bans);
    const [rule] = ownedRules(env, nsg);
    env.fake.setRuleStateDirect(RG, nsg, rule!.name, 'Failed');
    env.fake.resetCounters();
    const { plan } = await providerPass(provider, bans);
    const after = ownedRules(env, nsg);
    const { plan: next } = await providerPass(provider, bans);
    expect(plan.changes.map((c) => [c.kind, c.slot, c.added, c.removed, c.reason])).toEqual([['update', rule!.name, [], [], 'rewrite a rule Azure left in provisioning state Failed']]);
    expect(writesSeen(env)).toBe(1);
    expect(after.map((r) => [r.name, r.provisioningState, r.sourceAddressPrefixes])).toEqual([[rule!.name, 'Succeeded', ['192.0.2.1/32']]]);
    expect(next.changes).toEqual([]);
  });

  it('warns when the NSG does not flush established flows, and not once it does', async () => {
    const off = newNsg(env);
    const on = `${off}-flush`;
    env.fake.seedNsg(RG, on, [], { flushConnection: true });
    const warned = (await makeProvider(env, { nsg_name: off }).read()).warnings;
    const quiet = (await makeProvider(env, { nsg_name: on }).read()).warnings;
    expect(warned).toEqual([expect.stringMatching(new RegExp(`^NSG ${off} has flushConnection off`))]);
    expect(quiet).toEqual([]);
  });

  it('warns while the NSG is associated with nothing, as the fake answers it', async () => {
    const lone = `${newNsg(env)}-lone`;
    env.fake.seedNsg(RG, lone, [], { flushConnection: true, subnets: [] });
    expect((await makeProvider(env, { nsg_name: lone }).read()).warnings).toEqual([expect.stringMatching(new RegExp(`^NSG ${lone} is associated with no subnet or network interface`))]);
  });
});

describe('providers/azure-nsg: behaviour 2 (caps)', () => {
  it('under the 4000-prefix NSG cap with foreign prefixes counted, enforces the highest-priority bans, reports the rest, and no write is refused', async () => {
    // Prepare: a foreign allow list of 60 source prefixes (counted), and 500 destination prefixes (the other side: not counted).
    const partners = Array.from({ length: 60 }, (_, i) => `10.60.${i}.0/24`);
    const egress = Array.from({ length: 500 }, (_, i) => `10.70.${i >> 8}.${i & 255}/32`);
    const nsg = newNsg(env, [
      { name: 'allow-partners', access: 'Allow', direction: 'Inbound', priority: 4000, protocol: 'Tcp', sourcePortRange: '*', destinationPortRange: '443', sourceAddressPrefixes: partners, destinationAddressPrefix: '*' },
      { name: 'allow-egress', access: 'Allow', direction: 'Outbound', priority: 4000, protocol: '*', sourcePortRange: '*', destinationPortRange: '*', sourceAddressPrefix: '*', destinationAddressPrefixes: egress },
    ]);
    const provider = makeProvider(env, { nsg_name: nsg });
    const ip = (i: number) => `198.18.${i >> 8}.${i & 255}`;
    const bans: Ban[] = [];
    for (let i = 0; i < 4100; i++) {
      const originClass = i < 100 ? 'manual' : i < 300 ? 'local' : 'list';
      bans.push(ban(ip(i), { originClass, expiresAt: originClass === 'list' ? NOW + 2 * HOUR + i * 1000 : NOW + 4 * HOUR }));
    }
    env.fake.resetCounters();
    // Act
    const { plan, result } = await providerPass(provider, bans);
    // Assess: 4000 - 60 = 3940 fit; the 160 list bans with the earliest expiry do not.
    expect(plan.unenforced).toHaveLength(160);
    expect(new Set(plan.unenforced.map((u) => u.reason))).toEqual(new Set(['capacity']));
    expect(sorted(plan.unenforced.map((u) => u.cidr))).toEqual(sorted(Array.from({ length: 160 }, (_, k) => `${ip(300 + k)}/32`)));
    expect(result!.outcomes.every((o) => o.status === 'applied')).toBe(true);
    expect(env.fake.answeredStatus[400]).toBeUndefined();
    const enforced = enforcedCidrs(env, nsg);
    expect(enforced).toHaveLength(3940);
    for (let i = 0; i < 300; i++) expect(enforced).toContain(`${ip(i)}/32`);
    expectWellFormed(ownedRules(env, nsg));
    report(`behaviour 2: 4100 bans, 60 foreign source prefixes -> ${enforced.length} enforced in ${ownedRules(env, nsg).length} rules, ${plan.unenforced.length} unenforced (capacity), ${provider.stats().total} calls, 0 rejected writes`);
  });

  it('with more bans than the band has rules for, enforces the highest-priority ones and reports the rest', async () => {
    const nsg = newNsg(env);
    const provider = makeProvider(env, { nsg_name: nsg, priority_band: { start: 100, end: 102 }, prefixes_per_rule: 2 });
    const manual = ['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4'].map((c) => ban(c, { originClass: 'manual' }));
    const local = ['2001:db8::1', '2001:db8::2'].map((c) => ban(c, { originClass: 'local' }));
    const list = ['203.0.113.1', '203.0.113.2', '2001:db8::3', '2001:db8::4'].map((c) => ban(c, { originClass: 'list' }));
    env.fake.resetCounters();
    const { plan, result } = await providerPass(provider, [...list, ...local, ...manual]);
    expect(sorted(plan.unenforced.map((u) => u.cidr))).toEqual(sorted(list.map((b) => b.cidr)));
    expect(plan.unenforced.every((u) => u.reason === 'capacity')).toBe(true);
    expect(result!.outcomes.every((o) => o.status === 'applied')).toBe(true);
    expect(enforcedCidrs(env, nsg)).toEqual(sorted([...manual, ...local].map((b) => b.cidr)));
    expect(env.fake.answeredStatus[400]).toBeUndefined();
  });
});

describe('providers/azure-nsg: behaviour 3 (conflicts)', () => {
  it('reports a foreign rule inside our priority band as a conflict and writes nothing', async () => {
    const intruder = { name: 'allow-sip', access: 'Allow', direction: 'Inbound', priority: 150, protocol: 'Udp', sourcePortRange: '*', destinationPortRange: '5060', sourceAddressPrefix: '*', destinationAddressPrefix: '*' };
    const nsg = newNsg(env, [intruder]);
    const provider = makeProvider(env, { nsg_name: nsg });
    env.fake.resetCounters();
    const { plan, result } = await providerPass(provider, [ban('192.0.2.1')]);
    expect(plan.error).toMatch(/allow-sip .*inside our priority band 100-199/);
    expect(plan.conflicts.map((c) => c.slot)).toEqual(['allow-sip']);
    expect(result).toBeUndefined();
    expect(writesSeen(env)).toBe(0);
    expect(env.fake.rules(RG, nsg)).toEqual([expect.objectContaining(intruder)]);
  });

  it('reports a rule that uses our name without our marker as a conflict and writes nothing', async () => {
    const squatter = { name: 'cloud-bouncer-test-0105', access: 'Deny', direction: 'Inbound', priority: 105, protocol: '*', sourcePortRange: '*', destinationPortRange: '*', sourceAddressPrefixes: ['198.51.100.1/32'], destinationAddressPrefix: '*', description: 'made by hand' };
    const nsg = newNsg(env, [squatter]);
    const provider = makeProvider(env, { nsg_name: nsg });
    env.fake.resetCounters();
    const { plan } = await providerPass(provider, [ban('192.0.2.1')]);
    expect(plan.error).toMatch(/cloud-bouncer-test-0105 uses our name prefix .* no ownership marker/);
    expect(writesSeen(env)).toBe(0);
  });

  it('refuses to apply a plan when a foreign rule took a slot after planning', async () => {
    const nsg = newNsg(env);
    const provider = makeProvider(env, { nsg_name: nsg });
    const state = await provider.read();
    const plan = planTarget({ target: 'azure-test', provider: 'azure-nsg', bans: [ban('192.0.2.1')], state, now: NOW });
    env.fake.setRuleDirect(RG, nsg, { name: 'late-arrival', access: 'Allow', direction: 'Inbound', priority: 100, protocol: '*', sourcePortRange: '*', destinationPortRange: '*', sourceAddressPrefix: '10.0.0.0/8', destinationAddressPrefix: '*' });
    env.fake.resetCounters();
    await expect(provider.apply(plan.changes, { budget: new WriteBudget(10) })).rejects.toBeInstanceOf(OwnershipConflictError);
    expect(writesSeen(env)).toBe(0);
  });

  it('does not treat a foreign rule of the other direction at a band priority as a conflict', async () => {
    const nsg = newNsg(env, [{ name: 'deny-out-100', access: 'Deny', direction: 'Outbound', priority: 100, protocol: '*', sourcePortRange: '*', destinationPortRange: '*', sourceAddressPrefix: '*', destinationAddressPrefix: '192.0.2.200' }]);
    const provider = makeProvider(env, { nsg_name: nsg });
    const { plan } = await providerPass(provider, [ban('192.0.2.1')]);
    expect(plan.error).toBeUndefined();
    expect(ownedRules(env, nsg).map((r) => r.priority)).toEqual([100]);
  });

  it('warns when a foreign allow rule is evaluated before our deny rules', async () => {
    const nsg = newNsg(env, [{ name: 'allow-sip-any', access: 'Allow', direction: 'Inbound', priority: 110, protocol: 'Udp', sourcePortRange: '*', destinationPortRange: '5060', sourceAddressPrefix: 'Internet', destinationAddressPrefix: '*' }]);
    const provider = makeProvider(env, { nsg_name: nsg, priority_band: { start: 200, end: 299 } });
    const { plan } = await providerPass(provider, [ban('192.0.2.1')], { apply: false });
    expect(plan.warnings.join('\n')).toMatch(/allow-sip-any \(priority 110, protocol Udp, ports 5060\) is evaluated before our deny rules .* lets every address through/);
  });
});

describe('providers/azure-nsg: behaviour 4 (throttling and failed operations)', () => {
  it('converges exactly with 30% of writes answered 429 or AnotherOperationInProgress and some operations ending Failed', async () => {
    // Prepare
    const nsg = newNsg(env);
    // The production retry policy (4 attempts, 0.5 s base, 20 s cap) on a clock running 100 times fast;
    // the fake's operations settle in 30 ms (3 s on that clock) when nobody polls them.
    const { sleep, delays } = recordingSleep(0.01);
    const provider = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 4, retry: {} }, { sleep });
    env.fake.setBehaviour({ throttleStyle: 'mixed', retryAfterSec: 3, operationMs: 30 });
    env.fake.setFaults({ throttleRate: 0.3, lateFailureRate: 0.15, serverErrorRate: 0.03, dropRate: 0.02, seed: 42 });
    env.fake.resetCounters();
    const v4 = (i: number) => ban(`198.19.${i >> 8}.${i & 255}`, { expiresAt: NOW + (1 + (i % 3) * 2) * HOUR });
    const v6 = (i: number) => ban(`2001:db8:4::${(i + 1).toString(16)}`, { expiresAt: NOW + 5 * HOUR });
    const setA = [...Array.from({ length: 40 }, (_, i) => v4(i)), ...Array.from({ length: 12 }, (_, i) => v6(i))];
    const setB = [...setA.filter((_, i) => i % 3 !== 0), ...Array.from({ length: 20 }, (_, i) => v4(100 + i))];
    // Act
    const a = await converge(provider, setA);
    const exactA = enforcedCidrs(env, nsg);
    const b = await converge(provider, setB);
    // Assess
    expect(exactA).toEqual(sorted(setA.map((x) => x.cidr)));
    expect(enforcedCidrs(env, nsg)).toEqual(sorted(setB.map((x) => x.cidr)));
    expectWellFormed(ownedRules(env, nsg));
    const injected = env.fake.faults.injected;
    expect(injected.throttle).toBeGreaterThan(0);
    expect(env.fake.lateFailures).toBeGreaterThan(0);
    // Retry-After (3 s) was asked for on the 429 answers; the recording sleep returns at once.
    expect(delays.filter((d) => d >= 3000).length).toBeGreaterThan(0);
    const stats = provider.stats();
    const writes = writesSeen(env);
    env.fake.setFaults({});
    report(
      `behaviour 4: set A (${setA.length} CIDRs from empty) converged after ${a.passes - 1} writing pass(es), ${a.calls} calls; set B (${setB.length} CIDRs, ${setA.length - setB.length + 20} lifted, 20 new) after ${b.passes - 1}, ${b.calls} calls ` +
        `(each count includes the final pass that planned nothing); fake saw ${env.fake.calls.total} requests, ${writes} of them writes; injected: ${injected.throttle} throttles (429 or 409, ${Math.round((100 * injected.throttle) / writes)}% of writes), ${injected.server_error} 5xx, ${injected.drop} drops, ` +
        `${env.fake.lateFailures} Failed operations, ${env.fake.realConflicts} writes refused while an operation ran; client error counts ${JSON.stringify(stats.errors)}`,
    );
  });
});

describe('providers/azure-nsg: Retry-After', () => {
  it('waits at least the Retry-After of a 429 before writing again, and the write then succeeds', async () => {
    const nsg = newNsg(env);
    const { sleep, delays } = recordingSleep();
    const provider = makeProvider(env, { nsg_name: nsg }, { sleep });
    env.fake.setBehaviour({ retryAfterSec: 7 });
    env.fake.failNext(1, 'busy429');
    env.fake.resetCounters();
    const { result } = await providerPass(provider, [ban('192.0.2.1')]);
    expect(result!.outcomes.map((o) => o.status)).toEqual(['applied']);
    expect(delays).toHaveLength(1);
    expect(delays[0]).toBeGreaterThanOrEqual(7000);
    expect(env.fake.calls.byMethod.PUT).toBe(2);
  });
});

describe('providers/azure-nsg: behaviour 5 (killed mid-apply)', () => {
  it('a process killed with SIGKILL during its third write leaves valid rules, and the next run converges exactly', async () => {
    // Prepare
    const nsg = newNsg(env);
    const bans = [...Array.from({ length: 12 }, (_, i) => ban(`192.0.2.${i + 1}`)), ...Array.from({ length: 4 }, (_, i) => ban(`2001:db8:5::${i + 1}`))];
    const config = rawConfig(env, { nsg_name: nsg, prefixes_per_rule: 2 });
    env.fake.resetCounters();
    env.fake.setBehaviour({ operationMs: 30, retryAfterSec: 0 });
    // Act: the child process is killed the moment the fake accepts its third write, before it sees the answer.
    const run = runChild(child, { config, owner: 'test', bans, now: NOW });
    env.fake.onWriteAccepted = (n) => {
      if (n === 3) run.child.kill('SIGKILL');
    };
    const planned = await run.next('planned');
    const exit = await run.exit;
    env.fake.onWriteAccepted = undefined;
    const afterKill = ownedRules(env, nsg);
    const provider = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 2 });
    const resumed = await converge(provider, bans);
    const steady = await providerPass(provider, bans);
    // Assess
    expect(exit.signal).toBe('SIGKILL');
    expect(planned.changes).toHaveLength(8);
    expect(afterKill).toHaveLength(3);
    expectWellFormed(afterKill);
    expect(enforcedCidrs(env, nsg)).toEqual(sorted(bans.map((b) => b.cidr)));
    expectWellFormed(ownedRules(env, nsg));
    expect(steady.plan.changes).toEqual([]);
    report(`behaviour 5: killed after 3 of ${planned.changes!.length} writes; the next run converged after ${resumed.passes - 1} writing pass(es), ${resumed.calls} calls (incl. a final pass that planned nothing)`);
  });

  it('when every connection drops after the fourth write, the next run converges exactly', async () => {
    const nsg = newNsg(env);
    const bans = Array.from({ length: 10 }, (_, i) => ban(`203.0.113.${i + 1}`, { expiresAt: NOW + (i + 1) * HOUR }));
    const crashing = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 1, retry: { attempts: 2, base_delay: '1ms', max_delay: '2ms' } });
    env.fake.setFaults({ failAfterWrites: 4 });
    const first = await providerPass(crashing, bans);
    env.fake.setFaults({});
    env.fake.settle();
    const provider = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 1 });
    const resumed = await converge(provider, bans);
    expect(first.result!.outcomes.filter((o) => o.status === 'applied').length).toBeLessThan(bans.length);
    expect(enforcedCidrs(env, nsg)).toEqual(sorted(bans.map((b) => b.cidr)));
    report(`behaviour 5b: connections dropped after 4 accepted writes (${first.result!.outcomes.filter((o) => o.status === 'applied').length} confirmed applied); next run converged after ${resumed.passes - 1} writing pass(es), ${resumed.calls} calls`);
  });
});

describe('providers/azure-nsg: abort (a Lambda deadline)', () => {
  it('starts no write after the abort, finishes the one in flight, and the next run converges', async () => {
    const nsg = newNsg(env);
    const provider = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 1 });
    const bans = Array.from({ length: 6 }, (_, i) => ban(`192.0.2.${i + 1}`, { expiresAt: NOW + (i + 1) * HOUR }));
    const controller = new AbortController();
    env.fake.onWriteAccepted = (n) => {
      if (n === 2) controller.abort();
    };
    const first = await providerPass(provider, bans, { signal: controller.signal });
    env.fake.onWriteAccepted = undefined;
    const statuses = first.result!.outcomes.map((o) => o.status);
    const resumed = await converge(provider, bans);
    expect(statuses).toEqual(['applied', 'applied', 'skipped', 'skipped', 'skipped', 'skipped']);
    expect(first.result!.outcomes.filter((o) => o.status === 'skipped').every((o) => o.skipReason === 'aborted')).toBe(true);
    expect(enforcedCidrs(env, nsg)).toEqual(sorted(bans.map((b) => b.cidr)));
    expect(resumed.passes).toBe(2);
  });
});

describe('providers/azure-nsg: behaviour 6 (every source down)', () => {
  it('removes rules once their recorded expiry passes, with the sources silent (fail-static)', async () => {
    const nsg = newNsg(env);
    const provider = makeProvider(env, { nsg_name: nsg });
    await providerPass(provider, [ban('192.0.2.1', { expiresAt: NOW + HOUR }), ban('192.0.2.2', { expiresAt: NOW + HOUR }), ban('2001:db8::1', { expiresAt: NOW + 5 * HOUR })]);
    const later = NOW + 2 * HOUR;
    const state = await provider.read();
    env.fake.resetCounters();
    const { plan } = await providerPass(provider, bansFromRules(state.rules, later), { now: later });
    expect(plan.changes.map((c) => c.kind)).toEqual(['delete']);
    expect(enforcedCidrs(env, nsg)).toEqual(['2001:db8::1/128']);
    expect(env.fake.calls.byMethod.DELETE).toBe(1);
    expect(env.fake.calls.byMethod.PUT).toBeUndefined();
  });
});

describe('providers/azure-nsg: behaviour 7 (plan never writes; racing passes)', () => {
  it('plan never writes, and shows rule names, priorities and directions', async () => {
    const nsg = newNsg(env);
    const provider = makeProvider(env, { nsg_name: nsg });
    env.fake.resetCounters();
    const { plan, result } = await providerPass(provider, [ban('192.0.2.1'), ban('2001:db8::1')], { apply: false });
    expect(result).toBeUndefined();
    expect(writesSeen(env)).toBe(0);
    expect(Object.values(plan.slots!)).toEqual([
      { name: 'cloud-bouncer-test-0100', priority: 100, direction: 'Inbound' },
      { name: 'cloud-bouncer-test-0101', priority: 101, direction: 'Inbound' },
    ]);
  });

  it('two passes racing on one NSG from two processes never corrupt it, and a third pass converges', async () => {
    // Prepare: an NSG that already holds our rules, so the racers create, update and delete.
    const nsg = newNsg(env);
    const config = rawConfig(env, { nsg_name: nsg, prefixes_per_rule: 3 });
    const seed = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 3 });
    const all = Array.from({ length: 24 }, (_, i) => ban(`198.51.100.${i + 1}`, { expiresAt: NOW + (1 + (i % 2) * 3) * HOUR }));
    await providerPass(seed, all.slice(0, 12));
    const initial = new Map(ownedRules(env, nsg).map((r) => [r.name, sorted(r.sourceAddressPrefixes!)]));
    const bansA = [...all.slice(0, 6), ...all.slice(12, 18)];
    const bansB = [...all.slice(3, 9), ...all.slice(15, 24), ban('2001:db8:7::1')];
    env.fake.setBehaviour({ pollsUntilDone: 2, operationMs: 2_000, retryAfterSec: 0 });
    env.fake.setFaults({ latencyMs: 3 });
    env.fake.resetCounters();
    // Act: both plan against the same state, then write at the same time.
    const racer = runChild(child, { config, owner: 'test', bans: bansA, now: NOW, waitForGo: true });
    const plannedA = await racer.next('planned');
    const local = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 3 });
    const planB = planTarget({ target: 'azure-test', provider: 'azure-nsg', bans: bansB, state: await local.read(), now: NOW });
    racer.go();
    const [appliedA, resultB] = await Promise.all([
      racer.next('applied'),
      local.apply(planB.changes, { budget: new WriteBudget(1000) }).then(
        (r) => r,
        (err: unknown) => ({ error: err as Error }),
      ),
    ]);
    await racer.exit;
    env.fake.setFaults({});
    env.fake.settle();
    const raced = ownedRules(env, nsg);
    // Assess: unique priorities, every rule wholly ours, and each rule's content is what one writer meant, never a mix.
    expectWellFormed(raced);
    const intended = new Set<string>([
      ...[...initial.values()].map((c) => c.join(',')),
      ...plannedA.changes!.filter((c) => c.after).map((c) => sorted(c.after!).join(',')),
      ...planB.changes.filter((c) => c.after).map((c) => sorted(c.after!.cidrs).join(',')),
    ]);
    for (const r of raced) expect(intended.has(sorted(r.sourceAddressPrefixes!).join(','))).toBe(true);
    const third = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 3 });
    const settled = await converge(third, bansB);
    expect(enforcedCidrs(env, nsg)).toEqual(sorted(bansB.map((b) => b.cidr)));
    expect((await providerPass(third, bansB)).plan.changes).toEqual([]);
    const why = (status: string, err: string | undefined) => (status === 'failed' ? `failed (${err?.split(':')[0] ?? '?'})` : status);
    const outcomesB = 'outcomes' in resultB ? resultB.outcomes.map((o) => why(o.status, o.error ? `${(o.error as Error).name}: ${(o.error as Error).message}` : undefined)).join(', ') : `refused (${resultB.error.name})`;
    const outcomesA = appliedA.error ?? appliedA.outcomes!.map((o) => why(o.status, o.error ?? undefined)).join(', ');
    report(
      `behaviour 7: racers wrote from stale plans (A: ${plannedA.changes!.length} changes: ${outcomesA}; B: ${planB.changes.length} changes: ${outcomesB}); ` +
        `${env.fake.realConflicts} writes refused while another operation was in progress; a third run converged after ${settled.passes - 1} writing pass(es), ${settled.calls} calls`,
    );
  });
});
