import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyEnvOverrides, expandEnv, loadConfig } from '../src/config.js';
import { ConfigError } from '../src/core/errors.js';

function yamlFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cb-config-'));
  const p = join(dir, 'config.yaml');
  writeFileSync(p, text);
  return p;
}

const minimal = `
sources:
  - name: sample
    type: file
    path: examples/decisions.json
targets:
  - name: demo
    provider: file
    path: .tmp/x.json
`;

describe('config', () => {
  it('loads a minimal config with defaults', async () => {
    const c = await loadConfig({ path: yamlFile(minimal), env: {} });
    expect(c.owner).toBe('default');
    expect(c.guards).toEqual({ min_prefix_v4: 16, min_prefix_v6: 48, max_ttl: 7 * 24 * 3_600_000 });
    expect(c.targets[0]).toMatchObject({ name: 'demo', provider: 'file', max_writes_per_run: 500 });
    expect(c.targets[0]!.settings).toMatchObject({ path: '.tmp/x.json', rules: 8, cidrs_per_rule: 4 });
  });

  it.each([
    ['a missing key', minimal.replace('    path: .tmp/x.json\n', ''), /^config: targets\[0\]\.path: expected string, got nothing \(the key is missing\)$/],
    ['a wrong type', minimal.replace('provider: file\n', 'provider: file\n    rules: many\n'), /^config: targets\[0\]\.rules: expected number, got "many" \(string\)$/],
    ['an unknown provider', minimal.replace('provider: file', 'provider: ovh-firewall'), /^config: targets\[0\]\.provider: unknown provider "ovh-firewall"; expected one of aws-nacl, azure-nsg, file, gcp-firewall$/],
    ['a bad CIDR', `${minimal}whitelist:\n  cidrs: [10.0.0.300/32]\n`, /^config: whitelist\.cidrs\[0\]: expected an IP address or CIDR like "192\.0\.2\.0\/24", got "10\.0\.0\.300\/32"$/],
    ['an unknown key', `${minimal}gaurds: {}\n`, /^config: gaurds: unknown key/],
    ['a bad duration', `${minimal}guards:\n  max_ttl: forever\n`, /^config: guards\.max_ttl: expected a duration like "90s" or "1h30m", got "forever"$/],
    ['no targets', minimal.slice(0, minimal.indexOf('targets:')) + 'targets: []\n', /^config: targets: expected at least one target/],
    ['a listen port out of range', `${minimal}daemon:\n  listen: 127.0.0.1:99999\n`, /^config: daemon\.listen: expected a port from 0 to 65535/],
    ['a listen address without a port', `${minimal}daemon:\n  listen: 127.0.0.1\n`, /^config: daemon\.listen: expected host:port/],
    ['a scope no firewall rule can hold', minimal.replace('    path: examples/decisions.json\n', '    path: examples/decisions.json\n    scopes: [ip, Country]\n'), /^config: sources\[0\]\.scopes\[1\]: expected ip or range \(country and AS decisions name no addresses a rule can hold\), got "Country"$/],
    ['two targets on one file', `${minimal}  - name: again\n    provider: file\n    path: .tmp/x.json\n`, /^config: targets\[1\]: target "again" writes to the file \.tmp\/x\.json, as target "demo" does, with the same owner \(default\): each would remove the other's rules/],
    [
      'two targets on one NACL',
      minimal.replace(/targets:[\s\S]*$/, `targets:\n${['a', 'b'].map((n, i) => `  - name: ${n}\n    provider: aws-nacl\n    region: eu-west-1\n    network_acl_id: acl-0123456789abcdef0\n    direction: ${i ? 'egress' : 'ingress'}\n    rule_band: { start: ${10 + 20 * i}, end: ${19 + 20 * i} }\n`).join('')}`),
      /^config: targets\[1\]: target "b" writes to network ACL acl-0123456789abcdef0 in eu-west-1, as target "a" does, .*; use one target with direction: both, or run a second bouncer with its own owner$/,
    ],
    ['a number below its minimum', minimal.replace('provider: file\n', 'provider: file\n    rules: 0\n'), /^config: targets\[0\]\.rules: expected a number >= 1, got 0 \(number\)$/],
    ['a band that ends before it starts', minimal.replace(/targets:[\s\S]*$/, 'targets:\n  - name: n\n    provider: aws-nacl\n    region: eu-west-1\n    network_acl_id: acl-0123456789abcdef0\n    rule_band: { start: 50, end: 20 }\n'), /^config: targets\[0\]\.rule_band: expected start <= end, got start 50 and end 20$/],
    ['a duplicate target name', `${minimal}  - name: demo\n    provider: file\n    path: y.json\n`, /^config: targets: target name "demo" is used twice/],
  ])('names the key on %s', async (_name, text, message) => {
    const err = await loadConfig({ path: yamlFile(text), env: {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(message);
  });

  it('accepts two targets on one NSG or project when their rule names differ, and two NACLs', async () => {
    const azure = (n: string, prefix: string, nsg = 'nsg') => `  - name: ${n}\n    provider: azure-nsg\n    subscription_id: 6f1a5c2e-0000-4000-8000-00000000c0de\n    resource_group: rg\n    nsg_name: ${nsg}\n    name_prefix: ${prefix}\n    priority_band: { start: 100, end: 199 }\n`;
    const aws = (n: string, id: string) => `  - name: ${n}\n    provider: aws-nacl\n    region: eu-west-1\n    network_acl_id: ${id}\n`;
    const base = minimal.slice(0, minimal.indexOf('targets:'));
    const ok = await loadConfig({ path: yamlFile(`${base}targets:\n${azure('in', 'cb-in')}${azure('out', 'cb-out')}${aws('x', 'acl-0123456789abcdef0')}${aws('y', 'acl-0123456789abcdef1')}`), env: {} });
    expect(ok.targets.map((t) => t.name)).toEqual(['in', 'out', 'x', 'y']);
    const same = await loadConfig({ path: yamlFile(`${base}targets:\n${azure('in', 'cb')}${azure('out', 'cb', 'NSG')}`), env: {} }).catch((e: unknown) => e);
    // ARM names are case-insensitive: nsg and NSG are one NSG.
    expect((same as Error).message).toMatch(/^config: targets\[1\]: target "out" writes to rule names cb-<owner>-… in NSG NSG, as target "in" does/);
  });

  it('expands ${ENV} inside values, with defaults, and names the key of a missing variable', () => {
    expect(expandEnv({ a: 'x-${FOO}-${BAR:-dflt}' }, { FOO: 'foo' })).toEqual({ a: 'x-foo-dflt' });
    expect(() => expandEnv({ sources: [{ api_key: '${NOPE}' }] }, {})).toThrow('config: sources[0].api_key: environment variable NOPE is not set');
  });

  it('builds a whole config from environment variables alone', async () => {
    const env = {
      CLOUD_BOUNCER__OWNER: 'lambda',
      CLOUD_BOUNCER__SOURCES__0__NAME: 'sample',
      CLOUD_BOUNCER__SOURCES__0__TYPE: 'file',
      CLOUD_BOUNCER__SOURCES__0__PATH: 'examples/decisions.json',
      CLOUD_BOUNCER__TARGETS__0__NAME: 'demo',
      CLOUD_BOUNCER__TARGETS__0__PROVIDER: 'file',
      CLOUD_BOUNCER__TARGETS__0__PATH: '/tmp/demo.json',
      CLOUD_BOUNCER__TARGETS__0__RULES: '12',
    };
    const c = await loadConfig({ env });
    expect(c.owner).toBe('lambda');
    expect(c.targets[0]!.settings).toMatchObject({ path: '/tmp/demo.json', rules: 12 });
  });

  it('lets CLOUD_BOUNCER__ variables override the file', () => {
    expect(applyEnvOverrides({ targets: [{ name: 'a', rules: 1 }] }, { CLOUD_BOUNCER__TARGETS__0__RULES: '9' })).toEqual({ targets: [{ name: 'a', rules: 9 }] });
  });

  it('names the variable, not --config, when CLOUD_BOUNCER_CONFIG_FILE cannot be read', async () => {
    const fromEnv = await loadConfig({ env: { CLOUD_BOUNCER_CONFIG_FILE: '/nonexistent/cb.yaml' } }).catch((e: unknown) => e);
    const fromFlag = await loadConfig({ path: '/nonexistent/cb.yaml', env: {} }).catch((e: unknown) => e);
    expect((fromEnv as Error).message).toBe('config: CLOUD_BOUNCER_CONFIG_FILE: cannot read /nonexistent/cb.yaml: ENOENT');
    expect((fromFlag as Error).message).toBe('config: --config: cannot read /nonexistent/cb.yaml: ENOENT');
  });

  it('names the variable whose list index skips items, and appends items in numeric order', async () => {
    const base = { targets: [{ name: 'a' }] };
    expect(() => applyEnvOverrides(base, { CLOUD_BOUNCER__TARGETS__5__RULES: '3' })).toThrow('config: CLOUD_BOUNCER__TARGETS__5__RULES: list index 5 skips items: targets has 1 item, so the next one is index 1');
    const many = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`CLOUD_BOUNCER__WHITELIST__CIDRS__${i}`, `192.0.2.${i}/32`]));
    expect((applyEnvOverrides({}, many).whitelist as { cidrs: string[] }).cidrs).toEqual(Array.from({ length: 11 }, (_, i) => `192.0.2.${i}/32`));
  });

  it('refuses to run without any configuration', async () => {
    await expect(loadConfig({ env: {} })).rejects.toThrow(/no configuration/);
  });
});
