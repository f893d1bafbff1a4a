// The client against a real server: sessions, the license hot path, errors, pagination, the
// account routes, and that every operation of the served OpenAPI document has a method.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';

import { EcosireClient, EcosireError, PageRequest } from '@ecosire/sdk';

import { ADMIN_EMAIL, ADMIN_PASSWORD, adminClient, productAndLicense, serverForFile, unique } from './helpers.mjs';

const server = await serverForFile();
const admin = await adminClient(server);

test('login returns the token and user, and later calls carry the token', async () => {
  const client = new EcosireClient({ baseUrl: server.baseUrl });
  const { token, user } = await client.auth.login({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  assert.equal(user.email, ADMIN_EMAIL);
  assert.equal(user.role, 'admin');
  assert.equal(client.token, token);
  const me = await client.auth.me();
  assert.equal(me.user.email, ADMIN_EMAIL);

  await client.auth.logout();
  assert.equal(client.token, undefined);
  // The session ended server-side too: the old token no longer works.
  const stale = new EcosireClient({ baseUrl: server.baseUrl, token });
  await assert.rejects(stale.auth.me(), { name: 'EcosireError', status: 401, code: 'UNAUTHENTICATED' });
});

test('an API key authenticates like a session', async () => {
  const created = await admin.apiKeys.create({ name: unique('key'), scope: 'read-only', environment: 'test' });
  assert.match(created.key, /^ecos_test_/);
  const byKey = new EcosireClient({ baseUrl: server.baseUrl, apiKey: created.key });
  assert.equal((await byKey.auth.me()).user.email, ADMIN_EMAIL);
  // read-only: writes are refused.
  await assert.rejects(byKey.products.create({ name: 'x', slug: unique('ro') }), { status: 403, code: 'FORBIDDEN' });
  // Its use per day: today holds the two requests (one refused).
  const usage = await admin.apiKeys.usage(created.id, { days: 7 });
  assert.equal(usage.data.length, 7);
  assert.deepEqual([usage.data[6].requests, usage.data[6].errors], [2, 1]);
  await admin.apiKeys.revoke(created.id);
  await assert.rejects(byKey.auth.me(), { status: 401 });
});

test('products and licenses: create with metadata, get, update, lifecycle', async () => {
  const { product, license, key } = await productAndLicense(admin, { license: { metadata: { plan: 'gold', seats: 5 } } });
  assert.equal(product.max_activations, 2);
  assert.match(key, /^ECOS(-[0-9A-Z]{5}){4}$/);
  assert.deepEqual(license.metadata, { plan: 'gold', seats: 5 });
  assert.equal((await admin.products.get(product.slug)).id, product.id);

  const updated = await admin.licenses.update(license.id, { metadata: { plan: 'platinum' }, max_activations: 3 });
  assert.deepEqual(updated.metadata, { plan: 'platinum' });
  assert.equal(updated.max_activations, 3);

  assert.equal((await admin.licenses.suspend(license.id)).license.status, 'suspended');
  assert.equal((await admin.licenses.reinstate(license.id)).license.status, 'active');
  const renewed = await admin.licenses.renew(license.id, { extend_days: 30 });
  assert.ok(renewed.license.expires_at);
  const reissued = await admin.licenses.reissue(license.id);
  assert.notEqual(reissued.license.key, key);
  assert.equal((await admin.licenses.validate({ key })).code, 'NOT_FOUND');
  assert.equal((await admin.licenses.revoke(license.id, { reason: 'test' })).license.status, 'revoked');
});

test('activate, validate, heartbeat, deactivate: the hot path without credentials', async () => {
  const { key, license } = await productAndLicense(admin);
  const anonymous = new EcosireClient({ baseUrl: server.baseUrl });

  const first = await anonymous.licenses.activate({ key, fingerprint: 'machine-1', name: "Ann's laptop" });
  assert.equal(first.activation.fingerprint, 'machine-1');
  assert.equal(first.license.activations_count, 1);
  // Idempotent: the same fingerprint gets the same activation (200, not a second seat).
  const again = await anonymous.licenses.activate({ key, fingerprint: 'machine-1' });
  assert.equal(again.activation.id, first.activation.id);

  const v = await anonymous.licenses.validate({ key: key.toLowerCase(), fingerprint: 'machine-1' });
  assert.equal(v.valid, true);
  assert.equal(v.code, 'VALID');
  assert.equal(v.license.id, license.id);
  assert.ok(v.token);

  const unknownMachine = await anonymous.licenses.validate({ key, fingerprint: 'machine-9' });
  assert.equal(unknownMachine.valid, false);
  assert.equal(unknownMachine.code, 'FINGERPRINT_NOT_ACTIVATED');
  assert.equal(unknownMachine.token ?? null, null);

  const beat = await anonymous.licenses.heartbeat({ key, fingerprint: 'machine-1' });
  assert.equal(beat.activation.id, first.activation.id);
  const devices = await anonymous.activations.listByKey({ key });
  assert.deepEqual(devices.data.map((a) => a.fingerprint), ['machine-1']);
  assert.equal((await admin.activations.list(license.id).all()).length, 1);

  await anonymous.licenses.deactivate({ key, fingerprint: 'machine-1' });
  await assert.rejects(anonymous.licenses.deactivate({ key, fingerprint: 'machine-1' }), {
    status: 404,
    code: 'ACTIVATION_NOT_FOUND',
  });
});

test('the seat limit comes back as ACTIVATION_LIMIT_REACHED', async () => {
  const { key } = await productAndLicense(admin, { product: { max_activations: 1 } });
  await admin.licenses.activate({ key, fingerprint: 'a' });
  await assert.rejects(admin.licenses.activate({ key, fingerprint: 'b' }), {
    name: 'EcosireError',
    status: 409,
    code: 'ACTIVATION_LIMIT_REACHED',
  });
});

test('error answers become EcosireError with status, code, message, details and request id', async () => {
  // 422 with field details.
  const invalid = await admin.products.create({ name: '', slug: 'Not A Slug!' }).catch((e) => e);
  assert.ok(invalid instanceof EcosireError, String(invalid));
  assert.equal(invalid.status, 422);
  assert.equal(invalid.code, 'VALIDATION_FAILED');
  assert.equal(invalid.message, 'Validation failed');
  assert.ok(invalid.details.some((d) => d.field === 'slug'), JSON.stringify(invalid.details));
  assert.match(invalid.requestId, /^[0-9a-f]{32}$/);
  assert.equal(invalid.problem.request_id, invalid.requestId);

  // 401: no credentials, and wrong ones.
  const anonymous = new EcosireClient({ baseUrl: server.baseUrl });
  await assert.rejects(anonymous.licenses.list(), { status: 401, code: 'UNAUTHENTICATED' });
  await assert.rejects(anonymous.auth.login({ email: ADMIN_EMAIL, password: 'wrong-password' }), {
    status: 401,
    code: 'INVALID_CREDENTIALS',
  });

  // 404.
  const missing = await admin.licenses.get('lic_00000000000000000000000000').catch((e) => e);
  assert.equal(missing.status, 404);
  assert.equal(missing.code, 'NOT_FOUND');
  assert.deepEqual(missing.details, []);
  assert.equal(missing.method, 'GET');
  assert.ok(missing.url.endsWith('/api/licenses/lic_00000000000000000000000000'));

  // Our own request id comes back in the error.
  const tagged = await admin.licenses
    .get('lic_00000000000000000000000000', { headers: { 'x-request-id': 'sdk-test-42' } })
    .catch((e) => e);
  assert.equal(tagged.requestId, 'sdk-test-42');
});

test('list methods page through everything with for await and all()', async () => {
  const tag = unique('page');
  const ids = [];
  for (let i = 0; i < 7; i++) {
    ids.push((await admin.contacts.create({ email: `${tag}-${i}@example.com`, name: `${tag} ${i}` })).id);
  }
  const request = admin.contacts.list({ q: tag, limit: 3 });
  assert.ok(request instanceof PageRequest);
  const first = await request;
  assert.equal(first.data.length, 3);
  assert.equal(typeof first.next_cursor, 'string');

  const seen = [];
  for await (const c of admin.contacts.list({ q: tag, limit: 3 })) seen.push(c.id);
  assert.deepEqual([...seen].sort(), [...ids].sort());

  const pages = [];
  for await (const page of admin.contacts.list({ q: tag, limit: 3 }).pages()) pages.push(page.data.length);
  assert.deepEqual(pages, [3, 3, 1]);
  assert.equal((await admin.contacts.list({ q: tag, limit: 100 }).all()).length, 7);
});

test('account routes: verification, password reset and change, admin PATCH and DELETE of users', async () => {
  const email = `${unique('ann')}@example.com`;
  const anonymous = new EcosireClient({ baseUrl: server.baseUrl });
  const { user } = await anonymous.auth.register({ email, password: 'first-password', name: 'Ann' });
  assert.equal(user.email_verified_at ?? null, null);

  const ann = new EcosireClient({ baseUrl: server.baseUrl });
  await ann.auth.login({ email, password: 'first-password' });
  const sent = await ann.auth.verifyEmail();
  assert.ok(sent);
  await assert.rejects(ann.auth.confirmEmail({ token: 'not-a-real-token' }), { status: 400, code: 'INVALID_TOKEN' });
  await assert.rejects(anonymous.auth.resetPassword({ token: 'not-a-real-token', password: 'whatever-1234' }), {
    status: 400,
    code: 'INVALID_TOKEN',
  });
  // The same answer whether or not the address has an account.
  assert.deepEqual(
    await anonymous.auth.requestPasswordReset({ email }),
    await anonymous.auth.requestPasswordReset({ email: `${unique('nobody')}@example.com` }),
  );

  await assert.rejects(ann.auth.changePassword({ current_password: 'wrong', new_password: 'second-password' }), {
    status: 401,
    code: 'INVALID_CREDENTIALS',
  });
  await ann.auth.changePassword({ current_password: 'first-password', new_password: 'second-password' });
  await new EcosireClient({ baseUrl: server.baseUrl }).auth.login({ email, password: 'second-password' });

  const patched = await admin.users.update(user.id, { plan: 'pro', name: 'Ann B.' });
  assert.equal(patched.user.plan, 'pro');
  assert.equal((await admin.users.get(user.id)).name, 'Ann B.');
  await admin.users.delete(user.id);
  assert.equal((await admin.users.get(user.id)).email, `deleted+${user.id}@invalid`);
  await assert.rejects(ann.auth.me(), { status: 401 });

  // The last admin is protected.
  const me = await admin.auth.me();
  await assert.rejects(admin.users.update(me.user.id, { role: 'customer' }), { status: 409, code: 'LAST_ADMIN' });
});

test('secondary modules: CRM, support, newsletter, ask, audit, orders, webhooks catalog, ops', async () => {
  const email = `${unique('lead')}@example.com`;
  const anonymous = new EcosireClient({ baseUrl: server.baseUrl });
  const lead = await anonymous.crm.capture({ email, name: 'Lead', company: 'Acme', message: 'Hello' });
  assert.ok((await admin.crm.leads().all()).some((l) => l.id === lead.id));

  const ticket = await anonymous.support.open({ email, subject: 'Help', message: 'It does not start' });
  assert.equal(ticket.status, 'open');
  const reply = await admin.support.reply(ticket.id, { message: 'Try again' });
  assert.ok(reply.id);
  assert.equal((await admin.support.get(ticket.id)).replies.length, 1);
  assert.equal((await admin.support.update(ticket.id, { status: 'closed' })).status, 'closed');

  const sub = await anonymous.newsletter.subscribe({ email });
  assert.ok('unsubscribe_token' in sub);
  const again = await anonymous.newsletter.subscribe({ email });
  assert.equal('unsubscribe_token' in again, false);
  await anonymous.newsletter.unsubscribe({ token: sub.unsubscribe_token });

  const answer = await anonymous.ask.answer({ question: 'How do I verify a license token offline?' });
  assert.ok(answer.answer.length > 0);
  assert.ok((await admin.audit.list({ limit: 5 })).data.length <= 5);
  assert.deepEqual((await admin.orders.list()).data, []);
  assert.deepEqual((await admin.subscriptions.list()).data, []);
  assert.ok((await anonymous.webhooks.events()).data.some((e) => e.type === 'license.activated'));
  assert.equal((await anonymous.ops.health()).status, 'ok');
  assert.match(await anonymous.ops.metrics(), /^# (HELP|TYPE) /m);
});

test('every operation of the served OpenAPI document has a client method', async () => {
  const spec = await (await fetch(`${server.baseUrl}/openapi.json`)).json();
  const documented = new Set();
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
      if (item[method]) documented.add(`${method.toUpperCase()} ${path}`);
    }
  }
  // GET / only redirects a browser to the dashboard: nothing for a client to call.
  documented.delete('GET /');
  // Nor the sign-in through an identity provider: browser navigations that end in a redirect.
  documented.delete('GET /api/auth/oidc/login');
  documented.delete('GET /api/auth/oidc/callback');

  // The SDK reaches the API only through `call('method', '/path'…)`, `page('/path'…)` (a GET) and
  // `send('METHOD', path)` with `const path = '…'`; read them from the source.
  const dir = new URL('../src/', import.meta.url);
  const source = readdirSync(dir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => readFileSync(new URL(f, dir), 'utf8'))
    .join('\n');
  const covered = new Set();
  for (const m of source.matchAll(/\.call\(\s*'(\w+)',\s*'([^']+)'/g)) covered.add(`${m[1].toUpperCase()} ${m[2]}`);
  for (const m of source.matchAll(/\.page\(\s*'([^']+)'/g)) covered.add(`GET ${m[1]}`);
  for (const m of source.matchAll(/const path = '([^']+)';\s*[^]*?\.send\(\s*'(\w+)'/g)) covered.add(`${m[2]} ${m[1]}`);

  const missing = [...documented].filter((op) => !covered.has(op));
  assert.deepEqual(missing, [], 'operations without a client method');
  const unknown = [...covered].filter((op) => !documented.has(op));
  assert.deepEqual(unknown, [], 'client methods for operations the server does not document');
});
