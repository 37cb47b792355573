//! Nemeses: named faults a drill injects and later heals. A drill names
//! one, or several joined with `+` (injected in order, healed in reverse).

use std::time::Duration;

use anyhow::{bail, Context};
use quorumca_chaos::proxy::Faults;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::cluster::ProcCluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// kill -9 the leader; restarted at heal.
    KillLeader,
    /// kill -9 one node chosen by the seed; restarted at heal.
    KillRandom,
    /// SIGSTOP the leader (a GC pause, a frozen VM); SIGCONT at heal.
    PauseLeader,
    /// Cut one region (chosen by the seed) off from the others.
    IsolateRegion,
    /// A minority (the leader and one more) against a majority.
    SplitMajority,
    /// Two halves that cannot see each other, and one node that sees both.
    Bridge,
    /// A cross-region link (40 ms + up to 20 ms jitter each way, 2 %
    /// loss) into all followers but one, and a blackhole into that one.
    LinkFaults,
    /// One follower's wall clock jumps 90 s ahead (libfaketime).
    ClockSkew,
    /// kill -9 every node; all restarted at heal.
    RestartAll,
    /// The leader's data dir (a 256 MiB tmpfs) fills up; freed at heal,
    /// and the node restarted if it exited.
    FullDisk,
}

pub const ALL: [Nemesis; 10] = [
    Nemesis::KillLeader,
    Nemesis::KillRandom,
    Nemesis::PauseLeader,
    Nemesis::IsolateRegion,
    Nemesis::SplitMajority,
    Nemesis::Bridge,
    Nemesis::LinkFaults,
    Nemesis::ClockSkew,
    Nemesis::RestartAll,
    Nemesis::FullDisk,
];

impl Nemesis {
    pub fn name(self) -> &'static str {
        match self {
            Self::KillLeader => "kill-leader",
            Self::KillRandom => "kill-random",
            Self::PauseLeader => "pause-leader",
            Self::IsolateRegion => "isolate-region",
            Self::SplitMajority => "split-majority",
            Self::Bridge => "bridge",
            Self::LinkFaults => "link-faults",
            Self::ClockSkew => "clock-skew",
            Self::RestartAll => "restart-all",
            Self::FullDisk => "full-disk",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Vec<Self>> {
        s.split('+')
            .map(|part| {
                ALL.into_iter().find(|n| n.name() == part).with_context(|| {
                    format!(
                        "unknown nemesis {part:?}; known: {}",
                        ALL.map(|n| n.name()).join(", ")
                    )
                })
            })
            .collect()
    }

    /// Whether clients that fail over must stay available through it. A
    /// whole-cluster restart takes every node away; nothing can serve.
    pub fn keeps_quorum(self) -> bool {
        self != Self::RestartAll
    }

    /// Whether every node outside the fault's minority must keep serving
    /// its own clients. Not in a bridge: a node on the far side from the
    /// leader cannot reach it until leadership moves to the bridge node.
    /// Not with link faults either: they slow nodes down without cutting
    /// the cluster in two, so a client pinned to a slowed node measures the
    /// link, and availability is judged by the clients that fail over.
    pub fn sides_known(self) -> bool {
        !matches!(self, Self::Bridge | Self::LinkFaults)
    }
}

/// What was done, so it can be undone and reported.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Injected {
    pub nemesis: Nemesis,
    pub description: String,
    /// Nodes expected to be unable to serve writes during the fault.
    pub minority: Vec<u64>,
    undo: Undo,
}

#[derive(Clone, Debug, serde::Serialize)]
enum Undo {
    Restart(Vec<u64>),
    Resume(Vec<u64>),
    HealNetwork,
    ClearLinks(Vec<u64>),
    ClearClock(u64),
    FreeDisk(u64),
}

async fn leader(cluster: &ProcCluster) -> anyhow::Result<u64> {
    for _ in 0..50 {
        if let Some(l) = cluster.leader().await {
            return Ok(l);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no leader to aim the nemesis at")
}

fn follower(cluster: &ProcCluster, leader: u64, rng: &mut StdRng) -> u64 {
    let others: Vec<u64> = cluster.ids().into_iter().filter(|&i| i != leader).collect();
    *others.choose(rng).expect("more than one node")
}

pub async fn inject(
    n: Nemesis,
    cluster: &mut ProcCluster,
    rng: &mut StdRng,
) -> anyhow::Result<Injected> {
    let ids = cluster.ids();
    let (description, minority, undo) = match n {
        Nemesis::KillLeader => {
            let l = leader(cluster).await?;
            cluster.kill(l);
            (
                format!("kill -9 node {l} (leader)"),
                vec![l],
                Undo::Restart(vec![l]),
            )
        }
        Nemesis::KillRandom => {
            let id = *ids.choose(rng).expect("nodes");
            cluster.kill(id);
            (
                format!("kill -9 node {id}"),
                vec![id],
                Undo::Restart(vec![id]),
            )
        }
        Nemesis::PauseLeader => {
            let l = leader(cluster).await?;
            cluster.pause(l);
            (
                format!("SIGSTOP node {l} (leader)"),
                vec![l],
                Undo::Resume(vec![l]),
            )
        }
        Nemesis::IsolateRegion => {
            let regions: Vec<(String, Vec<u64>)> = cluster.regions().into_iter().collect();
            let (name, cut) = regions.choose(rng).expect("regions").clone();
            let rest: Vec<u64> = ids.iter().copied().filter(|i| !cut.contains(i)).collect();
            cluster.net.partition(&[cut.clone(), rest])?;
            (
                format!("isolate {name} (nodes {cut:?})"),
                cut,
                Undo::HealNetwork,
            )
        }
        Nemesis::SplitMajority => {
            let l = leader(cluster).await?;
            let other = follower(cluster, l, rng);
            let minority = vec![l.min(other), l.max(other)];
            let majority: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|i| !minority.contains(i))
                .collect();
            cluster
                .net
                .partition(&[minority.clone(), majority.clone()])?;
            (
                format!("split {minority:?} (with the leader) | {majority:?}"),
                minority,
                Undo::HealNetwork,
            )
        }
        Nemesis::Bridge => {
            let mut shuffled = ids.clone();
            shuffled.shuffle(rng);
            let bridge = shuffled[0];
            let half = (shuffled.len() - 1) / 2;
            let (a, b) = shuffled[1..].split_at(half);
            cluster.net.partition(&[a.to_vec(), b.to_vec()])?;
            (
                format!("bridge: {a:?} | {b:?}, node {bridge} sees both"),
                Vec::new(),
                Undo::HealNetwork,
            )
        }
        Nemesis::LinkFaults => {
            // A proxy slows the connections into its node: slowing every
            // follower's makes each append from the leader cross a slow,
            // lossy link, and the blackholed one falls behind.
            let l = leader(cluster).await?;
            let f = follower(cluster, l, rng);
            let slow: Vec<u64> = ids.iter().copied().filter(|&i| i != l && i != f).collect();
            for &id in &slow {
                cluster.set_link(
                    id,
                    Faults {
                        latency: Duration::from_millis(40),
                        jitter: Duration::from_millis(20),
                        loss: 0.02,
                        ..Faults::none()
                    },
                )?;
            }
            cluster.set_link(
                f,
                Faults {
                    blackhole: true,
                    ..Faults::none()
                },
            )?;
            let mut touched = slow.clone();
            touched.push(f);
            (
                format!(
                    "links into {slow:?}: 40+20 ms each way, 2 % loss; into node {f}: blackhole"
                ),
                vec![f],
                Undo::ClearLinks(touched),
            )
        }
        Nemesis::ClockSkew => {
            let skewed = cluster
                .env
                .keys()
                .copied()
                .next()
                .context("clock-skew needs a node started under libfaketime")?;
            std::fs::write(cluster.dir.join(format!("node{skewed}/faketime")), "+90\n")?;
            verify_skew(skewed).await?;
            (
                format!("node {skewed}: wall clock +90 s"),
                Vec::new(),
                Undo::ClearClock(skewed),
            )
        }
        Nemesis::FullDisk => {
            let l = leader(cluster).await?;
            let filled = cluster.fill_disk(l)?;
            (
                format!(
                    "node {l} (leader): data disk full ({} MiB filler)",
                    filled >> 20
                ),
                vec![l],
                Undo::FreeDisk(l),
            )
        }
        Nemesis::RestartAll => {
            for &id in &ids {
                cluster.kill(id);
            }
            (
                "kill -9 every node".to_string(),
                ids.clone(),
                Undo::Restart(ids.clone()),
            )
        }
    };
    Ok(Injected {
        nemesis: n,
        description,
        minority,
        undo,
    })
}

/// A skew that did not take effect would make the drill prove nothing:
/// the node's HTTP `Date` header must run about 90 s ahead.
async fn verify_skew(id: u64) -> anyhow::Result<()> {
    let url = format!("{}/healthz", super::cluster::http_base(id));
    let mut seen = None;
    for _ in 0..10 {
        // libfaketime rereads the offset file once a second.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let u = url.clone();
        let date = tokio::task::spawn_blocking(move || {
            let r = match ureq::get(&u).timeout(Duration::from_secs(2)).call() {
                Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                Err(e) => return Err(anyhow::anyhow!("{u}: {e}")),
            };
            r.header("date")
                .map(str::to_string)
                .with_context(|| format!("{u} sent no Date header"))
        })
        .await??;
        let theirs = httpdate::parse_http_date(&date)?;
        let ahead = theirs
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        if ahead > Duration::from_secs(60) {
            return Ok(());
        }
        seen = Some(date);
    }
    bail!("node {id}'s clock did not move under libfaketime (its Date header: {seen:?})")
}

pub fn heal(i: &Injected, cluster: &mut ProcCluster) -> anyhow::Result<()> {
    match &i.undo {
        Undo::Restart(ids) => {
            for &id in ids {
                cluster.restart(id)?;
            }
        }
        Undo::Resume(ids) => {
            for &id in ids {
                cluster.resume(id);
            }
        }
        Undo::HealNetwork => cluster.net.heal()?,
        Undo::ClearLinks(ids) => {
            for &id in ids {
                cluster.set_link(id, Faults::none())?;
            }
        }
        Undo::FreeDisk(id) => {
            cluster.free_disk(*id)?;
            // A node that stopped on a write error comes back as an
            // operator (or systemd) would bring it back.
            if cluster.exited(*id) {
                cluster.restart(*id)?;
            }
        }
        Undo::ClearClock(id) => {
            std::fs::write(cluster.dir.join(format!("node{id}/faketime")), "+0\n")?;
        }
    }
    Ok(())
}
