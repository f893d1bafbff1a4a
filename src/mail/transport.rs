//! Where a message goes: an SMTP server (`ECOSIRE_SMTP_URL`) or, by default, an `.eml` file in
//! the mail folder, so a first run needs no mail server and still shows every message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// `smtp://…` (default port 587): plain connection upgraded with STARTTLS, which must succeed.
    StartTls,
    /// `smtps://…` (default port 465): TLS from the first byte.
    Implicit,
    /// `smtp://…?tls=none` (default port 25): a local relay on a trusted network.
    None,
}

/// A parsed `ECOSIRE_SMTP_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSpec {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSpec")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl SmtpSpec {
    /// `smtp://user:pass@host:587` (STARTTLS), `smtps://user:pass@host:465`,
    /// `smtp://host:25?tls=none`. Errors never repeat the password.
    pub fn parse(v: &str) -> Result<SmtpSpec, String> {
        let shown = crate::config::redact_url(v);
        let u = url::Url::parse(v).map_err(|_| format!("'{shown}' is not a URL"))?;
        let mut tls_param = None;
        for (k, val) in u.query_pairs() {
            match k.as_ref() {
                "tls" => tls_param = Some(val.to_string()),
                other => return Err(format!("unknown parameter '{other}' in '{shown}'")),
            }
        }
        let tls = match (u.scheme(), tls_param.as_deref()) {
            ("smtps", None) => Tls::Implicit,
            ("smtp", None | Some("starttls" | "required")) => Tls::StartTls,
            ("smtp", Some("none")) => Tls::None,
            ("smtp" | "smtps", Some(t)) => {
                return Err(format!(
                    "tls={t} is not understood (smtp:// uses STARTTLS; tls=none for a local relay; smtps:// for TLS on connect)"
                ));
            }
            (s, _) => return Err(format!("expected smtp:// or smtps://, got {s}://")),
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("'{shown}' names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u.port().unwrap_or(match tls {
            Tls::StartTls => 587,
            Tls::Implicit => 465,
            Tls::None => 25,
        });
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| format!("'{shown}' has a badly encoded user or password"))
        };
        let credentials = match (u.username(), u.password()) {
            ("", None) => None,
            (user, Some(pass)) => Some((decode(user)?, decode(pass)?)),
            (_, None) => return Err(format!("'{shown}' names a user without a password")),
        };
        Ok(SmtpSpec {
            host,
            port,
            tls,
            credentials,
        })
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let builder = match self.tls {
            Tls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&self.host),
            Tls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.host),
            Tls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &self.host,
            )),
        }
        .map_err(|e| format!("SMTP TLS setup: {e}"))?;
        let mut builder = builder
            .port(self.port)
            .timeout(Some(Duration::from_secs(30)));
        if let Some((user, pass)) = &self.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(builder.build())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The configured way out.
pub enum Transport {
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>),
    Files(PathBuf),
}

impl Transport {
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Transport> {
        Ok(match &config.smtp_url {
            Some(url) => {
                let spec =
                    SmtpSpec::parse(url).map_err(|e| anyhow::anyhow!("ECOSIRE_SMTP_URL: {e}"))?;
                Transport::Smtp(Box::new(
                    spec.transport()
                        .map_err(|e| anyhow::anyhow!("ECOSIRE_SMTP_URL: {e}"))?,
                ))
            }
            None => Transport::Files(config.mail_dir()),
        })
    }

    /// What the start-up banner says about mail.
    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp(_) => "mail: through ECOSIRE_SMTP_URL".into(),
            Transport::Files(dir) => format!(
                "mail: no ECOSIRE_SMTP_URL, messages are written to {}",
                dir.display()
            ),
        }
    }

    /// Sends one message (`id` names its file when written to disk: a retry overwrites it, so a
    /// message is never there twice). Answers where it went, for the log.
    pub async fn send(&self, id: &str, message: &lettre::Message) -> Result<String, String> {
        match self {
            Transport::Smtp(smtp) => smtp
                .send(message.clone())
                .await
                .map(|r| format!("SMTP {}", r.code()))
                .map_err(|e| describe_smtp(&e)),
            Transport::Files(dir) => write_eml(dir, id, &message.formatted())
                .await
                .map(|p| p.display().to_string())
                .map_err(|e| {
                    format!(
                        "cannot write the message file: {}",
                        crate::fsutil::io_cause(&e)
                    )
                }),
        }
    }
}

/// A short description of an SMTP failure (never the credentials: lettre does not print them).
fn describe_smtp(e: &lettre::transport::smtp::Error) -> String {
    let s = e.to_string();
    let s: String = s.chars().take(300).collect();
    if e.is_transient() {
        format!("temporary: {s}")
    } else if e.is_permanent() {
        format!("permanent: {s}")
    } else {
        s
    }
}

/// Writes `<dir>/<id>.eml` (0600: it may hold a token or a license key) through a temporary file
/// and a rename, so a reader never sees half a message.
async fn write_eml(dir: &Path, id: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let dir = dir.to_path_buf();
    let id = id.to_string();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        b.mode(0o700);
        b.create(&dir)?;
        let path = dir.join(format!("{id}.eml"));
        let tmp = dir.join(format!(".{id}.eml.tmp"));
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        o.mode(0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_read() {
        let s = SmtpSpec::parse("smtp://ann:p%40ss@mail.example.com:587").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("mail.example.com", 587, Tls::StartTls)
        );
        assert_eq!(s.credentials, Some(("ann".into(), "p@ss".into())));
        let s = SmtpSpec::parse("smtps://u:p@mail.example.com").unwrap();
        assert_eq!((s.port, s.tls), (465, Tls::Implicit));
        let s = SmtpSpec::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!((s.port, s.tls, s.credentials), (2525, Tls::None, None));
        assert_eq!(SmtpSpec::parse("smtp://relay?tls=none").unwrap().port, 25);
        for bad in [
            "http://mail.example.com",
            "smtp://",
            "smtp://host?tls=maybe",
            "smtps://host?tls=none",
            "smtp://host?foo=1",
            "smtp://user@host",
            "not a url",
        ] {
            assert!(SmtpSpec::parse(bad).is_err(), "{bad}");
        }
        let e = SmtpSpec::parse("ftp://u:hunter2@host").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let s = SmtpSpec::parse("smtp://u:hunter2@host").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
