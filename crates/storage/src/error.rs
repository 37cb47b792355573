use std::path::PathBuf;

/// Errors opening or reading a node's data directory.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the Raft log at {path}: {source}. Is another quorumca process using this data dir?")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} in {path} is corrupt: {reason}")]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}
