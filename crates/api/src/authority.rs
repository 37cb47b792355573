//! The issuance path of design.md, on one node: check the CSR, decide with
//! the ledger's policy, take a serial from this node's Raft-granted lease,
//! sign locally with the region's intermediate, and return the certificate
//! only once its record is committed on a quorum.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quorumca_ca::{
    parse_csr, pem_encode, CaSigner, Kek, LeafSpec, Policy, SealedKey, Store, Validity,
};
use quorumca_consensus::{now_ms, ConsensusError, Node};
use quorumca_ledger::{
    Command, HierarchyChange, IssuanceRecord, IssuerRecord, Outcome, Proposal, Rejection, Serial,
};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Mutex;

use crate::error::AuthorityError;

/// The issuer id of the cluster's root.
pub const ROOT_ID: &str = "root";

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

/// A request to issue, after authentication (the caller's identity is
/// `requester`).
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub csr: Vec<u8>,
    pub namespace: String,
    pub profile: String,
    pub lifetime: Option<Duration>,
    pub requester: String,
    /// A retry with the same key never issues twice.
    pub idempotency_key: Option<String>,
}

/// What an authenticated caller asks to be issued (the requester is the
/// caller; see [`Authority::issue_for`]).
#[derive(Clone, Debug)]
pub struct IssueArgs {
    pub csr: Vec<u8>,
    pub namespace: String,
    pub profile: String,
    pub lifetime: Option<Duration>,
    /// The caller's own key; scoped to the caller before use.
    pub idempotency_key: Option<String>,
}

/// How long the old root stays trusted after a root rotation, unless the
/// operator says otherwise: long enough for every holder to renew.
pub const DEFAULT_ROOT_GRACE: Duration = Duration::from_secs(30 * 86_400);

#[derive(Clone, Debug)]
pub struct Issued {
    pub issuer: String,
    pub serial: Vec<u8>,
    pub cert_der: Vec<u8>,
    /// The leaf alone, PEM.
    pub cert_pem: String,
    /// Leaf, intermediate: what a TLS server presents.
    pub chain_pem: String,
    pub log_index: u64,
    /// Validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// True when this answers a retry: the certificate is the one the
    /// first attempt with the same idempotency key recorded (and
    /// `log_index` is 0).
    pub replayed: bool,
    /// The namespace it was issued in.
    pub namespace: String,
}

struct LeaseCursor {
    next: u64,
    end: u64,
    expires_at_ms: u64,
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
    records: std::sync::OnceLock<crate::batch::RecordBatcher>,
    signers: std::sync::Mutex<HashMap<String, Arc<CaSigner>>>,
    leases: Mutex<HashMap<String, LeaseCursor>>,
    /// The parsed current policy and its version: parsing TOML on every
    /// issuance would cost more than the signature.
    pub(crate) policy: std::sync::Mutex<Option<(u64, Arc<Policy>)>>,
    /// Client certificates already read, by their DER: a client sends the
    /// same one on every request of its connection, and parsing it cost
    /// about 4 % of an issuance. Keyed by content, never by connection, so
    /// an entry can only ever describe the exact bytes presented.
    pub(crate) presented: std::sync::Mutex<HashMap<Vec<u8>, quorumca_ca::PresentedCert>>,
    /// Refusals over the audit budget since the last recorded one; the
    /// next record says how many.
    pub(crate) denials_unrecorded: std::sync::atomic::AtomicU64,
}

pub(crate) fn rejected(o: Outcome) -> AuthorityError {
    match o {
        Outcome::Rejected(r) => AuthorityError::Rejected(r),
        other => AuthorityError::Internal(format!("unexpected outcome {other:?}")),
    }
}

impl Authority {
    pub fn new(node: Arc<Node>, kek: Option<Kek>, cfg: AuthorityConfig) -> Self {
        Self {
            node,
            kek,
            cfg,
            rng: SystemRandom::new(),
            crls: Default::default(),
            presented: Default::default(),
            denials_unrecorded: Default::default(),
            records: Default::default(),
            limiter: Default::default(),
            signers: Default::default(),
            leases: Default::default(),
            policy: Default::default(),
        }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn config(&self) -> &AuthorityConfig {
        &self.cfg
    }

    /// Whether this node holds the unseal secret and so can sign.
    pub fn can_sign(&self) -> bool {
        self.kek.is_some()
    }

    fn kek(&self) -> Result<&Kek, AuthorityError> {
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

    fn seal_key(&self, key: &rcgen::KeyPair, issuer_id: &str) -> Result<Vec<u8>, AuthorityError> {
        let sealed = quorumca_ca::seal(
            self.kek()?,
            &key.serialize_der(),
            self.random()?,
            issuer_id.as_bytes(),
        );
        Ok(sealed.to_bytes())
    }

    /// Creates the hierarchy if the ledger has none: a root kept inside the
    /// cluster (dev mode) and one intermediate per region, every key sealed
    /// before it is proposed. Safe to call again and from several nodes:
    /// registration of an existing id is refused by the ledger and ignored.
    pub async fn bootstrap_hierarchy(&self, regions: &[String]) -> Result<(), AuthorityError> {
        let now = now_ms() as i64 / 1000;
        let root_signer = match self
            .node
            .read_linearizable(|s| s.current_root().cloned())
            .await?
        {
            Some(root) => self.signer(&root.id)?,
            None if self.cfg.root_files.is_some() => {
                let (cert_path, key_path) = self.cfg.root_files.clone().expect("checked");
                let read = |p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| {
                        AuthorityError::InvalidArgument(format!(
                            "[api] root file {}: {e}",
                            p.display()
                        ))
                    })
                };
                let cert_der = quorumca_ca::first_certificate_der(&read(&cert_path)?)?;
                let sealed = read(&key_path)?;
                // Proves the secret opens it before the cluster relies on it.
                let pkcs8 = quorumca_ca::unseal(
                    self.kek()?,
                    &SealedKey::from_bytes(&sealed)?,
                    ROOT_ID.as_bytes(),
                )?;
                CaSigner::from_parts(&cert_der, &pkcs8)?;
                let not_after = quorumca_ca::certificate_not_after(&cert_der)?;
                let rec = IssuerRecord {
                    id: ROOT_ID.into(),
                    region: None,
                    cert_der,
                    sealed_key: Some(sealed),
                    parent: None,
                    not_after_ms: not_after as u64 * 1000,
                    crl_shards: 1,
                };
                self.register_issuer(rec).await?;
                self.node.read_linearizable(|_| ()).await?;
                self.signer(ROOT_ID)?
            }
            None => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
                let sealed = self.seal_key(&key, ROOT_ID)?;
                let validity = Validity {
                    not_before: now - 60,
                    not_after: now + 10 * 365 * 86_400,
                };
                let root = quorumca_ca::self_signed_root(
                    key,
                    "QuorumCA Root",
                    validity,
                    &self.random_serial()?,
                )?;
                let rec = IssuerRecord {
                    id: ROOT_ID.into(),
                    region: None,
                    cert_der: root.cert_der.clone(),
                    sealed_key: Some(sealed),
                    parent: None,
                    not_after_ms: validity.not_after as u64 * 1000,
                    // A root revokes few intermediates: one CRL is plenty.
                    crl_shards: 1,
                };
                self.register_issuer(rec).await?;
                // Whoever won the race, use what the ledger holds.
                self.node.read_linearizable(|_| ()).await?;
                self.signer(ROOT_ID)?
            }
        };
        for region in regions {
            if self.node.read_local(|s| s.issuer(region).is_some()) {
                continue;
            }
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let sealed = self.seal_key(&key, region)?;
            let validity = Validity {
                not_before: now - 60,
                not_after: now + 365 * 86_400,
            };
            let int = quorumca_ca::sign_intermediate(
                &root_signer,
                key,
                &format!("QuorumCA {region}"),
                validity,
                &self.random_serial()?,
            )?;
            let rec = IssuerRecord {
                id: region.clone(),
                region: Some(region.clone()),
                cert_der: int.cert_der.clone(),
                sealed_key: Some(sealed),
                parent: Some(ROOT_ID.into()),
                not_after_ms: validity.not_after as u64 * 1000,
                crl_shards: self.cfg.crl_shards.max(1),
            };
            self.register_issuer(rec).await?;
        }
        Ok(())
    }

    /// Generates the key of `region`'s intermediate on this node and returns
    /// a CSR for the offline root to sign, plus the key sealed under the
    /// cluster's KEK (opaque to the operator, who hands it back to
    /// [`Authority::install_intermediate`]). Nothing is recorded yet.
    pub fn prepare_intermediate(
        &self,
        region: &str,
    ) -> Result<(String, Vec<u8>, String), AuthorityError> {
        check_issuer_id(region)?;
        // A region that has an intermediate gets its next generation: the
        // installation then rotates to it.
        let id = self.node.read_local(|s| {
            if s.active_issuer(region).is_some() {
                let mut taken = s.issuers().map(|i| i.id.clone()).collect();
                next_generation(region, &mut taken).0
            } else {
                region.to_string()
            }
        });
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let pkcs8 = zeroize::Zeroizing::new(key.serialize_der());
        let csr = quorumca_ca::intermediate_csr(&pkcs8, &id)?;
        let sealed = self.seal_key(&key, &id)?;
        Ok((csr, sealed, id))
    }

    /// Registers an intermediate signed by an offline root: checks that it
    /// is a pathLen-0 CA signed by `root_der`, for the key sealed in
    /// `sealed_key` (from [`Authority::prepare_intermediate`]), then records
    /// the root (without a key) if the ledger has none, and the
    /// intermediate with its sealed key.
    pub async fn install_intermediate(
        &self,
        region: &str,
        cert_der: &[u8],
        root_der: &[u8],
        sealed_key: &[u8],
    ) -> Result<(), AuthorityError> {
        match self
            .check_install(region, cert_der, root_der, sealed_key)
            .await?
        {
            Install::Register(recs) => {
                for rec in recs {
                    self.register_issuer(rec).await?;
                }
            }
            Install::Rotate(change) => {
                self.apply_hierarchy(change, &format!("node {}", self.node.id()))
                    .await?;
            }
        }
        Ok(())
    }

    /// The checks of [`Authority::install_intermediate`]; returns what to
    /// commit (the root first when the cluster has none, or a rotation when
    /// the region has an intermediate), so it can also wait for a second
    /// admin.
    pub async fn check_install(
        &self,
        region: &str,
        cert_der: &[u8],
        root_der: &[u8],
        sealed_key: &[u8],
    ) -> Result<Install, AuthorityError> {
        check_issuer_id(region)?;
        let sealed = SealedKey::from_bytes(sealed_key)?;
        // The key was sealed for the issuer id `prepare_intermediate`
        // chose: the region itself, or one of its next generations.
        let generations = self.node.read_local(|s| {
            s.issuers()
                .filter(|i| i.region.as_deref() == Some(region))
                .count()
        });
        let candidates = std::iter::once(region.to_string())
            .chain((2..=generations + 1).map(|n| format!("{region}.g{n}")));
        let mut opened = None;
        let mut first_error = None;
        for id in candidates {
            match quorumca_ca::unseal(self.kek()?, &sealed, id.as_bytes()) {
                Ok(k) => {
                    opened = Some((id, k));
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Not sealed for this region at all: the error of the plain id.
        let (id, pkcs8) = match (opened, first_error) {
            (Some(found), _) => found,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => unreachable!("the region itself is always a candidate"),
        };
        let now = now_ms() as i64 / 1000;
        let info = quorumca_ca::check_intermediate(root_der, cert_der, &pkcs8, now)?;
        let existing_root = self
            .node
            .read_linearizable(|s| s.current_root().map(|r| (r.id.clone(), r.cert_der.clone())))
            .await?;
        let mut out = Vec::new();
        let parent = existing_root
            .as_ref()
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| ROOT_ID.to_string());
        match existing_root.map(|(_, der)| der) {
            Some(der) if der != root_der => {
                return Err(AuthorityError::InvalidArgument(
                    "the cluster already trusts a different root; intermediates must chain to it"
                        .into(),
                ))
            }
            Some(_) => {}
            None => {
                let root = quorumca_ca::certificate_not_after(root_der)?;
                out.push(IssuerRecord {
                    id: ROOT_ID.into(),
                    region: None,
                    cert_der: root_der.to_vec(),
                    sealed_key: None,
                    parent: None,
                    not_after_ms: root as u64 * 1000,
                    crl_shards: 1,
                });
            }
        }
        if self.node.read_local(|s| s.issuer(&id).is_some()) {
            return Err(AuthorityError::Rejected(Rejection::IssuerExists { id }));
        }
        let rec = IssuerRecord {
            id: id.clone(),
            region: Some(region.into()),
            cert_der: cert_der.to_vec(),
            sealed_key: Some(sealed_key.to_vec()),
            parent: Some(parent),
            not_after_ms: info.not_after as u64 * 1000,
            crl_shards: self.cfg.crl_shards.max(1),
        };
        if id != region {
            return Ok(Install::Rotate(HierarchyChange::Rotate {
                root: None,
                cross: vec![],
                intermediates: vec![rec],
                root_grace_ms: 0,
            }));
        }
        out.push(rec);
        Ok(Install::Register(out))
    }

    /// Registers an issuer; losing a race to another node that registered
    /// the same id first is fine.
    pub(crate) async fn register_issuer(&self, rec: IssuerRecord) -> Result<(), AuthorityError> {
        match self
            .propose(
                Proposal::new(now_ms(), Command::RegisterIssuer(rec))
                    .by(format!("node {}", self.node.id())),
            )
            .await?
            .0
        {
            Outcome::IssuerRegistered { .. }
            | Outcome::Rejected(Rejection::IssuerExists { .. }) => Ok(()),
            o => Err(rejected(o)),
        }
    }

    /// What follows a leaf of `issuer_id` in its chain: the intermediate,
    /// then the cross certificates of the intermediate's root, so relying
    /// parties that trust either root of a rollover find a path.
    pub(crate) fn chain_tail(&self, issuer_id: &str) -> String {
        self.node.read_local(|s| {
            let Some(i) = s.issuer(issuer_id) else {
                return String::new();
            };
            let mut out = pem_encode("CERTIFICATE", &i.cert_der);
            for c in s
                .cross_certs()
                .filter(|c| Some(&c.subject) == i.parent.as_ref())
            {
                out.push_str(&pem_encode("CERTIFICATE", &c.cert_der));
            }
            out
        })
    }

    /// A new intermediate for `region` under `root`, its key sealed, with
    /// the next free generation id (`<region>.g2`, `.g3`, ...).
    fn new_intermediate(
        &self,
        root: &CaSigner,
        root_id: &str,
        root_not_after_ms: u64,
        region: &str,
        taken: &mut std::collections::BTreeSet<String>,
    ) -> Result<IssuerRecord, AuthorityError> {
        let (id, generation) = next_generation(region, taken);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let sealed = self.seal_key(&key, &id)?;
        let now = now_ms() as i64 / 1000;
        let validity = Validity {
            not_before: now - 60,
            not_after: (now + 365 * 86_400).min((root_not_after_ms / 1000) as i64),
        };
        let int = quorumca_ca::sign_intermediate(
            root,
            key,
            &format!("QuorumCA {region} G{generation}"),
            validity,
            &self.random_serial()?,
        )?;
        Ok(IssuerRecord {
            id,
            region: Some(region.into()),
            cert_der: int.cert_der.clone(),
            sealed_key: Some(sealed),
            parent: Some(root_id.into()),
            not_after_ms: validity.not_after as u64 * 1000,
            crl_shards: self.cfg.crl_shards.max(1),
        })
    }

    /// The signer of the current root; a root kept offline cannot sign in
    /// the cluster, and the error says what to do instead.
    fn root_signer(&self, root: &IssuerRecord) -> Result<Arc<CaSigner>, AuthorityError> {
        if root.sealed_key.is_none() {
            return Err(AuthorityError::NoIssuer(format!(
                "{} (the root's key is kept offline, so the cluster cannot sign with it)",
                root.id
            )));
        }
        self.signer(&root.id)
    }

    /// Plans a rotation of `region`'s intermediate: a new key and
    /// certificate under the current root. Nothing is recorded yet.
    pub async fn plan_intermediate_rotation(
        &self,
        region: &str,
    ) -> Result<HierarchyChange, AuthorityError> {
        let (root, active, mut taken) = self
            .node
            .read_linearizable(|s| {
                (
                    s.current_root().cloned(),
                    s.active_issuer(region).map(|i| i.id.clone()),
                    s.issuers().map(|i| i.id.clone()).collect(),
                )
            })
            .await?;
        let root = root.ok_or_else(|| {
            AuthorityError::NoIssuer("root (bootstrap the hierarchy first)".into())
        })?;
        if active.is_none() {
            return Err(AuthorityError::InvalidArgument(format!(
                "region {region:?} has no intermediate to rotate (`quorumca bundle show` lists the regions)"
            )));
        }
        let signer = self.root_signer(&root)?;
        let rec =
            self.new_intermediate(&signer, &root.id, root.not_after_ms, region, &mut taken)?;
        Ok(HierarchyChange::Rotate {
            root: None,
            cross: vec![],
            intermediates: vec![rec],
            root_grace_ms: 0,
        })
    }

    /// Plans a root rollover: a new root, cross-signed with the current
    /// one both ways, and a new intermediate under it for every region.
    pub async fn plan_root_rotation(
        &self,
        grace: Duration,
    ) -> Result<HierarchyChange, AuthorityError> {
        let (old, regions, mut taken) = self
            .node
            .read_linearizable(|s| {
                let regions: Vec<String> = s
                    .issuers()
                    .filter(|i| s.issuer_phase(&i.id) == Some(quorumca_ledger::IssuerPhase::Active))
                    .filter_map(|i| i.region.clone())
                    .collect();
                (
                    s.current_root().cloned(),
                    regions,
                    s.issuers().map(|i| i.id.clone()).collect(),
                )
            })
            .await?;
        let old = old.ok_or_else(|| {
            AuthorityError::NoIssuer("root (bootstrap the hierarchy first)".into())
        })?;
        let old_signer = self.root_signer(&old)?;
        let (id, generation) = next_generation(ROOT_ID, &mut taken);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        let sealed = self.seal_key(&key, &id)?;
        let now = now_ms() as i64 / 1000;
        let validity = Validity {
            not_before: now - 60,
            not_after: now + 10 * 365 * 86_400,
        };
        let new = quorumca_ca::self_signed_root(
            key,
            &format!("QuorumCA Root G{generation}"),
            validity,
            &self.random_serial()?,
        )?;
        // A cross certificate never outlives the root that signs it.
        let old_end = (old.not_after_ms / 1000) as i64;
        let cross_validity = Validity {
            not_before: now - 60,
            not_after: old_end.min(validity.not_after),
        };
        let cross = vec![
            quorumca_ledger::CrossCert {
                subject: id.clone(),
                signer: old.id.clone(),
                cert_der: quorumca_ca::cross_sign(
                    &old_signer,
                    &new.cert_der,
                    cross_validity,
                    &self.random_serial()?,
                )?,
                not_after_ms: cross_validity.not_after as u64 * 1000,
            },
            quorumca_ledger::CrossCert {
                subject: old.id.clone(),
                signer: id.clone(),
                cert_der: quorumca_ca::cross_sign(
                    &new,
                    &old.cert_der,
                    cross_validity,
                    &self.random_serial()?,
                )?,
                not_after_ms: cross_validity.not_after as u64 * 1000,
            },
        ];
        let root_not_after_ms = validity.not_after as u64 * 1000;
        let mut intermediates = Vec::new();
        for region in &regions {
            intermediates.push(self.new_intermediate(
                &new,
                &id,
                root_not_after_ms,
                region,
                &mut taken,
            )?);
        }
        if intermediates.is_empty() {
            return Err(AuthorityError::InvalidArgument(
                "no region has an intermediate yet; bootstrap the hierarchy first".into(),
            ));
        }
        Ok(HierarchyChange::Rotate {
            root: Some(IssuerRecord {
                id,
                region: None,
                cert_der: new.cert_der.clone(),
                sealed_key: Some(sealed),
                parent: None,
                not_after_ms: root_not_after_ms,
                crl_shards: 1,
            }),
            cross,
            intermediates,
            root_grace_ms: grace.as_millis() as u64,
        })
    }

    /// Commits a hierarchy change; returns the new bundle version.
    pub async fn apply_hierarchy(
        &self,
        change: HierarchyChange,
        actor: &str,
    ) -> Result<u64, AuthorityError> {
        match self
            .propose(Proposal::new(now_ms(), Command::Hierarchy(change)).by(actor))
            .await?
            .0
        {
            Outcome::HierarchyChanged { bundle_version } => Ok(bundle_version),
            o => Err(rejected(o)),
        }
    }

    /// Retires every issuer whose time has come (the leader only, so the
    /// cluster proposes each retirement once).
    pub async fn retire_due(&self) -> Result<Vec<String>, AuthorityError> {
        if !self.node.is_leader() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let due = self.node.read_local(|s| s.retirable(now));
        let mut done = Vec::new();
        for id in due {
            let change = HierarchyChange::Retire { id: id.clone() };
            match self
                .apply_hierarchy(change, &format!("node {} (housekeeping)", self.node.id()))
                .await
            {
                Ok(_) => done.push(id),
                Err(AuthorityError::Rejected(Rejection::NotRetirable { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        self.forget_retired_signers();
        Ok(done)
    }

    /// Drops cached signers of issuers the ledger has retired: their keys
    /// are destroyed, so nothing may sign with them again.
    pub(crate) fn forget_retired_signers(&self) {
        let mut cache = self.signers.lock().expect("signer cache");
        if cache.is_empty() {
            return;
        }
        self.node
            .read_local(|s| cache.retain(|id, _| s.retired_at(id).is_none()));
    }

    fn random_serial(&self) -> Result<Vec<u8>, AuthorityError> {
        let mut s: [u8; 16] = self.random()?;
        s[0] = (s[0] & 0x7f).max(1);
        Ok(s.to_vec())
    }

    /// Validates a policy with the CA crate, then commits its canonical
    /// text. Returns the new version.
    pub async fn apply_policy(
        &self,
        text: &str,
        author: &str,
        expected_version: Option<u64>,
    ) -> Result<u64, AuthorityError> {
        let policy = Policy::from_toml(text)?;
        let p = Proposal::new(
            now_ms(),
            Command::ApplyPolicy {
                text: policy.to_canonical_toml(),
                author: author.into(),
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
    async fn current_policy(&self) -> Result<Arc<Policy>, AuthorityError> {
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

    /// The signer of `issuer_id`, unsealed on first use and cached. The
    /// unsealed PKCS#8 bytes are zeroized as soon as the key is loaded.
    pub(crate) fn signer(&self, issuer_id: &str) -> Result<Arc<CaSigner>, AuthorityError> {
        if let Some(s) = self.signers.lock().expect("signer cache").get(issuer_id) {
            return Ok(s.clone());
        }
        let rec = self
            .node
            .read_local(|s| s.issuer(issuer_id).cloned())
            .ok_or_else(|| AuthorityError::NoIssuer(issuer_id.into()))?;
        let sealed_bytes = rec
            .sealed_key
            .ok_or_else(|| AuthorityError::NoIssuer(format!("{issuer_id} (its key is offline)")))?;
        let sealed = SealedKey::from_bytes(&sealed_bytes)?;
        let pkcs8 = quorumca_ca::unseal(self.kek()?, &sealed, issuer_id.as_bytes())?;
        let signer = Arc::new(CaSigner::from_parts(&rec.cert_der, &pkcs8)?);
        self.signers
            .lock()
            .expect("signer cache")
            .insert(issuer_id.into(), signer.clone());
        Ok(signer)
    }

    /// Takes the next sequence number of `issuer` from this node's lease,
    /// asking Raft for a new lease when it is used up or about to expire.
    async fn next_sequence(&self, issuer: &str) -> Result<u64, AuthorityError> {
        let mut leases = self.leases.lock().await;
        let margin_ms = 5_000;
        let usable = leases
            .get(issuer)
            .is_some_and(|c| c.next < c.end && c.expires_at_ms > now_ms() + margin_ms);
        if !usable {
            let p = Proposal::new(
                now_ms(),
                Command::GrantSerialLease {
                    node_id: self.node.id(),
                    issuer: issuer.into(),
                    block: self.cfg.lease_block,
                    expires_at_ms: now_ms() + self.cfg.lease_ttl.as_millis() as u64,
                },
            );
            match self.propose(p).await?.0 {
                Outcome::LeaseGranted(l) => {
                    leases.insert(
                        issuer.into(),
                        LeaseCursor {
                            next: l.start,
                            end: l.end,
                            expires_at_ms: l.expires_at_ms,
                        },
                    );
                }
                o => return Err(rejected(o)),
            }
        }
        let c = leases.get_mut(issuer).expect("inserted above");
        let seq = c.next;
        c.next += 1;
        Ok(seq)
    }

    /// The serial for `sequence`: see [`Serial::for_leaf`] (a fixed prefix
    /// octet, the sequence, 64 bits from the CSPRNG).
    fn serial_for(&self, sequence: u64) -> Result<Vec<u8>, AuthorityError> {
        Ok(Serial::for_leaf(sequence, self.random()?).0)
    }

    /// The certificate a first attempt with idempotency key `key` recorded,
    /// if there was one: a retry after a lost answer (possibly sent to
    /// another node) gets the same certificate, never a second one. A key
    /// already used for another request or another public key is refused.
    async fn replay(
        &self,
        key: &str,
        spki_hash: &[u8; 32],
        linearizable: bool,
    ) -> Result<Option<Issued>, AuthorityError> {
        let conflict = || {
            AuthorityError::Rejected(Rejection::IdempotencyKeyConflict {
                key: key.to_string(),
            })
        };
        let find = |s: &quorumca_ledger::State| match s.idempotent_outcome(key) {
            None => None,
            Some(Outcome::IssuanceRecorded { issuer, serial }) => {
                Some(s.record(issuer, serial).cloned())
            }
            Some(_) => Some(None),
        };
        let found = if linearizable {
            self.node.read_linearizable(find).await?
        } else {
            self.node.read_local(find)
        };
        let record = match found {
            None => return Ok(None),
            Some(None) => return Err(conflict()),
            Some(Some(found)) => found,
        };
        if record.spki_hash != *spki_hash {
            return Err(conflict());
        }
        let cert_der = record.full_der.ok_or_else(|| {
            AuthorityError::Internal("a keyed issuance was recorded without its certificate".into())
        })?;
        let cert_pem = pem_encode("CERTIFICATE", &cert_der);
        Ok(Some(Issued {
            chain_pem: cert_pem.clone() + &self.chain_tail(&record.issuer),
            cert_pem,
            namespace: record.namespace,
            issuer: record.issuer,
            serial: record.serial.0,
            cert_der,
            log_index: 0,
            not_before: (record.not_before_ms / 1000) as i64,
            not_after: (record.not_after_ms / 1000) as i64,
            replayed: true,
        }))
    }

    /// Issues a certificate for a CSR. With an idempotency key, retries are
    /// safe: every attempt with the same key and key pair answers with the
    /// one certificate recorded first.
    pub async fn issue(&self, req: IssueRequest) -> Result<Issued, AuthorityError> {
        self.issue_checked(req, None).await
    }

    /// Issues for an authenticated caller, if its roles allow issuing in
    /// the namespace. A refusal for a name or profile outside the
    /// namespace is audited like a role refusal. The idempotency key is
    /// scoped to the caller, so one caller's key never answers another's.
    pub async fn issue_for(
        &self,
        caller: &crate::auth::Caller,
        args: IssueArgs,
    ) -> Result<Issued, AuthorityError> {
        // Names first: a refusal below is audited and names the namespace,
        // which must not be an unbounded string of the caller's choosing.
        quorumca_ca::check_name("namespace", &args.namespace)?;
        if !args.profile.is_empty() {
            quorumca_ca::check_name("profile", &args.profile)?;
        }
        self.authorize(
            caller,
            quorumca_ca::Action::Issue {
                namespace: &args.namespace,
            },
        )?;
        let what = format!("issue in namespace {:?}", args.namespace);
        let req = IssueRequest {
            csr: args.csr,
            namespace: args.namespace,
            profile: args.profile,
            lifetime: args.lifetime,
            requester: caller.identity.clone(),
            idempotency_key: args.idempotency_key.map(|k| self.scoped_key(caller, &k)),
        };
        let issued = self.issue(req).await;
        issued.map_err(|e| self.audit_policy_refusal(caller, &what, e))
    }

    /// [`Authority::renew`] with the caller's idempotency key scoped to it,
    /// and policy refusals audited.
    pub async fn renew_for(
        &self,
        caller: &crate::auth::Caller,
        csr: Vec<u8>,
        lifetime: Option<Duration>,
        idempotency_key: Option<String>,
    ) -> Result<Issued, AuthorityError> {
        let key = idempotency_key.map(|k| self.scoped_key(caller, &k));
        let issued = self.renew(caller, csr, lifetime, key).await;
        issued.map_err(|e| self.audit_policy_refusal(caller, "renew", e))
    }

    /// Audits a policy refusal (a name or profile outside the namespace);
    /// role refusals ([`AuthorityError::Denied`]) were audited when made.
    fn audit_policy_refusal(
        &self,
        caller: &crate::auth::Caller,
        what: &str,
        e: AuthorityError,
    ) -> AuthorityError {
        if e.code() == crate::error::StatusCode::PermissionDenied
            && !matches!(e, AuthorityError::Denied(_))
        {
            self.audit_denial(&caller.identity, what, &e.to_string());
        }
        e
    }

    /// Renews the certificate `caller` presented over mTLS: a new
    /// certificate for the new CSR's key, in the old one's namespace and
    /// profile, with exactly its names. The old one must be live (in the
    /// ledger, unrevoked); holding it is the authority, no grant needed.
    pub async fn renew(
        &self,
        caller: &crate::auth::Caller,
        csr: Vec<u8>,
        lifetime: Option<Duration>,
        idempotency_key: Option<String>,
    ) -> Result<Issued, AuthorityError> {
        let denied = |why: &str| {
            self.audit_denial(&caller.identity, "renew", why);
            AuthorityError::Denied(quorumca_ca::Denied {
                identity: caller.identity.clone(),
                action: "renew".into(),
                why: why.into(),
            })
        };
        let Some(der) = &caller.cert_der else {
            return Err(AuthorityError::InvalidArgument(
                "Renew needs the certificate being renewed as the mTLS client certificate; this node runs without TLS".into(),
            ));
        };
        let (serial, spki) = quorumca_ca::certificate_serial_and_spki(der)?;
        let spki_hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &spki)
            .as_ref()
            .try_into()
            .expect("32 bytes");
        let serial = Serial(serial);
        let found = self
            .node
            .read_linearizable(move |s| {
                s.issuers()
                    .filter_map(|i| s.record(&i.id, &serial))
                    .find(|r| r.spki_hash == spki_hash)
                    .map(|r| (r.clone(), s.revocation(&r.issuer, &r.serial).is_some()))
            })
            .await?;
        let (record, revoked) = found.ok_or_else(|| {
            denied("the presented certificate is not a live certificate of this cluster (unknown, or expired and pruned); issue a new one")
        })?;
        if revoked {
            return Err(denied("the presented certificate is revoked"));
        }
        // A token-bound role held by the presented certificate's key moves
        // to the new key, before the new certificate is handed out. A
        // retry (same idempotency key) is answered with the recorded
        // certificate and moves it again if the first attempt did not.
        let bound = self.node.read_local(|s| {
            s.enrollment(&caller.identity)
                .is_some_and(|e| e.spki_hash == spki_hash)
        });
        let new_spki = if bound {
            let csr = parse_csr(&csr)?;
            let h: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &csr.spki_der)
                .as_ref()
                .try_into()
                .expect("32 bytes");
            Some(h)
        } else {
            None
        };
        let issued = self
            .issue_checked(
                IssueRequest {
                    csr,
                    namespace: record.namespace,
                    profile: record.profile,
                    lifetime,
                    requester: caller.identity.clone(),
                    idempotency_key,
                },
                Some(record.names_digest),
            )
            .await?;
        if let Some(to_spki) = new_spki.filter(|h| *h != spki_hash) {
            let p = Proposal::new(
                now_ms(),
                Command::RebindRole {
                    identity: caller.identity.clone(),
                    from_spki: spki_hash,
                    to_spki,
                },
            )
            .by(&caller.identity);
            match self.propose(p).await?.0 {
                Outcome::RoleRebound => {}
                o => return Err(rejected(o)),
            }
        }
        Ok(issued)
    }

    /// Every role granted by a join token, with the key that holds it.
    pub fn role_bindings(&self) -> Vec<quorumca_ledger::Enrollment> {
        self.node.read_local(|s| s.enrollments().cloned().collect())
    }

    /// Withdraws the token-bound role of `identity` (an admin's call).
    pub async fn remove_role_binding(
        &self,
        actor: &str,
        identity: &str,
    ) -> Result<quorumca_ledger::Enrollment, AuthorityError> {
        let p = Proposal::new(
            now_ms(),
            Command::RemoveRoleBinding {
                identity: identity.into(),
            },
        )
        .by(actor);
        match self.propose(p).await?.0 {
            Outcome::RoleBindingRemoved(e) => Ok(e),
            o => Err(rejected(o)),
        }
    }

    /// Issues; with `same_names`, only if the decided names digest to it
    /// (a renewal keeps its certificate's names).
    async fn issue_checked(
        &self,
        req: IssueRequest,
        same_names: Option<[u8; 32]>,
    ) -> Result<Issued, AuthorityError> {
        let csr = parse_csr(&req.csr)?;
        let spki_hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &csr.spki_der)
            .as_ref()
            .try_into()
            .expect("32 bytes");
        if let Some(key) = &req.idempotency_key {
            if let Some(done) = self.replay(key, &spki_hash, false).await? {
                return Ok(done);
            }
        }
        let policy = self.current_policy().await?;
        let now = now_ms() as i64 / 1000;
        let decision = policy.decide(&req.namespace, &req.profile, &csr, req.lifetime, now)?;
        // Before a serial is taken or anything signed: a caller over its
        // budget costs nothing but this check.
        let (per_identity, per_namespace) = policy.rates();
        let limits: Vec<(String, quorumca_ca::Rate)> = per_identity
            .map(|r| (format!("identity {:?}", req.requester), r))
            .into_iter()
            .chain(per_namespace.map(|r| (format!("namespace {:?}", req.namespace), r)))
            .collect();
        if !limits.is_empty() {
            self.limiter
                .take(&limits, std::time::Instant::now())
                .map_err(|(what, retry_after)| AuthorityError::RateLimited { what, retry_after })?;
        }
        // An identity a join token bound a role to is reserved for the
        // certificate holding that role: nobody else gets a certificate
        // naming it (its holder renews; an enrolment of it is refused).
        if !decision.uris.is_empty() {
            let taken = self.node.read_local(|s| {
                decision
                    .uris
                    .iter()
                    .find(|u| *u != &req.requester && s.enrollment(u).is_some())
                    .cloned()
            });
            if let Some(identity) = taken {
                return Err(AuthorityError::Rejected(Rejection::IdentityReserved {
                    identity,
                }));
            }
        }
        let names_digest =
            quorumca_ca::names::names_digest(&decision.dns, &decision.ips, &decision.uris);
        if same_names.is_some_and(|recorded| {
            !quorumca_ca::names::names_match(
                &recorded,
                &decision.dns,
                &decision.ips,
                &decision.uris,
            )
        }) {
            return Err(AuthorityError::InvalidArgument(
                "a renewal keeps the names of the certificate being renewed; put exactly its DNS, IP and URI names in the CSR (or Issue a new certificate)".into(),
            ));
        }
        let (issuer_id, signer) = self.issuer_for(&decision.uris).await?;
        let shards = self
            .node
            .read_local(|s| s.issuer(&issuer_id).map(|i| i.crl_shards.max(1)))
            .unwrap_or(1);
        let sequence = self.next_sequence(&issuer_id).await?;
        let serial = self.serial_for(sequence)?;
        // The ledger files a revocation under the same shard, computed the
        // same way from the issuer's registered shard count.
        let shard = sequence % shards;
        let spec = LeafSpec {
            serial: serial.clone(),
            validity: decision.validity,
            dns: decision.dns.clone(),
            ips: decision.ips.clone(),
            uris: decision.uris.clone(),
            usages: decision.usages.clone(),
            crl_url: Some(self.crl_url(&issuer_id, shard)),
            ocsp_url: Some(format!("{}/ocsp/{issuer_id}", self.cfg.base_url)),
        };
        let cert_der = quorumca_ca::sign_leaf(&signer, &csr, &spec)?;
        let record = IssuanceRecord {
            issuer: issuer_id.clone(),
            serial: Serial(serial.clone()),
            sequence,
            node_id: self.node.id(),
            not_before_ms: decision.validity.not_before as u64 * 1000,
            not_after_ms: decision.validity.not_after as u64 * 1000,
            names_digest,
            spki_hash,
            profile: decision.profile.clone(),
            namespace: decision.namespace.clone(),
            requester: req.requester.clone(),
            // A keyed issuance keeps its DER so a retry can be answered
            // with this very certificate; for a compact profile the ledger
            // drops it when the key expires.
            full_der: (decision.store == Store::Full || req.idempotency_key.is_some())
                .then(|| cert_der.clone()),
            der_for_replay_only: decision.store != Store::Full && req.idempotency_key.is_some(),
        };
        let (outcome, log_index) = self
            .records
            .get_or_init(|| crate::batch::RecordBatcher::start(self.node.clone()))
            .record(quorumca_ledger::BatchedRecord {
                record,
                idempotency_key: req.idempotency_key.clone(),
            })
            .await?;
        match outcome {
            // A concurrent attempt with the same key won: answer with its
            // certificate (this one's serial is simply never used).
            Outcome::Rejected(Rejection::IdempotencyKeyConflict { .. })
                if req.idempotency_key.is_some() =>
            {
                let key = req.idempotency_key.as_deref().expect("checked");
                match self.replay(key, &spki_hash, true).await? {
                    Some(done) => Ok(done),
                    None => Err(rejected(outcome)),
                }
            }
            Outcome::IssuanceRecorded { issuer, .. } => {
                let cert_pem = pem_encode("CERTIFICATE", &cert_der);
                let chain_pem = cert_pem.clone() + &self.chain_tail(&issuer);
                Ok(Issued {
                    cert_pem,
                    issuer,
                    serial,
                    cert_der,
                    chain_pem,
                    log_index,
                    not_before: decision.validity.not_before,
                    not_after: decision.validity.not_after,
                    replayed: false,
                    namespace: decision.namespace.clone(),
                })
            }
            o => Err(rejected(o)),
        }
    }

    /// Who signs a leaf naming `uris`: this region's active intermediate,
    /// or, for a node identity (`spiffe://<td>/node/<id>`), the current
    /// root itself. Clients accept only root-signed node certificates, so
    /// nothing an intermediate signs, whatever the policy allows, can pass
    /// as a node.
    async fn issuer_for(&self, uris: &[String]) -> Result<(String, Arc<CaSigner>), AuthorityError> {
        let for_node = uris
            .iter()
            .any(|u| quorumca_ca::spiffe::SpiffeId::parse(u).is_ok_and(|id| id.is_node()));
        if for_node {
            let root = self
                .node
                .read_linearizable(|s| s.current_root().cloned())
                .await?
                .ok_or_else(|| {
                    AuthorityError::NoIssuer("root (bootstrap the hierarchy first)".into())
                })?;
            if root.sealed_key.is_none() {
                return Err(AuthorityError::NodeIdentityNeedsRoot { root: root.id });
            }
            let signer = self.signer(&root.id)?;
            return Ok((root.id, signer));
        }
        let region = self.cfg.region.clone();
        let active = |s: &quorumca_ledger::State| s.active_issuer(&region).map(|i| i.id.clone());
        let issuer_id = match self.node.read_local(active) {
            Some(id) => id,
            None => self
                .node
                .read_linearizable(active)
                .await?
                .unwrap_or_else(|| region.clone()),
        };
        let signer = self.signer(&issuer_id)?;
        Ok((issuer_id, signer))
    }
}

/// What installing an offline-signed intermediate commits.
#[derive(Debug)]
pub enum Install {
    /// A region's first intermediate (and the root, if the cluster has
    /// none yet).
    Register(Vec<IssuerRecord>),
    /// A region's next intermediate: a rotation to it.
    Rotate(HierarchyChange),
}

/// The next unused generation of `base`: `base.g2`, `base.g3`, ... (the
/// bootstrap issuer is generation 1 and carries the bare name). Reserves
/// it in `taken`.
fn next_generation(base: &str, taken: &mut std::collections::BTreeSet<String>) -> (String, u32) {
    let mut n = 2;
    loop {
        let id = format!("{base}.g{n}");
        if taken.insert(id.clone()) {
            return (id, n);
        }
        n += 1;
    }
}

/// Issuer ids name regions and appear in URLs: keep them plain.
fn check_issuer_id(id: &str) -> Result<(), AuthorityError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id != ROOT_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AuthorityError::InvalidArgument(format!(
            "region {id:?} must be 1-63 characters of a-z, 0-9 and '-' (and not {ROOT_ID:?})"
        )))
    }
}

/// Seals a CA key the way the ledger stores it: for a root made before the
/// cluster runs (`quorumca dev`), handed to the bootstrap in a file.
pub fn seal_for_ledger(kek: &Kek, issuer_id: &str, pkcs8: &[u8], nonce: [u8; 12]) -> Vec<u8> {
    quorumca_ca::seal(kek, pkcs8, nonce, issuer_id.as_bytes()).to_bytes()
}

impl From<ConsensusError> for AuthorityError {
    fn from(e: ConsensusError) -> Self {
        AuthorityError::Consensus(e)
    }
}
