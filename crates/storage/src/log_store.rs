//! The Raft log on sled (or an in-memory disk for simulations), with
//! group commit.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::StorageError;
use crate::mem_disk::MemDisk;
use crate::types::{Entry, LogId, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

/// The Raft log, on sled or on a [`MemDisk`]. Cheap to clone: every clone
/// shares the same trees and the same flusher.
#[derive(Clone)]
pub struct LogStore {
    backend: Backend,
    flush_queue: mpsc::UnboundedSender<IOFlushed<TypeConfig>>,
    path: PathBuf,
}

#[derive(Clone)]
enum Backend {
    Sled {
        db: sled::Db,
        durable: Durability,
        log: sled::Tree,
        meta: sled::Tree,
    },
    Mem(MemDisk),
}

const LOG: &str = "raft-log";
const META: &str = "raft-meta";

type KeyRange = (Bound<[u8; 8]>, Bound<[u8; 8]>);

fn owned(r: &KeyRange) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let f = |b: &Bound<[u8; 8]>| match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (f(&r.0), f(&r.1))
}

impl Backend {
    fn meta_get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        match self {
            Self::Sled { meta, .. } => {
                Ok(meta.get(key).map_err(io::Error::other)?.map(|v| v.to_vec()))
            }
            Self::Mem(d) => Ok(d.get(META, key)),
        }
    }

    fn meta_insert(&self, key: &[u8], value: Vec<u8>) -> io::Result<()> {
        match self {
            Self::Sled { meta, .. } => meta
                .insert(key, value)
                .map(|_| ())
                .map_err(io::Error::other),
            Self::Mem(d) => {
                d.insert(META, key, value);
                Ok(())
            }
        }
    }

    /// The entries in the range, in index order, decoded straight from
    /// the store's buffers: replication reads through here on every
    /// append, so no value is copied before decoding.
    fn log_entries(&self, range: KeyRange) -> io::Result<Vec<Entry>> {
        match self {
            Self::Sled { log, .. } => log
                .range(range)
                .map(|kv| decode_entry(&kv.map_err(io::Error::other)?.1))
                .collect(),
            Self::Mem(d) => d
                .range(LOG, owned(&range))
                .iter()
                .map(|(_, v)| decode_entry(v))
                .collect(),
        }
    }

    fn log_last(&self) -> io::Result<Option<Entry>> {
        match self {
            Self::Sled { log, .. } => log
                .last()
                .map_err(io::Error::other)?
                .map(|(_, v)| decode_entry(&v))
                .transpose(),
            Self::Mem(d) => d.last(LOG).map(|(_, v)| decode_entry(&v)).transpose(),
        }
    }

    fn log_insert(&self, items: Vec<([u8; 8], Vec<u8>)>) -> io::Result<()> {
        match self {
            // Plain inserts, not a `sled::Batch`: sled pins a batch by
            // sealing and writing the current IO buffer before and after
            // its manifest, two extra synchronous writes per append on the
            // hot path. A batch's all-or-nothing is not needed here: sled
            // recovers a prefix of its log in write order, so a crash
            // before the flush leaves a prefix of these entries, which is
            // a valid Raft log, and none of them was acknowledged yet.
            Self::Sled { log, .. } => {
                for (k, v) in items {
                    log.insert(k, v).map_err(io::Error::other)?;
                }
                Ok(())
            }
            Self::Mem(d) => {
                for (k, v) in items {
                    d.insert(LOG, &k, v);
                }
                Ok(())
            }
        }
    }

    fn log_remove(&self, range: KeyRange) -> io::Result<()> {
        match self {
            // A batch on purpose, unlike appends: a truncation recovered in
            // part would leave a gap in the log. Purges and truncations are
            // rare, so its extra writes do not matter.
            Self::Sled { log, .. } => {
                let mut batch = sled::Batch::default();
                for kv in log.range(range) {
                    let (k, _) = kv.map_err(io::Error::other)?;
                    batch.remove(k);
                }
                log.apply_batch(batch).map_err(io::Error::other)
            }
            Self::Mem(d) => {
                for (k, _) in d.range(LOG, owned(&range)) {
                    d.remove(LOG, &k);
                }
                Ok(())
            }
        }
    }

    /// Makes every write so far durable.
    async fn flush(&self) -> io::Result<()> {
        match self {
            Self::Sled { db, durable, .. } => durable.flush(db).await,
            Self::Mem(d) => {
                d.flush();
                Ok(())
            }
        }
    }
}

impl LogStore {
    /// Opens (or creates) the Raft log at `path`, with the vote and purge marker beside it.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(path)
            // Durability comes from our explicit flushes; sled's periodic
            // background flush only adds fsyncs we do not need.
            .flush_every_ms(None)
            .open()
            .map_err(|e| StorageError::Open {
                path: path.to_path_buf(),
                source: e,
            })?;
        let open_tree = |name: &str| {
            db.open_tree(name).map_err(|e| StorageError::Open {
                path: path.to_path_buf(),
                source: e,
            })
        };
        let log = open_tree("log")?;
        let meta = open_tree("meta")?;
        let durable = Durability::open(path)?;
        Self::start(
            Backend::Sled {
                db,
                durable,
                log,
                meta,
            },
            path,
        )
    }

    /// The log on an in-memory disk (simulations).
    pub fn open_in_memory(disk: &MemDisk) -> Result<Self, StorageError> {
        Self::start(Backend::Mem(disk.clone()), Path::new("<memory>/raft-log"))
    }

    fn start(backend: Backend, path: &Path) -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_flusher(backend.clone(), rx));
        let store = Self {
            backend,
            flush_queue: tx,
            path: path.to_path_buf(),
        };
        // Fail at open, with a clear error, rather than inside openraft.
        store
            .read_meta::<Vote>(KEY_VOTE)
            .map_err(|e| StorageError::Corrupt {
                what: "the saved vote",
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(store)
    }

    /// Bytes sled reports for the log database on disk; used by the growth
    /// benchmarks to show the log does not grow without bound.
    pub fn size_on_disk(&self) -> u64 {
        match &self.backend {
            Backend::Sled { db, .. } => db.size_on_disk().unwrap_or(0),
            Backend::Mem(_) => 0,
        }
    }

    /// Number of entries currently in the log (after purges).
    pub fn len(&self) -> usize {
        match &self.backend {
            Backend::Sled { log, .. } => log.len(),
            Backend::Mem(d) => d.len(LOG),
        }
    }

    /// Whether the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The log's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.backend.meta_get(key)? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(io::Error::other)?;
        self.backend.meta_insert(key, bytes)
    }
}

fn decode_entry(bytes: &[u8]) -> io::Result<Entry> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// sled 0.34's `flush` ends in `sync_file_range(2)` on Linux, which writes
/// the pages out but neither flushes the device's write cache nor the
/// file's metadata; its man page warns it gives no crash guarantee. So after
/// every sled flush we `fdatasync` sled's data file through our own handle
/// (fsync acts on the inode, whichever descriptor asks).
#[derive(Clone)]
struct Durability {
    file: std::sync::Arc<std::fs::File>,
}

impl Durability {
    fn open(sled_dir: &Path) -> Result<Self, StorageError> {
        let path = sled_dir.join("db");
        let file =
            std::fs::File::open(&path).map_err(|source| StorageError::Io { path, source })?;
        Ok(Self {
            file: std::sync::Arc::new(file),
        })
    }

    /// Flushes sled, then makes what it wrote durable. Both on one blocking
    /// thread: `flush_async` would add a hop through sled's own thread pool,
    /// whose every task wakes all its idle threads.
    async fn flush(&self, db: &sled::Db) -> io::Result<()> {
        let (file, db) = (self.file.clone(), db.clone());
        tokio::task::spawn_blocking(move || {
            db.flush().map_err(io::Error::other)?;
            file.sync_data()
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Group commit: one flush and one fdatasync for every append queued while
/// the previous one ran. Entries are written to sled before their callback
/// is queued, so a flush that starts after the callback arrived covers them.
async fn run_flusher(backend: Backend, mut rx: mpsc::UnboundedReceiver<IOFlushed<TypeConfig>>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = backend.flush().await;
        for cb in batch.drain(..) {
            let r = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(io::Error::other(format!(
                    "flushing the Raft log failed: {e}"
                ))),
            };
            cb.io_completed(r);
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn to_key_range<RB: RangeBounds<u64>>(range: &RB) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let start = match range.start_bound() {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.backend.log_entries(to_key_range(&range))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.read_meta(KEY_PURGED)?;
        let last = match self.backend.log_last()? {
            Some(e) => Some(e.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // A vote must be on disk before it is acted on, or a restarted node
        // could vote twice in one term.
        self.write_meta(KEY_VOTE, vote)?;
        self.backend.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed on purpose: losing it only means re-applying a few
        // committed entries after a restart, which replay makes safe.
        self.write_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut items = Vec::new();
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry).map_err(io::Error::other)?;
            items.push((index_key(entry.log_id.index), bytes));
        }
        self.backend.log_insert(items)?;
        if self.flush_queue.send(callback).is_err() {
            return Err(io::Error::other("the log flusher has stopped"));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.backend
            .log_remove((Bound::Included(index_key(from)), Bound::Unbounded))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: if we crash midway, the state still
        // says everything up to it is gone, which is what openraft expects.
        self.write_meta(KEY_PURGED, &log_id)?;
        self.backend
            .log_remove((Bound::Unbounded, Bound::Included(index_key(log_id.index))))
    }
}
