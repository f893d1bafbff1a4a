//! The `ecosire` binary: `serve` (default) and the operator subcommands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecosire::accounts::users::{Bootstrap, bootstrap_admin};
use ecosire::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "ecosire",
    version,
    about = "ECOSIRE API server: license validation and activation"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
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
    /// Print the OpenAPI document.
    Openapi,
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
    /// Add a new license signing key; it signs from the next start, older ones stay published.
    Rotate,
}

#[derive(Subcommand)]
enum LicenseAction {
    /// Verify a license token offline against the public keys in ECOSIRE_KEYS_DIR and print its claims.
    VerifyToken {
        /// The compact JWS from validate/activate/heartbeat.
        token: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = ecosire::db::Db::connect(&config.database_url).await?;
            db.migrate().await?;
            println!("database schema is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            action: KeysAction::Generate,
        } => {
            let (_, generated) =
                ecosire::licensing::keyring::Keyring::load_or_init(&config.keys_dir)?;
            if generated.is_empty() {
                println!("all keys exist in {}", config.keys_dir.display());
            }
            for g in generated {
                println!("generated {g} in {}", config.keys_dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            action: KeysAction::Rotate,
        } => {
            ecosire::licensing::keyring::Keyring::load_or_init(&config.keys_dir)?;
            let kid = ecosire::licensing::keyring::add_license_key(&config.keys_dir)?;
            println!(
                "added license signing key {kid}; it signs after the next start, older keys stay published"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::License {
            action: LicenseAction::VerifyToken { token },
        } => verify_token(&config, &token),
        Command::Webhooks {
            action: WebhooksAction::Sample { event, url, secret },
        } => {
            let Some(body) = ecosire::events::catalog::example_event(&event) else {
                eprintln!("error: unknown event type {event} (see GET /api/webhooks/events)");
                return Ok(ExitCode::from(2));
            };
            let body = body.to_string();
            let t = ecosire::timestamp::now_ms() / 1000;
            let sig = ecosire::events::signature::header(&secret, t, body.as_bytes());
            let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
            println!(
                "curl -sS -X POST {} -H 'content-type: application/json' -H {} -H {} -H {} --data-raw {}",
                q(&url),
                q(&format!("X-License-Signature: {sig}")),
                q(&format!("X-Ecosire-Event: {event}")),
                q("X-Ecosire-Delivery: dlv_sample"),
                q(&body)
            );
            eprintln!("(signed at t={t}; receivers reject it after 300 s)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhooks {
            action:
                WebhooksAction::Verify {
                    secret,
                    header,
                    tolerance,
                },
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
                    println!("VALID: signed at t={t}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("INVALID: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&ecosire::openapi())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify_token(config: &Config, token: &str) -> anyhow::Result<ExitCode> {
    use ecosire::licensing::token::{LICENSE_AUDIENCE, LicenseClaims};
    let keys = ecosire::licensing::keyring::published_keys(&config.keys_dir)?;
    anyhow::ensure!(
        !keys.is_empty(),
        "no license signing keys in {}",
        config.keys_dir.display()
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
    println!("{}", serde_json::to_string_pretty(&claims)?);
    let now = ecosire::timestamp::now_ms() / 1000;
    if claims.aud != LICENSE_AUDIENCE || claims.iss != config.token_issuer {
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

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let bind = config.bind;
    let cookie_secure = config.cookie_secure;
    let state = ecosire::build_state(config).await?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("ECOSIRE_BIND: cannot listen on {bind}: {e}"))?;
    let addr = listener.local_addr()?;
    println!("ECOSIRE API listening on http://{addr}  (docs: http://{addr}/api/docs)");
    match bootstrap_admin(&state).await? {
        Bootstrap::Existing => {
            println!("log in: POST http://{addr}/api/auth/login with an admin's email and password")
        }
        Bootstrap::CreatedConfigured(email) => {
            println!("admin {email} created from ECOSIRE_ADMIN_EMAIL/ECOSIRE_ADMIN_PASSWORD")
        }
        Bootstrap::CreatedGenerated { email, password } => {
            println!("first start: created admin {email} with password {password}");
            println!("  (shown once; log in with POST http://{addr}/api/auth/login)");
        }
    }
    if cookie_secure && addr.ip().is_loopback() {
        println!(
            "note: cookies are Secure-only; set ECOSIRE_COOKIE_SECURE=false for browser use over plain http"
        );
    }
    ecosire::serve(listener, state, ecosire::server::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
