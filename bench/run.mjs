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
// Each measurement is a fresh process (a cold JIT, as in a one-shot run); the figures are medians over
// several of them, because one run on a shared 2-core machine varies by ±20%.
const repeats = (n) => (smoke ? 1 : n >= 1_000_000 ? 3 : 5);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log('## Decision pipeline (parse → desired → fit → plan, 1% churn against the previous state)\n');
console.log('| decisions | body MB (held for JSON.parse) | cold: JSON.parse ms | cold: pipeline ms (parse / desired / plan) | cold ratio | warm: JSON.parse ms | warm: pipeline ms | warm ratio | runs (cold pipeline ms min–max) | peak RSS MB (at start) | changes |');
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|');
for (const n of sizes) {
  run('pipeline', [String(n), 'gen', out], ['--max-old-space-size=6144']);
  const rs = [];
  const floors = [];
  for (let i = 0; i < repeats(n); i++) {
    // Alternated, so load on the machine falls on both alike.
    rs.push(run('pipeline', [String(n), 'run', out, 'keep'], ['--max-old-space-size=4096'])[0]);
    floors.push(run('pipeline', [String(n), 'floor', out], ['--max-old-space-size=4096'])[0].floorMs);
  }
  run('pipeline', [String(n), 'clean', out]);
  // The run with the median cold pipeline time stands for the row; the other figures are medians of their own.
  const r = [...rs].sort((a, b) => a.pipelineMs - b.pipelineMs)[Math.floor(rs.length / 2)];
  const floor = median(floors);
  const warmFloor = median(rs.map((x) => x.warmFloorMs));
  const warm = median(rs.map((x) => x.warmPipelineMs));
  const times = rs.map((x) => x.pipelineMs);
  console.log(
    `| ${n.toLocaleString('en')} | ${(r.bytes / 1e6).toFixed(1)} (${(r.heldBytes / 1e6).toFixed(1)}) | ${floor} | ${r.pipelineMs} (${r.phasesMs.parse} / ${r.phasesMs.desired} / ${r.phasesMs.plan}) | ${(r.pipelineMs / floor).toFixed(2)}× | ${warmFloor} | ${warm} | ${(warm / warmFloor).toFixed(2)}× | ${rs.length} (${Math.min(...times)}–${Math.max(...times)}) | ${Math.max(...rs.map((x) => x.peakRssMb))} (${r.rssBeforeMb}) | ${r.changes} (${r.changedCidrs} CIDRs) |`,
  );
}
console.log(
  '\nCold: a fresh process per measurement (a one-shot run: CLI, Lambda, CronJob); the pipeline and its floor, a bare `JSON.parse` of the same bytes, each run in their own process after loading the same files. Warm: both again in the pipeline\'s process after a full GC (a daemon\'s later passes).',
);

for (const extra of ['stream', 'cidr', 'api', 'cold-start', 'latency']) {
  if (!entries.includes(`${extra}.ts`)) continue;
  const rows = run(extra, smoke ? ['--smoke'] : []);
  for (const r of rows) if (r.markdown) console.log(`\n${r.markdown}`);
}
