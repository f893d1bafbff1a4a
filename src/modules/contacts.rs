//! Contacts: the address book of the business (admin-only). One contact per normalised email,
//! guarded by the unique index; the CRM's public capture form fills contacts in as leads arrive.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Admin;
use crate::crypto::new_id;
use crate::db::Filters;
use crate::error::{Error, Result, ResultExt};
use crate::http::checks::{Checks, normalize_email};
use crate::http::extract::{Json, Path};
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::{Timestamp, double_option, now_ms};

/// Field limits, in characters (documented on the schema and enforced with 422 `details`).
pub const NAME_MAX: usize = 200;
pub const COMPANY_MAX: usize = 200;
pub const PHONE_MAX: usize = 50;
pub const NOTES_MAX: usize = 5000;
/// A search term longer than any field it could match is a mistake, not a query.
const Q_MAX: usize = 200;

const COLUMNS: &str = "id, email, name, company, phone, notes, created_at, updated_at";

/// The contact object. Text is stored and returned exactly as sent (HTML included): clients must
/// escape it when they render it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Contact {
    #[schema(example = "con_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    /// Trimmed and lower-cased; unique.
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann Lee")]
    pub name: Option<String>,
    #[schema(example = "Example Ltd")]
    pub company: Option<String>,
    #[schema(example = "+44 20 7946 0000")]
    pub phone: Option<String>,
    pub notes: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_contact, list_contacts))
        .routes(routes!(get_contact, update_contact, delete_contact))
}

/// A one-line field: trimmed; blank means "none".
fn line(v: Option<&str>) -> Option<String> {
    v.map(str::trim).filter(|s| !s.is_empty()).map(String::from)
}

/// Free text (notes): kept exactly as sent, but a blank one means "none".
fn text(v: Option<&str>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty()).map(String::from)
}

/// `LIKE` pattern matching `q` anywhere, with `q`'s own wildcards taken literally (`ESCAPE '\'`).
fn contains_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in q.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A contact's optional fields, cleaned (see `line` and `text`).
struct Fields {
    name: Option<String>,
    company: Option<String>,
    phone: Option<String>,
    notes: Option<String>,
}

impl Fields {
    fn check(&self, c: &mut Checks) {
        c.opt_len(self.name.as_deref(), "name", 0, NAME_MAX);
        c.opt_len(self.company.as_deref(), "company", 0, COMPANY_MAX);
        c.opt_len(self.phone.as_deref(), "phone", 0, PHONE_MAX);
        c.opt_len(self.notes.as_deref(), "notes", 0, NOTES_MAX);
    }
}

/// Writes a contact with `sql` (an insert or an update binding `$1` id, `$2` email, `$3`–`$6`
/// the fields, `$7` now) and reads it back; a taken email is 409 `CONTACT_EXISTS`.
async fn save(
    state: &AppState,
    sql: &'static str,
    id: &str,
    email: &str,
    fields: &Fields,
) -> Result<Contact> {
    sqlx::query(sql)
        .bind(id)
        .bind(email)
        .bind(&fields.name)
        .bind(&fields.company)
        .bind(&fields.phone)
        .bind(&fields.notes)
        .bind(now_ms())
        .execute(&state.db.pool)
        .await
        .on_unique(|| Err(exists(email)))?;
    find(state, id)
        .await?
        .ok_or_else(|| Error::no_such("Contact"))
}

async fn find(state: &AppState, id: &str) -> Result<Option<Contact>> {
    let sql = format!("SELECT {COLUMNS} FROM contacts WHERE id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?)
}

fn exists(email: &str) -> Error {
    Error::conflict(
        "CONTACT_EXISTS",
        format!("A contact with email '{email}' exists"),
    )
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateContact {
    #[schema(example = "ann@example.com", max_length = 254)]
    pub email: String,
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub company: Option<String>,
    /// At most 50 characters.
    #[schema(max_length = 50)]
    pub phone: Option<String>,
    /// At most 5,000 characters.
    #[schema(max_length = 5000)]
    pub notes: Option<String>,
}

/// Creates a contact (admin).
#[utoipa::path(post, path = "/api/contacts", tag = "contacts", request_body = CreateContact,
    responses((status = 201, body = Contact), (status = 409, description = "CONTACT_EXISTS", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_contact(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateContact>,
) -> Result<(StatusCode, Json<Contact>)> {
    let email = normalize_email(&req.email);
    let fields = Fields {
        name: line(req.name.as_deref()),
        company: line(req.company.as_deref()),
        phone: line(req.phone.as_deref()),
        notes: text(req.notes.as_deref()),
    };
    let mut c = Checks::new();
    c.check(email.is_some(), "email", "Invalid email address");
    fields.check(&mut c);
    c.finish()?;
    let email = email.expect("checked");
    let id = new_id("con");
    let row = save(
        &state,
        "INSERT INTO contacts (id, email, name, company, phone, notes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        &id,
        &email,
        &fields,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContactFilters {
    /// Case-insensitive substring of the name, email or company (at most 200 characters).
    pub q: Option<String>,
}

/// Lists contacts, newest first (admin); `?q=` searches name, email and company.
#[utoipa::path(get, path = "/api/contacts", tag = "contacts", params(PageParams, ContactFilters),
    responses((status = 200, body = Page<Contact>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_contacts(
    State(state): State<AppState>,
    _admin: Admin,
    Listing { page: req, filters }: Listing<ContactFilters>,
) -> Result<Json<Page<Contact>>> {
    let mut f = Filters::default();
    if let Some(q) = filters
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
    {
        Checks::new().len(q, "q", 1, Q_MAX).finish()?;
        // LOWER() on both sides: PostgreSQL's LIKE is case-sensitive, SQLite's only for non-ASCII.
        f.push_raw(
            "(LOWER(name) LIKE $? ESCAPE '\\' OR LOWER(email) LIKE $? ESCAPE '\\' \
             OR LOWER(company) LIKE $? ESCAPE '\\')",
            contains_pattern(&q.to_lowercase()),
        );
    }
    let rows = crate::db::list::page::<Contact>(
        &state.db,
        &format!("SELECT {COLUMNS} FROM contacts"),
        "id",
        f,
        &req,
        |r| &r.id,
    )
    .await?;
    Ok(Json(rows))
}

/// Gets a contact (admin).
#[utoipa::path(get, path = "/api/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    responses((status = 200, body = Contact)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_contact(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Contact>> {
    let row = find(&state, &id)
        .await?
        .ok_or_else(|| Error::no_such("Contact"))?;
    Ok(Json(row))
}

/// A partial update: absent fields stay, `null` (or a blank string) clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateContact {
    /// Cannot be null.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 254)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub company: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 50)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 5000)]
    pub notes: Option<Option<String>>,
}

/// Updates a contact (admin).
#[utoipa::path(patch, path = "/api/contacts/{id}", tag = "contacts", params(("id" = String, Path)), request_body = UpdateContact,
    responses((status = 200, body = Contact),
              (status = 409, description = "CONTACT_EXISTS", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update_contact(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Json(req): Json<UpdateContact>,
) -> Result<Json<Contact>> {
    let cur = find(&state, &id)
        .await?
        .ok_or_else(|| Error::no_such("Contact"))?;
    let mut c = Checks::new();
    let email = match &req.email {
        None => Some(cur.email.clone()),
        Some(None) => {
            c.push("email", "must not be null");
            None
        }
        Some(Some(e)) => {
            let n = normalize_email(e);
            c.check(n.is_some(), "email", "Invalid email address");
            n
        }
    };
    // Absent → keep; null or blank → clear; otherwise the new value.
    let merge = |new: &Option<Option<String>>,
                 old: Option<String>,
                 clean: fn(Option<&str>) -> Option<String>| match new {
        None => old,
        Some(v) => clean(v.as_deref()),
    };
    let fields = Fields {
        name: merge(&req.name, cur.name, line),
        company: merge(&req.company, cur.company, line),
        phone: merge(&req.phone, cur.phone, line),
        notes: merge(&req.notes, cur.notes, text),
    };
    fields.check(&mut c);
    c.finish()?;
    let email = email.expect("checked");
    let row = save(
        &state,
        "UPDATE contacts SET email = $2, name = $3, company = $4, phone = $5, notes = $6, updated_at = $7 \
         WHERE id = $1",
        &cur.id,
        &email,
        &fields,
    )
    .await?;
    Ok(Json(row))
}

/// Deletes a contact (admin). Its leads stay, unlinked.
#[utoipa::path(delete, path = "/api/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_contact(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let res = sqlx::query("DELETE FROM contacts WHERE id = $1")
        .bind(&id)
        .execute(&state.db.pool)
        .await?;
    if res.rows_affected() == 0 {
        return Err(Error::no_such("Contact"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(contains_pattern("ann"), "%ann%");
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn blank_text_means_none() {
        assert_eq!(line(Some("  Ann  ")), Some("Ann".into()));
        assert_eq!(line(Some("   ")), None);
        assert_eq!(text(Some("  <b>x</b>\n")), Some("  <b>x</b>\n".into()));
        assert_eq!(text(Some(" \n ")), None);
    }
}
