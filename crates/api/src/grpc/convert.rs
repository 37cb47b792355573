//! Conversions between the generated protobuf messages and the domain's
//! types: reasons, certificate and bundle views, page tokens, serials.
//! Nothing here decides anything.

use quorumca_ca::pem_encode;
use quorumca_ledger::{IssuerPhase, RevocationReason, Serial};

use crate::error::AuthorityError;
use crate::issuance::Issued;
use crate::pb;
use crate::records::CertificateView;

/// A serial as printed by us or by `openssl x509 -serial`.
pub(super) fn serial_of(text: &str) -> Result<Serial, AuthorityError> {
    Serial::parse_hex(text).map_err(|e| AuthorityError::InvalidArgument(e.to_string()))
}

pub(super) fn reason_of(r: i32) -> Result<RevocationReason, AuthorityError> {
    use pb::RevocationReason as P;
    let p = P::try_from(r).map_err(|_| {
        AuthorityError::InvalidArgument(format!("{r} is not an RFC 5280 revocation reason"))
    })?;
    Ok(match p {
        P::Unspecified => RevocationReason::Unspecified,
        P::KeyCompromise => RevocationReason::KeyCompromise,
        P::CaCompromise => RevocationReason::CaCompromise,
        P::AffiliationChanged => RevocationReason::AffiliationChanged,
        P::Superseded => RevocationReason::Superseded,
        P::CessationOfOperation => RevocationReason::CessationOfOperation,
        P::CertificateHold => RevocationReason::CertificateHold,
        P::RemoveFromCrl => RevocationReason::RemoveFromCrl,
        P::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
        P::AaCompromise => RevocationReason::AaCompromise,
    })
}

fn reason_pb(r: RevocationReason) -> pb::RevocationReason {
    use pb::RevocationReason as P;
    match r {
        RevocationReason::Unspecified => P::Unspecified,
        RevocationReason::KeyCompromise => P::KeyCompromise,
        RevocationReason::CaCompromise => P::CaCompromise,
        RevocationReason::AffiliationChanged => P::AffiliationChanged,
        RevocationReason::Superseded => P::Superseded,
        RevocationReason::CessationOfOperation => P::CessationOfOperation,
        RevocationReason::CertificateHold => P::CertificateHold,
        RevocationReason::RemoveFromCrl => P::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn => P::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => P::AaCompromise,
    }
}

pub(super) fn certificate_info(v: &CertificateView) -> pb::CertificateInfo {
    let (r, rev) = (&v.record, v.revocation.as_ref());
    pb::CertificateInfo {
        issuer: r.issuer.clone(),
        serial: r.serial.to_string(),
        namespace: r.namespace.clone(),
        profile: r.profile.clone(),
        actor: r.actor.clone(),
        not_before: (r.not_before_ms / 1000) as i64,
        not_after: (r.not_after_ms / 1000) as i64,
        spki_sha256: hex::encode(r.spki_hash),
        revoked: rev.is_some(),
        revoked_at_ms: rev.map(|v| v.revoked_at_ms).unwrap_or(0),
        revocation_reason: rev.map(|v| reason_pb(v.reason)).unwrap_or_default() as i32,
        certificate_pem: r
            .full_der
            .as_ref()
            .map(|d| pem_encode("CERTIFICATE", d))
            .unwrap_or_default(),
        archived: v.archived,
    }
}

/// Page tokens are `issuer/serial-hex` of the last record returned.
pub(super) fn page_token_of(t: &str) -> Result<Option<(String, Serial)>, AuthorityError> {
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || {
        AuthorityError::InvalidArgument(format!("page_token {t:?} is not one this API returned"))
    };
    let (issuer, serial) = t.split_once('/').ok_or_else(bad)?;
    let serial = hex::decode(serial).map_err(|_| bad())?;
    Ok(Some((issuer.to_string(), Serial(serial))))
}

pub(super) fn page_token(next: Option<(String, Serial)>) -> String {
    match next {
        Some((issuer, serial)) => format!("{issuer}/{}", serial),
        None => String::new(),
    }
}

pub(super) fn issue_response(issued: Issued) -> pb::IssueResponse {
    pb::IssueResponse {
        issuer: issued.issuer,
        serial: hex::encode(&issued.serial),
        certificate_pem: issued.cert_pem,
        chain_pem: issued.chain_pem,
        not_before: issued.not_before,
        not_after: issued.not_after,
        log_index: issued.log_index,
        replayed: issued.replayed,
        namespace: issued.namespace,
    }
}

/// The trust bundle as the ledger holds it: roots not withdrawn, issuers
/// not retired, cross certificates of a rollover, forced-renewal markers.
pub(super) fn bundle_of(s: &quorumca_ledger::State) -> pb::TrustBundle {
    let live: Vec<_> = s
        .issuers()
        .filter_map(|i| match s.issuer_phase(&i.id)? {
            IssuerPhase::Retired => None,
            phase => Some((i, phase)),
        })
        .collect();
    pb::TrustBundle {
        roots_pem: live
            .iter()
            .filter(|(i, _)| i.parent.is_none())
            .map(|(i, _)| pem_encode("CERTIFICATE", &i.cert_der))
            .collect(),
        version: s.bundle_version(),
        issuers: live
            .into_iter()
            .map(|(i, phase)| pb::Issuer {
                certificate_pem: pem_encode("CERTIFICATE", &i.cert_der),
                id: i.id.clone(),
                region: i.region.clone().unwrap_or_default(),
                parent: i.parent.clone().unwrap_or_default(),
                crl_shards: i.crl_shards,
                phase: match phase {
                    IssuerPhase::CurrentRoot => "current-root",
                    IssuerPhase::PreviousRoot => "previous-root",
                    IssuerPhase::Active => "active",
                    IssuerPhase::Retiring => "retiring",
                    IssuerPhase::Retired => "retired",
                }
                .into(),
            })
            .collect(),
        cross_certificates: s
            .cross_certs()
            .map(|c| pb::CrossCertificate {
                subject: c.subject.clone(),
                signer: c.signer.clone(),
                certificate_pem: pem_encode("CERTIFICATE", &c.cert_der),
            })
            .collect(),
        force_renew: s
            .force_renew_markers()
            .map(|m| pb::ForceRenewMarker {
                id: m.id,
                issuer: m.issuer.clone().unwrap_or_default(),
                namespace: m.namespace.clone().unwrap_or_default(),
                at_ms: m.at_ms,
            })
            .collect(),
    }
}

pub(super) fn policy_version(
    v: &quorumca_ledger::PolicyVersion,
    with_text: bool,
) -> pb::PolicyVersion {
    pb::PolicyVersion {
        version: v.version,
        text: if with_text {
            v.text.clone()
        } else {
            String::new()
        },
        applied_at_ms: v.applied_at_ms,
        actor: v.actor.clone(),
        rollback_of: v.rollback_of,
    }
}

pub(super) fn policy_change(c: crate::changes::PolicyChange) -> pb::ApplyPolicyResponse {
    pb::ApplyPolicyResponse {
        version: c.version,
        diff: c.diff,
        applied: c.applied,
        pending_change: c.pending_change,
    }
}

pub(super) fn role_binding(e: &quorumca_ledger::Enrollment) -> pb::RoleBinding {
    pb::RoleBinding {
        identity: e.identity.clone(),
        role: e.role.clone(),
        namespace: e.namespace.clone(),
        enrolled_at_ms: e.enrolled_at_ms,
        key_sha256: hex::encode(e.spki_hash),
    }
}

/// A CA change's answer: what it created and whether it waits.
pub(super) fn rotate_response(u: crate::changes::HierarchyUpdate) -> pb::RotateResponse {
    pb::RotateResponse {
        bundle_version: u.bundle_version,
        pending_change: u.pending_change,
        new_issuers: u.new_issuers,
    }
}

/// The DER of the first certificate in `pem`, or INVALID_ARGUMENT naming
/// the field.
pub(super) fn cert_der_of(pem: &str, what: &str) -> Result<Vec<u8>, AuthorityError> {
    quorumca_ca::first_certificate_der(pem.as_bytes())
        .map_err(|e| AuthorityError::InvalidArgument(format!("{what}: {e}")))
}

/// A positive number of seconds, or none.
pub(super) fn seconds(s: u64) -> Option<std::time::Duration> {
    (s > 0).then(|| std::time::Duration::from_secs(s))
}

/// An optional string field.
pub(super) fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}
