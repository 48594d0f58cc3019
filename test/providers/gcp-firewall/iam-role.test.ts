/**
 * The least-privilege role in deploy/iam holds exactly the permissions the
 * Compute methods the provider calls require (Compute API reference, "IAM
 * Permissions" of each method), measured on the fake over passes that
 * create, patch and delete rules.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { FakeCompute } from '../../fakes/gcp/compute-server.js';
import { HOUR, NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import { makeProvider, newProject, startFake } from './setup.js';

/** Permissions each REST method needs. */
const REQUIRED: Record<string, string[]> = {
  'firewalls.list': ['compute.firewalls.list'],
  'firewalls.get': ['compute.firewalls.get'],
  'firewalls.insert': ['compute.firewalls.create', 'compute.networks.updatePolicy'],
  'firewalls.patch': ['compute.firewalls.update', 'compute.networks.updatePolicy'],
  'firewalls.delete': ['compute.firewalls.delete', 'compute.networks.updatePolicy'],
  'globalOperations.get': ['compute.globalOperations.get'],
  'globalOperations.wait': ['compute.globalOperations.get'],
};

let fake: FakeCompute;
beforeAll(async () => {
  fake = await startFake();
});
afterAll(async () => {
  await fake.close();
});

describe('deploy/iam/gcp-firewall-role.yaml', () => {
  it('grants exactly the permissions of the Compute methods the provider calls', async () => {
    // Prepare: passes that create, patch (ranges and expiry) and delete.
    const project = newProject(fake);
    const provider = makeProvider(fake, project, { ranges_per_rule: 2 });
    fake.resetCounters();
    await providerPass(provider, [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3')]);
    await providerPass(provider, [ban('192.0.2.1', { expiresAt: NOW + 9 * HOUR }), ban('192.0.2.3')]);
    await providerPass(provider, [ban('192.0.2.1', { expiresAt: NOW + 9 * HOUR })]);
    const used = Object.keys(fake.calls.byOp);
    // Act
    const role = parse(readFileSync(new URL('../../../deploy/iam/gcp-firewall-role.yaml', import.meta.url), 'utf8')) as { title: string; stage: string; includedPermissions: string[] };
    // Assess
    expect(used.sort()).toEqual(['firewalls.delete', 'firewalls.insert', 'firewalls.list', 'firewalls.patch', 'globalOperations.wait']);
    const needed = [...new Set(used.flatMap((m) => REQUIRED[m]!))].sort();
    expect([...role.includedPermissions].sort()).toEqual(needed);
    expect(role.stage).toBe('GA');
    expect(role.title.length).toBeLessThanOrEqual(100);
  });

  it('is what README-gcp.md tells operators to create and bind', () => {
    const readme = readFileSync(new URL('../../../deploy/iam/README-gcp.md', import.meta.url), 'utf8');
    expect(readme).toContain('--file=deploy/iam/gcp-firewall-role.yaml');
    expect(readme).toMatch(/--role="projects\/\$PROJECT\/roles\/cloudBouncerFirewall"/);
    const role = parse(readFileSync(new URL('../../../deploy/iam/gcp-firewall-role.yaml', import.meta.url), 'utf8')) as { includedPermissions: string[] };
    for (const p of role.includedPermissions) expect(readme).toContain(`\`${p}\``);
  });
});
