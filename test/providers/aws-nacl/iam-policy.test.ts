/**
 * The least-privilege policy in deploy/iam allows exactly the EC2 calls the
 * provider makes, on the configured NACL, for the tag keys it writes.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeEc2, type FakeEc2 } from '../../fakes/ec2/server.js';
import { NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import { OWNER, harness, useEnvCredentials } from './harness.js';

interface Statement {
  Sid: string;
  Effect: string;
  Action: string | string[];
  Resource: string;
  Condition?: Record<string, Record<string, string | string[]>>;
}

/** What the README's envsubst command does, for the four placeholders. */
function render(vars: Record<string, string>): { Version: string; Statement: Statement[] } {
  const text = readFileSync(new URL('../../../deploy/iam/aws-nacl-policy.json', import.meta.url), 'utf8');
  return JSON.parse(text.replace(/\$\{(AWS_REGION|AWS_ACCOUNT_ID|NETWORK_ACL_ID|OWNER)\}/g, (_, k: string) => vars[k]!));
}

const globMatch = (pattern: string, s: string) => new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`).test(s);

let fake: FakeEc2;
let restoreEnv: () => void;

beforeAll(async () => {
  restoreEnv = useEnvCredentials();
  fake = await startFakeEc2();
});

afterAll(async () => {
  await fake.close();
  restoreEnv();
});

describe('deploy/iam/aws-nacl-policy.json', () => {
  it('allows exactly the EC2 actions the provider calls, writes only on the NACL, and only our claim tag keys', async () => {
    // Prepare: passes that create, replace, refresh and delete (emptying a claim tag).
    const h = await harness({ fake });
    fake.resetCounters();
    await providerPass(h.provider, [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3'), ban('192.0.2.4')]);
    await providerPass(await h.fresh(), [ban('192.0.2.1'), ban('192.0.2.2'), ban('198.51.100.9', { expiresAt: NOW + 9 * 3_600_000 })]);
    await providerPass(await h.fresh(), []);
    const used = Object.keys(fake.calls).map((a) => `ec2:${a}`).sort();
    const tagKeysWritten = new Set<string>();
    await providerPass(await h.fresh(), [ban('192.0.2.1')]);
    for (const k of Object.keys(fake.tags(h.aclId))) if (k !== 'Name') tagKeysWritten.add(k);

    // Act
    const policy = render({ AWS_REGION: 'eu-west-1', AWS_ACCOUNT_ID: '111122223333', NETWORK_ACL_ID: h.aclId, OWNER });

    // Assess
    expect(JSON.stringify(policy)).not.toContain('${');
    const actions = policy.Statement.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action])).sort();
    expect(actions).toEqual(used);
    const arn = `arn:aws:ec2:eu-west-1:111122223333:network-acl/${h.aclId}`;
    for (const s of policy.Statement) {
      expect(s.Effect).toBe('Allow');
      const acts = Array.isArray(s.Action) ? s.Action : [s.Action];
      if (acts.some((a) => !a.startsWith('ec2:Describe'))) expect(s.Resource).toBe(arn);
    }
    const tags = policy.Statement.find((s) => s.Sid === 'WriteOwnClaimTagsOfOneNetworkAcl')!;
    const patterns = tags.Condition!['ForAllValues:StringLike']!['aws:TagKeys'] as string[];
    expect(tagKeysWritten.size).toBeGreaterThan(0);
    for (const k of tagKeysWritten) expect(patterns.some((p) => globMatch(p, k))).toBe(true);
    expect(patterns.some((p) => globMatch(p, 'Name'))).toBe(false);
    expect(patterns.some((p) => globMatch(p, 'cloud-bouncer:other-owner:ingress:8'))).toBe(false);
    expect(tags.Condition!.Null).toEqual({ 'aws:TagKeys': 'false' });
  });

  const hasEnvsubst = spawnSync('envsubst', ['--version']).status === 0;
  it.skipIf(!hasEnvsubst)('renders with the README command to the same policy (skipped: envsubst is not installed)', () => {
    const readme = readFileSync(new URL('../../../deploy/iam/README-aws.md', import.meta.url), 'utf8');
    const block = /```sh\n([\s\S]*?)```/.exec(readme)![1]!;
    // The command as documented, printing instead of writing the file.
    const command = block.replace(/\s*>\s*\S+\s*$/, '');
    const out = execFileSync('sh', ['-c', command], { cwd: new URL('../../../', import.meta.url), encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual(render({ AWS_REGION: 'eu-west-1', AWS_ACCOUNT_ID: '111122223333', NETWORK_ACL_ID: 'acl-0123456789abcdef0', OWNER: 'default' }));
  });
});
