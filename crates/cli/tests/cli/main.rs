//! The `quorumca` binary's integration tests, in one test binary (one link
//! instead of one per file): real processes on loopback, through the CLI,
//! the Rust client and the agent as operators and workloads use them.
//!
//! Tests run two at a time. The ones that time a node under load take the
//! whole machine ([`support::exclusive`]); every test that starts a
//! cluster waits for its turn ([`support::shared`]).

mod support;

mod access;
mod agent;
mod ca_offline;
mod client_failover;
mod connect_errors;
mod dev_ca;
mod listeners;
mod node_identity;
mod node_join;
mod processes;
mod python_client;
mod rotation;
