//! Every event type we send, with a description and an example payload
//! (`GET /api/webhooks/events`).

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::limits::Public;
use crate::http::extract::Json;
use crate::state::AppState;

pub const LICENSE_TYPES: &[(&str, &str)] = &[
    (
        "license.validated",
        "A license key was validated (valid or not). High volume; sent only to endpoints that subscribe to it.",
    ),
    ("license.activated", "A device took a seat."),
    (
        "license.deactivated",
        "A device released its seat (by the client, an admin, or the heartbeat timeout).",
    ),
    (
        "license.created",
        "A license was created (by an admin or a Stripe checkout). Includes the key.",
    ),
    ("license.revoked", "A license was revoked for good."),
    ("license.suspended", "A license was suspended."),
    ("license.reinstated", "A suspended license is active again."),
    ("license.renewed", "A license's expiry moved."),
    (
        "license.reissued",
        "A license got a new key; the old one stopped working. Includes the new key.",
    ),
];

pub const STRIPE_TYPES: &[(&str, &str)] = &[
    (
        "checkout.session.completed",
        "Forwarded after a paid checkout granted an order and its licenses.",
    ),
    (
        "invoice.paid",
        "Forwarded after a subscription's licenses were renewed to the period end.",
    ),
    (
        "customer.subscription.updated",
        "Forwarded after a subscription's status and period were synced.",
    ),
    (
        "customer.subscription.deleted",
        "Forwarded after a subscription ended and its licenses were suspended.",
    ),
    (
        "charge.refunded",
        "Forwarded after a refund; a full refund revoked the order's licenses.",
    ),
    (
        "payment_intent.payment_failed",
        "Forwarded after a failed payment marked its order failed.",
    ),
];

pub const TEST_TYPE: &str = "webhook.test";

/// True for every type an endpoint may subscribe to.
pub fn is_known(kind: &str) -> bool {
    kind == "*"
        || LICENSE_TYPES
            .iter()
            .chain(STRIPE_TYPES)
            .any(|(t, _)| *t == kind)
}

fn license_example() -> Value {
    json!({
        "id": "lic_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4", "key_last4": "8ZVN", "product_id": "prd_01JDZ8Q6W3M5X7Y9Z0A1B2C3D5",
        "user_id": "usr_01JDZ8Q6W3M5X7Y9Z0A1B2C3D6", "status": "active", "expires_at": "2027-11-27T00:00:00Z",
        "max_activations": 3, "activations_count": 1, "entitlements": ["pro"], "metadata": {},
        "created_at": "2026-11-27T12:00:00Z", "updated_at": "2026-11-27T12:00:00Z"
    })
}

fn example_object(kind: &str) -> Value {
    let activation = json!({
        "id": "act_01JDZ8Q6W3M5X7Y9Z0A1B2C3D7", "license_id": "lic_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4", "fingerprint": "3f2a9c1e-machine-id",
        "name": "Ann's laptop", "platform": "linux", "hostname": "ann-x1", "created_at": "2026-11-27T12:00:00Z",
        "last_heartbeat_at": "2026-11-27T12:00:00Z", "license": license_example()
    });
    match kind {
        "license.validated" => {
            json!({"license": license_example(), "valid": true, "code": "VALID", "fingerprint": "3f2a9c1e-machine-id"})
        }
        "license.activated" | "license.deactivated" => activation,
        "license.created" | "license.reissued" => {
            let mut l = license_example();
            l["key"] = json!("ECOS-7K3QH-M2XPD-9TQ4W-R8ZVN");
            l
        }
        k if k.starts_with("license.") => license_example(),
        _ => {
            json!({"id": "cs_test_a1b2c3", "object": "checkout.session", "ecosire": {"order_id": "ord_01JDZ8Q6W3M5X7Y9Z0A1B2C3D8", "license_ids": ["lic_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4"]}})
        }
    }
}

/// A full example event body of `kind`, if it is a type we send.
pub fn example_event(kind: &str) -> Option<Value> {
    (is_known(kind) && kind != "*" || kind == TEST_TYPE)
        .then(|| json!({"id": crate::crypto::new_id("evt"), "object": "event", "type": kind, "created": crate::timestamp::now_ms() / 1000, "data": {"object": example_object(kind)}}))
}

/// An event type with its description and an example delivery body.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventType {
    #[serde(rename = "type")]
    #[schema(example = "license.activated")]
    pub kind: &'static str,
    pub description: &'static str,
    /// A delivery body of this type, as `X-License-Signature` signs it.
    #[schema(value_type = std::collections::HashMap<String, serde_json::Value>)]
    pub example: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventCatalog {
    pub data: Vec<EventType>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_event_types))
}

/// Lists every event type with a description and an example payload (public).
#[utoipa::path(get, path = "/api/webhooks/events", tag = "webhooks", responses((status = 200, body = EventCatalog)))]
pub async fn list_event_types(_rate: Public) -> Json<EventCatalog> {
    let data = LICENSE_TYPES
        .iter()
        .chain(STRIPE_TYPES)
        .chain(&[(TEST_TYPE, "Sent by POST /api/webhook-endpoints/{id}/test, whatever the endpoint's filter.")])
        .map(|(kind, description)| EventType {
            kind,
            description,
            example: json!({"id": "evt_01JDZ8Q6W3M5X7Y9Z0A1B2C3D9", "object": "event", "type": kind, "created": 1_795_780_800, "data": {"object": example_object(kind)}}),
        })
        .collect();
    Json(EventCatalog { data })
}
