//! The `load` tool against a real (in-process, 3-node, mTLS) cluster: each
//! operation runs briefly, succeeds, and reports JSON that says so. Guards
//! the tool itself; its numbers are not checked here (they belong in
//! benchmark runs, not tests).

use std::time::Duration;

use quorumca_benches::cluster::InProcessCluster;

async fn run_load(cluster: &InProcessCluster, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_load"))
        .args(args)
        .args(["--endpoints", &cluster.api_endpoints().join(",")])
        .arg("--credentials")
        .arg(&cluster.admin_dir)
        .args([
            "--namespace",
            "payments",
            "--dns-suffix",
            "payments.svc.cluster.local",
            "--profile",
            "web",
            "--concurrency",
            "4",
            "--duration",
            "1",
            "--output",
            "json",
        ])
        .env_remove("QUORUMCA_ENDPOINTS")
        .env_remove("QUORUMCA_CREDENTIALS")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("load finishes by itself")
        .expect("load runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("load {args:?} printed no JSON ({e}): {stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_runs_against_a_cluster_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = InProcessCluster::start(dir.path(), 3).await.unwrap();
    for op in [
        vec!["issue"],
        vec!["revoke", "--prepare", "40"],
        vec!["crl"],
        vec!["ocsp"],
    ] {
        let v = run_load(&cluster, &op).await;
        let r = &v["result"];
        assert_eq!(v["op"], op[0], "{v}");
        assert!(r["ok"].as_u64().unwrap() > 0, "{op:?}: {v}");
        assert_eq!(r["errors"], 0, "{op:?}: {v}");
        assert!(v["first_error"].is_null(), "{op:?}: {v}");
        assert!(r["p99_ms"].as_f64().unwrap() > 0.0, "{op:?}: {v}");
    }
    // Revoke is bounded by what it prepared: 10 certificates, 10 revocations.
    let v = run_load(&cluster, &["revoke", "--prepare", "10"]).await;
    assert_eq!(v["result"]["ok"], 10, "{v}");
    // A caller outside policy: every issue fails, the first error is shown
    // and the tool exits non-zero.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_load"))
        .args(["issue", "--duration", "1", "--concurrency", "2"])
        .args(["--endpoints", &cluster.api_endpoints().join(",")])
        .arg("--credentials")
        .arg(&cluster.admin_dir)
        .args(["--namespace", "nowhere", "--profile", "web"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("the first:"), "{stderr}");
    cluster.shutdown().await;
}
