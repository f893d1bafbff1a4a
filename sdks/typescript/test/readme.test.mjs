// The README's snippets run as written (only the API address changes) against a real server set
// up the way they assume: an admin admin@example.com, a product desktop-pro with one seat, a
// license whose seat machine-1 holds, contacts, an API key, a webhook receiver.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { EcosireClient } from '@ecosire/sdk';

import { serverForFile } from './helpers.mjs';

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
const PASSWORD = 'readme-admin-password';
const server = await serverForFile({
  env: {
    ECOSIRE_ADMIN_EMAIL: 'admin@example.com',
    ECOSIRE_ADMIN_PASSWORD: PASSWORD,
    ECOSIRE_WEBHOOK_ALLOW_PRIVATE: 'true',
  },
});
const home = mkdtempSync(join(tmpdir(), 'ecosire-readme-'));
after(() => rmSync(home, { recursive: true, force: true }));

const admin = new EcosireClient({ baseUrl: server.baseUrl });
await admin.auth.login({ email: 'admin@example.com', password: PASSWORD });
const product = await admin.products.create({ name: 'Desktop Pro', slug: 'desktop-pro', max_activations: 1 });
const { key } = await admin.licenses.create({ product_id: product.id });
await admin.licenses.activate({ key, fingerprint: 'machine-1' });
await admin.contacts.create({ email: 'ann@example.com', name: 'Ann Lee', company: 'Example Ltd' });
const apiKey = (await admin.apiKeys.create({ name: 'readme', scope: 'admin', environment: 'test' })).key;
const endpoint = await admin.webhookEndpoints.create({ url: 'http://127.0.0.1:9/placeholder', events: ['*'] });

const env = {
  ...process.env,
  HOME: home,
  ECOSIRE_API_KEY: apiKey,
  ECOSIRE_PASSWORD: PASSWORD,
  LICENSE_KEY: key,
  ECOSIRE_WEBHOOK_SECRET: endpoint.secret,
};

/** The README's ```ts blocks, pointed at the test server. */
const snippets = [...readFileSync(join(PACKAGE_DIR, 'README.md'), 'utf8').matchAll(/```ts\n([^]*?)```/g)].map((m) =>
  m[1].replaceAll('https://api.ecosire.com/api', server.baseUrl),
);

/** Runs a snippet as an ES module from the package folder, where `@ecosire/sdk` resolves to it. */
function run(code, extraEnv = {}) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
    cwd: PACKAGE_DIR,
    env: { ...env, ...extraEnv },
  });
  const out = { stdout: '', stderr: '', child };
  child.stdout.setEncoding('utf8').on('data', (s) => (out.stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s) => (out.stderr += s));
  out.exited = new Promise((r) => child.once('exit', (code) => r(code)));
  return out;
}

const snippet = (marker) => {
  const found = snippets.filter((s) => s.includes(marker));
  assert.equal(found.length, 1, `one README snippet with ${marker}`);
  return found[0];
};

test('the README snippets that call the API run and print what they promise', async () => {
  const expectations = [
    ['apiKey: process.env.ECOSIRE_API_KEY,\n});', /^$/],
    ['client.auth.login', /signed in as .* \(admin\)/],
    ['client.contacts.list', /ann@example\.com/],
    ['client.licenses.validate', /licensed until .*/],
    ['ACTIVATION_LIMIT_REACHED', /all seats are taken/],
    ['new LicenseGuard', /licensed \(valid\) until /],
  ];
  // Every snippet is run: these six, and the webhook receiver below.
  assert.equal(snippets.length, expectations.length + 1);
  for (const [marker, expected] of expectations) {
    const r = run(snippet(marker));
    const code = await r.exited;
    assert.equal(code, 0, `${marker}: ${r.stderr}`);
    assert.match(r.stdout, expected, marker);
  }
});

test('the README webhook receiver accepts the server deliveries and refuses forgeries', async (t) => {
  // A free port for the receiver (the snippet listens on 3000).
  const probe = createServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address();
  await new Promise((r) => probe.close(r));

  const receiver = run(snippet('verifyWebhook(').replace('.listen(3000)', `.listen(${port}, '127.0.0.1')`));
  t.after(() => receiver.child.kill());
  const url = `http://127.0.0.1:${port}/`;
  for (let i = 0; i < 100; i++) {
    if (await fetch(url, { method: 'POST' }).then(() => true, () => false)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const forged = await fetch(url, { method: 'POST', headers: { 'x-license-signature': 't=1,v1=00' }, body: '{}' });
  assert.equal(forged.status, 401);

  await admin.webhookEndpoints.update(endpoint.id, { url });
  const delivery = await admin.webhookEndpoints.test(endpoint.id);
  assert.equal(delivery.status, 'succeeded', JSON.stringify(delivery));
  assert.equal(delivery.attempts.at(-1).status_code, 204);
  assert.match(receiver.stdout, /webhook\.test/);
});
