import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import type { FakeCompute } from '../../fakes/gcp/compute-server.js';
import { newProject, startFake, testAuthClient } from './setup.js';

const sdk = vi.hoisted(() => ({ loads: 0 }));
vi.mock('../../../src/providers/gcp-firewall/sdk.js', async (importOriginal) => {
  sdk.loads++;
  return importOriginal();
});

let fake: FakeCompute;
beforeAll(async () => {
  fake = await startFake();
});
afterAll(async () => {
  await fake.close();
});

it('validates a target config and creates the provider without loading the Compute SDK, which loads on the first call', async () => {
  // Prepare
  const { provider, GcpFirewallProvider } = await import('../../../src/providers/gcp-firewall/index.js');
  const project = newProject(fake);
  const config = provider.configSchema.parse({ project, network: 'edge', endpoint: fake.url });
  // Act
  const created = await provider.create(config, { target: 'gcp', owner: 'default', log: pino({ level: 'silent' }), now: () => 0 });
  const loadsAfterCreate = sdk.loads;
  const withAuth = new GcpFirewallProvider(config, { target: 'gcp', owner: 'default', log: pino({ level: 'silent' }), now: () => 0 }, { authClient: testAuthClient() });
  const state = await withAuth.read();
  // Assess
  expect(created.kind).toBe('gcp-firewall');
  expect(loadsAfterCreate).toBe(0);
  expect(sdk.loads).toBe(1);
  expect(state.pools[0]!.id).toBe('ingress');
  await withAuth.close();
});
