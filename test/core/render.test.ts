/**
 * The text plan's heading says why a pass fails static.
 */
import { describe, expect, it } from 'vitest';
import { planToText } from '../../src/core/render.js';
import type { Plan, SourceStatus } from '../../src/core/types.js';

const source = (over: Partial<SourceStatus> = {}): SourceStatus => ({ name: 'lapi', ok: true, decisions: 3, skipped: 0, whitelist: 0, durationMs: 5, ...over });
const plan = (over: Partial<Plan>): Plan => ({ version: 1, generatedAt: '2026-11-23T08:00:00.000Z', failStatic: false, sources: [source()], refused: [], targets: [], ...over });

describe('render/planToText', () => {
  it.each([
    ['no failure', plan({}), 'cloud-bouncer plan at 2026-11-23T08:00:00.000Z'],
    ['a failed source', plan({ failStatic: true, sources: [source({ ok: false, error: 'source lapi: HTTP 500' })] }), 'cloud-bouncer plan at 2026-11-23T08:00:00.000Z  [FAIL-STATIC: a source failed; only expired or whitelisted rules are removed]'],
    ['an unresolved whitelist hostname (every source ok)', plan({ failStatic: true }), 'cloud-bouncer plan at 2026-11-23T08:00:00.000Z  [FAIL-STATIC: the whitelist is incomplete; only expired or whitelisted rules are removed]'],
  ])('heads the plan with the reason on %s', (_n, p, heading) => {
    expect(planToText(p).split('\n')[0]).toBe(heading);
  });

  it('names a failed source once, whether or not its error starts with its name', () => {
    const text = planToText(plan({ failStatic: true, sources: [source({ ok: false, error: 'source lapi: HTTP 500' }), source({ name: 'pbx', ok: false, error: 'timed out' })] }));
    expect(text).toContain('\nsource lapi: FAILED: HTTP 500\n');
    expect(text).toContain('\nsource pbx: FAILED: timed out');
  });
});
