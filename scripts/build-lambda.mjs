// Bundles the Lambda handler into build/lambda/ (ESM, split per provider so a
// cold start loads only the configured provider's SDK). Zip the folder's
// contents, or point SAM's CodeUri at it.
import { build } from 'esbuild';
import { rm, writeFile, stat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { computeProtosPlugin } from './compute-protos.mjs';

const outdir = 'build/lambda';
await rm(outdir, { recursive: true, force: true });
await build({
  entryPoints: { index: 'src/lambda.ts' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  outdir,
  outExtension: { '.js': '.mjs' },
  minify: true,
  // Prefer the SDKs' ES module builds: they tree-shake, so only the commands a
  // provider uses are bundled (a faster cold start).
  mainFields: ['module', 'main'],
  sourcemap: false,
  legalComments: 'none',
  // Some bundled CommonJS dependencies call require() or read __dirname at load time (google-gax); give ESM output both.
  banner: {
    js: "import { createRequire as __cbCreateRequire } from 'node:module'; import { fileURLToPath as __cbFileURLToPath } from 'node:url'; import { dirname as __cbDirname } from 'node:path'; const require = __cbCreateRequire(import.meta.url); const __filename = __cbFileURLToPath(import.meta.url); const __dirname = __cbDirname(__filename);",
  },
  // Only the protobuf types of the two Compute services the gcp-firewall provider calls.
  plugins: [computeProtosPlugin()],
  logLevel: 'warning',
});
await writeFile(join(outdir, 'package.json'), JSON.stringify({ type: 'module' }) + '\n');
let total = 0;
for (const f of await readdir(outdir)) total += (await stat(join(outdir, f))).size;
console.log(`build/lambda: ${(total / 1024 / 1024).toFixed(2)} MiB`);
