//! The connection layer under the router: how long a client may take, and how many may connect.
//!
//! `axum::serve` keeps a connection for as long as the client likes: a client that sends half a
//! request line, or opens keep-alive connections and goes quiet, holds a socket (and a file
//! descriptor) forever, and a few hundred of them make `accept` fail for everyone. This loop
//! serves the same router through hyper with three deadlines, all configurable:
//!
//! - **header timeout**: once the first byte of a request arrives, its headers must be complete
//!   within `ECOSIRE_HEADER_TIMEOUT_S`;
//! - **idle timeout**: a connection with no request in flight and nothing arriving is closed after
//!   `ECOSIRE_IDLE_TIMEOUT_S`;
//! - **request timeout** (body and handler): the router's own layer, see `within`;
//!
//! and a cap on connections served at once (`ECOSIRE_MAX_CONNECTIONS`): past it the loop stops
//! accepting until one closes, so the backlog waits instead of the process running out of file
//! descriptors.
//!
//! The first two are one deadline per connection, kept by `Deadline` around the socket: hyper's
//! own header-read timeout also starts while a keep-alive connection is idle, so it cannot tell
//! an idle client (fine for a minute) from a slow one (not fine for ten seconds).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::error::Error;

/// The connection limits, from `Config`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// How long shutdown waits for open requests before dropping them.
    pub drain_timeout: Duration,
}

/// What the socket wrapper and the request service of one connection share.
struct ConnState {
    /// Requests being served on the connection.
    in_flight: usize,
    /// When the first byte of a request that is not being served yet arrived.
    head_started: Option<Instant>,
    /// The last byte read or the last response finished.
    last_activity: Instant,
    /// The read that waits while a request is served, woken when it ends.
    reader: Option<std::task::Waker>,
}

type Shared = Arc<Mutex<ConnState>>;

/// The socket of one connection, closing it (a read error hyper turns into a close) when its
/// deadline passes: the header timeout while a request's head is arriving, the idle timeout while
/// nothing is in flight. While a request is served no deadline runs here.
struct Deadline {
    io: TcpStream,
    shared: Shared,
    limits: ConnLimits,
    sleep: Pin<Box<Sleep>>,
}

impl Deadline {
    fn deadline(&self) -> Option<Instant> {
        let s = self.shared.lock().expect("connection state");
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.head_started {
            Some(t) => t + self.limits.header_timeout,
            None => s.last_activity + self.limits.idle_timeout,
        })
    }
}

impl AsyncRead for Deadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let now = Instant::now();
                    let mut s = self.shared.lock().expect("connection state");
                    s.last_activity = now;
                    if s.in_flight == 0 && s.head_started.is_none() {
                        s.head_started = Some(now);
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(deadline) = self.deadline() else {
                    // No deadline while a request is served; when it ends, the deadline starts
                    // and this read must be polled again to arm it.
                    self.shared.lock().expect("connection state").reader = Some(cx.waker().clone());
                    return Poll::Pending;
                };
                if self.sleep.deadline() != deadline {
                    self.sleep.as_mut().reset(deadline);
                }
                match self.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client too slow or idle too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Deadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Counts a request as in flight from the moment hyper hands it over until its response is done.
struct InFlight(Shared);

impl InFlight {
    fn start(shared: &Shared) -> Self {
        let mut s = shared.lock().expect("connection state");
        s.in_flight += 1;
        s.head_started = None;
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let reader = {
            let mut s = self.0.lock().expect("connection state");
            s.in_flight -= 1;
            s.last_activity = Instant::now();
            if s.in_flight == 0 {
                s.reader.take()
            } else {
                None
            }
        };
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown` resolves;
/// then stops accepting and lets open requests finish (at most `drain_timeout`).
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        // Past the cap, stop accepting: the kernel's backlog holds newcomers until a slot frees.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        let shared: Shared = Arc::new(Mutex::new(ConnState {
            in_flight: 0,
            head_started: None,
            last_activity: now,
            reader: None,
        }));
        let io = TokioIo::new(Deadline {
            io: stream,
            shared: shared.clone(),
            limits,
            sleep: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
        });
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let in_flight = InFlight::start(&shared);
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let res = router.oneshot(req.map(Body::new)).await;
                drop(in_flight);
                res
            }
        });
        let conn = builder.serve_connection_with_upgrades(io, service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            // A client that goes away or times out is routine, not an error worth a log line.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: some requests did not finish in time and were dropped");
    }
    Ok(())
}

/// The request timeout: receiving the body and answering must finish within `limit`, else 408
/// `REQUEST_TIMEOUT` (the handler is dropped, and with it any open transaction).
/// `serve`'s answer within `limit` (the whole request, body included), or 408
/// `REQUEST_TIMEOUT` with `Connection: close`.
pub async fn within(
    limit: Duration,
    serve: impl std::future::Future<Output = Response>,
) -> Response {
    match tokio::time::timeout(limit, serve).await {
        Ok(res) => res,
        Err(_) => {
            let mut res = Error::status(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "The request was not received and answered in time",
            )
            .into_response();
            res.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            res
        }
    }
}
