// The transport under every namespace: URL building, credentials, timeouts, retries and the
// mapping of error answers to EcosireError. Namespaces call `call()` with a path of the OpenAPI
// document, so a path or a body that does not match the spec fails to compile.

import { EcosireChurnLimitError, EcosireError, EcosireNetworkError, EcosireTimeoutError, type Problem } from './errors.js';
import type { paths } from './generated/schema.js';
import { PageRequest, type Page } from './pagination.js';

export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';
export type ApiPath = keyof paths;

/** Per-call options, accepted as the last argument of every method. */
export interface RequestOptions {
  /** Aborts the call (retries included); the call rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Overrides the client's `timeoutMs` for each attempt of this call. */
  timeoutMs?: number;
  /** Overrides the client's `retries` for this call. */
  retries?: number;
  /** Extra request headers. */
  headers?: Record<string, string>;
}

export interface TransportOptions {
  baseUrl: string;
  apiKey?: string;
  token?: string;
  fetch?: typeof globalThis.fetch;
  timeoutMs?: number;
  retries?: number;
}

// Types of one operation of the spec, as openapi-typescript writes them.
type Op<P extends ApiPath, M extends HttpMethod> = NonNullable<paths[P][M & keyof paths[P]]>;
type JsonContent<R> = R extends { content: { 'application/json': infer T } } ? T : never;
type SuccessStatus = 200 | 201 | 202;
/** The JSON body of the operation's 2xx answers (`never` for 204: the call resolves to undefined). */
export type Ok<O> = O extends { responses: infer R }
  ? { [S in keyof R]: S extends SuccessStatus ? JsonContent<R[S]> : never }[keyof R]
  : never;
type JsonBody<O> = O extends { requestBody?: infer B } ? JsonContent<NonNullable<B>> : never;
type ItemOf<O> = Ok<O> extends { data: (infer T)[] } ? T : never;
type Params<O, Where extends 'path' | 'query'> = O extends { parameters: { [K in Where]?: infer Q } }
  ? Q
  : never;

export interface CallArgs<O> {
  params?: Params<O, 'path'>;
  query?: Params<O, 'query'>;
  body?: JsonBody<O>;
}

// POSTs the API makes idempotent (a repeated activate answers 200 with the same activation), so a
// retry after a lost answer cannot take a second seat or change anything. Other POSTs are never
// retried: a lost answer to "create" may mean it was created.
const IDEMPOTENT_POSTS: ReadonlySet<string> = new Set<ApiPath>([
  '/api/licenses/validate',
  '/api/licenses/activate',
  '/api/licenses/heartbeat',
]);
const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);
const RETRIED_STATUSES: ReadonlySet<number> = new Set([429, 502, 503, 504]);
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 8_000;
// A Retry-After longer than this (a daily quota resets at midnight) is not worth waiting in a
// call: the error is thrown at once with `retryAfterS` so the caller can schedule.
const MAX_RETRY_AFTER_MS = 60_000;

export class Transport {
  readonly baseUrl: string;
  readonly origin: string;
  apiKey: string | undefined;
  token: string | undefined;
  readonly timeoutMs: number;
  readonly retries: number;
  private readonly fetchImpl: typeof globalThis.fetch;

  constructor(o: TransportOptions) {
    this.baseUrl = o.baseUrl.replace(/\/+$/, '');
    this.origin = new URL(this.baseUrl).origin;
    this.apiKey = o.apiKey;
    this.token = o.token;
    this.timeoutMs = o.timeoutMs ?? 30_000;
    this.retries = o.retries ?? 2;
    const f = o.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new TypeError('no fetch: pass one in the options');
    // Called unbound, a browser's window.fetch throws "Illegal invocation".
    this.fetchImpl = f.bind(globalThis);
  }

  /** The URL of a spec path: `/api/…` hangs off `baseUrl`, anything else off its origin. */
  url(path: string, params?: object, query?: object): string {
    const filled = path.replace(/\{(\w+)\}/g, (_, name: string) => {
      const v = (params as Record<string, unknown> | undefined)?.[name];
      if (v === undefined || v === null || v === '') throw new TypeError(`missing path parameter ${name}`);
      return encodeURIComponent(String(v));
    });
    const base = filled.startsWith('/api/') ? this.baseUrl + filled.slice(4) : this.origin + filled;
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined && v !== null) search.append(k, String(v));
    }
    const qs = search.toString();
    return qs ? `${base}?${qs}` : base;
  }

  /** A list operation: a PageRequest that asks for one page per cursor. */
  page<P extends ApiPath>(
    path: P,
    args: CallArgs<Op<P, 'get'>> = {},
    options: RequestOptions = {},
  ): PageRequest<ItemOf<Op<P, 'get'>>> {
    type Query = CallArgs<Op<P, 'get'>>['query'];
    return new PageRequest((cursor) => {
      const query = { ...args.query, cursor } as Query;
      return this.call('get', path, { ...args, query }, options) as Promise<Page<ItemOf<Op<P, 'get'>>>>;
    });
  }

  /** One operation of the spec, typed by it. */
  call<P extends ApiPath, M extends HttpMethod>(
    method: M,
    path: P,
    args: CallArgs<Op<P, M>> = {},
    options: RequestOptions = {},
  ): Promise<Ok<Op<P, M>>> {
    return this.send(
      method.toUpperCase(),
      path,
      this.url(path, args.params, args.query),
      args.body === undefined ? undefined : JSON.stringify(args.body),
      'json',
      options,
    ) as Promise<Ok<Op<P, M>>>;
  }

  /**
   * Sends a request with retries. `expect` says how to read a 2xx body; a 204 always resolves to
   * undefined. `body` is sent as JSON unless `options.headers` names another content type.
   */
  async send(
    method: string,
    path: string,
    url: string,
    body: string | undefined,
    expect: 'json' | 'text',
    options: RequestOptions = {},
  ): Promise<unknown> {
    const retryable =
      IDEMPOTENT_METHODS.has(method) || (method === 'POST' && IDEMPOTENT_POSTS.has(path));
    const retries = retryable ? (options.retries ?? this.retries) : 0;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const headers = this.headers(body !== undefined, options.headers);
    for (let attempt = 0; ; attempt++) {
      options.signal?.throwIfAborted();
      let failure: EcosireRequestFailure;
      try {
        return await this.attempt(method, url, headers, body, expect, timeoutMs, options.signal);
      } catch (e) {
        if (!(e instanceof EcosireRequestFailure)) throw e;
        failure = e;
      }
      if (attempt >= retries || !failure.retry) throw failure.error;
      const retryAfterMs = failure.retryAfterS === undefined ? undefined : failure.retryAfterS * 1000;
      if (retryAfterMs !== undefined && retryAfterMs > MAX_RETRY_AFTER_MS) throw failure.error;
      await sleep(backoff(attempt, retryAfterMs), options.signal);
    }
  }

  private headers(hasBody: boolean, extra?: Record<string, string>): Record<string, string> {
    const h: Record<string, string> = { accept: 'application/json, application/problem+json' };
    if (hasBody) h['content-type'] = 'application/json';
    const credential = this.token ?? this.apiKey;
    if (credential) h.authorization = `Bearer ${credential}`;
    // Without a bearer credential a browser app rides on the session cookie, whose writes the
    // server accepts only with an allowed Origin or this header (CSRF protection).
    else h['x-requested-with'] = 'ecosire-sdk';
    return { ...h, ...extra };
  }

  /** One try: resolves with the body, or rejects with an EcosireRequestFailure. */
  private async attempt(
    method: string,
    url: string,
    headers: Record<string, string>,
    body: string | undefined,
    expect: 'json' | 'text',
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const timeout = AbortSignal.timeout(timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    // The body is read under the same signals: a server that stalls mid-body times out too.
    try {
      const res = await this.fetchImpl(url, { method, headers, body, signal: combined });
      if (!res.ok) throw await EcosireRequestFailure.fromResponse(res, method, url);
      if (res.status === 204) return undefined;
      const text = await res.text();
      if (expect === 'text') return text;
      if (text === '') return undefined;
      try {
        return JSON.parse(text);
      } catch {
        const message = `${method} ${url}: the answer is not JSON`;
        const error = new EcosireError({ status: res.status, code: 'INVALID_RESPONSE', message, method, url });
        throw new EcosireRequestFailure(error, false);
      }
    } catch (e) {
      if (e instanceof EcosireRequestFailure) throw e;
      if (signal?.aborted) throw signal.reason;
      if (timeout.aborted) {
        throw new EcosireRequestFailure(new EcosireTimeoutError(method, url, timeoutMs), true);
      }
      // fetch rejects with a TypeError ("fetch failed") whose cause names the socket error.
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (e as Error).message;
      throw new EcosireRequestFailure(
        new EcosireNetworkError(`${method} ${url} failed: ${why}`, method, url, { cause: e }),
        true,
      );
    }
  }
}

/** Internal: a failed attempt, with whether it may be retried and when. */
class EcosireRequestFailure {
  constructor(
    readonly error: Error,
    readonly retry: boolean,
    readonly retryAfterS?: number,
  ) {}

  static async fromResponse(res: Response, method: string, url: string): Promise<EcosireRequestFailure> {
    const text = await res.text().catch(() => '');
    let problem: Problem | undefined;
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === 'object' && typeof (parsed as Problem).code === 'string') {
        problem = parsed as Problem;
      }
    } catch {
      // Not JSON: an answer from something in front of the server.
    }
    const retryAfterS = parseRetryAfter(res.headers.get('retry-after'));
    const Kind = problem?.code === 'CHURN_LIMIT_REACHED' ? EcosireChurnLimitError : EcosireError;
    const error = new Kind({
      status: res.status,
      code: problem?.code ?? `HTTP_${res.status}`,
      message: problem?.message ?? problem?.detail ?? (res.statusText || `HTTP ${res.status}`),
      details: problem?.details ?? undefined,
      requestId: res.headers.get('x-request-id') ?? problem?.request_id ?? undefined,
      retryAfterS,
      problem,
      method,
      url,
    });
    return new EcosireRequestFailure(error, RETRIED_STATUSES.has(res.status), retryAfterS);
  }
}

/** `Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
function parseRetryAfter(v: string | null): number | undefined {
  if (v === null) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/**
 * Full jitter (a uniform wait between 0 and the exponential ceiling) spreads clients that failed
 * together, so they do not come back together. A `Retry-After` is the earliest moment the server
 * will take the request: wait that, plus a little jitter for the same reason.
 */
function backoff(attempt: number, retryAfterMs: number | undefined): number {
  if (retryAfterMs !== undefined) return retryAfterMs + Math.random() * BACKOFF_BASE_MS;
  return Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
