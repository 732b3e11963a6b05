//! The HTTP server's accept loop, with the bounds `axum::serve` does not
//! set: request headers must arrive within [`ServeLimits::header_timeout`]
//! (hyper's header-read timer, which also runs while a keep-alive connection
//! waits for its next request, so an idle connection closes after it too),
//! and at most [`ServeLimits::max_connections`] client connections are open,
//! below the descriptor limit. At the cap, connections with no request in a
//! handler (idle keep-alive, or still trickling their headers) are closed to
//! make room, oldest first, so that a new `/healthz` is still answered; if
//! every connection is busy, the new one is closed at once. `accept` never
//! runs out of descriptors, so it never spins on `EMFILE`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The bounds on client connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// How long a request's headers may take to arrive, and how long a
    /// keep-alive connection may wait for its next request.
    pub header_timeout: Duration,
    /// The most client connections open at once.
    pub max_connections: usize,
}

impl ServeLimits {
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

    /// The default cap under a descriptor limit of `fd_limit`: a quarter of
    /// the descriptors (at least 128) stay for the store, the outgoing
    /// deliveries and the rest, and at most 100,000 connections.
    pub fn default_max_connections(fd_limit: u64) -> usize {
        let kept = (fd_limit / 4).max(128);
        let cap = fd_limit.saturating_sub(kept).clamp(16, 100_000);
        usize::try_from(cap).unwrap_or(100_000)
    }
}

/// How long the loop pauses after a failed accept, rather than spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// How many idle connections one accept at the cap closes.
const EVICT_AT_ONCE: usize = 8;

/// One open client connection: how many of its requests are in a handler,
/// and the token that closes it.
struct Slot {
    busy: AtomicUsize,
    close: CancellationToken,
}

/// The open connections, by the order they were accepted in.
#[derive(Default)]
struct Open {
    slots: Mutex<BTreeMap<u64, Arc<Slot>>>,
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes room for one more under `max`: closes up to [`EVICT_AT_ONCE`]
    /// of the oldest connections with nothing in a handler. Returns whether
    /// there is room (counting the ones closed, which leave at once).
    fn make_room(&self, max: usize) -> bool {
        let mut slots = self.lock();
        if slots.len() < max {
            return true;
        }
        let idle: Vec<u64> = slots
            .iter()
            .filter(|(_, slot)| slot.busy.load(Ordering::Relaxed) == 0)
            .map(|(id, _)| *id)
            .take(EVICT_AT_ONCE)
            .collect();
        for id in &idle {
            if let Some(slot) = slots.remove(id) {
                slot.close.cancel();
            }
        }
        slots.len() < max
    }
}

/// Counts a request in a handler for as long as it lives.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: &Arc<Slot>) -> Self {
        slot.busy.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(slot))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` until `signal` completes; then stops
/// accepting, lets each connection finish the request it is on, and returns
/// once all have closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    signal: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let open = Arc::new(Open::default());
    let draining = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut signal = pin!(signal);
    let mut next_id = 0u64;
    let mut accept_errors = 0u64;
    loop {
        let stream = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors despite the cap (the engine's own
                    // connections), or a connection reset before it was
                    // taken: pause rather than spin, and say so sparingly.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = accept_errors, "accept failed");
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        if !open.make_room(limits.max_connections) {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            close: CancellationToken::new(),
        });
        open.lock().insert(next_id, Arc::clone(&slot));
        let (open, router, draining, id) = (Arc::clone(&open), router.clone(), draining.clone(), next_id);
        tracker.spawn(async move {
            serve_connection(stream, router, &slot, limits.header_timeout, &draining).await;
            open.lock().remove(&id);
        });
    }
    drop(listener);
    draining.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    slot: &Arc<Slot>,
    header_timeout: Duration,
    draining: &CancellationToken,
) {
    let counted = Arc::clone(slot);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = Busy::new(&counted);
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(axum::body::Body::new)).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = slot.close.cancelled() => {}
        () = draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                () = slot.close.cancelled() => {}
            }
        }
    }
}
