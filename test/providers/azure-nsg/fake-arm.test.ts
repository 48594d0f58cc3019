/**
 * The fake ARM server answers like the REST spec and its examples
 * (Microsoft.Network/stable/2024-05-01/networkSecurityGroup.json,
 * examples/NetworkSecurityGroupGet.json, NetworkSecurityGroupRuleCreate.json,
 * NetworkSecurityGroupRuleList.json), checked on the wire and through the
 * real SDK client. If the fake drifted, the provider tests would prove less.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { NetworkManagementClient } from '@azure/arm-network';
import { readFileSync } from 'node:fs';
import { RG, SUB, armRequest, newNsg, startFake, testCredential, type Env } from './setup.js';

let env: Env;
const base = `/subscriptions/${SUB}/resourceGroups/${RG}/providers/Microsoft.Network/networkSecurityGroups`;
const v = '?api-version=2024-05-01';

/** The request body of examples/NetworkSecurityGroupRuleCreate.json. */
const exampleRule = {
  properties: {
    protocol: '*',
    sourceAddressPrefix: '10.0.0.0/8',
    destinationAddressPrefix: '11.0.0.0/8',
    access: 'Deny',
    destinationPortRange: '8080',
    sourcePortRange: '*',
    priority: 100,
    direction: 'Outbound',
  },
};

function rule(priority: number, props: Record<string, unknown> = {}) {
  return { properties: { protocol: '*', sourcePortRange: '*', destinationPortRange: '*', access: 'Deny', direction: 'Inbound', priority, sourceAddressPrefix: '192.0.2.1', destinationAddressPrefix: '*', ...props } };
}

function sdk(): NetworkManagementClient {
  return new NetworkManagementClient(testCredential, SUB, {
    endpoint: env.fake.url,
    retryOptions: { maxRetries: 0 },
    tlsOptions: { ca: readFileSync(env.tls.caPath, 'utf8') },
  });
}

beforeAll(async () => {
  env = await startFake({ limits: { rulesPerNsg: 5 } });
});

beforeEach(() => {
  env.fake.reset();
  env.fake.settle();
});

afterAll(async () => {
  await env.close();
});

describe('fakes/azure ARM server', () => {
  it('answers an NSG GET in the shape of the spec example, default rules included', async () => {
    const nsg = newNsg(env, [{ name: 'rule1', protocol: '*', sourcePortRange: '*', destinationPortRange: '80', sourceAddressPrefix: '*', destinationAddressPrefix: '*', access: 'Allow', priority: 130, direction: 'Inbound' }]);
    const res = await armRequest(env, 'GET', `${base}/${nsg}${v}`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      name: nsg,
      id: `${base}/${nsg}`,
      type: 'Microsoft.Network/networkSecurityGroups',
      location: expect.any(String),
      properties: {
        provisioningState: 'Succeeded',
        securityRules: [{ name: 'rule1', id: `${base}/${nsg}/securityRules/rule1`, properties: { provisioningState: 'Succeeded', access: 'Allow', priority: 130, direction: 'Inbound', destinationPortRange: '80' } }],
      },
    });
    expect(res.body.properties!.defaultSecurityRules!.map((r) => [r.name, r.properties.priority])).toEqual([
      ['AllowVnetInBound', 65000],
      ['AllowAzureLoadBalancerInBound', 65001],
      ['DenyAllInBound', 65500],
      ['AllowVnetOutBound', 65000],
      ['AllowInternetOutBound', 65001],
      ['DenyAllOutBound', 65500],
    ]);
  });

  it('answers the example rule PUT with 201 and Azure-AsyncOperation, and the operation goes InProgress then Succeeded', async () => {
    const nsg = newNsg(env);
    const put = await armRequest(env, 'PUT', `${base}/${nsg}/securityRules/rule1${v}`, exampleRule);
    const first = await armRequest(env, 'GET', put.headers['azure-asyncoperation'] as string);
    const second = await armRequest(env, 'GET', put.headers['azure-asyncoperation'] as string);
    const got = await armRequest(env, 'GET', `${base}/${nsg}/securityRules/rule1${v}`);
    expect(put.status).toBe(201);
    expect(put.headers['azure-asyncoperation']).toMatch(new RegExp(`^https://127\\.0\\.0\\.1:\\d+/subscriptions/${SUB}/providers/Microsoft\\.Network/locations/\\w+/operations/[0-9a-f-]+\\?api-version=2024-05-01$`));
    expect(put.body).toMatchObject({ name: 'rule1', properties: { provisioningState: 'Updating', priority: 100, direction: 'Outbound' } });
    expect([first.body, second.body]).toEqual([{ status: 'InProgress' }, { status: 'Succeeded' }]);
    expect(got.body).toMatchObject({ name: 'rule1', id: `${base}/${nsg}/securityRules/rule1`, properties: { provisioningState: 'Succeeded', ...exampleRule.properties } });
  });

  it('answers a rule DELETE with 202 and Location, polls 202 then 204, and a missing rule with 204', async () => {
    const nsg = newNsg(env, [{ name: 'rule1', ...rule(100).properties }]);
    const del = await armRequest(env, 'DELETE', `${base}/${nsg}/securityRules/rule1${v}`);
    const first = await armRequest(env, 'GET', del.headers.location as string);
    const second = await armRequest(env, 'GET', del.headers.location as string);
    const again = await armRequest(env, 'DELETE', `${base}/${nsg}/securityRules/rule1${v}`);
    expect(del.status).toBe(202);
    expect(del.headers.location).toMatch(/\/providers\/Microsoft\.Network\/locations\/\w+\/operationResults\//);
    expect([first.status, second.status]).toEqual([202, 204]);
    expect(again.status).toBe(204);
    expect(env.fake.rules(RG, nsg)).toEqual([]);
  });

  it.each([
    ['a priority below 100', 'r1', rule(99), 'SecurityRuleInvalidPriority'],
    ['a priority above 4096', 'r1', rule(4097), 'SecurityRuleInvalidPriority'],
    ['a name of 81 characters', 'n'.repeat(81), rule(100), 'InvalidResourceName'],
    ['a description of 141 characters', 'r1', rule(100, { description: 'd'.repeat(141) }), 'SecurityRuleDescriptionTooLong'],
    ['IPv4 and IPv6 in one rule', 'r1', rule(100, { sourceAddressPrefix: undefined, sourceAddressPrefixes: ['192.0.2.1/32', '2001:db8::1/128'] }), 'ResourceCannotContainAddressPrefixesFromDifferentAddressFamilies'],
    ['a service tag inside sourceAddressPrefixes', 'r1', rule(100, { sourceAddressPrefix: undefined, sourceAddressPrefixes: ['Internet'] }), 'SecurityRuleParameterContainsUnsupportedValue'],
    ['4001 source prefixes', 'r1', rule(100, { sourceAddressPrefix: undefined, sourceAddressPrefixes: Array.from({ length: 4001 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`) }), 'SecurityRuleAddressesOrPortsPerSecurityGroupLimitReached'],
  ])('refuses %s with 400 %s', async (_what, name, body, code) => {
    const nsg = newNsg(env);
    const res = await armRequest(env, 'PUT', `${base}/${nsg}/securityRules/${name}${v}`, body);
    expect(res.status).toBe(400);
    expect(res.body.error!.code).toBe(code);
    expect(env.fake.rules(RG, nsg)).toEqual([]);
  });

  it('refuses a second rule with the same priority and direction, and accepts it for the other direction', async () => {
    const nsg = newNsg(env, [{ name: 'a', ...rule(100).properties }]);
    const clash = await armRequest(env, 'PUT', `${base}/${nsg}/securityRules/b${v}`, rule(100));
    const other = await armRequest(env, 'PUT', `${base}/${nsg}/securityRules/c${v}`, rule(100, { direction: 'Outbound' }));
    expect(clash.status).toBe(400);
    expect(clash.body.error).toMatchObject({ code: 'SecurityRuleConflict', message: expect.stringMatching(/Rules cannot have the same Priority and Direction/) });
    expect(other.status).toBe(201);
  });

  it('refuses a rule beyond the NSG rule limit with SecurityRuleCountLimitReached', async () => {
    const nsg = newNsg(env, [1, 2, 3, 4, 5].map((i) => ({ name: `r${i}`, ...rule(100 + i).properties })));
    const res = await armRequest(env, 'PUT', `${base}/${nsg}/securityRules/r6${v}`, rule(200));
    expect(res.status).toBe(400);
    expect(res.body.error!.code).toBe('SecurityRuleCountLimitReached');
  });

  it('refuses writes while another operation on the NSG is in progress, with 409 AnotherOperationInProgress or 429 RetryableError', async () => {
    const nsg = newNsg(env);
    env.fake.setBehaviour({ operationMs: 60_000, pollsUntilDone: 5 });
    await armRequest(env, 'PUT', `${base}/${nsg}/securityRules/a${v}`, rule(100));
    const answers = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => armRequest(env, 'PUT', `${base}/${nsg}/securityRules/b${i}${v}`, rule(200 + i))));
    for (const a of answers) {
      if (a.status === 409) expect(a.body.error!.code).toBe('AnotherOperationInProgress');
      else {
        expect(a.status).toBe(429);
        expect(a.body.error).toMatchObject({ code: 'RetryableError', details: [{ code: 'RetryableErrorDueToAnotherOperation' }] });
        expect(a.headers['retry-after']).toBe('1');
      }
    }
    expect(new Set(answers.map((a) => a.status))).toEqual(new Set([409, 429]));
    expect(env.fake.realConflicts).toBe(6);
  });

  it('rolls a change back when its operation ends Failed', async () => {
    const nsg = newNsg(env, [{ name: 'keep', ...rule(100).properties }]);
    env.fake.setFaults({ lateFailureRate: 1 });
    const put = await armRequest(env, 'PUT', `${base}/${nsg}/securityRules/keep${v}`, rule(100, { sourceAddressPrefix: '198.51.100.1' }));
    await armRequest(env, 'GET', put.headers['azure-asyncoperation'] as string);
    const end = await armRequest(env, 'GET', put.headers['azure-asyncoperation'] as string);
    expect(end.body).toEqual({ status: 'Failed', error: { code: 'InternalServerError', message: expect.any(String) } });
    expect(env.fake.rules(RG, nsg)).toEqual([expect.objectContaining({ name: 'keep', sourceAddressPrefix: '192.0.2.1', provisioningState: 'Succeeded' })]);
  });

  it('answers injected throttling with 429 and Retry-After', async () => {
    const nsg = newNsg(env);
    env.fake.setBehaviour({ retryAfterSec: 7, throttleStyle: 'throttled' });
    env.fake.setFaults({ throttleRate: 1 });
    const res = await armRequest(env, 'PUT', `${base}/${nsg}/securityRules/a${v}`, rule(100));
    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('7');
    expect(res.body.error!.code).toBe('SubscriptionRequestsThrottled');
  });

  it('refuses requests without a bearer token', async () => {
    const nsg = newNsg(env);
    const res = await armRequest(env, 'GET', `${base}/${nsg}${v}`, undefined, {});
    expect(res.status).toBe(401);
    expect(res.body.error!.code).toBe('AuthenticationFailed');
  });

  it('serves the real SDK: rules listed across pages, rule put through its poller, NSG put', async () => {
    const client = sdk();
    const nsg = newNsg(env, [1, 2, 3, 4, 5].map((i) => ({ name: `r${i}`, ...rule(100 + i).properties })));
    env.fake.setBehaviour({ pageSize: 2 });
    const listed: string[] = [];
    for await (const r of client.securityRules.list(RG, nsg)) listed.push(r.name!);
    const created = await client.networkSecurityGroups.createOrUpdate(RG, 'nsg-sdk', { location: 'westeurope', securityRules: [{ name: 'x', protocol: '*', sourcePortRange: '*', destinationPortRange: '*', sourceAddressPrefixes: ['192.0.2.0/24'], destinationAddressPrefix: '*', access: 'Deny', priority: 100, direction: 'Inbound' }] }, { updateIntervalInMs: 1 });
    const put = await client.securityRules.createOrUpdate(RG, 'nsg-sdk', 'y', { protocol: '*', sourcePortRange: '*', destinationPortRange: '*', sourceAddressPrefixes: ['2001:db8::/64'], destinationAddressPrefix: '*', access: 'Deny', priority: 101, direction: 'Inbound' }, { updateIntervalInMs: 1 });
    expect(listed).toEqual(['r1', 'r2', 'r3', 'r4', 'r5']);
    expect(env.fake.calls.byOp['rules.list']).toBe(3);
    expect(created.securityRules?.map((r) => r.name)).toEqual(['x']);
    expect(put).toMatchObject({ name: 'y', provisioningState: 'Succeeded', sourceAddressPrefixes: ['2001:db8::/64'] });
  });
});
