//! The hierarchy's life after bootstrap: which intermediate signs for each
//! region, which root new intermediates chain to, cross certificates of a
//! root rollover, retirement, and forced-renewal markers.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::State;
use crate::command::{CrossCert, HierarchyChange, IssuerRecord, Outcome, Rejection};

/// Forced-renewal markers kept (the newest); agents act on ones newer than
/// the last they handled.
pub const MAX_FORCE_RENEW_MARKERS: usize = 64;

/// "Renew every certificate of this issuer or namespace issued before
/// `at_ms`."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceRenewMarker {
    /// Grows by one per marker.
    pub id: u64,
    /// Only certificates of this issuer (None: every issuer).
    pub issuer: Option<String>,
    /// Only certificates of this namespace (None: every namespace).
    pub namespace: Option<String>,
    /// Certificates issued before this time (Unix milliseconds) renew.
    pub at_ms: u64,
}

/// Where an issuer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuerPhase {
    /// The root new intermediates chain to.
    CurrentRoot,
    /// A replaced root, still in the bundle.
    PreviousRoot,
    /// Its region's signer.
    Active,
    /// Replaced; serves CRL/OCSP until its last leaf expires.
    Retiring,
    /// Out of the bundle, key destroyed.
    Retired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Hierarchy {
    /// Region -> the intermediate that signs its new leaves.
    active: BTreeMap<String, String>,
    current_root: Option<String>,
    cross: Vec<CrossCert>,
    /// Issuer -> the latest notAfter of any leaf it signed (ms).
    last_leaf_expiry: BTreeMap<String, u64>,
    /// Issuer -> when it was retired (ms).
    retired: BTreeMap<String, u64>,
    /// Replaced root -> the earliest time it may leave the bundle (ms).
    withdraw_after: BTreeMap<String, u64>,
    force_renew: VecDeque<ForceRenewMarker>,
    next_marker: u64,
    /// Grows with every change to what the trust bundle holds.
    version: u64,
}

impl Hierarchy {
    /// A newly registered issuer: the first root becomes current, the
    /// first intermediate of a region becomes its signer.
    pub(super) fn registered(&mut self, rec: &IssuerRecord) {
        match (&rec.region, &rec.parent) {
            (_, None) => {
                self.current_root.get_or_insert_with(|| rec.id.clone());
            }
            (Some(region), Some(_)) => {
                self.active
                    .entry(region.clone())
                    .or_insert_with(|| rec.id.clone());
            }
            (None, Some(_)) => {}
        }
        self.version += 1;
    }

    pub(super) fn leaf_recorded(&mut self, issuer: &str, not_after_ms: u64) {
        let e = self.last_leaf_expiry.entry(issuer.to_string()).or_insert(0);
        *e = (*e).max(not_after_ms);
    }

    /// The latest notAfter of a leaf recorded under `issuer` (0 for none).
    pub(super) fn last_leaf_expiry(&self, issuer: &str) -> u64 {
        self.last_leaf_expiry.get(issuer).copied().unwrap_or(0)
    }

    pub(super) fn is_retired(&self, id: &str) -> bool {
        self.retired.contains_key(id)
    }
}

fn reject(id: &str, reason: impl Into<String>) -> Outcome {
    Outcome::Rejected(Rejection::NotRetirable {
        id: id.to_string(),
        reason: reason.into(),
    })
}

use super::invalid;

impl State {
    /// The intermediate that signs new leaves of `region`.
    pub fn active_issuer(&self, region: &str) -> Option<&IssuerRecord> {
        let id = self
            .hierarchy
            .active
            .get(region)
            .map(String::as_str)
            .unwrap_or(region);
        self.issuers
            .get(id)
            .filter(|_| !self.hierarchy.is_retired(id))
    }

    /// The root new intermediates chain to (the newest after a root rotation).
    pub fn current_root(&self) -> Option<&IssuerRecord> {
        self.issuers.get(self.hierarchy.current_root.as_deref()?)
    }

    /// Where an issuer is in its life; None for an unknown one.
    pub fn issuer_phase(&self, id: &str) -> Option<IssuerPhase> {
        let rec = self.issuers.get(id)?;
        Some(if self.hierarchy.is_retired(id) {
            IssuerPhase::Retired
        } else if rec.parent.is_none() {
            if self.hierarchy.current_root.as_deref() == Some(id) {
                IssuerPhase::CurrentRoot
            } else {
                IssuerPhase::PreviousRoot
            }
        } else if rec
            .region
            .as_ref()
            .is_some_and(|r| self.hierarchy.active.get(r).map(String::as_str) == Some(id))
        {
            IssuerPhase::Active
        } else {
            IssuerPhase::Retiring
        })
    }

    /// When an issuer was retired, if it was.
    pub fn retired_at(&self, id: &str) -> Option<u64> {
        self.hierarchy.retired.get(id).copied()
    }

    /// Cross certificates in force (both ends not retired), oldest first.
    pub fn cross_certs(&self) -> impl Iterator<Item = &CrossCert> {
        self.hierarchy.cross.iter().filter(|c| {
            !self.hierarchy.is_retired(&c.subject) && !self.hierarchy.is_retired(&c.signer)
        })
    }

    /// Grows whenever the trust bundle (roots, intermediates, cross certificates) changes, so clients refetch it only then.
    pub fn bundle_version(&self) -> u64 {
        self.hierarchy.version
    }

    /// The forced-renewal markers kept, oldest first.
    pub fn force_renew_markers(&self) -> impl Iterator<Item = &ForceRenewMarker> {
        self.hierarchy.force_renew.iter()
    }

    /// Issuers a `Retire` at `at_ms` would retire: what a leader proposes
    /// as time passes.
    pub fn retirable(&self, at_ms: u64) -> Vec<String> {
        self.issuers
            .keys()
            .filter(|id| self.retire_check(id, at_ms).is_ok())
            .cloned()
            .collect()
    }

    fn retire_check(&self, id: &str, at_ms: u64) -> Result<(), String> {
        let Some(rec) = self.issuers.get(id) else {
            return Err("it is not registered".into());
        };
        if self.hierarchy.is_retired(id) {
            return Err("it is already retired".into());
        }
        match &rec.parent {
            Some(_) => {
                if let Some(region) = &rec.region {
                    if self.hierarchy.active.get(region).map(String::as_str) == Some(id) {
                        return Err(format!("it is region {region}'s signer; rotate first"));
                    }
                }
                let last = self.hierarchy.last_leaf_expiry(id);
                if last > at_ms {
                    return Err(format!("its last leaf expires at {last} ms"));
                }
                Ok(())
            }
            None => {
                if self.hierarchy.current_root.as_deref() == Some(id) {
                    return Err("it is the current root; rotate the root first".into());
                }
                let after = self.hierarchy.withdraw_after.get(id).copied().unwrap_or(0);
                if after > at_ms {
                    return Err(format!("its grace window lasts until {after} ms"));
                }
                if let Some(child) = self
                    .issuers
                    .values()
                    .find(|i| i.parent.as_deref() == Some(id) && !self.hierarchy.is_retired(&i.id))
                {
                    return Err(format!("intermediate {} under it is not retired", child.id));
                }
                Ok(())
            }
        }
    }
}

pub(super) fn apply(state: &mut State, change: &HierarchyChange, at_ms: u64) -> Outcome {
    match change {
        HierarchyChange::Rotate {
            root,
            cross,
            intermediates,
            root_grace_ms,
        } => rotate(
            state,
            root.as_ref(),
            cross,
            intermediates,
            *root_grace_ms,
            at_ms,
        ),
        HierarchyChange::Retire { id } => {
            if let Err(reason) = state.retire_check(id, at_ms) {
                return reject(id, reason);
            }
            state.hierarchy.retired.insert(id.clone(), at_ms);
            state.hierarchy.withdraw_after.remove(id);
            if let Some(rec) = state.issuers.get_mut(id) {
                // Destroyed: the sealed key leaves the state (and with the
                // next compaction, the log).
                rec.sealed_key = None;
            }
            state.hierarchy.version += 1;
            Outcome::HierarchyChanged {
                bundle_version: state.hierarchy.version,
            }
        }
        HierarchyChange::ForceRenew { issuer, namespace } => {
            if issuer.is_none() && namespace.is_none() {
                return invalid("force-renew needs an issuer or a namespace");
            }
            if let Some(i) = issuer {
                if !state.issuers.contains_key(i) {
                    return Outcome::Rejected(Rejection::UnknownIssuer { id: i.clone() });
                }
            }
            let h = &mut state.hierarchy;
            h.next_marker += 1;
            h.force_renew.push_back(ForceRenewMarker {
                id: h.next_marker,
                issuer: issuer.clone(),
                namespace: namespace.clone(),
                at_ms,
            });
            while h.force_renew.len() > MAX_FORCE_RENEW_MARKERS {
                h.force_renew.pop_front();
            }
            h.version += 1;
            Outcome::HierarchyChanged {
                bundle_version: h.version,
            }
        }
    }
}

/// All checks first, then every change: a rotation applies whole or not
/// at all.
fn rotate(
    state: &mut State,
    root: Option<&IssuerRecord>,
    cross: &[CrossCert],
    intermediates: &[IssuerRecord],
    root_grace_ms: u64,
    at_ms: u64,
) -> Outcome {
    if intermediates.is_empty() {
        return invalid("a rotation names at least one new intermediate");
    }
    let mut new_ids = std::collections::BTreeSet::new();
    let all_new = root.into_iter().chain(intermediates);
    for rec in all_new {
        if rec.id.is_empty() || rec.cert_der.is_empty() || rec.sealed_key.is_none() {
            return invalid("a rotated issuer needs an id, a certificate and its sealed key");
        }
        if rec.crl_shards == 0 || rec.crl_shards > crate::MAX_CRL_SHARDS {
            return invalid(format!(
                "issuer {} needs 1 to {} CRL shards",
                rec.id,
                crate::MAX_CRL_SHARDS
            ));
        }
        if state.issuers.contains_key(&rec.id) || !new_ids.insert(rec.id.clone()) {
            return Outcome::Rejected(Rejection::IssuerExists { id: rec.id.clone() });
        }
    }
    let parent_root = match root {
        Some(r) => {
            if r.parent.is_some() || r.region.is_some() {
                return invalid(format!(
                    "new root {} must have no parent and no region",
                    r.id
                ));
            }
            if state.hierarchy.current_root.is_none() {
                return invalid("there is no root to rotate from; bootstrap the hierarchy first");
            }
            r.id.clone()
        }
        None => match &state.hierarchy.current_root {
            Some(r) => r.clone(),
            None => return invalid("there is no root; bootstrap the hierarchy first"),
        },
    };
    let mut regions = std::collections::BTreeSet::new();
    for rec in intermediates {
        let Some(region) = &rec.region else {
            return invalid(format!("intermediate {} names no region", rec.id));
        };
        if rec.parent.as_deref() != Some(parent_root.as_str()) {
            return invalid(format!(
                "intermediate {} must be signed by root {parent_root}",
                rec.id
            ));
        }
        if !regions.insert(region.clone()) {
            return invalid(format!("two new intermediates for region {region}"));
        }
    }
    for c in cross {
        let known = |id: &str| {
            (state.issuers.contains_key(id) && !state.hierarchy.is_retired(id))
                || root.is_some_and(|r| r.id == id)
        };
        if !known(&c.subject) || !known(&c.signer) || c.subject == c.signer {
            return invalid(format!(
                "cross certificate {} by {} must join two different live roots",
                c.subject, c.signer
            ));
        }
    }
    if root.is_some() && cross.is_empty() {
        return invalid("a new root needs cross certificates with the current one");
    }

    if let Some(r) = root {
        let old = state
            .hierarchy
            .current_root
            .replace(r.id.clone())
            .expect("checked");
        state
            .hierarchy
            .withdraw_after
            .insert(old, at_ms.saturating_add(root_grace_ms));
        state.issuers.insert(r.id.clone(), r.clone());
    }
    state.hierarchy.cross.extend(cross.iter().cloned());
    for rec in intermediates {
        state.issuers.insert(rec.id.clone(), rec.clone());
        state
            .hierarchy
            .active
            .insert(rec.region.clone().expect("checked"), rec.id.clone());
    }
    state.hierarchy.version += 1;
    Outcome::HierarchyChanged {
        bundle_version: state.hierarchy.version,
    }
}
