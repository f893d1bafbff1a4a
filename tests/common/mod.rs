//! `TestApp`: a fresh server per test — its own database (a SQLite file, or a throwaway
//! PostgreSQL database when `ECOSIRE_TEST_DATABASE_URL` is set) and its own keys folder — driven
//! in-process through the router, or over a real socket with `spawn`.
#![allow(dead_code)]

pub mod mail;
pub mod process;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use ecosire::AppState;
use ecosire::config::Config;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN_EMAIL: &str = "admin@test.local";
pub const ADMIN_PASSWORD: &str = "admin-password-123";

pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub admin_token: String,
    pub dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts the status and returns the body, showing the body when it does not match.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        &self.body
    }
    /// Asserts a problem+json answer with this status and code.
    #[track_caller]
    pub fn expect_problem(&self, status: u16, code: &str) -> &Value {
        self.expect(status);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["statusCode"], status);
        &self.body
    }
}

/// A database URL for one test: a new SQLite file in `dir`, or a new PostgreSQL database.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    match std::env::var("ECOSIRE_TEST_DATABASE_URL") {
        Ok(base) if base.starts_with("postgres") => {
            use sqlx::Connection;
            let name = format!("ecosire_test_{}", uuid::Uuid::now_v7().simple());
            let mut conn = sqlx::postgres::PgConnection::connect(&base)
                .await
                .expect("PostgreSQL at ECOSIRE_TEST_DATABASE_URL must be reachable");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let (prefix, _) = base.rsplit_once('/').expect("URL has a database name");
            format!("{prefix}/{name}")
        }
        _ => format!("sqlite://{}/test.db", dir.display()),
    }
}

pub fn is_postgres() -> bool {
    std::env::var("ECOSIRE_TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres"))
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    pub async fn with_config(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            database_url: fresh_database_url(dir.path()).await,
            keys_dir: dir.path().join("keys"),
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(ADMIN_PASSWORD.into()),
            cookie_secure: false,
            // Limits have their own tests; elsewhere many calls share one in-process "client".
            rate_limits: false,
            reaper_interval: Duration::from_secs(3600),
            mail_dir: Some(dir.path().join("mail")),
            ..Config::default()
        };
        tweak(&mut config);
        Self::from_config(config, dir).await
    }

    pub async fn from_config(config: Config, dir: tempfile::TempDir) -> Self {
        let state = ecosire::build_state(config).await.expect("build state");
        ecosire::accounts::users::bootstrap_admin(&state)
            .await
            .expect("bootstrap admin");
        let router = ecosire::app(state.clone());
        let mut app = TestApp {
            state,
            router,
            admin_token: String::new(),
            dir,
        };
        app.admin_token = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        app
    }

    /// Sends one request through the router in-process.
    pub async fn send(&self, req: Request<Body>) -> TestResponse {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> TestResponse {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        };
        self.send(req.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.call(Method::GET, path, None, token).await
    }
    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> TestResponse {
        self.call(Method::POST, path, Some(body), token).await
    }
    pub async fn admin_get(&self, path: &str) -> TestResponse {
        self.get(path, Some(&self.admin_token.clone())).await
    }
    pub async fn admin_post(&self, path: &str, body: Value) -> TestResponse {
        self.post(path, body, Some(&self.admin_token.clone())).await
    }
    pub async fn admin_patch(&self, path: &str, body: Value) -> TestResponse {
        self.call(
            Method::PATCH,
            path,
            Some(body),
            Some(&self.admin_token.clone()),
        )
        .await
    }
    pub async fn admin_delete(&self, path: &str) -> TestResponse {
        self.call(Method::DELETE, path, None, Some(&self.admin_token.clone()))
            .await
    }

    /// Logs in and returns the session JWT.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self
            .post(
                "/api/auth/login",
                json!({"email": email, "password": password}),
                None,
            )
            .await;
        r.expect(200)["token"].as_str().expect("token").to_string()
    }

    /// Creates a customer with a password and returns (user id, session token).
    pub async fn customer(&self, email: &str) -> (String, String) {
        let hash = ecosire::accounts::passwords::hash("customer-pass-1".into())
            .await
            .unwrap();
        let u = ecosire::accounts::users::insert(
            &self.state,
            email,
            "Customer",
            Some(&hash),
            ecosire::auth::Role::Customer,
        )
        .await
        .unwrap()
        .expect("new email");
        let token = self.login(email, "customer-pass-1").await;
        (u.user.id, token)
    }

    /// Creates a product (admin); `extra` fields override the defaults.
    pub async fn product(&self, extra: Value) -> Value {
        let mut body = json!({"name": format!("Product {}", uuid::Uuid::now_v7().simple()), "max_activations": 3, "entitlements": ["pro", "export"]});
        merge(&mut body, extra);
        self.admin_post("/api/products", body)
            .await
            .expect(201)
            .clone()
    }

    /// Sends what the outbox holds (as the mail worker would) and returns every message written
    /// so far (the default transport: `.eml` files beside the database), oldest first.
    pub async fn delivered_mail(&self) -> Vec<mail::Mail> {
        while ecosire::mail::run_once(&self.state).await.unwrap() > 0 {}
        mail::eml_messages(&self.state.config.mail_dir())
    }

    /// The messages to `to`, after waiting (bounded) until there are at least `n`: for requests
    /// whose message is queued after the answer (a password reset).
    pub async fn mail_to(&self, to: &str, n: usize) -> Vec<mail::Mail> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got: Vec<mail::Mail> = self
                .delivered_mail()
                .await
                .into_iter()
                .filter(|m| m.to == to)
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {n} messages to {to}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Creates a license for `product_id` (admin) and returns the license object (with `key`).
    pub async fn license(&self, product_id: &str, extra: Value) -> Value {
        let mut body = json!({"product_id": product_id});
        merge(&mut body, extra);
        self.admin_post("/api/licenses", body)
            .await
            .expect(201)
            .clone()
    }

    /// A product and one license of it: returns (product, license).
    pub async fn product_and_license(
        &self,
        product_extra: Value,
        license_extra: Value,
    ) -> (Value, Value) {
        let p = self.product(product_extra).await;
        let l = self.license(p["id"].as_str().unwrap(), license_extra).await;
        (p, l)
    }

    pub async fn validate(&self, body: Value) -> Value {
        self.post("/api/licenses/validate", body, None)
            .await
            .expect(200)
            .clone()
    }

    pub async fn activate(&self, key: &str, fingerprint: &str) -> TestResponse {
        self.post(
            "/api/licenses/activate",
            json!({"key": key, "fingerprint": fingerprint}),
            None,
        )
        .await
    }
}

/// Shallow merge of `extra`'s members into `base`.
/// The Ed25519 key `kid` of a JWKS document, as an offline client holding that document has it.
pub fn jwks_key(jwks: &Value, kid: &str) -> Option<ed25519_dalek::VerifyingKey> {
    use base64::Engine;
    let jwk = jwks["keys"].as_array()?.iter().find(|k| k["kid"] == kid)?;
    let x: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str()?)
        .ok()?
        .try_into()
        .ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&x).ok()
}

pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// A server on a real socket (127.0.0.1, ephemeral port).
pub struct Spawned {
    pub base: String,
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Spawned {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.await.expect("server task")
    }
}

pub async fn spawn(state: AppState) -> Spawned {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(ecosire::serve(listener, state, async move {
        let _ = rx.await;
    }));
    Spawned {
        base,
        shutdown: Some(tx),
        handle,
    }
}

/// The fields a 422 names, in order.
#[track_caller]
pub fn fields(problem: &Value) -> Vec<String> {
    problem["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {problem}"))
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_string())
        .collect()
}

/// The ids of a list page, in order.
#[track_caller]
pub fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {page}"))
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

/// Now, in unix seconds.
pub fn now_s() -> i64 {
    ecosire::timestamp::now_ms() / 1000
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    ecosire::timestamp::now_ms()
}

/// POSTs `body` as JSON to a server on a real socket (with a bearer `token` if given) and returns
/// the answer's JSON body.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> Value {
    let mut req = http.post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// GETs `url` from a server on a real socket with a bearer `token` and returns the JSON body.
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or(Value::Null)
}
