/**
 * End to end against the in-repo MikoPBX-style export: Bearer auth, the
 * whitelist endpoint, and sliding durations that must cost no writes.
 */
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { FakeMikoPbx } from '../fakes/mikopbx.js';

const silent = pino({ level: 'silent' });
const TOKEN = 'miko-token-0123456789abcdef';

async function cli(args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s), env: {}, log: silent });
  return { code, stdout, stderr };
}

describe('e2e: MikoPBX export → file target', () => {
  let pbx: FakeMikoPbx;
  let dir: string;
  let cfg: string;

  beforeAll(async () => {
    pbx = await FakeMikoPbx.start({ tokens: [TOKEN] });
    dir = mkdtempSync(join(tmpdir(), 'cb-e2e-miko-'));
    cfg = join(dir, 'config.yaml');
    writeFileSync(
      cfg,
      `sources:
  - name: pbx
    type: mikopbx
    api_url: ${pbx.url}
    api_key: ${TOKEN}
    auth: bearer
targets:
  - name: fw
    provider: file
    path: ${join(dir, 'fw.json')}
`,
    );
    // fail2ban bans whose remaining time the PBX recomputes on every poll (rolling): the expiry slides forward.
    pbx.addBan({ value: '192.0.2.21', rollingMs: 3_600_000 });
    pbx.addBan({ value: '192.0.2.22', rollingMs: 3_600_000 });
    pbx.addBan({ value: '2001:db8::22', rollingMs: 2 * 3_600_000 });
    pbx.addBan({ value: '198.51.100.0/24', rollingMs: 3_600_000 });
    pbx.setWhitelist(['198.51.100.10']);
  });

  afterAll(async () => {
    await pbx?.close();
  });

  it('applies with Bearer auth, splitting around the PBX whitelist', async () => {
    const r = await cli(['apply', '--config', cfg]);
    expect(r.code, r.stderr).toBe(0);
    const cidrs = (JSON.parse(readFileSync(join(dir, 'fw.json'), 'utf8')) as { rules: Array<{ cidrs: string[] }> }).rules.flatMap((x) => x.cidrs);
    expect(cidrs).toContain('192.0.2.21/32');
    expect(cidrs).toContain('2001:db8::22/128');
    expect(cidrs).not.toContain('198.51.100.0/24');
    expect(cidrs).toContain('198.51.100.128/25');
    expect(cidrs.some((c) => c === '198.51.100.10/32')).toBe(false);
    const reqs = pbx.streamRequests();
    expect(reqs.at(-1)!.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(reqs.at(-1)!.query.get('startup')).toBe('true');
  });

  it('writes nothing on later passes while the durations slide', async () => {
    const path = join(dir, 'fw.json');
    const before = readFileSync(path, 'utf8');
    const mtime = statSync(path).mtimeMs;
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 1_100));
      const r = await cli(['apply', '--config', cfg, '--output', 'json']);
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { summary: { create: number; update: number; delete: number } }).summary).toMatchObject({ create: 0, update: 0, delete: 0 });
    }
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(statSync(path).mtimeMs).toBe(mtime);
  });

  it('lifts a ban the PBX removed', async () => {
    pbx.removeBan('192.0.2.22');
    expect((await cli(['apply', '--config', cfg])).code).toBe(0);
    const cidrs = (JSON.parse(readFileSync(join(dir, 'fw.json'), 'utf8')) as { rules: Array<{ cidrs: string[] }> }).rules.flatMap((x) => x.cidrs);
    expect(cidrs).not.toContain('192.0.2.22/32');
    expect(cidrs).toContain('192.0.2.21/32');
  });
});
