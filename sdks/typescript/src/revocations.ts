// Signed revocation lists (`GET /api/licenses/revocations?product=…`, or a mirror of that file):
// a compact JWS (`typ: revocations+jwt`, EdDSA, the license signing keys of the JWKS) naming the
// product's revoked and suspended licenses, as ids or, above 1,000 of them, as a Golomb-coded set.
// Node-only (SHA-256 from node:crypto, synchronous): used by LicenseGuard.

import { createHash } from 'node:crypto';

import {
  createLocalJWKSet,
  decodeJwt,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';

/** A Golomb-coded set of license ids (the server's `GcsFilter`). */
export interface GcsFilter {
  alg: 'gcs-sha256';
  /** False-positive rate 2^-p. */
  p: number;
  /** The hash range. */
  m: number;
  /** How many values are encoded. */
  count: number;
  /** base64url. */
  salt: string;
  /** base64url bit stream. */
  data: string;
}

/** The claims of a revocation list. Each set comes as ids or as a filter. */
export interface RevocationListClaims extends JWTPayload {
  iss: string;
  aud: string;
  /** The product id. */
  product: string;
  /** Grows with every change; never accept a lower one than already seen. */
  seq: number;
  iat: number;
  exp: number;
  revoked?: string[];
  revoked_filter?: GcsFilter;
  suspended?: string[];
  suspended_filter?: GcsFilter;
}

export interface VerifyRevocationListOptions {
  /** The expected `iss` (the server's ECOSIRE_TOKEN_ISSUER); not checked when omitted. */
  issuer?: string;
  /** The product id the list must be for. */
  product?: string;
  /** The time to check `exp` against (default: now). */
  currentDate?: Date;
}

export const REVOCATION_LIST_TYP = 'revocations+jwt';
export const REVOCATION_LIST_AUDIENCE = 'ecosire:revocations';

/**
 * Verifies a revocation list: EdDSA signature by a key of `jwks`, `typ`, audience, expiry and,
 * when given, issuer and product. Resolves to the claims; rejects with jose's errors (or an
 * Error naming the product).
 */
export async function verifyRevocationList(
  jws: string,
  jwks: JSONWebKeySet | JWTVerifyGetKey,
  options: VerifyRevocationListOptions = {},
): Promise<RevocationListClaims> {
  const getKey = typeof jwks === 'function' ? jwks : createLocalJWKSet(jwks);
  const { payload } = await jwtVerify(jws.trim(), getKey, {
    algorithms: ['EdDSA'],
    typ: REVOCATION_LIST_TYP,
    audience: REVOCATION_LIST_AUDIENCE,
    issuer: options.issuer,
    currentDate: options.currentDate,
    requiredClaims: ['seq', 'iat', 'exp', 'product'],
  });
  if (options.product !== undefined && payload.product !== options.product) {
    throw new Error(`the revocation list is for product ${String(payload.product)}, not ${options.product}`);
  }
  return payload as RevocationListClaims;
}

/** Whether `id` is in the set (false positives at rate 2^-p); null when the filter is malformed. */
export function gcsContains(f: GcsFilter, id: string): boolean | null {
  if (f.alg !== 'gcs-sha256' || !(f.m > 0) || f.p > 32 || !Number.isSafeInteger(f.m)) return null;
  const salt = Buffer.from(f.salt, 'base64url');
  const data = Buffer.from(f.data, 'base64url');
  const digest = createHash('sha256').update(salt).update(id, 'utf8').digest();
  const h = Number(digest.readBigUInt64BE(0) % BigInt(f.m));
  let pos = 0;
  const bit = (): number | null => {
    const byte = data[pos >> 3];
    if (byte === undefined) return null;
    const b = (byte >> (7 - (pos & 7))) & 1;
    pos++;
    return b;
  };
  const scale = 2 ** f.p;
  let value = 0;
  for (let i = 0; i < f.count; i++) {
    let q = 0;
    for (;;) {
      const b = bit();
      if (b === null) return null;
      if (b === 0) break;
      q++;
    }
    let r = 0;
    for (let j = 0; j < f.p; j++) {
      const b = bit();
      if (b === null) return null;
      r = r * 2 + b;
    }
    value += q * scale + r;
    if (value >= h) return value === h;
  }
  return false;
}

/** A set names `id`; a malformed filter counts as naming it (the list is signed: err on refusing). */
function inSet(ids: string[] | undefined, filter: GcsFilter | undefined, id: string): boolean {
  return (ids?.includes(id) ?? false) || (filter !== undefined && gcsContains(filter, id) !== false);
}

/** How a list names the license `id`: `REVOKED`, `SUSPENDED` (the validate codes), or null. */
export function revocationListNames(claims: RevocationListClaims, id: string): 'REVOKED' | 'SUSPENDED' | null {
  if (inSet(claims.revoked, claims.revoked_filter, id)) return 'REVOKED';
  if (inSet(claims.suspended, claims.suspended_filter, id)) return 'SUSPENDED';
  return null;
}

/** The claims of a list accepted earlier (verified then), without verifying again. */
export function storedRevocationClaims(jws: string): RevocationListClaims | null {
  try {
    return decodeJwt(jws) as RevocationListClaims;
  } catch {
    return null;
  }
}
