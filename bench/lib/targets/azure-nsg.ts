/**
 * azure-nsg against the fake ARM server over TLS: the real
 * `NetworkManagementClient`, a static bearer token (the fake checks that one
 * is sent), a priority band of 40 rules × 100 prefixes = Azure's 4000
 * prefixes per NSG; the bench keeps 95% of it busy.
 */
import { pino } from 'pino';
import { AzureNsgProvider, azureNsgConfigSchema } from '../../../src/providers/azure-nsg/index.js';
import { FakeArm } from '../../../test/fakes/azure/arm-server.js';
import { makeTestTls } from '../../../test/fakes/azure/tls.js';
import { OWNER, type BenchTarget } from './types.js';

const SUB = '6f1a5c2e-0000-4000-8000-00000000be4c';
const RG = 'rg-bench';

export const azureNsgTarget: BenchTarget = {
  kind: 'azure-nsg',
  shape: '1 NSG, 40 rules × 100 prefixes',
  bans: { 4: 3420, 6: 380 },
  note: 'each rule write is a GET of the rule (ownership re-check and retry safety), the PUT or DELETE, and the long-running operation: status polls plus the SDK\'s GET of the result.',
  async start() {
    const tls = makeTestTls();
    const fake = new FakeArm({ tls, subscriptionId: SUB });
    await fake.start();
    let n = 0;
    return {
      async session(now) {
        const nsg = `nsg-bench-${++n}`;
        fake.seedNsg(RG, nsg, []);
        const cfg = azureNsgConfigSchema.parse({
          subscription_id: SUB,
          resource_group: RG,
          nsg_name: nsg,
          priority_band: { start: 100, end: 139 },
          prefixes_per_rule: 100,
          endpoint: fake.url,
          ca_cert_path: tls.caPath,
          // The fake settles an operation after one InProgress poll; do not wait the production 2 s for it.
          poll_interval: '5ms',
          // The bench counts calls; it does not wait out the production budget (1000 writes per 5 minutes).
          queue: { interval_cap: 10_000, interval: '1s' },
        });
        const provider = new AzureNsgProvider(
          cfg,
          { target: 'bench-nsg', owner: OWNER, log: pino({ level: 'silent' }), now },
          { credential: { getToken: async () => ({ token: 'bench-token', expiresOnTimestamp: Date.now() + 3_600_000 }) } },
        );
        fake.resetCounters();
        const count = (method: string) => fake.calls.byMethod[method] ?? 0;
        return {
          provider,
          wire: () => ({
            reads: count('GET'),
            writes: count('PUT') + count('DELETE') + count('PATCH') + count('POST'),
            byOp: { ...fake.calls.byOp },
          }),
          enforced: async () =>
            fake
              .rules(RG, nsg)
              .filter((r) => r.name.startsWith(`cloud-bouncer-${OWNER}-`))
              .flatMap((r) => r.sourceAddressPrefixes ?? [])
              .sort(),
        };
      },
      async close() {
        await fake.close();
        tls.cleanup();
      },
    };
  },
};
