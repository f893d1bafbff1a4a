//! The `ecosire` binary: `serve` (default) and the operator subcommands.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecosire::accounts::users::{Bootstrap, bootstrap_admin};
use ecosire::config::{Config, ConfigError, Env, LogFormat};

mod offline_cmd;

#[derive(Parser)]
#[command(
    name = "ecosire",
    version,
    about = "ECOSIRE API server: license validation and activation",
    after_help = "Configuration is by environment variables: `ecosire serve --help` lists them, docs/configuration.md explains them."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    #[command(after_help = ecosire::config::help_text())]
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Manage the signing keys in ECOSIRE_KEYS_DIR.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// License tools.
    License {
        #[command(subcommand)]
        action: LicenseAction,
    },
    /// Copy the database (SQLite, online: the server may keep serving) and the keys folder into
    /// a new folder, together: sealed data cannot be read without the keys of the same moment.
    Backup {
        /// A new folder for the copy (created 0700): `ecosire.db` and `keys/`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Account tools on the configured database, no server needed (the way back in after a lost
    /// admin password).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Air-gapped activation: requests and proofs on the offline machine, activation and release
    /// through a server from a connected one.
    Offline {
        #[command(subcommand)]
        action: offline_cmd::OfflineAction,
    },
    /// Tools for building a webhook receiver.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
}

#[derive(Subcommand)]
enum WebhooksAction {
    /// Print a ready curl command that posts a correctly signed example event to URL.
    Sample {
        /// An event type, e.g. license.activated (see GET /api/webhooks/events).
        event: String,
        #[arg(long)]
        url: String,
        /// The endpoint's signing secret (whsec_…).
        #[arg(long)]
        secret: String,
    },
    /// Check an X-License-Signature header against a body read from standard input.
    Verify {
        #[arg(long)]
        secret: String,
        /// The X-License-Signature value: t=…,v1=…
        #[arg(long)]
        header: String,
        /// Seconds a signature stays acceptable.
        #[arg(long, default_value_t = 300)]
        tolerance: i64,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create any missing key (license signing, session signing, data key).
    Generate,
    /// Add a new license signing key: published at once (every instance re-reads the folder),
    /// signing after ECOSIRE_KEY_PUBLISH_LEAD_S (default a day) so that clients refreshing their
    /// JWKS learn it first. Older keys stay published.
    Rotate,
    /// Make the key KID sign from now on (a key added by `rotate` whose lead should not wait).
    Activate { kid: String },
    /// Remove the key KID from the JWKS. Refused while a token it signed may be unexpired (it
    /// stopped signing less than the longest offline lease ago) unless --force; never the key
    /// that signs now.
    Retire {
        kid: String,
        /// Retire even though tokens it signed may still be unexpired (their holders then fail
        /// offline checks until they reach the server).
        #[arg(long)]
        force: bool,
    },
    /// Every license signing key: kid, state, published, signs from, retired.
    List,
}

#[derive(Subcommand)]
enum UsersAction {
    /// List every user: id, email, role, plan, verified, disabled.
    List,
    /// Set the password of EMAIL's account (read from standard input, or asked twice at a
    /// terminal) and end its sessions.
    SetPassword { email: String },
    /// Make EMAIL an active admin with a password read the same way: a new account, or an
    /// existing one promoted and re-enabled.
    CreateAdmin { email: String },
}

#[derive(Subcommand)]
enum LicenseAction {
    /// Issue licenses in bulk (keys for resellers, printed media, load tests), straight into the
    /// database: each gets a fresh key and its license.created event, as through the API.
    Issue {
        /// The product's id or slug.
        #[arg(long)]
        product: String,
        /// How many licenses.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        count: u64,
        /// Seats per license (default: the product's).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        max_activations: Option<i64>,
        /// Days until expiry (default: the product's duration; none for a perpetual product).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=36_500))]
        expires_in_days: Option<i64>,
        /// A new file (created 0600) for the keys, one per line; standard output when absent.
        #[arg(long)]
        keys_out: Option<PathBuf>,
    },
    /// Verify a license token offline against the public keys in ECOSIRE_KEYS_DIR and print its claims.
    VerifyToken {
        /// The compact JWS from validate/activate/heartbeat.
        token: String,
    },
}

// The profile of the hot path showed glibc's malloc and free at ~15 % of the server's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The tracing target of the start-up banner in JSON mode and of the start-up warnings; always
/// enabled, so `RUST_LOG=warn` still says where the server listens.
const START: &str = "ecosire::start";

/// Keeps the log writer's thread running; dropping it writes out what is still buffered.
type LogGuard = Option<ecosire::logging::Guard>;

/// Logging to stderr. For `serve` (`background`), lines are batched (`ecosire::logging`): a busy
/// server pays for formatting a line, not for a system call or a thread wake-up per line (the
/// access log writes one per request).
fn init_logging(format: LogFormat, filter: &str, background: bool) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .expect("RUST_LOG was checked with the configuration")
        .add_directive(format!("{START}=info").parse().expect("static directive"));
    let (writer, guard) = if background {
        let (w, g) = ecosire::logging::batched_stderr();
        (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(w),
            Some(g),
        )
    } else {
        (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
            None,
        )
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour codes are noise in a file or a log collector.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

/// Logging for commands that read nothing else that could be misconfigured.
fn init_logging_from(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<(), ConfigError> {
    let (format, filter) = env.logging()?;
    init_logging(format, &filter, false);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command.unwrap_or(Command::Serve)) {
        Ok(code) => code,
        // `ecosire openapi | head`: the reader has all it wanted; that is not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            if e.is::<ConfigError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, each said once: a wrapper often quotes its cause
/// already (`"…: {e}"`), which `{:#}` would then print twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Writes a line to stdout. Unlike `println!`, a closed stdout is an error to return, not a
/// panic.
fn out(line: impl Display) -> std::io::Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs one command. Each reads only the variables it uses, so a bad value elsewhere (say
/// `ECOSIRE_BIND`) does not stop `ecosire openapi`.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    let env = Env::process();
    match command {
        Command::Serve => {
            let config = env.config()?;
            let _log = init_logging(config.log_format, &config.log_filter, true);
            warn_unknown_variables();
            runtime()?.block_on(serve(config))
        }
        Command::Migrate => {
            let database_url = env.database_url()?;
            init_logging_from(&env)?;
            runtime()?.block_on(async {
                let db = ecosire::db::Db::connect(&database_url).await?;
                db.migrate().await
            })?;
            out("database schema is up to date")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { action } => {
            // Keys are generated only into a store whose database needs none yet: the database
            // says whether licenses or sealed secrets depend on keys that must not be replaced.
            let database_url = env.database_url()?;
            init_logging_from(&env)?;
            let lead = env.key_publish_lead()?;
            runtime()?.block_on(keys(action, &env.keys_dir(), lead, &database_url))
        }
        Command::License {
            action: LicenseAction::VerifyToken { token },
        } => verify_token(&env.keys_dir(), &env.token_issuer(), &token),
        Command::License {
            action: action @ LicenseAction::Issue { .. },
        } => {
            let database_url = env.database_url()?;
            init_logging_from(&env)?;
            runtime()?.block_on(issue_licenses(action, &env.keys_dir(), &database_url))
        }
        Command::Webhooks { action } => webhooks(action),
        Command::Offline { action } => runtime()?.block_on(offline_cmd::run(action)),
        Command::Backup { out } => {
            let database_url = env.database_url()?;
            init_logging_from(&env)?;
            runtime()?.block_on(backup(&out, &env.keys_dir(), &database_url))
        }
        Command::Users { action } => {
            let database_url = env.database_url()?;
            init_logging_from(&env)?;
            runtime()?.block_on(users(action, &database_url))
        }
        Command::Openapi => {
            out(serde_json::to_string_pretty(&ecosire::openapi())?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn warn_unknown_variables() {
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    for (name, closest) in ecosire::config::unknown_variables(names) {
        tracing::warn!(
            target: START,
            variable = %name,
            closest = %closest,
            "{name} is not a variable ECOSIRE reads (ignored); did you mean {closest}?"
        );
    }
}

async fn keys(
    action: KeysAction,
    dir: &Path,
    lead: std::time::Duration,
    database_url: &str,
) -> anyhow::Result<ExitCode> {
    use ecosire::keyring::{self, Keyring};
    let db = ecosire::db::Db::connect(database_url).await?;
    db.migrate().await?;
    match action {
        KeysAction::Generate => {
            let (_, generated) = Keyring::load_for(dir, &db).await?;
            if generated.is_empty() {
                out(format_args!("all keys exist in {}", dir.display()))?;
            }
            for g in generated {
                out(format_args!("generated {g} in {}", dir.display()))?;
            }
        }
        KeysAction::Rotate => {
            Keyring::load_for(dir, &db).await?;
            let (kid, state) = keyring::rotate_license_key(dir, lead)?;
            out(format_args!(
                "added license signing key {kid}: published now, signs from {} \
                 (ecosire keys activate {kid} to start at once); older keys stay published",
                state.signs_from.to_rfc3339()
            ))?;
        }
        KeysAction::Activate { kid } => {
            let state = keyring::activate_license_key(dir, &kid)?;
            out(format_args!(
                "license signing key {kid} signs from {} on every instance (within {} s)",
                state.signs_from.to_rfc3339(),
                keyring::RELOAD_INTERVAL.as_secs()
            ))?;
        }
        KeysAction::Retire { kid, force } => {
            let life = ecosire::licensing::revocations::max_token_life(&db).await?;
            keyring::retire_license_key(dir, &kid, life, force)?;
            out(format_args!(
                "license signing key {kid} is retired: no longer in the JWKS of any instance \
                 (within {} s); its files stay in the keys folder",
                keyring::RELOAD_INTERVAL.as_secs()
            ))?;
        }
        KeysAction::List => {
            let now = ecosire::timestamp::now_ms();
            let all = keyring::license_keys(dir)?;
            let signing = keyring::signing_key(&all, now).map(|k| k.kid.clone());
            out("kid\tstate\tpublished_at\tsigns_from\tretired_at")?;
            for k in &all {
                let state = match (&k.state.retired_at, &signing) {
                    (Some(_), _) => "retired",
                    (None, Some(s)) if *s == k.kid => "signing",
                    (None, _) if k.state.signs_from.ms() > now => "pending",
                    (None, _) => "published",
                };
                out(format_args!(
                    "{}\t{state}\t{}\t{}\t{}",
                    k.kid,
                    k.state.published_at.to_rfc3339(),
                    k.state.signs_from.to_rfc3339(),
                    k.state.retired_at.map_or("-".into(), |t| t.to_rfc3339())
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ecosire backup`: the database first, then the keys. Keys are only ever added (rotation keeps
/// the old ones), so keys copied after the database include every key its data needs.
async fn backup(dir: &Path, keys_dir: &Path, database_url: &str) -> anyhow::Result<ExitCode> {
    let db = ecosire::db::Db::connect(database_url).await?;
    if db.backend == ecosire::db::Backend::Postgres {
        anyhow::bail!(
            "DATABASE_URL: PostgreSQL is backed up with its own tools: pg_dump --format=custom, \
             with a copy of ECOSIRE_KEYS_DIR taken right after (docs/operations.md)"
        );
    }
    anyhow::ensure!(
        !dir.exists(),
        "--out: {} exists; name a new folder",
        dir.display()
    );
    ecosire::fsutil::create_private_dir(dir)?;
    let started = std::time::Instant::now();
    let db_file = dir.join("ecosire.db");
    db.backup_sqlite(&db_file).await?;
    let mut copied = 0;
    let entries = std::fs::read_dir(keys_dir).map_err(|e| {
        anyhow::anyhow!(
            "ECOSIRE_KEYS_DIR: cannot read {}: {}",
            keys_dir.display(),
            ecosire::fsutil::io_cause(&e)
        )
    })?;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let bytes = std::fs::read(entry.path())?;
            ecosire::fsutil::write_secret(&dir.join("keys").join(entry.file_name()), &bytes)?;
            copied += 1;
        }
    }
    out(format_args!(
        "backed up {} and {copied} key files from {} to {} in {:.1} s",
        db_file.file_name().unwrap_or_default().to_string_lossy(),
        keys_dir.display(),
        dir.display(),
        started.elapsed().as_secs_f64()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// A new password: asked twice without echo at a terminal, else the first line of standard input.
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!line.is_empty(), "no password on standard input");
    Ok(line)
}

async fn users(action: UsersAction, database_url: &str) -> anyhow::Result<ExitCode> {
    use ecosire::accounts::recovery;
    let db = ecosire::db::Db::connect(database_url).await?;
    db.migrate().await?;
    match action {
        UsersAction::List => {
            out(format!(
                "{:<30} {:<32} {:<8} {:<10} {:<8} {:<8} created",
                "id", "email", "role", "plan", "verified", "disabled"
            ))?;
            for u in recovery::list(&db).await? {
                out(format!(
                    "{:<30} {:<32} {:<8} {:<10} {:<8} {:<8} {}",
                    u.id,
                    u.email,
                    u.role.as_str(),
                    u.plan,
                    if u.email_verified_at.is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                    if u.disabled.0 { "yes" } else { "no" },
                    u.created_at.to_rfc3339()
                ))?;
            }
        }
        UsersAction::SetPassword { email } => {
            let u = recovery::set_password(&db, &email, read_password()?).await?;
            out(format!(
                "password set for {} ({}); its sessions were ended",
                u.email, u.id
            ))?;
        }
        UsersAction::CreateAdmin { email } => {
            let (u, created) = recovery::create_admin(&db, &email, read_password()?).await?;
            out(if created {
                format!("created admin {} ({})", u.email, u.id)
            } else {
                format!(
                    "{} ({}) is now an active admin with the new password; its sessions were ended",
                    u.email, u.id
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ecosire license issue`: transactions of 5,000 licenses, the keys written out after each commit
/// (a key is never printed for a license that was not stored).
async fn issue_licenses(
    action: LicenseAction,
    keys_dir: &Path,
    database_url: &str,
) -> anyhow::Result<ExitCode> {
    use ecosire::licensing::lifecycle::{NewLicense, create_many};
    let LicenseAction::Issue {
        product,
        count,
        max_activations,
        expires_in_days,
        keys_out,
    } = action
    else {
        unreachable!("called for `license issue` only")
    };
    let db = ecosire::db::Db::connect(database_url).await?;
    db.migrate().await?;
    let (keyring, _) = ecosire::keyring::Keyring::load_for(keys_dir, &db).await?;
    let Some(p) = ecosire::licensing::products::find(&db, &product).await? else {
        anyhow::bail!("--product: no product has the id or slug {product:?}");
    };
    let mut sink: Box<dyn Write> = match &keys_out {
        Some(path) => {
            anyhow::ensure!(
                ecosire::fsutil::create_private_file(path)?,
                "--keys-out: {} already exists; name a new file",
                path.display()
            );
            Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new().append(true).open(path)?,
            ))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let now = ecosire::timestamp::now_ms();
    let days = expires_in_days.or(p.duration_days);
    let terms = NewLicense {
        product_id: &p.id,
        user_id: None,
        granted_email: None,
        max_activations: max_activations.unwrap_or(p.max_activations),
        expires_at: days.map(|d| now + d * 86_400_000),
        entitlements: &p.entitlements,
        metadata: "{}",
        order_id: None,
        subscription_id: None,
    };
    let started = std::time::Instant::now();
    let mut left = count as usize;
    while left > 0 {
        let n = left.min(5_000);
        let mut tx = db.begin().await?;
        let keys = create_many(&mut tx, &keyring.data, &terms, n)
            .await
            .map_err(|e| match e {
                ecosire::error::Error::Db(e) => {
                    anyhow::anyhow!("issuing licenses: {}", ecosire::db::error_cause(&e))
                }
                other => anyhow::anyhow!("issuing licenses: {other}"),
            })?;
        tx.commit().await?;
        for k in &keys {
            writeln!(sink, "{}", k.as_str())?;
        }
        left -= n;
    }
    sink.flush()?;
    eprintln!(
        "issued {count} licenses of {} in {:.1} s",
        p.slug,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn webhooks(action: WebhooksAction) -> anyhow::Result<ExitCode> {
    match action {
        WebhooksAction::Sample { event, url, secret } => {
            let Some(body) = ecosire::events::catalog::example_event(&event) else {
                eprintln!("error: unknown event type {event} (see GET /api/webhooks/events)");
                return Ok(ExitCode::from(2));
            };
            let body = body.to_string();
            let t = ecosire::timestamp::now_ms() / 1000;
            let sig = ecosire::events::signature::header(&secret, t, body.as_bytes());
            let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
            out(format_args!(
                "curl -sS -X POST {} -H 'content-type: application/json' -H {} -H {} -H {} --data-raw {}",
                q(&url),
                q(&format!("X-License-Signature: {sig}")),
                q(&format!("X-Ecosire-Event: {event}")),
                q("X-Ecosire-Delivery: dlv_sample"),
                q(&body)
            ))?;
            eprintln!("(signed at t={t}; receivers reject it after 300 s)");
            Ok(ExitCode::SUCCESS)
        }
        WebhooksAction::Verify {
            secret,
            header,
            tolerance,
        } => {
            use std::io::Read;
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body)?;
            match ecosire::events::signature::verify(
                &secret,
                &header,
                &body,
                ecosire::timestamp::now_ms() / 1000,
                tolerance,
            ) {
                Ok(t) => {
                    out(format_args!("VALID: signed at t={t}"))?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    out(format_args!("INVALID: {e}"))?;
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

fn verify_token(keys_dir: &Path, issuer: &str, token: &str) -> anyhow::Result<ExitCode> {
    use ecosire::licensing::token::{LICENSE_AUDIENCE, LicenseClaims};
    let keys = ecosire::keyring::published_keys(keys_dir)?;
    anyhow::ensure!(
        !keys.is_empty(),
        "ECOSIRE_KEYS_DIR: no license signing keys in {}",
        keys_dir.display()
    );
    let claims: LicenseClaims = match ecosire::jws::verify(token.trim(), "JWT", |kid| {
        keys.iter().find(|(k, _)| k == kid).map(|(_, v)| *v)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("INVALID: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    out(serde_json::to_string_pretty(&claims)?)?;
    let now = ecosire::timestamp::now_ms() / 1000;
    if claims.aud != LICENSE_AUDIENCE || claims.iss != issuer {
        eprintln!("INVALID: audience or issuer does not match");
        return Ok(ExitCode::FAILURE);
    }
    if claims.exp <= now {
        eprintln!("EXPIRED: the signature is good but the token expired");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("VALID: signature verified with a published key");
    Ok(ExitCode::SUCCESS)
}

/// Start-up messages. In text mode they are plain lines on stdout, where scripts look for the
/// address; in JSON mode they are events on the log stream, so that stream stays all JSON.
struct Banner {
    json: bool,
}

impl Banner {
    fn say(&self, message: impl Display) {
        if self.json {
            tracing::info!(target: START, "{message}");
        } else {
            // Nobody reading stdout is no reason to stop serving.
            let _ = out(message);
        }
    }

    fn listening(&self, addr: SocketAddr) {
        let address = format!("http://{addr}");
        let docs = format!("{address}/api/docs");
        let message = format!("ECOSIRE API listening on {address}");
        if self.json {
            tracing::info!(target: START, %address, %docs, "{message}");
        } else {
            let _ = out(format_args!("{message}  (docs: {docs})"));
        }
    }
}

/// Puts a generated admin password where only its owner sees it, never in the log stream (which
/// is often collected and kept): `None` when stdout is a terminal, which may show it once;
/// otherwise the path of a file in the data folder that only this user can read.
fn store_password(data_dir: &Path, password: &str) -> anyhow::Result<Option<PathBuf>> {
    if std::io::stdout().is_terminal() {
        return Ok(None);
    }
    let path = data_dir.join("initial-admin-password.txt");
    // A file left from an earlier database holds a password that no longer works.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot replace {}: {e}", path.display()),
    }
    ecosire::fsutil::write_secret(&path, format!("{password}\n").as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "cannot write the generated admin password (set ECOSIRE_ADMIN_EMAIL and ECOSIRE_ADMIN_PASSWORD instead): {e:#}"
        )
    })?;
    Ok(Some(path))
}

async fn serve(mut config: Config) -> anyhow::Result<ExitCode> {
    let bind = config.bind;
    let cookie_secure = config.cookie_secure;
    let data_dir = config.data_dir();
    let banner = Banner {
        json: config.log_format == LogFormat::Json,
    };
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("ECOSIRE_BIND: cannot listen on {bind}: {e}"))?;
    let addr = listener.local_addr()?;
    // Links in mail need an address people can open: without ECOSIRE_PUBLIC_URL, the one this
    // server really listens on (the port chosen for :0 included).
    let public_url_unset = config.public_url.is_none();
    if public_url_unset {
        config.public_url = Some(format!("http://{addr}"));
    }
    let state = ecosire::build_state(config).await?;
    let shutdown = ecosire::server::shutdown_signal();
    // The dashboard's sign-in page for people, the API route for scripts.
    let login = format!("http://{addr}/login (API: POST http://{addr}/api/auth/login)");
    // Everything that can fail comes before the address is announced: a start that says
    // "listening" has succeeded. So the admin is settled first, and told after.
    let (admin_note, password_note) = match bootstrap_admin(&state).await? {
        Bootstrap::Existing => (
            format!("sign in at {login} with an admin's email and password"),
            None,
        ),
        Bootstrap::CreatedConfigured(email) => (
            format!("admin {email} created from ECOSIRE_ADMIN_EMAIL/ECOSIRE_ADMIN_PASSWORD"),
            None,
        ),
        Bootstrap::CreatedGenerated { email, password } => {
            match store_password(&data_dir, &password)? {
                Some(path) => (
                    format!(
                        "first start: created admin {email}; its password is in {} (readable by this user only; delete it after signing in at {login})",
                        path.display()
                    ),
                    None,
                ),
                None => (
                    format!("first start: created admin {email}"),
                    Some(format!(
                        "admin password: {password}\n  (shown once; sign in at {login})"
                    )),
                ),
            }
        }
    };
    banner.listening(addr);
    banner.say(admin_note);
    if let Some(note) = password_note {
        // On the terminal, in JSON mode too: it is not the log stream.
        let _ = out(note);
    }
    banner.say(state.mail.transport.describe());
    if public_url_unset && !addr.ip().is_loopback() {
        banner.say(format!(
            "note: links in mail start with http://{addr}; set ECOSIRE_PUBLIC_URL to the address people use"
        ));
    }
    if cookie_secure && addr.ip().is_loopback() {
        banner.say(
            "note: cookies are Secure-only; set ECOSIRE_COOKIE_SECURE=false for browser use over plain http",
        );
    }
    ecosire::serve(listener, state, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io)
            .context("ECOSIRE_KEYS_DIR: cannot read keys/license.pem: no such file")
            .context("loading keys");
        assert_eq!(
            one_line(&e),
            "loading keys: ECOSIRE_KEYS_DIR: cannot read keys/license.pem: no such file"
        );
        let multi = anyhow::anyhow!("first line\n  second line");
        assert_eq!(one_line(&multi), "first line second line");
    }
}
