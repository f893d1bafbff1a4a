//! `ecosire offline …`: both sides of air-gapped activation from the command line (see
//! `ecosire::licensing::offline` for the files). On the offline machine: `request` (a device key
//! and a signed activation request) and `proof` (a signed deactivation proof). On a connected
//! machine: `activate` (request → license file) and `release` (proof → seat freed), over HTTP.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Subcommand;
use ecosire::licensing::offline::{self, LicenseFileClaims, RequestClaims};
use ed25519_dalek::SigningKey;

#[derive(Subcommand)]
pub enum OfflineAction {
    /// On the offline machine: make a device key and a signed activation request for it.
    Request {
        /// The license key.
        #[arg(long)]
        key: String,
        /// This machine's fingerprint (1–255 characters).
        #[arg(long)]
        fingerprint: String,
        /// The device name shown in the license's device list.
        #[arg(long)]
        name: Option<String>,
        /// A new file (created 0600) for the device's private key: keep it, it signs the
        /// deactivation proof that frees the seat.
        #[arg(long)]
        device_key: PathBuf,
        /// Where to write the request (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// On a connected machine: send a request to the server and write the license file it
    /// answers with.
    Activate {
        /// The server's base URL, e.g. https://licenses.example.com
        #[arg(long)]
        server: String,
        /// The request file ("-": standard input).
        request: PathBuf,
        /// Where to write the license file (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// On the offline machine: sign the proof that it gives its license file up, for `release`.
    Proof {
        /// The license file the device holds.
        #[arg(long)]
        license_file: PathBuf,
        /// The device key `request` wrote.
        #[arg(long)]
        device_key: PathBuf,
        /// Where to write the proof (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// On a connected machine: send a deactivation proof; the server frees the seat.
    Release {
        #[arg(long)]
        server: String,
        /// The proof file ("-": standard input).
        proof: PathBuf,
    },
}

fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(s);
    }
    ecosire::fsutil::read_to_string(path)
}

fn write(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(p) => std::fs::write(p, format!("{text}\n"))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display())),
        None => Ok(crate::out(text)?),
    }
}

fn load_device_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = read(path)?;
    let seed: [u8; 32] = URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("{}: not a device key", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Posts `body` to `path` on `server`: the answer's JSON, or the problem's message as the error.
async fn post(
    server: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let res = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = res.status();
    let text = res.text().await?;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let details: Vec<String> = json["details"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{}: {}",
                    d["field"].as_str().unwrap_or(""),
                    d["message"].as_str().unwrap_or("")
                )
            })
            .collect();
        anyhow::bail!(
            "{} {}: {}{}",
            status.as_u16(),
            json["code"].as_str().unwrap_or("error"),
            json["message"].as_str().unwrap_or(&text),
            if details.is_empty() {
                String::new()
            } else {
                format!(" ({})", details.join("; "))
            }
        );
    }
    Ok(json)
}

pub async fn run(action: OfflineAction) -> anyhow::Result<ExitCode> {
    match action {
        OfflineAction::Request {
            key,
            fingerprint,
            name,
            device_key,
            out,
        } => {
            let device = SigningKey::generate(&mut rand::rngs::OsRng);
            // Refuses an existing file: a device key is never overwritten by accident.
            ecosire::fsutil::write_secret(
                &device_key,
                URL_SAFE_NO_PAD.encode(device.to_bytes()).as_bytes(),
            )?;
            let claims = RequestClaims {
                key,
                fingerprint,
                device_key: URL_SAFE_NO_PAD.encode(device.verifying_key().as_bytes()),
                nonce: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>()),
                iat: ecosire::timestamp::now_ms().div_euclid(1000),
                name,
                platform: Some(std::env::consts::OS.to_string()),
                hostname: None,
            };
            write(out.as_deref(), &offline::make_request(&device, &claims))?;
            eprintln!(
                "carry the request to a connected machine: `ecosire offline activate --server URL FILE`, \
                 or the license's page in the customer portal"
            );
        }
        OfflineAction::Activate {
            server,
            request,
            out,
        } => {
            let text = read(&request)?;
            let answer = post(
                &server,
                "/api/licenses/offline-activations",
                serde_json::json!({"request": text.trim()}),
            )
            .await?;
            let file = answer["license_file"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("the answer carries no license file"))?;
            write(out.as_deref(), file)?;
            eprintln!(
                "activated {} on license {} until {}",
                answer["activation"]["fingerprint"].as_str().unwrap_or(""),
                answer["license"]["id"].as_str().unwrap_or(""),
                answer["activation"]["offline_until"].as_str().unwrap_or("")
            );
        }
        OfflineAction::Proof {
            license_file,
            device_key,
            out,
        } => {
            let device = load_device_key(&device_key)?;
            let file = read(&license_file)?;
            let claims: LicenseFileClaims = file
                .trim()
                .split('.')
                .nth(1)
                .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| anyhow::anyhow!("{}: not a license file", license_file.display()))?;
            let fingerprint = claims
                .token
                .fingerprint
                .ok_or_else(|| anyhow::anyhow!("the license file is bound to no device"))?;
            let now = ecosire::timestamp::now_ms().div_euclid(1000);
            write(
                out.as_deref(),
                &offline::make_proof(&device, &claims.token.sub, &fingerprint, now),
            )?;
            eprintln!("the license file is given up: carry the proof to `ecosire offline release`");
        }
        OfflineAction::Release { server, proof } => {
            let text = read(&proof)?;
            post(
                &server,
                "/api/licenses/offline-deactivations",
                serde_json::json!({"proof": text.trim()}),
            )
            .await?;
            eprintln!("the seat is free");
        }
    }
    Ok(ExitCode::SUCCESS)
}
