//! The chaos crate's tests, one binary:
//!
//! - [`short_suite`]: the short drill suite against a real 5-node cluster
//!   in network namespaces (CI's version of `chaos/run`);
//! - [`sim`]: the CA on the simulated network, seeded, with the invariant
//!   checker.
//!
//! Tests of one binary run in parallel threads; these two take a turn
//! each (see [`one_at_a_time`]), so the drill's timing never competes with
//! the simulation for the machine's cores.

mod short_suite;
mod sim;

/// Held for the whole of a test that must have the machine to itself.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
