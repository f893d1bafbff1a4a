// Air-gapped activation, for a machine that never reaches the server: it signs an activation
// request with a device key of its own, a person carries the request to a connected machine
// (`client.licenses.activateOffline`, the customer portal, or `ecosire offline activate`), and
// carries the license file back; giving the license up later signs a deactivation proof with the
// same key, which frees the seat once carried to the server (`client.licenses.deactivateOffline`).

import {
  base64url,
  calculateJwkThumbprint,
  CompactSign,
  decodeJwt,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWTVerifyGetKey,
} from 'jose';

import { verifyLicenseToken, type LicenseTokenClaims } from './tokens.js';

const REQUEST_TYP = 'ecosire-activation-request+jwt';
const PROOF_TYP = 'ecosire-deactivation-proof+jwt';

/**
 * What the offline machine keeps from its request until it gives the license up. It holds the
 * device's private key: store it where the application keeps its own secrets.
 */
export interface OfflineActivationState {
  key: string;
  fingerprint: string;
  /** The request's nonce, which the license file must echo. */
  nonce: string;
  /** The device's Ed25519 private key (JWK, OKP/Ed25519). */
  deviceKey: JWK;
}

export interface OfflineActivationRequestOptions {
  /** The license key. */
  key: string;
  /** This machine's fingerprint (1–255 characters): the license file is bound to it. */
  fingerprint: string;
  /** Shown in the license's device list. */
  name?: string;
  platform?: string;
  hostname?: string;
  /** The clock, in milliseconds (default Date.now). */
  now?: () => number;
}

const encoder = new TextEncoder();
const randomText = (bytes: number) => base64url.encode(globalThis.crypto.getRandomValues(new Uint8Array(bytes)));

async function signWith(deviceKey: JWK, typ: string, claims: Record<string, unknown>): Promise<string> {
  const { d: _private, ...publicJwk } = deviceKey;
  const kid = await calculateJwkThumbprint(publicJwk);
  const key = await importJWK(deviceKey, 'EdDSA');
  return new CompactSign(encoder.encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: 'EdDSA', typ, kid })
    .sign(key);
}

/**
 * Makes an activation request on the offline machine: a fresh Ed25519 device key and a compact
 * JWS it signs (`request`, a text block to carry), plus the `state` to keep for
 * `importLicenseFile` and `createDeactivationProof`.
 */
export async function requestOfflineActivation(
  options: OfflineActivationRequestOptions,
): Promise<{ request: string; state: OfflineActivationState }> {
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const deviceKey = await exportJWK(privateKey);
  const state: OfflineActivationState = {
    key: options.key,
    fingerprint: options.fingerprint,
    nonce: randomText(18),
    deviceKey,
  };
  const request = await signWith(deviceKey, REQUEST_TYP, {
    key: state.key,
    fingerprint: state.fingerprint,
    device_key: deviceKey.x,
    nonce: state.nonce,
    iat: Math.floor((options.now ?? Date.now)() / 1000),
    ...(options.name === undefined ? {} : { name: options.name }),
    ...(options.platform === undefined ? {} : { platform: options.platform }),
    ...(options.hostname === undefined ? {} : { hostname: options.hostname }),
  });
  return { request, state };
}

export interface ImportLicenseFileOptions {
  /** The expected token issuer (the server's ECOSIRE_TOKEN_ISSUER). */
  issuer?: string;
  /** The product id the license must be for. */
  product?: string;
  /** The time to check `exp` against (default: now). */
  currentDate?: Date;
}

/**
 * Checks a license file offline against the keys the application ships (`jwks`): signed by the
 * server, bound to this machine's fingerprint, answering this machine's own request (its nonce),
 * for the product when given, and not expired. Resolves to its claims; `exp` is the end of the
 * offline lease. Call it again at each start to check the stored file.
 */
export async function importLicenseFile(
  file: string,
  state: OfflineActivationState,
  jwks: JSONWebKeySet | JWTVerifyGetKey,
  options: ImportLicenseFileOptions = {},
): Promise<LicenseTokenClaims> {
  const claims = await verifyLicenseToken(file.replace(/\s+/g, ''), jwks, {
    issuer: options.issuer,
    nonce: state.nonce,
    fingerprint: state.fingerprint,
    currentDate: options.currentDate,
  });
  if (options.product !== undefined && claims.product !== options.product) {
    throw new Error(`the license file is for product ${claims.product}, not ${options.product}`);
  }
  return claims;
}

/**
 * Gives the license up on the offline machine: a deactivation proof signed by the device key,
 * which frees the seat once carried to the server. The application should delete the license
 * file and `state` once it has made the proof.
 */
export async function createDeactivationProof(
  state: OfflineActivationState,
  licenseFile: string,
  now: () => number = Date.now,
): Promise<string> {
  const { sub } = decodeJwt(licenseFile.replace(/\s+/g, ''));
  if (!sub) throw new Error('not a license file: no license id (sub)');
  return signWith(state.deviceKey, PROOF_TYP, {
    sub,
    fingerprint: state.fingerprint,
    iat: Math.floor(now() / 1000),
    jti: randomText(16),
  });
}
