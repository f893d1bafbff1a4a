// Shared by the test files: a real ECOSIRE server per file, an admin client, and a scripted
// HTTP server standing in for a misbehaving network (429s, 503s, silence) where the real server
// cannot be made to misbehave on cue.

import { createServer } from 'node:http';
import { after } from 'node:test';

import { EcosireClient } from '@ecosire/sdk';

import { ADMIN_EMAIL, ADMIN_PASSWORD, startServer } from '../scripts/server.mjs';

export { ADMIN_EMAIL, ADMIN_PASSWORD };

/** Starts a server for the calling test file and stops it when the file is done. */
export async function serverForFile(options) {
  const server = await startServer(options);
  after(() => server.close());
  return server;
}

/** A client logged in as the admin the server was started with. */
export async function adminClient(server, options = {}) {
  const client = new EcosireClient({ baseUrl: server.baseUrl, ...options });
  await client.auth.login({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  return client;
}

let seq = 0;
/** A name no other test of this run uses. */
export const unique = (prefix) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++seq}`;

/** A product and a license for it; returns both and the license key. */
export async function productAndLicense(admin, { product = {}, license = {} } = {}) {
  const slug = unique('prd');
  const p = await admin.products.create({ name: slug, slug, max_activations: 2, entitlements: ['pro'], ...product });
  const l = await admin.licenses.create({ product_id: p.id, ...license });
  return { product: p, license: l, key: l.key };
}

/**
 * A local HTTP server that answers each request with the next scripted reply:
 * `{status, headers, body}`, or `'hang'` to never answer. The last reply repeats.
 * `requests` records `{method, url, headers, body}` of everything received.
 */
export async function scriptedServer(replies) {
  const requests = [];
  const hanging = new Set();
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      const reply = replies[Math.min(requests.length - 1, replies.length - 1)];
      if (reply === 'hang') {
        hanging.add(res);
        return;
      }
      const text = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body ?? {});
      res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
      res.end(text);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    baseUrl: `http://127.0.0.1:${port}/api`,
    requests,
    close: () =>
      new Promise((r) => {
        for (const res of hanging) res.destroy();
        server.closeAllConnections();
        server.close(r);
      }),
  };
}

/** A problem body as the server writes it, for the scripted server. */
export function problem(status, code, message = code) {
  return {
    status,
    headers: { 'content-type': 'application/problem+json' },
    body: { type: 'about:blank', title: '', status, detail: message, code, statusCode: status, error: '', message },
  };
}
