import { afterAll, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import { RetryableError } from '../../../src/core/errors.js';
import { useEnvCredentials } from './harness.js';

const sdk = vi.hoisted(() => ({ loads: 0 }));
vi.mock('@aws-sdk/client-ec2', async (importOriginal) => {
  sdk.loads++;
  return importOriginal();
});

const restoreEnv = useEnvCredentials();
afterAll(() => restoreEnv());

it('validates a target config and creates the provider without loading the EC2 SDK, which loads on the first call', async () => {
  const { provider, awsNaclConfigSchema } = await import('../../../src/providers/aws-nacl/index.js');
  // Nothing listens on port 9 of loopback: the first call fails fast, without leaving the machine.
  const config = awsNaclConfigSchema.parse({ region: 'eu-west-1', network_acl_id: 'acl-0123456789abcdef0', endpoint: 'http://127.0.0.1:9', sdk_max_attempts: 1, retry: { attempts: 1 } });
  const p = await provider.create(config, { target: 'nacl', owner: 'default', log: pino({ level: 'silent' }), now: () => 0 });
  expect(sdk.loads).toBe(0);

  await expect(p.read()).rejects.toThrow(RetryableError);
  expect(sdk.loads).toBe(1);
});
