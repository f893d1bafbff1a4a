//! Prometheus metrics at `GET /metrics` and the per-request access log.
//!
//! Counters and histograms are recorded with the `metrics` facade as requests pass; gauges that
//! describe state (cache, outbox depth, limiter keys) are read when Prometheus scrapes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::{MatchedPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::limits::Public;
use crate::state::AppState;

/// The process-wide recorder (one per process, shared by every app built in it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("ecosire_http_request_duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ],
            )
            .expect("static buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests building several apps): keep ours as
        // a renderer either way.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The request counter and latency histogram of one (method, route, status).
#[derive(Clone)]
struct Series {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Series handles by route, then (method, status): registered once, so a request costs a map
/// lookup and two atomic updates instead of building and hashing a labelled key per metric.
/// Bounded: routes are templates, methods and statuses come from fixed sets.
static SERIES: LazyLock<RwLock<SeriesByRoute>> = LazyLock::new(Default::default);

/// Route template → (method, status, handles).
type SeriesByRoute = HashMap<String, Vec<(&'static str, u16, Series)>>;

fn series(method: &'static str, route: &str, status: u16) -> Series {
    if let Some(list) = SERIES.read().expect("series").get(route)
        && let Some((_, _, s)) = list.iter().find(|(m, st, _)| *m == method && *st == status)
    {
        return s.clone();
    }
    let status_label = status.to_string();
    let s = Series {
        requests: metrics::counter!("ecosire_http_requests_total", "method" => method, "route" => route.to_string(), "status" => status_label.clone()),
        duration: metrics::histogram!("ecosire_http_request_duration_seconds", "method" => method, "route" => route.to_string(), "status" => status_label),
    };
    SERIES
        .write()
        .expect("series")
        .entry(route.to_string())
        .or_default()
        .push((method, status, s.clone()));
    s
}

/// Records one request's count and latency by route template and status.
pub fn record(method: &'static str, route: Option<&MatchedPath>, status: u16, elapsed: Duration) {
    let s = series(method, route.map_or("unmatched", |r| r.as_str()), status);
    s.requests.increment(1);
    s.duration.record(elapsed.as_secs_f64());
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics_text))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics_text(_rate: Public, State(state): State<AppState>) -> Response {
    metrics::gauge!("ecosire_license_cache_entries").set(state.licenses.entry_count() as f64);
    metrics::counter!("ecosire_license_cache_hits_total")
        .absolute(state.licenses.hits.load(Ordering::Relaxed));
    metrics::counter!("ecosire_license_cache_misses_total")
        .absolute(state.licenses.misses.load(Ordering::Relaxed));
    metrics::counter!("ecosire_validated_events_dropped_total")
        .absolute(state.events.dropped.load(Ordering::Relaxed));
    metrics::gauge!("ecosire_rate_limiter_keys").set(state.limits.keys() as f64);
    let shared = state.limits.shared();
    metrics::gauge!("ecosire_rate_limit_shared").set(if shared.is_some_and(|s| s.is_up()) {
        1.0
    } else {
        0.0
    });
    metrics::counter!("ecosire_rate_limit_local_fallbacks_total")
        .absolute(shared.map_or(0, |s| s.fallbacks.load(Ordering::Relaxed)));
    // Queue depths, read at scrape time: what waits to be sent (webhooks, mail).
    for (gauge, sql) in [
        (
            "ecosire_outbox_pending_deliveries",
            "SELECT count(*) FROM deliveries WHERE status = 'pending'",
        ),
        (
            "ecosire_mail_pending",
            "SELECT count(*) FROM mail_outbox WHERE status = 'pending'",
        ),
    ] {
        if let Ok(depth) = sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&state.db.pool)
            .await
        {
            metrics::gauge!(gauge).set(depth as f64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
        .into_response()
}
