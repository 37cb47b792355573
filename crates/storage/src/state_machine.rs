//! The ledger as an openraft state machine: applied in memory, made durable
//! by snapshot files, rebuilt on restart from the last snapshot plus the log.

use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use quorumca_ledger::{apply_evicting, Command, Outcome, State};
use serde::{Deserialize, Serialize};

use crate::archive::{Archive, ArchivedRecord};
use crate::error::StorageError;
use crate::mem_disk::MemDisk;
use crate::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};

const SNAPSHOT_FILE: &str = "current.snap";

/// The applied state, shared read-only with the rest of the node for
/// follower-local reads.
#[derive(Debug, Default)]
pub struct Applied {
    /// The last log entry applied.
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
    /// The ledger as of `last_applied`.
    pub state: State,
}

/// A read handle on the applied ledger. Reads through it are local and may
/// be stale on a follower; consensus offers linearizable reads on top.
#[derive(Clone, Debug, Default)]
pub struct LedgerView(Arc<RwLock<Applied>>);

impl LedgerView {
    /// Takes the read lock; hold it briefly, since applying waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.0.read().expect("ledger lock poisoned")
    }
}

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    /// `State::encode()` output.
    state: Vec<u8>,
}

/// Checks that bytes received as a snapshot decode, without installing them.
pub fn validate_snapshot_data(bytes: &[u8]) -> Result<(), StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        what: "received snapshot",
        path: PathBuf::from("<network>"),
        reason,
    };
    let file: SnapshotFile = postcard::from_bytes(bytes).map_err(|e| corrupt(e.to_string()))?;
    State::decode(&file.state).map_err(|e| corrupt(e.to_string()))?;
    Ok(())
}

/// The leading part of a [`SnapshotFile`], decoded without copying the state.
#[derive(Deserialize)]
struct SnapshotHeader<'a> {
    meta: SnapshotMeta,
    #[serde(borrow)]
    #[allow(dead_code)]
    state: &'a [u8],
}

fn decode(bytes: &[u8]) -> io::Result<SnapshotFile> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The Raft state machine: the ledger, its snapshots and this node's archive.
#[derive(Clone)]
pub struct StateMachineStore {
    view: LedgerView,
    files: Files,
    archive: Archive,
}

/// Where the snapshot file lives.
#[derive(Clone)]
enum Files {
    Dir(PathBuf),
    Mem(MemDisk),
}

impl Files {
    fn snapshot_path(&self) -> PathBuf {
        match self {
            Self::Dir(d) => d.join(SNAPSHOT_FILE),
            Self::Mem(_) => PathBuf::from("<memory>").join(SNAPSHOT_FILE),
        }
    }
}

impl StateMachineStore {
    /// Opens the snapshot directory `dir` and the archive of expired
    /// records at `archive`, and restores the last snapshot, if any.
    pub fn open(dir: &Path, archive: &Path) -> Result<Self, StorageError> {
        crate::private::create_dir_all(dir).map_err(|e| StorageError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        Self::open_with(Files::Dir(dir.to_path_buf()), Archive::open(archive)?)
    }

    /// The state machine on an in-memory disk (simulations).
    pub fn open_in_memory(disk: &MemDisk) -> Result<Self, StorageError> {
        Self::open_with(Files::Mem(disk.clone()), Archive::in_memory(disk))
    }

    fn open_with(files: Files, archive: Archive) -> Result<Self, StorageError> {
        let store = Self {
            view: LedgerView::default(),
            files,
            archive,
        };
        let path = store.files.snapshot_path();
        if let Some(file) = store
            .read_snapshot_file()
            .map_err(|e| StorageError::Corrupt {
                what: "the snapshot",
                path: path.clone(),
                reason: e.to_string(),
            })?
        {
            let state = State::decode(&file.state).map_err(|e| StorageError::Corrupt {
                what: "the snapshot state",
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let mut a = store.view.0.write().expect("fresh lock");
            a.last_applied = file.meta.last_log_id;
            a.membership = file.meta.last_membership.clone();
            a.state = state;
        }
        Ok(store)
    }

    /// A read handle other parts of the node can share.
    pub fn view(&self) -> LedgerView {
        self.view.clone()
    }

    /// Records of expired certificates this node has pruned.
    pub fn archive(&self) -> Archive {
        self.archive.clone()
    }

    fn read_snapshot_file(&self) -> io::Result<Option<SnapshotFile>> {
        self.read_snapshot_bytes()?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn read_snapshot_bytes(&self) -> io::Result<Option<Vec<u8>>> {
        let dir = match &self.files {
            Files::Mem(d) => return Ok(d.read_file(SNAPSHOT_FILE)),
            Files::Dir(dir) => dir,
        };
        match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_snapshot_file(&self, bytes: &[u8]) -> io::Result<()> {
        let dir = match &self.files {
            Files::Mem(d) => {
                d.replace_file(SNAPSHOT_FILE, bytes.to_vec());
                return Ok(());
            }
            Files::Dir(dir) => dir,
        };
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        {
            let mut f = crate::private::create_file(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Runs `f` on a blocking thread when it does real I/O; inline on an
    /// in-memory disk, where a thread would only add nondeterminism.
    async fn io<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Self) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        if matches!(self.files, Files::Mem(_)) {
            return f(self);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(io::Error::other)?
    }

    async fn persist(&self, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        self.io(move |store| {
            store.write_snapshot_file(&bytes)?;
            Ok(bytes)
        })
        .await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // The snapshot may no longer hold records this node pruned; make
        // sure the archive does before the snapshot replaces the log.
        self.io(|store| store.archive.flush().map_err(io::Error::other))
            .await?;
        let file = {
            let a = self.view.read();
            SnapshotFile {
                meta: SnapshotMeta {
                    last_log_id: a.last_applied,
                    last_membership: a.membership.clone(),
                },
                state: a.state.encode(),
            }
        };
        // Encoded once: the same bytes go to disk and to openraft.
        let bytes = postcard::to_stdvec(&file).map_err(io::Error::other)?;
        let bytes = self.persist(bytes).await?;
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let a = self.view.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let outcome = {
                let mut a = self.view.0.write().expect("ledger lock poisoned");
                a.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => Outcome::Noop,
                    EntryPayload::Normal(p) => {
                        if let Command::PruneExpired { before_ms } = &p.command {
                            let items: Vec<ArchivedRecord> = a
                                .state
                                .expired_before(*before_ms)
                                .map(|(r, rev)| ArchivedRecord {
                                    record: r.clone(),
                                    revocation: rev.cloned(),
                                })
                                .collect();
                            self.archive.put(&items).map_err(io::Error::other)?;
                        }
                        // Audit entries the ledger evicts go to the archive,
                        // never nowhere.
                        let mut evicted = Vec::new();
                        let outcome = apply_evicting(&mut a.state, p, &mut evicted);
                        if !evicted.is_empty() {
                            self.archive.put_audit(&evicted).map_err(io::Error::other)?;
                        }
                        outcome
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Outcome::Noop
                    }
                }
            };
            if let Some(r) = responder {
                r.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let mut file = decode(&bytes)?;
        let state = State::decode(&file.state)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // openraft's meta is authoritative; the received bytes are written
        // as they are unless they carry a different one.
        let bytes = if file.meta == *meta {
            bytes
        } else {
            file.meta = meta.clone();
            postcard::to_stdvec(&file).map_err(io::Error::other)?
        };
        // Persist before switching, so a crash right after leaves a node that
        // restarts at the installed point, not before it with a purged log.
        self.persist(bytes).await?;
        let mut a = self.view.0.write().expect("ledger lock poisoned");
        a.last_applied = file.meta.last_log_id;
        a.membership = file.meta.last_membership;
        a.state = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let bytes = self.io(|store| store.read_snapshot_bytes()).await?;
        // Only the meta is decoded (the state is borrowed, not copied); the
        // file's bytes are handed over as they are.
        bytes
            .map(|bytes| {
                let header: SnapshotHeader<'_> = postcard::from_bytes(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let meta = header.meta;
                Ok(Snapshot {
                    meta,
                    snapshot: Cursor::new(bytes),
                })
            })
            .transpose()
    }
}
