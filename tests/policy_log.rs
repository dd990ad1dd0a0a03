//! The rules in force are part of the record (issue 13, point 10): an operator admin activates
//! a policy table on the keys chain; the writer judges every later entry under it; a bundle
//! carries the tables (the keys chain) and `verify` replays each entry under its own table,
//! reporting which; `verify --policy` is an override the report flags. Real server, gRPC.

mod common;
mod lifecycle;
mod realproc;

use celltrail::bundle::export::{anchors, from_server, Selection};
use celltrail::bundle::verify::{verify_bundle, Options};
use celltrail::client::{self, Draft};
use celltrail::pb::{
    event_body::Detail, EventBody, GetEntriesRequest, LogEntry, PolicyActivated, SignatureMeaning,
};
use celltrail::policy::{Policy, DEFAULT_TABLE_TOML};
use common::*;
use lifecycle::{happy_path, ChainCursor, Keys};
use prost::Message;
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

/// Tree size and entry 0 of the log at `addr`.
async fn first_entry(addr: &str) -> (u64, LogEntry, EventBody) {
    let mut c = client::connect(addr).await.unwrap();
    let page = c
        .get_entries(GetEntriesRequest { start: 0, limit: 1 })
        .await
        .unwrap()
        .into_inner();
    let entry = LogEntry::decode(page.entries[0].entry.as_slice()).unwrap();
    let body = EventBody::decode(entry.body.as_slice()).unwrap();
    (page.tree_size, entry, body)
}

/// `serve --policy FILE` never lets the writer judge under a table the log does not record
/// (issue 13 point 10). On a new log it records FILE's exact bytes as entry 0, signed by the
/// admin key serve created, and that table judges; a restart with the same FILE serves and
/// records nothing more; a restart with another FILE is refused with the command that
/// activates it, and the log is unchanged. The real binary, as an operator runs it.
#[test]
fn serve_policy_records_the_table_on_a_new_log_and_refuses_an_unrecorded_one() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let strict = strict_table();
    std::fs::write(cwd.join("strict.toml"), &strict).unwrap();
    let site_b = DEFAULT_TABLE_TOML.replace("name = \"autologous-car-t\"", "name = \"site-b\"");
    std::fs::write(cwd.join("site-b.toml"), &site_b).unwrap();
    let sha = hex::encode(celltrail::policy::book::table_sha256(strict.as_bytes()));
    let rt = tokio::runtime::Runtime::new().unwrap();

    let server = realproc::Serve::new()
        .cwd(cwd)
        .args(["--policy", "strict.toml"])
        .start();
    let admin = realproc::admin_key(&server.data_dir);
    let size = rt.block_on(async {
        let (_, entry, body) = first_entry(&server.addr).await;
        assert_eq!(body.chain_id, "keys");
        match &body.detail {
            Some(Detail::PolicyActivated(pa)) => {
                assert_eq!(pa.table_toml, strict.as_bytes());
                assert_eq!(hex::encode(&pa.table_sha256), sha);
            }
            other => panic!("entry 0 is not the table: {other:?}"),
        }
        assert_eq!(entry.signatures.len(), 1);
        assert_eq!(entry.signatures[0].key_id, admin.name);

        // The recorded table judges: a bedside check 20 min after the thaw is outside its
        // 15-minute window (the built-in table allows 120).
        let mut c = client::connect(&server.addr).await.unwrap();
        let keys = Keys::new();
        keys.register(&mut c, &admin).await;
        let steps = happy_path(&keys);
        let dispense = steps
            .iter()
            .position(|s| matches!(s.detail, Detail::Dispensed(_)))
            .unwrap();
        let mut steps = steps.into_iter();
        let mut cursor = ChainCursor::new("BAG-SERVE-POL", base_time());
        cursor
            .append(&mut c, steps.by_ref().take(dispense + 1).collect())
            .await;
        let err = c
            .append(cursor.sign(steps.next().unwrap()))
            .await
            .expect_err("judged under the recorded table");
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().contains("rule thaw_window")
                && err.message().contains("within 15 min of thaw"),
            "{}",
            err.message()
        );
        first_entry(&server.addr).await.0
    });
    let out = server.stop();
    assert!(
        out.contains(&format!(
            "recorded policy table autologous-car-t-strict-thaw sha256:{} from strict.toml as log entry 0",
            &sha[..12]
        )),
        "{out}"
    );

    // The same FILE again: it is the table in force; nothing more is recorded.
    let server = realproc::Serve::new()
        .cwd(cwd)
        .args(["--policy", "strict.toml"])
        .start();
    let again = rt.block_on(async { first_entry(&server.addr).await.0 });
    assert_eq!(again, size);
    let out = server.stop();
    assert!(!out.contains("recorded policy table"), "{out}");

    // Another FILE: refused, with the command that activates it; the log is unchanged.
    let (ok, out) = realproc::run(
        cwd,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            "site-b.toml",
        ],
        &[],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("--policy site-b.toml (site-b sha256:")
            && out.contains(&format!(
                "is not the table in force in this log (autologous-car-t-strict-thaw sha256:{} (activated at log index 0))",
                &sha[..12]
            ))
            && out.contains("celltrail policy activate site-b.toml --server ADDR --admin-key"),
        "{out}"
    );
    let server = realproc::Serve::new().cwd(cwd).start();
    let (after, _, _) = rt.block_on(first_entry(&server.addr));
    assert_eq!(after, size, "a refused start wrote nothing");
    server.stop();
}

/// A log that already has entries under the built-in table is not switched by a flag: the
/// table change is an admin-signed record made with `celltrail policy activate`.
#[test]
fn serve_policy_on_a_log_with_entries_under_another_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("strict.toml"), strict_table()).unwrap();
    let server = realproc::Serve::new().cwd(cwd).start();
    let admin = realproc::admin_key(&server.data_dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let size = rt.block_on(async {
        let mut c = client::connect(&server.addr).await.unwrap();
        Keys::new().register(&mut c, &admin).await;
        first_entry(&server.addr).await.0
    });
    server.stop();
    let (ok, out) = realproc::run(
        cwd,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            "strict.toml",
        ],
        &[],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("is not the table in force in this log (autologous-car-t sha256:")
            && out.contains("(base table, not a log record)")
            && out.contains("celltrail policy activate strict.toml"),
        "{out}"
    );
    let server = realproc::Serve::new().cwd(cwd).start();
    let (after, _, body) = rt.block_on(first_entry(&server.addr));
    assert_eq!(after, size);
    assert!(matches!(body.detail, Some(Detail::KeyRegistered(_))));
    server.stop();
}

/// With outside trust anchors serve has no admin key to record the table: a new log with
/// `--policy` is refused before anything is created, saying how to record it instead.
#[test]
fn serve_policy_with_outside_trust_anchors_on_a_new_log_is_refused_before_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("strict.toml"), strict_table()).unwrap();
    let admin = celltrail::note::NoteSigner::generate("hospital-admin").unwrap();
    std::fs::write(
        cwd.join("anchors.txt"),
        format!("{}\n", admin.verifier().to_key_string()),
    )
    .unwrap();
    let (ok, out) = realproc::run(
        cwd,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--trust-anchors",
            "anchors.txt",
            "--policy",
            "strict.toml",
        ],
        &[],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("--policy strict.toml: a new log records its table as its first entry")
            && out.contains("celltrail policy activate strict.toml --server ADDR"),
        "{out}"
    );
    assert!(!cwd.join("celltrail-data").exists(), "nothing is created");
}

/// A log with no entry yet (an earlier start created the data directory and its admin key, then
/// stopped) is a new log: `--policy FILE` records FILE as entry 0, signed by that admin key,
/// opened with the server's passphrase.
#[test]
fn serve_policy_on_a_log_without_entries_records_the_table_with_the_directorys_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("strict.toml"), strict_table()).unwrap();
    let server = realproc::Serve::new().cwd(cwd).start();
    let admin = realproc::admin_key(&server.data_dir);
    server.stop();
    let server = realproc::Serve::new()
        .cwd(cwd)
        .args(["--policy", "strict.toml"])
        .start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (size, entry, body) = rt.block_on(first_entry(&server.addr));
    assert_eq!(size, 1);
    assert!(
        matches!(&body.detail, Some(Detail::PolicyActivated(pa)) if pa.table_toml == strict_table().as_bytes()),
        "{body:?}"
    );
    assert_eq!(entry.signatures[0].key_id, admin.name);
    let out = server.stop();
    assert!(out.contains("as log entry 0, signed by admin key"), "{out}");
}
