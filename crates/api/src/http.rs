//! The plain-HTTP side every node serves: CRLs at the URLs written into
//! certificates, OCSP (RFC 6960 GET and POST), the CA certificates, and a
//! health probe for load balancers.
//!
//! Relying parties fetch CRLs and OCSP over plain HTTP by design (the
//! responses are signed; TLS would create a chicken-and-egg problem for
//! revocation checking of the TLS server itself).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;

use crate::authority::Authority;
use crate::error::{AuthorityError, StatusCode as Code};

fn body(status: StatusCode, content_type: &'static str, bytes: Vec<u8>) -> Response {
    let mut r = (status, bytes).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, msg: String) -> Response {
    body(
        status,
        "text/plain; charset=utf-8",
        format!("{msg}\n").into_bytes(),
    )
}

fn error(e: AuthorityError) -> Response {
    let status = match (&e, e.code()) {
        (AuthorityError::NoIssuer(_), _) | (_, Code::NotFound) => StatusCode::NOT_FOUND,
        (_, Code::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
        (_, Code::InvalidArgument) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut r = text(status, e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    r
}

/// The router; `MAX_OCSP_REQUEST_BYTES` bounds POST bodies.
pub fn router(authority: Arc<Authority>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/crl/{issuer}/{file}", get(crl))
        .route("/ca/{file}", get(ca_cert))
        .route("/ocsp/{issuer}", axum::routing::post(ocsp_post))
        .route("/ocsp/{issuer}/{*request}", get(ocsp_get))
        .layer(DefaultBodyLimit::max(quorumca_ca::MAX_OCSP_REQUEST_BYTES))
        .with_state(authority)
}

/// 200 while this node knows a leader (it can serve and forward), 503
/// otherwise, so a load balancer routes around a cut-off node.
async fn health(State(a): State<Arc<Authority>>) -> Response {
    match a.node().current_leader() {
        Some(l) => text(StatusCode::OK, format!("ok (leader {l})")),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader known: this node cannot commit".into(),
        ),
    }
}

/// `/crl/<issuer>/<shard>.crl` (full) and `/crl/<issuer>/<shard>-delta.crl`.
async fn crl(
    State(a): State<Arc<Authority>>,
    Path((issuer, file)): Path<(String, String)>,
) -> Response {
    let parsed = file.strip_suffix(".crl").and_then(|stem| {
        let (shard, delta) = match stem.strip_suffix("-delta") {
            Some(s) => (s, true),
            None => (stem, false),
        };
        shard.parse::<u64>().ok().map(|s| (s, delta))
    });
    let Some((shard, delta)) = parsed else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{file:?}: expected <shard>.crl or <shard>-delta.crl"),
        );
    };
    match a.crl(&issuer, shard, delta) {
        Ok(c) => {
            let mut r = body(StatusCode::OK, "application/pkix-crl", c.der.to_vec());
            // Short: a revocation rebuilds the shard within a second, and
            // caches should notice well before nextUpdate.
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60"),
            );
            r
        }
        Err(e) => error(e),
    }
}

/// `/ca/<issuer>.pem` (or `.der`): an issuer's certificate.
async fn ca_cert(State(a): State<Arc<Authority>>, Path(file): Path<String>) -> Response {
    let (id, pem) = match (file.strip_suffix(".pem"), file.strip_suffix(".der")) {
        (Some(id), _) => (id.to_string(), true),
        (_, Some(id)) => (id.to_string(), false),
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                format!("{file:?}: expected <issuer>.pem or <issuer>.der"),
            )
        }
    };
    match a
        .node()
        .read_local(|s| s.issuer(&id).map(|i| i.cert_der.clone()))
    {
        Some(der) if pem => body(
            StatusCode::OK,
            "application/x-pem-file",
            quorumca_ca::pem_encode("CERTIFICATE", &der).into_bytes(),
        ),
        Some(der) => body(StatusCode::OK, "application/pkix-cert", der),
        None => error(AuthorityError::NoIssuer(id)),
    }
}

fn ocsp_answer(a: &Authority, issuer: &str, request: &[u8]) -> Response {
    body(
        StatusCode::OK,
        "application/ocsp-response",
        a.ocsp(issuer, request),
    )
}

async fn ocsp_post(
    State(a): State<Arc<Authority>>,
    Path(issuer): Path<String>,
    request: Bytes,
) -> Response {
    ocsp_answer(&a, &issuer, &request)
}

/// RFC 6960 appendix A.1: GET `{url}/{url-encoding of base64 of DER}`.
/// axum has already percent-decoded the path.
async fn ocsp_get(
    State(a): State<Arc<Authority>>,
    Path((issuer, request)): Path<(String, String)>,
) -> Response {
    let b64 = request.trim_start_matches('/');
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(der) => ocsp_answer(&a, &issuer, &der),
        // A malformed request still gets an OCSP-formatted answer, as
        // OCSP clients expect.
        Err(_) => body(
            StatusCode::OK,
            "application/ocsp-response",
            quorumca_ca::OcspError::Malformed("the GET path is not base64".into()).response_der(),
        ),
    }
}
