//! Which bucket pays for a request, stated by each handler in its signature — no table of routes:
//!
//! - `Public`: a public route with no row of its own pays with its caller — the caller's own
//!   bucket once its credentials verify, the per-IP `anonymous` bucket otherwise;
//! - `PerIp<B>`: a public form with its own per-IP row (login, register, support, CRM,
//!   newsletter);
//! - `AskLimit`: `ask`, per verified principal, else per IP;
//! - `RateContext` (in `http::ratelimit`): validate and activate, charged by license key once the
//!   handler has parsed it, before the database is asked;
//! - the access extractors (`Principal`, `Admin`, …) charge authenticated routes.
//!
//! Every route must name one of them; `platform::every_operation_is_rate_limited` calls each
//! operation and fails on one that answers without rate-limit headers.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::Error;
use crate::http::ratelimit::{RateSlot, ip_key};
use crate::state::AppState;

fn slot(parts: &Parts) -> Option<RateSlot> {
    parts.extensions.get::<RateSlot>().cloned()
}

/// The extractor shell of a unit struct that charges a bucket: nothing at all (credentials are not
/// even looked at) while limits are off.
macro_rules! charging {
    ($t:ident, |$parts:ident, $state:ident| $charge:block) => {
        impl FromRequestParts<AppState> for $t {
            type Rejection = Error;

            async fn from_request_parts(
                $parts: &mut Parts,
                $state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                if $state.limits.enabled $charge
                Ok($t)
            }
        }
    };
}

/// A public route without a row of its own: charged to its verified caller, else its IP.
#[derive(Debug, Clone, Copy)]
pub struct Public;

charging!(Public, |parts, state| {
    match super::extract::resolve(parts, state).await {
        Ok(p) => super::extract::charge(parts, state, p.as_ref()).await?,
        // Credentials that do not verify buy nothing: the IP pays.
        Err(Error::Unauthenticated | Error::Forbidden { .. }) => {
            super::extract::charge(parts, state, None).await?
        }
        Err(e) => return Err(e),
    }
});

/// A per-IP bucket of API.md's rate-limit table (its name is also the suffix of its
/// `ECOSIRE_RATE_LIMIT_<NAME>` variable).
pub trait Bucket: Send + Sync + 'static {
    const NAME: &'static str;
}

macro_rules! buckets {
    ($($(#[$doc:meta])* $name:ident = $bucket:literal;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl Bucket for $name {
                const NAME: &'static str = $bucket;
            }
        )*
    };
}

buckets! {
    /// `POST /api/auth/login`.
    Login = "login";
    /// `POST /api/auth/register`.
    Register = "register";
    /// `POST /api/support`.
    Support = "support";
    /// `POST /api/crm/capture`.
    Crm = "crm";
    /// `POST /api/newsletter/subscribe`.
    Newsletter = "newsletter";
    /// `POST /api/auth/password-reset`.
    PasswordReset = "password_reset";
    /// The routes that take an emailed token: `…/verify-email/confirm`, `…/password-reset/confirm`.
    AccountLinks = "account_links";
}

/// Charges the request to the per-IP bucket `B`, before the body is read.
#[derive(Debug, Clone, Copy)]
pub struct PerIp<B>(PhantomData<B>);

impl<B: Bucket> FromRequestParts<AppState> for PerIp<B> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.limits.enabled {
            state
                .limits
                .check(B::NAME, &ip_key(parts, state), slot(parts).as_ref())
                .await?;
        }
        Ok(PerIp(PhantomData))
    }
}

/// The `ask` bucket: per principal once its credentials verify, else per IP.
#[derive(Debug, Clone, Copy)]
pub struct AskLimit;

charging!(AskLimit, |parts, state| {
    let key = match super::extract::resolve(parts, state).await {
        Ok(Some(p)) => format!("user:{}", p.user_id),
        _ => ip_key(parts, state),
    };
    state
        .limits
        .check("ask", &key, slot(parts).as_ref())
        .await?;
});
