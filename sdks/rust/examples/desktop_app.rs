//! Startup validation in a desktop application (no async runtime: the `blocking` API).
//!
//! ```sh
//! curl -s http://127.0.0.1:8080/.well-known/jwks.json > jwks.json   # shipped with the app
//! cargo run -p ecosire-client --features blocking --example desktop_app -- ECOS-XXXXX-…
//! ```
//! Environment: `ECOSIRE_URL` (default `http://127.0.0.1:8080`), `ECOSIRE_PRODUCT` (product id
//! or slug, default `desktop-pro`), `ECOSIRE_JWKS` (default `jwks.json`).

use ecosire_client::{LicenseClient, PublicKeys, Status};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let jwks_file = var("ECOSIRE_JWKS", "jwks.json");
    let jwks = std::fs::read_to_string(&jwks_file).map_err(|e| format!("{jwks_file}: {e}"))?;

    // --- startup validation: the part an application copies ---
    let client = LicenseClient::builder()
        .base_url(var("ECOSIRE_URL", "http://127.0.0.1:8080"))
        .product(var("ECOSIRE_PRODUCT", "desktop-pro"))
        .public_keys(PublicKeys::from_jwks(&jwks)?)
        .cache_dir(std::env::temp_dir().join("ecosire-desktop-app"))
        .build_blocking()?;
    let status = match std::env::args().nth(1) {
        Some(key) => client.activate(&key, client.machine_fingerprint())?, // first run
        None => client.check()?,                                           // every later start
    };
    match status {
        Status::Valid(grant) => println!("licensed: {}", grant.entitlements.join(", ")),
        Status::Offline { until, .. } => {
            let left = until
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            println!("offline: connect within {} hours", left.as_secs() / 3600)
        }
        Status::Invalid { code, .. } => return Err(format!("not licensed: {code}").into()),
        _ => return Err("unknown license status".into()),
    }
    // --- end ---
    Ok(())
}
