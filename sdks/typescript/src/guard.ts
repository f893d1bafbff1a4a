// A license check for Node and Electron apps that keeps working offline: online it validates
// with a fresh nonce; when the server cannot be reached it answers from the last signed token,
// verified locally, until that token's `exp` (the product's offline lease).

import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

import { decodeJwt, type JSONWebKeySet } from 'jose';

import type { Activation, EcosireClient, License } from './client.js';
import { EcosireError, EcosireNetworkError, EcosireTimeoutError } from './errors.js';
import { revocationListNames, storedRevocationClaims, verifyRevocationList } from './revocations.js';
import { verifyLicenseToken, type LicenseTokenClaims } from './tokens.js';

export interface LicenseGuardOptions {
  /** The client used to validate (its `retries` and `timeoutMs` bound how long check() waits). */
  client: EcosireClient;
  /** The license key as the user entered it. */
  key: string;
  /** Where the last token, the JWKS and the clock high-water mark are kept (a JSON file). */
  storagePath: string;
  /** This machine's fingerprint: sent to validate, and the offline token must be bound to it. */
  fingerprint?: string;
  /** Product id or slug the license must be for. */
  product?: string;
  /** Entitlements the license must grant (checked online, and offline from the token). */
  entitlements?: string[];
  /** The expected token issuer (the server's ECOSIRE_TOKEN_ISSUER). */
  issuer?: string;
  /**
   * Keys shipped with the app. When given, tokens are verified only with these and with keys
   * fetched from the server during this run, never with keys read back from the storage file
   * (which the machine's user can edit).
   */
  jwks?: JSONWebKeySet;
  /** How far the clock may go back behind what was already seen, in seconds (default 300). */
  clockToleranceS?: number;
  /** The clock, in milliseconds (default Date.now); for tests and for apps with a trusted clock. */
  now?: () => number;
  /**
   * Whether checks fetch the product's signed revocation list and apply it offline (default
   * true): after each online answer from the server, and from `revocationMirrorUrl` when the
   * server cannot be reached. An offline check of a license the newest accepted list names is
   * refused (`REVOKED` / `SUSPENDED`) whatever its token's `exp`.
   */
  revocationLists?: boolean;
  /**
   * A copy of `GET /api/licenses/revocations?product=…` (a static file on a CDN, say), asked when
   * the server cannot be reached. Any host will do: a list is believed for its signature.
   */
  revocationMirrorUrl?: string;
}

/** The answer of `check()`. */
export type LicenseCheck =
  | {
      status: 'valid';
      claims: LicenseTokenClaims;
      token: string;
      /** The token's `exp`: how long the app may run offline from now on. */
      until: Date;
      license: License;
      activation: Activation | null;
    }
  | {
      /** The server could not be reached; the stored token vouches until `until`. */
      status: 'offline';
      claims: LicenseTokenClaims;
      token: string;
      until: Date;
      /** Why the server was not asked (network error, timeout, 429, 5xx). */
      cause: Error;
    }
  | {
      status: 'refused';
      /**
       * The server's validate code (`NOT_FOUND`, `REVOKED`, `SUSPENDED`, `EXPIRED`,
       * `PRODUCT_MISMATCH`, `ENTITLEMENTS_MISSING`, `FINGERPRINT_NOT_ACTIVATED`, or an error code
       * such as `VALIDATION_FAILED`), or a local one: `token_invalid` (the server's token did not
       * verify), `no_offline_token`, `stored_token_invalid`, `offline_expired`, `clock_rollback`.
       * Offline, `REVOKED` or `SUSPENDED` also come from the newest signed revocation list.
       */
      code: string;
      detail: string;
      cause?: Error;
    };

/** The storage file. */
interface Stored {
  version: 1;
  /** SHA-256 of the normalised key: a stored token only ever vouches for the key it came with. */
  key_digest: string;
  token: string | null;
  jwks: JSONWebKeySet | null;
  /** Unix seconds: the latest verified `iat`, or local time seen at an offline check. */
  high_water_s: number;
  /** The newest signed revocation list accepted (verified when accepted; never an older seq). */
  revocations?: { seq: number; iat: number; jws: string } | null;
}

/** The file as read: `unreadable` when it was there but not ours to parse (edited, truncated). */
type Loaded = Stored & { unreadable?: boolean };

const JWKS_REFRESH_MS = 60_000;

export class LicenseGuard {
  private readonly o: LicenseGuardOptions;
  private readonly keyDigest: string;
  private readonly now: () => number;
  /** Keys fetched from the server in this run (trusted, unlike the stored copy). */
  private fetchedJwks: JSONWebKeySet | null = null;
  private lastFetchMs = -Infinity;

  constructor(options: LicenseGuardOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    const normalised = options.key.trim().toUpperCase().replace(/[-\s]/g, '');
    this.keyDigest = createHash('sha256').update(normalised).digest('hex');
  }

  /**
   * Validates the license: online when the server answers, else offline from the stored token.
   * Rejects only when `signal` aborts or the storage file cannot be written.
   */
  async check(options: { signal?: AbortSignal } = {}): Promise<LicenseCheck> {
    const stored = await this.load();
    const nonce = randomBytes(16).toString('hex');
    let answer;
    try {
      answer = await this.o.client.licenses.validate(
        {
          key: this.o.key,
          fingerprint: this.o.fingerprint,
          product: this.o.product,
          entitlements: this.o.entitlements,
          nonce,
        },
        { signal: options.signal },
      );
    } catch (e) {
      if (unreachable(e)) return this.offline(await this.updateLists(stored, false), e as Error);
      if (e instanceof EcosireError) return refused(e.code, e.message, e);
      throw e;
    }

    if (!answer.valid || !answer.token || !answer.license) {
      // The server said no: the stored token must not keep the app running offline.
      await this.save({ ...stored, token: null });
      return refused(answer.code, answer.detail);
    }
    let claims: LicenseTokenClaims;
    try {
      // The nonce proves this token fresh, so its times are checked against the server's clock
      // (its iat), not a local one that may be off: a wrong local clock must not refuse a
      // license the server just vouched for.
      const iat = decodeJwt(answer.token).iat ?? 0;
      claims = await this.verify(answer.token, stored, { nonce, currentDate: new Date(iat * 1000), online: true });
    } catch (e) {
      return refused('token_invalid', `the server's token did not verify: ${(e as Error).message}`, e as Error);
    }
    // The server's time is the truth: it also resets a mark pushed up by a local clock that ran fast.
    const next: Loaded = { ...stored, token: answer.token, high_water_s: claims.iat };
    await this.save(next);
    await this.updateLists(next, true);
    return {
      status: 'valid',
      claims,
      token: answer.token,
      until: new Date(claims.exp * 1000),
      license: answer.license,
      activation: answer.activation ?? null,
    };
  }

  private async offline(stored: Loaded, cause: Error): Promise<LicenseCheck> {
    if (stored.unreadable) {
      return refused('stored_token_invalid', 'the license storage file is not readable', cause);
    }
    if (!stored.token) {
      return refused('no_offline_token', 'the server is unreachable and no license token is stored', cause);
    }
    const nowS = Math.floor(this.now() / 1000);
    // The stored mark may have been edited down; the token's own iat is signed, so the mark is at
    // least that. A tampered iat can only make this check stricter, and the signature fails anyway.
    let tokenIat = 0;
    try {
      tokenIat = decodeJwt(stored.token).iat ?? 0;
    } catch {
      return refused('stored_token_invalid', 'the stored license token is not a JWT', cause);
    }
    const highWater = Math.max(stored.high_water_s, tokenIat);
    const tolerance = this.o.clockToleranceS ?? 300;
    if (nowS < highWater - tolerance) {
      return refused(
        'clock_rollback',
        `the clock (${new Date(nowS * 1000).toISOString()}) is behind a time already seen (${new Date(highWater * 1000).toISOString()})`,
        cause,
      );
    }
    let claims: LicenseTokenClaims;
    try {
      claims = await this.verify(stored.token, stored, { currentDate: new Date(nowS * 1000), online: false });
    } catch (e) {
      const expired = (e as { code?: string }).code === 'ERR_JWT_EXPIRED';
      return expired
        ? refused('offline_expired', 'the offline lease has ended: connect to the internet to renew it', cause)
        : refused('stored_token_invalid', `the stored license token did not verify: ${(e as Error).message}`, cause);
    }
    const listed = stored.revocations && storedRevocationClaims(stored.revocations.jws);
    const named = listed ? revocationListNames(listed, claims.sub) : null;
    if (named) {
      // Revocation is final: the token never counts again. A suspension lasts while lists name it.
      if (named === 'REVOKED') await this.save({ ...stored, token: null });
      const detail = `the license is ${named.toLowerCase()} in the signed revocation list (seq ${listed!.seq})`;
      return refused(named, detail, cause);
    }
    // Remember the latest time seen: turning the clock back behind an earlier offline check (to
    // just after iat, say, to stretch the lease) is then refused too.
    await this.save({ ...stored, high_water_s: Math.max(highWater, nowS) });
    return { status: 'offline', claims, token: stored.token, until: new Date(claims.exp * 1000), cause };
  }

  /**
   * Verifies a token with the trusted keys; on an unknown kid, asks the server for its JWKS again
   * (online, at most once a minute) and retries once.
   */
  private async verify(
    token: string,
    stored: Stored,
    opts: { nonce?: string; currentDate: Date; online: boolean },
  ): Promise<LicenseTokenClaims> {
    const check = (jwks: JSONWebKeySet) =>
      verifyLicenseToken(token, jwks, {
        issuer: this.o.issuer,
        nonce: opts.nonce,
        fingerprint: this.o.fingerprint,
        currentDate: opts.currentDate,
      }).then((claims) => {
        const missing = (this.o.entitlements ?? []).filter((e) => !claims.entitlements?.includes(e));
        if (missing.length) throw new Error(`the token lacks entitlements ${missing.join(', ')}`);
        return claims;
      });
    try {
      return await check(this.trustedKeys(stored));
    } catch (e) {
      const unknownKid = (e as { code?: string }).code === 'ERR_JWKS_NO_MATCHING_KEY';
      if (!unknownKid || !opts.online || this.now() - this.lastFetchMs < JWKS_REFRESH_MS) throw e;
    }
    this.lastFetchMs = this.now();
    this.fetchedJwks = (await this.o.client.licenses.jwks()) as JSONWebKeySet;
    stored.jwks = this.fetchedJwks;
    return check(this.trustedKeys(stored));
  }

  /**
   * Fetches the product's revocation list (from the server when `fromServer`, else only from the
   * mirror) and keeps it when it verifies with the trusted keys, is for the stored token's
   * product, has not expired and is newer than the one held. Failures leave the held list in force.
   */
  private async updateLists(stored: Loaded, fromServer: boolean): Promise<Loaded> {
    if (this.o.revocationLists === false || stored.unreadable || !stored.token) return stored;
    let product: string;
    try {
      product = String(decodeJwt(stored.token).product);
    } catch {
      return stored;
    }
    const sources: Array<() => Promise<string>> = [];
    if (fromServer) sources.push(() => this.o.client.licenses.revocations(this.o.product ?? product, { retries: 0 }));
    const mirror = this.o.revocationMirrorUrl;
    if (mirror) {
      sources.push(async () => {
        const res = await fetch(mirror, { signal: AbortSignal.timeout(10_000) });
        if (!res.ok) throw new Error(`HTTP ${res.status} from the revocation list mirror`);
        return res.text();
      });
    }
    for (const get of sources) {
      let claims;
      let jws: string;
      try {
        jws = (await get()).trim();
        claims = await verifyRevocationList(jws, this.trustedKeys(stored), {
          issuer: this.o.issuer,
          product,
          currentDate: new Date(this.now()),
        });
      } catch {
        continue;
      }
      const seen = stored.revocations;
      // Older than the list held (a stale mirror, a replay): refused; the same one: nothing new.
      if (seen && (claims.seq < seen.seq || (claims.seq === seen.seq && claims.iat <= seen.iat))) return stored;
      const next: Loaded = { ...stored, revocations: { seq: claims.seq, iat: claims.iat, jws } };
      await this.save(next);
      return next;
    }
    return stored;
  }

  private trustedKeys(stored: Stored): JSONWebKeySet {
    const base = this.o.jwks ?? (this.fetchedJwks ? null : stored.jwks);
    return { keys: [...(base?.keys ?? []), ...(this.fetchedJwks?.keys ?? [])] };
  }

  /** The storage file, or an empty state when it is missing, unreadable or for another key. */
  private async load(): Promise<Loaded> {
    const empty: Stored = {
      version: 1,
      key_digest: this.keyDigest,
      token: null,
      jwks: null,
      high_water_s: 0,
      revocations: null,
    };
    let text: string;
    try {
      text = await readFile(this.o.storagePath, 'utf8');
    } catch {
      return empty;
    }
    try {
      const s = JSON.parse(text) as Partial<Stored>;
      if (s.version !== 1 || s.key_digest !== this.keyDigest) return empty;
      // Keep the mark even from a file whose token is gone: it guards the clock all the same.
      return {
        ...empty,
        token: typeof s.token === 'string' ? s.token : null,
        jwks: s.jwks && Array.isArray(s.jwks.keys) ? s.jwks : null,
        high_water_s: typeof s.high_water_s === 'number' ? s.high_water_s : 0,
        revocations:
          s.revocations && typeof s.revocations.seq === 'number' && typeof s.revocations.jws === 'string'
            ? s.revocations
            : null,
      };
    } catch {
      // Refused offline (someone edited it), simply replaced by the next online check.
      return { ...empty, unreadable: true };
    }
  }

  private async save({ unreadable: _, ...s }: Loaded): Promise<void> {
    await mkdir(dirname(this.o.storagePath), { recursive: true });
    // Write then rename: a crash mid-write leaves the old file, never half of a new one.
    const tmp = `${this.o.storagePath}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(s, null, 2), { mode: 0o600 });
    await rename(tmp, this.o.storagePath);
  }
}

function refused(code: string, detail: string, cause?: Error): LicenseCheck {
  return { status: 'refused', code, detail, cause };
}

/** Failures that say nothing about the license: the server was not reached or not able. */
function unreachable(e: unknown): boolean {
  if (e instanceof EcosireNetworkError || e instanceof EcosireTimeoutError) return true;
  return e instanceof EcosireError && (e.status === 429 || e.status >= 500);
}
