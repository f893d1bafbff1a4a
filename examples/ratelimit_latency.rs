//! What one rate-limit check costs, locally and through Redis (the GCRA Lua script):
//! `cargo run --release --example ratelimit_latency [redis-url] [checks]`
//! (default redis://127.0.0.1:6379, 20,000 checks). Prints the latency of sequential checks
//! (p50, p99, mean) and the throughput of 64 concurrent callers, for both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ecosire::config::LimitsConfig;
use ecosire::http::ratelimit::Limits;
use ecosire::http::shared_limits::SharedLimits;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn measure(name: &str, limits: Arc<Limits>, n: usize) {
    // Distinct keys of a roomy bucket: every check is allowed and writes state, as a validation
    // of a key does.
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        limits
            .check("validate", &format!("key:{i}"), None)
            .await
            .expect("allowed");
        times.push(t.elapsed());
    }
    let mean = times.iter().sum::<Duration>() / n as u32;
    times.sort();
    println!(
        "{name:>6}, sequential: p50 {:?}, p99 {:?}, mean {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        mean
    );
    let t = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let limits = limits.clone();
            tokio::spawn(async move {
                for i in 0..n / 64 {
                    let _ = limits.check("validate", &format!("c{w}:{i}"), None).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let done = (n / 64) * 64;
    println!(
        "{name:>6}, 64 concurrent callers: {:.0} checks/s",
        done as f64 / t.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let prefix = format!("ecosire-latency:{}", std::process::id());
    measure(
        "local",
        Arc::new(Limits::new(true, LimitsConfig::default())),
        n,
    )
    .await;
    let shared = SharedLimits::connect(&url, &prefix)
        .await
        .expect("Redis URL");
    assert!(shared.is_up(), "Redis at {url} does not answer");
    let limits = Arc::new(Limits::new(true, LimitsConfig::default()).with_shared(shared));
    measure("redis", limits.clone(), n).await;
    assert_eq!(
        limits
            .shared()
            .unwrap()
            .fallbacks
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "every check went to Redis"
    );
}
