//! quorumca-api's integration tests, in one test binary: in-process
//! clusters on loopback, the authority and its gRPC and HTTP faces.

mod fuzz_requests;
mod issuance;
mod offline_root;
