//! Profiles and namespaces: what may be issued, to whom, for how long.
//!
//! A policy is written in TOML (`quorumca policy apply -f profiles.toml`),
//! validated here before it is proposed, and stored in the ledger as its
//! canonical text, versioned. At issuance, [`Policy::decide`] turns a
//! verified CSR and a request into a [`Decision`] that `sign_leaf` executes.
//!
//! ```toml
//! [profiles.web]
//! key_algorithms = ["ecdsa-p256", "ed25519", "rsa-2048"]
//! default_lifetime = "24h"
//! max_lifetime = "72h"
//! usages = ["server", "client"]
//! backdate = "60s"          # notBefore = now - backdate (clock skew); at most 48h
//! renew_at = 0.66           # hint: renew after this fraction of the lifetime
//! store = "compact"         # or "full": keep the whole DER in the ledger
//!
//! [namespaces.payments]
//! profiles = ["web"]
//! dns = ["payments.example.com", "*.payments.svc.cluster.local"]
//! ips = ["10.1.0.0/16"]
//! uris = ["spiffe://example.org/ns/payments/*"]
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::access::{Approvals, Grant};
use crate::csr::{KeyAlgorithm, VerifiedCsr};
use crate::sign::{Usage, Validity};

/// Backdating beyond this would hide real clock problems and stretch
/// certificates into the past.
pub const MAX_BACKDATE: Duration = Duration::from_secs(48 * 3600);
/// The backdate a profile gets when it sets none: covers a minute of clock skew between this CA and
/// relying parties.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(60);

/// A key type a profile allows, as policy files spell it (`ecdsa-p256`, `rsa-2048`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmName {
    /// ECDSA over P-256 (`ecdsa-p256`).
    EcdsaP256,
    /// ECDSA over P-384 (`ecdsa-p384`).
    EcdsaP384,
    /// Ed25519 (`ed25519`).
    Ed25519,
    /// RSA, 2048 bits (`rsa-2048`).
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA, 3072 bits (`rsa-3072`).
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    /// RSA, 4096 bits (`rsa-4096`).
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl AlgorithmName {
    fn matches(self, k: KeyAlgorithm) -> bool {
        matches!(
            (self, k),
            (Self::EcdsaP256, KeyAlgorithm::EcdsaP256)
                | (Self::EcdsaP384, KeyAlgorithm::EcdsaP384)
                | (Self::Ed25519, KeyAlgorithm::Ed25519)
                | (Self::Rsa2048, KeyAlgorithm::Rsa { bits: 2048 })
                | (Self::Rsa3072, KeyAlgorithm::Rsa { bits: 3072 })
                | (Self::Rsa4096, KeyAlgorithm::Rsa { bits: 4096 })
        )
    }
}

/// An extended key usage a profile grants, as policy files spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageName {
    /// TLS server authentication (`server`).
    Server,
    /// TLS client authentication (`client`).
    Client,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
/// How much of a certificate the ledger keeps: a profile's `store` key.
/// (Named for what it chooses, not `Store`, which is the agent's file
/// store.)
pub enum RecordForm {
    /// Only the compact issuance record.
    #[default]
    Compact,
    /// The record plus the full DER.
    Full,
}

fn default_backdate() -> Span {
    Span::parse("60s").expect("a valid duration")
}

/// A duration as a policy writes it (`"24h"`), parsed once when the policy
/// is read: decisions use [`Span::duration`], and the canonical text keeps
/// what the author wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span {
    text: String,
    duration: Duration,
}

impl Span {
    /// Parses a humantime duration (`"24h"`, `"7d"`), keeping the text as written.
    pub fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map(|duration| Self {
                text: text.into(),
                duration,
            })
            .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. \"24h\""))
    }

    /// The parsed duration.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The text as the policy's author wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for Span {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Span> for String {
    fn from(s: Span) -> String {
        s.text
    }
}

fn default_renew_at() -> f64 {
    2.0 / 3.0
}

/// One issuance profile, as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Key types a CSR may carry.
    pub key_algorithms: Vec<AlgorithmName>,
    /// The lifetime when the request asks for none.
    pub default_lifetime: Span,
    /// The longest lifetime a request may ask for.
    pub max_lifetime: Span,
    /// The extended key usages its certificates carry.
    pub usages: Vec<UsageName>,
    /// How far notBefore lies before the signing time, for relying parties' clock skew (at most
    /// [`MAX_BACKDATE`]).
    #[serde(default = "default_backdate")]
    pub backdate: Span,
    /// The fraction of the lifetime after which holders should renew (0 < renew_at < 1).
    #[serde(default = "default_renew_at")]
    pub renew_at: f64,
    /// How much of each certificate the ledger keeps.
    #[serde(default)]
    pub store: RecordForm,
}

/// Which names a namespace may get, and through which profiles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// The profiles requests in this namespace may use.
    pub profiles: Vec<String>,
    /// Exact names, or `*.suffix` for exactly one more label.
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP ranges its certificates may name.
    #[serde(default)]
    pub ips: Vec<IpNet>,
    /// Exact URIs, or a prefix ending in `/*`. A `spiffe://` entry must be
    /// a valid SPIFFE ID (or one followed by `/*`).
    #[serde(default)]
    pub uris: Vec<String>,
    /// Lets `uris` reach the SPIFFE IDs the cluster keeps for itself
    /// (`/node/...`, `/admin/...`; see [`crate::spiffe`]). Off unless a
    /// namespace says so: a node's or a break-glass admin's identity in a
    /// workload's hands is a takeover, so it takes this explicit line
    /// (e.g. for nodes that join with a token).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_reserved_ids: bool,
}

/// Issuance rate limits, each `"<count>/<s|m|h>"`, enforced by every node
/// on what it receives (so the cluster-wide ceiling is the number of nodes
/// times this). They keep one client's retry loop from flooding the Raft
/// log.
///
/// ```toml
/// [limits]
/// per_identity = "50/s"     # per requester identity
/// per_namespace = "500/s"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Issuances per requester identity, e.g. `"50/s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_identity: Option<String>,
    /// Issuances per namespace, e.g. `"500/s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_namespace: Option<String>,
}

/// A parsed limit: a refill rate and a burst (one second's worth, at least
/// one request).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens held: the largest burst allowed.
    pub burst: f64,
}

impl Rate {
    /// Parses `"<count>/<s|m|h>"`.
    pub fn parse(text: &str) -> Option<Rate> {
        let (n, unit) = text.trim().split_once('/')?;
        let n: f64 = n
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n > 0.0)?;
        let secs = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        let per_second = n / secs;
        Some(Rate {
            per_second,
            burst: per_second.ceil().max(1.0),
        })
    }
}

/// A whole policy. BTreeMaps keep the canonical text stable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Issuance profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// Namespaces by name: who may get which names.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Namespace>,
    /// Issuance rate limits.
    #[serde(default, skip_serializing_if = "limits_unset")]
    pub limits: Limits,
    /// Which identities hold which roles (see [`crate::authorize`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    /// Which changes wait for a second admin.
    #[serde(default, skip_serializing_if = "Approvals::is_unset")]
    pub approvals: Approvals,
}

fn limits_unset(l: &Limits) -> bool {
    *l == Limits::default()
}

/// A policy that cannot be applied, or a request it refuses. Messages name
/// the profile, namespace or name at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The text is not TOML, or not the policy's shape.
    #[error("policy is not valid TOML: {0}")]
    Parse(String),
    /// The policy breaks a rule; the message names it.
    #[error("policy: {0}")]
    Invalid(String),
    /// The request names a profile the policy does not define.
    #[error("unknown profile {0:?}")]
    UnknownProfile(String),
    /// The request names a namespace the policy does not define.
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    /// The namespace does not list the profile.
    #[error("profile {profile:?} is not allowed in namespace {namespace:?}")]
    ProfileNotAllowed {
        /// The namespace.
        namespace: String,
        /// The profile it does not allow.
        profile: String,
    },
    /// The profile does not allow the CSR's key type.
    #[error("key type {key} is not allowed by profile {profile:?} (allowed: {allowed})")]
    KeyNotAllowed {
        /// The CSR's key type.
        key: String,
        /// The profile.
        profile: String,
        /// The key types it allows, comma-separated.
        allowed: String,
    },
    /// A requested name matches none of the namespace's patterns.
    #[error("{name} is outside namespace {namespace:?}'s rules")]
    NameNotAllowed {
        /// The namespace.
        namespace: String,
        /// The name it refuses.
        name: String,
    },
    /// A namespace or profile name is not a valid name.
    #[error("{kind} name {shown:?} is not 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '.', '-' and '_'")]
    BadName {
        /// "namespace" or "profile".
        kind: &'static str,
        /// The name, cut to its first 64 characters.
        shown: String,
    },
    /// A requested `spiffe://` URI is not a valid SPIFFE ID.
    #[error("URI {uri:?} is not a valid SPIFFE ID: {why}")]
    InvalidSpiffeId {
        /// The URI.
        uri: String,
        /// The rule it breaks.
        why: crate::spiffe::SpiffeIdError,
    },
    /// A requested SPIFFE ID is one the cluster reserves for nodes and admins.
    #[error("URI {uri:?} is a reserved SPIFFE ID (nodes and break-glass admins have root-signed bootstrap identities); namespace {namespace:?} does not set allow_reserved_ids")]
    ReservedId {
        /// The namespace, which does not set `allow_reserved_ids`.
        namespace: String,
        /// The reserved ID.
        uri: String,
    },
    /// Neither the CSR nor the request names anything to certify.
    #[error("the request names nothing to certify; put DNS, IP or URI names in the CSR")]
    NoNames,
    /// The requested lifetime exceeds the profile's maximum.
    #[error("requested lifetime {requested:?} exceeds profile {profile:?}'s maximum {max:?}")]
    LifetimeTooLong {
        /// The profile.
        profile: String,
        /// The lifetime asked for.
        requested: Duration,
        /// The profile's `max_lifetime`.
        max: Duration,
    },
}

/// Longest namespace or profile name.
pub const MAX_NAME_LEN: usize = 63;

/// Namespace and profile names: 1 to [`MAX_NAME_LEN`] characters of
/// `[A-Za-z0-9._-]`. Checked before a request is authorised, so a name in
/// an error message or an audit record is never an unbounded string; the
/// error shows at most the first 64 characters of a bad one.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        return Ok(());
    }
    Err(PolicyError::BadName {
        kind,
        shown: name.chars().take(64).collect(),
    })
}

fn valid_dns_pattern(p: &str) -> bool {
    let rest = p.strip_prefix("*.").unwrap_or(p);
    !rest.is_empty()
        && !rest.contains('*')
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn dns_allowed(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        // One label more than the suffix, never the suffix itself.
        Some(suffix) => name
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.') && label != "*"),
        None => name == pattern,
    }
}

fn uri_allowed(pattern: &str, uri: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => uri.starts_with(prefix) && uri.len() > prefix.len() && !uri.contains(".."),
        None => uri == pattern,
    }
}

/// What policy decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The profile the certificate is issued under.
    pub profile: String,
    /// The namespace it is issued in.
    pub namespace: String,
    /// The DNS names it will carry.
    pub dns: Vec<String>,
    /// The IP addresses it will carry.
    pub ips: Vec<IpAddr>,
    /// The URIs it will carry.
    pub uris: Vec<String>,
    /// Its validity window, backdate included.
    pub validity: Validity,
    /// Its extended key usages.
    pub usages: Vec<Usage>,
    /// How much of it the ledger keeps.
    pub store: RecordForm,
    /// Unix seconds after which the holder should renew.
    pub renew_after: i64,
}

impl Policy {
    /// Parses and validates a policy file.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Canonical text: what the ledger stores and diffs compare.
    pub fn to_canonical_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a validated policy serialises")
    }

    /// The per-identity and per-namespace limits, if set.
    pub fn rates(&self) -> (Option<Rate>, Option<Rate>) {
        let parse = |s: &Option<String>| s.as_deref().and_then(Rate::parse);
        (
            parse(&self.limits.per_identity),
            parse(&self.limits.per_namespace),
        )
    }

    /// Checks every rule a policy must keep; [`Policy::from_toml`] calls it, and so must anyone
    /// building a policy in code.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: String| Err(PolicyError::Invalid(m));
        for (field, v) in [
            ("per_identity", &self.limits.per_identity),
            ("per_namespace", &self.limits.per_namespace),
        ] {
            if let Some(v) = v {
                if Rate::parse(v).is_none() {
                    return bad(format!(
                        "limits.{field}: {v:?} is not a rate like \"50/s\", \"600/m\" or \"1000/h\""
                    ));
                }
            }
        }
        for (name, p) in &self.profiles {
            check_name("profile", name)?;
            let owner = format!("profile {name:?}");
            if p.key_algorithms.is_empty() {
                return bad(format!("{owner}: key_algorithms is empty"));
            }
            if p.usages.is_empty() {
                return bad(format!("{owner}: usages is empty"));
            }
            let def = p.default_lifetime.duration();
            let max = p.max_lifetime.duration();
            let back = p.backdate.duration();
            if def.is_zero() || def > max {
                return bad(format!(
                    "{owner}: default_lifetime must be more than 0 and at most max_lifetime"
                ));
            }
            if back > MAX_BACKDATE {
                return bad(format!("{owner}: backdate is at most 48h"));
            }
            if !(p.renew_at > 0.0 && p.renew_at < 1.0) {
                return bad(format!(
                    "{owner}: renew_at must be between 0 and 1 (a fraction of the lifetime)"
                ));
            }
        }
        for (ns, n) in &self.namespaces {
            check_name("namespace", ns)?;
            let owner = format!("namespace {ns:?}");
            if n.profiles.is_empty() {
                return bad(format!("{owner}: lists no profiles"));
            }
            for p in &n.profiles {
                if !self.profiles.contains_key(p) {
                    return bad(format!("{owner}: profile {p:?} is not defined"));
                }
            }
            for d in &n.dns {
                if !valid_dns_pattern(d) {
                    return bad(format!(
                        "{owner}: {d:?} is not a DNS name or *.suffix pattern"
                    ));
                }
            }
            for u in &n.uris {
                if !u.contains("://")
                    || u.contains(char::is_whitespace)
                    || u[..u.len() - 1].contains('*')
                {
                    return bad(format!(
                        "{owner}: {u:?} is not a URI or a prefix ending in /*"
                    ));
                }
                if crate::spiffe::has_spiffe_scheme(u) {
                    let (_, reserved) = crate::spiffe::check_pattern(u).map_err(|why| {
                        PolicyError::Invalid(format!(
                            "{owner}: {u:?} is not a SPIFFE ID or one followed by /*: {why}"
                        ))
                    })?;
                    if reserved && !n.allow_reserved_ids {
                        return bad(format!(
                            "{owner}: {u:?} reaches the cluster's reserved SPIFFE IDs (/node/..., /admin/...); narrow it (e.g. spiffe://<td>/ns/{ns}/*), or set allow_reserved_ids = true if this namespace really certifies nodes or admins"
                        ));
                    }
                }
            }
        }
        crate::access::validate_grants(self).map_err(PolicyError::Invalid)?;
        Ok(())
    }

    /// A readable, line-based diff of the canonical texts.
    pub fn diff(old: &Policy, new: &Policy) -> String {
        let (a, b) = (old.to_canonical_toml(), new.to_canonical_toml());
        similar::TextDiff::from_lines(&a, &b)
            .unified_diff()
            .context_radius(2)
            .header("current", "proposed")
            .to_string()
    }

    /// Decides what to issue for `csr` in `namespace` under `profile`.
    /// `lifetime` is what the requester asked for (None: the profile's
    /// default). Every requested name must be allowed; nothing is silently
    /// dropped.
    pub fn decide(
        &self,
        namespace: &str,
        profile: &str,
        csr: &VerifiedCsr,
        lifetime: Option<Duration>,
        now: i64,
    ) -> Result<Decision, PolicyError> {
        let ns = self
            .namespaces
            .get(namespace)
            .ok_or_else(|| PolicyError::UnknownNamespace(namespace.into()))?;
        let p = self
            .profiles
            .get(profile)
            .ok_or_else(|| PolicyError::UnknownProfile(profile.into()))?;
        if !ns.profiles.iter().any(|x| x == profile) {
            return Err(PolicyError::ProfileNotAllowed {
                namespace: namespace.into(),
                profile: profile.into(),
            });
        }
        if !p.key_algorithms.iter().any(|a| a.matches(csr.key)) {
            return Err(PolicyError::KeyNotAllowed {
                key: csr.key.to_string(),
                profile: profile.into(),
                allowed: p
                    .key_algorithms
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let names = &csr.names;
        if names.dns.is_empty() && names.ips.is_empty() && names.uris.is_empty() {
            return Err(PolicyError::NoNames);
        }
        let refuse = |name: String| PolicyError::NameNotAllowed {
            namespace: namespace.into(),
            name,
        };
        for d in &names.dns {
            if !ns.dns.iter().any(|pat| dns_allowed(pat, d)) {
                return Err(refuse(format!("DNS name {d:?}")));
            }
        }
        for ip in &names.ips {
            if !ns.ips.iter().any(|net| net.contains(ip)) {
                return Err(refuse(format!("IP address {ip}")));
            }
        }
        for u in &names.uris {
            if crate::spiffe::has_spiffe_scheme(u) {
                let id = crate::spiffe::SpiffeId::parse(u).map_err(|why| {
                    PolicyError::InvalidSpiffeId {
                        uri: u.clone(),
                        why,
                    }
                })?;
                if id.is_reserved() && !ns.allow_reserved_ids {
                    return Err(PolicyError::ReservedId {
                        namespace: namespace.into(),
                        uri: u.clone(),
                    });
                }
            }
            if !ns.uris.iter().any(|pat| uri_allowed(pat, u)) {
                return Err(refuse(format!("URI {u:?}")));
            }
        }
        let max = p.max_lifetime.duration();
        let def = p.default_lifetime.duration();
        let back = p.backdate.duration();
        let life = lifetime.unwrap_or(def);
        if life > max {
            return Err(PolicyError::LifetimeTooLong {
                profile: profile.into(),
                requested: life,
                max,
            });
        }
        let not_before = now - back.as_secs() as i64;
        let not_after = now + life.as_secs() as i64;
        let renew_after = now + (life.as_secs_f64() * p.renew_at) as i64;
        Ok(Decision {
            profile: profile.into(),
            namespace: namespace.into(),
            dns: names.dns.clone(),
            ips: names.ips.clone(),
            uris: names.uris.clone(),
            validity: Validity {
                not_before,
                not_after,
            },
            usages: p
                .usages
                .iter()
                .map(|u| match u {
                    UsageName::Server => Usage::ServerAuth,
                    UsageName::Client => Usage::ClientAuth,
                })
                .collect(),
            store: p.store,
            renew_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[profiles.web]
key_algorithms = ["ecdsa-p256", "ed25519", "rsa-2048"]
default_lifetime = "24h"
max_lifetime = "72h"
usages = ["server", "client"]

[namespaces.payments]
profiles = ["web"]
dns = ["payments.example.com", "*.payments.svc.cluster.local"]
ips = ["10.1.0.0/16"]
uris = ["spiffe://example.org/ns/payments/*"]

[namespaces.search]
profiles = ["web"]
dns = ["*.search.svc.cluster.local"]
"#;

    fn csr(dns: &[&str], ips: &[&str], uris: &[&str], key: KeyAlgorithm) -> VerifiedCsr {
        VerifiedCsr {
            der: vec![],
            spki_der: vec![],
            key,
            common_name: None,
            names: crate::RequestedNames {
                dns: dns.iter().map(|s| s.to_string()).collect(),
                ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
                uris: uris.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    #[test]
    fn rate_limits_parse_validate_and_survive_the_canonical_text() {
        let r = Rate::parse("50/s").unwrap();
        assert_eq!((r.per_second, r.burst), (50.0, 50.0));
        let r = Rate::parse(" 600 / m ").unwrap();
        assert_eq!((r.per_second, r.burst), (10.0, 10.0));
        assert_eq!(Rate::parse("30/h").unwrap().burst, 1.0);
        for bad in ["", "50", "0/s", "-1/s", "x/s", "5/d", "inf/s", "NaN/s"] {
            assert!(Rate::parse(bad).is_none(), "{bad:?}");
        }
        let with = format!("{POLICY}\n[limits]\nper_identity = \"5/s\"\n");
        let p = Policy::from_toml(&with).unwrap();
        assert_eq!(p.rates().0.unwrap().per_second, 5.0);
        assert!(p.rates().1.is_none());
        let again = Policy::from_toml(&p.to_canonical_toml()).unwrap();
        assert_eq!(again, p);
        let e = Policy::from_toml(&format!("{POLICY}\n[limits]\nper_namespace = \"lots\"\n"))
            .unwrap_err();
        assert!(e.to_string().contains("limits.per_namespace"), "{e}");
        // No [limits] section: the canonical text has none either.
        assert!(!Policy::from_toml(POLICY)
            .unwrap()
            .to_canonical_toml()
            .contains("limits"));
    }

    #[test]
    fn allows_names_within_the_namespace() {
        let p = Policy::from_toml(POLICY).unwrap();
        let c = csr(
            &["api.payments.svc.cluster.local", "PAYMENTS.example.com"],
            &["10.1.200.3"],
            &["spiffe://example.org/ns/payments/sa/api"],
            KeyAlgorithm::EcdsaP256,
        );
        let d = p.decide("payments", "web", &c, None, 1_000_000).unwrap();
        assert_eq!(
            d.validity,
            Validity {
                not_before: 1_000_000 - 60,
                not_after: 1_000_000 + 86_400
            }
        );
        assert_eq!(d.usages, vec![Usage::ServerAuth, Usage::ClientAuth]);
        assert_eq!(d.renew_after, 1_000_000 + 57_600);
        assert_eq!(d.store, RecordForm::Compact);
    }

    #[test]
    fn refuses_names_of_another_namespace_and_says_which() {
        let p = Policy::from_toml(POLICY).unwrap();
        for (c, needle) in [
            (
                csr(
                    &["api.search.svc.cluster.local"],
                    &[],
                    &[],
                    KeyAlgorithm::EcdsaP256,
                ),
                "DNS name \"api.search",
            ),
            (
                csr(
                    &["a.b.payments.svc.cluster.local"],
                    &[],
                    &[],
                    KeyAlgorithm::EcdsaP256,
                ),
                "a.b.payments",
            ),
            (
                csr(
                    &["payments.svc.cluster.local"],
                    &[],
                    &[],
                    KeyAlgorithm::EcdsaP256,
                ),
                "DNS name",
            ),
            (
                csr(
                    &["payments.example.com"],
                    &["10.2.0.1"],
                    &[],
                    KeyAlgorithm::EcdsaP256,
                ),
                "IP address 10.2.0.1",
            ),
            (
                csr(
                    &[],
                    &[],
                    &["spiffe://example.org/ns/search/sa/x"],
                    KeyAlgorithm::EcdsaP256,
                ),
                "URI",
            ),
        ] {
            let e = p.decide("payments", "web", &c, None, 0).unwrap_err();
            assert!(matches!(e, PolicyError::NameNotAllowed { .. }), "{e}");
            assert!(e.to_string().contains(needle), "expected {needle:?} in {e}");
        }
    }

    /// Security hardening 3: SPIFFE IDs that a string prefix match let
    /// through (the namespace allows `spiffe://example.org/ns/payments/*`)
    /// are refused by the grammar, whatever the case of their scheme.
    #[test]
    fn malformed_spiffe_ids_are_refused_even_inside_an_allowed_prefix() {
        let p = Policy::from_toml(POLICY).unwrap();
        for uri in [
            "spiffe://example.org/ns/payments/../search",
            "spiffe://example.org/ns/payments/%2e%2e/%2e%2e/node/1",
            "spiffe://example.org/ns/payments/x?y#z",
            "spiffe://example.org/ns/payments/@evil",
            "spiffe://example.org/ns/payments/a//b",
            "spiffe://example.org/ns/payments/a/",
            "spiffe://example.org/ns/payments/./a",
            "spiffe://example.org/ns/payments/a\u{0}b",
            "SPIFFE://example.org/ns/payments/a",
            "Spiffe://EXAMPLE.org/ns/payments/a",
        ] {
            let c = csr(&[], &[], &[uri], KeyAlgorithm::EcdsaP256);
            let e = p.decide("payments", "web", &c, None, 0).unwrap_err();
            assert!(
                matches!(e, PolicyError::InvalidSpiffeId { .. }),
                "{uri}: {e}"
            );
        }
        let fine = csr(
            &[],
            &[],
            &["spiffe://example.org/ns/payments/sa/api"],
            KeyAlgorithm::EcdsaP256,
        );
        p.decide("payments", "web", &fine, None, 0).unwrap();
    }

    /// Security hardening 2: a namespace cannot reach node or admin
    /// identities unless it says so, and even a pattern that would match
    /// them does not get them issued.
    #[test]
    fn reserved_ids_need_an_explicit_namespace_rule() {
        for pattern in [
            "spiffe://example.org/*",
            "spiffe://example.org/node/*",
            "spiffe://example.org/node/1",
            "spiffe://example.org/admin/*",
        ] {
            let text = format!(
                "{POLICY}\n[namespaces.nodes]\nprofiles = [\"web\"]\nuris = [\"{pattern}\"]\n"
            );
            let e = Policy::from_toml(&text).unwrap_err();
            assert!(e.to_string().contains("reserved"), "{pattern}: {e}");
            let allowed = format!("{text}allow_reserved_ids = true\n");
            let p = Policy::from_toml(&allowed).unwrap();
            let again = Policy::from_toml(&p.to_canonical_toml()).unwrap();
            assert!(again.namespaces["nodes"].allow_reserved_ids);
        }
        // A policy without the flag keeps its canonical text.
        let p = Policy::from_toml(POLICY).unwrap();
        assert!(!p.to_canonical_toml().contains("allow_reserved_ids"));
        // Malformed patterns are refused outright.
        let bad = POLICY.replace(
            "spiffe://example.org/ns/payments/*",
            "spiffe://example.org/ns/%70ayments/*",
        );
        assert!(Policy::from_toml(&bad).is_err());
        // Decisions refuse reserved IDs in a namespace without the flag,
        // even when a hand-built policy skipped validation.
        let mut p = Policy::from_toml(POLICY).unwrap();
        p.namespaces.get_mut("payments").unwrap().uris = vec!["spiffe://example.org/*".into()];
        let c = csr(
            &[],
            &[],
            &["spiffe://example.org/node/1"],
            KeyAlgorithm::EcdsaP256,
        );
        let e = p.decide("payments", "web", &c, None, 0).unwrap_err();
        assert!(matches!(e, PolicyError::ReservedId { .. }), "{e}");
    }

    #[test]
    fn refuses_keys_profiles_namespaces_and_lifetimes_outside_policy() {
        let p = Policy::from_toml(POLICY).unwrap();
        let ok = csr(&["payments.example.com"], &[], &[], KeyAlgorithm::EcdsaP256);
        let p384 = csr(&["payments.example.com"], &[], &[], KeyAlgorithm::EcdsaP384);
        assert!(matches!(
            p.decide("payments", "web", &p384, None, 0),
            Err(PolicyError::KeyNotAllowed { .. })
        ));
        assert!(matches!(
            p.decide("payments", "nope", &ok, None, 0),
            Err(PolicyError::UnknownProfile(_))
        ));
        assert!(matches!(
            p.decide("nope", "web", &ok, None, 0),
            Err(PolicyError::UnknownNamespace(_))
        ));
        assert!(matches!(
            p.decide(
                "payments",
                "web",
                &ok,
                Some(Duration::from_secs(73 * 3600)),
                0
            ),
            Err(PolicyError::LifetimeTooLong { .. })
        ));
        let none = csr(&[], &[], &[], KeyAlgorithm::EcdsaP256);
        assert_eq!(
            p.decide("payments", "web", &none, None, 0),
            Err(PolicyError::NoNames)
        );
    }

    #[test]
    fn invalid_policies_are_refused_with_the_field_named() {
        for (text, needle) in [
            (
                POLICY.replace("max_lifetime = \"72h\"", "max_lifetime = \"1h\""),
                "default_lifetime",
            ),
            (POLICY.replace("\"24h\"", "\"soon\""), "not a duration"),
            (
                POLICY.replace(
                    "usages = [\"server\", \"client\"]",
                    "usages = [\"server\"]\nbackdate = \"49h\"",
                ),
                "48h",
            ),
            (
                POLICY.replace(
                    "profiles = [\"web\"]\ndns = [\"*.search",
                    "profiles = [\"api\"]\ndns = [\"*.search",
                ),
                "\"api\" is not defined",
            ),
            (
                POLICY.replace("\"payments.example.com\"", "\"pay*ments.com\""),
                "not a DNS name",
            ),
            (
                POLICY.replace("\"ed25519\"", "\"dsa-1024\""),
                "unknown variant",
            ),
            (
                POLICY.replace("[profiles.web]", "[profiles.web]\ncolour = 1"),
                "unknown field",
            ),
        ] {
            let e = Policy::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "expected {needle:?} in {e}");
        }
    }

    #[test]
    fn canonical_text_round_trips_and_diffs_readably() {
        let p = Policy::from_toml(POLICY).unwrap();
        let again = Policy::from_toml(&p.to_canonical_toml()).unwrap();
        assert_eq!(p, again);
        let mut q = p.clone();
        q.namespaces
            .get_mut("search")
            .unwrap()
            .dns
            .push("search.example.com".into());
        let d = Policy::diff(&p, &q);
        assert!(d.contains("+") && d.contains("search.example.com"), "{d}");
        assert!(d.starts_with("--- current"), "{d}");
        assert_eq!(Policy::diff(&p, &again), "");
    }
}
