//! # quorumca-agent: the rotation agent
//!
//! Owns keeping a host's certificates fresh without ever blocking its
//! traffic: declarative intents ([`config`]) become host-generated keys
//! and CSRs ([`keys`]), first certificates through a join token, renewals
//! over mTLS with the certificate being renewed, paired atomic writes with
//! the prior version kept ([`store`]), reload hooks ([`reload`]), the
//! trust bundle followed as it changes, and a status file plus metrics
//! ([`status`]).
//!
//! The rule everything here serves: a valid certificate is never deleted
//! or replaced by anything but a newer valid one for the same names. When
//! the cluster cannot be reached the agent keeps what it has, backs off,
//! and tries again through the client's failover.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod keys;
pub mod reload;
pub mod status;
pub mod store;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use quorumca_client::{Client, ClientConfig, Credentials, Endpoint};
use quorumca_proto as pb;
use rand::Rng;

use crate::config::{parse_mode, AgentConfig, Intent};
use crate::status::{IntentStatus, RenewalState, Status};
use crate::store::{Pending, Perms, Store, Version};

/// Why the agent cannot go on; each names the part at fault.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable.
    #[error("[agent] {0}")]
    Config(String),
    /// A key cannot be generated, read or matched to its certificate.
    #[error("[agent] key: {0}")]
    Key(String),
    /// A file cannot be read, written or replaced.
    #[error("[agent] files: {0}")]
    Files(String),
    /// The reload command or signal failed.
    #[error("[agent] reload: {0}")]
    Reload(String),
    /// The cluster refused or could not be reached.
    #[error("[agent] cluster: {0}")]
    Cluster(String),
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A running agent: one task per intent, one following the trust bundle,
/// and the metrics endpoint if configured.
pub struct Agent {
    cfg: AgentConfig,
    cluster_ca: Vec<u8>,
    /// Roots from the last trust bundle, trusted beside `cluster_ca`.
    roots: RwLock<Option<String>>,
    /// Forced-renewal markers from the last trust bundle.
    markers: RwLock<Vec<pb::ForceRenewMarker>>,
    /// Per intent: wakes its task for a forced renewal.
    nudges: std::collections::BTreeMap<String, Arc<tokio::sync::Notify>>,
    status: Mutex<Status>,
    /// The node that last answered a renewal or bootstrap. Each of those
    /// builds a new client (it authenticates with the certificate being
    /// renewed), so without this every call would start at the first
    /// endpoint and pay an attempt timeout whenever that node is down.
    last_good: Mutex<Option<String>>,
}

impl Agent {
    /// An agent over `cfg`, reading the cluster's roots from `ca_file`; call `run` to start it.
    pub fn new(cfg: AgentConfig) -> Result<Arc<Self>, AgentError> {
        let cluster_ca = std::fs::read(&cfg.cluster.ca_file).map_err(|e| {
            AgentError::Config(format!(
                "[cluster] ca_file {}: {e}",
                cfg.cluster.ca_file.display()
            ))
        })?;
        quorumca_ca::first_certificate_der(&cluster_ca).map_err(|e| {
            AgentError::Config(format!(
                "[cluster] ca_file {}: {e}",
                cfg.cluster.ca_file.display()
            ))
        })?;
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            AgentError::Config(format!("state_dir {}: {e}", cfg.state_dir.display()))
        })?;
        // Counters survive restarts so metrics stay monotonic.
        let status = Status::read(&cfg.state_dir).unwrap_or_default();
        let nudges = cfg
            .intents
            .iter()
            .map(|i| (i.name.clone(), Arc::new(tokio::sync::Notify::new())))
            .collect();
        Ok(Arc::new(Self {
            cfg,
            cluster_ca,
            roots: RwLock::new(None),
            last_good: Mutex::new(None),
            markers: RwLock::new(Vec::new()),
            nudges,
            status: Mutex::new(status),
        }))
    }

    /// Runs until the process ends. Every write is crash-safe, so ending
    /// it at any moment (a signal, a kill) leaves valid files.
    pub async fn run(self: Arc<Self>) -> Result<(), AgentError> {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(addr) = self.cfg.metrics_listen.clone() {
            let sock: std::net::SocketAddr = addr.parse().map_err(|e| {
                AgentError::Config(format!("metrics_listen {addr}: not ip:port ({e})"))
            })?;
            let listener = quorumca_net::listen::bind(sock)
                .map_err(|e| AgentError::Config(format!("metrics_listen {addr}: {e}")))?;
            // A scraper needs one connection; a few more for people with
            // curl. The timeouts are a node's defaults.
            let listener = quorumca_net::listen::bounded(
                listener,
                "agent-metrics",
                quorumca_net::ListenerLimits {
                    max: 64,
                    per_source: 16,
                },
            )
            .map_err(|e| AgentError::Config(format!("metrics_listen {addr}: {e}")))?;
            let me = self.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let me = me.clone();
                    async move {
                        let text = me.status.lock().expect("status").metrics(now());
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            text,
                        )
                    }
                }),
            );
            let limits =
                quorumca_net::http::HttpLimits::from(&quorumca_net::ConnectionLimits::default());
            tasks.spawn(async move {
                quorumca_net::http::serve(listener.incoming, app, limits, std::future::pending())
                    .await;
                Ok(())
            });
        }
        for intent in self.cfg.intents.clone() {
            let me = self.clone();
            // One intent's trouble (an unwritable directory, say) must not
            // stop the others: it is reported and retried on its own.
            tasks.spawn(async move {
                loop {
                    if let Err(e) = me.clone().keep(intent.clone()).await {
                        tracing::error!(intent = %intent.name, "{e}; retrying in 5 s");
                        me.update(&intent.name, |s| {
                            s.failures += 1;
                            s.last_error = Some(e.to_string());
                        });
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            });
        }
        let me = self.clone();
        tasks.spawn(async move {
            me.follow_bundle().await;
            Ok(())
        });
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(AgentError::Config(format!("agent task: {e}"))),
            }
        }
        Ok(())
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut IntentStatus)) {
        let mut s = self.status.lock().expect("status");
        f(s.intents.entry(name.to_string()).or_default());
        s.updated_at = now();
        if let Err(e) = s.write(&self.cfg.state_dir) {
            tracing::warn!("writing the status file: {e}");
        }
    }

    /// Modes were checked when the config was read; the owner is looked
    /// up again, as the user may have gone since.
    fn perms(intent: &Intent) -> Result<Perms, AgentError> {
        let at = |m: String| AgentError::Config(format!("intent {:?}: {m}", intent.name));
        Ok(Perms {
            key_mode: parse_mode(&intent.key_mode).map_err(at)?,
            cert_mode: parse_mode(&intent.cert_mode).map_err(at)?,
            owner: intent
                .owner
                .as_deref()
                .map(store::resolve_owner)
                .transpose()
                .map_err(at)?,
        })
    }

    /// The roots the agent trusts for the nodes' TLS: the configured ones
    /// and the latest bundle's.
    fn trust_pem(&self) -> Vec<u8> {
        let mut pem = self.cluster_ca.clone();
        if let Some(r) = self.roots.read().expect("roots").as_deref() {
            pem.push(b'\n');
            pem.extend_from_slice(r.as_bytes());
        }
        pem
    }

    fn client(&self, endpoints: &[String], creds: Credentials) -> Result<Client, AgentError> {
        let eps = endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AgentError::Config(e.to_string()))?;
        let mut cfg = ClientConfig::new(eps).credentials(creds);
        if let Some(last) = self.last_good.lock().expect("last good").clone() {
            cfg = cfg.start_at(last);
        }
        if let Some(r) = &self.cfg.cluster.region {
            cfg = cfg.local_region(r.clone());
        }
        cfg.call_timeout = self.cfg.cluster.call_timeout;
        cfg.attempt_timeout = self.cfg.cluster.call_timeout.min(Duration::from_secs(5));
        Client::new(cfg).map_err(|e| AgentError::Config(e.to_string()))
    }

    /// Keeps one intent's certificate fresh, forever.
    async fn keep(self: Arc<Self>, intent: Intent) -> Result<(), AgentError> {
        let store = Store::open(&self.cfg.state_dir, &intent.name)?;
        let name = intent.name.clone();
        // One jitter draw per certificate, so restarts do not re-roll it.
        let mut jitter_of: Option<(String, f64)> = None;
        let mut failures: u32 = 0;
        let mut forced = false;
        let nudge = self.nudges[&name].clone();
        loop {
            let current = match store.current() {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(intent = %name, "the version in place is unreadable ({e}); obtaining a new one");
                    None
                }
            };
            let due = match &current {
                None => now(),
                Some(v) => {
                    store.link_outputs(
                        &intent.key_file,
                        &intent.cert_file,
                        intent.chain_file.as_deref(),
                    )?;
                    let u = match &jitter_of {
                        Some((serial, u)) if *serial == v.info.serial => *u,
                        _ => {
                            let u = rand::thread_rng().gen::<f64>();
                            jitter_of = Some((v.info.serial.clone(), u));
                            u
                        }
                    };
                    // From when we got it, not from the backdated
                    // not_before: with short lifetimes the backdate would
                    // put the renewal point in the past.
                    let start = v.installed_at.clamp(v.info.not_before, v.info.not_after);
                    let due = status::renew_point(
                        start,
                        v.info.not_after,
                        intent.renew_at,
                        intent.jitter,
                        u,
                    );
                    // Never more than one renewal a second, even for a
                    // certificate that arrives already expired (a skewed
                    // clock here or there).
                    due.max(v.installed_at + 1)
                }
            };
            self.update(&name, |s| {
                if let Some(v) = &current {
                    s.serial = Some(v.info.serial.clone());
                    s.not_before = Some(v.info.not_before);
                    s.not_after = Some(v.info.not_after);
                    s.renew_after = Some(due);
                }
                s.state = match &current {
                    None => RenewalState::Missing,
                    Some(v) if v.info.not_after <= now() => RenewalState::Expired,
                    Some(_) if failures > 0 => RenewalState::Retrying,
                    Some(_) => RenewalState::Valid,
                };
            });
            let wait = (due - now()).max(0) as u64;
            if wait > 0 && failures == 0 && !forced {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                    _ = nudge.notified() => {
                        tracing::warn!(intent = %name, "forced renewal requested by the cluster");
                        forced = true;
                    }
                }
                continue;
            }
            self.update(&name, |s| {
                if s.state == RenewalState::Valid {
                    s.state = RenewalState::Renewing;
                }
            });
            match self.obtain(&intent, &store, current.as_ref()).await {
                Ok((v, issuer, replayed, markers_before)) => {
                    failures = 0;
                    forced = false;
                    // Every marker known before the request was committed
                    // before this certificate was issued: it is satisfied.
                    if markers_before > store.force_renew_handled() {
                        store.set_force_renew_handled(markers_before)?;
                    }
                    tracing::info!(intent = %name, serial = %v.info.serial, not_after = v.info.not_after, replayed, "certificate renewed");
                    store.link_outputs(
                        &intent.key_file,
                        &intent.cert_file,
                        intent.chain_file.as_deref(),
                    )?;
                    self.update(&name, |s| {
                        s.renewals += 1;
                        s.consecutive_failures = 0;
                        s.last_error = None;
                        s.last_renewal_at = Some(now());
                        s.next_attempt_at = None;
                        s.issuer = Some(issuer);
                    });
                    if let Some(action) = &intent.reload {
                        if let Err(e) = reload::run(action).await {
                            tracing::warn!(intent = %name, "{e}");
                            self.update(&name, |s| s.reload_failures += 1);
                        }
                    }
                }
                Err(e) => {
                    let wait = status::backoff(
                        failures,
                        self.cfg.cluster.retry_max,
                        rand::thread_rng().gen(),
                    );
                    failures = failures.saturating_add(1);
                    tracing::warn!(intent = %name, "renewal failed, the current certificate stays; retrying in {wait:?}: {e}");
                    self.update(&name, |s| {
                        s.failures += 1;
                        s.consecutive_failures = failures;
                        s.last_error = Some(e.to_string());
                        s.next_attempt_at = Some(now() + wait.as_secs() as i64);
                        s.state = RenewalState::Retrying;
                    });
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One attempt at a new certificate: renewal over mTLS while the
    /// current one is valid, else the bootstrap (join token or bootstrap
    /// credentials). The new key is recorded before the request goes out,
    /// and a request a crash interrupted is resumed, not repeated.
    async fn obtain(
        &self,
        intent: &Intent,
        store: &Store,
        current: Option<&Version>,
    ) -> Result<(Version, String, bool, u64), AgentError> {
        let markers_before = self
            .markers
            .read()
            .expect("markers")
            .iter()
            .map(|m| m.id)
            .max()
            .unwrap_or(0);
        let from_serial = current.map(|v| v.info.serial.clone());
        let pending = match store.load_pending() {
            Some(p) if p.from_serial == from_serial => p,
            _ => {
                let key_pem = match current {
                    Some(v) if intent.reuse_key => v.key_pem.clone(),
                    _ => intent.key_algorithm.generate()?.serialize_pem(),
                };
                let p = Pending {
                    idempotency_key: quorumca_client::new_idempotency_key(),
                    from_serial,
                    key_pem,
                };
                store.save_pending(&p)?;
                p
            }
        };
        let key = rcgen::KeyPair::from_pem(&pending.key_pem)
            .map_err(|e| AgentError::Key(format!("pending key: {e}")))?;
        let csr = keys::csr_for(&key, &intent.dns, &intent.ips, &intent.all_uris())?;
        let lifetime_seconds = intent.lifetime.map(|d| d.as_secs()).unwrap_or(0);
        let cluster = |e: quorumca_client::ClientError| AgentError::Cluster(e.to_string());
        let resp = match current {
            Some(v) if v.info.not_after > now() => {
                let creds = Credentials {
                    ca_pem: self.trust_pem(),
                    cert_pem: v.chain_pem.clone().into_bytes(),
                    key_pem: v.key_pem.clone().into_bytes(),
                };
                let c = self.client(&self.cfg.cluster.endpoints, creds)?;
                let r = c
                    .renew(pb::RenewRequest {
                        csr,
                        lifetime_seconds,
                        idempotency_key: pending.idempotency_key.clone(),
                    })
                    .await;
                self.remember(&c, r.is_ok());
                r.map_err(cluster)?
            }
            _ => {
                self.bootstrap(intent, csr, lifetime_seconds, &pending)
                    .await?
            }
        };
        let v = store.install(
            &pending.key_pem,
            &resp.certificate_pem,
            &resp.chain_pem,
            &store::VersionMeta {
                issuer: resp.issuer.clone(),
                namespace: resp.namespace.clone(),
            },
            Self::perms(intent)?,
        )?;
        store.clear_pending()?;
        Ok((v, resp.issuer, resp.replayed, markers_before))
    }

    /// After a successful call, the node that answered is where the next
    /// one starts.
    fn remember(&self, c: &Client, ok: bool) {
        if ok {
            *self.last_good.lock().expect("last good") = Some(c.current_endpoint().addr.clone());
        }
    }

    async fn bootstrap(
        &self,
        intent: &Intent,
        csr: Vec<u8>,
        lifetime_seconds: u64,
        pending: &Pending,
    ) -> Result<pb::IssueResponse, AgentError> {
        let cluster = |e: quorumca_client::ClientError| AgentError::Cluster(e.to_string());
        if let Some(path) = &intent.join_token_file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                AgentError::Config(format!("join_token_file {}: {e}", path.display()))
            })?;
            let creds = Credentials::server_only(self.trust_pem());
            let c = self.client(&self.cfg.cluster.enroll_endpoints, creds)?;
            let r = c
                .enroll(pb::EnrollRequest {
                    token: token.trim().to_string(),
                    csr,
                    lifetime_seconds,
                })
                .await;
            self.remember(&c, r.is_ok());
            return r.map_err(cluster);
        }
        if let Some(dir) = &intent.bootstrap_credentials {
            let mut creds = Credentials::from_dir(dir)
                .map_err(|e| AgentError::Config(format!("bootstrap_credentials: {e}")))?;
            creds.ca_pem = self.trust_pem();
            let c = self.client(&self.cfg.cluster.endpoints, creds)?;
            let r = c
                .issue(pb::IssueRequest {
                    csr,
                    namespace: intent.namespace.clone().unwrap_or_default(),
                    profile: intent.profile.clone().unwrap_or_default(),
                    lifetime_seconds,
                    idempotency_key: pending.idempotency_key.clone(),
                })
                .await;
            self.remember(&c, r.is_ok());
            return r.map_err(cluster);
        }
        Err(AgentError::Config(format!(
            "intent {:?} has no valid certificate and no way to get a first one: set join_token_file or bootstrap_credentials",
            intent.name
        )))
    }

    /// Follows WatchTrustBundle (authenticated with any certificate the
    /// agent holds) and rewrites every intent's bundle file when the roots
    /// change.
    async fn follow_bundle(self: Arc<Self>) {
        let outputs: Vec<(PathBuf, Perms)> = self
            .cfg
            .intents
            .iter()
            .filter_map(|i| {
                let perms = Self::perms(i)
                    .inspect_err(|e| tracing::error!("trust bundle file not kept: {e}"))
                    .ok()?;
                Some((i.bundle_file.clone()?, perms))
            })
            .collect();
        let mut failures = 0u32;
        let mut next = 0usize;
        loop {
            let Some(creds) = self.any_credentials() else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let eps = &self.cfg.cluster.endpoints;
            let addr = Endpoint::parse(&eps[next % eps.len()])
                .expect("validated")
                .addr;
            next += 1;
            match self.watch_once(&addr, &creds, &outputs).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    tracing::debug!("trust bundle watch on {addr}: {e}");
                    failures = failures.saturating_add(1);
                }
            }
            let wait = status::backoff(
                failures,
                self.cfg.cluster.retry_max,
                rand::thread_rng().gen(),
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Wakes every intent whose certificate a marker it has not handled
    /// names (by issuer and namespace) and that was installed before the
    /// marker (give or take clock skew between here and the cluster).
    fn nudge_forced(&self, markers: &[pb::ForceRenewMarker]) {
        const SKEW_MS: i64 = 5_000;
        for intent in &self.cfg.intents {
            let store = Store::peek(&self.cfg.state_dir, &intent.name);
            let Ok(Some(v)) = store.current() else {
                continue;
            };
            let handled = store.force_renew_handled();
            let hit = markers.iter().any(|m| {
                m.id > handled
                    && (m.issuer.is_empty() || m.issuer == v.meta.issuer)
                    && (m.namespace.is_empty() || m.namespace == v.meta.namespace)
                    && (m.at_ms as i64) + SKEW_MS > v.installed_at * 1000
            });
            if hit {
                self.nudges[&intent.name].notify_one();
            }
        }
    }

    fn any_credentials(&self) -> Option<Credentials> {
        self.cfg.intents.iter().find_map(|i| {
            let v = Store::peek(&self.cfg.state_dir, &i.name).current().ok()??;
            (v.info.not_after > now()).then(|| Credentials {
                ca_pem: self.trust_pem(),
                cert_pem: v.chain_pem.into_bytes(),
                key_pem: v.key_pem.into_bytes(),
            })
        })
    }

    async fn watch_once(
        &self,
        addr: &str,
        creds: &Credentials,
        outputs: &[(PathBuf, Perms)],
    ) -> Result<(), AgentError> {
        let cluster = |e: String| AgentError::Cluster(format!("{addr}: {e}"));
        let ch = quorumca_client::endpoint_for(addr, Some(creds))
            .map_err(|e| cluster(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| cluster(quorumca_client::describe_transport_error(&e)))?;
        let mut stream = pb::authority_service_client::AuthorityServiceClient::new(ch)
            .watch_trust_bundle(pb::GetTrustBundleRequest {})
            .await
            .map_err(|e| cluster(e.message().to_string()))?
            .into_inner();
        while let Some(b) = stream
            .message()
            .await
            .map_err(|e| cluster(e.message().to_string()))?
        {
            let changed = self.roots.read().expect("roots").as_deref() != Some(&b.roots_pem);
            let missing = outputs.iter().any(|(p, _)| !p.exists());
            if changed || missing {
                for (path, perms) in outputs {
                    store::replace_file(
                        path,
                        b.roots_pem.as_bytes(),
                        perms.cert_mode,
                        perms.owner,
                    )?;
                }
                *self.roots.write().expect("roots") = Some(b.roots_pem.clone());
                tracing::info!(version = b.version, "trust bundle written");
            }
            *self.markers.write().expect("markers") = b.force_renew.clone();
            self.nudge_forced(&b.force_renew);
            let mut s = self.status.lock().expect("status");
            if s.bundle_version != b.version || changed {
                s.bundle_version = b.version;
                s.bundle_updated_at = Some(now());
                s.updated_at = now();
                if let Err(e) = s.write(&self.cfg.state_dir) {
                    tracing::warn!("writing the status file: {e}");
                }
            }
        }
        Ok(())
    }
}
