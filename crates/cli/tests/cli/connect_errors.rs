//! What every command says when it cannot reach a node, one test per
//! cause, against a real `quorumca dev` cluster: no credentials, another
//! cluster's credentials (a foreign CA), no endpoints, one dead endpoint
//! among live ones, and an address that is not a node's API port. Each
//! message must name the cause and what to fix, and a cause that no other
//! node could cure must be reported at once, not after the 30 s call
//! deadline.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{env_value, free_ports, start_dev, BIN};

/// What a run printed and how long it took.
struct Run {
    ok: bool,
    stderr: String,
    took: Duration,
}

/// Runs `quorumca args` with exactly these QUORUMCA_ variables set.
fn run(endpoints: Option<&str>, credentials: Option<&Path>, args: &[&str]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("QUORUMCA_ENDPOINTS")
        .env_remove("QUORUMCA_CREDENTIALS");
    if let Some(e) = endpoints {
        c.env("QUORUMCA_ENDPOINTS", e);
    }
    if let Some(d) = credentials {
        c.env("QUORUMCA_CREDENTIALS", d);
    }
    let start = Instant::now();
    let out = c.output().expect("run quorumca");
    Run {
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// Asserts the run failed, quickly, saying each of `says`.
fn refused_at_once(what: &str, r: &Run, says: &[&str]) {
    assert!(!r.ok, "{what}: succeeded; stderr: {}", r.stderr);
    for s in says {
        assert!(r.stderr.contains(s), "{what}: no {s:?} in: {}", r.stderr);
    }
    assert!(
        r.took < Duration::from_secs(10),
        "{what}: took {:?} (a cause every node shares must be reported at once)",
        r.took
    );
    assert!(
        !r.stderr.contains("h2 protocol error") && !r.stderr.contains("transport error (Unknown)"),
        "{what}: tonic's words instead of a cause: {}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_says_why_it_cannot_reach_a_node_and_what_to_fix() {
    let _turn = crate::support::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let (_dev, base, env) = start_dev(&dir.path().join("dev")).await;
    let endpoints = env_value(&env, "QUORUMCA_ENDPOINTS");
    let admin = std::path::PathBuf::from(env_value(&env, "QUORUMCA_CREDENTIALS"));
    let issue = [
        "issue",
        "--dns",
        "probe.default.svc.dev.internal",
        "-o",
        "json",
    ];

    // No credentials: the nodes speak mTLS, this client dialled plaintext.
    for args in [
        &issue[..],
        &["cert", "list"],
        &["policy", "show"],
        &["bundle", "get"],
    ] {
        let r = run(Some(&endpoints), None, args);
        refused_at_once(
            &format!("{args:?} without credentials"),
            &r,
            &[
                "without credentials",
                "QUORUMCA_CREDENTIALS",
                ". dev-data/env",
            ],
        );
    }
    // `cluster status` says it of each node, not "unreachable, is the
    // cluster running?".
    let r = run(Some(&endpoints), None, &["cluster", "status"]);
    assert!(!r.ok);
    assert_eq!(
        r.stderr
            .matches("dialled plaintext, without credentials")
            .count(),
        3,
        "one reason per node: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("is the cluster running"), "{}", r.stderr);

    // A foreign CA: another cluster's bundle (its own root).
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let secret = foreign.join("unseal.secret");
    std::fs::write(&secret, "another cluster's secret, 32+ bytes\n").unwrap();
    quorumca_cli::dev::prepare_pki(&foreign, 1, &secret).unwrap();
    let r = run(Some(&endpoints), Some(&foreign.join("admin")), &issue);
    refused_at_once(
        "another cluster's credentials",
        &r,
        &[
            "not trusted",
            "another cluster's roots",
            "QUORUMCA_CREDENTIALS",
        ],
    );

    // No endpoints: the variable and the env file, not only clap's line.
    let r = run(None, Some(&admin), &issue);
    refused_at_once(
        "no endpoints",
        &r,
        &["no endpoints", "QUORUMCA_ENDPOINTS", ". dev-data/env"],
    );
    let r = run(None, Some(&admin), &["cluster", "status"]);
    refused_at_once("cluster status, no endpoints", &r, &["QUORUMCA_ENDPOINTS"]);

    // One dead endpoint first: the call fails over, says so, and succeeds
    // without waiting for a deadline.
    let dead = format!("127.0.0.1:{}", free_ports(1)[0]);
    let r = run(Some(&format!("{dead},{endpoints}")), Some(&admin), &issue);
    assert!(r.ok, "one dead endpoint: {}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{dead}: nothing is listening there"))
            && r.stderr.contains("failing over to"),
        "the failover is not said: {}",
        r.stderr
    );
    assert!(r.took < Duration::from_secs(10), "took {:?}", r.took);

    // Not a node: node 1's HTTP port (CRLs and OCSP) given as an API port.
    let http = format!("127.0.0.1:{}", base + 200);
    let r = run(Some(&http), Some(&admin), &issue);
    refused_at_once(
        "an HTTP port as an endpoint",
        &r,
        &["does not speak TLS", "not a QuorumCA node's API port"],
    );
}
