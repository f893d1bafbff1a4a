//! Signed revocation lists (`GET /api/licenses/revocations?product=…`, or a mirror of that file):
//! a compact JWS (`typ: revocations+jwt`) signed with the same keys as license tokens, naming the
//! product's revoked and suspended licenses — as ids, or as a Golomb-coded set when there are
//! many. A list is accepted only when its signature, `aud`, `iss`, product and `exp` hold and its
//! `seq` is not below the newest one seen; the accepted list is kept in the (sealed) cache file
//! and consulted by every offline check, so a revoked license stops working offline at the next
//! list this machine sees rather than at its token's `exp`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::token::{self, TokenError};

/// The JWS `typ` of a revocation list.
pub(crate) const TYP: &str = "revocations+jwt";
/// The `aud` of a revocation list.
pub(crate) const AUDIENCE: &str = "ecosire:revocations";

/// A Golomb-coded set of license ids (see the server's `licensing::revocations::GcsFilter`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Gcs {
    alg: String,
    p: u8,
    m: u64,
    count: u64,
    salt: String,
    data: String,
}

impl Gcs {
    /// Whether `id` is in the set (false positives at rate 2^-p); `None` when malformed.
    fn contains(&self, id: &str) -> Option<bool> {
        if self.alg != "gcs-sha256" || self.m == 0 || self.p > 32 {
            return None;
        }
        let salt = URL_SAFE_NO_PAD.decode(&self.salt).ok()?;
        let data = URL_SAFE_NO_PAD.decode(&self.data).ok()?;
        let digest = Sha256::new()
            .chain_update(&salt)
            .chain_update(id.as_bytes())
            .finalize();
        let h = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % self.m;
        let mut pos = 0usize;
        let mut bit = || {
            let b = data
                .get(pos / 8)
                .map(|byte| byte & (0x80 >> (pos % 8)) != 0);
            pos += 1;
            b
        };
        let mut value = 0u64;
        for _ in 0..self.count {
            let mut q = 0u64;
            while bit()? {
                q += 1;
            }
            let mut r = 0u64;
            for _ in 0..self.p {
                r = (r << 1) | u64::from(bit()?);
            }
            value = value.checked_add((q << self.p) | r)?;
            if value >= h {
                return Some(value == h);
            }
        }
        Some(false)
    }
}

/// The claims of a revocation list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ListClaims {
    pub iss: String,
    pub aud: String,
    pub product: String,
    pub seq: i64,
    pub iat: i64,
    pub exp: i64,
    #[serde(default)]
    revoked: Option<Vec<String>>,
    #[serde(default)]
    revoked_filter: Option<Gcs>,
    #[serde(default)]
    suspended: Option<Vec<String>>,
    #[serde(default)]
    suspended_filter: Option<Gcs>,
}

/// How a list names a license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listed {
    Revoked,
    Suspended,
}

impl Listed {
    /// The validate code the server gives such a license.
    pub fn code(self) -> &'static str {
        match self {
            Listed::Revoked => "REVOKED",
            Listed::Suspended => "SUSPENDED",
        }
    }
}

/// Whether one set (ids or filter) names `id`. A malformed filter counts as naming it: the list
/// is signed, so it is the server's, and refusing is the side to err on.
fn in_set(ids: &Option<Vec<String>>, filter: &Option<Gcs>, id: &str) -> bool {
    ids.as_ref().is_some_and(|ids| ids.iter().any(|i| i == id))
        || filter
            .as_ref()
            .is_some_and(|f| f.contains(id) != Some(false))
}

impl ListClaims {
    /// Whether the list names the license `id`, and how.
    pub fn lists(&self, id: &str) -> Option<Listed> {
        if in_set(&self.revoked, &self.revoked_filter, id) {
            Some(Listed::Revoked)
        } else if in_set(&self.suspended, &self.suspended_filter, id) {
            Some(Listed::Suspended)
        } else {
            None
        }
    }
}

/// Why a fetched list was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The signature or header did not verify with the trusted keys.
    #[error("revocation list not verified: {0}")]
    Token(#[from] TokenError),
    /// `aud`, `iss` or `product` is not this client's.
    #[error("revocation list claim `{0}` does not match")]
    Claim(&'static str),
    /// Its `exp` has passed: a mirror that stopped syncing, or a replay.
    #[error("revocation list expired at {exp} (unix seconds)")]
    Expired { exp: i64 },
    /// Older than a list already seen: a rollback (a stale mirror, a replay).
    #[error("revocation list seq {seq} is older than seq {seen} already seen")]
    Rollback { seq: i64, seen: i64 },
}

/// What a list must be to be accepted.
pub(crate) struct Expect<'a> {
    pub issuer: &'a str,
    pub product_id: &'a str,
    /// The `(seq, iat)` of the newest list accepted so far.
    pub seen: Option<(i64, i64)>,
    /// Unix seconds.
    pub now: i64,
}

/// Verifies `jws` and checks its claims against `want`. `Ok(None)`: verified, but not newer
/// than the list already held (nothing to replace).
pub(crate) fn accept(
    jws: &str,
    key_for: impl Fn(&str) -> Option<VerifyingKey>,
    want: &Expect<'_>,
) -> Result<Option<ListClaims>, ListError> {
    let c: ListClaims = token::verify_typed(jws.trim(), TYP, key_for)?;
    if c.aud != AUDIENCE {
        return Err(ListError::Claim("aud"));
    }
    if c.iss != want.issuer {
        return Err(ListError::Claim("iss"));
    }
    if c.product != want.product_id {
        return Err(ListError::Claim("product"));
    }
    if want.now >= c.exp {
        return Err(ListError::Expired { exp: c.exp });
    }
    match want.seen {
        Some((seq, _)) if c.seq < seq => Err(ListError::Rollback {
            seq: c.seq,
            seen: seq,
        }),
        // The same list again, or the same seq signed earlier: nothing newer.
        Some((seq, iat)) if c.seq == seq && c.iat <= iat => Ok(None),
        _ => Ok(Some(c)),
    }
}

/// The claims of a list already accepted (kept in the sealed cache), read without verifying
/// again: it was verified when accepted, and the key that signed it may since have left the
/// keys this run trusts. Editing the cache breaks its seal; deleting it forgets the list.
pub(crate) fn stored_claims(jws: &str) -> Option<ListClaims> {
    let payload = jws.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// The list kept in the cache file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredList {
    pub seq: i64,
    pub iat: i64,
    pub jws: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[11; 32])
    }

    fn sign(header: serde_json::Value, claims: serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = key().sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    fn list(seq: i64, iat: i64, change: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut c = serde_json::json!({
            "iss": "ecosire", "aud": AUDIENCE, "product": "prd_1", "seq": seq, "iat": iat,
            "exp": iat + 3 * 86_400, "revoked": ["lic_r"], "suspended": ["lic_s"],
        });
        change(&mut c);
        sign(
            serde_json::json!({"alg": "EdDSA", "typ": TYP, "kid": "k"}),
            c,
        )
    }

    fn keys(kid: &str) -> Option<VerifyingKey> {
        (kid == "k").then(|| key().verifying_key())
    }

    fn want(seen: Option<(i64, i64)>, now: i64) -> Expect<'static> {
        Expect {
            issuer: "ecosire",
            product_id: "prd_1",
            seen,
            now,
        }
    }

    #[test]
    fn a_list_is_accepted_only_when_signed_current_and_not_older() {
        let c = accept(&list(5, 1000, |_| {}), keys, &want(None, 1000))
            .unwrap()
            .unwrap();
        assert_eq!(c.seq, 5);
        assert_eq!(c.lists("lic_r"), Some(Listed::Revoked));
        assert_eq!(c.lists("lic_s"), Some(Listed::Suspended));
        assert_eq!(c.lists("lic_ok"), None);
        // Older than what was seen: refused; the same again: nothing new; newer: accepted.
        assert_eq!(
            accept(&list(4, 5000, |_| {}), keys, &want(Some((5, 1000)), 5000)),
            Err(ListError::Rollback { seq: 4, seen: 5 })
        );
        assert_eq!(
            accept(&list(5, 1000, |_| {}), keys, &want(Some((5, 1000)), 1000)),
            Ok(None)
        );
        assert!(
            accept(&list(5, 4600, |_| {}), keys, &want(Some((5, 1000)), 4600))
                .unwrap()
                .is_some(),
            "the same seq re-signed later extends its life"
        );
        // Expired, another product, issuer or audience, a bad signature, a license token's typ.
        let late = 1000 + 3 * 86_400;
        assert_eq!(
            accept(&list(6, 1000, |_| {}), keys, &want(None, late)),
            Err(ListError::Expired { exp: late })
        );
        for (claim, field, value) in [
            ("product", "product", "prd_2"),
            ("iss", "iss", "elsewhere"),
            ("aud", "aud", "ecosire:license"),
        ] {
            let jws = list(6, 1000, |c| c[field] = value.into());
            assert_eq!(
                accept(&jws, keys, &want(None, 1000)),
                Err(ListError::Claim(claim))
            );
        }
        let forged = {
            let good = list(6, 1000, |_| {});
            let mut parts: Vec<String> = good.split('.').map(String::from).collect();
            parts[1] = URL_SAFE_NO_PAD.encode(
                serde_json::json!({"iss": "ecosire", "aud": AUDIENCE, "product": "prd_1",
                    "seq": 99, "iat": 1000, "exp": 9_999_999_999_i64, "revoked": []})
                .to_string(),
            );
            parts.join(".")
        };
        assert_eq!(
            accept(&forged, keys, &want(None, 1000)),
            Err(ListError::Token(TokenError::Signature))
        );
        let as_token = sign(
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "k"}),
            serde_json::json!({"seq": 1}),
        );
        assert_eq!(
            accept(&as_token, keys, &want(None, 1000)),
            Err(ListError::Token(TokenError::Header))
        );
    }

    /// The server's test vector (`src/licensing/revocations.rs`): the same bytes decode the same.
    #[test]
    fn the_shared_gcs_vector_decodes() {
        let f = Gcs {
            alg: "gcs-sha256".into(),
            p: 4,
            m: 80,
            count: 5,
            salt: "BwcHBwcHBwcHBwcHBwcHBw".into(),
            data: "lPhIMA".into(),
        };
        for id in ["lic_a", "lic_b", "lic_c", "lic_d", "lic_e"] {
            assert_eq!(f.contains(id), Some(true), "{id}");
        }
        for id in ["lic_f", "lic_g", "lic_h", "lic_x", "lic_y", "lic_z"] {
            assert_eq!(f.contains(id), Some(false), "{id}");
        }
        let cut = Gcs {
            data: "lA".into(),
            ..f
        };
        // lic_d's value (68) is the last: a stream cut short never reaches it.
        assert_eq!(cut.contains("lic_d"), None);
        let c = ListClaims {
            iss: "ecosire".into(),
            aud: AUDIENCE.into(),
            product: "prd_1".into(),
            seq: 1,
            iat: 0,
            exp: 1,
            revoked: None,
            revoked_filter: Some(cut),
            suspended: None,
            suspended_filter: None,
        };
        assert_eq!(c.lists("lic_d"), Some(Listed::Revoked), "malformed: refuse");
    }
}
