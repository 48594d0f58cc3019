/**
 * The pure parts of the azure-nsg provider: slot names, ownership
 * classification, capacity, warnings, the per-write check, error
 * classification and config validation. Tables, no I/O.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { FatalError, OwnershipConflictError, RetryableError } from '../../../src/core/errors.js';
import { formatMarker } from '../../../src/core/marker.js';
import type { Change } from '../../../src/core/types.js';
import { classifyAzureError, parseRetryAfter } from '../../../src/providers/azure-nsg/client.js';
import { azureNsgConfigSchema, provider } from '../../../src/providers/azure-nsg/index.js';
import {
  classifyRule,
  countedPrefixes,
  nsgToState,
  ruleBody,
  slotName,
  slotPriority,
  writeVerdict,
  type ArmSecurityRule,
  type Layout,
} from '../../../src/providers/azure-nsg/mapping.js';
import { HOUR, NOW } from '../../helpers/bans.js';

const layout: Layout = {
  owner: 'test',
  namePrefix: 'cloud-bouncer',
  direction: 'Inbound',
  band: { start: 100, end: 109 },
  prefixesPerRule: 3,
  maxPrefixes: 4000,
  maxRules: 10,
  bucketMs: HOUR,
};

const exp = NOW + 4 * HOUR;

function ours(priority: number, cidrs: string[], over: Partial<ArmSecurityRule> = {}): ArmSecurityRule {
  return { name: slotName(layout, priority), provisioningState: 'Succeeded', ...ruleBody(layout, priority, cidrs, exp), ...over };
}

function foreign(name: string, priority: number, over: Partial<ArmSecurityRule> = {}): ArmSecurityRule {
  return { name, priority, direction: 'Inbound', access: 'Allow', protocol: 'Tcp', sourcePortRange: '*', destinationPortRange: '443', sourceAddressPrefix: '*', destinationAddressPrefix: '*', ...over };
}

describe('providers/azure-nsg mapping', () => {
  it('names a slot after its zero-padded priority and reads the priority back', () => {
    expect(slotName(layout, 100)).toBe('cloud-bouncer-test-0100');
    expect(slotPriority(layout, 'cloud-bouncer-test-4096')).toBe(4096);
    expect(slotPriority(layout, 'cloud-bouncer-other-0100')).toBeUndefined();
    expect(slotPriority(layout, 'cloud-bouncer-test-100')).toBeUndefined();
  });

  it('writes a Deny of every protocol and port with the CIDRs on the source side for Inbound and the destination side for Outbound', () => {
    expect(ruleBody(layout, 101, ['192.0.2.1/32'], exp)).toEqual({
      description: formatMarker({ owner: 'test', expiresAt: exp }),
      protocol: '*',
      sourcePortRange: '*',
      destinationPortRange: '*',
      access: 'Deny',
      priority: 101,
      direction: 'Inbound',
      sourceAddressPrefixes: ['192.0.2.1/32'],
      destinationAddressPrefix: '*',
    });
    expect(ruleBody({ ...layout, direction: 'Outbound' }, 101, ['192.0.2.1/32'], exp)).toMatchObject({ sourceAddressPrefix: '*', destinationAddressPrefixes: ['192.0.2.1/32'], direction: 'Outbound' });
  });

  it.each([
    ['no marker', { description: 'by hand' }, /no ownership marker/],
    ["another owner's marker", { description: formatMarker({ owner: 'other', expiresAt: exp }) }, /no ownership marker for owner test/],
    ['a priority that differs from its name', { priority: 105 }, /priority 105 differs from the 101/],
    ['the other direction', { direction: 'Outbound' }, /direction is Outbound/],
    ['Allow access', { access: 'Allow' }, /access is Allow/],
    ['a narrowed port', { destinationPortRange: '22' }, /narrowed to a protocol or port/],
    ['a wildcard among its prefixes', { sourceAddressPrefixes: ['*'] }, /not an IP or CIDR/],
    ['mixed families', { sourceAddressPrefixes: ['192.0.2.1/32', '2001:db8::1/128'] }, /mixes IPv4 and IPv6/],
  ])('treats a rule with our name and %s as a conflict, never as ours', (_what, over, message) => {
    const c = classifyRule(layout, ours(101, ['192.0.2.1/32'], over));
    expect(c.kind).toBe('conflict');
    expect(c.kind === 'conflict' && c.message).toMatch(message);
  });

  it('reads our rule back with canonical, sorted CIDRs and the recorded expiry (second precision)', () => {
    const c = classifyRule(layout, ours(102, ['198.51.100.7', '192.0.2.0/24']));
    expect(c).toEqual({ kind: 'owned', rule: { pool: 'inbound', slot: 'cloud-bouncer-test-0102', family: 4, cidrs: ['192.0.2.0/24', '198.51.100.7/32'], expiresAt: Math.ceil(exp / 1000) * 1000 } });
  });

  it('counts IPs and CIDRs on one side toward the NSG prefix cap, singular or plural, but not service tags or *', () => {
    expect(countedPrefixes({ sourceAddressPrefix: '10.0.0.0/8' }, 'source')).toBe(1);
    expect(countedPrefixes({ sourceAddressPrefix: 'Internet' }, 'source')).toBe(0);
    expect(countedPrefixes({ sourceAddressPrefix: '*', sourceAddressPrefixes: [] }, 'source')).toBe(0);
    expect(countedPrefixes({ sourceAddressPrefixes: ['10.0.0.1', '2001:db8::/48'], destinationAddressPrefixes: ['10.9.9.9'] }, 'source')).toBe(2);
  });

  it('deducts foreign prefixes on our side and foreign rules from capacity, and skips priorities taken in our direction only', () => {
    const state = nsgToState(layout, {
      securityRules: [
        ours(100, ['192.0.2.1/32']),
        foreign('partners', 3000, { sourceAddressPrefix: undefined, sourceAddressPrefixes: ['10.1.0.0/16', '10.2.0.0/16'] }),
        foreign('egress', 102, { direction: 'Outbound', sourceAddressPrefix: '*', destinationAddressPrefixes: ['10.3.0.0/16', '10.4.0.0/16', '10.5.0.0/16'] }),
      ],
    });
    expect(state.conflicts).toEqual([]);
    expect(state.rules.map((r) => r.slot)).toEqual(['cloud-bouncer-test-0100']);
    expect(state.pools[0]).toMatchObject({ id: 'inbound', maxCidrs: 3998, maxRules: 10, cidrsPerRule: 3, families: [4, 6] });
    expect(state.pools[0]!.freeSlots).toEqual([101, 102, 103, 104, 105, 106, 107, 108, 109].map((p) => slotName(layout, p)));
  });

  it('never offers more rules than Azure allows per NSG once foreign rules are counted', () => {
    const many = Array.from({ length: 995 }, (_, i) => foreign(`f${i}`, 200 + i, { direction: i % 2 ? 'Outbound' : 'Inbound' }));
    expect(nsgToState(layout, { securityRules: many }).pools[0]!.maxRules).toBe(5);
  });

  it('reports a foreign rule of our direction inside the band as a conflict', () => {
    const state = nsgToState(layout, { securityRules: [foreign('sip', 105)] });
    expect(state.conflicts).toEqual([{ slot: 'sip', message: expect.stringMatching(/sits inside our priority band 100-109/) }]);
  });

  it('warns about a foreign Allow before our band that covers everything or a banned CIDR, and not about one after it', () => {
    const band = { ...layout, band: { start: 200, end: 209 } };
    const own = { name: slotName(band, 200), ...ruleBody(band, 200, ['192.0.2.0/24'], exp) };
    const state = nsgToState(band, {
      flushConnection: true,
      subnets: [{ id: 'subnet-a' }],
      securityRules: [
        own,
        foreign('all', 110, { sourceAddressPrefix: 'Internet' }),
        foreign('office', 120, { sourceAddressPrefix: '192.0.2.77' }),
        foreign('unrelated', 130, { sourceAddressPrefix: '10.0.0.0/8' }),
        foreign('late', 300, { sourceAddressPrefix: '*' }),
      ],
    });
    expect(state.warnings).toHaveLength(2);
    expect(state.warnings[0]).toMatch(/allow rule all .* lets every address through/);
    expect(state.warnings[1]).toMatch(/allow rule office .* lets some banned addresses through/);
  });

  it('warns, naming the NSG, when flushConnection is off, so flows opened before a ban survive it', () => {
    expect(nsgToState(layout, { name: 'edge-nsg', securityRules: [], subnets: [{ id: 'subnet-a' }] }).warnings).toEqual([expect.stringMatching(/^NSG edge-nsg has flushConnection off: flows opened before an address was banned stay open/)]);
    expect(nsgToState(layout, { name: 'edge-nsg', securityRules: [], flushConnection: false, subnets: [{ id: 'subnet-a' }] }).warnings).toHaveLength(1);
    expect(nsgToState(layout, { name: 'edge-nsg', securityRules: [], flushConnection: true, subnets: [{ id: 'subnet-a' }] }).warnings).toEqual([]);
  });

  it('warns, naming the NSG, when it is associated with no subnet and no network interface', () => {
    const none = nsgToState(layout, { name: 'edge-nsg', securityRules: [], flushConnection: true }).warnings;
    const nic = nsgToState(layout, { name: 'edge-nsg', securityRules: [], flushConnection: true, networkInterfaces: [{ id: 'nic-a' }] }).warnings;
    expect(none).toEqual([expect.stringMatching(/^NSG edge-nsg is associated with no subnet or network interface: its rules filter no traffic/)]);
    expect(nic).toEqual([]);
  });

  it('marks an owned rule left Failed for a rewrite, and warns; a foreign Failed rule is only warned about', () => {
    const own = { name: slotName(layout, 101), ...ruleBody(layout, 101, ['192.0.2.1/32'], exp), provisioningState: 'Failed' };
    const other = { ...foreign('web', 300), provisioningState: 'Failed' };
    const state = nsgToState(layout, { flushConnection: true, subnets: [{ id: 'subnet-a' }], securityRules: [own, other] });
    expect(state.rules.map((r) => [r.slot, r.repair])).toEqual([[slotName(layout, 101), 'rewrite a rule Azure left in provisioning state Failed']]);
    expect(state.warnings).toEqual([expect.stringMatching(/which the next apply does$/), expect.stringMatching(/rule web is in provisioning state Failed; Azure may not enforce it until it is written again$/)]);
  });

  describe('the per-write check', () => {
    const create: Change = { kind: 'create', pool: 'inbound', slot: slotName(layout, 101), family: 4, phase: 2, after: { cidrs: ['192.0.2.1/32'], expiresAt: exp }, added: ['192.0.2.1/32'], removed: [], reason: 'ban 1' };
    const del: Change = { kind: 'delete', pool: 'inbound', slot: slotName(layout, 101), family: 4, phase: 1, before: { cidrs: ['192.0.2.1/32'], expiresAt: exp }, added: [], removed: ['192.0.2.1/32'], reason: 'lift 1' };

    it('writes a create into an empty slot, and stops when the slot already holds exactly the planned rule (a retry after a lost answer)', () => {
      expect(writeVerdict(layout, 't', create, undefined)).toBe('write');
      expect(writeVerdict(layout, 't', create, ours(101, ['192.0.2.1/32']))).toBe('done');
    });

    it('refuses to overwrite a slot another writer filled since the plan', () => {
      expect(() => writeVerdict(layout, 't', create, ours(101, ['198.51.100.1/32']))).toThrow(OwnershipConflictError);
      expect(() => writeVerdict(layout, 't', create, foreign(slotName(layout, 101), 101))).toThrow(OwnershipConflictError);
    });

    it('treats a delete of a missing rule as done, and waits for a rule that is still Updating', () => {
      expect(writeVerdict(layout, 't', del, undefined)).toBe('done');
      expect(() => writeVerdict(layout, 't', del, ours(101, ['192.0.2.1/32'], { provisioningState: 'Updating' }))).toThrow(RetryableError);
    });
  });
});

describe('providers/azure-nsg error classification', () => {
  const rest = (statusCode: number | undefined, code?: string, retryAfter?: string) =>
    Object.assign(new Error(`status ${statusCode}`), { name: 'RestError', statusCode, code, response: { headers: { get: (h: string) => (h === 'retry-after' ? retryAfter : undefined) } } });

  it.each([
    ['429 throttling, with its Retry-After', rest(429, 'SubscriptionRequestsThrottled', '7'), RetryableError, 7000],
    ['429 RetryableError (another operation)', rest(429, 'RetryableError', '10'), RetryableError, 10_000],
    ['409 AnotherOperationInProgress', rest(409, 'AnotherOperationInProgress'), RetryableError, undefined],
    ['500', rest(500, 'InternalServerError'), RetryableError, undefined],
    ['a reset connection', rest(undefined, 'ECONNRESET'), RetryableError, undefined],
    ['a timeout', Object.assign(new Error('aborted'), { name: 'AbortError' }), RetryableError, undefined],
    ['an operation that ended Failed', new Error('The long-running operation has failed. InternalServerError. An error occurred.'), RetryableError, undefined],
    ['400 validation', rest(400, 'SecurityRuleInvalidPriority'), FatalError, undefined],
    ['409 of another kind', rest(409, 'Conflict'), FatalError, undefined],
    ['403 authorization', rest(403, 'AuthorizationFailed'), FatalError, undefined],
    ['no credential', Object.assign(new Error('no managed identity'), { name: 'CredentialUnavailableError' }), FatalError, undefined],
  ])('classifies %s', (_what, err, cls, retryAfterMs) => {
    const out = classifyAzureError(err, 'write rule');
    expect(out).toBeInstanceOf(cls);
    expect(out.cause).toBe(err);
    if (out instanceof RetryableError) expect(out.retryAfterMs).toBe(retryAfterMs);
  });

  it('reads Retry-After in seconds or as an HTTP date', () => {
    expect(parseRetryAfter('12')).toBe(12_000);
    expect(parseRetryAfter(new Date(NOW + 5000).toUTCString(), NOW)).toBe(5000);
    expect(parseRetryAfter('soon')).toBeUndefined();
  });
});

describe('providers/azure-nsg config', () => {
  const base = { subscription_id: '6f1a5c2e-0000-4000-8000-00000000c0de', resource_group: 'rg-edge', nsg_name: 'nsg-pbx', priority_band: { start: 100, end: 199 } };

  it('fills the documented defaults', () => {
    expect(azureNsgConfigSchema.parse(base)).toMatchObject({ direction: 'Inbound', prefixes_per_rule: 100, max_prefixes: 4000, name_prefix: 'cloud-bouncer', bucket: 3_600_000, poll_interval: 2000 });
  });

  it.each([
    ['a band outside 100..4096', { priority_band: { start: 50, end: 199 } }, 'priority_band.start', /priority >= 100/],
    ['a band that ends before it starts', { priority_band: { start: 300, end: 200 } }, 'priority_band', /start <= end/],
    ['a write concurrency above 1', { queue: { concurrency: 2 } }, 'queue.concurrency', /expected 1 \(Azure rejects concurrent writes/],
    ['max_rules larger than the band', { max_rules: 101 }, 'max_rules', /at most 100/],
    ['a plain-http endpoint', { endpoint: 'http://127.0.0.1:8080' }, 'endpoint', /https/],
    ['an unknown key', { nsg: 'x' }, '', /nsg/],
  ])('refuses %s, naming the key', (_what, over, path, message) => {
    const r = azureNsgConfigSchema.safeParse({ ...base, ...over });
    expect(r.success).toBe(false);
    const issue = r.error!.issues[0]!;
    expect(issue.path.join('.')).toBe(path);
    expect(JSON.stringify(issue)).toMatch(message);
  });

  it('loads the Azure SDK only lazily: the module imports @azure/* by dynamic import() alone', async () => {
    const { build } = await import('esbuild');
    const out = await build({
      entryPoints: [fileURLToPath(new URL('../../../src/providers/azure-nsg/index.ts', import.meta.url))],
      bundle: true,
      write: false,
      metafile: true,
      platform: 'node',
      format: 'esm',
      packages: 'external',
      logLevel: 'silent',
    });
    const imports = Object.values(out.metafile.outputs).flatMap((o) => o.imports).filter((i) => i.path.startsWith('@azure/'));
    expect(provider.configSchema.safeParse(base).success).toBe(true);
    expect(imports.map((i) => i.path).sort()).toEqual(['@azure/arm-network', '@azure/identity']);
    expect(imports.every((i) => i.kind === 'dynamic-import')).toBe(true);
  });
});
