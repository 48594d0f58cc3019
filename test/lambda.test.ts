/**
 * The bundled Lambda handler (build/lambda/index.mjs, the artifact that
 * ships, not the source) on a scheduled event: against the fake EC2 server
 * and the real CrowdSec LAPI, and (the bundle embeds trimmed Compute
 * protobuf types) against the fake Compute server with credentials from a
 * fake metadata server, as on Cloud Run.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeEc2, type FakeEc2 } from './fakes/ec2/server.js';
import { TYPICAL_ACL, bandEntries, cidrOf, ownershipProblems, useEnvCredentials } from './providers/aws-nacl/harness.js';
import { lapiAvailable, startLapi, type StartedLapi } from './helpers/lapi.js';
import { startFakeCompute, type FakeCompute } from './fakes/gcp/compute-server.js';
import { startFakeMetadata, type FakeMetadata } from './fakes/gcp/metadata-server.js';

interface Summary {
  ok: boolean;
  aborted: boolean;
  failStatic: boolean;
  targets: Array<{ name: string; create: number; applied: number; skipped: number; failed: number; calls: number }>;
  errors: string[];
}
type Handler = (event: unknown, ctx: { getRemainingTimeInMillis(): number; awsRequestId?: string }) => Promise<Summary>;

let handler: Handler;
beforeAll(async () => {
  execFileSync(process.execPath, ['scripts/build-lambda.mjs'], { stdio: 'pipe' });
  ({ handler } = (await import(`${process.cwd()}/build/lambda/index.mjs`)) as { handler: Handler });
}, 180_000);

const EVENT = { version: '0', id: 'e7f8', 'detail-type': 'Scheduled Event', source: 'aws.events', time: '2026-11-23T08:00:00Z', region: 'eu-west-1', resources: [], detail: {} };

describe.skipIf(!lapiAvailable())('lambda handler (bundled artifact)', () => {
  let lapi: StartedLapi;
  let fake: FakeEc2;
  let aclId: string;
  let restoreCreds: () => void;
  const savedEnv = { ...process.env };

  beforeAll(async () => {
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

describe('lambda handler (bundled artifact) with a gcp-firewall target', () => {
  let compute: FakeCompute;
  let metadata: FakeMetadata;
  let dir: string;
  const savedEnv = { ...process.env };
  const project = 'cb-bundle-gcp';

  beforeAll(async () => {
    compute = await startFakeCompute();
    compute.seedProject(project, { networks: ['edge'], rules: [] });
    metadata = await startFakeMetadata({ projectId: project });
    dir = mkdtempSync(join(tmpdir(), 'cb-lambda-gcp-'));
    const decisions = ['198.51.100.7', '198.51.100.8', '203.0.113.0/24', '2001:db8:5::/48'].map((value, i) => ({
      id: i + 1,
      origin: 'crowdsec',
      type: 'ban',
      scope: value.includes('/') ? 'Range' : 'Ip',
      value,
      duration: '3h59m50s',
      scenario: 'crowdsecurity/ssh-bf',
    }));
    writeFileSync(join(dir, 'decisions.json'), JSON.stringify({ new: decisions, deleted: null }));
    // Application Default Credentials from the metadata server, as on Cloud Run; nothing injected.
    process.env.GCE_METADATA_HOST = metadata.host;
    process.env.METADATA_SERVER_DETECTION = 'assume-present';
    delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
    process.env.CLOUD_BOUNCER_CONFIG = JSON.stringify({
      owner: 'test',
      log_level: 'silent',
      sources: [{ name: 'export', type: 'file', path: join(dir, 'decisions.json') }],
      targets: [{ name: 'edge-fw', provider: 'gcp-firewall', project, network: 'edge', endpoint: compute.url, poll_interval: '20ms' }],
    });
  }, 60_000);

  afterAll(async () => {
    for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
    Object.assign(process.env, savedEnv);
    await compute?.close();
    await metadata?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('enforces the bans through the real Compute client with the trimmed protos, then makes one read', async () => {
    const summary = await handler(EVENT, { getRemainingTimeInMillis: () => 60_000, awsRequestId: 'gcp' });
    expect(summary).toMatchObject({ ok: true, aborted: false, errors: [] });
    expect(summary.targets[0]).toMatchObject({ name: 'edge-fw', failed: 0 });
    const ours = compute.rules(project).filter((r) => r.name.startsWith('cloud-bouncer-test-'));
    expect(ours.flatMap((r) => r.sourceRanges ?? []).sort()).toEqual(['198.51.100.7/32', '198.51.100.8/32', '2001:db8:5::/48', '203.0.113.0/24'].sort());
    expect(ours.every((r) => r.denied?.[0]?.IPProtocol === 'all' && r.direction === 'INGRESS')).toBe(true);
    // The token came from the metadata server and reached the API.
    expect([...compute.bearerTokens]).toEqual([metadata.token]);
    expect(metadata.requests).toContain('/computeMetadata/v1/instance/service-accounts/default/token');
    const again = await handler(EVENT, { getRemainingTimeInMillis: () => 60_000 });
    expect(again.targets[0]).toMatchObject({ create: 0, update: 0, delete: 0, applied: 0, calls: 1 });
  });
});
