/**
 * Every target the reliability suite runs against. A new provider is one
 * adapter file and one line here.
 */
import type { TargetAdapter } from '../harness.js';
import { awsNaclAdapter } from './aws-nacl.js';
import { azureNsgAdapter } from './azure-nsg.js';
import { fileAdapter } from './file.js';
import { gcpFirewallAdapter } from './gcp-firewall.js';

export const ADAPTERS: ReadonlyArray<() => TargetAdapter> = [awsNaclAdapter, gcpFirewallAdapter, azureNsgAdapter, fileAdapter];
