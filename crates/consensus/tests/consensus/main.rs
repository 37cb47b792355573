//! The consensus crate's integration tests, one binary (each file under
//! `tests/` would be a binary of its own, linked separately):
//!
//! - [`cluster`]: real nodes on loopback or on an in-memory network that
//!   can be cut: elections, failover, membership, forwarding, restarts;
//! - [`sim`]: the seeded simulation on turmoil's network and clock.

mod cluster;
mod sim;
mod support;
