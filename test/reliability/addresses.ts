/**
 * Address arithmetic for the reliability checks, written apart from
 * `src/core/cidr.ts` on purpose: the invariants ("no whitelisted address is
 * covered", "the target holds exactly the desired addresses") are checked
 * with code that does not share a bug with the code under test.
 *
 * A range is a family and an inclusive [start, end] of bigints.
 */

export interface AddressRange {
  family: 4 | 6;
  start: bigint;
  end: bigint;
}

function v4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    n = (n << 8n) | BigInt(Number(p));
  }
  return n;
}

function v6(text: string): bigint | undefined {
  if (!/^[0-9a-fA-F:]+$/.test(text) || text.split('::').length > 2) return undefined;
  const [head = '', tail = ''] = text.includes('::') ? text.split('::') : [text, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = 8 - h.length - t.length;
  if (text.includes('::') ? fill < 1 : h.length !== 8) return undefined;
  const groups = [...h, ...Array<string>(text.includes('::') ? fill : 0).fill('0'), ...t];
  let n = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    n = (n << 16n) | BigInt(parseInt(g, 16));
  }
  return n;
}

/** A CIDR or bare address as a range; undefined for anything else (service tags, `*`). */
export function toRange(text: string): AddressRange | undefined {
  const [addr = '', prefixText] = text.trim().split('/');
  const family: 4 | 6 = addr.includes(':') ? 6 : 4;
  const n = family === 4 ? v4(addr) : v6(addr);
  if (n === undefined) return undefined;
  const bits = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? bits : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= bits)) return undefined;
  const size = 1n << BigInt(bits - prefix);
  const start = n - (n % size);
  return { family, start, end: start + size - 1n };
}

export function overlap(a: AddressRange, b: AddressRange): boolean {
  return a.family === b.family && a.start <= b.end && b.start <= a.end;
}

/** Every address of the ranges, as `family:number` keys. Refuses ranges too large to list (a test bug). */
export function addressSet(cidrs: Iterable<string>, limit = 1 << 16): Set<string> {
  const out = new Set<string>();
  for (const c of cidrs) {
    const r = toRange(c);
    if (!r) throw new Error(`not an address or CIDR: ${c}`);
    if (r.end - r.start >= BigInt(limit)) throw new Error(`range ${c} is too large to list`);
    for (let a = r.start; a <= r.end; a++) out.add(`${r.family}:${a}`);
  }
  return out;
}

/** Keys of the addresses in `of` that some range in `by` covers. */
export function coveredAddresses(of: ReadonlySet<string>, by: readonly AddressRange[]): string[] {
  const hit: string[] = [];
  for (const key of of) {
    const [f, n] = key.split(':') as [string, string];
    const family = Number(f) as 4 | 6;
    const a = BigInt(n);
    if (by.some((r) => r.family === family && r.start <= a && a <= r.end)) hit.push(key);
  }
  return hit;
}

/** Addresses that appear in more than one of the CIDRs (a CIDR listed twice, or two overlapping CIDRs). */
export function duplicatedAddresses(cidrs: readonly string[]): number {
  const seen = new Set<string>();
  let dup = 0;
  for (const c of cidrs) {
    for (const a of addressSet([c])) {
      if (seen.has(a)) dup++;
      else seen.add(a);
    }
  }
  return dup;
}

export function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
