//! Helpers shared by the process-level tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_quorumca");

/// Turns on the machine: tests that start clusters share it, a test that
/// times a node under load has it alone (its latency bounds would measure
/// the neighbours otherwise).
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Waits until no exclusive test runs; hold the guard for the whole test.
pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

/// Waits until no other cluster test runs; hold the guard for the whole
/// test.
pub async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Kills its processes when dropped, so a failing test leaves no orphans.
pub struct Procs(pub Vec<Child>);

impl Procs {
    pub fn kill_all(&mut self) {
        for c in self.0.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A base port for `quorumca dev --base-port` with 3 free ports at +0
/// (Raft), +100 (API) and +200 (HTTP).
pub fn free_base_port() -> u16 {
    for _ in 0..200 {
        let p = free_ports(1)[0];
        if p < 65_000
            && [0, 100, 200, 300].iter().all(|off| {
                (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + off + i)).is_ok())
            })
        {
            return p;
        }
    }
    panic!("no free base port");
}

pub async fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `quorumca dev` on a free base port with its data in `data`, and
/// waits for its env file. Returns the process guard, the base port and the
/// env file's text.
pub async fn start_dev(data: &Path) -> (Procs, u16, String) {
    let base = free_base_port();
    let child = std::process::Command::new(BIN)
        .args(["--log", "warn", "dev", "--data-dir"])
        .arg(data)
        .args(["--base-port", &base.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start quorumca dev");
    let guard = Procs(vec![child]);
    let env = wait_for_file(&data.join("env"), Duration::from_secs(90)).await;
    (guard, base, env)
}

/// A channel to 127.0.0.1:`port`, over mTLS with the credential bundle in
/// `creds` (plaintext without).
pub async fn channel(
    port: u16,
    creds: Option<&Path>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let c = creds.map(|d| quorumca_client::Credentials::from_dir(d).expect("credential bundle"));
    quorumca_client::endpoint_for(&format!("127.0.0.1:{port}"), c.as_ref())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

/// The value of `export NAME=...` in a `quorumca dev` env file.
pub fn env_value(env: &str, name: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}=")))
        .unwrap_or_else(|| panic!("env file has no {name}: {env}"))
        .to_string()
}

/// A TCP forwarder in front of one address that can cut every connection
/// and refuse new ones, then let them through again: "the agent cannot
/// reach the cluster" without touching the cluster.
pub struct CutProxy {
    pub port: u16,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl CutProxy {
    pub async fn start(to: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, _) = tokio::sync::watch::channel(true);
        let open = std::sync::Arc::new(tx);
        let gate = open.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*gate.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut closed = gate.subscribe();
                let to = to.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = closed.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Self { port, open }
    }

    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn heal(&self) {
        self.open.send_replace(true);
    }
}

/// Runs `quorumca` against a `quorumca dev` cluster: its endpoints and
/// admin credential bundle come from the env file's text.
pub fn quorumca(env: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .env("QUORUMCA_ENDPOINTS", env_value(env, "QUORUMCA_ENDPOINTS"))
        .env(
            "QUORUMCA_CREDENTIALS",
            env_value(env, "QUORUMCA_CREDENTIALS"),
        )
        .output()
        .expect("run quorumca")
}
