//! The rotation agent as a real process against a real `quorumca dev`
//! cluster: it keeps its certificate while cut off from every node and
//! renews as soon as one is back, and a kill at any point (also exactly
//! between writing the key and the certificate) leaves a matching pair.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{env_value, quorumca, start_dev, CutProxy, Procs, BIN};
use quorumca_agent::keys::{cert_info, key_matches, CertInfo};
use quorumca_agent::status::{RenewalState, Status};

fn join_token(env: &str) -> String {
    let out = quorumca(
        env,
        &["token", "create", "--namespace", "default", "-o", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_string()
}

fn api_endpoints(env: &str) -> Vec<String> {
    env_value(env, "QUORUMCA_ENDPOINTS")
        .split(',')
        .map(String::from)
        .collect()
}

struct Setup {
    dir: PathBuf,
    config: PathBuf,
    out: PathBuf,
}

/// Writes a token and an agent.toml for one intent `web`.
fn setup(d: &Path, env: &str, endpoints: &[String], lifetime: &str, extra: &str) -> Setup {
    let token = d.join("token");
    std::fs::write(&token, join_token(env)).unwrap();
    let creds = PathBuf::from(env_value(env, "QUORUMCA_CREDENTIALS"));
    let enroll: Vec<String> = env_value(env, "QUORUMCA_ENROLL_ENDPOINTS")
        .split(',')
        .map(|s| format!("{s:?}"))
        .collect();
    let out = d.join("out");
    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"
[cluster]
endpoints = [{eps}]
enroll_endpoints = [{enroll}]
ca_file = "{ca}"
retry_max = "1s"
call_timeout = "3s"

[[intent]]
name = "web"
dns = ["web.default.svc.dev.internal"]
spiffe_id = "spiffe://dev.internal/ns/default/web"
lifetime = "{lifetime}"
renew_at = 0.5
jitter = 0.0
key_file = "{out}/key.pem"
cert_file = "{out}/cert.pem"
chain_file = "{out}/chain.pem"
bundle_file = "{out}/roots.pem"
join_token_file = "{token}"
{extra}
"#,
            state = d.join("state").display(),
            eps = endpoints
                .iter()
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            enroll = enroll.join(", "),
            ca = creds.join("ca.pem").display(),
            out = out.display(),
            token = token.display(),
        ),
    )
    .unwrap();
    Setup {
        dir: d.to_path_buf(),
        config,
        out,
    }
}

fn spawn_agent(s: &Setup, failpoint: Option<&str>, log: &str) -> Child {
    let mut c = Command::new(BIN);
    c.args(["--log", "info", "agent", "--config"])
        .arg(&s.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.dir.join(log)).unwrap());
    if let Some(f) = failpoint {
        c.env(quorumca_agent::store::FAILPOINT_ENV, f);
    }
    c.spawn().expect("start the agent")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The pair the workload's paths name right now; panics unless the key is
/// the certificate's.
fn pair(out: &Path) -> CertInfo {
    let key = std::fs::read_to_string(out.join("key.pem")).unwrap();
    let cert = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    let info = cert_info(&cert).unwrap();
    assert!(
        key_matches(&key, &info),
        "key.pem is not the key of cert.pem (serial {})",
        info.serial
    );
    info
}

fn status(s: &Setup) -> Option<Status> {
    Status::read(&s.dir.join("state")).ok()
}

async fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn openssl_verifies(out: &Path) {
    let o = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out.join("roots.pem"))
        .arg("-untrusted")
        .arg(out.join("chain.pem"))
        .arg(out.join("cert.pem"))
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        o.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_keeps_its_certificate_while_cut_off_and_renews_when_a_node_is_back() {
    let _turn = crate::support::shared().await;
    let d = tempfile::tempdir().unwrap();
    let (_dev, _base, env) = start_dev(&d.path().join("dev")).await;
    let mut proxies = Vec::new();
    for e in api_endpoints(&env) {
        proxies.push(CutProxy::start(e).await);
    }
    let eps: Vec<String> = proxies
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.port))
        .collect();
    // Renewed every 15 s; the cut lasts 22 s, longer than that, and the
    // certificate in place still has 8 s left when it ends.
    let s = setup(d.path(), &env, &eps, "30s", "");
    let _agent = Procs(vec![spawn_agent(&s, None, "agent.log")]);

    // The first certificate (join token), then wait for a renewal so the
    // cut starts right after one.
    let first = wait_for(Duration::from_secs(30), "the first certificate", || {
        (status(&s)?.intents.get("web")?.renewals >= 1).then(|| pair(&s.out))
    })
    .await;
    let held = wait_for(Duration::from_secs(30), "a renewal", || {
        let p = pair(&s.out);
        (p.serial != first.serial).then_some(p)
    })
    .await;
    openssl_verifies(&s.out);
    let roots_before = std::fs::read(s.out.join("roots.pem")).unwrap();
    for p in &proxies {
        p.cut();
    }
    let cut_at = Instant::now();
    let mut checks = 0;
    while cut_at.elapsed() < Duration::from_secs(22) {
        let p = pair(&s.out);
        assert_eq!(p.serial, held.serial, "nothing replaced the certificate");
        assert!(now() < p.not_after, "the certificate in place is valid");
        assert_eq!(
            std::fs::read(s.out.join("roots.pem")).unwrap(),
            roots_before
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = status(&s).unwrap().intents["web"].clone();
    assert_eq!(st.state, RenewalState::Retrying, "{st:?}");
    assert!(st.consecutive_failures >= 1, "{st:?}");
    assert!(st.last_error.is_some(), "{st:?}");
    assert_eq!(st.serial.as_deref(), Some(held.serial.as_str()));
    let status_out = Command::new(BIN)
        .args(["agent", "status", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status_out.stdout);
    assert!(table.contains("retrying"), "{table}");

    // One node back is enough.
    proxies[1].heal();
    let healed_at = Instant::now();
    let renewed = wait_for(Duration::from_secs(10), "the renewal after healing", || {
        let p = pair(&s.out);
        (p.serial != held.serial).then_some(p)
    })
    .await;
    let took = healed_at.elapsed();
    assert!(now() < renewed.not_after);
    assert!(
        now() < held.not_after + 1,
        "renewed before the old one expired"
    );
    openssl_verifies(&s.out);
    let st = wait_for(Duration::from_secs(5), "status valid", || {
        let st = status(&s)?.intents["web"].clone();
        (st.state == RenewalState::Valid).then_some(st)
    })
    .await;
    assert_eq!(st.consecutive_failures, 0);
    println!(
        "cut off for 22 s ({checks} checks, certificate {} kept, {} failed attempts); renewed {:.1} s after one node came back",
        held.serial,
        st.failures,
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_agent_at_any_point_leaves_a_matching_pair() {
    let _turn = crate::support::shared().await;
    use std::os::unix::process::ExitStatusExt;
    let d = tempfile::tempdir().unwrap();
    let (_dev, _base, env) = start_dev(&d.path().join("dev")).await;
    let eps = api_endpoints(&env);
    // Renewed every 5 s.
    let s = setup(d.path(), &env, &eps, "10s", "");
    let mut agent = Procs(vec![spawn_agent(&s, None, "agent-1.log")]);
    let first = wait_for(Duration::from_secs(30), "the first certificate", || {
        (status(&s)?.intents.get("web")?.renewals >= 1).then(|| pair(&s.out))
    })
    .await;
    agent.kill_all();

    // Crash exactly between the new key and its certificate.
    let mut agent = Procs(vec![spawn_agent(
        &s,
        Some("between-key-and-cert"),
        "agent-2.log",
    )]);
    let started = Instant::now();
    let exit = loop {
        if let Some(st) = agent.0[0].try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the failpoint never fired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.signal(), Some(9), "killed by SIGKILL: {exit:?}");
    let after_crash = pair(&s.out);
    assert_eq!(after_crash.serial, first.serial, "the old pair is in force");
    let vdir = s.dir.join("state/web/v");
    let half: Vec<_> = std::fs::read_dir(&vdir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.file_name()
                .to_str()
                .unwrap()
                .starts_with(".tmp-")
                .then(|| e.path())
        })
        .collect();
    assert_eq!(half.len(), 1, "the crash left a half-written version");
    assert!(half[0].join("key.pem").exists() && !half[0].join("cert.pem").exists());

    // Restarted, it drops the half version and resumes the same request:
    // the cluster answers with the certificate it already issued.
    let mut agent = Procs(vec![spawn_agent(&s, None, "agent-3.log")]);
    let renewed = wait_for(Duration::from_secs(20), "the resumed renewal", || {
        let p = pair(&s.out);
        (p.serial != first.serial).then_some(p)
    })
    .await;
    assert!(!half[0].exists());
    let log = std::fs::read_to_string(s.dir.join("agent-3.log")).unwrap();
    assert!(
        log.lines()
            .find(|l| l.contains("certificate renewed"))
            .is_some_and(|l| l.contains("replayed=true")),
        "the first renewal after the crash replays the issued certificate:\n{log}"
    );

    // Then kills at scattered moments while it renews every 5 s.
    let mut seen = std::collections::BTreeSet::from([first.serial.clone(), renewed.serial]);
    for round in 0..8u64 {
        let wait = 300 + (round * 7919 + 13) % 2500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        agent.kill_all();
        let p = pair(&s.out);
        assert!(
            now() < p.not_after,
            "round {round}: the pair in place is valid"
        );
        seen.insert(p.serial);
        agent = Procs(vec![spawn_agent(&s, None, &format!("agent-r{round}.log"))]);
    }
    let last = pair(&s.out);
    let fresh = wait_for(
        Duration::from_secs(20),
        "a renewal after the last kill",
        || {
            let p = pair(&s.out);
            (p.serial != last.serial).then_some(p)
        },
    )
    .await;
    seen.insert(fresh.serial);
    agent.kill_all();
    openssl_verifies(&s.out);
    println!(
        "9 kills (one at the key/certificate failpoint): every pair matched; {} certificates seen",
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_renewal_reaches_the_agents_it_names_and_only_those() {
    let _turn = crate::support::shared().await;
    let d = tempfile::tempdir().unwrap();
    let (_dev, _base, env) = start_dev(&d.path().join("dev")).await;
    let eps = api_endpoints(&env);
    // Not due for renewal for the whole test. A second intent whose
    // output path cannot exist (under a regular file) fails on its own
    // without stopping the first.
    let token2 = d.path().join("token2");
    std::fs::write(&token2, join_token(&env)).unwrap();
    let file = d.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let broken = format!(
        r#"
[[intent]]
name = "broken"
dns = ["broken.default.svc.dev.internal"]
key_file = "{f}/key.pem"
cert_file = "{f}/cert.pem"
join_token_file = "{t}"
"#,
        f = file.display(),
        t = token2.display()
    );
    let s = setup(d.path(), &env, &eps, "1h", &broken);
    let _agent = Procs(vec![spawn_agent(&s, None, "agent.log")]);
    let first = wait_for(Duration::from_secs(30), "the first certificate", || {
        let st = status(&s)?;
        (st.intents.get("web")?.renewals >= 1 && st.bundle_version > 0).then(|| pair(&s.out))
    })
    .await;
    let issuer = status(&s).unwrap().intents["web"].issuer.clone().unwrap();
    let err = wait_for(Duration::from_secs(20), "the broken intent's error", || {
        status(&s)?.intents.get("broken")?.last_error.clone()
    })
    .await;
    assert!(err.contains("a-file"), "{err}");
    let force = |args: &[&str]| {
        let out = quorumca(&env, &[&["ca", "force-renew"], args].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Another namespace's emergency is not ours.
    force(&["--namespace", "payments"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(pair(&s.out).serial, first.serial, "not named, not renewed");
    // Ours: renewed within seconds, once.
    let asked = Instant::now();
    force(&["--issuer", &issuer]);
    let renewed = wait_for(Duration::from_secs(15), "the forced renewal", || {
        let p = pair(&s.out);
        (p.serial != first.serial).then_some(p)
    })
    .await;
    let took = asked.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        pair(&s.out).serial,
        renewed.serial,
        "renewed once, not in a loop"
    );
    println!(
        "forced renewal of issuer {issuer}: new certificate {:.1} s after the request",
        took.as_secs_f64()
    );
}
