//! The operation log a drill's workload writes: one line of JSON per call.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A certificate as the ledger keys it: issuer id and lowercase hex serial.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CertKey {
    /// The issuer's id.
    pub issuer: String,
    /// The serial, lowercase hex.
    pub serial: String,
}

impl CertKey {
    /// A key, lowercasing the serial so keys from any source compare equal.
    pub fn new(issuer: impl Into<String>, serial: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            serial: serial.into().to_ascii_lowercase(),
        }
    }
}

impl std::fmt::Display for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.issuer, self.serial)
    }
}

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Issue (or renew): the certificate is only known from an ok result.
    Issue,
    /// Revoke this certificate.
    Revoke(CertKey),
    /// A linearizable read of one certificate's status.
    Status(CertKey),
}

/// What the client learned. `Failed` is a definite error (the request was
/// refused and changed nothing: invalid, denied, not the leader before
/// proposing); `Unknown` is a timeout or a lost connection after sending,
/// where the operation may or may not have taken effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpResult {
    /// The certificate issued.
    Issued(CertKey),
    /// The revocation is committed.
    Revoked,
    /// The certificate was revoked before.
    AlreadyRevoked,
    /// Revoke or Status of a certificate the ledger does not know.
    NotFound,
    /// Status: issued and not revoked.
    Good,
    /// Status: revoked.
    IsRevoked,
    /// A definite refusal; nothing changed. The message is the server's.
    Failed(String),
    /// Timed out or lost after sending: it may or may not have taken effect.
    Unknown,
}

/// One call, as its client saw it. Times are nanoseconds on one clock
/// shared by all clients of a drill (the driver's monotonic clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Which workload client made the call.
    pub client: u64,
    /// What it asked for.
    pub action: Action,
    /// When it was invoked, nanoseconds on the driver's clock.
    pub invoked_ns: u64,
    /// None when the outcome is unknown: the call may still take effect at
    /// any time after its invocation.
    pub completed_ns: Option<u64>,
    /// What it learned.
    pub result: OpResult,
}

impl Op {
    /// Acknowledged: the client got a definite, successful answer.
    pub fn acknowledged(&self) -> bool {
        !matches!(self.result, OpResult::Failed(_) | OpResult::Unknown)
    }
}

/// A whole drill's operations, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations, in any order.
    pub ops: Vec<Op>,
}

impl History {
    /// Reads JSON lines (one [`Op`] per line, blank lines ignored), as the
    /// workload writes them; the error names the line.
    pub fn from_json_lines(text: &str) -> Result<Self, String> {
        let mut ops = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            ops.push(
                serde_json::from_str(line).map_err(|e| format!("history line {}: {e}", i + 1))?,
            );
        }
        Ok(Self { ops })
    }

    /// One [`Op`] per line, as [`History::from_json_lines`] reads them.
    pub fn to_json_lines(&self) -> String {
        self.ops
            .iter()
            .map(|o| serde_json::to_string(o).expect("an op serialises") + "\n")
            .collect()
    }

    /// Certificates the history shows revoked for certain: a revocation
    /// acknowledged, or a status read that saw it revoked (a revocation
    /// whose answer was lost may still have been committed, and a later
    /// read proves it was). The checker holds every node to these, so the
    /// collector must ask each node's OCSP responder about exactly these.
    pub fn acknowledged_revocations(&self) -> BTreeSet<CertKey> {
        self.ops
            .iter()
            .filter_map(|op| match (&op.action, &op.result) {
                (Action::Revoke(k), OpResult::Revoked | OpResult::AlreadyRevoked)
                | (Action::Status(k), OpResult::IsRevoked) => Some(k.clone()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_round_trip_and_bad_lines_are_named() {
        let h = History {
            ops: vec![
                Op {
                    client: 1,
                    action: Action::Issue,
                    invoked_ns: 10,
                    completed_ns: Some(20),
                    result: OpResult::Issued(CertKey::new("eu", "0A")),
                },
                Op {
                    client: 2,
                    action: Action::Revoke(CertKey::new("eu", "0a")),
                    invoked_ns: 30,
                    completed_ns: None,
                    result: OpResult::Unknown,
                },
            ],
        };
        let text = h.to_json_lines();
        assert_eq!(History::from_json_lines(&text).unwrap(), h);
        let err = History::from_json_lines(&format!("{text}\n{{not json")).unwrap_err();
        assert!(err.contains("line 4"), "{err}");
    }

    /// The chaos CI failure of stop 13: a revocation whose answer was lost,
    /// then seen revoked by a status read, is held to OCSP by the checker;
    /// the collector asked only about revocations answered "ok" and so
    /// reported every node's OCSP as missing it.
    #[test]
    fn a_revocation_seen_by_a_later_read_counts_as_acknowledged() {
        let op = |action, result| Op {
            client: 1,
            action,
            invoked_ns: 1,
            completed_ns: Some(2),
            result,
        };
        let k = |s: &str| CertKey::new("eu", s);
        let h = History {
            ops: vec![
                op(Action::Revoke(k("01")), OpResult::Revoked),
                op(Action::Revoke(k("02")), OpResult::AlreadyRevoked),
                op(Action::Revoke(k("03")), OpResult::Unknown),
                op(Action::Status(k("03")), OpResult::IsRevoked),
                op(Action::Revoke(k("04")), OpResult::Unknown),
                op(Action::Status(k("05")), OpResult::Good),
            ],
        };
        assert_eq!(
            h.acknowledged_revocations(),
            [k("01"), k("02"), k("03")].into_iter().collect()
        );
    }
}
