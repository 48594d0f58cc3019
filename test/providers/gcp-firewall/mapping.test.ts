/**
 * Pure translation between Compute firewall rules and the core vocabulary,
 * and the target config schema. No server, no SDK.
 */
import { describe, expect, it } from 'vitest';
import { toConfigError } from '../../../src/config.js';
import { formatMarker } from '../../../src/core/marker.js';
import { gcpFirewallConfigSchema } from '../../../src/providers/gcp-firewall/index.js';
import { classifyFirewall, firewallsToState, parseNetworkRef, ruleBody, rulePatch, slotIndex, slotName, slotPriority, type GcpFirewall, type Layout } from '../../../src/providers/gcp-firewall/mapping.js';
import { HOUR, NOW } from '../../helpers/bans.js';

const layout: Layout = {
  project: 'cb-proj',
  network: 'edge',
  owner: 'test',
  namePrefix: 'cloud-bouncer',
  direction: 'INGRESS',
  band: { start: 900, end: 902 },
  rangesPerRule: 4,
  maxRules: 5,
  bucketMs: HOUR,
  log: false,
  targetTags: [],
  targetServiceAccounts: [],
};

const NET = 'https://www.googleapis.com/compute/v1/projects/cb-proj/global/networks/edge';
const marker = (owner = 'test', exp = NOW + HOUR) => formatMarker({ owner, expiresAt: exp });
const ours = (name: string, ranges: string[], over: Partial<GcpFirewall> = {}): GcpFirewall => ({
  name,
  network: NET,
  priority: slotPriority(layout, slotIndex(layout, name) ?? 1),
  direction: 'INGRESS',
  denied: [{ IPProtocol: 'all', ports: [] }],
  allowed: [],
  sourceRanges: ranges,
  description: marker(),
  logConfig: { enable: false },
  ...over,
});

describe('providers/gcp-firewall/mapping: slots', () => {
  it('names slots <prefix>-<owner>-<nnn>, clamps priorities to the band, and reads names back', () => {
    expect(slotName(layout, 1)).toBe('cloud-bouncer-test-001');
    expect([1, 2, 3, 4].map((n) => slotPriority(layout, n))).toEqual([900, 901, 902, 902]);
    expect(slotIndex(layout, 'cloud-bouncer-test-042')).toBe(42);
    for (const name of ['cloud-bouncer-test-000', 'cloud-bouncer-test-1', 'cloud-bouncer-test-2-001', 'cloud-bouncer-other-001']) expect(slotIndex(layout, name)).toBeUndefined();
  });

  it('parses network references: names, partial and full URLs', () => {
    expect(parseNetworkRef('edge', 'p-1')).toEqual({ project: 'p-1', network: 'edge' });
    expect(parseNetworkRef('global/networks/edge', 'p-1')).toEqual({ project: 'p-1', network: 'edge' });
    expect(parseNetworkRef('projects/host/global/networks/shared', 'p-1')).toEqual({ project: 'host', network: 'shared' });
    expect(parseNetworkRef(NET, 'x')).toEqual({ project: 'cb-proj', network: 'edge' });
    expect(parseNetworkRef('Not A Network', 'p')).toBeUndefined();
  });
});

describe('providers/gcp-firewall/mapping: rule bodies', () => {
  it('builds an insert that denies every protocol from the CIDRs, with the marker and the slot priority', () => {
    expect(ruleBody({ ...layout, log: true, targetTags: ['pbx'] }, 'cloud-bouncer-test-002', ['192.0.2.1/32'], NOW + HOUR)).toEqual({
      name: 'cloud-bouncer-test-002',
      description: `cloud-bouncer owner=test exp=${(NOW + HOUR) / 1000}`,
      network: 'projects/cb-proj/global/networks/edge',
      priority: 901,
      direction: 'INGRESS',
      denied: [{ IPProtocol: 'all' }],
      sourceRanges: ['192.0.2.1/32'],
      logConfig: { enable: true },
      targetTags: ['pbx'],
    });
    expect(ruleBody({ ...layout, direction: 'EGRESS' }, 'cloud-bouncer-test-001', ['2001:db8::/64'], NOW).destinationRanges).toEqual(['2001:db8::/64']);
  });

  it('patches ranges, marker, priority and logging, never the name, network, direction or action', () => {
    const patch = rulePatch(layout, 'cloud-bouncer-test-001', ['192.0.2.1/32', '192.0.2.2/32'], NOW + 2 * HOUR);
    expect(Object.keys(patch).sort()).toEqual(['description', 'logConfig', 'priority', 'sourceRanges']);
  });
});

describe('providers/gcp-firewall/mapping: ownership', () => {
  const cases: [string, GcpFirewall, string][] = [
    ['our rule', ours('cloud-bouncer-test-001', ['192.0.2.1/32']), 'owned'],
    ['a foreign rule', { name: 'allow-ssh', network: NET, allowed: [{ IPProtocol: 'tcp', ports: ['22'] }], sourceRanges: ['0.0.0.0/0'] }, 'foreign'],
    ["another owner's rule", ours('cloud-bouncer-test-2-001', ['192.0.2.1/32'], { description: marker('test-2') }), 'other-owner'],
    ['our name without a marker', ours('cloud-bouncer-test-001', ['192.0.2.1/32'], { description: 'hand made' }), 'conflict:has no ownership marker'],
    ["our name with another owner's marker", ours('cloud-bouncer-test-001', ['192.0.2.1/32'], { description: marker('else') }), "conflict:its marker is not owner test's"],
    ['our prefix without a slot number', ours('cloud-bouncer-test-manual', ['192.0.2.1/32']), 'conflict:3-digit slot'],
    ['our rule on another network', ours('cloud-bouncer-test-001', ['192.0.2.1/32'], { network: NET.replace('edge', 'default') }), 'conflict:belongs to network'],
    ['our rule turned into an allow', ours('cloud-bouncer-test-001', ['192.0.2.1/32'], { denied: [], allowed: [{ IPProtocol: 'all' }] }), 'conflict:not a deny of every protocol'],
    ['our rule narrowed to a port', ours('cloud-bouncer-test-001', ['192.0.2.1/32'], { denied: [{ IPProtocol: 'tcp', ports: ['22'] }] }), 'conflict:not a deny of every protocol'],
    ['our rule of the other direction', ours('cloud-bouncer-test-001', ['192.0.2.1/32'], { direction: 'EGRESS' }), 'conflict:direction is EGRESS'],
    ['our rule with source tags', ours('cloud-bouncer-test-001', ['192.0.2.1/32'], { sourceTags: ['vm'] }), 'conflict:source tags'],
    ['our rule with mixed families', ours('cloud-bouncer-test-001', ['192.0.2.1/32', '2001:db8::1/128']), 'conflict:mixes IPv4 and IPv6'],
    ['our rule without ranges', ours('cloud-bouncer-test-001', []), 'conflict:lists no sourceRanges'],
  ];
  for (const [what, rule, want] of cases) {
    it(`classifies ${what} as ${want.split(':')[0]}`, () => {
      const c = classifyFirewall(layout, rule);
      const [kind, text] = want.split(':');
      expect(c.kind).toBe(kind);
      if (text) expect((c as { message: string }).message).toContain(text);
    });
  }

  it('reads an owned rule as canonical sorted CIDRs with its recorded expiry', () => {
    const c = classifyFirewall(layout, ours('cloud-bouncer-test-003', ['192.0.2.9', '10.0.0.0/8', '192.0.2.9/32']));
    expect(c).toEqual({ kind: 'owned', drift: [], rule: { pool: 'ingress', slot: 'cloud-bouncer-test-003', family: 4, cidrs: ['10.0.0.0/8', '192.0.2.9/32'], expiresAt: NOW + HOUR } });
  });

  it('reports drift in what the config sets as a warning, not a conflict', () => {
    const state = firewallsToState(layout, [ours('cloud-bouncer-test-001', ['192.0.2.1/32'], { priority: 5, logConfig: { enable: true }, disabled: true })]);
    expect(state.conflicts).toEqual([]);
    expect(state.rules).toHaveLength(1);
    expect(state.warnings).toHaveLength(2);
    expect(state.warnings[0]).toMatch(/cloud-bouncer-test-001 drifted from the config: priority 5 \(config: 900\); logging on \(config: off\); its next write/);
    expect(state.warnings[1]).toMatch(/cloud-bouncer-test-001 is disabled: its 1 range is not enforced/);
  });

  it('marks a rule someone disabled, and only that one', () => {
    const state = firewallsToState(layout, [ours('cloud-bouncer-test-001', ['192.0.2.1/32'], { disabled: true }), ours('cloud-bouncer-test-002', ['192.0.2.2/32'], { disabled: false })]);
    expect(state.rules.map((r) => [r.slot, r.disabled])).toEqual([
      ['cloud-bouncer-test-001', true],
      ['cloud-bouncer-test-002', undefined],
    ]);
  });
});

describe('providers/gcp-firewall/mapping: state', () => {
  it('offers names no rule of the project uses as free slots, and caps rules at max_rules', () => {
    const state = firewallsToState(layout, [
      ours('cloud-bouncer-test-001', ['192.0.2.1/32']),
      // A squatter on another network still takes its name: names are unique per project.
      { name: 'cloud-bouncer-test-003', network: NET.replace('edge', 'default'), allowed: [{ IPProtocol: 'all' }] },
    ]);
    expect(state.pools).toEqual([
      {
        id: 'ingress',
        families: [4, 6],
        cidrsPerRule: 4,
        maxRules: 5,
        maxCidrs: 20,
        freeSlots: ['cloud-bouncer-test-002', 'cloud-bouncer-test-004', 'cloud-bouncer-test-005'],
        bucketMs: HOUR,
        totals: { rules: 5, cidrs: 20 },
      },
    ]);
    expect(state.conflicts.map((c) => c.slot)).toEqual(['cloud-bouncer-test-003']);
  });

  it('after a quota hit, caps rules at those owned and reports the limit as quota', () => {
    const rules = [ours('cloud-bouncer-test-001', ['192.0.2.1/32']), ours('cloud-bouncer-test-002', ['2001:db8::1/128'])];
    const [pool] = firewallsToState(layout, rules, { quotaRules: 1 }).pools;
    expect(pool).toMatchObject({ maxRules: 2, ruleLimitReason: 'quota', maxCidrs: 20 });
    expect(firewallsToState(layout, rules).pools[0]!.ruleLimitReason).toBeUndefined();
  });

  it('counts foreign rules of our network only, and ignores disabled or later allow rules for warnings', () => {
    const state = firewallsToState(layout, [
      ours('cloud-bouncer-test-001', ['192.0.2.1/32']),
      { name: 'allow-any-disabled', network: NET, priority: 10, allowed: [{ IPProtocol: 'all' }], sourceRanges: ['0.0.0.0/0'], disabled: true },
      { name: 'allow-later', network: NET, priority: 1000, allowed: [{ IPProtocol: 'all' }], sourceRanges: ['0.0.0.0/0'] },
      { name: 'allow-other-dir', network: NET, priority: 10, direction: 'EGRESS', allowed: [{ IPProtocol: 'all' }], destinationRanges: ['0.0.0.0/0'] },
      { name: 'allow-unrelated', network: NET, priority: 10, allowed: [{ IPProtocol: 'tcp' }], sourceRanges: ['203.0.113.0/24'] },
      { name: 'elsewhere', network: NET.replace('edge', 'default'), priority: 10, allowed: [{ IPProtocol: 'all' }], sourceRanges: ['0.0.0.0/0'] },
    ]);
    expect(state.foreign.map((f) => f.slot)).toEqual(['allow-any-disabled', 'allow-later', 'allow-other-dir', 'allow-unrelated']);
    expect(state.foreign[1]!.description).toBe('allow-later INGRESS priority 1000 allow all from 0.0.0.0/0');
    expect(state.warnings).toEqual([]);
  });

  it('warns about an allow of everything before our band even before we own a rule', () => {
    const state = firewallsToState(layout, [{ name: 'allow-all', network: NET, priority: 100, allowed: [{ IPProtocol: 'all' }], sourceRanges: ['::/0'] }]);
    expect(state.warnings).toEqual(['foreign allow rule allow-all (priority 100, all) is evaluated before our deny rules (priority 900-902) and lets every address through']);
  });
});

describe('providers/gcp-firewall: config', () => {
  const base = { project: 'cb-proj', network: 'edge' };
  it('applies the documented defaults', () => {
    expect(gcpFirewallConfigSchema.parse(base)).toEqual({
      ...base,
      name_prefix: 'cloud-bouncer',
      direction: 'INGRESS',
      ranges_per_rule: 256,
      max_rules: 10,
      log: false,
      bucket: 3_600_000,
      request_timeout: 30_000,
      operation_timeout: 300_000,
      poll_interval: 1_000,
      quota_recheck: 3_600_000,
    });
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['both priority and priority_band', { priority: 5, priority_band: { start: 1, end: 2 } }, /^config: targets\[0\]\.priority_band: expected either priority or priority_band, not both$/],
    ['priority 65535', { priority: 65535 }, /priority: expected a priority <= 65534 \(65535 is the priority of the implied rules/],
    ['a reversed band', { priority_band: { start: 10, end: 5 } }, /priority_band: expected start <= end/],
    ['5001 ranges per rule', { ranges_per_rule: 5001 }, /ranges_per_rule: expected at most 5000/],
    ['a 29-character name prefix', { name_prefix: 'a'.repeat(29) }, /name_prefix: expected 1-28 lower-case letters/],
    ['a network of another project', { network: 'projects/host-proj/global/networks/shared' }, /network: expected a network of project cb-proj .*set project to host-proj/],
    ['target tags and service accounts', { target_tags: ['a'], target_service_accounts: ['sa@cb-proj.iam.gserviceaccount.com'] }, /target_service_accounts: expected either target_tags or target_service_accounts/],
    ['direction ingress in lower case', { direction: 'ingress' }, /direction/],
    ['an unknown key', { ranges: 5 }, /ranges: unknown key/],
  ];
  for (const [what, over, message] of bad) {
    it(`refuses ${what}, naming the key`, () => {
      const input = { ...base, ...over };
      const r = gcpFirewallConfigSchema.safeParse(input);
      expect(r.success).toBe(false);
      expect(toConfigError(r.error!, input, 'targets[0]').message).toMatch(message);
    });
  }
});
