//! Who may do what: roles granted to caller identities by the policy, and
//! which changes need a second admin.
//!
//! A caller's identity is the SPIFFE ID in its client certificate (the URI
//! SAN), else the certificate's common name ([`identity_of`]). The policy
//! maps identities to roles:
//!
//! ```toml
//! [[grants]]
//! identity = "spiffe://example.org/admin/alice"
//! role = "admin"
//!
//! [[grants]]
//! identity = "spiffe://example.org/ns/payments/*"   # a prefix ending in /*
//! role = "issuer"
//! namespaces = ["payments"]
//!
//! [approvals]
//! policy = true        # a policy change waits for a second admin
//! ca = true            # so does installing an intermediate
//! ```
//!
//! Decisions are pure: [`authorize`] takes the policy, the identities that
//! node.toml names as break-glass admins, and the action.

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// What a grant lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including policy, CA changes, tokens and approvals.
    Admin,
    /// Day-to-day operation: revocation, membership, leadership, reads.
    Operator,
    /// Reads everything (certificates, policy, audit, cluster), changes
    /// nothing.
    Auditor,
    /// Issues, renews and revokes certificates of its namespaces only.
    Issuer,
}

impl Role {
    /// The role a policy's `role = "..."` names, or None for an unknown word.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "auditor" => Some(Role::Auditor),
            "issuer" => Some(Role::Issuer),
            _ => None,
        }
    }

    /// The word policy files and messages use for it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Issuer => "issuer",
        }
    }
}

/// One `[[grants]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// An exact identity, or a prefix ending in `/*`.
    pub identity: String,
    /// The role it grants.
    pub role: Role,
    /// For issuers: the namespaces they may issue in. Must be empty for
    /// other roles (they are not namespace-scoped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// Changes that wait for a second admin (`quorumca approve ID`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvals {
    /// Policy applies and rollbacks.
    #[serde(default)]
    pub policy: bool,
    /// Changes to the CA hierarchy (installing an intermediate).
    #[serde(default)]
    pub ca: bool,
}

impl Approvals {
    /// Whether no change needs approval (so the policy's canonical text omits the table).
    pub fn is_unset(&self) -> bool {
        *self == Approvals::default()
    }
}

/// Something a caller asks to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Issue or renew a certificate in a namespace.
    Issue {
        /// The namespace the request names.
        namespace: &'a str,
    },
    /// Revoke a certificate of a namespace.
    Revoke {
        /// The namespace the certificate was issued in.
        namespace: &'a str,
    },
    /// Revoke every certificate of a compromised key, whatever its namespace.
    RevokeByKey,
    /// List or read issued certificates.
    ReadCertificates {
        /// One namespace, or None for every namespace.
        namespace: Option<&'a str>,
    },
    /// Read the current policy and its history.
    ReadPolicy,
    /// Apply or roll back a policy.
    ChangePolicy,
    /// Rotate, install or retire issuers.
    ChangeCa,
    /// Approve a change another admin proposed.
    Approve,
    /// Read membership, leadership and node status.
    ReadCluster,
    /// Add or remove nodes, move leadership.
    ChangeCluster,
    /// Read or query the audit chain.
    ReadAudit,
    /// Create join tokens.
    CreateToken,
    /// List the roles join tokens granted.
    ReadRoleBindings,
    /// Withdraw one.
    RemoveRoleBinding,
}

impl Action<'_> {
    /// A short name for audit records and error messages.
    pub fn name(&self) -> String {
        match self {
            Action::Issue { namespace } => format!("issue in namespace {namespace:?}"),
            Action::Revoke { namespace } => format!("revoke in namespace {namespace:?}"),
            Action::RevokeByKey => "revoke by key".into(),
            Action::ReadCertificates { namespace: Some(n) } => {
                format!("read certificates of namespace {n:?}")
            }
            Action::ReadCertificates { namespace: None } => "read certificates".into(),
            Action::ReadPolicy => "read policy".into(),
            Action::ChangePolicy => "change policy".into(),
            Action::ChangeCa => "change the CA hierarchy".into(),
            Action::Approve => "approve changes".into(),
            Action::ReadCluster => "read cluster state".into(),
            Action::ChangeCluster => "change cluster membership or leadership".into(),
            Action::ReadAudit => "read the audit log".into(),
            Action::CreateToken => "create join tokens".into(),
            Action::ReadRoleBindings => "list roles granted by join tokens".into(),
            Action::RemoveRoleBinding => "remove roles granted by join tokens".into(),
        }
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{identity} may not {action}: {why}")]
pub struct Denied {
    /// Who was refused.
    pub identity: String,
    /// What they asked to do ([`Action::name`]).
    pub action: String,
    /// Which rule refused it, with what would allow it.
    pub why: String,
}

/// Whether `identity` matches a grant's pattern (exact, or `prefix/*`).
pub fn identity_matches(pattern: &str, identity: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            identity.starts_with(prefix)
                && identity.len() > prefix.len()
                && !identity[prefix.len()..].contains("..")
        }
        None => identity == pattern,
    }
}

fn allows(role: Role, namespaces: &[String], action: &Action) -> bool {
    let in_ns = |n: &str| namespaces.iter().any(|x| x == n);
    match role {
        Role::Admin => true,
        Role::Operator => matches!(
            action,
            Action::Revoke { .. }
                | Action::RevokeByKey
                | Action::ReadCertificates { .. }
                | Action::ReadPolicy
                | Action::ReadCluster
                | Action::ChangeCluster
        ),
        Role::Auditor => matches!(
            action,
            Action::ReadCertificates { .. }
                | Action::ReadPolicy
                | Action::ReadCluster
                | Action::ReadAudit
                | Action::ReadRoleBindings
        ),
        Role::Issuer => match action {
            Action::Issue { namespace } | Action::Revoke { namespace } => in_ns(namespace),
            Action::ReadCertificates {
                namespace: Some(namespace),
            } => in_ns(namespace),
            _ => false,
        },
    }
}

/// The roles (with their namespaces) `identity` holds: break-glass admins,
/// the policy's grants, and `enrolled` (a role a join token bound to this
/// exact identity).
pub fn roles_of<'p>(
    policy: &'p Policy,
    admins: &[String],
    enrolled: Option<&'p Grant>,
    identity: &str,
) -> Vec<(Role, &'p [String])> {
    let mut out: Vec<(Role, &[String])> = Vec::new();
    if admins.iter().any(|a| identity_matches(a, identity)) {
        out.push((Role::Admin, &[]));
    }
    for g in policy.grants.iter().chain(enrolled) {
        if identity_matches(&g.identity, identity) {
            out.push((g.role, &g.namespaces));
        }
    }
    out
}

/// Decides whether `identity` may perform `action`. `admins` are the
/// break-glass admins from node.toml, which hold whatever the policy says
/// (so a bad policy can always be repaired).
pub fn authorize(
    policy: &Policy,
    admins: &[String],
    enrolled: Option<&Grant>,
    identity: &str,
    action: &Action,
) -> Result<(), Denied> {
    let roles = roles_of(policy, admins, enrolled, identity);
    if roles.iter().any(|(r, ns)| allows(*r, ns, action)) {
        return Ok(());
    }
    let why = if roles.is_empty() {
        "no grant in the policy names this identity; an admin adds one under [[grants]]".into()
    } else {
        let held: Vec<String> = roles
            .iter()
            .map(|(r, ns)| {
                if ns.is_empty() {
                    r.name().to_string()
                } else {
                    format!("{} of {}", r.name(), ns.join(", "))
                }
            })
            .collect();
        format!("it holds {}, which does not allow this", held.join("; "))
    };
    Err(Denied {
        identity: identity.into(),
        action: action.name(),
        why,
    })
}

/// Checks the `[[grants]]` of a policy.
pub(crate) fn validate_grants(policy: &Policy) -> Result<(), String> {
    for (i, g) in policy.grants.iter().enumerate() {
        let owner = format!("grants[{i}] ({:?})", g.identity);
        if g.identity.is_empty()
            || g.identity.contains(char::is_whitespace)
            || g.identity[..g.identity.len() - 1].contains('*')
        {
            return Err(format!(
                "{owner}: identity must be an exact identity or a prefix ending in /*"
            ));
        }
        if g.identity.ends_with('*') && !g.identity.ends_with("/*") {
            return Err(format!("{owner}: a wildcard must follow a '/'"));
        }
        if crate::spiffe::has_spiffe_scheme(&g.identity) {
            crate::spiffe::check_pattern(&g.identity)
                .map_err(|why| format!("{owner}: not a SPIFFE ID or one followed by /*: {why}"))?;
        }
        match g.role {
            Role::Issuer if g.namespaces.is_empty() => {
                return Err(format!("{owner}: an issuer grant needs namespaces"));
            }
            Role::Issuer => {
                for n in &g.namespaces {
                    if !policy.namespaces.contains_key(n) {
                        return Err(format!("{owner}: namespace {n:?} is not defined"));
                    }
                }
            }
            _ if !g.namespaces.is_empty() => {
                return Err(format!(
                    "{owner}: only issuer grants are scoped to namespaces; {} is cluster-wide",
                    g.role.name()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What the API needs from a client certificate, read in one parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentedCert {
    /// Its first `spiffe://` URI SAN, else its subject common name.
    pub identity: String,
    /// The serial as the ledger keys records (DER INTEGER content).
    pub serial: Vec<u8>,
    /// SHA-256 of its SubjectPublicKeyInfo: what a token-bound role is
    /// bound to.
    pub spki_hash: [u8; 32],
}

/// Reads a client certificate's identity and serial. None when the
/// certificate does not parse or names neither a SPIFFE ID nor a CN.
pub fn presented_cert(cert_der: &[u8]) -> Option<PresentedCert> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let names = crate::chain::names_of(&cert).ok()?;
    let identity = names
        .uris
        .into_iter()
        .find(|u| u.starts_with("spiffe://"))
        .or_else(|| common_name(&cert))?;
    use der::Encode;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().ok()?;
    Some(PresentedCert {
        identity,
        serial: cert.tbs_certificate.serial_number.as_bytes().to_vec(),
        spki_hash: ring::digest::digest(&ring::digest::SHA256, &spki)
            .as_ref()
            .try_into()
            .expect("32 bytes"),
    })
}

/// The identity a client certificate carries (see [`presented_cert`]).
pub fn identity_of(cert_der: &[u8]) -> Option<String> {
    presented_cert(cert_der).map(|p| p.identity)
}

fn common_name(cert: &x509_cert::Certificate) -> Option<String> {
    let atv = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == const_oid::db::rfc4519::CN)?;
    der::asn1::Utf8StringRef::try_from(&atv.value)
        .map(|s| s.as_str().to_string())
        .or_else(|_| {
            der::asn1::PrintableStringRef::try_from(&atv.value).map(|s| s.as_str().to_string())
        })
        .ok()
}

/// The trust domain of a SPIFFE ID (`spiffe://<domain>/...`).
pub fn trust_domain(spiffe_id: &str) -> Option<&str> {
    let rest = spiffe_id.strip_prefix("spiffe://")?;
    let td = rest.split('/').next()?;
    (!td.is_empty()).then_some(td)
}

/// The SPIFFE ID of node `id` in `trust_domain`: what node certificates
/// carry and what the Raft port accepts.
pub fn node_identity(trust_domain: &str, id: u64) -> String {
    format!("spiffe://{trust_domain}/node/{id}")
}

/// Whether `identity` is a node of `trust_domain`.
pub fn is_node_identity(trust_domain: &str, identity: &str) -> bool {
    identity
        .strip_prefix(&format!("spiffe://{trust_domain}/node/"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> Policy {
        let text = format!(
            r#"
[profiles.web]
key_algorithms = ["ecdsa-p256"]
default_lifetime = "1h"
max_lifetime = "2h"
usages = ["server"]
[namespaces.payments]
profiles = ["web"]
dns = ["*.payments.svc"]
[namespaces.search]
profiles = ["web"]
dns = ["*.search.svc"]
{extra}"#
        );
        Policy::from_toml(&text).unwrap()
    }

    const GRANTS: &str = r#"
[[grants]]
identity = "spiffe://td/ns/payments/*"
role = "issuer"
namespaces = ["payments"]
[[grants]]
identity = "spiffe://td/auditor"
role = "auditor"
[[grants]]
identity = "spiffe://td/ops/*"
role = "operator"
"#;

    #[test]
    fn issuers_stay_in_their_namespaces() {
        let p = policy(GRANTS);
        let id = "spiffe://td/ns/payments/api";
        assert!(authorize(
            &p,
            &[],
            None,
            id,
            &Action::Issue {
                namespace: "payments"
            }
        )
        .is_ok());
        let e = authorize(
            &p,
            &[],
            None,
            id,
            &Action::Issue {
                namespace: "search",
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("issuer of payments"), "{e}");
        assert!(authorize(&p, &[], None, id, &Action::ChangePolicy).is_err());
        assert!(authorize(
            &p,
            &[],
            None,
            id,
            &Action::ReadCertificates { namespace: None }
        )
        .is_err());
        // A prefix grant does not reach into a sibling path or up a level.
        for other in [
            "spiffe://td/ns/payments",
            "spiffe://td/ns/paymentsX/api",
            "spiffe://td/ns/payments/../search/x",
        ] {
            assert!(
                authorize(
                    &p,
                    &[],
                    None,
                    other,
                    &Action::Issue {
                        namespace: "payments"
                    }
                )
                .is_err(),
                "{other}"
            );
        }
    }

    #[test]
    fn auditors_read_and_operators_operate() {
        let p = policy(GRANTS);
        let a = "spiffe://td/auditor";
        for ok in [
            Action::ReadAudit,
            Action::ReadPolicy,
            Action::ReadCluster,
            Action::ReadCertificates { namespace: None },
        ] {
            assert!(authorize(&p, &[], None, a, &ok).is_ok(), "{ok:?}");
        }
        for no in [
            Action::Issue {
                namespace: "payments",
            },
            Action::Revoke {
                namespace: "payments",
            },
            Action::ChangePolicy,
            Action::ChangeCluster,
            Action::Approve,
        ] {
            assert!(authorize(&p, &[], None, a, &no).is_err(), "{no:?}");
        }
        let o = "spiffe://td/ops/bob";
        assert!(authorize(
            &p,
            &[],
            None,
            o,
            &Action::Revoke {
                namespace: "search"
            }
        )
        .is_ok());
        assert!(authorize(&p, &[], None, o, &Action::ChangeCluster).is_ok());
        assert!(authorize(&p, &[], None, o, &Action::ChangePolicy).is_err());
        assert!(authorize(&p, &[], None, o, &Action::ReadAudit).is_err());
    }

    #[test]
    fn break_glass_admins_hold_everything_and_strangers_nothing() {
        let p = Policy::default();
        let admins = vec!["spiffe://td/admin/root".to_string()];
        assert!(authorize(&p, &admins, None, &admins[0], &Action::ChangePolicy).is_ok());
        let e = authorize(&p, &admins, None, "spiffe://td/x", &Action::ReadPolicy).unwrap_err();
        assert!(e.why.contains("no grant"), "{e}");
    }

    #[test]
    fn bad_grants_are_named() {
        for (extra, want) in [
            (
                "[[grants]]\nidentity = \"x\"\nrole = \"issuer\"",
                "needs namespaces",
            ),
            (
                "[[grants]]\nidentity = \"x\"\nrole = \"issuer\"\nnamespaces = [\"nope\"]",
                "not defined",
            ),
            (
                "[[grants]]\nidentity = \"x\"\nrole = \"admin\"\nnamespaces = [\"payments\"]",
                "only issuer grants",
            ),
            (
                "[[grants]]\nidentity = \"spiffe://td/*/x\"\nrole = \"admin\"",
                "prefix ending",
            ),
            (
                "[[grants]]\nidentity = \"x\"\nrole = \"root\"",
                "unknown variant",
            ),
        ] {
            let text = format!(
                "[profiles.web]\nkey_algorithms = [\"ecdsa-p256\"]\ndefault_lifetime = \"1h\"\nmax_lifetime = \"2h\"\nusages = [\"server\"]\n[namespaces.payments]\nprofiles = [\"web\"]\n{extra}"
            );
            let e = Policy::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }

    #[test]
    fn node_identities() {
        assert!(is_node_identity("td", "spiffe://td/node/3"));
        assert!(!is_node_identity("td", "spiffe://td/node/"));
        assert!(!is_node_identity("td", "spiffe://other/node/3"));
        assert!(!is_node_identity("td", "spiffe://td/node/3/x"));
        assert_eq!(trust_domain("spiffe://td/node/3"), Some("td"));
        assert_eq!(node_identity("td", 3), "spiffe://td/node/3");
    }
}
