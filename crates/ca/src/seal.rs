//! CA private keys at rest: AES-256-GCM under a key-encryption key (KEK)
//! derived from an unseal secret.
//!
//! Intermediate keys are replicated through Raft only as [`SealedKey`]s; a
//! node that was not given the unseal secret holds ciphertext it cannot use
//! and says so ([`SealError::WrongSecret`]). The KEK is derived once per
//! process (PBKDF2, deliberately slow against guessing); unsealing a key for
//! a signature is one AES-GCM decryption, and the plaintext is zeroized when
//! dropped.
//!
//! Randomness (salt, nonce) is supplied by the caller: this crate draws none.

use std::num::NonZeroU32;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// PBKDF2-HMAC-SHA256 iterations (OWASP's 2023 recommendation).
pub const DEFAULT_KDF_ITERATIONS: u32 = 600_000;
/// Shortest unseal secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// The key-encryption key. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Kek {
    key: [u8; 32],
    #[zeroize(skip)]
    id: [u8; 8],
}

/// Shows the public fingerprint only, never key bytes.
impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("id", &format_args!("{:02x?}", self.id))
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// Derives the KEK from an unseal secret. `salt` is per cluster (or per
    /// root key file) and public.
    pub fn derive(secret: &[u8], salt: &[u8], iterations: u32) -> Result<Self, SealError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SealError::WeakSecret { len: secret.len() });
        }
        let iterations =
            NonZeroU32::new(iterations).ok_or(SealError::Format("zero KDF iterations".into()))?;
        let mut key = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            salt,
            secret,
            &mut key,
        );
        // A short public fingerprint, so a node with the wrong secret can be
        // told so instead of "decryption failed".
        let fp = ring::digest::digest(&ring::digest::SHA256, &key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&fp.as_ref()[..8]);
        Ok(Self { key, id })
    }

    /// The KEK's fingerprint: sealed keys name it, so a node with the wrong secret can be told so.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.key).expect("32-byte AES key"))
    }
}

/// A sealed private key as stored in the ledger or a key file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// Format version; currently 1.
    pub version: u8,
    /// Fingerprint of the KEK that sealed it.
    pub kek_id: [u8; 8],
    /// The AES-GCM nonce, random per sealing.
    pub nonce: [u8; 12],
    /// AES-256-GCM ciphertext with its tag.
    pub ciphertext: Vec<u8>,
}

impl SealedKey {
    /// Bytes of the header before the ciphertext: version, KEK id, nonce.
    const HEADER: usize = 1 + 8 + 12;

    /// The byte form the ledger and key files hold: version (1 octet), KEK
    /// id (8), nonce (12), then the ciphertext with its 16-octet tag. The
    /// format is fixed here, beside the encryption it frames, so every
    /// reader and writer of sealed keys agrees on it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER + self.ciphertext.len());
        out.push(self.version);
        out.extend_from_slice(&self.kek_id);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Reads [`SealedKey::to_bytes`]' form. Only the framing is checked
    /// here; the version and the tag are checked by [`unseal`].
    pub fn from_bytes(b: &[u8]) -> Result<Self, SealError> {
        if b.len() < Self::HEADER + 16 {
            return Err(SealError::Format(format!(
                "{} bytes is too short for a sealed key (at least {}); was it truncated?",
                b.len(),
                Self::HEADER + 16
            )));
        }
        Ok(SealedKey {
            version: b[0],
            kek_id: b[1..9].try_into().expect("8 bytes"),
            nonce: b[9..21].try_into().expect("12 bytes"),
            ciphertext: b[Self::HEADER..].to_vec(),
        })
    }
}

/// Why a key could not be sealed or unsealed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The unseal secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("the unseal secret is {len} bytes; use at least {MIN_SECRET_BYTES} random bytes")]
    WeakSecret {
        /// Its length in bytes.
        len: usize,
    },
    /// The key names another KEK than this node's.
    #[error("this key was sealed under another unseal secret (KEK {expected}, this node has {actual}); give this node the cluster's unseal secret")]
    WrongSecret {
        /// The KEK fingerprint the key was sealed under, hex.
        expected: String,
        /// This node's KEK fingerprint, hex.
        actual: String,
    },
    /// The ciphertext's tag does not verify.
    #[error("the sealed key is corrupt or was sealed for another purpose (authentication failed)")]
    Corrupt,
    /// The bytes are not a sealed key of a known version.
    #[error("sealed key format: {0}")]
    Format(String),
}

/// Encrypts `plaintext` (a PKCS#8 key) under `kek`. `nonce` must never
/// repeat for one KEK: the caller draws it from a CSPRNG. `context` (e.g.
/// the issuer id) is bound as associated data, so a sealed key cannot be
/// swapped in for another issuer's.
pub fn seal(kek: &Kek, plaintext: &[u8], nonce: [u8; 12], context: &[u8]) -> SealedKey {
    let mut buf = plaintext.to_vec();
    kek.aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut buf,
        )
        .expect("AES-GCM sealing of an in-memory buffer");
    SealedKey {
        version: 1,
        kek_id: kek.id,
        nonce,
        ciphertext: buf,
    }
}

/// Decrypts a sealed key. The result is zeroized when dropped.
pub fn unseal(
    kek: &Kek,
    sealed: &SealedKey,
    context: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.version != 1 {
        return Err(SealError::Format(format!(
            "unknown version {}",
            sealed.version
        )));
    }
    if sealed.kek_id != kek.id {
        return Err(SealError::WrongSecret {
            expected: hex(&sealed.kek_id),
            actual: hex(&kek.id),
        });
    }
    let mut buf = Zeroizing::new(sealed.ciphertext.clone());
    let len = kek
        .aead()
        .open_in_place(
            Nonce::assume_unique_for_key(sealed.nonce),
            Aad::from(context),
            &mut buf,
        )
        .map_err(|_| SealError::Corrupt)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Few iterations keep the unit tests fast; the default is used in
    // production paths.
    const IT: u32 = 1_000;

    #[test]
    fn round_trip_and_context_binding() {
        let kek = Kek::derive(b"0123456789abcdef0123", b"cluster-salt", IT).unwrap();
        let s = seal(&kek, b"pkcs8 bytes", [7; 12], b"issuer:eu-west");
        assert_ne!(s.ciphertext[..11], b"pkcs8 bytes"[..]);
        assert_eq!(
            &*unseal(&kek, &s, b"issuer:eu-west").unwrap(),
            b"pkcs8 bytes"
        );
        assert_eq!(
            unseal(&kek, &s, b"issuer:us-east").unwrap_err(),
            SealError::Corrupt
        );
    }

    #[test]
    fn wrong_secret_is_named_and_tampering_detected() {
        let kek = Kek::derive(b"0123456789abcdef0123", b"salt", IT).unwrap();
        let other = Kek::derive(b"fedcba98765432100000", b"salt", IT).unwrap();
        let s = seal(&kek, b"secret key", [1; 12], b"ctx");
        let e = unseal(&other, &s, b"ctx").unwrap_err();
        assert!(matches!(e, SealError::WrongSecret { .. }), "{e}");
        assert!(e.to_string().contains("unseal secret"));
        let mut t = s.clone();
        t.ciphertext[0] ^= 1;
        assert_eq!(unseal(&kek, &t, b"ctx").unwrap_err(), SealError::Corrupt);
        let mut v = s;
        v.version = 9;
        assert!(matches!(
            unseal(&kek, &v, b"ctx").unwrap_err(),
            SealError::Format(_)
        ));
    }

    #[test]
    fn the_byte_form_round_trips_and_refuses_truncation() {
        let kek = Kek::derive(b"0123456789abcdef0123", b"salt", 1).unwrap();
        let s = seal(&kek, b"pkcs8 bytes", [7; 12], b"eu");
        let b = s.to_bytes();
        // The layout is the ledger's: changing it strands every stored key.
        assert_eq!(b[0], 1);
        assert_eq!(&b[9..21], &[7; 12]);
        assert_eq!(b.len(), 1 + 8 + 12 + b"pkcs8 bytes".len() + 16);
        assert_eq!(SealedKey::from_bytes(&b).unwrap(), s);
        for n in [0, 1, 21, 36] {
            assert!(matches!(
                SealedKey::from_bytes(&b[..n]),
                Err(SealError::Format(_))
            ));
        }
        assert_eq!(
            unseal(&kek, &SealedKey::from_bytes(&b).unwrap(), b"eu")
                .unwrap()
                .as_slice(),
            b"pkcs8 bytes"
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            Kek::derive(b"short", b"salt", IT).err(),
            Some(SealError::WeakSecret { len: 5 })
        );
    }

    #[test]
    fn a_sealed_signing_key_still_signs_after_unsealing() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let kek = Kek::derive(b"0123456789abcdef0123", b"salt", IT).unwrap();
        let s = seal(&kek, &key.serialize_der(), [3; 12], b"int");
        let pkcs8 = unseal(&kek, &s, b"int").unwrap();
        let back = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
    }
}
