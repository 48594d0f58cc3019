/**
 * The ownership marker and recorded expiry, as stored in a rule's
 * description (GCP, Azure, file target). It must fit Azure's 140-character
 * description limit, so it is short and fixed-format:
 *
 *   `cloud-bouncer owner=<owner> exp=<unix seconds>`
 *
 * A description that does not parse is not ours.
 */

export const MARKER_PREFIX = 'cloud-bouncer';

/** Owner ids are short, so two deployments can share a firewall without fighting. */
export const OWNER_PATTERN = /^[a-z0-9][a-z0-9-]{0,29}$/;

export interface Marker {
  owner: string;
  expiresAt: number;
}

export function formatMarker(m: Marker): string {
  return `${MARKER_PREFIX} owner=${m.owner} exp=${Math.ceil(m.expiresAt / 1000)}`;
}

const MARKER_RE = /^cloud-bouncer owner=([a-z0-9][a-z0-9-]{0,29}) exp=(\d{1,12})$/;

/** Parses a marker; `undefined` when the text is not a cloud-bouncer marker. */
export function parseMarker(text: string | undefined | null): Marker | undefined {
  if (!text) return undefined;
  const m = MARKER_RE.exec(text.trim());
  if (!m) return undefined;
  return { owner: m[1]!, expiresAt: Number(m[2]) * 1000 };
}

/** True when the text carries any cloud-bouncer marker, whoever the owner. */
export function looksLikeMarker(text: string | undefined | null): boolean {
  return !!text && text.trim().startsWith(`${MARKER_PREFIX} owner=`);
}
