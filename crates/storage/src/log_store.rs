//! The Raft log on sled, with group commit.

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
use crate::types::{Entry, LogId, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

/// sled-backed Raft log. Cheap to clone: every clone shares the same trees
/// and the same flusher.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    durable: Durability,
    log: sled::Tree,
    meta: sled::Tree,
    flush_queue: mpsc::UnboundedSender<IOFlushed<TypeConfig>>,
    path: PathBuf,
}

impl LogStore {
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
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_flusher(db.clone(), durable.clone(), rx));
        let store = Self {
            db,
            durable,
            log,
            meta,
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
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Number of entries currently in the log (after purges).
    pub fn len(&self) -> usize {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.meta.get(key).map_err(io::Error::other)? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(io::Error::other)?;
        self.meta.insert(key, bytes).map_err(io::Error::other)?;
        Ok(())
    }

    fn decode_entry(bytes: &[u8]) -> io::Result<Entry> {
        postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
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
async fn run_flusher(
    db: sled::Db,
    durable: Durability,
    mut rx: mpsc::UnboundedReceiver<IOFlushed<TypeConfig>>,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = durable.flush(&db).await;
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
        let mut out = Vec::new();
        for kv in self.log.range(to_key_range(&range)) {
            let (_, v) = kv.map_err(io::Error::other)?;
            out.push(Self::decode_entry(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.read_meta(KEY_PURGED)?;
        let last = match self.log.last().map_err(io::Error::other)? {
            Some((_, v)) => Some(Self::decode_entry(&v)?.log_id),
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
        self.durable.flush(&self.db).await
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
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry).map_err(io::Error::other)?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log.apply_batch(batch).map_err(io::Error::other)?;
        if self.flush_queue.send(callback).is_err() {
            return Err(io::Error::other("the log flusher has stopped"));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        let mut batch = sled::Batch::default();
        for kv in self.log.range(index_key(from)..) {
            let (k, _) = kv.map_err(io::Error::other)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io::Error::other)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: if we crash midway, the state still
        // says everything up to it is gone, which is what openraft expects.
        self.write_meta(KEY_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=index_key(log_id.index)) {
            let (k, _) = kv.map_err(io::Error::other)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io::Error::other)?;
        Ok(())
    }
}
