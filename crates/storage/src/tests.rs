use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{RaftLogReader, RaftSnapshotBuilder};
use quorumca_ledger::{Command, Proposal};

use super::*;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), openraft::StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = open(dir.path()).expect("open");
        Ok((dir, log, sm))
    }
}

/// openraft's own storage conformance suite: an implementation we did not
/// write checks ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_conformance_suite() {
    Suite::test_all(SledBuilder).await.expect("suite");
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, MemDisk> for MemBuilder {
    async fn build(
        &self,
    ) -> Result<(MemDisk, LogStore, StateMachineStore), openraft::StorageError<TypeConfig>> {
        let disk = MemDisk::new();
        let (log, sm) = open_in_memory(&disk).expect("open");
        Ok((disk, log, sm))
    }
}

/// The in-memory stores a simulation uses pass the same suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_conformance_suite_in_memory() {
    Suite::test_all(MemBuilder).await.expect("suite");
}

#[tokio::test]
async fn a_simulated_crash_keeps_what_was_flushed_and_loses_the_rest() {
    let disk = MemDisk::new();
    {
        let (mut log, mut sm) = open_in_memory(&disk).unwrap();
        append_durably(&mut log, vec![entry(1, 1), entry(1, 2)]).await;
        log.save_vote(&openraft::Vote::new(3, 2)).await.unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, None);
        // Not flushed on purpose by the store: a crash may lose it.
        log.save_committed(Some(log_id(1, 1, 2))).await.unwrap();
        // (One disk: any flush covers every store on it, as one fsync of a
        // shared file would; so nothing may flush after this point.)
    }
    disk.crash();
    let (mut log, mut sm) = open_in_memory(&disk).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 2)));
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new(3, 2))
    );
    assert_eq!(log.read_committed().await.unwrap(), None);
    assert!(sm.get_current_snapshot().await.unwrap().is_some());
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    openraft::LogId::new(
        openraft::impls::leader_id_adv::LeaderId {
            term,
            node_id: node,
        },
        index,
    )
}

fn entry(term: u64, index: u64) -> Entry {
    entry_of(term, index, 1)
}

/// An entry whose no-op payload is `len` bytes.
fn entry_of(term: u64, index: u64, len: usize) -> Entry {
    openraft::Entry {
        log_id: log_id(term, 1, index),
        payload: openraft::EntryPayload::Normal(Proposal::new(
            index,
            Command::Noop {
                payload: vec![index as u8; len],
            },
        )),
    }
}

async fn append_durably(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

#[tokio::test]
async fn log_vote_and_purge_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        let vote = openraft::impls::Vote::new(7, 2);
        log.save_vote(&vote).await.unwrap();
        append_durably(&mut log, (1..=10).map(|i| entry(7, i)).collect()).await;
        log.purge(log_id(7, 1, 3)).await.unwrap();
        log.truncate_after(Some(log_id(7, 1, 8))).await.unwrap();
        append_durably(&mut log, vec![]).await;
    }
    // sled releases its lock when the last handle (including the flusher's)
    // is dropped; give the flusher task a moment to observe the closed queue.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (mut log, _sm) = open(dir.path()).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::impls::Vote::new(7, 2))
    );
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(7, 1, 3)));
    assert_eq!(st.last_log_id, Some(log_id(7, 1, 8)));
    let got = log.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (4..=8).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn many_appends_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _sm) = open(dir.path()).unwrap();
    let mut waits = Vec::new();
    for i in 1..=200u64 {
        let mut l = log.clone();
        let (tx, rx) = TypeConfig::oneshot();
        l.append(vec![entry(1, i)], IOFlushed::signal(tx))
            .await
            .unwrap();
        waits.push(rx);
    }
    for w in waits {
        w.await.unwrap().unwrap();
    }
    assert_eq!(log.len(), 200);
}

fn big_entry(term: u64, index: u64) -> Entry {
    entry_of(term, index, 3000)
}

/// sled's data file, whose length the patched sled keeps at whole segments.
fn log_file_len(data_dir: &std::path::Path) -> u64 {
    std::fs::metadata(data_dir.join("raft-log").join("db"))
        .unwrap()
        .len()
}

/// The vendored sled gives each new log segment its full length when it
/// starts using it (vendor/sled/PATCHES.md, patch 3), so a flush overwrites
/// blocks instead of growing the file. A log many segments long, flushed
/// append by append, purged and grown again into freed segments, must read
/// back whole after every reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_many_segments_long_survives_reopen_purge_and_regrowth() {
    const SEGMENT: u64 = 512 * 1024;
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        for i in 1..=1200 {
            append_durably(&mut log, vec![big_entry(1, i)]).await;
            let len = log_file_len(dir.path());
            assert_eq!(len % SEGMENT, 0, "file length {len} after append {i}");
        }
        assert!(log_file_len(dir.path()) >= 6 * SEGMENT);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        let got = log.try_get_log_entries(0..2000).await.unwrap();
        assert_eq!(got.len(), 1200);
        for (e, i) in got.iter().zip(1..) {
            assert_eq!(*e, big_entry(1, i));
        }
        log.purge(log_id(1, 1, 1100)).await.unwrap();
        for i in 1201..=2400 {
            append_durably(&mut log, vec![big_entry(1, i)]).await;
        }
        assert_eq!(log_file_len(dir.path()) % SEGMENT, 0);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (mut log, _sm) = open(dir.path()).unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 1, 1100)));
    let got = log.try_get_log_entries(0..3000).await.unwrap();
    assert_eq!(got.len(), 1300);
    for (e, i) in got.iter().zip(1101..) {
        assert_eq!(*e, big_entry(1, i));
    }
}

#[tokio::test]
async fn snapshot_restores_state_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let hash = {
        let (_log, mut sm) = open(dir.path()).unwrap();
        let entries = (1..=5u64).map(|i| {
            Ok((
                openraft::Entry {
                    log_id: log_id(1, 1, i),
                    payload: openraft::EntryPayload::Normal(Proposal::new(
                        i,
                        Command::NextCrlNumber {
                            issuer: "eu".into(),
                        },
                    )),
                },
                None,
            ))
        });
        sm.apply(futures::stream::iter(entries)).await.unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 5)));
        let h = sm.view().read().state.hash();
        h
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (_log, mut sm) = open(dir.path()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 5)));
    assert_eq!(sm.view().read().state.hash(), hash);
    assert_eq!(sm.view().read().state.crl_number("eu"), 5);
}

#[tokio::test]
async fn corrupt_snapshot_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("snapshots")).unwrap();
    std::fs::write(
        dir.path().join("snapshots/current.snap"),
        b"\xff\xff garbage",
    )
    .unwrap();
    let err = open(dir.path()).err().expect("must fail");
    assert!(err.to_string().contains("snapshot"), "{err}");
}

#[tokio::test]
async fn prune_moves_expired_records_to_the_archive_durably() {
    use quorumca_ledger::{IssuanceRecord, IssuerRecord, Serial};
    let dir = tempfile::tempdir().unwrap();
    let record = |seq: u64, not_after_ms: u64| {
        Command::RecordIssuance(IssuanceRecord {
            issuer: "eu".into(),
            serial: Serial(vec![seq as u8 + 1]),
            sequence: seq,
            node_id: 1,
            not_before_ms: 0,
            not_after_ms,
            names_digest: [0; 32],
            spki_hash: [seq as u8; 32],
            profile: "p".into(),
            namespace: "n".into(),
            actor: "r".into(),
            full_der: None,
            der_for_replay_only: false,
        })
    };
    let commands = vec![
        Command::RegisterIssuer(IssuerRecord {
            id: "eu".into(),
            region: Some("eu".into()),
            cert_der: vec![0x30, 0],
            sealed_key: None,
            parent: None,
            not_after_ms: u64::MAX,
            crl_shards: 2,
        }),
        Command::GrantSerialLease {
            node_id: 1,
            issuer: "eu".into(),
            block: 10,
            expires_at_ms: 1_000_000,
        },
        record(0, 1_000),
        record(1, 9_000_000),
        Command::PruneExpired { before_ms: 5_000 },
    ];
    {
        let (_log, mut sm) = open(dir.path()).unwrap();
        let entries: Vec<_> = commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                Ok((
                    openraft::Entry {
                        log_id: log_id(1, 1, i as u64 + 1),
                        payload: openraft::EntryPayload::Normal(Proposal::new(10, c)),
                    },
                    None,
                ))
            })
            .collect();
        sm.apply(futures::stream::iter(entries)).await.unwrap();
        assert_eq!(sm.view().read().state.record_count(), 1);
        // Building a snapshot flushes the archive first.
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (_log, sm) = open(dir.path()).unwrap();
    let archive = sm.archive();
    assert_eq!(archive.len(), 1);
    let got = archive
        .get("eu", &Serial(vec![1]))
        .unwrap()
        .expect("archived");
    assert_eq!(got.record.not_after_ms, 1_000);
    assert!(archive.get("eu", &Serial(vec![2])).unwrap().is_none());
    assert_eq!(sm.view().read().state.record_count(), 1);
}

/// Every directory and file under `dir` with its mode, for the message.
fn modes_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), m.permissions().mode() & 0o777));
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

/// Security hardening 8: the data directory and everything in it (the
/// Raft log's `raft-log/db`, the archive's `archive/db`, snapshots) are
/// private to the node's user, under a permissive umask too, and a
/// directory an older version left open is tightened on the next open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directories_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // What an older version left: an open directory and a readable file.
    std::fs::create_dir_all(data.join("snapshots")).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("snapshots/old"), b"x").unwrap();
    std::fs::set_permissions(
        data.join("snapshots/old"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    {
        let (mut log, mut sm) = open(&data).unwrap();
        append_durably(&mut log, (1..=20).map(|i| entry(1, i)).collect()).await;
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let all = modes_under(&data);
    for name in ["raft-log/db", "archive/db", "snapshots"] {
        assert!(
            all.iter().any(|(p, _)| p.ends_with(name)),
            "{name} missing from {all:?}"
        );
    }
    let loose: Vec<_> = all
        .iter()
        .filter(|(p, mode)| {
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            *mode != want
        })
        .collect();
    assert!(loose.is_empty(), "not private: {loose:?}");
}

/// Security hardening 5: audit entries the ledger evicts over its caps are
/// in the archive, in order, none lost. Large denials hit the byte cap
/// long before the count cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_audit_entries_are_archived_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open(dir.path()).unwrap();
    let big = "r".repeat(256 * 1024);
    let n = (quorumca_ledger::MAX_AUDIT_BYTES / (256 * 1024)) + 40;
    let entries = (1..=n).map(|i| {
        Ok((
            openraft::Entry {
                log_id: log_id(1, 1, i),
                payload: openraft::EntryPayload::Normal(Proposal::new(
                    i,
                    Command::RecordDenial {
                        identity: format!("caller{i}"),
                        action: "issue".into(),
                        reason: big.clone(),
                    },
                )),
            },
            None,
        ))
    });
    sm.apply(futures::stream::iter(entries)).await.unwrap();
    let view = sm.view();
    let (held, oldest, bytes) = {
        let a = view.read();
        (
            a.state.audit_entries(0, usize::MAX, |_| true),
            a.state.oldest_audit_seq().unwrap(),
            a.state.audit_bytes(),
        )
    };
    assert!(bytes <= quorumca_ledger::MAX_AUDIT_BYTES, "{bytes}");
    assert!(oldest > 1, "nothing was evicted");
    let archived = sm.archive().audit_after(0, usize::MAX, |_| true).unwrap();
    assert_eq!(archived.len() as u64, oldest - 1);
    let all: Vec<u64> = archived.iter().chain(&held).map(|e| e.seq).collect();
    assert_eq!(all, (1..=n).collect::<Vec<_>>(), "every entry, in order");
    assert_eq!(archived[0].actor, "caller1");
    // Paging in the archive.
    let page = sm.archive().audit_after(5, 3, |_| true).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8]);
}
