//! Mail as the tests read it: the `.eml` files the server writes when no SMTP server is
//! configured, and a real SMTP server (aiosmtpd, delivering into a maildir) for the rest.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One delivered message, decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub file: PathBuf,
}

impl Mail {
    pub fn parse(file: &Path) -> Mail {
        let raw = std::fs::read(file).unwrap();
        let m = mail_parser::MessageParser::default()
            .parse(&raw)
            .unwrap_or_else(|| panic!("{} is not a message", file.display()));
        let addr = |a: Option<&mail_parser::Address>| {
            a.and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_string()
        };
        Mail {
            to: addr(m.to()),
            from: addr(m.from()),
            subject: m.subject().unwrap_or_default().to_string(),
            text: m.body_text(0).unwrap_or_default().to_string(),
            html: m.body_html(0).unwrap_or_default().to_string(),
            file: file.to_path_buf(),
        }
    }

    /// The token of the link to `path` (e.g. `/account/set-password`) in the text part; the
    /// HTML part must carry the same link.
    #[track_caller]
    pub fn token(&self, path: &str) -> String {
        let at = self
            .text
            .find(&format!("{path}?token="))
            .unwrap_or_else(|| panic!("no {path} link in: {}", self.text));
        let rest = &self.text[at + path.len() + "?token=".len()..];
        let token: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(
            self.html.contains(&format!("{path}?token={token}")),
            "the HTML part lacks the link: {}",
            self.html
        );
        token
    }
}

/// The messages in a folder of `.eml` files (the default transport), oldest first.
pub fn eml_messages(dir: &Path) -> Vec<Mail> {
    messages_in(dir, |p| p.extension().is_some_and(|e| e == "eml"))
}

fn messages_in(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| keep(p) && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| (std::fs::metadata(&p).unwrap().modified().unwrap(), p))
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| Mail::parse(&p)).collect()
}

/// The python of the virtualenv that has aiosmtpd (`scripts/smtpd-venv.sh` makes it once).
fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        if let Ok(p) = std::env::var("ECOSIRE_TEST_SMTPD_PYTHON") {
            return p;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/smtpd-venv.sh");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/smtpd-venv.sh");
        assert!(out.status.success(), "scripts/smtpd-venv.sh failed");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// A real SMTP server (aiosmtpd) on a loopback port, delivering into its own maildir.
pub struct Smtpd {
    child: Option<Child>,
    pub port: u16,
    pub maildir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Smtpd {
    pub fn start() -> Smtpd {
        Self::start_on(free_port())
    }

    /// A port nothing listens on yet, for a server started later with `start_on` (an outage).
    pub fn reserve_port() -> u16 {
        free_port()
    }

    pub fn start_on(port: u16) -> Smtpd {
        let maildir = tempfile::tempdir().unwrap();
        let mut s = Smtpd {
            child: None,
            port,
            maildir,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.maildir.path().join("md"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        self.child = Some(child);
        // Ready when it answers a connection (bounded, so a broken start fails the test).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ECOSIRE_SMTP_URL` for this server (a local relay: no TLS, no login).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// Everything delivered so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        messages_in(&self.maildir.path().join("md/new"), |_| true)
    }

    /// Waits (bounded) until at least `n` messages were delivered.
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages arrived",
                m.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
