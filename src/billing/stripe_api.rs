//! The one call we make to Stripe's API: a checkout session's line items, for checkouts whose
//! metadata does not say what was bought. Only with `STRIPE_SECRET_KEY`; the key travels in the
//! `Authorization` header and is never logged nor returned.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

use crate::error::Error;
use crate::state::AppState;

/// Stripe's largest page.
const PAGE_SIZE: &str = "100";
/// Stripe allows 100 line items a session (one page); a list that keeps claiming more is not
/// followed forever.
const MAX_PAGES: usize = 10;

/// One line of a checkout: a Stripe price and how many units of it were bought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `None` for a line item without a price (older integrations): it maps to no product.
    pub price: Option<String>,
    /// What to call the line in a notice when it maps to nothing: the price, or the item id.
    pub label: String,
    pub quantity: i64,
}

/// Stripe's list object of line items, as the API answers it and as an event carries it when
/// `line_items` was expanded.
#[derive(Deserialize)]
pub struct List {
    data: Vec<Item>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct Item {
    id: String,
    price: Option<PriceRef>,
    quantity: Option<i64>,
}

/// A price as an id or as the expanded object.
#[derive(Deserialize)]
#[serde(untagged)]
enum PriceRef {
    Id(String),
    Object { id: String },
}

impl List {
    /// Whether Stripe holds more items than this page.
    pub fn has_more(&self) -> bool {
        self.has_more
    }

    fn last_id(&self) -> Option<String> {
        self.data.last().map(|i| i.id.clone())
    }

    pub fn into_lines(self) -> impl Iterator<Item = Line> {
        self.data.into_iter().map(|item| {
            let price = item.price.map(|p| match p {
                PriceRef::Id(id) | PriceRef::Object { id } => id,
            });
            Line {
                label: price
                    .clone()
                    .unwrap_or_else(|| format!("line item {} (no price)", item.id)),
                price,
                // Stripe omits it only where it is 1.
                quantity: item.quantity.unwrap_or(1),
            }
        })
    }
}

/// Our own client for Stripe: the webhook client (`AppState::http`) refuses loopback and private
/// addresses, but `STRIPE_API_BASE` is the operator's choice (a local stand-in in tests), so it
/// needs no such guard. 10 s per request; no proxy from the environment; no redirects, which
/// Stripe never sends and which should not carry the key anywhere else.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ECOSIRE/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("reqwest client")
    })
}

/// 502 `STRIPE_UNAVAILABLE`: a 5xx, so Stripe delivers the event again later.
fn unavailable(session_id: &str, why: &str) -> Error {
    tracing::warn!(checkout_session = %session_id, reason = %why, "Stripe's API could not be read; the event is left for Stripe to deliver again");
    Error::status(
        StatusCode::BAD_GATEWAY,
        "STRIPE_UNAVAILABLE",
        format!(
            "The line items of checkout session {session_id} could not be read from Stripe ({why}); deliver the event again later"
        ),
    )
}

/// Every line item of checkout session `session_id`, following Stripe's pagination
/// (`has_more`, `starting_after` the last item's id). Any failure is `STRIPE_UNAVAILABLE`.
pub async fn line_items(state: &AppState, key: &str, session_id: &str) -> Result<Vec<Line>, Error> {
    let mut url = reqwest::Url::parse(&state.config.stripe_api_base)
        .map_err(|_| unavailable(session_id, "STRIPE_API_BASE is not a URL"))?;
    // Pushed as path segments, so the id is percent-encoded rather than trusted as a path.
    url.path_segments_mut()
        .map_err(|_| unavailable(session_id, "STRIPE_API_BASE cannot take a path"))?
        .pop_if_empty()
        .extend(["v1", "checkout", "sessions", session_id, "line_items"]);
    let mut lines = vec![];
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut page_url = url.clone();
        page_url.query_pairs_mut().append_pair("limit", PAGE_SIZE);
        if let Some(a) = &after {
            page_url.query_pairs_mut().append_pair("starting_after", a);
        }
        let res = client()
            .get(page_url)
            .bearer_auth(key)
            .send()
            .await
            .map_err(|e| unavailable(session_id, &crate::events::dispatcher::describe(&e)))?;
        let status = res.status();
        if !status.is_success() {
            // Stripe's error body may echo part of the key: only the status is reported.
            return Err(unavailable(
                session_id,
                &format!("Stripe answered {status}"),
            ));
        }
        let page: List = res
            .json()
            .await
            .map_err(|_| unavailable(session_id, "the answer is not a list of line items"))?;
        let (more, last) = (page.has_more, page.last_id());
        lines.extend(page.into_lines());
        match (more, last) {
            (true, Some(last)) if after.as_deref() != Some(last.as_str()) => after = Some(last),
            (true, _) => {
                return Err(unavailable(
                    session_id,
                    "the list says it has more but does not move on",
                ));
            }
            (false, _) => return Ok(lines),
        }
    }
    Err(unavailable(
        session_id,
        &format!("more than {MAX_PAGES} pages of line items"),
    ))
}
