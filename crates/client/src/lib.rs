//! # quorumca-client: talking to a QuorumCA cluster from Rust
//!
//! Owns the client side of the public API: which node to ask, what to do
//! when it does not answer, and making retries safe. It decides nothing
//! about certificates (the cluster does).
//!
//! - **Endpoints by region**: the local region's nodes are tried first, the
//!   others after, so a regional outage fails over to another region.
//! - **Sticky with failover**: calls go to the node that last answered;
//!   on UNAVAILABLE, a deadline or a transport error the next node is tried,
//!   and the move is logged (a warning naming both nodes and why).
//! - **Failures by cause** ([`LinkFailure`]): nothing listening, a client
//!   certificate missing or refused, a server not trusted, not a node, not
//!   TLS, told apart by type. A cause every node would share (credentials,
//!   roots, a wrong address) is returned at once as
//!   [`ClientError::Unreachable`] instead of retried until the deadline.
//! - **Backoff with full jitter** between attempts, and a **circuit
//!   breaker** per endpoint: after consecutive failures a node is skipped
//!   for a cool-down, then tried again.
//! - **Deadlines**: each attempt and each call as a whole are bounded.
//! - **Idempotent retries**: every `issue`, `renew` and `revoke` carries an
//!   idempotency key (generated when the caller gives none), so a retry
//!   after a lost answer gets the first answer back and never issues twice.
//!   The cluster scopes keys to the caller's identity.
//! - **mTLS**: [`Credentials`] (a bundle directory: `ca.pem`, `cert.pem` or
//!   `chain.pem`, `key.pem`) authenticate the client; the cluster maps its
//!   identity to roles.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quorumca_client::ClientError> {
//! use quorumca_client::{Client, ClientConfig, Credentials, Endpoint};
//! use quorumca_proto::IssueRequest;
//!
//! let client = Client::new(
//!     ClientConfig::new(vec![
//!         Endpoint::parse("eu-west=10.0.0.1:7201")?,
//!         Endpoint::parse("us-east=10.1.0.1:7201")?,
//!     ])
//!     .local_region("eu-west")
//!     .credentials(Credentials::from_dir(std::path::Path::new("/etc/myapp/quorumca"))?),
//! )?;
//! let issued = client
//!     .issue(IssueRequest {
//!         csr: std::fs::read("req.pem").unwrap(),
//!         namespace: "payments".into(),
//!         profile: "service".into(),
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{}", issued.chain_pem);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod breaker;

pub use quorumca_net::{diagnose, LinkFailure};

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quorumca_proto as pb;
use quorumca_proto::authority_service_client::AuthorityServiceClient;
use quorumca_proto::certificate_service_client::CertificateServiceClient;
use quorumca_proto::policy_service_client::PolicyServiceClient;
use rand::Rng;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::breaker::Breaker;

/// One node's public API address, and its region if known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` of the node's public API.
    pub addr: String,
    /// Its region, when the endpoint was written `region=host:port`.
    pub region: Option<String>,
}

impl Endpoint {
    /// `host:port`, or `region=host:port`.
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let (region, addr) = match s.split_once('=') {
            Some((r, a)) => (Some(r.trim().to_string()), a.trim()),
            None => (None, s.trim()),
        };
        let ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok || region.as_deref() == Some("") {
            return Err(ClientError::Endpoint(format!(
                "{s:?} is not host:port or region=host:port"
            )));
        }
        Ok(Self {
            addr: addr.to_string(),
            region,
        })
    }
}

/// How the client behaves; [`ClientConfig::new`] gives production defaults.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The nodes to try; any one that answers will do.
    pub endpoints: Vec<Endpoint>,
    /// Endpoints of this region are tried first.
    pub local_region: Option<String>,
    /// How long opening a connection to one node may take.
    pub connect_timeout: Duration,
    /// Deadline of one attempt on one node.
    pub attempt_timeout: Duration,
    /// Deadline of a whole call, retries included.
    pub call_timeout: Duration,
    /// Backoff before retry n is uniform in [0, min(max, base * 2^n)].
    pub backoff_base: Duration,
    /// The most any one backoff waits.
    pub backoff_max: Duration,
    /// Consecutive failures that open a node's breaker, and how long it
    /// stays open before the node is tried again.
    pub breaker_failures: u32,
    /// How long an open breaker keeps a node out of rotation.
    pub breaker_cooldown: Duration,
    /// mTLS credentials; None dials plaintext (only clusters that run with
    /// `insecure_plaintext` accept that).
    pub credentials: Option<Credentials>,
    /// The address the first call goes to, when it is one of `endpoints`;
    /// failover then goes on in the usual order. For a client that replaces
    /// another (a renewal's client authenticates with the certificate being
    /// renewed, so each renewal builds a new one): starting where the last
    /// client succeeded spares every new client an attempt timeout while the
    /// first endpoint is down.
    pub start_at: Option<String>,
}

/// A credential bundle: the cluster's roots and this client's certificate
/// and key, PEM. `quorumca dev` writes one to `dev-data/admin/`.
#[derive(Clone)]
pub struct Credentials {
    /// The cluster's root certificates: the server must chain to one and present a node identity.
    pub ca_pem: Vec<u8>,
    /// This client's certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads `ca.pem`, `cert.pem` and `key.pem` from a bundle directory
    /// (what `QUORUMCA_CREDENTIALS` names). A `chain.pem` (leaf first, then
    /// intermediates), as `quorumca issue --out-dir` writes, is presented
    /// instead of `cert.pem` when present: a leaf signed by an
    /// intermediate needs it to chain to the roots.
    pub fn from_dir(dir: &std::path::Path) -> Result<Self, ClientError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| {
                ClientError::Endpoint(format!(
                    "credential bundle {}: cannot read {name} ({e}); a bundle holds ca.pem, cert.pem and key.pem",
                    dir.display()
                ))
            })
        };
        let cert = if dir.join("chain.pem").exists() {
            "chain.pem"
        } else {
            "cert.pem"
        };
        Ok(Self {
            ca_pem: read("ca.pem")?,
            cert_pem: read(cert)?,
            key_pem: read("key.pem")?,
        })
    }

    /// The TLS settings of a connection to a node: trust the cluster's
    /// roots, accept only a node's certificate (root-signed, for
    /// `spiffe://<td>/node/<id>` of this certificate's trust domain), and
    /// present this certificate if there is one.
    pub fn tls_config(&self) -> Result<Arc<quorumca_net::node_tls::TlsClientConfig>, ClientError> {
        use quorumca_net::node_tls::{client_config, trust_domain_of, ClientIdentity, Expect};
        let identity = (!self.cert_pem.is_empty()).then(|| ClientIdentity {
            chain_pem: &self.cert_pem,
            key_pem: &self.key_pem,
        });
        let expect = Expect::AnyNode {
            trust_domain: trust_domain_of(&self.cert_pem),
        };
        client_config(&self.ca_pem, expect, identity)
            .map_err(|e| ClientError::Endpoint(format!("credential bundle: {e}")))
    }

    /// Trusts `ca_pem` and presents no certificate: for the enrolment port,
    /// where a workload without a certificate yet redeems a join token.
    pub fn server_only(ca_pem: Vec<u8>) -> Self {
        Self {
            ca_pem,
            cert_pem: Vec::new(),
            key_pem: Vec::new(),
        }
    }

    /// An endpoint for `addr` (host:port): TLS with these credentials,
    /// checking that the server is a node.
    pub fn endpoint(&self, addr: &str) -> Result<NodeEndpoint, ClientError> {
        Ok(NodeEndpoint {
            endpoint: plain_endpoint(addr)?,
            tls: Some(self.tls_config()?),
            failures: Default::default(),
        })
    }
}

fn plain_endpoint(addr: &str) -> Result<tonic::transport::Endpoint, ClientError> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ClientError::Endpoint(format!("{addr}: {e}")))
}

/// A node's address and how to reach it: plaintext (clusters that run
/// with `insecure_plaintext`), or TLS that checks the server is a node.
/// tonic's own TLS settings cannot check more than the chain and the host
/// name, so TLS is done by our connector and tonic sees `http://`.
#[derive(Clone)]
pub struct NodeEndpoint {
    endpoint: tonic::transport::Endpoint,
    tls: Option<Arc<quorumca_net::node_tls::TlsClientConfig>>,
    /// Why this endpoint's connections failed, left by their readers.
    failures: quorumca_net::FailureSlot,
}

impl NodeEndpoint {
    /// How long opening a connection may take.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.endpoint = self.endpoint.connect_timeout(d);
        self
    }

    /// Deadline of each request on channels from this endpoint.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.endpoint = self.endpoint.timeout(d);
        self
    }

    /// Whether to send small writes at once (Nagle off).
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.endpoint = self.endpoint.tcp_nodelay(on);
        self
    }

    /// HTTP/2 pings every `d`, for long-lived streams (a watch) that must
    /// notice a vanished node.
    pub fn http2_keep_alive_interval(mut self, d: Duration) -> Self {
        self.endpoint = self.endpoint.http2_keep_alive_interval(d);
        self
    }

    /// How long to wait for a keep-alive ping's answer before the connection counts as dead.
    pub fn keep_alive_timeout(mut self, d: Duration) -> Self {
        self.endpoint = self.endpoint.keep_alive_timeout(d);
        self
    }

    /// Connects now; a server that is not a node fails here, and
    /// [`describe_transport_error`] says what it presented.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => {
                self.endpoint
                    .connect_with_connector(quorumca_net::tcp_connector(self.failures.clone()))
                    .await
            }
            Some(tls) => {
                self.endpoint
                    .connect_with_connector(quorumca_net::node_tls::connector(
                        tls.clone(),
                        self.failures.clone(),
                    ))
                    .await
            }
        }
    }

    /// Where this endpoint's connections leave why they failed: a request
    /// on a connection that died after its handshake only sees "broken
    /// pipe", and this says it was, say, a refused client certificate.
    pub fn failures(&self) -> quorumca_net::FailureSlot {
        self.failures.clone()
    }

    /// A channel that connects on first use (and again after a failure).
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            None => self
                .endpoint
                .connect_with_connector_lazy(quorumca_net::tcp_connector(self.failures.clone())),
            Some(tls) => {
                self.endpoint
                    .connect_with_connector_lazy(quorumca_net::node_tls::connector(
                        tls.clone(),
                        self.failures.clone(),
                    ))
            }
        }
    }
}

/// An endpoint for `addr`, over TLS that checks for a node when
/// `credentials` are given, plaintext without.
pub fn endpoint_for(
    addr: &str,
    credentials: Option<&Credentials>,
) -> Result<NodeEndpoint, ClientError> {
    match credentials {
        Some(c) => c.endpoint(addr),
        None => Ok(NodeEndpoint {
            endpoint: plain_endpoint(addr)?,
            tls: None,
            failures: Default::default(),
        }),
    }
}

/// What went wrong with a connection, as a person reads it: "transport
/// error" is all tonic's Display says; the cause (here, a server that is
/// not a node, naming what it presented) is in the source chain.
pub fn describe_transport_error(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(n) = quorumca_net::node_tls::not_a_node(e) {
        return n.to_string();
    }
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// A failed call's message, with the transport cause when the call never
/// reached a server.
fn describe_status(s: &Status) -> String {
    match std::error::Error::source(s) {
        Some(src) => describe_transport_error(src),
        None => s.message().to_string(),
    }
}

impl ClientConfig {
    /// Production defaults over `endpoints`: 1 s to connect, 10 s per attempt, 30 s per call.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints,
            local_region: None,
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(5),
            credentials: None,
            start_at: None,
        }
    }

    /// Dials with mTLS under these credentials.
    pub fn credentials(mut self, c: Credentials) -> Self {
        self.credentials = Some(c);
        self
    }

    /// Tries this region's endpoints first.
    pub fn local_region(mut self, region: impl Into<String>) -> Self {
        self.local_region = Some(region.into());
        self
    }

    /// See [`ClientConfig::start_at`]; an address that is not one of the
    /// endpoints is ignored.
    pub fn start_at(mut self, addr: impl Into<String>) -> Self {
        self.start_at = Some(addr.into());
        self
    }
}

/// Why a call failed, and what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with an error that retrying will not fix; the
    /// message says what to change.
    #[error("{message} ({code:?})")]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// A node could not be reached for a reason every node would share:
    /// this client's credentials or roots do not fit the cluster, or the
    /// address is not a node's. Returned at once; retrying cannot help.
    #[error("{addr}: {why}")]
    Unreachable {
        /// The endpoint that failed.
        addr: String,
        /// Why, by type.
        why: LinkFailure,
    },
    /// Every attempt failed with a retryable error until the call deadline.
    #[error("no node answered within {} ({attempts} attempts); last error: {last}", humantime::format_duration(*timeout))]
    Exhausted {
        /// The call's deadline.
        timeout: Duration,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
        /// Why the last attempt failed, when the error chain says (e.g.
        /// nothing listening).
        cause: Option<LinkFailure>,
    },
    /// An endpoint is not `host:port` or `region=host:port`.
    #[error("bad endpoint: {0}")]
    Endpoint(String),
}

impl ClientError {
    /// The gRPC code, when the cluster gave one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

struct Node {
    endpoint: Endpoint,
    channel: Channel,
    failures: quorumca_net::FailureSlot,
    breaker: Mutex<Breaker>,
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls made.
    pub calls: u64,
    /// Attempts made, retries included.
    pub attempts: u64,
    /// Times a call moved to another node.
    pub failovers: u64,
}

/// A failover client over every endpoint: a call sticks to the node that answered last, and moves
/// on when it fails with an error another node might not have.
pub struct Client {
    cfg: ClientConfig,
    nodes: Vec<Node>,
    /// Index of the node that answered last: calls stick to it.
    current: AtomicUsize,
    calls: AtomicU64,
    attempts: AtomicU64,
    failovers: AtomicU64,
}

/// Which failures a call may be sent to another node after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The call is idempotent (a read, a write with an idempotency key or
    /// an expected version): any failure that says "try another node"
    /// (UNAVAILABLE, a deadline, a lost answer) is retried.
    Idempotent,
    /// The call must not run twice: it goes to another node only when the
    /// connection to this one could not be opened, so it was never sent.
    /// Any failure after that is returned as it is.
    UnlessSent,
}

impl Retry {
    /// Whether `s` says "try another node" for a call of this kind. A
    /// server that is not a node is never retried: that is an attack or a
    /// wrong address, and the caller is told at once what it presented.
    fn allows(self, s: &Status) -> bool {
        if std::error::Error::source(s)
            .is_some_and(|e| quorumca_net::node_tls::not_a_node(e).is_some())
        {
            return false;
        }
        match self {
            Retry::Idempotent => matches!(
                s.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::Cancelled
                    | Code::Unknown
            ),
            Retry::UnlessSent => quorumca_net::never_sent(s),
        }
    }
}

/// A fresh random idempotency key (128 bits, hex).
pub fn new_idempotency_key() -> String {
    hex::encode(rand::thread_rng().gen::<[u8; 16]>())
}

impl Client {
    /// Builds the client; connections open lazily on first use.
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::Endpoint(
                "no endpoints given (set QUORUMCA_ENDPOINTS or pass --endpoints)".into(),
            ));
        }
        let mut eps = cfg.endpoints.clone();
        // Local region first, keeping the given order within each group.
        eps.sort_by_key(|e| match (&cfg.local_region, &e.region) {
            (Some(l), Some(r)) if l == r => 0,
            _ => 1,
        });
        let nodes = eps
            .into_iter()
            .map(|endpoint| {
                let ep = endpoint_for(&endpoint.addr, cfg.credentials.as_ref())?
                    .connect_timeout(cfg.connect_timeout)
                    .tcp_nodelay(true);
                Ok(Node {
                    endpoint,
                    channel: ep.connect_lazy(),
                    failures: ep.failures(),
                    breaker: Mutex::new(Breaker::default()),
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let first = cfg
            .start_at
            .as_deref()
            .and_then(|a| nodes.iter().position(|n| n.endpoint.addr == a))
            .unwrap_or(0);
        Ok(Self {
            cfg,
            nodes,
            current: AtomicUsize::new(first),
            calls: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
        })
    }

    /// The endpoint calls currently go to.
    pub fn current_endpoint(&self) -> &Endpoint {
        &self.nodes[self.current.load(Ordering::Relaxed) % self.nodes.len()].endpoint
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            calls: self.calls.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
            failovers: self.failovers.load(Ordering::Relaxed),
        }
    }

    /// The node to try next, starting from `from`: the first whose breaker
    /// admits a call; if every breaker is open, the one that reopens first.
    fn pick(&self, from: usize) -> usize {
        let n = self.nodes.len();
        let now = Instant::now();
        (0..n)
            .map(|i| (from + i) % n)
            .find(|&i| self.nodes[i].breaker.lock().expect("breaker").admits(now))
            .unwrap_or_else(|| {
                (0..n)
                    .min_by_key(|&i| self.nodes[i].breaker.lock().expect("breaker").open_until())
                    .expect("at least one node")
            })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .cfg
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cfg.backoff_max);
        cap.mul_f64(rand::thread_rng().gen::<f64>())
    }

    /// Runs `f` against nodes until it succeeds, fails for good, or the
    /// call deadline passes; which failures move on to the next node is
    /// `retry`'s to say.
    async fn call<T, F, Fut>(&self, retry: Retry, f: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.cfg.call_timeout;
        let mut idx = self.pick(self.current.load(Ordering::Relaxed));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.attempts.fetch_add(1, Ordering::Relaxed);
            let node = &self.nodes[idx];
            let left = deadline.saturating_duration_since(Instant::now());
            let budget = self.cfg.attempt_timeout.min(left);
            // A failure left by an earlier connection is not this attempt's.
            node.failures.take();
            let result = match tokio::time::timeout(budget, f(node.channel.clone())).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "{} did not answer within {budget:?}",
                    node.endpoint.addr
                ))),
            };
            let s = match result {
                Ok(v) => {
                    node.breaker.lock().expect("breaker").success();
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(s) => s,
            };
            let mut link = std::error::Error::source(&s)
                .and_then(quorumca_net::diagnose)
                .or_else(|| node.failures.take());
            if link.is_none() && std::error::Error::source(&s).is_some() {
                // The request can fail on its write before the connection's
                // reader has read the server's last words (a TLS alert);
                // give it a moment, on failures only.
                tokio::time::sleep(Duration::from_millis(25)).await;
                link = node.failures.take();
            }
            tracing::debug!(endpoint = %node.endpoint.addr, status = ?s, source = ?std::error::Error::source(&s), ?link, "attempt failed");
            if let Some(why) = link.clone().filter(|l| !l.is_one_node()) {
                return Err(ClientError::Unreachable {
                    addr: node.endpoint.addr.clone(),
                    why,
                });
            }
            if !retry.allows(&s) {
                return Err(ClientError::Status {
                    code: s.code(),
                    message: describe_status(&s),
                });
            }
            let message = match &link {
                Some(l) => l.to_string(),
                None => describe_status(&s),
            };
            node.breaker.lock().expect("breaker").failure(
                Instant::now(),
                self.cfg.breaker_failures,
                self.cfg.breaker_cooldown,
            );
            let nap = self.backoff(attempt - 1);
            if Instant::now() + nap >= deadline {
                return Err(ClientError::Exhausted {
                    timeout: self.cfg.call_timeout,
                    attempts: attempt,
                    last: format!("{}: {message} ({:?})", node.endpoint.addr, s.code()),
                    cause: link,
                });
            }
            tokio::time::sleep(nap).await;
            let next = self.pick((idx + 1) % self.nodes.len());
            // Said where a person sees it: a failover can cost an attempt
            // timeout, and silence for that long reads as a hang.
            if next != idx {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "{}: {message}; failing over to {}",
                    node.endpoint.addr,
                    self.nodes[next].endpoint.addr
                );
            } else {
                tracing::warn!(
                    "{}: {message}; retrying (attempt {})",
                    node.endpoint.addr,
                    attempt + 1
                );
            }
            idx = next;
        }
    }

    /// An idempotent unary RPC through [`Client::rpc`].
    async fn unary<Req, Resp, F, Fut>(&self, req: Req, f: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(Channel, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.rpc(Retry::Idempotent, req, f).await
    }

    /// Any unary RPC of the API with this client's endpoints, failover,
    /// backoff, breakers and deadlines: `f` makes one attempt on the
    /// channel it is given (the request is cloned for each), and `retry`
    /// says which failures may go to another node.
    ///
    /// ```no_run
    /// # async fn demo(client: &quorumca_client::Client) -> Result<(),
    /// quorumca_client::ClientError> {
    /// use quorumca_client::Retry;
    /// use quorumca_proto::cluster_client::ClusterClient;
    /// let status = client
    ///     .rpc(Retry::Idempotent, quorumca_proto::StatusRequest {}, |ch, r| async move {
    ///         ClusterClient::new(ch).status(r).await
    ///     })
    ///     .await?;
    /// println!("leader {:?}", status.leader_id);
    /// # Ok(()) }
    /// ```
    pub async fn rpc<Req, Resp, F, Fut>(
        &self,
        retry: Retry,
        req: Req,
        f: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(Channel, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call(retry, |ch| {
            let attempt = f(ch, req.clone());
            async move { attempt.await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Issues a certificate. Without an idempotency key one is generated, so
    /// the retries this client makes can never issue twice.
    pub async fn issue(&self, mut req: pb::IssueRequest) -> Result<pb::IssueResponse, ClientError> {
        if req.idempotency_key.is_empty() {
            req.idempotency_key = new_idempotency_key();
        }
        self.unary(req, |ch, r| async move {
            CertificateServiceClient::new(ch).issue(r).await
        })
        .await
    }

    /// Renews the certificate this client presents (its credentials must
    /// be that certificate's chain and key): a new certificate with the
    /// same names, namespace and profile. Retries are idempotent.
    pub async fn renew(&self, mut req: pb::RenewRequest) -> Result<pb::IssueResponse, ClientError> {
        if req.idempotency_key.is_empty() {
            req.idempotency_key = new_idempotency_key();
        }
        self.unary(req, |ch, r| async move {
            CertificateServiceClient::new(ch).renew(r).await
        })
        .await
    }

    /// Revokes a certificate, idempotently (a key is generated if absent).
    pub async fn revoke(
        &self,
        mut req: pb::RevokeRequest,
    ) -> Result<pb::RevokeResponse, ClientError> {
        if req.idempotency_key.is_empty() {
            req.idempotency_key = new_idempotency_key();
        }
        self.unary(req, |ch, r| async move {
            CertificateServiceClient::new(ch).revoke(r).await
        })
        .await
    }

    /// Revokes every certificate of a key (idempotent by nature: a repeat
    /// revokes nothing new).
    pub async fn revoke_by_key(
        &self,
        req: pb::RevokeByKeyRequest,
    ) -> Result<pb::RevokeByKeyResponse, ClientError> {
        self.unary(req, |ch, r| async move {
            CertificateServiceClient::new(ch).revoke_by_key(r).await
        })
        .await
    }

    /// One certificate, with its record and revocation status.
    pub async fn get_certificate(
        &self,
        req: pb::GetCertificateRequest,
    ) -> Result<pb::CertificateInfo, ClientError> {
        self.unary(req, |ch, r| async move {
            CertificateServiceClient::new(ch).get_certificate(r).await
        })
        .await
    }

    /// One page of certificates; see [`pb::ListCertificatesRequest`].
    pub async fn list_certificates(
        &self,
        req: pb::ListCertificatesRequest,
    ) -> Result<pb::ListCertificatesResponse, ClientError> {
        self.unary(req, |ch, r| async move {
            CertificateServiceClient::new(ch).list_certificates(r).await
        })
        .await
    }

    /// Redeems a join token for a first certificate (on the enrolment
    /// endpoints, with [`Credentials::server_only`]). Not idempotent: a
    /// token works once, so a retry after a lost answer is refused as
    /// already used.
    pub async fn enroll(&self, req: pb::EnrollRequest) -> Result<pb::IssueResponse, ClientError> {
        self.unary(req, |ch, r| async move {
            pb::enrollment_service_client::EnrollmentServiceClient::new(ch)
                .enroll(r)
                .await
        })
        .await
    }

    /// The cluster's trust bundle: roots, intermediates, cross certificates and its version.
    pub async fn trust_bundle(&self) -> Result<pb::TrustBundle, ClientError> {
        self.unary(pb::GetTrustBundleRequest {}, |ch, r| async move {
            AuthorityServiceClient::new(ch).get_trust_bundle(r).await
        })
        .await
    }

    /// One CRL (full or delta) of an issuer's shard, DER.
    pub async fn crl(&self, req: pb::GetCrlRequest) -> Result<pb::GetCrlResponse, ClientError> {
        self.unary(req, |ch, r| async move {
            AuthorityServiceClient::new(ch).get_crl(r).await
        })
        .await
    }

    /// The current policy (version 0) or one version of it.
    pub async fn policy(&self, version: u64) -> Result<pb::PolicyVersion, ClientError> {
        self.unary(pb::GetPolicyRequest { version }, |ch, r| async move {
            PolicyServiceClient::new(ch).get_policy(r).await
        })
        .await
    }

    /// Applies a policy. Safe to retry only with `expected_version` set: a
    /// retry of a change that already landed is then refused as a version
    /// conflict instead of applying twice.
    pub async fn apply_policy(
        &self,
        req: pb::ApplyPolicyRequest,
    ) -> Result<pb::ApplyPolicyResponse, ClientError> {
        self.unary(req, |ch, r| async move {
            PolicyServiceClient::new(ch).apply_policy(r).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_or_without_region() {
        assert_eq!(
            Endpoint::parse("10.0.0.1:7201").unwrap(),
            Endpoint {
                addr: "10.0.0.1:7201".into(),
                region: None
            }
        );
        assert_eq!(
            Endpoint::parse("eu-west=ca1.example:7201")
                .unwrap()
                .region
                .as_deref(),
            Some("eu-west")
        );
        for bad in ["", "host", "host:", ":7201", "=h:1", "h:99999"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Two regions, interleaved.
    fn four_endpoints() -> Vec<Endpoint> {
        ["us=a:1", "eu=b:2", "us=c:3", "eu=d:4"]
            .iter()
            .map(|s| Endpoint::parse(s).unwrap())
            .collect()
    }

    // Async only because a client needs a runtime to build its channels.
    #[tokio::test]
    async fn local_region_comes_first_and_order_is_otherwise_kept() {
        let c = Client::new(ClientConfig::new(four_endpoints()).local_region("eu")).unwrap();
        let order: Vec<&str> = c.nodes.iter().map(|n| n.endpoint.addr.as_str()).collect();
        assert_eq!(order, ["b:2", "d:4", "a:1", "c:3"]);
        assert!(Client::new(ClientConfig::new(vec![])).is_err());
    }

    #[tokio::test]
    async fn the_first_call_goes_to_start_at_and_failover_keeps_the_order() {
        let first = |cfg: ClientConfig| {
            let c = Client::new(cfg).unwrap();
            let at = c.current_endpoint().addr.clone();
            let next = c.pick(c.current.load(Ordering::Relaxed) + 1);
            (at, c.nodes[next].endpoint.addr.clone())
        };
        // Outside the local region too: that node answered last time.
        let (at, next) = first(
            ClientConfig::new(four_endpoints())
                .local_region("eu")
                .start_at("c:3"),
        );
        assert_eq!((at.as_str(), next.as_str()), ("c:3", "b:2"), "then wraps");
        let (at, _) = first(ClientConfig::new(four_endpoints()).start_at("z:9"));
        assert_eq!(at, "a:1", "an unknown address is ignored");
        let (at, _) = first(ClientConfig::new(four_endpoints()));
        assert_eq!(at, "a:1");
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let c = Client::new(ClientConfig::new(vec![Endpoint::parse("a:1").unwrap()])).unwrap();
        for attempt in 0..40 {
            let cap = Duration::from_millis(50)
                .saturating_mul(1 << attempt.min(16))
                .min(Duration::from_secs(2));
            assert!(c.backoff(attempt) <= cap);
        }
        let samples: std::collections::BTreeSet<_> = (0..20).map(|_| c.backoff(5)).collect();
        assert!(samples.len() > 10, "no jitter: {samples:?}");
    }

    /// A "server" that reads what it is sent and hangs up: every request
    /// reaches it, none is answered.
    async fn swallowing_server() -> u16 {
        use tokio::io::AsyncReadExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for _ in 0..50 {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut got = 0;
                    while got < 60 {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_call_that_may_have_run_is_not_sent_again_unless_idempotent() {
        let port = swallowing_server().await;
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = |ports: &[u16]| {
            let mut cfg = ClientConfig::new(
                ports
                    .iter()
                    .map(|p| Endpoint::parse(&format!("127.0.0.1:{p}")).unwrap())
                    .collect(),
            );
            cfg.call_timeout = Duration::from_millis(1500);
            cfg.attempt_timeout = Duration::from_millis(300);
            cfg.backoff_base = Duration::from_millis(5);
            cfg
        };
        async fn ping(c: &Client, retry: Retry) -> Result<pb::PingResponse, ClientError> {
            c.rpc(
                retry,
                pb::PingRequest { payload: vec![] },
                |ch, r| async move { pb::cluster_client::ClusterClient::new(ch).ping(r).await },
            )
            .await
        }
        // Sent, no answer: UnlessSent stops at the first attempt.
        let c = Client::new(cfg(&[port, port])).unwrap();
        let e = ping(&c, Retry::UnlessSent).await.unwrap_err();
        assert_eq!(c.stats().attempts, 1, "{e}");
        // Idempotent: tried again, on the next node too.
        let c = Client::new(cfg(&[port, port])).unwrap();
        ping(&c, Retry::Idempotent).await.unwrap_err();
        assert!(c.stats().attempts >= 2 && c.stats().failovers >= 1);
        // Never connected: UnlessSent moves on to the next node.
        let c = Client::new(cfg(&[dead, port])).unwrap();
        ping(&c, Retry::UnlessSent).await.unwrap_err();
        let s = c.stats();
        assert_eq!((s.attempts, s.failovers), (2, 1), "{s:?}");
    }

    #[tokio::test]
    async fn unreachable_nodes_fail_over_and_end_in_a_clear_error() {
        // Two ports nobody listens on: every attempt is a transport error.
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let mut cfg = ClientConfig::new(
            ports
                .iter()
                .map(|p| Endpoint::parse(&format!("127.0.0.1:{p}")).unwrap())
                .collect(),
        );
        cfg.call_timeout = Duration::from_millis(600);
        cfg.backoff_base = Duration::from_millis(5);
        let c = Client::new(cfg).unwrap();
        let e = c.trust_bundle().await.unwrap_err();
        assert!(matches!(e, ClientError::Exhausted { .. }), "{e}");
        let s = c.stats();
        assert!(s.attempts >= 2 && s.failovers >= 1, "{s:?}");
    }
}
