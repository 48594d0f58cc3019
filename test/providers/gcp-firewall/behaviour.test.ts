/**
 * The behaviours of issue 4, shown with the real `FirewallsClient` and
 * `GlobalOperationsClient` (REST transport) against the fake Compute server.
 * Figures (calls per pass, passes to converge) are printed with a
 * `[gcp-firewall]` prefix.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { bansFromRules } from '../../../src/core/desired.js';
import { OwnershipConflictError, QuotaExceededError, RetryableError } from '../../../src/core/errors.js';
import { parseMarker } from '../../../src/core/marker.js';
import { planTarget } from '../../../src/core/plan.js';
import { WriteBudget } from '../../../src/core/queue.js';
import { planToText } from '../../../src/core/render.js';
import { tryParseCidr } from '../../../src/core/cidr.js';
import type { Ban, Plan } from '../../../src/core/types.js';
import type { ApplyResult } from '../../../src/providers/provider.js';
import type { FakeCompute, FakeFirewall } from '../../fakes/gcp/compute-server.js';
import { HOUR, NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import { converge, enforcedCidrs, makeProvider, newProject, ownedRules, recordingSleep, sorted, startFake, writesSeen } from './setup.js';

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

function report(line: string): void {
  console.log(`[gcp-firewall] ${line}`);
}

const EDGE = (project: string) => `https://www.googleapis.com/compute/v1/projects/${project}/global/networks/edge`;

interface Shape {
  band?: { start: number; end: number };
  direction?: 'INGRESS' | 'EGRESS';
  log?: boolean;
  targetTags?: string[];
}

/** Our rules are well formed: a deny of everything on our network, one family, our marker, a slot name, the slot's priority. */
function expectWellFormed(project: string, rules: FakeFirewall[], shape: Shape = {}): void {
  const band = shape.band ?? { start: 900, end: 999 };
  const direction = shape.direction ?? 'INGRESS';
  const field = direction === 'INGRESS' ? 'sourceRanges' : 'destinationRanges';
  const other = direction === 'INGRESS' ? 'destinationRanges' : 'sourceRanges';
  for (const r of rules) {
    expect(r.denied).toEqual([{ IPProtocol: 'all' }]);
    expect(r.allowed).toBeUndefined();
    expect(r.direction).toBe(direction);
    expect(r.network).toBe(EDGE(project));
    expect(r[other]).toBeUndefined();
    const cidrs = r[field]!;
    expect(cidrs.length).toBeGreaterThan(0);
    expect(new Set(cidrs.map((c) => tryParseCidr(c)!.family)).size).toBe(1);
    expect(parseMarker(r.description)?.owner).toBe('test');
    const n = Number(/^cloud-bouncer-test-(\d{3})$/.exec(r.name)![1]);
    expect(r.priority).toBe(Math.min(band.start + n - 1, band.end));
    expect(r.logConfig?.enable).toBe(shape.log ?? false);
    expect(r.targetTags).toEqual(shape.targetTags);
    expect(r.disabled).toBe(false);
  }
}

describe('providers/gcp-firewall: behaviour 1 (apply, then a steady state)', () => {
  it('enforces IPv4 and IPv6 bans as deny rules holding exactly those ranges, one family per rule; the second pass writes nothing', async () => {
    // Prepare: a project with foreign rules on our network and on another one.
    const https: FakeFirewall = { name: 'allow-https', network: 'global/networks/edge', priority: 1000, allowed: [{ IPProtocol: 'tcp', ports: ['443'] }], sourceRanges: ['0.0.0.0/0'] };
    const other: FakeFirewall = { name: 'default-allow-ssh', network: 'global/networks/default', priority: 65534, allowed: [{ IPProtocol: 'tcp', ports: ['22'] }], sourceRanges: ['0.0.0.0/0'] };
    const project = newProject(fake, [https, other]);
    const foreignBefore = fake.rules(project);
    const provider = makeProvider(fake, project, { ranges_per_rule: 3 });
    const bans = [ban('192.0.2.1'), ban('192.0.2.2'), ban('198.51.100.0/24'), ban('203.0.113.9'), ban('203.0.113.10'), ban('2001:db8::1'), ban('2001:db8:1::/64')];
    // Act
    const first = await providerPass(provider, bans);
    const firstCalls = provider.stats().total;
    const writesAfterFirst = writesSeen(fake);
    const second = await providerPass(provider, bans);
    // Assess
    expect(first.result!.outcomes.map((o) => o.status)).toEqual(first.plan.changes.map(() => 'applied'));
    const ours = ownedRules(fake, project);
    expect(ours).toHaveLength(3); // 5 IPv4 in rules of 3, 2 IPv6 in one rule
    expectWellFormed(project, ours);
    expect(enforcedCidrs(fake, project)).toEqual(sorted(bans.map((b) => b.cidr)));
    expect(fake.rules(project).filter((r) => !r.name.startsWith('cloud-bouncer-'))).toEqual(foreignBefore);
    expect(second.plan.changes).toEqual([]);
    expect(second.plan.warnings).toEqual([]);
    expect(writesSeen(fake)).toBe(writesAfterFirst);
    expect(provider.stats().total - firstCalls).toBe(1);
    expect([...fake.userAgents].every((ua) => ua.startsWith('crowdsec-cloud-bouncer/v'))).toBe(true);
    report(`behaviour 1: first pass ${firstCalls} calls (2 lists, ${first.plan.changes.length} inserts, ${fake.calls.byOp['globalOperations.wait']} operation waits); second pass ${provider.stats().total - firstCalls} call, 0 writes`);
  });

  it('writes EGRESS bans into destinationRanges, with logging, target tags and a single priority from the config', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { direction: 'EGRESS', priority: 500, log: true, target_tags: ['pbx'] });
    const bans = [ban('192.0.2.7'), ban('2001:db8::7')];
    await providerPass(provider, bans);
    const ours = ownedRules(fake, project);
    expectWellFormed(project, ours, { band: { start: 500, end: 500 }, direction: 'EGRESS', log: true, targetTags: ['pbx'] });
    expect(enforcedCidrs(fake, project, 'test', 'destinationRanges')).toEqual(sorted(bans.map((b) => b.cidr)));
    expect((await providerPass(provider, bans)).plan.changes).toEqual([]);
  });
});

describe('providers/gcp-firewall: stable placement', () => {
  it('one new ban is one PATCH of one rule, one lifted ban is one PATCH, and a rule left empty is deleted', async () => {
    // Prepare: two IPv4 rules of up to 4 ranges, one per expiry bucket.
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 4 });
    const early = [ban('192.0.2.1', { expiresAt: NOW + HOUR }), ban('192.0.2.2', { expiresAt: NOW + HOUR })];
    const late = [ban('198.51.100.1', { expiresAt: NOW + 6 * HOUR }), ban('198.51.100.2', { expiresAt: NOW + 6 * HOUR })];
    await providerPass(provider, [...early, ...late]);
    const before = new Map(ownedRules(fake, project).map((r) => [r.name, r.sourceRanges]));
    const step = async (bans: Ban[]) => {
      fake.resetCounters();
      const { plan } = await providerPass(provider, bans);
      return { plan, ops: { ...fake.calls.byOp } };
    };
    // Act
    const added = await step([...early, ...late, ban('198.51.100.3', { expiresAt: NOW + 6 * HOUR })]);
    const lifted = await step([...early, late[0]!, ban('198.51.100.3', { expiresAt: NOW + 6 * HOUR })]);
    const emptied = await step([late[0]!, ban('198.51.100.3', { expiresAt: NOW + 6 * HOUR })]);
    // Assess
    expect(before.size).toBe(2);
    for (const s of [added, lifted]) {
      expect(s.plan.changes.map((c) => c.kind)).toEqual(['update']);
      expect(s.ops['firewalls.patch']).toBe(1);
      expect(s.ops['firewalls.insert']).toBeUndefined();
      expect(s.ops['firewalls.delete']).toBeUndefined();
    }
    expect(emptied.plan.changes.map((c) => c.kind)).toEqual(['delete']);
    expect(emptied.ops['firewalls.delete']).toBe(1);
    expect(emptied.ops['firewalls.patch']).toBeUndefined();
    expect(enforcedCidrs(fake, project)).toEqual(['198.51.100.1/32', '198.51.100.3/32']);
    const lateRule = [...before.entries()].find(([, r]) => r!.includes('198.51.100.1/32'))![0];
    expect(ownedRules(fake, project).map((r) => r.name)).toEqual([lateRule]);
  });
});

describe('providers/gcp-firewall: a rule someone disabled', () => {
  it('puts no new ban into it, reports its ranges unenforced, keeps it disabled, and deletes it once its bans end', async () => {
    // Prepare: one rule of up to 4 ranges holding one ban, then an operator disables it.
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 4 });
    const first = ban('192.0.2.1', { expiresAt: NOW + HOUR });
    await providerPass(provider, [first]);
    const [rule] = ownedRules(fake, project);
    fake.setRuleDirect(project, { ...rule!, disabled: true });
    // Act: a new ban of the same bucket, then the first ban ends.
    const second = ban('192.0.2.2', { expiresAt: NOW + HOUR });
    const { plan } = await providerPass(provider, [first, second]);
    const afterAdd = ownedRules(fake, project);
    const { plan: ended } = await providerPass(provider, [second]);
    const afterEnd = ownedRules(fake, project);
    // Assess: the new ban went into a new, enabled rule; the disabled rule's range is reported, not counted.
    expect(plan.unenforced.map((u) => [u.cidr, u.reason])).toEqual([['192.0.2.1/32', 'disabled']]);
    expect(plan.summary.enforced).toBe(1);
    expect(plan.warnings.some((w) => w.includes(`${rule!.name} is disabled`))).toBe(true);
    expect(afterAdd.map((r) => [r.name, r.sourceRanges, r.disabled])).toEqual([
      [rule!.name, ['192.0.2.1/32'], true],
      [expect.not.stringMatching(rule!.name), ['192.0.2.2/32'], false],
    ]);
    expect(ended.changes.map((c) => [c.kind, c.slot])).toEqual([['delete', rule!.name]]);
    expect(afterEnd.map((r) => [r.sourceRanges, r.disabled])).toEqual([[['192.0.2.2/32'], false]]);
  });

  it('refuses a planned addition to a rule that was disabled after the plan was made, writing nothing', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 4 });
    await providerPass(provider, [ban('192.0.2.1', { expiresAt: NOW + HOUR })]);
    const state = await provider.read();
    const plan = planTarget({ target: 'gcp-test', provider: 'gcp-firewall', bans: [ban('192.0.2.1', { expiresAt: NOW + HOUR }), ban('192.0.2.2', { expiresAt: NOW + HOUR })], state, now: NOW });
    expect(plan.changes.map((c) => [c.kind, c.added])).toEqual([['update', ['192.0.2.2/32']]]);
    const [rule] = ownedRules(fake, project);
    fake.setRuleDirect(project, { ...rule!, disabled: true });
    fake.resetCounters();
    await expect(provider.apply(plan.changes, { budget: new WriteBudget(10) })).rejects.toBeInstanceOf(OwnershipConflictError);
    expect(writesSeen(fake)).toBe(0);
  });

  it('a range lifted from a disabled rule is a PATCH that leaves the rule disabled', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 4 });
    const bans = [ban('192.0.2.1', { expiresAt: NOW + HOUR }), ban('192.0.2.2', { expiresAt: NOW + HOUR })];
    await providerPass(provider, bans);
    const [rule] = ownedRules(fake, project);
    fake.setRuleDirect(project, { ...rule!, disabled: true });
    const { plan } = await providerPass(provider, [bans[0]!]);
    expect(plan.changes.map((c) => [c.kind, c.removed])).toEqual([['update', ['192.0.2.2/32']]]);
    expect(ownedRules(fake, project).map((r) => [r.sourceRanges, r.disabled])).toEqual([[['192.0.2.1/32'], true]]);
  });
});

describe('providers/gcp-firewall: behaviour 2 (capacity and quota)', () => {
  it('with more bans than max_rules × ranges_per_rule, enforces the highest-priority ones and reports the rest as unenforced (capacity)', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { max_rules: 3, ranges_per_rule: 2 });
    const manual = ['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4'].map((c) => ban(c, { originClass: 'manual' }));
    const local = ['2001:db8::1', '2001:db8::2'].map((c) => ban(c, { originClass: 'local' }));
    const list = ['203.0.113.1', '203.0.113.2', '2001:db8::3', '2001:db8::4'].map((c) => ban(c, { originClass: 'list' }));
    const { plan, result } = await providerPass(provider, [...list, ...local, ...manual]);
    expect(sorted(plan.unenforced.map((u) => u.cidr))).toEqual(sorted(list.map((b) => b.cidr)));
    expect(new Set(plan.unenforced.map((u) => u.reason))).toEqual(new Set(['capacity']));
    expect(plan.capacity).toEqual([{ pool: 'ingress', rules: { used: 3, total: 3 }, cidrs: { used: 6, total: 6 } }]);
    expect(result!.outcomes.every((o) => o.status === 'applied')).toBe(true);
    expect(enforcedCidrs(fake, project)).toEqual(sorted([...manual, ...local].map((b) => b.cidr)));
    expect(fake.answeredStatus[400]).toBeUndefined();
    report(`behaviour 2: 10 bans, capacity 3 rules × 2 ranges -> ${plan.summary.enforced} enforced, ${plan.unenforced.length} unenforced (capacity)`);
  });

  for (const quotaStyle of ['http', 'operation'] as const) {
    it(`when the project's firewall quota refuses an insert (${quotaStyle === 'http' ? '403 quotaExceeded' : 'an operation ending QUOTA_EXCEEDED'}), keeps using the existing rules and reports the rest as unenforced (quota)`, async () => {
      // Prepare: a quota of 3 rules, 2 taken by foreign rules: room for one rule of ours.
      const project = newProject(fake, [
        { name: 'allow-https', network: 'global/networks/edge', allowed: [{ IPProtocol: 'tcp', ports: ['443'] }], sourceRanges: ['0.0.0.0/0'] },
        { name: 'allow-ssh-admin', network: 'global/networks/default', allowed: [{ IPProtocol: 'tcp', ports: ['22'] }], sourceRanges: ['203.0.113.250/32'] },
      ]);
      fake.setLimits({ rulesPerProject: 3 });
      fake.setBehaviour({ quotaStyle });
      // One write at a time, so the IPv6 rule (the smaller change, first in phase 2) is the one that gets the room.
      const provider = makeProvider(fake, project, { ranges_per_rule: 4, queue: { concurrency: 1, interval_cap: 10_000, interval: '1s' } });
      // The IPv6 bans rank first (manual), so the rule that fits keeps them.
      const v4 = [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3')];
      const v6 = [ban('2001:db8::1', { originClass: 'manual' }), ban('2001:db8::2', { originClass: 'manual' })];
      // Act
      const first = await providerPass(provider, [...v4, ...v6]);
      const quotaAnswers = fake.answered.quotaExceeded ?? 0;
      const insertsAfterFirst = fake.calls.byOp['firewalls.insert'];
      const second = await providerPass(provider, [...v4, ...v6]);
      const insertsAfterSecond = fake.calls.byOp['firewalls.insert'];
      fake.resetCounters();
      const third = await providerPass(provider, [...v4, ...v6, ban('2001:db8::3', { originClass: 'manual' })]);
      fake.setLimits({ rulesPerProject: 500 });
      // Assess: the failed insert is a failure carrying a QuotaExceededError, never a success.
      const statuses = first.result!.outcomes.map((o) => [o.change.family, o.status]);
      expect(statuses).toEqual([
        [6, 'applied'],
        [4, 'failed'],
      ]);
      expect(first.result!.outcomes[1]!.error).toBeInstanceOf(QuotaExceededError);
      expect(quotaAnswers).toBe(quotaStyle === 'http' ? 1 : 0);
      // Next pass: the IPv4 bans are reported as unenforced (quota), nothing is written, no insert is tried.
      expect(second.plan.changes).toEqual([]);
      expect(sorted(second.plan.unenforced.map((u) => u.cidr))).toEqual(sorted(v4.map((b) => b.cidr)));
      expect(new Set(second.plan.unenforced.map((u) => u.reason))).toEqual(new Set(['quota']));
      expect(second.plan.warnings.join('\n')).toMatch(/firewall-rule quota was exhausted/);
      expect(insertsAfterFirst).toBe(2);
      expect(insertsAfterSecond).toBe(2);
      // A new IPv6 ban still lands in the existing rule: one PATCH, no insert.
      expect(third.plan.changes.map((c) => c.kind)).toEqual(['update']);
      expect(fake.calls.byOp['firewalls.patch']).toBe(1);
      expect(fake.calls.byOp['firewalls.insert']).toBeUndefined();
      expect(enforcedCidrs(fake, project)).toEqual(['2001:db8::1/128', '2001:db8::2/128', '2001:db8::3/128']);
    });
  }
});

describe('providers/gcp-firewall: behaviour 3 (conflicts and warnings)', () => {
  it('reports a rule that uses our name prefix without our marker as a conflict and writes nothing', async () => {
    const squatter: FakeFirewall = { name: 'cloud-bouncer-test-002', network: 'global/networks/edge', priority: 901, denied: [{ IPProtocol: 'all' }], sourceRanges: ['198.51.100.1/32'], description: 'made by hand' };
    const project = newProject(fake, [squatter]);
    const before = fake.rules(project);
    const provider = makeProvider(fake, project);
    fake.resetCounters();
    const { plan, result } = await providerPass(provider, [ban('192.0.2.1')]);
    expect(plan.error).toMatch(/cloud-bouncer-test-002 uses our name prefix cloud-bouncer-test- but has no ownership marker/);
    expect(plan.conflicts.map((c) => c.slot)).toEqual(['cloud-bouncer-test-002']);
    expect(result).toBeUndefined();
    expect(writesSeen(fake)).toBe(0);
    expect(fake.rules(project)).toEqual(before);
  });

  it('reports a rule with our name and marker on another network as a conflict', async () => {
    const elsewhere: FakeFirewall = { name: 'cloud-bouncer-test-001', network: 'global/networks/default', priority: 900, denied: [{ IPProtocol: 'all' }], sourceRanges: ['198.51.100.1/32'], description: `cloud-bouncer owner=test exp=${(NOW + HOUR) / 1000}` };
    const project = newProject(fake, [elsewhere]);
    const provider = makeProvider(fake, project);
    fake.resetCounters();
    const { plan } = await providerPass(provider, [ban('192.0.2.1')]);
    expect(plan.error).toMatch(/belongs to network .*\/networks\/default, not projects\/.*\/networks\/edge .*different name_prefix or owner/);
    expect(writesSeen(fake)).toBe(0);
  });

  it("leaves another owner's rules alone: not a conflict, not touched", async () => {
    const project = newProject(fake);
    const theirs = makeProvider(fake, project, {}, {}, 'test-2');
    await providerPass(theirs, [ban('203.0.113.7')]);
    const theirRules = fake.rules(project);
    const ours = makeProvider(fake, project);
    const { plan } = await providerPass(ours, [ban('192.0.2.1')]);
    expect(plan.error).toBeUndefined();
    expect(theirRules.map((r) => r.name)).toEqual(['cloud-bouncer-test-2-001']);
    expect(fake.rules(project).filter((r) => r.name.startsWith('cloud-bouncer-test-2-'))).toEqual(theirRules);
    expect(enforcedCidrs(fake, project)).toEqual(['192.0.2.1/32']);
  });

  it('refuses to apply a plan when a foreign rule took a planned rule name after planning', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project);
    const state = await provider.read();
    const plan = planTarget({ target: 'gcp-test', provider: 'gcp-firewall', bans: [ban('192.0.2.1')], state, now: NOW });
    fake.setRuleDirect(project, { name: 'cloud-bouncer-test-001', network: 'global/networks/edge', allowed: [{ IPProtocol: 'tcp', ports: ['22'] }], sourceRanges: ['10.0.0.0/8'] });
    fake.resetCounters();
    await expect(provider.apply(plan.changes, { budget: new WriteBudget(10) })).rejects.toBeInstanceOf(OwnershipConflictError);
    expect(writesSeen(fake)).toBe(0);
  });

  it('warns when a foreign allow rule is evaluated before our deny rules, and not when it comes after', async () => {
    const project = newProject(fake, [
      { name: 'allow-sip-any', network: 'global/networks/edge', priority: 500, allowed: [{ IPProtocol: 'udp', ports: ['5060'] }], sourceRanges: ['0.0.0.0/0'] },
      { name: 'allow-partner', network: 'global/networks/edge', priority: 950, allowed: [{ IPProtocol: 'tcp', ports: ['443'] }], sourceRanges: ['198.51.100.0/24'] },
      { name: 'allow-web', network: 'global/networks/edge', priority: 1000, allowed: [{ IPProtocol: 'tcp', ports: ['443'] }], sourceRanges: ['0.0.0.0/0'] },
      { name: 'allow-other-net', network: 'global/networks/default', priority: 100, allowed: [{ IPProtocol: 'all' }], sourceRanges: ['0.0.0.0/0'] },
    ]);
    const provider = makeProvider(fake, project, { priority: 960 });
    await providerPass(provider, [ban('198.51.100.7'), ban('192.0.2.1')]);
    const { plan } = await providerPass(provider, [ban('198.51.100.7'), ban('192.0.2.1')], { apply: false });
    const [partner, sip, ...rest] = [...plan.warnings].sort();
    expect(rest).toEqual([]);
    expect(sip).toMatch(/^foreign allow rule allow-sip-any \(priority 500, udp:5060\) is evaluated before our deny rules \(priority 960\) and lets every address through$/);
    expect(partner).toMatch(/^foreign allow rule allow-partner \(priority 950, tcp:443\) is evaluated before our deny rules \(priority 960\) and lets 1 banned CIDR through$/);
  });
});

/** After a pass, every change reported applied is what the fake holds now. */
function expectAppliedMeansDone(project: string, result: ApplyResult | undefined): void {
  for (const o of result?.outcomes ?? []) {
    if (o.status !== 'applied') continue;
    const rule = fake.rules(project).find((r) => r.name === o.change.slot);
    if (o.change.kind === 'delete') expect(rule).toBeUndefined();
    else expect(sorted(rule?.sourceRanges ?? [])).toEqual(o.change.after!.cidrs);
  }
}

describe('providers/gcp-firewall: behaviour 4 (rate limits and failed operations)', () => {
  it('converges exactly with 30% of writes rate limited (403 rateLimitExceeded or 429) and some operations ending with an error, never counting a failed operation as success', async () => {
    // Prepare: the production retry policy (4 attempts, 0.5 s base, 20 s cap) with a sleep that only records.
    const project = newProject(fake);
    const { sleep, delays } = recordingSleep();
    const provider = makeProvider(fake, project, { ranges_per_rule: 8, max_rules: 30, retry: {} }, { sleep });
    fake.setBehaviour({ throttleStyle: 'mixed', retryAfterSec: 2 });
    fake.setFaults({ throttleRate: 0.3, lateFailureRate: 0.15, serverErrorRate: 0.03, dropRate: 0.02, seed: 42 });
    // Besides the random ones, the first two operations end with an error whatever the interleaving of requests.
    fake.failOperations(2);
    const v4 = (i: number) => ban(`198.19.${i >> 8}.${i & 255}`, { expiresAt: NOW + (1 + (i % 3) * 2) * HOUR });
    const v6 = (i: number) => ban(`2001:db8:4::${(i + 1).toString(16)}`, { expiresAt: NOW + 5 * HOUR });
    const setA = [...Array.from({ length: 60 }, (_, i) => v4(i)), ...Array.from({ length: 14 }, (_, i) => v6(i))];
    const setB = [...setA.filter((_, i) => i % 3 !== 0), ...Array.from({ length: 30 }, (_, i) => v4(200 + i))];
    const passes: { set: string; calls: number; applied: number; failed: number; opFailed: number }[] = [];
    let opFailures = 0;
    const run = async (name: string, bans: Ban[]) => {
      for (let pass = 1; pass <= 20; pass++) {
        const before = provider.stats().total;
        let out: Awaited<ReturnType<typeof providerPass>> | undefined;
        try {
          out = await providerPass(provider, bans);
        } catch {
          // A read whose retries ran out: the next scheduled pass tries again.
        }
        const outcomes = out?.result?.outcomes ?? [];
        const opFailed = outcomes.filter((o) => o.status === 'failed' && String((o.error as { code?: string }).code ?? '').startsWith('operation:')).length;
        opFailures += opFailed;
        passes.push({ set: name, calls: provider.stats().total - before, applied: outcomes.filter((o) => o.status === 'applied').length, failed: outcomes.filter((o) => o.status === 'failed').length, opFailed });
        expectAppliedMeansDone(project, out?.result);
        if (out) expect(out.plan.unenforced).toEqual([]);
        if (out && out.plan.changes.length === 0) return pass;
      }
      throw new Error(`${name} did not converge`);
    };
    // Act
    const passesA = await run('A', setA);
    const exactA = enforcedCidrs(fake, project);
    const passesB = await run('B', setB);
    // Assess
    expect(exactA).toEqual(sorted(setA.map((b) => b.cidr)));
    expect(enforcedCidrs(fake, project)).toEqual(sorted(setB.map((b) => b.cidr)));
    expectWellFormed(project, ownedRules(fake, project));
    const injected = fake.faults.injected;
    expect(injected.throttle).toBeGreaterThan(0);
    expect(fake.answered.rateLimitExceeded).toBeGreaterThan(0);
    expect(fake.answeredStatus[429]).toBeGreaterThan(0);
    expect(fake.answeredStatus[403]).toBeGreaterThan(0);
    expect(fake.lateFailures).toBeGreaterThanOrEqual(2);
    expect(opFailures).toBeGreaterThanOrEqual(1);
    // Retry-After (2 s) on the 429 answers was honoured.
    expect(delays.some((d) => d >= 2000)).toBe(true);
    const stats = provider.stats();
    const writes = writesSeen(fake);
    fake.setFaults({});
    report(
      `behaviour 4: set A (${setA.length} CIDRs from empty) converged in ${passesA} passes, set B (${setB.length} CIDRs, ${setA.length - setB.length + 30} lifted, 30 new) in ${passesB} (each count includes the final pass that planned nothing); ` +
        `${stats.total} calls in all (${stats.reads} reads, ${stats.writes} writes); per pass: ${passes.map((p) => `${p.set}${p.calls}c/${p.applied}ok/${p.failed}ko`).join(' ')}; ` +
        `fake saw ${fake.calls.total} requests, ${writes} writes; injected ${injected.throttle} throttles (${Math.round((100 * injected.throttle) / writes)}% of writes: ${fake.answeredStatus[403] ?? 0} 403, ${fake.answeredStatus[429] ?? 0} 429), ${injected.server_error} 5xx, ${injected.drop} drops, ` +
        `${fake.lateFailures} operations DONE with an error (${opFailures} seen as failed writes); client error counts ${JSON.stringify(stats.errors)}`,
    );
  });
});

describe('providers/gcp-firewall: requestId', () => {
  for (const kind of ['insert', 'patch', 'delete'] as const) {
    it(`retries a ${kind} whose answer was lost with the same requestId, and the server applies it once`, async () => {
      // Prepare
      const project = newProject(fake);
      const provider = makeProvider(fake, project, { ranges_per_rule: 4 });
      const initial = kind === 'insert' ? [] : [ban('192.0.2.1'), ban('192.0.2.2')];
      const desired = kind === 'insert' ? [ban('192.0.2.1')] : kind === 'patch' ? [ban('192.0.2.1')] : [];
      if (initial.length) await providerPass(provider, initial);
      fake.resetCounters();
      fake.failNext(1, 'lostAnswer');
      // Act
      const { result } = await providerPass(provider, desired);
      // Assess
      expect(result!.outcomes.map((o) => o.status)).toEqual(['applied']);
      expect(fake.calls.byOp[`firewalls.${kind}`]).toBe(2);
      expect(fake.dedupedRequests).toBe(1);
      expect(fake.acceptedWrites).toBe(1);
      expect(fake.committedWrites).toBe(1);
      expect(fake.answered.alreadyExists).toBeUndefined();
      expect(fake.answered.notFound).toBeUndefined();
      const ops = fake.operations(project).filter((o) => o.type === kind);
      expect(ops).toHaveLength(1);
      expect(ops[0]!.requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(enforcedCidrs(fake, project)).toEqual(sorted(desired.map((b) => b.cidr)));
    });
  }

  it('gives every write its own requestId', async () => {
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 1 });
    await providerPass(provider, [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3')]);
    await providerPass(provider, [ban('192.0.2.1')]);
    const ids = fake.operations(project).map((o) => o.requestId);
    expect(ids).toHaveLength(5);
    expect(new Set(ids).size).toBe(5);
  });
});

describe('providers/gcp-firewall: behaviour 5 (killed mid-apply)', () => {
  const v4 = (i: number, h = 4) => ban(`192.0.2.${i}`, { expiresAt: NOW + h * HOUR });
  const v6 = (i: number, h = 4) => ban(`2001:db8::${i.toString(16)}`, { expiresAt: NOW + h * HOUR });
  const scenarios: { name: string; initial: Ban[]; desired: Ban[] }[] = [
    { name: 'from empty', initial: [], desired: [v4(1), v4(2), v4(3), v4(4), v4(5), v6(1), v6(2), v4(6, 1), v4(7, 1)] },
    {
      name: 'creates, patches and deletes',
      initial: [v4(1), v4(2), v4(3), v4(4, 1), v4(5, 1), v6(1), v6(2)],
      desired: [v4(1), v4(3), v4(8), v4(9, 8), v4(10, 8), v6(3), ban('198.51.100.0/24', { expiresAt: NOW + 6 * HOUR })],
    },
  ];
  for (const sc of scenarios) {
    it(`after the connection dies at any write, the next run reaches exactly the desired state with no duplicate rules (${sc.name})`, async () => {
      const lines: string[] = [];
      let total = Infinity;
      for (let k = 0; k <= total; k++) {
        // (k runs over every write the plan makes, and one more: the run that completes.)
        // Prepare: a project holding `initial` and a foreign rule that must survive.
        const project = newProject(fake, [{ name: 'allow-https', network: 'global/networks/edge', allowed: [{ IPProtocol: 'tcp', ports: ['443'] }], sourceRanges: ['0.0.0.0/0'] }]);
        const config = { ranges_per_rule: 3, retry: { attempts: 2, base_delay: '1ms', max_delay: '2ms' } };
        if (sc.initial.length > 0) await converge(makeProvider(fake, project, config), sc.initial);
        const foreign = fake.rules(project).filter((r) => r.name === 'allow-https');
        const acceptedBefore = fake.acceptedWrites;
        // Act: after k accepted writes, every connection drops (the process is as good as dead).
        const crashing = makeProvider(fake, project, config);
        if (total === Infinity) total = (await providerPass(crashing, sc.desired, { apply: false })).plan.changes.length;
        fake.setFaults({ failAfterWrites: k });
        try {
          await providerPass(crashing, sc.desired);
        } catch {
          // A dead process reports nothing.
        }
        const accepted = fake.acceptedWrites - acceptedBefore;
        fake.setFaults({});
        // Time passes before the next run: operations the dead process left behind finish.
        fake.settle();
        const next = makeProvider(fake, project, config);
        const resumed = await converge(next, sc.desired);
        // Assess
        expect(accepted).toBeLessThanOrEqual(k);
        expect(enforcedCidrs(fake, project)).toEqual(sorted(sc.desired.map((b) => b.cidr)));
        expectWellFormed(project, ownedRules(fake, project), {});
        expect(fake.rules(project).filter((r) => r.name === 'allow-https')).toEqual(foreign);
        expect((await providerPass(next, sc.desired)).plan.changes).toEqual([]);
        lines.push(`k=${k}: ${accepted} write(s) accepted before the drop, ${resumed.passes - 1} writing pass(es), ${resumed.calls} calls to converge`);
      }
      expect(total).toBeGreaterThan(2);
      report(`behaviour 5 (${sc.name}, ${total} writes planned): ${lines.join('; ')}`);
    });
  }
});

describe('providers/gcp-firewall: behaviour 5b (the next run starts before the dead run\'s operations finish)', () => {
  it('fails the writes that collide with them as retryable, never as a conflict, and converges once they finish', async () => {
    // Prepare: a run dies right after its writes were accepted; their operations are still running.
    const project = newProject(fake);
    const config = { ranges_per_rule: 2, retry: { attempts: 2, base_delay: '1ms', max_delay: '2ms' } };
    const initial = [ban('192.0.2.1'), ban('192.0.2.2'), ban('2001:db8::1')];
    await providerPass(makeProvider(fake, project, config), initial);
    const desired = [ban('192.0.2.1'), ban('192.0.2.3'), ban('198.51.100.1'), ban('2001:db8::2')];
    fake.setBehaviour({ operationMs: 60_000 });
    fake.setFaults({ failAfterWrites: 3 });
    await providerPass(makeProvider(fake, project, config), desired).catch(() => undefined);
    fake.setFaults({});
    // Act: the next run, while those operations are still running.
    const { sleep } = recordingSleep();
    const next = makeProvider(fake, project, config, { sleep });
    const early = await providerPass(next, desired);
    const failed = early.result?.outcomes.filter((o) => o.status === 'failed') ?? [];
    fake.settle();
    const resumed = await converge(next, desired);
    // Assess
    expect(failed.length).toBeGreaterThan(0);
    for (const o of failed) expect(o.error).toBeInstanceOf(RetryableError);
    expect(failed.some((o) => (o.error as RetryableError).code === 'stale_plan' || (o.error as RetryableError).code === 'resourceNotReady')).toBe(true);
    expect(enforcedCidrs(fake, project)).toEqual(sorted(desired.map((b) => b.cidr)));
    expectWellFormed(project, ownedRules(fake, project));
    report(`behaviour 5b: the next run met ${failed.length} write(s) colliding with the dead run's operations (${failed.map((o) => (o.error as RetryableError).code).join(', ')}), all retryable; converged ${resumed.passes - 1} writing pass(es) after they finished`);
  });
});

describe('providers/gcp-firewall: behaviour 6 (every source down)', () => {
  it('removes expiry-bucket rules once their recorded expiry passes, from the recorded state alone', async () => {
    // Prepare: two expiry buckets (1 h wide): +1 h and +5 h.
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 10 });
    await providerPass(provider, [
      ban('192.0.2.1', { expiresAt: NOW + HOUR }),
      ban('192.0.2.2', { expiresAt: NOW + HOUR + 20 * 60_000 }),
      ban('198.51.100.1', { expiresAt: NOW + 5 * HOUR }),
      ban('2001:db8::1', { expiresAt: NOW + 5 * HOUR }),
    ]);
    const recorded = new Map(ownedRules(fake, project).map((r) => [r.sourceRanges!.join(','), parseMarker(r.description)!.expiresAt]));
    // Act: the LAPI is down; the desired state is what the rules record, at two later times.
    const passAt = async (now: number) => {
      const state = await provider.read();
      fake.resetCounters();
      const out = await providerPass(provider, bansFromRules(state.rules, now), { now });
      return { ...out, ops: { ...fake.calls.byOp } };
    };
    const withinBucket = await passAt(NOW + HOUR + 10 * 60_000);
    const past = await passAt(NOW + 2 * HOUR);
    // Assess: the +1 h rule records its latest member's expiry, so no CIDR outlives its own by more than the bucket.
    expect(recorded.get('192.0.2.1/32,192.0.2.2/32')).toBe(NOW + HOUR + 20 * 60_000);
    expect(withinBucket.plan.changes).toEqual([]);
    expect(past.plan.changes.map((c) => [c.kind, c.removed])).toEqual([['delete', ['192.0.2.1/32', '192.0.2.2/32']]]);
    expect(past.ops['firewalls.delete']).toBe(1);
    expect(past.ops['firewalls.insert']).toBeUndefined();
    expect(past.ops['firewalls.patch']).toBeUndefined();
    expect(enforcedCidrs(fake, project)).toEqual(['198.51.100.1/32', '2001:db8::1/128']);
  });
});

describe('providers/gcp-firewall: behaviour 7 (plan never writes)', () => {
  it('plan makes no write, and shows rule names, priorities, directions and ranges', async () => {
    // Prepare: existing rules, so the plan creates, updates and deletes.
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 2, priority_band: { start: 100, end: 101 } });
    await providerPass(provider, [ban('192.0.2.1', { expiresAt: NOW + HOUR }), ban('198.51.100.1'), ban('198.51.100.2')]);
    const before = fake.rules(project);
    fake.resetCounters();
    // Act
    const { plan, result } = await providerPass(provider, [ban('198.51.100.1'), ban('2001:db8::1'), ban('2001:db8::2'), ban('2001:db8::3')], { apply: false });
    const text = planToText({ version: 1, generatedAt: new Date(NOW).toISOString(), failStatic: false, sources: [], refused: [], targets: [plan] } satisfies Plan);
    // Assess
    expect(result).toBeUndefined();
    expect(writesSeen(fake)).toBe(0);
    expect(Object.keys(fake.calls.byOp)).toEqual(['firewalls.list']);
    expect(fake.rules(project)).toEqual(before);
    expect(plan.changes.map((c) => c.kind).sort()).toEqual(['create', 'update', 'update']);
    expect(Object.values(plan.slots!)).toEqual(
      expect.arrayContaining([
        { name: 'cloud-bouncer-test-001', priority: 100, direction: 'INGRESS' },
        { name: 'cloud-bouncer-test-002', priority: 101, direction: 'INGRESS' },
        { name: 'cloud-bouncer-test-003', priority: 101, direction: 'INGRESS' },
      ]),
    );
    expect(text).toMatch(/name=cloud-bouncer-test-003 priority=101 direction=INGRESS \[IPv6\]/);
    expect(text).toContain('+ 2001:db8::1/128');
  });
});
