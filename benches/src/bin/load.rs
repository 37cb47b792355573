//! Load against a running cluster, such as the one `quorumca dev` starts:
//! Issue, Revoke, GetCrl or OCSP from N concurrent closed-loop clients for
//! a fixed time, with HdrHistogram percentiles, a progress bar, and a table
//! or JSON at the end.
//!
//! It talks to the cluster the way users do: gRPC over mTLS with the
//! credential bundle (`QUORUMCA_ENDPOINTS` and `QUORUMCA_CREDENTIALS`, as
//! `dev-data/env` exports them), clients spread over every endpoint; OCSP
//! by HTTP POST to the URL in the certificates' AIA extension, as relying
//! parties do. Revoke and OCSP first issue the certificates they need
//! (not measured). Every run stops by itself at `--duration` or
//! `--max-ops`, whichever comes first.
//!
//! ```sh
//! cargo run --release -- dev &            # then, in another shell:
//! . dev-data/env
//! cargo run --release -p quorumca-benches --bin load -- issue
//! cargo run --release -p quorumca-benches --bin load -- revoke --concurrency 16 --output json
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use der::Decode;
use quorumca_benches::{http_agents, run_closed_loop, table, Budget, LevelResult};
use quorumca_proto as pb;
use quorumca_proto::authority_service_client::AuthorityServiceClient;
use quorumca_proto::certificate_service_client::CertificateServiceClient;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "Issue, Revoke, GetCrl or OCSP load against a running QuorumCA cluster")]
struct Args {
    /// What every client sends, in a closed loop.
    #[arg(value_enum)]
    op: Op,
    /// The cluster, as every `quorumca` command takes it; the credentials
    /// must allow issuing and revoking in `--namespace`.
    #[command(flatten)]
    target: quorumca_cli::client::Target,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Stop after this many operations even if time is left. Revoke is also
    /// bounded by the certificates prepared for it.
    #[arg(long, default_value_t = 1_000_000)]
    max_ops: u64,
    /// Certificates issued before a `revoke` run (each is revoked once).
    #[arg(long, default_value_t = 20_000)]
    prepare: usize,
    /// Namespace to issue in (the dev cluster's policy allows `default`).
    #[arg(long, default_value = "default")]
    namespace: String,
    /// DNS names are `svc<N>.<suffix>`; must be allowed in the namespace.
    #[arg(long, default_value = "default.svc.dev.internal")]
    dns_suffix: String,
    /// Profile to issue under (the dev cluster's policy has `service`).
    #[arg(long, default_value = "service")]
    profile: String,
    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Clone, Copy, Debug, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    /// Issue a certificate from a fresh ECDSA P-256 CSR (64 CSRs rotate).
    Issue,
    /// Revoke certificates issued beforehand, one each.
    Revoke,
    /// Fetch the full CRL of an issuer (gRPC GetCrl).
    Crl,
    /// Ask the OCSP responder (HTTP POST) about certificates issued
    /// beforehand.
    Ocsp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// One prepared certificate: what Revoke and OCSP need of it.
struct Issued {
    issuer: String,
    serial: String,
    cert_der: Vec<u8>,
    issuer_der: Vec<u8>,
}

fn csrs(suffix: &str, n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    (0..n)
        .map(|i| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let p = rcgen::CertificateParams::new(vec![format!("svc{i}.{suffix}")])?;
            Ok(p.serialize_request(&key)?.der().to_vec())
        })
        .collect()
}

fn issue_request(args: &Args, csr: Vec<u8>) -> pb::IssueRequest {
    pb::IssueRequest {
        csr,
        namespace: args.namespace.clone(),
        profile: args.profile.clone(),
        ..Default::default()
    }
}

fn pem_blocks(pem: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for block in pem.split("-----END CERTIFICATE-----") {
        let Some(start) = block.find("-----BEGIN CERTIFICATE-----") else {
            continue;
        };
        let full = format!("{}-----END CERTIFICATE-----\n", &block[start..]);
        let (_, der) = der::pem::decode_vec(full.as_bytes())
            .map_err(|e| anyhow::anyhow!("PEM from the cluster: {e}"))?;
        out.push(der);
    }
    Ok(out)
}

/// Issues `n` certificates over the channels, with a progress bar.
async fn prepare(args: &Args, channels: &[Channel], n: usize) -> anyhow::Result<Vec<Issued>> {
    let bar = progress(n as u64, "issuing certificates to work on");
    let csrs = Arc::new(csrs(&args.dns_suffix, 64)?);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..args.concurrency.min(n).max(1) {
        let (csrs, next, bar) = (csrs.clone(), next.clone(), bar.clone());
        let mut c = CertificateServiceClient::new(channels[w % channels.len()].clone());
        let base = issue_request(args, Vec::new());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(mine);
                }
                let mut req = base.clone();
                req.csr = csrs[i % csrs.len()].clone();
                let r = c
                    .issue(req)
                    .await
                    .map_err(|s| anyhow::anyhow!("Issue: {}: {}", s.code(), s.message()))?
                    .into_inner();
                let chain = pem_blocks(&r.chain_pem)?;
                if chain.len() < 2 {
                    bail!("Issue answered a chain of {} certificates", chain.len());
                }
                mine.push(Issued {
                    issuer: r.issuer,
                    serial: r.serial,
                    cert_der: chain[0].clone(),
                    issuer_der: chain[1].clone(),
                });
                bar.inc(1);
            }
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.extend(t.await??);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec})")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// The first OCSP URL of a certificate's Authority Information Access.
fn ocsp_url(cert_der: &[u8]) -> anyhow::Result<String> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
    const AIA: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1");
    const OCSP: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
    let cert = x509_cert::Certificate::from_der(cert_der)?;
    let ext = cert
        .tbs_certificate
        .extensions
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.extn_id == AIA)
        .context("the certificate has no Authority Information Access")?;
    let aia = AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes())?;
    aia.0
        .into_iter()
        .find_map(|ad| match (ad.access_method == OCSP, ad.access_location) {
            (true, GeneralName::UniformResourceIdentifier(u)) => Some(u.to_string()),
            _ => None,
        })
        .context("the certificate names no OCSP responder")
}

/// An OCSP request (SHA-256 CertID, unsigned) for one certificate.
fn ocsp_request(c: &Issued) -> anyhow::Result<Vec<u8>> {
    Ok(quorumca_ca::ocsp_request_for(&c.cert_der, &c.issuer_der)?)
}

/// A successful OCSP answer: status successful with a basic response.
fn ocsp_ok(body: &[u8]) -> bool {
    x509_ocsp::OcspResponse::from_der(body).is_ok_and(|r| {
        r.response_status == x509_ocsp::OcspResponseStatus::Successful && r.response_bytes.is_some()
    })
}

/// The result, and the first failure if any operation failed.
async fn run(
    args: &Args,
    channels: Arc<Vec<Channel>>,
) -> anyhow::Result<(LevelResult, Option<String>)> {
    let budget = |max: u64| Budget {
        duration: Duration::from_secs(args.duration),
        max_ops: max.min(args.max_ops),
    };
    let bar = progress(
        budget(u64::MAX).max_ops,
        &format!("{:?} x{}", args.op, args.concurrency),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg}: {pos} ok ({per_sec}), {elapsed} elapsed")
            .expect("template"),
    );
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                bar.tick();
            }
        })
    };
    // The first failure is kept and printed: a run that only fails should
    // say why, not just report a count.
    let first_error: Arc<std::sync::OnceLock<String>> = Arc::default();
    let counted = {
        let first_error = first_error.clone();
        move |r: Result<(), String>, bar: &indicatif::ProgressBar| match r {
            Ok(()) => {
                bar.inc(1);
                true
            }
            Err(e) => {
                let _ = first_error.set(e);
                false
            }
        }
    };
    let result = match args.op {
        Op::Issue => {
            let csrs = Arc::new(csrs(&args.dns_suffix, 64)?);
            let base = issue_request(args, Vec::new());
            let bar = bar.clone();
            let op = Arc::new(move |w: usize, n: u64| {
                let mut c = CertificateServiceClient::new(channels[w % channels.len()].clone());
                let mut req = base.clone();
                req.csr = csrs[n as usize % csrs.len()].clone();
                let (bar, counted) = (bar.clone(), counted.clone());
                async move { counted(c.issue(req).await.map(drop).map_err(status), &bar) }
            });
            run_closed_loop(args.concurrency, budget(u64::MAX), op).await
        }
        Op::Revoke => {
            let issued = Arc::new(prepare(args, &channels, args.prepare).await?);
            let bar = bar.clone();
            let n_issued = issued.len() as u64;
            let op = Arc::new(move |w: usize, n: u64| {
                let mut c = CertificateServiceClient::new(channels[w % channels.len()].clone());
                let it = &issued[n as usize];
                let req = pb::RevokeRequest {
                    issuer: it.issuer.clone(),
                    serial: it.serial.clone(),
                    ..Default::default()
                };
                let (bar, counted) = (bar.clone(), counted.clone());
                async move { counted(c.revoke(req).await.map(drop).map_err(status), &bar) }
            });
            run_closed_loop(args.concurrency, budget(n_issued), op).await
        }
        Op::Crl => {
            let issued = prepare(args, &channels, 1).await?;
            let issuer = issued[0].issuer.clone();
            let bar = bar.clone();
            let op = Arc::new(move |w: usize, _n: u64| {
                let mut c = AuthorityServiceClient::new(channels[w % channels.len()].clone());
                let req = pb::GetCrlRequest {
                    issuer: issuer.clone(),
                    shard: 0,
                    delta: false,
                };
                let (bar, counted) = (bar.clone(), counted.clone());
                async move {
                    let r = match c.get_crl(req).await {
                        Ok(r) if r.get_ref().crl.is_empty() => Err("an empty CRL".into()),
                        Ok(_) => Ok(()),
                        Err(s) => Err(status(s)),
                    };
                    counted(r, &bar)
                }
            });
            run_closed_loop(args.concurrency, budget(u64::MAX), op).await
        }
        Op::Ocsp => {
            let issued = prepare(args, &channels, 64).await?;
            // Each certificate goes to the responder its AIA names (one per
            // issuing region).
            let requests: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
                issued
                    .iter()
                    .map(|c| Ok((ocsp_url(&c.cert_der)?, ocsp_request(c)?)))
                    .collect::<anyhow::Result<_>>()?,
            );
            // Fail on a setup problem instead of reporting 0/s.
            for (url, req) in requests.iter() {
                let probe = ureq::post(url)
                    .set("Content-Type", "application/ocsp-request")
                    .send_bytes(req)
                    .map_err(|e| anyhow::anyhow!("OCSP POST to {url}: {e}"))?;
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut probe.into_reader(), &mut body)?;
                if !ocsp_ok(&body) {
                    bail!("the OCSP responder at {url} did not answer successfully");
                }
            }
            let agents = Arc::new(http_agents(args.concurrency));
            let bar = bar.clone();
            let op = Arc::new(move |w: usize, n: u64| {
                let (agents, requests, bar, counted) = (
                    agents.clone(),
                    requests.clone(),
                    bar.clone(),
                    counted.clone(),
                );
                async move {
                    let r = tokio::task::spawn_blocking(move || {
                        let (url, req) = &requests[n as usize % requests.len()];
                        let r = agents[w]
                            .post(url)
                            .set("Content-Type", "application/ocsp-request")
                            .send_bytes(req)
                            .map_err(|e| format!("OCSP POST: {e}"))?;
                        let mut body = Vec::new();
                        std::io::Read::read_to_end(&mut r.into_reader(), &mut body)
                            .map_err(|e| format!("OCSP body: {e}"))?;
                        if ocsp_ok(&body) {
                            Ok(())
                        } else {
                            Err("an unsuccessful OCSP response".to_string())
                        }
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                    counted(r, &bar)
                }
            });
            run_closed_loop(args.concurrency, budget(u64::MAX), op).await
        }
    };
    ticker.abort();
    bar.finish_and_clear();
    Ok((result, first_error.get().cloned()))
}

fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.duration == 0 {
        bail!("--concurrency and --duration must be at least 1");
    }
    let creds = quorumca_cli::client::credentials(args.target.credentials.as_deref())?;
    // One channel per endpoint: the load is spread over all of them.
    let mut channels = Vec::new();
    for e in &args.target.endpoints {
        channels.push(
            quorumca_client::endpoint_for(e, creds.as_ref())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {e}"))?,
        );
    }
    let (r, first_error) = run(&args, Arc::new(channels)).await?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "op": args.op,
                "endpoints": args.target.endpoints,
                "result": r,
                "first_error": first_error,
            }))?
        ),
        Output::Table => println!(
            "{}",
            table(
                &[
                    "OP", "CLIENTS", "SECONDS", "OK", "ERRORS", "OPS/S", "P50 MS", "P99 MS",
                    "MAX MS"
                ],
                &[vec![
                    format!("{:?}", args.op).to_lowercase(),
                    r.concurrency.to_string(),
                    format!("{:.1}", r.seconds),
                    r.ok.to_string(),
                    r.errors.to_string(),
                    format!("{:.0}", r.per_second),
                    format!("{:.2}", r.p50_ms),
                    format!("{:.2}", r.p99_ms),
                    format!("{:.2}", r.max_ms),
                ]]
            )
        ),
    }
    if let Some(e) = &first_error {
        eprintln!("{} operations failed; the first: {e}", r.errors);
    }
    if r.ok == 0 {
        bail!("no operation succeeded");
    }
    Ok(())
}
