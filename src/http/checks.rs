//! Field checks that collect every failure into one 422 with `details`.

use crate::error::{Error, FieldError};

#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }
    /// Records `message` for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.0.push(FieldError::new(field, message));
        }
        self
    }
    /// A text field's length in characters must lie in `min..=max`.
    pub fn len(&mut self, value: &str, field: &str, min: usize, max: usize) -> &mut Self {
        let n = value.chars().count();
        let ok = n >= min && n <= max;
        if !ok {
            let msg = if min > 0 && n < min {
                if min == 1 {
                    "must not be empty".to_string()
                } else {
                    format!("must be at least {min} characters")
                }
            } else {
                format!("must be at most {max} characters")
            };
            self.0.push(FieldError::new(field, msg));
        }
        self
    }
    pub fn opt_len(
        &mut self,
        value: Option<&str>,
        field: &str,
        min: usize,
        max: usize,
    ) -> &mut Self {
        if let Some(v) = value {
            self.len(v, field, min, max);
        }
        self
    }
    pub fn range(&mut self, value: i64, field: &str, min: i64, max: i64) -> &mut Self {
        if value < min || value > max {
            self.0.push(FieldError::new(
                field,
                format!("must be between {min} and {max}"),
            ));
        }
        self
    }
    /// A list of short strings (entitlements, price ids).
    pub fn string_list(
        &mut self,
        values: &[String],
        field: &str,
        max_items: usize,
        max_len: usize,
    ) -> &mut Self {
        if values.len() > max_items {
            self.0.push(FieldError::new(
                field,
                format!("must have at most {max_items} items"),
            ));
        }
        for (i, v) in values.iter().enumerate() {
            self.len(v, &format!("{field}[{i}]"), 1, max_len);
        }
        self
    }
    pub fn push(&mut self, field: &str, message: &str) {
        self.0.push(FieldError::new(field, message));
    }
    pub fn finish(&mut self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(std::mem::take(&mut self.0)))
        }
    }
}

/// Trims and lower-cases an email; `None` unless it looks like a deliverable address: no control
/// character anywhere (a CR/LF could inject mail headers), a domain of well-formed labels, and an
/// address the mailer can send to.
pub fn normalize_email(input: &str) -> Option<String> {
    if input.chars().any(|c| c.is_control()) {
        return None;
    }
    let e = input.trim().to_lowercase();
    if e.len() > 254
        || e.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == '"')
    {
        return None;
    }
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(char::is_alphabetic))
        && e.parse::<lettre::Address>().is_ok();
    ok.then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Ann@Example.COM "),
            Some("ann@example.com".into())
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@x.io",
            "a@b",
            "a b@c.io",
            "a@b..io",
            "a@@b.io",
            "<a@b.io>",
            "a@b.io\r\n",
            "a@b.io\nBcc: x@y.io",
            "a@-b.io",
            "a@b-.io",
            "a@b.123",
            "a@b.c",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }
}
