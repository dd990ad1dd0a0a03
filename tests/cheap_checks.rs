//! Cheap checks before expensive ones (issue 16 point 1): a signature is verified only when it
//! could count. Counts the process's strict ed25519 verifications around each refused event,
//! so this file holds one test (tests in one binary run in parallel and would share the count).

mod common;

use celltrail::crypto::{signature_message, verifications, EventHash};
use celltrail::note::NoteSigner;
use celltrail::pb::{event_body::Detail, Enrolled, KeyRevoked, SignatureMeaning, SignedEvent};
use common::*;
use ed25519_dalek::Signer as _;
use tonic::Code;

fn enrolled() -> Detail {
    Detail::Enrolled(Enrolled {
        coi_ref: "COI-7F3A-2291".into(),
        therapy: "CAR-T anti-CD19".into(),
        manufacturing_site: "MFG-1".into(),
    })
}

/// An enrolment "signed" PERFORMED by each of `names` — with signatures made by `forger`, a key
/// nobody registered: well-formed, and only a full verification shows they are wrong.
fn forged(chain: &str, names: &[&str], forger: &NoteSigner) -> SignedEvent {
    let now = celltrail::time::now_nanos();
    let probe = signer(names[0]);
    let mut ev = signed_at_link(
        chain,
        0,
        vec![0; 32],
        now,
        "HOSP-A",
        enrolled(),
        &[(&probe, SignatureMeaning::Performed)],
    );
    let hash = EventHash::of_body(&ev.body);
    ev.signatures = names
        .iter()
        .map(|name| {
            let meaning = SignatureMeaning::Performed as i32;
            let msg = signature_message(&hash, meaning, now, name).unwrap();
            celltrail::pb::Signature {
                key_id: name.to_string(),
                meaning,
                signed_at_unix_nanos: now,
                signature: forger.key.sign(&msg).to_bytes().to_vec(),
            }
        })
        .collect();
    ev
}

/// The verification counter is per process: the tests of this file take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn refused_unverified(
    c: &mut celltrail::client::Client,
    ev: SignedEvent,
    code: Code,
    says: &str,
) {
    let before = verifications();
    let err = c.append(ev).await.expect_err("must be refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(err.message().contains(says), "{}", err.message());
    assert_eq!(
        verifications(),
        before,
        "no signature may be verified for an event refused by a cheap check ({says})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_that_cannot_count_are_refused_before_any_verification() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let forger = signer("forger");
    let mut nurses = Vec::new();
    for i in 0..12 {
        let n = signer(&format!("nurse.n{i}"));
        register(&mut c, &server.admin, &n, "apheresis_nurse", "HOSP-A").await;
        nurses.push(n);
    }
    let qa = signer("qa.q1");
    register(&mut c, &server.admin, &qa, "qa", "HOSP-A").await;
    let gone = signer("nurse.gone");
    register(&mut c, &server.admin, &gone, "apheresis_nurse", "HOSP-A").await;
    admin_event(
        &mut c,
        &server.admin,
        Detail::KeyRevoked(KeyRevoked {
            key_id: gone.name.clone(),
            revoked_at_unix_nanos: celltrail::time::now_nanos() - 1_000_000_000,
            reason: "badge lost".into(),
        }),
    )
    .await
    .expect("revoke");
    let before = snapshot(&mut c).await;
    let cap = celltrail::policy::Policy::default_autologous_car_t().signature_cap();
    let names: Vec<&str> = nurses.iter().map(|n| n.name.as_str()).collect();

    // More signatures than any transition of the table takes: refused by count.
    refused_unverified(
        &mut c,
        forged("AMP-1", &names[..cap + 1], &forger),
        Code::InvalidArgument,
        "no transition of policy",
    )
    .await;
    // A revoked signer, and a role the table never lets sign an enrolment: PERMISSION_DENIED
    // without verifying the valid nurse's (forged) signature either.
    refused_unverified(
        &mut c,
        forged("AMP-2", &[names[0], &gone.name], &forger),
        Code::PermissionDenied,
        "revoked",
    )
    .await;
    refused_unverified(
        &mut c,
        forged("AMP-3", &[names[0], &qa.name], &forger),
        Code::PermissionDenied,
        "qa.q1",
    )
    .await;
    // Unknown key ids cost nothing either.
    refused_unverified(
        &mut c,
        forged("AMP-4", &["nurse.nobody"], &forger),
        Code::PermissionDenied,
        "not registered",
    )
    .await;

    // An eligible, valid signer's forged signature is verified (once) and refused.
    let n = verifications();
    let err = c
        .append(forged("AMP-5", &[names[0]], &forger))
        .await
        .expect_err("forged signature");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(verifications() > n, "the eligible signature is verified");
    assert_eq!(snapshot(&mut c).await, before, "nothing was recorded");
    server.stop().await;
}

/// The count check uses the table in force, not the one loaded at start: after an admin
/// activates a table whose enrolment takes four optional signatures more, an event with one
/// signature more than the old cap is no longer refused by count, and the new table's cap (named
/// in the message) is the one enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_cap_follows_the_table_activated_in_the_log() {
    use celltrail::policy::Policy;
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let forger = signer("forger");
    let mut nurses = Vec::new();
    for i in 0..12 {
        let n = signer(&format!("nurse.c{i}"));
        register(&mut c, &server.admin, &n, "apheresis_nurse", "HOSP-A").await;
        nurses.push(n);
    }
    let names: Vec<&str> = nurses.iter().map(|n| n.name.as_str()).collect();
    let enrol_row =
        r#"signatures = [{ role = ["apheresis_nurse", "nurse"], meaning = "PERFORMED" }]"#;
    let wide = celltrail::policy::DEFAULT_TABLE_TOML
        .replace(
            "name = \"autologous-car-t\"",
            "name = \"autologous-car-t-wide\"",
        )
        .replacen(
            enrol_row,
            &format!(
                "{enrol_row}\noptional_signatures = [\
                 {{ role = \"apheresis_nurse\", meaning = \"VERIFIED\" }}, \
                 {{ role = \"apheresis_nurse\", meaning = \"REVIEWED\" }}, \
                 {{ role = \"apheresis_nurse\", meaning = \"APPROVED\" }}, \
                 {{ role = \"apheresis_nurse\", meaning = \"RELEASED\" }}]"
            ),
            1,
        );
    let (old_cap, new_cap) = (
        Policy::default_autologous_car_t().signature_cap(),
        Policy::from_toml(&wide).unwrap().signature_cap(),
    );
    assert!(
        new_cap > old_cap && new_cap < names.len(),
        "{old_cap} {new_cap}"
    );

    refused_unverified(
        &mut c,
        forged("CAP-1", &names[..old_cap + 1], &forger),
        Code::InvalidArgument,
        "no transition of policy \"autologous-car-t\"",
    )
    .await;
    admin_event(
        &mut c,
        &server.admin,
        Detail::PolicyActivated(celltrail::pb::PolicyActivated {
            table_toml: wide.as_bytes().to_vec(),
            table_sha256: celltrail::policy::book::table_sha256(wide.as_bytes()).to_vec(),
            name: "autologous-car-t-wide".into(),
        }),
    )
    .await
    .expect("activate the wider table");
    let err = c
        .append(forged("CAP-2", &names[..old_cap + 1], &forger))
        .await
        .expect_err("forged signatures are refused");
    assert!(
        !err.message().contains("no transition of policy"),
        "refused by the count of the table no longer in force: {}",
        err.message()
    );
    refused_unverified(
        &mut c,
        forged("CAP-3", &names[..new_cap + 1], &forger),
        Code::InvalidArgument,
        "no transition of policy \"autologous-car-t-wide\"",
    )
    .await;
    server.stop().await;
}
