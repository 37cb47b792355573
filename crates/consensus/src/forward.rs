//! Batching of proposals a follower forwards to the leader.
//!
//! Without it every proposal received by a follower is its own Forward RPC:
//! its own HTTP/2 frames, server task, encode and decode on both sides. Under
//! load (two thirds of the issuances of a 3-node cluster arrive at
//! followers) that per-RPC cost, not the disk, bounded throughput. Here a
//! single task drains whatever proposals are waiting and sends them as one
//! `ProposeBatch`, with at most [`MAX_IN_FLIGHT`] batches outstanding: an
//! idle node sends each proposal at once (no added latency), and a busy one
//! sends fewer, larger messages. The leader answers every proposal of a
//! batch separately, so callers see exactly what a single forward returns,
//! and the retry rules of `leader_call` stay per proposal.

use std::collections::BTreeMap;
use std::time::Duration;

use quorumca_ledger::Proposal;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::network::PeerPool;
use crate::wire::{ForwardError, ForwardRequest, ForwardResponse, ForwardResult};

/// Most proposals in one forwarded batch.
pub(crate) const MAX_BATCH: usize = 256;
/// Batches on the wire at once.
pub(crate) const MAX_IN_FLIGHT: usize = 4;

type Reply = Result<ForwardResult, Status>;

struct Item {
    target: u64,
    addr: String,
    proposal: Proposal,
    reply: oneshot::Sender<Reply>,
}

#[derive(Clone)]
pub(crate) struct ForwardBatcher {
    tx: mpsc::UnboundedSender<Item>,
}

impl ForwardBatcher {
    /// Starts the batching task; it ends when the last handle is dropped.
    pub(crate) fn start(pool: PeerPool, timeout: Duration) -> Self {
        let tx = crate::batching::spawn_batching(MAX_BATCH, MAX_IN_FLIGHT, move |items| {
            send_grouped(pool.clone(), items, timeout)
        });
        Self { tx }
    }

    /// Forwards one proposal to the leader `target` at `addr`; answers like
    /// `PeerPool::forward` would for a single `Propose`.
    pub(crate) async fn forward(
        &self,
        target: u64,
        addr: &str,
        proposal: Proposal,
        timeout: Duration,
    ) -> Reply {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Item {
                target,
                addr: addr.to_string(),
                proposal,
                reply,
            })
            .map_err(|_| Status::unavailable("this node is shutting down"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Status::unknown("the forwarder stopped before answering")),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the leader did not answer within {timeout:?}"
            ))),
        }
    }
}

/// Sends one batch, as one `ProposeBatch` per leader it names (normally
/// one).
async fn send_grouped(pool: PeerPool, items: Vec<Item>, timeout: Duration) {
    let mut groups: BTreeMap<(u64, String), Vec<Item>> = BTreeMap::new();
    for i in items {
        groups
            .entry((i.target, i.addr.clone()))
            .or_default()
            .push(i);
    }
    for ((target, addr), items) in groups {
        send(&pool, target, &addr, items, timeout).await;
    }
}

async fn send(pool: &PeerPool, target: u64, addr: &str, mut items: Vec<Item>, timeout: Duration) {
    if items.len() == 1 {
        let item = items.pop().expect("one item");
        let r = pool
            .forward(
                target,
                addr,
                &ForwardRequest::Propose(Box::new(item.proposal)),
                timeout,
            )
            .await;
        let _ = item.reply.send(r);
        return;
    }
    let (proposals, replies): (Vec<_>, Vec<_>) =
        items.into_iter().map(|i| (i.proposal, i.reply)).unzip();
    let n = proposals.len();
    match pool
        .forward(
            target,
            addr,
            &ForwardRequest::ProposeBatch(proposals),
            timeout,
        )
        .await
    {
        Ok(Ok(ForwardResponse::ProposedBatch(results))) if results.len() == n => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(r));
            }
        }
        Ok(Ok(other)) => {
            let msg = format!("the leader answered a batch of {n} with {other:?}");
            for reply in replies {
                let _ = reply.send(Ok(Err(ForwardError::Ambiguous(msg.clone()))));
            }
        }
        Ok(Err(e)) => {
            for reply in replies {
                let _ = reply.send(Ok(Err(e.clone())));
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}
