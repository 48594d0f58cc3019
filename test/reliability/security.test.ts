/**
 * Security, through the CLI as operators run it:
 *
 * (a) API keys and tokens never appear in logs or plan output. The CLI runs
 *     as a child process (bundled from src/cli.ts) with `--log-level trace`,
 *     so its pino output is the real one on stderr; plan, apply, status and
 *     validate run against sources that fail in every way, and stdout and
 *     stderr are scanned for each secret (an `api_key`, a Bearer token, a
 *     key read from `api_key_file`) and for any 12-character piece of it.
 * (b) TLS verification is on by default: a LAPI with a certificate from a CA
 *     the client was not given fails, even with NODE_TLS_REJECT_UNAUTHORIZED=0
 *     in the environment, until `ca_cert_path` or `insecure_skip_verify` is
 *     set; `ca_cert_path` does not turn off the hostname check.
 * (c) mTLS against the real CrowdSec LAPI's certificate auth, end to end
 *     through the CLI: the client certificate alone is the credential.
 * (d) and (e), the container's non-root user and least-privilege IAM/RBAC,
 *     are covered by test/deploy/manifests.test.ts ("deploy/docker › runs as
 *     a numeric non-root user…", "deploy/iam › … explicit actions", and the
 *     SAM template's role: no wildcard actions); not repeated here. The
 *     Kubernetes manifests create no Role: the job reaches the clouds
 *     through workload identity only.
 *
 * The real-LAPI parts are skipped when `lapiAvailable()` is false (never in CI).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/core/errors.js';
import { validateConfig } from '../../src/config.js';
import { makeTestTls, type TestTls } from '../fakes/azure/tls.js';
import { freePort, lapiAvailable, startLapi, type StartedLapi } from '../helpers/lapi.js';
import { startScripted, type Reply, type ScriptedServer } from './fuzz-server.js';
import { HOUR, configDoc, ownedRule, seedFirewall, tempDir, writeConfig, type CliRun } from './fuzz-world.js';

const CLI = 'build/reliability/cli/cli.mjs';

/** The bundled CLI in a child process: real argv, real pino on fd 2, real exit code. */
function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => void (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/**
 * Lines of `text` holding a 12-character piece of `secret` (a partial key is
 * a leak too), each cut to 300 characters around the first piece found.
 */
function leaks(text: string, secret: string): string[] {
  const pieces = Array.from({ length: Math.max(0, secret.length - 11) }, (_, i) => secret.slice(i, i + 12));
  return text
    .split('\n')
    .map((line) => {
      const at = Math.min(...pieces.map((p) => line.indexOf(p)).filter((i) => i >= 0));
      return Number.isFinite(at) ? line.slice(Math.max(0, at - 150), at + 150) : undefined;
    })
    .filter((l): l is string => l !== undefined);
}

beforeAll(async () => {
  await build({ entryPoints: ['src/cli.ts'], bundle: true, platform: 'node', format: 'esm', target: 'node22', packages: 'external', outfile: CLI, logLevel: 'warning' });
}, 120_000);

describe('security (a): secrets never reach logs or plan output', () => {
  const API_KEY = `cbk-${randomBytes(20).toString('hex')}`;
  const TOKEN = `cbt-${randomBytes(20).toString('hex')}`;
  const FILE_KEY = `cbf-${randomBytes(20).toString('hex')}`;
  const SECRETS = { api_key: API_KEY, bearer: TOKEN, api_key_file: FILE_KEY };

  let plain: ScriptedServer;
  let tlsServer: ScriptedServer;
  let tls: TestTls;
  let dir: string;
  let closedPort: number;

  beforeAll(async () => {
    tls = makeTestTls();
    plain = await startScripted();
    tlsServer = await startScripted({ tls: { key: tls.key, cert: tls.cert } });
    closedPort = await freePort();
    dir = tempDir('secrets');
    writeFileSync(join(dir, 'key'), `${FILE_KEY}\n`);
  });

  afterAll(async () => {
    await plain?.close();
    await tlsServer?.close();
    tls?.cleanup();
  });

  /** Three sources, one per kind of secret, all at the same failing endpoint. */
  function config(apiUrl: string, extra: Record<string, unknown> = {}): string {
    const fw = seedFirewall(dir, 'sec', [ownedRule('sec', 1, ['192.0.2.200/32'], Date.now() + 2 * HOUR)]);
    const doc = configDoc({ owner: 'sec', source: { api_url: apiUrl, api_key: API_KEY, timeout: '400ms', ...extra }, firewall: fw.path });
    const mikoUrl = new URL('pbxcore/api/v3/firewall-bouncer/', apiUrl).href;
    (doc.sources as unknown[]).push(
      { name: 'pbx', type: 'mikopbx', api_url: mikoUrl, api_key: TOKEN, auth: 'bearer', timeout: '400ms', ...extra },
      { name: 'keyfile', type: 'lapi', api_url: apiUrl, api_key_file: join(dir, 'key'), timeout: '400ms', ...extra },
    );
    return writeConfig(dir, doc);
  }

  type Failure = { name: string; url: () => string; reply?: Reply; echoes: boolean };
  const FAILURES: Failure[] = [
    { name: '403 echoing the credentials (JSON body, status text, headers)', url: () => plain.url, reply: { kind: 'echo', status: 403, json: true }, echoes: true },
    { name: '401 echoing the credentials in an HTML body', url: () => plain.url, reply: { kind: 'echo', status: 401, json: false }, echoes: true },
    { name: '500 echoing the credentials', url: () => plain.url, reply: { kind: 'echo', status: 500, json: true }, echoes: true },
    { name: 'TLS certificate from an unknown CA', url: () => tlsServer.url, reply: { kind: 'echo', status: 403, json: true }, echoes: false },
    { name: 'TLS spoken to a plain HTTP port', url: () => plain.url.replace('http:', 'https:'), echoes: false },
    { name: 'timeout (the server never answers)', url: () => plain.url, reply: { kind: 'silent' }, echoes: false },
    { name: 'connection refused', url: () => `http://127.0.0.1:${closedPort}/`, echoes: false },
  ];

  const COMMANDS = [
    ['plan', '--output', 'text'],
    ['plan', '--output', 'json'],
    ['apply', '--output', 'json'],
    ['status', '--output', 'json'],
    ['validate', '--output', 'text'],
  ];

  describe.each(FAILURES)('when the source fails with $name', (f) => {
    for (const cmd of COMMANDS) {
      const passes = cmd[0] === 'plan' || cmd[0] === 'apply';

      it(`${cmd.join(' ')} at log level trace prints no piece of any secret`, async () => {
        // Prepare
        const cfg = config(f.url());
        if (f.reply) plain.reply = tlsServer.reply = f.reply;
        const seenBefore = plain.seen.length;

        // Act
        const r = await runCli([...cmd, '--config', cfg, '--log-level', 'trace']);

        // Assess: the credentials really went out (and, for the echo cases, really came back) ...
        if (f.echoes && passes) {
          const seen = plain.seen.slice(seenBefore).map((x) => x.headers);
          expect(seen.some((h) => h['x-api-key'] === API_KEY)).toBe(true);
          expect(seen.some((h) => h.authorization === `Bearer ${TOKEN}`)).toBe(true);
          expect(seen.some((h) => h['x-api-key'] === FILE_KEY)).toBe(true);
        }
        // ... the run failed with a line naming a source, trace lines were written ...
        if (passes) {
          expect(r.code).toBe(1);
          expect(r.stderr).toMatch(/^cloud-bouncer: error: source (lapi|pbx|keyfile): /m);
          expect(r.stderr).toMatch(/"level":(10|20)/);
        }
        // ... and no piece of any secret was printed.
        const out = `${r.stdout}\n${r.stderr}`;
        for (const [kind, secret] of Object.entries(SECRETS)) expect(leaks(out, secret), `${kind} in ${cmd.join(' ')}`).toEqual([]);
      });
    }
  });

  it.each([
    ['inside a JSON envelope', (cred: string) => `{"new":[${cred}],"deleted":null}`],
    // The "expected a JSON object, got ..." message quotes the body's first 20 bytes: a cut key.
    ['at the start of a body that is not JSON', (cred: string) => `key=${cred}`],
  ])('prints no piece of a key that a server echoes in a 200 body, %s', async (_n, body) => {
    // Prepare: a proxy or a broken server that answers 200 with the credential it got.
    const cfg = config(plain.url);
    plain.reply = (path) => {
      const h = plain.seen.at(-1)!.headers;
      return path.endsWith('/v1/whitelist') ? { kind: 'body', body: '[]' } : { kind: 'body', body: body(String(h['x-api-key'] ?? h.authorization)) };
    };

    // Act
    const r = await runCli(['plan', '--config', cfg, '--output', 'json', '--log-level', 'trace']);

    // Assess: the refusal is reported, and no piece of any secret with it.
    expect(r.code).toBe(1);
    const out = `${r.stdout}\n${r.stderr}`;
    expect(out).toMatch(/malformed/);
    for (const [kind, secret] of Object.entries(SECRETS)) expect(leaks(out, secret), kind).toEqual([]);
  });

  it('does not print an all-digit api_key that YAML reads as a number in the config error', async () => {
    // Prepare: `api_key: 918273645546372819` is a number to YAML; the schema wants a string.
    const key = '918273645546372819';
    const cfg = join(dir, 'numeric-key.yaml');
    writeFileSync(cfg, `sources:\n  - name: lapi\n    type: lapi\n    api_url: ${plain.url}\n    api_key: ${key}\ntargets:\n  - name: fw\n    provider: file\n    path: ${join(dir, 'never.json')}\n`);

    // Act
    const r = await runCli(['plan', '--config', cfg, '--log-level', 'trace']);

    // Assess: the key is named, its value is not.
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/config: sources\[0\]\.api_key: expected string/);
    expect(leaks(`${r.stdout}${r.stderr}`, key)).toEqual([]);
  });

  it('names the key file, not its content, when api_key_file is unreadable or empty', async () => {
    // Prepare
    writeFileSync(join(dir, 'empty'), '\n');
    const cfg = config(plain.url);
    const doc = readFileSync(cfg, 'utf8').replace(join(dir, 'key'), join(dir, 'empty'));
    writeFileSync(cfg, doc);
    plain.reply = { kind: 'body', body: '{"new":null,"deleted":null}' };

    // Act
    const r = await runCli(['plan', '--config', cfg, '--log-level', 'trace']);

    // Assess
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`source keyfile: api_key_file ${join(dir, 'empty').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is empty`));
    for (const [kind, secret] of Object.entries(SECRETS)) expect(leaks(`${r.stdout}${r.stderr}`, secret), kind).toEqual([]);
  });
});

describe('security (b): TLS verification is on by default', () => {
  let tls: TestTls;
  let server: ScriptedServer;
  let dir: string;
  let selfSigned: { cert: string; key: string; certPath: string };
  let selfServer: ScriptedServer;
  const body = JSON.stringify({ new: [{ duration: '4h', origin: 'crowdsec', scenario: 'crowdsecurity/ssh-bf', scope: 'Ip', type: 'ban', value: '192.0.2.10' }], deleted: null });

  beforeAll(async () => {
    tls = makeTestTls();
    server = await startScripted({ tls: { key: tls.key, cert: tls.cert } });
    server.reply = { kind: 'body', body };
    dir = tempDir('tls');
    // A truly self-signed certificate whose only name is not the one the client dials.
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'self.key', '-out', 'self.pem', '-days', '2', '-subj', '/CN=lapi.example.net', '-addext', 'subjectAltName=DNS:lapi.example.net'], { cwd: dir, stdio: 'ignore' });
    selfSigned = { cert: readFileSync(join(dir, 'self.pem'), 'utf8'), key: readFileSync(join(dir, 'self.key'), 'utf8'), certPath: join(dir, 'self.pem') };
    selfServer = await startScripted({ tls: { key: selfSigned.key, cert: selfSigned.cert } });
    selfServer.reply = { kind: 'body', body };
  });

  afterAll(async () => {
    await server?.close();
    await selfServer?.close();
    tls?.cleanup();
  });

  function target(tag: string) {
    const fw = seedFirewall(tempDir(tag), 'tls', []);
    return { fw, before: fw.bytes() };
  }

  it.each([
    ['by default', {}, {}],
    ['with NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment', {}, { NODE_TLS_REJECT_UNAUTHORIZED: '0' }],
  ])('refuses a LAPI whose CA it was not given %s, names the source and the fix, and writes nothing', async (_name, extra, env) => {
    // Prepare
    const t = target('tls-default');
    const cfg = writeConfig(dir, configDoc({ owner: 'tls', source: { api_url: server.url, api_key: 'k-0123456789', ...extra }, firewall: t.fw.path }));

    // Act
    const r = await runCli(['apply', '--config', cfg], env);

    // Assess
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cloud-bouncer: error: source lapi: decisions https:\/\/127\.0\.0\.1:\d+\/: TLS certificate not trusted \(\w+\); set ca_cert_path/m);
    expect(t.fw.bytes()).toBe(t.before);
  });

  it('refuses a self-signed certificate by default', async () => {
    const t = target('tls-self');
    const cfg = writeConfig(dir, configDoc({ owner: 'tls', source: { api_url: selfServer.url, api_key: 'k-0123456789' }, firewall: t.fw.path }));
    const r = await runCli(['apply', '--config', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/source lapi: decisions https:\/\/127\.0\.0\.1:\d+\/: TLS certificate not trusted \(DEPTH_ZERO_SELF_SIGNED_CERT\)/);
    expect(t.fw.bytes()).toBe(t.before);
  });

  it('still checks the host name when ca_cert_path trusts the certificate', async () => {
    const t = target('tls-name');
    const cfg = writeConfig(dir, configDoc({ owner: 'tls', source: { api_url: selfServer.url, api_key: 'k-0123456789', ca_cert_path: selfSigned.certPath }, firewall: t.fw.path }));
    const r = await runCli(['apply', '--config', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/source lapi: .*ERR_TLS_CERT_ALTNAME_INVALID/);
    expect(t.fw.bytes()).toBe(t.before);
  });

  it('accepts the LAPI once ca_cert_path names its CA', async () => {
    const t = target('tls-ca');
    const cfg = writeConfig(dir, configDoc({ owner: 'tls', source: { api_url: server.url, api_key: 'k-0123456789', ca_cert_path: tls.caPath }, firewall: t.fw.path }));
    const r = await runCli(['apply', '--config', cfg]);
    expect(r.code, r.stderr).toBe(0);
    expect(t.fw.owned().flatMap((x) => x.cidrs)).toEqual(['192.0.2.10/32']);
  });

  it('accepts it with insecure_skip_verify, and says so in a warning', async () => {
    const t = target('tls-skip');
    const cfg = writeConfig(dir, configDoc({ owner: 'tls', source: { api_url: selfServer.url, api_key: 'k-0123456789', insecure_skip_verify: true }, firewall: t.fw.path }));
    const r = await runCli(['apply', '--config', cfg, '--log-level', 'warn']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/"level":40.*insecure_skip_verify is set/);
    expect(t.fw.owned().flatMap((x) => x.cidrs)).toEqual(['192.0.2.10/32']);
  });

  it('the schema defaults insecure_skip_verify to false', async () => {
    const config = await validateConfig(configDoc({ source: { api_url: 'https://127.0.0.1:1/', api_key: 'k-0123456789' }, firewall: join(dir, 'x.json') }));
    expect(config.sources[0]).toMatchObject({ insecure_skip_verify: false });
    await expect(validateConfig(configDoc({ source: { api_url: 'https://127.0.0.1:1/', api_key: 'k', insecure_skip_verify: 'yes' }, firewall: join(dir, 'x.json') }))).rejects.toBeInstanceOf(ConfigError);
  });
});

describe.skipIf(!lapiAvailable())('security (b, c): the real CrowdSec LAPI over TLS and mTLS, through the CLI', () => {
  let lapi: StartedLapi;
  let dir: string;

  beforeAll(async () => {
    lapi = await startLapi({ tls: 'mtls' });
    await lapi.addDecision({ ip: '192.0.2.10', duration: '4h' });
    await lapi.addDecision({ range: '198.51.100.0/24', duration: '2h' });
    dir = tempDir('mtls');
  }, 120_000);

  afterAll(async () => {
    await lapi?.stop();
  });

  function target(tag: string) {
    const fw = seedFirewall(tempDir(tag), 'mtls', []);
    return { fw, before: fw.bytes() };
  }

  it('refuses the LAPI certificate without ca_cert_path, with a line naming the source', async () => {
    const t = target('real-tls-default');
    const cfg = writeConfig(dir, configDoc({ owner: 'mtls', source: { api_url: lapi.url, api_key: lapi.apiKey }, firewall: t.fw.path }));
    const r = await runCli(['apply', '--config', cfg, '--log-level', 'trace']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cloud-bouncer: error: source lapi: decisions https:\/\/127\.0\.0\.1:\d+\/: TLS certificate not trusted/m);
    expect(leaks(`${r.stdout}${r.stderr}`, lapi.apiKey)).toEqual([]);
    expect(t.fw.bytes()).toBe(t.before);
  });

  it('works with ca_cert_path, and with insecure_skip_verify', async () => {
    for (const extra of [{ ca_cert_path: lapi.tls!.ca }, { insecure_skip_verify: true }]) {
      const t = target('real-tls-ok');
      const cfg = writeConfig(dir, configDoc({ owner: 'mtls', source: { api_url: lapi.url, api_key: lapi.apiKey, ...extra }, firewall: t.fw.path }));
      const r = await runCli(['apply', '--config', cfg]);
      expect(r.code, r.stderr).toBe(0);
      expect(t.fw.owned().flatMap((x) => x.cidrs).sort()).toEqual(['192.0.2.10/32', '198.51.100.0/24']);
    }
  });

  it('applies with the client certificate as the only credential (mTLS), and the LAPI records a TLS bouncer', async () => {
    // Prepare
    const t = target('real-mtls');
    const cfg = writeConfig(dir, configDoc({ owner: 'mtls', source: { api_url: lapi.url, ca_cert_path: lapi.tls!.ca, cert_path: lapi.tls!.bouncerCert, key_path: lapi.tls!.bouncerKey }, firewall: t.fw.path }));

    // Act
    const plan = await runCli(['plan', '--config', cfg, '--output', 'json']);
    const apply = await runCli(['apply', '--config', cfg]);

    // Assess
    expect(plan.code, plan.stderr).toBe(0);
    expect(apply.code, apply.stderr).toBe(0);
    expect(t.fw.owned().flatMap((x) => x.cidrs).sort()).toEqual(['192.0.2.10/32', '198.51.100.0/24']);
    expect((await lapi.bouncers()).some((b) => b.auth_type === 'tls' && b.type === 'crowdsec-cloud-bouncer')).toBe(true);
    // The private key's body never shows either.
    const keyBody = readFileSync(lapi.tls!.bouncerKey, 'utf8').split('\n')[1]!;
    expect(leaks(`${plan.stdout}${plan.stderr}${apply.stdout}${apply.stderr}`, keyBody)).toEqual([]);
  });

  it.each([
    ['an agent certificate (wrong OU)', 'agent', /HTTP 403/],
    ['a certificate from a CA the LAPI does not trust', 'rogue', /TLS handshake failed|connection dropped/],
  ])('refuses %s through the CLI and writes nothing', async (_name, which, message) => {
    const t = target(`real-mtls-${which}`);
    const files = which === 'agent' ? { cert_path: lapi.tls!.agentCert, key_path: lapi.tls!.agentKey } : { cert_path: lapi.tls!.rogueCert, key_path: lapi.tls!.rogueKey };
    const cfg = writeConfig(dir, configDoc({ owner: 'mtls', source: { api_url: lapi.url, ca_cert_path: lapi.tls!.ca, ...files }, firewall: t.fw.path }));
    const r = await runCli(['apply', '--config', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cloud-bouncer: error: source lapi: /m);
    expect(r.stderr).toMatch(message);
    expect(t.fw.bytes()).toBe(t.before);
  });
});
