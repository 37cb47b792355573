//! Real 3- and 5-node clusters on loopback: election, failover, restart,
//! snapshot catch-up, forwarding, quorum loss, durability, bad input.

use std::time::{Duration, Instant};

use crate::support::*;
use quorumca_consensus::{ConsensusError, NodeInfo, RaftSettings, WIRE_VERSION};
use quorumca_ledger::{Command, Proposal};
use quorumca_proto::cluster_client::ClusterClient;
use quorumca_proto::raft_transport_client::RaftTransportClient;
use quorumca_proto::{PingRequest, RaftMessage, RemoveNodeRequest};

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_a_leader_and_commit() {
    init_tracing();
    let c = TestCluster::start(3, fast_settings()).await;
    let leader = c.wait_leader(T).await;
    let mut last = 0;
    for i in 0..20 {
        let r = c
            .node(leader)
            .propose(crl_bump(&format!("k{i}")))
            .await
            .unwrap();
        assert_eq!(crl_number(&r.outcome), i + 1);
        last = r.log_index;
    }
    c.wait_converged(last, T).await;
    for n in c.up() {
        assert_eq!(n.read_local(|s| s.crl_number("test")), 20);
        let st = n.status();
        assert_eq!(st.members.len(), 3);
        assert!(st
            .members
            .iter()
            .all(|m| m.voter && !m.info.region.is_empty() && !m.info.zone.is_empty()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_elects_a_new_one_and_commits_continue() {
    init_tracing();
    let mut c = TestCluster::start(3, fast_settings()).await;
    let old = c.wait_leader(T).await;
    c.node(old).propose(crl_bump("before")).await.unwrap();
    c.kill(old).await;
    let new = c.wait_leader(T).await;
    assert_ne!(new, old);
    let r = c.node(new).propose(crl_bump("after")).await.unwrap();
    assert_eq!(crl_number(&r.outcome), 2);
    c.restart(old).await;
    c.wait_converged(r.log_index, T).await;
    assert_eq!(c.node(old).read_local(|s| s.crl_number("test")), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_is_replaced_cannot_commit_and_catches_up_after_healing() {
    init_tracing();
    // Real nodes over the in-memory network, whose links can be cut.
    let c = TestCluster::start_in_memory(3, fast_settings()).await;
    let old = c.wait_leader(T).await;
    c.node(old).propose(crl_bump("before")).await.unwrap();
    c.isolate(old);
    let new = c.wait_leader_among_others(old, T).await;
    assert_ne!(new, old);
    let r = c.node(new).propose(crl_bump("during")).await.unwrap();
    assert_eq!(crl_number(&r.outcome), 2);
    // Once its quorum lease (the longest election timeout) has run out, the
    // cut-off leader refuses at once instead of waiting out the propose
    // timeout, so callers fail over quickly.
    tokio::time::sleep(Duration::from_millis(
        fast_settings().election_timeout_max_ms,
    ))
    .await;
    let started = Instant::now();
    let stranded = c.node(old).propose(crl_bump("stranded")).await;
    match &stranded {
        Err(ConsensusError::Unavailable { reason, .. }) => {
            assert!(reason.contains("cut off"), "{reason}")
        }
        other => panic!("an isolated leader answered {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    c.net.as_ref().unwrap().heal();
    c.wait_converged(r.log_index, T).await;
    assert_eq!(c.wait_leader(T).await, new);
    // Whatever the stranded proposal became, every node agrees on it.
    let n = c.node(old).read_local(|s| s.crl_number("test"));
    assert!(n == 2 || n == 3, "crl number {n}");
    for node in c.up() {
        assert_eq!(node.read_local(|s| s.crl_number("test")), n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_nodes_keep_acknowledged_writes_through_crashes_of_every_node() {
    init_tracing();
    // In-memory disks lose what was not flushed when a node is killed, so
    // this checks that an acknowledgement means "flushed on a quorum".
    let mut c = TestCluster::start_in_memory(3, fast_settings()).await;
    let leader = c.wait_leader(T).await;
    let mut last = 0;
    for i in 0..30 {
        last = c
            .node(leader)
            .propose(crl_bump(&format!("m{i}")))
            .await
            .unwrap()
            .log_index;
    }
    for id in 1..=3 {
        c.kill(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    let leader = c.wait_leader(T).await;
    let r = c.node(leader).propose(crl_bump("after")).await.unwrap();
    assert!(r.log_index > last);
    assert_eq!(crl_number(&r.outcome), 31);
    c.wait_converged(r.log_index, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_sent_to_a_follower_commits() {
    init_tracing();
    let c = TestCluster::start(3, fast_settings()).await;
    let leader = c.wait_leader(T).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let r = c
        .node(follower)
        .propose(crl_bump("via-follower"))
        .await
        .unwrap();
    assert_eq!(crl_number(&r.outcome), 1);
    // Visible through a linearizable read on the follower itself, at once.
    let n = c
        .node(follower)
        .read_linearizable(|s| s.crl_number("test"))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(c.node(leader).read_local(|s| s.crl_number("test")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_recovers_its_state_from_disk() {
    init_tracing();
    let mut c = TestCluster::start(3, fast_settings()).await;
    let leader = c.wait_leader(T).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let mut last = 0;
    for i in 0..30 {
        last = c
            .node(leader)
            .propose(crl_bump(&format!("r{i}")))
            .await
            .unwrap()
            .log_index;
    }
    let hash = c.wait_converged(last, T).await;
    c.kill(victim).await;
    c.restart(victim).await;
    // Before it hears from anyone, the restarted node already has its state
    // back: snapshot (if any) plus its own log replayed up to the commit.
    let deadline = Instant::now() + T;
    while c.node(victim).status().applied_index < last {
        assert!(Instant::now() < deadline, "restarted node did not recover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.node(victim).read_local(|s| s.crl_number("test")), 30);
    assert_eq!(c.wait_converged(last, T).await, hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_a_snapshot_catches_up_through_install_snapshot() {
    let settings = RaftSettings {
        snapshot_every: 20,
        keep_after_snapshot: 0,
        ..fast_settings()
    };
    init_tracing();
    let mut c = TestCluster::start(3, settings).await;
    let leader = c.wait_leader(T).await;
    let laggard = (1..=3).find(|i| *i != leader).unwrap();
    c.kill(laggard).await;
    let mut last = 0;
    for i in 0..120 {
        last = c
            .node(leader)
            .propose(crl_bump(&format!("s{i}")))
            .await
            .unwrap()
            .log_index;
    }
    // The leader must have purged the entries the laggard would need, so
    // only a snapshot can bring it back.
    let deadline = Instant::now() + T;
    loop {
        let m = c.node(leader).raft().metrics().borrow_watched().clone();
        if m.purged.as_ref().map(|p| p.index).unwrap_or(0) > 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leader never purged its log: {:?}",
            m.purged
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.restart(laggard).await;
    c.wait_converged(last, T).await;
    let st = c.node(laggard).status();
    assert!(
        st.snapshot_index > 30,
        "laggard has no installed snapshot: {st:?}"
    );
    assert_eq!(c.node(laggard).read_local(|s| s.crl_number("test")), 120);
}

use openraft::async_runtime::WatchReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_commit_with_two_down_and_refuse_clearly_with_three_down() {
    init_tracing();
    let mut c = TestCluster::start(5, fast_settings()).await;
    let leader = c.wait_leader(T).await;
    // Take the leader and one follower down.
    let other = (1..=5).find(|i| *i != leader).unwrap();
    c.kill(leader).await;
    c.kill(other).await;
    let survivor = c.up().next().unwrap().id();
    let r = c
        .node(survivor)
        .propose(crl_bump("two-down"))
        .await
        .unwrap();
    assert_eq!(crl_number(&r.outcome), 1);

    let third = c.up().map(|n| n.id()).find(|i| *i != survivor).unwrap();
    c.kill(third).await;
    let started = Instant::now();
    let err = c
        .node(survivor)
        .propose(crl_bump("three-down"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ConsensusError::Unavailable { .. }), "{err}");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: must time out, not hang"
    );
    let status = err.to_status();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("retry"), "{}", status.message());

    // The same through the public gRPC surface.
    let addr = c.node(survivor).addr();
    let mut client = ClusterClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let err = client
        .ping(PingRequest { payload: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_killing_every_node() {
    init_tracing();
    let mut c = TestCluster::start(3, fast_settings()).await;
    let leader = c.wait_leader(T).await;
    for i in 0..25 {
        c.node(leader)
            .propose(crl_bump(&format!("d{i}")))
            .await
            .unwrap();
    }
    for id in 1..=3 {
        c.kill(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    let leader = c.wait_leader(T).await;
    let n = c
        .node(leader)
        .read_linearizable(|s| s.crl_number("test"))
        .await
        .unwrap();
    assert_eq!(n, 25);
    // A retried key from before the crash still answers its first outcome.
    let again = c.node(leader).propose(crl_bump("d3")).await.unwrap();
    assert_eq!(crl_number(&again.outcome), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_leader_failovers_in_a_row() {
    init_tracing();
    let mut c = TestCluster::start(3, fast_settings()).await;
    let timeout_max = Duration::from_millis(fast_settings().election_timeout_max_ms);
    let mut worst = Duration::ZERO;
    let mut last = 0;
    for round in 0..50u64 {
        let leader = c.wait_leader(T).await;
        c.kill(leader).await;
        let started = Instant::now();
        // The two survivors must agree on a new leader within a few
        // election timeouts: no split-vote livelock.
        let new = c.wait_leader(timeout_max * 10).await;
        worst = worst.max(started.elapsed());
        assert_ne!(new, leader);
        last = c
            .node(new)
            .propose(crl_bump(&format!("f{round}")))
            .await
            .unwrap()
            .log_index;
        c.restart(leader).await;
    }
    let _ = c.wait_leader(T).await;
    c.wait_converged(last, T).await;
    assert_eq!(c.node(1).read_local(|s| s.crl_number("test")), 50);
    eprintln!(
        "50 failovers: slowest election took {worst:?} (election timeout max {timeout_max:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_misaddressed_peer_messages_are_refused_and_change_nothing() {
    init_tracing();
    let c = TestCluster::start(3, fast_settings()).await;
    let leader = c.wait_leader(T).await;
    let r = c.node(leader).propose(crl_bump("x")).await.unwrap();
    let hash = c.wait_converged(r.log_index, T).await;
    let target = (1..=3).find(|i| *i != leader).unwrap();
    let before = c.node(target).status();
    let mut raw = RaftTransportClient::connect(format!("http://{}", c.node(target).addr()))
        .await
        .unwrap();

    let garbage = RaftMessage {
        version: WIRE_VERSION,
        target_node_id: target,
        payload: vec![0xff; 64],
    };
    let e = raw.append_entries(garbage.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("cannot decode AppendEntries"),
        "{}",
        e.message()
    );
    let e = raw.install_snapshot(garbage.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = raw
        .vote(RaftMessage {
            payload: vec![],
            ..garbage.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    let e = raw
        .vote(RaftMessage {
            version: 99,
            ..garbage.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("version 99"), "{}", e.message());

    let e = raw
        .vote(RaftMessage {
            target_node_id: 42,
            ..garbage.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("node 42"), "{}", e.message());

    // A node id that is not a member cannot be removed.
    let mut cluster = ClusterClient::connect(format!("http://{}", c.node(target).addr()))
        .await
        .unwrap();
    let e = cluster
        .remove_node(RemoveNodeRequest { node_id: 99 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("node 99 is not a member"),
        "{}",
        e.message()
    );

    // Nothing changed: same term, same log, same ledger, still serving.
    let after = c.node(target).status();
    assert_eq!(
        (before.term, before.last_log_index, &before.ledger_hash),
        (after.term, after.last_log_index, &after.ledger_hash)
    );
    assert_eq!(after.ledger_hash, hash);
    let p = cluster
        .ping(PingRequest {
            payload: b"still alive".to_vec(),
        })
        .await
        .unwrap();
    assert!(p.into_inner().log_index > r.log_index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_is_added_as_learner_promoted_and_removed() {
    init_tracing();
    let mut c = TestCluster::start(3, fast_settings()).await;
    let leader = c.wait_leader(T).await;
    for i in 0..10 {
        c.node(leader)
            .propose(crl_bump(&format!("m{i}")))
            .await
            .unwrap();
    }
    // A fourth, empty node.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let mut cfg = c.configs[0].clone();
    cfg.node_id = 4;
    cfg.listen = addr;
    cfg.data_dir = c.dir.path().join("node4");
    cfg.region = "region-x".into();
    cfg.zone = "zone-x".into();
    c.configs.push(cfg.clone());
    c.nodes
        .push(Some(quorumca_consensus::Node::start(cfg).await.unwrap()));
    let info = c.node(4).info().clone();
    // Ask a follower: membership changes are forwarded too.
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let members = c.node(follower).add_node(4, info, true).await.unwrap();
    assert_eq!(members.len(), 4);
    let m4 = members.iter().find(|m| m.node_id == 4).unwrap();
    assert!(m4.voter);
    assert_eq!(m4.info.region, "region-x");
    let r = c.node(leader).propose(crl_bump("m-after")).await.unwrap();
    c.wait_converged(r.log_index, T).await;
    assert_eq!(c.node(4).read_local(|s| s.crl_number("test")), 11);

    let members = c.node(leader).remove_node(4).await.unwrap();
    assert!(members.iter().all(|m| m.node_id != 4), "{members:?}");
    let bad = c
        .node(leader)
        .add_node(5, NodeInfo::default(), true)
        .await
        .unwrap_err();
    assert!(matches!(bad, ConsensusError::InvalidArgument(_)), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initialize_refuses_a_member_list_without_this_node() {
    init_tracing();
    let c = TestCluster::start(1, fast_settings()).await;
    let e = c
        .node(1)
        .initialize(
            [(
                7,
                NodeInfo {
                    addr: "127.0.0.1:1".into(),
                    region: "r".into(),
                    zone: "z".into(),
                },
            )]
            .into(),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("node 1 is not in the initial member list"),
        "{e}"
    );
    // Noop proposals with oversized payloads are refused before Raft.
    let e = c
        .node(1)
        .propose(Proposal::new(
            1,
            Command::Noop {
                payload: vec![0; 4096],
            },
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ConsensusError::InvalidArgument(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_transfers_to_a_chosen_voter_from_any_node() {
    let c = TestCluster::start(3, fast_settings()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let target = (1..=3).find(|&i| i != leader && i != follower).unwrap();
    // Asked through a follower: forwarded to the leader, which hands over.
    let (now, _term) = c.node(follower).transfer_leader(target).await.unwrap();
    assert_eq!(now, target);
    assert_eq!(c.wait_leader(Duration::from_secs(5)).await, target);
    // The new leader commits.
    let p = Proposal::new(
        quorumca_consensus::now_ms(),
        Command::Noop { payload: vec![] },
    );
    c.node(leader).propose(p).await.unwrap();
    // Only voters can lead.
    let e = c.node(leader).transfer_leader(42).await.unwrap_err();
    assert!(e.to_string().contains("not a voter"), "{e}");
}
