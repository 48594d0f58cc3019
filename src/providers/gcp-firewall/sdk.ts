/**
 * The two Compute clients this provider uses, imported from their own files
 * rather than the package index: the index loads all ~200 Compute service
 * clients (about 1.5 s), these two a fraction of that. `client.ts` imports
 * this module lazily.
 */
export { FirewallsClient } from '@google-cloud/compute/build/src/v1/firewalls_client.js';
export { GlobalOperationsClient } from '@google-cloud/compute/build/src/v1/global_operations_client.js';
