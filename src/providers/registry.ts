/**
 * Provider registry: name → lazy factory. A provider module is loaded only
 * when a configured target uses it, and its SDK only when the provider is
 * created, so a Lambda for AWS never loads the GCP or Azure SDK.
 */
import type { ProviderModule } from './provider.js';

type Loader = () => Promise<ProviderModule<unknown>>;

const load = (m: Promise<{ provider: unknown }>) => m.then((x) => x.provider as ProviderModule<unknown>);

export const providers: ReadonlyMap<string, Loader> = new Map<string, Loader>([
  ['aws-nacl', () => load(import('./aws-nacl/index.js'))],
  ['azure-nsg', () => load(import('./azure-nsg/index.js'))],
  ['file', () => load(import('./file/index.js'))],
  ['gcp-firewall', () => load(import('./gcp-firewall/index.js'))],
]);

export function providerNames(): string[] {
  return [...providers.keys()];
}

export async function loadProvider(name: string): Promise<ProviderModule<unknown>> {
  const loader = providers.get(name);
  if (!loader) throw new Error(`unknown provider ${JSON.stringify(name)}; expected one of ${providerNames().join(', ')}`);
  return loader();
}
