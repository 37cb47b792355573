//! CRLs per (issuer, shard), built when revocations commit and served from
//! memory.
//!
//! Each node watches the per-shard versions the ledger keeps and rebuilds
//! only shards whose version moved (a revocation, or an entry dropped after
//! its certificate expired), plus any CRL past half its validity. A request
//! for a CRL never signs anything: it reads the last published bytes.
//!
//! Numbers come from the ledger (`NextCrlNumber` on "issuer#shard"), so they
//! increase across every node that signs. After taking a number the node
//! reads through the leader (read index), so a CRL with a higher number
//! always lists at least what any lower-numbered CRL of that shard listed,
//! whichever node built either.
//!
//! Delta CRLs (RFC 5280 5.2.4) share the shard's numbering: every rebuild
//! publishes a full CRL and a delta with the same number, the delta listing
//! what was revoked since its base, a full CRL that moves forward every
//! `delta_base_every`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use quorumca_ca::{CrlEntry, CrlSpec};
use quorumca_consensus::now_ms;
use quorumca_ledger::{Command, Outcome, Proposal, Serial};

use crate::authority::{rejected, Authority};
use crate::error::AuthorityError;

/// One signed CRL as served.
#[derive(Clone, Debug)]
pub struct PublishedCrl {
    /// Its CRL number, from the ledger.
    pub number: u64,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// The signed CRL, DER.
    pub der: Arc<Vec<u8>>,
}

/// The full CRL a shard's deltas build on.
#[derive(Clone, Debug)]
struct Base {
    number: u64,
    serials: BTreeSet<Serial>,
    at: i64,
}

#[derive(Debug)]
struct ShardCrls {
    /// The ledger's shard version this was built from.
    version: u64,
    built_at: i64,
    full: PublishedCrl,
    /// What `full` lists: the base of the next rebase.
    full_serials: BTreeSet<Serial>,
    delta: PublishedCrl,
    base: Base,
}

#[derive(Debug, Default)]
pub(crate) struct CrlCache {
    shards: RwLock<HashMap<(String, u64), Arc<ShardCrls>>>,
}

impl CrlCache {
    fn get(&self, issuer: &str, shard: u64) -> Option<Arc<ShardCrls>> {
        self.shards
            .read()
            .expect("crl cache")
            .get(&(issuer.to_string(), shard))
            .cloned()
    }
}

/// Backdating thisUpdate tolerates relying parties whose clocks run a
/// little behind ours.
const THIS_UPDATE_BACKDATE: i64 = 60;

impl Authority {
    /// The URL a leaf of `issuer` in `shard` names as its CRL distribution
    /// point; the full CRL is served there.
    pub fn crl_url(&self, issuer: &str, shard: u64) -> String {
        format!("{}/crl/{issuer}/{shard}.crl", self.cfg.base_url)
    }

    /// The current full (or delta) CRL of one shard, as last built. Never
    /// signs: a shard not built yet is UNAVAILABLE, not built on demand.
    pub fn crl(
        &self,
        issuer: &str,
        shard: u64,
        delta: bool,
    ) -> Result<PublishedCrl, AuthorityError> {
        // A retired issuer has no live leaf left to revoke, and no key to
        // sign with: its CRLs are withdrawn with it.
        let shards = self
            .node
            .read_local(|s| {
                s.issuer(issuer)
                    .filter(|_| s.retired_at(issuer).is_none())
                    .map(|i| i.crl_shards.max(1))
            })
            .ok_or_else(|| AuthorityError::NoIssuer(issuer.into()))?;
        if shard >= shards {
            return Err(AuthorityError::UnknownCrlShard {
                issuer: issuer.into(),
                shard,
                last: shards - 1,
            });
        }
        let c = self
            .crls
            .get(issuer, shard)
            .ok_or_else(|| AuthorityError::CrlNotReady {
                issuer: issuer.into(),
                shard,
            })?;
        Ok(if delta {
            c.delta.clone()
        } else {
            c.full.clone()
        })
    }

    /// Rebuilds every CRL shard whose revocations changed since it was last
    /// built, or that is past half its validity, for every issuer whose key
    /// this node can unseal. Returns how many shards were rebuilt. A shard
    /// that fails (no quorum for a CRL number) is left as it was and
    /// retried on the next call.
    pub async fn refresh_crls(&self) -> Result<usize, AuthorityError> {
        if !self.can_sign() {
            return Ok(0);
        }
        let issuers: Vec<(String, u64)> = self.node.read_local(|s| {
            s.issuers()
                .filter(|i| i.sealed_key.is_some())
                .map(|i| (i.id.clone(), i.crl_shards.max(1)))
                .collect()
        });
        // Drop what retired issuers (keys destroyed) left in the caches;
        // the signer cache is checked here, off the issuance path.
        self.crls
            .shards
            .write()
            .expect("crl cache")
            .retain(|(i, _), _| issuers.iter().any(|(id, _)| id == i));
        self.forget_retired_signers();
        let now = now_ms() as i64 / 1000;
        let refresh_after = (self.cfg.crl_validity.as_secs() / 2) as i64;
        let mut built = 0;
        let mut first_error = None;
        for (issuer, shards) in issuers {
            for shard in 0..shards {
                let version = self
                    .node
                    .read_local(|s| s.crl_shard(&issuer, shard).map(|c| c.version))
                    .unwrap_or(0);
                let cached = self.crls.get(&issuer, shard);
                let due = cached
                    .as_ref()
                    .is_none_or(|c| c.version != version || now - c.built_at >= refresh_after);
                if !due {
                    continue;
                }
                match self.build_shard(&issuer, shard, cached.as_deref()).await {
                    Ok(()) => built += 1,
                    Err(e) => {
                        tracing::debug!(%issuer, shard, error = %e, "CRL rebuild failed; will retry");
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) if built == 0 => Err(e),
            _ => Ok(built),
        }
    }

    /// Takes a CRL number, then reads the shard through the leader, so the
    /// CRL lists every revocation committed before its number.
    async fn numbered_entries(
        &self,
        issuer: &str,
        shard: u64,
    ) -> Result<(u64, u64, Vec<(Serial, CrlEntry)>), AuthorityError> {
        let p = Proposal::new(
            now_ms(),
            Command::NextCrlNumber {
                issuer: format!("{issuer}#{shard}"),
            },
        );
        let number = match self.propose(p).await?.0 {
            Outcome::CrlNumber { number, .. } => number,
            o => return Err(rejected(o)),
        };
        let (version, entries) = self
            .node
            .read_linearizable(|s| {
                let Some(c) = s.crl_shard(issuer, shard) else {
                    return (0, Vec::new());
                };
                let entries = c
                    .serials
                    .iter()
                    .filter_map(|serial| {
                        s.revocation(issuer, serial).map(|r| {
                            (
                                serial.clone(),
                                CrlEntry {
                                    serial: serial.0.clone(),
                                    revoked_at: (r.revoked_at_ms / 1000) as i64,
                                    reason: r.reason.code(),
                                },
                            )
                        })
                    })
                    .collect::<Vec<_>>();
                (c.version, entries)
            })
            .await?;
        Ok((number, version, entries))
    }

    fn sign_shard_crl(
        &self,
        issuer: &str,
        shard: u64,
        number: u64,
        delta_base: Option<u64>,
        entries: Vec<CrlEntry>,
    ) -> Result<PublishedCrl, AuthorityError> {
        let signer = self.signer(issuer)?;
        let now = now_ms() as i64 / 1000;
        let validity = self
            .cfg
            .crl_validity
            .as_secs()
            .min(quorumca_ca::MAX_CRL_VALIDITY_SECS as u64) as i64;
        let (this_update, next_update) = (now - THIS_UPDATE_BACKDATE, now + validity);
        let der = quorumca_ca::sign_crl(
            &signer,
            &CrlSpec {
                number,
                this_update,
                next_update,
                // A delta has the same scope as its full CRL (RFC 5280
                // 5.2.4), so the same issuing distribution point; it is
                // served at `<shard>-delta.crl` beside it.
                distribution_point: Some(self.crl_url(issuer, shard)),
                delta_base,
                freshest: delta_base
                    .is_none()
                    .then(|| format!("{}/crl/{issuer}/{shard}-delta.crl", self.cfg.base_url)),
                entries,
            },
        )?;
        Ok(PublishedCrl {
            number,
            this_update,
            next_update,
            der: Arc::new(der),
        })
    }

    async fn build_shard(
        &self,
        issuer: &str,
        shard: u64,
        previous: Option<&ShardCrls>,
    ) -> Result<(), AuthorityError> {
        let now = now_ms() as i64 / 1000;
        // A delta needs an earlier full CRL as its base. The first build of
        // a shard signs that base first (it is published only as the base);
        // later, the base moves to the previous full CRL every
        // `delta_base_every`.
        let base = match previous {
            Some(p) if now - p.base.at < self.cfg.delta_base_every.as_secs() as i64 => {
                p.base.clone()
            }
            Some(p) => Base {
                number: p.full.number,
                serials: p.full_serials.clone(),
                at: now,
            },
            None => {
                let (number, _, entries) = self.numbered_entries(issuer, shard).await?;
                let serials = entries.iter().map(|(s, _)| s.clone()).collect();
                let entries = entries.into_iter().map(|(_, e)| e).collect();
                self.sign_shard_crl(issuer, shard, number, None, entries)?;
                Base {
                    number,
                    serials,
                    at: now,
                }
            }
        };
        let (number, version, entries) = self.numbered_entries(issuer, shard).await?;
        let delta_entries = entries
            .iter()
            .filter(|(s, _)| !base.serials.contains(s))
            .map(|(_, e)| e.clone())
            .collect();
        let delta = self.sign_shard_crl(issuer, shard, number, Some(base.number), delta_entries)?;
        let full_serials = entries.iter().map(|(s, _)| s.clone()).collect();
        let full = self.sign_shard_crl(
            issuer,
            shard,
            number,
            None,
            entries.into_iter().map(|(_, e)| e).collect(),
        )?;
        let built = ShardCrls {
            version,
            built_at: now,
            full,
            full_serials,
            delta,
            base,
        };
        let mut map = self.crls.shards.write().expect("crl cache");
        let key = (issuer.to_string(), shard);
        // Two rebuilds may race; keep the one with the higher number.
        if map.get(&key).is_none_or(|c| c.full.number < number) {
            map.insert(key, Arc::new(built));
        }
        Ok(())
    }

    /// Drops records (and CRL entries) of certificates that expired more
    /// than `grace` ago. Only the leader proposes, so the cluster prunes
    /// once per round rather than once per node.
    pub async fn prune_expired(&self, grace: std::time::Duration) -> Result<u64, AuthorityError> {
        if !self.node.is_leader() {
            return Ok(0);
        }
        let before_ms = now_ms().saturating_sub(grace.as_millis() as u64);
        if self
            .node
            .read_local(|s| s.expired_before(before_ms).next().is_none())
        {
            return Ok(0);
        }
        match self
            .propose(Proposal::new(now_ms(), Command::PruneExpired { before_ms }))
            .await?
            .0
        {
            Outcome::Pruned { records, .. } => Ok(records),
            o => Err(rejected(o)),
        }
    }
}
