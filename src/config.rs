//! Configuration from the environment (API.md § Configuration). A bad value stops the start with
//! one line naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    pub bind: SocketAddr,
    pub database_url: String,
    pub keys_dir: PathBuf,
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
    pub stripe_webhook_secret: Option<String>,
    pub license_secret: Option<String>,
    pub webhook_url: Option<String>,
    pub cookie_secure: bool,
    pub registration: bool,
    pub token_issuer: String,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub rate_limits: bool,
    pub webhook_allow_private: bool,
    pub webhook_backoff_base_s: u64,
    pub api_key_grace_s: u64,
    pub log_format: LogFormat,
    /// How often silent activations are looked for (not an env variable; tests shorten it).
    pub reaper_interval: Duration,
    /// Lifetime of a login session.
    pub session_ttl: Duration,
    /// A webhook endpoint failing without a success for this long is disabled.
    pub webhook_disable_after: Duration,
    /// Rate-limit rules and daily quotas (`ECOSIRE_RATE_LIMIT_<BUCKET>`, `ECOSIRE_QUOTA_PLANS`).
    pub limits: crate::http::ratelimit::LimitsConfig,
    /// `ECOSIRE_HEADER_TIMEOUT_S`: time to receive a request's headers.
    pub header_timeout: Duration,
    /// `ECOSIRE_REQUEST_TIMEOUT_S`: time to receive and answer a whole request.
    pub request_timeout: Duration,
    /// `ECOSIRE_IDLE_TIMEOUT_S`: how long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// `ECOSIRE_MAX_CONNECTIONS`: connections served at once.
    pub max_connections: usize,
    /// `ECOSIRE_HASH_CONCURRENCY`: Argon2 hashes computed at once.
    pub hash_concurrency: usize,
    /// `ECOSIRE_HASH_QUEUE_TIMEOUT_S`: how long a request waits for a hashing slot.
    pub hash_queue_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("database_url", &redact_url(&self.database_url))
            .field("keys_dir", &self.keys_dir)
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
            .finish_non_exhaustive()
    }
}

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

fn parse_bool(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(err(
            var,
            format!("expected true/false or on/off, got '{other}'"),
        )),
    }
}

fn parse_u64(var: &'static str, v: &str) -> Result<u64, ConfigError> {
    v.trim().parse().map_err(|_| {
        err(
            var,
            format!("expected a whole number of seconds, got '{v}'"),
        )
    })
}

/// Variable names are few and fixed; leaking one for the error's `&'static str` is harmless.
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

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".parse().expect("static"),
            database_url: "sqlite://data/ecosire.db".into(),
            keys_dir: "keys".into(),
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
            api_key_grace_s: 86_400,
            log_format: LogFormat::Text,
            reaper_interval: Duration::from_secs(10),
            session_ttl: Duration::from_secs(12 * 3600),
            webhook_disable_after: Duration::from_secs(3 * 86_400),
            limits: Default::default(),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            hash_concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            hash_queue_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (the environment in production, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("ECOSIRE_BIND") {
            c.bind = v.trim().parse().map_err(|_| {
                err(
                    "ECOSIRE_BIND",
                    format!("expected host:port such as 127.0.0.1:8080, got '{v}'"),
                )
            })?;
        }
        if let Some(v) = get("DATABASE_URL") {
            let v = v.trim().to_string();
            if !(v.starts_with("sqlite:")
                || v.starts_with("postgres://")
                || v.starts_with("postgresql://"))
            {
                return Err(err(
                    "DATABASE_URL",
                    "expected sqlite://PATH or postgres://…",
                ));
            }
            c.database_url = v;
        }
        if let Some(v) = get("ECOSIRE_KEYS_DIR") {
            c.keys_dir = v.into();
        }
        c.admin_email = get("ECOSIRE_ADMIN_EMAIL").map(|v| v.trim().to_string());
        c.admin_password = get("ECOSIRE_ADMIN_PASSWORD");
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
        c.stripe_webhook_secret = get("STRIPE_WEBHOOK_SECRET");
        c.license_secret = get("ECOSIRE_LICENSE_SECRET");
        c.webhook_url = get("ECOSIRE_WEBHOOK_URL");
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
        if let Some(v) = get("ECOSIRE_COOKIE_SECURE") {
            c.cookie_secure = parse_bool("ECOSIRE_COOKIE_SECURE", &v)?;
        }
        if let Some(v) = get("ECOSIRE_REGISTRATION") {
            c.registration = parse_bool("ECOSIRE_REGISTRATION", &v)?;
        }
        if let Some(v) = get("ECOSIRE_TOKEN_ISSUER") {
            c.token_issuer = v.trim().to_string();
        }
        if let Some(v) = get("ECOSIRE_ALLOWED_ORIGINS") {
            c.allowed_origins = list(&v);
            for o in &c.allowed_origins {
                if !(o.starts_with("http://") || o.starts_with("https://")) {
                    return Err(err(
                        "ECOSIRE_ALLOWED_ORIGINS",
                        format!("'{o}' is not an http(s) origin"),
                    ));
                }
            }
        }
        if let Some(v) = get("ECOSIRE_TRUSTED_PROXIES") {
            c.trusted_proxies = list(&v)
                .iter()
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            err(
                                "ECOSIRE_TRUSTED_PROXIES",
                                format!("'{s}' is not a CIDR such as 10.0.0.0/8"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("ECOSIRE_RATE_LIMITS") {
            c.rate_limits = parse_bool("ECOSIRE_RATE_LIMITS", &v)?;
        }
        for (name, _) in crate::http::ratelimit::BUCKETS {
            let var = format!("ECOSIRE_RATE_LIMIT_{}", name.to_ascii_uppercase());
            if let Some(v) = get(&var) {
                let rule = crate::http::ratelimit::Rule::parse(&v).ok_or_else(|| ConfigError {
                    var: leak(var.clone()),
                    message: format!("expected a rate such as 30/min, 5/s or 1000/h, got '{v}'"),
                })?;
                c.limits.rules.insert(name.to_string(), rule);
            }
        }
        if let Some(v) = get("ECOSIRE_QUOTA_PLANS") {
            for item in list(&v) {
                let (plan, n) = item.split_once('=').ok_or_else(|| {
                    err(
                        "ECOSIRE_QUOTA_PLANS",
                        format!("expected plan=calls_per_day, got '{item}'"),
                    )
                })?;
                let quota = match n.trim() {
                    "unlimited" | "0" => None,
                    n => Some(n.parse::<u64>().map_err(|_| {
                        err(
                            "ECOSIRE_QUOTA_PLANS",
                            format!("'{n}' is not a number of calls"),
                        )
                    })?),
                };
                c.limits.plans.insert(plan.trim().to_string(), quota);
            }
        }
        if let Some(v) = get("ECOSIRE_WEBHOOK_ALLOW_PRIVATE") {
            c.webhook_allow_private = parse_bool("ECOSIRE_WEBHOOK_ALLOW_PRIVATE", &v)?;
        }
        if let Some(v) = get("ECOSIRE_WEBHOOK_BACKOFF_BASE_S") {
            c.webhook_backoff_base_s = parse_u64("ECOSIRE_WEBHOOK_BACKOFF_BASE_S", &v)?;
        }
        if let Some(v) = get("ECOSIRE_API_KEY_GRACE_S") {
            c.api_key_grace_s = parse_u64("ECOSIRE_API_KEY_GRACE_S", &v)?;
        }
        if let Some(v) = get("ECOSIRE_LOG_FORMAT") {
            c.log_format = match v.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(err(
                        "ECOSIRE_LOG_FORMAT",
                        format!("expected text or json, got '{other}'"),
                    ));
                }
            };
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
            from(&[("ECOSIRE_ADMIN_EMAIL", "a@b.c")]).unwrap_err().var,
            "ECOSIRE_ADMIN_PASSWORD"
        );
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
}
