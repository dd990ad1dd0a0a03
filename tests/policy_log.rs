//! The rules in force are part of the record (issue 13, point 10): an operator admin activates
//! a policy table on the keys chain; the writer judges every later entry under it; a bundle
//! carries the tables (the keys chain) and `verify` replays each entry under its own table,
//! reporting which; `verify --policy` is an override the report flags. Real server, gRPC.

mod common;
mod lifecycle;

use celltrail::bundle::export::{anchors, from_server, Selection};
use celltrail::bundle::verify::{verify_bundle, Options};
use celltrail::client::{self, Draft};
use celltrail::pb::{event_body::Detail, PolicyActivated, SignatureMeaning};
use celltrail::policy::{Policy, DEFAULT_TABLE_TOML};
use common::*;
use lifecycle::{happy_path, ChainCursor, Keys};
use tonic::Code;

/// The default table with a 15-minute thaw window instead of 120.
fn strict_table() -> String {
    DEFAULT_TABLE_TOML
        .replace(
            "name = \"autologous-car-t\"",
            "name = \"autologous-car-t-strict-thaw\"",
        )
        .replace(
            "thaw_to_infusion_max_minutes = 120",
            "thaw_to_infusion_max_minutes = 15",
        )
}

fn activation(toml: &str) -> Detail {
    Detail::PolicyActivated(PolicyActivated {
        table_toml: toml.as_bytes().to_vec(),
        table_sha256: celltrail::policy::book::table_sha256(toml.as_bytes()).to_vec(),
        name: Policy::from_toml(toml).unwrap().name().to_string(),
    })
}

#[tokio::test]
async fn an_activated_table_judges_later_entries_and_travels_in_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let keys = Keys::new();
    keys.register(&mut c, &server.admin).await;
    let steps = happy_path(&keys);
    let dispense = steps
        .iter()
        .position(|s| matches!(s.detail, Detail::Dispensed(_)))
        .unwrap();
    let mut steps = steps.into_iter();
    let mut cursor = ChainCursor::new("BAG-POL", base_time());
    cursor
        .append(&mut c, steps.by_ref().take(dispense + 1).collect())
        .await;

    // A table whose hash does not match its bytes is refused; nothing is stored.
    let before = snapshot(&mut c).await;
    let mut bad = activation(&strict_table());
    if let Detail::PolicyActivated(p) = &mut bad {
        p.table_sha256[0] ^= 1;
    }
    let err = admin_event(&mut c, &server.admin, bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("InvalidArgument") && err.contains("table_sha256 is"),
        "{err}"
    );
    // A table that does not load is refused naming the problem.
    let broken = strict_table().replace("terminal = [", "terminal = [\"Nowhere\", ");
    let err = admin_event(&mut c, &server.admin, activation_unchecked(&broken))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("InvalidArgument") && err.contains("Nowhere"),
        "{err}"
    );
    // Only an operator admin key activates a table.
    let draft = Draft {
        chain_id: "keys".into(),
        seq: 0,
        prev_hash: vec![],
        occurred_at: celltrail::time::now_nanos(),
        site: String::new(),
        comment: String::new(),
        detail: activation(&strict_table()),
    };
    let err = client::append_draft(&mut c, draft, &[(&keys.qa, SignatureMeaning::Performed)])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PermissionDenied") && err.contains("only admins sign the keys chain"),
        "{err}"
    );
    assert_eq!(snapshot(&mut c).await, before);

    // Activated: the bedside check 20 minutes after the thaw is now outside the window.
    let r = admin_event(&mut c, &server.admin, activation(&strict_table()))
        .await
        .unwrap();
    let bedside = steps.next().unwrap();
    let (seq, prev) = (cursor.seq, cursor.prev.clone());
    let ev = cursor.sign(bedside);
    (cursor.seq, cursor.prev) = (seq, prev);
    let err = c
        .append(ev)
        .await
        .expect_err("judged under the activated table");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("rule thaw_window")
            && err.message().contains("within 15 min of thaw"),
        "{}",
        err.message()
    );

    // The product is held: an entry judged under the activated table.
    let hold = lifecycle::Step {
        after: lifecycle::MIN,
        site: lifecycle::CLINIC,
        detail: Detail::Hold(celltrail::pb::Hold {
            reason: "thaw window of the activated table exceeded".into(),
        }),
        signers: vec![(&keys.nurse1, SignatureMeaning::Performed)],
    };
    c.append(cursor.sign(hold)).await.expect("hold accepted");

    // The bundle carries the table; verify replays each entry under its own and says which.
    let bundle = from_server(
        &mut c,
        anchors(&server.log_vkey, &[server.admin.verifier()]),
        &Selection::Chains(vec!["BAG-POL".into()]),
        &[],
    )
    .await
    .unwrap();
    let opts = |policy: Policy| Options {
        log_key: None,
        admins: None,
        policy,
        previous: None,
    };
    let report = verify_bundle(&bundle, &opts(Policy::default_autologous_car_t()));
    assert!(report.ok, "{:?}", report.failure);
    let names: Vec<(&str, Option<u64>, usize)> = report
        .policies
        .iter()
        .map(|p| (p.name.as_str(), p.activated_at_index, p.entries))
        .collect();
    assert_eq!(
        names,
        [
            ("autologous-car-t", None, dispense + 1),
            ("autologous-car-t-strict-thaw", Some(r.index), 1)
        ]
    );
    assert!(report.policy_override.is_none());
    assert!(report.timeline[0]
        .policy
        .starts_with("autologous-car-t sha256:"));
    let text = celltrail::bundle::report::text(&report, "bundle");
    assert!(
        text.contains("table autologous-car-t-strict-thaw sha256:"),
        "{text}"
    );
    // A bundle that leaves the activation out is caught by the keys chain's signed head.
    let mut dropped = bundle.clone();
    let last = dropped.registry.pop().unwrap();
    assert_eq!(last.index, r.index);
    let report = verify_bundle(&dropped, &opts(Policy::default_autologous_car_t()));
    let f = report.failure.expect("the activation is missing");
    assert!(
        f.reason.contains("events are missing from the bundle"),
        "{f}"
    );
    // An auditor's --policy replaces the recorded tables, and the report says so.
    let other = Policy::from_toml(&strict_table()).unwrap();
    let report = verify_bundle(&bundle, &opts(other));
    let o = report.policy_override.as_deref().expect("flagged");
    assert!(o.contains("replaced the tables recorded in the log"), "{o}");
    server.stop().await;
}

/// An activation whose hash matches its bytes, for a table that may not load.
fn activation_unchecked(toml: &str) -> Detail {
    Detail::PolicyActivated(PolicyActivated {
        table_toml: toml.as_bytes().to_vec(),
        table_sha256: celltrail::policy::book::table_sha256(toml.as_bytes()).to_vec(),
        name: "autologous-car-t-strict-thaw".into(),
    })
}
