//! The names digest: which names a certificate carries, as 32 bytes the
//! ledger keeps in each issuance record so a renewal can prove it asks for
//! exactly the names of the certificate it renews.
//!
//! The digest is replicated state, so its input must never change under
//! us: a canonical, versioned encoding of our own, never `Debug` output
//! (which no Rust release promises to keep). Version 1:
//!
//! ```text
//! "quorumca names v1" 0x00
//! for each of DNS names, IP addresses, URIs, in that order:
//!     count (u32, big endian)
//!     for each: length (u32, big endian) || bytes
//! ```
//!
//! DNS names and URIs are their UTF-8 bytes as decided (already
//! normalised by policy), IP addresses their 4 or 16 octets. Counts and
//! lengths make the encoding injective: no two different name lists share
//! an input.
//!
//! Records written before version 1 hold [`legacy_names_digest`], the
//! SHA-256 of `format!("{:?}|{:?}|{:?}", dns, ips, uris)`, reimplemented
//! here byte for byte so it no longer depends on `Debug` either. A renewal
//! accepts a match with either; once every certificate issued before
//! version 1 has expired (the longest profile lifetime after the upgrade),
//! the legacy form can go.

use std::net::IpAddr;

const V1_TAG: &[u8] = b"quorumca names v1\0";

/// The version 1 digest of a certificate's names.
pub fn names_digest(dns: &[String], ips: &[IpAddr], uris: &[String]) -> [u8; 32] {
    let mut input = Vec::with_capacity(
        V1_TAG.len()
            + 12
            + dns.iter().chain(uris).map(|n| n.len() + 4).sum::<usize>()
            + ips.len() * 20,
    );
    input.extend_from_slice(V1_TAG);
    let mut list = |items: &mut dyn Iterator<Item = Vec<u8>>, count: usize| {
        input.extend_from_slice(&(count as u32).to_be_bytes());
        for bytes in items {
            input.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            input.extend_from_slice(&bytes);
        }
    };
    list(&mut dns.iter().map(|n| n.as_bytes().to_vec()), dns.len());
    list(
        &mut ips.iter().map(|ip| match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }),
        ips.len(),
    );
    list(&mut uris.iter().map(|n| n.as_bytes().to_vec()), uris.len());
    sha256(&input)
}

/// The digest records held before version 1: SHA-256 of the names as
/// `Debug` printed them in the Rust releases that wrote those records
/// (`["a", "b"]|[127.0.0.1]|["spiffe://…"]`), with `Debug`'s quoting of
/// strings written out. Policy only ever decided printable-ASCII names
/// (DNS names, IP addresses, SPIFFE IDs), where `Debug` escapes exactly
/// `"` and `\`.
pub fn legacy_names_digest(dns: &[String], ips: &[IpAddr], uris: &[String]) -> [u8; 32] {
    let quote = |s: &String| {
        let mut q = String::with_capacity(s.len() + 2);
        q.push('"');
        for c in s.chars() {
            match c {
                '"' => q.push_str("\\\""),
                '\\' => q.push_str("\\\\"),
                ' '..='~' => q.push(c),
                // Never decided by policy; the nearest form `Debug` had.
                _ => q.extend(c.escape_debug()),
            }
        }
        q.push('"');
        q
    };
    let strings = |v: &[String]| {
        let items: Vec<String> = v.iter().map(quote).collect();
        format!("[{}]", items.join(", "))
    };
    let ips: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
    let text = format!("{}|[{}]|{}", strings(dns), ips.join(", "), strings(uris));
    sha256(text.as_bytes())
}

/// Whether `recorded` is the digest of these names, in either encoding.
pub fn names_match(recorded: &[u8; 32], dns: &[String], ips: &[IpAddr], uris: &[String]) -> bool {
    *recorded == names_digest(dns, ips, uris) || *recorded == legacy_names_digest(dns, ips, uris)
}

fn sha256(input: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, input)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn version_1_is_pinned() {
        // A changed encoding would make every recorded digest unrenewable:
        // these bytes are the contract (computed from the module's spec
        // independently, with Python's hashlib and struct).
        let d = names_digest(
            &s(&["a.payments.svc.cluster.local"]),
            &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            &s(&["spiffe://dev.internal/ns/payments/sa/a"]),
        );
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "4daa6b17ae0ab55249366ce641f91d0418a9eab6581d391caf4428cdbe2fe209"
        );
    }

    #[test]
    fn legacy_is_what_debug_printed() {
        let dns = s(&["a.example", "b.example"]);
        let ips: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "fe80::1".parse().unwrap()];
        let uris = s(&["spiffe://td/x"]);
        let debug = format!("{dns:?}|{ips:?}|{uris:?}");
        assert_eq!(
            legacy_names_digest(&dns, &ips, &uris),
            sha256(debug.as_bytes())
        );
        assert_eq!(
            legacy_names_digest(&[], &[], &[]),
            sha256(b"[]|[]|[]"),
            "empty lists"
        );
    }

    proptest! {
        #[test]
        fn the_legacy_form_matches_debug_for_any_names(
            dns in proptest::collection::vec("[ -~]{0,12}", 0..4),
            uris in proptest::collection::vec("[ -~]{0,12}", 0..3),
            v4 in proptest::collection::vec(any::<[u8; 4]>(), 0..3),
            v6 in proptest::collection::vec(any::<[u8; 16]>(), 0..2),
        ) {
            let ips: Vec<IpAddr> = v4.into_iter().map(IpAddr::from).chain(v6.into_iter().map(IpAddr::from)).collect();
            let debug = format!("{dns:?}|{ips:?}|{uris:?}");
            prop_assert_eq!(legacy_names_digest(&dns, &ips, &uris), sha256(debug.as_bytes()));
            // Both a new record and one written before version 1 renew.
            prop_assert!(names_match(&names_digest(&dns, &ips, &uris), &dns, &ips, &uris));
            prop_assert!(names_match(&sha256(debug.as_bytes()), &dns, &ips, &uris));
            prop_assert!(!names_match(&sha256(b"other"), &dns, &ips, &uris));
        }

        #[test]
        fn different_lists_never_share_an_input(
            a in proptest::collection::vec("[a,.]{0,4}", 0..4),
            b in proptest::collection::vec("[a,.]{0,4}", 0..4),
        ) {
            // Moving a name between lists, or splitting one, changes the digest.
            prop_assume!(a != b);
            prop_assert_ne!(names_digest(&a, &[], &[]), names_digest(&b, &[], &[]));
            prop_assert_ne!(names_digest(&a, &[], &b), names_digest(&b, &[], &a));
        }
    }
}
