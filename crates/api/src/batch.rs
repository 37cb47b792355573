//! Batching of issuance records into one Raft entry.
//!
//! Every issuance ends with its record committed through Raft. One entry per
//! certificate pays the log's per-entry costs (a storage insert, an apply,
//! a response channel, on every node) once per certificate; under load they,
//! not the signatures, bound throughput. So a node's concurrent issuances
//! hand their records to one task that proposes whatever has queued as a
//! single `RecordIssuances`, with at most [`MAX_IN_FLIGHT`] proposals
//! outstanding. An idle node proposes each record at once (no added
//! latency); a busy one, fewer and larger entries. Each record is answered
//! with its own outcome, and keeps its own idempotency key, so callers see
//! what a lone proposal would give.

use std::sync::Arc;

use quorumca_consensus::{now_ms, spawn_batching, Node};
use quorumca_ledger::{BatchedRecord, Command, Outcome, Proposal};
use tokio::sync::{mpsc, oneshot};

use crate::error::AuthorityError;

const MAX_BATCH: usize = 128;
const MAX_IN_FLIGHT: usize = 4;

type Reply = Result<(Outcome, u64), AuthorityError>;

pub(crate) struct RecordBatcher {
    tx: mpsc::UnboundedSender<(BatchedRecord, oneshot::Sender<Reply>)>,
}

impl RecordBatcher {
    /// Starts the task; it ends when the batcher is dropped.
    pub(crate) fn start(node: Arc<Node>) -> Self {
        let tx = spawn_batching(MAX_BATCH, MAX_IN_FLIGHT, move |batch| {
            let node = node.clone();
            async move { propose(&node, batch).await }
        });
        Self { tx }
    }

    /// Commits one record (batched with others); its outcome and log index.
    pub(crate) async fn record(&self, record: BatchedRecord) -> Reply {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((record, reply))
            .map_err(|_| AuthorityError::Internal("the record batcher has stopped".into()))?;
        rx.await
            .map_err(|_| AuthorityError::Internal("the record batcher dropped a record".into()))?
    }
}

async fn propose(node: &Node, mut batch: Vec<(BatchedRecord, oneshot::Sender<Reply>)>) {
    if batch.len() == 1 {
        let (item, reply) = batch.pop().expect("one record");
        let mut p = Proposal::new(now_ms(), Command::RecordIssuance(item.record));
        p.idempotency_key = item.idempotency_key;
        let r = node
            .propose(p)
            .await
            .map(|c| (c.outcome, c.log_index))
            .map_err(AuthorityError::from);
        let _ = reply.send(r);
        return;
    }
    let (records, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let n = records.len();
    match node
        .propose(Proposal::new(now_ms(), Command::RecordIssuances(records)))
        .await
    {
        Ok(c) => match c.outcome {
            Outcome::Batch(outs) if outs.len() == n => {
                for (reply, o) in replies.into_iter().zip(outs) {
                    let _ = reply.send(Ok((o, c.log_index)));
                }
            }
            other => {
                let msg = format!("a batch of {n} records was answered with {other:?}");
                for reply in replies {
                    let _ = reply.send(Err(AuthorityError::Internal(msg.clone())));
                }
            }
        },
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(AuthorityError::Consensus(e.clone())));
            }
        }
    }
}
