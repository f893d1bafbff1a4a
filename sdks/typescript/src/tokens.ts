import {
  createLocalJWKSet,
  errors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';

/** The claims of a license token (API.md, "Signed license tokens"). */
export interface LicenseTokenClaims extends JWTPayload {
  iss: string;
  aud: string | string[];
  /** The license id. */
  sub: string;
  iat: number;
  /** min(license expiry, now + the product's offline lease). */
  exp: number;
  jti: string;
  /** The product id. */
  product: string;
  entitlements: string[];
  max_activations: number;
  /** Unix seconds, or null for a license that does not expire. */
  license_expires_at: number | null;
  /** Present when the token is bound to an activation. */
  fingerprint?: string;
  /** The nonce of the validate request, when it sent one. */
  nonce?: string;
}

export interface VerifyLicenseTokenOptions {
  /** The expected `iss` (the server's ECOSIRE_TOKEN_ISSUER); not checked when omitted. */
  issuer?: string;
  /** The expected `aud` (default `ecosire:license`). */
  audience?: string;
  /** The `nonce` the token must carry (the one sent to validate: proves the token is fresh). */
  nonce?: string;
  /** The `fingerprint` the token must be bound to. */
  fingerprint?: string;
  /** The time to check `exp` against (default: now). */
  currentDate?: Date;
  /** Leeway for `exp`, in seconds (default 0). */
  clockToleranceS?: number;
}

// One key-set object per JWKS document, so repeated verifications reuse its imported keys.
const keySets = new WeakMap<JSONWebKeySet, JWTVerifyGetKey>();

/**
 * Verifies a license token offline: Ed25519 signature (alg EdDSA only) by a key of `jwks` (the
 * document of `GET /.well-known/jwks.json`, or a jose key-set function such as
 * `createRemoteJWKSet`), audience, expiry and, when given, issuer, nonce and fingerprint.
 * Resolves to the claims; rejects with jose's errors, whose `code` says why
 * (`ERR_JWT_EXPIRED`, `ERR_JWS_SIGNATURE_VERIFICATION_FAILED`, `ERR_JWKS_NO_MATCHING_KEY`,
 * `ERR_JWT_CLAIM_VALIDATION_FAILED`, …).
 */
export async function verifyLicenseToken(
  token: string,
  jwks: JSONWebKeySet | JWTVerifyGetKey,
  options: VerifyLicenseTokenOptions = {},
): Promise<LicenseTokenClaims> {
  let getKey: JWTVerifyGetKey;
  if (typeof jwks === 'function') {
    getKey = jwks;
  } else {
    getKey = keySets.get(jwks) ?? createLocalJWKSet(jwks);
    keySets.set(jwks, getKey);
  }
  const { payload } = await jwtVerify(token, getKey, {
    algorithms: ['EdDSA'],
    audience: options.audience ?? 'ecosire:license',
    issuer: options.issuer,
    currentDate: options.currentDate,
    clockTolerance: options.clockToleranceS,
    requiredClaims: ['sub', 'iat', 'exp'],
  });
  for (const claim of ['nonce', 'fingerprint'] as const) {
    const expected = options[claim];
    if (expected !== undefined && payload[claim] !== expected) {
      throw new errors.JWTClaimValidationFailed(`unexpected "${claim}" claim value`, payload, claim, 'check_failed');
    }
  }
  return payload as LicenseTokenClaims;
}
