/**
 * The bundled Lambda handler (build/lambda/index.mjs, the artifact that
 * ships, not the source) on a scheduled event, against the fake EC2 server
 * and the real CrowdSec LAPI.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeEc2, type FakeEc2 } from './fakes/ec2/server.js';
import { TYPICAL_ACL, bandEntries, cidrOf, ownershipProblems, useEnvCredentials } from './providers/aws-nacl/harness.js';
import { lapiAvailable, startLapi, type StartedLapi } from './helpers/lapi.js';

interface Summary {
  ok: boolean;
  aborted: boolean;
  failStatic: boolean;
  targets: Array<{ name: string; create: number; applied: number; skipped: number; failed: number; calls: number }>;
  errors: string[];
}
type Handler = (event: unknown, ctx: { getRemainingTimeInMillis(): number; awsRequestId?: string }) => Promise<Summary>;

const EVENT = { version: '0', id: 'e7f8', 'detail-type': 'Scheduled Event', source: 'aws.events', time: '2026-11-23T08:00:00Z', region: 'eu-west-1', resources: [], detail: {} };

describe.skipIf(!lapiAvailable())('lambda handler (bundled artifact)', () => {
  let lapi: StartedLapi;
  let fake: FakeEc2;
  let aclId: string;
  let handler: Handler;
  let restoreCreds: () => void;
  const savedEnv = { ...process.env };

  beforeAll(async () => {
    execFileSync(process.execPath, ['scripts/build-lambda.mjs'], { stdio: 'pipe' });
    ({ handler } = (await import(`${process.cwd()}/build/lambda/index.mjs`)) as { handler: Handler });
    lapi = await startLapi();
    for (let i = 1; i <= 8; i++) await lapi.addDecision({ ip: `192.0.2.${i}`, duration: '4h' });
    await lapi.addDecision({ ip: '2001:db8::7', duration: '4h' });
    fake = await startFakeEc2();
    aclId = fake.addAcl(TYPICAL_ACL);
    restoreCreds = useEnvCredentials();
    process.env.CLOUD_BOUNCER_CONFIG = JSON.stringify({
      owner: 'test', // the owner the aws-nacl harness parses claims for
      log_level: 'silent',
      sources: [{ name: 'crowdsec', type: 'lapi', api_url: lapi.url, api_key: lapi.apiKey }],
      targets: [
        {
          name: 'pbx-nacl',
          provider: 'aws-nacl',
          region: 'eu-west-1',
          network_acl_id: aclId,
          endpoint: fake.url,
          rule_band: { start: 10, end: 99 },
          queue: { concurrency: 1, interval_cap: 100, interval: '1s' },
          lease_settle: '50ms',
        },
      ],
    });
  }, 180_000);

  afterAll(async () => {
    restoreCreds?.();
    for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
    await fake?.close();
    await lapi?.stop();
  });

  it('stops starting writes near the deadline and leaves the NACL consistent', async () => {
    fake.setFaults({ latencyMs: 400 });
    const started = Date.now();
    // 10 s margin (the default) + 0.9 s: the deadline comes after a couple of writes.
    const summary = await handler(EVENT, { getRemainingTimeInMillis: () => 10_900 - (Date.now() - started), awsRequestId: 'short' });
    fake.setFaults({});
    expect(summary.aborted).toBe(true);
    expect(summary.targets[0]!.skipped).toBeGreaterThan(0);
    expect(summary.targets[0]!.applied + summary.targets[0]!.skipped + summary.targets[0]!.failed).toBe(summary.targets[0]!.create);
    expect(ownershipProblems(fake, aclId)).toEqual([]);
  });

  it('completes one pass and returns the summary; the next pass writes nothing', async () => {
    const summary = await handler(EVENT, { getRemainingTimeInMillis: () => 60_000, awsRequestId: 'full' });
    expect(summary).toMatchObject({ ok: true, aborted: false, failStatic: false, errors: [] });
    expect(summary.targets[0]!.name).toBe('pbx-nacl');
    const cidrs = bandEntries(fake, aclId).map(cidrOf).sort();
    expect(cidrs).toEqual(['192.0.2.1/32', '192.0.2.2/32', '192.0.2.3/32', '192.0.2.4/32', '192.0.2.5/32', '192.0.2.6/32', '192.0.2.7/32', '192.0.2.8/32', '2001:db8::7/128'].sort());
    expect(ownershipProblems(fake, aclId)).toEqual([]);
    const again = await handler(EVENT, { getRemainingTimeInMillis: () => 60_000 });
    expect(again.targets[0]).toMatchObject({ create: 0, applied: 0, calls: 1 });
  });
});
