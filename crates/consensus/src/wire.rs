//! The internal encoding of node-to-node messages, kept at the edge so the
//! rest of the crate works with openraft's and the ledger's own types.

use quorumca_ledger::{Outcome, Proposal};
use quorumca_storage::{NodeInfo, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::pb::RaftMessage;

/// Bumped whenever a payload type changes shape.
pub const WIRE_VERSION: u32 = 2;

pub fn encode<T: Serialize>(target_node_id: u64, value: &T) -> RaftMessage {
    RaftMessage {
        version: WIRE_VERSION,
        target_node_id,
        payload: postcard::to_stdvec(value).expect("in-memory message serialises"),
    }
}

/// Why a peer message was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message encoding version {got} is not supported (this node speaks {WIRE_VERSION}); are all nodes running the same quorumca build?")]
    Version { got: u32 },
    #[error("message for node {target} reached node {me}; check the peer address list")]
    WrongNode { target: u64, me: u64 },
    #[error("cannot decode {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Malformed { .. } => tonic::Status::invalid_argument(e.to_string()),
            _ => tonic::Status::failed_precondition(e.to_string()),
        }
    }
}

pub fn decode<T: DeserializeOwned>(
    me: u64,
    what: &'static str,
    m: &RaftMessage,
) -> Result<T, WireError> {
    if m.version != WIRE_VERSION {
        return Err(WireError::Version { got: m.version });
    }
    if m.target_node_id != me {
        return Err(WireError::WrongNode {
            target: m.target_node_id,
            me,
        });
    }
    decode_payload(what, &m.payload)
}

pub fn decode_payload<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, WireError> {
    postcard::from_bytes(bytes).map_err(|e| WireError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// A snapshot as sent in one InstallSnapshot message.
#[derive(Serialize, Deserialize)]
pub struct SnapshotTransfer {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Work a follower hands to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Boxed: a proposal is much larger than the other requests (serde
    /// encodes a box as its content, so the wire format is unchanged).
    Propose(Box<Proposal>),
    /// Asks the leader for a read index: the log index a linearizable read
    /// must wait for.
    ReadIndex,
    AddNode {
        node_id: u64,
        info: NodeInfo,
        voter: bool,
    },
    RemoveNode {
        node_id: u64,
    },
    /// Several proposals at once from a busy follower; answered one by one.
    ProposeBatch(Vec<Proposal>),
    /// Hand leadership to this voter.
    TransferLeader {
        to: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardResponse {
    Proposed {
        log_index: u64,
        outcome: Outcome,
    },
    ReadIndex {
        index: u64,
    },
    Membership {
        members: Vec<crate::Member>,
    },
    /// One result per proposal of a `ProposeBatch`, in order.
    ProposedBatch(Vec<ForwardResult>),
    /// Leadership moved: the new leader and its term.
    Transferred {
        leader: u64,
        term: u64,
    },
}

/// Failures the leader reports back to a forwarding follower.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not (or no longer) the leader.
    NotLeader {
        leader: Option<(u64, NodeInfo)>,
    },
    /// The outcome is unknown: the entry may still commit.
    Ambiguous(String),
    Unavailable(String),
    Invalid(String),
    Membership(String),
}

pub type ForwardResult = Result<ForwardResponse, ForwardError>;
