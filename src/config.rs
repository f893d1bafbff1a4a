//! Configuration from the environment. [`variables`] is the one list of what the server reads:
//! `ecosire serve --help`, the warning about misspelled `ECOSIRE_*` names and
//! docs/configuration.md all come from it, and a test checks that the parser reads exactly it.
//! A bad value stops the start with one line naming the variable.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the server reads at start. Secrets have a redacting `Debug`.
#[derive(Clone)]
pub struct Config {
    /// `ECOSIRE_BIND`: the address and port to listen on.
    pub bind: SocketAddr,
    /// `DATABASE_URL`: `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// `ECOSIRE_DB_ACQUIRE_TIMEOUT_S`: how long a request waits for a PostgreSQL connection
    /// before 503 `DATABASE_UNAVAILABLE`.
    pub db_acquire_timeout: Duration,
    /// `ECOSIRE_DB_MAX_CONNECTIONS`: the PostgreSQL pool of this instance.
    pub db_max_connections: u32,
    /// `ECOSIRE_KEYS_DIR`: the signing keys and the data key.
    pub keys_dir: PathBuf,
    /// `ECOSIRE_KEY_PUBLISH_LEAD_S`: how long `ecosire keys rotate` publishes a new license key
    /// before it signs, so clients that cache the JWKS learn its kid before they meet it.
    pub key_publish_lead: Duration,
    /// `ECOSIRE_ADMIN_EMAIL`, normalised: the admin created at start (with `admin_password`).
    pub admin_email: Option<String>,
    /// `ECOSIRE_ADMIN_PASSWORD`: the password of `admin_email`.
    pub admin_password: Option<String>,
    /// `STRIPE_WEBHOOK_SECRET`: verifies `POST /api/webhooks/stripe`; unset, that route answers 503.
    pub stripe_webhook_secret: Option<String>,
    /// `ECOSIRE_LICENSE_SECRET`: signs deliveries to `webhook_url`.
    pub license_secret: Option<String>,
    /// `ECOSIRE_WEBHOOK_URL`: a webhook endpoint for every event, configured at start.
    pub webhook_url: Option<String>,
    /// `ECOSIRE_COOKIE_SECURE`: session cookies are sent over https only.
    pub cookie_secure: bool,
    /// `ECOSIRE_REGISTRATION`: whether `POST /api/auth/register` is open.
    pub registration: bool,
    /// `ECOSIRE_TOKEN_ISSUER`: the `iss` of license and session tokens.
    pub token_issuer: String,
    /// `ECOSIRE_ALLOWED_ORIGINS`: origins whose cookie-authenticated writes are accepted.
    pub allowed_origins: Vec<String>,
    /// `ECOSIRE_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `ECOSIRE_RATE_LIMITS`: whether rate limits apply at all.
    pub rate_limits: bool,
    /// `ECOSIRE_WEBHOOK_ALLOW_PRIVATE`: webhooks may target loopback and private addresses.
    pub webhook_allow_private: bool,
    /// `ECOSIRE_WEBHOOK_BACKOFF_BASE_S`: the first webhook retry delay, in seconds.
    pub webhook_backoff_base_s: u64,
    /// `ECOSIRE_WEBHOOK_LEASE_S`: how long a claimed delivery stays reserved for the dispatcher
    /// that claimed it (after a crash, how long until another instance sends it).
    pub webhook_lease: Duration,
    /// `ECOSIRE_API_KEY_GRACE_S`: how long a rotated API key keeps working, in seconds.
    pub api_key_grace_s: u64,
    /// `ECOSIRE_HEADER_TIMEOUT_S`: time to receive a request's headers.
    pub header_timeout: Duration,
    /// `ECOSIRE_REQUEST_TIMEOUT_S`: time for a whole request, body included.
    pub request_timeout: Duration,
    /// `ECOSIRE_IDLE_TIMEOUT_S`: how long an idle keep-alive connection stays open.
    pub idle_timeout: Duration,
    /// `ECOSIRE_MAX_CONNECTIONS`: connections open at once.
    pub max_connections: usize,
    /// `ECOSIRE_HASH_CONCURRENCY`: Argon2 hashes computed at once.
    pub hash_concurrency: usize,
    /// `ECOSIRE_HASH_QUEUE_TIMEOUT_S`: how long a request waits for a hashing slot before 503 BUSY.
    pub hash_queue_timeout: Duration,
    /// `ECOSIRE_LICENSE_CACHE_CAPACITY`: license snapshots held in memory.
    pub license_cache_capacity: usize,
    /// `ECOSIRE_LOG_FORMAT`: text or JSON logs.
    pub log_format: LogFormat,
    /// `RUST_LOG`: the log filter (tracing `EnvFilter` syntax), checked at start.
    pub log_filter: String,
    /// How often silent activations are looked for (not an env variable; tests shorten it).
    pub reaper_interval: Duration,
    /// Lifetime of a login session (not an env variable).
    pub session_ttl: Duration,
    /// A webhook endpoint failing without a success for this long is disabled (not an env
    /// variable).
    pub webhook_disable_after: Duration,
    /// `ECOSIRE_RATE_LIMIT_<BUCKET>` and `ECOSIRE_QUOTA_PLANS`: rate-limit rules and daily quotas.
    pub limits: LimitsConfig,
    /// `ECOSIRE_REDIS_URL`: where per-minute limits are shared across instances; unset: local.
    pub redis_url: Option<String>,
    /// `ECOSIRE_REDIS_PREFIX`: the first part of every key the server writes to Redis.
    pub redis_prefix: String,
    /// `ECOSIRE_PUBLIC_URL`, without a trailing slash: the base of links in emails.
    pub public_url: Option<String>,
    /// `ECOSIRE_SMTP_URL`: where mail goes; unset: `.eml` files in `data_dir()/mail`.
    pub smtp_url: Option<String>,
    /// `ECOSIRE_MAIL_FROM`: the sender of every message.
    pub mail_from: String,
    /// `ECOSIRE_MAIL_DIR`: where messages are written without SMTP (default: `mail/` beside the
    /// SQLite database, `data/mail` with PostgreSQL).
    pub mail_dir: Option<PathBuf>,
    /// The first retry delay of a message that could not be sent; each next one doubles (not an
    /// env variable; tests shorten it).
    pub mail_backoff_base: Duration,
    /// `STRIPE_SECRET_KEY`: reads a checkout's line items from Stripe's API.
    pub stripe_secret_key: Option<String>,
    /// `STRIPE_API_BASE`, without a trailing slash: Stripe's API (a local stand-in in tests).
    pub stripe_api_base: String,
    /// `ECOSIRE_OIDC_*`: sign-in through an OpenID provider; `None` without `ECOSIRE_OIDC_ISSUER`.
    pub oidc: Option<OidcConfig>,
}

/// Sign-in through an OpenID provider (docs/oidc.md). The client secret has a redacting `Debug`.
#[derive(Clone)]
pub struct OidcConfig {
    /// `ECOSIRE_OIDC_ISSUER`: the provider's issuer URL, exactly as its tokens' `iss` says it.
    pub issuer: String,
    /// `ECOSIRE_OIDC_CLIENT_ID`: this server's client at the provider.
    pub client_id: String,
    /// `ECOSIRE_OIDC_CLIENT_SECRET`: the client's secret (confidential client); `None`: a public
    /// client that proves itself with PKCE alone.
    pub client_secret: Option<String>,
    /// `ECOSIRE_OIDC_AUDIENCE`: the `aud` a provider access token must name to be accepted as a
    /// bearer credential (default: the client id).
    pub audience: String,
    /// `ECOSIRE_OIDC_ADMIN_GROUP`: members are admins, others customers; `None`: the provider
    /// does not decide roles.
    pub admin_group: Option<String>,
    /// `ECOSIRE_OIDC_LABEL`: the button says "Sign in with {label}".
    pub label: String,
    /// `ECOSIRE_OIDC_SCOPES`: what the browser sign-in asks for.
    pub scopes: Vec<String>,
    /// `ECOSIRE_OIDC_GROUPS_CLAIM`: the claim that lists a person's groups.
    pub groups_claim: String,
    /// `ECOSIRE_OIDC_SERVICE_ACCOUNTS`: client-credentials callers, by token subject.
    pub service_accounts: Vec<ServiceAccount>,
    /// How long to wait between discovery attempts while the provider cannot be reached (not an
    /// env variable; tests shorten it).
    pub retry_interval: Duration,
    /// The provider's keys are fetched again for an unknown `kid` at most once per this long
    /// (not an env variable; tests change it).
    pub jwks_refresh_interval: Duration,
}

/// A service account: provider access tokens whose subject (or, lacking one, `client_id`) is
/// `subject` act as the local user `email` with an API-key `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub subject: String,
    pub email: String,
    pub scope: crate::auth::Scope,
}

pub const DEFAULT_OIDC_SCOPES: &str = "openid email profile";

impl OidcConfig {
    /// A provider at `issuer` with this client and everything else at its default.
    pub fn new(issuer: &str, client_id: &str, client_secret: Option<&str>) -> Self {
        OidcConfig {
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.map(String::from),
            audience: client_id.to_string(),
            admin_group: None,
            label: "SSO".into(),
            scopes: list(&DEFAULT_OIDC_SCOPES.replace(' ', ",")),
            groups_claim: "groups".into(),
            service_accounts: vec![],
            retry_interval: Duration::from_secs(30),
            jwks_refresh_interval: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("audience", &self.audience)
            .field("admin_group", &self.admin_group)
            .field("label", &self.label)
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("service_accounts", &self.service_accounts)
            .field("retry_interval", &self.retry_interval)
            .field("jwks_refresh_interval", &self.jwks_refresh_interval)
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        // Sorted, so two equal configurations print the same (HashMap order is random).
        let rules: BTreeMap<_, _> = self.limits.rules.iter().collect();
        let plans: BTreeMap<_, _> = self.limits.plans.iter().collect();
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("database_url", &redact_url(&self.database_url))
            .field("db_acquire_timeout", &self.db_acquire_timeout)
            .field("db_max_connections", &self.db_max_connections)
            .field("keys_dir", &self.keys_dir)
            .field("key_publish_lead", &self.key_publish_lead)
            .field("admin_email", &self.admin_email)
            .field("admin_password", &redact(&self.admin_password))
            .field(
                "stripe_webhook_secret",
                &redact(&self.stripe_webhook_secret),
            )
            .field("license_secret", &redact(&self.license_secret))
            .field("webhook_url", &self.webhook_url)
            .field("cookie_secure", &self.cookie_secure)
            .field("registration", &self.registration)
            .field("token_issuer", &self.token_issuer)
            .field("allowed_origins", &self.allowed_origins)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("rate_limits", &self.rate_limits)
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field("webhook_backoff_base_s", &self.webhook_backoff_base_s)
            .field("webhook_lease", &self.webhook_lease)
            .field("api_key_grace_s", &self.api_key_grace_s)
            .field("header_timeout", &self.header_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("hash_concurrency", &self.hash_concurrency)
            .field("hash_queue_timeout", &self.hash_queue_timeout)
            .field("license_cache_capacity", &self.license_cache_capacity)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("reaper_interval", &self.reaper_interval)
            .field("session_ttl", &self.session_ttl)
            .field("webhook_disable_after", &self.webhook_disable_after)
            .field("rate_limit_rules", &rules)
            .field("quota_plans", &plans)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("public_url", &self.public_url)
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("mail_from", &self.mail_from)
            .field("mail_dir", &self.mail_dir)
            .field("mail_backoff_base", &self.mail_backoff_base)
            .field("stripe_secret_key", &redact(&self.stripe_secret_key))
            .field("stripe_api_base", &self.stripe_api_base)
            .field("oidc", &self.oidc)
            .finish()
    }
}

pub const DEFAULT_MAIL_FROM: &str = "ECOSIRE <noreply@localhost>";
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

/// A database URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// Variable names are few and fixed, and an error ends the start; leaking one for the error's
/// `&'static str` is harmless.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".parse().expect("static"),
            database_url: "sqlite://data/ecosire.db".into(),
            db_acquire_timeout: crate::db::DEFAULT_ACQUIRE_TIMEOUT,
            db_max_connections: 16,
            keys_dir: "keys".into(),
            key_publish_lead: Duration::from_secs(86_400),
            admin_email: None,
            admin_password: None,
            stripe_webhook_secret: None,
            license_secret: None,
            webhook_url: None,
            cookie_secure: true,
            registration: true,
            token_issuer: "ecosire".into(),
            allowed_origins: vec![],
            trusted_proxies: vec![],
            rate_limits: true,
            webhook_allow_private: false,
            webhook_backoff_base_s: 10,
            webhook_lease: Duration::from_secs(60),
            api_key_grace_s: 86_400,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            hash_concurrency: cores(),
            hash_queue_timeout: Duration::from_secs(5),
            license_cache_capacity: 1_000_000,
            log_format: LogFormat::Text,
            log_filter: "info".into(),
            reaper_interval: Duration::from_secs(10),
            session_ttl: Duration::from_secs(12 * 3600),
            webhook_disable_after: Duration::from_secs(3 * 86_400),
            limits: Default::default(),
            redis_url: None,
            redis_prefix: "ecosire".into(),
            public_url: None,
            smtp_url: None,
            mail_from: DEFAULT_MAIL_FROM.into(),
            mail_dir: None,
            mail_backoff_base: Duration::from_secs(30),
            stripe_secret_key: None,
            stripe_api_base: DEFAULT_STRIPE_API_BASE.into(),
            oidc: None,
        }
    }
}

/// The value a variable takes when it is unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// This value, written as one would write it in the variable.
    Value(String),
    /// Worked out at start, e.g. from the number of CPU cores.
    Computed(&'static str),
    /// Nothing: the feature it configures is off or empty.
    Unset,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::Value(v) => write!(f, "{v}"),
            Fallback::Computed(what) => write!(f, "{what}"),
            Fallback::Unset => write!(f, "unset"),
        }
    }
}

/// One environment variable the server reads.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub default: Fallback,
    pub example: &'static str,
    pub meaning: String,
}

/// `30/min` for a rule, as `Rule::parse` reads it.
fn rule_text(r: &Rule) -> String {
    let unit = match r.period.as_secs() {
        1 => "s".to_string(),
        60 => "min".to_string(),
        3600 => "h".to_string(),
        86_400 => "day".to_string(),
        s => format!("{s}s"),
    };
    format!("{}/{unit}", r.limit)
}

/// The name of a bucket's variable: `ECOSIRE_RATE_LIMIT_LOGIN` for `login`.
fn bucket_variable(bucket: &str) -> String {
    format!("ECOSIRE_RATE_LIMIT_{}", bucket.to_ascii_uppercase())
}

/// Every variable the server reads, in the order of the reference table; one row per rate-limit
/// bucket, so a bucket added to `BUCKETS` is listed, parsed and documented without more code.
pub fn variables() -> Vec<Variable> {
    use Fallback::{Computed, Unset};
    let value = |v: &str| Fallback::Value(v.to_string());
    let var = |name: &str, default: Fallback, example: &'static str, meaning: &str| Variable {
        name: name.to_string(),
        default,
        example,
        meaning: meaning.to_string(),
    };
    let mut vars = vec![
        var(
            "ECOSIRE_BIND",
            value("127.0.0.1:8080"),
            "0.0.0.0:8080",
            "address and port to listen on (port 0: any free port)",
        ),
        var(
            "DATABASE_URL",
            value("sqlite://data/ecosire.db"),
            "postgres://ecosire:secret@db:5432/ecosire",
            "sqlite://PATH (a file, created when missing) or postgres://…",
        ),
        var(
            "ECOSIRE_DB_ACQUIRE_TIMEOUT_S",
            value("3"),
            "10",
            "seconds a request waits for a PostgreSQL connection before 503 DATABASE_UNAVAILABLE",
        ),
        var(
            "ECOSIRE_DB_MAX_CONNECTIONS",
            value("16"),
            "8",
            "PostgreSQL connections this instance may open (plus one for LISTEN); N instances need N × (this + 1) within max_connections",
        ),
        var(
            "ECOSIRE_KEYS_DIR",
            value("keys"),
            "/var/lib/ecosire/keys",
            "folder of the signing keys and the data key; missing keys are generated at start",
        ),
        var(
            "ECOSIRE_KEY_PUBLISH_LEAD_S",
            value("86400"),
            "3600",
            "seconds a key added by ecosire keys rotate is published before it signs (ecosire keys activate KID: at once)",
        ),
        var(
            "ECOSIRE_ADMIN_EMAIL",
            Unset,
            "ops@example.com",
            "with ECOSIRE_ADMIN_PASSWORD: this admin is created at start unless the user exists",
        ),
        var(
            "ECOSIRE_ADMIN_PASSWORD",
            Unset,
            "a-long-random-passphrase",
            "the password of ECOSIRE_ADMIN_EMAIL, at least 8 characters",
        ),
        var(
            "STRIPE_WEBHOOK_SECRET",
            Unset,
            "whsec_…",
            "Stripe's signing secret for POST /api/webhooks/stripe; unset: that route answers 503",
        ),
        var(
            "ECOSIRE_WEBHOOK_URL",
            Unset,
            "https://hooks.example.com/ecosire",
            "with ECOSIRE_LICENSE_SECRET: a webhook endpoint for every event, configured at start",
        ),
        var(
            "ECOSIRE_LICENSE_SECRET",
            Unset,
            "whsec_…",
            "the signing secret of the deliveries to ECOSIRE_WEBHOOK_URL",
        ),
        var(
            "ECOSIRE_COOKIE_SECURE",
            value("true"),
            "false",
            "session cookies over https only; false for plain-http local use",
        ),
        var(
            "ECOSIRE_REGISTRATION",
            value("on"),
            "off",
            "off closes POST /api/auth/register (403 REGISTRATION_CLOSED)",
        ),
        var(
            "ECOSIRE_TOKEN_ISSUER",
            value("ecosire"),
            "licenses.example.com",
            "the iss claim of license and session tokens",
        ),
        var(
            "ECOSIRE_ALLOWED_ORIGINS",
            Unset,
            "https://app.example.com,https://example.com",
            "comma-separated origins whose cookie-authenticated writes are accepted",
        ),
        var(
            "ECOSIRE_TRUSTED_PROXIES",
            Unset,
            "10.0.0.0/8,192.168.1.5",
            "comma-separated CIDRs or addresses whose X-Forwarded-For is believed",
        ),
        var(
            "ECOSIRE_RATE_LIMITS",
            value("on"),
            "off",
            "off disables rate limiting (load tests, benchmarks)",
        ),
    ];
    vars.extend(BUCKETS.iter().map(|(bucket, rule)| {
        var(
            &bucket_variable(bucket),
            Fallback::Value(rule_text(rule)),
            "100/min",
            &format!("rate of the {bucket} bucket: N/s, N/min, N/h or N/day"),
        )
    }));
    vars.extend([
        var(
            "ECOSIRE_QUOTA_PLANS",
            value("free=1000"),
            "free=1000,pro=100000,enterprise=unlimited",
            "daily API calls per customer plan (0 or unlimited: none); unknown plans get free's",
        ),
        var(
            "ECOSIRE_REDIS_URL",
            Unset,
            "redis://:secret@redis:6379/0",
            "share the rate limits of all instances through this Redis; unset or unreachable: local",
        ),
        var(
            "ECOSIRE_REDIS_PREFIX",
            value("ecosire"),
            "ecosire-eu",
            "first part of every Redis key the server writes (deployments sharing one Redis)",
        ),
        var(
            "ECOSIRE_PUBLIC_URL",
            Computed("http:// + ECOSIRE_BIND"),
            "https://licenses.example.com",
            "the base of links in emails (verification, invitations, password reset)",
        ),
        var(
            "ECOSIRE_SMTP_URL",
            Unset,
            "smtp://user:secret@mail.example.com:587",
            "outgoing mail: smtp://user:pass@host:587 (STARTTLS), smtps://…:465, smtp://host:25?tls=none; unset: .eml files in data/mail/",
        ),
        var(
            "ECOSIRE_MAIL_FROM",
            value(DEFAULT_MAIL_FROM),
            "Example Licensing <licenses@example.com>",
            "the sender of every message",
        ),
        var(
            "ECOSIRE_MAIL_DIR",
            Computed("mail/ beside the SQLite database (data/mail)"),
            "/var/lib/ecosire/mail",
            "where messages are written as .eml files when ECOSIRE_SMTP_URL is unset",
        ),
        var(
            "STRIPE_SECRET_KEY",
            Unset,
            "sk_live_…",
            "with it (a restricted key that reads Checkout Sessions is enough), a checkout without metadata.productIds has its line items fetched from Stripe and mapped through stripe_price_ids, one license per unit; if Stripe cannot be read, the webhook answers 502 and Stripe retries",
        ),
        var(
            "STRIPE_API_BASE",
            value(DEFAULT_STRIPE_API_BASE),
            "http://127.0.0.1:12111",
            "Stripe's API, for line items (a local stand-in in tests)",
        ),
        var(
            "ECOSIRE_OIDC_ISSUER",
            Unset,
            "https://auth.example.com/application/o/ecosire/",
            "sign-in through this OpenID provider (docs/oidc.md); its discovery document is read at start and retried in the background while it cannot be reached",
        ),
        var(
            "ECOSIRE_OIDC_CLIENT_ID",
            Unset,
            "ecosire",
            "this server's client id at the provider (required with ECOSIRE_OIDC_ISSUER); the redirect URI to register is ECOSIRE_PUBLIC_URL + /api/auth/oidc/callback",
        ),
        var(
            "ECOSIRE_OIDC_CLIENT_SECRET",
            Unset,
            "…",
            "the client's secret (confidential client; unset: a public client with PKCE only); never logged",
        ),
        var(
            "ECOSIRE_OIDC_AUDIENCE",
            Computed("ECOSIRE_OIDC_CLIENT_ID"),
            "https://licenses.example.com",
            "the aud a provider-issued JWT access token must carry to be accepted as a bearer credential",
        ),
        var(
            "ECOSIRE_OIDC_ADMIN_GROUP",
            Unset,
            "ecosire-admins",
            "members of this provider group are admins, others customers, synced at each sign-in and token; unset: roles are managed here only",
        ),
        var(
            "ECOSIRE_OIDC_LABEL",
            value("SSO"),
            "Authentik",
            "the sign-in page's button reads \"Sign in with\" and this",
        ),
        var(
            "ECOSIRE_OIDC_SCOPES",
            value(DEFAULT_OIDC_SCOPES),
            "openid email profile groups",
            "the scopes the browser sign-in asks for (space- or comma-separated; openid is always asked)",
        ),
        var(
            "ECOSIRE_OIDC_GROUPS_CLAIM",
            value("groups"),
            "https://example.com/groups",
            "the token claim that lists a person's groups (Auth0 needs a namespaced one)",
        ),
        var(
            "ECOSIRE_OIDC_SERVICE_ACCOUNTS",
            Unset,
            "billing-sync=billing@example.com:read-write",
            "client-credentials callers: SUBJECT=EMAIL:SCOPE, comma-separated; a provider token whose sub (or client_id) is SUBJECT acts as that local user with that API-key scope",
        ),
        var(
            "ECOSIRE_WEBHOOK_ALLOW_PRIVATE",
            value("false"),
            "true",
            "allow webhooks to loopback and private addresses (refused by default: SSRF)",
        ),
        var(
            "ECOSIRE_WEBHOOK_BACKOFF_BASE_S",
            value("10"),
            "30",
            "seconds before the first webhook retry; each next delay doubles, with jitter",
        ),
        var(
            "ECOSIRE_WEBHOOK_LEASE_S",
            value("60"),
            "30",
            "seconds a claimed delivery stays reserved to its instance; after a crash it is sent again once this passes (at least 15)",
        ),
        var(
            "ECOSIRE_API_KEY_GRACE_S",
            value("86400"),
            "3600",
            "seconds a rotated API key keeps working",
        ),
        var(
            "ECOSIRE_HEADER_TIMEOUT_S",
            value("10"),
            "5",
            "seconds to receive a request's headers",
        ),
        var(
            "ECOSIRE_REQUEST_TIMEOUT_S",
            value("30"),
            "60",
            "seconds for a whole request, body included",
        ),
        var(
            "ECOSIRE_IDLE_TIMEOUT_S",
            value("60"),
            "120",
            "seconds an idle keep-alive connection stays open",
        ),
        var(
            "ECOSIRE_MAX_CONNECTIONS",
            value("1024"),
            "4096",
            "connections open at once",
        ),
        var(
            "ECOSIRE_HASH_CONCURRENCY",
            Computed("the number of CPU cores"),
            "2",
            "Argon2 password hashes computed at once",
        ),
        var(
            "ECOSIRE_LICENSE_CACHE_CAPACITY",
            value("1000000"),
            "200000",
            "license snapshots kept in memory (under 1 KiB each); validate runs no query for these",
        ),
        var(
            "ECOSIRE_HASH_QUEUE_TIMEOUT_S",
            value("5"),
            "2",
            "seconds a request waits for a hashing slot before 503 BUSY",
        ),
        var(
            "ECOSIRE_LOG_FORMAT",
            value("text"),
            "json",
            "text, or json: every log line and the start-up banner as JSON on stderr",
        ),
        var(
            "RUST_LOG",
            value("info"),
            "warn,ecosire=debug",
            "log filter, tracing EnvFilter syntax",
        ),
    ]);
    vars
}

/// The variables for `ecosire serve --help`.
pub fn help_text() -> String {
    let mut s = String::from("Environment variables (docs/configuration.md explains each):\n");
    for v in variables() {
        s.push_str(&format!(
            "  {}  [default: {}]\n          {}\n",
            v.name, v.default, v.meaning
        ));
    }
    s
}

/// One row of the reference table in docs/configuration.md.
pub fn markdown_row(v: &Variable) -> String {
    let default = match &v.default {
        Fallback::Value(d) => format!("`{d}`"),
        other => other.to_string(),
    };
    format!(
        "| `{}` | {default} | `{}` | {} |",
        v.name, v.example, v.meaning
    )
}

/// `ECOSIRE_*` names among `names` that the server does not read, each with the known name
/// closest to it: a misspelled variable is otherwise silently ignored. Names are compared
/// without regard to case, so `ecosire_bind` is caught too.
pub fn unknown_variables(names: impl IntoIterator<Item = String>) -> Vec<(String, String)> {
    let known: Vec<String> = variables().into_iter().map(|v| v.name).collect();
    names
        .into_iter()
        .filter(|n| n.to_ascii_uppercase().starts_with("ECOSIRE_") && !known.contains(n))
        .map(|n| {
            let upper = n.to_ascii_uppercase();
            let closest = known
                .iter()
                .min_by_key(|k| edit_distance(&upper, k))
                .cloned()
                .unwrap_or_default();
            (n, closest)
        })
        .collect()
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A view of the environment (the process's, or a map in tests). Besides the whole [`Config`],
/// it reads the few variables a command needs alone, so `ecosire license verify-token` does not
/// fail on, say, a bad `ECOSIRE_BIND`.
pub struct Env<F>(pub F);

impl Env<fn(&str) -> Option<String>> {
    /// The process environment.
    pub fn process() -> Self {
        Env(|k| std::env::var(k).ok())
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// The value of `var`; blank counts as unset.
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    /// Parses `var` when set; `parse` says what was expected when the value is wrong.
    fn parse<T>(
        &self,
        var: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(var)
            .map(|v| parse(v.trim()).map_err(|message| err(var, message)))
            .transpose()
    }

    fn bool(&self, var: &'static str) -> Result<Option<bool>, ConfigError> {
        self.parse(var, |v| match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            other => Err(format!("expected true/false or on/off, got '{other}'")),
        })
    }

    /// A whole number, at least `min`.
    fn number(&self, var: &'static str, min: u64) -> Result<Option<u64>, ConfigError> {
        self.parse(var, |v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| format!("expected a whole number of at least {min}, got '{v}'"))
        })
    }

    fn seconds(&self, var: &'static str, min: u64) -> Result<Option<Duration>, ConfigError> {
        Ok(self.number(var, min)?.map(Duration::from_secs))
    }

    fn count(&self, var: &'static str) -> Result<Option<usize>, ConfigError> {
        Ok(self
            .number(var, 1)?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    /// `ECOSIRE_KEYS_DIR`.
    pub fn keys_dir(&self) -> PathBuf {
        self.get("ECOSIRE_KEYS_DIR")
            .map_or_else(|| Config::default().keys_dir, PathBuf::from)
    }

    /// `ECOSIRE_KEY_PUBLISH_LEAD_S`.
    pub fn key_publish_lead(&self) -> Result<Duration, ConfigError> {
        Ok(self
            .seconds("ECOSIRE_KEY_PUBLISH_LEAD_S", 0)?
            .unwrap_or(Config::default().key_publish_lead))
    }

    /// `ECOSIRE_TOKEN_ISSUER`.
    pub fn token_issuer(&self) -> String {
        self.get("ECOSIRE_TOKEN_ISSUER")
            .map_or_else(|| Config::default().token_issuer, |v| v.trim().to_string())
    }

    /// `DATABASE_URL`.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        Ok(self
            .parse("DATABASE_URL", |v| {
                if v.starts_with("sqlite:")
                    || v.starts_with("postgres://")
                    || v.starts_with("postgresql://")
                {
                    Ok(v.to_string())
                } else {
                    Err("expected sqlite://PATH or postgres://…".into())
                }
            })?
            .unwrap_or_else(|| Config::default().database_url))
    }

    /// `ECOSIRE_LOG_FORMAT` and `RUST_LOG`.
    pub fn logging(&self) -> Result<(LogFormat, String), ConfigError> {
        let format = self
            .parse("ECOSIRE_LOG_FORMAT", |v| {
                match v.to_ascii_lowercase().as_str() {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    other => Err(format!("expected text or json, got '{other}'")),
                }
            })?
            .unwrap_or(LogFormat::Text);
        let filter = self
            .parse("RUST_LOG", |v| {
                tracing_subscriber::EnvFilter::try_new(v)
                    .map(|_| v.to_string())
                    .map_err(|e| {
                        format!("not a log filter such as info or warn,ecosire=debug: {e}")
                    })
            })?
            .unwrap_or_else(|| Config::default().log_filter);
        Ok((format, filter))
    }

    /// `ECOSIRE_OIDC_*`: every one is read; the issuer switches the feature on, and the others
    /// are then checked.
    fn oidc(&self) -> Result<Option<OidcConfig>, ConfigError> {
        let issuer = self.parse("ECOSIRE_OIDC_ISSUER", |v| {
            match url::Url::parse(v) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {
                    Ok(v.to_string())
                }
                _ => Err(format!(
                    "expected the provider's issuer URL such as https://auth.example.com/application/o/ecosire/, got '{v}'"
                )),
            }
        })?;
        let client_id = self
            .get("ECOSIRE_OIDC_CLIENT_ID")
            .map(|v| v.trim().to_string());
        let client_secret = self.get("ECOSIRE_OIDC_CLIENT_SECRET");
        let audience = self
            .get("ECOSIRE_OIDC_AUDIENCE")
            .map(|v| v.trim().to_string());
        let admin_group = self
            .get("ECOSIRE_OIDC_ADMIN_GROUP")
            .map(|v| v.trim().to_string());
        let label = self.get("ECOSIRE_OIDC_LABEL").map(|v| v.trim().to_string());
        let scopes = self.get("ECOSIRE_OIDC_SCOPES");
        let groups_claim = self
            .get("ECOSIRE_OIDC_GROUPS_CLAIM")
            .map(|v| v.trim().to_string());
        let service_accounts =
            self.parse("ECOSIRE_OIDC_SERVICE_ACCOUNTS", parse_service_accounts)?;
        let Some(issuer) = issuer else {
            return Ok(None);
        };
        let client_id = client_id.ok_or_else(|| {
            err(
                "ECOSIRE_OIDC_CLIENT_ID",
                "required with ECOSIRE_OIDC_ISSUER: this server's client id at the provider",
            )
        })?;
        let mut o = OidcConfig::new(&issuer, &client_id, client_secret.as_deref());
        if let Some(a) = audience {
            o.audience = a;
        }
        o.admin_group = admin_group;
        if let Some(l) = label {
            o.label = l;
        }
        if let Some(s) = scopes {
            let mut scopes = list(&s.replace(' ', ","));
            if !scopes.iter().any(|s| s == "openid") {
                scopes.insert(0, "openid".into());
            }
            o.scopes = scopes;
        }
        if let Some(g) = groups_claim {
            o.groups_claim = g;
        }
        o.service_accounts = service_accounts.unwrap_or_default();
        Ok(Some(o))
    }

    /// The whole configuration; every variable of [`variables`] is read and checked.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(bind) = self.parse("ECOSIRE_BIND", |v| {
            v.parse()
                .map_err(|_| format!("expected host:port such as 127.0.0.1:8080, got '{v}'"))
        })? {
            c.bind = bind;
        }
        c.database_url = self.database_url()?;
        c.db_acquire_timeout = self
            .seconds("ECOSIRE_DB_ACQUIRE_TIMEOUT_S", 1)?
            .unwrap_or(c.db_acquire_timeout);
        c.db_max_connections = self
            .count("ECOSIRE_DB_MAX_CONNECTIONS")?
            .map_or(c.db_max_connections, |n| n.min(10_000) as u32);
        c.keys_dir = self.keys_dir();
        c.key_publish_lead = self.key_publish_lead()?;
        c.admin_email = self.parse("ECOSIRE_ADMIN_EMAIL", |v| {
            crate::http::checks::normalize_email(v)
                .ok_or_else(|| format!("'{v}' is not a valid email address"))
        })?;
        c.admin_password = self.get("ECOSIRE_ADMIN_PASSWORD");
        if let Some(p) = &c.admin_password
            && p.chars().count() < 8
        {
            return Err(err(
                "ECOSIRE_ADMIN_PASSWORD",
                "must be at least 8 characters",
            ));
        }
        if c.admin_email.is_some() != c.admin_password.is_some() {
            return Err(err(
                if c.admin_email.is_some() {
                    "ECOSIRE_ADMIN_PASSWORD"
                } else {
                    "ECOSIRE_ADMIN_EMAIL"
                },
                "ECOSIRE_ADMIN_EMAIL and ECOSIRE_ADMIN_PASSWORD must be set together",
            ));
        }
        c.stripe_webhook_secret = self.get("STRIPE_WEBHOOK_SECRET");
        c.license_secret = self.get("ECOSIRE_LICENSE_SECRET");
        c.webhook_url = self.get("ECOSIRE_WEBHOOK_URL");
        if c.webhook_url.is_some() != c.license_secret.is_some() {
            return Err(err(
                if c.webhook_url.is_some() {
                    "ECOSIRE_LICENSE_SECRET"
                } else {
                    "ECOSIRE_WEBHOOK_URL"
                },
                "ECOSIRE_WEBHOOK_URL and ECOSIRE_LICENSE_SECRET must be set together",
            ));
        }
        c.cookie_secure = self
            .bool("ECOSIRE_COOKIE_SECURE")?
            .unwrap_or(c.cookie_secure);
        c.registration = self.bool("ECOSIRE_REGISTRATION")?.unwrap_or(c.registration);
        c.token_issuer = self.token_issuer();
        if let Some(origins) = self.parse("ECOSIRE_ALLOWED_ORIGINS", |v| {
            let origins = list(v);
            match origins
                .iter()
                .find(|o| !(o.starts_with("http://") || o.starts_with("https://")))
            {
                Some(o) => Err(format!("'{o}' is not an http(s) origin")),
                None => Ok(origins),
            }
        })? {
            c.allowed_origins = origins;
        }
        if let Some(proxies) = self.parse("ECOSIRE_TRUSTED_PROXIES", |v| {
            list(v)
                .iter()
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("'{s}' is not a CIDR such as 10.0.0.0/8"))
                })
                .collect()
        })? {
            c.trusted_proxies = proxies;
        }
        c.rate_limits = self.bool("ECOSIRE_RATE_LIMITS")?.unwrap_or(c.rate_limits);
        for (bucket, _) in BUCKETS {
            let var = bucket_variable(bucket);
            if let Some(v) = self.get(&var) {
                let rule = Rule::parse(&v).ok_or_else(|| {
                    err(
                        leak(var),
                        format!("expected a rate such as 30/min, 5/s or 1000/h, got '{v}'"),
                    )
                })?;
                c.limits.rules.insert(bucket.to_string(), rule);
            }
        }
        if let Some(plans) = self.parse("ECOSIRE_QUOTA_PLANS", parse_plans)? {
            c.limits.plans.extend(plans);
        }
        c.redis_url = self.parse("ECOSIRE_REDIS_URL", parse_redis_url)?;
        if let Some(prefix) = self.parse("ECOSIRE_REDIS_PREFIX", |v| {
            if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(format!("expected a prefix without spaces, got '{v}'"))
            } else {
                Ok(v.to_string())
            }
        })? {
            c.redis_prefix = prefix;
        }
        c.public_url = self.parse("ECOSIRE_PUBLIC_URL", |v| {
            let u = url::Url::parse(v).map_err(|_| format!("'{v}' is not a URL"))?;
            if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
                return Err(format!("expected http(s)://host[/path], got '{v}'"));
            }
            Ok(v.trim_end_matches('/').to_string())
        })?;
        c.smtp_url = self.parse("ECOSIRE_SMTP_URL", |v| {
            crate::mail::transport::SmtpSpec::parse(v).map(|_| v.to_string())
        })?;
        if let Some(from) = self.parse("ECOSIRE_MAIL_FROM", |v| {
            v.parse::<lettre::message::Mailbox>()
                .map(|_| v.to_string())
                .map_err(|_| {
                    format!("expected an address such as 'Name <noreply@example.com>', got '{v}'")
                })
        })? {
            c.mail_from = from;
        }
        c.mail_dir = self.get("ECOSIRE_MAIL_DIR").map(PathBuf::from);
        c.stripe_secret_key = self.get("STRIPE_SECRET_KEY");
        if let Some(base) = self.parse("STRIPE_API_BASE", |v| {
            let u = url::Url::parse(v).map_err(|_| format!("'{v}' is not a URL"))?;
            if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
                return Err(format!("expected http(s)://host, got '{v}'"));
            }
            Ok(v.trim_end_matches('/').to_string())
        })? {
            c.stripe_api_base = base;
        }
        c.oidc = self.oidc()?;
        c.webhook_allow_private = self
            .bool("ECOSIRE_WEBHOOK_ALLOW_PRIVATE")?
            .unwrap_or(c.webhook_allow_private);
        c.webhook_backoff_base_s = self
            .number("ECOSIRE_WEBHOOK_BACKOFF_BASE_S", 0)?
            .unwrap_or(c.webhook_backoff_base_s);
        // A lease shorter than a delivery attempt (10 s timeout, DNS, recording) could let a
        // second instance send a delivery that is still being sent.
        c.webhook_lease = self
            .seconds("ECOSIRE_WEBHOOK_LEASE_S", 15)?
            .unwrap_or(c.webhook_lease);
        c.api_key_grace_s = self
            .number("ECOSIRE_API_KEY_GRACE_S", 0)?
            .unwrap_or(c.api_key_grace_s);
        // A zero timeout would fail every request; a zero queue wait means "never queue".
        c.header_timeout = self
            .seconds("ECOSIRE_HEADER_TIMEOUT_S", 1)?
            .unwrap_or(c.header_timeout);
        c.request_timeout = self
            .seconds("ECOSIRE_REQUEST_TIMEOUT_S", 1)?
            .unwrap_or(c.request_timeout);
        c.idle_timeout = self
            .seconds("ECOSIRE_IDLE_TIMEOUT_S", 1)?
            .unwrap_or(c.idle_timeout);
        c.max_connections = self
            .count("ECOSIRE_MAX_CONNECTIONS")?
            .unwrap_or(c.max_connections);
        c.hash_concurrency = self
            .count("ECOSIRE_HASH_CONCURRENCY")?
            .unwrap_or(c.hash_concurrency);
        c.hash_queue_timeout = self
            .seconds("ECOSIRE_HASH_QUEUE_TIMEOUT_S", 0)?
            .unwrap_or(c.hash_queue_timeout);
        c.license_cache_capacity = self
            .count("ECOSIRE_LICENSE_CACHE_CAPACITY")?
            .unwrap_or(c.license_cache_capacity);
        (c.log_format, c.log_filter) = self.logging()?;
        Ok(c)
    }
}

/// `redis://[:password@]host[:port][/db]` or `unix:///path/redis.sock`. TLS (`rediss://`) is not
/// built in: terminate it in a local proxy such as stunnel.
fn parse_redis_url(v: &str) -> Result<String, String> {
    use redis::IntoConnectionInfo;
    if v.starts_with("rediss://") {
        return Err("rediss:// (TLS) is not supported; use redis:// or unix://".into());
    }
    v.into_connection_info()
        .map(|_| v.to_string())
        .map_err(|_| {
            format!(
                "expected redis://host:port or unix:///path, got '{}'",
                redact_url(v)
            )
        })
}

/// `billing-sync=billing@example.com:read-write,…`: service accounts by token subject.
fn parse_service_accounts(v: &str) -> Result<Vec<ServiceAccount>, String> {
    list(v)
        .iter()
        .map(|item| {
            let shape = || format!("expected SUBJECT=EMAIL:SCOPE, got '{item}'");
            let (subject, rest) = item.split_once('=').ok_or_else(shape)?;
            let (email, scope) = rest.rsplit_once(':').ok_or_else(shape)?;
            let email = crate::http::checks::normalize_email(email)
                .ok_or_else(|| format!("'{email}' is not a valid email address"))?;
            let scope = match scope.trim() {
                "read-only" => crate::auth::Scope::ReadOnly,
                "read-write" => crate::auth::Scope::ReadWrite,
                "admin" => crate::auth::Scope::Admin,
                other => {
                    return Err(format!(
                        "scope '{other}': expected read-only, read-write or admin"
                    ));
                }
            };
            let subject = subject.trim();
            if subject.is_empty() {
                return Err(shape());
            }
            Ok(ServiceAccount {
                subject: subject.to_string(),
                email,
                scope,
            })
        })
        .collect()
}

/// `free=1000,pro=unlimited`: daily calls per plan; `0` or `unlimited` means no quota.
fn parse_plans(v: &str) -> Result<Vec<(String, Option<u64>)>, String> {
    list(v)
        .iter()
        .map(|item| {
            let (plan, n) = item
                .split_once('=')
                .ok_or_else(|| format!("expected plan=calls_per_day, got '{item}'"))?;
            let quota = match n.trim() {
                "unlimited" | "0" => None,
                n => Some(
                    n.parse::<u64>()
                        .map_err(|_| format!("'{n}' is not a number of calls"))?,
                ),
            };
            Ok((plan.trim().to_string(), quota))
        })
        .collect()
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Env::process().config()
    }

    /// Reads configuration through `get` (the environment in production, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Env(get).config()
    }

    /// The base of links in emails: `ECOSIRE_PUBLIC_URL`, else `http://` and the bind address.
    pub fn public_base(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind))
    }

    /// Where messages are written as `.eml` files when no SMTP server is configured.
    pub fn mail_dir(&self) -> PathBuf {
        self.mail_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("mail"))
    }

    /// The folder for files the server keeps beside its data (the generated admin password):
    /// the SQLite database's folder, or `data` with PostgreSQL.
    pub fn data_dir(&self) -> PathBuf {
        let Some(rest) = self.database_url.strip_prefix("sqlite:") else {
            return PathBuf::from("data");
        };
        let rest = rest.trim_start_matches("//");
        let path = rest.split_once('?').map_or(rest, |(path, _)| path);
        match Path::new(path).parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = from(&[]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://data/ecosire.db");
        assert!(c.cookie_secure && c.registration && c.rate_limits && !c.webhook_allow_private);
        assert_eq!(c.api_key_grace_s, 86_400);
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.hash_concurrency, cores());
        assert_eq!(c.hash_queue_timeout, Duration::from_secs(5));
        assert_eq!(c.log_filter, "info");
    }

    #[test]
    fn server_limits_are_read() {
        let c = from(&[
            ("ECOSIRE_HEADER_TIMEOUT_S", "3"),
            ("ECOSIRE_REQUEST_TIMEOUT_S", "7"),
            ("ECOSIRE_IDLE_TIMEOUT_S", "9"),
            ("ECOSIRE_MAX_CONNECTIONS", "12"),
            ("ECOSIRE_HASH_CONCURRENCY", "3"),
            ("ECOSIRE_HASH_QUEUE_TIMEOUT_S", "0"),
            ("ECOSIRE_DB_MAX_CONNECTIONS", "5"),
            ("ECOSIRE_LICENSE_CACHE_CAPACITY", "1000"),
        ])
        .unwrap();
        assert_eq!((c.db_max_connections, c.license_cache_capacity), (5, 1000));
        assert_eq!(
            (c.header_timeout, c.request_timeout, c.idle_timeout),
            (
                Duration::from_secs(3),
                Duration::from_secs(7),
                Duration::from_secs(9)
            )
        );
        assert_eq!((c.max_connections, c.hash_concurrency), (12, 3));
        assert_eq!(c.hash_queue_timeout, Duration::ZERO);
        for var in [
            "ECOSIRE_HEADER_TIMEOUT_S",
            "ECOSIRE_REQUEST_TIMEOUT_S",
            "ECOSIRE_IDLE_TIMEOUT_S",
            "ECOSIRE_MAX_CONNECTIONS",
            "ECOSIRE_HASH_CONCURRENCY",
        ] {
            assert_eq!(from(&[(var, "0")]).unwrap_err().var, var, "zero {var}");
            assert_eq!(from(&[(var, "ten")]).unwrap_err().var, var, "word {var}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from(&[("ECOSIRE_BIND", "nope")]).unwrap_err();
        assert_eq!(e.var, "ECOSIRE_BIND");
        assert!(e.to_string().starts_with("ECOSIRE_BIND: "));
        assert_eq!(
            from(&[("ECOSIRE_RATE_LIMITS", "maybe")]).unwrap_err().var,
            "ECOSIRE_RATE_LIMITS"
        );
        assert_eq!(
            from(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var,
            "DATABASE_URL"
        );
        assert_eq!(
            from(&[("ECOSIRE_TRUSTED_PROXIES", "10.0.0.0/99")])
                .unwrap_err()
                .var,
            "ECOSIRE_TRUSTED_PROXIES"
        );
        assert_eq!(
            from(&[("ECOSIRE_ADMIN_EMAIL", "ann@example.com")])
                .unwrap_err()
                .var,
            "ECOSIRE_ADMIN_PASSWORD"
        );
        assert_eq!(
            from(&[("ECOSIRE_RATE_LIMIT_LOGIN", "lots")])
                .unwrap_err()
                .var,
            "ECOSIRE_RATE_LIMIT_LOGIN"
        );
        assert_eq!(
            from(&[("RUST_LOG", "ecosire=loud")]).unwrap_err().var,
            "RUST_LOG"
        );
    }

    #[test]
    fn the_redis_url_is_checked_and_its_password_never_shown() {
        let c = from(&[
            ("ECOSIRE_REDIS_URL", "redis://:s3cret-pw@cache:6379/2"),
            ("ECOSIRE_REDIS_PREFIX", "eu"),
        ])
        .unwrap();
        assert_eq!(
            c.redis_url.as_deref(),
            Some("redis://:s3cret-pw@cache:6379/2")
        );
        assert_eq!(c.redis_prefix, "eu");
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        assert!(from(&[("ECOSIRE_REDIS_URL", "unix:///run/redis.sock")]).is_ok());
        for bad in [
            "rediss://:s3cret@cache:6380",
            "http://:s3cret@cache",
            "cache:6379",
        ] {
            let e = from(&[("ECOSIRE_REDIS_URL", bad)]).unwrap_err();
            assert_eq!(e.var, "ECOSIRE_REDIS_URL", "{bad}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        let e = from(&[("ECOSIRE_REDIS_PREFIX", "a b")]).unwrap_err();
        assert_eq!(e.var, "ECOSIRE_REDIS_PREFIX");
    }

    #[test]
    fn oidc_is_switched_on_by_the_issuer_and_its_secret_never_shown() {
        assert!(
            from(&[("ECOSIRE_OIDC_LABEL", "Authentik")])
                .unwrap()
                .oidc
                .is_none()
        );
        let e = from(&[("ECOSIRE_OIDC_ISSUER", "https://auth.example.com/o/")]).unwrap_err();
        assert_eq!(e.var, "ECOSIRE_OIDC_CLIENT_ID");
        let e = from(&[("ECOSIRE_OIDC_ISSUER", "auth.example.com")]).unwrap_err();
        assert_eq!(e.var, "ECOSIRE_OIDC_ISSUER");
        let c = from(&[
            ("ECOSIRE_OIDC_ISSUER", "https://auth.example.com/o/"),
            ("ECOSIRE_OIDC_CLIENT_ID", "ecosire"),
            ("ECOSIRE_OIDC_CLIENT_SECRET", "s3cret-client"),
            ("ECOSIRE_OIDC_SCOPES", "email profile groups"),
            (
                "ECOSIRE_OIDC_SERVICE_ACCOUNTS",
                "sync=Sync@Example.com:read-write, ops=ops@example.com:admin",
            ),
        ])
        .unwrap();
        let o = c.oidc.as_ref().unwrap();
        assert_eq!(
            o.audience, "ecosire",
            "the audience defaults to the client id"
        );
        assert_eq!(o.scopes, ["openid", "email", "profile", "groups"]);
        assert_eq!(o.label, "SSO");
        assert_eq!(
            o.service_accounts[0],
            ServiceAccount {
                subject: "sync".into(),
                email: "sync@example.com".into(),
                scope: crate::auth::Scope::ReadWrite
            }
        );
        assert_eq!(o.service_accounts[1].scope, crate::auth::Scope::Admin);
        assert!(!format!("{c:?}").contains("s3cret-client"), "{c:?}");
        for bad in ["sync", "sync=a@b.io", "sync=a@b.io:owner", "=a@b.io:admin"] {
            let e = from(&[("ECOSIRE_OIDC_SERVICE_ACCOUNTS", bad)]).unwrap_err();
            assert_eq!(e.var, "ECOSIRE_OIDC_SERVICE_ACCOUNTS", "{bad}");
        }
    }

    #[test]
    fn the_admin_email_must_be_an_address() {
        let e = from(&[
            ("ECOSIRE_ADMIN_EMAIL", "admin"),
            ("ECOSIRE_ADMIN_PASSWORD", "long-enough-password"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "ECOSIRE_ADMIN_EMAIL");
        assert!(e.message.contains("'admin'"), "{e}");
        let c = from(&[
            ("ECOSIRE_ADMIN_EMAIL", " Ops@Example.com "),
            ("ECOSIRE_ADMIN_PASSWORD", "long-enough-password"),
        ])
        .unwrap();
        assert_eq!(c.admin_email.as_deref(), Some("ops@example.com"));
    }

    #[test]
    fn database_password_is_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert!(
            !format!(
                "{:?}",
                from(&[("DATABASE_URL", "postgres://u:pw@h/d")]).unwrap()
            )
            .contains("pw@")
        );
    }

    /// The reference list and the parser cannot drift apart: the parser asks for exactly the
    /// listed names.
    #[test]
    fn the_parser_reads_exactly_the_listed_variables() {
        let asked = RefCell::new(BTreeSet::new());
        Config::from_lookup(|k| {
            asked.borrow_mut().insert(k.to_string());
            None
        })
        .unwrap();
        let listed: BTreeSet<String> = variables().into_iter().map(|v| v.name).collect();
        assert_eq!(asked.into_inner(), listed);
    }

    /// Each listed default, written into its variable, gives the built-in default.
    #[test]
    fn listed_defaults_are_the_defaults() {
        let default = format!("{:?}", Config::default());
        for v in variables() {
            if let Fallback::Value(value) = &v.default {
                let c = from(&[(&v.name, value)]).unwrap();
                assert_eq!(format!("{c:?}"), default, "{}={value}", v.name);
            }
        }
    }

    #[test]
    fn every_variable_is_documented() {
        let doc = include_str!("../docs/configuration.md");
        let missing: Vec<String> = variables()
            .iter()
            .map(markdown_row)
            .filter(|row| !doc.lines().any(|l| l == row))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md lacks these rows (or has them differently):\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn help_names_every_variable() {
        let help = help_text();
        for v in variables() {
            assert!(help.contains(&v.name), "{}", v.name);
        }
    }

    #[test]
    fn misspelled_names_get_the_closest_known_one() {
        let names = [
            "ECOSIRE_RATE_LIMTS",
            "ECOSIRE_BIND",
            "ecosire_bind",
            "PATH",
            "ECOSIRE_RATE_LIMIT_LOGN",
        ]
        .map(String::from);
        assert_eq!(
            unknown_variables(names),
            [
                ("ECOSIRE_RATE_LIMTS", "ECOSIRE_RATE_LIMITS"),
                ("ecosire_bind", "ECOSIRE_BIND"),
                ("ECOSIRE_RATE_LIMIT_LOGN", "ECOSIRE_RATE_LIMIT_LOGIN"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn the_data_folder_is_the_databases() {
        let dir = |url: &str| {
            Config {
                database_url: url.into(),
                ..Config::default()
            }
            .data_dir()
        };
        assert_eq!(dir("sqlite://data/ecosire.db"), PathBuf::from("data"));
        assert_eq!(
            dir("sqlite:///var/lib/e/x.db?mode=rwc"),
            PathBuf::from("/var/lib/e")
        );
        assert_eq!(dir("sqlite:x.db"), PathBuf::from("."));
        assert_eq!(dir("postgres://h/db"), PathBuf::from("data"));
    }
}

/// One row of the rate-limit table: `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub limit: u32,
    pub period: Duration,
}

impl Rule {
    pub const fn per_minute(limit: u32) -> Rule {
        Rule {
            limit,
            period: Duration::from_secs(60),
        }
    }
    pub const fn per_hour(limit: u32) -> Rule {
        Rule {
            limit,
            period: Duration::from_secs(3600),
        }
    }
    /// Parses `30/min`, `5/s`, `1000/h`, `2000/day`.
    pub fn parse(s: &str) -> Option<Rule> {
        let (n, unit) = s.trim().split_once('/')?;
        let limit: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return None,
        };
        Some(Rule { limit, period })
    }
}

/// The buckets, by name. Names are also the suffix of their `ECOSIRE_RATE_LIMIT_<NAME>` variable.
pub const BUCKETS: &[(&str, Rule)] = &[
    ("support", Rule::per_minute(5)),
    ("crm", Rule::per_minute(10)),
    ("ask", Rule::per_minute(20)),
    ("validate", Rule::per_minute(30)),
    ("activate", Rule::per_minute(10)),
    ("newsletter", Rule::per_minute(5)),
    ("login", Rule::per_minute(10)),
    ("register", Rule::per_minute(10)),
    ("password_reset", Rule::per_minute(5)),
    ("account_links", Rule::per_minute(10)),
    ("mail_address", Rule::per_hour(5)),
    ("authenticated", Rule::per_minute(100)),
    ("anonymous", Rule::per_minute(300)),
];

/// Rate-limit configuration: the rules and the daily quota per plan (`None`: unlimited).
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub rules: HashMap<String, Rule>,
    pub plans: HashMap<String, Option<u64>>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rules: BUCKETS.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
            plans: [("free".to_string(), Some(1000))].into_iter().collect(),
        }
    }
}

impl LimitsConfig {
    /// The daily quota of `plan` (unknown plans get the free plan's).
    pub fn quota_for(&self, plan: &str) -> Option<u64> {
        match self.plans.get(plan) {
            Some(q) => *q,
            None => self.plans.get("free").copied().flatten(),
        }
    }
}
