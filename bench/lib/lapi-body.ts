/**
 * Synthetic `/v1/decisions/stream` bodies, shaped as a real LAPI sends them
 * on `startup=true`: the expired `deleted` history first, then `new`. 70%
 * IPv4, 20% IPv6, 10% ranges, mixed origins, Go durations.
 */

const ORIGINS = ['crowdsec', 'CAPI', 'lists', 'cscli', 'CAPI', 'lists'];

/** Item `i` of a body; `salt` shifts the values, so two salts give different bans. */
export function item(i: number, salt: number): string {
  const k = i * 7 + salt;
  let value: string;
  let scope = 'Ip';
  const r = i % 10;
  if (r < 7) value = `${11 + ((k >> 24) & 127)}.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}`;
  else if (r < 9) value = `2001:db8:${((k >> 16) & 0xffff).toString(16)}:${(k & 0xffff).toString(16)}::1`;
  else {
    value = `${150 + ((k >> 16) & 63)}.${(k >> 8) & 255}.${k & 255}.0/24`;
    scope = 'Range';
  }
  const secs = 600 + (i % 86_400);
  return `{"duration":"${Math.floor(secs / 3600)}h${Math.floor((secs % 3600) / 60)}m${secs % 60}.123456789s","id":${i + 1},"origin":"${ORIGINS[i % ORIGINS.length]}","scenario":"crowdsecurity/ssh-bf","scope":"${scope}","type":"ban","value":"${value}"}`;
}

/** A body with `n` active decisions and `history` expired ones in `deleted`. */
export function body(n: number, salt: number, history = n): string {
  const parts: string[] = [];
  parts.push('{"deleted":[');
  for (let i = 0; i < history; i++) parts.push(`${i ? ',' : ''}${item(i + n, salt + 3).replace(/"duration":"[^"]+"/, '"duration":"-3.06s"')}`);
  parts.push('],"new":[');
  for (let i = 0; i < n; i++) parts.push(`${i ? ',' : ''}${item(i, salt)}`);
  parts.push(']}');
  return parts.join('');
}

/** The size of the chunks a response arrives in (Node's HTTP client reads up to 64 KiB at a time). */
export const CHUNK_BYTES = 64 * 1024;
