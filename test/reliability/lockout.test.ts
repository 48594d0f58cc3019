/**
 * Lockout safety, after the MikoPBX operator guidance ("External firewall
 * for Docker": keep admin ports reachable, keep a flush safety net):
 *
 * - `never_ban` admin CIDRs and the whitelist win over every ban, whatever
 *   its origin, and also over what the target already enforces: a rule that
 *   covered an admin address before it was added to `never_ban` is split
 *   around it on the next pass, even fail-static with every source down;
 * - `flush --yes` removes every owned rule and nothing else: the foreign
 *   rules stay byte-identical;
 * - `guards.max_ttl` is the safety-net flush: no rule records an expiry
 *   more than `max_ttl` ahead, so with the sources down every rule is gone
 *   at most `max_ttl` after the last pass that reached them.
 *
 * Everything runs through the config loader, the runtime and `runPass` (the
 * clock is the test's) or the CLI, on the `file` target; coverage is checked
 * with test/reliability/addresses.ts, apart from src/core/cidr.ts.
 */
import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseMarker } from '../../src/core/marker.js';
import { FakeMikoPbx } from '../fakes/mikopbx.js';
import { addressSet, coveredAddresses, toRange } from './addresses.js';
import { startScripted, type ScriptedServer } from './fuzz-server.js';
import {
  HOUR,
  MINUTE,
  T0,
  cli,
  configDoc,
  firewall,
  foreignRules,
  ownedRule,
  passFromConfig,
  seedFirewall,
  tempDir,
  writeConfig,
  type FileRuleJson,
  type Firewall,
  type FirewallDoc,
} from './fuzz-world.js';

const RUNS = Number(process.env.RELIABILITY_FUZZ_RUNS ?? 150);
const SEED = Number(process.env.RELIABILITY_FUZZ_SEED ?? 8);
const KEY = 'lockout-key-0123456789';

let server: ScriptedServer;
beforeAll(async () => {
  server = await startScripted();
});
afterAll(async () => {
  await server?.close();
});

interface Ban {
  value: string;
  duration?: string;
  origin?: string;
}

function stream(bans: readonly Ban[]): string {
  return JSON.stringify({
    new: bans.map((b) => ({ duration: b.duration ?? '4h', origin: b.origin ?? 'crowdsec', scenario: 'crowdsecurity/sip-bf', scope: b.value.includes('/') ? 'Range' : 'Ip', type: 'ban', value: b.value })),
    deleted: null,
  });
}

const serve = (bans: readonly Ban[]) => {
  server.reply = { kind: 'body', body: stream(bans) };
};
const sourceDown = () => {
  server.reply = { kind: 'body', status: 503, body: '{"message":"database is locked"}' };
};

/** Addresses (as `family:n` keys) that some deny rule on the target covers. */
const coveredBy = (fw: Firewall, addrs: ReadonlySet<string>) => coveredAddresses(addrs, fw.denyRanges());

describe('lockout: never_ban and the whitelist win over every ban', () => {
  it('never covers an admin or whitelisted address: a range around it is split, a ban equal to it is refused, whatever its origin', async () => {
    // Prepare
    const fw = seedFirewall(tempDir('never-ban'), 'lock', []);
    const admin = addressSet(['198.51.100.10/32', '198.51.100.64/28', '203.0.113.7/32', '198.18.7.9/32', '2001:db8:1::/128']);
    serve([
      { value: '198.51.100.0/24', origin: 'crowdsec' },
      { value: '198.51.100.10', origin: 'cscli' },
      { value: '198.51.100.64/28', origin: 'cscli' },
      { value: '203.0.113.0/24', origin: 'CAPI' },
      { value: '203.0.113.7', origin: 'cscli' },
      { value: '198.18.7.0/24', origin: 'crowdsec' },
      { value: '2001:db8:1::/48', origin: 'crowdsec' },
      { value: '192.0.2.1', origin: 'crowdsec' },
    ]);
    const doc = configDoc({
      owner: 'lock',
      source: { api_url: server.url, api_key: KEY },
      firewall: fw.path,
      top: {
        never_ban: ['198.51.100.10/32', '198.51.100.64/28', '2001:db8:1::/128'],
        whitelist: { cidrs: ['203.0.113.7/32'], hostnames: ['vpn.example.net'] },
      },
    });
    const resolve = async (host: string) => (host === 'vpn.example.net' ? ['198.18.7.9'] : []);

    // Act
    const r = await passFromConfig(doc, { now: T0, resolve });

    // Assess
    expect(r.errors).toEqual([]);
    expect(coveredBy(fw, admin)).toEqual([]);
    // Everything else in the banned ranges is still denied.
    const rest = [...addressSet(['198.51.100.0/24', '203.0.113.0/24', '198.18.7.0/24'])].filter((a) => !admin.has(a));
    expect(coveredBy(fw, new Set(rest))).toHaveLength(rest.length);
    expect(fw.owned().flatMap((x) => x.cidrs)).toContain('192.0.2.1/32');
    const v6 = fw.denyRanges().filter((x) => x.family === 6 && x.start <= toRange('2001:db8:1::')!.start && toRange('2001:db8:1::')!.start <= x.end);
    expect(v6).toEqual([]);
    expect(r.plan.refused.filter((x) => x.reason === 'whitelisted').map((x) => x.value)).toEqual(expect.arrayContaining(['198.51.100.10/32', '198.51.100.64/28', '203.0.113.7/32']));
  });

  it('covers no never_ban or whitelisted address and every other banned address, for random bans and admin ranges', async () => {
    // Prepare
    const dir = tempDir('never-ban-prop');
    const octet = fc.integer({ min: 0, max: 255 });
    const cidrIn = (net: string) => fc.tuple(octet, fc.integer({ min: 24, max: 32 })).map(([h, p]) => `${net}.${h}/${p}`);
    const nets = fc.constantFrom('198.51.100', '203.0.113', '192.0.2');
    const anyCidr = nets.chain(cidrIn);
    const origin = fc.constantFrom('cscli', 'crowdsec', 'CAPI', 'lists:firehol');

    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ value: anyCidr, origin }), { minLength: 1, maxLength: 12 }),
        fc.array(anyCidr, { maxLength: 4 }),
        fc.array(anyCidr, { maxLength: 3 }),
        async (bans, neverBan, whitelist) => {
          const fw = seedFirewall(dir, 'lock', []);
          serve(bans);
          const doc = configDoc({ owner: 'lock', source: { api_url: server.url, api_key: KEY }, firewall: fw.path, target: { rules: 256, cidrs_per_rule: 64 }, top: { never_ban: neverBan, whitelist: { cidrs: whitelist } } });

          // Act
          const r = await passFromConfig(doc, { now: T0 });

          // Assess
          expect(r.errors).toEqual([]);
          const trusted = addressSet([...neverBan, ...whitelist]);
          expect(coveredBy(fw, trusted)).toEqual([]);
          const banned = [...addressSet(bans.map((b) => b.value))].filter((a) => !trusted.has(a));
          expect(coveredBy(fw, new Set(banned))).toHaveLength(banned.length);
        },
      ),
      { numRuns: Math.ceil(RUNS / 3), seed: SEED },
    );
  });

  it('splits a rule that already covered an admin address once it is added to never_ban, even with every source down', async () => {
    // Prepare: a pass while the source answers writes the /24 with the admin address inside.
    const fw = seedFirewall(tempDir('never-ban-later'), 'lock', []);
    const doc = (top: Record<string, unknown> = {}) => configDoc({ owner: 'lock', source: { api_url: server.url, api_key: KEY }, firewall: fw.path, target: { rules: 8, cidrs_per_rule: 16 }, top });
    serve([{ value: '198.51.100.0/24', duration: '6h' }, { value: '203.0.113.0/24', duration: '6h' }]);
    await passFromConfig(doc(), { now: T0 });
    const admin = addressSet(['198.51.100.10/32', '203.0.113.7/32']);
    expect(coveredBy(fw, admin)).toHaveLength(2);
    const recorded = fw.owned().map((x) => parseMarker(x.description)!.expiresAt);

    // Act: the operator adds never_ban and a whitelist entry; the LAPI is down from now on.
    sourceDown();
    const top = { never_ban: ['198.51.100.10/32'], whitelist: { cidrs: ['203.0.113.7/32'] } };
    const first = await passFromConfig(doc(top), { now: T0 + 30 * MINUTE });
    const afterSplit = fw.bytes();
    const second = await passFromConfig(doc(top), { now: T0 + 60 * MINUTE });

    // Assess: fail-static, the admin addresses are out, every other address stays denied until its recorded expiry.
    expect(first.plan.failStatic).toBe(true);
    expect(first.errors).toEqual([expect.stringMatching(/^source lapi: decisions .*: HTTP 503/)]);
    expect(coveredBy(fw, admin)).toEqual([]);
    const rest = [...addressSet(['198.51.100.0/24', '203.0.113.0/24'])].filter((a) => !admin.has(a));
    expect(coveredBy(fw, new Set(rest))).toHaveLength(rest.length);
    expect(Math.max(...fw.owned().map((x) => parseMarker(x.description)!.expiresAt))).toBeLessThanOrEqual(Math.max(...recorded));
    expect(second.plan.targets[0]!.changes).toEqual([]);
    expect(fw.bytes()).toBe(afterSplit);
  });

  it('honours the whitelist a MikoPBX source publishes, and a never_ban address stays out when the source later bans it again', async () => {
    // Prepare
    const fake = await FakeMikoPbx.start({ tokens: [KEY], now: () => T0 });
    try {
      fake.addBan({ value: '198.51.100.0/24', rollingMs: 4 * HOUR });
      fake.addBan({ value: '198.51.100.10', rollingMs: 4 * HOUR, origin: 'cscli' });
      fake.setWhitelist(['198.51.100.20/32']);
      const fw = seedFirewall(tempDir('miko-whitelist'), 'lock', []);
      const doc = configDoc({ owner: 'lock', source: { type: 'mikopbx', api_url: fake.url, api_key: KEY }, firewall: fw.path, top: { never_ban: ['198.51.100.10/32'] } });

      // Act
      const r = await passFromConfig(doc, { now: T0 });

      // Assess
      expect(r.errors).toEqual([]);
      expect(coveredBy(fw, addressSet(['198.51.100.10/32', '198.51.100.20/32']))).toEqual([]);
      expect(coveredBy(fw, addressSet(['198.51.100.11/32', '198.51.100.200/32']))).toHaveLength(2);
    } finally {
      await fake.close();
    }
  });
});

// ---------------------------------------------------------------------------

describe('lockout: flush --yes removes every owned rule and nothing else', () => {
  /** A target with foreign rules around owned rules of every kind: live, expired, IPv6. */
  function seeded(tag: string): { fw: Firewall; expected: string; cfgDoc: Record<string, unknown>; dir: string } {
    const dir = tempDir(tag);
    const now = Date.now();
    const owned: FileRuleJson[] = [
      ownedRule('lock', 1, ['192.0.2.1/32', '192.0.2.2/32'], now + 4 * HOUR),
      ownedRule('lock', 2, ['198.51.100.0/24'], now - HOUR),
      ownedRule('lock', 3, ['2001:db8::/48'], now + 30 * 24 * HOUR, 6),
    ];
    const fw = seedFirewall(dir, 'lock', owned, { now });
    const doc = fw.doc();
    // The provider writes `JSON.stringify(doc, null, 2)`: the file must become exactly the seed without our rules.
    const expected = `${JSON.stringify({ ...doc, rules: doc.rules.filter((x) => !x.name.startsWith('cloud-bouncer-lock-')) }, null, 2)}\n`;
    const cfgDoc = configDoc({ owner: 'lock', source: { api_url: server.url, api_key: KEY }, firewall: fw.path });
    return { fw, expected, cfgDoc, dir };
  }

  it('leaves the foreign rules byte-identical, with every source down', async () => {
    // Prepare
    const s = seeded('flush');
    const foreign = s.fw.foreign();
    sourceDown();

    // Act
    const r = await cli(['flush', '--yes', '--config', writeConfig(s.dir, s.cfgDoc)]);

    // Assess
    expect(r.code, r.stderr).toBe(0);
    expect(s.fw.owned()).toEqual([]);
    expect(s.fw.foreign()).toEqual(foreign);
    expect(s.fw.bytes()).toBe(s.expected);
    expect(foreign).toHaveLength(foreignRules(T0).length);
  });

  it('touches nothing without --yes', async () => {
    const s = seeded('flush-no');
    const before = s.fw.bytes();
    const r = await cli(['flush', '--config', writeConfig(s.dir, s.cfgDoc)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/pass --yes/);
    expect(s.fw.bytes()).toBe(before);
  });

  it('touches only the target named with --target', async () => {
    // Prepare
    const a = seeded('flush-a');
    const b = seeded('flush-b');
    const doc = structuredClone(a.cfgDoc) as { targets: Array<Record<string, unknown>> };
    doc.targets.push({ ...doc.targets[0], name: 'fw-b', path: b.fw.path });
    const beforeB = b.fw.bytes();

    // Act
    const r = await cli(['flush', '--yes', '--target', 'fw', '--config', writeConfig(a.dir, doc)]);

    // Assess
    expect(r.code, r.stderr).toBe(0);
    expect(a.fw.bytes()).toBe(a.expected);
    expect(b.fw.bytes()).toBe(beforeB);
  });

  it('refuses, touching nothing, when a rule uses our name without our marker', async () => {
    // Prepare: someone copied our naming by hand.
    const s = seeded('flush-conflict');
    const doc: FirewallDoc = s.fw.doc();
    doc.rules.push({ name: 'cloud-bouncer-lock-007', action: 'deny', family: 4, cidrs: ['198.18.9.0/24'], description: 'hand-made' });
    writeFileSync(s.fw.path, `${JSON.stringify(doc, null, 2)}\n`);
    const before = s.fw.bytes();

    // Act
    const r = await cli(['flush', '--yes', '--config', writeConfig(s.dir, s.cfgDoc)]);

    // Assess
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cloud-bouncer: error: target fw: .*cloud-bouncer-lock-007/m);
    expect(s.fw.bytes()).toBe(before);
  });

  it('leaves another owner\'s rules alone when two deployments share the firewall', async () => {
    // Prepare: owner `other` has its own rule; flushing as `lock` must keep it, flushing as `other` removes only it.
    const s = seeded('flush-owners');
    const otherDoc = { ...s.cfgDoc, owner: 'other' };
    const names = () => firewall(s.fw.path, 'lock').doc().rules.map((x) => x.name);

    // Act + Assess: flushing as `lock` keeps `other`'s rule ...
    const r1 = await cli(['flush', '--yes', '--config', writeConfig(s.dir, s.cfgDoc)]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(names()).toEqual(['ops-deny-scanner', 'cloud-bouncer-other-001', 'allow-office']);

    // ... and flushing as `other` removes only that one.
    const r2 = await cli(['flush', '--yes', '--config', writeConfig(s.dir, otherDoc, 'other.yaml')]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(names()).toEqual(['ops-deny-scanner', 'allow-office']);
  });
});

// ---------------------------------------------------------------------------

describe('lockout: guards.max_ttl is the safety-net flush', () => {
  const doc = (fwPath: string, source: Record<string, unknown>) => configDoc({ owner: 'lock', source, firewall: fwPath, top: { guards: { max_ttl: '1h' } } });

  it('records at most max_ttl for a 30-day ban, keeps it while fail-static, and removes it when that hour is over', async () => {
    // Prepare
    const fw = seedFirewall(tempDir('max-ttl'), 'lock', []);
    const cfg = doc(fw.path, { api_url: server.url, api_key: KEY });
    serve([{ value: '192.0.2.66', duration: '720h', origin: 'cscli' }]);

    // Act + Assess: written with exp ≤ now + 1 h.
    await passFromConfig(cfg, { now: T0 });
    const [rule] = fw.owned();
    expect(rule!.cidrs).toEqual(['192.0.2.66/32']);
    expect(parseMarker(rule!.description)!.expiresAt).toBeLessThanOrEqual(T0 + HOUR);

    // Every source down: kept until the recorded hour is over, then removed.
    sourceDown();
    const kept = await passFromConfig(cfg, { now: T0 + HOUR - 1000 });
    expect(kept.plan.failStatic).toBe(true);
    expect(fw.owned().flatMap((x) => x.cidrs)).toEqual(['192.0.2.66/32']);
    const gone = await passFromConfig(cfg, { now: T0 + HOUR });
    expect(gone.plan.failStatic).toBe(true);
    expect(fw.owned()).toEqual([]);
    expect(fw.foreign()).toHaveLength(foreignRules(T0).length);
  });

  it('never records more than max_ttl ahead while a MikoPBX source slides its durations, and empties the target within max_ttl of the outage', async () => {
    // Prepare: rolling 30-day bans, polled every 5 minutes for two hours.
    let clock = T0;
    const fake = await FakeMikoPbx.start({ tokens: [KEY], now: () => clock });
    try {
      for (const value of ['192.0.2.1', '192.0.2.2', '198.51.100.0/24', '2001:db8::/64']) fake.addBan({ value, rollingMs: 30 * 24 * HOUR });
      const fw = seedFirewall(tempDir('max-ttl-miko'), 'lock', []);
      const cfg = doc(fw.path, { type: 'mikopbx', api_url: fake.url, api_key: KEY });
      let lastReached = clock;
      for (; clock <= T0 + 2 * HOUR; clock += 5 * MINUTE) {
        const r = await passFromConfig(cfg, { now: clock });
        expect(r.errors).toEqual([]);
        lastReached = clock;
        for (const x of fw.owned()) expect(parseMarker(x.description)!.expiresAt).toBeLessThanOrEqual(clock + HOUR);
        expect(fw.owned().flatMap((x) => x.cidrs)).toHaveLength(4);
      }

      // Act: the PBX goes away for good; passes go on every 5 minutes.
      fake.fail({ kind: 'status', status: 502, body: 'bad gateway' }, 'any', 10_000);
      let emptyAt: number | undefined;
      for (; clock <= lastReached + 2 * HOUR; clock += 5 * MINUTE) {
        const r = await passFromConfig(cfg, { now: clock });
        expect(r.plan.failStatic).toBe(true);
        if (emptyAt === undefined && fw.owned().length === 0) emptyAt = clock;
      }

      // Assess
      expect(emptyAt).toBeDefined();
      expect(emptyAt! - lastReached).toBeLessThanOrEqual(HOUR);
      expect(fw.foreign()).toHaveLength(foreignRules(T0).length);
    } finally {
      await fake.close();
    }
  });
});
