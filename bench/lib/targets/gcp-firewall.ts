/**
 * gcp-firewall against the fake Compute REST server: the real
 * `FirewallsClient` (REST transport) with a google-auth-library
 * `OAuth2Client` holding a static token, 10 rules × 256 source ranges (the
 * provider's defaults); the bench keeps 95% of it busy.
 */
import { OAuth2Client } from 'google-auth-library';
import { pino } from 'pino';
import { GcpFirewallProvider, gcpFirewallConfigSchema } from '../../../src/providers/gcp-firewall/index.js';
import { startFakeCompute } from '../../../test/fakes/gcp/compute-server.js';
import { OWNER, sumOps, type BenchTarget } from './types.js';
import type { GoogleAuthClient } from '../../../src/providers/gcp-firewall/client.js';

const WRITES = new Set(['firewalls.insert', 'firewalls.patch', 'firewalls.delete']);

export const gcpFirewallTarget: BenchTarget = {
  kind: 'gcp-firewall',
  shape: '10 rules × 256 ranges',
  bans: { 4: 2200, 6: 232 },
  note: 'each rule write is the insert, patch or delete plus waiting for its Operation (globalOperations.wait, a POST that only reads).',
  async start() {
    const fake = await startFakeCompute();
    let n = 0;
    return {
      async session(now) {
        const project = `cb-bench-${++n}`;
        fake.seedProject(project, { networks: ['edge'] });
        const cfg = gcpFirewallConfigSchema.parse({
          project,
          network: 'edge',
          endpoint: fake.url,
          // Operations settle on the fake at once; do not wait the production poll interval for them.
          poll_interval: '5ms',
          // The bench counts calls; it does not wait out the production rate (10 writes per second).
          queue: { interval_cap: 10_000, interval: '1s' },
        });
        const auth = new OAuth2Client();
        auth.setCredentials({ access_token: 'bench-token', expiry_date: Date.now() + 3_600_000 });
        const provider = new GcpFirewallProvider(cfg, { target: 'bench-gcp', owner: OWNER, log: pino({ level: 'silent' }), now }, { authClient: auth as unknown as GoogleAuthClient });
        fake.resetCounters();
        return {
          provider,
          wire: () => ({
            reads: sumOps(fake.calls.byOp, (op) => !WRITES.has(op)),
            writes: sumOps(fake.calls.byOp, (op) => WRITES.has(op)),
            byOp: { ...fake.calls.byOp },
          }),
          enforced: async () =>
            fake
              .rules(project)
              .filter((r) => r.name.startsWith(`cloud-bouncer-${OWNER}-`))
              .flatMap((r) => r.sourceRanges ?? [])
              .sort(),
        };
      },
      close: () => fake.close(),
    };
  },
};
