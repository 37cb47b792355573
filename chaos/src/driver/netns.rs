//! The drill's network: one Linux network namespace per node, each joined
//! by a veth pair to a bridge in the driver's namespace, so that a
//! partition is a real packet drop (iptables inside the namespaces) and not
//! a flag in our own code.
//!
//! Addresses: the bridge is 10.77.0.1/24 (the driver, its clients and its
//! probes), node N is 10.77.0.(10+N). Names carry the `qca-` prefix so a
//! run can remove what an earlier, killed run left behind.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};

const BRIDGE: &str = "qca-br0";
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

pub fn node_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + id as u8)
}

fn ns_name(id: u64) -> String {
    format!("qca-n{id}")
}

/// Runs a command to completion; its stderr is the error.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (install iproute2 and iptables)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Fails loudly, with what to do, when the drill cannot build its network.
pub fn preflight() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        bail!("chaos drills create network namespaces and need root");
    }
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!("`{tool}` is missing: apt-get install {package}");
        }
    }
    Ok(())
}

/// Removes namespaces, the bridge and the forward rule an earlier run left.
pub fn cleanup_stale() {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line.split_whitespace().next() {
                if name.starts_with("qca-n") {
                    let _ = run("ip", &["netns", "del", name]);
                }
            }
        }
    }
    // A namespace's veth outlives `ip netns del` until the kernel's
    // asynchronous namespace teardown gets to it (seconds on a busy host),
    // and the next drill's `ip link add` would then find the name taken.
    // Deleting the host end removes both ends at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = host_links();
        if left.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        for link in left {
            let _ = run("ip", &["link", "del", &link]);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = run("ip", &["link", "del", BRIDGE]);
    while run("iptables", &forward_rule("-D")).is_ok() {}
}

/// Host ends of drill veth pairs (`qca-hN`) that still exist.
fn host_links() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "7: qca-h1@if2: <BROADCAST,...> ..."
            let name = line.split(": ").nth(1)?;
            let name = name.split('@').next()?;
            name.starts_with("qca-h").then(|| name.to_string())
        })
        .collect()
}

/// Bridged frames pass the host's FORWARD chain when br_netfilter is
/// loaded; a host whose policy is DROP would otherwise cut every link.
fn forward_rule(op: &str) -> Vec<&str> {
    vec![
        op,
        "FORWARD",
        "-i",
        BRIDGE,
        "-o",
        BRIDGE,
        "-j",
        "ACCEPT",
        "-m",
        "comment",
        "--comment",
        "quorumca-chaos",
    ]
}

/// The namespaces and bridge of one drill; removed when dropped.
pub struct Net {
    ids: Vec<u64>,
    /// Directed pairs currently cut.
    cut: BTreeSet<(u64, u64)>,
}

impl Net {
    pub fn create(ids: &[u64]) -> anyhow::Result<Self> {
        cleanup_stale();
        let net = Self {
            ids: ids.to_vec(),
            cut: BTreeSet::new(),
        };
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", BRIDGE],
        )?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        run("iptables", &forward_rule("-I"))?;
        for &id in ids {
            let ns = ns_name(id);
            let host_end = format!("qca-h{id}");
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &host_end, "master", BRIDGE, "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", node_ip(id)),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// `program` to be run inside node `id`'s namespace.
    pub fn command(&self, id: u64, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns_name(id)]).arg(program);
        c
    }

    /// Drops every packet between `a` and `b`, both ways, in both
    /// namespaces (so neither side's connections survive).
    pub fn cut(&mut self, a: u64, b: u64) -> anyhow::Result<()> {
        for (me, peer) in [(a, b), (b, a)] {
            if !self.cut.insert((me, peer)) {
                continue;
            }
            let ns = ns_name(me);
            let ip = node_ip(peer).to_string();
            for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "iptables", "-I", chain, dir, &ip, "-j", "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Cuts every link between nodes on different sides. Nodes in no side
    /// keep every link (a bridge between the sides).
    pub fn partition(&mut self, sides: &[Vec<u64>]) -> anyhow::Result<()> {
        for (i, a_side) in sides.iter().enumerate() {
            for b_side in &sides[i + 1..] {
                for &a in a_side {
                    for &b in b_side {
                        self.cut(a, b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes every rule: all links are whole again.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        for &id in &self.ids {
            run("ip", &["netns", "exec", &ns_name(id), "iptables", "-F"])?;
        }
        self.cut.clear();
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for &id in &self.ids {
            let _ = run("ip", &["link", "del", &format!("qca-h{id}")]);
            let _ = run("ip", &["netns", "del", &ns_name(id)]);
        }
        let _ = run("ip", &["link", "del", BRIDGE]);
        let _ = run("iptables", &forward_rule("-D"));
    }
}
