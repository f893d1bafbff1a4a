// Signed revocation lists: verified with the served JWKS, the shared Golomb-coded-set vector, and
// LicenseGuard refusing a revoked or suspended license offline at the next list it sees (here from
// a mirror while the server is down), never going back to an older list.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';

import { EcosireClient, LicenseGuard, gcsContains, revocationListNames, verifyRevocationList } from '@ecosire/sdk';

import { adminClient, productAndLicense, serverForFile } from './helpers.mjs';

const server = await serverForFile();
const admin = await adminClient(server);
const dir = mkdtempSync(join(tmpdir(), 'ecosire-revocations-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A static-file host standing in for a CDN mirror of the list. */
async function mirror() {
  const m = { body: '' };
  const http = createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'application/jwt' });
    res.end(m.body);
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  m.url = `http://127.0.0.1:${http.address().port}/lists/product.jws`;
  after(() => new Promise((r) => { http.closeAllConnections(); http.close(r); }));
  return m;
}

test('a list verifies with the served JWKS and names revoked and suspended licenses', async () => {
  const { product, license } = await productAndLicense(admin);
  const other = await admin.licenses.create({ product_id: product.id });
  await admin.licenses.revoke(license.id, {});
  await admin.licenses.suspend(other.id);
  const jwks = await admin.licenses.wellKnownJwks();
  const jws = await admin.licenses.revocations(product.slug);
  const claims = await verifyRevocationList(jws, jwks, { issuer: 'ecosire', product: product.id });
  assert.equal(claims.seq, 2);
  assert.deepEqual(claims.revoked, [license.id]);
  assert.deepEqual(claims.suspended, [other.id]);
  assert.equal(revocationListNames(claims, license.id), 'REVOKED');
  assert.equal(revocationListNames(claims, other.id), 'SUSPENDED');
  assert.equal(revocationListNames(claims, 'lic_other'), null);
  await assert.rejects(verifyRevocationList(jws, jwks, { product: 'prd_else' }), /not prd_else/);
  await assert.rejects(verifyRevocationList(jws, jwks, { currentDate: new Date((claims.exp + 1) * 1000) }), {
    code: 'ERR_JWT_EXPIRED',
  });
  // A license token is not a list (typ), whatever its signature.
  const { key } = await productAndLicense(admin);
  const token = (await admin.licenses.validate({ key })).token;
  await assert.rejects(verifyRevocationList(token, jwks), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
});

test('the Golomb-coded set decodes the vector the server and the Rust SDK pin', () => {
  const f = { alg: 'gcs-sha256', p: 4, m: 80, count: 5, salt: 'BwcHBwcHBwcHBwcHBwcHBw', data: 'lPhIMA' };
  for (const id of ['lic_a', 'lic_b', 'lic_c', 'lic_d', 'lic_e']) assert.equal(gcsContains(f, id), true, id);
  for (const id of ['lic_f', 'lic_g', 'lic_h', 'lic_x', 'lic_y', 'lic_z']) assert.equal(gcsContains(f, id), false, id);
  // lic_d's value is the last one: a stream cut short never reaches it (and counts as listed).
  assert.equal(gcsContains({ ...f, data: 'lA' }, 'lic_d'), null);
  const claims = { revoked_filter: { ...f, data: 'lA' } };
  assert.equal(revocationListNames(claims, 'lic_d'), 'REVOKED');
});

test('LicenseGuard: revoked or suspended is refused offline at the next list, never rolled back', async () => {
  const { product, license: revoked, key: revokedKey } = await productAndLicense(admin);
  const suspended = await admin.licenses.create({ product_id: product.id });
  const kept = await admin.licenses.create({ product_id: product.id });
  const m = await mirror();
  const guard = (key, name) =>
    new LicenseGuard({
      client: new EcosireClient({ baseUrl: server.baseUrl, retries: 0, timeoutMs: 5_000 }),
      key,
      storagePath: join(dir, `${name}.json`),
      product: product.id,
      revocationMirrorUrl: m.url,
    });
  for (const [key, name] of [[revokedKey, 'r'], [suspended.key, 's'], [kept.key, 'k']]) {
    assert.equal((await guard(key, name).check()).status, 'valid');
  }
  const seq0 = await admin.licenses.revocations(product.id);
  await admin.licenses.revoke(revoked.id, {});
  await admin.licenses.suspend(suspended.id);
  const seq2 = await admin.licenses.revocations(product.id);

  await server.stop();
  try {
    // The mirror still has the old list: the tokens hold offline, as tokens do.
    m.body = seq0;
    assert.equal((await guard(revokedKey, 'r').check()).status, 'offline');
    // The next list the guard sees refuses them, long before exp.
    m.body = seq2;
    const r = await guard(revokedKey, 'r').check();
    assert.equal(r.code, 'REVOKED', JSON.stringify(r));
    assert.match(r.detail, /seq 2/);
    assert.equal((await guard(suspended.key, 's').check()).code, 'SUSPENDED');
    assert.equal((await guard(kept.key, 'k').check()).status, 'offline', 'the others keep working');
    // A stale mirror cannot take it back.
    m.body = seq0;
    assert.equal((await guard(suspended.key, 's').check()).code, 'SUSPENDED');
    // Nor a forged list.
    const [h, , s] = seq2.split('.');
    const forged = Buffer.from(JSON.stringify({ iss: 'ecosire', aud: 'ecosire:revocations', product: product.id, seq: 99, iat: 0, exp: 9_999_999_999 })).toString('base64url');
    m.body = `${h}.${forged}.${s}`;
    assert.equal((await guard(suspended.key, 's').check()).code, 'SUSPENDED');
    // Revocation is final: the token is gone.
    assert.equal((await guard(revokedKey, 'r').check()).code, 'no_offline_token');
  } finally {
    await server.restart();
  }
  // Reinstated and online again: the server's newer list frees the device offline too.
  await admin.licenses.reinstate(suspended.id);
  assert.equal((await guard(suspended.key, 's').check()).status, 'valid');
  await server.stop();
  try {
    m.body = '';
    assert.equal((await guard(suspended.key, 's').check()).status, 'offline');
  } finally {
    await server.restart();
  }
});
