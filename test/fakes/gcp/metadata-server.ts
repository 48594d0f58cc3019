/**
 * A fake of the GCE/Cloud Run metadata server, the credential source of
 * Application Default Credentials on Cloud Run, GKE and Compute Engine.
 * google-auth-library finds it through `GCE_METADATA_HOST`.
 *
 * Like the real one: every request must carry `Metadata-Flavor: Google`
 * (403 otherwise), every answer carries it back (gcp-metadata rejects an
 * answer without it), and the default service account's token comes from
 * `/computeMetadata/v1/instance/service-accounts/default/token` as
 * `{access_token, expires_in, token_type}`. Unknown paths are 404.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeMetadata {
  /** `host:port`, the value for `GCE_METADATA_HOST`. */
  host: string;
  /** The access token it hands out. */
  token: string;
  /** Paths requested, in order. */
  requests: string[];
  close(): Promise<void>;
}

export async function startFakeMetadata(opts: { projectId?: string; token?: string } = {}): Promise<FakeMetadata> {
  const token = opts.token ?? `ya29.fake-${Math.random().toString(36).slice(2)}`;
  const projectId = opts.projectId ?? 'cb-metadata-project';
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://metadata').pathname;
    requests.push(path);
    const send = (status: number, body: string, type = 'application/text') => {
      res.writeHead(status, { 'Metadata-Flavor': 'Google', 'Content-Type': type });
      res.end(body);
    };
    if (req.headers['metadata-flavor'] !== 'Google') return send(403, 'Missing Metadata-Flavor:Google header.');
    if (req.method !== 'GET') return send(405, 'Method not allowed');
    switch (path.replace(/\/$/, '')) {
      case '':
      case '/computeMetadata/v1':
      case '/computeMetadata/v1/instance':
        return send(200, 'attributes/\nservice-accounts/\n');
      case '/computeMetadata/v1/project/project-id':
        return send(200, projectId);
      case '/computeMetadata/v1/instance/service-accounts/default/email':
        return send(200, `cloud-bouncer@${projectId}.iam.gserviceaccount.com`);
      case '/computeMetadata/v1/instance/service-accounts/default/token':
        return send(200, JSON.stringify({ access_token: token, expires_in: 3599, token_type: 'Bearer' }), 'application/json');
      default:
        return send(404, 'Not found');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    token,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
