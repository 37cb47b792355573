//! The CA hierarchy: the root and each region's intermediate, created at
//! bootstrap or installed from an offline root, rotated, retired when
//! their time comes; and the signers of their keys, unsealed on first use
//! with this node's KEK and cached until the issuer retires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quorumca_ca::{pem_encode, CaSigner, Kek, SealedKey, Validity};
use quorumca_consensus::now_ms;
use quorumca_ledger::{Command, HierarchyChange, IssuerRecord, Outcome, Proposal, Rejection};

use crate::authority::{rejected, Authority, ROOT_ID};
use crate::error::AuthorityError;

/// How long the old root stays trusted after a root rotation, unless the
/// operator says otherwise: long enough for every holder to renew.
pub const DEFAULT_ROOT_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// Signers of this node's issuers, by issuer id. Only this module reads
/// or fills it: a retired issuer's signer is dropped here, so nothing can
/// sign with its key again.
#[derive(Default)]
pub(crate) struct Signers(std::sync::Mutex<HashMap<String, Arc<CaSigner>>>);

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

impl Authority {
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
        let mut cache = self.signers.0.lock().expect("signer cache");
        if cache.is_empty() {
            return;
        }
        self.node
            .read_local(|s| cache.retain(|id, _| s.retired_at(id).is_none()));
    }

    pub(crate) fn random_serial(&self) -> Result<Vec<u8>, AuthorityError> {
        let mut s: [u8; 16] = self.random()?;
        s[0] = (s[0] & 0x7f).max(1);
        Ok(s.to_vec())
    }

    /// The signer of `issuer_id`, unsealed on first use and cached. The
    /// unsealed PKCS#8 bytes are zeroized as soon as the key is loaded.
    pub(crate) fn signer(&self, issuer_id: &str) -> Result<Arc<CaSigner>, AuthorityError> {
        if let Some(s) = self.signers.0.lock().expect("signer cache").get(issuer_id) {
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
            .0
            .lock()
            .expect("signer cache")
            .insert(issuer_id.into(), signer.clone());
        Ok(signer)
    }

    /// Who signs a leaf naming `uris`: this region's active intermediate,
    /// or, for a node identity (`spiffe://<td>/node/<id>`), the current
    /// root itself. Clients accept only root-signed node certificates, so
    /// nothing an intermediate signs, whatever the policy allows, can pass
    /// as a node.
    pub(crate) async fn issuer_for(
        &self,
        uris: &[String],
    ) -> Result<(String, Arc<CaSigner>), AuthorityError> {
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
