/**
 * aws-nacl against the fake EC2 server (Query/XML), with the real EC2Client.
 * Observed through the fake's `onMutation` hook.
 */
import { awsNaclConfigSchema, provider as awsNacl } from '../../../src/providers/aws-nacl/index.js';
import { startFakeEc2, type FakeEc2 } from '../../fakes/ec2/server.js';
import { isDefaultRule } from '../../fakes/ec2/state.js';
import { NOW } from '../../helpers/bans.js';
import { OWNER, TYPICAL_ACL, bandEntries, cidrOf, expireLease, ownershipProblems, useEnvCredentials } from '../../providers/aws-nacl/harness.js';
import { log, type Problem, type TargetAdapter } from '../harness.js';

const BAND = { start: 10, end: 99 };

export function awsNaclAdapter(): TargetAdapter {
  let fake: FakeEc2 | undefined;
  let aclId = '';
  let restoreEnv: (() => void) | undefined;
  const ec2 = () => {
    if (!fake) throw new Error('aws-nacl adapter: not started');
    return fake;
  };
  const inBand = (rule: number) => rule >= BAND.start && rule <= BAND.end;

  return {
    kind: 'aws-nacl',
    // NACL entry writes are synchronous in EC2: there is no operation to fail late.
    supports: new Set(['throttle', 'server-errors', 'latency', 'latency-timeout', 'drops', 'kill']),
    async start() {
      restoreEnv = useEnvCredentials();
      fake = await startFakeEc2();
    },
    async stop() {
      await fake?.close();
      restoreEnv?.();
    },
    async newTarget() {
      aclId = ec2().addAcl({
        ...TYPICAL_ACL,
        entries: [
          ...TYPICAL_ACL.entries!,
          // An operator's own deny before the band, and a SIP allow after it.
          { rule: 5, cidr: '203.0.113.200/32', action: 'deny' },
          { rule: 110, cidr: '0.0.0.0/0', protocol: '17', ports: [5060, 5061] },
        ],
        tags: { Name: 'pbx-subnets', team: 'voice' },
      });
    },
    async provider(opts = {}) {
      const timeout = opts.requestTimeoutMs ?? 5_000;
      const cfg = awsNaclConfigSchema.parse({
        region: 'eu-west-1',
        network_acl_id: aclId,
        endpoint: ec2().url,
        rule_band: BAND,
        sdk_max_attempts: 2,
        request_timeout: `${timeout}ms`,
        // Tests do not wait on the production rate limit.
        queue: { concurrency: 4, interval_cap: 1000, interval: '1s' },
        retry: { attempts: 4, base_delay: '5ms', max_delay: '40ms' },
        // The apply lease: a short read-back wait; runs that overlap start together, so any TTL works.
        lease_settle: '50ms',
        lease_ttl: '30s',
      });
      return awsNacl.create(cfg, { target: 'pbx-nacl', owner: OWNER, log, now: () => NOW });
    },
    setFaults(cfg) {
      ec2().setFaults(cfg);
    },
    faultState() {
      return ec2().faults;
    },
    async settle() {
      // Time passes between scheduled runs: a lease a killed run could not release has expired by the next one.
      expireLease(ec2(), aclId);
    },
    snapshot() {
      return { entries: ec2().entries(aclId), tags: ec2().tags(aclId) };
    },
    ownedCidrs() {
      return [...bandEntries(ec2(), aclId), ...bandEntries(ec2(), aclId, true)].map(cidrOf);
    },
    denyCidrs() {
      return ec2()
        .entries(aclId)
        .filter((e) => e.ruleAction === 'deny' && !isDefaultRule(e.ruleNumber))
        .map(cidrOf);
    },
    foreignRules() {
      const entries = ec2()
        .entries(aclId)
        .filter((e) => !inBand(e.ruleNumber))
        .map((e) => `entry ${JSON.stringify(e)}`);
      const tags = Object.entries(ec2().tags(aclId))
        .filter(([k]) => !k.startsWith(`cloud-bouncer:${OWNER}:`))
        .map(([k, v]) => `tag ${JSON.stringify([k, v])}`);
      return [...entries, ...tags].sort();
    },
    problems() {
      const f = ec2();
      return [...ownershipProblems(f, aclId), ...ownershipProblems(f, aclId, true)].map((message): Problem => ({
        // An unclaimed entry in the band stops the target (a conflict); a malformed entry is corruption.
        // A claim without its entry, a claim recording another CIDR, or an empty tag is repaired by the next pass.
        kind: /has no claim|not deny-all|claimed twice/.test(message) ? 'invalid' : 'leftover',
        message,
      }));
    },
    apiCalls() {
      return ec2().totalCalls;
    },
    faultsInjected() {
      const i = ec2().faults.injected;
      return i.throttle + i.server_error + i.drop;
    },
    tamperForeign() {
      ec2().putEntry(aclId, { rule: 110, cidr: '0.0.0.0/0', protocol: '17', ports: [5060, 5062] });
    },
    observe(fn) {
      ec2().onMutation = fn ? () => fn() : undefined;
    },
  };
}
