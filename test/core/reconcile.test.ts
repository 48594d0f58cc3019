/**
 * runPass across several sources: a failed source that publishes a whitelist
 * leaves the whitelist unknown, so nothing new is added while it fails.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { tryParseCidr } from '../../src/core/cidr.js';
import { SourceError } from '../../src/core/errors.js';
import { runPass, type PassDeps } from '../../src/core/reconcile.js';
import type { Decision } from '../../src/core/types.js';
import { FileProvider, fileConfigSchema, type FileDoc } from '../../src/providers/file/index.js';
import type { DecisionSource } from '../../src/sources/source.js';
import { HOUR, NOW } from '../helpers/bans.js';

const log = pino({ level: 'silent' });

function decision(source: string, value: string): Decision {
  const p = tryParseCidr(value)!;
  return { source, origin: 'crowdsec', originClass: 'local', scenario: 'crowdsecurity/sip-bf', scope: value.includes('/') ? 'range' : 'ip', type: 'ban', value, cidr: p.cidr, family: p.family, prefix: p.prefix, expiresAt: NOW + 4 * HOUR };
}

/** An in-memory source; `up` false makes it fail like an unreachable LAPI. */
function memorySource(name: string, publishesWhitelist: boolean) {
  const s = { up: true, decisions: [] as Decision[], whitelist: [] as string[] };
  const source: DecisionSource = {
    name,
    publishesWhitelist,
    async snapshot() {
      if (!s.up) throw new SourceError(name, 'connect ECONNREFUSED 127.0.0.1:8080');
      return { decisions: s.decisions, whitelist: s.whitelist, skipped: 0, skippedSamples: [], deletedCount: 0, bytes: 0, kind: 'full' as const };
    },
  };
  return { s, source };
}

function setup(sources: DecisionSource[]) {
  const path = join(mkdtempSync(join(tmpdir(), 'cb-reconcile-')), 'fw.json');
  const provider = new FileProvider(fileConfigSchema.parse({ path, rules: 8, cidrs_per_rule: 16 }), { target: 'fw', owner: 'test', log, now: () => NOW });
  const deps: PassDeps = { sources, targets: [{ provider, maxWritesPerRun: 100 }], log, now: () => NOW, resolve: async () => [], whitelist: { cidrs: [], hostnames: [], neverBan: [] } };
  const enforced = () => (JSON.parse(readFileSync(path, 'utf8')) as FileDoc).rules.flatMap((r) => r.cidrs).sort();
  return { deps, enforced };
}

describe('core/reconcile: several sources', () => {
  it('adds nothing new while a source that publishes a whitelist fails, so no ban covers an address it let through', async () => {
    // Prepare: the PBX publishes 10.0.0.5 as trusted; the LAPI bans the /24 around it.
    const pbx = memorySource('pbx', true);
    const lapi = memorySource('lapi', false);
    pbx.s.whitelist = ['10.0.0.5'];
    lapi.s.decisions = [decision('lapi', '10.0.0.0/24')];
    const { deps, enforced } = setup([pbx.source, lapi.source]);
    const first = await runPass(deps, 'apply');
    expect(first.errors).toEqual([]);
    const split = enforced();
    expect(split).toHaveLength(8);
    expect(split).not.toContain('10.0.0.0/24');

    // Act: the PBX is down; the LAPI still bans the /24 and adds a new address.
    pbx.s.up = false;
    lapi.s.decisions = [decision('lapi', '10.0.0.0/24'), decision('lapi', '198.51.100.9')];
    const second = await runPass(deps, 'apply');

    // Assess: fail-static, what was enforced stays exactly as it was.
    expect(second.plan.failStatic).toBe(true);
    expect(second.errors).toEqual(['source pbx: connect ECONNREFUSED 127.0.0.1:8080']);
    expect(second.plan.targets[0]!.changes).toEqual([]);
    expect(enforced()).toEqual(split);
  });

  it('still adds the healthy source\'s bans while a source without a whitelist fails', async () => {
    // Prepare
    const down = memorySource('other', false);
    const lapi = memorySource('lapi', false);
    down.s.decisions = [decision('other', '192.0.2.1')];
    lapi.s.decisions = [decision('lapi', '192.0.2.2')];
    const { deps, enforced } = setup([down.source, lapi.source]);
    await runPass(deps, 'apply');

    // Act
    down.s.up = false;
    lapi.s.decisions = [decision('lapi', '192.0.2.2'), decision('lapi', '198.51.100.9')];
    const second = await runPass(deps, 'apply');

    // Assess: the failed source's ban is kept, the healthy one's new ban is added.
    expect(second.plan.failStatic).toBe(true);
    expect(enforced()).toEqual(['192.0.2.1/32', '192.0.2.2/32', '198.51.100.9/32']);
  });
});
