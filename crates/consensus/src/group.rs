//! Group commit on the leader: concurrent proposals become one log entry.
//!
//! openraft already batches the *storage writes* of entries that arrive
//! together, but every entry still costs, on every node, its own encode,
//! sled insert, replication framing, apply call and response channel. With
//! small commands (a no-op, a revocation, a batch of issuance records) those
//! per-entry costs, not the fsync, bound throughput on a busy leader. So the
//! leader hands each proposal to one task that writes whatever has queued
//! as a single `Command::Batch`, with at most [`MAX_IN_FLIGHT`] entries
//! outstanding: an idle leader writes each proposal at once, unchanged (no
//! added latency), a busy one fewer and larger entries. The ledger applies
//! a batch exactly as the same proposals in separate entries, and every
//! proposer gets its own outcome.

use std::time::Duration;

use openraft::errors::ClientWriteError;
use quorumca_ledger::{Command, Outcome, Proposal, MAX_PROPOSAL_BATCH};
use tokio::sync::{mpsc, oneshot};

use crate::node::{leader_of, now_ms, Raft};
use crate::wire::{ForwardError, ForwardResponse, ForwardResult};

/// Log entries being written at once. One: proposals that arrive while an
/// entry is on its way queue up and become the next, larger entry, and
/// every entry costs a log flush and an apply on each node, an
/// AppendEntries per follower and the answers. Two (the next entry's
/// storage write overlapping the previous one's replication) was faster
/// while a log flush was dear; since sled's flushes got cheaper (vendor/sled
/// patches 2, 3 and 5), one entry in flight costs about 7 % less CPU per
/// 3-node issuance and answers sooner (`benches/README.md`).
const MAX_IN_FLIGHT: usize = 1;

struct Item {
    proposal: Proposal,
    reply: oneshot::Sender<ForwardResult>,
}

pub(crate) struct GroupCommit {
    tx: mpsc::UnboundedSender<Item>,
}

impl GroupCommit {
    /// Starts the committing task for this node's Raft; it ends when the
    /// handle is dropped.
    pub(crate) fn start(raft: Raft, node_id: u64, timeout: Duration) -> Self {
        let tx = crate::batching::spawn_batching(MAX_PROPOSAL_BATCH, MAX_IN_FLIGHT, move |items| {
            let raft = raft.clone();
            async move { write(&raft, node_id, items, timeout).await }
        });
        Self { tx }
    }

    /// Commits one proposal on this node, which must lead; answers exactly
    /// as a lone `client_write` of it would.
    pub(crate) async fn commit(&self, proposal: Proposal, timeout: Duration) -> ForwardResult {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Item { proposal, reply })
            .map_err(|_| ForwardError::Unavailable("the Raft node is shutting down".into()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ForwardError::Unavailable(
                "the Raft node is shutting down".into(),
            )),
            Err(_) => Err(not_committed(timeout)),
        }
    }
}

fn not_committed(timeout: Duration) -> ForwardError {
    ForwardError::Ambiguous(format!(
        "proposal not committed within {timeout:?} (is a quorum of voters reachable?)"
    ))
}

/// Leader by its own account, but the last quorum acknowledgement is older
/// than the lease (openraft's lease is the longest election timeout).
fn cut_off(raft: &Raft, node_id: u64) -> bool {
    use openraft::async_runtime::WatchReceiver as _;
    use openraft::Instant as _;
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    m.current_leader == Some(node_id)
        && m.last_quorum_acked
            .as_ref()
            .is_some_and(|t| t.elapsed() >= lease)
}

async fn write(raft: &Raft, node_id: u64, mut items: Vec<Item>, timeout: Duration) {
    let n = items.len();
    let (entry, replies) = if n == 1 {
        let item = items.pop().expect("one item");
        (item.proposal, vec![item.reply])
    } else {
        let (proposals, replies): (Vec<_>, Vec<_>) =
            items.into_iter().map(|i| (i.proposal, i.reply)).unzip();
        (Proposal::new(now_ms(), Command::Batch(proposals)), replies)
    };
    // Bounded, so a leader that lost its quorum frees the slot; its
    // proposers have been told the outcome is unknown by then.
    let written = match tokio::time::timeout(timeout, raft.client_write(entry)).await {
        Err(_) => Err(not_committed(timeout)),
        Ok(Ok(resp)) => Ok((resp.log_id.index, resp.data)),
        Ok(Err(e)) => Err(match e.into_api_error() {
            // Refused before it was appended. A leader that lost its quorum
            // lease (openraft's check-quorum) says so at once, so the caller
            // (a follower forwarding, a client) tries elsewhere instead of
            // waiting out its deadline on a node cut off from the majority.
            // A leader too new to have heard from a quorum yet is retried.
            Some(ClientWriteError::ForwardToLeader(_)) if cut_off(raft, node_id) => {
                ForwardError::Unavailable(format!(
                    "node {node_id} leads but no quorum has answered it within its lease; it may be cut off from the majority"
                ))
            }
            Some(ClientWriteError::ForwardToLeader(_)) => ForwardError::NotLeader {
                leader: leader_of(raft).filter(|(id, _)| *id != node_id),
            },
            Some(ClientWriteError::LogEntryDiscarded(_)) => {
                ForwardError::Ambiguous("the entry was discarded by a leader change".into())
            }
            Some(other) => ForwardError::Invalid(other.to_string()),
            None => ForwardError::Unavailable("the Raft node is shutting down".into()),
        }),
    };
    let outcomes = match written {
        Ok((index, outcome)) if n == 1 => Ok((index, vec![outcome])),
        Ok((index, Outcome::Batch(outs))) if outs.len() == n => Ok((index, outs)),
        Ok((_, other)) => Err(ForwardError::Ambiguous(format!(
            "a batch of {n} proposals was answered with {other:?}"
        ))),
        Err(e) => Err(e),
    };
    match outcomes {
        Ok((log_index, outs)) => {
            for (reply, outcome) in replies.into_iter().zip(outs) {
                let _ = reply.send(Ok(ForwardResponse::Proposed { log_index, outcome }));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
