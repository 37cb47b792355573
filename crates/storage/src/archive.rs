//! Records of expired certificates, moved out of the replicated state.
//!
//! Short-lived fleets mint millions of certificates; keeping every record in
//! the ledger would make memory, snapshots and restarts track history
//! instead of what is live. When a `PruneExpired` command applies, each node
//! first copies the records it drops (with their revocation, if any) into
//! this local sled tree, so "what did we issue to whom" stays answerable
//! without weighing on consensus.
//!
//! Audit entries the ledger evicts (over its count or byte cap) land here
//! too, in their own tree keyed by chain sequence, so no audit entry is
//! dropped: `QueryAudit` reads older pages from here.
//!
//! The archive is per node and best effort by design: a node that caught up
//! through a snapshot never saw the prunes before it, so its archive holds
//! only what it pruned itself. Every node applies the same prunes from the
//! log, so in a healthy cluster the archives agree.

use std::path::{Path, PathBuf};

use quorumca_ledger::{AuditEntry, IssuanceRecord, Revocation, Serial};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::mem_disk::MemDisk;

/// One archived certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRecord {
    /// The issuance record as the ledger held it.
    pub record: IssuanceRecord,
    /// Its revocation, if it was revoked.
    pub revocation: Option<Revocation>,
}

/// One node's archive of expired records and evicted audit entries.
#[derive(Clone, Debug)]
pub struct Archive {
    backend: Backend,
    path: PathBuf,
}

#[derive(Clone, Debug)]
enum Backend {
    Sled(sled::Db),
    Mem(MemDisk),
}

const TREE: &str = "archive";

/// The tree of evicted audit entries, keyed by sequence (big-endian).
const AUDIT_TREE: &str = "audit";

fn key(issuer: &str, serial: &Serial) -> Vec<u8> {
    // Issuer ids never contain NUL, so the key splits unambiguously.
    let mut k = issuer.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&serial.0);
    k
}

impl Archive {
    /// Opens (or creates) the archive at `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|source| StorageError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            backend: Backend::Sled(db),
            path: path.to_path_buf(),
        })
    }

    /// The archive on an in-memory disk (simulations).
    pub fn in_memory(disk: &MemDisk) -> Self {
        Self {
            backend: Backend::Mem(disk.clone()),
            path: PathBuf::from("<memory>/archive"),
        }
    }

    /// Stores records; writing the same record again (a replayed prune
    /// after a restart) is harmless.
    pub fn put(&self, items: &[ArchivedRecord]) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Sled(db) => {
                let mut batch = sled::Batch::default();
                for item in items {
                    let value = postcard::to_stdvec(item).expect("records serialise");
                    batch.insert(key(&item.record.issuer, &item.record.serial), value);
                }
                db.apply_batch(batch).map_err(|e| self.io(e))
            }
            Backend::Mem(d) => {
                for item in items {
                    let value = postcard::to_stdvec(item).expect("records serialise");
                    d.insert(TREE, &key(&item.record.issuer, &item.record.serial), value);
                }
                Ok(())
            }
        }
    }

    /// The archived record of this certificate, if this node pruned it.
    pub fn get(
        &self,
        issuer: &str,
        serial: &Serial,
    ) -> Result<Option<ArchivedRecord>, StorageError> {
        let found = match &self.backend {
            Backend::Sled(db) => db
                .get(key(issuer, serial))
                .map_err(|e| self.io(e))?
                .map(|v| v.to_vec()),
            Backend::Mem(d) => d.get(TREE, &key(issuer, serial)),
        };
        let Some(bytes) = found else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                what: "an archived record",
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Stores audit entries the ledger evicted; storing one again (a
    /// replayed apply after a restart) is harmless.
    pub fn put_audit(&self, entries: &[AuditEntry]) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Sled(db) => {
                let tree = db.open_tree(AUDIT_TREE).map_err(|e| self.io(e))?;
                let mut batch = sled::Batch::default();
                for e in entries {
                    let value = postcard::to_stdvec(e).expect("audit entries serialise");
                    batch.insert(&e.seq.to_be_bytes(), value);
                }
                tree.apply_batch(batch).map_err(|e| self.io(e))
            }
            Backend::Mem(d) => {
                for e in entries {
                    let value = postcard::to_stdvec(e).expect("audit entries serialise");
                    d.insert(AUDIT_TREE, &e.seq.to_be_bytes(), value);
                }
                Ok(())
            }
        }
    }

    /// Archived audit entries with sequence numbers after `after_seq`,
    /// oldest first, at most `limit` of those `keep` accepts.
    pub fn audit_after(
        &self,
        after_seq: u64,
        limit: usize,
        keep: impl Fn(&AuditEntry) -> bool,
    ) -> Result<Vec<AuditEntry>, StorageError> {
        let start = after_seq.saturating_add(1).to_be_bytes().to_vec();
        let decode = |bytes: &[u8]| {
            postcard::from_bytes::<AuditEntry>(bytes).map_err(|e| StorageError::Corrupt {
                what: "an archived audit entry",
                path: self.path.clone(),
                reason: e.to_string(),
            })
        };
        let mut out = Vec::new();
        match &self.backend {
            Backend::Sled(db) => {
                let tree = db.open_tree(AUDIT_TREE).map_err(|e| self.io(e))?;
                for kv in tree.range(start..) {
                    if out.len() >= limit {
                        break;
                    }
                    let (_, v) = kv.map_err(|e| self.io(e))?;
                    let e = decode(&v)?;
                    if keep(&e) {
                        out.push(e);
                    }
                }
            }
            Backend::Mem(d) => {
                use std::ops::Bound;
                for (_, v) in d.range(AUDIT_TREE, (Bound::Included(start), Bound::Unbounded)) {
                    if out.len() >= limit {
                        break;
                    }
                    let e = decode(&v)?;
                    if keep(&e) {
                        out.push(e);
                    }
                }
            }
        }
        Ok(out)
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        match &self.backend {
            Backend::Sled(db) => db.len(),
            Backend::Mem(d) => d.len(TREE),
        }
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes every archived record durable. Called before a snapshot is
    /// written: once a snapshot no longer holds a record, the archive must.
    pub fn flush(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Sled(db) => db.flush().map(|_| ()).map_err(|e| self.io(e)),
            Backend::Mem(d) => {
                d.flush();
                Ok(())
            }
        }
    }

    fn io(&self, e: sled::Error) -> StorageError {
        StorageError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        }
    }
}
