//! The dashboard's script and stylesheet, compiled into the binary and served under names that
//! carry a hash of their content: a page always asks for the version it was rendered with, so
//! the files can be cached for a year (`immutable`) and a new binary still never shows a stale one.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::auth::limits::Public;

struct Asset {
    name: String,
    content_type: &'static str,
    body: &'static str,
}

fn asset(stem: &str, ext: &str, content_type: &'static str, body: &'static str) -> Asset {
    let hash = crate::crypto::sha256_hex(body.as_bytes());
    Asset {
        name: format!("{stem}.{}.{ext}", &hash[..12]),
        content_type,
        body,
    }
}

static FILES: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        asset(
            "app",
            "js",
            "text/javascript; charset=utf-8",
            include_str!("../assets/app.js"),
        ),
        asset(
            "app",
            "css",
            "text/css; charset=utf-8",
            include_str!("../assets/app.css"),
        ),
    ]
});

/// The URLs templates link to.
pub struct Urls {
    pub js: String,
    pub css: String,
}

pub static URLS: LazyLock<Urls> = LazyLock::new(|| Urls {
    js: format!("/assets/{}", FILES[0].name),
    css: format!("/assets/{}", FILES[1].name),
});

pub async fn serve(_rate: Public, Path(file): Path<String>) -> Response {
    match FILES.iter().find(|a| a.name == file) {
        Some(a) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(a.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            a.body,
        )
            .into_response(),
        None => crate::error::Error::no_such("Asset").into_response(),
    }
}
