/**
 * aws-nacl against the fake EC2 Query endpoint: the real `EC2Client`
 * (credentials from the SDK's default chain: the environment variables set
 * here, no IMDS lookup), a NACL as an operator has it (allow-all at 100 and
 * 101, the `*` entries), the default quota of 20 entries per direction per
 * family: 18 IPv4 and 18 IPv6 entries are ours to use.
 */
import { pino } from 'pino';
import { awsNaclConfigSchema, provider as awsNacl } from '../../../src/providers/aws-nacl/index.js';
import { MUTATING_ACTIONS, startFakeEc2 } from '../../../test/fakes/ec2/server.js';
import { OWNER, sumOps, type BenchTarget } from './types.js';

const BAND = { start: 10, end: 99 };

export const awsNaclTarget: BenchTarget = {
  kind: 'aws-nacl',
  shape: '1 NACL (ingress), 18 + 18 entries',
  bans: { 4: 18, 6: 18 },
  note: 'NACL entries have no description, so ownership and expiry live in NACL tags: an apply adds one CreateTags for all its claims and the apply lease (N entry changes cost N + 1 writes; the API minimum counts that one call), and a pass that only refreshes recorded expiries costs that one CreateTags. The bench runs one provider instance for all passes, as the daemon does: it keeps its lease between passes; a one-shot run adds one DeleteTags (the lease release) when it exits.',
  // A changed entry's CIDR and expiry must reach a tag; one CreateTags carries every claim of a pass.
  metadataWrites: (planned) => (planned > 0 ? 1 : 0),
  async start() {
    process.env.AWS_ACCESS_KEY_ID = 'AKIAFAKEFAKEFAKEFAKE';
    process.env.AWS_SECRET_ACCESS_KEY = 'fake-secret-for-the-local-fake-only';
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    delete process.env.AWS_PROFILE;
    delete process.env.AWS_SESSION_TOKEN;
    const fake = await startFakeEc2({ quota: 20 });
    return {
      async session(now) {
        const aclId = fake.addAcl({ entries: [{ rule: 100, cidr: '0.0.0.0/0' }, { rule: 101, cidr: '::/0' }], tags: { Name: 'bench' } });
        const cfg = awsNaclConfigSchema.parse({
          region: 'eu-west-1',
          network_acl_id: aclId,
          endpoint: fake.url,
          rule_band: BAND,
          // The bench counts calls; it does not wait out the production rate limit (4 writes per second).
          queue: { concurrency: 4, interval_cap: 10_000, interval: '1s' },
        });
        const provider = await awsNacl.create(cfg, { target: 'bench-nacl', owner: OWNER, log: pino({ level: 'silent' }), now });
        // The fake counts every ACL together; each session's counts start from a reset.
        fake.resetCounters();
        return {
          provider,
          wire: () => ({
            reads: sumOps(fake.calls, (op) => !MUTATING_ACTIONS.has(op)),
            writes: sumOps(fake.calls, (op) => MUTATING_ACTIONS.has(op)),
            byOp: { ...fake.calls },
          }),
          enforced: async () =>
            fake
              .entries(aclId)
              .filter((e) => !e.egress && e.ruleNumber >= BAND.start && e.ruleNumber <= BAND.end)
              .map((e) => (e.cidrBlock ?? e.ipv6CidrBlock)!)
              .sort(),
        };
      },
      close: () => fake.close(),
    };
  },
};
