/**
 * gcp-firewall against the fake Compute server (REST JSON, global
 * operations), with the real FirewallsClient.
 *
 * A Compute write changes the rules when its operation is DONE, not when it
 * is accepted, and the fake has no hook there: the adapter wraps the fake's
 * `finish` (where an operation lands) on the instance to observe every state.
 */
import { parseMarker } from '../../../src/core/marker.js';
import { tryParseCidr } from '../../../src/core/cidr.js';
import type { FakeCompute, FakeFirewall } from '../../fakes/gcp/compute-server.js';
import { makeProvider, newProject, ownedRules, startFake } from '../../providers/gcp-firewall/setup.js';
import type { Problem, TargetAdapter } from '../harness.js';

const OWNER = 'test';
/** The provider's default band: slot n has priority 900 + n - 1. */
const BAND_START = 900;
const RANGES_PER_RULE = 3;
const NETWORK = 'global/networks/edge';

const FOREIGN: FakeFirewall[] = [
  { name: 'deny-scanner', description: 'operator block', network: NETWORK, priority: 500, direction: 'INGRESS', denied: [{ IPProtocol: 'all' }], sourceRanges: ['203.0.113.200/32'] },
  { name: 'allow-sip', description: 'SIP trunk', network: NETWORK, priority: 1000, direction: 'INGRESS', allowed: [{ IPProtocol: 'udp', ports: ['5060-5061'] }], sourceRanges: ['0.0.0.0/0'] },
  { name: 'default-allow-ssh', network: 'global/networks/default', priority: 65534, direction: 'INGRESS', allowed: [{ IPProtocol: 'tcp', ports: ['22'] }], sourceRanges: ['0.0.0.0/0'] },
  // Another cloud-bouncer deployment (owner `other`) on the same network.
  { name: 'cloud-bouncer-other-001', description: `cloud-bouncer owner=other exp=${Math.ceil(Date.UTC(2026, 10, 24) / 1000)}`, network: NETWORK, priority: 950, direction: 'INGRESS', denied: [{ IPProtocol: 'all' }], sourceRanges: ['198.18.9.9/32'] },
];

export function gcpFirewallAdapter(): TargetAdapter {
  let fake: FakeCompute | undefined;
  let project = '';
  let observer: (() => void) | undefined;
  const compute = () => {
    if (!fake) throw new Error('gcp-firewall adapter: not started');
    return fake;
  };
  const ours = () => ownedRules(compute(), project, OWNER);

  return {
    kind: 'gcp-firewall',
    supports: new Set(['throttle', 'server-errors', 'latency', 'latency-timeout', 'drops', 'late-failures', 'kill']),
    async start() {
      fake = await startFake();
      const inner = fake as unknown as { finish(p: unknown, op: { status: string }): void };
      const finish = inner.finish.bind(fake);
      inner.finish = (p, op) => {
        const landing = op.status !== 'DONE';
        finish(p, op);
        if (landing) observer?.();
      };
    },
    async stop() {
      await fake?.close();
    },
    async newTarget() {
      const f = compute();
      f.reset();
      f.settle();
      // Operations finish within 50 ms: the suite stays short.
      f.setBehaviour({ operationMs: 50 });
      project = newProject(f, FOREIGN);
    },
    async provider(opts = {}) {
      return makeProvider(
        compute(),
        project,
        {
          ranges_per_rule: RANGES_PER_RULE,
          max_rules: 16,
          request_timeout: `${opts.requestTimeoutMs ?? 5_000}ms`,
          retry: { attempts: 4, base_delay: '5ms', max_delay: '40ms' },
        },
        {},
        OWNER,
      );
    },
    setFaults(cfg) {
      compute().setFaults(cfg);
    },
    faultState() {
      return compute().faults;
    },
    async settle() {
      compute().settle();
    },
    snapshot() {
      return { rules: compute().rules(project), operations: compute().operations(project) };
    },
    ownedCidrs() {
      return ours().flatMap((r) => r.sourceRanges ?? []);
    },
    denyCidrs() {
      return compute()
        .rules(project)
        .filter((r) => (r.denied ?? []).length > 0 && !r.disabled)
        .flatMap((r) => [...(r.sourceRanges ?? []), ...(r.destinationRanges ?? [])]);
    },
    foreignRules() {
      return compute()
        .rules(project)
        .filter((r) => !/^cloud-bouncer-test-\d{3}$/.test(r.name))
        .map((r) => JSON.stringify(r))
        .sort();
    },
    problems() {
      const out: Problem[] = [];
      const bad = (name: string, why: string) => out.push({ kind: 'invalid', message: `${name}: ${why}` });
      for (const op of compute().operations(project)) if (op.status !== 'DONE') out.push({ kind: 'leftover', message: `operation ${op.type} ${op.target} is ${op.status}` });
      for (const r of ours()) {
        const denied = r.denied ?? [];
        if (denied.length !== 1 || denied[0]!.IPProtocol !== 'all' || (r.allowed ?? []).length > 0) bad(r.name, `not a deny-all rule (${JSON.stringify(r.denied ?? r.allowed)})`);
        if (r.direction !== 'INGRESS' || !r.network?.endsWith('/global/networks/edge') || r.disabled) bad(r.name, `direction ${r.direction}, network ${r.network}, disabled ${r.disabled}`);
        const cidrs = r.sourceRanges ?? [];
        const families = new Set(cidrs.map((c) => tryParseCidr(c)?.family));
        if (cidrs.length === 0 || cidrs.length > RANGES_PER_RULE || families.size !== 1 || families.has(undefined)) bad(r.name, `ranges ${cidrs.join(',')} are not 1-${RANGES_PER_RULE} CIDRs of one family`);
        if (parseMarker(r.description)?.owner !== OWNER) bad(r.name, `description ${JSON.stringify(r.description)} is not our marker`);
        const n = Number(r.name.slice(-3));
        if (r.priority !== BAND_START + n - 1) bad(r.name, `priority ${r.priority} is not the slot's ${BAND_START + n - 1}`);
      }
      return out;
    },
    apiCalls() {
      return compute().calls.total;
    },
    faultsInjected() {
      const f = compute();
      return f.faults.injected.throttle + f.faults.injected.server_error + f.faults.injected.drop + f.lateFailures;
    },
    tamperForeign() {
      compute().setRuleDirect(project, { ...FOREIGN[1]!, allowed: [{ IPProtocol: 'udp', ports: ['5060-5062'] }] });
    },
    observe(fn) {
      observer = fn;
    },
  };
}
