//! License keys: `ECOS-XXXXX-XXXXX-XXXXX-XXXXX`, 20 Crockford base32 characters (100 random bits).
//! Accepted case-insensitively, with or without dashes, with surrounding spaces; stored only as a
//! SHA-256 digest (lookup) and a sealed copy (to show it again).

use crate::crypto::{self, CROCKFORD};

/// A well-formed license key in canonical form. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct LicenseKey(String);

impl std::fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LicenseKey(…{})", self.last4())
    }
}

const PREFIX: &str = "ECOS";
const BODY_LEN: usize = 20;

impl LicenseKey {
    pub fn generate() -> Self {
        let body = crypto::random_crockford(BODY_LEN);
        Self::from_body(&body)
    }

    fn from_body(body: &str) -> Self {
        let mut s = String::with_capacity(28);
        s.push_str(PREFIX);
        for chunk in body.as_bytes().chunks(5) {
            s.push('-');
            s.push_str(std::str::from_utf8(chunk).expect("ASCII"));
        }
        LicenseKey(s)
    }

    /// Normalises user input; `None` when it cannot be a key (no database is consulted then).
    pub fn parse(input: &str) -> Option<Self> {
        let trimmed = input.trim();
        if trimmed.len() > 64 {
            return None;
        }
        let mut compact = String::with_capacity(24);
        for c in trimmed.chars() {
            match c {
                '-' => {}
                c if c.is_ascii_alphanumeric() => compact.push(c.to_ascii_uppercase()),
                _ => return None,
            }
        }
        let body = compact.strip_prefix(PREFIX)?;
        if body.len() != BODY_LEN {
            return None;
        }
        // Crockford decoding: O reads as 0, I and L as 1; U is never produced.
        let body: String = body
            .chars()
            .map(|c| match c {
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            })
            .collect();
        body.bytes()
            .all(|b| CROCKFORD.contains(&b))
            .then(|| Self::from_body(&body))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> [u8; 32] {
        crypto::sha256(self.0.as_bytes())
    }

    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest())
    }

    pub fn last4(&self) -> String {
        self.0[self.0.len() - 4..].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = LicenseKey::generate();
        let s = k.as_str();
        assert_eq!(s.len(), 28);
        assert!(s.starts_with("ECOS-"));
        assert_eq!(s.split('-').count(), 5);
        assert_eq!(LicenseKey::parse(s), Some(k.clone()));
        assert!(!format!("{k:?}").contains(&s[5..20]));
    }

    #[test]
    fn parsing_normalises_case_dashes_and_spaces() {
        let k = LicenseKey::generate();
        let lower = format!("  {}\n", k.as_str().to_lowercase());
        assert_eq!(LicenseKey::parse(&lower), Some(k.clone()));
        let compact = k.as_str().replace('-', "");
        assert_eq!(LicenseKey::parse(&compact), Some(k.clone()));
        assert_eq!(
            LicenseKey::parse("ECOS-0O0O0-11111-IIIII-LLLLL")
                .unwrap()
                .as_str(),
            "ECOS-00000-11111-11111-11111"
        );
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "ECOS",
            "ECOS-12345",
            "XXXX-00000-00000-00000-00000",
            "ECOS-00000-00000-00000-0000U",
            "ECOS-00000-00000-00000-00000-0",
            "ECOS 00000 00000 00000 00000",
            "ECOS-ÄÄÄÄÄ-00000-00000-00000",
        ] {
            assert!(LicenseKey::parse(bad).is_none(), "{bad}");
        }
    }
}
