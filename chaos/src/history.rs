//! The operation log a drill's workload writes: one line of JSON per call.

use serde::{Deserialize, Serialize};

/// A certificate as the ledger keys it: issuer id and lowercase hex serial.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CertKey {
    pub issuer: String,
    pub serial: String,
}

impl CertKey {
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
    Issued(CertKey),
    Revoked,
    AlreadyRevoked,
    /// Revoke or Status of a certificate the ledger does not know.
    NotFound,
    /// Status: issued and not revoked.
    Good,
    /// Status: revoked.
    IsRevoked,
    Failed(String),
    Unknown,
}

/// One call, as its client saw it. Times are nanoseconds on one clock
/// shared by all clients of a drill (the driver's monotonic clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: u64,
    pub action: Action,
    pub invoked_ns: u64,
    /// None when the outcome is unknown: the call may still take effect at
    /// any time after its invocation.
    pub completed_ns: Option<u64>,
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

    pub fn to_json_lines(&self) -> String {
        self.ops
            .iter()
            .map(|o| serde_json::to_string(o).expect("an op serialises") + "\n")
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
}
