//! Provider access tokens as bearer credentials: a JWT from the configured issuer, signed with
//! one of the provider's keys (its JWKS, fetched again for an unknown `kid`), for our audience,
//! within its `nbf`/`exp` give or take [`CLOCK_SKEW_S`]. Session JWTs and API keys are told apart
//! before this runs (`auth::extract`); whatever fails here is a 401.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::JsonWebKey;
use openidconnect::core::CoreJwsSigningAlgorithm;
use serde_json::{Map, Value};

use super::link::Person;
use super::{ALGORITHMS, CLOCK_SKEW_S, Provider};
use crate::auth::{Credential, Principal};
use crate::crypto::sha256_hex;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Why a token was not accepted (for the debug log; the caller only hears 401).
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    Algorithm,
    UnknownKey,
    Signature,
    Issuer,
    Audience,
    Expired,
    NotYetValid,
    NoSubject,
}

/// Checks a provider access token and answers its claims.
pub async fn verify(
    provider: &Provider,
    token: &str,
    now_s: i64,
) -> Result<Map<String, Value>, Rejected> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejected::Malformed);
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| Rejected::Malformed)
    };
    let header: Map<String, Value> =
        serde_json::from_slice(&decode(h)?).map_err(|_| Rejected::Malformed)?;
    let signature = decode(s)?;
    let alg: CoreJwsSigningAlgorithm = header
        .get("alg")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .ok_or(Rejected::Algorithm)?;
    if !ALGORITHMS.contains(&alg) {
        return Err(Rejected::Algorithm);
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let message = &token.as_bytes()[..h.len() + 1 + p.len()];
    let mut checked = check_signature(provider, kid, &alg, message, &signature);
    if checked == Err(Rejected::UnknownKey) && provider.refresh_keys().await {
        checked = check_signature(provider, kid, &alg, message, &signature);
    }
    checked?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&decode(p)?).map_err(|_| Rejected::Malformed)?;
    check_claims(provider, &claims, now_s)?;
    Ok(claims)
}

/// Tries the keys that may have signed: those with the token's `kid` (every key when it names
/// none), usable for signatures with `alg`.
fn check_signature(
    provider: &Provider,
    kid: Option<&str>,
    alg: &CoreJwsSigningAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Rejected> {
    let keys = provider.keys();
    let mut candidates = keys
        .keys()
        .iter()
        .filter(|k| kid.is_none() || k.key_id().map(|id| id.as_str()) == kid)
        .peekable();
    if candidates.peek().is_none() {
        return Err(Rejected::UnknownKey);
    }
    candidates
        .any(|k| k.verify_signature(alg, message, signature).is_ok())
        .then_some(())
        .ok_or(Rejected::Signature)
}

fn check_claims(
    provider: &Provider,
    claims: &Map<String, Value>,
    now_s: i64,
) -> Result<(), Rejected> {
    let config = &provider.config;
    if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
        return Err(Rejected::Issuer);
    }
    let for_us = match claims.get("aud") {
        Some(Value::String(a)) => *a == config.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&config.audience)),
        _ => false,
    };
    if !for_us {
        return Err(Rejected::Audience);
    }
    let time = |name: &str| claims.get(name).and_then(Value::as_f64).map(|t| t as i64);
    match time("exp") {
        Some(exp) if now_s < exp + CLOCK_SKEW_S => {}
        _ => return Err(Rejected::Expired),
    }
    if time("nbf").is_some_and(|nbf| now_s + CLOCK_SKEW_S < nbf) {
        return Err(Rejected::NotYetValid);
    }
    Ok(())
}

/// The caller a provider access token stands for: a configured service account (by `sub`, or
/// `client_id` for tokens without one), else the person linked to its subject.
pub async fn authenticate(state: &AppState, provider: &Provider, token: &str) -> Result<Principal> {
    let now_s = crate::timestamp::now_ms() / 1000;
    let claims = match verify(provider, token, now_s).await {
        Ok(c) => c,
        Err(why) => {
            tracing::debug!(?why, "provider token refused");
            return Err(Error::Unauthenticated);
        }
    };
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let subject = text("sub")
        .or_else(|| text("client_id"))
        .ok_or(Error::Unauthenticated)?;
    let credential_subject =
        sha256_hex(format!("{}\n{subject}", provider.config.issuer).as_bytes());
    if let Some(account) = provider
        .config
        .service_accounts
        .iter()
        .find(|a| a.subject == subject)
    {
        let user = super::link::service_user(state, &account.email).await?;
        if user.disabled.0 {
            return Err(Error::Unauthenticated);
        }
        return Ok(Principal {
            user_id: user.id,
            role: user.role,
            plan: user.plan,
            credential: Credential::Provider {
                subject: credential_subject,
                scope: Some(account.scope),
            },
        });
    }
    let person = Person::from_claims(
        &provider.config,
        text("sub").ok_or(Error::Unauthenticated)?,
        &claims,
    );
    let user = match super::link::user_for(state, provider, &person).await? {
        Ok(user) => user,
        Err(refusal) => {
            tracing::debug!(?refusal, "provider token refused");
            return Err(Error::Unauthenticated);
        }
    };
    Ok(Principal {
        user_id: user.id,
        role: user.role,
        plan: user.plan,
        credential: Credential::Provider {
            subject: credential_subject,
            scope: None,
        },
    })
}
