//! Cursor pagination: `?limit=` (1–100, default 50) and an opaque `?cursor=`; answers
//! `{data, next_cursor}`. Lists run newest first by id (ids sort by creation time).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::Error;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1–100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Opaque: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A list's query string: the page (`limit`, `cursor`, checked) and the list's own filters `F`,
/// read from one query string (a bad value is a 422 naming its parameter).
#[derive(Debug)]
pub struct Listing<F = NoFilters> {
    pub page: PageRequest,
    pub filters: F,
}

/// The filters of a list that has none.
#[derive(Debug, Default, Deserialize)]
pub struct NoFilters {}

impl<F, S> axum::extract::FromRequestParts<S> for Listing<F>
where
    F: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let super::extract::Query(page) =
            super::extract::Query::<PageParams>::from_request_parts(parts, state).await?;
        let super::extract::Query(filters) =
            super::extract::Query::<F>::from_request_parts(parts, state).await?;
        Ok(Listing {
            page: page.checked()?,
            filters,
        })
    }
}

/// A checked page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: i64,
    /// Only ids strictly below this one.
    pub before_id: Option<String>,
}

impl PageParams {
    pub fn checked(&self) -> Result<PageRequest, Error> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 100"));
        }
        let before_id = match &self.cursor {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c) => Some(
                decode_cursor(c)
                    .ok_or_else(|| Error::invalid("cursor", "is not a cursor this API issued"))?,
            ),
        };
        Ok(PageRequest { limit, before_id })
    }
}

fn decode_cursor(c: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(c).ok()?;
    let s = String::from_utf8(bytes).ok()?;
    (s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(s)
}

pub fn encode_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from rows fetched with `LIMIT limit + 1`, newest first.
    pub fn from_rows(mut rows: Vec<T>, req: &PageRequest, id_of: impl Fn(&T) -> &str) -> Self {
        let more = rows.len() as i64 > req.limit;
        rows.truncate(req.limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(id_of(r)))
        } else {
            None
        };
        Page {
            data: rows,
            next_cursor,
        }
    }

    /// Converts each row with an async, fallible `f` (views that need another query).
    pub async fn try_map<U, E, Fut>(self, mut f: impl FnMut(T) -> Fut) -> Result<Page<U>, E>
    where
        Fut: std::future::Future<Output = Result<U, E>>,
    {
        let mut data = Vec::with_capacity(self.data.len());
        for row in self.data {
            data.push(f(row).await?);
        }
        Ok(Page {
            data,
            next_cursor: self.next_cursor,
        })
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}
