//! The pages. Each reads through the API's own handlers and extractors (`MaybePrincipal`,
//! `licensing::admin::list_licenses`), so it sees exactly what the API would show its caller.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::assets::{URLS, Urls};
use crate::auth::MaybePrincipal;
use crate::auth::limits::Public;
use crate::error::Result;
use crate::http::pagination::{Listing, PageRequest};
use crate::state::AppState;

/// Who is looking at a page: the signed-in caller, or nobody — also when the session cookie no
/// longer verifies (signed out elsewhere, expired, the account disabled), so such a visitor is
/// sent to sign in rather than shown an API error.
pub struct Visitor(Option<crate::auth::Principal>);

impl axum::extract::FromRequestParts<AppState> for Visitor {
    type Rejection = crate::error::Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Self::Rejection> {
        match MaybePrincipal::from_request_parts(parts, state).await {
            Ok(m) => Ok(Visitor(m.0)),
            Err(crate::error::Error::Unauthenticated | crate::error::Error::Forbidden { .. }) => {
                Ok(Visitor(None))
            }
            Err(e) => Err(e),
        }
    }
}

/// Who is signed in, for the header.
pub struct Me {
    pub email: String,
    pub role: &'static str,
}

async fn me(state: &AppState, p: &crate::auth::Principal) -> Result<Option<Me>> {
    Ok(crate::accounts::users::find_by_id(state, &p.user_id)
        .await?
        .map(|u| Me {
            email: u.user.email,
            role: u.user.role.as_str(),
        }))
}

/// What the frame of every page (`base.html`) shows: the assets, who is signed in and which menu
/// entry is current; `narrow` for the forms that stand alone (sign in, reset).
pub struct Frame {
    pub assets: &'static Urls,
    pub user: Option<Me>,
    pub nav: &'static str,
    pub narrow: bool,
}

impl Frame {
    /// A page for anyone (sign in, reset): narrow, no menu.
    pub fn public() -> Frame {
        Frame {
            assets: &URLS,
            user: None,
            nav: "",
            narrow: true,
        }
    }

    /// A signed-in page with `nav` current in the menu.
    pub fn page(user: Option<Me>, nav: &'static str) -> Frame {
        Frame {
            assets: &URLS,
            user,
            nav,
            narrow: false,
        }
    }
}

pub fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => crate::error::Error::Internal(anyhow::anyhow!("template: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "dashboard/login.html", config = "src/askama.toml")]
struct Login {
    f: Frame,
    next: String,
    /// "Sign in with {label}", when an identity provider is configured.
    oidc_label: Option<String>,
    /// Where that button goes (with `next`).
    oidc_href: String,
    /// Why the last sign-in through the provider failed, in words.
    oidc_error: Option<&'static str>,
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
    oidc_error: Option<String>,
}

/// The words for a failed sign-in through the provider (`?oidc_error=` from the callback).
fn oidc_error_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "state" => "That sign-in expired or was started in another browser. Please try again.",
        "denied" => "The identity provider did not sign you in.",
        "unavailable" => {
            "The identity provider cannot be reached right now. Sign in with your password, or try again later."
        }
        "provider" => "The identity provider refused the sign-in. Please try again.",
        "token" => "The identity provider's answer could not be verified. Please try again.",
        "email_taken" => {
            "An account with this email address already exists here, and the address is not confirmed on both sides, so it cannot be joined to your identity provider account. Sign in with your password and confirm your address (or ask an administrator), then try again."
        }
        "email_missing" => {
            "The identity provider did not share your email address. Ask its administrator to release the email scope to this application."
        }
        "disabled" => "This account is disabled; ask an administrator.",
        _ => return None,
    })
}

/// Only a path on this site: `next` must not send anyone elsewhere after signing in.
pub(crate) fn local_path(next: Option<String>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/dashboard".into())
}

pub async fn login(
    State(state): State<AppState>,
    _rate: Public,
    Query(q): Query<Next>,
) -> Response {
    let next = local_path(q.next);
    let oidc_href = format!(
        "/api/auth/oidc/login?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("next", &next)
            .finish()
    );
    render(Login {
        f: Frame::public(),
        next,
        oidc_label: state.config.oidc.as_ref().map(|o| o.label.clone()),
        oidc_href,
        oidc_error: q.oidc_error.as_deref().and_then(oidc_error_text),
    })
}

#[derive(Template)]
#[template(path = "dashboard/forgot.html", config = "src/askama.toml")]
struct Forgot {
    f: Frame,
}

pub async fn forgot_password(_rate: Public) -> Response {
    render(Forgot { f: Frame::public() })
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/password_token.html", config = "src/askama.toml")]
struct PasswordToken {
    f: Frame,
    heading: &'static str,
    token: String,
}

fn password_page(heading: &'static str, token: Option<String>) -> Response {
    render(PasswordToken {
        f: Frame::public(),
        heading,
        token: token.unwrap_or_default(),
    })
}

pub async fn reset_password(_rate: Public, Query(q): Query<TokenQuery>) -> Response {
    password_page("Choose a new password", q.token)
}

pub async fn set_password(_rate: Public, Query(q): Query<TokenQuery>) -> Response {
    password_page("Set your password", q.token)
}

#[derive(Template)]
#[template(path = "dashboard/verify.html", config = "src/askama.toml")]
struct Verify {
    f: Frame,
    token: String,
}

/// The token is confirmed by a button, not by opening the page: mail scanners that follow links
/// must not use it up.
pub async fn verify_email(_rate: Public, Query(q): Query<TokenQuery>) -> Response {
    render(Verify {
        f: Frame::public(),
        token: q.token.unwrap_or_default(),
    })
}

#[derive(Template)]
#[template(path = "dashboard/licenses.html", config = "src/askama.toml")]
struct Licenses {
    f: Frame,
    licenses: Vec<LicenseView>,
}

/// The caller of a page that needs one, and the same caller narrowed to their own objects (an
/// admin sees their own here too: administration has its own pages); signed out, a redirect to
/// the sign-in page that comes back to `here`.
pub(super) async fn signed_in(
    state: &AppState,
    principal: Visitor,
    here: &str,
) -> Result<
    std::result::Result<(crate::auth::Principal, crate::auth::Principal, Option<Me>), Response>,
> {
    let Some(p) = principal.0 else {
        return Ok(Err(
            Redirect::to(&format!("/login?next={here}")).into_response()
        ));
    };
    let own = crate::auth::Principal {
        role: crate::auth::Role::Customer,
        ..p.clone()
    };
    let user = me(state, &p).await?;
    Ok(Ok((p, own, user)))
}

/// The first 100 rows of a listing: the pages show no more (search narrows them).
pub(super) fn first_page<F>(filters: F) -> Listing<F> {
    Listing {
        page: PageRequest {
            limit: 100,
            before_id: None,
        },
        filters,
    }
}

/// A license's status as people read it: an active license past its expiry is "expired" (what
/// validate answers).
fn shown_status(l: &crate::licensing::model::License) -> &'static str {
    let expired = l
        .expires_at
        .is_some_and(|e| e.0 <= crate::timestamp::now_ms());
    if expired && l.status.as_str() == "active" {
        "expired"
    } else {
        l.status.as_str()
    }
}

/// A moment as people read it in a table: `2026-11-30 14:32:29 UTC`.
pub(super) fn when(t: crate::timestamp::Timestamp) -> String {
    let s = t.to_rfc3339();
    format!("{} {} UTC", &s[..10], &s[11..19])
}

pub(super) fn date(t: Option<crate::timestamp::Timestamp>, none: &str) -> String {
    t.map(|t| t.to_rfc3339()[..10].to_string())
        .unwrap_or_else(|| none.into())
}

/// The signed-in user's licenses, through the API's own listing. Signed out: to the sign-in
/// page, back here after.
pub async fn licenses(State(state): State<AppState>, principal: Visitor) -> Result<Response> {
    let (_, own, user) = match signed_in(&state, principal, "/dashboard").await? {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    let page = crate::licensing::admin::list_licenses(
        State(state.clone()),
        own,
        first_page(Default::default()),
    )
    .await?
    .0;
    let products = product_names(&state).await?;
    let mut licenses = Vec::with_capacity(page.data.len());
    for l in page.data {
        licenses.push(license_view(&state, l, &products, false).await?);
    }
    Ok(render(Licenses {
        f: Frame::page(user, "licenses"),
        licenses,
    }))
}

/// One API key as the page lists it.
pub struct KeyLine {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scope: &'static str,
    pub environment: &'static str,
    pub requests: i64,
    pub error_rate: String,
    pub last_used: String,
    pub status: &'static str,
    pub expires: String,
    /// Requests per day, the last 30 days.
    pub chart: super::chart::Chart,
}

#[derive(Template)]
#[template(path = "dashboard/api_keys.html", config = "src/askama.toml")]
struct ApiKeys {
    f: Frame,
    is_admin: bool,
    grace: String,
    keys: Vec<KeyLine>,
}

/// How long a rotated key keeps working, in words.
fn grace_words(s: u64) -> String {
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The signed-in user's API keys (through the API's listing, so usage counters are current).
pub async fn api_keys(State(state): State<AppState>, principal: Visitor) -> Result<Response> {
    let (p, own, user) = match signed_in(&state, principal, "/dashboard/api-keys").await? {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    let page = crate::accounts::api_keys::list_api_keys(
        State(state.clone()),
        crate::auth::KeyManager(own),
        first_page(Default::default()),
    )
    .await?
    .0;
    let now = crate::timestamp::now_ms();
    let mut keys = Vec::with_capacity(page.data.len());
    for k in page.data {
        // The listing just flushed the counters and checked who may see these keys.
        let usage = crate::accounts::api_keys::daily_usage(&state, &k.id, 30).await?;
        keys.push(KeyLine {
            status: if k.revoked_at.is_some() {
                "revoked"
            } else if k.expires_at.is_some_and(|e| e.0 <= now) {
                "expired"
            } else {
                "active"
            },
            error_rate: if k.request_count == 0 {
                "–".into()
            } else {
                format!(
                    "{:.1} %",
                    100.0 * k.error_count as f64 / k.request_count as f64
                )
            },
            last_used: date(k.last_used_at, "never"),
            expires: date(k.expires_at, ""),
            requests: k.request_count,
            scope: k.scope.as_str(),
            environment: k.environment.as_str(),
            chart: super::chart::daily(&usage),
            prefix: k.prefix,
            name: k.name,
            id: k.id,
        });
    }
    Ok(render(ApiKeys {
        f: Frame::page(user, "api-keys"),
        is_admin: p.role == crate::auth::Role::Admin,
        grace: grace_words(state.config.api_key_grace_s),
        keys,
    }))
}

#[derive(Template)]
#[template(path = "dashboard/message.html", config = "src/askama.toml")]
struct Message {
    f: Frame,
    heading: &'static str,
    text: &'static str,
}

/// A page that explains a refusal (403, 404) and where to go.
pub(super) fn message(
    user: Option<Me>,
    status: axum::http::StatusCode,
    heading: &'static str,
    text: &'static str,
) -> Response {
    let mut res = render(Message {
        f: Frame {
            user,
            ..Frame::public()
        },
        heading,
        text,
    });
    *res.status_mut() = status;
    res
}

/// A signed-in user on an admin page: a 403 page that says why and where to go, the API's rule
/// (`Principal::is_admin`) deciding.
fn not_for_you(user: Option<Me>) -> Response {
    message(
        user,
        axum::http::StatusCode::FORBIDDEN,
        "Not for this account",
        "This page is for administrators. Sign in with an admin account to use it.",
    )
}

/// An admin page's caller: the admin, or the response to send instead (sign in, or 403).
pub(super) async fn admin(
    state: &AppState,
    principal: Visitor,
    here: &str,
) -> Result<std::result::Result<(crate::auth::Principal, Option<Me>), Response>> {
    Ok(match signed_in(state, principal, here).await? {
        Err(redirect) => Err(redirect),
        Ok((p, _, user)) if p.is_admin(&axum::http::Method::GET) => Ok((p, user)),
        Ok((_, _, user)) => Err(not_for_you(user)),
    })
}

/// A license as the pages show it.
pub struct LicenseView {
    pub id: String,
    pub key: String,
    pub last4: String,
    pub product: String,
    pub owner: String,
    pub status: &'static str,
    pub devices: i64,
    pub seats: i64,
    pub expires: String,
    /// The churn budget in words ("1 of 3 deactivations used in the last 30 days"); empty when
    /// the product sets none.
    pub churn: String,
    /// When the spent budget allows the next deactivation; empty while one is possible.
    pub churn_next: String,
    /// Seats freed in the last 30 days (an admin may reset the count).
    pub churn_used: i64,
}

/// `l` for a page; `with_owner` looks up the owner's email (the admin pages show it).
async fn license_view(
    state: &AppState,
    l: crate::licensing::model::License,
    products: &std::collections::HashMap<String, String>,
    with_owner: bool,
) -> Result<LicenseView> {
    let owner = match &l.user_id {
        _ if !with_owner => String::new(),
        Some(uid) => crate::accounts::users::find_by_id(state, uid)
            .await?
            .map(|u| u.user.email)
            .unwrap_or_else(|| uid.clone()),
        None => "nobody yet (granted to an unverified address)".into(),
    };
    let churn = l.churn.as_ref();
    let churn_used = churn.map_or(0, |c| c.deactivations_30d);
    Ok(LicenseView {
        churn: match churn.and_then(|c| c.max_deactivations_per_30d) {
            Some(max) => format!("{churn_used} of {max} deactivations used in the last 30 days"),
            None => String::new(),
        },
        churn_next: churn
            .and_then(|c| c.next_deactivation_at)
            .map(when)
            .unwrap_or_default(),
        churn_used,
        product: products
            .get(&l.product_id)
            .cloned()
            .unwrap_or(l.product_id.clone()),
        owner,
        status: shown_status(&l),
        devices: l.activations_count,
        seats: l.max_activations,
        expires: date(l.expires_at, "never"),
        key: l.key.unwrap_or_default(),
        last4: l.key_last4,
        id: l.id,
    })
}

pub(super) async fn product_names(
    state: &AppState,
) -> Result<std::collections::HashMap<String, String>> {
    Ok(sqlx::query_as("SELECT id, name FROM products")
        .fetch_all(&state.db.pool)
        .await?
        .into_iter()
        .collect())
}

#[derive(Template)]
#[template(path = "dashboard/admin_licenses.html", config = "src/askama.toml")]
struct AdminLicenses {
    f: Frame,
    q: String,
    note: Option<String>,
    licenses: Vec<LicenseView>,
}

#[derive(Deserialize)]
pub struct Search {
    q: Option<String>,
}

/// Admin → licenses: all of them, or those matching a key, a customer's email or a product.
pub async fn admin_licenses(
    State(state): State<AppState>,
    principal: Visitor,
    Query(search): Query<Search>,
) -> Result<Response> {
    let (p, user) = match admin(&state, principal, "/dashboard/admin/licenses").await? {
        Ok(x) => x,
        Err(other) => return Ok(other),
    };
    let q = search.q.unwrap_or_default().trim().to_string();
    let mut filters = crate::licensing::admin::LicenseFilters::default();
    let mut note = None;
    let mut only: Option<String> = None;
    if let Some(key) = crate::licensing::key::LicenseKey::parse(&q) {
        only = sqlx::query_scalar("SELECT id FROM licenses WHERE key_digest = $1")
            .bind(key.digest_hex())
            .fetch_optional(&state.db.pool)
            .await?;
        if only.is_none() {
            note = Some("No license has this key.".to_string());
        }
    } else if q.contains('@') {
        match crate::http::checks::normalize_email(&q) {
            Some(email) => match crate::accounts::users::find_by_email(&state, &email).await? {
                Some(u) => filters.user_id = Some(u.user.id),
                None => note = Some(format!("No account uses {email}.")),
            },
            None => note = Some("That is not a valid email address.".to_string()),
        }
    } else if !q.is_empty() {
        match crate::licensing::products::find(&state.db, &q).await? {
            Some(prod) => filters.product_id = Some(prod.id),
            None => note = Some(format!("No product has the id or slug {q}.")),
        }
    }
    let products = product_names(&state).await?;
    let found = if note.is_some() {
        vec![]
    } else if let Some(id) = only {
        vec![
            crate::licensing::admin::get_license(
                State(state.clone()),
                p,
                crate::http::extract::Path(id),
            )
            .await?
            .0,
        ]
    } else {
        crate::licensing::admin::list_licenses(State(state.clone()), p, first_page(filters))
            .await?
            .0
            .data
    };
    let mut licenses = Vec::with_capacity(found.len());
    for l in found {
        licenses.push(license_view(&state, l, &products, true).await?);
    }
    Ok(render(AdminLicenses {
        f: Frame::page(user, "admin-licenses"),
        q,
        note,
        licenses,
    }))
}

/// One device, as the license page lists it.
pub struct DeviceLine {
    pub id: String,
    pub name: String,
    pub fingerprint: String,
    pub created: String,
    pub heartbeat: String,
    /// The end of an air-gapped device's lease; empty for devices that activate online.
    pub offline_until: String,
}

#[derive(Template)]
#[template(path = "dashboard/admin_license.html", config = "src/askama.toml")]
struct AdminLicensePage {
    f: Frame,
    /// An admin: the owner and the lifecycle actions show.
    manage: bool,
    l: LicenseView,
    activations: Vec<DeviceLine>,
    /// The product allows air-gapped activation: the request upload shows.
    offline: bool,
}

/// One license: its key and devices (with "deactivate") for its owner; for an admin also the
/// owner and the lifecycle actions. Each is a call to the API, whose visibility rule decides: a
/// license that is not the caller's does not exist for them (404).
pub async fn license_page(
    State(state): State<AppState>,
    principal: Visitor,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response> {
    let here = format!("/dashboard/licenses/{id}");
    let (p, _, user) = match signed_in(&state, principal, &here).await? {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    let manage = p.is_admin(&axum::http::Method::GET);
    let license = match crate::licensing::admin::get_license(
        State(state.clone()),
        p.clone(),
        crate::http::extract::Path(id.clone()),
    )
    .await
    {
        Ok(l) => l.0,
        Err(crate::error::Error::NotFound { .. }) => {
            return Ok(message(
                user,
                axum::http::StatusCode::NOT_FOUND,
                "No such license",
                "There is no license here for this account. It may belong to another account, or the link is wrong.",
            ));
        }
        Err(e) => return Err(e),
    };
    let activations = crate::licensing::admin::list_license_activations(
        State(state.clone()),
        p,
        crate::http::extract::Path(id),
    )
    .await?
    .0
    .data
    .into_iter()
    .map(|a| DeviceLine {
        name: a.name.unwrap_or_else(|| a.hostname.unwrap_or_default()),
        created: when(a.created_at),
        heartbeat: when(a.last_heartbeat_at),
        offline_until: a.offline_until.map(when).unwrap_or_default(),
        fingerprint: a.fingerprint,
        id: a.id,
    })
    .collect();
    let products = product_names(&state).await?;
    let offline = crate::licensing::products::find(&state.db, &license.product_id)
        .await?
        .is_some_and(|p| p.offline_activation != 0);
    Ok(render(AdminLicensePage {
        f: Frame::page(user, if manage { "admin-licenses" } else { "licenses" }),
        offline,
        manage,
        l: license_view(&state, license, &products, manage).await?,
        activations,
    }))
}

/// One event type as the explorer shows it.
pub struct EventLine {
    pub kind: &'static str,
    pub description: &'static str,
    /// The example event, compact: the generator signs exactly this (with a fresh `created`).
    pub example: String,
    pub pretty: String,
}

#[derive(Template)]
#[template(path = "dashboard/webhooks.html", config = "src/askama.toml")]
struct Webhooks {
    f: Frame,
    events: Vec<EventLine>,
}

/// The events explorer: the catalog of `GET /api/webhooks/events`, a cURL generator and a
/// signature checker that run in the browser.
pub async fn webhooks(State(state): State<AppState>, principal: Visitor) -> Result<Response> {
    let (_, _, user) = match signed_in(&state, principal, "/dashboard/webhooks").await? {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    let catalog = crate::events::catalog::list_event_types(Public).await.0;
    let events = catalog
        .data
        .into_iter()
        .map(|e| EventLine {
            kind: e.kind,
            description: e.description,
            example: e.example.to_string(),
            pretty: serde_json::to_string_pretty(&e.example).expect("json"),
        })
        .collect();
    Ok(render(Webhooks {
        f: Frame::page(user, "webhooks"),
        events,
    }))
}

/// One user as the admin page lists it.
pub struct UserLine {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: &'static str,
    pub plan: String,
    pub disabled: bool,
    pub verified: bool,
}

#[derive(Template)]
#[template(path = "dashboard/admin_users.html", config = "src/askama.toml")]
struct AdminUsers {
    f: Frame,
    users: Vec<UserLine>,
}

/// Admin → users: role, plan and access, each row a `PATCH /api/users/{id}`.
pub async fn admin_users(State(state): State<AppState>, principal: Visitor) -> Result<Response> {
    let (p, user) = match admin(&state, principal, "/dashboard/admin/users").await? {
        Ok(x) => x,
        Err(other) => return Ok(other),
    };
    let page = crate::accounts::users::list_users(
        State(state.clone()),
        crate::auth::Admin(p),
        first_page(Default::default()),
    )
    .await?
    .0;
    let users = page
        .data
        .into_iter()
        .map(|u| UserLine {
            role: u.role.as_str(),
            verified: u.email_verified_at.is_some(),
            disabled: u.disabled.0,
            plan: u.plan,
            name: u.name,
            email: u.email,
            id: u.id,
        })
        .collect();
    Ok(render(AdminUsers {
        f: Frame::page(user, "admin-users"),
        users,
    }))
}
