/**
 * The least-privilege roles in deploy/iam hold exactly the actions of the ARM
 * requests the provider makes (Azure resource provider operations,
 * Microsoft.Network), measured on the fake over passes that create, update
 * and delete rules: the rule writer for the NSG, the operation status reader
 * for the Azure-AsyncOperation and Location URLs the writes return.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HOUR, NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';
import { makeProvider, newNsg, startFake, type Env } from './setup.js';

/** The action each ARM request (the fake's operation name) needs. */
const REQUIRED: Record<string, string> = {
  'nsg.get': 'Microsoft.Network/networkSecurityGroups/read',
  'rules.list': 'Microsoft.Network/networkSecurityGroups/securityRules/read',
  'rule.get': 'Microsoft.Network/networkSecurityGroups/securityRules/read',
  'rule.put': 'Microsoft.Network/networkSecurityGroups/securityRules/write',
  'rule.delete': 'Microsoft.Network/networkSecurityGroups/securityRules/delete',
  'op.status': 'Microsoft.Network/locations/operations/read',
  'op.result': 'Microsoft.Network/locations/operationResults/read',
};
const OPERATIONS = new Set(['op.status', 'op.result']);

interface Role {
  Name: string;
  IsCustom: boolean;
  Actions: string[];
  NotActions: string[];
  DataActions: string[];
  AssignableScopes: string[];
}

function role(file: string): Role {
  return JSON.parse(readFileSync(new URL(`../../../deploy/iam/${file}`, import.meta.url), 'utf8')) as Role;
}

let env: Env;
beforeAll(async () => {
  env = await startFake();
});
afterAll(async () => {
  await env.close();
});

describe('deploy/iam/azure-nsg-*.json', () => {
  it('grant exactly the actions of the ARM requests the provider makes, split between the NSG role and the operation status role', async () => {
    // Prepare: passes that create, update (prefixes and expiry) and delete rules.
    const nsg = newNsg(env);
    const provider = makeProvider(env, { nsg_name: nsg, prefixes_per_rule: 2 });
    env.fake.resetCounters();
    await providerPass(provider, [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3')]);
    await providerPass(provider, [ban('192.0.2.1', { expiresAt: NOW + 9 * HOUR }), ban('192.0.2.3')]);
    await providerPass(provider, [ban('192.0.2.1', { expiresAt: NOW + 9 * HOUR })]);
    const used = Object.keys(env.fake.calls.byOp).sort();
    // Act
    const writer = role('azure-nsg-role.json');
    const status = role('azure-nsg-operations-role.json');
    // Assess: every request is one the table knows, and each role holds exactly its share.
    expect(used.filter((op) => !(op in REQUIRED))).toEqual([]);
    expect(used).toEqual(expect.arrayContaining(['nsg.get', 'rule.put', 'rule.delete']));
    const need = (ops: string[]) => [...new Set(ops.map((op) => REQUIRED[op]!))].sort();
    expect([...writer.Actions].sort()).toEqual(need(used.filter((op) => !OPERATIONS.has(op))));
    expect([...status.Actions].sort()).toEqual(need(used.filter((op) => OPERATIONS.has(op))));
    for (const r of [writer, status]) {
      expect(r.IsCustom).toBe(true);
      expect([r.NotActions, r.DataActions]).toEqual([[], []]);
      expect(r.Actions.every((a) => !a.includes('*'))).toBe(true);
    }
  });
});
