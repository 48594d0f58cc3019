/**
 * The apply lease (`cloud-bouncer:<owner>:lease` = `<run id>@<unix seconds>`):
 * a run that finds another run's live lease, or loses the race to write it,
 * writes no entry and fails with a retryable error. The lease goes out in
 * the same CreateTags as the apply's claims; a process keeps it for its
 * next applies (no lease write, no read-back wait) and releases it when it
 * closes, whatever happened, and only if it is still its own.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RetryableError } from '../../../src/core/errors.js';
import { startFakeEc2, type FakeEc2 } from '../../fakes/ec2/server.js';
import { ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import { LEASE_KEY, bandEntries, cidrOf, claimsInTags, expireLease, harness, ownershipProblems, useEnvCredentials } from './harness.js';

let fake: FakeEc2;
let restoreEnv: () => void;

beforeAll(async () => {
  restoreEnv = useEnvCredentials();
  fake = await startFakeEc2();
});

afterAll(async () => {
  await fake.close();
  restoreEnv();
});

afterEach(() => {
  fake.onMutation = undefined;
  fake.denied.clear();
  fake.setFaults({});
});

/** Unix seconds an hour from the wall clock: a lease that has not expired. */
const liveExpiry = () => Math.ceil(Date.now() / 1000) + 3600;

async function refusal(p: Promise<unknown>): Promise<RetryableError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RetryableError);
  return err as RetryableError;
}

describe('providers/aws-nacl apply lease', () => {
  it('writes nothing and fails with lease_held while another run holds a live lease', async () => {
    const h = await harness({ fake });
    const rival = `rival.1@${liveExpiry()}`;
    fake.setTag(h.aclId, LEASE_KEY, rival);
    fake.resetCounters();

    const err = await refusal(providerPass(h.provider, [ban('192.0.2.7')]));

    expect(err.code).toBe('lease_held');
    expect(err.message).toMatch(/another run is applying \(run rival\.1 holds the lease until \d{4}-\d\d-\d\dT.*\); the next pass retries/);
    expect(fake.mutatingCalls).toBe(0);
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBe(rival);
    expect(bandEntries(fake, h.aclId)).toEqual([]);
  });

  it('writes no entry and fails with lease_lost when another run overwrites its lease before the read-back', async () => {
    const h = await harness({ fake });
    const rival = `rival.1@${liveExpiry()}`;
    // The other run's CreateTags lands right after ours, within the settle wait.
    fake.onMutation = (action) => {
      if (action === 'CreateTags' && fake.tags(h.aclId)[LEASE_KEY] !== rival) fake.setTag(h.aclId, LEASE_KEY, rival);
    };
    fake.resetCounters();

    const err = await refusal(providerPass(h.provider, [ban('192.0.2.7'), ban('192.0.2.8')]));

    expect(err.code).toBe('lease_lost');
    expect(err.message).toMatch(/another run took the lease .*run rival\.1.*no entry was written/);
    // Only our own (overwritten) lease write; the rival's lease is not released by us.
    expect(fake.calls).toMatchObject({ CreateTags: 1 });
    expect(fake.mutatingCalls).toBe(1);
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBe(rival);
    expect(bandEntries(fake, h.aclId)).toEqual([]);
  });

  it('holds the lease through every write, keeps it after the apply, and releases it when the run closes', async () => {
    const h = await harness({ fake });
    const leaseAtWrite: Array<string | undefined> = [];
    fake.onMutation = (action) => {
      if (action.endsWith('NetworkAclEntry')) leaseAtWrite.push(fake.tags(h.aclId)[LEASE_KEY]);
    };

    const { result } = await providerPass(h.provider, [ban('192.0.2.7'), ban('2001:db8::7')]);

    expect(result!.outcomes.map((o) => o.status)).toEqual(['applied', 'applied']);
    expect(leaseAtWrite).toHaveLength(2);
    for (const v of leaseAtWrite) expect(v).toMatch(/^[0-9a-f]{12}\.1@\d+$/);
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBe(leaseAtWrite[0]);
    await h.closeAll();
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBeUndefined();
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });

  it('writes the lease and the claims in one CreateTags, and a later apply of the same process writes no lease of its own', async () => {
    const h = await harness({ fake });
    fake.resetCounters();

    await providerPass(h.provider, [ban('192.0.2.7')]);
    const firstCalls = { ...fake.calls };
    const lease = fake.tags(h.aclId)[LEASE_KEY];
    fake.resetCounters();
    await providerPass(h.provider, [ban('192.0.2.7'), ban('192.0.2.8')]);

    // First apply: plan read, first read, lease + claims, read-back under the lease, one entry.
    expect(firstCalls).toEqual({ DescribeNetworkAcls: 3, CreateTags: 1, CreateNetworkAclEntry: 1 });
    // Second apply: no lease write and no read-back; the claim is the only tag write.
    expect(fake.calls).toEqual({ DescribeNetworkAcls: 2, CreateTags: 1, CreateNetworkAclEntry: 1 });
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBe(lease);
    expect(bandEntries(fake, h.aclId).map(cidrOf)).toEqual(['192.0.2.7/32', '192.0.2.8/32']);
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });

  it('renews a held lease inside the claims CreateTags once half its TTL has passed', async () => {
    const h = await harness({ fake });
    // The lease runs on the wall clock: a short TTL, and a wait past its half.
    const p = await h.fresh({ lease_ttl: '4s' });
    await providerPass(p, [ban('192.0.2.7')]);
    const first = fake.tags(h.aclId)[LEASE_KEY]!;
    await new Promise((r) => setTimeout(r, 2100));
    const wall = Date.now();
    fake.resetCounters();

    await providerPass(p, [ban('192.0.2.7'), ban('192.0.2.8')]);

    const renewed = fake.tags(h.aclId)[LEASE_KEY]!;
    expect(renewed.split('@')[0]).toBe(first.split('@')[0]);
    expect(Number(renewed.split('@')[1])).toBeGreaterThan(Number(first.split('@')[1]));
    expect(Number(renewed.split('@')[1]) * 1000).toBeGreaterThanOrEqual(wall + 3000);
    // Still one tag write (claims and renewal together) and no read-back.
    expect(fake.calls).toEqual({ DescribeNetworkAcls: 2, CreateTags: 1, CreateNetworkAclEntry: 1 });
  });

  it('takes the lease again, in the claims CreateTags and without releasing the old one, once the lease it held has lapsed', async () => {
    const h = await harness({ fake });
    await providerPass(h.provider, [ban('192.0.2.7')]);
    const before = fake.tags(h.aclId)[LEASE_KEY]!;
    expireLease(fake, h.aclId);
    fake.resetCounters();

    await providerPass(h.provider, [ban('192.0.2.7'), ban('192.0.2.8')]);

    expect(fake.calls).toEqual({ DescribeNetworkAcls: 3, CreateTags: 1, CreateNetworkAclEntry: 1 });
    const after = fake.tags(h.aclId)[LEASE_KEY]!;
    expect(after).not.toBe(before);
    expect(after.split('@')[0]).toMatch(/\.2$/);
  });

  it('writes no entry and fails with lease_lost when another writer rewrites a claim tag before the read-back', async () => {
    const h = await harness({ fake });
    let rewritten = false;
    fake.onMutation = (action) => {
      if (action === 'CreateTags' && !rewritten) {
        rewritten = true;
        fake.setTag(h.aclId, 'cloud-bouncer:test:ingress:8', '9=198.51.100.9/32@1795420800');
      }
    };

    const err = await refusal(providerPass(h.provider, [ban('192.0.2.7')]));

    expect(err.code).toBe('lease_lost');
    expect(err.message).toMatch(/claim tags changed while this run took the lease \(cloud-bouncer:test:ingress:8\)/);
    expect(bandEntries(fake, h.aclId)).toEqual([]);
    await h.closeAll();
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBeUndefined();
  });

  it('releases the lease after a failed apply', async () => {
    const h = await harness({ fake });
    fake.denied.add('CreateNetworkAclEntry');

    const { result } = await providerPass(h.provider, [ban('192.0.2.7')]);

    expect(result!.outcomes[0]!.status).toBe('failed');
    await h.closeAll();
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBeUndefined();
    expect(bandEntries(fake, h.aclId)).toEqual([]);
  });

  it('releases the lease after an abort in the middle of the apply', async () => {
    const h = await harness({ fake, config: { queue: { concurrency: 1, interval_cap: 1000, interval: '1s' } } });
    const stop = new AbortController();
    fake.onMutation = (action) => {
      if (action === 'CreateNetworkAclEntry') stop.abort();
    };

    const { result } = await providerPass(h.provider, [ban('192.0.2.7'), ban('192.0.2.8'), ban('192.0.2.9')], { signal: stop.signal });

    expect(result!.outcomes.filter((o) => o.skipReason === 'aborted').length).toBeGreaterThan(0);
    await h.closeAll();
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBeUndefined();
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });

  it('releases the lease when the apply is aborted while the lease settles, and writes no entry', async () => {
    const h = await harness({ fake });
    const stop = new AbortController();
    fake.onMutation = (action) => {
      if (action === 'CreateTags') stop.abort();
    };

    const { result } = await providerPass(h.provider, [ban('192.0.2.7')], { signal: stop.signal });

    expect(result!.outcomes.map((o) => o.skipReason)).toEqual(['aborted']);
    expect(bandEntries(fake, h.aclId)).toEqual([]);
    // The claims that went out with the lease are withdrawn.
    expect(claimsInTags(fake.tags(h.aclId))).toEqual([]);
    await h.closeAll();
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBeUndefined();
  });

  it('takes over an expired lease and applies', async () => {
    const h = await harness({ fake });
    fake.setTag(h.aclId, LEASE_KEY, 'crashed.3@1700000000');

    const { result } = await providerPass(h.provider, [ban('192.0.2.7')]);

    expect(result!.outcomes[0]!.status).toBe('applied');
    expect(bandEntries(fake, h.aclId).map(cidrOf)).toEqual(['192.0.2.7/32']);
    await h.closeAll();
    expect(fake.tags(h.aclId)[LEASE_KEY]).toBeUndefined();
  });

  it('leaves a lease another run took after ours expired mid-apply: the release is conditional', async () => {
    const h = await harness({ fake });
    const rival = `rival.1@${liveExpiry()}`;
    fake.onMutation = (action) => {
      if (action === 'CreateNetworkAclEntry') fake.setTag(h.aclId, LEASE_KEY, rival);
    };

    await providerPass(h.provider, [ban('192.0.2.7')]);

    expect(fake.tags(h.aclId)[LEASE_KEY]).toBe(rival);
  });

  it('is not blocked by the lease of another owner, and leaves it alone', async () => {
    const h = await harness({ fake });
    const other = `other.1@${liveExpiry()}`;
    fake.setTag(h.aclId, 'cloud-bouncer:someone-else:lease', other);

    const { result } = await providerPass(h.provider, [ban('192.0.2.7')]);

    expect(result!.outcomes[0]!.status).toBe('applied');
    expect(fake.tags(h.aclId)['cloud-bouncer:someone-else:lease']).toBe(other);
  });

  it('never writes the lease when planning or when there is nothing to apply', async () => {
    const h = await harness({ fake });
    await providerPass(h.provider, [ban('192.0.2.7')]);
    await h.closeAll();
    fake.resetCounters();

    await providerPass(await h.fresh(), [ban('192.0.2.8')], { apply: false });
    await providerPass(await h.fresh(), [ban('192.0.2.7')]);

    expect(fake.mutatingCalls).toBe(0);
  });
});
