//! Serial leases: blocks of sequence numbers Raft grants this node per
//! issuer, so a serial costs no round trip of its own. A serial is
//! `0x51 || sequence || 8 CSPRNG bytes`, unique by construction (a sequence
//! is leased to one node once) and unpredictable by its random half.

use std::collections::HashMap;

use quorumca_consensus::now_ms;
use quorumca_ledger::{Command, Outcome, Proposal, Serial};

use crate::authority::{rejected, Authority};
use crate::error::AuthorityError;

/// This node's unused part of each lease, by issuer. Only this module
/// reads or moves it.
#[derive(Default)]
pub(crate) struct SerialLeases(tokio::sync::Mutex<HashMap<String, LeaseCursor>>);

struct LeaseCursor {
    next: u64,
    end: u64,
    expires_at_ms: u64,
}

impl Authority {
    /// Takes the next sequence number of `issuer` from this node's lease,
    /// asking Raft for a new lease when it is used up or about to expire.
    pub(crate) async fn next_sequence(&self, issuer: &str) -> Result<u64, AuthorityError> {
        let mut leases = self.leases.0.lock().await;
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
    pub(crate) fn serial_for(&self, sequence: u64) -> Result<Vec<u8>, AuthorityError> {
        Ok(Serial::for_leaf(sequence, self.random()?).0)
    }
}
