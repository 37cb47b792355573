//! In-process clusters for tests, benchmarks and simulations: real nodes,
//! real gRPC on loopback, real sled directories in a temporary directory.
//! Kept in the library (not copied per test file) so integration tests and
//! `benches/` start clusters exactly the same way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{Node, NodeConfig, NodeInfo, RaftSettings};

/// A cluster of in-process nodes. Nodes are numbered from 1; a killed node
/// is `None` until restarted at the same address and data directory.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub configs: Vec<NodeConfig>,
    pub nodes: Vec<Option<Node>>,
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

/// Free loopback ports, found by binding port 0. Kept for the life of the
/// cluster so a restarted node comes back at the same address.
fn free_ports(n: usize) -> Vec<SocketAddr> {
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap()).collect()
}

impl TestCluster {
    pub async fn start(n: usize, settings: RaftSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let configs: Vec<NodeConfig> = free_ports(n)
            .into_iter()
            .enumerate()
            .map(|(i, addr)| NodeConfig {
                node_id: i as u64 + 1,
                listen: addr,
                advertise: None,
                data_dir: dir.path().join(format!("node{}", i + 1)),
                region: format!("region-{}", i % 3),
                zone: format!("zone-{i}"),
                raft: settings.clone(),
                propose_timeout: Duration::from_secs(3),
                tls: None,
            })
            .collect();
        let mut nodes = Vec::new();
        for c in &configs {
            nodes.push(Some(Node::start(c.clone()).await.unwrap()));
        }
        let c = TestCluster {
            dir,
            configs,
            nodes,
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

    pub fn node(&self, id: u64) -> &Node {
        self.nodes[(id - 1) as usize]
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is down"))
    }

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
    }

    pub async fn restart(&mut self, id: u64) {
        assert!(
            self.nodes[(id - 1) as usize].is_none(),
            "node {id} is running"
        );
        let cfg = self.configs[(id - 1) as usize].clone();
        self.nodes[(id - 1) as usize] = Some(Node::start(cfg).await.unwrap());
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
