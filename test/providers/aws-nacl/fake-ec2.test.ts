/**
 * The fake EC2 server, checked with the real `EC2Client`: every answer it
 * produces parses into the SDK's shapes (generated from the EC2 model,
 * `aws-models/ec2.json`), and it enforces the limits the provider relies on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CreateNetworkAclEntryCommand,
  CreateTagsCommand,
  DeleteNetworkAclEntryCommand,
  DeleteTagsCommand,
  DescribeNetworkAclsCommand,
  DescribeTagsCommand,
  EC2Client,
  ReplaceNetworkAclEntryCommand,
} from '@aws-sdk/client-ec2';
import { startFakeEc2, type FakeEc2 } from '../../fakes/ec2/server.js';

let fake: FakeEc2;
let ec2: EC2Client;

beforeAll(async () => {
  fake = await startFakeEc2();
  ec2 = new EC2Client({ endpoint: fake.url, region: 'eu-west-1', credentials: { accessKeyId: 'AKIAFAKE', secretAccessKey: 'fake' }, maxAttempts: 1 });
});

afterAll(async () => {
  ec2.destroy();
  await fake.close();
});

async function sdkError(p: Promise<unknown>): Promise<{ name: string; message: string; status?: number; requestId?: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; message: string; $metadata?: { httpStatusCode?: number; requestId?: string } };
    return { name: e.name, message: e.message, status: e.$metadata?.httpStatusCode, requestId: e.$metadata?.requestId };
  }
  throw new Error('expected the call to fail');
}

const entry = (over: Record<string, unknown> = {}) => ({ NetworkAclId: '', RuleNumber: 10, Protocol: '-1', RuleAction: 'deny' as const, Egress: false, CidrBlock: '192.0.2.7/32', ...over });

describe('fake EC2 (Query protocol) against the real EC2Client', () => {
  it('answers DescribeNetworkAcls with every entry field the SDK knows, tags included', async () => {
    const id = fake.addAcl({
      entries: [
        { rule: 100, cidr: '0.0.0.0/0' },
        { rule: 110, cidr: '2001:db8::/32', action: 'deny', protocol: '6', ports: [5060, 5061], egress: true },
      ],
      tags: { Name: 'pbx <edge> & "more"' },
    });
    const out = await ec2.send(new DescribeNetworkAclsCommand({ NetworkAclIds: [id] }));
    expect(out.$metadata.httpStatusCode).toBe(200);
    expect(out.$metadata.requestId).toMatch(/^[0-9a-f-]{36}$/);
    const acl = out.NetworkAcls![0]!;
    expect(acl).toMatchObject({ NetworkAclId: id, VpcId: expect.stringMatching(/^vpc-/), OwnerId: '111122223333', IsDefault: false });
    expect(acl.Associations).toEqual([{ NetworkAclAssociationId: expect.stringMatching(/^aclassoc-/), NetworkAclId: id, SubnetId: expect.stringMatching(/^subnet-[0-9a-f]{17}$/) }]);
    expect(acl.Tags).toEqual([{ Key: 'Name', Value: 'pbx <edge> & "more"' }]);
    expect(acl.Entries).toContainEqual({ RuleNumber: 100, Protocol: '-1', RuleAction: 'allow', Egress: false, CidrBlock: '0.0.0.0/0' });
    expect(acl.Entries).toContainEqual({ RuleNumber: 110, Protocol: '6', RuleAction: 'deny', Egress: true, Ipv6CidrBlock: '2001:db8::/32', PortRange: { From: 5060, To: 5061 } });
    // Default `*` entries, both directions: rule 32767 for IPv4 and 32768 for IPv6 (Amazon VPC quotas). They count toward the quota.
    const defaults = acl.Entries!.filter((e) => e.RuleNumber! > 32766).map((e) => [e.RuleNumber, e.Egress, e.CidrBlock ?? e.Ipv6CidrBlock]);
    expect(defaults.sort()).toEqual([
      [32767, false, '0.0.0.0/0'],
      [32767, true, '0.0.0.0/0'],
      [32768, false, '::/0'],
      [32768, true, '::/0'],
    ]);
  });

  it('associates a NACL with the subnets it was seeded with, none when told, and moves a subnet between NACLs', async () => {
    const lone = fake.addAcl({ subnets: [] });
    const a = fake.addAcl({ subnets: ['subnet-0000000000000000a', 'subnet-0000000000000000b'] });
    const b = fake.addAcl({ subnets: ['subnet-0000000000000000b'] }); // a subnet has one NACL: b takes it from a
    const out = await ec2.send(new DescribeNetworkAclsCommand({ NetworkAclIds: [lone, a, b] }));
    const subnets = (id: string) => out.NetworkAcls!.find((x) => x.NetworkAclId === id)!.Associations!.map((x) => x.SubnetId);
    expect(subnets(lone)).toEqual([]);
    expect(subnets(a)).toEqual(['subnet-0000000000000000a']);
    expect(subnets(b)).toEqual(['subnet-0000000000000000b']);
  });

  it('creates, replaces and deletes entries, canonicalising CIDRs as EC2 does', async () => {
    const id = fake.addAcl();
    await ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, CidrBlock: '198.51.100.77/24' })));
    await ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 11, CidrBlock: undefined, Ipv6CidrBlock: '2001:DB8:0:0::1/128' })));
    expect(fake.entries(id).filter((e) => e.ruleNumber < 100)).toEqual([
      { ruleNumber: 10, egress: false, protocol: '-1', ruleAction: 'deny', cidrBlock: '198.51.100.0/24' },
      { ruleNumber: 11, egress: false, protocol: '-1', ruleAction: 'deny', ipv6CidrBlock: '2001:db8::1/128' },
    ]);
    await ec2.send(new ReplaceNetworkAclEntryCommand(entry({ NetworkAclId: id, CidrBlock: undefined, Ipv6CidrBlock: '2001:db8::2/128' })));
    await ec2.send(new DeleteNetworkAclEntryCommand({ NetworkAclId: id, RuleNumber: 11, Egress: false }));
    expect(fake.entries(id).filter((e) => e.ruleNumber < 100)).toEqual([{ ruleNumber: 10, egress: false, protocol: '-1', ruleAction: 'deny', ipv6CidrBlock: '2001:db8::2/128' }]);
  });

  it('answers the entry errors EC2 answers, as XML the SDK turns into named errors with the request id', async () => {
    const id = fake.addAcl();
    await ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id })));
    expect(await sdkError(ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id }))))).toMatchObject({
      name: 'NetworkAclEntryAlreadyExists',
      status: 400,
      requestId: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(await sdkError(ec2.send(new ReplaceNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 12 }))))).toMatchObject({ name: 'InvalidNetworkAclEntry.NotFound', status: 400 });
    expect(await sdkError(ec2.send(new DeleteNetworkAclEntryCommand({ NetworkAclId: id, RuleNumber: 12, Egress: false })))).toMatchObject({ name: 'InvalidNetworkAclEntry.NotFound' });
    // The default `*` entries (32767 for IPv4, 32768 for IPv6) cannot be created, replaced or deleted.
    for (const rule of [32767, 32768]) {
      const v6 = { CidrBlock: undefined, Ipv6CidrBlock: '::/0' };
      expect(await sdkError(ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: rule }))))).toMatchObject({ name: 'InvalidParameterValue', message: expect.stringMatching(/1 and 32766/) });
      expect(await sdkError(ec2.send(new ReplaceNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: rule, ...v6 }))))).toMatchObject({ name: 'InvalidParameterValue', message: expect.stringMatching(/1 and 32766/) });
      expect(await sdkError(ec2.send(new DeleteNetworkAclEntryCommand({ NetworkAclId: id, RuleNumber: rule, Egress: false })))).toMatchObject({ name: 'InvalidParameterValue', message: expect.stringMatching(/1 and 32766/) });
    }
    expect(fake.entries(id).filter((e) => e.ruleNumber > 32766)).toHaveLength(4);
    expect(await sdkError(ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 0 }))))).toMatchObject({ name: 'InvalidParameterValue' });
    expect(await sdkError(ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 13, CidrBlock: '300.1.1.1/32' }))))).toMatchObject({ name: 'InvalidParameterValue' });
    expect(await sdkError(ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 13, Protocol: '6' }))))).toMatchObject({ name: 'MissingParameter' });
    expect(await sdkError(ec2.send(new DescribeNetworkAclsCommand({ NetworkAclIds: ['acl-00000000000000bad'] })))).toMatchObject({ name: 'InvalidNetworkAclID.NotFound' });
  });

  it('enforces the entry quota per direction and per family, default entries included', async () => {
    const small = await startFakeEc2({ quota: 3 });
    const client = new EC2Client({ endpoint: small.url, region: 'eu-west-1', credentials: { accessKeyId: 'AKIAFAKE', secretAccessKey: 'fake' }, maxAttempts: 1 });
    try {
      const id = small.addAcl(); // one `*` entry per family and direction already
      await client.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 1 })));
      await client.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 2 })));
      expect(await sdkError(client.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 3 }))))).toMatchObject({ name: 'NetworkAclEntryLimitExceeded', status: 400 });
      // IPv6 and egress are counted separately.
      await client.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 3, CidrBlock: undefined, Ipv6CidrBlock: '2001:db8::1/128' })));
      await client.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 3, Egress: true })));
      // A replace that switches family counts against the new family.
      await client.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 4, CidrBlock: undefined, Ipv6CidrBlock: '2001:db8::4/128' })));
      expect(await sdkError(client.send(new ReplaceNetworkAclEntryCommand(entry({ NetworkAclId: id, RuleNumber: 1, CidrBlock: undefined, Ipv6CidrBlock: '2001:db8::9/128' }))))).toMatchObject({
        name: 'NetworkAclEntryLimitExceeded',
      });
    } finally {
      client.destroy();
      await small.close();
    }
  });

  it('creates, lists and deletes tags, and enforces the 50-tag, 128-character key and 256-character value limits', async () => {
    const id = fake.addAcl({ tags: { Name: 'x' } });
    await ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'a', Value: 'v'.repeat(256) }, { Key: 'k'.repeat(128), Value: '' }] }));
    const listed = await ec2.send(new DescribeTagsCommand({ Filters: [{ Name: 'resource-id', Values: [id] }], MaxResults: 5 }));
    expect(listed.Tags).toContainEqual({ ResourceId: id, ResourceType: 'network-acl', Key: 'a', Value: 'v'.repeat(256) });
    expect(listed.Tags).toHaveLength(3);
    expect(await sdkError(ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'b', Value: 'v'.repeat(257) }] })))).toMatchObject({ name: 'InvalidParameterValue' });
    expect(await sdkError(ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'k'.repeat(129), Value: '' }] })))).toMatchObject({ name: 'InvalidParameterValue' });
    expect(await sdkError(ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'aws:owner', Value: '' }] })))).toMatchObject({ name: 'InvalidParameterValue' });
    const many = Array.from({ length: 48 }, (_, i) => ({ Key: `t${i}`, Value: String(i) }));
    expect(await sdkError(ec2.send(new CreateTagsCommand({ Resources: [id], Tags: many })))).toMatchObject({ name: 'TagLimitExceeded' });
    // All or nothing: the refused call added no tag.
    expect(Object.keys(fake.tags(id))).toHaveLength(3);
    await ec2.send(new DeleteTagsCommand({ Resources: [id], Tags: [{ Key: 'a' }, { Key: 'missing' }] }));
    expect(Object.keys(fake.tags(id)).sort()).toEqual(['Name', 'k'.repeat(128)]);
  });

  it('pages DescribeTags with NextToken', async () => {
    const id = fake.addAcl({ tags: Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`p${i}`, String(i)])) });
    const first = await ec2.send(new DescribeTagsCommand({ Filters: [{ Name: 'resource-id', Values: [id] }], MaxResults: 5 }));
    expect(first.Tags).toHaveLength(5);
    const second = await ec2.send(new DescribeTagsCommand({ Filters: [{ Name: 'resource-id', Values: [id] }], MaxResults: 5, NextToken: first.NextToken }));
    expect(second.Tags).toHaveLength(2);
    expect(second.NextToken).toBeUndefined();
  });

  it('throttles mutating calls with RequestLimitExceeded (HTTP 503) and leaves reads alone', async () => {
    const id = fake.addAcl();
    fake.setFaults({ throttleRate: 1 });
    try {
      expect(await sdkError(ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id }))))).toMatchObject({ name: 'RequestLimitExceeded', status: 503 });
      await expect(ec2.send(new DescribeNetworkAclsCommand({ NetworkAclIds: [id] }))).resolves.toBeDefined();
    } finally {
      fake.setFaults({});
    }
  });

  it('answers 5xx, drops connections and stops answering after k writes when told to', async () => {
    const id = fake.addAcl();
    fake.setFaults({ serverErrorRate: 1 });
    expect(await sdkError(ec2.send(new DescribeNetworkAclsCommand({ NetworkAclIds: [id] })))).toMatchObject({ name: 'InternalError', status: 500 });
    fake.setFaults({ dropRate: 1 });
    const dropped = await sdkError(ec2.send(new DescribeNetworkAclsCommand({ NetworkAclIds: [id] })));
    expect(dropped.status).toBeUndefined();
    fake.setFaults({ failAfterWrites: 1 });
    await ec2.send(new CreateNetworkAclEntryCommand(entry({ NetworkAclId: id })));
    expect((await sdkError(ec2.send(new DescribeNetworkAclsCommand({ NetworkAclIds: [id] })))).status).toBeUndefined();
    fake.setFaults({});
    await expect(ec2.send(new DescribeNetworkAclsCommand({ NetworkAclIds: [id] }))).resolves.toBeDefined();
  });

  it('refuses unsigned requests (AuthFailure) and actions the policy lacks (UnauthorizedOperation)', async () => {
    const res = await fetch(`${fake.url}/`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'Action=DescribeNetworkAcls&Version=2016-11-15' });
    expect(res.status).toBe(401);
    expect(await res.text()).toMatch(/<Response><Errors><Error><Code>AuthFailure<\/Code><Message>[^<]+<\/Message><\/Error><\/Errors><RequestID>[0-9a-f-]{36}<\/RequestID><\/Response>/);
    const id = fake.addAcl();
    fake.denied.add('CreateTags');
    try {
      expect(await sdkError(ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'a', Value: 'b' }] })))).toMatchObject({ name: 'UnauthorizedOperation', status: 403 });
    } finally {
      fake.denied.clear();
    }
  });

  it('counts calls per action, faulted ones included', async () => {
    const id = fake.addAcl();
    fake.resetCounters();
    await ec2.send(new DescribeNetworkAclsCommand({ NetworkAclIds: [id] }));
    await ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'a', Value: 'b' }] }));
    await sdkError(ec2.send(new DeleteNetworkAclEntryCommand({ NetworkAclId: id, RuleNumber: 50, Egress: false })));
    expect(fake.calls).toEqual({ DescribeNetworkAcls: 1, CreateTags: 1, DeleteNetworkAclEntry: 1 });
    expect(fake.mutatingCalls).toBe(2);
    expect(fake.errors).toEqual({ 'InvalidNetworkAclEntry.NotFound': 1 });
  });
});
