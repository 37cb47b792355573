//! A node's disk in memory, for deterministic simulations.
//!
//! sled does its I/O on its own threads and the real file system takes
//! real time, so neither can run under a simulated clock or replay from a
//! seed. [`MemDisk`] keeps what the stores need (ordered trees and whole
//! files) with the one property a crash test relies on: what was written
//! but not flushed is lost by [`MemDisk::crash`], as on a power cut, and
//! what was flushed survives. A simulation keeps the `MemDisk` of each node
//! across the node's crash and restart.
//!
//! Every operation completes inline: no thread, no wait, no real time.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Default)]
struct Image {
    trees: BTreeMap<&'static str, Tree>,
    files: BTreeMap<&'static str, Vec<u8>>,
}

/// A write not yet flushed.
enum Pending {
    Insert(&'static str, Vec<u8>, Vec<u8>),
    Remove(&'static str, Vec<u8>),
}

#[derive(Default)]
struct Inner {
    /// What reads see.
    live: Image,
    /// What survives a crash.
    durable: Image,
    pending: Vec<Pending>,
    flushes: u64,
}

/// See the module doc. Cheap to clone; clones share one disk.
#[derive(Clone, Default)]
pub struct MemDisk(Arc<Mutex<Inner>>);

impl std::fmt::Debug for MemDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("MemDisk")
            .field("pending_writes", &g.pending.len())
            .field("flushes", &g.flushes)
            .finish()
    }
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().expect("mem disk lock poisoned")
    }

    /// Loses every write since the last flush. Call it while no store is
    /// open on this disk (the node is down), as a crash would find it.
    pub fn crash(&self) {
        let mut g = self.lock();
        g.live = g.durable.clone();
        g.pending.clear();
    }

    /// How many flushes reached the disk (for tests).
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// Makes every write so far durable (one fsync).
    pub fn flush(&self) {
        let mut g = self.lock();
        let pending = std::mem::take(&mut g.pending);
        for p in pending {
            match p {
                Pending::Insert(t, k, v) => {
                    g.durable.trees.entry(t).or_default().insert(k, v);
                }
                Pending::Remove(t, k) => {
                    if let Some(tree) = g.durable.trees.get_mut(t) {
                        tree.remove(&k);
                    }
                }
            }
        }
        g.flushes += 1;
    }

    /// The live value of `key` in `tree` (written, perhaps not yet flushed).
    pub fn get(&self, tree: &'static str, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().live.trees.get(tree)?.get(key).cloned()
    }

    /// Writes `key` in `tree`; durable only after the next flush.
    pub fn insert(&self, tree: &'static str, key: &[u8], value: Vec<u8>) {
        let mut g = self.lock();
        g.live
            .trees
            .entry(tree)
            .or_default()
            .insert(key.to_vec(), value.clone());
        g.pending.push(Pending::Insert(tree, key.to_vec(), value));
    }

    /// Removes `key` from `tree`; durable only after the next flush.
    pub fn remove(&self, tree: &'static str, key: &[u8]) {
        let mut g = self.lock();
        if let Some(t) = g.live.trees.get_mut(tree) {
            t.remove(key);
        }
        g.pending.push(Pending::Remove(tree, key.to_vec()));
    }

    /// Entries with keys in the range, in key order.
    pub fn range(
        &self,
        tree: &'static str,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let g = self.lock();
        match g.live.trees.get(tree) {
            None => Vec::new(),
            Some(t) => t
                .range(range)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The entry with the greatest key in `tree`.
    pub fn last(&self, tree: &'static str) -> Option<(Vec<u8>, Vec<u8>)> {
        let g = self.lock();
        g.live
            .trees
            .get(tree)?
            .last_key_value()
            .map(|(k, v)| (k.clone(), v.clone()))
    }

    /// How many entries `tree` holds.
    pub fn len(&self, tree: &'static str) -> usize {
        self.lock().live.trees.get(tree).map_or(0, |t| t.len())
    }

    /// Replaces a whole file durably, as write + fsync + rename + fsync of
    /// the directory does: it is either the old or the new content.
    pub fn replace_file(&self, name: &'static str, bytes: Vec<u8>) {
        let mut g = self.lock();
        g.live.files.insert(name, bytes.clone());
        g.durable.files.insert(name, bytes);
    }

    /// The live content of a file written with [`MemDisk::replace_file`].
    pub fn read_file(&self, name: &'static str) -> Option<Vec<u8>> {
        self.lock().live.files.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_flushed_writes_and_loses_the_rest() {
        let d = MemDisk::new();
        d.insert("log", b"1", b"one".to_vec());
        d.insert("log", b"2", b"two".to_vec());
        d.flush();
        d.insert("log", b"3", b"three".to_vec());
        d.remove("log", b"1");
        d.replace_file("snap", b"s1".to_vec());
        assert_eq!(d.len("log"), 2);
        assert_eq!(d.last("log").unwrap().0, b"3");
        d.crash();
        assert_eq!(d.get("log", b"1").as_deref(), Some(&b"one"[..]));
        assert_eq!(d.get("log", b"3"), None);
        assert_eq!(d.len("log"), 2);
        // A replaced file is durable at once.
        assert_eq!(d.read_file("snap").as_deref(), Some(&b"s1"[..]));
        let all = d.range("log", (Bound::Unbounded, Bound::Unbounded));
        assert_eq!(all.len(), 2);
        assert_eq!(d.flushes(), 1);
    }
}
