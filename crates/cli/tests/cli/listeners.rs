//! Every listener of a real `quorumca server` is bounded (security
//! hardening 4). With the default `[connections]`:
//!
//! - caps: one source address gets at most 256 connections on a listener,
//!   everyone together 4,096; the rest are closed as soon as they are
//!   accepted;
//! - timeouts: 2,000 idle TCP connections on the API, Raft, enrolment and
//!   HTTP ports and 300 slowloris HTTP clients (a header byte every 2 s),
//!   reconnecting whenever they are cut, for 60 s: the TLS ports close each
//!   at the handshake timeout, the HTTP port at the header timeout, the
//!   node's descriptors stay under its caps, and a well-behaved client's
//!   Issue and OCSP requests answer within 100 ms, every one of them,
//!   throughout.
//!
//! Attackers use source addresses 127.0.1.0/24 to 127.0.4.0/24 (all of
//! 127/8 is loopback), the well-behaved client 127.0.0.1. Every loop is
//! bounded in count and time.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{free_ports, Procs, BIN};
use quorumca_client::{Client, ClientConfig, Endpoint};
use quorumca_proto::policy_service_client::PolicyServiceClient;
use quorumca_proto::{ApplyPolicyRequest, IssueRequest};
use quorumca_testkit::authority::{test_csr, TEST_POLICY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The defaults of `[connections]` (quorumca_net::ConnectionLimits::default()).
const PER_SOURCE: usize = 256;
const PER_LISTENER: usize = 4096;
const RAFT_CAP: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How late a close may come after its timeout (a loaded 2-core machine).
const SLACK: Duration = Duration::from_secs(3);
/// How long a burst of connections gets to be accepted (or refused).
const SETTLE: Duration = Duration::from_secs(4);

const HOLD: Duration = Duration::from_secs(60);
const IDLE_PER_PORT: usize = 500;
const SLOWLORIS: usize = 300;
const ANSWER_WITHIN: Duration = Duration::from_millis(100);

struct Ports {
    raft: u16,
    api: u16,
    http: u16,
    enroll: u16,
}

fn write_config(dir: &Path, p: &Ports) -> std::path::PathBuf {
    let secret = dir.join("unseal.secret");
    std::fs::write(&secret, "listener test secret, 32+ bytes long\n").unwrap();
    quorumca_cli::dev::prepare_pki(dir, 1, &secret).unwrap();
    let d = dir.display();
    let text = format!(
        "node_id = 1\nlisten = \"127.0.0.1:{raft}\"\ndata_dir = \"{d}/node1\"\nregion = \"r1\"\nzone = \"z1\"\n\
         [api]\nlisten = \"127.0.0.1:{api}\"\nhttp_listen = \"127.0.0.1:{http}\"\nenroll_listen = \"127.0.0.1:{enroll}\"\n\
         public_url = \"http://127.0.0.1:{http}\"\nunseal_secret_file = \"{secret}\"\nhierarchy = \"internal-root\"\n\
         kdf_iterations = {kdf}\nadmins = [\"{admin}\"]\n\
         root_cert_file = \"{d}/pki/root.pem\"\nroot_sealed_key_file = \"{d}/pki/root.sealed\"\n\
         [tls]\nca_file = \"{d}/pki/root.pem\"\ncert_file = \"{d}/node1/tls/cert.pem\"\nkey_file = \"{d}/node1/tls/key.pem\"\n\
         [[peers]]\nnode_id = 1\naddr = \"127.0.0.1:{raft}\"\nregion = \"r1\"\nzone = \"z1\"\n",
        raft = p.raft,
        api = p.api,
        http = p.http,
        enroll = p.enroll,
        secret = secret.display(),
        kdf = quorumca_cli::dev::DEV_KDF_ITERATIONS,
        admin = quorumca_cli::dev::DEV_ADMIN,
    );
    let path = dir.join("node1.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn connect_from(src: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((src, 0)))?;
    sock.connect(to).await
}

/// Opens `n` connections to `to` spread over `sources`, concurrently, and
/// gives the node a few seconds to accept them all (a burst overflows the
/// kernel's accept queue, and the excess is retried at TCP's pace), less
/// than the header timeout, which closes admitted ones. Returns how many
/// the node closed and the ones still open.
async fn flood(to: SocketAddr, sources: &[[u8; 4]], n: usize) -> (usize, Vec<TcpStream>) {
    let mut streams = Vec::new();
    for wave in (0..n).collect::<Vec<_>>().chunks(500) {
        let tasks: Vec<_> = wave
            .iter()
            .map(|&i| {
                let src = sources[i % sources.len()];
                tokio::spawn(async move { connect_from(src, to).await.expect("connect") })
            })
            .collect();
        for t in tasks {
            streams.push(t.await.unwrap());
        }
    }
    tokio::time::sleep(SETTLE).await;
    let mut closed = 0;
    let mut open = Vec::new();
    for s in streams {
        let mut buf = [0u8; 16];
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open.push(s),
            _ => closed += 1,
        }
    }
    (closed, open)
}

/// What one attacker saw: how long each of its connections lived before
/// the node cut it, and how many it opened.
#[derive(Default)]
struct Seen {
    lifetimes: Vec<Duration>,
    opened: usize,
    /// Closed at once: over a cap.
    refused: usize,
}

/// Holds a connection to `to` doing nothing (or, for slowloris, dripping a
/// header byte every 2 s) until the node closes it, then opens another,
/// until `stop`.
async fn attacker(
    to: SocketAddr,
    src: [u8; 4],
    slowloris: bool,
    start_after: Duration,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen::default();
    tokio::time::sleep(start_after).await;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = connect_from(src, to).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        seen.opened += 1;
        let opened = Instant::now();
        if slowloris {
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: ca\r\nX-Slow: ")
                .await;
        }
        let mut buf = [0u8; 512];
        let cut = loop {
            if stop.load(Ordering::Relaxed) {
                break false;
            }
            match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => continue,
                Err(_) if slowloris => {
                    if s.write_all(b"a").await.is_err() {
                        break true;
                    }
                }
                Err(_) => {}
            }
        };
        if cut {
            let lived = opened.elapsed();
            seen.lifetimes.push(lived);
            // Refused at once (a cap): come back in a second, as a client
            // holding connections open would. Reconnecting in a tight loop
            // is a connection-rate flood, another attack, and on this
            // 2-core machine it mostly measures the attacker's own CPU.
            if lived < Duration::from_millis(500) {
                seen.refused += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    seen
}

/// One OCSP request over a fresh connection from 127.0.0.1; the time to
/// the whole answer.
async fn ocsp_once(http: SocketAddr, issuer: &str, req: &[u8]) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(http).await.expect("OCSP connect");
    let head = format!(
        "POST /ocsp/{issuer} HTTP/1.1\r\nHost: ca\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        req.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "OCSP answered {text:.200}"
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_under_idle_and_slowloris_connections_stays_bounded_and_answers() {
    let _turn = crate::support::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let p = free_ports(4);
    let ports = Ports {
        raft: p[0],
        api: p[1],
        http: p[2],
        enroll: p[3],
    };
    let cfg = write_config(dir.path(), &ports);
    let child = Command::new(BIN)
        .args(["--log", "warn", "server", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start quorumca server");
    let pid = child.id();
    let _procs = Procs(vec![child]);
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    let mut cc = ClientConfig::new(vec![
        Endpoint::parse(&format!("127.0.0.1:{}", ports.api)).unwrap()
    ]);
    cc.credentials =
        Some(quorumca_client::Credentials::from_dir(&dir.path().join("admin")).unwrap());
    let client = Client::new(cc).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .trust_bundle()
        .await
        .is_ok_and(|b| b.issuers.len() == 2)
    {
        assert!(Instant::now() < deadline, "hierarchy not created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ch = crate::support::channel(ports.api, Some(&dir.path().join("admin")))
        .await
        .unwrap();
    PolicyServiceClient::new(ch)
        .apply_policy(ApplyPolicyRequest {
            text: TEST_POLICY.into(),
            expected_version: 0,
            dry_run: false,
            note: "test".into(),
        })
        .await
        .unwrap();
    let issue = |name: String| IssueRequest {
        csr: test_csr(&name),
        namespace: "payments".into(),
        profile: "web".into(),
        ..Default::default()
    };
    let target = client
        .issue(issue("ocsp.payments.svc.cluster.local".into()))
        .await
        .unwrap();
    let chain: Vec<Vec<u8>> = x509_cert::Certificate::load_pem_chain(target.chain_pem.as_bytes())
        .unwrap()
        .iter()
        .map(|c| x509_cert::der::Encode::to_der(c).unwrap())
        .collect();
    let ocsp_req = quorumca_ca::ocsp_request_for(&chain[0], &chain[1]).unwrap();
    let baseline = open_descriptors(pid);
    assert!(baseline > 0, "cannot read /proc/{pid}/fd");

    // Caps. One source: 256 admitted, the rest closed at once.
    let (closed, open) = flood(at(ports.http), &[[127, 0, 3, 1]], 300).await;
    assert_eq!(
        (closed, open.len()),
        (300 - PER_SOURCE, PER_SOURCE),
        "per-source cap"
    );
    drop(open);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Twenty sources under their own caps: the listener cap holds.
    let sources: Vec<[u8; 4]> = (1..=20).map(|i| [127, 0, 4, i]).collect();
    let (closed, open) = flood(at(ports.http), &sources, PER_LISTENER + 200).await;
    let held = open_descriptors(pid);
    assert!(
        closed >= 200 && open.len() <= PER_LISTENER,
        "listener cap: {closed} closed, {} open; node descriptors {baseline} -> {held}",
        open.len()
    );
    eprintln!(
        "listener cap: {} of {} open, {closed} closed; node descriptors {baseline} -> {held}",
        open.len(),
        PER_LISTENER + 200
    );
    assert!(
        held <= baseline + PER_LISTENER + 16,
        "node holds {held} descriptors (baseline {baseline})"
    );
    drop(open);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The same probes before the attack, for comparison.
    let mut quiet = Vec::new();
    for n in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let req = issue(format!("q{n}.payments.svc.cluster.local"));
        let t = Instant::now();
        client.issue(req).await.expect("Issue");
        quiet.push(t.elapsed());
    }
    quiet.sort();

    // Timeouts, for 60 s. Attackers start over the first 5 s, as many
    // independent clients would; all at once, every cut would come in one
    // wave every 10 s.
    let spread = |i: usize| Duration::from_millis((i % 50) as u64 * 100);
    let stop = Arc::new(AtomicBool::new(false));
    let mut idle = Vec::new();
    for (k, port) in [ports.api, ports.raft, ports.enroll, ports.http]
        .into_iter()
        .enumerate()
    {
        for i in 0..IDLE_PER_PORT {
            let src = [127, 0, 2, (1 + (i % 20)) as u8];
            idle.push((
                k,
                tokio::spawn(attacker(at(port), src, false, spread(i), stop.clone())),
            ));
        }
    }
    let slow: Vec<_> = (0..SLOWLORIS)
        .map(|i| {
            let src = [127, 0, 1, (1 + i % 3) as u8];
            tokio::spawn(attacker(at(ports.http), src, true, spread(i), stop.clone()))
        })
        .collect();

    // The well-behaved client is another program in real life: it gets
    // its own thread, runtime and connection here, so what it measures is
    // the node's answer, not this process's attacker tasks ahead of it in
    // one scheduler (run in the attackers' runtime, a probe once waited
    // 101 ms for a worker while the node had answered in a few).
    let probe_dir = dir.path().join("admin");
    let (issuer, api_port, http) = (target.issuer.clone(), ports.api, at(ports.http));
    let probe = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut cc = ClientConfig::new(vec![
                Endpoint::parse(&format!("127.0.0.1:{api_port}")).unwrap()
            ]);
            cc.credentials = Some(quorumca_client::Credentials::from_dir(&probe_dir).unwrap());
            let client = Client::new(cc).unwrap();
            let start = Instant::now();
            let (mut issue_times, mut ocsp_times, mut most_descriptors) =
                (Vec::new(), Vec::new(), 0);
            let mut n = 0u32;
            while start.elapsed() < HOLD {
                tokio::time::sleep(Duration::from_millis(250)).await;
                n += 1;
                let req = IssueRequest {
                    csr: test_csr(&format!("p{n}.payments.svc.cluster.local")),
                    namespace: "payments".into(),
                    profile: "web".into(),
                    ..Default::default()
                };
                let t = Instant::now();
                client.issue(req).await.expect("Issue under attack");
                issue_times.push(t.elapsed());
                ocsp_times.push(ocsp_once(http, &issuer, &ocsp_req).await);
                most_descriptors = most_descriptors.max(open_descriptors(pid));
            }
            (issue_times, ocsp_times, most_descriptors)
        })
    });
    let (issue_times, ocsp_times, most_descriptors) = loop {
        if probe.is_finished() {
            break probe.join().expect("the probe thread");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::Relaxed);

    // Per port: connections cut at a timeout (lived 500 ms or more), the
    // longest any lived, and refusals (closed at once: over a cap).
    #[derive(Default, Debug)]
    struct Cuts {
        timed_out: usize,
        longest: Duration,
        refused: usize,
    }
    impl Cuts {
        fn add(&mut self, seen: &Seen) {
            let long = seen
                .lifetimes
                .iter()
                .filter(|l| **l >= Duration::from_millis(500));
            self.timed_out += long.clone().count();
            self.longest = long.copied().fold(self.longest, Duration::max);
            self.refused += seen.refused;
        }
    }
    let mut cuts: [Cuts; 4] = Default::default();
    let mut opened = 0;
    for (k, t) in idle {
        let seen = t.await.unwrap();
        opened += seen.opened;
        cuts[k].add(&seen);
    }
    let mut slow_cut = Cuts::default();
    for t in slow {
        let seen = t.await.unwrap();
        opened += seen.opened;
        slow_cut.add(&seen);
    }
    let worst = |v: &[Duration]| v.iter().copied().max().unwrap_or_default();
    let mut sorted = issue_times.clone();
    sorted.sort();
    eprintln!(
        "Issue before the attack: median {:?}, worst {:?}; during: median {:?}, 95th {:?}, worst {:?}",
        quiet[quiet.len() / 2],
        quiet[quiet.len() - 1],
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 95 / 100],
        sorted[sorted.len() - 1],
    );
    eprintln!(
        "{opened} attacker connections; idle on api, raft, enroll, http: {cuts:?}; slowloris: {slow_cut:?}; node descriptors {baseline} -> at most {most_descriptors}; {} probes, Issue worst {:?}, OCSP worst {:?}",
        issue_times.len(),
        worst(&issue_times),
        worst(&ocsp_times),
    );
    // Each idle TLS connection is cut at the handshake timeout, about every
    // 10 s: four times or more in 60 s. The Raft port admits 256 (its cap)
    // of its 500 and refuses the rest.
    let [api, raft, enroll, http_cut] = &cuts;
    for (name, c, held) in [
        ("api", api, IDLE_PER_PORT),
        ("raft", raft, RAFT_CAP),
        ("enroll", enroll, IDLE_PER_PORT),
    ] {
        assert!(c.timed_out >= held * 4, "{name}: {c:?}");
        assert!(c.longest <= HANDSHAKE_TIMEOUT + SLACK, "{name}: {c:?}");
    }
    assert_eq!((api.refused, enroll.refused), (0, 0), "{cuts:?}");
    assert!(raft.refused >= IDLE_PER_PORT - RAFT_CAP, "{raft:?}");
    let http_cut = (http_cut.timed_out, http_cut.longest);
    let slow_cut = (slow_cut.timed_out, slow_cut.longest);
    assert!(http_cut.0 >= IDLE_PER_PORT * 4, "HTTP cuts: {}", http_cut.0);
    assert!(http_cut.1 <= HEADER_TIMEOUT + SLACK, "{:?}", http_cut.1);
    assert!(
        slow_cut.0 >= SLOWLORIS * 4,
        "slowloris cuts: {}",
        slow_cut.0
    );
    assert!(slow_cut.1 <= HEADER_TIMEOUT + SLACK, "{:?}", slow_cut.1);
    assert!(
        most_descriptors <= baseline + 3 * PER_LISTENER + RAFT_CAP + 16,
        "node held {most_descriptors} descriptors"
    );
    assert!(issue_times.len() >= 150, "{} probes", issue_times.len());
    // Every answer within 100 ms, as the issue asks. On this 2-core
    // machine, shared with the attackers, three runs in a row answered
    // Issue in at most 5.3 ms (median 2.3 ms) and OCSP in at most 1.8 ms;
    // an earlier state of the code once had a single Issue of 114 ms.
    for (what, times) in [("Issue", &issue_times), ("OCSP", &ocsp_times)] {
        let mut t = times.clone();
        t.sort();
        assert!(
            worst(&t) <= ANSWER_WITHIN,
            "{what} took {:?} (median {:?}, 99th percentile {:?})",
            worst(&t),
            t[t.len() / 2],
            t[t.len() * 99 / 100]
        );
    }
}
