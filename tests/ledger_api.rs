//! The ledger service end to end: real server on 127.0.0.1:0, real sled directory, gRPC client.
//! Every bad input gets its precise status and leaves the store unchanged.

mod common;

use celltrail::client::Client;
use celltrail::crypto::EventHash;
use celltrail::note::NoteSigner;
use celltrail::pb::{
    event_body::Detail,
    Collected, Enrolled, GetChainRequest, GetHeadRequest, KeyRevoked, Packed, Received, Shipped,
    SignatureMeaning::{Performed, Received as ReceivedMeaning},
    SignedEvent,
};
use common::*;
use tonic::Code;

const HOUR: i64 = 3600 * 1_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    server: TestServer,
    c: Client,
    nurse: NoteSigner,
    courier: NoteSigner,
    mfg: NoteSigner,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let nurse = signer("nurse.ada");
    let courier = signer("courier.bo");
    let mfg = signer("mfg.cy");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    register(&mut c, &server.admin, &courier, "courier", "COURIER-1").await;
    register(&mut c, &server.admin, &mfg, "manufacturing", "MFG-1").await;
    Fixture {
        _dir: dir,
        server,
        c,
        nurse,
        courier,
        mfg,
    }
}

/// The first five custody events of a bag: enrolment to receipt at manufacturing.
type Step<'a> = (
    i64,
    &'static str,
    Detail,
    Vec<(&'a NoteSigner, celltrail::pb::SignatureMeaning)>,
);

fn first_five(f: &Fixture) -> Vec<Step<'_>> {
    let t0 = base_time();
    vec![
        (
            t0,
            "HOSP-A",
            Detail::Enrolled(Enrolled {
                coi_ref: "COI-7F3A-2291".into(),
                therapy: "CAR-T anti-CD19".into(),
                manufacturing_site: "MFG-1".into(),
            }),
            vec![(&f.nurse, Performed)],
        ),
        (
            t0 + HOUR,
            "HOSP-A",
            Detail::Collected(Collected {
                din: "A999926123456".into(),
                product_code: "S1234000".into(),
                volume_ml: Some(250),
                collection_end_unix_nanos: Some(t0 + HOUR),
            }),
            vec![(&f.nurse, Performed)],
        ),
        (
            t0 + 2 * HOUR,
            "HOSP-A",
            Detail::Packed(Packed {
                shipper_id: "8003095060001234561001".into(),
                logger_id: "LOG-77".into(),
                seal_id: "SEAL-1".into(),
            }),
            vec![(&f.nurse, Performed)],
        ),
        (
            t0 + 3 * HOUR,
            "HOSP-A",
            Detail::Shipped(Shipped {
                from_site: "HOSP-A".into(),
                to_site: "MFG-1".into(),
                courier: "courier.bo".into(),
                shipper_id: "8003095060001234561001".into(),
                logger_id: "LOG-77".into(),
                condition: "2-8C".into(),
            }),
            vec![(&f.nurse, Performed), (&f.courier, ReceivedMeaning)],
        ),
        (
            t0 + 20 * HOUR,
            "MFG-1",
            Detail::Received(Received {
                from_site: "HOSP-A".into(),
                seal_intact: Some(true),
                temp_min_c: Some(3.5),
                temp_max_c: Some(6.0),
                elapsed_seconds: Some(600),
                shipper_id: "8003095060001234561001".into(),
            }),
            vec![(&f.mfg, Performed)],
        ),
    ]
}

/// Appends the first `n` events of `first_five` to `chain`, returning the signed events.
async fn append_prefix(f: &mut Fixture, chain: &str, n: usize) -> Vec<SignedEvent> {
    let mut prev = vec![0u8; 32];
    let mut out = Vec::new();
    let events = first_five(f);
    let mut signed = Vec::new();
    for (seq, (t, site, detail, signers)) in events.into_iter().take(n).enumerate() {
        let ev = signed_at_link(chain, seq as u64, prev.clone(), t, site, detail, &signers);
        prev = EventHash::of_body(&ev.body).0.to_vec();
        signed.push(ev);
    }
    for ev in signed {
        let r =
            f.c.append(ev.clone())
                .await
                .unwrap_or_else(|s| panic!("append: {s:?}"))
                .into_inner();
        assert!(!r.duplicate);
        assert!(
            r.checkpoint.contains(&format!("\n{}\n", r.tree_size)),
            "checkpoint names the tree size: {}",
            r.checkpoint
        );
        out.push(ev);
    }
    out
}

fn event_at(f: &Fixture, chain: &str, seq: u64, prev: Vec<u8>, k: usize) -> SignedEvent {
    let (t, site, detail, signers) = first_five(f).into_iter().nth(k).unwrap();
    signed_at_link(chain, seq, prev, t, site, detail, &signers)
}

async fn expect_rejected(f: &mut Fixture, ev: SignedEvent, code: Code, needle: &str) -> String {
    let before = snapshot(&mut f.c).await;
    let err = f.c.append(ev).await.expect_err("must be rejected");
    assert_eq!(
        err.code(),
        code,
        "status {:?}: {}",
        err.code(),
        err.message()
    );
    assert!(
        err.message().contains(needle),
        "message {:?} should contain {needle:?}",
        err.message()
    );
    assert_eq!(
        snapshot(&mut f.c).await,
        before,
        "a rejected append must not change the store"
    );
    err.message().to_string()
}

#[tokio::test]
async fn appends_chain_of_five_from_several_signers_and_reads_it_back_after_restart() {
    let mut f = fixture().await;
    let sent = append_prefix(&mut f, "BAG-1", 5).await;
    let chain =
        f.c.get_chain(GetChainRequest {
            chain_id: "BAG-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chain.entries.len(), 5);
    let head = chain.head.clone().unwrap();
    assert_eq!(
        (head.seq, head.length, head.state.as_str()),
        (4, 5, "AtManufacturing")
    );
    for (e, ev) in chain.entries.iter().zip(&sent) {
        let entry =
            <celltrail::pb::LogEntry as prost::Message>::decode(e.entry.as_slice()).unwrap();
        assert_eq!(
            entry.body, ev.body,
            "the server stores the exact body bytes"
        );
        assert_eq!(entry.signatures, ev.signatures);
        assert_eq!(e.event_hash, EventHash::of_body(&ev.body).0.to_vec());
    }
    let all_before = snapshot(&mut f.c).await;

    let dir = f.server.data_dir.clone();
    f.server.stop().await;
    let server = TestServer::start(&dir).await;
    let mut c = server.client().await;
    let again = c
        .get_chain(GetChainRequest {
            chain_id: "BAG-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, chain, "chain identical after restart");
    assert_eq!(snapshot(&mut c).await, all_before);
    // The restarted server keeps appending where it left off.
    let head = c
        .get_head(GetHeadRequest {
            chain_id: "BAG-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.seq, 4);
    // The custody state is rebuilt from the stored chain: the policy still knows where the
    // bag is (only the manufacturing site may act) and what it may do next.
    let at = base_time() + 21 * HOUR;
    let packed = Detail::Packed(Packed {
        shipper_id: "S".into(),
        logger_id: "L".into(),
        seal_id: "X".into(),
    });
    let wrong_site = signed_at_link(
        "BAG-1",
        5,
        head.event_hash.clone(),
        at,
        "HOSP-A",
        packed,
        &[(&f.nurse, Performed)],
    );
    let err = c.append(wrong_site).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("AtManufacturing"),
        "{}",
        err.message()
    );
    let hold = Detail::Hold(celltrail::pb::Hold {
        reason: "label check".into(),
    });
    let hold = signed_at_link(
        "BAG-1",
        5,
        head.event_hash,
        at,
        "MFG-1",
        hold,
        &[(&f.mfg, Performed)],
    );
    c.append(hold).await.unwrap();
    let after = c
        .get_head(GetHeadRequest {
            chain_id: "BAG-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((after.seq, after.state.as_str()), (5, "AtManufacturing"));
    server.stop().await;
}

/// The bag index behind FindChainsByBag: the one chain naming a bag (a second chain naming it
/// is refused, ALREADY_EXISTS naming the first), after a restart too; and each bad lookup gets
/// its own status.
#[tokio::test]
async fn find_chains_by_bag_finds_the_one_chain_naming_the_bag_and_refuses_bad_lookups() {
    use celltrail::pb::FindChainsByBagRequest;
    let mut f = fixture().await;
    append_prefix(&mut f, "BAG-B1", 2).await; // enrolled, collected A999926123456
    let sent = append_prefix(&mut f, "BAG-A0", 1).await;
    let second = event_at(
        &f,
        "BAG-A0",
        1,
        EventHash::of_body(&sent[0].body).0.to_vec(),
        1,
    );
    expect_rejected(
        &mut f,
        second,
        Code::AlreadyExists,
        "bag A999926123456 is already named by chain BAG-B1",
    )
    .await;
    let dir = f.server.data_dir.clone();
    f.server.stop().await;
    let server = TestServer::start(&dir).await;
    let mut c = server.client().await;

    let find = |din: &str| FindChainsByBagRequest { din: din.into() };
    let found = c
        .find_chains_by_bag(find("A999926123456"))
        .await
        .unwrap()
        .into_inner()
        .chains;
    let got: Vec<(&str, u64)> = found.iter().map(|h| (h.chain_id.as_str(), h.seq)).collect();
    assert_eq!(got, vec![("BAG-B1", 1)]);

    let e = c
        .find_chains_by_bag(find("A999926123457"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    assert!(
        e.message().contains("no chain names bag A999926123457"),
        "{}",
        e.message()
    );
    for bad in [String::new(), "A".repeat(65), "A999926123456\0".into()] {
        let e = c.find_chains_by_bag(find(&bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(
            e.message().contains("bag DIN must be 1-64 characters"),
            "{}",
            e.message()
        );
    }
}

#[tokio::test]
async fn identical_resubmission_returns_original_receipt_and_adds_nothing() {
    let mut f = fixture().await;
    let ev = event_at(&f, "BAG-2", 0, vec![0; 32], 0);
    let first = f.c.append(ev.clone()).await.unwrap().into_inner();
    let before = snapshot(&mut f.c).await;
    let again = f.c.append(ev).await.unwrap().into_inner();
    assert!(again.duplicate);
    assert_eq!(
        (
            again.index,
            &again.event_hash,
            again.seq,
            again.accepted_at_unix_nanos
        ),
        (
            first.index,
            &first.event_hash,
            first.seq,
            first.accepted_at_unix_nanos
        )
    );
    assert_eq!(snapshot(&mut f.c).await, before);
}

#[tokio::test]
async fn rejects_bad_signature_with_invalid_argument() {
    let mut f = fixture().await;
    let mut ev = event_at(&f, "BAG-3", 0, vec![0; 32], 0);
    ev.signatures[0].signature[10] ^= 0x01;
    expect_rejected(&mut f, ev, Code::InvalidArgument, "does not verify").await;
}

#[tokio::test]
async fn rejects_signature_by_unregistered_key() {
    let mut f = fixture().await;
    let stranger = signer("nurse.unknown");
    let (t, site, detail, _) = first_five(&f).into_iter().next().unwrap();
    let ev = signed_at_link(
        "BAG-4",
        0,
        vec![0; 32],
        t,
        site,
        detail,
        &[(&stranger, Performed)],
    );
    expect_rejected(
        &mut f,
        ev,
        Code::PermissionDenied,
        "nurse.unknown is not registered",
    )
    .await;
}

#[tokio::test]
async fn rejects_signature_by_revoked_key() {
    let mut f = fixture().await;
    let revoked_at = base_time() - HOUR;
    revoke(&mut f, "nurse.ada", revoked_at, "badge lost")
        .await
        .unwrap();
    let ev = event_at(&f, "BAG-5", 0, vec![0; 32], 0);
    expect_rejected(&mut f, ev, Code::PermissionDenied, "was revoked").await;
    // Revoking twice is refused too.
    let err = revoke(&mut f, "nurse.ada", revoked_at, "again")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already revoked"), "{err}");
}

/// Revokes `key_id` from `at` on, as the fixture's admin.
async fn revoke(f: &mut Fixture, key_id: &str, at: i64, reason: &str) -> anyhow::Result<()> {
    let admin = f.server.admin.clone();
    let detail = Detail::KeyRevoked(KeyRevoked {
        key_id: key_id.into(),
        revoked_at_unix_nanos: at,
        reason: reason.into(),
    });
    admin_event(&mut f.c, &admin, detail).await.map(|_| ())
}

/// SECURITY.md, stolen key: a signature dated before the revocation but arriving after it is
/// refused (the date is the signer's claim); a revocation planned for later does not stop the
/// key before its time.
#[tokio::test]
async fn rejects_signature_dated_before_revocation_but_arriving_after_it() {
    let mut f = fixture().await;
    // The enrolment below is signed at base_time(); the revocation takes effect an hour later
    // (40 days ago), so by the signature's own date the key was still valid.
    revoke(&mut f, "nurse.ada", base_time() + HOUR, "badge stolen")
        .await
        .unwrap();
    let (t, site, detail, signers) = first_five(&f).into_iter().next().unwrap();
    let ev = signed_explicitly("BAG-6", 0, vec![0; 32], t, t, site, detail, &signers);
    let msg = expect_rejected(&mut f, ev, Code::PermissionDenied, "was revoked").await;
    assert!(
        msg.contains("nothing it signs is accepted after that, even a signature dated earlier")
            && msg.contains("badge stolen"),
        "{msg}"
    );

    // Revoking again is refused. Positive control: a key retired from tomorrow signs today.
    revoke(&mut f, "nurse.ada", base_time() + HOUR, "again")
        .await
        .expect_err("already revoked");
    let tomorrow = celltrail::time::now_nanos() + 24 * HOUR;
    let nurse2 = signer("nurse.eve");
    register(
        &mut f.c,
        &f.server.admin,
        &nurse2,
        "apheresis_nurse",
        "HOSP-A",
    )
    .await;
    revoke(&mut f, "nurse.eve", tomorrow, "leaves the unit tomorrow")
        .await
        .unwrap();
    let (t, site, detail, _) = first_five(&f).into_iter().next().unwrap();
    let ev = signed_at_link(
        "BAG-7",
        0,
        vec![0; 32],
        t,
        site,
        detail,
        &[(&nurse2, celltrail::pb::SignatureMeaning::Performed)],
    );
    f.c.append(ev)
        .await
        .expect("a key retired tomorrow signs today");
}

#[tokio::test]
async fn rejects_signature_outside_key_validity() {
    let mut f = fixture().await;
    let temp = signer("nurse.temp");
    let now = celltrail::time::now_nanos();
    let from = now - 2 * HOUR;
    register_with(
        &mut f.c,
        &f.server.admin.clone(),
        &temp,
        "apheresis_nurse",
        "HOSP-A",
        from,
        now + 24 * HOUR,
    )
    .await;
    let (t, site, detail, _) = first_five(&f).into_iter().next().unwrap();
    // Signed before the key's validity starts.
    let ev = signed_explicitly(
        "BAG-6",
        0,
        vec![0; 32],
        t,
        from - HOUR,
        site,
        detail.clone(),
        &[(&temp, Performed)],
    );
    expect_rejected(&mut f, ev, Code::PermissionDenied, "outside").await;
    // Inside validity (and dated after the key became valid) it is accepted.
    let ev = signed_explicitly(
        "BAG-6",
        0,
        vec![0; 32],
        from + HOUR / 2,
        from + HOUR,
        site,
        detail,
        &[(&temp, Performed)],
    );
    f.c.append(ev).await.unwrap();
}

/// Issue 13: a key valid 13:58-14:58 signing at 15:58 with signed_at backdated to 14:35 is
/// refused: expiry is enforced by the time the log accepts the event, like revocation.
#[tokio::test]
async fn rejects_backdated_signature_by_expired_key() {
    let mut f = fixture().await;
    let temp = signer("nurse.temp");
    let now = celltrail::time::now_nanos();
    let (from, until) = (now - 2 * HOUR, now - HOUR);
    register_with(
        &mut f.c,
        &f.server.admin.clone(),
        &temp,
        "apheresis_nurse",
        "HOSP-A",
        from,
        until,
    )
    .await;
    let (t, site, detail, _) = first_five(&f).into_iter().next().unwrap();
    let backdated = from + 37 * 60 * 1_000_000_000;
    let ev = signed_explicitly(
        "BAG-6",
        0,
        vec![0; 32],
        t,
        backdated,
        site,
        detail,
        &[(&temp, Performed)],
    );
    let msg = expect_rejected(&mut f, ev, Code::PermissionDenied, "expired at").await;
    assert!(
        msg.contains("nurse.temp") && msg.contains("even a signature dated earlier"),
        "{msg}"
    );
}

/// Issue 13: a signature made more than the policy's window (7 days) before the log accepts
/// it is refused, and so is one dated 1970.
#[tokio::test]
async fn rejects_signature_older_than_the_window() {
    let mut f = fixture().await;
    let now = celltrail::time::now_nanos();
    let (t, site, detail, signers) = first_five(&f).into_iter().next().unwrap();
    let events: Vec<SignedEvent> = [t, 1_000_000_000, now - 6 * 24 * HOUR]
        .into_iter()
        .map(|signed_at| {
            signed_explicitly(
                "BAG-6",
                0,
                vec![0; 32],
                t.min(signed_at),
                signed_at,
                site,
                detail.clone(),
                &signers,
            )
        })
        .collect();
    let [old, epoch, ev] = <[SignedEvent; 3]>::try_from(events).unwrap();
    let msg = expect_rejected(&mut f, old, Code::FailedPrecondition, "signature_age").await;
    assert!(msg.contains("at most 7.0 days"), "{msg}");
    // 1970 is before the key's valid_from as well: that check comes first.
    expect_rejected(
        &mut f,
        epoch,
        Code::PermissionDenied,
        "1970-01-01T00:00:01Z is outside",
    )
    .await;
    f.c.append(ev).await.expect("6 days is inside the window");
}

#[tokio::test]
async fn rejects_wrong_prev_hash_naming_current_head() {
    let mut f = fixture().await;
    let sent = append_prefix(&mut f, "BAG-7", 2).await;
    let head_hash = hex::encode(EventHash::of_body(&sent[1].body).0);
    let ev = event_at(&f, "BAG-7", 2, vec![7; 32], 2);
    let msg = expect_rejected(&mut f, ev, Code::FailedPrecondition, "stale prev_hash").await;
    assert!(
        msg.contains("seq 1") && msg.contains(&head_hash),
        "names the head: {msg}"
    );
}

#[tokio::test]
async fn rejects_gap_in_seq() {
    let mut f = fixture().await;
    let sent = append_prefix(&mut f, "BAG-8", 2).await;
    let ev = event_at(
        &f,
        "BAG-8",
        3,
        EventHash::of_body(&sent[1].body).0.to_vec(),
        2,
    );
    let msg = expect_rejected(&mut f, ev, Code::FailedPrecondition, "gap").await;
    // The message names the head a station must rebase on: its seq and its hash.
    let head_hash = hex::encode(EventHash::of_body(&sent[1].body).0);
    assert!(
        msg.contains(&format!("is at seq 1 (head hash {head_hash})"))
            && msg.contains("the next event is seq 2"),
        "{msg}"
    );
}

#[tokio::test]
async fn rejects_second_event_claiming_existing_seq() {
    let mut f = fixture().await;
    let sent = append_prefix(&mut f, "BAG-9", 2).await;
    // A different event at seq 1 (a fork).
    let mut other = first_five(&f).into_iter().nth(1).unwrap();
    other.0 += 1_000_000_000;
    let ev = signed_at_link(
        "BAG-9",
        1,
        EventHash::of_body(&sent[0].body).0.to_vec(),
        other.0,
        other.1,
        other.2,
        &other.3,
    );
    expect_rejected(&mut f, ev, Code::AlreadyExists, "already taken").await;
}

#[tokio::test]
async fn rejects_malformed_event_body_bytes() {
    let mut f = fixture().await;
    let mut ev = event_at(&f, "BAG-10", 0, vec![0; 32], 0);
    ev.body = vec![0xFF, 0xFF, 0xFF, 0x01];
    expect_rejected(
        &mut f,
        ev,
        Code::InvalidArgument,
        "not a valid celltrail.v1.EventBody",
    )
    .await;
}

#[tokio::test]
async fn rejects_entry_over_64_kib() {
    let mut f = fixture().await;
    let oversized = |f: &Fixture, comment_len: usize| {
        let (t, site, detail, signers) = first_five(f).into_iter().next().unwrap();
        let draft = celltrail::client::Draft {
            chain_id: "BAG-11".into(),
            seq: 0,
            prev_hash: vec![0; 32],
            occurred_at: t,
            site: site.into(),
            comment: "x".repeat(comment_len),
            detail,
        };
        celltrail::client::sign_draft(draft, &signers, t)
    };
    let ev = oversized(&f, 70_000);
    expect_rejected(&mut f, ev, Code::ResourceExhausted, "65536").await;
    // A body just under the limit whose entry (body + signatures + envelope) is over it.
    let ev = oversized(&f, 65_400);
    assert!(ev.body.len() <= 65_536);
    expect_rejected(&mut f, ev, Code::ResourceExhausted, "limit").await;
}

#[tokio::test]
async fn rejects_empty_signature_list() {
    let mut f = fixture().await;
    let mut ev = event_at(&f, "BAG-12", 0, vec![0; 32], 0);
    ev.signatures.clear();
    expect_rejected(&mut f, ev, Code::InvalidArgument, "no signatures").await;
}

#[tokio::test]
async fn rejects_unknown_chain_for_seq_above_zero() {
    let mut f = fixture().await;
    let ev = event_at(&f, "BAG-13", 1, vec![1; 32], 1);
    expect_rejected(&mut f, ev, Code::FailedPrecondition, "does not exist").await;
}

#[tokio::test]
async fn rejects_key_events_signed_by_non_admin_and_outside_keys_chain() {
    let mut f = fixture().await;
    let nurse = f.nurse.clone();
    // A nurse cannot register keys.
    let err = admin_event(
        &mut f.c,
        &nurse,
        Detail::KeyRevoked(KeyRevoked {
            key_id: "mfg.cy".into(),
            revoked_at_unix_nanos: 1,
            reason: "x".into(),
        }),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("PermissionDenied")
            && err.to_string().contains("not an operator admin key"),
        "{err}"
    );
    // Key events on a bag chain are refused.
    let ev = signed_at_link(
        "BAG-14",
        0,
        vec![0; 32],
        base_time(),
        "HOSP-A",
        Detail::KeyRevoked(KeyRevoked {
            key_id: "mfg.cy".into(),
            revoked_at_unix_nanos: 1,
            reason: "x".into(),
        }),
        &[(&nurse, Performed)],
    );
    expect_rejected(
        &mut f,
        ev,
        Code::InvalidArgument,
        "belong on the keys chain",
    )
    .await;
}

#[tokio::test]
async fn get_entries_pages_through_the_log() {
    let mut f = fixture().await;
    append_prefix(&mut f, "BAG-15", 5).await;
    let page =
        f.c.get_entries(celltrail::pb::GetEntriesRequest { start: 2, limit: 3 })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(page.tree_size, 8, "3 key registrations + 5 events");
    assert_eq!(
        page.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(page.next, 5);
    let past =
        f.c.get_entries(celltrail::pb::GetEntriesRequest {
            start: 99,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(past.entries.is_empty());
    assert_eq!(past.next, 8);
    let missing =
        f.c.get_head(GetHeadRequest {
            chain_id: "NOPE".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn append_stream_answers_in_order_and_a_bad_event_does_not_end_it() {
    let mut f = fixture().await;
    let mut prev = vec![0u8; 32];
    let mut events = Vec::new();
    for (seq, (t, site, detail, signers)) in first_five(&f).into_iter().enumerate() {
        let ev = signed_at_link(
            "STREAM-1",
            seq as u64,
            prev.clone(),
            t,
            site,
            detail,
            &signers,
        );
        prev = EventHash::of_body(&ev.body).0.to_vec();
        events.push(ev);
    }
    let mut bad = event_at(&f, "STREAM-2", 0, vec![0; 32], 0);
    bad.signatures[0].signature[0] ^= 1;
    events.insert(2, bad);
    let before = snapshot(&mut f.c).await.len();
    let mut results =
        f.c.append_stream(tokio_stream::iter(events))
            .await
            .unwrap()
            .into_inner();
    let mut got = Vec::new();
    while let Some(r) = results.message().await.unwrap() {
        got.push(r);
    }
    assert_eq!(
        got.iter().map(|r| r.position).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    assert_eq!(
        got[2].code,
        Code::InvalidArgument as i32,
        "{}",
        got[2].message
    );
    assert!(got[2].receipt.is_none());
    let seqs: Vec<u64> = got
        .iter()
        .filter_map(|r| r.receipt.as_ref().map(|x| x.seq))
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    assert_eq!(snapshot(&mut f.c).await.len(), before + 5);
}

#[tokio::test]
async fn full_queue_answers_resource_exhausted_and_loses_nothing_accepted() {
    use celltrail::ledger::LedgerOptions;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = celltrail::server::ServeOptions::new(dir.path());
    opts.ledger = LedgerOptions {
        queue_capacity: 1,
        max_group: 1,
        ..Default::default()
    };
    let opened = celltrail::server::open(&opts).unwrap();
    let ledger = opened.ledger;
    let admin = celltrail::keys::read_key_file(&dir.path().join("admin.key")).unwrap();
    let nurse = signer("nurse.flood");
    let reg = celltrail::client::sign_draft(
        celltrail::client::Draft {
            chain_id: "keys".into(),
            seq: 0,
            prev_hash: vec![0; 32],
            occurred_at: base_time(),
            site: String::new(),
            comment: String::new(),
            detail: Detail::KeyRegistered(celltrail::pb::KeyRegistered {
                key_id: nurse.name.clone(),
                public_key: nurse.key.verifying_key().as_bytes().to_vec(),
                printed_name: "N".into(),
                role: "apheresis_nurse".into(),
                site: "HOSP-A".into(),
                valid_from_unix_nanos: base_time() - HOUR,
                valid_until_unix_nanos: 0,
            }),
        },
        &[(&admin, Performed)],
        base_time(),
    );
    ledger.append_wait(reg).await.unwrap();
    // Hold the writer for a second: the pipeline fills, then the bounded queue.
    let blocker = {
        let l = ledger.clone();
        tokio::spawn(async move {
            l.at_group_boundary(|| std::thread::sleep(std::time::Duration::from_secs(1)))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let enrol = |i: usize| {
        let detail = Detail::Enrolled(Enrolled {
            coi_ref: format!("COI-{i:04}"),
            therapy: String::new(),
            manufacturing_site: "MFG-1".into(),
        });
        signed_at_link(
            &format!("FLOOD-{i}"),
            0,
            vec![0; 32],
            base_time(),
            "HOSP-A",
            detail,
            &[(&nurse, Performed)],
        )
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let l = ledger.clone();
        let ev = enrol(i);
        tasks.push(tokio::spawn(async move { l.append(ev).await }));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (mut accepted, mut busy) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) => {
                let status = tonic::Status::from(e);
                assert_eq!(
                    status.code(),
                    Code::ResourceExhausted,
                    "{}",
                    status.message()
                );
                assert!(status.message().contains("busy"), "{}", status.message());
                busy += 1;
            }
        }
    }
    blocker.await.unwrap().unwrap();
    assert!(busy > 0, "a full queue must refuse with RESOURCE_EXHAUSTED");
    assert!(accepted > 0);
    assert_eq!(
        ledger.store().tree_size().unwrap(),
        1 + accepted as u64,
        "every accepted event stored, no refused one"
    );
    ledger.shutdown_async().await;
}

/// Issue 13: `key register --role phramacist` (a typo) was accepted; the error appeared when
/// that person first tried to sign. A role the policy table does not name, or a malformed
/// site, is refused at registration with the list of valid roles.
#[tokio::test]
async fn rejects_key_registration_with_a_role_or_site_the_policy_does_not_know() {
    let mut f = fixture().await;
    let who = signer("pharm.typo");
    let reg = |role: &str, site: &str| {
        Detail::KeyRegistered(celltrail::pb::KeyRegistered {
            key_id: who.name.clone(),
            public_key: who.key.verifying_key().as_bytes().to_vec(),
            printed_name: "P. Typo".into(),
            role: role.into(),
            site: site.into(),
            valid_from_unix_nanos: base_time(),
            valid_until_unix_nanos: 0,
        })
    };
    let admin = f.server.admin.clone();
    let before = snapshot(&mut f.c).await;
    let err = admin_event(&mut f.c, &admin, reg("phramacist", "CLINIC-1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(
        err.contains("\"phramacist\"")
            && err.contains(
                "one of [apheresis_nurse, courier, manufacturing, nurse, pharmacist, physician, qa, qc]"
            ),
        "{err}"
    );
    let err = admin_event(&mut f.c, &admin, reg("pharmacist", "CLINIC 1; DROP"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("InvalidArgument") && err.contains("key_site"),
        "{err}"
    );
    assert_eq!(snapshot(&mut f.c).await, before, "nothing was recorded");
    admin_event(&mut f.c, &admin, reg("pharmacist", "CLINIC-1"))
        .await
        .expect("a role of the table and a site code");
}

/// Issue 13: there was no way to list the registry. `celltrail key list --json` shows each
/// key's name, role, site, printed name, validity, revocation and who registered it.
#[tokio::test]
async fn key_list_shows_the_registry_with_revocations() {
    let mut f = fixture().await;
    let revoked_at = base_time() - HOUR;
    revoke(&mut f, "nurse.ada", revoked_at, "badge lost")
        .await
        .unwrap();
    let addr = f.server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_celltrail"))
            .args(["key", "list", "--json", "--server", &addr])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["key_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["nurse.ada", "courier.bo", "mfg.cy"]);
    let ada = &rows[0];
    assert_eq!(ada["role"], "apheresis_nurse");
    assert_eq!(ada["site"], "HOSP-A");
    assert_eq!(ada["printed_name"], "nurse.ada (test)");
    assert_eq!(ada["revoke_reason"], "badge lost");
    assert_eq!(
        ada["revoked_at"].as_str().unwrap(),
        celltrail::time::rfc3339(revoked_at)
    );
    assert!(ada["valid_until"].is_null());
    // Registered valid from a year before the base time (the date: the base time moves on).
    let from = celltrail::time::rfc3339(base_time() - 365 * 24 * HOUR);
    assert_eq!(ada["valid_from"].as_str().unwrap()[..10], from[..10]);
    assert_eq!(
        ada["registered_by"][0].as_str().unwrap(),
        f.server.admin.name
    );
    assert!(rows[1]["revoked_at"].is_null());
}

/// Issue 13 point 8: an operator admin key signing a custody event is told that admin keys
/// sign only the keys chain (it was "key admin is not registered").
#[tokio::test]
async fn admin_key_on_a_bag_chain_is_told_what_admin_keys_sign() {
    let mut f = fixture().await;
    let (t, site, detail, _) = first_five(&f).into_iter().next().unwrap();
    let admin = f.server.admin.clone();
    let mut ev = signed_at_link(
        "BAG-ADM",
        0,
        vec![0; 32],
        t,
        site,
        detail,
        &[(&admin, Performed)],
    );
    ev.signatures.truncate(1);
    let msg = expect_rejected(
        &mut f,
        ev,
        Code::PermissionDenied,
        "is an operator admin key",
    )
    .await;
    assert!(msg.contains("admin keys sign only the keys chain"), "{msg}");
}

/// Issue 13 point 8: identifiers a client sent are echoed in errors cut to 64 characters.
#[tokio::test]
async fn ids_echoed_in_errors_are_cut_to_64_characters() {
    let mut f = fixture().await;
    let long_key = format!("k{}", "x".repeat(5000));
    let (t, site, detail, _) = first_five(&f).into_iter().next().unwrap();
    let stranger = signer(&long_key);
    let ev = signed_at_link(
        "BAG-LONG",
        0,
        vec![0; 32],
        t,
        site,
        detail,
        &[(&stranger, Performed)],
    );
    let msg =
        f.c.append(ev)
            .await
            .expect_err("unknown key")
            .message()
            .to_string();
    assert!(msg.contains(&format!("k{}…", "x".repeat(63))), "{msg}");
    assert!(msg.len() < 600, "{} bytes: {msg}", msg.len());
    // A read naming a chain that does not exist.
    let long_chain = "C".repeat(100_000);
    let err =
        f.c.get_head(GetHeadRequest {
            chain_id: long_chain,
        })
        .await
        .expect_err("no such chain");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().len() < 200, "{}", err.message());
    assert!(err.message().contains(&format!("{}…", "C".repeat(64))));
}

/// A message of the wrong protobuf type: `SignedEvent.body` (field 1) sent as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct NotASignedEvent {
    #[prost(uint64, tag = "1")]
    body: u64,
}

/// Issue 13 point 8: bytes that are not a `SignedEvent` are INVALID_ARGUMENT (tonic says
/// INTERNAL), and nothing is stored.
#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let mut f = fixture().await;
    let before = snapshot(&mut f.c).await;
    let mut grpc = tonic::client::Grpc::new(f.server.channel().await);
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<NotASignedEvent, celltrail::pb::Receipt> =
        tonic_prost::ProstCodec::default();
    let err = grpc
        .unary(
            tonic::Request::new(NotASignedEvent { body: 7 }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/celltrail.v1.Ledger/Append"),
            codec,
        )
        .await
        .expect_err("not a SignedEvent");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("not a valid protobuf message")
            && err.message().contains("celltrail.v1"),
        "{}",
        err.message()
    );
    assert_eq!(snapshot(&mut f.c).await, before);
}

/// `ev` with its body bytes replaced by `body` and every signature made again over them.
fn resigned(ev: &SignedEvent, body: Vec<u8>, signers: &[&NoteSigner]) -> SignedEvent {
    let hash = EventHash::of_body(&body);
    let signatures = ev
        .signatures
        .iter()
        .zip(signers)
        .map(|(s, k)| {
            celltrail::crypto::sign_event(
                &k.key,
                &k.name,
                &hash,
                celltrail::pb::SignatureMeaning::try_from(s.meaning).unwrap(),
                s.signed_at_unix_nanos,
            )
        })
        .collect();
    SignedEvent { body, signatures }
}

/// Issue 13 point 9: a body carrying fields the server's proto does not define is refused,
/// naming the field numbers (prost would drop them and the ledger would sign content that no
/// reader shows). Top level and inside the detail.
#[tokio::test]
async fn rejects_event_body_with_unknown_fields_naming_them() {
    use prost::Message;
    let mut f = fixture().await;
    let (t, site, detail, _) = first_five(&f).into_iter().next().unwrap();
    let ev = signed_at_link(
        "BAG-UNK",
        0,
        vec![0; 32],
        t,
        site,
        detail,
        &[(&f.nurse, Performed)],
    );
    let nurse = f.nurse.clone();
    // Field 99 (varint 1) appended to the body.
    let mut body = ev.body.clone();
    body.extend_from_slice(&[0x98, 0x06, 0x01]);
    let msg = expect_rejected(
        &mut f,
        resigned(&ev, body, &[&nurse]),
        Code::InvalidArgument,
        "fields this server does not know (EventBody: field 99)",
    )
    .await;
    assert!(msg.contains("events.proto"), "{msg}");
    // Fields 9 and 12 inside the Enrolled detail (EventBody field 30).
    let mut decoded = celltrail::pb::EventBody::decode(ev.body.as_slice()).unwrap();
    let Some(Detail::Enrolled(e)) = decoded.detail.take() else {
        unreachable!()
    };
    let mut inner = e.encode_to_vec();
    inner.extend_from_slice(&[0x48, 0x01, 0x62, 0x01, b'x']);
    let mut body = decoded.encode_to_vec();
    body.push(0xf2); // field 30, length-delimited
    body.push(0x01);
    prost::encoding::encode_varint(inner.len() as u64, &mut body);
    body.extend_from_slice(&inner);
    expect_rejected(
        &mut f,
        resigned(&ev, body, &[&nurse]),
        Code::InvalidArgument,
        "EventBody.enrolled: fields 9, 12",
    )
    .await;
    // The same event without them is accepted.
    f.c.append(ev)
        .await
        .expect("the known fields alone are accepted");
}

/// Issue 13 point 9: the largest body events.proto says a client may sign with one signature
/// (`rules::max_body_bytes(1)`) is accepted.
#[tokio::test]
async fn the_documented_largest_body_is_accepted() {
    let mut f = fixture().await;
    let (t, site, detail, _) = first_five(&f).into_iter().next().unwrap();
    let draft = |pad: usize| celltrail::client::Draft {
        chain_id: "BAG-BIG".into(),
        seq: 0,
        prev_hash: vec![0; 32],
        occurred_at: t,
        site: site.into(),
        comment: "c".repeat(pad),
        detail: detail.clone(),
    };
    let max = celltrail::rules::max_body_bytes(1);
    let mut pad = max - 200;
    let ev = loop {
        let ev =
            celltrail::client::sign_draft(draft(pad), &[(&f.nurse, Performed)], signing_time(t));
        match ev.body.len() {
            n if n == max => break ev,
            n if n < max => pad += max - n,
            _ => pad -= 1,
        }
    };
    let r =
        f.c.append(ev)
            .await
            .expect("a body of the documented largest size fits");
    assert!(!r.into_inner().duplicate);
}

/// Issue 13: an event dated 1970-01-01 was accepted. Now an event may not be dated before the
/// actor's key was valid, and its site must be a site code (entry format 2).
#[tokio::test]
async fn rejects_an_event_dated_1970_and_a_site_that_is_not_a_site_code() {
    let mut f = fixture().await;
    let (_, site, detail, _) = first_five(&f).into_iter().next().unwrap();
    let now = celltrail::time::now_nanos();
    // Signed now, dated 1970, as a hostile client would.
    let ev = celltrail::client::sign_draft(
        celltrail::client::Draft {
            chain_id: "BAG-1970".into(),
            seq: 0,
            prev_hash: vec![0; 32],
            occurred_at: 1_000_000_000,
            site: site.into(),
            comment: String::new(),
            detail: detail.clone(),
        },
        &[(&f.nurse, Performed)],
        now,
    );
    expect_rejected(
        &mut f,
        ev,
        Code::FailedPrecondition,
        "not before the actor's key was valid",
    )
    .await;
    let ev = celltrail::client::sign_draft(
        celltrail::client::Draft {
            chain_id: "BAG-SITE".into(),
            seq: 0,
            prev_hash: vec![0; 32],
            occurred_at: now,
            site: "HOSP A; DROP".into(),
            comment: String::new(),
            detail,
        },
        &[(&f.nurse, Performed)],
        now,
    );
    expect_rejected(
        &mut f,
        ev,
        Code::InvalidArgument,
        "site: a site code or GLN",
    )
    .await;
}

/// Issue 13 point 9: events.proto shows how to build a key-registry event with an example (the
/// first registration on a new server, admin "ops.admin"). Built exactly as documented, it is
/// accepted, and the key then signs a custody event.
#[tokio::test]
async fn the_key_registration_example_of_the_proto_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let admin = NoteSigner::generate("ops.admin").unwrap();
    let anchors = dir.path().join("anchors.txt");
    std::fs::write(&anchors, format!("{}\n", admin.verifier().to_key_string())).unwrap();
    let mut b = TestServer::builder(&dir.path().join("data")).admin(admin.clone());
    b.opts.trust_anchors = Some(anchors);
    let server = b.start().await;
    let mut c = server.client().await;
    let nurse = NoteSigner::generate("nurse.ada").unwrap();
    let now = celltrail::time::now_nanos();
    let ev = celltrail::client::sign_draft(
        celltrail::client::Draft {
            chain_id: "keys".into(),
            seq: 0,
            prev_hash: vec![0; 32],
            occurred_at: now,
            site: String::new(),
            comment: String::new(),
            detail: Detail::KeyRegistered(celltrail::pb::KeyRegistered {
                key_id: "nurse.ada".into(),
                public_key: nurse.key.verifying_key().as_bytes().to_vec(),
                printed_name: "A. Nurse (ward 4)".into(),
                role: "nurse".into(),
                site: "CLINIC-0001".into(),
                valid_from_unix_nanos: now - HOUR,
                valid_until_unix_nanos: 0,
            }),
        },
        &[(&admin, Performed)],
        now,
    );
    assert_eq!(
        <celltrail::pb::EventBody as prost::Message>::decode(ev.body.as_slice())
            .unwrap()
            .actor_key_id,
        "ops.admin"
    );
    let r = c
        .append(ev)
        .await
        .expect("the documented example")
        .into_inner();
    assert_eq!((r.index, r.chain_id.as_str(), r.seq), (0, "keys", 0));
    // The registered key signs: the nurse enrols a patient at her site.
    let ev = signed_at_link(
        "BAG-EX",
        0,
        vec![0; 32],
        now,
        "CLINIC-0001",
        Detail::Enrolled(Enrolled {
            coi_ref: "COI-EX-0001".into(),
            therapy: "CAR-T".into(),
            manufacturing_site: "MFG-1".into(),
        }),
        &[(&nurse, Performed)],
    );
    c.append(ev).await.expect("a nurse enrols at her site");
    server.stop().await;
}
