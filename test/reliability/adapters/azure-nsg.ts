/**
 * azure-nsg against the fake ARM server over TLS, with the real
 * NetworkManagementClient. Observed through the fake's `onStateChange` hook
 * (a write accepted, an operation settling or rolled back).
 */
import { tryParseCidr } from '../../../src/core/cidr.js';
import { parseMarker } from '../../../src/core/marker.js';
import type { FakeRuleProps } from '../../fakes/azure/arm-server.js';
import { RG, makeProvider, newNsg, ownedRules, startFake, type Env } from '../../providers/azure-nsg/setup.js';
import type { Problem, TargetAdapter } from '../harness.js';

const OWNER = 'test';
const BAND = { start: 100, end: 199 };

const FOREIGN: (FakeRuleProps & { name: string })[] = [
  { name: 'deny-scanner', description: 'operator block', protocol: '*', sourcePortRange: '*', destinationPortRange: '*', sourceAddressPrefix: '203.0.113.200/32', destinationAddressPrefix: '*', access: 'Deny', priority: 250, direction: 'Inbound' },
  { name: 'allow-sip', description: 'SIP trunk', protocol: 'Udp', sourcePortRange: '*', destinationPortRange: '5060-5061', sourceAddressPrefix: '*', destinationAddressPrefix: '*', access: 'Allow', priority: 300, direction: 'Inbound' },
  // Inside our priority numbers, but the other direction: not a conflict.
  { name: 'deny-egress-lab', protocol: '*', sourcePortRange: '*', destinationPortRange: '*', sourceAddressPrefix: '*', destinationAddressPrefix: '198.18.200.0/24', access: 'Deny', priority: 150, direction: 'Outbound' },
  // Another cloud-bouncer deployment (owner `other`) in its own band.
  { name: 'cloud-bouncer-other-0210', description: `cloud-bouncer owner=other exp=${Math.ceil(Date.UTC(2026, 10, 24) / 1000)}`, protocol: '*', sourcePortRange: '*', destinationPortRange: '*', sourceAddressPrefixes: ['198.18.9.9/32'], destinationAddressPrefix: '*', access: 'Deny', priority: 210, direction: 'Inbound' },
];

export function azureNsgAdapter(): TargetAdapter {
  let env: Env | undefined;
  let nsg = '';
  const arm = () => {
    if (!env) throw new Error('azure-nsg adapter: not started');
    return env;
  };
  const ours = () => ownedRules(arm(), nsg, OWNER);

  return {
    kind: 'azure-nsg',
    supports: new Set(['throttle', 'server-errors', 'latency', 'latency-timeout', 'drops', 'late-failures', 'kill']),
    async start() {
      env = await startFake();
    },
    async stop() {
      await env?.close();
    },
    async newTarget() {
      const e = arm();
      e.fake.reset();
      e.fake.settle();
      // Operations settle within 50 ms, and 429s ask for no wait: the suite stays short.
      // Retry-After itself is covered by the azure-nsg tests.
      e.fake.setBehaviour({ operationMs: 50, retryAfterSec: 0 });
      nsg = newNsg(e, FOREIGN);
    },
    async provider(opts = {}) {
      const e = arm();
      const over: Record<string, unknown> = {
        nsg_name: nsg,
        priority_band: BAND,
        prefixes_per_rule: 3,
        poll_interval: '5ms',
        request_timeout: `${opts.requestTimeoutMs ?? 5_000}ms`,
        retry: { attempts: 4, base_delay: '5ms', max_delay: '40ms' },
      };
      // The provider serialises writes per NSG within a process, keyed by endpoint and NSG. A second
      // process shares nothing: reach the same server by another name so its queue is its own.
      if (opts.instance === 'second') over.endpoint = e.fake.url.replace('127.0.0.1', 'localhost');
      return makeProvider(e, over, {}, OWNER);
    },
    setFaults(cfg) {
      arm().fake.setFaults(cfg);
    },
    faultState() {
      return arm().fake.faults;
    },
    async settle() {
      arm().fake.settle();
    },
    snapshot() {
      return arm().fake.rules(RG, nsg);
    },
    ownedCidrs() {
      return ours().flatMap((r) => r.sourceAddressPrefixes ?? []);
    },
    denyCidrs() {
      return arm()
        .fake.rules(RG, nsg)
        .filter((r) => r.access?.toLowerCase() === 'deny')
        .flatMap((r) => [...(r.sourceAddressPrefixes ?? []), ...(r.destinationAddressPrefixes ?? []), r.sourceAddressPrefix ?? '', r.destinationAddressPrefix ?? '']);
    },
    foreignRules() {
      return arm()
        .fake.rules(RG, nsg)
        .filter((r) => !r.name.startsWith(`cloud-bouncer-${OWNER}-`))
        .map((r) => JSON.stringify(r))
        .sort();
    },
    problems() {
      const out: Problem[] = [];
      const bad = (name: string, why: string) => out.push({ kind: 'invalid', message: `${name}: ${why}` });
      const priorities = new Map<number, string>();
      for (const r of ours()) {
        if (r.provisioningState !== 'Succeeded') out.push({ kind: 'leftover', message: `${r.name} is ${r.provisioningState}` });
        if (r.access !== 'Deny' || r.protocol !== '*' || r.direction !== 'Inbound') bad(r.name, `not an inbound deny-all rule (${r.access} ${r.protocol} ${r.direction})`);
        if (r.sourcePortRange !== '*' || r.destinationPortRange !== '*' || r.destinationAddressPrefix !== '*') bad(r.name, 'ports or destination are not *');
        const cidrs = r.sourceAddressPrefixes ?? [];
        const families = new Set(cidrs.map((c) => tryParseCidr(c)?.family));
        if (cidrs.length === 0 || families.size !== 1 || families.has(undefined)) bad(r.name, `prefixes ${cidrs.join(',')} are not one family of CIDRs`);
        if (parseMarker(r.description)?.owner !== OWNER) bad(r.name, `description ${JSON.stringify(r.description)} is not our marker`);
        const p = r.priority ?? -1;
        if (p < BAND.start || p > BAND.end || r.name !== `cloud-bouncer-${OWNER}-${String(p).padStart(4, '0')}`) bad(r.name, `priority ${p} does not match the name or the band`);
        if (priorities.has(p)) bad(r.name, `priority ${p} also used by ${priorities.get(p)}`);
        priorities.set(p, r.name);
      }
      return out;
    },
    apiCalls() {
      return arm().fake.calls.total;
    },
    faultsInjected() {
      const f = arm().fake;
      return f.faults.injected.throttle + f.faults.injected.server_error + f.faults.injected.drop + f.lateFailures;
    },
    tamperForeign() {
      arm().fake.setRuleDirect(RG, nsg, { ...FOREIGN[1]!, destinationPortRange: '5060-5062' });
    },
    observe(fn) {
      arm().fake.onStateChange = fn ? () => fn() : undefined;
    },
  };
}
