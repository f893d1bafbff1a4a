//! Outgoing mail, through an outbox like webhooks: a message is written (sealed: it may carry a
//! token or a license key) in the transaction that causes it, so it exists exactly when that
//! change does; a worker on every instance claims due messages with a lease (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL, so no two send one at once), sends them through the transport, and
//! retries with exponential backoff across restarts.

pub mod templates;
pub mod transport;

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::crypto::{DataKey, new_id};
use crate::db::Tx;
use crate::error::Result;
use crate::state::AppState;
use crate::timestamp::now_ms;
use transport::Transport;

/// Attempts before a message is given up: with the default 30 s base doubling each time, the
/// last comes about 17 hours after the first.
pub const MAX_ATTEMPTS: i64 = 12;
const BATCH: i64 = 16;
/// How long a claimed message stays reserved to the worker that claimed it: longer than the SMTP
/// timeout (30 s per command) with room to record the outcome.
const LEASE_MS: i64 = 120_000;

/// One message, as queued (sealed under the data key) and as sent.
#[derive(Clone, Serialize, Deserialize)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body may carry a token or a license key.
        f.debug_struct("Message")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// The mail side of the state: the transport, the sender address, and the worker's bell.
pub struct Mailer {
    pub transport: Transport,
    pub from: Mailbox,
    pub wake: Notify,
}

impl Mailer {
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Mailer> {
        Ok(Mailer {
            transport: Transport::from_config(config)?,
            from: config
                .mail_from
                .parse()
                .map_err(|_| anyhow::anyhow!("ECOSIRE_MAIL_FROM: not a valid address"))?,
            wake: Notify::new(),
        })
    }
}

/// Queues `message` in `tx`: it is sent only if `tx` commits. `kind` names the template (for
/// logs and metrics); `user_id` lets an erasure find the messages of a person.
pub async fn queue(
    tx: &mut Tx,
    key: &DataKey,
    kind: &str,
    user_id: Option<&str>,
    message: &Message,
) -> Result<()> {
    let id = new_id("msg");
    let sealed = key.seal(&serde_json::to_vec(message).expect("json"), &id);
    let now = now_ms();
    sqlx::query(
        "INSERT INTO mail_outbox (id, kind, user_id, message_sealed, status, attempt_count, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)",
    )
    .bind(&id)
    .bind(kind)
    .bind(user_id)
    .bind(sealed)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: String,
    kind: String,
    message_sealed: Option<String>,
    attempt_count: i64,
    locked_until: i64,
}

/// Claims up to `BATCH` due messages and sends them. Returns how many were attempted.
pub async fn run_once(state: &AppState) -> Result<usize> {
    let now = now_ms();
    let due = state.db.claimable(&format!(
        "SELECT id FROM mail_outbox WHERE status = 'pending' AND next_attempt_at <= $2 \
         AND (locked_until IS NULL OR locked_until < $2) ORDER BY next_attempt_at LIMIT {BATCH}"
    ));
    let sql = format!(
        "UPDATE mail_outbox SET locked_until = $1, updated_at = $2 WHERE id IN ({due}) \
         RETURNING id, kind, message_sealed, attempt_count, locked_until"
    );
    let claimed: Vec<Claimed> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(now + LEASE_MS)
        .bind(now)
        .fetch_all(&state.db.pool)
        .await?;
    let n = claimed.len();
    let sends = claimed.into_iter().map(|c| async move {
        if let Err(e) = attempt(state, &c).await {
            tracing::warn!(mail = %c.id, error = %e, "mail attempt could not be recorded");
        }
    });
    futures_util::future::join_all(sends).await;
    Ok(n)
}

/// The message as lettre sends it: multipart/alternative with the text and HTML parts.
fn build(mailer: &Mailer, id: &str, m: &Message) -> std::result::Result<lettre::Message, String> {
    let to: Mailbox =
        m.to.parse()
            .map_err(|_| "the recipient address is not valid".to_string())?;
    let domain = mailer.from.email.domain().to_string();
    lettre::Message::builder()
        .from(mailer.from.clone())
        .to(to)
        .subject(m.subject.clone())
        .message_id(Some(format!("<{id}@{domain}>")))
        .multipart(
            MultiPart::alternative()
                .singlepart(part(ContentType::TEXT_PLAIN, &m.text))
                .singlepart(part(ContentType::TEXT_HTML, &m.html)),
        )
        .map_err(|e| format!("the message cannot be built: {e}"))
}

/// A part sent as plain 7-bit text when it is ASCII with lines under 76 characters, else encoded
/// as lettre sees fit (quoted-printable for our templates, whose links are longer).
fn part(content_type: ContentType, text: &str) -> SinglePart {
    let body = Body::new_with_encoding(text.to_string(), ContentTransferEncoding::SevenBit)
        .unwrap_or_else(|_| Body::new(text.to_string()));
    SinglePart::builder().header(content_type).body(body)
}

fn backoff(base: Duration, attempts_made: i64) -> i64 {
    let base = base.as_millis() as i64;
    let exp = base.saturating_mul(1i64 << (attempts_made - 1).clamp(0, 20));
    (exp as f64 * rand::thread_rng().gen_range(0.8..1.2)) as i64
}

async fn attempt(state: &AppState, c: &Claimed) -> Result<()> {
    let opened = c
        .message_sealed
        .as_deref()
        .ok_or_else(|| "the message body is gone".to_string())
        .and_then(|s| {
            state
                .keys
                .data
                .open(s, &c.id)
                .map_err(|_| "the message does not decrypt under the data key".to_string())
        })
        .and_then(|raw| {
            serde_json::from_slice::<Message>(&raw).map_err(|_| "the message is damaged".into())
        });
    // Errors that no retry can fix fail the message at once.
    let (outcome, permanent) = match opened.and_then(|m| build(&state.mail, &c.id, &m)) {
        Err(e) => (Err(e), true),
        Ok(msg) => match state.mail.transport.send(&c.id, &msg).await {
            Ok(to) => (Ok(to), false),
            Err(e) => {
                let permanent = e.starts_with("permanent:");
                (Err(e), permanent)
            }
        },
    };
    let now = now_ms();
    let attempts = c.attempt_count + 1;
    let (status, next, error) = match &outcome {
        Ok(_) => ("sent", None, None),
        Err(e) if permanent || attempts >= MAX_ATTEMPTS => ("failed", None, Some(e.clone())),
        Err(e) => (
            "pending",
            Some(now + backoff(state.config.mail_backoff_base, attempts)),
            Some(e.clone()),
        ),
    };
    // Only while the lease is still ours: past it another worker may own the message. A sent
    // message keeps no body (it may hold a token).
    sqlx::query(
        "UPDATE mail_outbox SET status = $2, attempt_count = $3, next_attempt_at = $4, last_error = $5, \
         locked_until = NULL, updated_at = $6, \
         message_sealed = CASE WHEN $2 = 'sent' THEN NULL ELSE message_sealed END \
         WHERE id = $1 AND locked_until = $7",
    )
    .bind(&c.id)
    .bind(status)
    .bind(attempts)
    .bind(next)
    .bind(&error)
    .bind(now)
    .bind(c.locked_until)
    .execute(&state.db.pool)
    .await?;
    // Told once it is recorded: a log line never speaks of an attempt the database lacks.
    metrics::counter!("ecosire_mail_attempts_total", "outcome" => if outcome.is_ok() { "sent" } else { "failed" }).increment(1);
    match &outcome {
        Ok(to) => tracing::info!(mail = %c.id, kind = %c.kind, to = %to, "mail sent"),
        Err(e) if status == "failed" => {
            metrics::counter!("ecosire_mail_failed_total").increment(1);
            tracing::error!(mail = %c.id, kind = %c.kind, attempts, error = %e, "mail given up");
        }
        Err(e) => {
            tracing::warn!(mail = %c.id, kind = %c.kind, attempts, error = %e, "mail not sent; will retry")
        }
    }
    Ok(())
}

/// The mail worker: runs when woken (a message was queued here) or every second, until `stop`;
/// on `stop` it sends what is already due once more, so a graceful shutdown leaves nothing due.
pub async fn run(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        drain(&state).await;
        tokio::select! {
            _ = state.mail.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {
                drain(&state).await;
                return;
            }
        }
    }
}

async fn drain(state: &AppState) {
    loop {
        match run_once(state).await {
            Ok(n) if n as i64 >= BATCH => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "mail worker failed; will retry");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter() {
        let base = Duration::from_secs(30);
        for n in 1..=5 {
            let d = backoff(base, n);
            let expect = 30_000 * (1 << (n - 1));
            assert!(d >= expect * 8 / 10 && d <= expect * 12 / 10, "{n}: {d}");
        }
    }

    #[test]
    fn debug_never_shows_the_body() {
        let m = Message {
            to: "a@b.io".into(),
            subject: "s".into(),
            text: "token-secret".into(),
            html: "token-secret".into(),
        };
        assert!(!format!("{m:?}").contains("token-secret"));
    }
}
