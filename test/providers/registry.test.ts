import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadProvider, providerNames } from '../../src/providers/registry.js';

describe('providers/registry', () => {
  it('lists exactly the provider folders', () => {
    const dir = 'src/providers';
    const folders = readdirSync(dir).filter((f) => statSync(join(dir, f)).isDirectory());
    expect(providerNames().sort()).toEqual(folders.sort());
  });

  it('loads each provider module under its own name', async () => {
    for (const name of providerNames()) expect((await loadProvider(name)).kind).toBe(name);
  });

  it('names the known providers when asked for an unknown one', async () => {
    await expect(loadProvider('ovh')).rejects.toThrow('unknown provider "ovh"; expected one of aws-nacl, azure-nsg, file, gcp-firewall');
  });
});
