//! The one table from domain errors to gRPC status codes. The classes are
//! decided beside the errors ([`AuthorityError::code`]), free of tonic;
//! this is only their spelling on the wire.

use tonic::Status;

use crate::error::{AuthorityError, StatusCode};

impl From<AuthorityError> for Status {
    fn from(e: AuthorityError) -> Self {
        let msg = e.to_string();
        match e.code() {
            StatusCode::InvalidArgument => Status::invalid_argument(msg),
            StatusCode::Unauthenticated => Status::unauthenticated(msg),
            StatusCode::PermissionDenied => Status::permission_denied(msg),
            StatusCode::NotFound => Status::not_found(msg),
            StatusCode::FailedPrecondition => Status::failed_precondition(msg),
            StatusCode::Unavailable => Status::unavailable(msg),
            StatusCode::ResourceExhausted => Status::resource_exhausted(msg),
            StatusCode::Internal => Status::internal(msg),
        }
    }
}
