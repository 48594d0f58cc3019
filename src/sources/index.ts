import type { Logger } from 'pino';
import type { SourceConfig } from '../config.js';
import { createFileSource } from './file.js';
import { createLapiSource } from './lapi.js';
import type { DecisionSource } from './source.js';
import { USER_AGENT } from '../version.js';

export function createSource(cfg: SourceConfig, log: Logger): DecisionSource {
  if (cfg.type === 'file') return createFileSource(cfg, { log });
  return createLapiSource(cfg, { log, userAgent: USER_AGENT });
}
