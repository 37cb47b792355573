//! The settings every tonic server of a node starts from.
//!
//! tonic's defaults suit a server behind a trusted proxy: no keepalive, no
//! connection age, no stream cap. A node faces its clients directly, so:
//!
//! - HTTP/2 keepalive pings find connections whose peer vanished (a crashed
//!   client, a cut link) and free their places;
//! - a maximum connection age sends GOAWAY after a while, so no client holds
//!   one connection for ever and clients spread again over nodes that came
//!   back; in-flight calls get a grace period to finish;
//! - a cap on concurrent streams per connection and on header size bounds
//!   what one connection can make the node hold;
//! - a cap on streams a peer may reset before they are accepted (h2's
//!   default of 20 tears down a connection whose client cancels a burst of
//!   calls at their deadline, a normal thing under load).

use std::time::Duration;

use tonic::transport::Server;

use crate::ConnectionLimits;

const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// What calls in flight get after GOAWAY, before the connection closes.
const AGE_GRACE: Duration = Duration::from_secs(60);
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
const MAX_PENDING_RESETS: usize = 256;

/// Which gRPC listener a server is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The public API and the enrolment port: per-call timeout, streams
    /// capped per connection.
    Public,
    /// Node to node: no per-call timeout (each call carries its own
    /// deadline, and a snapshot may take long), more streams, since one
    /// connection carries all Raft traffic to a peer.
    Raft,
}

/// A tonic server builder with the limits of a node's `role` listener.
pub fn server(limits: &ConnectionLimits, role: Role) -> Server {
    let s = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_connection_age(limits.max_connection_age)
        .max_connection_age_grace(AGE_GRACE)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS));
    match role {
        Role::Public => s
            .timeout(limits.request_timeout)
            .max_concurrent_streams(256),
        Role::Raft => s.max_concurrent_streams(4096),
    }
}
