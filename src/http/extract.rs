//! `Json`, `Query` and `Path` that answer malformed input with our problem body.
//!
//! JSON is parsed through `serde_path_to_error` so a 422 names the failing field; syntax errors
//! are 400 `MALFORMED_JSON`; a body that is not `application/json` is 415; an over-long body is 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, FieldError};

/// A JSON request body or response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

fn is_json_content_type(parts: &axum::http::HeaderMap) -> bool {
    let Some(ct) = parts
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Turns a serde error at `path` into the field-level 422 (or the 400 for broken syntax).
fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> Error {
    use serde_json::error::Category;
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            Error::bad_request("MALFORMED_JSON", "Request body is not valid JSON")
        }
        Category::Data => {
            let text = inner.to_string();
            let text = text.split(" at line ").next().unwrap_or(&text).to_string();
            // "missing field `x`" is reported at the parent's path: name the field itself.
            let field = if let Some(rest) = text.strip_prefix("missing field `") {
                let name = rest.trim_end_matches('`');
                if path == "." {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                }
            } else if path == "." {
                "body".to_string()
            } else {
                path
            };
            Error::Validation(vec![FieldError::new(field, text)])
        }
    }
}

/// Refuses text that holds U+0000 anywhere in a JSON body (422 naming the field). PostgreSQL
/// cannot store it in `text` and SQLite would store it as a truncation trap, so no string input
/// may carry it. In JSON a NUL can only arrive as the escape `\u0000` (raw control characters
/// are a syntax error), so the common case is one scan of the bytes; only a body that has the
/// escape is parsed again to name the field.
pub fn reject_nul_json(bytes: &[u8]) -> Result<(), Error> {
    if !bytes.windows(6).any(|w| w == b"\\u0000") {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(()); // not JSON: the parser reports that
    };
    match nul_path(&value, String::new()) {
        Some(field) => Err(Error::invalid(
            if field.is_empty() {
                "body".into()
            } else {
                field
            },
            "must not contain the NUL character (U+0000)",
        )),
        None => Ok(()),
    }
}

/// The path of the first string (or object key) in `v` that contains U+0000.
fn nul_path(v: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('\0') => Some(at),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_path(x, format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, x)| {
            let here = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_path(x, here)
            }
        }),
        _ => None,
    }
}

/// The whole body, within the body limit (413 past it).
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::bad_request("MALFORMED_JSON", "Request body could not be read")
        }
    })
}

/// Parses JSON bytes into `T` with our error mapping (also used for raw-body handlers).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    reject_nul_json(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end()
        .map_err(|_| Error::bad_request("MALFORMED_JSON", "Request body is not valid JSON"))?;
    Ok(value)
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query-string parameters; bad values are a 422 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        // `%00` decodes to U+0000, which no text column can hold (see `reject_nul_json`).
        if let Some((name, _)) = form_urlencoded::parse(query.as_bytes())
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(Error::invalid(
                name.replace('\0', ""),
                "must not contain the NUL character (U+0000)",
            ));
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|err| {
                let path = err.path().to_string();
                let text = err.into_inner().to_string();
                let field = if let Some(rest) = text.strip_prefix("missing field `") {
                    rest.trim_end_matches('`').to_string()
                } else if path == "." {
                    "query".to_string()
                } else {
                    path
                };
                Error::Validation(vec![FieldError::new(field, text)])
            })
    }
}

/// Path parameters; a value that does not fit the route is a 404, as for an unknown object.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // No id holds U+0000: `%00` in a path segment names nothing.
        if let Ok(raw) = axum::extract::RawPathParams::from_request_parts(parts, state).await
            && raw.iter().any(|(_, v)| v.contains('\0'))
        {
            return Err(Error::no_such("Resource"));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|_| Error::no_such("Resource"))
    }
}

/// A JSON body that may be absent (an empty body reads as `T::default()`).
#[derive(Debug, Clone, Default)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = is_json_content_type(req.headers());
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !json_type {
            return Err(Error::UnsupportedMediaType);
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// The raw request body (for signature checks over the exact bytes), with our 413.
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        body_bytes(req, state).await.map(RawBody)
    }
}
