/**
 * The `file` target: a JSON file standing for a firewall of 40 rules × 100
 * CIDRs (the same shape as the Azure run). No wire here: a read is one file
 * read and a write one atomic file replace, as the provider counts them.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { fileConfigSchema, provider as fileProvider, type FileDoc } from '../../../src/providers/file/index.js';
import { OWNER, type BenchTarget } from './types.js';

export const fileTarget: BenchTarget = {
  kind: 'file',
  shape: '1 file, 40 rules × 100 CIDRs',
  bans: { 4: 3420, 6: 380 },
  async start() {
    const dir = mkdtempSync(join(tmpdir(), 'cb-bench-file-'));
    let n = 0;
    return {
      async session(now) {
        const path = join(dir, `firewall-${++n}.json`);
        const cfg = fileConfigSchema.parse({ path, rules: 40, cidrs_per_rule: 100 });
        const provider = await fileProvider.create(cfg, { target: 'bench-file', owner: OWNER, log: pino({ level: 'silent' }), now });
        return {
          provider,
          wire: () => {
            const s = provider.stats();
            return { reads: s.reads, writes: s.writes, byOp: { read: s.reads, write: s.writes } };
          },
          enforced: async () => {
            let doc: FileDoc;
            try {
              doc = JSON.parse(readFileSync(path, 'utf8')) as FileDoc;
            } catch {
              return [];
            }
            return doc.rules.filter((r) => r.name.startsWith(`cloud-bouncer-${OWNER}-`)).flatMap((r) => r.cidrs).sort();
          },
        };
      },
      async close() {
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};
