/**
 * Crash safety: the process dies after k writes (the fake stops answering
 * anything after its k-th successful mutating call), then a new process runs
 * again. For every k, the ownership invariant holds right after the crash
 * (no entry in the band without a claim), the next passes end in exactly the
 * desired state with consistent claim tags, and no foreign entry or tag is
 * touched.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeEc2, type FakeEc2 } from '../../fakes/ec2/server.js';
import { HOUR, NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import { LEASE_KEY, TYPICAL_ACL, bandEntries, cidrOf, expireLease, harness, ownershipProblems, useEnvCredentials } from './harness.js';
import type { Ban } from '../../../src/core/types.js';

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

// A crashed process retries nothing worth waiting for: one SDK attempt, two of ours, short delays.
const FAST = { sdk_max_attempts: 1, retry: { attempts: 2, base_delay: '1ms', max_delay: '5ms' } };

const v4 = (i: number, h = 4) => ban(`192.0.2.${i}`, { expiresAt: NOW + h * HOUR });
const v6 = (i: number, h = 4) => ban(`2001:db8::${i.toString(16)}`, { expiresAt: NOW + h * HOUR });

interface Scenario {
  name: string;
  initial: Ban[];
  desired: Ban[];
}

const scenarios: Scenario[] = [
  // Creates only: claims first, then entries; new claim tags.
  { name: 'from empty', initial: [], desired: [v4(1), v4(2), v4(3), v6(1), v6(2), v4(4, 2), v4(5, 3)] },
  // Deletes (entry first, claim after), replaces (claim first, then entry, one switching family), expiry refreshes.
  {
    name: 'mixed',
    initial: [v6(1, 5), v6(2, 5), v4(1), v4(2), v4(3), v4(4), v4(5), v4(6)],
    desired: [v4(1, 8), v4(2), v4(3), v4(9), v4(10), v4(11), ban('198.51.100.0/24', { expiresAt: NOW + 6 * HOUR })],
  },
  // Everything lifted: every entry deleted, every claim tag emptied and deleted.
  { name: 'all lifted', initial: [v4(1), v4(2), v6(1), v4(3), v4(4), v4(5)], desired: [] },
];

describe('providers/aws-nacl crash safety', () => {
  for (const sc of scenarios) {
    it(`recovers exactly the desired state after a crash at any write (${sc.name})`, async () => {
      const report: string[] = [];
      const seen = { claimWithoutEntry: 0, mismatch: 0 };
      let total = Infinity;
      for (let k = 0; k <= total; k++) {
        // Prepare: a NACL holding `initial`, with a foreign entry and a foreign tag that must survive.
        const h = await harness({
          fake,
          acl: { ...TYPICAL_ACL, entries: [...TYPICAL_ACL.entries!, { rule: 200, cidr: '203.0.113.0/24', action: 'deny' }] },
          config: FAST,
        });
        if (sc.initial.length > 0) await providerPass(h.provider, sc.initial);
        const foreign = fake.entries(h.aclId).filter((e) => e.ruleNumber >= 100);
        const writesBefore = fake.mutatingCalls;

        // Act: the process dies after k writes of the pass towards `desired`.
        fake.setFaults({ failAfterWrites: k });
        try {
          await providerPass(h.provider, sc.desired);
        } catch {
          // A crashed process reports nothing.
        }
        const writes = fake.mutatingCalls - writesBefore;
        fake.setFaults({});
        // The crashed run could not release its lease; the next scheduled run comes after it expired.
        expireLease(fake, h.aclId);
        const completed = k >= writes && (await providerPass(await h.fresh(), sc.desired, { apply: false })).plan.changes.length === 0;
        if (completed) total = k; // this k let the whole pass through: the last one to try

        // Assess right after the crash: never an entry in the band without a claim.
        const afterCrash = ownershipProblems(fake, h.aclId);
        expect(afterCrash.filter((p) => p.includes('has no claim') || p.includes('not deny-all') || p.includes('twice')), `k=${k}`).toEqual([]);
        seen.claimWithoutEntry += afterCrash.filter((p) => p.includes('orphan claim')).length;
        seen.mismatch += afterCrash.filter((p) => p.includes('but its claim says')).length;
        const crashState = await (await h.fresh()).read();
        expect(crashState.conflicts, `k=${k}`).toEqual([]);

        // A new process runs again until nothing is left to do.
        let passes = 0;
        for (; passes < 3; passes++) {
          const { plan } = await providerPass(await h.fresh(), sc.desired);
          if (plan.changes.length === 0) break;
        }
        expect(passes, `k=${k}`).toBeLessThanOrEqual(2);
        expect(bandEntries(fake, h.aclId).map(cidrOf).sort(), `k=${k}`).toEqual(sc.desired.map((b) => b.cidr).sort());
        expect(ownershipProblems(fake, h.aclId), `k=${k}`).toEqual([]);
        expect(fake.entries(h.aclId).filter((e) => e.ruleNumber >= 100), `k=${k}`).toEqual(foreign);
        // A lease the crashed run left stays until an apply with changes replaces it; it has expired and blocks nobody.
        const lease = fake.tags(h.aclId)[LEASE_KEY];
        if (lease !== undefined) expect(lease, `k=${k}`).toMatch(/@1$/);
        const ours = Object.keys(fake.tags(h.aclId)).filter((t) => t !== 'Name' && t !== LEASE_KEY);
        expect(new Set(ours), `k=${k}`).toEqual(new Set(bandEntries(fake, h.aclId).map((e) => `cloud-bouncer:test:ingress:${Math.floor(e.ruleNumber / 4) * 4}`)));
        expect(fake.tags(h.aclId).Name).toBe('pbx-subnets');
        report.push(`k=${k}: ${afterCrash.length} repairs, ${passes} passes`);
        if (k > 40) throw new Error('the pass never completed');
      }
      console.log(`aws-nacl crash (${sc.name}): ${total} writes per pass; ${report.join('; ')}`);
      // The sweep really hit the windows between a claim and its entry.
      expect(seen.claimWithoutEntry).toBeGreaterThan(0);
      if (sc.name === 'mixed') expect(seen.mismatch).toBeGreaterThan(0);
    });
  }

  it('recognises its own entry when a create landed but its answer was lost, and converges without a conflict', async () => {
    const h = await harness({ fake, config: FAST });
    const desired = [v4(1), v4(2), v4(3), v6(1), v6(2), v6(3)];
    fake.loseResponses(0.5, 3);
    let passes = 0;
    try {
      for (; passes < 5; passes++) {
        const { plan } = await providerPass(await h.fresh(), desired);
        expect(plan.conflicts).toEqual([]);
        if (plan.changes.length === 0) break;
      }
    } finally {
      fake.loseResponses(0);
    }
    expect(fake.errors.NetworkAclEntryAlreadyExists).toBeGreaterThan(0);
    expect(bandEntries(fake, h.aclId).map(cidrOf).sort()).toEqual(desired.map((b) => b.cidr).sort());
    expect(ownershipProblems(fake, h.aclId)).toEqual([]);
  });
});
