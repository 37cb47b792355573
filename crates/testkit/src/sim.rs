//! What both simulations (consensus's and the CA's in `chaos/`) share:
//! real nodes on turmoil's network through the transport seam, a clock and
//! seeds that replay, and the partition helpers.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use quorumca_consensus::transport::{Conn, Transport};

/// The simulated clock starts here (2026-01-01), not at the wall clock:
/// proposal times are part of the state, so they must replay too.
pub const EPOCH_SECS: u64 = 1_767_225_600;

thread_local! {
    static SEED: RefCell<u64> = const { RefCell::new(0) };
    static STARTS: RefCell<BTreeMap<u64, u64>> = const { RefCell::new(BTreeMap::new()) };
    /// Whether this thread runs a simulation. A turmoil simulation runs
    /// every host on the thread that steps it, so the clock is decided per
    /// thread, and tests of the same binary on other threads keep the wall
    /// clock.
    static SIMULATING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Puts `now_ms` (leases, proposal times, expiry) on simulated time on
/// this thread; every other thread of the process keeps the wall clock.
pub fn use_simulated_clock() {
    SIMULATING.with(|s| s.set(true));
    quorumca_consensus::set_clock(|| {
        if SIMULATING.with(|s| s.get()) {
            turmoil::since_epoch()
                .map(|d| d.as_millis() as u64)
                .unwrap_or(EPOCH_SECS * 1000)
        } else {
            std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        }
    });
}

/// A simulation for `seed`: its network and clock follow the seed, and
/// every message takes 1 ms unless [`set_link_latencies`] says otherwise.
/// Latency is fixed per link, not drawn per message: turmoil draws a
/// latency for every TCP segment from one world RNG, so anything that cut
/// a write into one more segment would shift every later delivery and the
/// seed would not replay.
pub fn simulation(seed: u64) -> turmoil::Sim<'static> {
    SEED.with(|s| *s.borrow_mut() = seed);
    STARTS.with(|s| s.borrow_mut().clear());
    turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .build()
}

/// Gives the link between every two of hosts `n1..=n{nodes}` the latency
/// `ms(a, b)` returns.
pub fn set_link_latencies(sim: &turmoil::Sim, nodes: u64, mut ms: impl FnMut(u64, u64) -> u64) {
    for a in 1..=nodes {
        for b in (a + 1)..=nodes {
            sim.set_link_latency(
                format!("n{a}"),
                format!("n{b}"),
                Duration::from_millis(ms(a, b)),
            );
        }
    }
}

/// The seed for this start of host `id` (the first start, a restart after
/// a crash, ...): openraft's election randomness in it is drawn from this
/// (`quorumca_storage::runtime::with_seed`).
pub fn start_seed(id: u64) -> u64 {
    let start = STARTS.with(|s| {
        let mut s = s.borrow_mut();
        let n = s.entry(id).or_default();
        *n += 1;
        *n
    });
    SEED.with(|s| *s.borrow()) ^ (id << 48) ^ (start << 32)
}

/// The node's listener and dialer on turmoil's network.
pub fn transport(listener: turmoil::net::TcpListener) -> Transport {
    let local_addr = listener.local_addr().expect("bound");
    let incoming = futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, remote)| {
            let local = s.local_addr().ok();
            Conn::new(s, local, Some(remote))
        });
        Some((next, l))
    });
    Transport {
        local_addr,
        incoming: Box::pin(incoming),
        dial: Some(Arc::new(|addr: String| {
            Box::pin(async move {
                let s = turmoil::net::TcpStream::connect(addr).await?;
                let (local, remote) = (s.local_addr().ok(), s.peer_addr().ok());
                Ok(Conn::new(s, local, remote))
            })
        })),
    }
}

/// Cuts `inside` off from `outside`. Held, not dropped: turmoil's TCP does
/// not retransmit, so a dropped segment would tear a hole in the stream
/// that real TCP would have filled after the partition healed.
pub fn isolate(sim: &mut turmoil::Sim, inside: &[u64], outside: &[u64]) {
    for a in inside {
        for b in outside {
            sim.hold(format!("n{a}"), format!("n{b}"));
        }
    }
}

/// Lets every held message through and every link carry traffic again.
pub fn release_all(sim: &mut turmoil::Sim, nodes: u64) {
    for a in 1..=nodes {
        for b in (1..=nodes).filter(|b| *b != a) {
            sim.release(format!("n{a}"), format!("n{b}"));
        }
    }
}

/// Steps the simulation for `d` of simulated time.
pub fn run_for(sim: &mut turmoil::Sim, d: Duration) -> Result<(), String> {
    let until = sim.elapsed() + d;
    while sim.elapsed() < until {
        sim.step().map_err(|e| e.to_string())?;
    }
    Ok(())
}
