//! A userspace TCP fault proxy for one peer link.
//!
//! This kernel has no `netem` qdisc, so latency, jitter, loss and
//! blackholes on a link between two nodes come from a proxy the link is
//! routed through (as etcd's robustness tests do). It works on the byte
//! stream, so it can only do to a connection what the network can do to a
//! TCP connection, which never sees reordering or holes:
//!
//! - **latency and jitter** delay each chunk, never reordering them;
//! - **loss** is seen by TCP as a retransmission: a lost chunk arrives
//!   one retransmission timeout (200 ms) late, and so does what follows it;
//! - **blackhole** stops forwarding in both directions while it lasts;
//!   nothing is dropped, so traffic resumes when it lifts, as after a
//!   healed partition;
//! - **reset** closes every open connection through the proxy and refuses
//!   (closes at once) new ones while set.
//!
//! Faults change at run time through [`FaultProxy::set`]; every connection
//! picks the new setting up on its next chunk. Randomness comes from a
//! seed, so a drill's fault schedule replays.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How one TCP retransmission delays a lost segment.
pub const RETRANSMISSION_TIMEOUT: Duration = Duration::from_millis(200);

/// The faults on a link, both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Added to every chunk, each way.
    pub latency: Duration,
    /// Up to this much more, uniformly, per chunk (order is kept).
    pub jitter: Duration,
    /// Probability in [0, 1] that a chunk is "lost" and retransmitted.
    pub loss: f64,
    /// Drop everything silently (a partition).
    pub blackhole: bool,
    /// Reset every connection at once.
    pub reset: bool,
}

impl Faults {
    /// A link without faults.
    pub fn none() -> Self {
        Self::default()
    }
}

/// A running proxy: connections to `addr()` are relayed to the upstream.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 picks one) and relays to `upstream`.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        seed: u64,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (faults, rx) = watch::channel(Faults::none());
        let task = tokio::spawn(accept(listener, upstream, rx, seed));
        Ok(Self { addr, faults, task })
    }

    /// The address to dial instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the faults for every connection, open or new.
    pub fn set(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    /// The faults in force now.
    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Stops accepting; relays end as their watch sender is dropped.
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Faults>,
    seed: u64,
) {
    let mut n = 0u64;
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        n += 1;
        if faults.borrow().reset {
            drop(client);
            continue;
        }
        let faults = faults.clone();
        let seed = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let stop = Arc::new(tokio::sync::Notify::new());
            let a = tokio::spawn(relay(cr, sw, faults.clone(), seed, stop.clone()));
            let b = tokio::spawn(relay(sr, cw, faults, seed ^ 1, stop.clone()));
            let _ = tokio::join!(a, b);
        });
    }
}

/// Copies one direction, delaying chunks in order. Ends (and ends the
/// other direction) on EOF, an error, or a reset.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    seed: u64,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Chunks with their delivery time, delivered by the writer in order.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let writer = {
        let mut faults = faults.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while let Some((at, chunk)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                // A blackhole holds what is in flight until it lifts.
                while faults.borrow().blackhole && !faults.borrow().reset {
                    if faults.changed().await.is_err() {
                        return;
                    }
                }
                if faults.borrow().reset || to.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = to.shutdown().await;
            stop.notify_waiters();
        })
    };
    let mut last = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let f = *faults.borrow();
        if f.reset {
            break;
        }
        if f.blackhole {
            tokio::select! {
                r = faults.changed() => if r.is_err() { break } else { continue },
                _ = stop.notified() => break,
            }
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            r = faults.changed() => if r.is_err() { break } else { continue },
            _ = stop.notified() => break,
        };
        let mut delay = f.latency;
        if !f.jitter.is_zero() {
            delay += f.jitter.mul_f64(rng.gen::<f64>());
        }
        if f.loss > 0.0 && rng.gen::<f64>() < f.loss {
            delay += RETRANSMISSION_TIMEOUT;
        }
        // Never before an earlier chunk: TCP delivers in order.
        last = last.max(Instant::now() + delay);
        if tx.send((last, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    if faults.borrow().reset {
        writer.abort();
    } else {
        let _ = writer.await;
    }
    stop.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; its address.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn proxy() -> FaultProxy {
        FaultProxy::start("127.0.0.1:0".parse().unwrap(), echo().await, 7)
            .await
            .unwrap()
    }

    async fn round_trip(s: &mut TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(payload).await?;
        let mut back = vec![0u8; payload.len()];
        s.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn latency_delays_each_direction_and_keeps_bytes_in_order() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        let fast = Instant::now();
        round_trip(&mut s, b"warm").await.unwrap();
        let baseline = fast.elapsed();
        p.set(Faults {
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
            ..Faults::none()
        });
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let t = Instant::now();
        let back = round_trip(&mut s, &payload).await.unwrap();
        assert_eq!(back, payload, "jitter must not reorder or lose bytes");
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "two directions of 50 ms each, took {:?} (baseline {baseline:?})",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn a_blackhole_stalls_the_link_until_it_lifts() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        round_trip(&mut s, b"before").await.unwrap();
        p.set(Faults {
            blackhole: true,
            ..Faults::none()
        });
        s.write_all(b"during").await.unwrap();
        let mut back = [0u8; 6];
        let stalled =
            tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut back)).await;
        assert!(stalled.is_err(), "nothing may pass a blackhole");
        p.set(Faults::none());
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("the link heals")
            .unwrap();
        assert_eq!(&back, b"during", "held, not dropped");
    }

    #[tokio::test]
    async fn loss_costs_a_retransmission_timeout() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        p.set(Faults {
            loss: 1.0,
            ..Faults::none()
        });
        let t = Instant::now();
        assert_eq!(round_trip(&mut s, b"x").await.unwrap(), b"x");
        assert!(
            t.elapsed() >= 2 * RETRANSMISSION_TIMEOUT,
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn reset_closes_open_connections_and_refuses_new_ones() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        round_trip(&mut s, b"up").await.unwrap();
        p.set(Faults {
            reset: true,
            ..Faults::none()
        });
        let closed = tokio::time::timeout(Duration::from_secs(5), round_trip(&mut s, b"gone"))
            .await
            .expect("a reset connection fails fast");
        assert!(closed.is_err());
        let mut fresh = TcpStream::connect(p.addr()).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(5), round_trip(&mut fresh, b"no"))
            .await
            .expect("fails fast");
        assert!(refused.is_err());
        p.set(Faults::none());
        let mut again = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"back").await.unwrap(), b"back");
    }
}
