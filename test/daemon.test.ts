/**
 * `cloud-bouncer run` as a real child process: /healthz and /metrics while it
 * runs, and SIGTERM in the middle of an apply: the write in flight finishes,
 * no new one starts, nothing is left half-written, and the next run converges.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeEc2, type FakeEc2 } from './fakes/ec2/server.js';
import { TYPICAL_ACL, bandEntries, cidrOf, ownershipProblems } from './providers/aws-nacl/harness.js';

const CLI = 'build/test-cli/cli.mjs';

function decisions(ips: string[]): string {
  return JSON.stringify({ new: ips.map((value) => ({ duration: '4h', origin: 'crowdsec', scenario: 'crowdsecurity/sip-bf', scope: 'Ip', type: 'ban', value })), deleted: null });
}

function spawnDaemon(cfg: string): ChildProcess {
  return spawn(process.execPath, [CLI, 'run', '--config', cfg], {
    env: { ...process.env, AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKEFAKE', AWS_SECRET_ACCESS_KEY: 'fake-secret-for-the-local-fake-only', AWS_EC2_METADATA_DISABLED: 'true' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

function startDaemon(cfg: string): { child: ChildProcess; port: Promise<number>; exit: Promise<number | null> } {
  const child = spawnDaemon(cfg);
  let err = '';
  const port = new Promise<number>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /listening on [^\n]*:(\d+)\n/.exec(err);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', () => reject(new Error(`daemon exited early: ${err.slice(-2000)}`)));
  });
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, port, exit };
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('daemon (run)', () => {
  let fake: FakeEc2;
  let aclId: string;
  let dir: string;
  let cfg: string;

  beforeAll(async () => {
    await build({ entryPoints: ['src/cli.ts'], bundle: true, platform: 'node', format: 'esm', target: 'node22', packages: 'external', outfile: CLI, logLevel: 'warning' });
    fake = await startFakeEc2();
    aclId = fake.addAcl(TYPICAL_ACL);
    dir = mkdtempSync(join(tmpdir(), 'cb-daemon-'));
    writeFileSync(join(dir, 'decisions.json'), decisions(['192.0.2.1', '192.0.2.2', '2001:db8::1']));
    cfg = join(dir, 'config.yaml');
    writeFileSync(
      cfg,
      `owner: test
log_level: warn
sources:
  - name: sample
    type: file
    path: ${join(dir, 'decisions.json')}
targets:
  - name: pbx-nacl
    provider: aws-nacl
    region: eu-west-1
    network_acl_id: ${aclId}
    endpoint: ${fake.url}
    rule_band: { start: 10, end: 99 }
    queue: { concurrency: 1, interval_cap: 100, interval: 1s }
    lease_settle: 50ms
daemon:
  interval: 1s
  listen: 127.0.0.1:0
`,
    );
  }, 60_000);

  afterAll(async () => {
    await fake?.close();
  });

  it('serves /healthz and the Prometheus counters while it runs', async () => {
    const d = startDaemon(cfg);
    try {
      const port = await d.port;
      const metrics = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      await waitFor(async () => /cloud_bouncer_passes_total\{result="ok"\} [2-9]/.test(await metrics()), 'two passes');
      const text = await metrics();
      expect(text).toMatch(/cloud_bouncer_changes_total\{target="pbx-nacl",kind="create"\} 3/);
      expect(text).toMatch(/cloud_bouncer_api_calls\{provider="aws-nacl",target="pbx-nacl"\} \d+/);
      expect(text).toMatch(/cloud_bouncer_source_fetch_seconds_count\{source="sample",result="ok"\} \d+/);
      expect(text).toMatch(/cloud_bouncer_decisions\{source="sample"\} 3/);
      expect(text).toMatch(/# TYPE cloud_bouncer_unenforced gauge/);
      expect(await (await fetch(`http://127.0.0.1:${port}/metrics?name[]=cloud_bouncer_passes_total`)).text()).toMatch(/cloud_bouncer_passes_total/);
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(health.status).toBe(200);
      expect(((await health.json()) as { status: string }).status).toBe('ok');
    } finally {
      d.child.kill('SIGTERM');
      expect(await d.exit).toBe(0);
    }
  });

  it('on SIGTERM finishes the write in flight, starts no new one, and leaves no half-written rule', async () => {
    const ips = Array.from({ length: 12 }, (_, i) => `198.51.100.${i + 1}`);
    writeFileSync(join(dir, 'decisions.json'), decisions(ips));
    fake.setFaults({ latencyMs: 300 });
    const before = fake.mutatingCalls;
    const d = startDaemon(cfg);
    await d.port;
    await waitFor(() => fake.mutatingCalls >= before + 3, 'the apply to start writing');
    d.child.kill('SIGTERM');
    expect(await d.exit).toBe(0);
    const writesAtExit = fake.mutatingCalls;
    fake.setFaults({});
    await new Promise((r) => setTimeout(r, 500));
    expect(fake.mutatingCalls).toBe(writesAtExit); // nothing still trickling in
    // Every entry is whole and claimed, and the claims of changes that never started were restored.
    expect(ownershipProblems(fake, aclId)).toEqual([]);
    const partial = bandEntries(fake, aclId).map(cidrOf);
    expect(partial.length).toBeLessThan(12 + 3);

    // The next run converges to exactly the desired state.
    const d2 = startDaemon(cfg);
    await d2.port;
    await waitFor(() => bandEntries(fake, aclId).map(cidrOf).sort().join() === ips.map((ip) => `${ip}/32`).sort().join(), 'convergence');
    d2.child.kill('SIGTERM');
    expect(await d2.exit).toBe(0);
    expect(ownershipProblems(fake, aclId)).toEqual([]);
  });

  it('names daemon.listen and exits 1 when the address is taken, before any call to the cloud', async () => {
    // Prepare: a listener already holds the port.
    const { createServer } = await import('node:net');
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
    const taken = (holder.address() as { port: number }).port;
    const busy = join(dir, 'busy.yaml');
    writeFileSync(busy, readFileSync(cfg, 'utf8').replace('listen: 127.0.0.1:0', `listen: 127.0.0.1:${taken}`));
    const callsBefore = fake.totalCalls;
    try {
      // Act
      const child = spawnDaemon(busy);
      let err = '';
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));

      // Assess
      expect(code).toBe(1);
      expect(err.trim()).toBe(`cloud-bouncer: error: config: daemon.listen: cannot listen on 127.0.0.1:${taken}: the address is already in use (another daemon? pick another port) (EADDRINUSE)`);
      expect(fake.totalCalls).toBe(callsBefore);
    } finally {
      holder.close();
    }
  });
});

describe('daemon /healthz', () => {
  it('turns unhealthy once no pass has ended for 3 intervals and a minute, and not before', async () => {
    const { healthy } = await import('../src/daemon.js');
    const minute = 60_000;
    expect(healthy(4 * minute - 1, 0, minute)).toBe(true);
    expect(healthy(4 * minute, 0, minute)).toBe(false);
    expect(healthy(10 * minute, 9 * minute, minute)).toBe(true);
  });
});
