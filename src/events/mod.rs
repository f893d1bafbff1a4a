//! Events: written to the `outbox` table in the same transaction as the change they announce
//! (nothing announced that did not happen, nothing that happened lost), fanned out there to one
//! delivery per subscribed endpoint, and sent by the dispatcher as signed webhooks.
//!
//! `license.validated` is high-volume and changes nothing: the hot path hands it to a bounded
//! channel (never waiting) and a writer task stores it in batches — but only while some endpoint
//! subscribes to it. A hard crash can lose what sits in that buffer (at most ~50 ms of events);
//! a graceful shutdown writes it out.

pub mod catalog;
pub mod dispatcher;
pub mod endpoints;
pub mod signature;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use utoipa_axum::router::OpenApiRouter;

use crate::crypto::new_id;
use crate::db::{Db, Tx};
use crate::state::AppState;
use crate::timestamp::now_ms;

/// Webhook endpoints and their deliveries (admin), and the public event catalog.
pub fn router() -> OpenApiRouter<AppState> {
    endpoints::router().merge(catalog::router())
}

/// An enabled endpoint's id and filter, as fan-out needs them.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub id: String,
    pub events: Vec<String>,
}

impl Subscriber {
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind)
    }
}

async fn subscribers(tx: &mut Tx) -> Result<Vec<Subscriber>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, events FROM webhook_endpoints WHERE enabled = 1")
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, events)| Subscriber {
            id,
            events: serde_json::from_str(&events).unwrap_or_default(),
        })
        .collect())
}

/// An event just written to the outbox.
#[derive(Debug)]
pub struct Emitted {
    pub id: String,
}

impl Emitted {
    /// Keeps a license key with this event, sealed under the data key: the outbox row never holds
    /// it in plain text, and the dispatcher opens it into the body it sends (`license.created`,
    /// `license.reissued`).
    pub async fn with_key(
        self,
        tx: &mut Tx,
        data_key: &crate::crypto::DataKey,
        key: &str,
    ) -> Result<Self, sqlx::Error> {
        sqlx::query("UPDATE outbox SET key_sealed = $2 WHERE id = $1")
            .bind(&self.id)
            .bind(data_key.seal(key.as_bytes(), &self.id))
            .execute(&mut **tx)
            .await?;
        Ok(self)
    }
}

/// Records event `kind` with `object` as its `data.object`, and a pending delivery for every
/// enabled endpoint that subscribes to it.
pub async fn emit(tx: &mut Tx, kind: &str, object: Value) -> Result<Emitted, sqlx::Error> {
    let subs = subscribers(tx).await?;
    let id = emit_to(
        tx,
        kind,
        object,
        subs.iter().filter(|s| s.wants(kind)).map(|s| s.id.as_str()),
    )
    .await?;
    Ok(Emitted { id })
}

/// Records an event and deliveries to exactly `endpoint_ids`.
pub async fn emit_to<'a>(
    tx: &mut Tx,
    kind: &str,
    object: Value,
    endpoint_ids: impl Iterator<Item = &'a str>,
) -> Result<String, sqlx::Error> {
    let id = new_id("evt");
    let now = now_ms();
    let body = json!({ "id": id, "object": "event", "type": kind, "created": now / 1000, "data": { "object": object } });
    sqlx::query("INSERT INTO outbox (id, type, payload, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(kind)
        .bind(body.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    for endpoint in endpoint_ids {
        sqlx::query(
            "INSERT INTO deliveries (id, event_id, event_type, endpoint_id, status, attempt_count, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)",
        )
        .bind(new_id("dlv"))
        .bind(&id)
        .bind(kind)
        .bind(endpoint)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

/// Records one `kind` event per object, in multi-row statements (bulk issuing): what `emit` and
/// `Emitted::with_key` do one by one, including the key sealed under each event's id.
pub async fn emit_batch(
    tx: &mut Tx,
    kind: &str,
    items: Vec<(Value, Option<&str>)>,
    data_key: &crate::crypto::DataKey,
) -> Result<(), sqlx::Error> {
    let endpoints: Vec<String> = subscribers(tx)
        .await?
        .into_iter()
        .filter(|s| s.wants(kind))
        .map(|s| s.id)
        .collect();
    let now = now_ms();
    let events: Vec<(String, String, Option<String>)> = items
        .into_iter()
        .map(|(object, key)| {
            let id = new_id("evt");
            let body = json!({ "id": id, "object": "event", "type": kind, "created": now / 1000, "data": { "object": object } });
            let sealed = key.map(|k| data_key.seal(k.as_bytes(), &id));
            (id, body.to_string(), sealed)
        })
        .collect();
    // Well under both backends' limits on bound parameters per statement.
    for chunk in events.chunks(1000) {
        let sql = format!(
            "INSERT INTO outbox (id, type, payload, created_at, key_sealed) VALUES {}",
            crate::db::values_list(chunk.len(), 5)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, payload, sealed) in chunk {
            q = q
                .bind(id.as_str())
                .bind(kind)
                .bind(payload.as_str())
                .bind(now)
                .bind(sealed.as_deref());
        }
        q.execute(&mut **tx).await?;
        for endpoint in &endpoints {
            let sql = format!(
                "INSERT INTO deliveries (id, event_id, event_type, endpoint_id, status, attempt_count, next_attempt_at, created_at, updated_at) VALUES {}",
                crate::db::values_list(chunk.len(), 9)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, _, _) in chunk {
                q = q
                    .bind(new_id("dlv"))
                    .bind(id.as_str())
                    .bind(kind)
                    .bind(endpoint.as_str())
                    .bind("pending")
                    .bind(0_i64)
                    .bind(now)
                    .bind(now)
                    .bind(now);
            }
            q.execute(&mut **tx).await?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Wanted {
    all: bool,
    types: HashSet<String>,
}

/// Shared event plumbing: who listens, the `license.validated` buffer, the dispatcher's bell.
pub struct EventBus {
    wanted: RwLock<Wanted>,
    validated_tx: mpsc::Sender<Value>,
    validated_rx: Mutex<Option<mpsc::Receiver<Value>>>,
    /// Rung after commits that created deliveries, so the dispatcher need not wait for its tick.
    pub wake: Notify,
    /// `license.validated` events dropped because the buffer was full.
    pub dropped: AtomicU64,
}

/// Room for this many `license.validated` events between batch writes.
const VALIDATED_BUFFER: usize = 10_000;
const VALIDATED_BATCH: usize = 500;

impl Default for EventBus {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(VALIDATED_BUFFER);
        EventBus {
            wanted: RwLock::new(Wanted::default()),
            validated_tx: tx,
            validated_rx: Mutex::new(Some(rx)),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }
}

impl EventBus {
    /// Does any enabled endpoint subscribe to `kind`?
    pub fn wants(&self, kind: &str) -> bool {
        let w = self.wanted.read().expect("wanted");
        w.all || w.types.contains(kind)
    }

    /// Reloads the subscription filter (after endpoint changes, and periodically for changes
    /// made by other instances).
    pub async fn refresh(&self, db: &Db) -> Result<(), sqlx::Error> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT events FROM webhook_endpoints WHERE enabled = 1")
                .fetch_all(&db.pool)
                .await?;
        let mut w = Wanted::default();
        for (events,) in rows {
            for e in serde_json::from_str::<Vec<String>>(&events).unwrap_or_default() {
                if e == "*" {
                    w.all = true;
                } else {
                    w.types.insert(e);
                }
            }
        }
        *self.wanted.write().expect("wanted") = w;
        Ok(())
    }

    /// Hands a `license.validated` object to the batch writer without waiting; `make` runs only
    /// when someone subscribes.
    pub fn validated(&self, make: impl FnOnce() -> Value) {
        if !self.wants("license.validated") {
            return;
        }
        if self.validated_tx.try_send(make()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn take_validated_receiver(&self) -> Option<mpsc::Receiver<Value>> {
        self.validated_rx.lock().expect("receiver").take()
    }
}

/// Writes buffered `license.validated` events in batches until `stop`, then drains the buffer.
pub async fn run_validated_writer(
    db: Db,
    bus: std::sync::Arc<EventBus>,
    mut rx: mpsc::Receiver<Value>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(VALIDATED_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, VALIDATED_BATCH) => {
                if n == 0 {
                    break;
                }
                // Let a burst gather briefly so one transaction carries many events.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while batch.len() < VALIDATED_BATCH {
                    match rx.try_recv() {
                        Ok(v) => batch.push(v),
                        Err(_) => break,
                    }
                }
                write_validated(&db, &bus, &mut batch).await;
            }
            _ = stop.changed() => {
                rx.close();
                while rx.recv_many(&mut batch, VALIDATED_BATCH).await > 0 {
                    write_validated(&db, &bus, &mut batch).await;
                }
                break;
            }
        }
    }
}

async fn write_validated(db: &Db, bus: &EventBus, batch: &mut Vec<Value>) {
    let result: Result<(), sqlx::Error> = async {
        let mut tx = db.begin().await?;
        let subs = subscribers(&mut tx).await?;
        let ids: Vec<&str> = subs
            .iter()
            .filter(|s| s.wants("license.validated"))
            .map(|s| s.id.as_str())
            .collect();
        for obj in batch.drain(..) {
            emit_to(&mut tx, "license.validated", obj, ids.iter().copied()).await?;
        }
        tx.commit().await
    }
    .await;
    match result {
        Ok(()) => bus.wake.notify_one(),
        Err(e) => {
            tracing::warn!(error = %e, "writing license.validated events failed; batch dropped");
            batch.clear();
        }
    }
}
