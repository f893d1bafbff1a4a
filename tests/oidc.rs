//! Sign-in through an OpenID provider, against a real one: oidc-provider (tests/oidc, pinned)
//! started with `node` on a free port per test. The browser is played over HTTP: redirects
//! followed by hand, the provider's sign-in and consent forms posted, cookies kept per path.
//! Runs on SQLite and, with ECOSIRE_TEST_DATABASE_URL, on PostgreSQL.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{ADMIN_EMAIL, TestApp, now_s};
use ecosire::config::{OidcConfig, ServiceAccount};
use serde_json::{Value, json};

const AUDIENCE: &str = "https://api.ecosire.test";
const ADMIN_GROUP: &str = "ecosire-admins";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `npm ci` in tests/oidc once per test run, when its packages are missing (.ci/run does it
/// beforehand).
fn provider_script() -> &'static Path {
    static READY: OnceLock<std::path::PathBuf> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        if !dir.join("node_modules/oidc-provider/package.json").exists() {
            let ok = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&dir)
                .status()
                .expect("npm (Node.js 20) is needed for the OIDC tests");
            assert!(ok.success(), "npm ci in tests/oidc failed");
        }
        dir.join("provider.mjs")
    })
}

/// The provider: a `node` process on `port`, killed when dropped.
struct Idp {
    child: Option<Child>,
    port: u16,
    redirect_uri: String,
    http: reqwest::Client,
}

impl Idp {
    fn issuer_for(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    async fn start(port: u16, redirect_uri: &str) -> Idp {
        let child = Command::new("node")
            .arg(provider_script())
            .env("PORT", port.to_string())
            .env("REDIRECT_URI", redirect_uri)
            .env("AUDIENCE", AUDIENCE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let idp = Idp {
            child: Some(child),
            port,
            redirect_uri: redirect_uri.to_string(),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let discovery = format!("{}/.well-known/openid-configuration", idp.issuer());
        while !idp
            .http
            .get(&discovery)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "the provider did not start");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        idp
    }

    fn issuer(&self) -> String {
        Self::issuer_for(self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn side(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}/__test/{path}", self.issuer()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn jwks_fetches(&self) -> u64 {
        let stats: Value = self
            .http
            .get(format!("{}/__test/stats", self.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["jwks"].as_u64().unwrap()
    }

    /// A client-credentials access token of `billing-sync`.
    async fn service_token(&self) -> String {
        let r: Value = self
            .http
            .post(format!("{}/token", self.issuer()))
            .basic_auth("billing-sync", Some("billing-sync-secret"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    }

    /// Signs `claims` with the provider's current key (or, `stranger`, a key it never published).
    async fn mint(&self, claims: Value, stranger: bool) -> String {
        self.side("mint", json!({"claims": claims, "stranger": stranger}))
            .await["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Claims of a well-formed access token for this server, for `mint` to vary.
    fn claims(&self, sub: &str) -> Value {
        json!({"iss": self.issuer(), "aud": AUDIENCE, "sub": sub, "iat": now_s(), "exp": now_s() + 600})
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Our server on a real socket, configured for the provider on `idp_port`.
struct Site {
    app: TestApp,
    base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Site {
    fn redirect_uri(base: &str) -> String {
        format!("{base}/api/auth/oidc/callback")
    }

    async fn start(
        listener: tokio::net::TcpListener,
        idp_port: u16,
        tweak: impl FnOnce(&mut OidcConfig),
    ) -> Site {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut oidc = OidcConfig::new(
            &Idp::issuer_for(idp_port),
            "ecosire",
            Some("ecosire-client-secret"),
        );
        oidc.audience = AUDIENCE.into();
        oidc.admin_group = Some(ADMIN_GROUP.into());
        oidc.label = "Test IdP".into();
        oidc.service_accounts = vec![ServiceAccount {
            subject: "billing-sync".into(),
            email: "billing@example.com".into(),
            scope: ecosire::auth::Scope::ReadWrite,
        }];
        oidc.retry_interval = Duration::from_millis(100);
        tweak(&mut oidc);
        let public = base.clone();
        let app = TestApp::with_config(move |c| {
            c.public_url = Some(public);
            c.oidc = Some(oidc);
        })
        .await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(ecosire::serve(listener, app.state.clone(), async move {
            let _ = rx.await;
        }));
        Site {
            app,
            base,
            shutdown: Some(tx),
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A provider and our server configured for it, the provider started first.
async fn setup(tweak: impl FnOnce(&mut OidcConfig)) -> (Idp, Site) {
    let idp_port = free_port();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let idp = Idp::start(idp_port, &Site::redirect_uri(&base)).await;
    let site = Site::start(listener, idp_port, tweak).await;
    (idp, site)
}

/// A browser: cookies by name with their path (all on 127.0.0.1, as a browser keeps them across
/// ports), redirects followed by hand.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, (String, String)>,
}

struct Page {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    text: String,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self, url: &reqwest::Url) -> String {
        self.cookies
            .iter()
            .filter(|(_, (_, path))| url.path().starts_with(path.as_str()))
            .map(|(k, (v, _))| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, res: &reqwest::Response) -> Vec<String> {
        let mut seen = vec![];
        for v in res.headers().get_all("set-cookie") {
            let line = v.to_str().unwrap().to_string();
            let mut attrs = line.split(';').map(str::trim);
            let (name, value) = attrs.next().unwrap().split_once('=').unwrap();
            let mut path = "/".to_string();
            let mut gone = value.is_empty();
            for a in attrs {
                let lower = a.to_ascii_lowercase();
                if let Some(p) = a.strip_prefix("Path=").or_else(|| a.strip_prefix("path=")) {
                    path = p.to_string();
                }
                if lower == "max-age=0" || lower.starts_with("expires=thu, 01 jan 1970") {
                    gone = true;
                }
            }
            if gone {
                self.cookies.remove(name);
            } else {
                self.cookies
                    .insert(name.to_string(), (value.to_string(), path));
            }
            seen.push(line);
        }
        seen
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let mut req = req.build().unwrap();
        let cookie = self.cookie_header(req.url());
        if !cookie.is_empty() {
            req.headers_mut().insert("cookie", cookie.parse().unwrap());
        }
        let res = self.http.execute(req).await.unwrap();
        let set_cookies = self.keep(&res);
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        Page {
            status,
            location,
            set_cookies,
            text: res.text().await.unwrap(),
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        let req = self.http.get(url);
        self.send(req).await
    }

    /// From our `/api/auth/oidc/login` through the provider (signing in as `who`, consenting) to
    /// the callback URL the provider sends the browser to — returned, not followed, so a test can
    /// look at it or change it. `tamper` may change the URL of the authorization request.
    async fn until_callback(
        &mut self,
        site: &Site,
        who: &str,
        tamper: impl Fn(reqwest::Url) -> reqwest::Url,
    ) -> String {
        let start = self
            .get(&format!(
                "{}/api/auth/oidc/login?next=/dashboard",
                site.base
            ))
            .await;
        assert_eq!(start.status, 303, "{}", start.text);
        let authorize = reqwest::Url::parse(start.location.as_deref().unwrap()).unwrap();
        assert!(
            !authorize.as_str().contains("ecosire-client-secret"),
            "the client secret never travels through the browser"
        );
        let mut url = tamper(authorize).to_string();
        for _ in 0..20 {
            if url.starts_with(&site.base) {
                return url;
            }
            let page = self.get(&url).await;
            if let Some(next) = &page.location {
                url = reqwest::Url::parse(&url)
                    .unwrap()
                    .join(next)
                    .unwrap()
                    .to_string();
                continue;
            }
            assert_eq!(page.status, 200, "{url}: {}", page.text);
            url = self.post_form(&url, &page.text, who).await;
        }
        panic!("the provider never sent the browser back");
    }

    /// Posts the provider's sign-in or consent form and answers where it redirects.
    async fn post_form(&mut self, url: &str, html: &str, who: &str) -> String {
        let action = html
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no form at {url}: {html}"));
        let prompt = if html.contains("value=\"login\"") {
            "login"
        } else {
            "consent"
        };
        let target = reqwest::Url::parse(url).unwrap().join(action).unwrap();
        let mut form = vec![("prompt", prompt)];
        if prompt == "login" {
            form.extend([("login", who), ("password", "any password")]);
        }
        let req = self.http.post(target.clone()).form(&form);
        let page = self.send(req).await;
        let next = page
            .location
            .unwrap_or_else(|| panic!("the {prompt} form did not redirect: {}", page.text));
        target.join(&next).unwrap().to_string()
    }

    /// The whole sign-in; answers the callback's page.
    async fn sign_in(&mut self, site: &Site, who: &str) -> Page {
        let callback = self.until_callback(site, who, |u| u).await;
        self.get(&callback).await
    }

    fn session(&self) -> Option<String> {
        self.cookies.get("ecosire_auth").map(|(v, _)| v.clone())
    }
}

/// Where a refused sign-in sends the browser.
#[track_caller]
fn refused(page: &Page, code: &str) {
    assert_eq!(page.status, 303, "{}", page.text);
    assert_eq!(
        page.location.as_deref(),
        Some(format!("/login?oidc_error={code}").as_str())
    );
    assert!(
        !page
            .set_cookies
            .iter()
            .any(|c| c.starts_with("ecosire_auth=")),
        "no session: {:?}",
        page.set_cookies
    );
}

async fn me(site: &Site, token: &str) -> common::TestResponse {
    site.app.get("/api/auth/me", Some(token)).await
}

#[tokio::test]
async fn a_person_signs_in_through_the_provider_and_reaches_the_dashboard() {
    let (_idp, site) = setup(|_| {}).await;
    let mut browser = Browser::new();

    let login = browser.get(&format!("{}/login", site.base)).await;
    assert!(
        login.text.contains("Sign in with Test IdP")
            && login
                .text
                .contains("href=\"/api/auth/oidc/login?next=%2Fdashboard\""),
        "{}",
        login.text
    );
    assert!(!login.text.contains("<script>"), "no inline script");

    let done = browser.sign_in(&site, "alice").await;
    assert_eq!(done.status, 303, "{}", done.text);
    assert_eq!(done.location.as_deref(), Some("/dashboard"));
    let cookie = done
        .set_cookies
        .iter()
        .find(|c| c.starts_with("ecosire_auth="))
        .expect("the session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let dashboard = browser.get(&format!("{}/dashboard", site.base)).await;
    assert_eq!(dashboard.status, 200);
    assert!(
        dashboard.text.contains("alice@example.com"),
        "{}",
        dashboard.text
    );

    // The cookie is a session like a password login's: the API takes it as a bearer token too.
    let token = browser.session().unwrap();
    let alice = me(&site, &token).await.expect(200)["user"].clone();
    assert_eq!(alice["email"], "alice@example.com");
    assert_eq!(alice["name"], "Alice Admin");
    assert_eq!(alice["role"], "admin", "in the admin group");
    assert!(
        alice["email_verified_at"].is_string(),
        "the provider verified it"
    );

    // The second sign-in follows the link to the same account.
    let mut again = Browser::new();
    again.sign_in(&site, "alice").await;
    let second = me(&site, &again.session().unwrap()).await.expect(200)["user"].clone();
    assert_eq!(second["id"], alice["id"]);

    let mut bob = Browser::new();
    bob.sign_in(&site, "bob").await;
    assert_eq!(
        me(&site, &bob.session().unwrap()).await.expect(200)["user"]["role"],
        "customer"
    );
    // Logging out ends the session as it ends a password login's.
    let out = site
        .app
        .call(
            axum::http::Method::POST,
            "/api/auth/logout",
            None,
            Some(&token),
        )
        .await;
    out.expect(204);
    me(&site, &token)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    // Password login is untouched.
    site.app.login(ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
}

#[tokio::test]
async fn a_client_credentials_token_acts_as_its_service_account() {
    let (idp, site) = setup(|_| {}).await;
    let token = idp.service_token().await;
    let user = me(&site, &token).await.expect(200)["user"].clone();
    assert_eq!(user["email"], "billing@example.com");
    assert_eq!(user["role"], "customer");
    site.app
        .get("/api/licenses", Some(&token))
        .await
        .expect(200);
    // A read-write scope: writes its owner may make, never admin ones or key management.
    site.app
        .post("/api/products", json!({"name": "X"}), Some(&token))
        .await
        .expect_problem(403, "FORBIDDEN");
    site.app
        .post(
            "/api/api-keys",
            json!({"name": "k", "scope": "read-only"}),
            Some(&token),
        )
        .await
        .expect_problem(403, "FORBIDDEN");

    // As admin with an admin scope (the operator made the service user an admin).
    let id = user["id"].as_str().unwrap();
    site.app
        .admin_patch(&format!("/api/users/{id}"), json!({"role": "admin"}))
        .await
        .expect(200);
    site.app
        .post("/api/products", json!({"name": "X"}), Some(&token))
        .await
        .expect_problem(403, "FORBIDDEN");
    // The same token with a read-only service account: reads only.
    let (idp2, site2) =
        setup(|o| o.service_accounts[0].scope = ecosire::auth::Scope::ReadOnly).await;
    let ro = idp2.service_token().await;
    site2.app.get("/api/licenses", Some(&ro)).await.expect(200);
    site2
        .app
        .post("/api/auth/verify-email", json!({}), Some(&ro))
        .await
        .expect_problem(403, "FORBIDDEN");
    drop(idp);
}

#[tokio::test]
async fn an_admin_scoped_service_account_of_an_admin_may_administer() {
    let (idp, site) = setup(|o| o.service_accounts[0].scope = ecosire::auth::Scope::Admin).await;
    let token = idp.service_token().await;
    let id = me(&site, &token).await.expect(200)["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    site.app
        .admin_patch(&format!("/api/users/{id}"), json!({"role": "admin"}))
        .await
        .expect(200);
    site.app
        .post(
            "/api/products",
            json!({"name": "Made by a service"}),
            Some(&token),
        )
        .await
        .expect(201);
}

#[tokio::test]
async fn roles_follow_the_admin_group_at_each_sign_in_and_token() {
    let (idp, site) = setup(|_| {}).await;
    let mut browser = Browser::new();
    browser.sign_in(&site, "alice").await;
    let alice = me(&site, &browser.session().unwrap()).await.expect(200)["user"].clone();
    assert_eq!(alice["role"], "admin");

    // Out of the group: a customer at the next sign-in.
    idp.side("person", json!({"id": "alice", "groups": ["staff"]}))
        .await;
    let mut b2 = Browser::new();
    b2.sign_in(&site, "alice").await;
    assert_eq!(
        me(&site, &b2.session().unwrap()).await.expect(200)["user"]["role"],
        "customer"
    );

    // A person's access token carrying the groups claim syncs the role too; one without the
    // claim changes nothing.
    let mut claims = idp.claims("alice");
    claims["groups"] = json!([ADMIN_GROUP]);
    let promote = idp.mint(claims, false).await;
    assert_eq!(
        me(&site, &promote).await.expect(200)["user"]["role"],
        "admin"
    );
    let silent = idp.mint(idp.claims("alice"), false).await;
    assert_eq!(
        me(&site, &silent).await.expect(200)["user"]["role"],
        "admin"
    );
    // Every session of the person follows at once (the role is read per request).
    assert_eq!(
        me(&site, &b2.session().unwrap()).await.expect(200)["user"]["role"],
        "admin"
    );

    // The provider wins over LAST_ADMIN: with alice the only active admin, leaving the group
    // still demotes her (docs/oidc.md says why and how back in).
    let admin_id = site
        .app
        .get("/api/auth/me", Some(&site.app.admin_token.clone()))
        .await
        .expect(200)["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    site.app
        .call(
            axum::http::Method::PATCH,
            &format!("/api/users/{admin_id}"),
            Some(json!({"role": "customer"})),
            Some(&promote),
        )
        .await
        .expect(200);
    let mut claims = idp.claims("alice");
    claims["groups"] = json!([]);
    let demote = idp.mint(claims, false).await;
    assert_eq!(
        me(&site, &demote).await.expect(200)["user"]["role"],
        "customer"
    );
    let admins: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0")
            .fetch_one(&site.app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(admins, 0);
}

#[tokio::test]
async fn wrong_state_replayed_callbacks_and_codes_sign_nobody_in() {
    let (_idp, site) = setup(|_| {}).await;
    let mut browser = Browser::new();
    let callback = browser.until_callback(&site, "bob", |u| u).await;

    // A changed `state`: no such sign-in.
    let mut wrong = reqwest::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = wrong
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                format!("{v}x")
            } else {
                v.to_string()
            };
            (k.to_string(), v)
        })
        .collect();
    wrong.query_pairs_mut().clear().extend_pairs(&pairs);
    refused(&browser.get(wrong.as_str()).await, "state");

    // The callback in another browser (a link sent to someone else): not that browser's sign-in.
    refused(&Browser::new().get(&callback).await, "state");
    // Both attempts used the sign-in up: the real browser cannot finish it either now.
    refused(&browser.get(&callback).await, "state");

    // A code the provider already redeemed, brought to a new sign-in of the same browser.
    let mut browser = Browser::new();
    let first = browser.until_callback(&site, "bob", |u| u).await;
    assert_eq!(
        browser.get(&first).await.location.as_deref(),
        Some("/dashboard")
    );
    refused(&browser.get(&first).await, "state");
    let second = browser.until_callback(&site, "bob", |u| u).await;
    let code = |u: &str| {
        reqwest::Url::parse(u)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .to_string()
    };
    let replay = second.replace(&code(&second), &code(&first));
    refused(&browser.get(&replay).await, "provider");
}

#[tokio::test]
async fn a_wrong_nonce_in_the_id_token_is_refused() {
    let (_idp, site) = setup(|_| {}).await;
    let mut browser = Browser::new();
    let callback = browser
        .until_callback(&site, "bob", |mut u| {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "nonce" {
                        "a-nonce-of-someone-else".to_string()
                    } else {
                        v.to_string()
                    };
                    (k.to_string(), v)
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(&pairs);
            u
        })
        .await;
    refused(&browser.get(&callback).await, "token");
}

#[tokio::test]
async fn an_email_is_linked_only_when_both_sides_verified_it() {
    let (idp, site) = setup(|_| {}).await;
    // bob@example.com registered here, never confirmed: the provider's word is not enough.
    site.app
        .post(
            "/api/auth/register",
            json!({"email": "bob@example.com", "password": "bob-local-pass", "name": "Local Bob"}),
            None,
        )
        .await
        .expect(201);
    refused(&Browser::new().sign_in(&site, "bob").await, "email_taken");
    let links: i64 = sqlx::query_scalar("SELECT count(*) FROM oidc_identities")
        .fetch_one(&site.app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(links, 0);
    // The login page words the refusal.
    let page = Browser::new()
        .get(&format!("{}/login?oidc_error=email_taken", site.base))
        .await;
    assert!(page.text.contains("already exists"), "{}", page.text);

    // Confirmed here, but the provider says it did not verify the address: still no link.
    let (local_id, _) = site.app.customer("carol@example.com").await;
    sqlx::query("UPDATE users SET email_verified_at = 1 WHERE id = $1")
        .bind(&local_id)
        .execute(&site.app.state.db.pool)
        .await
        .unwrap();
    refused(&Browser::new().sign_in(&site, "carol").await, "email_taken");

    // Verified on both sides: linked to the existing account.
    idp.side("person", json!({"id": "carol", "email_verified": true}))
        .await;
    let mut b = Browser::new();
    b.sign_in(&site, "carol").await;
    assert_eq!(
        me(&site, &b.session().unwrap()).await.expect(200)["user"]["id"],
        local_id.as_str()
    );

    // A new address the provider did not verify: a new customer, unverified here too.
    idp.side(
        "person",
        json!({"id": "dave", "email": "dave@example.com", "email_verified": false, "name": "Dave"}),
    )
    .await;
    let mut d = Browser::new();
    d.sign_in(&site, "dave").await;
    let dave = me(&site, &d.session().unwrap()).await.expect(200)["user"].clone();
    assert_eq!(dave["email"], "dave@example.com");
    assert!(dave["email_verified_at"].is_null());
    // Erasing the account deletes its link: signing in again makes a new account.
    let dave_id = dave["id"].as_str().unwrap();
    site.app
        .admin_delete(&format!("/api/users/{dave_id}"))
        .await
        .expect(204);
    let mut d = Browser::new();
    d.sign_in(&site, "dave").await;
    let again = me(&site, &d.session().unwrap()).await.expect(200)["user"].clone();
    assert_ne!(again["id"], dave["id"]);
    assert_eq!(again["email"], "dave@example.com");
    // No address at all: nothing to make an account with.
    idp.side("person", json!({"id": "erin", "name": "Erin"}))
        .await;
    refused(
        &Browser::new().sign_in(&site, "erin").await,
        "email_missing",
    );
}

#[tokio::test]
async fn provider_tokens_are_checked_for_issuer_audience_time_and_key() {
    let (idp, site) = setup(|o| o.jwks_refresh_interval = Duration::from_secs(3600)).await;
    let mut b = Browser::new();
    b.sign_in(&site, "bob").await;
    let ok = idp.mint(idp.claims("bob"), false).await;
    assert_eq!(
        me(&site, &ok).await.expect(200)["user"]["email"],
        "bob@example.com"
    );

    let with = |change: Value| {
        let mut c = idp.claims("bob");
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    for (why, claims) in [
        ("another issuer", with(json!({"iss": "http://127.0.0.1:1"}))),
        (
            "another audience",
            with(json!({"aud": "https://elsewhere.test"})),
        ),
        (
            "expired beyond the skew",
            with(json!({"exp": now_s() - 61})),
        ),
        (
            "not valid before a future time",
            with(json!({"nbf": now_s() + 120})),
        ),
        ("no expiry", with(json!({"exp": null}))),
    ] {
        let t = idp.mint(claims, false).await;
        let r = me(&site, &t).await;
        assert_eq!(r.status, 401, "{why}: {}", r.text);
    }
    // Within the 60 s skew both ways.
    for claims in [
        with(json!({"exp": now_s() - 30})),
        with(json!({"nbf": now_s() + 30})),
    ] {
        me(&site, &idp.mint(claims, false).await).await.expect(200);
    }
    // A tampered payload fails the signature.
    let mut parts: Vec<String> = ok.split('.').map(String::from).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    payload["sub"] = json!("alice");
    parts[1] = b64.encode(payload.to_string());
    me(&site, &parts.join("."))
        .await
        .expect_problem(401, "UNAUTHENTICATED");

    // An unknown key: refused, and fetching the keys again is rate-limited (here: once an hour,
    // and discovery just fetched them).
    let fetched = idp.jwks_fetches().await;
    for _ in 0..3 {
        let t = idp.mint(idp.claims("bob"), true).await;
        me(&site, &t).await.expect_problem(401, "UNAUTHENTICATED");
    }
    assert_eq!(idp.jwks_fetches().await, fetched);

    // A real token from another provider (another issuer, keys we never saw).
    let other = Idp::start(free_port(), &idp.redirect_uri).await;
    me(&site, &other.service_token().await)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_key_rotation_at_the_provider_is_picked_up_on_the_first_unknown_kid() {
    let (idp, site) = setup(|o| o.jwks_refresh_interval = Duration::ZERO).await;
    let before = idp.service_token().await;
    me(&site, &before).await.expect(200);
    let fetched = idp.jwks_fetches().await;
    idp.side("rotate", json!({})).await;
    let after = idp.service_token().await;
    assert_ne!(
        after.split('.').next(),
        before.split('.').next(),
        "signed with the new key"
    );
    me(&site, &after).await.expect(200);
    assert_eq!(
        idp.jwks_fetches().await,
        fetched + 1,
        "one fetch for the new key"
    );
    // The old key is still published: its tokens still work, with no further fetch.
    me(&site, &before).await.expect(200);
    me(&site, &after).await.expect(200);
    assert_eq!(idp.jwks_fetches().await, fetched + 1);
    // An ID token signed with the new key verifies too.
    idp.side("rotate", json!({})).await;
    let done = Browser::new().sign_in(&site, "bob").await;
    assert_eq!(
        done.location.as_deref(),
        Some("/dashboard"),
        "{}",
        done.text
    );
    assert_eq!(idp.jwks_fetches().await, fetched + 2);
}

#[tokio::test]
async fn the_server_starts_without_the_provider_and_uses_it_once_it_answers() {
    let idp_port = free_port();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = Site::start(listener, idp_port, |_| {}).await;
    // TestApp logged the admin in with a password already; API keys work too.
    let key = site
        .app
        .admin_post("/api/api-keys", json!({"name": "k", "scope": "admin"}))
        .await
        .expect(201)["key"]
        .as_str()
        .unwrap()
        .to_string();
    site.app.get("/api/users", Some(&key)).await.expect(200);
    let mut browser = Browser::new();
    let start = browser
        .get(&format!("{}/api/auth/oidc/login", site.base))
        .await;
    refused(&start, "unavailable");
    let page = browser
        .get(&format!("{}/login?oidc_error=unavailable", site.base))
        .await;
    assert!(page.text.contains("cannot be reached"), "{}", page.text);

    // The provider comes up: the background retry finds it.
    let _idp = Idp::start(idp_port, &Site::redirect_uri(&site.base)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !site.app.state.oidc.as_ref().unwrap().is_ready() {
        assert!(Instant::now() < deadline, "discovery was not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = browser.sign_in(&site, "bob").await;
    assert_eq!(done.location.as_deref(), Some("/dashboard"));
}

#[tokio::test]
async fn a_provider_going_down_leaves_known_tokens_and_passwords_working() {
    let (mut idp, site) = setup(|o| o.jwks_refresh_interval = Duration::ZERO).await;
    let token = idp.service_token().await;
    let stranger = idp.mint(idp.claims("billing-sync"), true).await;
    let mut browser = Browser::new();
    let callback = browser.until_callback(&site, "bob", |u| u).await;
    idp.stop();

    // Keys already fetched still verify; an unknown key cannot be fetched: 401, not 500.
    me(&site, &token).await.expect(200);
    me(&site, &stranger)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    // A sign-in that needs the provider now says so.
    refused(&browser.get(&callback).await, "unavailable");
    // Passwords work.
    let t = site.app.login(ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    me(&site, &t).await.expect(200);
}

#[tokio::test]
async fn the_start_logs_one_line_when_the_provider_cannot_be_reached() {
    let port = free_port().to_string();
    let issuer = format!("http://127.0.0.1:{port}");
    let server = common::process::Server::start(&[
        ("ECOSIRE_OIDC_ISSUER", &issuer),
        ("ECOSIRE_OIDC_CLIENT_ID", "ecosire"),
        ("ECOSIRE_OIDC_CLIENT_SECRET", "never-logged-secret"),
    ])
    .await;
    let line = server
        .log_line(0, &["OIDC: cannot use the provider at", &issuer])
        .await;
    assert!(line.contains("retrying every 30 s"), "{line}");
    let http = reqwest::Client::new();
    let token = server.admin_token(&http).await;
    let (status, _) = server.get(&http, "/api/auth/me", &token).await;
    assert_eq!(status, 200, "password sign-in works without the provider");
    assert!(
        !server
            .log_lines()
            .iter()
            .any(|l| l.contains("never-logged-secret")),
        "the client secret is never logged"
    );
}

#[tokio::test]
async fn the_served_spec_names_the_provider_and_the_routes_answer_404_without_one() {
    let (idp, site) = setup(|_| {}).await;
    let spec = site
        .app
        .get("/api/openapi.json", None)
        .await
        .expect(200)
        .clone();
    let scheme = &spec["components"]["securitySchemes"]["openIdConnect"];
    assert_eq!(scheme["type"], "openIdConnect");
    assert_eq!(
        scheme["openIdConnectUrl"],
        format!("{}/.well-known/openid-configuration", idp.issuer())
    );
    let me_security = spec["paths"]["/api/auth/me"]["get"]["security"].to_string();
    assert!(me_security.contains("openIdConnect"), "{me_security}");
    assert!(!spec.to_string().contains("ecosire-client-secret"));

    let plain = TestApp::new().await;
    let spec = plain
        .get("/api/openapi.json", None)
        .await
        .expect(200)
        .clone();
    assert!(spec["components"]["securitySchemes"]["openIdConnect"].is_null());
    plain
        .get("/api/auth/oidc/login", None)
        .await
        .expect_problem(404, "NOT_FOUND");
    plain
        .get("/api/auth/oidc/callback?state=x&code=y", None)
        .await
        .expect_problem(404, "NOT_FOUND");
    let login = plain.get("/login", None).await;
    assert!(
        !login.text.contains("Sign in with"),
        "no button without a provider"
    );
}
