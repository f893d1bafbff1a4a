//! The customer portal beyond licenses: orders and subscriptions, support tickets. Like every
//! page, each reads through the API's own handler with the caller's principal, so a customer sees
//! their own records and an admin (on the admin pages, or in support) every one.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::pages::{Frame, Visitor, admin, date, first_page, message, render, signed_in, when};
use crate::error::Result;
use crate::http::extract::Path;
use crate::state::AppState;

/// An amount in a currency's smallest unit, as people read it (`49.00 USD`); currencies without
/// a minor unit (Stripe's list) print whole.
pub fn money(amount: Option<i64>, currency: Option<&str>) -> String {
    const ZERO_DECIMAL: [&str; 16] = [
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
        "xaf", "xof", "xpf",
    ];
    let (Some(amount), Some(currency)) = (amount, currency) else {
        return "–".into();
    };
    let code = currency.to_ascii_uppercase();
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        format!("{amount} {code}")
    } else {
        let sign = if amount < 0 { "-" } else { "" };
        let a = amount.unsigned_abs();
        format!("{sign}{}.{:02} {code}", a / 100, a % 100)
    }
}

/// One order as the page lists it.
pub struct OrderLine {
    pub id: String,
    pub date: String,
    pub status: String,
    pub amount: String,
    pub refunded: String,
    pub email: String,
    pub licenses: Vec<String>,
}

/// One subscription as the page lists it.
pub struct SubscriptionLine {
    pub id: String,
    pub since: String,
    pub status: String,
    pub period_end: String,
    pub licenses: Vec<String>,
}

#[derive(Template)]
#[template(path = "dashboard/orders.html", config = "src/askama.toml")]
struct Orders {
    f: Frame,
    /// The admin page: every customer's, with their email.
    all: bool,
    orders: Vec<OrderLine>,
    subscriptions: Vec<SubscriptionLine>,
}

/// The orders and subscriptions `p` may see, through the API's listings.
async fn orders_page(
    state: AppState,
    p: crate::auth::Principal,
    f: Frame,
    all: bool,
) -> Result<Response> {
    let orders = crate::billing::orders::list_orders(
        State(state.clone()),
        p.clone(),
        first_page(Default::default()),
    )
    .await?
    .0
    .data
    .into_iter()
    .map(|o| OrderLine {
        date: date(Some(o.created_at), ""),
        amount: money(o.amount_total, o.currency.as_deref()),
        refunded: if o.amount_refunded > 0 {
            money(Some(o.amount_refunded), o.currency.as_deref())
        } else {
            String::new()
        },
        email: o.email.unwrap_or_default(),
        status: o.status,
        licenses: o.license_ids,
        id: o.id,
    })
    .collect();
    let subscriptions = crate::billing::orders::list_subscriptions(
        State(state.clone()),
        p,
        first_page(Default::default()),
    )
    .await?
    .0
    .data
    .into_iter()
    .map(|s| SubscriptionLine {
        since: date(Some(s.created_at), ""),
        period_end: date(s.current_period_end, "–"),
        status: s.status,
        licenses: s.license_ids,
        id: s.id,
    })
    .collect();
    Ok(render(Orders {
        f,
        all,
        orders,
        subscriptions,
    }))
}

/// My orders and subscriptions.
pub async fn orders(State(state): State<AppState>, visitor: Visitor) -> Result<Response> {
    let (_, own, user) = match signed_in(&state, visitor, "/dashboard/orders").await? {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    orders_page(state, own, Frame::page(user, "orders"), false).await
}

/// Admin → orders: every customer's.
pub async fn admin_orders(State(state): State<AppState>, visitor: Visitor) -> Result<Response> {
    let (p, user) = match admin(&state, visitor, "/dashboard/admin/orders").await? {
        Ok(x) => x,
        Err(other) => return Ok(other),
    };
    orders_page(state, p, Frame::page(user, "admin-orders"), true).await
}

/// One ticket as the list shows it.
pub struct TicketLine {
    pub id: String,
    pub subject: String,
    pub email: String,
    pub status: String,
    pub opened: String,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "dashboard/support.html", config = "src/askama.toml")]
struct Support {
    f: Frame,
    /// An admin: every ticket, with who opened it.
    all: bool,
    email: String,
    status: String,
    statuses: &'static [&'static str],
    tickets: Vec<TicketLine>,
}

#[derive(Deserialize)]
pub struct StatusFilter {
    status: Option<String>,
}

/// Support: my tickets and a form to open one (an admin: every ticket, filtered by status).
pub async fn support(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<StatusFilter>,
) -> Result<Response> {
    let (p, _, user) = match signed_in(&state, visitor, "/dashboard/support").await? {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    let status = q
        .status
        .filter(|s| crate::modules::support::STATUSES.contains(&s.as_str()))
        .unwrap_or_default();
    let mut listing = first_page(crate::modules::support::TicketFilters::default());
    if !status.is_empty() {
        listing.filters.status = Some(status.clone());
    }
    let all = p.sees_all();
    let tickets = crate::modules::support::list_tickets(State(state.clone()), p, listing)
        .await?
        .0
        .data
        .into_iter()
        .map(|t| TicketLine {
            opened: date(Some(t.created_at), ""),
            updated: date(Some(t.updated_at), ""),
            status: t.status,
            email: t.email,
            subject: t.subject,
            id: t.id,
        })
        .collect();
    Ok(render(Support {
        email: user.as_ref().map(|u| u.email.clone()).unwrap_or_default(),
        f: Frame::page(user, "support"),
        all,
        status,
        statuses: &crate::modules::support::STATUSES,
        tickets,
    }))
}

/// One message in a ticket's thread.
pub struct ReplyLine {
    pub staff: bool,
    pub at: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "dashboard/ticket.html", config = "src/askama.toml")]
struct TicketPage {
    f: Frame,
    manage: bool,
    statuses: &'static [&'static str],
    t: crate::modules::support::Ticket,
    opened: String,
    replies: Vec<ReplyLine>,
}

/// One ticket with its thread and a reply form; an admin may also change its status.
pub async fn ticket(
    State(state): State<AppState>,
    visitor: Visitor,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response> {
    let here = format!("/dashboard/support/{id}");
    let (p, _, user) = match signed_in(&state, visitor, &here).await? {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    let manage = p.sees_all();
    let found = match crate::modules::support::get_ticket(State(state.clone()), p, Path(id)).await {
        Ok(t) => t.0,
        Err(crate::error::Error::NotFound { .. }) => {
            return Ok(message(
                user,
                axum::http::StatusCode::NOT_FOUND,
                "No such ticket",
                "There is no ticket here for this account. Your tickets are listed under Support.",
            ));
        }
        Err(e) => return Err(e),
    };
    let replies = found
        .replies
        .into_iter()
        .map(|r| ReplyLine {
            staff: r.author == "staff",
            at: when(r.created_at),
            message: r.message,
        })
        .collect();
    Ok(render(TicketPage {
        f: Frame::page(user, "support"),
        manage,
        statuses: &crate::modules::support::STATUSES,
        opened: when(found.ticket.created_at),
        t: found.ticket,
        replies,
    }))
}
