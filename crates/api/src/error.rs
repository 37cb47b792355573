use quorumca_ca::{CsrError, PolicyError, SealError, SignError};
use quorumca_consensus::ConsensusError;
use quorumca_ledger::Rejection;

/// Why an authority operation failed. Each variant maps to one gRPC status
/// (see [`AuthorityError::code`]; the gRPC layer's one table spells it) with a message that says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("refused to sign: {0}")]
    Sign(#[from] SignError),
    #[error("CA key: {0}")]
    Seal(#[from] SealError),
    #[error(transparent)]
    Consensus(ConsensusError),
    #[error("{0}")]
    Rejected(Rejection),
    #[error("no usable issuer {0:?}; has the CA hierarchy been created for this region?")]
    NoIssuer(String),
    #[error("node identities are signed by the root itself (so that no workload certificate can pass as a node), and this cluster's root {root:?} has its key offline; make node certificates with `quorumca ca issue-identity --root-dir ...`")]
    NodeIdentityNeedsRoot { root: String },
    #[error(
        "no policy has been applied yet; apply one with `quorumca policy apply -f profiles.toml`"
    )]
    NoPolicy,
    #[error("this node has no unseal secret, so it cannot use CA keys; start it with QUORUMCA_UNSEAL_SECRET or `unseal_secret_file` in node.toml's [api] section")]
    Sealed,
    #[error(
        "issuer {issuer:?} has no CRL shard {shard}; its certificates name shards 0 to {last}"
    )]
    UnknownCrlShard {
        issuer: String,
        shard: u64,
        last: u64,
    },
    #[error("the CRL of issuer {issuer:?} shard {shard} is not built yet (the node just started or has no quorum); retry in a few seconds")]
    CrlNotReady { issuer: String, shard: u64 },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no certificate {serial} of issuer {issuer:?} (live or archived on this node)")]
    UnknownCertificate { issuer: String, serial: String },
    #[error("policy version {0} does not exist; see `quorumca policy history`")]
    UnknownPolicyVersion(u64),
    #[error("rate limit of {what} reached (policy [limits]); retry in {retry_after:?}")]
    RateLimited {
        what: String,
        retry_after: std::time::Duration,
    },
    #[error("key generation failed: {0}")]
    KeyGen(#[from] rcgen::Error),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    Denied(#[from] quorumca_ca::Denied),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthorityError {
    /// The gRPC status a caller should see.
    pub fn code(&self) -> StatusCode {
        match self {
            Self::Csr(_) | Self::Sign(_) => StatusCode::InvalidArgument,
            Self::Policy(PolicyError::NameNotAllowed { .. })
            | Self::Policy(PolicyError::ReservedId { .. })
            | Self::Policy(PolicyError::ProfileNotAllowed { .. }) => StatusCode::PermissionDenied,
            Self::Policy(PolicyError::UnknownNamespace(_))
            | Self::Policy(PolicyError::UnknownProfile(_)) => StatusCode::NotFound,
            Self::Policy(_) => StatusCode::InvalidArgument,
            Self::Rejected(Rejection::UnknownCertificate { .. }) => StatusCode::NotFound,
            Self::Rejected(Rejection::SelfApproval { .. }) => StatusCode::PermissionDenied,
            Self::Rejected(Rejection::UnknownChange { .. }) => StatusCode::NotFound,
            Self::Rejected(Rejection::TokenNotUsable)
            | Self::Rejected(Rejection::IdentityReserved { .. }) => StatusCode::PermissionDenied,
            Self::Rejected(Rejection::NoRoleBinding { .. }) => StatusCode::NotFound,
            Self::Rejected(_) => StatusCode::FailedPrecondition,
            Self::Consensus(ConsensusError::Unavailable { .. }) => StatusCode::Unavailable,
            Self::Consensus(ConsensusError::InvalidArgument(_)) => StatusCode::InvalidArgument,
            Self::NoIssuer(_)
            | Self::NodeIdentityNeedsRoot { .. }
            | Self::NoPolicy
            | Self::Seal(_)
            | Self::Sealed => StatusCode::FailedPrecondition,
            Self::UnknownCrlShard { .. }
            | Self::UnknownCertificate { .. }
            | Self::UnknownPolicyVersion(_) => StatusCode::NotFound,
            Self::CrlNotReady { .. } => StatusCode::Unavailable,
            Self::InvalidArgument(_) => StatusCode::InvalidArgument,
            Self::RateLimited { .. } => StatusCode::ResourceExhausted,
            Self::Unauthenticated(_) => StatusCode::Unauthenticated,
            Self::Denied(_) => StatusCode::PermissionDenied,
            Self::Consensus(_) | Self::KeyGen(_) | Self::Internal(_) => StatusCode::Internal,
        }
    }
}

/// The status classes the API maps errors to; kept free of tonic so this
/// crate's core does not depend on the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    FailedPrecondition,
    Unavailable,
    ResourceExhausted,
    Internal,
}
