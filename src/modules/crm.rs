//! CRM: the public capture form (`POST /api/crm/capture`) records a lead and keeps the contact of
//! that email up to date; admins read the leads.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Admin;
use crate::auth::limits::{Crm, PerIp};
use crate::crypto::new_id;
use crate::db::Filters;
use crate::error::Result;
use crate::http::checks::{Checks, normalize_email};
use crate::http::extract::Json;
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::{Timestamp, now_ms};

pub const NAME_MAX: usize = 200;
pub const COMPANY_MAX: usize = 200;
pub const MESSAGE_MAX: usize = 5000;
pub const SOURCE_MAX: usize = 100;

const COLUMNS: &str = "id, contact_id, email, name, company, message, source, created_at";

/// A lead: one submission of the capture form, as sent (text is never interpreted).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Lead {
    #[schema(example = "led_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    /// The contact of this email (null once that contact is deleted).
    #[schema(example = "con_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub contact_id: Option<String>,
    #[schema(example = "ann@example.com")]
    pub email: String,
    pub name: Option<String>,
    pub company: Option<String>,
    pub message: Option<String>,
    #[schema(example = "pricing-page")]
    pub source: Option<String>,
    pub created_at: Timestamp,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(capture_lead))
        .routes(routes!(list_leads))
}

/// A one-line field: trimmed; blank means "none".
fn line(v: Option<&str>) -> Option<String> {
    v.map(str::trim).filter(|s| !s.is_empty()).map(String::from)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CaptureLead {
    #[schema(example = "ann@example.com", max_length = 254)]
    pub email: String,
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub company: Option<String>,
    /// At most 5,000 characters.
    #[schema(max_length = 5000)]
    pub message: Option<String>,
    /// Where the form was filled in (at most 100 characters).
    #[schema(example = "pricing-page", max_length = 100)]
    pub source: Option<String>,
}

/// Records a lead from the public capture form and upserts the contact of its email (public).
///
/// An existing contact only has its blanks filled: a public form never overwrites what is
/// already known (or curated by an admin), and never clears it.
#[utoipa::path(post, path = "/api/crm/capture", tag = "crm", request_body = CaptureLead,
    responses((status = 201, body = Lead),
              (status = 429, description = "RATE_LIMITED", body = crate::error::Problem)))]
pub async fn capture_lead(
    State(state): State<AppState>,
    _rate: PerIp<Crm>,
    Json(req): Json<CaptureLead>,
) -> Result<(StatusCode, Json<Lead>)> {
    let email = normalize_email(&req.email);
    let name = line(req.name.as_deref());
    let company = line(req.company.as_deref());
    let source = line(req.source.as_deref());
    let message = req.message.filter(|m| !m.trim().is_empty());
    let mut c = Checks::new();
    c.check(email.is_some(), "email", "Invalid email address");
    c.opt_len(name.as_deref(), "name", 0, NAME_MAX);
    c.opt_len(company.as_deref(), "company", 0, COMPANY_MAX);
    c.opt_len(message.as_deref(), "message", 0, MESSAGE_MAX);
    c.opt_len(source.as_deref(), "source", 0, SOURCE_MAX);
    c.finish()?;
    let email = email.expect("checked");
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    // One statement whatever the race: the unique index on email decides insert or update.
    sqlx::query(
        "INSERT INTO contacts (id, email, name, company, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (email) DO UPDATE SET \
           name = COALESCE(contacts.name, excluded.name), \
           company = COALESCE(contacts.company, excluded.company), \
           updated_at = CASE WHEN (contacts.name IS NULL AND excluded.name IS NOT NULL) \
                              OR (contacts.company IS NULL AND excluded.company IS NOT NULL) \
                        THEN excluded.updated_at ELSE contacts.updated_at END",
    )
    .bind(new_id("con"))
    .bind(&email)
    .bind(&name)
    .bind(&company)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let (contact_id,): (String,) = sqlx::query_as("SELECT id FROM contacts WHERE email = $1")
        .bind(&email)
        .fetch_one(&mut *tx)
        .await?;
    let id = new_id("led");
    sqlx::query(
        "INSERT INTO leads (id, contact_id, email, name, company, message, source, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(&contact_id)
    .bind(&email)
    .bind(&name)
    .bind(&company)
    .bind(&message)
    .bind(&source)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let lead = Lead {
        id,
        contact_id: Some(contact_id),
        email,
        name,
        company,
        message,
        source,
        created_at: Timestamp(now),
    };
    Ok((StatusCode::CREATED, Json(lead)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeadFilters {
    /// Exact source.
    pub source: Option<String>,
    /// Exact email (compared normalised: case and surrounding spaces do not matter).
    pub email: Option<String>,
}

/// Lists leads, newest first (admin); filters `source`, `email`.
#[utoipa::path(get, path = "/api/crm/leads", tag = "crm", params(PageParams, LeadFilters),
    responses((status = 200, body = Page<Lead>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_leads(
    State(state): State<AppState>,
    _admin: Admin,
    Listing { page: req, filters }: Listing<LeadFilters>,
) -> Result<Json<Page<Lead>>> {
    let mut f = Filters::default();
    if let Some(s) = &filters.source {
        f.push("source", "=", s.trim());
    }
    if let Some(e) = &filters.email {
        // Stored emails are normalised, so the filter is too (an invalid one simply matches nothing).
        f.push("email", "=", e.trim().to_lowercase());
    }
    let rows = crate::db::list::page::<Lead>(
        &state.db,
        &format!("SELECT {COLUMNS} FROM leads"),
        "id",
        f,
        &req,
        |r| &r.id,
    )
    .await?;
    Ok(Json(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_fields_are_trimmed_and_blank_is_none() {
        assert_eq!(line(Some(" web ")), Some("web".into()));
        assert_eq!(line(Some("  ")), None);
        assert_eq!(line(None), None);
    }
}
