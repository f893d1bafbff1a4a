//! Support tickets: anyone may open one (`POST /api/support`); a signed-in customer reads and
//! answers their own; admins read, answer and triage them all.
//!
//! A customer's tickets are those linked to their user (opened while signed in) and those opened
//! with their account's email before they signed in. Another customer's ticket is a 404.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::limits::{PerIp, Support};
use crate::auth::{Admin, MaybePrincipal, Principal};
use crate::crypto::new_id;
use crate::db::Filters;
use crate::error::{Error, Result};
use crate::http::checks::{Checks, normalize_email};
use crate::http::extract::{Json, Path};
use crate::http::pagination::{Listing, Page, PageParams};
use crate::state::AppState;
use crate::timestamp::{Timestamp, now_ms};

pub const SUBJECT_MAX: usize = 200;
pub const MESSAGE_MAX: usize = 5000;

/// Every status a ticket can have; a new ticket is `open`.
pub const STATUSES: [&str; 4] = ["open", "pending", "resolved", "closed"];
const STATUS_HINT: &str = "must be open, pending, resolved or closed";

const COLUMNS: &str = "id, user_id, email, subject, message, status, created_at, updated_at";

/// The tickets a customer owns: linked to their user, or opened with their account's email —
/// the latter only while the server trusts that address (verified, or an account the server
/// created); an account anyone registered for `carol@…` must not read Carol's tickets.
/// `$?` is the user id (used twice, bound once).
const OWNED_BY: &str = "(user_id = $? OR email = (SELECT u.email FROM users u WHERE u.id = $? \
                        AND (u.self_registered = 0 OR u.email_verified_at IS NOT NULL)))";

/// A support ticket. Text is returned exactly as sent, never interpreted.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Ticket {
    #[schema(example = "tkt_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    /// The user who opened it while signed in.
    pub user_id: Option<String>,
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Activation fails on my new laptop")]
    pub subject: String,
    pub message: String,
    #[schema(example = "open")]
    pub status: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A reply on a ticket.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Reply {
    #[schema(example = "rpl_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    pub ticket_id: String,
    pub user_id: Option<String>,
    /// `staff` (an admin) or `customer`.
    #[schema(example = "staff")]
    pub author: String,
    pub message: String,
    pub created_at: Timestamp,
}

/// A ticket with its replies, oldest reply first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TicketWithReplies {
    #[serde(flatten)]
    pub ticket: Ticket,
    pub replies: Vec<Reply>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_ticket))
        .routes(routes!(list_tickets))
        .routes(routes!(get_ticket, update_ticket))
        .routes(routes!(create_reply))
}

/// Loads a ticket `p` may see: any for admins, their own for customers; else 404.
async fn visible(state: &AppState, p: &Principal, id: &str) -> Result<Ticket> {
    let mut f = Filters::default();
    f.push("id", "=", id);
    if !p.sees_all() {
        f.push_raw(OWNED_BY, p.user_id.clone());
    }
    let sql = format!("SELECT {COLUMNS} FROM support_tickets{}", f.where_sql());
    let mut q = sqlx::query_as::<_, Ticket>(sqlx::AssertSqlSafe(sql));
    for a in &f.args {
        q = q.bind(a.clone());
    }
    q.fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| Error::no_such("Ticket"))
}

async fn with_replies(state: &AppState, t: Ticket) -> Result<TicketWithReplies> {
    let replies: Vec<Reply> = sqlx::query_as(
        "SELECT id, ticket_id, user_id, author, message, created_at FROM support_replies \
         WHERE ticket_id = $1 ORDER BY id",
    )
    .bind(&t.id)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(TicketWithReplies { ticket: t, replies })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTicket {
    #[schema(example = "ann@example.com", max_length = 254)]
    pub email: String,
    /// 1–200 characters.
    #[schema(
        example = "Activation fails on my new laptop",
        min_length = 1,
        max_length = 200
    )]
    pub subject: String,
    /// 1–5,000 characters.
    #[schema(min_length = 1, max_length = 5000)]
    pub message: String,
}

/// The answer to a new ticket.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TicketCreated {
    #[schema(example = "tkt_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4")]
    pub id: String,
    #[schema(example = "open")]
    pub status: String,
}

/// Opens a support ticket (public). Signed in, the ticket is linked to the caller's user.
///
/// Credentials that cannot act for their owner here (a read-only API key, a cookie without an
/// allowed Origin) do not block the form: the ticket is then opened as by anyone. Invalid
/// credentials are still a 401.
#[utoipa::path(post, path = "/api/support", tag = "support", request_body = CreateTicket,
    responses((status = 201, body = TicketCreated),
              (status = 429, description = "RATE_LIMITED", body = crate::error::Problem)))]
pub async fn create_ticket(
    State(state): State<AppState>,
    _rate: PerIp<Support>,
    caller: Result<MaybePrincipal, Error>,
    Json(req): Json<CreateTicket>,
) -> Result<(StatusCode, Json<TicketCreated>)> {
    let user_id = match caller {
        Ok(MaybePrincipal(p)) => p.map(|p| p.user_id),
        Err(Error::Forbidden { .. }) => None,
        Err(e) => return Err(e),
    };
    let email = normalize_email(&req.email);
    let subject = req.subject.trim();
    let mut c = Checks::new();
    c.check(email.is_some(), "email", "Invalid email address");
    c.len(subject, "subject", 1, SUBJECT_MAX);
    c.check(
        !req.message.trim().is_empty(),
        "message",
        "must not be empty",
    );
    c.len(&req.message, "message", 0, MESSAGE_MAX);
    c.finish()?;
    let id = new_id("tkt");
    sqlx::query(
        "INSERT INTO support_tickets (id, user_id, email, subject, message, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'open', $6, $6)",
    )
    .bind(&id)
    .bind(user_id)
    .bind(email.expect("checked"))
    .bind(subject)
    .bind(&req.message)
    .bind(now_ms())
    .execute(&state.db.pool)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TicketCreated {
            id,
            status: "open".into(),
        }),
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketFilters {
    /// open, pending, resolved or closed.
    pub status: Option<String>,
}

/// Lists tickets, newest first: all for admins, their own for customers; filter `status`.
#[utoipa::path(get, path = "/api/support/tickets", tag = "support", params(PageParams, TicketFilters),
    responses((status = 200, body = Page<Ticket>)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_tickets(
    State(state): State<AppState>,
    p: Principal,
    Listing { page: req, filters }: Listing<TicketFilters>,
) -> Result<Json<Page<Ticket>>> {
    let mut f = Filters::default();
    if let Some(s) = &filters.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Error::invalid("status", STATUS_HINT));
        }
        f.push("status", "=", s.clone());
    }
    if !p.sees_all() {
        f.push_raw(OWNED_BY, p.user_id.clone());
    }
    let rows = crate::db::list::page::<Ticket>(
        &state.db,
        &format!("SELECT {COLUMNS} FROM support_tickets"),
        "id",
        f,
        &req,
        |r| &r.id,
    )
    .await?;
    Ok(Json(rows))
}

/// Gets a ticket with its replies (admin, or the customer who owns it).
#[utoipa::path(get, path = "/api/support/tickets/{id}", tag = "support", params(("id" = String, Path)),
    responses((status = 200, body = TicketWithReplies)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_ticket(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<TicketWithReplies>> {
    let t = visible(&state, &p, &id).await?;
    Ok(Json(with_replies(&state, t).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateTicket {
    /// open, pending, resolved or closed.
    #[schema(example = "resolved")]
    pub status: String,
}

/// Sets a ticket's status (admin).
#[utoipa::path(patch, path = "/api/support/tickets/{id}", tag = "support", params(("id" = String, Path)), request_body = UpdateTicket,
    responses((status = 200, body = TicketWithReplies)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update_ticket(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(req): Json<UpdateTicket>,
) -> Result<Json<TicketWithReplies>> {
    if !STATUSES.contains(&req.status.as_str()) {
        return Err(Error::invalid("status", STATUS_HINT));
    }
    let res = sqlx::query("UPDATE support_tickets SET status = $2, updated_at = $3 WHERE id = $1")
        .bind(&id)
        .bind(&req.status)
        .bind(now_ms())
        .execute(&state.db.pool)
        .await?;
    if res.rows_affected() == 0 {
        return Err(Error::no_such("Ticket"));
    }
    let t = visible(&state, &admin, &id).await?;
    Ok(Json(with_replies(&state, t).await?))
}

// `message` is optional in Rust (not in the schema) so that a ticket the caller may not see is a
// 404 before the body is judged; a missing message is then a 422.
/// A reply.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateReply {
    /// 1–5,000 characters.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 5000)]
    #[serde(default)]
    pub message: Option<String>,
}

/// Replies on a ticket (admin on any, a customer on their own) → 201 the reply. A customer's
/// reply on a `pending` or `resolved` ticket reopens it; a `closed` ticket takes no replies
/// (409 `TICKET_CLOSED`): reopen it first.
#[utoipa::path(post, path = "/api/support/tickets/{id}/replies", tag = "support", params(("id" = String, Path)), request_body = CreateReply,
    responses((status = 201, body = Reply),
              (status = 409, description = "TICKET_CLOSED", body = crate::error::Problem)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_reply(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(req): Json<CreateReply>,
) -> Result<(StatusCode, Json<Reply>)> {
    let t = visible(&state, &p, &id).await?;
    let message = req.message.unwrap_or_default();
    let mut c = Checks::new();
    c.check(!message.trim().is_empty(), "message", "must not be empty");
    c.len(&message, "message", 0, MESSAGE_MAX);
    c.finish()?;
    let staff = p.sees_all();
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    // The status is re-read under the write lock, so a concurrent close is honoured.
    let res = sqlx::query(
        "UPDATE support_tickets SET updated_at = $2, \
           status = CASE WHEN $3 = 'customer' AND status IN ('pending', 'resolved') THEN 'open' ELSE status END \
         WHERE id = $1 AND status <> 'closed'",
    )
    .bind(&t.id)
    .bind(now)
    .bind(if staff { "staff" } else { "customer" })
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() == 0 {
        return Err(Error::conflict(
            "TICKET_CLOSED",
            "This ticket is closed; reopen it to reply",
        ));
    }
    let reply = Reply {
        id: new_id("rpl"),
        ticket_id: t.id,
        user_id: Some(p.user_id.clone()),
        author: if staff { "staff" } else { "customer" }.into(),
        message,
        created_at: Timestamp(now),
    };
    sqlx::query(
        "INSERT INTO support_replies (id, ticket_id, user_id, author, message, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&reply.id)
    .bind(&reply.ticket_id)
    .bind(&reply.user_id)
    .bind(&reply.author)
    .bind(&reply.message)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(reply)))
}
