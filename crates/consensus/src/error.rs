use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Errors of the consensus layer. Each maps to one gRPC status (see
/// [`ConsensusError::to_status`]) with a message that says what to do.
/// `Clone`, so one failure can answer every proposal of a batch (sources
/// that are not `Clone` are shared behind an `Arc`).
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The cluster cannot commit right now: no leader, or no quorum. The
    /// proposal may or may not commit later; retry with the same
    /// idempotency key.
    #[error(
        "cluster unavailable: {reason}; retry in {retry_after:?} (with the same idempotency key)"
    )]
    Unavailable {
        /// Why, e.g. "no leader" or "proposal timed out".
        reason: String,
        /// When retrying may succeed.
        retry_after: Duration,
    },
    /// The request cannot be applied as given.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A membership change was refused (e.g. removing the last voter).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A listener cannot bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The log or state store failed.
    #[error(transparent)]
    Storage(Arc<quorumca_storage::StorageError>),
    /// The node is shutting down or its Raft core has stopped.
    #[error("the Raft node has stopped: {0}")]
    Stopped(String),
    /// The node's configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ConsensusError {
    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            retry_after: Duration::from_secs(1),
        }
    }

    /// The gRPC status of this error, for the Cluster service.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Self::Unavailable { .. } => tonic::Status::unavailable(self.to_string()),
            Self::InvalidArgument(_) | Self::Config(_) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            Self::Membership(_) => tonic::Status::failed_precondition(self.to_string()),
            Self::Stopped(_) => tonic::Status::unavailable(self.to_string()),
            Self::Bind { .. } | Self::Storage(_) => tonic::Status::internal(self.to_string()),
        }
    }
}

impl From<quorumca_storage::StorageError> for ConsensusError {
    fn from(e: quorumca_storage::StorageError) -> Self {
        Self::Storage(Arc::new(e))
    }
}

impl From<ConsensusError> for tonic::Status {
    fn from(e: ConsensusError) -> Self {
        e.to_status()
    }
}
