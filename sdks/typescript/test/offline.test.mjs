// Air-gapped activation against a real server: a request made offline, the license file it
// brings back checked offline, the seat released by the device's proof; and the churn budget's
// 409 surfaced as a typed error.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  createDeactivationProof,
  EcosireChurnLimitError,
  EcosireClient,
  EcosireError,
  importLicenseFile,
  requestOfflineActivation,
} from '@ecosire/sdk';

import { adminClient, productAndLicense, serverForFile } from './helpers.mjs';

const server = await serverForFile();
const admin = await adminClient(server);
// The connected machine needs no credentials: the license key inside the request is one.
const anonymous = new EcosireClient({ baseUrl: server.baseUrl });

test('air-gapped round trip: request, license file, offline check, proof, seat freed', async () => {
  const { product, license, key } = await productAndLicense(admin, {
    product: { max_activations: 1, offline_activation: true, offline_activation_lease_days: 45 },
  });
  const jwks = await anonymous.licenses.wellKnownJwks();

  const { request, state } = await requestOfflineActivation({ key, fingerprint: 'air-gapped-ts', name: 'Kiosk' });
  assert.match(request, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  assert.equal(state.deviceKey.crv, 'Ed25519');
  assert.ok(state.deviceKey.d, 'the state keeps the private key');

  const answer = await anonymous.licenses.activateOffline({ request });
  assert.equal(answer.activation.fingerprint, 'air-gapped-ts');
  assert.ok(answer.activation.offline_until);
  assert.equal(answer.license.activations_count, 1);

  const claims = await importLicenseFile(answer.license_file, state, jwks, { product: product.id });
  assert.equal(claims.sub, license.id);
  assert.equal(claims.fingerprint, 'air-gapped-ts');
  const leaseDays = (claims.exp - claims.iat) / 86_400;
  assert.equal(leaseDays, 45);
  // Another machine's request state does not accept this file (other nonce and fingerprint).
  const other = await requestOfflineActivation({ key, fingerprint: 'someone-else' });
  await assert.rejects(importLicenseFile(answer.license_file, other.state, jwks), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
  // Past its lease, the file is refused offline.
  await assert.rejects(
    importLicenseFile(answer.license_file, state, jwks, { currentDate: new Date((claims.exp + 60) * 1000) }),
    { code: 'ERR_JWT_EXPIRED' },
  );

  // The seat is taken like any other and listed for the key holder.
  const listed = await anonymous.activations.listByKey({ key });
  assert.deepEqual(listed.data.map((a) => a.fingerprint), ['air-gapped-ts']);

  // A proof signed by another device's key frees nothing; the right one frees the seat.
  const forged = await createDeactivationProof({ ...other.state, fingerprint: state.fingerprint }, answer.license_file);
  await assert.rejects(anonymous.licenses.deactivateOffline({ proof: forged }), { status: 422, code: 'VALIDATION_FAILED' });
  const proof = await createDeactivationProof(state, answer.license_file);
  await anonymous.licenses.deactivateOffline({ proof });
  assert.equal((await admin.licenses.get(license.id)).activations_count, 0);
  await assert.rejects(anonymous.licenses.deactivateOffline({ proof }), { status: 404, code: 'ACTIVATION_NOT_FOUND' });
});

test('a spent churn budget is a typed error that says when to try again', async () => {
  const { license, key } = await productAndLicense(admin, {
    product: { max_activations: 3, max_deactivations_per_30d: 1 },
  });
  await anonymous.licenses.activate({ key, fingerprint: 'a' });
  await anonymous.licenses.activate({ key, fingerprint: 'b' });
  await anonymous.licenses.deactivate({ key, fingerprint: 'a' });
  const before = Date.now();
  const err = await anonymous.licenses.deactivate({ key, fingerprint: 'b' }).catch((e) => e);
  assert.ok(err instanceof EcosireChurnLimitError, String(err));
  assert.ok(err instanceof EcosireError);
  assert.equal(err.status, 409);
  assert.equal(err.code, 'CHURN_LIMIT_REACHED');
  const days = (err.retryAt.getTime() - before) / 86_400_000;
  assert.ok(days > 29.9 && days <= 30.01, `retryAt in ${days} days`);
  assert.ok(err.retryAfterS > 29 * 86_400);

  const seen = await admin.licenses.get(license.id);
  assert.equal(seen.churn?.deactivations_30d, 1);
  assert.equal(seen.churn?.max_deactivations_per_30d, 1);
  const reset = await admin.licenses.resetChurn(license.id);
  assert.equal(reset.license.churn?.deactivations_30d, 0);
  await anonymous.licenses.deactivate({ key, fingerprint: 'b' });
});
