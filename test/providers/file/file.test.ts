import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { FileProvider, fileConfigSchema, type FileDoc } from '../../../src/providers/file/index.js';
import { formatMarker } from '../../../src/core/marker.js';
import { bansFromRules } from '../../../src/core/desired.js';
import { HOUR, NOW, ban } from '../../helpers/bans.js';
import { providerPass } from '../../helpers/pass.js';

const log = pino({ level: 'silent' });

function setup(doc?: FileDoc, over: Record<string, unknown> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'cb-file-'));
  const path = join(dir, 'fw.json');
  if (doc) writeFileSync(path, JSON.stringify(doc));
  const cfg = fileConfigSchema.parse({ path, rules: 3, cidrs_per_rule: 2, ...over });
  const provider = new FileProvider(cfg, { target: 'demo', owner: 'test', log, now: () => NOW });
  const read = () => JSON.parse(readFileSync(path, 'utf8')) as FileDoc;
  return { path, provider, read };
}

describe('providers/file', () => {
  it('applies bans as owned deny rules with a marker, one family per rule; the second pass writes nothing', async () => {
    const { provider, read } = setup();
    const bans = [ban('192.0.2.1'), ban('192.0.2.2'), ban('2001:db8::1')];
    const first = await providerPass(provider, bans);
    expect(first.result!.outcomes.every((o) => o.status === 'applied')).toBe(true);
    const doc = read();
    expect(doc.rules).toHaveLength(2);
    for (const r of doc.rules) {
      expect(r.action).toBe('deny');
      expect(r.description).toMatch(/^cloud-bouncer owner=test exp=\d+$/);
      expect(new Set(r.cidrs.map((c) => c.includes(':'))).size).toBe(1);
    }
    const writesBefore = provider.stats().writes;
    const second = await providerPass(provider, bans);
    expect(second.plan.changes).toEqual([]);
    expect(provider.stats().writes).toBe(writesBefore);
  });

  it('counts foreign rules against capacity and never touches them', async () => {
    const foreign = { name: 'allow-office', action: 'allow' as const, family: 4 as const, cidrs: ['203.0.113.7/32'], description: 'office' };
    const { provider, read } = setup({ capacity: { rules: 2, cidrs_per_rule: 2 }, rules: [foreign] });
    const { plan } = await providerPass(provider, [ban('192.0.2.1'), ban('192.0.2.2'), ban('192.0.2.3', { originClass: 'list' })]);
    expect(plan.capacity[0]).toMatchObject({ rules: { used: 1, total: 1 } });
    expect(plan.unenforced.map((u) => [u.cidr, u.reason])).toEqual([['192.0.2.3/32', 'capacity']]);
    expect(read().rules[0]).toEqual(foreign);
  });

  it('reports a rule that uses our name without our marker as a conflict and writes nothing', async () => {
    const squatter = { name: 'cloud-bouncer-test-001', action: 'deny' as const, family: 4 as const, cidrs: ['198.51.100.1/32'] };
    const { provider, read } = setup({ capacity: { rules: 3, cidrs_per_rule: 2 }, rules: [squatter] });
    const { plan, result } = await providerPass(provider, [ban('192.0.2.1')]);
    expect(plan.error).toMatch(/cloud-bouncer-test-001/);
    expect(result).toBeUndefined();
    expect(read().rules).toEqual([squatter]);
  });

  it('warns when a foreign allow rule is evaluated before our deny rules', async () => {
    const allowAll = { name: 'allow-all', action: 'allow' as const, family: 4 as const, cidrs: ['0.0.0.0/0'] };
    const { provider } = setup({ capacity: { rules: 3, cidrs_per_rule: 2 }, rules: [allowAll] });
    const { plan } = await providerPass(provider, [ban('192.0.2.1')]);
    expect(plan.warnings.join()).toMatch(/allow-all is evaluated before our deny rules/);
  });

  it('removes a rule once its recorded expiry passes, with the sources silent (fail-static)', async () => {
    const { provider, read } = setup();
    await providerPass(provider, [ban('192.0.2.1', { expiresAt: NOW + HOUR }), ban('2001:db8::1', { expiresAt: NOW + 5 * HOUR })]);
    const later = NOW + 2 * HOUR;
    const state = await provider.read();
    await providerPass(provider, bansFromRules(state.rules, later), { now: later });
    expect(read().rules.flatMap((r) => r.cidrs)).toEqual(['2001:db8::1/128']);
  });

  it('refuses to write when the file changed under it since the plan', async () => {
    const { provider, path } = setup();
    const state = await provider.read();
    const { planTarget } = await import('../../../src/core/plan.js');
    const plan = planTarget({ target: 'demo', provider: 'file', bans: [ban('192.0.2.1')], state, now: NOW });
    writeFileSync(path, JSON.stringify({ capacity: { rules: 3, cidrs_per_rule: 2 }, rules: [{ name: plan.changes[0]!.slot, action: 'deny', family: 4, cidrs: ['10.9.9.9/32'], description: formatMarker({ owner: 'test', expiresAt: NOW + HOUR }) }] }));
    const { WriteBudget } = await import('../../../src/core/queue.js');
    await expect(provider.apply(plan.changes, { budget: new WriteBudget(10) })).rejects.toThrow(/changed since the plan/);
  });

  it('gives a clear error for a corrupt target file and changes nothing', async () => {
    const { provider, path } = setup();
    writeFileSync(path, '{"capacity": {"rules": "many"}, "rules": []}');
    await expect(provider.read()).rejects.toThrow(/fw\.json: capacity\.rules: .*expected number/);
    expect(readFileSync(path, 'utf8')).toBe('{"capacity": {"rules": "many"}, "rules": []}');
  });

  it('refuses concurrent writes and the retry key by name', () => {
    expect(fileConfigSchema.safeParse({ path: 'x.json', queue: { concurrency: 2 } }).error?.issues[0]).toMatchObject({ path: ['queue', 'concurrency'], message: 'expected 1: the file provider writes one change at a time' });
    expect(fileConfigSchema.safeParse({ path: 'x.json', retry: { attempts: 2 } }).error?.issues[0]).toMatchObject({ code: 'unrecognized_keys', keys: ['retry'] });
  });
});
