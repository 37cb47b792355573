//! The `[connections]` section of node.toml: how many connections each listener
//! admits and how long a connection may take over each step.
//!
//! ```toml
//! [connections]
//! max_connections = 4096             # each of the API, HTTP, enrolment listeners
//! max_connections_per_source = 256   # raise behind a load balancer in TCP mode
//! raft_max_connections = 256         # the Raft port admits nodes only
//! handshake_timeout = "10s"          # TLS handshake, every TLS listener
//! header_timeout = "10s"             # HTTP: the request line and headers
//! request_timeout = "30s"            # HTTP and gRPC: one request, body included
//! max_connection_age = "30m"         # then a graceful close (HTTP/2 GOAWAY)
//! ```
//!
//! The defaults keep the four listeners together under 10,000 descriptors,
//! half of what a node's systemd unit allows, leaving the rest to sled,
//! Raft peers and the CRL and OCSP work.

use std::time::Duration;

use serde::Deserialize;

use crate::ListenerLimits;

/// `[connections]` in node.toml: what every listener admits and how long each step may take.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Open connections per listener (API, HTTP, enrolment).
    pub max_connections: usize,
    /// Open connections per client address; raise it behind a load balancer in TCP mode.
    pub max_connections_per_source: usize,
    /// Open connections on the Raft listener.
    pub raft_max_connections: usize,
    /// A TLS handshake's deadline, on every TLS listener.
    #[serde(with = "human")]
    pub handshake_timeout: Duration,
    /// The deadline for an HTTP request line and headers.
    #[serde(with = "human")]
    pub header_timeout: Duration,
    /// One request's deadline, body included.
    #[serde(with = "human")]
    pub request_timeout: Duration,
    /// After this a connection is closed gracefully, so clients rebalance.
    #[serde(with = "human")]
    pub max_connection_age: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_source: 256,
            raft_max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(30 * 60),
        }
    }
}

/// A `[connections]` value that cannot work, and what to set instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("[connections] {field}: {reason}")]
pub struct ConnectionLimitsError {
    /// The field.
    pub field: &'static str,
    /// Why, and what to set instead.
    pub reason: String,
}

impl ConnectionLimits {
    /// Checks the values make working listeners: caps of at least 1, the per-source cap within the
    /// total, timeouts between 100 ms and 10 min.
    pub fn validate(&self) -> Result<(), ConnectionLimitsError> {
        let bad = |field, reason: &str| {
            Err(ConnectionLimitsError {
                field,
                reason: reason.to_string(),
            })
        };
        for (field, v) in [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_source",
                self.max_connections_per_source,
            ),
            ("raft_max_connections", self.raft_max_connections),
        ] {
            if v == 0 {
                return bad(field, "must be 1 or more (0 would refuse every connection)");
            }
        }
        if self.max_connections_per_source > self.max_connections {
            return bad(
                "max_connections_per_source",
                "is larger than max_connections, so it would never apply",
            );
        }
        for (field, v) in [
            ("handshake_timeout", self.handshake_timeout),
            ("header_timeout", self.header_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if v < Duration::from_millis(100) || v > Duration::from_secs(600) {
                return bad(field, "must be between 100ms and 10m");
            }
        }
        if self.max_connection_age < Duration::from_secs(10) {
            return bad(
                "max_connection_age",
                "must be 10s or more (clients reconnect after each)",
            );
        }
        Ok(())
    }

    /// The API (gRPC), HTTP and enrolment listeners.
    pub fn public(&self) -> ListenerLimits {
        ListenerLimits {
            max: self.max_connections,
            per_source: self.max_connections_per_source,
        }
    }

    /// The Raft listener: nodes only, each with a connection or two, so a
    /// small cap; per source the same, since a node may sit behind the
    /// same NAT as others.
    pub fn raft(&self) -> ListenerLimits {
        ListenerLimits {
            max: self.raft_max_connections,
            per_source: self
                .raft_max_connections
                .min(self.max_connections_per_source),
        }
    }
}

/// Durations written as `humantime` strings ("10s", "30m").
mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like \"10s\" ({e})"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_section_overrides_only_what_it_names() {
        assert_eq!(ConnectionLimits::default().validate(), Ok(()));
        let l: ConnectionLimits =
            toml::from_str("max_connections = 10\nheader_timeout = \"2s\"").unwrap();
        assert_eq!(l.max_connections, 10);
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(
            l.handshake_timeout,
            ConnectionLimits::default().handshake_timeout
        );
        assert_eq!(
            l.validate().unwrap_err().field,
            "max_connections_per_source"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = toml::from_str::<ConnectionLimits>("request_timeout = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
        assert!(toml::from_str::<ConnectionLimits>("max_conections = 1").is_err());
        for (text, field) in [
            ("max_connections = 0", "max_connections"),
            ("handshake_timeout = \"1ms\"", "handshake_timeout"),
            ("max_connection_age = \"1s\"", "max_connection_age"),
        ] {
            let l: ConnectionLimits = toml::from_str(text).unwrap();
            assert_eq!(l.validate().unwrap_err().field, field, "{text}");
        }
    }
}
