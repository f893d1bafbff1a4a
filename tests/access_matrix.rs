mod common;

// Who may call what: every operation of the OpenAPI document is looked up in `POLICIES` and
// called as each kind of principal. A route without a policy fails the test: give it one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use axum::http::Method;
use common::TestApp;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Nobody is refused (never 401/403), whatever credentials come along.
    Public,
    /// Any signed-in caller; read-only keys only for reads.
    Authenticated,
    /// An object of the caller's own (a license, an activation): others get 404, admins pass.
    Owner,
    /// Admin sessions and admin-scoped keys; an admin's read-only key for reads.
    AdminOnly,
    /// Sessions and admin-scoped keys (API-key management).
    KeyManagement,
    /// A signed-in person, never an API key (changing the password).
    SessionOnly,
    /// Stripe's signature is the only credential: whoever calls without it gets 401
    /// `INVALID_SIGNATURE`, and no session or key changes that.
    StripeSigned,
}

use Policy::*;

/// "METHOD /path/{param}" → policy. Every operation in `ecosire::openapi()` must be here.
const POLICIES: &[(&str, Policy)] = &[
    // The license hot path: the license key is the credential.
    ("POST /api/licenses/validate", Public),
    ("POST /api/licenses/activate", Public),
    ("POST /api/licenses/deactivate", Public),
    ("POST /api/licenses/heartbeat", Public),
    ("POST /api/licenses/activations", Public),
    // Air-gapped activation: the license key in the request, the device's signature on the proof.
    ("POST /api/licenses/offline-activations", Public),
    ("POST /api/licenses/offline-deactivations", Public),
    ("GET /api/licenses/jwks", Public),
    ("GET /.well-known/jwks.json", Public),
    ("GET /api/licenses/revocations", Public),
    // Catalog, accounts, operations.
    ("GET /api/products", Public),
    ("GET /api/products/{id}", Public),
    ("POST /api/auth/register", Public),
    ("POST /api/auth/login", Public),
    // Browser navigations of the sign-in through an identity provider (404 without one).
    ("GET /api/auth/oidc/login", Public),
    ("GET /api/auth/oidc/callback", Public),
    ("GET /", Public),
    ("GET /api/health", Public),
    ("GET /metrics", Public),
    ("GET /api/ready", Public),
    ("POST /api/auth/logout", Authenticated),
    ("GET /api/auth/me", Authenticated),
    ("POST /api/auth/verify-email", Authenticated),
    ("POST /api/auth/password", SessionOnly),
    // Emailed links and the reset request: the token, or nothing, is the credential.
    ("POST /api/auth/verify-email/confirm", Public),
    ("POST /api/auth/password-reset", Public),
    ("POST /api/auth/password-reset/confirm", Public),
    ("GET /api/licenses", Authenticated),
    ("GET /api/orders", Authenticated),
    ("GET /api/subscriptions", Authenticated),
    // Customers' own objects.
    ("GET /api/licenses/{id}", Owner),
    ("GET /api/licenses/{id}/activations", Owner),
    ("DELETE /api/activations/{id}", Owner),
    ("GET /api/orders/{id}", Owner),
    ("GET /api/subscriptions/{id}", Owner),
    // Administration.
    ("POST /api/licenses", AdminOnly),
    ("PATCH /api/licenses/{id}", AdminOnly),
    ("POST /api/licenses/{id}/revoke", AdminOnly),
    ("POST /api/licenses/{id}/suspend", AdminOnly),
    ("POST /api/licenses/{id}/reinstate", AdminOnly),
    ("POST /api/licenses/{id}/renew", AdminOnly),
    ("POST /api/licenses/{id}/reissue", AdminOnly),
    ("POST /api/licenses/{id}/churn/reset", AdminOnly),
    ("POST /api/products", AdminOnly),
    ("PATCH /api/products/{id}", AdminOnly),
    ("DELETE /api/products/{id}", AdminOnly),
    ("GET /api/users", AdminOnly),
    ("GET /api/users/{id}", AdminOnly),
    ("PATCH /api/users/{id}", AdminOnly),
    ("DELETE /api/users/{id}", AdminOnly),
    ("GET /api/audit-log", AdminOnly),
    // API keys.
    ("POST /api/api-keys", KeyManagement),
    ("GET /api/api-keys", KeyManagement),
    ("GET /api/api-keys/{id}", KeyManagement),
    ("DELETE /api/api-keys/{id}", KeyManagement),
    ("POST /api/api-keys/{id}/rotate", KeyManagement),
    ("GET /api/api-keys/{id}/usage", KeyManagement),
    // Webhooks: Stripe's are signed; the event catalog is public, endpoints and notices are
    // admin-only.
    ("POST /api/webhooks/stripe", StripeSigned),
    ("GET /api/webhooks/events", Public),
    ("GET /api/webhooks/notices", AdminOnly),
    ("POST /api/webhook-endpoints", AdminOnly),
    ("GET /api/webhook-endpoints", AdminOnly),
    ("GET /api/webhook-endpoints/{id}", AdminOnly),
    ("PATCH /api/webhook-endpoints/{id}", AdminOnly),
    ("DELETE /api/webhook-endpoints/{id}", AdminOnly),
    ("POST /api/webhook-endpoints/{id}/test", AdminOnly),
    ("GET /api/webhook-endpoints/{id}/deliveries", AdminOnly),
    (
        "POST /api/webhook-endpoints/{id}/deliveries/{delivery_id}/retry",
        AdminOnly,
    ),
    // Secondary modules: public forms, admin-only address book and lists; support tickets are
    // their customer's own (tickets opened while signed in, or with the account's email).
    ("POST /api/crm/capture", Public),
    ("POST /api/support", Public),
    ("POST /api/newsletter/subscribe", Public),
    ("POST /api/newsletter/unsubscribe", Public),
    ("POST /api/ecosire-ai/ask", Public),
    ("GET /api/support/tickets", Authenticated),
    ("GET /api/support/tickets/{id}", Owner),
    ("POST /api/support/tickets/{id}/replies", Owner),
    ("PATCH /api/support/tickets/{id}", AdminOnly),
    ("GET /api/contacts", AdminOnly),
    ("POST /api/contacts", AdminOnly),
    ("GET /api/contacts/{id}", AdminOnly),
    ("PATCH /api/contacts/{id}", AdminOnly),
    ("DELETE /api/contacts/{id}", AdminOnly),
    ("GET /api/crm/leads", AdminOnly),
    ("GET /api/newsletter/subscribers", AdminOnly),
];

/// Served by the router outside the OpenAPI document; public.
const EXTRA_PUBLIC: &[&str] = &["/api/openapi.json", "/api/docs/"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    Customer,
    CustomerReadOnly,
    CustomerReadWrite,
    OtherCustomer,
    AdminReadOnly,
    AdminReadWrite,
    AdminScopedKey,
    Admin,
}

const EVERYONE: [Who; 9] = [
    Who::Anonymous,
    Who::Customer,
    Who::CustomerReadOnly,
    Who::CustomerReadWrite,
    Who::OtherCustomer,
    Who::AdminReadOnly,
    Who::AdminReadWrite,
    Who::AdminScopedKey,
    Who::Admin,
];

impl Who {
    /// Column heading of the table printed on failure.
    fn label(self) -> &'static str {
        match self {
            Who::Anonymous => "anon",
            Who::Customer => "cust",
            Who::CustomerReadOnly => "c-ro",
            Who::CustomerReadWrite => "c-rw",
            Who::OtherCustomer => "other",
            Who::AdminReadOnly => "a-ro",
            Who::AdminReadWrite => "a-rw",
            Who::AdminScopedKey => "a-adm",
            Who::Admin => "admin",
        }
    }
    fn is_customer(self) -> bool {
        matches!(
            self,
            Who::Customer | Who::CustomerReadOnly | Who::CustomerReadWrite | Who::OtherCustomer
        )
    }
    fn is_read_only_key(self) -> bool {
        matches!(self, Who::CustomerReadOnly | Who::AdminReadOnly)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Not 401/403 (nor 5xx); with `owner`, not 404 either.
    Allowed { owner: bool },
    /// Exactly this status and problem code.
    Refused(u16, &'static str),
    /// Exactly this status.
    Exactly(u16),
}

impl Expect {
    fn holds(self, status: u16, code: &str) -> bool {
        match self {
            Expect::Allowed { owner } => {
                !matches!(status, 401 | 403) && status < 500 && !(owner && status == 404)
            }
            Expect::Refused(s, c) => status == s && code == c,
            Expect::Exactly(s) => status == s,
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Allowed { owner: false } => write!(f, "allowed (not 401/403/5xx)"),
            Expect::Allowed { owner: true } => write!(f, "allowed (not 401/403/404/5xx)"),
            Expect::Refused(s, c) => write!(f, "{s} {c}"),
            Expect::Exactly(s) => write!(f, "{s}"),
        }
    }
}

const UNAUTHENTICATED: Expect = Expect::Refused(401, "UNAUTHENTICATED");
const FORBIDDEN: Expect = Expect::Refused(403, "FORBIDDEN");

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What `who` should get from a route with `policy`.
fn expected(policy: Policy, who: Who, method: &Method) -> Expect {
    let allowed = Expect::Allowed { owner: false };
    let write = is_write(method);
    match policy {
        Public => allowed,
        StripeSigned => Expect::Refused(401, "INVALID_SIGNATURE"),
        _ if who == Who::Anonymous => UNAUTHENTICATED,
        // A read-only key never changes anything, whoever holds it.
        _ if write && who.is_read_only_key() => FORBIDDEN,
        Authenticated => allowed,
        Owner if who == Who::OtherCustomer => Expect::Refused(404, "NOT_FOUND"),
        Owner => Expect::Allowed { owner: true },
        AdminOnly => match who {
            Who::AdminReadOnly | Who::AdminScopedKey | Who::Admin => allowed,
            _ => FORBIDDEN,
        },
        // Any key may list what its owner may see (no secret is listed); changing keys needs a
        // session or an admin-scoped key.
        KeyManagement if !write => allowed,
        KeyManagement => match who {
            Who::Customer | Who::OtherCustomer | Who::Admin | Who::AdminScopedKey => allowed,
            _ => FORBIDDEN,
        },
        SessionOnly => match who {
            Who::Customer | Who::OtherCustomer | Who::Admin => allowed,
            _ => FORBIDDEN,
        },
    }
}

/// The app, its people and the API keys that act as principals.
struct World {
    app: TestApp,
    product: String,
    customer: String,
    other: String,
    admin: String,
    /// An order and a subscription of the customer (from a signed Stripe checkout).
    order: String,
    subscription: String,
    keys: HashMap<Who, String>,
}

const STRIPE_SECRET: &str = "whsec_matrixmatrixmatrixmatrixmatrix12";

/// A paid subscription checkout for `user_id` buying `product`, as Stripe would send it.
async fn stripe_checkout(app: &TestApp, user_id: &str, product: &str) {
    let event = json!({
        "id": "evt_matrix_checkout",
        "object": "event",
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": "cs_matrix_1",
            "object": "checkout.session",
            "mode": "subscription",
            "payment_status": "paid",
            "subscription": "sub_matrix_1",
            "payment_intent": "pi_matrix_1",
            "customer_email": "owner@example.com",
            "amount_total": 4900,
            "currency": "usd",
            "metadata": {"userId": user_id, "productIds": json!([product]).to_string()},
        }},
    })
    .to_string();
    let t = ecosire::timestamp::now_ms() / 1000;
    let sig = ecosire::events::signature::header(STRIPE_SECRET, t, event.as_bytes());
    let req = axum::http::Request::post("/api/webhooks/stripe")
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(axum::body::Body::from(event))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.expect(200)["outcome"], "processed", "{}", r.text);
}

impl World {
    async fn new() -> World {
        let app = TestApp::with_config(|c| {
            c.rate_limits = false;
            c.stripe_webhook_secret = Some(STRIPE_SECRET.into());
        })
        .await;
        let (customer, customer_token) = app.customer("owner@example.com").await;
        let (other, _) = app.customer("other@example.com").await;
        let admin = app.get("/api/auth/me", Some(&app.admin_token)).await;
        let admin = admin.expect(200)["user"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let product = app.product(json!({"max_activations": 5})).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        stripe_checkout(&app, &customer, &product).await;
        let first_id =
            |page: &serde_json::Value| page["data"][0]["id"].as_str().unwrap().to_string();
        let order = first_id(app.admin_get("/api/orders").await.expect(200));
        let subscription = first_id(app.admin_get("/api/subscriptions").await.expect(200));
        let admin_token = app.admin_token.clone();
        let mut keys = HashMap::new();
        for (who, token, scope) in [
            (Who::CustomerReadOnly, &customer_token, "read-only"),
            (Who::CustomerReadWrite, &customer_token, "read-write"),
            (Who::AdminReadOnly, &admin_token, "read-only"),
            (Who::AdminReadWrite, &admin_token, "read-write"),
            (Who::AdminScopedKey, &admin_token, "admin"),
        ] {
            let r = app
                .post(
                    "/api/api-keys",
                    json!({"name": who.label(), "scope": scope}),
                    Some(token),
                )
                .await;
            keys.insert(who, r.expect(201)["key"].as_str().unwrap().to_string());
        }
        World {
            app,
            product,
            customer,
            other,
            admin,
            order,
            subscription,
            keys,
        }
    }

    /// The user behind `who` (anonymous callers borrow the customer's objects).
    fn user_of(&self, who: Who) -> &str {
        match who {
            Who::OtherCustomer => &self.other,
            _ if who.is_customer() || who == Who::Anonymous => &self.customer,
            _ => &self.admin,
        }
    }

    /// A new login session of `user_id`, so that a logout never disturbs the next call.
    async fn session(&self, user_id: &str) -> String {
        ecosire::accounts::sessions::start_session(&self.app.state, user_id)
            .await
            .expect("session")
    }

    /// The credential `who` sends, fresh where a call could end it.
    async fn credential(&self, who: Who) -> Option<String> {
        match who {
            Who::Anonymous => None,
            Who::Customer | Who::OtherCustomer | Who::Admin => {
                Some(self.session(self.user_of(who)).await)
            }
            _ => Some(self.keys[&who].clone()),
        }
    }

    /// A new license of the customer (with its key).
    async fn license(&self) -> serde_json::Value {
        self.app
            .license(&self.product, json!({"user_id": self.customer}))
            .await
    }

    /// A value for the path parameter that follows segment `collection`: real objects, made
    /// fresh for each call so destructive routes always find what they act on.
    async fn param(&self, collection: &str, who: Who) -> String {
        match collection {
            "licenses" => self.license().await["id"].as_str().unwrap().to_string(),
            "activations" => {
                let l = self.license().await;
                let a = self
                    .app
                    .activate(l["key"].as_str().unwrap(), "matrix-device")
                    .await;
                a.expect(201)["activation"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
            "products" => self.app.product(json!({})).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
            "api-keys" => {
                let owner = self.session(self.user_of(who)).await;
                let r = self
                    .app
                    .post(
                        "/api/api-keys",
                        json!({"name": "target", "scope": "read-only"}),
                        Some(&owner),
                    )
                    .await;
                r.expect(201)["id"].as_str().unwrap().to_string()
            }
            "contacts" => {
                let email = format!("c-{}@example.com", uuid::Uuid::now_v7().simple());
                let r = self
                    .app
                    .admin_post("/api/contacts", json!({"email": email}))
                    .await;
                r.expect(201)["id"].as_str().unwrap().to_string()
            }
            // A ticket the customer opened while signed in.
            "tickets" => {
                let owner = self.session(&self.customer).await;
                let r = self
                    .app
                    .post(
                        "/api/support",
                        json!({"email": "owner@example.com", "subject": "Help", "message": "Please"}),
                        Some(&owner),
                    )
                    .await;
                r.expect(201)["id"].as_str().unwrap().to_string()
            }
            // A user of its own each time: a PATCH or DELETE may disable or erase it.
            "users" => {
                let email = format!("u-{}@example.com", uuid::Uuid::now_v7().simple());
                let r = self
                    .app
                    .post(
                        "/api/auth/register",
                        json!({"email": email, "password": "password-123", "name": "Target"}),
                        None,
                    )
                    .await;
                r.expect(201)["user"]["id"].as_str().unwrap().to_string()
            }
            "orders" => self.order.clone(),
            "subscriptions" => self.subscription.clone(),
            _ => "zzz_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4".to_string(),
        }
    }

    /// `template` with each `{param}` replaced.
    async fn path(&self, template: &str, who: Who) -> String {
        let mut out = vec![];
        let mut previous = "";
        for seg in template.split('/') {
            if seg.starts_with('{') && seg.ends_with('}') {
                out.push(self.param(previous, who).await);
            } else {
                out.push(seg.to_string());
            }
            previous = seg;
        }
        out.join("/")
    }
}

struct Outcome {
    route: String,
    who: Who,
    path: String,
    status: u16,
    code: String,
    expect: Expect,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.expect.holds(self.status, &self.code)
    }
}

/// Every (method, path) of the OpenAPI document, as "METHOD /path".
fn documented_routes() -> Vec<(Method, String)> {
    let api = ecosire::openapi();
    let mut routes = vec![];
    for (path, item) in &api.paths.paths {
        let ops = [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::OPTIONS, &item.options),
            (Method::HEAD, &item.head),
            (Method::PATCH, &item.patch),
            (Method::TRACE, &item.trace),
        ];
        for (method, op) in ops {
            if op.is_some() {
                routes.push((method, path.clone()));
            }
        }
    }
    routes.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    routes
}

/// The status table, one row per route and one column per principal; `!` marks a surprise.
fn table(outcomes: &[Outcome]) -> String {
    let mut rows: BTreeMap<&str, HashMap<Who, &Outcome>> = BTreeMap::new();
    for o in outcomes {
        rows.entry(&o.route).or_default().insert(o.who, o);
    }
    let width = rows.keys().map(|r| r.len()).max().unwrap_or(10);
    let mut s = format!("{:width$}", "route");
    for who in EVERYONE {
        let _ = write!(s, " {:>6}", who.label());
    }
    s.push('\n');
    for (route, cells) in &rows {
        let _ = write!(s, "{route:width$}");
        for who in EVERYONE {
            let cell = match cells.get(&who) {
                Some(o) if o.ok() => o.status.to_string(),
                Some(o) => format!("{}!", o.status),
                None => "-".to_string(),
            };
            let _ = write!(s, " {cell:>6}");
        }
        s.push('\n');
    }
    s
}

#[tokio::test]
async fn every_route_has_an_access_policy_and_honours_it() {
    let policies: HashMap<&str, Policy> = POLICIES.iter().copied().collect();
    assert_eq!(policies.len(), POLICIES.len(), "a route is listed twice");
    let routes = documented_routes();
    assert!(!routes.is_empty(), "the OpenAPI document has no paths");

    let world = World::new().await;
    let mut outcomes = vec![];
    let mut missing = vec![];
    let mut documented = BTreeSet::new();
    for (method, template) in &routes {
        let route = format!("{method} {template}");
        documented.insert(route.clone());
        let Some(&policy) = policies.get(route.as_str()) else {
            missing.push(route);
            continue;
        };
        for who in EVERYONE {
            let path = world.path(template, who).await;
            let token = world.credential(who).await;
            let body = is_write(method).then(|| json!({}));
            let r = world
                .app
                .call(method.clone(), &path, body, token.as_deref())
                .await;
            outcomes.push(Outcome {
                route: route.clone(),
                who,
                path,
                status: r.status.as_u16(),
                code: r.body["code"].as_str().unwrap_or_default().to_string(),
                expect: expected(policy, who, method),
            });
        }
    }
    for path in EXTRA_PUBLIC {
        for who in EVERYONE {
            let token = world.credential(who).await;
            let r = world.app.get(path, token.as_deref()).await;
            outcomes.push(Outcome {
                route: format!("GET {path} (outside the spec)"),
                who,
                path: path.to_string(),
                status: r.status.as_u16(),
                code: r.body["code"].as_str().unwrap_or_default().to_string(),
                // Public and served.
                expect: Expect::Exactly(200),
            });
        }
    }
    let stale: Vec<&str> = POLICIES
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| !documented.contains(*r))
        .collect();

    let failures: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok())
        .map(|o| {
            format!(
                "  {} as {:?} ({}): got {} {}, expected {}",
                o.route, o.who, o.path, o.status, o.code, o.expect
            )
        })
        .collect();
    let mut report = String::new();
    if !missing.is_empty() {
        let _ = writeln!(
            report,
            "routes without an access policy (add them to POLICIES in tests/access_matrix.rs):"
        );
        for m in &missing {
            let _ = writeln!(report, "  {m}");
        }
    }
    if !stale.is_empty() {
        let _ = writeln!(
            report,
            "policies for routes the OpenAPI document does not have:"
        );
        for s in &stale {
            let _ = writeln!(report, "  {s}");
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(report, "unexpected answers:\n{}", failures.join("\n"));
        let _ = writeln!(report, "\n{}", table(&outcomes));
    }
    assert!(report.is_empty(), "\n{report}");
}
