/**
 * A decision source: a CrowdSec LAPI, a MikoPBX `firewall-bouncer` export, or
 * a JSON file of the same shape. Every pass asks for a snapshot; a job always
 * gets a full one (`startup=true`), a daemon may let the source poll deltas
 * and resync from a full snapshot on a fixed period.
 */
import type { Decision } from '../core/types.js';

export interface SourceSnapshot {
  /** Active, normalised decisions that passed the filters. */
  decisions: Decision[];
  /** Whitelist entries published by the source (MikoPBX `/v1/whitelist`), as received (validated later). */
  whitelist: string[];
  /** Items that failed validation (skipped and counted, never fatal). */
  skipped: number;
  /** A few reasons for skipped items, for the log. */
  skippedSamples: string[];
  /** Items in `deleted` (counted, not materialised, on a full snapshot). */
  deletedCount: number;
  /** Response bytes read in this call. */
  bytes: number;
  /** `full` when this snapshot came from `startup=true`, `delta` when deltas were merged into the last one. */
  kind: 'full' | 'delta';
}

export interface SnapshotOptions {
  now: number;
  signal?: AbortSignal | undefined;
  /** Daemon mode: the source may poll deltas instead of a full snapshot. */
  allowDelta?: boolean | undefined;
}

export interface DecisionSource {
  readonly name: string;
  /**
   * The source publishes whitelist entries. While such a source fails its
   * whitelist is unknown, so the pass adds nothing new (a ban from another
   * source could cover an address it lets through).
   */
  readonly publishesWhitelist?: boolean | undefined;
  /** Throws `SourceError` (naming the source) on any failure; the pass then runs fail-static. */
  snapshot(opts: SnapshotOptions): Promise<SourceSnapshot>;
  close?(): Promise<void>;
}

/** Filters pushed down to the LAPI as query parameters and applied again locally. */
export interface DecisionFilters {
  /** Decision types kept, lower case (default `['ban']`). */
  types: string[];
  /** Scopes kept, lower case (default `['ip', 'range']`). */
  scopes: string[];
  /** Exact origins kept; empty = all. */
  origins: string[];
  /** Keep when the scenario contains any of these; empty = all. */
  scenariosContaining: string[];
  /** Drop when the scenario contains any of these. */
  scenariosNotContaining: string[];
}
