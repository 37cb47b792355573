//! A cluster of real `quorumca server` processes, one per network
//! namespace, with every node's inbound Raft traffic relayed through a
//! fault proxy process in that namespace.
//!
//! Node N's Raft server listens on 127.0.0.1:7000 inside its namespace, so
//! its peers can only reach it through the proxy on 10.77.0.(10+N):7001,
//! which the cluster advertises. Its public API (7100) and HTTP (7200)
//! listen on the namespace's address for the driver's clients.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorumca_chaos::proxy::Faults;
use quorumca_proto::cluster_client::ClusterClient;
use quorumca_proto::{StatusRequest, StatusResponse};

use super::netns::{node_ip, Net};

const RAFT_PORT: u16 = 7000;
const PROXY_PORT: u16 = 7001;
const API_PORT: u16 = 7100;
const HTTP_PORT: u16 = 7200;

/// Where a node sits: the drills partition by region.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub region: String,
}

/// The default shape: 5 nodes over 3 regions, 2 + 2 + 1.
pub fn five_nodes_three_regions() -> Vec<NodeSpec> {
    [
        (1, "region-a"),
        (2, "region-a"),
        (3, "region-b"),
        (4, "region-b"),
        (5, "region-c"),
    ]
    .into_iter()
    .map(|(id, r)| NodeSpec {
        id,
        region: r.to_string(),
    })
    .collect()
}

struct Proc {
    child: Option<Child>,
    proxy: Child,
    proxy_in: ChildStdin,
}

pub struct ProcCluster {
    pub net: Net,
    pub specs: Vec<NodeSpec>,
    pub dir: PathBuf,
    pub admin: PathBuf,
    quorumca: PathBuf,
    procs: BTreeMap<u64, Proc>,
    /// Per node: extra environment for its next start (clock skew).
    pub env: BTreeMap<u64, Vec<(String, String)>>,
    /// Data dirs on small tmpfs mounts (the full-disk nemesis).
    mounts: Vec<PathBuf>,
}

/// Nodes a drill's nemeses need prepared before the cluster starts.
#[derive(Clone, Debug, Default)]
pub struct Special {
    /// Started under libfaketime.
    pub skewable: Vec<u64>,
    /// Data dir on a 256 MiB tmpfs, so it can be filled.
    pub small_disk: Vec<u64>,
}

/// Where the full-disk nemesis puts its filler.
const FILLER: &str = "chaos-filler";

pub fn api_addr(id: u64) -> String {
    format!("{}:{API_PORT}", node_ip(id))
}

pub fn http_base(id: u64) -> String {
    format!("http://{}:{HTTP_PORT}", node_ip(id))
}

fn node_toml(spec: &NodeSpec, specs: &[NodeSpec], dir: &Path) -> String {
    let id = spec.id;
    let ndir = dir.join(format!("node{id}"));
    let mut s = format!(
        "node_id = {id}\nlisten = \"127.0.0.1:{RAFT_PORT}\"\nadvertise = \"{}:{PROXY_PORT}\"\n\
         data_dir = \"{}\"\nregion = \"{}\"\nzone = \"{}-1\"\n",
        node_ip(id),
        ndir.join("data").display(),
        spec.region,
        spec.region
    );
    s.push_str(&format!(
        "\n[api]\nlisten = \"{ip}:{API_PORT}\"\nhttp_listen = \"{ip}:{HTTP_PORT}\"\n\
         public_url = \"{http}\"\nunseal_secret_file = \"{secret}\"\nhierarchy = \"internal-root\"\n\
         kdf_iterations = {kdf}\nadmins = [\"{admin}\"]\nroot_cert_file = \"{root}\"\n\
         root_sealed_key_file = \"{sealed}\"\n",
        ip = node_ip(id),
        http = http_base(id),
        secret = dir.join("unseal.secret").display(),
        kdf = quorumca_cli::dev::DEV_KDF_ITERATIONS,
        admin = quorumca_cli::dev::DEV_ADMIN,
        root = dir.join("pki/root.pem").display(),
        sealed = dir.join("pki/root.sealed").display(),
    ));
    let tls = ndir.join("tls");
    s.push_str(&format!(
        "\n[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.join("pki/root.pem").display(),
        tls.join("cert.pem").display(),
        tls.join("key.pem").display()
    ));
    for p in specs {
        s.push_str(&format!(
            "\n[[peers]]\nnode_id = {}\naddr = \"{}:{PROXY_PORT}\"\nregion = \"{}\"\nzone = \"{}-1\"\n",
            p.id,
            node_ip(p.id),
            p.region,
            p.region
        ));
    }
    s
}

/// The libfaketime environment of a node whose clock a drill may move:
/// the offset is read from `<node>/faketime` every second. Monotonic time
/// is left alone; only the wall clock (certificate times, leases) skews.
fn faketime_env(dir: &Path, id: u64) -> anyhow::Result<Vec<(String, String)>> {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    if !Path::new(lib).exists() {
        bail!("{lib} is missing: apt-get install faketime");
    }
    let file = dir.join(format!("node{id}/faketime"));
    std::fs::write(&file, "+0\n")?;
    Ok(vec![
        ("LD_PRELOAD".into(), lib.into()),
        ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ])
}

impl ProcCluster {
    /// Builds the network, the PKI and the configs, starts every node and
    /// proxy (with what `special` asks for), and waits until a leader
    /// serves the dev policy.
    pub async fn start(
        dir: &Path,
        specs: Vec<NodeSpec>,
        quorumca: &Path,
        seed: u64,
        special: &Special,
    ) -> anyhow::Result<Self> {
        let ids: Vec<u64> = specs.iter().map(|s| s.id).collect();
        let net = Net::create(&ids)?;
        std::fs::create_dir_all(dir)?;
        let secret = dir.join("unseal.secret");
        quorumca_cli::dev::write_secret(&secret)?;
        quorumca_cli::dev::prepare_pki_for(dir, ids.len() as u64, &secret, |id| {
            vec![node_ip(id).into(), std::net::Ipv4Addr::LOCALHOST.into()]
        })?;
        let mut c = Self {
            net,
            dir: dir.to_path_buf(),
            admin: dir.join("admin"),
            quorumca: quorumca.to_path_buf(),
            procs: BTreeMap::new(),
            env: BTreeMap::new(),
            mounts: Vec::new(),
            specs: specs.clone(),
        };
        for s in &specs {
            std::fs::write(
                dir.join(format!("node{}/node.toml", s.id)),
                node_toml(s, &specs, dir),
            )?;
            if special.small_disk.contains(&s.id) {
                let data = dir.join(format!("node{}/data", s.id));
                std::fs::create_dir_all(&data)?;
                let st = std::process::Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "size=256m", "qca-tmpfs"])
                    .arg(&data)
                    .status()
                    .context("mounting a tmpfs")?;
                if !st.success() {
                    bail!("mount -t tmpfs on {} failed", data.display());
                }
                c.mounts.push(data);
            }
            if special.skewable.contains(&s.id) {
                let env = faketime_env(dir, s.id)?;
                c.env.insert(s.id, env);
            }
            let proxy = c.spawn_proxy(s.id, seed.wrapping_add(s.id))?;
            c.procs.insert(s.id, proxy);
            c.spawn_node(s.id)?;
        }
        c.wait_ready(Duration::from_secs(60)).await?;
        let endpoints: Vec<String> = ids.iter().map(|&i| api_addr(i)).collect();
        quorumca_cli::dev::prepare_ca(&endpoints, &c.admin, 3, Duration::from_secs(60))
            .await
            .context("creating the hierarchy and the dev policy")?;
        Ok(c)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.specs.iter().map(|s| s.id).collect()
    }

    pub fn regions(&self) -> BTreeMap<String, Vec<u64>> {
        let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for s in &self.specs {
            m.entry(s.region.clone()).or_default().push(s.id);
        }
        m
    }

    fn spawn_proxy(&self, id: u64, seed: u64) -> anyhow::Result<Proc> {
        let me = std::env::current_exe()?;
        let log = std::fs::File::create(self.dir.join(format!("node{id}/proxy.log")))?;
        let mut proxy = self
            .net
            .command(id, &me)
            .args(["proxy", "--listen"])
            .arg(format!("{}:{PROXY_PORT}", node_ip(id)))
            .arg("--to")
            .arg(format!("127.0.0.1:{RAFT_PORT}"))
            .arg("--seed")
            .arg(seed.to_string())
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a fault proxy")?;
        let proxy_in = proxy.stdin.take().expect("piped stdin");
        Ok(Proc {
            child: None,
            proxy,
            proxy_in,
        })
    }

    fn spawn_node(&mut self, id: u64) -> anyhow::Result<()> {
        let cfg = self.dir.join(format!("node{id}/node.toml"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{id}/node.log")))?;
        let mut cmd = self.net.command(id, &self.quorumca);
        cmd.arg("server")
            .arg("--config")
            .arg(&cfg)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .env("QUORUMCA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in self.env.get(&id).into_iter().flatten() {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting node {id}"))?;
        let p = self.procs.get_mut(&id).expect("node has a proxy");
        p.child = Some(child);
        Ok(())
    }

    /// Fills node `id`'s (tmpfs) data dir until the disk is full.
    pub fn fill_disk(&self, id: u64) -> anyhow::Result<u64> {
        let path = self.dir.join(format!("node{id}/data/{FILLER}"));
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(written)
    }

    pub fn free_disk(&self, id: u64) -> anyhow::Result<()> {
        std::fs::remove_file(self.dir.join(format!("node{id}/data/{FILLER}")))?;
        Ok(())
    }

    /// Whether node `id`'s process has exited (it is then restartable).
    pub fn exited(&mut self, id: u64) -> bool {
        let Some(p) = self.procs.get_mut(&id) else {
            return false;
        };
        match p.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                p.child = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    pub fn is_up(&self, id: u64) -> bool {
        self.procs.get(&id).is_some_and(|p| p.child.is_some())
    }

    /// SIGKILL: no shutdown path runs, as in a power loss of the process.
    pub fn kill(&mut self, id: u64) {
        if let Some(p) = self.procs.get_mut(&id) {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if !self.is_up(id) {
            self.spawn_node(id)?;
        }
        Ok(())
    }

    fn signal(&self, id: u64, sig: Signal) {
        if let Some(c) = self.procs.get(&id).and_then(|p| p.child.as_ref()) {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    pub fn pause(&mut self, id: u64) {
        self.signal(id, Signal::SIGSTOP);
    }

    pub fn resume(&mut self, id: u64) {
        self.signal(id, Signal::SIGCONT);
    }

    /// Sets the faults on every link into node `id` (both directions).
    pub fn set_link(&mut self, id: u64, faults: Faults) -> anyhow::Result<()> {
        let p = self.procs.get_mut(&id).context("no such node")?;
        writeln!(p.proxy_in, "{}", serde_json::to_string(&faults)?)?;
        p.proxy_in.flush()?;
        Ok(())
    }

    /// Node `id`'s own status (no forwarding), or None if it does not
    /// answer within a second.
    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let call = async {
            let ch = quorumca_cli::client::node_channel(&api_addr(id), Some(&self.admin))
                .await
                .ok()?;
            ClusterClient::new(ch)
                .status(StatusRequest {})
                .await
                .ok()
                .map(|r| r.into_inner())
        };
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .ok()
            .flatten()
    }

    /// The leader a majority of answering nodes name, if any.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.ids() {
            if let Some(l) = self.status(id).await.and_then(|s| s.leader_id) {
                *votes.entry(l).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n > self.specs.len() / 2)
            .map(|(l, _)| l)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for (id, p) in self.procs.iter_mut() {
                if let Some(c) = p.child.as_mut() {
                    if let Ok(Some(st)) = c.try_wait() {
                        bail!(
                            "node {id} exited during startup ({st}); see {}",
                            self.dir.join(format!("node{id}/node.log")).display()
                        );
                    }
                }
            }
            let mut leaders = Vec::new();
            for id in self.ids() {
                leaders.push(self.status(id).await.and_then(|s| s.leader_id));
            }
            if leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "no leader agreed by every node within {timeout:?} (leaders seen: {leaders:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until every node is up, answers, and has applied the same
    /// index as the others (the workload has stopped).
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut applied = Vec::new();
            for id in self.ids() {
                applied.push(self.status(id).await.map(|s| s.applied_index));
            }
            if let Some(Some(first)) = applied.first() {
                if applied.iter().all(|a| *a == Some(*first)) {
                    return Ok(*first);
                }
            }
            if Instant::now() > deadline {
                bail!("nodes did not converge within {timeout:?}: applied indexes {applied:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for p in self.procs.values_mut() {
            if let Some(c) = p.child.as_mut() {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = p.proxy.kill();
            let _ = p.proxy.wait();
        }
        for m in &self.mounts {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
    }
}
