//! The keys of the state's indexes. Certificates are keyed by issuer and
//! serial in every index an issuance inserts into, so the key's size and
//! comparison cost are what a 3-node cluster's apply spends most on.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::command::Serial;

/// Revocations are few and keyed as commands name a certificate.
pub(super) type RevKey = (String, Serial);

/// A certificate's key in the indexes every issuance inserts into on every
/// node (records, expiry, public key). `(String, Serial)` cost two heap
/// allocations per entry and two pointer chases per comparison, and the
/// comparisons of a descent missed the cache (`memcmp` was a third of a
/// 3-node cluster's ledger apply). Here the issuer is one shared
/// allocation per issuer, which stays in cache, and the serial is inline.
/// It orders exactly as `(String, Serial)` does, so listings, pruning and
/// snapshots keep their order.
#[derive(Clone, Debug)]
pub(super) struct CertKey {
    pub(super) issuer: Arc<str>,
    pub(super) serial: SerialKey,
}

impl Ord for CertKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let issuer = if Arc::ptr_eq(&self.issuer, &other.issuer) {
            Ordering::Equal
        } else {
            self.issuer.cmp(&other.issuer)
        };
        issuer.then_with(|| self.serial.cmp(&other.serial))
    }
}

impl PartialOrd for CertKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for CertKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for CertKey {}

impl CertKey {
    pub(super) fn rev_key(&self) -> RevKey {
        (self.issuer.to_string(), self.serial.to_serial())
    }
}

/// A serial of at most 20 octets (RFC 5280 4.1.2.2; longer ones are never
/// recorded), inline. Zero-padded octets then the length: the same order
/// as the octet strings themselves (a shorter serial that is a prefix of a
/// longer one pads with zeros, so it sorts first, as a prefix does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SerialKey {
    octets: [u8; 20],
    len: u8,
}

impl SerialKey {
    /// None for a serial longer than 20 octets.
    pub(super) fn new(serial: &[u8]) -> Option<Self> {
        let mut octets = [0; 20];
        octets.get_mut(..serial.len())?.copy_from_slice(serial);
        Some(Self {
            octets,
            len: serial.len() as u8,
        })
    }

    pub(super) fn to_serial(self) -> Serial {
        Serial(self.octets[..usize::from(self.len)].to_vec())
    }
}

/// The shared issuer names of [`CertKey`]s. A cache, not agreed state: it
/// is rebuilt from the records on load and may hold names no record uses
/// any more, so two states are equal whatever it holds.
#[derive(Clone, Default)]
pub(super) struct IssuerNames(BTreeSet<Arc<str>>);

impl IssuerNames {
    pub(super) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(shared.clone());
        shared
    }

    pub(super) fn get(&self, name: &str) -> Option<&Arc<str>> {
        self.0.get(name)
    }
}

impl PartialEq for IssuerNames {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for IssuerNames {}

impl std::fmt::Debug for IssuerNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(names: &mut IssuerNames, issuer: &str, serial: &[u8]) -> CertKey {
        CertKey {
            issuer: names.intern(issuer),
            serial: SerialKey::new(serial).unwrap(),
        }
    }

    proptest! {
        /// The inline key sorts and compares exactly as the (issuer, serial)
        /// pair it stands for, zero octets and prefixes included, so every
        /// ordered walk (listings, pruning, snapshots) is unchanged.
        #[test]
        fn cert_keys_order_as_issuer_then_serial(
            a in ("[a-c]{0,3}", proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..=20)),
            b in ("[a-c]{0,3}", proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..=20)),
        ) {
            let mut names = IssuerNames::default();
            let (ka, kb) = (key(&mut names, &a.0, &a.1), key(&mut names, &b.0, &b.1));
            // Unshared issuer names compare by content too.
            let kb_own = CertKey { issuer: Arc::from(b.0.as_str()), serial: kb.serial };
            let expected = (a.0.as_str(), a.1.as_slice()).cmp(&(b.0.as_str(), b.1.as_slice()));
            prop_assert_eq!(ka.cmp(&kb), expected);
            prop_assert_eq!(ka.cmp(&kb_own), expected);
            prop_assert_eq!(ka == kb, expected == Ordering::Equal);
            prop_assert_eq!(kb.serial.to_serial(), Serial(b.1.clone()));
        }
    }

    #[test]
    fn serials_over_20_octets_have_no_key() {
        assert!(SerialKey::new(&[1; 21]).is_none());
        assert!(SerialKey::new(&[1; 20]).is_some());
    }
}
