//! Delivers pending webhook deliveries: claim (a lease, with `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL so instances share the work without double sends), sign, POST with a 10 s timeout,
//! record the attempt, and back off exponentially with jitter. Outbound connections are refused
//! to loopback, private, link-local and metadata addresses unless configured otherwise (the check
//! runs on the resolved addresses, so DNS cannot smuggle a private target in).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;

use crate::crypto::new_id;
use crate::error::Result;
use crate::state::AppState;
use crate::timestamp::now_ms;

/// Attempts before a delivery is given up: with a 10 s base doubling each time, the last one
/// comes about 23 hours after the first.
pub const MAX_ATTEMPTS: i64 = 14;
const BATCH: i64 = 32;

/// Is `ip` on the public internet (not loopback, private, link-local, metadata, …)?
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // ::/96 (IPv4-compatible, deprecated) reaches the embedded IPv4 address on some stacks.
            let ipv4_compatible = s[..6].iter().all(|x| *x == 0);
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || ipv4_compatible
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// A resolver that drops non-public addresses (unless private targets are allowed).
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    "the webhook host resolves only to private or loopback addresses (ECOSIRE_WEBHOOK_ALLOW_PRIVATE=true allows them)".into(),
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for webhooks: 10 s timeout, no redirects, guarded DNS, and no proxy from the
/// environment (`HTTP(S)_PROXY`): a proxy resolves names itself, past the guard, so a name that
/// does not resolve here could still reach an internal host through it.
pub fn http_client(allow_private: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ECOSIRE-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .build()
        .expect("reqwest client")
}

/// Checks a webhook URL: http(s), at most 2048 chars, a host, and (unless allowed) no literal or
/// resolved private address. Unresolvable names pass: delivery will retry them.
pub async fn check_url(
    url: &str,
    allow_private: bool,
) -> std::result::Result<reqwest::Url, &'static str> {
    if url.len() > 2048 {
        return Err("must be at most 2048 characters");
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| "is not a valid URL")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL");
    }
    let Some(host) = parsed.host() else {
        return Err("must name a host");
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials");
    }
    if allow_private {
        return Ok(parsed);
    }
    let ips: Vec<IpAddr> = match host {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
        url::Host::Domain(d) => {
            match tokio::net::lookup_host((d, parsed.port_or_known_default().unwrap_or(443))).await
            {
                Ok(it) => it.map(|a| a.ip()).collect(),
                Err(_) => vec![],
            }
        }
    };
    if ips.iter().any(|ip| !is_public(*ip)) {
        return Err(
            "must not point at a private, loopback or link-local address (set ECOSIRE_WEBHOOK_ALLOW_PRIVATE=true to allow such targets)",
        );
    }
    Ok(parsed)
}

#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: String,
    event_id: String,
    endpoint_id: String,
    attempt_count: i64,
}

/// Claims up to `BATCH` due deliveries and sends them. Returns how many were attempted.
pub async fn run_once(state: &AppState) -> Result<usize> {
    let now = now_ms();
    let due = state.db.claimable(&format!(
        "SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $2 \
         AND (locked_until IS NULL OR locked_until < $2) ORDER BY next_attempt_at LIMIT {BATCH}"
    ));
    let sql = format!(
        "UPDATE deliveries SET locked_until = $1, updated_at = $2 WHERE id IN ({due}) \
         RETURNING id, event_id, endpoint_id, attempt_count"
    );
    let claimed: Vec<Claimed> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(now + state.config.webhook_lease.as_millis() as i64)
        .bind(now)
        .fetch_all(&state.db.pool)
        .await?;
    let n = claimed.len();
    let sends = claimed.into_iter().map(|c| async move {
        if let Err(e) = attempt(state, &c.id, &c.event_id, &c.endpoint_id, c.attempt_count).await {
            tracing::warn!(delivery = %c.id, error = %e, "delivery attempt could not be recorded");
        }
    });
    futures_util::future::join_all(sends).await;
    Ok(n)
}

/// The delivery body: the stored event, with the license key decrypted into `license.created`
/// and `license.reissued` (the outbox never holds it in plaintext).
async fn body_for(state: &AppState, event_id: &str) -> Result<Option<(String, Vec<u8>)>> {
    let row: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT type, payload, key_sealed FROM outbox WHERE id = $1")
            .bind(event_id)
            .fetch_optional(&state.db.pool)
            .await?;
    let Some((kind, payload, key_sealed)) = row else {
        return Ok(None);
    };
    let Some(sealed) = key_sealed else {
        return Ok(Some((kind, payload.into_bytes())));
    };
    let mut v: Value = serde_json::from_str(&payload).map_err(anyhow::Error::from)?;
    v["data"]["object"]["key"] = Value::String(state.keys.data.open_string(&sealed, event_id)?);
    Ok(Some((kind, v.to_string().into_bytes())))
}

fn backoff_ms(base_s: u64, attempts_made: i64) -> i64 {
    let base = (base_s as i64).saturating_mul(1000);
    let exp = base.saturating_mul(1i64 << (attempts_made - 1).clamp(0, 20));
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    (exp as f64 * jitter) as i64
}

/// Sends one claimed delivery and records the outcome.
pub async fn attempt(
    state: &AppState,
    delivery_id: &str,
    event_id: &str,
    endpoint_id: &str,
    attempts_before: i64,
) -> Result<()> {
    let endpoint: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT url, secret_sealed, enabled, failing_since FROM webhook_endpoints WHERE id = $1",
    )
    .bind(endpoint_id)
    .fetch_optional(&state.db.pool)
    .await?;
    let Some((url, secret_sealed, enabled, failing_since)) = endpoint else {
        return Ok(());
    };
    let started = Instant::now();
    let now = now_ms();
    let outcome: std::result::Result<u16, String> =
        match (enabled, body_for(state, event_id).await?) {
            (0, _) => Err("endpoint is disabled".into()),
            (_, None) => Err("event not found".into()),
            (_, Some((kind, body))) => {
                let secret = state.keys.data.open_string(&secret_sealed, endpoint_id)?;
                let t = now / 1000;
                let sent = match check_url(&url, state.config.webhook_allow_private).await {
                    Err(why) => Err(format!("URL refused: {why}")),
                    Ok(u) => state
                        .http
                        .post(u)
                        .header("content-type", "application/json")
                        .header(
                            "x-license-signature",
                            super::signature::header(&secret, t, &body),
                        )
                        .header("x-ecosire-event", kind)
                        .header("x-ecosire-delivery", delivery_id)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| describe(&e)),
                };
                match sent {
                    Ok(res) if res.status().is_success() => Ok(res.status().as_u16()),
                    Ok(res) => Err(format!("HTTP {}", res.status().as_u16())),
                    Err(e) => Err(e),
                }
            }
        };
    let duration_ms = started.elapsed().as_millis() as i64;
    let attempts = attempts_before + 1;
    let status_code: Option<i64> = match &outcome {
        Ok(code) => Some(i64::from(*code)),
        Err(e) => e.strip_prefix("HTTP ").and_then(|c| c.parse().ok()),
    };
    let error = outcome.as_ref().err().cloned();
    let (status, next) = match &outcome {
        Ok(_) => ("succeeded", None),
        Err(_) if attempts >= MAX_ATTEMPTS || enabled == 0 => ("failed", None),
        Err(_) => (
            "pending",
            Some(now + backoff_ms(state.config.webhook_backoff_base_s, attempts)),
        ),
    };
    metrics::counter!("ecosire_webhook_attempts_total", "outcome" => if outcome.is_ok() { "success" } else { "failure" }).increment(1);
    if status == "failed" {
        metrics::counter!("ecosire_webhook_deliveries_failed_total").increment(1);
    }
    let mut tx = state.db.begin().await?;
    sqlx::query("INSERT INTO delivery_attempts (id, delivery_id, at, status_code, duration_ms, error) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(new_id("att"))
        .bind(delivery_id)
        .bind(now)
        .bind(status_code)
        .bind(duration_ms)
        .bind(&error)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE deliveries SET status = $2, attempt_count = $3, next_attempt_at = $4, locked_until = NULL, updated_at = $5 WHERE id = $1")
        .bind(delivery_id)
        .bind(status)
        .bind(attempts)
        .bind(next)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    match (&outcome, failing_since) {
        (Ok(_), Some(_)) => {
            sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1")
                .bind(endpoint_id)
                .execute(&mut *tx)
                .await?;
        }
        (Err(_), None) if enabled == 1 => {
            sqlx::query("UPDATE webhook_endpoints SET failing_since = $2 WHERE id = $1")
                .bind(endpoint_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        (Err(_), Some(since))
            if enabled == 1
                && now - since >= state.config.webhook_disable_after.as_millis() as i64 =>
        {
            let reason = format!(
                "disabled after failing since {}",
                crate::timestamp::Timestamp(since).to_rfc3339()
            );
            sqlx::query("UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $2, updated_at = $3 WHERE id = $1")
                .bind(endpoint_id)
                .bind(&reason)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO notices (id, kind, subject_id, message, created_at) VALUES ($1, 'webhook_endpoint_disabled', $2, $3, $4)")
                .bind(new_id("ntc"))
                .bind(endpoint_id)
                .bind(format!("Webhook endpoint {endpoint_id} ({url}) was {reason}; fix it and re-enable it with PATCH {{\"enabled\": true}}"))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tracing::warn!(endpoint = %endpoint_id, "webhook endpoint disabled after failing for too long");
        }
        _ => {}
    }
    tx.commit().await?;
    if matches!(status, "failed") || matches!((&outcome, failing_since), (Err(_), Some(_))) {
        // The subscription filter may have changed (an endpoint was disabled).
        let _ = state.events.refresh(&state.db).await;
    }
    Ok(())
}

/// A short, secret-free description of a transport error.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out after 10 s".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_request() {
        "request failed".into()
    } else {
        "transport error".into()
    }
}

/// The dispatcher loop: runs when woken (new deliveries) or every second, until `stop`.
pub async fn run(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        loop {
            match run_once(&state).await {
                Ok(n) if n as i64 >= BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook dispatcher failed; will retry");
                    break;
                }
            }
        }
        tokio::select! {
            _ = state.events.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        for n in 1..=5 {
            let d = backoff_ms(10, n);
            let expect = 10_000 * (1 << (n - 1));
            assert!(d >= expect * 8 / 10 && d <= expect * 12 / 10, "{n}: {d}");
        }
        assert_eq!(backoff_ms(0, 3), 0);
    }

    #[tokio::test]
    async fn urls_are_checked() {
        assert!(check_url("ftp://example.com/x", true).await.is_err());
        assert!(check_url("not a url", true).await.is_err());
        assert!(check_url("http://127.0.0.1:9/x", false).await.is_err());
        assert!(check_url("http://[::1]/x", false).await.is_err());
        assert!(
            check_url("http://169.254.169.254/latest", false)
                .await
                .is_err()
        );
        assert!(check_url("http://127.0.0.1:9/x", true).await.is_ok());
        // IPv4-compatible (::/96) and site-local (fec0::/10) addresses are private too.
        for ip in ["::7f00:1", "::a00:1", "fec0::1", "feff::1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        assert!(is_public("2606:4700::1111".parse().unwrap()));
        let why = check_url("http://10.1.2.3/hook", false).await.unwrap_err();
        assert!(why.contains("ECOSIRE_WEBHOOK_ALLOW_PRIVATE"), "{why}");
        assert!(
            check_url(&format!("https://example.com/{}", "a".repeat(2100)), true)
                .await
                .is_err()
        );
    }
}
