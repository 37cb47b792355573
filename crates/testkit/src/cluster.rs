//! In-process clusters for tests, benchmarks and simulations: real nodes,
//! real gRPC, real sled directories in a temporary directory, on loopback
//! TCP or on [`MemNet`], an in-memory network whose links can be cut.
//! Kept here (not copied per test file) so integration tests and
//! `benches/` start clusters exactly the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

use quorumca_consensus::transport::{Conn, Transport};
use quorumca_consensus::{Node, NodeConfig, NodeInfo, RaftSettings};

/// A cluster of in-process nodes. Nodes are numbered from 1; a killed node
/// is `None` until restarted at the same address and data directory.
pub struct TestCluster {
    /// Holds every node's data directory; removed on drop.
    pub dir: tempfile::TempDir,
    /// Each node's configuration, by id - 1.
    pub configs: Vec<NodeConfig>,
    /// Each node, by id - 1; None while killed.
    pub nodes: Vec<Option<Node>>,
    /// Some: the nodes talk over this in-memory network instead of TCP,
    /// and keep their data on in-memory disks (`configs[i].memory`).
    pub net: Option<MemNet>,
}

/// An in-memory network for in-process nodes: each connection is a pair
/// of tokio pipes. [`MemNet::cut`] severs the links between two nodes
/// (open connections fail, new ones are refused) until [`MemNet::heal`],
/// so partitions can be tested without namespaces or root.
#[derive(Clone, Default)]
pub struct MemNet {
    inner: Arc<Mutex<MemNetInner>>,
}

#[derive(Default)]
struct MemNetInner {
    listeners: BTreeMap<SocketAddr, mpsc::UnboundedSender<io::Result<Conn>>>,
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Every connection opened, by its two ends, with its kill switch.
    links: Vec<(SocketAddr, SocketAddr, Arc<AtomicBool>)>,
}

/// One end of a MemNet connection; fails once its link is severed.
struct Link {
    io: DuplexStream,
    severed: Arc<AtomicBool>,
}

fn severed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "link cut by MemNet")
}

impl AsyncRead for Link {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.severed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.severed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl MemNet {
    /// The transport of the node at `addr`: it accepts what others dial to
    /// `addr`, and dials from `addr`. Registering again (a restart)
    /// replaces the previous listener.
    pub fn transport(&self, addr: SocketAddr) -> Transport {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .lock()
            .expect("memnet")
            .listeners
            .insert(addr, tx);
        let net = self.clone();
        Transport {
            local_addr: addr,
            incoming: Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            dial: Some(Arc::new(move |to: String| {
                let r = net.connect(addr, &to);
                Box::pin(async move { r })
            })),
        }
    }

    fn connect(&self, from: SocketAddr, to: &str) -> io::Result<Conn> {
        let to: SocketAddr = to
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{to}: {e}")))?;
        let mut g = self.inner.lock().expect("memnet");
        if g.cut.contains(&(from, to)) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "link cut by MemNet",
            ));
        }
        let listener =
            g.listeners.get(&to).cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::ConnectionRefused, "nobody listens")
            })?;
        let (a, b) = tokio::io::duplex(256 * 1024);
        let flag = Arc::new(AtomicBool::new(false));
        g.links.push((from, to, flag.clone()));
        let server = Link {
            io: b,
            severed: flag.clone(),
        };
        listener
            .send(Ok(Conn::new(server, Some(to), Some(from))))
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "listener closed"))?;
        Ok(Conn::new(
            Link {
                io: a,
                severed: flag,
            },
            Some(from),
            Some(to),
        ))
    }

    /// Severs every link between `a` and `b`, both ways, until healed.
    pub fn cut(&self, a: SocketAddr, b: SocketAddr) {
        let mut g = self.inner.lock().expect("memnet");
        g.cut.insert((a, b));
        g.cut.insert((b, a));
        for (x, y, flag) in &g.links {
            if (*x == a && *y == b) || (*x == b && *y == a) {
                flag.store(true, Ordering::SeqCst);
            }
        }
        g.links.retain(|(_, _, f)| !f.load(Ordering::SeqCst));
    }

    /// Every link works again (severed connections stay closed; peers
    /// reconnect).
    pub fn heal(&self) {
        self.inner.lock().expect("memnet").cut.clear();
    }
}

/// Settings with short timeouts, for tests that kill leaders often.
pub fn fast_settings() -> RaftSettings {
    RaftSettings {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_every: 10_000,
        keep_after_snapshot: 100,
    }
}

/// Loopback listeners on free ports (port 0). The nodes start on these very
/// listeners: binding, dropping and binding again by number let a test
/// running in parallel take the port in between (seen in CI). The
/// addresses are kept for the life of the cluster so a restarted node comes
/// back at the same one.
fn free_listeners(n: usize) -> Vec<std::net::TcpListener> {
    (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect()
}

async fn start_node(
    cfg: NodeConfig,
    net: Option<&MemNet>,
    listener: Option<std::net::TcpListener>,
) -> Node {
    match (net, listener) {
        (Some(net), _) => {
            let t = net.transport(cfg.listen);
            Node::start_with_transport(cfg, t).await.unwrap()
        }
        (None, Some(l)) => {
            l.set_nonblocking(true).unwrap();
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            Node::start_with_listener(cfg, l).await.unwrap()
        }
        (None, None) => Node::start(cfg).await.unwrap(),
    }
}

impl TestCluster {
    /// Starts `n` nodes over TCP on loopback and waits for a leader.
    pub async fn start(n: usize, settings: RaftSettings) -> Self {
        Self::start_on(n, settings, None).await
    }

    /// Like [`TestCluster::start`], entirely in memory: the nodes talk over
    /// a [`MemNet`] and keep their data on [`MemDisk`](quorumca_storage::MemDisk)s,
    /// which a [`TestCluster::kill`] crashes (unflushed writes are lost).
    pub async fn start_in_memory(n: usize, settings: RaftSettings) -> Self {
        Self::start_on(n, settings, Some(MemNet::default())).await
    }

    async fn start_on(n: usize, settings: RaftSettings, net: Option<MemNet>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listeners = free_listeners(n);
        let configs: Vec<NodeConfig> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| NodeConfig {
                node_id: i as u64 + 1,
                listen: l.local_addr().unwrap(),
                advertise: None,
                data_dir: dir.path().join(format!("node{}", i + 1)),
                region: format!("region-{}", i % 3),
                zone: format!("zone-{i}"),
                raft: settings.clone(),
                propose_timeout: Duration::from_secs(3),
                tls: None,
                memory: net.as_ref().map(|_| quorumca_storage::MemDisk::new()),
                connections: Default::default(),
            })
            .collect();
        let mut nodes = Vec::new();
        for (c, l) in configs.iter().zip(listeners) {
            nodes.push(Some(start_node(c.clone(), net.as_ref(), Some(l)).await));
        }
        let c = TestCluster {
            dir,
            configs,
            nodes,
            net,
        };
        let members: BTreeMap<u64, NodeInfo> = c
            .nodes
            .iter()
            .flatten()
            .map(|n| (n.id(), n.info().clone()))
            .collect();
        c.node(1).initialize(members).await.unwrap();
        c.wait_leader(Duration::from_secs(10)).await;
        c
    }

    /// Node `id`; panics if it is down.
    pub fn node(&self, id: u64) -> &Node {
        self.nodes[(id - 1) as usize]
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is down"))
    }

    /// The nodes that are up.
    pub fn up(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// Stops a node the hard way for an in-process test: its Raft task and
    /// listener end, and everything in memory is dropped. Only what reached
    /// its sled directory survives.
    pub async fn kill(&mut self, id: u64) {
        if let Some(n) = self.nodes[(id - 1) as usize].take() {
            n.shutdown().await;
        }
        if let Some(disk) = &self.configs[(id - 1) as usize].memory {
            disk.crash();
        }
    }

    /// Restarts node `id` at its address and data directory.
    pub async fn restart(&mut self, id: u64) {
        assert!(
            self.nodes[(id - 1) as usize].is_none(),
            "node {id} is running"
        );
        let cfg = self.configs[(id - 1) as usize].clone();
        self.nodes[(id - 1) as usize] = Some(start_node(cfg, self.net.as_ref(), None).await);
    }

    /// With a [`MemNet`]: cuts node `id` off from every other node.
    pub fn isolate(&self, id: u64) {
        let net = self.net.as_ref().expect("isolate needs start_in_memory");
        let me = self.configs[(id - 1) as usize].listen;
        for c in &self.configs {
            if c.node_id != id {
                net.cut(me, c.listen);
            }
        }
    }

    /// The leader the running nodes other than `but` agree on.
    pub async fn wait_leader_among_others(&self, but: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<Option<u64>> = self
                .up()
                .filter(|n| n.id() != but)
                .map(|n| n.status().leader_id)
                .collect();
            if let Some(Some(l)) = leaders.first() {
                if *l != but && leaders.iter().all(|x| *x == Some(*l)) {
                    return *l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the nodes other than {but} agreed on no leader within {timeout:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the running nodes agree on one leader that is running.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<u64> = self.up().filter_map(|n| n.status().leader_id).collect();
            if let Some(&l) = leaders.first() {
                let running = self
                    .up()
                    .any(|n| n.id() == l && n.status().role == "Leader");
                if running && leaders.iter().all(|x| *x == l) && leaders.len() == self.up().count()
                {
                    return l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node has applied at least `index` and all
    /// of them report the same ledger hash.
    pub async fn wait_converged(&self, index: u64, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let st: Vec<_> = self.up().map(|n| n.status()).collect();
            if st.iter().all(|s| s.applied_index >= index) {
                let a = st[0].applied_index;
                if st
                    .iter()
                    .all(|s| s.applied_index == a && s.ledger_hash == st[0].ledger_hash)
                {
                    return st[0].ledger_hash.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge on index {index}: {:?}",
                st.iter()
                    .map(|s| (s.node_id, s.applied_index, &s.ledger_hash[..8]))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
