//! Authorities on an in-process cluster, for tests and benchmarks: the same
//! wiring every time, in one place.

use std::sync::Arc;
use std::time::Duration;

use quorumca_api::{Authority, AuthorityConfig, AuthorityError};
use quorumca_ca::Kek;

use crate::cluster::TestCluster;

/// Unseal secret of test clusters.
pub const TEST_SECRET: &[u8] = b"test unseal secret, 32 bytes ok!";

/// A permissive policy: namespace `payments` may get `*.payments.svc.cluster.local`
/// and SPIFFE IDs under `ns/payments`, through profile `web` (24 h).
pub const TEST_POLICY: &str = r#"
[profiles.web]
key_algorithms = ["ecdsa-p256", "ed25519"]
default_lifetime = "24h"
max_lifetime = "72h"
usages = ["server", "client"]

[namespaces.payments]
profiles = ["web"]
dns = ["*.payments.svc.cluster.local"]
uris = ["spiffe://example.org/ns/payments/*"]
"#;

/// A KEK for tests: few KDF iterations keep them fast; production uses
/// [`quorumca_ca::DEFAULT_KDF_ITERATIONS`].
pub fn test_kek(secret: &[u8]) -> Kek {
    Kek::derive(secret, b"quorumca-test", 1_000).expect("test secret is long enough")
}

/// Node 3 signs for region `us`, the others for `eu`.
pub fn test_region(node_id: u64) -> &'static str {
    if node_id == 3 {
        "us"
    } else {
        "eu"
    }
}

/// An authority configuration for in-process nodes: small leases and few CRL shards, so tests reach
/// their edges quickly.
pub fn test_config(node_id: u64) -> AuthorityConfig {
    // One public URL for the whole cluster: CRL and OCSP URLs are fixed at
    // issuance and served by any node.
    AuthorityConfig {
        crl_shards: 4,
        lease_block: 256,
        lease_ttl: Duration::from_secs(600),
        ..AuthorityConfig::new(test_region(node_id), "http://ca.quorumca.test")
    }
}

/// Takes every node out of `c`, wraps each in an Authority, creates the
/// hierarchy (`eu`, `us`) and applies [`TEST_POLICY`].
pub async fn authorities(c: &mut TestCluster) -> Result<Vec<Arc<Authority>>, AuthorityError> {
    let mut out = Vec::new();
    for (i, slot) in c.nodes.iter_mut().enumerate() {
        let node = Arc::new(slot.take().expect("node is running"));
        out.push(Arc::new(Authority::new(
            node,
            Some(test_kek(TEST_SECRET)),
            test_config(i as u64 + 1),
        )));
    }
    out[0]
        .bootstrap_hierarchy(&["eu".into(), "us".into()])
        .await?;
    out[0].apply_policy(TEST_POLICY, "test", Some(0)).await?;
    Ok(out)
}

/// A fresh ECDSA P-256 CSR for one DNS name.
pub fn test_csr(dns_name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let params = rcgen::CertificateParams::new(vec![dns_name.to_string()]).expect("name");
    params.serialize_request(&key).expect("csr").der().to_vec()
}
