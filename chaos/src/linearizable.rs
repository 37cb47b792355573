//! Linearizability of each certificate's operations (Wing & Gong's search
//! with Lowe's memoisation), against the sequential model of one
//! certificate: absent, then issued, then revoked.
//!
//! Certificates are independent objects in the ledger, so the history is
//! split per (issuer, serial) and each part searched on its own; parts are
//! small (an issue, a few revokes and reads), so the exponential worst case
//! never bites. Issue operations are attributed to the key they returned;
//! an issue whose result is unknown returned no key and is not attributed
//! (its certificate, if any, has no acknowledged operation to contradict).

use std::collections::{BTreeMap, HashSet};

use crate::history::{Action, CertKey, History, Op, OpResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum State {
    Absent,
    Issued,
    Revoked,
}

/// The most operations one key may have in a history: the search keeps a
/// 128-bit set of what it has placed.
const MAX_OPS_PER_KEY: usize = 128;

/// A witness that one key's history is linearizable: history indexes in a
/// legal order (unknown-outcome operations that never took effect are
/// left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linearization {
    /// The certificate.
    pub key: CertKey,
    /// Indexes into the history, in a legal order.
    pub order: Vec<usize>,
}

struct KeyOp {
    index: usize,
    invoked: u64,
    /// u64::MAX for an unknown outcome: no completion bounds it.
    completed: u64,
    /// Must it be placed? Unknown outcomes may also never have happened.
    definite: bool,
    op: Op,
}

/// The states `op` may move `s` to (empty: not allowed from `s`).
fn steps(s: State, op: &Op) -> Vec<State> {
    use State::*;
    match (&op.action, &op.result) {
        (Action::Issue, OpResult::Issued(_)) => match s {
            Absent => vec![Issued],
            _ => vec![],
        },
        (Action::Revoke(_), OpResult::Revoked) => match s {
            Issued => vec![Revoked],
            _ => vec![],
        },
        (Action::Revoke(_), OpResult::AlreadyRevoked)
        | (Action::Status(_), OpResult::IsRevoked) => match s {
            Revoked => vec![Revoked],
            _ => vec![],
        },
        (Action::Revoke(_) | Action::Status(_), OpResult::NotFound) => match s {
            Absent => vec![Absent],
            _ => vec![],
        },
        (Action::Status(_), OpResult::Good) => match s {
            Issued => vec![Issued],
            _ => vec![],
        },
        // A revoke whose answer was lost: it revoked, or it found the
        // certificate already revoked or absent and changed nothing.
        (Action::Revoke(_), OpResult::Unknown) => match s {
            Issued => vec![Revoked],
            other => vec![other],
        },
        // Anything else says nothing about the certificate.
        _ => vec![s],
    }
}

fn key_of(op: &Op) -> Option<CertKey> {
    match (&op.action, &op.result) {
        (_, OpResult::Failed(_)) => None,
        (Action::Issue, OpResult::Issued(k)) => Some(k.clone()),
        (Action::Issue, _) => None,
        (Action::Status(_), OpResult::Unknown) => None,
        (Action::Revoke(k) | Action::Status(k), _) => Some(k.clone()),
    }
}

/// Checks every key's operations; the witnesses, or the first key with no
/// legal order and why.
pub fn linearizable(history: &History) -> Result<Vec<Linearization>, (CertKey, String)> {
    let mut per_key: BTreeMap<CertKey, Vec<KeyOp>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        if let Some(key) = key_of(op) {
            let definite = op.completed_ns.is_some() && op.result != OpResult::Unknown;
            per_key.entry(key).or_default().push(KeyOp {
                index,
                invoked: op.invoked_ns,
                completed: if definite {
                    op.completed_ns.expect("definite")
                } else {
                    u64::MAX
                },
                definite,
                op: op.clone(),
            });
        }
    }
    let mut out = Vec::new();
    for (key, mut ops) in per_key {
        if ops.len() > MAX_OPS_PER_KEY {
            return Err((
                key,
                format!(
                    "{} operations on one certificate; the checker takes at most {MAX_OPS_PER_KEY}",
                    ops.len()
                ),
            ));
        }
        ops.sort_by_key(|o| (o.invoked, o.index));
        let mut seen = HashSet::new();
        let mut order = Vec::new();
        if search(&ops, 0, State::Absent, &mut seen, &mut order) {
            out.push(Linearization {
                order: order.iter().map(|&i| ops[i].index).collect(),
                key,
            });
        } else {
            let listing = ops
                .iter()
                .map(|o| {
                    format!(
                        "  #{} client {} {:?} -> {:?} [{} .. {}]",
                        o.index,
                        o.op.client,
                        o.op.action,
                        o.op.result,
                        o.invoked,
                        if o.definite {
                            o.completed.to_string()
                        } else {
                            "unknown".into()
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            return Err((
                key.clone(),
                format!(
                    "no order of the {} operations on {key} fits absent -> issued -> revoked \
                     and their real-time order:\n{listing}",
                    ops.len()
                ),
            ));
        }
    }
    Ok(out)
}

/// Depth-first: place one more operation that may come next (none still
/// pending completed before it was invoked), in a state it allows.
fn search(
    ops: &[KeyOp],
    done: u128,
    state: State,
    seen: &mut HashSet<(u128, State)>,
    order: &mut Vec<usize>,
) -> bool {
    let pending_definite = ops
        .iter()
        .enumerate()
        .filter(|(i, o)| done & (1 << i) == 0 && o.definite);
    let Some(earliest_completion) = pending_definite.map(|(_, o)| o.completed).min() else {
        // Every acknowledged operation is placed; unknown ones left over
        // never took effect.
        return true;
    };
    if !seen.insert((done, state)) {
        return false;
    }
    for (i, o) in ops.iter().enumerate() {
        if done & (1 << i) != 0 || o.invoked > earliest_completion {
            continue;
        }
        for next in steps(state, &o.op) {
            order.push(i);
            if search(ops, done | (1 << i), next, seen, order) {
                return true;
            }
            order.pop();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, action: Action, at: (u64, Option<u64>), result: OpResult) -> Op {
        Op {
            client,
            action,
            invoked_ns: at.0,
            completed_ns: at.1,
            result,
        }
    }

    fn key() -> CertKey {
        CertKey::new("eu", "01")
    }

    #[test]
    fn a_sequential_life_is_linearizable() {
        let h = History {
            ops: vec![
                op(1, Action::Issue, (0, Some(10)), OpResult::Issued(key())),
                op(2, Action::Status(key()), (11, Some(12)), OpResult::Good),
                op(1, Action::Revoke(key()), (13, Some(20)), OpResult::Revoked),
                op(
                    2,
                    Action::Revoke(key()),
                    (21, Some(22)),
                    OpResult::AlreadyRevoked,
                ),
                op(
                    3,
                    Action::Status(key()),
                    (23, Some(24)),
                    OpResult::IsRevoked,
                ),
            ],
        };
        let w = linearizable(&h).unwrap();
        assert_eq!(w[0].order, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // The read overlaps the revoke: seeing "good" is legal.
        let h = History {
            ops: vec![
                op(1, Action::Issue, (0, Some(10)), OpResult::Issued(key())),
                op(1, Action::Revoke(key()), (11, Some(30)), OpResult::Revoked),
                op(2, Action::Status(key()), (12, Some(31)), OpResult::Good),
            ],
        };
        assert!(linearizable(&h).is_ok());
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_revocation_is_caught() {
        let h = History {
            ops: vec![
                op(1, Action::Issue, (0, Some(10)), OpResult::Issued(key())),
                op(1, Action::Revoke(key()), (11, Some(20)), OpResult::Revoked),
                op(2, Action::Status(key()), (21, Some(22)), OpResult::Good),
            ],
        };
        let (k, why) = linearizable(&h).unwrap_err();
        assert_eq!(k, key());
        assert!(why.contains("#2 client 2"), "{why}");
    }

    #[test]
    fn two_acknowledged_revocations_of_one_certificate_are_caught() {
        // Both cannot have been the one that revoked it.
        let h = History {
            ops: vec![
                op(1, Action::Issue, (0, Some(10)), OpResult::Issued(key())),
                op(1, Action::Revoke(key()), (11, Some(20)), OpResult::Revoked),
                op(2, Action::Revoke(key()), (12, Some(21)), OpResult::Revoked),
            ],
        };
        assert!(linearizable(&h).is_err());
    }

    #[test]
    fn a_read_before_the_issue_was_invoked_cannot_see_it() {
        let h = History {
            ops: vec![
                op(2, Action::Status(key()), (0, Some(5)), OpResult::Good),
                op(1, Action::Issue, (6, Some(10)), OpResult::Issued(key())),
            ],
        };
        assert!(linearizable(&h).is_err());
    }

    #[test]
    fn an_unknown_revocation_may_land_late_or_never() {
        let lost = op(1, Action::Revoke(key()), (11, None), OpResult::Unknown);
        // Took effect long after its client gave up...
        let late = History {
            ops: vec![
                op(1, Action::Issue, (0, Some(10)), OpResult::Issued(key())),
                lost.clone(),
                op(2, Action::Status(key()), (50, Some(51)), OpResult::Good),
                op(
                    2,
                    Action::Status(key()),
                    (90, Some(91)),
                    OpResult::IsRevoked,
                ),
            ],
        };
        assert!(linearizable(&late).is_ok());
        // ...or never.
        let never = History {
            ops: vec![
                op(1, Action::Issue, (0, Some(10)), OpResult::Issued(key())),
                lost,
                op(2, Action::Status(key()), (90, Some(91)), OpResult::Good),
            ],
        };
        assert!(linearizable(&never).is_ok());
        // But it cannot un-revoke.
        let undone = History {
            ops: vec![
                op(1, Action::Issue, (0, Some(10)), OpResult::Issued(key())),
                op(1, Action::Revoke(key()), (11, None), OpResult::Unknown),
                op(
                    2,
                    Action::Status(key()),
                    (50, Some(51)),
                    OpResult::IsRevoked,
                ),
                op(2, Action::Status(key()), (90, Some(91)), OpResult::Good),
            ],
        };
        assert!(linearizable(&undone).is_err());
    }

    #[test]
    fn failed_operations_are_left_out() {
        let h = History {
            ops: vec![
                op(1, Action::Issue, (0, Some(10)), OpResult::Issued(key())),
                op(
                    2,
                    Action::Revoke(key()),
                    (11, Some(12)),
                    OpResult::Failed("PermissionDenied".into()),
                ),
                op(2, Action::Status(key()), (13, Some(14)), OpResult::Good),
            ],
        };
        assert!(linearizable(&h).is_ok());
    }
}
