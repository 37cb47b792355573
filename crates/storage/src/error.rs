use std::path::PathBuf;

/// Errors opening or reading a node's data directory.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// sled refused to open the store.
    #[error("cannot open the Raft log at {path}: {source}. Is another quorumca process using this data dir?")]
    Open {
        /// The store's directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A read, write or fsync failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes do not decode.
    #[error("{what} in {path} is corrupt: {reason}")]
    Corrupt {
        /// What was being read (e.g. "the saved vote", "an archived record").
        what: &'static str,
        /// Where it came from.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
}
