//! Revocation list size and build+sign time for 10,000 and 1,000,000 revoked licenses, as the
//! server builds them (Golomb-coded filter above 1,000 ids) and, for comparison, as a plain list
//! of ids. `cargo bench --bench revocations` prints one row per case.

use std::time::{Duration, Instant};

use ecosire::jws::Signer;
use ecosire::licensing::revocations::{self, build_claims};

/// License ids shaped like the real ones: `lic_` + 26 Crockford base32 characters.
fn ids(n: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    (0..n)
        .map(|_| {
            let tail: String = (0..26)
                .map(|_| ALPHABET[rand::random::<usize>() % 32] as char)
                .collect();
            format!("lic_{tail}")
        })
        .collect()
}

/// The median of `runs` timings of `f`, and its last result.
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = vec![];
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[runs / 2], last.expect("at least one run"))
}

fn main() {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let signer = Signer::new(key, revocations::TYP);
    println!("| revoked | form | size (bytes) | bytes/id | build + sign |");
    println!("|---|---|---|---|---|");
    for n in [10_000usize, 1_000_000] {
        let revoked = ids(n);
        let runs = if n > 100_000 { 3 } else { 11 };
        let (took, jws) = median(runs, || {
            let claims = build_claims("ecosire", "prd_bench", 1, 0, revoked.clone(), vec![]);
            signer.sign(&claims)
        });
        println!(
            "| {n} | GCS, p = {} | {} | {:.2} | {:.1} ms |",
            revocations::FILTER_P,
            jws.len(),
            jws.len() as f64 / n as f64,
            took.as_secs_f64() * 1e3
        );
        let (took, jws) = median(runs, || {
            let mut sorted = revoked.clone();
            sorted.sort_unstable();
            let claims = serde_json::json!({"iss": "ecosire", "aud": revocations::AUDIENCE,
                "product": "prd_bench", "seq": 1, "iat": 0, "exp": 0, "revoked": sorted, "suspended": []});
            signer.sign(&claims)
        });
        println!(
            "| {n} | list of ids | {} | {:.2} | {:.1} ms |",
            jws.len(),
            jws.len() as f64 / n as f64,
            took.as_secs_f64() * 1e3
        );
    }
}
