//! The router, its middleware, the background tasks and graceful shutdown.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::db::Db;
use crate::error::{Error, problem};
use crate::keyring::Keyring;
use crate::licensing::cache::LicenseCache;
use crate::state::{App, AppState};

/// Bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::ops::openapi::ApiDoc::openapi())
        .merge(crate::licensing::router())
        .merge(crate::accounts::router())
        .merge(crate::oidc::signin::router())
        .merge(crate::billing::router())
        .merge(crate::events::router())
        .merge(crate::modules::router())
        .merge(crate::ops::router())
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router_and_spec().1
}

/// The routes and their finished OpenAPI document.
fn api_router_and_spec() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut api) = api_router().split_for_parts();
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    crate::ops::openapi::complete(&mut api);
    (router, api)
}

async fn not_found(_rate: crate::auth::limits::Public) -> Error {
    Error::not_found("NOT_FOUND", "No such route")
}

async fn method_not_allowed(_rate: crate::auth::limits::Public) -> Error {
    Error::MethodNotAllowed
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        "Internal server error".into(),
        None,
    )
}

/// The whole application as a `Router`, for `serve` and for in-process tests.
pub fn app(state: AppState) -> Router {
    crate::ops::metrics::handle();
    let (router, mut api) = api_router_and_spec();
    if let Some(o) = &state.config.oidc {
        crate::ops::openapi::add_provider(&mut api, &o.issuer);
    }
    router
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", api))
        .merge(crate::dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(panic_response))
        // A router-level layer wraps each route, so it sees the route's MatchedPath.
        .layer(axum::middleware::from_fn_with_state(state, envelope))
}

/// What every request passes through, one layer rather than five (each `from_fn` layer boxes and
/// clones the rest of the stack per request): its id, the whole-request timeout, rate-limit
/// headers, the access log with usage and audit accounting, and request metrics. Each piece is
/// owned by its module; this only orders them. A request that times out is logged and counted
/// with its 408.
async fn envelope(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use crate::http::{listener, ratelimit, request_id};
    let started = std::time::Instant::now();
    let id = request_id::assign(&mut req);
    let method = crate::http::method_label(req.method());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let rate = ratelimit::attach_slot(&state, &mut req);
    let (req, pending) = crate::auth::accounting::begin(&state, req);
    let mut res = request_id::scope(id.clone(), async {
        let res = listener::within(state.config.request_timeout, next.run(req)).await;
        pending.finish(&state, &res, started);
        res
    })
    .await;
    crate::ops::metrics::record(
        method,
        route.as_ref(),
        res.status().as_u16(),
        started.elapsed(),
    );
    if let Some(slot) = &rate {
        ratelimit::write_headers(res.headers_mut(), slot);
    }
    request_id::stamp(&mut res, id);
    res
}

/// Connects the database, runs migrations, loads (or creates) the keys: everything `serve` needs.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let db = Db::connect_with(
        &config.database_url,
        config.db_acquire_timeout,
        config.db_max_connections,
    )
    .await?;
    db.migrate().await?;
    // Asks the database first: keys are generated only while nothing in it needs them.
    let (keys, generated) = Keyring::load_for(&config.keys_dir, &db).await?;
    let http = crate::events::dispatcher::http_client(config.webhook_allow_private);
    for g in generated {
        tracing::info!(dir = %config.keys_dir.display(), "generated {g}");
    }
    let mut limits = crate::http::ratelimit::Limits::new(config.rate_limits, config.limits.clone());
    if let (true, Some(url)) = (config.rate_limits, &config.redis_url) {
        limits = limits.with_shared(
            crate::http::shared_limits::SharedLimits::connect(url, &config.redis_prefix).await?,
        );
    }
    let hasher =
        crate::accounts::passwords::Hasher::new(config.hash_concurrency, config.hash_queue_timeout);
    // Rendered answers get a fixed budget beside the snapshots: enough for every hot license.
    let licenses = LicenseCache::new(config.license_cache_capacity as u64, 64 << 20);
    let mail = crate::mail::Mailer::from_config(&config)?;
    let oidc = match &config.oidc {
        Some(o) => Some(crate::oidc::start(o, &config.public_base()).await),
        None => None,
    };
    let state = AppState::new(App {
        config,
        db,
        keys,
        licenses,
        revocations: Default::default(),
        accounting: Default::default(),
        limits,
        events: Default::default(),
        http,
        hasher,
        mail,
        oidc,
    });
    state.events.refresh(&state.db).await?;
    crate::events::endpoints::ensure_configured_endpoint(&state).await?;
    Ok(state)
}

/// Serves `state` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// and stops the background tasks.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = spawn_background(&state, stop_rx);
    let flush_state = state.clone();
    let limits = crate::http::listener::ConnLimits {
        header_timeout: state.config.header_timeout,
        idle_timeout: state.config.idle_timeout,
        max_connections: state.config.max_connections,
        drain_timeout: state.config.request_timeout + Duration::from_secs(5),
    };
    let router = app(state);
    crate::http::listener::run(listener, router, limits, shutdown).await?;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    flush_state.accounting.flush(&flush_state.db).await;
    flush_state.limits.quota.flush(&flush_state.db).await;
    Ok(())
}

/// The heartbeat reaper and, on PostgreSQL, the cache-invalidation listener.
pub fn spawn_background(
    state: &AppState,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![];
    {
        let state = state.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.config.reaper_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        match crate::licensing::reaper::reap_silent_activations(&state).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(released = n, "released silent activations"),
                            Err(e) => tracing::warn!(error = %e, "heartbeat reaper failed; will retry"),
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        }));
    }
    {
        let state = state.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tick.tick() => state.accounting.flush(&state.db).await,
                    _ = stop.changed() => break,
                }
            }
        }));
    }
    {
        // The daily quota: this instance's counts reach the database, and it learns the totals
        // of every instance, every second; past days are forgotten.
        let state = state.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::http::quota::FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let quota = &state.limits.quota;
                        quota.flush(&state.db).await;
                        quota.prune(&state.db, crate::http::ratelimit::Limits::today()).await;
                    }
                    _ = stop.changed() => break,
                }
            }
        }));
    }
    {
        // Signing keys added, activated or retired in the keys folder (by `ecosire keys …`, or
        // copied in from another instance) take effect here without a restart.
        let state = state.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::keyring::RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => { state.keys.refresh(); }
                    _ = stop.changed() => break,
                }
            }
        }));
    }
    if state.limits.shared().is_some() {
        // Turns shared limits off while Redis does not answer and on again when it does.
        let state = state.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Some(shared) = state.limits.shared() {
                shared.supervise(stop).await;
            }
        }));
    }
    tasks.push(tokio::spawn(crate::events::dispatcher::run(
        state.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(crate::mail::run(state.clone(), stop.clone())));
    if let Some(provider) = state.oidc.clone().filter(|p| !p.is_ready()) {
        tasks.push(tokio::spawn(crate::oidc::keep_discovering(
            provider,
            stop.clone(),
        )));
    }
    if let Some(rx) = state.events.take_validated_receiver() {
        tasks.push(tokio::spawn(crate::events::run_validated_writer(
            state.db.clone(),
            state.events.clone(),
            rx,
            stop.clone(),
        )));
    }
    {
        // Housekeeping every 5 s: endpoint changes made on other instances reach this one's
        // subscription filter; metric histograms are drained even when nobody scrapes; and every
        // minute idle rate-limit keys are forgotten, so memory stays bounded.
        let state = state.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let _ = state.events.refresh(&state.db).await;
                        crate::ops::metrics::handle().run_upkeep();
                        n += 1;
                        if n.is_multiple_of(12) {
                            state.limits.prune();
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        }));
    }
    {
        // Cross-instance cache invalidation; `listen_license_changes` answers `None` where there
        // is nothing to listen to (SQLite: one process owns the file), and the task ends.
        let state = state.clone();
        tasks.push(tokio::spawn(listen_for_license_changes(state, stop)));
    }
    tasks
}

/// Keeps this instance's license cache in step with writes made by other instances (PostgreSQL
/// `LISTEN`). Whenever the connection is lost, notifications may have been missed: the whole
/// local cache is dropped at once, again after every failed reconnection attempt (one a second,
/// each waiting at most 3 s for the database, so nothing cached while deaf lives longer than a
/// few seconds), and once more when listening again.
async fn listen_for_license_changes(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut was_listening = false;
    loop {
        let mut listener = match state.db.listen_license_changes().await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                state.licenses.invalidate_all_local();
                tracing::warn!(
                    cause = %crate::db::error_cause(&e),
                    "cannot LISTEN for license changes; dropping the license cache every second until it can"
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        // Anything may have changed while we were not listening.
        state.licenses.invalidate_all_local();
        if was_listening {
            tracing::info!("listening for license changes again; dropped the license cache");
        }
        was_listening = true;
        loop {
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => {
                        let payload = n.payload();
                        if payload == "*" {
                            state.licenses.invalidate_all_local();
                        } else if let Some(d) = hex::decode(payload).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                            state.licenses.invalidate_local(&d).await;
                        }
                    }
                    Ok(None) | Err(_) => {
                        state.licenses.invalidate_all_local();
                        let cause = match n {
                            Err(e) => crate::db::error_cause(&e),
                            _ => "the connection closed".into(),
                        };
                        tracing::warn!(%cause, "LISTEN connection lost; dropped the license cache, reconnecting");
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: call it before announcing the address, so a signal sent as soon as the
/// server says "listening" shuts it down gracefully instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (mut int, mut term) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int.take()) => {},
                _ = wait(term.take()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
