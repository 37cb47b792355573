//! Running the public side of one node: the `[api]` section of node.toml,
//! the unseal secret, the gRPC and HTTP listeners, and the background work
//! (CRL rebuilds, pruning of expired records, creating the hierarchy).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quorumca_ca::{Kek, DEFAULT_KDF_ITERATIONS, MIN_SECRET_BYTES};
use quorumca_consensus::Node;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::authority::{Authority, AuthorityConfig};
use crate::grpc::{Services, MAX_REQUEST_BYTES};
use crate::pb;

/// The environment variable holding the unseal secret when node.toml names
/// no file.
pub const UNSEAL_SECRET_ENV: &str = "QUORUMCA_UNSEAL_SECRET";

/// Salt of the KEK derivation. Fixed: every node must derive the same KEK
/// from the same secret before it can read anything from the ledger. The
/// secret itself must be high-entropy (at least `MIN_SECRET_BYTES`).
const KEK_SALT: &[u8] = b"quorumca-kek-v1";

/// The KEK every node derives from the unseal secret: for tools that seal
/// a key before the cluster runs (`quorumca dev`).
pub fn derive_kek(secret: &[u8], iterations: u32) -> Result<Kek, quorumca_ca::SealError> {
    Kek::derive(secret, KEK_SALT, iterations)
}

/// Where the hierarchy comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hierarchy {
    /// The cluster creates a root (its key sealed in the ledger) and one
    /// intermediate per region at first start. For dev and test clusters.
    InternalRoot,
    /// The root lives offline (`quorumca ca init-root`); the cluster does not
    /// create a hierarchy by itself.
    #[default]
    External,
}

fn default_crl_shards() -> u64 {
    16
}
fn default_crl_validity() -> String {
    "24h".into()
}
fn default_lease_block() -> u64 {
    1024
}
fn default_kdf_iterations() -> u32 {
    DEFAULT_KDF_ITERATIONS
}

/// The `[api]` section of node.toml.
///
/// ```toml
/// [api]
/// listen = "127.0.0.1:7201"           # public gRPC API
/// http_listen = "127.0.0.1:7301"      # CRLs, OCSP, CA certificates
/// public_url = "http://ca.example.internal"  # same on every node
/// unseal_secret_file = "/etc/quorumca/unseal.secret"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where the gRPC API listens (`host:port`).
    pub listen: String,
    /// Where the HTTP side listens: CRLs, OCSP, CA certificates.
    pub http_listen: String,
    /// The cluster's public HTTP URL (a load balancer over every node's
    /// `http_listen`), written into certificates as CRL and OCSP URLs. Must
    /// be the same on every node. Defaults to `http://<http_listen>`, which
    /// only suits single-host clusters.
    #[serde(default)]
    pub public_url: Option<String>,
    /// File holding the unseal secret; when absent, the
    /// `QUORUMCA_UNSEAL_SECRET` environment variable is used. Without
    /// either, the node runs but cannot sign.
    #[serde(default)]
    pub unseal_secret_file: Option<PathBuf>,
    /// Whether the cluster makes its own root or installs one made offline.
    #[serde(default)]
    pub hierarchy: Hierarchy,
    /// CRL shards per intermediate, fixed at its creation.
    #[serde(default = "default_crl_shards")]
    pub crl_shards: u64,
    /// How long a CRL is valid (`"24h"`); it is re-signed after half of it.
    #[serde(default = "default_crl_validity")]
    pub crl_validity: String,
    /// Serials per lease: one Raft round trip buys this many issuances.
    #[serde(default = "default_lease_block")]
    pub lease_block: u64,
    /// PBKDF2 iterations of the KEK derivation; the same on every node.
    #[serde(default = "default_kdf_iterations")]
    pub kdf_iterations: u32,
    /// Identities (exact, or a prefix ending in `/*`) that are admins
    /// whatever the policy says: who applies the first policy, and who can
    /// repair a broken one. Keep it to one or two break-glass identities;
    /// grant everyone else roles in the policy's `[[grants]]`.
    #[serde(default)]
    pub admins: Vec<String>,
    /// With `hierarchy = "internal-root"`: a root made before the cluster
    /// started (by `quorumca dev`, which also signed the nodes' TLS
    /// certificates with it), its key sealed under the unseal secret. The
    /// bootstrapping node registers it instead of generating one, so the
    /// TLS roots and the CA's root are the same certificate.
    #[serde(default)]
    pub root_cert_file: Option<PathBuf>,
    /// The sealed key of `root_cert_file`.
    #[serde(default)]
    pub root_sealed_key_file: Option<PathBuf>,
    /// The enrolment port: TLS without client certificates, serving only
    /// join-token enrolment (EnrollmentService). Absent: no enrolment on
    /// this node.
    #[serde(default)]
    pub enroll_listen: Option<String>,
}

/// Why the API side of a node cannot start. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A field of `[api]` is wrong.
    #[error("[api] {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The unseal secret file cannot be read.
    #[error("cannot read the unseal secret from {path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The unseal secret is too short.
    #[error("the unseal secret from {from} is {len} bytes; it must be at least {MIN_SECRET_BYTES} (generate one with `head -c 32 /dev/urandom | base64`)")]
    SecretTooShort {
        /// Where it came from (a file, or the environment variable).
        from: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A listener cannot bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ApiConfig {
    /// Checks every field before anything is bound or read.
    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |field, reason: String| Err(ServeError::Config { field, reason });
        if let Some(v) = &self.enroll_listen {
            if let Err(e) = v.parse::<SocketAddr>() {
                return bad("enroll_listen", format!("must be ip:port, got {v:?} ({e})"));
            }
        }
        for (field, v) in [("listen", &self.listen), ("http_listen", &self.http_listen)] {
            if let Err(e) = v.parse::<SocketAddr>() {
                return bad(field, format!("must be ip:port, got {v:?} ({e})"));
            }
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.ends_with('/') {
                return bad(
                    "public_url",
                    format!("must be an http(s) URL without a trailing slash, got {u:?}"),
                );
            }
        }
        if self.crl_shards == 0 || self.crl_shards > quorumca_ledger::MAX_CRL_SHARDS {
            return bad(
                "crl_shards",
                format!(
                    "must be 1 to {}, got {}",
                    quorumca_ledger::MAX_CRL_SHARDS,
                    self.crl_shards
                ),
            );
        }
        let v = self.crl_validity()?;
        if v.as_secs() < 3600 || v.as_secs() as i64 > quorumca_ca::MAX_CRL_VALIDITY_SECS {
            return bad(
                "crl_validity",
                format!("must be between 1h and 10 days, got {}", self.crl_validity),
            );
        }
        if self.lease_block == 0 || self.lease_block > quorumca_ledger::MAX_LEASE_BLOCK {
            return bad(
                "lease_block",
                format!("must be 1 to {}", quorumca_ledger::MAX_LEASE_BLOCK),
            );
        }
        if self.kdf_iterations < 1_000 {
            return bad("kdf_iterations", "must be at least 1000".into());
        }
        if self.root_cert_file.is_some() != self.root_sealed_key_file.is_some() {
            return bad(
                "root_cert_file",
                "root_cert_file and root_sealed_key_file go together".into(),
            );
        }
        for a in &self.admins {
            if a.is_empty() || a[..a.len() - 1].contains('*') || a.contains(char::is_whitespace) {
                return bad(
                    "admins",
                    format!("{a:?} is not an identity or a prefix ending in /*"),
                );
            }
        }
        Ok(())
    }

    fn crl_validity(&self) -> Result<Duration, ServeError> {
        humantime::parse_duration(&self.crl_validity).map_err(|e| ServeError::Config {
            field: "crl_validity",
            reason: format!("{:?} is not a duration like 24h ({e})", self.crl_validity),
        })
    }

    /// The URL certificates name for CRLs and OCSP: `public_url`, or `http://<http_listen>`.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_listen))
    }

    /// Derives the KEK from the configured secret; None when no secret is
    /// configured (the node will say so whenever it is asked to sign).
    pub fn load_kek(&self) -> Result<Option<Kek>, ServeError> {
        let (secret, from) = match &self.unseal_secret_file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| ServeError::SecretFile {
                    path: path.clone(),
                    source,
                })?;
                (Zeroizing::new(bytes), path.display().to_string())
            }
            None => match std::env::var_os(UNSEAL_SECRET_ENV) {
                Some(v) => (
                    Zeroizing::new(v.into_encoded_bytes()),
                    UNSEAL_SECRET_ENV.to_string(),
                ),
                None => return Ok(None),
            },
        };
        let trimmed = secret.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(ServeError::SecretTooShort {
                from,
                len: trimmed.len(),
            });
        }
        Kek::derive(trimmed, KEK_SALT, self.kdf_iterations)
            .map(Some)
            .map_err(|e| ServeError::Config {
                field: "unseal_secret_file",
                reason: e.to_string(),
            })
    }
}

/// The running API side of a node.
pub struct ApiServer {
    /// The authority its services call.
    pub authority: Arc<Authority>,
    /// The address the gRPC API is bound to (the port chosen, with port 0).
    pub grpc_addr: SocketAddr,
    /// The address the HTTP side is bound to.
    pub http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// The gRPC and HTTP servers: stopped gracefully, within a bound.
    servers: Vec<JoinHandle<()>>,
    /// CRL rebuilds, pruning, hierarchy creation: aborted on shutdown (a
    /// proposal they have in flight either commits or does not; both are
    /// fine), so a node without quorum still stops at once.
    background: Vec<JoinHandle<()>>,
}

/// Binds `addr` and admits its connections under `limits`.
async fn bind(
    addr: &str,
    name: &'static str,
    limits: quorumca_net::ListenerLimits,
) -> Result<quorumca_net::listen::Bounded, ServeError> {
    let addr: SocketAddr = addr.parse().expect("validated");
    let listener =
        quorumca_net::listen::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    quorumca_net::listen::bounded(listener, name, limits)
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Starts the gRPC and HTTP listeners and the background work on `node`.
/// `regions` are the regions to create intermediates for when the config
/// asks for an internal root; only the bootstrapping node passes them.
///
/// With `tls` (the node's credentials) the gRPC port requires client
/// certificates from the cluster's roots and authorises by role; without
/// it, every caller may do everything (in-process tests, and clusters that
/// say `insecure_plaintext = true`).
///
/// Every listener admits connections under `limits` (node.toml's
/// `[connections]`): caps per listener and per source, the TLS handshake
/// timeout, HTTP header and request timeouts, HTTP/2 keepalive and a
/// maximum connection age.
pub async fn serve(
    node: Arc<Node>,
    cfg: &ApiConfig,
    region: &str,
    bootstrap_regions: Option<Vec<String>>,
    tls: Option<&crate::tls::NodeCredentials>,
    limits: &quorumca_net::ConnectionLimits,
) -> Result<ApiServer, ServeError> {
    cfg.validate()?;
    let kek = cfg.load_kek()?;
    if kek.is_none() {
        tracing::warn!(
            "no unseal secret ({UNSEAL_SECRET_ENV} or [api] unseal_secret_file): this node replicates and serves reads but cannot sign"
        );
    }
    let grpc_listener = bind(&cfg.listen, "api", limits.public()).await?;
    let http_listener = bind(&cfg.http_listen, "http", limits.public()).await?;
    let grpc_addr = grpc_listener.local_addr;
    let http_addr = http_listener.local_addr;
    let authority = Arc::new(Authority::new(
        node.clone(),
        kek,
        AuthorityConfig {
            crl_shards: cfg.crl_shards,
            lease_block: cfg.lease_block,
            crl_validity: cfg.crl_validity()?,
            access: match tls {
                Some(_) => crate::auth::Access::Mtls {
                    admins: cfg.admins.clone(),
                },
                None => crate::auth::Access::Open,
            },
            root_files: cfg
                .root_cert_file
                .clone()
                .zip(cfg.root_sealed_key_file.clone()),
            ..AuthorityConfig::new(region, cfg.public_url())
        },
    ));
    let (stop, stopped) = watch::channel(false);
    let mut servers = Vec::new();
    let mut background = Vec::new();

    let services = Services(authority.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    // Reflection in both versions: grpcurl, Postman and Python's
    // grpcio-reflection still speak only v1alpha, and a v1-only server
    // answers them UNIMPLEMENTED.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e: tonic_reflection::server::Error| ServeError::Config {
        field: "listen",
        reason: format!("gRPC reflection: {e}"),
    };
    let reflection = reflection_builder().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(reflection_error)?;
    let mut builder = quorumca_net::grpc::server(limits, quorumca_net::grpc::Role::Public);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.server_config().timeout(limits.handshake_timeout))
            .map_err(|e| ServeError::Config {
                field: "listen",
                reason: format!("TLS: {e}"),
            })?;
    }
    let gate: Option<Arc<dyn quorumca_consensus::ClusterGate>> = match tls {
        Some(_) => Some(Arc::new(crate::auth::Gate(authority.clone()))),
        None => None,
    };
    let grpc = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            pb::certificate_service_server::CertificateServiceServer::new(services.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::authority_service_server::AuthorityServiceServer::new(services.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::policy_service_server::PolicyServiceServer::new(services.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::audit_service_server::AuditServiceServer::new(services.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::token_service_server::TokenServiceServer::new(services.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(node.cluster_service(gate));
    let incoming = grpc_listener.incoming;
    let mut s = stopped.clone();
    servers.push(tokio::spawn(async move {
        let r = grpc
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = s.wait_for(|v| *v).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "public gRPC server stopped");
        }
    }));

    if let Some(addr) = &cfg.enroll_listen {
        let listener = bind(addr, "enroll", limits.public()).await?;
        let mut builder = quorumca_net::grpc::server(limits, quorumca_net::grpc::Role::Public);
        if let Some(tls) = tls {
            builder = builder
                .tls_config(
                    tls.server_config_without_client_auth()
                        .timeout(limits.handshake_timeout),
                )
                .map_err(|e| ServeError::Config {
                    field: "enroll_listen",
                    reason: format!("TLS: {e}"),
                })?;
        }
        let enroll = builder.add_service(
            pb::enrollment_service_server::EnrollmentServiceServer::new(services.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        );
        let incoming = listener.incoming;
        let mut s = stopped.clone();
        servers.push(tokio::spawn(async move {
            let r = enroll
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = s.wait_for(|v| *v).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "enrolment server stopped");
            }
        }));
    }

    let router = crate::http::router(authority.clone());
    let mut s = stopped.clone();
    let http_limits = quorumca_net::http::HttpLimits::from(limits);
    servers.push(tokio::spawn(async move {
        quorumca_net::http::serve(http_listener.incoming, router, http_limits, async move {
            let _ = s.wait_for(|v| *v).await;
        })
        .await;
    }));

    if cfg.hierarchy == Hierarchy::InternalRoot {
        if let Some(regions) = bootstrap_regions {
            let a = authority.clone();
            let mut s = stopped.clone();
            background.push(tokio::spawn(async move {
                bootstrap(&a, &regions, &mut s).await;
            }));
        }
    }
    let a = authority.clone();
    let mut s = stopped.clone();
    background.push(tokio::spawn(async move {
        housekeeping(&a, &mut s).await;
    }));
    let a = authority.clone();
    let mut s = stopped;
    background.push(tokio::spawn(async move {
        report_health(&a, &health, &mut s).await;
    }));
    tracing::info!(%grpc_addr, %http_addr, public_url = %cfg.public_url(), "API serving");
    Ok(ApiServer {
        authority,
        grpc_addr,
        http_addr,
        stop,
        servers,
        background,
    })
}

/// Creates the hierarchy, retrying until the cluster can commit.
async fn bootstrap(a: &Authority, regions: &[String], stopped: &mut watch::Receiver<bool>) {
    let mut delay = Duration::from_millis(200);
    loop {
        match a.bootstrap_hierarchy(regions).await {
            Ok(()) => {
                tracing::info!(?regions, "CA hierarchy ready");
                return;
            }
            Err(e) => tracing::info!(error = %e, "creating the CA hierarchy; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.wait_for(|v| *v) => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The gRPC service names health is reported for.
pub const HEALTH_SERVICES: [&str; 6] = [
    "quorumca.v1.CertificateService",
    "quorumca.v1.AuthorityService",
    "quorumca.v1.PolicyService",
    "quorumca.v1.AuditService",
    "quorumca.v1.TokenService",
    "quorumca.v1.Cluster",
];

/// Keeps `grpc.health.v1` truthful: every second the node proves it can
/// reach a quorum (a read index through the leader, bounded to a second).
/// Without one every service is NOT_SERVING, so load balancers route
/// around a node cut off from the majority; CertificateService is also
/// NOT_SERVING on a node without the unseal secret (it cannot sign).
async fn report_health(
    a: &Authority,
    health: &tonic_health::server::HealthReporter,
    stopped: &mut watch::Receiver<bool>,
) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let mut last = None;
    loop {
        let quorum = matches!(
            tokio::time::timeout(Duration::from_secs(1), a.node().read_linearizable(|_| ())).await,
            Ok(Ok(()))
        );
        let state = (quorum, a.can_sign());
        if last != Some(state) {
            let status = |ok: bool| if ok { Serving } else { NotServing };
            health.set_service_status("", status(quorum)).await;
            for name in HEALTH_SERVICES {
                let ok = quorum && (name != HEALTH_SERVICES[0] || a.can_sign());
                health.set_service_status(name, status(ok)).await;
            }
            tracing::info!(quorum, can_sign = a.can_sign(), "health changed");
            last = Some(state);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped.wait_for(|v| *v) => return,
        }
    }
}

/// Rebuilds changed CRL shards twice a second; the leader retires issuers
/// whose last leaf expired every two seconds and prunes expired records
/// every half minute (an hour after expiry, so each revoked entry
/// still appears on CRLs issued after its certificate expired).
async fn housekeeping(a: &Authority, stopped: &mut watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|v| *v) => return,
        }
        n += 1;
        match a.refresh_crls().await {
            Ok(0) => {}
            Ok(built) => tracing::debug!(built, "CRL shards rebuilt"),
            Err(e) => tracing::debug!(error = %e, "CRL rebuild deferred"),
        }
        if n.is_multiple_of(4) {
            match a.retire_due().await {
                Ok(ids) => {
                    for id in ids {
                        tracing::info!(issuer = %id, "issuer retired (last leaf expired); its key is destroyed");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "retirement deferred"),
            }
        }
        if n.is_multiple_of(60) {
            match a.prune_expired(Duration::from_secs(3600)).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "expired records moved to the archive"),
                Err(e) => tracing::debug!(error = %e, "pruning deferred"),
            }
        }
    }
}

impl ApiServer {
    /// Stops the listeners and background tasks (the node itself is the
    /// caller's to stop).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in &self.background {
            t.abort();
        }
        // Open client connections may keep a graceful shutdown waiting;
        // give them a moment, then cut them.
        for mut t in self.servers {
            if tokio::time::timeout(Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<ApiConfig, String> {
        let text = format!("listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n{extra}");
        let c: ApiConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_safe_and_bad_fields_are_named() {
        let c = cfg("").unwrap();
        assert_eq!(
            c.hierarchy,
            Hierarchy::External,
            "no root in the cluster by default"
        );
        assert_eq!(c.crl_shards, 16);
        assert_eq!(c.kdf_iterations, DEFAULT_KDF_ITERATIONS);
        for (extra, field) in [
            ("crl_shards = 0", "crl_shards"),
            ("crl_validity = \"11days\"", "crl_validity"),
            ("crl_validity = \"soon\"", "crl_validity"),
            ("public_url = \"ca.example\"", "public_url"),
            ("public_url = \"http://ca.example/\"", "public_url"),
            ("kdf_iterations = 10", "kdf_iterations"),
            ("lease_block = 0", "lease_block"),
        ] {
            let e = cfg(extra).unwrap_err();
            assert!(e.contains(field), "{extra}: {e}");
        }
        assert!(cfg("surprise = 1").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn unseal_secret_comes_from_the_file_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let with_file = |p: &std::path::Path| {
            let mut c = cfg("kdf_iterations = 1000").unwrap();
            c.unseal_secret_file = Some(p.to_path_buf());
            c
        };
        let e = with_file(&dir.path().join("missing"))
            .load_kek()
            .unwrap_err();
        assert!(
            e.to_string().contains("cannot read the unseal secret"),
            "{e}"
        );
        std::fs::write(&path, "short\n").unwrap();
        let e = with_file(&path).load_kek().unwrap_err();
        assert!(
            matches!(e, ServeError::SecretTooShort { len: 5, .. }),
            "{e}"
        );
        // Surrounding whitespace (a trailing newline) is not part of it.
        std::fs::write(&path, format!("{}\n", "s".repeat(32))).unwrap();
        let a = with_file(&path).load_kek().unwrap().unwrap();
        std::fs::write(&path, "s".repeat(32)).unwrap();
        let b = with_file(&path).load_kek().unwrap().unwrap();
        assert_eq!(a.id(), b.id());
    }
}
