//! The Stripe signature scheme, used both ways: inbound `Stripe-Signature` and our outbound
//! `X-License-Signature`: `t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{raw body}">`, keyed with the
//! whole secret string as UTF-8 bytes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Lowercase hex HMAC-SHA256 of `"{t}.{body}"`.
pub fn compute(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The header value for `body` signed at `t`.
pub fn header(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", compute(secret, t, body))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing or unparsable signature header")]
    Malformed,
    #[error("no v1 signature matches")]
    Mismatch,
    #[error("timestamp outside the tolerance")]
    Stale,
}

/// Verifies a signature header over the raw `body`: any `v1` may match (secrets being rolled send
/// several), compared in constant time; `t` must be within `tolerance_s` of `now` (both ways, so a
/// far-future timestamp cannot extend a captured request's life). Other schemes (`v0`) are ignored.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<i64, SignatureError> {
    let mut t: Option<i64> = None;
    let mut v1s: Vec<&str> = vec![];
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => t = v.parse().ok(),
            "v1" => v1s.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if v1s.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = compute(secret, t, body);
    if !v1s
        .iter()
        .any(|s| crate::crypto::ct_eq(expected.as_bytes(), s.as_bytes()))
    {
        return Err(SignatureError::Mismatch);
    }
    if (now - t).abs() > tolerance_s {
        return Err(SignatureError::Stale);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test_secret").unwrap();
        mac.update(b"1700000000.payload");
        assert_eq!(
            compute("whsec_test_secret", 1_700_000_000, b"payload"),
            hex::encode(mac.finalize().into_bytes())
        );
        assert_eq!(
            header("whsec_test_secret", 1_700_000_000, b"payload"),
            format!(
                "t=1700000000,v1={}",
                compute("whsec_test_secret", 1_700_000_000, b"payload")
            )
        );
    }

    #[test]
    fn verification_accepts_any_v1_and_rejects_the_rest() {
        let body = b"{\"a\":1}";
        let good = compute("whsec_x", 100, body);
        let h = format!("t=100,v1=deadbeef,v1={good},v0=abc");
        assert_eq!(verify("whsec_x", &h, body, 150, 300), Ok(100));
        assert_eq!(
            verify("whsec_y", &h, body, 150, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_x", &h, b"{\"a\":2}", 150, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_x", &h, body, 401, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify("whsec_x", &format!("t=100,v0={good}"), body, 150, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("whsec_x", "garbage", body, 150, 300),
            Err(SignatureError::Malformed)
        );
    }
}
