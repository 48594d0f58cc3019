/**
 * End to end on the real CrowdSec LAPI (Debian `crowdsec`, started on
 * loopback by scripts/lapi.sh) and the file target, through the CLI.
 * Skipped locally when the package is missing; never skipped in CI.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { lapiAvailable, startLapi, type StartedLapi } from '../helpers/lapi.js';

const silent = pino({ level: 'silent' });

async function cli(args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s), env: {}, log: silent });
  return { code, stdout, stderr };
}

interface PlanJson {
  refused: Array<{ value: string; reason: string; detail: string | null }>;
  targets: Array<{ changes: Array<{ kind: string; added: string[]; removed: string[] }>; unenforced: Array<{ cidr: string; reason: string }>; summary: Record<string, number> }>;
}

function firewallCidrs(path: string): string[] {
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { rules: Array<{ cidrs: string[] }> };
  return doc.rules.flatMap((r) => r.cidrs).sort();
}

describe.skipIf(!lapiAvailable())('e2e: real CrowdSec LAPI → plan/apply → file target', () => {
  let lapi: StartedLapi;
  let dir: string;
  let cfg: string;
  const fw = () => join(dir, 'fw.json');

  beforeAll(async () => {
    lapi = await startLapi();
    dir = mkdtempSync(join(tmpdir(), 'cb-e2e-lapi-'));
    cfg = join(dir, 'config.yaml');
    writeFileSync(
      cfg,
      `owner: e2e
sources:
  - name: crowdsec
    type: lapi
    api_url: ${lapi.url}
    api_key: ${lapi.apiKey}
whitelist:
  cidrs: [203.0.113.77/32]
targets:
  - name: fw
    provider: file
    path: ${join(dir, 'fw.json')}
    rules: 16
    cidrs_per_rule: 8
`,
    );
    await lapi.addDecision({ ip: '192.0.2.10', duration: '4h' });
    await lapi.addDecision({ ip: '2001:db8::1', duration: '3h' });
    await lapi.addDecision({ range: '198.51.100.0/24', duration: '5h' });
    await lapi.addDecision({ range: '2001:db8:1::/48', duration: '2h' });
    await lapi.addDecision({ ip: '198.18.0.9', duration: '1h', type: 'captcha' });
    await lapi.addDecision({ value: '192.0.2.128/28', scope: 'Ip', duration: '4h' });
    await lapi.addDecision({ ip: '192.0.2.99', duration: '-1s' });
    await lapi.addDecision({ range: '203.0.113.0/24', duration: '6h' });
    // A duplicate: the same address from a second decision, with a longer duration.
    await lapi.addDecision({ ip: '192.0.2.10', duration: '8h' });
  }, 120_000);

  afterAll(async () => {
    await lapi?.stop();
  });

  it('plans exactly the expected CIDRs: split around the whitelist, no captcha, no expired, duplicates merged', async () => {
    const r = await cli(['plan', '--config', cfg, '--output', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout) as PlanJson;
    const added = plan.targets[0]!.changes.flatMap((c) => c.added).sort();
    const split = ['203.0.113.0/26', '203.0.113.64/29', '203.0.113.72/30', '203.0.113.76/32', '203.0.113.78/31', '203.0.113.80/28', '203.0.113.96/27', '203.0.113.128/25'];
    expect(added).toEqual(['192.0.2.10/32', '192.0.2.128/28', '198.51.100.0/24', '2001:db8:1::/48', '2001:db8::1/128', ...split].sort());
    expect(added).not.toContain('198.18.0.9/32');
    expect(added).not.toContain('192.0.2.99/32');
    expect(plan.refused.find((x) => x.value === '203.0.113.0/24')).toMatchObject({ reason: 'whitelisted' });
  });

  it('applies, then a second apply plans nothing and writes nothing', async () => {
    expect((await cli(['apply', '--config', cfg])).code).toBe(0);
    const before = readFileSync(fw(), 'utf8');
    const again = await cli(['apply', '--config', cfg, '--output', 'json']);
    expect(again.code).toBe(0);
    expect((JSON.parse(again.stdout) as PlanJson).targets[0]!.changes).toEqual([]);
    expect(readFileSync(fw(), 'utf8')).toBe(before);
  });

  it('removes an unbanned decision on the next pass', async () => {
    await lapi.deleteDecision({ ip: '2001:db8::1' });
    expect((await cli(['apply', '--config', cfg])).code).toBe(0);
    expect(firewallCidrs(fw())).not.toContain('2001:db8::1/128');
    expect(firewallCidrs(fw())).toContain('192.0.2.10/32');
  });

  it('removes a decision on the first pass after it expires', async () => {
    await lapi.addDecision({ ip: '192.0.2.55', duration: '3s' });
    expect((await cli(['apply', '--config', cfg])).code).toBe(0);
    expect(firewallCidrs(fw())).toContain('192.0.2.55/32');
    await new Promise((r) => setTimeout(r, 3_500));
    expect((await cli(['apply', '--config', cfg])).code).toBe(0);
    expect(firewallCidrs(fw())).not.toContain('192.0.2.55/32');
  });

  it('reports the bouncer to the LAPI as crowdsec-cloud-bouncer', async () => {
    const rows = await lapi.bouncers();
    expect(rows.some((b) => b.type === 'crowdsec-cloud-bouncer' && /^v\d+\.\d+\.\d+/.test(b.version))).toBe(true);
  });

  it('fails static with a one-line error naming the source when the LAPI is down, keeping every rule', async () => {
    const before = firewallCidrs(fw());
    await lapi.stop();
    const r = await cli(['apply', '--config', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cloud-bouncer: error: source crowdsec: .*cannot connect \(ECONNREFUSED\)/m);
    expect(r.stderr).not.toContain(lapi.apiKey);
    expect(firewallCidrs(fw())).toEqual(before);
  });
});
