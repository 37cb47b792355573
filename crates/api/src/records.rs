//! Reading what the cluster recorded, for callers: one certificate (live in
//! the ledger, or archived on this node after it expired), pages of the
//! ledger's records, and pages of the audit log (the ledger's recent part,
//! with older entries from this node's archive).
//!
//! Reads go through the leader (read index), so a record this node has not
//! applied yet still counts; roles are checked here, against the namespace
//! of what is read. Policy versions are read here too.

use quorumca_ca::Action;
use quorumca_ledger::{AuditEntry, IssuanceRecord, Revocation, Serial};

use crate::auth::Caller;
use crate::authority::Authority;
use crate::error::AuthorityError;

/// Most records a listing examines per call, so a filter that matches
/// little cannot make one request scan the whole ledger.
const LIST_SCAN_LIMIT: usize = 20_000;

/// Largest page of certificates or audit entries one call returns.
pub const MAX_PAGE: usize = 1000;

/// A recorded certificate and whether (and how) it was revoked.
#[derive(Clone, Debug)]
pub struct CertificateView {
    /// What the ledger recorded at issuance.
    pub record: IssuanceRecord,
    /// Its revocation, if revoked.
    pub revocation: Option<Revocation>,
    /// Read from this node's archive: expired and pruned from the ledger.
    pub archived: bool,
}

/// Which records a listing returns; empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct CertificateFilter {
    /// Only this namespace's certificates, if set.
    pub namespace: String,
    /// Only this issuer's, if set.
    pub issuer: String,
    /// Only those this identity asked for, if set.
    pub actor: String,
    /// Only revoked ones.
    pub revoked_only: bool,
}

/// One page of a listing; `next` is where the following page starts.
#[derive(Clone, Debug)]
pub struct CertificatePage {
    /// The certificates, in (issuer, serial) order.
    pub certificates: Vec<CertificateView>,
    /// Where the next page starts; None on the last page.
    pub next: Option<(String, Serial)>,
}

/// One page of the audit log, with the chain's current head.
#[derive(Clone, Debug)]
pub struct AuditPage {
    /// The entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// The hash of the chain's latest entry: compare it across nodes.
    pub chain_head: [u8; 32],
    /// How many entries the chain holds.
    pub chain_length: u64,
    /// As many entries as were asked for: there may be more.
    pub full: bool,
}

fn page_size(asked: u32, what: &str) -> Result<usize, AuthorityError> {
    match asked as usize {
        0 => Ok(100),
        n if n > MAX_PAGE => Err(AuthorityError::InvalidArgument(format!(
            "{what} is at most {MAX_PAGE}, got {n}"
        ))),
        n => Ok(n),
    }
}

impl Authority {
    /// The namespace of a recorded certificate, read through the leader.
    pub(crate) async fn namespace_of(
        &self,
        issuer: &str,
        serial: &[u8],
    ) -> Result<Option<String>, AuthorityError> {
        let (issuer, serial) = (issuer.to_string(), Serial(serial.to_vec()));
        Ok(self
            .node
            .read_linearizable(move |s| s.record(&issuer, &serial).map(|r| r.namespace.clone()))
            .await?)
    }

    /// A recorded policy version (0: the current one).
    pub async fn policy_version(
        &self,
        want: u64,
    ) -> Result<quorumca_ledger::PolicyVersion, AuthorityError> {
        let found = self
            .node
            .read_linearizable(move |s| {
                if want == 0 {
                    s.policy().cloned()
                } else {
                    s.policy_history()
                        .iter()
                        .find(|v| v.version == want)
                        .cloned()
                }
            })
            .await?;
        match found {
            Some(v) => Ok(v),
            None if want == 0 => Err(AuthorityError::NoPolicy),
            None => Err(AuthorityError::UnknownPolicyVersion(want)),
        }
    }

    /// One certificate, if `caller` may read its namespace. A certificate
    /// the ledger no longer holds is looked up in this node's archive; one
    /// neither knows is NOT_FOUND, to callers allowed to read every
    /// namespace (others learn nothing about which serials exist).
    pub async fn certificate(
        &self,
        caller: &Caller,
        issuer: &str,
        serial: &Serial,
    ) -> Result<CertificateView, AuthorityError> {
        let allow = |namespace: Option<&str>| {
            self.authorize(caller, Action::ReadCertificates { namespace })
        };
        let live = self
            .node
            .read_linearizable({
                let (issuer, serial) = (issuer.to_string(), serial.clone());
                move |s| {
                    s.record(&issuer, &serial).map(|rec| CertificateView {
                        record: rec.clone(),
                        revocation: s.revocation(&issuer, &serial).cloned(),
                        archived: false,
                    })
                }
            })
            .await?;
        if let Some(view) = live {
            allow(Some(&view.record.namespace))?;
            return Ok(view);
        }
        match self.node.archive().get(issuer, serial) {
            Ok(Some(a)) => {
                allow(Some(&a.record.namespace))?;
                Ok(CertificateView {
                    record: a.record,
                    revocation: a.revocation,
                    archived: true,
                })
            }
            Ok(None) => {
                allow(None)?;
                Err(AuthorityError::UnknownCertificate {
                    issuer: issuer.into(),
                    serial: hex::encode(&serial.0),
                })
            }
            Err(e) => Err(AuthorityError::Internal(format!(
                "reading the certificate archive: {e}"
            ))),
        }
    }

    /// A page of recorded certificates after `after` (in ledger order),
    /// if `caller` may read the filter's namespace (every namespace when
    /// the filter names none). `page_size` 0 means 100.
    pub async fn list_certificates(
        &self,
        caller: &Caller,
        filter: CertificateFilter,
        after: Option<(String, Serial)>,
        page_size_asked: u32,
    ) -> Result<CertificatePage, AuthorityError> {
        if !filter.namespace.is_empty() {
            quorumca_ca::check_name("namespace", &filter.namespace)?;
        }
        self.authorize(
            caller,
            Action::ReadCertificates {
                namespace: (!filter.namespace.is_empty()).then_some(filter.namespace.as_str()),
            },
        )?;
        let page = page_size(page_size_asked, "page_size")?;
        Ok(self
            .node
            .read_linearizable(move |s| {
                let f = &filter;
                let mut out = Vec::new();
                let mut last = None;
                let mut more = false;
                let after = after.as_ref().map(|(i, s)| (i.as_str(), s));
                for (scanned, rec) in s.records_after(after).enumerate() {
                    if out.len() == page || scanned == LIST_SCAN_LIMIT {
                        more = true;
                        break;
                    }
                    last = Some((rec.issuer.clone(), rec.serial.clone()));
                    let rev = s.revocation(&rec.issuer, &rec.serial);
                    let keep = (f.namespace.is_empty() || rec.namespace == f.namespace)
                        && (f.issuer.is_empty() || rec.issuer == f.issuer)
                        && (f.actor.is_empty() || rec.actor == f.actor)
                        && (!f.revoked_only || rev.is_some());
                    if keep {
                        out.push(CertificateView {
                            record: rec.clone(),
                            revocation: rev.cloned(),
                            archived: false,
                        });
                    }
                }
                CertificatePage {
                    certificates: out,
                    next: if more { last } else { None },
                }
            })
            .await?)
    }

    /// Up to `limit` audit entries after sequence number `after_seq`
    /// (0 means 100), optionally only `actor`'s and only refusals.
    /// Entries older than the oldest the ledger holds were evicted into
    /// this node's archive: that part of the page comes from there.
    pub async fn audit_page(
        &self,
        after_seq: u64,
        limit: u32,
        actor: String,
        denied_only: bool,
    ) -> Result<AuditPage, AuthorityError> {
        let limit = page_size(limit, "limit")?;
        let keep = move |e: &AuditEntry| {
            (actor.is_empty() || e.actor == actor) && (!denied_only || e.denied)
        };
        let (ledger_entries, chain_head, chain_length, oldest) = self
            .node
            .read_linearizable({
                let keep = keep.clone();
                move |s| {
                    (
                        s.audit_entries(after_seq, limit, keep),
                        s.audit_head(),
                        s.audit_len(),
                        s.oldest_audit_seq(),
                    )
                }
            })
            .await?;
        let mut entries = Vec::new();
        if let Some(oldest) = oldest.filter(|o| after_seq.saturating_add(1) < *o) {
            let archived = self
                .node
                .archive()
                .audit_after(after_seq, limit, &keep)
                .map_err(|e| AuthorityError::Internal(format!("reading the audit archive: {e}")))?;
            entries.extend(archived.into_iter().filter(|e| e.seq < oldest));
        }
        entries.extend(ledger_entries);
        entries.truncate(limit);
        Ok(AuditPage {
            full: entries.len() == limit,
            entries,
            chain_head,
            chain_length,
        })
    }
}
