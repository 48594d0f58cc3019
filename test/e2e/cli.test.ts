/**
 * The command line end to end on the file target: quick start, idempotence,
 * fail-static on a broken source, config errors, flush, detailed exit codes.
 */
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { formatMarker } from '../../src/core/marker.js';
import { captureLog } from '../helpers/lapi.js';

const silent = pino({ level: 'silent' });

async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s), env, log: silent });
  return { code, stdout, stderr };
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'cb-e2e-'));
}

/** A decisions server whose answer the test controls. */
let server: Server;
let mode: 'ok' | '500' | '403' | 'garbage' | 'truncated' = 'ok';
let body = '';
let url = '';
beforeAll(async () => {
  server = createServer((_req, res) => {
    if (mode === '500') return void res.writeHead(500).end('internal error');
    if (mode === '403') return void res.writeHead(403, { 'content-type': 'application/json' }).end('{"message":"access forbidden"}');
    if (mode === 'garbage') return void res.writeHead(200, { 'content-type': 'application/json' }).end('<html>oops</html>');
    if (mode === 'truncated') return void res.writeHead(200, { 'content-type': 'application/json' }).end(body.slice(0, Math.floor(body.length / 2)));
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const a = server.address();
  url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

function item(value: string, duration: string, extra: Record<string, string> = {}) {
  return { duration, origin: 'crowdsec', scenario: 'crowdsecurity/ssh-bf', scope: value.includes('/') ? 'Range' : 'Ip', type: 'ban', value, ...extra };
}

function lapiConfig(dir: string, extra = '') {
  const p = join(dir, 'config.yaml');
  writeFileSync(
    p,
    `owner: e2e
sources:
  - name: lapi
    type: lapi
    api_url: ${url}
    api_key: secret-key-123456
targets:
  - name: fw
    provider: file
    path: ${join(dir, 'fw.json')}
    rules: 4
    cidrs_per_rule: 2
${extra}`,
  );
  return p;
}

describe('cli (file target)', () => {
  it('runs the quick start: plan prints, apply writes, a second apply writes nothing', async () => {
    const dir = tmp();
    const cfg = join(dir, 'quickstart.yaml');
    writeFileSync(cfg, readFileSync('examples/quickstart.yaml', 'utf8').replace('.tmp/demo-firewall.json', join(dir, 'fw.json')));
    const plan = await cli(['plan', '--config', cfg]);
    expect(plan.code).toBe(0);
    expect(plan.stdout).toMatch(/target demo \(file\): \d+ to create/);
    expect(plan.stdout).toMatch(/100\.64\.0\.0\/10: min_prefix/);
    expect(existsSync(join(dir, 'fw.json'))).toBe(false);

    const apply = await cli(['apply', '--config', cfg, '--output', 'json']);
    expect(apply.code).toBe(0);
    const doc = JSON.parse(readFileSync(join(dir, 'fw.json'), 'utf8')) as { rules: Array<{ cidrs: string[] }> };
    const written = doc.rules.flatMap((r) => r.cidrs);
    expect(written).toContain('192.0.2.10/32');
    expect(written).not.toContain('198.51.100.7/32'); // captcha
    expect(written).not.toContain('192.0.2.99/32'); // expired
    expect(written).not.toContain('203.0.113.0/24'); // split around the whitelisted 203.0.113.5
    expect(written.some((c) => c.startsWith('203.0.113.'))).toBe(true);

    const again = await cli(['plan', '--config', cfg, '--detailed-exitcode']);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/Plan: 0 to create, 0 to update, 0 to delete\./);
  });

  it('plan --detailed-exitcode exits 2 when there are changes and writes nothing', async () => {
    const dir = tmp();
    body = JSON.stringify({ new: [item('192.0.2.1', '4h')], deleted: null });
    mode = 'ok';
    const r = await cli(['plan', '--config', lapiConfig(dir), '--detailed-exitcode', '--output', 'json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toMatchObject({ version: 1, targets: [{ name: 'fw', summary: { create: 1 } }] });
    expect(existsSync(join(dir, 'fw.json'))).toBe(false);
  });

  it('removes a lifted ban on the next pass', async () => {
    const dir = tmp();
    const cfg = lapiConfig(dir);
    mode = 'ok';
    body = JSON.stringify({ new: [item('192.0.2.1', '4h'), item('192.0.2.2', '4h')], deleted: null });
    expect((await cli(['apply', '--config', cfg])).code).toBe(0);
    body = JSON.stringify({ new: [item('192.0.2.2', '4h')], deleted: [item('192.0.2.1', '-1s')] });
    expect((await cli(['apply', '--config', cfg])).code).toBe(0);
    const doc = JSON.parse(readFileSync(join(dir, 'fw.json'), 'utf8')) as { rules: Array<{ cidrs: string[] }> };
    expect(doc.rules.flatMap((r) => r.cidrs)).toEqual(['192.0.2.2/32']);
  });

  describe.each(['500', '403', 'garbage', 'truncated'] as const)('when the source answers %s', (failure) => {
    it('keeps every rule (except expired ones), names the source in one line and exits 1', async () => {
      const dir = tmp();
      const fw = join(dir, 'fw.json');
      const now = Date.now();
      // One live rule, one whose recorded expiry has passed, one foreign.
      writeFileSync(
        fw,
        JSON.stringify({
          capacity: { rules: 4, cidrs_per_rule: 2 },
          rules: [
            { name: 'allow-office', action: 'allow', family: 4, cidrs: ['203.0.113.7/32'] },
            { name: 'cloud-bouncer-e2e-001', action: 'deny', family: 4, cidrs: ['192.0.2.1/32'], description: formatMarker({ owner: 'e2e', expiresAt: now + 3_600_000 }) },
            { name: 'cloud-bouncer-e2e-002', action: 'deny', family: 4, cidrs: ['192.0.2.2/32'], description: formatMarker({ owner: 'e2e', expiresAt: now - 1_000 }) },
          ],
        }),
      );
      body = JSON.stringify({ new: [item('198.51.100.1', '4h')], deleted: null });
      mode = failure;
      const r = await cli(['apply', '--config', lapiConfig(dir)]);
      mode = 'ok';
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split('\n');
      const errLine = lines.find((l) => l.startsWith('cloud-bouncer: error:'))!;
      expect(errLine).toMatch(/^cloud-bouncer: error: source lapi: /);
      expect(r.stderr).not.toContain('secret-key-123456');
      // The plan says why it fails static and names the source once.
      expect(r.stdout).toMatch(/^cloud-bouncer plan at \S+ {2}\[FAIL-STATIC: a source failed; only expired or whitelisted rules are removed\]\n/);
      expect(r.stdout).toMatch(/^source lapi: FAILED: (?!source lapi)\S/m);
      const doc = JSON.parse(readFileSync(fw, 'utf8')) as { rules: Array<{ name: string; cidrs: string[] }> };
      expect(doc.rules.map((x) => x.name)).toEqual(['allow-office', 'cloud-bouncer-e2e-001']);
      expect(doc.rules[1]!.cidrs).toEqual(['192.0.2.1/32']);
    });
  });

  it.each([
    ['a missing key', 'targets:\n  - name: fw\n    provider: file\n', /targets\[0\]\.path: expected string, got nothing/],
    ['an unknown provider', 'targets:\n  - name: fw\n    provider: nope\n    path: x.json\n', /targets\[0\]\.provider: unknown provider "nope"/],
  ])('prints one line naming the key on %s, exits 1, and touches no target', async (_n, targets, message) => {
    const dir = tmp();
    const cfg = join(dir, 'c.yaml');
    writeFileSync(cfg, `sources:\n  - name: s\n    type: file\n    path: examples/decisions.json\n${targets}`);
    const r = await cli(['apply', '--config', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    expect(existsSync(join(dir, 'x.json'))).toBe(false);
  });

  it.each([
    ['no command', [], /^cloud-bouncer: error: no command given; expected plan, apply, run, status, flush or validate \(see cloud-bouncer --help\)$/],
    ['an unknown command', ['deploy'], /^cloud-bouncer: error: unknown command "deploy"/],
    ['both --target and --target-index', ['validate', '-c', 'examples/quickstart.yaml', '-t', 'demo', '--target-index', '0'], /^cloud-bouncer: error: --target and --target-index both select a target; give one of them$/],
    ['a value that starts with a dash', ['validate', '-c', 'examples/quickstart.yaml', '--target-index', '-1'], /^cloud-bouncer: error: Option '--target-index' argument is ambiguous\. .*'--target-index=-XYZ'\. \(see cloud-bouncer --help\)$/],
    ['a negative index given with =', ['validate', '-c', 'examples/quickstart.yaml', '--target-index=-1'], /^cloud-bouncer: error: --target-index: expected a number >= 0, got "-1"$/],
    ['a config that is not YAML', ['validate', '-c', 'test/fixtures/not-yaml.yaml'], /^cloud-bouncer: error: config: test\/fixtures\/not-yaml\.yaml: not valid YAML: All mapping items must start at the same column at line 3, column \d+$/],
  ])('prints one line on stderr and exits 1 on %s', async (_n, args, message) => {
    const r = await cli(args);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.endsWith('\n')).toBe(true);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr.trim()).toMatch(message);
  });

  it('flush needs --yes, then removes every owned rule and nothing else', async () => {
    const dir = tmp();
    const cfg = lapiConfig(dir);
    mode = 'ok';
    body = JSON.stringify({ new: [item('192.0.2.1', '4h'), item('2001:db8::1', '4h')], deleted: null });
    await cli(['apply', '--config', cfg]);
    const fw = join(dir, 'fw.json');
    const doc = JSON.parse(readFileSync(fw, 'utf8')) as { rules: unknown[] };
    doc.rules.unshift({ name: 'allow-office', action: 'allow', family: 4, cidrs: ['203.0.113.7/32'] });
    writeFileSync(fw, JSON.stringify(doc));
    const refused = await cli(['flush', '--config', cfg]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/pass --yes/);
    mode = '500'; // flush does not need the sources
    const r = await cli(['flush', '--yes', '--config', cfg]);
    mode = 'ok';
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^cloud-bouncer flush plan at /);
    expect(r.stdout).toMatch(/flush: remove 1 CIDR\b/);
    expect(r.stdout).not.toMatch(/no longer banned/);
    expect((JSON.parse(readFileSync(fw, 'utf8')) as { rules: Array<{ name: string }> }).rules.map((x) => x.name)).toEqual(['allow-office']);
  });

  it('status and flush run with the LAPI key and URL variables unset (they read no source); plan names them', async () => {
    const dir = tmp();
    const cfg = lapiConfig(dir);
    mode = 'ok';
    body = JSON.stringify({ new: [item('192.0.2.1', '4h')], deleted: null });
    await cli(['apply', '--config', cfg]);
    // Both the key and the URL come from variables that are gone (a URL is validated as one).
    writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('api_key: secret-key-123456', 'api_key: ${LOST_KEY}').replace(/api_url: \S+/, 'api_url: ${LOST_URL}'));
    const status = await cli(['status', '--config', cfg]);
    const plan = await cli(['plan', '--config', cfg]);
    const flush = await cli(['flush', '--yes', '--config', cfg]);
    expect([status.code, status.stderr]).toEqual([0, '']);
    expect(status.stdout).toMatch(/1 owned rule/);
    expect(plan.code).toBe(1);
    expect(plan.stderr).toMatch(/^cloud-bouncer: error: config: sources\[0\]\.api_(key|url): environment variable LOST_(KEY|URL) is not set/);
    expect(flush.code).toBe(0);
    expect(flush.stderr).not.toMatch(/error/);
    expect((JSON.parse(readFileSync(join(dir, 'fw.json'), 'utf8')) as { rules: unknown[] }).rules).toEqual([]);
  });

  it('writes log lines that name each key once', async () => {
    const { log, text } = captureLog();
    const r = await main(['plan', '--config', 'examples/quickstart.yaml'], { stdout: () => undefined, stderr: () => undefined, env: {}, log });
    expect(r).toBe(0);
    const lines = text().trim().split('\n');
    expect(lines.some((l) => l.includes('"source":"sample"'))).toBe(true);
    for (const line of lines) {
      const keys = [...line.matchAll(/"([a-z_]+)":/g)].map((m) => m[1]);
      // Top-level keys only matter here; the quick start's lines are flat.
      expect(keys.length, line).toBe(new Set(keys).size);
    }
  });

  it('validate reports the sources and targets', async () => {
    const r = await cli(['validate', '--config', 'examples/quickstart.yaml']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/configuration OK: 1 source\(s\) \[sample:file\], 1 target\(s\) \[demo:file\]/);
  });

  it('validate names a key or certificate file a source cannot read', async () => {
    const dir = tmp();
    const key = join(dir, 'key');
    writeFileSync(key, 'secret-key-123456\n');
    const doc = (extra: string, scheme = 'https') => {
      const p = join(dir, 'c.yaml');
      writeFileSync(p, `sources:\n  - name: lapi\n    type: lapi\n    api_url: ${scheme}://127.0.0.1:1/\n    api_key_file: ${key}\n${extra}targets:\n  - name: fw\n    provider: file\n    path: ${join(dir, 'fw.json')}\n`);
      return p;
    };
    const missingCa = `    ca_cert_path: ${join(dir, 'missing-ca.pem')}\n`;
    const good = await cli(['validate', '--config', doc('')]);
    const noCa = await cli(['validate', '--config', doc(missingCa)]);
    // Over plain http a run never reads the TLS files, so their absence is no error.
    const overHttp = await cli(['validate', '--config', doc(missingCa, 'http')]);
    const dirAsCa = await cli(['validate', '--config', doc(`    ca_cert_path: ${dir}\n`)]);
    rmSync(key);
    const noKey = await cli(['validate', '--config', doc('')]);
    expect(good.code).toBe(0);
    expect(overHttp.code).toBe(0);
    expect([noCa.code, noCa.stderr]).toEqual([1, `cloud-bouncer: error: config: sources[0].ca_cert_path: cannot read ${join(dir, 'missing-ca.pem')}: ENOENT\n`]);
    expect([dirAsCa.code, dirAsCa.stderr]).toEqual([1, `cloud-bouncer: error: config: sources[0].ca_cert_path: cannot read ${dir}: not a file\n`]);
    expect([noKey.code, noKey.stderr]).toEqual([1, `cloud-bouncer: error: config: sources[0].api_key_file: cannot read ${key}: ENOENT\n`]);
  });
});
