//! License and activation rows as stored, and the objects API.md shows.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::timestamp::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LicenseStatus {
    Active,
    Suspended,
    Revoked,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Active => "active",
            LicenseStatus::Suspended => "suspended",
            LicenseStatus::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(LicenseStatus::Active),
            "suspended" => Some(LicenseStatus::Suspended),
            "revoked" => Some(LicenseStatus::Revoked),
            _ => None,
        }
    }
}

pub const LICENSE_COLUMNS: &str = "l.id, l.key_digest, l.key_sealed, l.key_last4, l.product_id, l.user_id, l.status, \
     l.expires_at, l.max_activations, l.entitlements, l.metadata, l.created_at, l.updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LicenseRow {
    pub id: String,
    pub key_digest: String,
    pub key_sealed: String,
    pub key_last4: String,
    pub product_id: String,
    pub user_id: Option<String>,
    pub status: String,
    pub expires_at: Option<i64>,
    pub max_activations: i64,
    pub entitlements: String,
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl LicenseRow {
    pub fn status(&self) -> LicenseStatus {
        LicenseStatus::parse(&self.status).unwrap_or(LicenseStatus::Suspended)
    }
    pub fn entitlements(&self) -> Vec<String> {
        serde_json::from_str(&self.entitlements).unwrap_or_default()
    }

    /// The API object; `key` is filled in only for admins and the owner.
    pub fn view(&self, activations_count: i64, key: Option<String>) -> License {
        License {
            id: self.id.clone(),
            key,
            key_last4: self.key_last4.clone(),
            product_id: self.product_id.clone(),
            user_id: self.user_id.clone(),
            status: self.status(),
            expires_at: self.expires_at.map(Timestamp),
            max_activations: self.max_activations,
            activations_count,
            entitlements: self.entitlements(),
            metadata: serde_json::from_str(&self.metadata)
                .unwrap_or_else(|_| serde_json::json!({})),
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
            churn: None,
        }
    }
}

/// The vendor's own data on a license (plan names, CRM ids, …): any JSON object of at most 16 KiB,
/// stored and answered as given.
// Only the OpenAPI document uses this type: an open object, so that typed clients accept any
// members (a bare `Object` comes out as an object with none). The value is a `serde_json::Value`.
#[derive(ToSchema)]
#[schema(example = json!({"plan": "gold", "crm_account": "0012x000004AbCd"}))]
pub struct Metadata(pub std::collections::HashMap<String, serde_json::Value>);

/// The license object of API.md.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct License {
    #[schema(example = "lic_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    /// Shown only to admins and the license's owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "ECOS-7K3QH-M2XPD-9TQ4W-R8ZVN")]
    pub key: Option<String>,
    #[schema(example = "8ZVN")]
    pub key_last4: String,
    pub product_id: String,
    pub user_id: Option<String>,
    pub status: LicenseStatus,
    pub expires_at: Option<Timestamp>,
    pub max_activations: i64,
    pub activations_count: i64,
    pub entitlements: Vec<String>,
    #[schema(value_type = Metadata)]
    pub metadata: serde_json::Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The churn budget (admins and the owner only; not in hot-path answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<super::churn::Churn>,
}

pub const ACTIVATION_COLUMNS: &str = "id, license_id, fingerprint, name, platform, hostname, created_at, last_heartbeat_at, \
     offline_until";

/// The activation object of API.md, decoded straight from its row.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Activation {
    #[schema(example = "act_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    pub license_id: String,
    pub fingerprint: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub hostname: Option<String>,
    pub created_at: Timestamp,
    pub last_heartbeat_at: Timestamp,
    /// For a device activated offline (a signed license file): when its lease ends and the seat
    /// is freed. `null` for devices that activate online.
    pub offline_until: Option<Timestamp>,
}
