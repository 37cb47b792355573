//! One QuorumCA node: storage, the openraft instance, the gRPC listener, and
//! the operations callers use (propose, read, membership, status).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, not std's: the same in production, and simulated time in the
// simulation, so deadlines replay with the seed.
use tokio::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::{ChangeMembers, ReadPolicy, ServerState, SnapshotPolicy};
use quorumca_ledger::{Command, Outcome, Proposal, State};
use quorumca_storage::{Archive, LedgerView, LogStore, NodeInfo, StateMachineStore, TypeConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::ConsensusError;
use crate::network::{NetworkFactory, PeerPool};
use crate::wire::{ForwardError, ForwardRequest, ForwardResponse, ForwardResult};

/// The openraft instance of a node, over this crate's type configuration and store.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// Raft timing and log-compaction settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    /// openraft also uses this as the deadline of every heartbeat and
    /// append-entries RPC, so it must exceed the worst round trip between
    /// two nodes: at 100 ms a cross-region link of 80-120 ms each way
    /// never completes an append (found by the link-faults drill).
    pub heartbeat_ms: u64,
    /// The least time without a leader's heartbeat before a follower stands for election.
    pub election_timeout_min_ms: u64,
    /// The most such time; each node picks at random in between.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging
    /// follower catches up from the log rather than a full snapshot.
    pub keep_after_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 250,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_every: 20_000,
            keep_after_snapshot: 1_000,
        }
    }
}

/// Everything needed to start one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: u64,
    /// Address the gRPC listener binds.
    pub listen: SocketAddr,
    /// Address peers and clients use to reach this node; defaults to the
    /// bound listen address.
    pub advertise: Option<String>,
    /// Where the log, the state and snapshots live.
    pub data_dir: PathBuf,
    /// The region this node is in.
    pub region: String,
    /// The zone within the region.
    pub zone: String,
    /// Raft timing and compaction.
    pub raft: RaftSettings,
    /// How long a proposal (or linearizable read) may wait for a leader and
    /// a quorum before failing with UNAVAILABLE.
    pub propose_timeout: Duration,
    /// mTLS between nodes; None for plaintext (in-process tests only: the
    /// binary refuses to run a node without `[tls]` unless told it is
    /// insecure on purpose).
    pub tls: Option<crate::tls::NodeTls>,
    /// Some: keep the log and state on this in-memory disk instead of
    /// `data_dir` (deterministic simulations; see `MemDisk`).
    pub memory: Option<quorumca_storage::MemDisk>,
    /// The Raft listener's connection cap, TLS handshake timeout, and the
    /// HTTP/2 limits of its server (`[connections]` in node.toml).
    pub connections: quorumca_net::ConnectionLimits,
}

/// A member of the cluster as seen in the committed membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub node_id: u64,
    /// Where it is reached and where it stands.
    pub info: NodeInfo,
    /// Whether it votes (false: a learner catching up).
    pub voter: bool,
}

/// This node's view of the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// This node's id.
    pub node_id: u64,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub role: String,
    /// The leader it knows of, if any.
    pub leader_id: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The last index in this node's log.
    pub last_log_index: u64,
    /// The highest index it knows committed.
    pub commit_index: u64,
    /// The highest index applied to its state.
    pub applied_index: u64,
    /// The index its latest snapshot covers.
    pub snapshot_index: u64,
    /// The committed membership.
    pub members: Vec<Member>,
    /// Hash of the ledger state at `applied_index` (hex): equal on every node at one index.
    pub ledger_hash: String,
    /// Unexpired certificates recorded in the ledger.
    pub live_certificates: u64,
}

/// A committed proposal: where it landed and what applying it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Where it landed in the log.
    pub log_index: u64,
    /// What applying it answered (a rejection is an outcome too).
    pub outcome: Outcome,
}

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) info: NodeInfo,
    pub(crate) raft: Raft,
    pub(crate) view: LedgerView,
    pub(crate) pool: PeerPool,
    pub(crate) propose_timeout: Duration,
    pub(crate) log: LogStore,
    batcher: crate::forward::ForwardBatcher,
    group: crate::group::GroupCommit,
}

/// The leader `raft` knows of, with its address and placement.
pub(crate) fn leader_of(raft: &Raft) -> Option<(u64, NodeInfo)> {
    // Borrow, do not clone: this runs on every proposal.
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    let id = m.current_leader?;
    let info = m.membership_config.membership().get_node(&id).cloned()?;
    Some((id, info))
}

/// A running node. Dropping it without [`Node::shutdown`] leaves its tasks
/// running until the runtime stops.
pub struct Node {
    inner: Arc<Inner>,
    addr: SocketAddr,
    archive: Archive,
    /// Behind locks so a node shared as `Arc<Node>` can still be stopped.
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    server: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Node {
    /// Opens the data directory, starts Raft and the gRPC listener. The node
    /// joins whatever cluster its log says it belongs to; a brand-new node
    /// waits to be initialised ([`Node::initialize`]) or added by a leader.
    pub async fn start(cfg: NodeConfig) -> Result<Node, ConsensusError> {
        let listener =
            quorumca_net::listen::bind(cfg.listen).map_err(|source| ConsensusError::Bind {
                addr: cfg.listen,
                source: source.into(),
            })?;
        Self::start_with_listener(cfg, listener).await
    }

    /// Like [`Node::start`] on an already bound listener.
    pub async fn start_with_listener(
        cfg: NodeConfig,
        listener: TcpListener,
    ) -> Result<Node, ConsensusError> {
        let addr = cfg.listen;
        let transport = crate::transport::Transport::tcp(listener, cfg.connections.raft())
            .map_err(|source| ConsensusError::Bind {
                addr,
                source: source.into(),
            })?;
        Self::start_with_transport(cfg, transport).await
    }

    /// Like [`Node::start`] over any [`Transport`](crate::transport::Transport):
    /// the seam that lets tests and simulations choose how connections
    /// arrive and how peers are dialled.
    pub async fn start_with_transport(
        cfg: NodeConfig,
        transport: crate::transport::Transport,
    ) -> Result<Node, ConsensusError> {
        if cfg.node_id == 0 {
            return Err(ConsensusError::Config("node_id must be 1 or more".into()));
        }
        let crate::transport::Transport {
            local_addr: addr,
            incoming,
            dial,
        } = transport;
        let (log, sm) = match &cfg.memory {
            Some(disk) => quorumca_storage::open_in_memory(disk)?,
            None => open_storage(&cfg.data_dir).await?,
        };
        let view = sm.view();
        let archive = sm.archive();
        let raft_config = openraft::Config {
            cluster_name: "quorumca".into(),
            heartbeat_interval: cfg.raft.heartbeat_ms,
            election_timeout_min: cfg.raft.election_timeout_min_ms,
            election_timeout_max: cfg.raft.election_timeout_max_ms,
            install_snapshot_timeout: 30_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.raft.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.raft.keep_after_snapshot,
            // A node that cannot win (cut off, one-way reachable, behind)
            // must not bump its term and depose a working leader; openraft
            // leaves Pre-Vote off unless asked (found by the
            // kill-leader+link-faults drill, where a blackholed node kept
            // deposing the new leader).
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConsensusError::Config(e.to_string()))?;
        let pool = PeerPool::new(cfg.tls.as_ref().map(|t| t.client.clone()), dial);
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(raft_config),
            NetworkFactory {
                pool: pool.clone(),
                append_deadline: Duration::from_millis(cfg.raft.election_timeout_max_ms),
            },
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| ConsensusError::Stopped(e.to_string()))?;
        let info = NodeInfo {
            addr: cfg.advertise.clone().unwrap_or_else(|| addr.to_string()),
            region: cfg.region.clone(),
            zone: cfg.zone.clone(),
        };
        let group =
            crate::group::GroupCommit::start(raft.clone(), cfg.node_id, cfg.propose_timeout);
        let inner = Arc::new(Inner {
            id: cfg.node_id,
            info,
            raft,
            group,
            view,
            batcher: crate::forward::ForwardBatcher::start(pool.clone(), cfg.propose_timeout),
            pool,
            propose_timeout: cfg.propose_timeout,
            log,
        });
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(crate::service::serve(
            inner.clone(),
            incoming,
            cfg.tls.clone(),
            cfg.connections.clone(),
            stopped,
        ));
        tracing::info!(node_id = cfg.node_id, %addr, "node started");
        Ok(Node {
            inner,
            addr,
            archive,
            stop: std::sync::Mutex::new(Some(stop)),
            server: tokio::sync::Mutex::new(Some(server)),
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The address this node's listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What this node puts in the membership config about itself.
    pub fn info(&self) -> &NodeInfo {
        &self.inner.info
    }

    /// The openraft instance, for what needs its internals (its metrics, in tests).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The Cluster gRPC service of this node, for mounting on another
    /// listener (the public API port serves it beside the CA services),
    /// behind `gate` (None: open, for plaintext test clusters).
    pub fn cluster_service(
        &self,
        gate: Option<Arc<dyn crate::tls::ClusterGate>>,
    ) -> crate::pb::cluster_server::ClusterServer<crate::service::ClusterService> {
        crate::pb::cluster_server::ClusterServer::new(crate::service::ClusterService {
            inner: self.inner.clone(),
            gate,
        })
    }

    /// The leader this node knows of (local and cheap; may be stale for an
    /// election timeout).
    pub fn current_leader(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow_watched().current_leader
    }

    /// Resolves when the Raft core has stopped on a fatal error (a log or
    /// state-machine write failed: a full disk, a failing device), with
    /// the error. Such a node still answers but can never commit, apply or
    /// vote again; the server exits so its supervisor restarts it once the
    /// cause is fixed (the full-disk drill found the zombie).
    pub async fn fatal(&self) -> String {
        let mut rx = self.inner.raft.metrics();
        loop {
            if let Err(f) = &rx.borrow_watched().running_state {
                return f.to_string();
            }
            if rx.changed().await.is_err() {
                return "the Raft core is gone".into();
            }
        }
    }

    /// Whether this node believes it is the leader right now.
    pub fn is_leader(&self) -> bool {
        self.current_leader() == Some(self.inner.id)
    }

    /// Records of expired certificates this node has pruned from the ledger.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Bytes the Raft log uses on disk.
    pub fn log_size_on_disk(&self) -> u64 {
        self.inner.log.size_on_disk()
    }

    /// Entries currently in the Raft log (after purges).
    pub fn log_len(&self) -> usize {
        self.inner.log.len()
    }

    /// Creates a new cluster with `members` as its voters. Safe to call on
    /// a node that is already initialised: it then does nothing, which is
    /// what a restarted `quorumca dev` needs.
    pub async fn initialize(&self, members: BTreeMap<u64, NodeInfo>) -> Result<(), ConsensusError> {
        if !members.contains_key(&self.inner.id) {
            return Err(ConsensusError::Config(format!(
                "node {} is not in the initial member list {:?}",
                self.inner.id,
                members.keys().collect::<Vec<_>>()
            )));
        }
        let initialized = self
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| ConsensusError::Stopped(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| ConsensusError::Membership(e.to_string()))
    }

    /// Waits until some node is known as leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, ConsensusError> {
        let m = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader elected")
            .await
            .map_err(|_| {
                ConsensusError::unavailable(format!("no leader elected within {timeout:?}"))
            })?;
        Ok(m.current_leader.expect("checked above"))
    }

    /// Commits a proposal through Raft from any node: a follower forwards it
    /// to the leader, and the caller sees no difference.
    pub async fn propose(&self, p: Proposal) -> Result<Committed, ConsensusError> {
        self.inner.propose(p).await
    }

    /// Reads the applied ledger on this node without contacting anyone.
    /// Fast and possibly stale (by up to the replication lag) on a follower.
    pub fn read_local<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.inner.view.read().state)
    }

    /// A linearizable read from any node: learns the leader's commit index
    /// after it confirmed leadership with a quorum (read index), waits until
    /// this node has applied that far, then reads locally.
    pub async fn read_linearizable<R>(
        &self,
        f: impl FnOnce(&State) -> R,
    ) -> Result<R, ConsensusError> {
        let index = self.inner.read_index().await?;
        self.inner
            .raft
            .wait(Some(self.inner.propose_timeout))
            .applied_index_at_least(Some(index), "read index applied")
            .await
            .map_err(|_| ConsensusError::unavailable("this node is too far behind the leader"))?;
        Ok(self.read_local(f))
    }

    /// Adds a node (as a voter or a learner) from any node: forwarded to the leader. Returns the
    /// new membership.
    pub async fn add_node(
        &self,
        node_id: u64,
        info: NodeInfo,
        voter: bool,
    ) -> Result<Vec<Member>, ConsensusError> {
        self.inner
            .change_membership(ForwardRequest::AddNode {
                node_id,
                info,
                voter,
            })
            .await
    }

    /// Removes a node from the membership, from any node. Returns the new membership.
    pub async fn remove_node(&self, node_id: u64) -> Result<Vec<Member>, ConsensusError> {
        self.inner
            .change_membership(ForwardRequest::RemoveNode { node_id })
            .await
    }

    /// Hands leadership to voter `to` (from any node: forwarded to the
    /// leader) and returns once `to` leads: (leader, term).
    pub async fn transfer_leader(&self, to: u64) -> Result<(u64, u64), ConsensusError> {
        match self
            .inner
            .leader_call(ForwardRequest::TransferLeader { to })
            .await?
        {
            ForwardResponse::Transferred { leader, term } => Ok((leader, term)),
            other => Err(unexpected(other)),
        }
    }

    /// This node's view of the cluster, from local state (no round trip).
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// Stops Raft and the listener and waits until both have let go of the
    /// data directory, so the same directory can be opened again.
    /// Stopping twice is harmless.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let stop = self.stop.lock().expect("stop lock").take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.lock().await.take() {
            let _ = server.await;
        }
    }
}

/// A leader answered with a response of the wrong kind: a peer running an
/// incompatible build. Reported, never a panic.
fn unexpected(other: ForwardResponse) -> ConsensusError {
    ConsensusError::Stopped(format!("the leader sent an unexpected answer: {other:?}"))
}

/// sled takes an exclusive lock on its directory; a node that just shut
/// down in this process may take a moment to release it.
async fn open_storage(
    dir: &std::path::Path,
) -> Result<(LogStore, StateMachineStore), ConsensusError> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match quorumca_storage::open(dir) {
            Ok(s) => return Ok(s),
            Err(e @ quorumca_storage::StorageError::Open { .. }) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "data dir busy, retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Inner {
    fn leader(&self) -> Option<(u64, NodeInfo)> {
        leader_of(&self.raft)
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, info)| Member {
                node_id: *id,
                info: info.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    pub(crate) fn status(&self) -> Status {
        let m = self.raft.metrics().borrow_watched().clone();
        let role = match m.state {
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Learner => "Learner",
            ServerState::Shutdown => "Shutdown",
        };
        let (applied, hash, live) = {
            let a = self.view.read();
            (
                a.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
                hex::encode(a.state.hash()),
                a.state.record_count() as u64,
            )
        };
        Status {
            node_id: self.id,
            role: role.into(),
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: m.cluster_committed.as_ref().map(|l| l.index).unwrap_or(0),
            applied_index: applied,
            snapshot_index: m.snapshot.as_ref().map(|l| l.index).unwrap_or(0),
            members: self.members(),
            ledger_hash: hash,
            live_certificates: live,
        }
    }

    pub(crate) async fn propose(&self, p: Proposal) -> Result<Committed, ConsensusError> {
        match self
            .leader_call(ForwardRequest::Propose(Box::new(p)))
            .await?
        {
            ForwardResponse::Proposed { log_index, outcome } => {
                Ok(Committed { log_index, outcome })
            }
            other => Err(unexpected(other)),
        }
    }

    async fn read_index(&self) -> Result<u64, ConsensusError> {
        match self.leader_call(ForwardRequest::ReadIndex).await? {
            ForwardResponse::ReadIndex { index } => Ok(index),
            other => Err(unexpected(other)),
        }
    }

    /// Runs an AddNode or RemoveNode on the leader; the members after it.
    pub(crate) async fn change_membership(
        &self,
        req: ForwardRequest,
    ) -> Result<Vec<Member>, ConsensusError> {
        match self.leader_call(req).await? {
            ForwardResponse::Membership { members } => Ok(members),
            other => Err(unexpected(other)),
        }
    }

    /// The leader this node currently knows of, without touching the ledger.
    pub(crate) fn leader_id(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Runs `req` on the leader: here if this node leads, otherwise through
    /// the leader's Forward RPC. Retries while leadership is moving, until
    /// the propose timeout; a retry only happens when the request certainly
    /// did not take effect, or when it carries an idempotency key.
    pub(crate) async fn leader_call(
        &self,
        req: ForwardRequest,
    ) -> Result<ForwardResponse, ConsensusError> {
        let deadline = Instant::now() + self.propose_timeout;
        let retry_safe = match &req {
            // A no-op changes nothing, so running it twice is harmless.
            ForwardRequest::Propose(p) => {
                p.idempotency_key.is_some() || matches!(p.command, Command::Noop { .. })
            }
            _ => true,
        };
        let mut backoff = Duration::from_millis(20);
        let mut last_reason = String::from("no leader is known");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ConsensusError::unavailable(format!(
                    "not done within {:?}: {last_reason}",
                    self.propose_timeout
                )));
            }
            let result = match self.leader() {
                Some((id, _)) if id == self.id => self.execute_as_leader(&req, remaining).await,
                Some((id, info)) => {
                    let sent = match &req {
                        ForwardRequest::Propose(p) => {
                            self.batcher
                                .forward(id, &info.addr, (**p).clone(), remaining)
                                .await
                        }
                        _ => self.pool.forward(id, &info.addr, &req, remaining).await,
                    };
                    match sent {
                        Ok(r) => r,
                        Err(status) => {
                            // A connection that could not be opened never
                            // reached the leader, so a retry is safe; anything
                            // else may have been executed.
                            if quorumca_net::never_sent(&status) {
                                Err(ForwardError::NotLeader { leader: None })
                            } else {
                                Err(ForwardError::Ambiguous(format!(
                                    "leader {id} at {} did not answer: {}",
                                    info.addr,
                                    status.message()
                                )))
                            }
                        }
                    }
                }
                None => Err(ForwardError::NotLeader { leader: None }),
            };
            match result {
                Ok(r) => return Ok(r),
                Err(ForwardError::NotLeader { .. }) => {
                    last_reason = "leadership is changing or no leader is elected".into();
                }
                Err(ForwardError::Ambiguous(msg)) if retry_safe => last_reason = msg,
                Err(ForwardError::Ambiguous(msg)) | Err(ForwardError::Unavailable(msg)) => {
                    return Err(ConsensusError::unavailable(format!(
                        "{msg}; the outcome is unknown"
                    )))
                }
                Err(ForwardError::Invalid(msg)) => {
                    return Err(ConsensusError::InvalidArgument(msg))
                }
                Err(ForwardError::Membership(msg)) => return Err(ConsensusError::Membership(msg)),
            }
            let nap = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(nap).await;
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
    }

    /// Commits one proposal on this node, which must be the leader, through
    /// its group commit.
    async fn propose_as_leader(&self, p: &Proposal, timeout: Duration) -> ForwardResult {
        match &p.command {
            Command::Noop { payload } if payload.len() > 1024 => {
                return Err(ForwardError::Invalid(
                    "no-op payload is limited to 1 KiB".into(),
                ));
            }
            // Batches are made here, from proposals; one arriving from
            // outside would nest.
            Command::Batch(_) => {
                return Err(ForwardError::Invalid(
                    "batches are formed by the leader, not proposed".into(),
                ));
            }
            _ => {}
        }
        self.group.commit(p.clone(), timeout).await
    }

    /// Executes a request that must run on the leader. Called locally or by
    /// the Forward RPC handler; never forwards again, so requests cannot loop.
    pub(crate) async fn execute_as_leader(
        &self,
        req: &ForwardRequest,
        timeout: Duration,
    ) -> ForwardResult {
        let not_leader = || ForwardError::NotLeader {
            leader: self.leader().filter(|(id, _)| *id != self.id),
        };
        let timed_out = |what: &str| {
            ForwardError::Ambiguous(format!(
                "{what} not committed within {timeout:?} (is a quorum of voters reachable?)"
            ))
        };
        match req {
            ForwardRequest::Propose(p) => self.propose_as_leader(p, timeout).await,
            ForwardRequest::ProposeBatch(ps) => {
                if ps.len() > crate::forward::MAX_BATCH {
                    return Err(ForwardError::Invalid(format!(
                        "a forwarded batch holds at most {} proposals",
                        crate::forward::MAX_BATCH
                    )));
                }
                // All at once: openraft appends them as one batch.
                let results = futures::future::join_all(
                    ps.iter().map(|p| self.propose_as_leader(p, timeout)),
                )
                .await;
                Ok(ForwardResponse::ProposedBatch(results))
            }
            ForwardRequest::ReadIndex => {
                match tokio::time::timeout(
                    timeout,
                    self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
                )
                .await
                {
                    Err(_) => Err(ForwardError::Unavailable(format!(
                        "leadership not confirmed by a quorum within {timeout:?}"
                    ))),
                    Ok(Ok(read)) => Ok(ForwardResponse::ReadIndex {
                        index: read.index(),
                    }),
                    Ok(Err(e)) => match e.forward_to_leader() {
                        Some(_) => Err(not_leader()),
                        None => Err(ForwardError::Unavailable(e.to_string())),
                    },
                }
            }
            ForwardRequest::AddNode {
                node_id,
                info,
                voter,
            } => {
                if info.addr.is_empty() || info.region.is_empty() || info.zone.is_empty() {
                    return Err(ForwardError::Invalid(
                        "a new node needs an address, a region and a zone".into(),
                    ));
                }
                if *node_id == 0 {
                    return Err(ForwardError::Invalid("node_id must be 1 or more".into()));
                }
                let add = async {
                    self.raft.add_learner(*node_id, info.clone(), true).await?;
                    if *voter {
                        self.raft
                            .change_membership(
                                ChangeMembers::AddVoterIds(BTreeSet::from([*node_id])),
                                false,
                            )
                            .await?;
                    }
                    Ok::<_, openraft::errors::RaftError<TypeConfig, ClientWriteError<TypeConfig>>>(
                        (),
                    )
                };
                self.membership_result(
                    tokio::time::timeout(timeout, add).await,
                    &timed_out,
                    &not_leader,
                )
            }
            ForwardRequest::TransferLeader { to } => {
                let is_voter = self
                    .raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == *to);
                if !is_voter {
                    return Err(ForwardError::Membership(format!(
                        "node {to} is not a voter; only a voter can lead"
                    )));
                }
                if *to == self.id {
                    let term = self.raft.metrics().borrow_watched().current_term;
                    return Ok(ForwardResponse::Transferred { leader: *to, term });
                }
                self.raft
                    .trigger()
                    .transfer_leader(*to)
                    .await
                    .map_err(|e| ForwardError::Unavailable(e.to_string()))?;
                let m = self
                    .raft
                    .wait(Some(timeout))
                    .metrics(|m| m.current_leader == Some(*to), "leadership transferred")
                    .await
                    .map_err(|_| {
                        ForwardError::Unavailable(format!(
                            "node {to} did not take over within {timeout:?} (is it caught up and reachable?)"
                        ))
                    })?;
                Ok(ForwardResponse::Transferred {
                    leader: *to,
                    term: m.current_term,
                })
            }
            ForwardRequest::RemoveNode { node_id } => {
                let known = self.members().iter().any(|m| m.node_id == *node_id);
                if !known {
                    return Err(ForwardError::Membership(format!(
                        "node {node_id} is not a member of this cluster"
                    )));
                }
                let remove = async {
                    let m = self.raft.metrics().borrow_watched().clone();
                    if m.membership_config
                        .membership()
                        .voter_ids()
                        .any(|v| v == *node_id)
                    {
                        self.raft
                            .change_membership(
                                ChangeMembers::RemoveVoters(BTreeSet::from([*node_id])),
                                false,
                            )
                            .await?;
                    } else {
                        self.raft
                            .change_membership(
                                ChangeMembers::RemoveNodes(BTreeSet::from([*node_id])),
                                false,
                            )
                            .await?;
                    }
                    Ok::<_, openraft::errors::RaftError<TypeConfig, ClientWriteError<TypeConfig>>>(
                        (),
                    )
                };
                self.membership_result(
                    tokio::time::timeout(timeout, remove).await,
                    &timed_out,
                    &not_leader,
                )
            }
        }
    }

    fn membership_result(
        &self,
        r: Result<
            Result<(), openraft::errors::RaftError<TypeConfig, ClientWriteError<TypeConfig>>>,
            tokio::time::error::Elapsed,
        >,
        timed_out: &dyn Fn(&str) -> ForwardError,
        not_leader: &dyn Fn() -> ForwardError,
    ) -> ForwardResult {
        match r {
            Err(_) => Err(timed_out("membership change")),
            Ok(Ok(())) => Ok(ForwardResponse::Membership {
                members: self.members(),
            }),
            Ok(Err(e)) => match e.into_api_error() {
                Some(ClientWriteError::ForwardToLeader(_)) => Err(not_leader()),
                Some(other) => Err(ForwardError::Membership(other.to_string())),
                None => Err(ForwardError::Unavailable(
                    "the Raft node is shutting down".into(),
                )),
            },
        }
    }
}

/// Where wall time comes from when not the system clock: a simulation
/// sets its virtual clock here, once per process, so leases, proposal
/// times and expiry follow simulated time.
static CLOCK: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Replaces the wall clock of [`now_ms`] for this whole process (false if
/// one was set already). For simulations only.
pub fn set_clock(clock: fn() -> u64) -> bool {
    CLOCK.set(clock).is_ok()
}

/// Unix milliseconds, for stamping proposals at the edge of the system.
pub fn now_ms() -> u64 {
    if let Some(clock) = CLOCK.get() {
        return clock();
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
