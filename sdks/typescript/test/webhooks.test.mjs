// verifyWebhook against deliveries the real server sends to a local receiver, and against
// signatures computed independently here (node:crypto) for the edge cases.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { test } from 'node:test';

import { EcosireSignatureError, verifyWebhook } from '@ecosire/sdk';

import { adminClient, productAndLicense, serverForFile } from './helpers.mjs';

const server = await serverForFile({ env: { ECOSIRE_WEBHOOK_ALLOW_PRIVATE: 'true' } });
const admin = await adminClient(server);

/** Records every delivery as raw bytes with its headers; answers 200. */
async function receiver() {
  const deliveries = [];
  const waiters = [];
  const http = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      deliveries.push({ headers: req.headers, raw: Buffer.concat(chunks) });
      res.end('ok');
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${http.address().port}/hooks`,
    deliveries,
    /** The first delivery whose X-Ecosire-Event is `type`, waiting up to 15 s for it. */
    async next(type) {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const d = deliveries.find((x) => x.headers['x-ecosire-event'] === type);
        if (d) return d;
        if (Date.now() > deadline) throw new Error(`no ${type} delivery`);
        await new Promise((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
    close: () => new Promise((r) => http.close(r)),
  };
}

const sign = (secret, t, body) => createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');

test('deliveries from the server verify with the endpoint secret, and only with it', async (t) => {
  const rx = await receiver();
  t.after(rx.close);
  const endpoint = await admin.webhookEndpoints.create({ url: rx.url, events: ['license.activated'] });
  assert.match(endpoint.secret, /^whsec_/);

  const delivery = await admin.webhookEndpoints.test(endpoint.id);
  const test = await rx.next('webhook.test');
  const event = verifyWebhook(test.raw, test.headers['x-license-signature'], endpoint.secret);
  assert.equal(event.type, 'webhook.test');
  assert.equal(event.id, delivery.event_id);
  assert.equal(event.object, 'event');

  // A real lifecycle event, sent by the background dispatcher.
  const { key } = await productAndLicense(admin);
  await admin.licenses.activate({ key, fingerprint: 'hook-machine' });
  const activated = await rx.next('license.activated');
  const e = verifyWebhook(activated.raw.toString('utf8'), activated.headers['x-license-signature'], endpoint.secret);
  assert.equal(e.type, 'license.activated');
  assert.equal(e.data.object.fingerprint, 'hook-machine');

  // The wrong secret, or a body changed by one byte, does not verify.
  assert.throws(() => verifyWebhook(test.raw, test.headers['x-license-signature'], 'whsec_wrong'), {
    name: 'EcosireSignatureError',
    reason: 'mismatch',
  });
  const altered = Buffer.from(test.raw);
  altered[altered.length - 2] ^= 1;
  assert.throws(() => verifyWebhook(altered, test.headers['x-license-signature'], endpoint.secret), {
    reason: 'mismatch',
  });

  // The delivery log and a manual retry.
  const logged = await admin.webhookEndpoints.deliveries(endpoint.id).all();
  assert.ok(logged.some((d) => d.id === delivery.id && d.status === 'succeeded'));
  const retried = await admin.webhookEndpoints.retryDelivery(endpoint.id, delivery.id);
  assert.equal(retried.id, delivery.id);
  await admin.webhookEndpoints.update(endpoint.id, { description: 'sdk test' });
  await admin.webhookEndpoints.delete(endpoint.id);
});

test('the signature scheme: any v1, tolerance both ways, malformed and missing headers', () => {
  const secret = 'whsec_0123456789abcdefghijklmnopqrstuv';
  const body = '{"id":"evt_1","object":"event","type":"license.revoked","created":1700000000,"data":{"object":{}}}';
  const t = 1_700_000_000;
  const good = sign(secret, t, body);

  assert.equal(verifyWebhook(body, `t=${t},v1=${good}`, secret, { now: t }).type, 'license.revoked');
  // A secret being rolled: several v1, one matches; other schemes are ignored.
  assert.ok(verifyWebhook(body, `t=${t}, v1=${'0'.repeat(64)}, v0=abc, v1=${good}`, secret, { now: t }));
  // Uppercase hex is the same digest.
  assert.ok(verifyWebhook(body, `t=${t},v1=${good.toUpperCase()}`, secret, { now: t }));

  const reason = (fn) => {
    try {
      fn();
    } catch (e) {
      assert.ok(e instanceof EcosireSignatureError);
      return e.reason;
    }
    return 'verified';
  };
  assert.equal(reason(() => verifyWebhook(body, `t=${t},v1=${good}`, secret, { now: t + 301 })), 'stale');
  assert.equal(reason(() => verifyWebhook(body, `t=${t},v1=${good}`, secret, { now: t - 301 })), 'stale');
  assert.equal(reason(() => verifyWebhook(body, `t=${t},v1=${good}`, secret, { now: t + 500, toleranceS: 600 })), 'verified');
  // The timestamp is signed: moving it breaks the signature.
  assert.equal(reason(() => verifyWebhook(body, `t=${t + 1},v1=${good}`, secret, { now: t })), 'mismatch');
  assert.equal(reason(() => verifyWebhook(body, `t=${t},v1=${good.slice(0, 63)}`, secret, { now: t })), 'mismatch');
  assert.equal(reason(() => verifyWebhook(body, `v1=${good}`, secret, { now: t })), 'malformed_header');
  assert.equal(reason(() => verifyWebhook(body, `t=${t}`, secret, { now: t })), 'malformed_header');
  assert.equal(reason(() => verifyWebhook(body, 'garbage', secret, { now: t })), 'malformed_header');
  assert.equal(reason(() => verifyWebhook(body, undefined, secret, { now: t })), 'missing_header');
  assert.equal(reason(() => verifyWebhook(body, '', secret, { now: t })), 'missing_header');
  // A parsed body cannot be verified: say so instead of failing mysteriously.
  assert.throws(() => verifyWebhook(JSON.parse(body), `t=${t},v1=${good}`, secret), TypeError);
});
