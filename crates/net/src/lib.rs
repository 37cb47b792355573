//! # quorumca-net: the edges of a node's process
//!
//! This crate owns what every listener of a node (and of the agent) shares,
//! so that none of them is unbounded by accident:
//!
//! - [`listen`]: accepting TCP connections under a cap per listener and per
//!   source address, backing off when the process runs out of descriptors
//!   instead of spinning;
//! - [`http`]: serving an HTTP/1 router on such a listener with a header-read
//!   timeout, a request timeout and a maximum connection age (hyper applies
//!   none of these unless given a timer, and `axum::serve` gives it none);
//! - [`grpc`]: the settings every tonic server of a node starts from
//!   (HTTP/2 keepalive, maximum connection age, stream and header limits);
//! - [`node_tls`]: the client side, which checks it reached a node (a
//!   root-signed `spiffe://<td>/node/<id>`) and not merely something
//!   holding a certificate from the same root;
//! - [`ConnectionLimits`]: the `[connections]` section of node.toml that sets all of the
//!   above.
//!
//! ## What it must never do
//!
//! Authenticate or authorise: TLS configurations and identity checks come
//! from the crates that own certificates and roles. It only bounds how much
//! of the process a connection can hold, and for how long.
#![forbid(unsafe_code)]

mod conn;
mod connections;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod node_tls;

pub use conn::{Conn, Io};
pub use connections::{ConnectionLimits, ConnectionLimitsError};
pub use listen::{ListenerLimits, ListenerStats};
