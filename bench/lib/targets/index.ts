/**
 * The providers the API benchmark measures. Adding one is one file in this
 * folder (a `BenchTarget`: its fake, a fresh target, the fake's call count)
 * and one line here.
 */
import { awsNaclTarget } from './aws-nacl.js';
import { azureNsgTarget } from './azure-nsg.js';
import { fileTarget } from './file.js';
import { gcpFirewallTarget } from './gcp-firewall.js';
import type { BenchTarget } from './types.js';

export const benchTargets: readonly BenchTarget[] = [awsNaclTarget, gcpFirewallTarget, azureNsgTarget, fileTarget];

export type { BenchFake, BenchTarget, BenchSession, WireCount } from './types.js';
