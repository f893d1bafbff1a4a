// The client: one namespace per module of the API, one method per operation of the OpenAPI
// document. Signatures name the schema types; the transport checks each against the spec's own
// operation types, so a method that drifts from the server fails to compile.

import type { components } from './generated/schema.js';
import { Transport, type RequestOptions } from './http.js';
import type { PageRequest } from './pagination.js';

type S = components['schemas'];
export type License = S['License'];
export type Activation = S['Activation'];
export type Metadata = S['Metadata'];
export type Product = S['Product'];
export type User = S['User'];
export type ApiKey = S['ApiKey'];
export type CreatedApiKey = S['CreatedApiKey'];
export type KeyUsage = S['KeyUsage'];
export type WebhookEndpoint = S['WebhookEndpoint'];
export type Delivery = S['Delivery'];
export type Notice = S['Notice'];
export type EventCatalog = S['EventCatalog'];
export type Order = S['Order'];
export type Subscription = S['Subscription'];
export type Contact = S['Contact'];
export type Lead = S['Lead'];
export type Ticket = S['Ticket'];
export type TicketWithReplies = S['TicketWithReplies'];
export type TicketCreated = S['TicketCreated'];
export type Reply = S['Reply'];
export type Subscriber = S['Subscriber'];
export type Subscribed = S['Subscribed'];
export type AlreadySubscribed = S['AlreadySubscribed'];
export type Answer = S['Answer'];
export type AuditRecord = S['AuditRecord'];
export type Health = S['Health'];
export type Readiness = S['Readiness'];
export type Jwk = S['Jwk'];
export type Jwks = S['Jwks'];
export type ValidateRequest = S['ValidateRequest'];
export type ValidateResponse = S['ValidateResponse'];
export type ActivateRequest = S['ActivateRequest'];
export type ActivationResponse = S['ActivationResponse'];
export type DeviceRequest = S['DeviceRequest'];
export type HeartbeatResponse = S['HeartbeatResponse'];
export type ActivationList = S['ActivationList'];
export type LoginRequest = S['LoginRequest'];
export type LoginResponse = S['LoginResponse'];
export type MeResponse = S['MeResponse'];
export type RegisterRequest = S['RegisterRequest'];
export type Accepted = S['Accepted'];
export type CreateLicense = S['CreateLicense'];
export type UpdateLicense = S['UpdateLicense'];
export type LicenseEnvelope = S['LicenseEnvelope'];
export type RenewRequest = S['RenewRequest'];
export type CreateProduct = S['CreateProduct'];
export type UpdateProduct = S['UpdateProduct'];
export type CreateApiKey = S['CreateApiKey'];
export type CreateEndpoint = S['CreateEndpoint'];
export type UpdateEndpoint = S['UpdateEndpoint'];
export type PatchUser = S['PatchUser'];
export type UserEnvelope = S['UserEnvelope'];
export type CreateContact = S['CreateContact'];
export type UpdateContact = S['UpdateContact'];
export type CaptureLead = S['CaptureLead'];
export type CreateTicket = S['CreateTicket'];
export type UpdateTicket = S['UpdateTicket'];
export type CreateReply = S['CreateReply'];
export type StripeAck = S['StripeAck'];
export type OfflineActivationResponse = S['OfflineActivationResponse'];
export type Churn = S['Churn'];

/** `limit` (1–100) and `cursor`, the parameters every list takes. */
export interface PageParams {
  limit?: number;
  cursor?: string;
}
export type LicenseFilters = PageParams & { user_id?: string; product_id?: string; status?: License['status'] };
export type SearchParams = PageParams & { q?: string };

export interface ClientOptions {
  /** The API root, `/api` included: `https://api.example.com/api`. */
  baseUrl: string;
  /** An API key (`ecos_live_…`), sent as a bearer token. */
  apiKey?: string;
  /** A session JWT, sent as a bearer token (login sets it); it wins over `apiKey`. */
  token?: string;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof globalThis.fetch;
  /** Per attempt, in milliseconds (default 30 000). */
  timeoutMs?: number;
  /** Retries of retryable failures (default 2); see README "Retries". */
  retries?: number;
}

type O = RequestOptions;

export class EcosireClient {
  private readonly t: Transport;
  readonly auth: Auth;
  readonly licenses: Licenses;
  readonly activations: Activations;
  readonly products: Products;
  readonly apiKeys: ApiKeys;
  readonly webhookEndpoints: WebhookEndpoints;
  readonly webhooks: Webhooks;
  readonly orders: Orders;
  readonly subscriptions: Subscriptions;
  readonly users: Users;
  readonly contacts: Contacts;
  readonly crm: Crm;
  readonly support: Support;
  readonly newsletter: Newsletter;
  readonly ask: Ask;
  readonly audit: Audit;
  readonly ops: Ops;

  constructor(options: ClientOptions) {
    this.t = new Transport(options);
    this.auth = new Auth(this.t);
    this.licenses = new Licenses(this.t);
    this.activations = new Activations(this.t);
    this.products = new Products(this.t);
    this.apiKeys = new ApiKeys(this.t);
    this.webhookEndpoints = new WebhookEndpoints(this.t);
    this.webhooks = new Webhooks(this.t);
    this.orders = new Orders(this.t);
    this.subscriptions = new Subscriptions(this.t);
    this.users = new Users(this.t);
    this.contacts = new Contacts(this.t);
    this.crm = new Crm(this.t);
    this.support = new Support(this.t);
    this.newsletter = new Newsletter(this.t);
    this.ask = new Ask(this.t);
    this.audit = new Audit(this.t);
    this.ops = new Ops(this.t);
  }

  /** The session token the client sends (set by `auth.login`, cleared by `auth.logout`). */
  get token(): string | undefined {
    return this.t.token;
  }
  set token(token: string | undefined) {
    this.t.token = token;
  }
}

/** Base of the namespaces: they share the client's transport. */
abstract class Namespace {
  constructor(protected readonly t: Transport) {}
}

export class Auth extends Namespace {
  /** Creates a customer account (403 REGISTRATION_CLOSED when the server closed registration). */
  register(body: RegisterRequest, o?: O): Promise<MeResponse> {
    return this.t.call('post', '/api/auth/register', { body }, o);
  }
  /** Logs in; later calls of this client carry the session token. */
  async login(body: LoginRequest, o?: O): Promise<LoginResponse> {
    const res: LoginResponse = await this.t.call('post', '/api/auth/login', { body }, o);
    this.t.token = res.token;
    return res;
  }
  /** Ends the session server-side; the client stops sending its token. */
  async logout(o?: O): Promise<void> {
    await this.t.call('post', '/api/auth/logout', {}, o);
    this.t.token = undefined;
  }
  me(o?: O): Promise<MeResponse> {
    return this.t.call('get', '/api/auth/me', {}, o);
  }
  /** Sends a new verification link to the signed-in user's address. */
  verifyEmail(o?: O): Promise<Accepted> {
    return this.t.call('post', '/api/auth/verify-email', {}, o);
  }
  /** Confirms an address with the token from the verification link. */
  confirmEmail(body: { token: string }, o?: O): Promise<void> {
    return this.t.call('post', '/api/auth/verify-email/confirm', { body }, o);
  }
  /** Mails a reset link when the address has an account (the answer is the same either way). */
  requestPasswordReset(body: { email: string }, o?: O): Promise<Accepted> {
    return this.t.call('post', '/api/auth/password-reset', { body }, o);
  }
  /** Sets a new password with the token from a reset or invitation link; ends every session. */
  resetPassword(body: { token: string; password: string }, o?: O): Promise<void> {
    return this.t.call('post', '/api/auth/password-reset/confirm', { body }, o);
  }
  /** Changes the signed-in user's password (session only); ends the user's other sessions. */
  changePassword(body: { current_password: string; new_password: string }, o?: O): Promise<void> {
    return this.t.call('post', '/api/auth/password', { body }, o);
  }
}

export class Licenses extends Namespace {
  /** The hot path: always 200 for a well-formed request; `valid`, `code` and `token` say the rest. */
  validate(body: ValidateRequest, o?: O): Promise<ValidateResponse> {
    return this.t.call('post', '/api/licenses/validate', { body }, o);
  }
  /** Takes a seat for a fingerprint (201), or returns the live one for it (200). */
  activate(body: ActivateRequest, o?: O): Promise<ActivationResponse> {
    return this.t.call('post', '/api/licenses/activate', { body }, o);
  }
  /** Frees the fingerprint's seat. */
  deactivate(body: DeviceRequest, o?: O): Promise<void> {
    return this.t.call('post', '/api/licenses/deactivate', { body }, o);
  }
  heartbeat(body: DeviceRequest, o?: O): Promise<HeartbeatResponse> {
    return this.t.call('post', '/api/licenses/heartbeat', { body }, o);
  }
  /** The public keys that verify license tokens (`/api/licenses/jwks`). */
  jwks(o?: O): Promise<Jwks> {
    return this.t.call('get', '/api/licenses/jwks', {}, o);
  }
  /**
   * The product's signed revocation list: a compact JWS (check it with `verifyRevocationList`),
   * the same bytes a mirror of this URL serves.
   */
  async revocations(product: string, o: O = {}): Promise<string> {
    const path = '/api/licenses/revocations';
    return (await this.t.send('GET', path, this.t.url(path, undefined, { product }), undefined, 'text', o)) as string;
  }
  /** The same keys at `/.well-known/jwks.json` on the API's origin. */
  wellKnownJwks(o?: O): Promise<Jwks> {
    return this.t.call('get', '/.well-known/jwks.json', {}, o);
  }
  create(body: CreateLicense, o?: O): Promise<License> {
    return this.t.call('post', '/api/licenses', { body }, o);
  }
  list(query?: LicenseFilters, o?: O): PageRequest<License> {
    return this.t.page('/api/licenses', { query }, o);
  }
  get(id: string, o?: O): Promise<License> {
    return this.t.call('get', '/api/licenses/{id}', { params: { id } }, o);
  }
  update(id: string, body: UpdateLicense, o?: O): Promise<License> {
    return this.t.call('patch', '/api/licenses/{id}', { params: { id }, body }, o);
  }
  revoke(id: string, body: { reason?: string } = {}, o?: O): Promise<LicenseEnvelope> {
    return this.t.call('post', '/api/licenses/{id}/revoke', { params: { id }, body }, o);
  }
  suspend(id: string, o?: O): Promise<LicenseEnvelope> {
    return this.t.call('post', '/api/licenses/{id}/suspend', { params: { id } }, o);
  }
  reinstate(id: string, o?: O): Promise<LicenseEnvelope> {
    return this.t.call('post', '/api/licenses/{id}/reinstate', { params: { id } }, o);
  }
  renew(id: string, body: RenewRequest, o?: O): Promise<LicenseEnvelope> {
    return this.t.call('post', '/api/licenses/{id}/renew', { params: { id }, body }, o);
  }
  /** A new key for the license; the old one answers NOT_FOUND at once. */
  reissue(id: string, o?: O): Promise<LicenseEnvelope> {
    return this.t.call('post', '/api/licenses/{id}/reissue', { params: { id } }, o);
  }
  /**
   * Air-gapped activation: sends an activation request made offline (`requestOfflineActivation`)
   * and returns the license file for that machine (201 new seat, 200 lease renewed). The license
   * key inside the request is the credential.
   */
  activateOffline(body: { request: string }, o?: O): Promise<OfflineActivationResponse> {
    return this.t.call('post', '/api/licenses/offline-activations', { body }, o);
  }
  /** Frees an air-gapped device's seat with the proof its device key signed (`createDeactivationProof`). */
  deactivateOffline(body: { proof: string }, o?: O): Promise<void> {
    return this.t.call('post', '/api/licenses/offline-deactivations', { body }, o);
  }
  /** Resets the license's churn budget (admin; audited). */
  resetChurn(id: string, o?: O): Promise<LicenseEnvelope> {
    return this.t.call('post', '/api/licenses/{id}/churn/reset', { params: { id } }, o);
  }
}

export class Activations extends Namespace {
  /** A license's live activations (admin or owner), in one page: they are at most its seats. */
  list(licenseId: string, o?: O): PageRequest<Activation> {
    return this.t.page('/api/licenses/{id}/activations', { params: { id: licenseId } }, o);
  }
  /** The live activations of a key, for its holder (no credentials: the key is the credential). */
  listByKey(body: { key: string }, o?: O): Promise<ActivationList> {
    return this.t.call('post', '/api/licenses/activations', { body }, o);
  }
  delete(id: string, o?: O): Promise<void> {
    return this.t.call('delete', '/api/activations/{id}', { params: { id } }, o);
  }
}

export class Products extends Namespace {
  create(body: CreateProduct, o?: O): Promise<Product> {
    return this.t.call('post', '/api/products', { body }, o);
  }
  list(query?: PageParams, o?: O): PageRequest<Product> {
    return this.t.page('/api/products', { query }, o);
  }
  /** By id or slug. */
  get(id: string, o?: O): Promise<Product> {
    return this.t.call('get', '/api/products/{id}', { params: { id } }, o);
  }
  update(id: string, body: UpdateProduct, o?: O): Promise<Product> {
    return this.t.call('patch', '/api/products/{id}', { params: { id }, body }, o);
  }
  delete(id: string, o?: O): Promise<void> {
    return this.t.call('delete', '/api/products/{id}', { params: { id } }, o);
  }
}

export class ApiKeys extends Namespace {
  /** The answer is the only one that shows the whole key. */
  create(body: CreateApiKey, o?: O): Promise<CreatedApiKey> {
    return this.t.call('post', '/api/api-keys', { body }, o);
  }
  list(query?: PageParams, o?: O): PageRequest<ApiKey> {
    return this.t.page('/api/api-keys', { query }, o);
  }
  get(id: string, o?: O): Promise<ApiKey> {
    return this.t.call('get', '/api/api-keys/{id}', { params: { id } }, o);
  }
  /** Revokes the key at once. */
  revoke(id: string, o?: O): Promise<void> {
    return this.t.call('delete', '/api/api-keys/{id}', { params: { id } }, o);
  }
  /** A new key; the old one keeps working for the server's grace period. */
  rotate(id: string, o?: O): Promise<CreatedApiKey> {
    return this.t.call('post', '/api/api-keys/{id}/rotate', { params: { id } }, o);
  }
  /** Requests and errors per UTC day, oldest first, every day of the window (`days` 1–90,
   * default 30). */
  usage(id: string, query?: { days?: number }, o?: O): Promise<KeyUsage> {
    return this.t.call('get', '/api/api-keys/{id}/usage', { params: { id }, query }, o);
  }
}

export class WebhookEndpoints extends Namespace {
  /** The answer is the only one that shows the signing secret. */
  create(body: CreateEndpoint, o?: O): Promise<WebhookEndpoint> {
    return this.t.call('post', '/api/webhook-endpoints', { body }, o);
  }
  list(query?: PageParams, o?: O): PageRequest<WebhookEndpoint> {
    return this.t.page('/api/webhook-endpoints', { query }, o);
  }
  get(id: string, o?: O): Promise<WebhookEndpoint> {
    return this.t.call('get', '/api/webhook-endpoints/{id}', { params: { id } }, o);
  }
  update(id: string, body: UpdateEndpoint, o?: O): Promise<WebhookEndpoint> {
    return this.t.call('patch', '/api/webhook-endpoints/{id}', { params: { id }, body }, o);
  }
  delete(id: string, o?: O): Promise<void> {
    return this.t.call('delete', '/api/webhook-endpoints/{id}', { params: { id } }, o);
  }
  /** Sends a `webhook.test` event to the endpoint. */
  test(id: string, o?: O): Promise<Delivery> {
    return this.t.call('post', '/api/webhook-endpoints/{id}/test', { params: { id } }, o);
  }
  deliveries(id: string, query?: PageParams, o?: O): PageRequest<Delivery> {
    return this.t.page('/api/webhook-endpoints/{id}/deliveries', { params: { id }, query }, o);
  }
  retryDelivery(id: string, deliveryId: string, o?: O): Promise<Delivery> {
    return this.t.call(
      'post',
      '/api/webhook-endpoints/{id}/deliveries/{delivery_id}/retry',
      { params: { id, delivery_id: deliveryId } },
      o,
    );
  }
}

export class Webhooks extends Namespace {
  /** Every event type with a description and an example delivery body. */
  events(o?: O): Promise<EventCatalog> {
    return this.t.call('get', '/api/webhooks/events', {}, o);
  }
  /** Notices about endpoints (e.g. disabled after failing for days). */
  notices(query?: PageParams, o?: O): PageRequest<Notice> {
    return this.t.page('/api/webhooks/notices', { query }, o);
  }
  /**
   * Forwards a Stripe event exactly as Stripe sent it (raw body and `Stripe-Signature`), e.g. from
   * a relay; the server verifies the signature over these bytes.
   */
  async stripe(rawBody: string, signature: string, o: O = {}): Promise<StripeAck> {
    const path = '/api/webhooks/stripe';
    const headers = { ...o.headers, 'stripe-signature': signature };
    return (await this.t.send('POST', path, this.t.url(path), rawBody, 'json', { ...o, headers })) as StripeAck;
  }
}

export class Orders extends Namespace {
  list(query?: PageParams, o?: O): PageRequest<Order> {
    return this.t.page('/api/orders', { query }, o);
  }
  get(id: string, o?: O): Promise<Order> {
    return this.t.call('get', '/api/orders/{id}', { params: { id } }, o);
  }
}

export class Subscriptions extends Namespace {
  list(query?: PageParams, o?: O): PageRequest<Subscription> {
    return this.t.page('/api/subscriptions', { query }, o);
  }
  get(id: string, o?: O): Promise<Subscription> {
    return this.t.call('get', '/api/subscriptions/{id}', { params: { id } }, o);
  }
}

export class Users extends Namespace {
  list(query?: PageParams, o?: O): PageRequest<User> {
    return this.t.page('/api/users', { query }, o);
  }
  get(id: string, o?: O): Promise<User> {
    return this.t.call('get', '/api/users/{id}', { params: { id } }, o);
  }
  /** Name, role, plan, disabled (admin); 409 LAST_ADMIN protects the last active admin. */
  update(id: string, body: PatchUser, o?: O): Promise<UserEnvelope> {
    return this.t.call('patch', '/api/users/{id}', { params: { id }, body }, o);
  }
  /** Erases the user's personal data and credentials; licenses and orders stay. */
  delete(id: string, o?: O): Promise<void> {
    return this.t.call('delete', '/api/users/{id}', { params: { id } }, o);
  }
}

export class Contacts extends Namespace {
  create(body: CreateContact, o?: O): Promise<Contact> {
    return this.t.call('post', '/api/contacts', { body }, o);
  }
  /** `q` searches names, emails and companies. */
  list(query?: SearchParams, o?: O): PageRequest<Contact> {
    return this.t.page('/api/contacts', { query }, o);
  }
  get(id: string, o?: O): Promise<Contact> {
    return this.t.call('get', '/api/contacts/{id}', { params: { id } }, o);
  }
  update(id: string, body: UpdateContact, o?: O): Promise<Contact> {
    return this.t.call('patch', '/api/contacts/{id}', { params: { id }, body }, o);
  }
  delete(id: string, o?: O): Promise<void> {
    return this.t.call('delete', '/api/contacts/{id}', { params: { id } }, o);
  }
}

export class Crm extends Namespace {
  /** The public lead form: records a lead and upserts its contact. */
  capture(body: CaptureLead, o?: O): Promise<Lead> {
    return this.t.call('post', '/api/crm/capture', { body }, o);
  }
  leads(query?: PageParams, o?: O): PageRequest<Lead> {
    return this.t.page('/api/crm/leads', { query }, o);
  }
}

export class Support extends Namespace {
  /** Opens a ticket (public; signed-in customers see it among their own). */
  open(body: CreateTicket, o?: O): Promise<TicketCreated> {
    return this.t.call('post', '/api/support', { body }, o);
  }
  list(query?: PageParams, o?: O): PageRequest<Ticket> {
    return this.t.page('/api/support/tickets', { query }, o);
  }
  get(id: string, o?: O): Promise<TicketWithReplies> {
    return this.t.call('get', '/api/support/tickets/{id}', { params: { id } }, o);
  }
  update(id: string, body: UpdateTicket, o?: O): Promise<Ticket> {
    return this.t.call('patch', '/api/support/tickets/{id}', { params: { id }, body }, o);
  }
  reply(id: string, body: CreateReply, o?: O): Promise<Reply> {
    return this.t.call('post', '/api/support/tickets/{id}/replies', { params: { id }, body }, o);
  }
}

export class Newsletter extends Namespace {
  /** 201 with `unsubscribe_token` for a new address; 200 without it when already subscribed. */
  subscribe(body: { email: string }, o?: O): Promise<Subscribed | AlreadySubscribed> {
    return this.t.call('post', '/api/newsletter/subscribe', { body }, o);
  }
  unsubscribe(body: { token: string }, o?: O): Promise<void> {
    return this.t.call('post', '/api/newsletter/unsubscribe', { body }, o);
  }
  subscribers(query?: PageParams, o?: O): PageRequest<Subscriber> {
    return this.t.page('/api/newsletter/subscribers', { query }, o);
  }
}

export class Ask extends Namespace {
  /** Answers a question from the service's documentation and FAQ, with its sources. */
  answer(body: { question: string }, o?: O): Promise<Answer> {
    return this.t.call('post', '/api/ecosire-ai/ask', { body }, o);
  }
}

export class Audit extends Namespace {
  list(query?: PageParams, o?: O): PageRequest<AuditRecord> {
    return this.t.page('/api/audit-log', { query }, o);
  }
}

/** Operations: liveness, readiness, metrics. */
export class Ops extends Namespace {
  health(o?: O): Promise<Health> {
    return this.t.call('get', '/api/health', {}, o);
  }
  /** Rejects with EcosireError 503 DATABASE_UNAVAILABLE (with `problem.cause`) when not ready. */
  ready(o?: O): Promise<Readiness> {
    return this.t.call('get', '/api/ready', {}, o);
  }
  /** The Prometheus exposition text. */
  async metrics(o?: O): Promise<string> {
    const path = '/metrics';
    return (await this.t.send('GET', path, this.t.url(path), undefined, 'text', o)) as string;
  }
}
