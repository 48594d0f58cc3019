/**
 * Behaviour under EC2 throttling: with 30% of mutating calls answered
 * `RequestLimitExceeded`, passes converge to exactly the desired state, with
 * no orphan entries or claim tags, and the calls it took are reported.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeEc2, type FakeEc2 } from '../../fakes/ec2/server.js';
import { HOUR, NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import { bandEntries, cidrOf, claimsInTags, harness, ownershipProblems, useEnvCredentials } from './harness.js';
import type { Ban } from '../../../src/core/types.js';
import type { Provider } from '../../../src/providers/provider.js';

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

const v4 = (i: number, expiresAt = NOW + 4 * HOUR) => ban(`198.51.100.${i}`, { expiresAt });
const v6 = (i: number, expiresAt = NOW + 4 * HOUR) => ban(`2001:db8::${i.toString(16)}`, { expiresAt });

/** 16 bans in place, then a desired state that lifts 6, adds 12 and moves 3 expiries. */
function scenario(): { initial: Ban[]; desired: Ban[] } {
  const initial = [...Array.from({ length: 10 }, (_, i) => v4(i + 1)), ...Array.from({ length: 6 }, (_, i) => v6(i + 1))];
  const kept = initial.filter((b) => !['198.51.100.1/32', '198.51.100.2/32', '198.51.100.3/32', '198.51.100.4/32', '2001:db8::1/128', '2001:db8::2/128'].includes(b.cidr));
  const moved = kept.slice(0, 3).map((b) => ({ ...b, expiresAt: b.expiresAt - 2 * HOUR })); // shortened: recorded at once
  const added = [...Array.from({ length: 8 }, (_, i) => v4(50 + i, NOW + (i + 1) * HOUR)), ...Array.from({ length: 4 }, (_, i) => v6(0x50 + i))];
  return { initial, desired: [...moved, ...kept.slice(3), ...added] };
}

async function converge(provider: Provider, desired: Ban[], maxPasses: number): Promise<{ passes: number; failed: number }> {
  let failed = 0;
  for (let pass = 1; pass <= maxPasses; pass++) {
    const { plan, result } = await providerPass(provider, desired);
    if (plan.changes.length === 0) return { passes: pass, failed };
    failed += result?.outcomes.filter((o) => o.status !== 'applied').length ?? 0;
  }
  throw new Error(`did not converge in ${maxPasses} passes`);
}

function expectExactly(aclId: string, desired: Ban[]): void {
  const entries = bandEntries(fake, aclId);
  expect(entries.map(cidrOf).sort()).toEqual(desired.map((b) => b.cidr).sort());
  expect(ownershipProblems(fake, aclId)).toEqual([]);
  // Recorded expiries follow the desired ones (within the 10-minute refresh margin).
  const byCidr = new Map(desired.map((b) => [b.cidr, b.expiresAt]));
  for (const c of claimsInTags(fake.tags(aclId))) expect(Math.abs(c.expSeconds * 1000 - byCidr.get(c.cidr)!)).toBeLessThanOrEqual(10 * 60_000);
  // No claim tag beyond the groups of four that hold our entries, no foreign tag lost.
  const groups = new Set(entries.map((e) => `cloud-bouncer:test:ingress:${Math.floor(e.ruleNumber / 4) * 4}`));
  expect(Object.keys(fake.tags(aclId)).sort()).toEqual([...groups, 'Name'].sort());
}

describe('providers/aws-nacl under throttling', () => {
  it('converges to exactly the desired state with 30% of mutating calls throttled, within its bounded retries, and reports the calls', async () => {
    const { initial, desired } = scenario();
    const h = await harness({ fake }); // 2 SDK attempts × 4 own attempts per call
    await providerPass(h.provider, initial);
    const foreignBefore = fake.entries(h.aclId).filter((e) => e.ruleNumber >= 100);
    fake.resetCounters();
    const statsBefore = h.provider.stats().total;
    fake.setFaults({ throttleRate: 0.3, seed: 42 });

    let result: { passes: number; failed: number };
    try {
      result = await converge(h.provider, desired, 5);
    } finally {
      fake.setFaults({});
    }

    const throttled = fake.errors.RequestLimitExceeded ?? 0;
    console.log(
      `aws-nacl throttled 30% (bounded retries): ${result.passes} passes (the last one a no-op check), ${result.failed} failed changes, ${h.provider.stats().total - statsBefore} API calls (${throttled} throttled) ${JSON.stringify(fake.calls)}`,
    );
    expect(throttled).toBeGreaterThan(0);
    await h.closeAll(); // the run ends: its lease is released
    expectExactly(h.aclId, desired);
    expect(fake.entries(h.aclId).filter((e) => e.ruleNumber >= 100)).toEqual(foreignBefore);
    expect(fake.errors.NetworkAclEntryLimitExceeded).toBeUndefined();
  });

  it('converges over the following passes when retries are too few to absorb the throttling', async () => {
    const { initial, desired } = scenario();
    // No retries at all: every throttled call fails its change, which the next pass plans again.
    const h = await harness({ fake, config: { sdk_max_attempts: 1, retry: { attempts: 1 } } });
    await providerPass(h.provider, initial);
    fake.resetCounters();
    const statsBefore = h.provider.stats().total;
    fake.setFaults({ throttleRate: 0.3, seed: 7 });

    let result: { passes: number; failed: number };
    try {
      result = await converge(h.provider, desired, 20);
    } finally {
      fake.setFaults({});
    }

    console.log(
      `aws-nacl throttled 30% (no retries): ${result.passes} passes, ${result.failed} failed changes, ${h.provider.stats().total - statsBefore} API calls (${fake.errors.RequestLimitExceeded ?? 0} throttled) ${JSON.stringify(fake.calls)}`,
    );
    expect(result.failed).toBeGreaterThan(0);
    expect(result.passes).toBeGreaterThan(2);
    await h.closeAll();
    expectExactly(h.aclId, desired);
  });
});
