//! After healing: what each node says, asked of that node alone (its
//! ledger through its own API, the CRLs it builds, its OCSP responder).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Context};
use der::Decode;
use quorumca_chaos::{CertKey, NodeView};
use quorumca_proto as pb;
use quorumca_proto::audit_service_client::AuditServiceClient;
use quorumca_proto::authority_service_client::AuthorityServiceClient;
use quorumca_proto::certificate_service_client::CertificateServiceClient;
use tonic::transport::Channel;

use super::cluster::{api_addr, http_base, ProcCluster};
use super::workload::Held;

async fn audit(ch: &Channel) -> anyhow::Result<(String, BTreeMap<u64, String>)> {
    let mut c = AuditServiceClient::new(ch.clone());
    let mut entries = BTreeMap::new();
    let mut after = 0;
    loop {
        let r = c
            .query_audit(pb::QueryAuditRequest {
                after_seq: after,
                limit: 1000,
                ..Default::default()
            })
            .await?
            .into_inner();
        let Some(last) = r.entries.last().map(|e| e.seq) else {
            return Ok((r.chain_head, entries));
        };
        for e in r.entries {
            entries.insert(e.seq, e.chain);
        }
        after = last;
    }
}

async fn certificates(ch: &Channel) -> anyhow::Result<(BTreeSet<CertKey>, BTreeSet<CertKey>)> {
    let mut c = CertificateServiceClient::new(ch.clone());
    let (mut records, mut revoked) = (BTreeSet::new(), BTreeSet::new());
    let mut token = String::new();
    loop {
        let r = c
            .list_certificates(pb::ListCertificatesRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for cert in r.certificates {
            let key = CertKey::new(&cert.issuer, &cert.serial);
            if cert.revoked {
                revoked.insert(key.clone());
            }
            records.insert(key);
        }
        if r.next_page_token.is_empty() {
            return Ok((records, revoked));
        }
        token = r.next_page_token;
    }
}

async fn crl_serials(ch: &Channel) -> anyhow::Result<BTreeSet<CertKey>> {
    let bundle = AuthorityServiceClient::new(ch.clone())
        .get_trust_bundle(pb::GetTrustBundleRequest {})
        .await?
        .into_inner();
    let mut c = AuthorityServiceClient::new(ch.clone());
    let mut out = BTreeSet::new();
    for issuer in bundle.issuers.iter().filter(|i| i.crl_shards > 0) {
        for shard in 0..issuer.crl_shards {
            // A node that just restarted builds its CRLs anew (each takes a
            // CRL number through Raft) and answers UNAVAILABLE "not built
            // yet" until then, asking to retry in a few seconds: retry as a
            // relying party would, for a bounded time.
            let request = pb::GetCrlRequest {
                issuer: issuer.id.clone(),
                shard,
                delta: false,
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let r = loop {
                match c.get_crl(request.clone()).await {
                    Err(s)
                        if s.code() == tonic::Code::Unavailable
                            && std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    r => break r,
                }
            }
            .with_context(|| format!("CRL {} shard {shard}", issuer.id))?
            .into_inner();
            let crl = x509_cert::crl::CertificateList::from_der(&r.crl)?;
            for rc in crl.tbs_cert_list.revoked_certificates.unwrap_or_default() {
                out.insert(CertKey::new(
                    &issuer.id,
                    hex::encode(rc.serial_number.as_bytes()),
                ));
            }
        }
    }
    Ok(out)
}

/// Asks node `id`'s OCSP responder about each certificate; returns those
/// it answers "revoked" for.
async fn ocsp_revoked(id: u64, certs: Vec<(CertKey, Held)>) -> anyhow::Result<BTreeSet<CertKey>> {
    let base = http_base(id);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        let mut out = BTreeSet::new();
        for (key, held) in certs {
            let req = quorumca_ca::ocsp_request_for(&held.leaf_der, &held.issuer_der)?;
            let resp = agent
                .post(&format!("{base}/ocsp/{}", key.issuer))
                .set("Content-Type", "application/ocsp-request")
                .send_bytes(&req)
                .with_context(|| format!("OCSP POST to node {id}"))?;
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut resp.into_reader(), &mut body)?;
            if matches!(
                quorumca_ca::ocsp_answered_status(&body)?,
                quorumca_ca::OcspStatus::Revoked { .. }
            ) {
                out.insert(key);
            }
        }
        Ok(out)
    })
    .await?
}

/// One node's view. Retries until its status reads the same applied index
/// before and after the reads, so every part is of one ledger state.
pub async fn view(
    cluster: &ProcCluster,
    id: u64,
    revoked_acked: &[(CertKey, Held)],
) -> anyhow::Result<NodeView> {
    let ch = quorumca_cli::client::node_channel(&api_addr(id), Some(&cluster.admin)).await?;
    for _ in 0..10 {
        let Some(before) = cluster.status(id).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let (audit_head, audit_entries) = audit(&ch).await?;
        let (records, revoked) = certificates(&ch).await?;
        let crl_revoked = crl_serials(&ch).await?;
        let ocsp_revoked = ocsp_revoked(id, revoked_acked.to_vec()).await?;
        let Some(after) = cluster.status(id).await else {
            continue;
        };
        if after.applied_index != before.applied_index {
            continue;
        }
        return Ok(NodeView {
            node: id,
            applied_index: after.applied_index,
            ledger_hash: after.ledger_hash,
            audit_head,
            audit_entries,
            records,
            revoked,
            crl_revoked,
            ocsp_revoked,
        });
    }
    bail!("node {id} kept changing (or stopped answering) while its view was read")
}
