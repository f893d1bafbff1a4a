// License tokens verified against the server's JWKS, and LicenseGuard: online, offline from the
// stored token when the server is stopped, refusals (tampering, revocation, clock rollback, an
// ended lease), and a JWKS refresh after a real key rotation.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';

import { createRemoteJWKSet } from 'jose';

import { EcosireClient, LicenseGuard, verifyLicenseToken } from '@ecosire/sdk';

import { adminClient, productAndLicense, serverForFile } from './helpers.mjs';

const server = await serverForFile();
const admin = await adminClient(server);
const dir = mkdtempSync(join(tmpdir(), 'ecosire-guard-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
const storage = () => join(dir, `license-${++files}.json`);
/** A client that gives up at once when the server is down. */
const client = () => new EcosireClient({ baseUrl: server.baseUrl, retries: 0, timeoutMs: 5_000 });
const code = (e) => e.code;

test('license tokens verify against the served JWKS, with audience, issuer, nonce and fingerprint', async () => {
  const { key, license, product } = await productAndLicense(admin);
  await admin.licenses.activate({ key, fingerprint: 'fp-1' });
  const v = await admin.licenses.validate({ key, fingerprint: 'fp-1', nonce: 'n-123' });
  const jwks = await admin.licenses.wellKnownJwks();
  assert.deepEqual(jwks, await admin.licenses.jwks());
  assert.deepEqual(Object.keys(jwks.keys[0]).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x']);

  const claims = await verifyLicenseToken(v.token, jwks, { issuer: 'ecosire', nonce: 'n-123', fingerprint: 'fp-1' });
  assert.equal(claims.sub, license.id);
  assert.equal(claims.aud, 'ecosire:license');
  assert.equal(claims.product, product.id);
  assert.deepEqual(claims.entitlements, ['pro']);
  assert.equal(claims.fingerprint, 'fp-1');
  assert.ok(claims.exp > claims.iat);

  // jose's remote key set works as well as the document.
  const remote = createRemoteJWKSet(new URL(`${server.origin}/.well-known/jwks.json`));
  assert.equal((await verifyLicenseToken(v.token, remote)).sub, license.id);

  await assert.rejects(verifyLicenseToken(v.token, jwks, { issuer: 'someone-else' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
  await assert.rejects(verifyLicenseToken(v.token, jwks, { audience: 'ecosire:session' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
  await assert.rejects(verifyLicenseToken(v.token, jwks, { nonce: 'other' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
  await assert.rejects(verifyLicenseToken(v.token, jwks, { fingerprint: 'fp-2' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
  await assert.rejects(verifyLicenseToken(v.token, jwks, { currentDate: new Date((claims.exp + 1) * 1000) }), {
    code: 'ERR_JWT_EXPIRED',
  });
  await assert.rejects(verifyLicenseToken(v.token, { keys: [] }), { code: 'ERR_JWKS_NO_MATCHING_KEY' });
  // A changed claim breaks the signature.
  const [h, p, s] = v.token.split('.');
  const forged = Buffer.from(JSON.stringify({ ...claims, max_activations: 1000 })).toString('base64url');
  await assert.rejects(verifyLicenseToken(`${h}.${forged}.${s}`, jwks), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
  assert.equal(p.length > 0, true);
  // A session JWT is not a license token (other key, other audience).
  await assert.rejects(verifyLicenseToken(admin.token, jwks));
});

test('LicenseGuard: valid online, offline while the server is down, refused when tampered or rolled back', async () => {
  const { key } = await productAndLicense(admin, { product: { offline_lease_days: 3 } });
  await admin.licenses.activate({ key, fingerprint: 'laptop' });
  const path = storage();
  const guard = (c, options = {}) => new LicenseGuard({ client: c, key, fingerprint: 'laptop', storagePath: path, ...options });

  const online = await guard(client()).check();
  assert.equal(online.status, 'valid', JSON.stringify(online));
  assert.equal(online.claims.fingerprint, 'laptop');
  assert.equal(online.until.getTime(), online.claims.exp * 1000);
  const lease = online.claims.exp - online.claims.iat;
  assert.ok(Math.abs(lease - 3 * 86_400) <= 2, `lease ${lease} s`);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  const stored = JSON.parse(readFileSync(path, 'utf8'));
  assert.equal(stored.token, online.token);
  // A local clock that is far off does not refuse what the server just vouched for.
  const skewed = await guard(client(), { now: () => Date.now() + 30 * 86_400_000 }).check();
  assert.equal(skewed.status, 'valid', JSON.stringify(skewed));
  // Each check proves freshness with a nonce of its own.
  const again = await guard(client()).check();
  assert.notEqual(again.claims.nonce, online.claims.nonce);

  await server.stop();
  try {
    const unreachable = client();
    const offline = await guard(unreachable).check();
    assert.equal(offline.status, 'offline', JSON.stringify(offline));
    assert.equal(offline.cause.name, 'EcosireNetworkError');
    assert.equal(offline.until.getTime(), again.claims.exp * 1000);
    assert.equal(offline.claims.sub, again.claims.sub);

    // Clock rollback: behind the latest verified iat by more than the tolerance.
    const now = Date.now();
    assert.equal((await guard(unreachable, { now: () => now - 2 * 3600_000 }).check()).code, 'clock_rollback');
    assert.equal((await guard(unreachable, { now: () => now - 60_000 }).check()).status, 'offline', 'within tolerance');
    // An offline check remembers the time it saw: going back behind it is refused too, even
    // though that time is still after the token's iat.
    assert.equal((await guard(unreachable, { now: () => now + 3600_000 }).check()).status, 'offline');
    assert.equal((await guard(unreachable, { now: () => now + 1800_000 }).check()).code, 'clock_rollback');
    // The lease ends at exp.
    const afterLease = (again.claims.exp + 60) * 1000;
    assert.equal((await guard(unreachable, { now: () => afterLease }).check()).code, 'offline_expired');

    // Tampering with the stored token: a changed claim fails the signature.
    const good = readFileSync(path, 'utf8');
    const s = JSON.parse(good);
    const [h, , sig] = s.token.split('.');
    const longer = { ...again.claims, exp: again.claims.exp + 365 * 86_400 };
    writeFileSync(path, JSON.stringify({ ...s, token: `${h}.${Buffer.from(JSON.stringify(longer)).toString('base64url')}.${sig}` }));
    assert.equal((await guard(unreachable, { now: () => afterLease }).check()).code, 'stored_token_invalid');
    writeFileSync(path, '{ not json');
    assert.equal((await guard(unreachable).check()).code, 'stored_token_invalid');
    // Lowering the high-water mark by hand does not reopen the rollback: the token's iat is signed.
    writeFileSync(path, JSON.stringify({ ...s, high_water_s: 0 }));
    assert.equal((await guard(unreachable, { now: () => (again.claims.iat - 3600) * 1000 }).check()).code, 'clock_rollback');

    // Another key never gets this key's token.
    const other = new LicenseGuard({ client: unreachable, key: 'ECOS-AAAAA-BBBBB-CCCCC-DDDDD', storagePath: path });
    assert.equal(code(await other.check()), 'no_offline_token');
  } finally {
    await server.restart();
  }
  // Online again: the file is simply replaced by a fresh token.
  assert.equal((await guard(client()).check()).status, 'valid');
});

test('LicenseGuard: a revoked license is refused online and its stored token dropped', async () => {
  const { key, license } = await productAndLicense(admin);
  const path = storage();
  const guard = (c) => new LicenseGuard({ client: c, key, storagePath: path });
  assert.equal((await guard(client()).check()).status, 'valid');
  await admin.licenses.revoke(license.id, {});
  const revoked = await guard(client()).check();
  assert.equal(revoked.status, 'refused');
  assert.equal(revoked.code, 'REVOKED');
  assert.equal(JSON.parse(readFileSync(path, 'utf8')).token, null);
  // Offline afterwards there is nothing to fall back on.
  const nowhere = new EcosireClient({ baseUrl: 'http://127.0.0.1:9/api', retries: 0 });
  assert.equal((await guard(nowhere).check()).code, 'no_offline_token');
  // A license that does not exist, and entitlements it lacks.
  const unknown = new LicenseGuard({ client: client(), key: 'ECOS-AAAAA-BBBBB-CCCCC-DDDDD', storagePath: storage() });
  assert.equal((await unknown.check()).code, 'NOT_FOUND');
  const { key: k2 } = await productAndLicense(admin);
  const lacking = new LicenseGuard({ client: client(), key: k2, entitlements: ['enterprise'], storagePath: storage() });
  assert.equal((await lacking.check()).code, 'ENTITLEMENTS_MISSING');
});

test('LicenseGuard: after a key rotation, an unknown kid refreshes the JWKS at most once a minute', async () => {
  const { key } = await productAndLicense(admin);
  let jwksFetches = 0;
  const counting = (input, init) => {
    if (String(input).endsWith('/jwks')) jwksFetches++;
    return fetch(input, init);
  };
  let clock = Date.now();
  const path = storage();
  const guard = new LicenseGuard({
    client: new EcosireClient({ baseUrl: server.baseUrl, retries: 0, fetch: counting }),
    key,
    storagePath: path,
    now: () => clock,
  });
  // The first check has no keys yet: one fetch; then the kid is known.
  assert.equal((await guard.check()).status, 'valid');
  assert.equal((await guard.check()).status, 'valid');
  assert.equal(jwksFetches, 1);

  // Staged rotation: the new key is published at once but the old one keeps signing, so the
  // guard's keys still verify every token and nothing is fetched.
  const rotated = server.cli('keys', 'rotate');
  const kid = rotated.match(/signing key (\S+):/)?.[1] ?? assert.fail(rotated);
  assert.equal((await guard.check()).status, 'valid');
  assert.equal(jwksFetches, 1);
  // Activated (across a restart, so the server is certain to sign with it; same port).
  await server.stop();
  server.cli('keys', 'activate', kid);
  await server.restart();

  // Within a minute of the last fetch the unknown kid is not fetched for: refused, not hammered.
  clock += 30_000;
  const early = await guard.check();
  assert.equal(early.code, 'token_invalid', JSON.stringify(early));
  assert.equal(jwksFetches, 1);
  clock += 31_000;
  const late = await guard.check();
  assert.equal(late.status, 'valid', JSON.stringify(late));
  assert.equal(jwksFetches, 2);
  // The stored copy now holds both keys, for offline use after a restart of the app.
  assert.equal(JSON.parse(readFileSync(path, 'utf8')).jwks.keys.length, 2);
});
