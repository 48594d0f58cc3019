/**
 * A throwaway CA and a server certificate for 127.0.0.1 / ::1 / localhost,
 * made with the `openssl` CLI at test time. The Azure SDK's bearer-token
 * policy refuses plain http, so the fake ARM server speaks TLS, and the
 * client trusts this CA through the provider's `ca_cert_path` option.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestTls {
  dir: string;
  /** PEM of the CA, and its path (what `ca_cert_path` points at). */
  ca: string;
  caPath: string;
  key: string;
  cert: string;
  cleanup(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeTestTls(): TestTls {
  const dir = mkdtempSync(join(tmpdir(), 'cb-azure-tls-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=cloud-bouncer test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'], dir);
  writeFileSync(
    join(dir, 'server.ext'),
    ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=serverAuth', 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost', ''].join('\n'),
  );
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext'], dir);
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return {
    dir,
    ca: read('ca.pem'),
    caPath: join(dir, 'ca.pem'),
    key: read('server.key'),
    cert: read('server.pem'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
