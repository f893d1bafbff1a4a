import { createHmac, timingSafeEqual } from 'node:crypto';

import { EcosireSignatureError } from './errors.js';

/** The body of every outbound event (`data.object` depends on `type`; see the event catalog). */
export interface WebhookEvent<T = Record<string, unknown>> {
  id: string;
  object: 'event';
  type: string;
  /** Unix seconds. */
  created: number;
  data: { object: T };
}

export interface VerifyWebhookOptions {
  /** How far `t` may be from now, either way, in seconds (default 300). */
  toleranceS?: number;
  /** Now, in unix seconds (default: the system clock). */
  now?: number;
}

/**
 * Verifies an `X-License-Signature` header (`t=<unix>,v1=<hex>`) over the raw request body and
 * returns the parsed event; throws `EcosireSignatureError` otherwise (answer 401).
 *
 * `rawBody` must be the bytes as received: a body parsed and re-serialised (e.g. after
 * `express.json()`) no longer matches. The signature is HMAC-SHA256 of `"{t}.{raw body}"` keyed
 * with the whole `whsec_…` string; any `v1` may match (a secret being rolled sends several).
 */
export function verifyWebhook<T = Record<string, unknown>>(
  rawBody: string | Uint8Array,
  header: string | string[] | null | undefined,
  secret: string,
  options: VerifyWebhookOptions = {},
): WebhookEvent<T> {
  if (typeof rawBody !== 'string' && !(rawBody instanceof Uint8Array)) {
    throw new TypeError('verifyWebhook needs the raw body (string or bytes), not a parsed object');
  }
  // Node's req.headers types every header as possibly repeated; repeated ones are one list.
  if (Array.isArray(header)) header = header.join(',');
  if (!header) throw new EcosireSignatureError('missing_header', 'no X-License-Signature header');
  let t: number | undefined;
  const candidates: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k === 't' && /^\d+$/.test(v)) t = Number(v);
    else if (k === 'v1') candidates.push(v);
  }
  if (t === undefined || candidates.length === 0) {
    throw new EcosireSignatureError('malformed_header', 'the signature header needs t= and v1=');
  }

  const body = typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : Buffer.from(rawBody);
  const expected = createHmac('sha256', secret).update(`${t}.`).update(body).digest();
  // Compare digests, not hex strings: equal lengths for timingSafeEqual, and a non-hex or short
  // candidate is simply no match.
  const matches = candidates.some((hex) => {
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) return false;
    return timingSafeEqual(Buffer.from(hex, 'hex'), expected);
  });
  if (!matches) throw new EcosireSignatureError('mismatch', 'no v1 signature matches');

  // Checked after the signature, as the server does, and both ways: a far-future `t` must not
  // extend a captured delivery's life.
  const now = options.now ?? Math.floor(Date.now() / 1000);
  const tolerance = options.toleranceS ?? 300;
  if (Math.abs(now - t) > tolerance) {
    throw new EcosireSignatureError('stale', `signed at ${t}, more than ${tolerance} s from now`);
  }
  return JSON.parse(body.toString('utf8')) as WebhookEvent<T>;
}
