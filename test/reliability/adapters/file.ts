/**
 * The `file` target. It has no server, so there is nothing to throttle or
 * drop; what can happen to it is a crash. The adapter wraps each provider's
 * file write to observe every state the file goes through and, with
 * `failAfterWrites`, to let the process "die" after its k-th write: every
 * later write fails without touching the file, and the dead run's lock file
 * is left behind, as a killed process would leave it (the next run takes it
 * over once it is older than `lock_timeout`).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tryParseCidr } from '../../../src/core/cidr.js';
import { parseMarker } from '../../../src/core/marker.js';
import { FileProvider, fileConfigSchema, type FileDoc } from '../../../src/providers/file/index.js';
import type { Provider } from '../../../src/providers/provider.js';
import type { FaultConfig } from '../../fakes/faults.js';
import { NOW } from '../../helpers/bans.js';
import { log, type Problem, type TargetAdapter } from '../harness.js';

const OWNER = 'test';
const PREFIX = `cloud-bouncer-${OWNER}-`;

const SEED: FileDoc = {
  capacity: { rules: 16, cidrs_per_rule: 3 },
  rules: [
    { name: 'deny-scanner', action: 'deny', family: 4, cidrs: ['203.0.113.200/32'], description: 'operator block' },
    { name: 'allow-sip', action: 'allow', family: 4, cidrs: ['0.0.0.0/0'], description: 'SIP trunk' },
  ],
};

export function fileAdapter(): TargetAdapter {
  let dir = '';
  let path = '';
  let n = 0;
  let faults: FaultConfig = {};
  let writes = 0;
  let crashed = false;
  let lost = 0;
  let observer: (() => void) | undefined;
  const providers: Provider[] = [];
  const doc = (): FileDoc => JSON.parse(readFileSync(path, 'utf8')) as FileDoc;
  const ours = () => doc().rules.filter((r) => r.name.startsWith(PREFIX));

  return {
    kind: 'file',
    supports: new Set(['kill']),
    async start() {
      dir = mkdtempSync(join(tmpdir(), 'cb-reliability-file-'));
    },
    async stop() {
      rmSync(dir, { recursive: true, force: true });
    },
    async newTarget() {
      path = join(dir, `fw-${++n}.json`);
      writeFileSync(path, `${JSON.stringify(SEED, null, 2)}\n`);
    },
    async provider() {
      const cfg = fileConfigSchema.parse({ path, lock_timeout: '300ms' });
      const p = new FileProvider(cfg, { target: 'demo', owner: OWNER, log, now: () => NOW });
      // The provider writes the whole file once per change (`writeDoc`): wrap it to watch and to crash.
      const inner = p as unknown as { writeDoc(d: FileDoc): Promise<void> };
      const write = inner.writeDoc.bind(p);
      inner.writeDoc = async (d: FileDoc) => {
        if (faults.failAfterWrites !== undefined && writes >= faults.failAfterWrites) {
          crashed = true;
          lost++;
          throw new Error('simulated crash: the process died before this write');
        }
        await write(d);
        writes++;
        observer?.();
      };
      providers.push(p);
      return p;
    },
    setFaults(cfg) {
      if (Object.keys(cfg).some((k) => k !== 'failAfterWrites' && k !== 'seed' && k !== 'latencyMs')) {
        throw new Error(`the file target supports only failAfterWrites, got ${JSON.stringify(cfg)}`);
      }
      if (crashed) writeFileSync(`${path}.lock`, '999999\n'); // the dead process's lock stays behind
      crashed = false;
      faults = { ...cfg };
      writes = 0;
    },
    faultState() {
      return undefined;
    },
    async settle() {},
    snapshot() {
      return doc();
    },
    ownedCidrs() {
      return ours().flatMap((r) => r.cidrs);
    },
    denyCidrs() {
      return doc()
        .rules.filter((r) => r.action === 'deny')
        .flatMap((r) => r.cidrs);
    },
    foreignRules() {
      return doc()
        .rules.filter((r) => !r.name.startsWith(PREFIX))
        .map((r) => JSON.stringify(r))
        .sort();
    },
    problems() {
      const out: Problem[] = [];
      const names = new Set<string>();
      for (const r of ours()) {
        const families = new Set(r.cidrs.map((c) => tryParseCidr(c)?.family));
        if (r.action !== 'deny') out.push({ kind: 'invalid', message: `${r.name} is not a deny rule` });
        if (r.cidrs.length === 0 || r.cidrs.length > SEED.capacity.cidrs_per_rule || families.size !== 1 || !families.has(r.family)) {
          out.push({ kind: 'invalid', message: `${r.name} holds ${r.cidrs.join(',')} (family ${r.family})` });
        }
        if (parseMarker(r.description)?.owner !== OWNER) out.push({ kind: 'invalid', message: `${r.name} has no marker of ours` });
        if (names.has(r.name)) out.push({ kind: 'invalid', message: `${r.name} appears twice` });
        names.add(r.name);
      }
      return out;
    },
    apiCalls() {
      return providers.reduce((s, p) => s + p.stats().total, 0);
    },
    faultsInjected() {
      return lost;
    },
    tamperForeign() {
      const d = doc();
      const sip = d.rules.find((r) => r.name === 'allow-sip')!;
      sip.description = 'SIP trunk (edited)';
      writeFileSync(path, `${JSON.stringify(d, null, 2)}\n`);
    },
    observe(fn) {
      observer = fn;
    },
  };
}
