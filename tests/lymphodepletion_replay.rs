//! Offline replay of the entry-format-2 rules (issue 13, points 6 and 9): lymphodepletion
//! before the thaw, and bodies without unknown fields. Each entry is judged under its own
//! `LogEntry.format_version`. A chain written before lymphodepletion was in the table
//! (format 1: thawed with no course recorded) still verifies; the same events claiming format 2
//! fail naming the rule, because format 2 never accepted them. The bundles are built entry by
//! entry and signed with the test's own log and admin keys (the auditor trusts the bundle's
//! anchors), so the rules are the only variable.

mod common;
mod lifecycle;

use celltrail::bundle::verify::{verify_bundle, Options, Report};
use celltrail::bundle::{b64, Bundle, Chain, Entry, FORMAT};
use celltrail::client::{sign_draft, Draft};
use celltrail::crypto::EventHash;
use celltrail::merkle;
use celltrail::note::{sign_note, Checkpoint, NoteSigner};
use celltrail::pb::{event_body::Detail, KeyRegistered, LogEntry, SignatureMeaning, SignedEvent};
use celltrail::policy::Policy;
use common::*;
use lifecycle::{happy_path, ChainCursor, Keys, APH, CLINIC, COURIER_SITE, MFG};
use prost::Message;

const SEC: i64 = 1_000_000_000;

/// A bundle of the key registrations and one chain of `events`, each custody entry written
/// with `format` and accepted a second after it was signed.
fn forge(admin: &NoteSigner, keys: &Keys, events: &[SignedEvent], format: u32) -> Bundle {
    let log = NoteSigner::generate("log.ld").unwrap();
    let t0 = base_time();
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let push = |entries: &mut Vec<Vec<u8>>, ev: &SignedEvent, accepted: i64, format: u32| {
        let index = entries.len() as u64;
        entries.push(
            LogEntry {
                body: ev.body.clone(),
                signatures: ev.signatures.clone(),
                accepted_at_unix_nanos: accepted,
                index,
                format_version: format,
            }
            .encode_to_vec(),
        );
    };
    let regs = [
        (&keys.aph, "apheresis_nurse", APH),
        (&keys.courier, "courier", COURIER_SITE),
        (&keys.mfg, "manufacturing", MFG),
        (&keys.qc, "qc", MFG),
        (&keys.qa, "qa", MFG),
        (&keys.pharm, "pharmacist", CLINIC),
        (&keys.nurse1, "nurse", CLINIC),
        (&keys.nurse2, "nurse", CLINIC),
    ];
    let mut prev = vec![0u8; 32];
    for (seq, (k, role, site)) in regs.iter().enumerate() {
        let ev = sign_draft(
            Draft {
                chain_id: "keys".into(),
                seq: seq as u64,
                prev_hash: prev,
                occurred_at: t0 - 3600 * SEC,
                site: String::new(),
                comment: String::new(),
                detail: Detail::KeyRegistered(KeyRegistered {
                    key_id: k.name.clone(),
                    public_key: k.key.verifying_key().as_bytes().to_vec(),
                    printed_name: k.name.clone(),
                    role: role.to_string(),
                    site: site.to_string(),
                    valid_from_unix_nanos: t0 - 365 * 86_400 * SEC,
                    valid_until_unix_nanos: 0,
                }),
            },
            &[(admin, SignatureMeaning::Performed)],
            t0 - 3600 * SEC,
        );
        prev = EventHash::of_body(&ev.body).0.to_vec();
        push(&mut entries, &ev, t0 - 3600 * SEC, 1);
    }
    let n_keys = entries.len();
    for ev in events {
        let signed = ev.signatures.iter().map(|s| s.signed_at_unix_nanos).max();
        push(&mut entries, ev, signed.unwrap() + SEC, format);
    }
    let leaves: Vec<_> = entries.iter().map(|b| merkle::leaf_hash(b)).collect();
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
        size: entries.len() as u64,
        root: merkle::root(&leaves),
        extensions: vec![],
    };
    Bundle {
        format: FORMAT.into(),
        exported_at: "2026-01-01T00:00:00Z".into(),
        anchors: celltrail::bundle::export::anchors(&log.verifier(), &[admin.verifier()]),
        checkpoint: sign_note(&cp.to_text(), &[&log]).unwrap(),
        tree_size: entries.len() as u64,
        registry: (0..n_keys).map(entry).collect(),
        registry_head: None,
        chains: vec![Chain {
            chain_id: "BAG-LD".into(),
            entries: (n_keys..entries.len()).map(entry).collect(),
            head: None,
        }],
        consistency: vec![],
        later_checkpoints: vec![],
        log_links: vec![],
    }
}

/// The happy lifecycle signed as chain BAG-LD, with or without its lymphodepletion events.
fn lifecycle(keys: &Keys, with_lymphodepletion: bool) -> Vec<SignedEvent> {
    let mut cursor = ChainCursor::new("BAG-LD", base_time());
    happy_path(keys)
        .into_iter()
        .filter(|s| {
            with_lymphodepletion
                || !matches!(
                    s.detail,
                    Detail::LymphodepletionStarted(_) | Detail::LymphodepletionCompleted(_)
                )
        })
        .map(|s| cursor.sign(s))
        .collect()
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
fn a_format_1_chain_without_lymphodepletion_still_verifies() {
    let (admin, keys) = (signer("admin.ld"), Keys::new());
    let r = verify(&forge(&admin, &keys, &lifecycle(&keys, false), 1));
    assert!(r.ok, "{:?}", r.failure);
    assert_eq!(r.timeline.last().unwrap().state, "Infused");
}

#[test]
fn the_same_events_claiming_format_2_fail_at_the_thaw() {
    let (admin, keys) = (signer("admin.ld"), Keys::new());
    let r = verify(&forge(&admin, &keys, &lifecycle(&keys, false), 2));
    assert!(!r.ok);
    let f = r.failure.expect("a failure");
    assert_eq!(f.seq, Some(23), "{f}");
    assert!(
        f.reason
            .contains("rule lymphodepletion_completed: in state Stored expected a lymphodepletion course completed"),
        "{f}"
    );
}

#[test]
fn a_format_2_chain_with_lymphodepletion_verifies() {
    let (admin, keys) = (signer("admin.ld"), Keys::new());
    let r = verify(&forge(&admin, &keys, &lifecycle(&keys, true), 2));
    assert!(r.ok, "{:?}", r.failure);
    let events: Vec<&str> = r.timeline.iter().map(|t| t.event.as_str()).collect();
    assert_eq!(
        events[23..25],
        ["lymphodepletion_started", "lymphodepletion_completed"]
    );
}

/// The last event (the infusion) with field 99 added to its body and signed again.
fn with_unknown_field(keys: &Keys, mut events: Vec<SignedEvent>) -> Vec<SignedEvent> {
    let last = events.pop().unwrap();
    let mut body = last.body.clone();
    body.extend_from_slice(&[0x98, 0x06, 0x01]);
    let hash = EventHash::of_body(&body);
    let s = &last.signatures[0];
    let sig = celltrail::crypto::sign_event(
        &keys.nurse1.key,
        &keys.nurse1.name,
        &hash,
        SignatureMeaning::Performed,
        s.signed_at_unix_nanos,
    );
    events.push(SignedEvent {
        body,
        signatures: vec![sig],
    });
    events
}

#[test]
fn an_unknown_body_field_fails_verify_from_format_2_only() {
    let (admin, keys) = (signer("admin.ld"), Keys::new());
    let events = with_unknown_field(&keys, lifecycle(&keys, false));
    // Written before the rule (format 1): verifies as it was accepted.
    let r = verify(&forge(&admin, &keys, &events, 1));
    assert!(r.ok, "{:?}", r.failure);
    let events = with_unknown_field(&keys, lifecycle(&keys, true));
    let r = verify(&forge(&admin, &keys, &events, 2));
    let f = r.failure.expect("format 2 never accepted it");
    assert!(
        f.reason
            .contains("fields this server does not know (EventBody: field 99)"),
        "{f}"
    );
    assert_eq!(f.seq, Some(27), "{f}");
}
