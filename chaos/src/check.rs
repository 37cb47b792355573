//! The invariant checker run after a drill has healed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{Action, CertKey, History, OpResult};
use crate::linearizable::linearizable;

/// What one node reports after healing, gathered by the drill from that
/// node alone (its local ledger, its CRLs, its OCSP responder).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node's id.
    pub node: u64,
    /// The last index applied to its ledger.
    pub applied_index: u64,
    /// Hex of the ledger's state hash at `applied_index`.
    pub ledger_hash: String,
    /// Hex of the audit chain head at `applied_index`.
    pub audit_head: String,
    /// Audit entries the node lists: sequence number -> chain head after it.
    pub audit_entries: BTreeMap<u64, String>,
    /// Every issuance record the node holds (live and archived).
    pub records: BTreeSet<CertKey>,
    /// Every revocation in its ledger.
    pub revoked: BTreeSet<CertKey>,
    /// Serials listed in the CRLs this node serves.
    pub crl_revoked: BTreeSet<CertKey>,
    /// Certificates its OCSP responder answered "revoked" for (the drill
    /// asks about every acknowledged revocation).
    pub ocsp_revoked: BTreeSet<CertKey>,
}

/// One broken invariant, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Violation {
    /// Two acknowledged issuances returned the same certificate.
    #[error("duplicate serial: {key} was returned by {count} acknowledged issuances")]
    DuplicateSerial {
        /// The certificate.
        key: CertKey,
        /// How many acknowledgements named it.
        count: usize,
    },
    /// An acknowledged issuance is missing from a node.
    #[error("lost issuance: {key} was acknowledged but node {node} has no record of it")]
    LostIssuance {
        /// The certificate.
        key: CertKey,
        /// The node without it.
        node: u64,
    },
    /// An acknowledged revocation is missing from a node's ledger.
    #[error("lost revocation: {key} was acknowledged as revoked but node {node}'s ledger does not say so")]
    LostRevocation {
        /// The certificate.
        key: CertKey,
        /// The node without it.
        node: u64,
    },
    /// An acknowledged revocation is missing from a node's CRLs.
    #[error("{key} is revoked (acknowledged) but missing from node {node}'s CRL")]
    NotInCrl {
        /// The certificate.
        key: CertKey,
        /// The node whose CRLs leave it out.
        node: u64,
    },
    /// A node's OCSP responder does not answer revoked for an acknowledged revocation.
    #[error("{key} is revoked (acknowledged) but node {node}'s OCSP does not answer revoked")]
    NotInOcsp {
        /// The certificate.
        key: CertKey,
        /// The node.
        node: u64,
    },
    /// Two nodes at one applied index disagree.
    #[error("nodes {a} and {b} differ at applied index {index}: {what}")]
    Diverged {
        /// The index.
        index: u64,
        /// One node.
        a: u64,
        /// The other.
        b: u64,
        /// What differs (ledger hash, audit head, an audit entry).
        what: String,
    },
    /// No order of one certificate's operations fits the model.
    #[error("not linearizable on {key}: {why}")]
    NotLinearizable {
        /// The certificate.
        key: CertKey,
        /// Which operations conflict.
        why: String,
    },
}

/// The checker's verdict: what was checked, and every violation found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Operations in the history.
    pub operations: usize,
    /// Operations with a definite, successful answer.
    pub acknowledged: usize,
    /// Acknowledged issuances.
    pub acknowledged_issuances: usize,
    /// Acknowledged revocations.
    pub acknowledged_revocations: usize,
    /// Certificates whose operations were checked for linearizability.
    pub certificates_checked_linearizable: usize,
    /// Nodes whose views were checked.
    pub nodes: usize,
    /// Every broken rule found; empty when the drill passed.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether no rule was broken.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs every rule over a drill's history and its nodes' views.
pub fn check(history: &History, nodes: &[NodeView]) -> Report {
    let mut r = Report {
        operations: history.ops.len(),
        acknowledged: history.ops.iter().filter(|o| o.acknowledged()).count(),
        nodes: nodes.len(),
        ..Default::default()
    };

    // Rule 1: an (issuer, serial) comes back from one issuance only.
    let mut issued: BTreeMap<CertKey, usize> = BTreeMap::new();
    for op in &history.ops {
        if let (Action::Issue, OpResult::Issued(k)) = (&op.action, &op.result) {
            *issued.entry(k.clone()).or_default() += 1;
        }
    }
    r.acknowledged_issuances = issued.values().sum();
    for (key, &count) in &issued {
        if count > 1 {
            r.violations.push(Violation::DuplicateSerial {
                key: key.clone(),
                count,
            });
        }
    }

    // Rules 2 and 3: acknowledged effects are everywhere.
    let revoked = history.acknowledged_revocations();
    r.acknowledged_revocations = revoked.len();
    for n in nodes {
        for key in issued.keys() {
            if !n.records.contains(key) {
                r.violations.push(Violation::LostIssuance {
                    key: key.clone(),
                    node: n.node,
                });
            }
        }
        for key in &revoked {
            if !n.revoked.contains(key) {
                r.violations.push(Violation::LostRevocation {
                    key: key.clone(),
                    node: n.node,
                });
            }
            if !n.crl_revoked.contains(key) {
                r.violations.push(Violation::NotInCrl {
                    key: key.clone(),
                    node: n.node,
                });
            }
            if !n.ocsp_revoked.contains(key) {
                r.violations.push(Violation::NotInOcsp {
                    key: key.clone(),
                    node: n.node,
                });
            }
        }
    }

    // Rule 4: same index, same ledger; audit logs agree where they overlap.
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let diverged = |what: String| Violation::Diverged {
                index: a.applied_index.min(b.applied_index),
                a: a.node,
                b: b.node,
                what,
            };
            if a.applied_index == b.applied_index {
                if a.ledger_hash != b.ledger_hash {
                    r.violations.push(diverged(format!(
                        "ledger hash {} vs {}",
                        a.ledger_hash, b.ledger_hash
                    )));
                }
                if a.audit_head != b.audit_head {
                    r.violations.push(diverged(format!(
                        "audit chain head {} vs {}",
                        a.audit_head, b.audit_head
                    )));
                }
            }
            if let Some((seq, ha, hb)) = a
                .audit_entries
                .iter()
                .filter_map(|(seq, ha)| b.audit_entries.get(seq).map(|hb| (seq, ha, hb)))
                .find(|(_, ha, hb)| ha != hb)
            {
                r.violations.push(diverged(format!(
                    "audit entry {seq} has chain head {ha} vs {hb}"
                )));
            }
        }
    }

    // Rule 5: per certificate, a legal sequential order exists.
    match linearizable(history) {
        Ok(witnesses) => r.certificates_checked_linearizable = witnesses.len(),
        Err((key, why)) => r.violations.push(Violation::NotLinearizable { key, why }),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn k(serial: &str) -> CertKey {
        CertKey::new("eu", serial)
    }

    fn op(action: Action, at: u64, result: OpResult) -> Op {
        Op {
            client: 1,
            action,
            invoked_ns: at,
            completed_ns: Some(at + 1),
            result,
        }
    }

    /// Issue 01 and 02, revoke 02: a healthy history.
    fn history() -> History {
        History {
            ops: vec![
                op(Action::Issue, 0, OpResult::Issued(k("01"))),
                op(Action::Issue, 10, OpResult::Issued(k("02"))),
                op(Action::Revoke(k("02")), 20, OpResult::Revoked),
                op(Action::Issue, 30, OpResult::Failed("quota".into())),
            ],
        }
    }

    fn healthy_node(node: u64) -> NodeView {
        NodeView {
            node,
            applied_index: 40,
            ledger_hash: "aa".into(),
            audit_head: "bb".into(),
            audit_entries: [(1, "c1".to_string()), (2, "c2".to_string())].into(),
            records: [k("01"), k("02")].into(),
            revoked: [k("02")].into(),
            crl_revoked: [k("02")].into(),
            ocsp_revoked: [k("02")].into(),
        }
    }

    fn nodes() -> Vec<NodeView> {
        (1..=3).map(healthy_node).collect()
    }

    fn only(r: &Report) -> &Violation {
        assert_eq!(r.violations.len(), 1, "{:#?}", r.violations);
        &r.violations[0]
    }

    #[test]
    fn a_healthy_drill_passes() {
        let r = check(&history(), &nodes());
        assert!(r.ok(), "{:#?}", r.violations);
        assert_eq!(
            (r.operations, r.acknowledged, r.acknowledged_issuances),
            (4, 3, 2)
        );
        assert_eq!(r.acknowledged_revocations, 1);
        assert_eq!(r.certificates_checked_linearizable, 2);
    }

    #[test]
    fn rule_1_duplicate_serial() {
        let mut h = history();
        h.ops.push(op(Action::Issue, 50, OpResult::Issued(k("01"))));
        let r = check(&h, &nodes());
        assert!(r
            .violations
            .iter()
            .any(|v| matches!(v, Violation::DuplicateSerial { count: 2, .. })));
    }

    #[test]
    fn rule_2_lost_issuance_and_lost_revocation() {
        let mut n = nodes();
        n[1].records.remove(&k("01"));
        assert!(matches!(
            only(&check(&history(), &n)),
            Violation::LostIssuance { node: 2, .. }
        ));
        let mut n = nodes();
        n[2].revoked.clear();
        assert!(matches!(
            only(&check(&history(), &n)),
            Violation::LostRevocation { node: 3, .. }
        ));
    }

    #[test]
    fn rule_3_revocation_missing_from_crl_or_ocsp() {
        let mut n = nodes();
        n[0].crl_revoked.clear();
        assert!(matches!(
            only(&check(&history(), &n)),
            Violation::NotInCrl { node: 1, .. }
        ));
        let mut n = nodes();
        n[0].ocsp_revoked.clear();
        assert!(matches!(
            only(&check(&history(), &n)),
            Violation::NotInOcsp { node: 1, .. }
        ));
    }

    #[test]
    fn rule_4_diverged_ledgers_and_audit_chains() {
        let mut n = nodes();
        n[2].ledger_hash = "ff".into();
        let r = check(&history(), &n);
        assert_eq!(r.violations.len(), 2, "node 3 differs from nodes 1 and 2");
        assert!(r
            .violations
            .iter()
            .all(|v| matches!(v, Violation::Diverged { b: 3, .. })));
        // At different indexes the hashes may differ...
        let mut n = nodes();
        n[2].ledger_hash = "ff".into();
        n[2].audit_head = "ee".into();
        n[2].applied_index = 39;
        assert!(check(&history(), &n).ok());
        // ...but a shared audit entry may not.
        n[2].audit_entries.insert(2, "forged".into());
        assert!(matches!(
            check(&history(), &n).violations[0],
            Violation::Diverged { .. }
        ));
    }

    #[test]
    fn rule_5_not_linearizable() {
        let mut h = history();
        // Read after the acknowledged revocation completed, yet "good".
        h.ops.push(op(Action::Status(k("02")), 60, OpResult::Good));
        assert!(matches!(
            only(&check(&h, &nodes())),
            Violation::NotLinearizable { .. }
        ));
    }

    #[test]
    fn violations_serialise_with_their_rule() {
        let v = Violation::NotInCrl {
            key: k("02"),
            node: 1,
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["rule"], "not_in_crl");
        assert!(v.to_string().contains("eu/02"));
    }
}
