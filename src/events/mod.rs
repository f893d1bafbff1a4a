//! Events: written to the `outbox` table in the same transaction as the change they announce,
//! so nothing is announced that did not happen and nothing that happened is lost.

use serde_json::{Value, json};

use crate::crypto::new_id;
use crate::db::Tx;
use crate::timestamp::now_ms;

/// Records event `kind` with `object` as its `data.object`. Returns the event id.
pub async fn emit(tx: &mut Tx, kind: &str, object: Value) -> Result<String, sqlx::Error> {
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
    Ok(id)
}
