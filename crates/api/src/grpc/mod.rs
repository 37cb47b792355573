//! The public gRPC services (`proto/quorumca/v1/ca.proto`) over an
//! [`Authority`]: one file per service, each a pure adapter. A method names
//! its caller, converts the request, calls one domain function and converts
//! the answer; every decision (roles, the two-person rule, what is
//! proposed to the ledger) is the authority's. Errors reach callers through
//! the one table in `status.rs`.

use std::sync::Arc;

use quorumca_ca::Action;
use tonic::{Request, Status};

use crate::auth::Caller;
use crate::authority::Authority;

mod audit;
mod certificates;
mod convert;
mod enrollment;
mod hierarchy;
mod policy;
mod status;
mod tokens;

/// Largest request the public services accept; a CSR is at most 64 KiB and
/// a policy file far smaller.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// The public services, sharing one authority.
#[derive(Clone)]
pub struct Services(pub Arc<Authority>);

impl Services {
    /// Who is calling, from the client certificate TLS verified.
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let certs = req.peer_certs();
        Ok(self
            .0
            .caller(certs.as_deref().map(|v| v.as_slice()), req.remote_addr())?)
    }

    /// The caller, if its roles allow `action` (refusals are audited).
    fn allow<T>(&self, req: &Request<T>, action: Action) -> Result<Caller, Status> {
        let caller = self.caller(req)?;
        self.0.authorize(&caller, action)?;
        Ok(caller)
    }
}
