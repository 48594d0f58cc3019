/**
 * The whitelist: static CIDRs from config, `never_ban` admin ranges, each
 * source's published whitelist (MikoPBX `/v1/whitelist`) and DNS hostnames
 * re-resolved on every pass (DDNS, as FreePBX trusted hosts). Whitelist
 * wins over every ban.
 *
 * An unresolvable hostname makes the whitelist incomplete; the caller runs
 * the pass fail-static rather than risk banning an address it should trust.
 */
import { NetIndex, toNet, tryParseCidr } from './cidr.js';
import type { Net } from './cidr.js';

export type Resolver = (hostname: string) => Promise<string[]>;

export interface WhitelistInput {
  cidrs: readonly string[];
  neverBan: readonly string[];
  hostnames: readonly string[];
  /** Entries published by sources, as received. */
  remote: ReadonlyArray<{ source: string; entries: readonly string[] }>;
}

export interface Whitelist {
  index: NetIndex;
  /** Problems: bad remote entries (skipped) and hostnames that did not resolve. */
  errors: string[];
  /** True when a hostname failed to resolve: the whitelist may miss an address. */
  incomplete: boolean;
}

export async function buildWhitelist(input: WhitelistInput, resolve: Resolver): Promise<Whitelist> {
  const nets: Net[] = [];
  const errors: string[] = [];
  let incomplete = false;
  for (const c of [...input.cidrs, ...input.neverBan]) nets.push(toNet(c));
  for (const r of input.remote) {
    for (const e of r.entries) {
      const p = typeof e === 'string' ? tryParseCidr(e.trim()) : undefined;
      if (p) nets.push(toNet(p.cidr));
      else errors.push(`source ${r.source}: whitelist entry ${JSON.stringify(e)} is not an IP address or CIDR (skipped)`);
    }
  }
  const results = await Promise.allSettled(input.hostnames.map((h) => resolve(h)));
  results.forEach((res, i) => {
    const host = input.hostnames[i]!;
    if (res.status === 'rejected' || res.value.length === 0) {
      incomplete = true;
      const why = res.status === 'rejected' ? (res.reason as Error)?.message ?? String(res.reason) : 'no addresses';
      errors.push(`whitelist hostname ${host} did not resolve: ${why}`);
      return;
    }
    for (const a of res.value) {
      const p = tryParseCidr(a);
      if (p) nets.push(toNet(p.cidr));
    }
  });
  return { index: new NetIndex(nets), errors, incomplete };
}
