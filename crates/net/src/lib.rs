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
//! - [`NotSent`]: whether a failed request ever left the process, by type,
//!   so clients know which failures any request may be retried after;
//! - [`diagnose`]: why a connection to a node failed ([`LinkFailure`]:
//!   nothing listening, a client certificate missing or refused, a server
//!   not trusted, not a node, not TLS), so every command can say what to
//!   fix;
//! - [`ConnectionLimits`]: the `[connections]` section of node.toml that sets all of the
//!   above.
//!
//! Everything but [`node_tls`], [`NotSent`] and [`diagnose`] is the `server` feature:
//! a client (`quorumca-client`) builds the node check without axum, hyper's
//! server or the listener code.
//!
//! ## What it must never do
//!
//! Authenticate or authorise: TLS configurations and identity checks come
//! from the crates that own certificates and roles. It only bounds how much
//! of the process a connection can hold, and for how long.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "server")]
mod conn;
#[cfg(feature = "server")]
mod connections;
mod diagnose;
#[cfg(feature = "server")]
pub mod grpc;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod listen;
pub mod node_tls;
mod sent;

/// A byte stream to a peer or a client.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

#[cfg(feature = "server")]
pub use conn::Conn;
#[cfg(feature = "server")]
pub use connections::{ConnectionLimits, ConnectionLimitsError};
pub use diagnose::{diagnose, FailureSlot, LinkFailure, Watched};
#[cfg(feature = "server")]
pub use listen::{ListenerLimits, ListenerStats};
pub use sent::{never_sent, tcp_connector, NotSent, PlainIo};
