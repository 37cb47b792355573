use proptest::prelude::*;

use super::*;

fn register(id: &str, parent: Option<&str>) -> Proposal {
    Proposal::new(
        500,
        Command::RegisterIssuer(IssuerRecord {
            id: id.into(),
            region: parent.map(|_| id.to_string()),
            cert_der: vec![0x30, 0x00],
            sealed_key: Some(vec![1, 2, 3]),
            parent: parent.map(String::from),
            not_after_ms: 10_000_000,
            crl_shards: 4,
        }),
    )
}

/// A state with the test hierarchy: root plus intermediates "eu" and "us".
pub(crate) fn with_issuers() -> State {
    let mut s = State::default();
    for p in [
        register("root", None),
        register("eu", Some("root")),
        register("us", Some("root")),
    ] {
        assert!(matches!(
            apply(&mut s, &p),
            Outcome::IssuerRegistered { .. }
        ));
    }
    s
}

pub(crate) fn lease(node_id: u64, issuer: &str, block: u64) -> Proposal {
    Proposal::new(
        1_000,
        Command::GrantSerialLease {
            node_id,
            issuer: issuer.into(),
            block,
            expires_at_ms: 10_000,
        },
    )
}

pub(crate) fn record(
    node_id: u64,
    issuer: &str,
    sequence: u64,
    serial: &[u8],
    not_after_ms: u64,
) -> Proposal {
    Proposal::new(
        2_000,
        Command::RecordIssuance(IssuanceRecord {
            issuer: issuer.into(),
            serial: Serial(serial.to_vec()),
            sequence,
            node_id,
            not_before_ms: 1_000,
            not_after_ms,
            names_digest: [1; 32],
            spki_hash: [2; 32],
            profile: "default".into(),
            namespace: "default".into(),
            actor: "test".into(),
            full_der: None,
            der_for_replay_only: false,
        }),
    )
}

#[test]
fn leases_never_overlap() {
    let mut s = with_issuers();
    let a = apply(&mut s, &lease(1, "eu", 100));
    let b = apply(&mut s, &lease(2, "eu", 50));
    let c = apply(&mut s, &lease(1, "us", 10));
    let (Outcome::LeaseGranted(a), Outcome::LeaseGranted(b), Outcome::LeaseGranted(c)) = (a, b, c)
    else {
        panic!("expected grants");
    };
    assert_eq!((a.start, a.end), (0, 100));
    assert_eq!((b.start, b.end), (100, 150));
    assert_eq!((c.start, c.end), (0, 10), "issuers have separate spaces");
}

#[test]
fn lease_block_is_bounded() {
    let mut s = with_issuers();
    assert!(matches!(
        apply(&mut s, &lease(1, "eu", 0)),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    assert!(matches!(
        apply(&mut s, &lease(1, "eu", MAX_LEASE_BLOCK + 1)),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
}

#[test]
fn duplicate_serial_is_rejected_and_changes_nothing() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    assert!(matches!(
        apply(&mut s, &record(1, "eu", 3, &[9, 9], 50_000)),
        Outcome::IssuanceRecorded { .. }
    ));
    let before = s.record("eu", &Serial(vec![9, 9])).cloned();
    let out = apply(&mut s, &record(1, "eu", 4, &[9, 9], 60_000));
    assert!(matches!(
        out,
        Outcome::Rejected(Rejection::DuplicateSerial { .. })
    ));
    assert_eq!(s.record("eu", &Serial(vec![9, 9])).cloned(), before);
    assert_eq!(s.record_count(), 1);
}

#[test]
fn record_outside_lease_is_rejected() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    let out = apply(&mut s, &record(2, "eu", 3, &[1], 50_000));
    assert!(matches!(
        out,
        Outcome::Rejected(Rejection::SequenceNotLeased { .. })
    ));
    let out = apply(&mut s, &record(1, "eu", 10, &[1], 50_000));
    assert!(matches!(
        out,
        Outcome::Rejected(Rejection::SequenceNotLeased { .. })
    ));
    assert_eq!(s.record_count(), 0);
}

#[test]
fn revocation_needs_a_known_certificate_and_happens_once() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    let revoke = |serial: &[u8]| {
        Proposal::new(
            3_000,
            Command::Revoke {
                issuer: "eu".into(),
                serial: Serial(serial.to_vec()),
                reason: RevocationReason::KeyCompromise,
                revoked_at_ms: 3_000,
            },
        )
    };
    assert!(matches!(
        apply(&mut s, &revoke(&[5])),
        Outcome::Rejected(Rejection::UnknownCertificate { .. })
    ));
    apply(&mut s, &record(1, "eu", 0, &[5], 50_000));
    assert!(matches!(
        apply(&mut s, &revoke(&[5])),
        Outcome::Revoked { .. }
    ));
    assert!(matches!(
        apply(&mut s, &revoke(&[5])),
        Outcome::Rejected(Rejection::AlreadyRevoked { .. })
    ));
    assert_eq!(
        s.revocation("eu", &Serial(vec![5])).unwrap().reason,
        RevocationReason::KeyCompromise
    );
}

#[test]
fn crl_numbers_are_monotonic_per_issuer() {
    let mut s = with_issuers();
    let next = |s: &mut State, i: &str| match apply(
        s,
        &Proposal::new(1, Command::NextCrlNumber { issuer: i.into() }),
    ) {
        Outcome::CrlNumber { number, .. } => number,
        o => panic!("{o:?}"),
    };
    assert_eq!(next(&mut s, "eu"), 1);
    assert_eq!(next(&mut s, "eu"), 2);
    assert_eq!(next(&mut s, "us"), 1);
    assert_eq!(s.crl_number("eu"), 2);
}

#[test]
fn idempotency_key_returns_first_outcome() {
    let mut s = with_issuers();
    let p = lease(1, "eu", 10).with_idempotency_key("k1");
    let first = apply(&mut s, &p);
    let second = apply(&mut s, &p);
    assert_eq!(first, second);
    assert_eq!(s.leases_of("eu", 1).len(), 1, "retry must not grant twice");

    let other = lease(1, "eu", 20).with_idempotency_key("k1");
    assert!(matches!(
        apply(&mut s, &other),
        Outcome::Rejected(Rejection::IdempotencyKeyConflict { .. })
    ));
    // Readable, so a retry that cannot resend the identical command (a new
    // signature, a new timestamp) can still be answered with the first
    // outcome.
    assert_eq!(s.idempotent_outcome("k1"), Some(&first));
    assert_eq!(s.idempotent_outcome("k2"), None);
}

#[test]
fn idempotency_keys_expire_after_window() {
    let mut s = with_issuers();
    let p = lease(1, "eu", 10).with_idempotency_key("k1");
    apply(&mut s, &p);
    let mut later = lease(1, "eu", 10).with_idempotency_key("k1");
    later.at_ms = p.at_ms + IDEMPOTENCY_WINDOW_MS + 1;
    apply(&mut s, &later);
    assert_eq!(s.leases_of("eu", 1).len(), 2, "expired key applies afresh");
}

pub(crate) fn revoke(issuer: &str, serial: &[u8]) -> Proposal {
    Proposal::new(
        3_000,
        Command::Revoke {
            issuer: issuer.into(),
            serial: Serial(serial.to_vec()),
            reason: RevocationReason::KeyCompromise,
            revoked_at_ms: 3_000,
        },
    )
}

#[test]
fn revocations_land_in_their_shard_and_bump_only_its_version() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    // Sequences 1 and 5 share shard 1 of 4; sequence 2 is shard 2.
    apply(&mut s, &record(1, "eu", 1, &[1], 5_000));
    apply(&mut s, &record(1, "eu", 5, &[5], 50_000));
    apply(&mut s, &record(1, "eu", 2, &[2], 50_000));
    assert!(s.crl_shard("eu", 1).is_none());
    apply(&mut s, &revoke("eu", &[1]));
    apply(&mut s, &revoke("eu", &[5]));
    let one = s.crl_shard("eu", 1).expect("shard 1 lists revocations");
    assert_eq!(one.version, 2);
    assert_eq!(one.serials.len(), 2);
    assert!(
        s.crl_shard("eu", 2).is_none(),
        "untouched shard stays clean"
    );
    assert_eq!(s.revocation("eu", &Serial(vec![5])).unwrap().shard, 1);
    // A rejected revocation (already revoked) changes no version.
    apply(&mut s, &revoke("eu", &[5]));
    assert_eq!(s.crl_shard("eu", 1).unwrap().version, 2);
    // Expiry drops the entry from its shard and bumps the version, so the
    // next CRL of that shard no longer lists it.
    let expired: Vec<_> = s.expired_before(6_000).map(|(r, _)| r.sequence).collect();
    assert_eq!(expired, vec![1]);
    apply(
        &mut s,
        &Proposal::new(6_000, Command::PruneExpired { before_ms: 6_000 }),
    );
    let one = s.crl_shard("eu", 1).unwrap();
    assert_eq!(one.version, 3);
    assert_eq!(
        one.serials.iter().cloned().collect::<Vec<_>>(),
        vec![Serial(vec![5])]
    );
}

#[test]
fn a_batch_of_records_answers_each_like_a_lone_record() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    apply(&mut s, &record(1, "eu", 0, &[1], 50_000));
    let rec = |seq, serial: &[u8]| match record(1, "eu", seq, serial, 50_000).command {
        Command::RecordIssuance(record) => BatchedRecord {
            record,
            idempotency_key: None,
        },
        _ => unreachable!(),
    };
    let out = apply(
        &mut s,
        &Proposal::new(
            2_000,
            Command::RecordIssuances(vec![
                rec(1, &[2]),
                rec(0, &[1]),
                rec(99, &[3]),
                rec(2, &[4]),
            ]),
        ),
    );
    let Outcome::Batch(outs) = out else {
        panic!("expected a batch outcome, got {out:?}")
    };
    assert!(matches!(outs[0], Outcome::IssuanceRecorded { .. }));
    assert!(matches!(
        outs[1],
        Outcome::Rejected(Rejection::DuplicateSerial { .. })
    ));
    assert!(matches!(
        outs[2],
        Outcome::Rejected(Rejection::SequenceNotLeased { .. })
    ));
    assert!(matches!(outs[3], Outcome::IssuanceRecorded { .. }));
    assert_eq!(s.record_count(), 3);
    let empty = apply(
        &mut s,
        &Proposal::new(2_000, Command::RecordIssuances(vec![])),
    );
    assert!(matches!(
        empty,
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
}

#[test]
fn keys_inside_a_batch_behave_like_keys_on_lone_proposals_and_replay_der_expires() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    let keyed = |seq: u64, serial: &[u8], key: &str| {
        let Command::RecordIssuance(mut record) = record(1, "eu", seq, serial, 90_000_000).command
        else {
            unreachable!()
        };
        record.full_der = Some(vec![0x30, 0x01, seq as u8]);
        record.der_for_replay_only = true;
        BatchedRecord {
            record,
            idempotency_key: Some(key.into()),
        }
    };
    let first = keyed(0, &[1], "a");
    let out = apply(
        &mut s,
        &Proposal::new(
            2_000,
            Command::RecordIssuances(vec![first.clone(), keyed(1, &[2], "b")]),
        ),
    );
    let Outcome::Batch(outs) = out else { panic!() };
    assert!(outs
        .iter()
        .all(|o| matches!(o, Outcome::IssuanceRecorded { .. })));
    // The same record alone with the same key: the first outcome, no change.
    let again = apply(
        &mut s,
        &Proposal::new(3_000, Command::RecordIssuance(first.record.clone()))
            .with_idempotency_key("a"),
    );
    assert_eq!(again, outs[0]);
    // Another record under a used key, inside a batch: refused, alone.
    let out = apply(
        &mut s,
        &Proposal::new(
            3_000,
            Command::RecordIssuances(vec![keyed(2, &[3], "a"), keyed(3, &[4], "c")]),
        ),
    );
    let Outcome::Batch(outs) = out else { panic!() };
    assert!(matches!(
        outs[0],
        Outcome::Rejected(Rejection::IdempotencyKeyConflict { .. })
    ));
    assert!(matches!(outs[1], Outcome::IssuanceRecorded { .. }));
    assert_eq!(s.record_count(), 3);
    assert!(s.record("eu", &Serial(vec![1])).unwrap().full_der.is_some());
    // Once the keys expire, nobody can retry: the DER kept for retries goes.
    apply(
        &mut s,
        &Proposal::new(
            3_000 + IDEMPOTENCY_WINDOW_MS + 1,
            Command::Noop { payload: vec![] },
        ),
    );
    let rec = s.record("eu", &Serial(vec![1])).unwrap();
    assert!(rec.full_der.is_none() && !rec.der_for_replay_only);
    assert_eq!(s.idempotent_outcome("a"), None);
}

#[test]
fn issuers_need_a_sane_shard_count() {
    let mut s = State::default();
    for shards in [0, MAX_CRL_SHARDS + 1] {
        let mut p = register("root", None);
        if let Command::RegisterIssuer(r) = &mut p.command {
            r.crl_shards = shards;
        }
        assert!(matches!(
            apply(&mut s, &p),
            Outcome::Rejected(Rejection::Invalid { .. })
        ));
    }
    assert!(s.issuer("root").is_none());
}

#[test]
fn prune_drops_expired_records_and_their_revocations() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    apply(&mut s, &record(1, "eu", 0, &[1], 5_000));
    apply(&mut s, &record(1, "eu", 1, &[2], 50_000));
    apply(
        &mut s,
        &Proposal::new(
            3_000,
            Command::Revoke {
                issuer: "eu".into(),
                serial: Serial(vec![1]),
                reason: RevocationReason::Superseded,
                revoked_at_ms: 3_000,
            },
        ),
    );
    let out = apply(
        &mut s,
        &Proposal::new(6_000, Command::PruneExpired { before_ms: 6_000 }),
    );
    assert_eq!(
        out,
        Outcome::Pruned {
            records: 1,
            revocations: 1
        }
    );
    assert_eq!(s.record_count(), 1);
    // The serial of a pruned record can still not be re-recorded through a
    // lease, because its sequence was consumed and leases only move forward.
    assert!(matches!(
        apply(&mut s, &lease(1, "eu", 10)),
        Outcome::LeaseGranted(SerialLease { start: 10, .. })
    ));
}

#[test]
fn audit_chain_covers_every_entry() {
    let mut s = with_issuers();
    let base = s.audit_len();
    let h0 = s.audit_head();
    apply(&mut s, &lease(1, "eu", 10));
    let h1 = s.audit_head();
    apply(&mut s, &lease(1, "eu", 10));
    assert_ne!(h0, h1);
    assert_ne!(h1, s.audit_head());
    assert_eq!(s.audit_len(), base + 2);
}

#[test]
fn state_round_trips_through_encoding() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    apply(&mut s, &record(1, "eu", 0, &[1, 2, 3], 5_000));
    let back = State::decode(&s.encode()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.hash(), s.hash());
    assert!(State::decode(&[0xff, 0xff, 0xff]).is_err());
}

/// Serials mostly drawn from a space too large to repeat, sometimes from a
/// handful, so records collide, revocations find records and unrecorded
/// revocations meet recorded serials.
fn serial() -> impl Strategy<Value = [u8; 3]> {
    prop_oneof![3 => any::<[u8; 3]>(), 1 => (0u8..6).prop_map(|b| [0x40, 0, b])]
}

fn arb_command() -> impl Strategy<Value = Proposal> {
    let issuer = prop_oneof![Just("eu".to_string()), Just("us".to_string())];
    let node = 1u64..4;
    prop_oneof![
        (node.clone(), issuer.clone(), 1u64..50, 0u64..20_000).prop_map(|(n, i, b, e)| {
            Proposal::new(
                e / 2,
                Command::GrantSerialLease {
                    node_id: n,
                    issuer: i,
                    block: b,
                    expires_at_ms: e,
                },
            )
        }),
        (
            node.clone(),
            issuer.clone(),
            0u64..200,
            serial(),
            1u64..20_000
        )
            .prop_map(|(n, i, seq, serial, na)| record(n, &i, seq, &serial, na + 1_000)),
        proptest::collection::vec((node.clone(), issuer.clone(), 0u64..200, serial()), 1..4)
            .prop_map(|rs| {
                // Every other record carries a key, from a small set, so batches
                // exercise replays and conflicts too.
                let records = rs
                    .into_iter()
                    .enumerate()
                    .map(|(k, (n, i, seq, serial))| {
                        match record(n, &i, seq, &serial, 9_000).command {
                            Command::RecordIssuance(record) => BatchedRecord {
                                record,
                                idempotency_key: (k % 2 == 0).then(|| format!("k{}", seq % 4)),
                            },
                            _ => unreachable!("record() builds a RecordIssuance"),
                        }
                    })
                    .collect();
                Proposal::new(2_000, Command::RecordIssuances(records))
            }),
        (any::<bool>(), 0u64..20_000).prop_map(|(k, t)| Proposal::new(
            t,
            Command::RevokeByKey {
                spki_hash: if k { [2; 32] } else { [5; 32] },
                reason: RevocationReason::KeyCompromise,
                revoked_at_ms: t
            }
        )),
        (issuer.clone(), serial(), 0u64..20_000).prop_map(|(i, serial, t)| Proposal::new(
            t,
            Command::Revoke {
                issuer: i,
                serial: Serial(serial.to_vec()),
                reason: RevocationReason::Unspecified,
                revoked_at_ms: t
            }
        )),
        issuer
            .clone()
            .prop_map(|i| Proposal::new(5, Command::NextCrlNumber { issuer: i })),
        (0u64..20_000).prop_map(|t| Proposal::new(t, Command::PruneExpired { before_ms: t })),
        // Serials from the records' own space, so a record may meet an
        // unrecorded revocation of its serial and the other way round.
        (issuer.clone(), serial(), 1u64..20_000).prop_map(|(i, serial, na)| {
            Proposal::new(
                na / 2,
                Command::RevokeUnrecorded {
                    issuer: i,
                    serial: Serial(serial.to_vec()),
                    not_after_ms: na,
                    reason: RevocationReason::Superseded,
                    revoked_at_ms: na / 2,
                },
            )
        }),
        // Join tokens from a small set of hashes, redeemed for identities
        // from a small set with the records' keys, then rebound or removed.
        (0u8..3, any::<bool>(), 0u64..20_000).prop_map(|(h, role, t)| Proposal::new(
            t,
            Command::CreateToken(JoinToken {
                token_hash: [h; 32],
                namespace: "default".into(),
                profile: "default".into(),
                role: role.then(|| "issuer".into()),
                expires_at_ms: t + 5_000,
                actor: "admin".into(),
            })
        )),
        (0u8..3, 0u8..3, any::<bool>(), 0u64..20_000).prop_map(|(h, id, k, t)| Proposal::new(
            t,
            Command::RedeemToken {
                token_hash: [h; 32],
                identity: format!("id{id}"),
                spki_hash: if k { [2; 32] } else { [5; 32] },
            }
        )),
        (0u8..3, any::<bool>()).prop_map(|(id, forward)| Proposal::new(
            3_000,
            Command::RebindRole {
                identity: format!("id{id}"),
                from_spki: if forward { [5; 32] } else { [2; 32] },
                to_spki: if forward { [2; 32] } else { [5; 32] },
            }
        )),
        (0u8..3).prop_map(|id| Proposal::new(
            3_000,
            Command::RemoveRoleBinding {
                identity: format!("id{id}"),
            }
        )),
        // Audited commands, so the audit log and its byte count move too.
        ("[a-c]{0,40}", 0u64..3).prop_map(|(text, expected)| Proposal::new(
            4_000,
            Command::ApplyPolicy {
                text,
                actor: "admin".into(),
                expected_version: (expected > 0).then_some(expected),
            }
        )),
        (0u64..4).prop_map(|to_version| Proposal::new(
            4_000,
            Command::RollbackPolicy {
                to_version,
                actor: "admin".into(),
            }
        )),
        ("[a-c]{0,8}").prop_map(|reason| Proposal::new(
            4_000,
            Command::RecordDenial {
                identity: "spiffe://t/x".into(),
                action: "issue".into(),
                reason,
            }
        )),
        (node, "[a-c]{1,2}", "[a-c]{0,2}").prop_map(|(n, r, z)| Proposal::new(
            1,
            Command::SetNodeLabels {
                node_id: n,
                region: r,
                zone: z
            }
        )),
    ]
    .prop_flat_map(|p| {
        (Just(p), proptest::option::of("k[0-3]")).prop_map(|(mut p, k)| {
            p.idempotency_key = k;
            p
        })
    })
}

proptest! {
    /// Replaying the same log always gives the same state and outcomes, and
    /// a snapshot taken midway then replayed to the end agrees with a full
    /// replay: the property every follower and restarted node relies on.
    #[test]
    fn replay_is_deterministic(log in proptest::collection::vec(arb_command(), 0..200), cut in 0usize..200) {
        let run = |log: &[Proposal]| {
            let mut s = with_issuers();
            let outs: Vec<Outcome> = log.iter().map(|p| apply(&mut s, p)).collect();
            (s, outs)
        };
        let (a, outs_a) = run(&log);
        let (b, outs_b) = run(&log);
        prop_assert_eq!(a.hash(), b.hash());
        prop_assert_eq!(outs_a, outs_b);

        let cut = cut.min(log.len());
        let (mid, _) = run(&log[..cut]);
        let mut restored = State::decode(&mid.encode()).unwrap();
        // Indexes are not stored but rebuilt: the loaded state must equal
        // the original in every field, not only in its encoding.
        prop_assert_eq!(&restored, &mid);
        prop_assert_eq!(restored.issuers().count(), 3);
        for p in &log[cut..] {
            apply(&mut restored, p);
        }
        prop_assert_eq!(restored.hash(), a.hash());
        prop_assert_eq!(&State::decode(&a.encode()).unwrap(), &a);
    }

    /// No two records ever share (issuer, serial), and every record's
    /// sequence lies in a lease of its own node.
    #[test]
    fn records_are_unique_and_leased(log in proptest::collection::vec(arb_command(), 0..300)) {
        let mut s = with_issuers();
        let mut ever = std::collections::BTreeSet::new();
        for p in &log {
            if let Outcome::IssuanceRecorded { issuer, serial } = apply(&mut s, p) {
                let r = s.record(&issuer, &serial).unwrap();
                prop_assert!(s.leases_of(&r.issuer, r.node_id).iter().any(|l| l.contains(r.sequence)));
                prop_assert!(ever.insert((issuer, serial)), "recorded twice");
            }
        }
    }
}

#[test]
fn leases_need_a_registered_issuer() {
    let mut s = State::default();
    assert!(matches!(
        apply(&mut s, &lease(1, "eu", 10)),
        Outcome::Rejected(Rejection::UnknownIssuer { .. })
    ));
}

#[test]
fn issuers_register_once_under_a_known_parent() {
    let mut s = with_issuers();
    assert!(matches!(
        apply(&mut s, &register("eu", Some("root"))),
        Outcome::Rejected(Rejection::IssuerExists { .. })
    ));
    assert!(matches!(
        apply(&mut s, &register("ap", Some("nope"))),
        Outcome::Rejected(Rejection::UnknownIssuer { .. })
    ));
    assert_eq!(s.issuer("eu").unwrap().parent.as_deref(), Some("root"));
    assert_eq!(s.issuers().count(), 3);
}

#[test]
fn policy_versions_conflicts_and_rollback() {
    let mut s = State::default();
    let apply_text = |s: &mut State, text: &str, expected: Option<u64>| {
        apply(
            s,
            &Proposal::new(
                9,
                Command::ApplyPolicy {
                    text: text.into(),
                    actor: "alice".into(),
                    expected_version: expected,
                },
            ),
        )
    };
    assert_eq!(
        apply_text(&mut s, "v1", Some(0)),
        Outcome::PolicyApplied { version: 1 }
    );
    assert_eq!(
        apply_text(&mut s, "v2", Some(1)),
        Outcome::PolicyApplied { version: 2 }
    );
    assert_eq!(
        apply_text(&mut s, "stale", Some(1)),
        Outcome::Rejected(Rejection::PolicyConflict {
            expected: 1,
            current: 2
        })
    );
    let rb = apply(
        &mut s,
        &Proposal::new(
            10,
            Command::RollbackPolicy {
                to_version: 1,
                actor: "bob".into(),
            },
        ),
    );
    assert_eq!(rb, Outcome::PolicyApplied { version: 3 });
    let cur = s.policy().unwrap();
    assert_eq!(
        (cur.text.as_str(), cur.rollback_of, cur.actor.as_str()),
        ("v1", Some(1), "bob")
    );
    assert_eq!(s.policy_history().len(), 3);
    assert!(matches!(
        apply(
            &mut s,
            &Proposal::new(
                11,
                Command::RollbackPolicy {
                    to_version: 9,
                    actor: "bob".into()
                }
            )
        ),
        Outcome::Rejected(Rejection::UnknownPolicyVersion { version: 9 })
    ));
}

#[test]
fn revoke_by_key_revokes_every_live_certificate_with_that_key_once() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    apply(&mut s, &lease(2, "us", 10));
    let mut other_key = record(1, "eu", 2, &[3], 50_000);
    if let Command::RecordIssuance(r) = &mut other_key.command {
        r.spki_hash = [9; 32];
    }
    for p in [
        record(1, "eu", 0, &[1], 50_000),
        record(2, "us", 0, &[2], 50_000),
        other_key,
    ] {
        assert!(matches!(
            apply(&mut s, &p),
            Outcome::IssuanceRecorded { .. }
        ));
    }
    let by_key = |t: u64| {
        Proposal::new(
            t,
            Command::RevokeByKey {
                spki_hash: [2; 32],
                reason: RevocationReason::KeyCompromise,
                revoked_at_ms: t,
            },
        )
    };
    match apply(&mut s, &by_key(3_000)) {
        Outcome::RevokedByKey { revoked } => assert_eq!(revoked.len(), 2, "{revoked:?}"),
        o => panic!("{o:?}"),
    }
    assert!(s.revocation("eu", &Serial(vec![1])).is_some());
    assert!(s.revocation("us", &Serial(vec![2])).is_some());
    assert!(
        s.revocation("eu", &Serial(vec![3])).is_none(),
        "another key stays valid"
    );
    // Again: nothing new to revoke, first revocation times kept.
    assert_eq!(
        apply(&mut s, &by_key(4_000)),
        Outcome::RevokedByKey { revoked: vec![] }
    );
    assert_eq!(
        s.revocation("eu", &Serial(vec![1])).unwrap().revoked_at_ms,
        3_000
    );
    // Unknown key: a clear rejection.
    let unknown = Proposal::new(
        1,
        Command::RevokeByKey {
            spki_hash: [7; 32],
            reason: RevocationReason::KeyCompromise,
            revoked_at_ms: 1,
        },
    );
    assert!(matches!(
        apply(&mut s, &unknown),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    // Pruning drops the index entries with the records.
    apply(
        &mut s,
        &Proposal::new(60_000, Command::PruneExpired { before_ms: 60_000 }),
    );
    assert!(matches!(
        apply(&mut s, &by_key(61_000)),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
}

#[test]
fn a_pending_change_needs_a_second_identity_and_everything_is_audited() {
    use crate::{Change, MAX_AUDIT_ENTRIES};
    let mut s = State::default();
    let propose = Proposal::new(
        10,
        Command::ProposeChange {
            change: Change::ApplyPolicy {
                text: "v1".into(),
                expected_version: Some(0),
            },
            actor: "alice".into(),
        },
    );
    assert_eq!(apply(&mut s, &propose), Outcome::ChangePending { id: 1 });
    assert!(s.policy().is_none(), "nothing applies before approval");
    let approve = |who: &str, id: u64| {
        Proposal::new(
            11,
            Command::ApproveChange {
                id,
                actor: who.into(),
            },
        )
    };
    assert!(matches!(
        apply(&mut s, &approve("alice", 1)),
        Outcome::Rejected(Rejection::SelfApproval { id: 1, .. })
    ));
    assert!(matches!(
        apply(&mut s, &approve("bob", 7)),
        Outcome::Rejected(Rejection::UnknownChange { id: 7 })
    ));
    assert_eq!(s.pending_changes().count(), 1);
    assert_eq!(
        apply(&mut s, &approve("bob", 1)),
        Outcome::PolicyApplied { version: 1 }
    );
    assert_eq!(s.policy().unwrap().actor, "alice (approved by bob)");
    assert_eq!(s.pending_changes().count(), 0);
    assert!(matches!(
        apply(&mut s, &approve("bob", 1)),
        Outcome::Rejected(Rejection::UnknownChange { id: 1 })
    ));
    let denial = Proposal::new(
        12,
        Command::RecordDenial {
            identity: "mallory".into(),
            action: "issue in namespace \"payments\"".into(),
            reason: "no grant".into(),
        },
    );
    assert_eq!(apply(&mut s, &denial), Outcome::Audited);
    let all = s.audit_entries(0, 100, |_| true);
    let actions: Vec<(&str, &str, bool)> = all
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str(), e.denied))
        .collect();
    assert_eq!(
        actions,
        [
            ("propose-change", "alice", false),
            ("approve-change", "alice", true),
            ("approve-change", "bob", true),
            ("approve-change", "bob", false),
            ("approve-change", "bob", true),
            ("denied", "mallory", true),
        ]
    );
    // Paging and filters; each entry carries the chain head after it.
    assert_eq!(s.audit_entries(all[3].seq, 100, |_| true).len(), 2);
    assert_eq!(s.audit_entries(0, 100, |e| e.actor == "mallory").len(), 1);
    assert_eq!(all.last().unwrap().chain, hex::encode(s.audit_head()));
    // The log survives a snapshot round trip and stays bounded.
    assert_eq!(State::decode(&s.encode()).unwrap(), s);
    for i in 0..(MAX_AUDIT_ENTRIES + 5) {
        apply(
            &mut s,
            &Proposal::new(
                13,
                Command::RecordDenial {
                    identity: format!("m{i}"),
                    action: "x".into(),
                    reason: "y".into(),
                },
            ),
        );
    }
    assert_eq!(
        s.audit_entries(0, usize::MAX, |_| true).len(),
        MAX_AUDIT_ENTRIES
    );
}

#[test]
fn join_tokens_are_single_use_expire_and_bind_their_role() {
    use crate::JoinToken;
    let mut s = State::default();
    let token = |hash: u8, expires_at_ms: u64, role: Option<&str>| JoinToken {
        token_hash: [hash; 32],
        namespace: "payments".into(),
        profile: "web".into(),
        role: role.map(String::from),
        expires_at_ms,
        actor: "admin".into(),
    };
    let create = |t: JoinToken| Proposal::new(100, Command::CreateToken(t));
    let redeem = |hash: u8, at: u64, who: &str| {
        Proposal::new(
            at,
            Command::RedeemToken {
                token_hash: [hash; 32],
                identity: who.into(),
                spki_hash: [9; 32],
            },
        )
    };
    assert_eq!(
        apply(&mut s, &create(token(1, 1_000, Some("issuer")))),
        Outcome::TokenCreated
    );
    assert_eq!(
        apply(&mut s, &create(token(2, 500, None))),
        Outcome::TokenCreated
    );
    assert!(matches!(
        apply(&mut s, &create(token(3, 50, None))),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    assert!(s.token(&[1; 32], 200).is_some());
    assert!(s.enrollment("w1").is_none());
    assert_eq!(
        apply(&mut s, &redeem(1, 200, "w1")),
        Outcome::TokenRedeemed(token(1, 1_000, Some("issuer")))
    );
    assert_eq!(s.enrollment("w1").unwrap().namespace, "payments");
    // Used up: a second redemption, by anyone, fails.
    assert_eq!(
        apply(&mut s, &redeem(1, 201, "w2")),
        Outcome::Rejected(Rejection::TokenNotUsable)
    );
    // Expired: refused, and gone.
    assert_eq!(
        apply(&mut s, &redeem(2, 600, "w3")),
        Outcome::Rejected(Rejection::TokenNotUsable)
    );
    assert!(s.token(&[2; 32], 0).is_none());
    assert!(s.enrollment("w3").is_none());
    assert_eq!(State::decode(&s.encode()).unwrap(), s);
    let log = s.audit_entries(0, 10, |_| true);
    assert_eq!(log.iter().filter(|e| e.action == "redeem-token").count(), 3);
    assert_eq!(log.iter().filter(|e| e.denied).count(), 3);
}

/// A `Batch` must leave exactly the state, hash chain and outcomes the same
/// proposals give as separate entries: followers, snapshots and audits
/// cannot tell the leader's group commit happened.
#[test]
fn a_batch_applies_like_separate_entries() {
    let proposals = vec![
        lease(1, "eu", 10),
        record(1, "eu", 0, &[1], 9_000),
        record(1, "eu", 0, &[1], 9_000).with_idempotency_key("k1"),
        record(1, "eu", 1, &[2], 9_000).with_idempotency_key("k2"),
        record(1, "eu", 1, &[2], 9_000).with_idempotency_key("k2"),
        Proposal::new(3_000, Command::Noop { payload: vec![7] }).by("alice"),
    ];
    let mut separate = with_issuers();
    let one_by_one: Vec<Outcome> = proposals.iter().map(|p| apply(&mut separate, p)).collect();
    let mut batched = with_issuers();
    let out = apply(
        &mut batched,
        &Proposal::new(1, Command::Batch(proposals.clone())),
    );
    assert_eq!(out, Outcome::Batch(one_by_one.clone()));
    assert_eq!(batched.hash(), separate.hash());
    assert_eq!(batched.audit_head(), separate.audit_head());
    // The duplicate serial is refused inside the batch as it is alone, and
    // the keyed retry replays its first outcome.
    assert!(matches!(
        one_by_one[2],
        Outcome::Rejected(Rejection::DuplicateSerial { .. })
    ));
    assert_eq!(one_by_one[3], one_by_one[4]);
}

#[test]
fn batches_are_bounded_and_never_nest() {
    let mut s = with_issuers();
    let before = s.hash();
    for bad in [
        Command::Batch(vec![]),
        Command::Batch(vec![Proposal::new(
            1,
            Command::Batch(vec![lease(1, "eu", 10)]),
        )]),
        Command::Batch(vec![lease(1, "eu", 10); MAX_PROPOSAL_BATCH + 1]),
    ] {
        let out = apply(&mut s, &Proposal::new(1, bad));
        assert!(
            matches!(out, Outcome::Rejected(Rejection::Invalid { .. })),
            "{out:?}"
        );
    }
    assert_eq!(s.hash(), before, "a refused batch changes nothing");
}

fn issuer(id: &str, region: Option<&str>, parent: Option<&str>) -> IssuerRecord {
    IssuerRecord {
        id: id.into(),
        region: region.map(String::from),
        cert_der: vec![0x30, 0x00],
        sealed_key: Some(vec![1, 2, 3]),
        parent: parent.map(String::from),
        not_after_ms: 10_000_000,
        crl_shards: 4,
    }
}

fn hierarchy(at_ms: u64, change: HierarchyChange) -> Proposal {
    Proposal::new(at_ms, Command::Hierarchy(change))
}

fn retire(at_ms: u64, id: &str) -> Proposal {
    hierarchy(at_ms, HierarchyChange::Retire { id: id.into() })
}

#[test]
fn an_intermediate_rotation_switches_the_signer_and_retires_the_old_one_after_its_last_leaf() {
    let mut s = with_issuers();
    assert_eq!(s.active_issuer("eu").unwrap().id, "eu");
    assert_eq!(s.issuer_phase("eu"), Some(IssuerPhase::Active));
    assert!(matches!(
        apply(&mut s, &lease(1, "eu", 10)),
        Outcome::LeaseGranted(_)
    ));
    assert!(matches!(
        apply(&mut s, &record(1, "eu", 0, &[1], 50_000)),
        Outcome::IssuanceRecorded { .. }
    ));
    let v0 = s.bundle_version();
    let rotate = HierarchyChange::Rotate {
        root: None,
        cross: vec![],
        intermediates: vec![issuer("eu.g2", Some("eu"), Some("root"))],
        root_grace_ms: 0,
    };
    assert!(matches!(
        apply(&mut s, &hierarchy(3_000, rotate.clone())),
        Outcome::HierarchyChanged { .. }
    ));
    assert!(s.bundle_version() > v0);
    assert_eq!(s.active_issuer("eu").unwrap().id, "eu.g2");
    assert_eq!(s.issuer_phase("eu"), Some(IssuerPhase::Retiring));
    assert_eq!(
        s.active_issuer("us").unwrap().id,
        "us",
        "other regions unchanged"
    );
    // The same rotation again: the id exists.
    assert!(matches!(
        apply(&mut s, &hierarchy(3_000, rotate)),
        Outcome::Rejected(Rejection::IssuerExists { .. })
    ));
    // A leaf signed by the old one just before still records.
    assert!(matches!(
        apply(&mut s, &record(1, "eu", 1, &[2], 60_000)),
        Outcome::IssuanceRecorded { .. }
    ));
    // Not before its last leaf expires, not the active one, not twice.
    let e = apply(&mut s, &retire(59_999, "eu"));
    assert!(
        matches!(&e, Outcome::Rejected(Rejection::NotRetirable { reason, .. }) if reason.contains("60000")),
        "{e:?}"
    );
    assert!(matches!(
        apply(&mut s, &retire(90_000, "eu.g2")),
        Outcome::Rejected(Rejection::NotRetirable { .. })
    ));
    assert_eq!(s.retirable(59_999), Vec::<String>::new());
    assert_eq!(s.retirable(60_000), vec!["eu".to_string()]);
    assert!(matches!(
        apply(&mut s, &retire(60_000, "eu")),
        Outcome::HierarchyChanged { .. }
    ));
    assert_eq!(s.issuer_phase("eu"), Some(IssuerPhase::Retired));
    assert_eq!(s.issuer("eu").unwrap().sealed_key, None, "key destroyed");
    assert_eq!(s.retired_at("eu"), Some(60_000));
    assert!(matches!(
        apply(&mut s, &retire(70_000, "eu")),
        Outcome::Rejected(Rejection::NotRetirable { .. })
    ));
    // Nothing more is recorded under a retired issuer.
    assert!(matches!(
        apply(&mut s, &record(1, "eu", 2, &[3], 90_000)),
        Outcome::Rejected(Rejection::IssuerRetired { .. })
    ));
    let audit: Vec<_> = s
        .audit_entries(0, 100, |_| true)
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        audit.contains(&"rotate".to_string()) && audit.contains(&"retire-issuer".to_string()),
        "{audit:?}"
    );
}

#[test]
fn a_root_rotation_is_whole_cross_signed_and_the_old_root_leaves_after_its_grace_and_children() {
    let mut s = with_issuers();
    let cross = vec![
        CrossCert {
            subject: "root2".into(),
            signer: "root".into(),
            cert_der: vec![0x30, 0x00],
            not_after_ms: 10_000_000,
        },
        CrossCert {
            subject: "root".into(),
            signer: "root2".into(),
            cert_der: vec![0x30, 0x00],
            not_after_ms: 10_000_000,
        },
    ];
    let good = HierarchyChange::Rotate {
        root: Some(issuer("root2", None, None)),
        cross: cross.clone(),
        intermediates: vec![
            issuer("eu.g2", Some("eu"), Some("root2")),
            issuer("us.g2", Some("us"), Some("root2")),
        ],
        root_grace_ms: 100_000,
    };
    // Refused whole: an intermediate under the old root, no cross certs,
    // two for one region.
    for bad in [
        HierarchyChange::Rotate {
            root: Some(issuer("root2", None, None)),
            cross: cross.clone(),
            intermediates: vec![issuer("eu.g2", Some("eu"), Some("root"))],
            root_grace_ms: 0,
        },
        HierarchyChange::Rotate {
            root: Some(issuer("root2", None, None)),
            cross: vec![],
            intermediates: vec![issuer("eu.g2", Some("eu"), Some("root2"))],
            root_grace_ms: 0,
        },
        HierarchyChange::Rotate {
            root: None,
            cross: vec![],
            intermediates: vec![
                issuer("eu.g2", Some("eu"), Some("root")),
                issuer("eu.g3", Some("eu"), Some("root")),
            ],
            root_grace_ms: 0,
        },
    ] {
        let before = s.clone();
        assert!(matches!(
            apply(&mut s, &hierarchy(3_000, bad)),
            Outcome::Rejected(Rejection::Invalid { .. })
        ));
        assert_eq!(s.issuers().count(), before.issuers().count());
        assert_eq!(s.active_issuer("eu").unwrap().id, "eu");
    }
    assert!(matches!(
        apply(&mut s, &hierarchy(3_000, good)),
        Outcome::HierarchyChanged { .. }
    ));
    assert_eq!(s.current_root().unwrap().id, "root2");
    assert_eq!(s.issuer_phase("root"), Some(IssuerPhase::PreviousRoot));
    assert_eq!(s.active_issuer("us").unwrap().id, "us.g2");
    assert_eq!(s.cross_certs().count(), 2);
    // The old root waits for its grace window and for its intermediates.
    assert!(matches!(
        apply(&mut s, &retire(50_000, "root")),
        Outcome::Rejected(Rejection::NotRetirable { .. })
    ));
    let e = apply(&mut s, &retire(200_000, "root"));
    assert!(
        matches!(&e, Outcome::Rejected(Rejection::NotRetirable { reason, .. }) if reason.contains("not retired")),
        "{e:?}"
    );
    for id in ["eu", "us", "root"] {
        assert!(
            matches!(
                apply(&mut s, &retire(200_000, id)),
                Outcome::HierarchyChanged { .. }
            ),
            "{id}"
        );
    }
    assert_eq!(
        s.cross_certs().count(),
        0,
        "cross certs leave with the root"
    );
    assert!(matches!(
        apply(&mut s, &retire(300_000, "root2")),
        Outcome::Rejected(Rejection::NotRetirable { .. })
    ));
}

#[test]
fn force_renew_markers_are_numbered_bounded_and_checked() {
    let mut s = with_issuers();
    let force = |issuer: Option<&str>, ns: Option<&str>| {
        hierarchy(
            5_000,
            HierarchyChange::ForceRenew {
                issuer: issuer.map(String::from),
                namespace: ns.map(String::from),
            },
        )
    };
    assert!(matches!(
        apply(&mut s, &force(None, None)),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    assert!(matches!(
        apply(&mut s, &force(Some("nope"), None)),
        Outcome::Rejected(Rejection::UnknownIssuer { .. })
    ));
    for _ in 0..(MAX_FORCE_RENEW_MARKERS + 3) {
        assert!(matches!(
            apply(&mut s, &force(Some("eu"), Some("payments"))),
            Outcome::HierarchyChanged { .. }
        ));
    }
    let ids: Vec<u64> = s.force_renew_markers().map(|m| m.id).collect();
    assert_eq!(ids.len(), MAX_FORCE_RENEW_MARKERS);
    assert_eq!(*ids.last().unwrap(), MAX_FORCE_RENEW_MARKERS as u64 + 3);
    let m = s.force_renew_markers().last().unwrap();
    assert_eq!(
        (m.issuer.as_deref(), m.namespace.as_deref(), m.at_ms),
        (Some("eu"), Some("payments"), 5_000)
    );
    let copy = State::decode(&s.encode()).unwrap();
    assert_eq!(copy.hash(), s.hash());
}

#[test]
fn records_after_pages_in_issuer_then_serial_order_from_any_cursor() {
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 10));
    apply(&mut s, &lease(1, "us", 10));
    let serials: [&[u8]; 4] = [&[1], &[1, 0], &[1, 0, 5], &[2]];
    for (i, serial) in serials.iter().enumerate() {
        for issuer in ["us", "eu"] {
            let out = apply(&mut s, &record(1, issuer, i as u64, serial, 5_000));
            assert!(matches!(out, Outcome::IssuanceRecorded { .. }), "{out:?}");
        }
    }
    let listed = |after: Option<(&str, &Serial)>| -> Vec<(String, Vec<u8>)> {
        s.records_after(after)
            .map(|r| (r.issuer.clone(), r.serial.0.clone()))
            .collect()
    };
    let all = listed(None);
    let mut expected: Vec<(String, Vec<u8>)> = ["eu", "us"]
        .iter()
        .flat_map(|i| serials.iter().map(|s| (i.to_string(), s.to_vec())))
        .collect();
    expected.sort();
    assert_eq!(all, expected);
    // From each listed record, the rest follow.
    for (n, (issuer, serial)) in all.iter().enumerate() {
        let serial = Serial(serial.clone());
        assert_eq!(listed(Some((issuer, &serial))), all[n + 1..]);
    }
    // A cursor naming no record: an issuer never seen, a serial longer than
    // any recorded one can be (21 octets starting with a recorded serial).
    assert_eq!(listed(Some(("et", &Serial(vec![9])))), all);
    let mut long = vec![1, 0];
    long.resize(21, 0);
    assert_eq!(listed(Some(("eu", &Serial(long)))), all[2..]);
    assert!(s.record("eu", &Serial(vec![1; 21])).is_none());
    assert!(s.record("nobody", &Serial(vec![1])).is_none());
}

/// Security hardening 10: the first lease starts at sequence 0, and a
/// minimally encoded `sequence || random` lost its leading zero octets
/// there (8-octet serials, 7 when the first random octet was 0 too). The
/// prefix keeps every serial at full length with all 64 random bits.
#[test]
fn leaf_serials_keep_their_length_and_random_bits_from_sequence_zero() {
    for (sequence, random) in [
        (0, [0u8; 8]),
        (0, [0, 0, 0, 1, 2, 3, 4, 5]),
        (0, [0x80, 0, 0, 0, 0, 0, 0, 0]),
        (1, [0xff; 8]),
        (u64::MAX, [0xff; 8]),
    ] {
        let s = Serial::for_leaf(sequence, random);
        assert_eq!(s.0.len(), LEAF_SERIAL_LEN, "{s:?}");
        assert_eq!(s.0[0], LEAF_SERIAL_PREFIX);
        assert_eq!(&s.0[1..9], &sequence.to_be_bytes());
        assert_eq!(&s.0[9..], &random);
    }
}

proptest! {
    /// Every leaf serial is a positive, minimally encoded DER integer of
    /// fixed length (no leading 0x00 needed, none strippable), and two
    /// different sequences never give the same serial.
    #[test]
    fn leaf_serials_are_minimal_positive_der_of_fixed_length(
        a in any::<u64>(), b in any::<u64>(), ra in any::<[u8; 8]>(), rb in any::<[u8; 8]>()
    ) {
        let s = Serial::for_leaf(a, ra);
        prop_assert_eq!(s.0.len(), LEAF_SERIAL_LEN);
        prop_assert!(s.0[0] != 0 && s.0[0] & 0x80 == 0);
        if a != b {
            prop_assert_ne!(s, Serial::for_leaf(b, rb));
        }
    }
}

/// A record like [`record`]'s, for the key `spki`.
fn record_for_key(sequence: u64, serial: &[u8], spki: u8, not_after_ms: u64) -> Proposal {
    let mut p = record(1, "eu", sequence, serial, not_after_ms);
    if let Command::RecordIssuance(r) = &mut p.command {
        r.spki_hash = [spki; 32];
    }
    p
}

/// Security hardening 1: a token's role is bound to the key it was granted
/// to, reserves its identity, follows a renewal to the new key, and goes
/// with a revocation, with the last certificate of its key, or by an admin.
#[test]
fn token_roles_are_bound_to_a_key_and_reserve_their_identity() {
    use crate::JoinToken;
    let mut s = with_issuers();
    apply(&mut s, &lease(1, "eu", 100));
    let token = |hash: u8, role: Option<&str>| {
        Proposal::new(
            100,
            Command::CreateToken(JoinToken {
                token_hash: [hash; 32],
                namespace: "payments".into(),
                profile: "web".into(),
                role: role.map(String::from),
                expires_at_ms: 1_000_000,
                actor: "admin".into(),
            }),
        )
    };
    let redeem = |hash: u8, who: &str, spki: u8| {
        Proposal::new(
            200,
            Command::RedeemToken {
                token_hash: [hash; 32],
                identity: who.into(),
                spki_hash: [spki; 32],
            },
        )
    };
    for (h, role) in [
        (1, Some("issuer")),
        (2, None),
        (3, None),
        (4, Some("issuer")),
    ] {
        assert_eq!(apply(&mut s, &token(h, role)), Outcome::TokenCreated);
    }
    let id = "spiffe://td/ns/payments/api";
    assert!(matches!(
        apply(&mut s, &redeem(1, id, 10)),
        Outcome::TokenRedeemed(_)
    ));
    assert_eq!(s.enrollment(id).unwrap().spki_hash, [10; 32]);
    // Another token, with or without a role, cannot take the identity,
    // and its token is not used up by trying.
    for h in [2, 4] {
        assert_eq!(
            apply(&mut s, &redeem(h, id, 11)),
            Outcome::Rejected(Rejection::IdentityReserved {
                identity: id.into()
            })
        );
        assert!(s.token(&[h; 32], 300).is_some());
    }
    assert_eq!(s.enrollment(id).unwrap().spki_hash, [10; 32]);

    // The certificate for key 10 is recorded; a renewal moves the role to
    // key 12 once key 12 has a certificate, and a retry is answered alike.
    apply(&mut s, &record_for_key(0, &[1, 0], 10, 5_000_000));
    let rebind = |from: u8, to: u8| {
        Proposal::new(
            300,
            Command::RebindRole {
                identity: id.into(),
                from_spki: [from; 32],
                to_spki: [to; 32],
            },
        )
    };
    assert!(matches!(
        apply(&mut s, &rebind(10, 12)),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    apply(&mut s, &record_for_key(1, &[1, 1], 12, 5_000_000));
    assert_eq!(apply(&mut s, &rebind(10, 12)), Outcome::RoleRebound);
    assert_eq!(apply(&mut s, &rebind(10, 12)), Outcome::RoleRebound);
    assert_eq!(s.enrollment(id).unwrap().spki_hash, [12; 32]);
    // Someone holding only the old key cannot move it anywhere.
    apply(&mut s, &record_for_key(2, &[1, 2], 13, 5_000_000));
    assert!(matches!(
        apply(&mut s, &rebind(10, 13)),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    assert_eq!(State::decode(&s.encode()).unwrap(), s);

    // Revoking the superseded certificate leaves the role; revoking the
    // one that holds it takes the role away and frees the identity.
    apply(&mut s, &revoke("eu", &[1, 0]));
    assert!(s.enrollment(id).is_some());
    apply(&mut s, &revoke("eu", &[1, 1]));
    assert!(s.enrollment(id).is_none());
    assert!(matches!(
        apply(&mut s, &redeem(2, id, 14)),
        Outcome::TokenRedeemed(_)
    ));
    assert!(
        s.enrollment(id).is_none(),
        "a role-less token binds nothing"
    );

    // Expiry: the role goes with the last certificate of its key, but not
    // while a just-redeemed token's certificate may still be on its way.
    let id2 = "spiffe://td/ns/payments/worker";
    apply(&mut s, &redeem(4, id2, 20));
    let prune = |before_ms: u64| Proposal::new(before_ms, Command::PruneExpired { before_ms });
    apply(&mut s, &prune(1_000));
    assert!(s.enrollment(id2).is_some(), "inside the grace period");
    apply(&mut s, &record_for_key(3, &[1, 3], 20, 7_000_000));
    apply(&mut s, &prune(6_000_000));
    assert!(s.enrollment(id2).is_some(), "its certificate is live");
    apply(&mut s, &prune(8_000_000));
    assert!(s.enrollment(id2).is_none(), "its certificate expired");

    // An admin removes a binding; removing it again says there is none.
    apply(&mut s, &token(5, Some("issuer")));
    apply(&mut s, &redeem(5, id2, 21));
    assert!(matches!(
        apply(
            &mut s,
            &Proposal::new(
                400,
                Command::RemoveRoleBinding {
                    identity: id2.into()
                }
            )
        ),
        Outcome::RoleBindingRemoved(_)
    ));
    assert_eq!(
        apply(
            &mut s,
            &Proposal::new(
                401,
                Command::RemoveRoleBinding {
                    identity: id2.into()
                }
            )
        ),
        Outcome::Rejected(Rejection::NoRoleBinding {
            identity: id2.into()
        })
    );
    let log = s.audit_entries(0, 100, |_| true);
    assert!(log.iter().any(|e| e.action == "rebind-role"));
    assert!(log.iter().any(|e| e.action == "remove-role-binding"));
}

/// Security hardening 7: a certificate the ledger has no record of (a
/// bootstrap identity the root signed) can be revoked: it is listed in its
/// issuer's CRL shard 0, found by `revocation`, refused twice, kept apart
/// from recorded certificates, pruned when it expires, and a node that
/// loaded a snapshot prunes it exactly as one that did not.
#[test]
fn unrecorded_certificates_can_be_revoked_and_leave_with_their_expiry() {
    let mut s = with_issuers();
    let revoke_unrecorded = |serial: &[u8], not_after_ms: u64| {
        Proposal::new(
            3_000,
            Command::RevokeUnrecorded {
                issuer: "root".into(),
                serial: Serial(serial.to_vec()),
                not_after_ms,
                reason: RevocationReason::KeyCompromise,
                revoked_at_ms: 3_000,
            },
        )
    };
    assert!(matches!(
        apply(&mut s, &revoke_unrecorded(&[0x42, 1], 50_000)),
        Outcome::Revoked { .. }
    ));
    let serial = Serial(vec![0x42, 1]);
    assert!(s.revocation("root", &serial).is_some());
    assert!(s.crl_shard("root", 0).unwrap().serials.contains(&serial));
    assert!(matches!(
        apply(&mut s, &revoke_unrecorded(&[0x42, 1], 50_000)),
        Outcome::Rejected(Rejection::AlreadyRevoked { .. })
    ));
    // A recorded certificate is revoked the usual way.
    apply(&mut s, &lease(1, "eu", 10));
    apply(&mut s, &record(1, "eu", 0, &[7], 50_000));
    let mut p = revoke_unrecorded(&[7], 50_000);
    if let Command::RevokeUnrecorded { issuer, .. } = &mut p.command {
        *issuer = "eu".into();
    }
    assert!(matches!(
        apply(&mut s, &p),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    let mut unknown = revoke_unrecorded(&[9], 50_000);
    if let Command::RevokeUnrecorded { issuer, .. } = &mut unknown.command {
        *issuer = "nobody".into();
    }
    assert!(matches!(
        apply(&mut s, &unknown),
        Outcome::Rejected(Rejection::UnknownIssuer { .. })
    ));
    // Its serial stays taken: a record under it would be a second
    // certificate with one issuer and serial, born on the CRL.
    apply(&mut s, &lease(1, "root", 10));
    let before = s.hash();
    // (Another notAfter than the revocation's: were it recorded, the
    // debug invariants would find two expiry entries for one certificate.)
    let mut taken = record(1, "root", 1, &[0x42, 1], 40_000);
    taken.at_ms = 3_500;
    assert!(matches!(
        apply(&mut s, &taken),
        Outcome::Rejected(Rejection::DuplicateSerial { .. })
    ));
    assert!(s.record("root", &serial).is_none());
    assert_ne!(
        s.hash(),
        before,
        "the refused proposal still extends the audit chain"
    );
    // Pruned at its expiry, the same with or without a snapshot load.
    let mut loaded = State::decode(&s.encode()).unwrap();
    assert_eq!(loaded, s);
    let prune = Proposal::new(60_000, Command::PruneExpired { before_ms: 60_000 });
    apply(&mut s, &prune);
    apply(&mut loaded, &prune);
    assert!(s.revocation("root", &serial).is_none());
    assert_eq!(loaded, s);
    assert_eq!(loaded.hash(), s.hash());
}

#[test]
fn serials_parse_like_openssl_prints_them() {
    let p = |t: &str| Serial::parse_hex(t).map(|s| s.0);
    assert_eq!(p("0A1B").unwrap(), vec![0x0a, 0x1b]);
    assert_eq!(p("0x00:0a:1b").unwrap(), vec![0x0a, 0x1b]);
    // A high first bit needs the leading zero octet back.
    assert_eq!(p("C1").unwrap(), vec![0x00, 0xc1]);
    assert_eq!(p("00c1").unwrap(), vec![0x00, 0xc1]);
    assert_eq!(p("abc").unwrap(), vec![0x0a, 0xbc]);
    for bad in ["", "zz", &"a".repeat(43)] {
        assert_eq!(p(bad), Err(BadSerial(bad.to_string())), "{bad:?}");
    }
    // What Display prints parses back to the same serial.
    let s = Serial::for_leaf(7, [0xff; 8]);
    assert_eq!(Serial::parse_hex(&s.to_string()).unwrap(), s);
}
