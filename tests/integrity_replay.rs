//! Offline replay of record-integrity rules (issue 13): each entry is judged under the rules of
//! its own `LogEntry.format_version`. Entries written before presence (format 0) still verify
//! as they were accepted; the same bytes claiming format 1 fail, because format 1 never
//! accepted them. Bundles here are built entry by entry and signed with the test's own log and
//! admin keys (the auditor trusts the bundle's anchors), so the rules are the only variable.

mod common;

use celltrail::bundle::verify::{verify_bundle, Options, Report};
use celltrail::bundle::{b64, Bundle, Chain, Entry, FORMAT};
use celltrail::client::{sign_draft, Draft};
use celltrail::crypto::EventHash;
use celltrail::merkle;
use celltrail::note::{sign_note, Checkpoint, NoteSigner};
use celltrail::pb::{self, event_body::Detail, KeyRegistered, LogEntry, SignatureMeaning};
use celltrail::policy::Policy;
use common::*;
use prost::Message;
use SignatureMeaning::{Performed, Received as Rcv};

const SEC: i64 = 1_000_000_000;
const HOUR: i64 = 3600 * SEC;
const APH: &str = "APH-0001";
const MFG: &str = "MFG-0001";

struct People {
    admin: NoteSigner,
    aph: NoteSigner,
    courier: NoteSigner,
    mfg: NoteSigner,
}

/// One custody event to write: when, where, what, who signs, and the entry's format.
struct Ev<'a> {
    at: i64,
    site: &'static str,
    detail: Detail,
    signers: Vec<(&'a NoteSigner, SignatureMeaning)>,
}

/// Builds a self-consistent bundle: the key registrations (`until` = each key's valid_until),
/// then one chain of `events`, every custody entry written with `format` and accepted
/// `accept_after` after its signatures.
fn bundle(p: &People, events: Vec<Ev<'_>>, format: u32, accept_after: i64, until: i64) -> Bundle {
    let log = NoteSigner::generate("log.replay").unwrap();
    let t0 = base_time();
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let push = |entries: &mut Vec<Vec<u8>>, ev: pb::SignedEvent, accepted: i64, format: u32| {
        let index = entries.len() as u64;
        entries.push(
            LogEntry {
                body: ev.body,
                signatures: ev.signatures,
                accepted_at_unix_nanos: accepted,
                index,
                format_version: format,
            }
            .encode_to_vec(),
        );
    };
    let mut prev = vec![0u8; 32];
    let regs = [
        (&p.aph, "apheresis_nurse", APH),
        (&p.courier, "courier", "COURIER-0001"),
        (&p.mfg, "manufacturing", MFG),
    ];
    for (seq, (k, role, site)) in regs.iter().enumerate() {
        let ev = sign_draft(
            Draft {
                chain_id: "keys".into(),
                seq: seq as u64,
                prev_hash: prev,
                occurred_at: t0 - HOUR,
                site: String::new(),
                comment: String::new(),
                detail: Detail::KeyRegistered(KeyRegistered {
                    key_id: k.name.clone(),
                    public_key: k.key.verifying_key().as_bytes().to_vec(),
                    printed_name: k.name.clone(),
                    role: role.to_string(),
                    site: site.to_string(),
                    valid_from_unix_nanos: t0 - 365 * 24 * HOUR,
                    valid_until_unix_nanos: until,
                }),
            },
            &[(&p.admin, Performed)],
            t0 - HOUR,
        );
        prev = EventHash::of_body(&ev.body).0.to_vec();
        push(&mut entries, ev, t0 - HOUR, 1);
    }
    let n_keys = entries.len();
    let mut prev = vec![0u8; 32];
    for (seq, e) in events.into_iter().enumerate() {
        let ev = sign_draft(
            Draft {
                chain_id: "BAG-R".into(),
                seq: seq as u64,
                prev_hash: prev,
                occurred_at: e.at,
                site: e.site.into(),
                comment: String::new(),
                detail: e.detail,
            },
            &e.signers,
            e.at,
        );
        prev = EventHash::of_body(&ev.body).0.to_vec();
        push(&mut entries, ev, e.at + accept_after, format);
    }
    let leaves: Vec<_> = entries.iter().map(|b| merkle::leaf_hash(b)).collect();
    let size = entries.len() as u64;
    let entry = |i: usize| Entry {
        index: i as u64,
        entry: b64(&entries[i]),
        proof: merkle::inclusion_proof(&leaves, i as u64)
            .unwrap()
            .iter()
            .map(|h| b64(h))
            .collect(),
    };
    let cp = Checkpoint {
        origin: log.name.clone(),
        size,
        root: merkle::root(&leaves),
        extensions: vec![],
    };
    Bundle {
        format: FORMAT.into(),
        exported_at: "2026-01-01T00:00:00Z".into(),
        anchors: celltrail::bundle::export::anchors(&log.verifier(), &[p.admin.verifier()]),
        checkpoint: sign_note(&cp.to_text(), &[&log]).unwrap(),
        tree_size: size,
        registry: (0..n_keys).map(entry).collect(),
        registry_head: None,
        chains: vec![Chain {
            chain_id: "BAG-R".into(),
            entries: (n_keys..entries.len()).map(entry).collect(),
            head: None,
        }],
        consistency: vec![],
        later_checkpoints: vec![],
        log_links: vec![],
    }
}

fn people() -> People {
    let k = |n: &str| NoteSigner::generate(n).unwrap();
    People {
        admin: k("admin.replay"),
        aph: k("aph.nurse.ana"),
        courier: k("courier.kim"),
        mfg: k("mfg.op.moe"),
    }
}

/// Enrolment to a receipt whose readings were left unset (as a pre-presence client sent
/// "seal broken, 0.0..0.0 C" by omission).
fn to_bare_receipt(p: &People) -> Vec<Ev<'_>> {
    let t0 = base_time();
    let aph = || vec![(&p.aph, Performed)];
    vec![
        Ev {
            at: t0,
            site: APH,
            detail: Detail::Enrolled(pb::Enrolled {
                coi_ref: "COI-7F3K-2291".into(),
                therapy: "CAR-T".into(),
                manufacturing_site: MFG.into(),
            }),
            signers: aph(),
        },
        Ev {
            at: t0 + HOUR,
            site: APH,
            detail: Detail::Collected(pb::Collected {
                din: "A999926123456".into(),
                product_code: "S1234000".into(),
                volume_ml: Some(250),
                collection_end_unix_nanos: Some(t0 + HOUR),
            }),
            signers: aph(),
        },
        Ev {
            at: t0 + 2 * HOUR,
            site: APH,
            detail: Detail::Packed(pb::Packed {
                shipper_id: "GRAI-1".into(),
                ..Default::default()
            }),
            signers: aph(),
        },
        Ev {
            at: t0 + 3 * HOUR,
            site: APH,
            detail: Detail::Shipped(pb::Shipped {
                from_site: APH.into(),
                to_site: MFG.into(),
                courier: "courier.kim".into(),
                shipper_id: "GRAI-1".into(),
                ..Default::default()
            }),
            signers: vec![(&p.aph, Performed), (&p.courier, Rcv)],
        },
        Ev {
            at: t0 + 20 * HOUR,
            site: MFG,
            detail: Detail::Received(pb::Received {
                from_site: APH.into(),
                shipper_id: "GRAI-1".into(),
                ..Default::default()
            }),
            signers: vec![(&p.mfg, Performed)],
        },
    ]
}

fn verify(b: &Bundle) -> Report {
    verify_bundle(
        b,
        &Options {
            log_key: None,
            admins: None,
            policy: Policy::default_autologous_car_t(),
            previous: None,
        },
    )
}

#[test]
fn format_0_entries_replay_under_their_own_rules() {
    let p = people();
    let r = verify(&bundle(&p, to_bare_receipt(&p), 0, SEC, 0));
    assert!(r.ok, "{:?}", r.failure);
    let receipt = r.timeline.last().unwrap();
    assert_eq!(receipt.event, "received");
    assert!(
        receipt.detail.contains("seal not recorded"),
        "{}",
        receipt.detail
    );
}

/// Issue 13: without the registry's signed head a later revocation could be left out; the
/// verdict says so exactly as for a bag chain without its head.
#[test]
fn registry_without_its_signed_head_is_end_not_proven() {
    let p = people();
    let r = verify(&bundle(&p, to_bare_receipt(&p), 0, SEC, 0));
    assert!(r.ok, "{:?}", r.failure);
    assert!(
        r.chain_ends_unproven.contains(&"keys".to_string()),
        "{:?}",
        r.chain_ends_unproven
    );
    let text = celltrail::bundle::report::text(&r, "bundle");
    assert!(text.contains("chain keys: END NOT PROVEN"), "{text}");
}

#[test]
fn the_same_entries_claiming_format_1_fail_naming_the_missing_readings() {
    let p = people();
    let r = verify(&bundle(&p, to_bare_receipt(&p), 1, SEC, 0));
    let f = r
        .failure
        .expect("format 1 never accepted a receipt without readings");
    assert_eq!(f.seq, Some(4), "{f}");
    assert!(
        f.reason
            .contains("missing: seal_intact, temp_min_c, temp_max_c, elapsed_seconds"),
        "{f}"
    );
}

#[test]
fn signature_older_than_the_window_fails_only_from_format_1() {
    let p = people();
    let mut events = to_bare_receipt(&p);
    events.truncate(2);
    let eight_days = 8 * 24 * HOUR;
    let r = verify(&bundle(&p, events, 1, eight_days, 0));
    let f = r.failure.expect("signed 8 days before acceptance");
    assert!(f.reason.contains("signature_age"), "{f}");
    let mut events = to_bare_receipt(&p);
    events.truncate(2);
    let r = verify(&bundle(&p, events, 0, eight_days, 0));
    assert!(r.ok, "{:?}", r.failure);
}

#[test]
fn verify_reports_a_signer_whose_key_had_expired_at_acceptance() {
    let p = people();
    let t0 = base_time();
    // Every key expires 30 minutes after the enrolment; the enrolment is accepted 2 h after
    // it was signed (inside the signature window, outside the key's validity).
    let events = || {
        let mut e = to_bare_receipt(&p);
        e.truncate(1);
        e
    };
    let r = verify(&bundle(&p, events(), 1, 2 * HOUR, t0 + HOUR / 2));
    let f = r
        .failure
        .expect("format 1 enforces expiry by acceptance time");
    assert!(f.reason.contains("expired at"), "{f}");
    let r = verify(&bundle(&p, events(), 0, 2 * HOUR, t0 + HOUR / 2));
    assert!(r.ok, "{:?}", r.failure);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("signer aph.nurse.ana had expired"),
        "{:?}",
        r.warnings
    );
}

/// Time order replayed offline (issue 13 point 2): a collection recorded as ending after the
/// `collected` event that reports it fails from format 1, naming the rule; format 0 entries,
/// written before the rule, still verify.
#[test]
fn collection_ending_after_its_event_fails_time_order_only_from_format_1() {
    let p = people();
    let events = || {
        let mut e = to_bare_receipt(&p);
        e.truncate(2);
        let at = e[1].at;
        if let Detail::Collected(c) = &mut e[1].detail {
            c.collection_end_unix_nanos = Some(at + HOUR);
        }
        e
    };
    let r = verify(&bundle(&p, events(), 1, SEC, 0));
    let f = r.failure.expect("the collection ended after its event");
    assert_eq!(f.seq, Some(1), "{f}");
    assert!(f.reason.contains("time_order"), "{f}");
    let r = verify(&bundle(&p, events(), 0, SEC, 0));
    assert!(r.ok, "{:?}", r.failure);
}
