//! SPIFFE IDs: the grammar every identity in a URI SAN must follow, and the
//! paths that belong to the cluster itself.
//!
//! A caller's role and a node's standing come from its SPIFFE ID, so an ID
//! that two parsers read differently is a privilege escalation:
//! `spiffe://td/ns/a/%2e%2e/%2e%2e/node/1` is inside `ns/a/*` as a string
//! and `node/1` to anything that decodes it. The SPIFFE standard's grammar
//! (SPIFFE-ID.md, section 2) leaves no room for that, and we apply it
//! strictly, both to what a CSR asks for and to what policy patterns
//! allow:
//!
//! - `spiffe://`, lowercase, then a trust domain of `[a-z0-9._-]`;
//! - a path of zero or more `/segment`, each of `[A-Za-z0-9._-]`, never
//!   empty, `.` or `..` (so no trailing `/`);
//! - no percent-encoding, query, fragment, userinfo or port (none of `%`,
//!   `?`, `#`, `@`, `:` is in either character set).
//!
//! Reserved paths: `/node/...` names the cluster's nodes and `/admin/...`
//! its break-glass admins. Both are certified by the root alone (bootstrap
//! identities); a namespace may allow them only when it says so with
//! `allow_reserved_ids = true`.

/// Longest SPIFFE ID accepted (the standard's limit for URI SANs).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Longest trust domain (a DNS name's limit).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a SPIFFE ID; each names the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// It does not start with `spiffe://`.
    #[error("a SPIFFE ID starts with \"spiffe://\" in lowercase")]
    Scheme,
    /// It is longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("a SPIFFE ID is at most {MAX_SPIFFE_ID_LEN} characters")]
    TooLong,
    /// Nothing between `spiffe://` and the path.
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("the trust domain is at most {MAX_TRUST_DOMAIN_LEN} characters")]
    TrustDomainTooLong,
    /// The trust domain holds a character outside `[a-z0-9._-]`.
    #[error("the trust domain may hold only a-z, 0-9, '.', '-' and '_', not {0:?} (no uppercase, port or userinfo)")]
    TrustDomainChar(char),
    /// A path segment is empty.
    #[error("a path segment is empty (a doubled or trailing '/')")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("a path segment is '.' or '..'")]
    DotSegment,
    /// A path segment holds a character outside `[A-Za-z0-9._-]`.
    #[error("a path segment may hold only A-Z, a-z, 0-9, '.', '-' and '_', not {0:?} (no percent-encoding, query or fragment)")]
    PathChar(char),
}

/// A parsed, valid SPIFFE ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpiffeId<'a> {
    /// The trust domain, e.g. `example.org`.
    pub trust_domain: &'a str,
    /// Empty, or `/segment(/segment)*`.
    pub path: &'a str,
}

fn td_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

impl<'a> SpiffeId<'a> {
    /// Parses `s` by the SPIFFE ID grammar.
    pub fn parse(s: &'a str) -> Result<Self, SpiffeIdError> {
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if trust_domain.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeIdError::TrustDomainTooLong);
        }
        if let Some(c) = trust_domain.chars().find(|c| !td_char(*c)) {
            return Err(SpiffeIdError::TrustDomainChar(c));
        }
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() {
                    return Err(SpiffeIdError::EmptySegment);
                }
                if seg == "." || seg == ".." {
                    return Err(SpiffeIdError::DotSegment);
                }
                if let Some(c) = seg.chars().find(|c| !path_char(*c)) {
                    return Err(SpiffeIdError::PathChar(c));
                }
            }
        }
        Ok(SpiffeId { trust_domain, path })
    }

    /// Whether this ID is under a path the cluster keeps for itself:
    /// `/node/...` (its nodes) or `/admin/...` (break-glass admins).
    pub fn is_reserved(&self) -> bool {
        RESERVED_PATHS
            .iter()
            .any(|r| self.path == *r || self.path.starts_with(&format!("{r}/")))
    }
}

impl SpiffeId<'_> {
    /// Whether this ID names a node (`/node/...`): the cluster signs those
    /// with its root, never with a workload intermediate, and clients
    /// accept only root-signed node certificates.
    pub fn is_node(&self) -> bool {
        self.path.starts_with("/node/")
    }
}

/// Paths under every trust domain that only root-signed bootstrap
/// identities carry.
pub const RESERVED_PATHS: [&str; 2] = ["/node", "/admin"];

/// Whether a URI uses the `spiffe` scheme in any spelling of its case (URI
/// schemes are case-insensitive, so `SPIFFE://` must meet the same rules
/// rather than slip past them).
pub fn has_spiffe_scheme(uri: &str) -> bool {
    uri.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("spiffe:"))
}

/// Checks a policy URI pattern with the `spiffe` scheme: an exact SPIFFE
/// ID, or one followed by `/*` (every ID below it). Returns the parsed
/// prefix and whether the pattern can match a reserved ID.
pub fn check_pattern(pattern: &str) -> Result<(SpiffeId<'_>, bool), SpiffeIdError> {
    let (base, wildcard) = match pattern.strip_suffix("/*") {
        Some(b) => (b, true),
        None => (pattern, false),
    };
    let id = SpiffeId::parse(base)?;
    // `spiffe://td/*` and `spiffe://td/node/*` both reach `/node/1`;
    // `spiffe://td/no*` cannot be written (a '*' is only allowed as `/*`).
    let reaches_reserved = id.is_reserved()
        || (wildcard
            && RESERVED_PATHS
                .iter()
                .any(|r| r.starts_with(&format!("{}/", id.path))));
    Ok((id, reaches_reserved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_forms_that_were_issued_are_refused() {
        for (bad, why) in [
            (
                "spiffe://dev.internal/ns/default/%2e%2e/%2e%2e/node/1",
                SpiffeIdError::PathChar('%'),
            ),
            (
                "spiffe://dev.internal/ns/default/x?y#z",
                SpiffeIdError::PathChar('?'),
            ),
            (
                "spiffe://dev.internal/ns/default/@evil",
                SpiffeIdError::PathChar('@'),
            ),
            (
                "spiffe://dev.internal/ns/default/../../node/1",
                SpiffeIdError::DotSegment,
            ),
            ("spiffe://dev.internal/ns/./x", SpiffeIdError::DotSegment),
            ("spiffe://dev.internal/ns//x", SpiffeIdError::EmptySegment),
            ("spiffe://dev.internal/ns/x/", SpiffeIdError::EmptySegment),
            (
                "spiffe://user@dev.internal/ns/x",
                SpiffeIdError::TrustDomainChar('@'),
            ),
            (
                "spiffe://dev.internal:443/ns/x",
                SpiffeIdError::TrustDomainChar(':'),
            ),
            (
                "spiffe://Dev.Internal/ns/x",
                SpiffeIdError::TrustDomainChar('D'),
            ),
            ("SPIFFE://dev.internal/ns/x", SpiffeIdError::Scheme),
            ("spiffe:///ns/x", SpiffeIdError::EmptyTrustDomain),
            ("spiffe://", SpiffeIdError::EmptyTrustDomain),
            (
                "spiffe://dev.internal/ns/x\u{0}y",
                SpiffeIdError::PathChar('\u{0}'),
            ),
            (
                "spiffe://dev.internal/ns/caf\u{e9}",
                SpiffeIdError::PathChar('\u{e9}'),
            ),
        ] {
            assert_eq!(SpiffeId::parse(bad), Err(why), "{bad}");
        }
        let long = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        assert_eq!(SpiffeId::parse(&long), Err(SpiffeIdError::TooLong));
    }

    #[test]
    fn valid_ids_parse_into_their_parts() {
        let id = SpiffeId::parse("spiffe://dev.internal/ns/default/sa-1.x_Y").unwrap();
        assert_eq!(id.trust_domain, "dev.internal");
        assert_eq!(id.path, "/ns/default/sa-1.x_Y");
        assert_eq!(SpiffeId::parse("spiffe://td").unwrap().path, "");
        assert!(SpiffeId::parse("spiffe://td/node/1").unwrap().is_reserved());
        assert!(SpiffeId::parse("spiffe://td/admin").unwrap().is_reserved());
        assert!(!SpiffeId::parse("spiffe://td/nodes/1")
            .unwrap()
            .is_reserved());
        assert!(!SpiffeId::parse("spiffe://td/ns/node/1")
            .unwrap()
            .is_reserved());
    }

    #[test]
    fn patterns_that_reach_reserved_ids_are_flagged() {
        for (p, reaches) in [
            ("spiffe://td/*", true),
            ("spiffe://td/node/*", true),
            ("spiffe://td/admin/alice", true),
            ("spiffe://td/ns/payments/*", false),
            ("spiffe://td/people/alice", false),
        ] {
            assert_eq!(check_pattern(p).unwrap().1, reaches, "{p}");
        }
        assert!(check_pattern("spiffe://td/ns/%2e/*").is_err());
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,8}".prop_filter("not a dot segment", |s| s != "." && s != "..")
    }

    proptest! {
        /// Every ID built from the grammar parses, with its parts intact.
        #[test]
        fn ids_from_the_grammar_parse(
            td in "[a-z0-9._-]{1,20}",
            segs in proptest::collection::vec(segment(), 0..6),
        ) {
            let path: String = segs.iter().map(|s| format!("/{s}")).collect();
            let s = format!("spiffe://{td}{path}");
            let id = SpiffeId::parse(&s).unwrap();
            prop_assert_eq!(id.trust_domain, td.as_str());
            prop_assert_eq!(id.path, path.as_str());
        }

        /// Putting any character outside the grammar into a valid ID's
        /// path makes it invalid.
        #[test]
        fn a_character_outside_the_grammar_is_refused(
            segs in proptest::collection::vec(segment(), 1..4),
            at in 0usize..4,
            c in any::<char>().prop_filter("outside the path set", |c| !path_char(*c) && *c != '/'),
        ) {
            let mut segs = segs;
            let i = at % segs.len();
            segs[i].push(c);
            let path: String = segs.iter().map(|s| format!("/{s}")).collect();
            let s = format!("spiffe://td{path}");
            prop_assert_eq!(SpiffeId::parse(&s), Err(SpiffeIdError::PathChar(c)));
        }

        /// Arbitrary strings never panic the parser, and whatever it
        /// accepts re-checks by the grammar's character sets.
        #[test]
        fn arbitrary_input_is_parsed_or_refused(s in "spiffe://\\PC{0,40}") {
            if let Ok(id) = SpiffeId::parse(&s) {
                prop_assert!(id.trust_domain.chars().all(td_char));
                prop_assert!(id.path.chars().all(|c| c == '/' || path_char(c)));
                prop_assert!(!id.path.ends_with('/'));
            }
        }
    }
}
