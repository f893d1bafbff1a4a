// Retries, timeouts and aborts. The real server's rate limiter supplies a genuine 429 with
// Retry-After; a scripted local server supplies what the real one cannot do on cue (503s, a
// proxy's HTML 502, silence).

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';

import { EcosireClient, EcosireError, EcosireNetworkError, EcosireTimeoutError } from '@ecosire/sdk';

import { startServer } from '../scripts/server.mjs';
import { adminClient, problem, productAndLicense, scriptedServer } from './helpers.mjs';

const ok = { status: 200, body: { data: [], next_cursor: null } };

test('a real 429 RATE_LIMITED: Retry-After is honoured, then the call succeeds', async (t) => {
  const server = await startServer({
    env: { ECOSIRE_RATE_LIMITS: 'on', ECOSIRE_RATE_LIMIT_VALIDATE: '1/s' },
  });
  t.after(server.close);
  const admin = await adminClient(server);
  const { key } = await productAndLicense(admin);

  const noRetries = new EcosireClient({ baseUrl: server.baseUrl, retries: 0 });
  await noRetries.licenses.validate({ key });
  const limited = await noRetries.licenses.validate({ key }).catch((e) => e);
  assert.ok(limited instanceof EcosireError, String(limited));
  assert.equal(limited.status, 429);
  assert.equal(limited.code, 'RATE_LIMITED');
  assert.ok(limited.retryAfterS >= 1, `Retry-After ${limited.retryAfterS}`);

  // validate is idempotent, so the client waits out Retry-After and tries again.
  const patient = new EcosireClient({ baseUrl: server.baseUrl, retries: 2 });
  const started = Date.now();
  assert.equal((await patient.licenses.validate({ key })).valid, true);
  assert.ok(Date.now() - started >= 500, 'answered before the bucket refilled');
});

test('429 and 503 are retried for GETs and idempotent POSTs, not for other POSTs', async (t) => {
  const s = await scriptedServer([
    { ...problem(429, 'RATE_LIMITED'), headers: { ...problem(429).headers, 'retry-after': '0' } },
    problem(503, 'BUSY'),
    ok,
  ]);
  t.after(s.close);
  const client = new EcosireClient({ baseUrl: s.baseUrl, retries: 2 });
  assert.deepEqual(await client.products.list(), ok.body);
  assert.equal(s.requests.length, 3);
  assert.ok(s.requests.every((r) => r.url === '/api/products'));

  const p = await scriptedServer([problem(503, 'BUSY'), { status: 200, body: { valid: true } }]);
  t.after(p.close);
  const viaPost = new EcosireClient({ baseUrl: p.baseUrl, retries: 2 });
  await viaPost.licenses.activate({ key: 'k', fingerprint: 'f' });
  assert.equal(p.requests.length, 2, 'activate is retried');

  const c = await scriptedServer([problem(503, 'BUSY'), { status: 201, body: {} }]);
  t.after(c.close);
  const creating = new EcosireClient({ baseUrl: c.baseUrl, retries: 2 });
  await assert.rejects(creating.products.create({ name: 'x', slug: 'x' }), { status: 503, code: 'BUSY' });
  assert.equal(c.requests.length, 1, 'a create is never sent twice');
});

test('retries give up after `retries` and throw the last error', async (t) => {
  const s = await scriptedServer([problem(502, 'BAD_GATEWAY')]);
  t.after(s.close);
  const client = new EcosireClient({ baseUrl: s.baseUrl, retries: 3 });
  await assert.rejects(client.orders.list(), { status: 502, code: 'BAD_GATEWAY' });
  assert.equal(s.requests.length, 4);
  // Per call.
  await assert.rejects(client.orders.list(undefined, { retries: 0 }), { status: 502 });
  assert.equal(s.requests.length, 5);
});

test('a Retry-After beyond a minute is not waited out in the call', async (t) => {
  const s = await scriptedServer([
    { ...problem(429, 'QUOTA_EXCEEDED'), headers: { ...problem(429).headers, 'retry-after': '3600' } },
  ]);
  t.after(s.close);
  const client = new EcosireClient({ baseUrl: s.baseUrl, retries: 5 });
  const started = Date.now();
  await assert.rejects(client.users.list(), { code: 'QUOTA_EXCEEDED', retryAfterS: 3600 });
  assert.equal(s.requests.length, 1);
  assert.ok(Date.now() - started < 1000);
});

test('an answer that is not a problem body still becomes an EcosireError', async (t) => {
  const s = await scriptedServer([
    { status: 502, headers: { 'content-type': 'text/html' }, body: '<html>Bad Gateway</html>' },
  ]);
  t.after(s.close);
  const client = new EcosireClient({ baseUrl: s.baseUrl, retries: 0 });
  await assert.rejects(client.orders.list(), { name: 'EcosireError', status: 502, code: 'HTTP_502' });
});

test('connection failures are EcosireNetworkError, after the retries', async () => {
  // A port that was free a moment ago: nothing listens there.
  const probe = createServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address();
  await new Promise((r) => probe.close(r));

  let attempts = 0;
  const counting = (input, init) => {
    attempts++;
    return fetch(input, init);
  };
  const client = new EcosireClient({ baseUrl: `http://127.0.0.1:${port}/api`, retries: 2, fetch: counting });
  const e = await client.products.list().catch((x) => x);
  assert.ok(e instanceof EcosireNetworkError, String(e));
  assert.match(e.message, /ECONNREFUSED/);
  assert.equal(attempts, 3);
});

test('timeouts are EcosireTimeoutError; per-call timeoutMs overrides the client', async (t) => {
  const s = await scriptedServer(['hang']);
  t.after(s.close);
  const client = new EcosireClient({ baseUrl: s.baseUrl, timeoutMs: 150, retries: 1 });
  const started = Date.now();
  const e = await client.products.list().catch((x) => x);
  assert.ok(e instanceof EcosireTimeoutError, String(e));
  assert.equal(e.timeoutMs, 150);
  assert.equal(s.requests.length, 2, 'a timed-out GET is retried');
  assert.ok(Date.now() - started < 2000);

  await assert.rejects(client.products.get('x', { timeoutMs: 50, retries: 0 }), { name: 'EcosireTimeoutError', timeoutMs: 50 });
});

test('an AbortSignal stops the call, also while it waits to retry', async (t) => {
  const s = await scriptedServer(['hang']);
  t.after(s.close);
  const client = new EcosireClient({ baseUrl: s.baseUrl, timeoutMs: 10_000 });
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  const started = Date.now();
  await assert.rejects(client.products.list(undefined, { signal: controller.signal }), { name: 'AbortError' });
  assert.ok(Date.now() - started < 1000);

  // Aborted during the backoff after a 429 that asked for 30 s.
  const r = await scriptedServer([
    { ...problem(429, 'RATE_LIMITED'), headers: { ...problem(429).headers, 'retry-after': '30' } },
  ]);
  t.after(r.close);
  const waiting = new EcosireClient({ baseUrl: r.baseUrl, retries: 3 });
  const c2 = new AbortController();
  setTimeout(() => c2.abort(new Error('user gave up')), 200);
  await assert.rejects(waiting.products.list(undefined, { signal: c2.signal }), { message: 'user gave up' });
  assert.equal(r.requests.length, 1);

  // Already aborted: nothing is sent.
  await assert.rejects(waiting.products.list(undefined, { signal: AbortSignal.abort() }), { name: 'AbortError' });
  assert.equal(r.requests.length, 1);
});
