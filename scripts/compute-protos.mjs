// An esbuild plugin for the Lambda bundle: @google-cloud/compute loads one
// protobuf JSON for all ~200 Compute services (12 MB, three API versions),
// parsed at import and again when a client is created. The gcp-firewall
// provider uses two services, so the bundle embeds only what they need:
// compute v1's Firewalls and GlobalOperations, every message they reach, and
// the small google.api / google.protobuf / google.cloud option namespaces.
// Clients of other services are never bundled (the provider imports the two
// client files directly), so nothing can miss a dropped type at run time.
import { readFile } from 'node:fs/promises';

export const COMPUTE_SERVICES = ['Firewalls', 'GlobalOperations'];

/** The protos JSON with compute.v1 cut down to `services` and the types they reach; other versions dropped. */
export function trimComputeProtos(root, services = COMPUTE_SERVICES) {
  const cloud = root?.nested?.google?.nested?.cloud?.nested;
  const v1 = cloud?.compute?.nested?.v1;
  if (!v1?.nested) throw new Error('compute protos: google.cloud.compute.v1 not found; the trimmer needs updating for this @google-cloud/compute');
  const all = v1.nested;
  const keep = new Map();
  const queue = [];
  const want = (name) => {
    // Types in compute v1 are named relative to the package; qualified names (google.protobuf.Any) live in namespaces kept whole.
    const top = String(name).split('.')[0];
    if (top in all && !keep.has(top)) {
      keep.set(top, all[top]);
      queue.push(all[top]);
    }
  };
  for (const s of services) {
    if (!all[s]?.methods) throw new Error(`compute protos: service ${s} not found in google.cloud.compute.v1`);
    want(s);
  }
  // Every `type`, `keyType`, `requestType` and `responseType` string reachable from the kept definitions.
  const walk = (node) => {
    if (!node || typeof node !== 'object') return;
    for (const k of ['type', 'keyType', 'requestType', 'responseType']) if (typeof node[k] === 'string') want(node[k]);
    for (const v of Object.values(node)) walk(v);
  };
  while (queue.length > 0) walk(queue.pop());
  const compute = { ...cloud.compute, nested: { v1: { ...v1, nested: Object.fromEntries(keep) } } };
  return { ...root, nested: { ...root.nested, google: { ...root.nested.google, nested: { ...root.nested.google.nested, cloud: { ...root.nested.google.nested.cloud, nested: { ...cloud, compute } } } } } };
}

/** esbuild plugin: replaces @google-cloud/compute's protos.json with the trimmed one. */
export function computeProtosPlugin() {
  return {
    name: 'compute-protos',
    setup(build) {
      build.onLoad({ filter: /[\\/]@google-cloud[\\/]compute[\\/]build[\\/]protos[\\/]protos\.json$/ }, async (args) => {
        const root = JSON.parse(await readFile(args.path, 'utf8'));
        return { contents: JSON.stringify(trimComputeProtos(root)), loader: 'json' };
      });
    },
  };
}
