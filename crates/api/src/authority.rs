//! One node's certificate authority: the object every domain module adds
//! its part to (`issuance`, `leases`, `hierarchy`, `revocation`, `crls`,
//! `tokens`, `auth`, `changes`, `records`), with what they share: the
//! node, the configuration, the KEK, randomness, proposing to Raft, and
//! the parsed current policy. Each domain's own state is a type private to
//! its module, held here.

use std::sync::Arc;
use std::time::Duration;

use quorumca_ca::{Kek, Policy};
use quorumca_consensus::{now_ms, ConsensusError, Node};
use quorumca_ledger::{Command, Outcome, Proposal};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::AuthorityError;

/// The issuer id of the cluster's root.
pub const ROOT_ID: &str = "root";

/// What a node's authority is configured with, from node.toml's `[api]` and the command line.
#[derive(Clone, Debug)]
pub struct AuthorityConfig {
    /// The region this node signs for; its leaves chain to this region's
    /// intermediate.
    pub region: String,
    /// The cluster's public HTTP URL (a load balancer in front of every
    /// node), for the CRL and OCSP URLs in certificates. Must be the same on
    /// every node: a certificate's CRL URL is fixed at issuance, and the CRL
    /// any node builds names that URL as its issuing distribution point.
    pub base_url: String,
    /// Number of CRL shards per issuer; a leaf's shard is fixed at issuance.
    pub crl_shards: u64,
    /// Serials per lease; one Raft round trip buys this many issuances.
    pub lease_block: u64,
    /// How long a serial lease stays usable after it is granted.
    pub lease_ttl: Duration,
    /// How long a CRL is valid (nextUpdate - thisUpdate); CRLs are re-signed
    /// after half of it even when nothing changed. At most 10 days.
    pub crl_validity: Duration,
    /// How often the base of delta CRLs moves forward: a delta lists what
    /// was revoked since its base full CRL.
    pub delta_base_every: Duration,
    /// How callers are identified and authorised.
    pub access: crate::auth::Access,
    /// A root made before the cluster (cert PEM file, sealed key file),
    /// registered by the bootstrap instead of generating one.
    pub root_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl AuthorityConfig {
    /// Defaults for one region, with the cluster's public HTTP URL.
    pub fn new(region: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            base_url: base_url.into(),
            crl_shards: 16,
            lease_block: 1024,
            lease_ttl: Duration::from_secs(600),
            crl_validity: Duration::from_secs(86_400),
            delta_base_every: Duration::from_secs(3_600),
            access: crate::auth::Access::Open,
            root_files: None,
        }
    }
}

/// One node's certificate authority.
pub struct Authority {
    pub(crate) node: Arc<Node>,
    /// None on a node started without the unseal secret: it replicates and
    /// serves reads, but cannot sign.
    kek: Option<Kek>,
    pub(crate) cfg: AuthorityConfig,
    rng: SystemRandom,
    pub(crate) crls: crate::crls::CrlCache,
    pub(crate) limiter: crate::limits::Limiter,
    /// Started on first use (it needs a runtime; `new` does not).
    pub(crate) records: std::sync::OnceLock<crate::batch::RecordBatcher>,
    pub(crate) signers: crate::hierarchy::Signers,
    pub(crate) leases: crate::leases::SerialLeases,
    /// The parsed current policy and its version: parsing TOML on every
    /// issuance would cost more than the signature.
    pub(crate) policy: std::sync::Mutex<Option<(u64, Arc<Policy>)>>,
    pub(crate) callers: crate::auth::Callers,
}

pub(crate) fn rejected(o: Outcome) -> AuthorityError {
    match o {
        Outcome::Rejected(r) => AuthorityError::Rejected(r),
        other => AuthorityError::Internal(format!("unexpected outcome {other:?}")),
    }
}

impl Authority {
    /// An authority over `node`; `kek` is None on a node started without the unseal secret.
    pub fn new(node: Arc<Node>, kek: Option<Kek>, cfg: AuthorityConfig) -> Self {
        Self {
            node,
            kek,
            cfg,
            rng: SystemRandom::new(),
            crls: Default::default(),
            callers: Default::default(),
            records: Default::default(),
            limiter: Default::default(),
            signers: Default::default(),
            leases: Default::default(),
            policy: Default::default(),
        }
    }

    /// The Raft node it proposes to and reads from.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// What it was configured with.
    pub fn config(&self) -> &AuthorityConfig {
        &self.cfg
    }

    /// Whether this node holds the unseal secret and so can sign.
    pub fn can_sign(&self) -> bool {
        self.kek.is_some()
    }

    pub(crate) fn kek(&self) -> Result<&Kek, AuthorityError> {
        self.kek.as_ref().ok_or(AuthorityError::Sealed)
    }

    pub(crate) fn random<const N: usize>(&self) -> Result<[u8; N], AuthorityError> {
        let mut b = [0u8; N];
        self.rng
            .fill(&mut b)
            .map_err(|_| AuthorityError::Internal("system random generator failed".into()))?;
        Ok(b)
    }

    pub(crate) async fn propose(&self, p: Proposal) -> Result<(Outcome, u64), AuthorityError> {
        let c = self.node.propose(p).await?;
        Ok((c.outcome, c.log_index))
    }

    /// Validates a policy with the CA crate, then commits its canonical
    /// text. Returns the new version.
    pub async fn apply_policy(
        &self,
        text: &str,
        actor: &str,
        expected_version: Option<u64>,
    ) -> Result<u64, AuthorityError> {
        let policy = Policy::from_toml(text)?;
        let p = Proposal::new(
            now_ms(),
            Command::ApplyPolicy {
                text: policy.to_canonical_toml(),
                actor: actor.into(),
                expected_version,
            },
        );
        match self.propose(p).await?.0 {
            Outcome::PolicyApplied { version } => Ok(version),
            o => Err(rejected(o)),
        }
    }

    /// The policy for issuing: as this node has it, or, if it has none
    /// yet, after catching up with the leader (it may simply lag a policy
    /// just applied).
    pub(crate) async fn current_policy(&self) -> Result<Arc<Policy>, AuthorityError> {
        if let Some(p) = self.cached_policy()? {
            return Ok(p);
        }
        self.node.read_linearizable(|_| ()).await?;
        self.cached_policy()?.ok_or(AuthorityError::NoPolicy)
    }

    /// The local ledger's policy, parsed once per version (parsing TOML on
    /// every call would cost more than a signature). None before the first
    /// policy.
    pub(crate) fn cached_policy(&self) -> Result<Option<Arc<Policy>>, AuthorityError> {
        let Some(version) = self.node.read_local(|s| s.policy().map(|p| p.version)) else {
            return Ok(None);
        };
        let mut cache = self.policy.lock().expect("policy cache");
        if let Some((v, p)) = cache.as_ref() {
            if *v == version {
                return Ok(Some(p.clone()));
            }
        }
        let Some((version, text)) = self
            .node
            .read_local(|s| s.policy().map(|p| (p.version, p.text.clone())))
        else {
            return Ok(None);
        };
        let parsed = Arc::new(Policy::from_toml(&text)?);
        *cache = Some((version, parsed.clone()));
        Ok(Some(parsed))
    }
}

impl From<ConsensusError> for AuthorityError {
    fn from(e: ConsensusError) -> Self {
        AuthorityError::Consensus(e)
    }
}
