use quorumca_ca::{CsrError, PolicyError, SealError, SignError};
use quorumca_consensus::ConsensusError;
use quorumca_ledger::Rejection;

/// Why an authority operation failed. Each variant maps to one gRPC status
/// (see [`AuthorityError::code`]; the gRPC layer's one table spells it) with a message that says
/// what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The CSR is malformed, badly signed or carries a weak key.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// Policy refuses the request, or a policy cannot be applied.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The certificate or CRL could not be built or signed.
    #[error("refused to sign: {0}")]
    Sign(#[from] SignError),
    /// A CA key could not be sealed or unsealed.
    #[error("CA key: {0}")]
    Seal(#[from] SealError),
    /// Raft could not commit or read (no quorum, a timeout, shutting down).
    #[error(transparent)]
    Consensus(ConsensusError),
    /// The ledger refused the command.
    #[error("{0}")]
    Rejected(Rejection),
    /// No issuer of this id can sign (not created, or retired).
    #[error("no usable issuer {0:?}; has the CA hierarchy been created for this region?")]
    NoIssuer(String),
    /// A node identity was asked of a cluster whose root key is offline.
    #[error("node identities are signed by the root itself (so that no workload certificate can pass as a node), and this cluster's root {root:?} has its key offline; make node certificates with `quorumca ca issue-identity --root-dir ...`")]
    NodeIdentityNeedsRoot {
        /// The root's issuer id.
        root: String,
    },
    #[error(
        "no policy has been applied yet; apply one with `quorumca policy apply -f profiles.toml`"
    )]
    /// Nothing can be issued before the first policy.
    NoPolicy,
    /// This node started without the unseal secret.
    #[error("this node has no unseal secret, so it cannot use CA keys; start it with QUORUMCA_UNSEAL_SECRET or `unseal_secret_file` in node.toml's [api] section")]
    Sealed,
    #[error(
        "issuer {issuer:?} has no CRL shard {shard}; its certificates name shards 0 to {last}"
    )]
    /// A CRL shard was asked for that the issuer does not have.
    UnknownCrlShard {
        /// The issuer.
        issuer: String,
        /// The shard asked for.
        shard: u64,
        /// Its highest shard.
        last: u64,
    },
    /// The shard's first CRL is not signed yet.
    #[error("the CRL of issuer {issuer:?} shard {shard} is not built yet (the node just started or has no quorum); retry in a few seconds")]
    CrlNotReady {
        /// The issuer.
        issuer: String,
        /// The shard.
        shard: u64,
    },
    /// A request field is malformed; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// No certificate of this issuer and serial on this node.
    #[error("no certificate {serial} of issuer {issuer:?} (live or archived on this node)")]
    UnknownCertificate {
        /// The issuer named.
        issuer: String,
        /// The serial named, hex.
        serial: String,
    },
    /// No such policy version.
    #[error("policy version {0} does not exist; see `quorumca policy history`")]
    UnknownPolicyVersion(u64),
    /// The caller is over a `[limits]` budget.
    #[error("rate limit of {what} reached (policy [limits]); retry in {retry_after:?}")]
    RateLimited {
        /// Which budget: the identity's or the namespace's.
        what: String,
        /// When a token is back.
        retry_after: std::time::Duration,
    },
    /// Generating a key failed.
    #[error("key generation failed: {0}")]
    KeyGen(#[from] rcgen::Error),
    /// The caller presented no usable client certificate.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's roles do not allow the action.
    #[error("permission denied: {0}")]
    Denied(#[from] quorumca_ca::Denied),
    /// A bug or an unexpected state; the message says where.
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
    /// A request field is wrong (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// No usable client certificate (`UNAUTHENTICATED`).
    Unauthenticated,
    /// The caller may not do this (`PERMISSION_DENIED`).
    PermissionDenied,
    /// What was asked for does not exist (`NOT_FOUND`).
    NotFound,
    /// The cluster is not in a state to do it (`FAILED_PRECONDITION`).
    FailedPrecondition,
    /// No quorum, or not ready yet: retry (`UNAVAILABLE`).
    Unavailable,
    /// Over a rate limit (`RESOURCE_EXHAUSTED`).
    ResourceExhausted,
    /// A bug (`INTERNAL`).
    Internal,
}
