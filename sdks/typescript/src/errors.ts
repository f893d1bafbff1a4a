import type { components } from './generated/schema.js';

export type Problem = components['schemas']['Problem'];
export type FieldError = components['schemas']['FieldError'];

/** What every error thrown by the SDK for a request carries. */
export abstract class EcosireRequestError extends Error {
  /** `GET`, `POST`, … */
  readonly method: string;
  /** The URL that was asked. */
  readonly url: string;
  constructor(message: string, method: string, url: string, options?: { cause?: unknown }) {
    super(message, options);
    this.method = method;
    this.url = url;
  }
}

/**
 * The server answered with an error: every 4xx/5xx of the API is an RFC 9457 problem body, and
 * these are its members (see the `Problem` schema). An answer that is not a problem body (a proxy's
 * HTML 502, say) still becomes an `EcosireError`, with `code` `HTTP_<status>`.
 */
export class EcosireError extends EcosireRequestError {
  override readonly name: string = 'EcosireError';
  /** The HTTP status. */
  readonly status: number;
  /** The stable SCREAMING_SNAKE code (`VALIDATION_FAILED`, `LICENSE_REVOKED`, …): branch on this. */
  readonly code: string;
  /** Field-level failures of a 422 `VALIDATION_FAILED`; empty otherwise. */
  readonly details: FieldError[];
  /** The request id (the `X-Request-Id` header, else the body's `request_id`): quote it to support. */
  readonly requestId: string | undefined;
  /** Seconds from `Retry-After` (429, 503), when the server sent one. */
  readonly retryAfterS: number | undefined;
  /** The whole problem body, when there was one. */
  readonly problem: Problem | undefined;

  constructor(init: {
    status: number;
    code: string;
    message: string;
    details?: FieldError[];
    requestId?: string;
    retryAfterS?: number;
    problem?: Problem;
    method: string;
    url: string;
  }) {
    super(init.message, init.method, init.url);
    this.status = init.status;
    this.code = init.code;
    this.details = init.details ?? [];
    this.requestId = init.requestId;
    this.retryAfterS = init.retryAfterS;
    this.problem = init.problem;
  }
}

/**
 * 409 `CHURN_LIMIT_REACHED`: the license has freed as many seats in the last 30 days as its
 * product allows (`max_deactivations_per_30d`). Nothing changed; `retryAt` is when the next
 * deactivation is possible (the problem's `retry_at`).
 */
export class EcosireChurnLimitError extends EcosireError {
  override readonly name: string = 'EcosireChurnLimitError';
  readonly retryAt: Date;
  constructor(init: ConstructorParameters<typeof EcosireError>[0]) {
    super(init);
    const at = init.problem?.retry_at;
    this.retryAt = at ? new Date(at) : new Date(Date.now() + (init.retryAfterS ?? 0) * 1000);
  }
}

/** No answer: the connection failed (refused, reset, DNS, TLS). `cause` is the underlying error. */
export class EcosireNetworkError extends EcosireRequestError {
  override readonly name = 'EcosireNetworkError';
}

/** No answer within `timeoutMs`. */
export class EcosireTimeoutError extends EcosireRequestError {
  override readonly name = 'EcosireTimeoutError';
  readonly timeoutMs: number;
  constructor(method: string, url: string, timeoutMs: number) {
    super(`${method} ${url} timed out after ${timeoutMs} ms`, method, url);
    this.timeoutMs = timeoutMs;
  }
}

/** Why `verifyWebhook` rejected a delivery. */
export type WebhookFailure = 'missing_header' | 'malformed_header' | 'stale' | 'mismatch';

/**
 * `verifyWebhook` rejected a delivery: answer it with 401 (the sender retries real deliveries,
 * and a forgery gets nothing).
 */
export class EcosireSignatureError extends Error {
  override readonly name = 'EcosireSignatureError';
  readonly reason: WebhookFailure;
  constructor(reason: WebhookFailure, message: string) {
    super(message);
    this.reason = reason;
  }
}
