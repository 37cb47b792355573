//! # quorumca-storage: what a node keeps on disk
//!
//! This crate owns persistence for one node:
//!
//! - [`LogStore`]: the Raft log, vote and commit marker in sled, implementing
//!   openraft's `RaftLogStorage`. An append or vote is reported to openraft
//!   only after it is on disk. Appends use **group commit**: each append is
//!   written to sled and its flush callback queued; one flusher task drains
//!   the queue, issues a single `flush_async` (one fsync) for everything
//!   queued, then fires every callback. Under load that is one fsync per
//!   batch, not per request.
//! - [`StateMachineStore`]: the ledger state, implementing openraft's
//!   `RaftStateMachine`. The state is applied in memory and made durable as
//!   snapshots (an atomically replaced file); on restart the last snapshot is
//!   loaded and openraft replays the committed log after it. The durable log
//!   is the source of truth, so applying need not fsync.
//! - [`Archive`]: records of expired certificates, copied out of the state
//!   when a prune applies, so the hot state tracks live certificates only.
//! - [`MemDisk`]: the same stores in memory for deterministic simulations,
//!   losing exactly the unflushed writes on a simulated crash.
//! - [`runtime::Runtime`]: the async runtime in the Raft type config, tokio
//!   with election randomness a simulation can seed.
//!
//! ## What it must never do
//!
//! No policy and no signing: storage persists what consensus hands it and
//! decides nothing (`quorumca-ca` decides, `quorumca-ledger` records).
//!
//! ## Where the neighbours live
//!
//! `quorumca-ledger` defines the state being persisted; `quorumca-consensus`
//! drives these stores through openraft.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod archive;
mod error;
mod log_store;
mod mem_disk;
pub mod private;
pub mod runtime;
mod state_machine;
mod types;

pub use archive::{Archive, ArchivedRecord};
pub use error::StorageError;
pub use log_store::LogStore;
pub use mem_disk::MemDisk;
pub use state_machine::{validate_snapshot_data, Applied, LedgerView, StateMachineStore};
pub use types::{
    Entry, LogId, NodeInfo, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
    Vote,
};

use std::path::Path;

/// Opens (or creates) the stores of one node under `data_dir`.
///
/// Must be called inside a tokio runtime: the log store spawns its flusher.
/// Everything under `data_dir` is private to the node's user (0700
/// directories, 0600 files: [`private`]), also what an earlier version
/// left there.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    let io = |e| StorageError::Io {
        path: data_dir.to_path_buf(),
        source: e,
    };
    private::create_dir_all(data_dir).map_err(io)?;
    private::tighten(data_dir).map_err(io)?;
    let log = LogStore::open(&data_dir.join("raft-log"))?;
    let sm = StateMachineStore::open(&data_dir.join("snapshots"), &data_dir.join("archive"))?;
    Ok((log, sm))
}

/// The stores of one node on an in-memory disk, for deterministic
/// simulations: nothing touches the file system or a thread, and
/// [`MemDisk::crash`] loses exactly what was not flushed. Keep the disk to
/// restart the node on it.
pub fn open_in_memory(disk: &MemDisk) -> Result<(LogStore, StateMachineStore), StorageError> {
    let log = LogStore::open_in_memory(disk)?;
    let sm = StateMachineStore::open_in_memory(disk)?;
    Ok((log, sm))
}

#[cfg(test)]
mod tests;
