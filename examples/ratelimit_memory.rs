//! Measures what keyed rate limiters cost in memory with millions of distinct keys, and that
//! pruning gives it back: `cargo run --release --example ratelimit_memory [keys]`.

use std::time::{Duration, Instant};

use ecosire::config::LimitsConfig;
use ecosire::http::ratelimit::Limits;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let limits = Limits::new(true, LimitsConfig::default());
    println!("start: {:.1} MiB RSS", rss_mib());
    let t = Instant::now();
    for i in 0..n {
        // Like a flood of validations with random unknown keys from distinct addresses.
        let _ = limits.check("anonymous", &format!("ip:{i}"), None).await;
    }
    println!(
        "{n} distinct keys in {:.2?}: {} keys held, {:.1} MiB RSS",
        t.elapsed(),
        limits.keys(),
        rss_mib()
    );
    // One cell of a 300/min bucket refills in 200 ms; after that every key is idle.
    std::thread::sleep(Duration::from_millis(1000));
    let t = Instant::now();
    limits.prune();
    println!(
        "after prune ({:.2?}): {} keys held, {:.1} MiB RSS",
        t.elapsed(),
        limits.keys(),
        rss_mib()
    );
}
