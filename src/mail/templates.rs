//! The messages the server sends, from the templates in `src/templates/mail` (a text and an
//! HTML part each, compiled into the binary by askama; HTML parts escape what they show).

use askama::Template;

use super::Message;

/// One license in a message.
#[derive(Debug, Clone)]
pub struct LicenseLine {
    pub product: String,
    pub key: String,
}

/// What the templates show. Each message uses what it needs.
#[derive(Debug, Default)]
pub struct Context {
    pub name: String,
    /// The site's base URL, as links start.
    pub site: String,
    pub link: String,
    /// How long the link works, in words.
    pub valid_for: String,
    pub licenses: Vec<LicenseLine>,
    /// The licenses message invites a new account to set its password.
    pub invite: bool,
}

/// Which message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A link that confirms the address (registration, or asked again).
    Verify,
    /// A password reset link.
    Reset,
    /// Licenses just granted, with a set-password link when the account is new.
    Licenses,
    /// The password changed (a warning to the owner).
    PasswordChanged,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Verify => "verify_email",
            Kind::Reset => "password_reset",
            Kind::Licenses => "licenses",
            Kind::PasswordChanged => "password_changed",
        }
    }
}

macro_rules! template {
    ($name:ident, $path:literal) => {
        #[derive(Template)]
        #[template(path = $path, config = "src/askama.toml")]
        struct $name<'a> {
            c: &'a Context,
        }
    };
}

template!(VerifyText, "mail/verify.txt");
template!(VerifyHtml, "mail/verify.html");
template!(ResetText, "mail/reset.txt");
template!(ResetHtml, "mail/reset.html");
template!(LicensesText, "mail/licenses.txt");
template!(LicensesHtml, "mail/licenses.html");
template!(ChangedText, "mail/password_changed.txt");
template!(ChangedHtml, "mail/password_changed.html");

/// Renders message `kind` for `to`.
pub fn render(kind: Kind, to: &str, c: &Context) -> Message {
    let both = |t: askama::Result<String>, h: askama::Result<String>| {
        // The templates are compiled in and their fields are plain strings: rendering cannot fail.
        (
            t.expect("text template renders"),
            h.expect("HTML template renders"),
        )
    };
    let (subject, (text, html)) = match kind {
        Kind::Verify => (
            "Confirm your email address".to_string(),
            both(VerifyText { c }.render(), VerifyHtml { c }.render()),
        ),
        Kind::Reset => (
            "Reset your password".to_string(),
            both(ResetText { c }.render(), ResetHtml { c }.render()),
        ),
        Kind::Licenses => (
            if c.licenses.len() == 1 {
                format!("Your license key for {}", c.licenses[0].product)
            } else {
                format!("Your {} license keys", c.licenses.len())
            },
            both(LicensesText { c }.render(), LicensesHtml { c }.render()),
        ),
        Kind::PasswordChanged => (
            "Your password was changed".to_string(),
            both(ChangedText { c }.render(), ChangedHtml { c }.render()),
        ),
    };
    Message {
        to: to.to_string(),
        subject,
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_parts_escape_what_they_show() {
        let c = Context {
            name: "<script>x</script>".into(),
            site: "http://localhost".into(),
            link: "http://localhost/account/verify-email?token=abc".into(),
            valid_for: "7 days".into(),
            ..Default::default()
        };
        let m = render(Kind::Verify, "a@b.io", &c);
        assert!(
            m.html.contains("&#60;script&#62;") || m.html.contains("&lt;script&gt;"),
            "{}",
            m.html
        );
        assert!(m.text.contains("<script>x</script>"));
        assert!(m.text.contains(&c.link) && m.html.contains("token=abc"));
    }

    #[test]
    fn the_licenses_message_lists_every_key_and_invites_only_new_accounts() {
        let mut c = Context {
            name: "Ann".into(),
            site: "http://localhost".into(),
            link: "http://localhost/account/set-password?token=t0k".into(),
            valid_for: "7 days".into(),
            licenses: vec![
                LicenseLine {
                    product: "Desktop Pro".into(),
                    key: "ECOS-AAAAA-BBBBB-CCCCC-DDDDD".into(),
                },
                LicenseLine {
                    product: "Server".into(),
                    key: "ECOS-EEEEE-FFFFF-GGGGG-HHHHH".into(),
                },
            ],
            invite: true,
        };
        let m = render(Kind::Licenses, "ann@example.com", &c);
        assert_eq!(m.subject, "Your 2 license keys");
        for part in [&m.text, &m.html] {
            assert!(
                part.contains("ECOS-AAAAA-BBBBB-CCCCC-DDDDD")
                    && part.contains("ECOS-EEEEE-FFFFF-GGGGG-HHHHH")
            );
            assert!(part.contains("token=t0k"));
        }
        c.invite = false;
        let m = render(Kind::Licenses, "ann@example.com", &c);
        assert!(!m.text.contains("token=t0k") && !m.html.contains("token=t0k"));
    }
}
