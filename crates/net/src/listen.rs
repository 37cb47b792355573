//! Accepting connections under limits.
//!
//! Every connection costs a descriptor, and a node's descriptors are shared
//! with sled and Raft: an unauthenticated client that could hold them all
//! would stop the node from writing its log. So each listener admits at
//! most `max` open connections, at most `per_source` of them from one
//! address (one IPv4 address, or one IPv6 /64, which a single host usually
//! holds whole), and closes the rest as soon as they are accepted. Accepting
//! and closing keeps the kernel's backlog moving, so a refused client
//! learns at once instead of waiting in a queue.
//!
//! These caps bound how many connections can be held; the timeouts of the
//! protocols above (TLS handshake, HTTP header read, HTTP/2 keepalive,
//! connection age) bound how long. Both are needed: caps alone let an idle
//! attacker keep every slot, timeouts alone let a fast one open more than
//! the process has.
//!
//! Errors of `accept` itself (EMFILE, ENFILE, ENOBUFS) mean the process is
//! out of something; retrying at once would spin a core while nothing
//! frees it. The loop sleeps, doubling from 5 ms to 1 s, and says so.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::net::TcpListener;

use crate::Conn;

/// How many connections the kernel may queue before we accept them (it
/// caps this at `net.core.somaxconn`, 4096 on current kernels). A node
/// whose clients all reconnect at once (after a failover, say) would
/// otherwise see most of them wait out TCP's SYN retransmissions, at one
/// second and more, with the listener far below its cap.
pub const BACKLOG: u32 = 4096;

/// Binds `addr` for listening, with [`BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std and tokio do: a restarted node can bind while old connections
    // linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The caps of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Open connections at once, from everyone.
    pub max: usize,
    /// Open connections at once from one source address.
    pub per_source: usize,
}

/// What one listener has done, for logs, metrics and tests.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Open connections now.
    open: AtomicU64,
    /// Connections admitted since the start.
    admitted: AtomicU64,
    /// Connections closed at once because a cap was reached.
    refused: AtomicU64,
    /// `accept` errors that made the loop back off.
    accept_errors: AtomicU64,
}

impl ListenerStats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
    /// Connections admitted since start.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }
    /// Connections refused at a cap since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Accept errors since start.
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }
}

/// The key a source is counted under: an IPv4 address, or the /64 of an
/// IPv6 one (IPv4-mapped addresses count as IPv4).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Who holds the listener's places.
#[derive(Debug)]
struct Places {
    name: &'static str,
    limits: ListenerLimits,
    by_source: Mutex<(usize, HashMap<IpAddr, usize>)>,
    stats: Arc<ListenerStats>,
}

/// A connection's place under its listener's caps; given back on drop.
#[derive(Debug)]
pub struct Admission {
    places: Arc<Places>,
    source: IpAddr,
}

impl Places {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let source = source_key(ip);
        let mut guard = self.by_source.lock().expect("listener places");
        let (open, by_source) = &mut *guard;
        let from_source = by_source.get(&source).copied().unwrap_or(0);
        if *open >= self.limits.max || from_source >= self.limits.per_source {
            return None;
        }
        *open += 1;
        by_source.insert(source, from_source + 1);
        self.stats.open.store(*open as u64, Ordering::Relaxed);
        self.stats.admitted.fetch_add(1, Ordering::Relaxed);
        Some(Admission {
            places: self.clone(),
            source,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut guard = self.places.by_source.lock().expect("listener places");
        let (open, by_source) = &mut *guard;
        *open -= 1;
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
        self.places
            .stats
            .open
            .store(*open as u64, Ordering::Relaxed);
    }
}

/// Errors of `accept` that concern one connection only (it was reset
/// before we took it): the next accept is fine.
fn concerns_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per listener and reason in this time.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where connections come from: a TCP listener, or a test's stand-in.
pub trait Accept: Send + 'static {
    /// The accepted stream.
    type Stream: crate::Io;
    /// Waits for the next connection and its peer address.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, peer) = TcpListener::accept(self).await?;
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay");
        }
        Ok((s, peer))
    }
}

struct Acceptor<A> {
    listener: A,
    local: SocketAddr,
    places: Arc<Places>,
    backoff: Duration,
    last_refusal_log: Option<Instant>,
    last_error_log: Option<Instant>,
}

fn due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    match last {
        Some(t) if now.duration_since(*t) < LOG_EVERY => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

impl<A: Accept> Acceptor<A> {
    async fn next(&mut self) -> Conn {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = BACKOFF_MIN;
                    let Some(admission) = self.places.admit(peer.ip()) else {
                        self.places.stats.refused.fetch_add(1, Ordering::Relaxed);
                        if due(&mut self.last_refusal_log) {
                            tracing::warn!(
                                listener = self.places.name,
                                %peer,
                                max = self.places.limits.max,
                                per_source = self.places.limits.per_source,
                                refused_so_far = self.places.stats.refused(),
                                "connection refused: listener at its cap ([connections] in node.toml)"
                            );
                        }
                        drop(stream);
                        continue;
                    };
                    return Conn::new(stream, Some(self.local), Some(peer)).admitted(admission);
                }
                Err(e) if concerns_one_connection(&e) => continue,
                Err(e) => {
                    self.places
                        .stats
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if due(&mut self.last_error_log) {
                        tracing::warn!(
                            listener = self.places.name,
                            error = %e,
                            backoff = ?self.backoff,
                            "accept failed (out of descriptors or memory?); backing off"
                        );
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// The connections a bounded listener admits. The stream never yields an
/// error (tonic would log and poll again at once) and never ends.
pub type Incoming = std::pin::Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

/// A listener with caps. `name` is what logs call it ("api", "raft", ...).
pub struct Bounded {
    /// The bound address (the port chosen, with port 0).
    pub local_addr: SocketAddr,
    /// Counters, for status and metrics.
    pub stats: Arc<ListenerStats>,
    /// The admitted connections.
    pub incoming: Incoming,
}

/// Admits connections of `listener` under `limits`.
pub fn bounded(
    listener: TcpListener,
    name: &'static str,
    limits: ListenerLimits,
) -> io::Result<Bounded> {
    let local_addr = listener.local_addr()?;
    Ok(bounded_from(listener, local_addr, name, limits))
}

/// [`bounded`] over any [`Accept`].
pub fn bounded_from<A: Accept>(
    listener: A,
    local_addr: SocketAddr,
    name: &'static str,
    limits: ListenerLimits,
) -> Bounded {
    let stats = Arc::new(ListenerStats::default());
    let acceptor = Acceptor {
        listener,
        local: local_addr,
        places: Arc::new(Places {
            name,
            limits,
            by_source: Mutex::new((0, HashMap::new())),
            stats: stats.clone(),
        }),
        backoff: BACKOFF_MIN,
        last_refusal_log: None,
        last_error_log: None,
    };
    let incoming = futures::stream::unfold(acceptor, |mut a| async move {
        let conn = a.next().await;
        Some((Ok(conn), a))
    });
    Bounded {
        local_addr,
        stats,
        incoming: Box::pin(incoming),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    async fn closed_at_once(s: &mut tokio::net::TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    async fn connect_from(src: &str, to: SocketAddr) -> tokio::net::TcpStream {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
        sock.connect(to).await.unwrap()
    }

    #[tokio::test]
    async fn caps_per_source_and_per_listener_close_the_excess_and_free_on_drop() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut b = bounded(
            l,
            "test",
            ListenerLimits {
                max: 5,
                per_source: 3,
            },
        )
        .unwrap();
        let addr = b.local_addr;
        let stats = b.stats.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(c)) = b.incoming.next().await {
                tx.send(c).unwrap();
            }
        });
        // Four from one address: the fourth is closed at once.
        let mut from_a = Vec::new();
        for _ in 0..4 {
            from_a.push(connect_from("127.0.0.2", addr).await);
        }
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(rx.recv().await.unwrap());
        }
        assert!(closed_at_once(&mut from_a[3]).await);
        for s in &mut from_a[..3] {
            assert!(!closed_at_once(s).await, "admitted ones stay open");
        }
        // Another address gets the two places left, then the listener is full.
        let mut from_b = Vec::new();
        for _ in 0..3 {
            from_b.push(connect_from("127.0.0.3", addr).await);
        }
        for _ in 0..2 {
            held.push(rx.recv().await.unwrap());
        }
        assert!(closed_at_once(&mut from_b[2]).await);
        assert_eq!(stats.open(), 5);
        assert_eq!(stats.refused(), 2);
        // A place given back is a place for the next one.
        drop(held.remove(0));
        let _c = connect_from("127.0.0.4", addr).await;
        held.push(rx.recv().await.unwrap());
        assert_eq!(stats.open(), 5);
        assert_eq!(stats.admitted(), 6);
        drop(held);
        assert_eq!(stats.open(), 0);
    }

    /// Fails every accept with EMFILE, noting when each was tried.
    struct OutOfDescriptors(Arc<Mutex<Vec<tokio::time::Instant>>>);

    impl Accept for OutOfDescriptors {
        type Stream = tokio::net::TcpStream;
        async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
            self.0.lock().unwrap().push(tokio::time::Instant::now());
            Err(io::Error::from_raw_os_error(24))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_instead_of_spinning() {
        let tries = Arc::new(Mutex::new(Vec::new()));
        let mut b = bounded_from(
            OutOfDescriptors(tries.clone()),
            "127.0.0.1:1".parse().unwrap(),
            "test",
            ListenerLimits {
                max: 1,
                per_source: 1,
            },
        );
        let start = tokio::time::Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(10), b.incoming.next()).await;
        let tries = tries.lock().unwrap();
        // 5 ms doubling to 1 s: 5+10+...+640 ms is 1.3 s in 8 tries, then
        // one a second: about 17 in 10 s, not millions.
        assert!((12..=20).contains(&tries.len()), "{} tries", tries.len());
        let gaps: Vec<_> = tries.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert_eq!(*gaps.last().unwrap(), BACKOFF_MAX);
        assert_eq!(b.stats.accept_errors(), tries.len() as u64);
        assert!(tries[0] - start < Duration::from_millis(1));
    }

    #[test]
    fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
