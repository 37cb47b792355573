//! Serving HTTP/1 (OCSP, CRLs, health, the agent's status page) on a
//! bounded listener.
//!
//! `axum::serve` hands hyper no timer, and without one hyper applies no
//! header-read timeout: a client sending a header byte every few seconds
//! holds its connection forever. Here every connection gets:
//!
//! - a header-read timeout, which also closes a kept-alive connection that
//!   sends nothing (hyper starts it again after each response);
//! - a request timeout around the handler, body included: a slow body or a
//!   stuck handler answers 503 instead of holding the connection;
//! - a maximum age, after which the connection finishes its request and
//!   closes, so no client keeps one connection (and its place) forever;
//! - header size caps (hyper's parser buffer).
//!
//! Shutdown stops accepting, lets each connection finish the request it is
//! in, and drops whatever is still open after a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::listen::Incoming;

/// How long one HTTP connection may take over each step.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// The deadline for a request line and headers.
    pub header_timeout: Duration,
    /// One request's deadline, body included.
    pub request_timeout: Duration,
    /// After this the connection is closed gracefully.
    pub max_connection_age: Duration,
}

impl From<&crate::ConnectionLimits> for HttpLimits {
    fn from(l: &crate::ConnectionLimits) -> Self {
        Self {
            header_timeout: l.header_timeout,
            request_timeout: l.request_timeout,
            max_connection_age: l.max_connection_age,
        }
    }
}

/// Request line plus headers, at most: hyper's read buffer.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header fields per request.
const MAX_HEADERS: usize = 64;
/// After shutdown, what open connections get to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn with_deadline(router: axum::Router, limit: Duration, req: Request) -> Response {
    match tokio::time::timeout(limit, router.oneshot(req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(never)) => match never {},
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {limit:?}; retry"),
        )
            .into_response(),
    }
}

/// Until shutdown is signalled (the guard `wait_for` returns must not live
/// across an await of a spawned task).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `router` on `incoming` until `shutdown` completes.
pub async fn serve(
    mut incoming: Incoming,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(joined) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::error!(error = %e, "HTTP connection task panicked");
                    }
                }
            }
            conn = incoming.next() => {
                let Some(Ok(conn)) = conn else { break };
                let router = router.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move {
                        Ok::<_, Infallible>(
                            with_deadline(router, limits.request_timeout, req.map(Body::new)).await,
                        )
                    }
                });
                let serving = http.serve_connection(TokioIo::new(conn), service);
                let mut stop = stop_rx.clone();
                conns.spawn(async move {
                    tokio::pin!(serving);
                    let age = tokio::time::sleep(limits.max_connection_age);
                    tokio::pin!(age);
                    let result = tokio::select! {
                        r = serving.as_mut() => r,
                        _ = &mut age => {
                            serving.as_mut().graceful_shutdown();
                            serving.await
                        }
                        _ = stopped(&mut stop) => {
                            serving.as_mut().graceful_shutdown();
                            serving.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection closed");
                    }
                });
            }
        }
    }
    drop(incoming);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(open = conns.len(), "HTTP connections dropped at shutdown");
        conns.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{bounded, ListenerLimits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = bounded(
            l,
            "http-test",
            ListenerLimits {
                max: 100,
                per_source: 100,
            },
        )
        .unwrap();
        let router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let addr = b.local_addr;
        tokio::spawn(serve(b.incoming, router, limits, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    const LIMITS: HttpLimits = HttpLimits {
        header_timeout: Duration::from_millis(400),
        request_timeout: Duration::from_millis(600),
        max_connection_age: Duration::from_secs(60),
    };

    /// Reads until the server closes; None if it has not within `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut all = Vec::new();
        tokio::time::timeout(within, async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .ok()
        .map(|_| all)
    }

    #[tokio::test]
    async fn slow_headers_and_idle_connections_are_closed_at_the_header_timeout() {
        let (addr, _stop) = start(LIMITS).await;
        // Slowloris: a header byte every 100 ms never finishes the head.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nX-A: ").await.unwrap();
        let drip = async {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if slow.write_all(b"a").await.is_err() {
                    return true;
                }
            }
            false
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(2), drip)
                .await
                .unwrap(),
            "the slow client was not cut off"
        );
        // Silent after connecting, and silent after one answered request.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut idle, Duration::from_secs(2))
            .await
            .is_some());
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answered = closed_within(&mut kept, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_request_past_its_timeout_answers_503() {
        let (addr, _stop) = start(LIMITS).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut s, Duration::from_secs(3)).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("longer than"), "{text}");
    }

    #[tokio::test]
    async fn oversized_heads_are_refused() {
        let (addr, _stop) = start(LIMITS).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..100 {
            req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let _ = s.write_all(&req).await;
        let answer = closed_within(&mut s, Duration::from_secs(2)).await.unwrap();
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_finish_then_closes() {
        let (addr, stop) = start(HttpLimits {
            max_connection_age: Duration::from_secs(60),
            ..LIMITS
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        stop.send(()).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(2))
            .await
            .is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
