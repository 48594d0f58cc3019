// `npm run bench [-- --smoke]`: bundles the TypeScript benchmarks with
// esbuild, runs each in its own process and prints a table. Figures only:
// nothing here asserts about time.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';

const smoke = process.argv.includes('--smoke');
const out = 'build/bench';
const entries = readdirSync('bench').filter((f) => f.endsWith('.ts'));
await build({
  entryPoints: entries.map((f) => `bench/${f}`),
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  outdir: out,
  outExtension: { '.js': '.mjs' },
  packages: 'external',
  logLevel: 'warning',
});

function run(file, args = [], nodeArgs = []) {
  const text = execFileSync(process.execPath, ['--expose-gc', ...nodeArgs, `${out}/${file}.mjs`, ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'inherit'] });
  return text
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

console.log(`cloud-bouncer benchmarks on node ${process.version}, ${smoke ? 'smoke run' : 'full run'}\n`);

const sizes = smoke ? [1_000] : [1_000, 10_000, 100_000, 1_000_000];
console.log('## Decision pipeline (parse → desired → fit → plan, 1% churn against the previous state)\n');
console.log('| decisions | body MB | JSON.parse ms | pipeline ms (parse / desired / plan) | ratio | peak RSS MB (at start) | changes |');
console.log('|---:|---:|---:|---:|---:|---:|---:|');
for (const n of sizes) {
  run('pipeline', [String(n), 'gen', out], ['--max-old-space-size=6144']);
  const [r] = run('pipeline', [String(n), 'run', out], ['--max-old-space-size=4096']);
  console.log(`| ${n.toLocaleString('en')} | ${(r.bytes / 1e6).toFixed(1)} | ${r.floorMs} | ${r.pipelineMs} (${r.phasesMs.parse} / ${r.phasesMs.desired} / ${r.phasesMs.plan}) | ${r.ratio}× | ${r.peakRssMb} (${r.rssBeforeMb}) | ${r.changes} (${r.changedCidrs} CIDRs) |`);
}

for (const extra of ['cidr', 'api', 'cold-start', 'latency']) {
  if (!entries.includes(`${extra}.ts`)) continue;
  const rows = run(extra, smoke ? ['--smoke'] : []);
  for (const r of rows) if (r.markdown) console.log(`\n${r.markdown}`);
}
