//! The validation decision: a pure function of a license's state, the request and the time.
//! No I/O here, so every code and their precedence are unit-tested below.

use serde::Serialize;
use utoipa::ToSchema;

use super::model::LicenseStatus;

/// What the decision needs to know about a license: a view of its cached snapshot, borrowed so
/// that the snapshot holds each value once.
#[derive(Debug, Clone, Copy)]
pub struct LicenseState<'a> {
    pub status: LicenseStatus,
    pub expires_at_ms: Option<i64>,
    pub product_id: &'a str,
    pub product_slug: &'a str,
    pub entitlements: &'a [String],
    /// Fingerprints with a live activation.
    pub fingerprints: &'a [String],
}

/// The question asked by `POST /api/licenses/validate`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    pub product: Option<&'a str>,
    pub entitlements: &'a [String],
    pub fingerprint: Option<&'a str>,
}

/// Validation codes, in the order in which they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    NotFound,
    Revoked,
    Suspended,
    Expired,
    ProductMismatch,
    EntitlementsMissing,
    FingerprintNotActivated,
    Valid,
}

impl Code {
    pub const ALL: [Code; 8] = [
        Code::NotFound,
        Code::Revoked,
        Code::Suspended,
        Code::Expired,
        Code::ProductMismatch,
        Code::EntitlementsMissing,
        Code::FingerprintNotActivated,
        Code::Valid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::NotFound => "NOT_FOUND",
            Code::Revoked => "REVOKED",
            Code::Suspended => "SUSPENDED",
            Code::Expired => "EXPIRED",
            Code::ProductMismatch => "PRODUCT_MISMATCH",
            Code::EntitlementsMissing => "ENTITLEMENTS_MISSING",
            Code::FingerprintNotActivated => "FINGERPRINT_NOT_ACTIVATED",
            Code::Valid => "VALID",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Code::NotFound => "No license has this key",
            Code::Revoked => "The license has been revoked",
            Code::Suspended => "The license is suspended",
            Code::Expired => "The license has expired",
            Code::ProductMismatch => "The license is for another product",
            Code::EntitlementsMissing => "The license lacks a requested entitlement",
            Code::FingerprintNotActivated => "This device has no live activation of the license",
            Code::Valid => "The license is valid",
        }
    }
}

/// Is the license expired at `now_ms`?
pub fn is_expired(expires_at_ms: Option<i64>, now_ms: i64) -> bool {
    expires_at_ms.is_some_and(|e| e <= now_ms)
}

/// Whether a license may be used at all now (what activate and heartbeat ask): `Revoked`,
/// `Suspended`, `Expired` or `Valid`, by the same rules and order as `decide`.
pub fn usability(status: LicenseStatus, expires_at_ms: Option<i64>, now_ms: i64) -> Code {
    let state = LicenseState {
        status,
        expires_at_ms,
        product_id: "",
        product_slug: "",
        entitlements: &[],
        fingerprints: &[],
    };
    decide(Some(&state), &Ask::default(), now_ms)
}

/// The first code that applies, in API.md's order.
pub fn decide(license: Option<&LicenseState<'_>>, ask: &Ask<'_>, now_ms: i64) -> Code {
    let Some(l) = license else {
        return Code::NotFound;
    };
    match l.status {
        LicenseStatus::Revoked => return Code::Revoked,
        LicenseStatus::Suspended => return Code::Suspended,
        LicenseStatus::Active => {}
    }
    if is_expired(l.expires_at_ms, now_ms) {
        return Code::Expired;
    }
    if let Some(p) = ask.product
        && p != l.product_id
        && p != l.product_slug
    {
        return Code::ProductMismatch;
    }
    if !ask.entitlements.iter().all(|e| l.entitlements.contains(e)) {
        return Code::EntitlementsMissing;
    }
    if let Some(fp) = ask.fingerprint
        && !l.fingerprints.iter().any(|f| f == fp)
    {
        return Code::FingerprintNotActivated;
    }
    Code::Valid
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    /// An owned license state the tests can change field by field.
    #[derive(Clone)]
    struct Owned {
        status: LicenseStatus,
        expires_at_ms: Option<i64>,
        product_id: String,
        product_slug: String,
        entitlements: Vec<String>,
        fingerprints: Vec<String>,
    }

    impl Owned {
        fn view(&self) -> LicenseState<'_> {
            LicenseState {
                status: self.status,
                expires_at_ms: self.expires_at_ms,
                product_id: &self.product_id,
                product_slug: &self.product_slug,
                entitlements: &self.entitlements,
                fingerprints: &self.fingerprints,
            }
        }
    }

    fn license() -> Owned {
        Owned {
            status: LicenseStatus::Active,
            expires_at_ms: Some(NOW + 1),
            product_id: "prd_1".into(),
            product_slug: "desk".into(),
            entitlements: vec!["pro".into(), "export".into()],
            fingerprints: vec!["fp-a".into()],
        }
    }

    fn ents(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_clean_license_is_valid() {
        let l = license();
        assert_eq!(decide(Some(&l.view()), &Ask::default(), NOW), Code::Valid);
        let e = ents(&["pro"]);
        let ask = Ask {
            product: Some("desk"),
            entitlements: &e,
            fingerprint: Some("fp-a"),
        };
        assert_eq!(decide(Some(&l.view()), &ask, NOW), Code::Valid);
        let ask = Ask {
            product: Some("prd_1"),
            ..Ask::default()
        };
        assert_eq!(decide(Some(&l.view()), &ask, NOW), Code::Valid);
        let no_expiry = Owned {
            expires_at_ms: None,
            ..license()
        };
        assert_eq!(
            decide(Some(&no_expiry.view()), &Ask::default(), NOW),
            Code::Valid
        );
    }

    #[test]
    fn each_code_on_its_own() {
        let ask = Ask::default();
        assert_eq!(decide(None, &ask, NOW), Code::NotFound);
        let revoked = Owned {
            status: LicenseStatus::Revoked,
            ..license()
        };
        assert_eq!(decide(Some(&revoked.view()), &ask, NOW), Code::Revoked);
        let suspended = Owned {
            status: LicenseStatus::Suspended,
            ..license()
        };
        assert_eq!(decide(Some(&suspended.view()), &ask, NOW), Code::Suspended);
        let expired = Owned {
            expires_at_ms: Some(NOW),
            ..license()
        };
        assert_eq!(decide(Some(&expired.view()), &ask, NOW), Code::Expired);
        let l = license();
        assert_eq!(
            decide(
                Some(&l.view()),
                &Ask {
                    product: Some("other"),
                    ..ask
                },
                NOW
            ),
            Code::ProductMismatch
        );
        let e = ents(&["pro", "cloud"]);
        assert_eq!(
            decide(
                Some(&l.view()),
                &Ask {
                    entitlements: &e,
                    ..ask
                },
                NOW
            ),
            Code::EntitlementsMissing
        );
        assert_eq!(
            decide(
                Some(&l.view()),
                &Ask {
                    fingerprint: Some("fp-b"),
                    ..ask
                },
                NOW
            ),
            Code::FingerprintNotActivated
        );
    }

    #[test]
    fn precedence_follows_the_contract() {
        // Everything wrong at once: each fix reveals the next code in API.md's order.
        let e = ents(&["cloud"]);
        let ask = Ask {
            product: Some("other"),
            entitlements: &e,
            fingerprint: Some("fp-z"),
        };
        let mut l = Owned {
            status: LicenseStatus::Revoked,
            expires_at_ms: Some(NOW - 1),
            ..license()
        };
        assert_eq!(decide(Some(&l.view()), &ask, NOW), Code::Revoked);
        l.status = LicenseStatus::Suspended;
        assert_eq!(decide(Some(&l.view()), &ask, NOW), Code::Suspended);
        l.status = LicenseStatus::Active;
        assert_eq!(decide(Some(&l.view()), &ask, NOW), Code::Expired);
        l.expires_at_ms = None;
        assert_eq!(decide(Some(&l.view()), &ask, NOW), Code::ProductMismatch);
        l.product_slug = "other".into();
        assert_eq!(
            decide(Some(&l.view()), &ask, NOW),
            Code::EntitlementsMissing
        );
        l.entitlements.push("cloud".into());
        assert_eq!(
            decide(Some(&l.view()), &ask, NOW),
            Code::FingerprintNotActivated
        );
        l.fingerprints.push("fp-z".into());
        assert_eq!(decide(Some(&l.view()), &ask, NOW), Code::Valid);
    }

    #[test]
    fn expiry_is_exclusive_of_the_instant() {
        let l = Owned {
            expires_at_ms: Some(NOW),
            ..license()
        };
        assert_eq!(
            decide(Some(&l.view()), &Ask::default(), NOW - 1),
            Code::Valid
        );
        assert_eq!(decide(Some(&l.view()), &Ask::default(), NOW), Code::Expired);
    }
}
