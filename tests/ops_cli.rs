//! The `celltrail` binary as an operator runs it: JSON log lines (one per append, no PHI),
//! configuration precedence (flag > environment > file > default), backup and restore commands.

mod common;
mod realproc;

use celltrail::client::{self, Draft};
use celltrail::pb::{event_body::Detail, Enrolled, SignatureMeaning::Performed};
use common::{base_time, register, signer};
use std::path::Path;
use std::process::Command;

/// Starts `celltrail serve` with exactly `args` and `envs` (no `--listen` of its own); waits
/// for its "serving on" line.
fn serve(args: &[&str], envs: &[(&str, &str)]) -> realproc::Proc {
    let mut b = realproc::Serve::new()
        .no_listen()
        .args(args.iter().copied());
    for (k, v) in envs {
        b = b.env(k, v);
    }
    b.start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_one_line_per_append_with_kind_result_and_code_and_no_phi() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        &[],
    );
    let admin = realproc::admin_key(&data);
    let mut c = client::connect(&server.addr).await.unwrap();
    let nurse = signer("nurse.log");
    register(&mut c, &admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let draft = || Draft {
        chain_id: "BAG-LOG-1".into(),
        seq: 0,
        prev_hash: vec![0; 32],
        occurred_at: base_time(),
        site: "HOSP-A".into(),
        comment: "PHI-COMMENT-Jane-Doe".into(),
        detail: Detail::Enrolled(Enrolled {
            coi_ref: "COI-PHI-SECRET-77".into(),
            therapy: "CAR-T anti-CD19".into(),
            manufacturing_site: "MFG-1".into(),
        }),
    };
    client::append_draft(&mut c, draft(), &[(&nurse, Performed)])
        .await
        .unwrap();
    // Same seq again with different bytes: a fork, rejected.
    let mut other = draft();
    other.occurred_at += 1_000_000_000;
    let fork = client::sign_draft(other, &[(&nurse, Performed)], base_time());
    assert!(c.append(fork).await.is_err());
    drop(c);
    let err = server.stop();

    assert!(!err.contains("COI-PHI-SECRET"), "coi_ref leaked:\n{err}");
    assert!(!err.contains("PHI-COMMENT"), "comment leaked:\n{err}");
    let appends: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "append")
        .collect();
    assert_eq!(appends.len(), 3, "one line per append:\n{err}");
    let accepted = &appends[1];
    assert_eq!(accepted["chain"], "BAG-LOG-1");
    assert_eq!(accepted["seq"], 0);
    assert_eq!(accepted["kind"], "enrolled");
    assert_eq!(accepted["result"], "accepted");
    assert_eq!(accepted["code"], "OK");
    assert!(accepted["latency_us"].is_u64());
    assert_eq!(appends[0]["kind"], "key_registered");
    let rejected = &appends[2];
    assert_eq!(rejected["result"], "rejected");
    assert_eq!(rejected["code"], "ALREADY_EXISTS");
    assert_eq!(rejected["reason"], "fork");
    assert_eq!(rejected["kind"], "enrolled");
}

fn write_config(dir: &Path, body: &str) -> String {
    let p = dir.join("celltrail.toml");
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn config_file_is_used_under_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    // The file names an address that cannot be bound; env and flag each override it.
    let cfg = write_config(
        dir.path(),
        "data_dir = \"from-file\"\nlisten = \"192.0.2.1:1\"\n",
    );
    let s = serve(
        &[],
        &[
            ("CELLTRAIL_CONFIG", &cfg),
            ("CELLTRAIL_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert!(s.addr.starts_with("127.0.0.1:"));
    s.stop();
    assert!(
        dir.path().join("from-file").join("log.key").exists(),
        "data_dir from the file (relative to it) was not used"
    );
    let flag_dir = dir.path().join("from-flag");
    let s = serve(
        &[
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            flag_dir.to_str().unwrap(),
        ],
        &[("CELLTRAIL_LISTEN", "192.0.2.1:1")],
    );
    s.stop();
    assert!(flag_dir.join("log.key").exists(), "flag did not beat file");
}

#[test]
fn help_documents_every_serve_flag_with_its_environment_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--data-dir", "CELLTRAIL_DATA_DIR"),
        ("--listen", "CELLTRAIL_LISTEN"),
        ("--metrics-addr", "CELLTRAIL_METRICS_ADDR"),
        ("--config", "CELLTRAIL_CONFIG"),
        ("--log-format", "CELLTRAIL_LOG_FORMAT"),
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
        assert!(help.contains(env), "{env} missing:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_commands_make_a_servable_copy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let admin = realproc::admin_key(&data);
    let mut c = client::connect(&server.addr).await.unwrap();
    register(
        &mut c,
        &admin,
        &signer("nurse.bk"),
        "apheresis_nurse",
        "HOSP-A",
    )
    .await;
    let to = dir.path().join("bk");
    // admin.key is encrypted under the passphrase the harness gave `serve`.
    let out = Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .env(
            "CELLTRAIL_PASSPHRASE_FILE",
            realproc::server_passphrase_file(&data),
        )
        .args([
            "backup",
            "--server",
            &server.addr,
            "--to",
            to.to_str().unwrap(),
            "--admin-key",
            data.join("admin.key").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": 1 entries, 1 chains"), "{text}");
    assert!(
        !to.join("log.key").exists(),
        "a backup must not hold the log's private key"
    );
    drop(c);
    server.stop();

    let restored = dir.path().join("restored");
    let out = Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .args([
            "restore",
            "--from",
            to.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
            "--log-key",
            data.join("log.key").to_str().unwrap(),
        ])
        .env_remove("CELLTRAIL_DATA_DIR")
        .env(
            "CELLTRAIL_PASSPHRASE_FILE",
            realproc::server_passphrase_file(&data),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It says where the admin key is (not in the backup).
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("admin.key is not in backups") && text.contains("--admin-key FILE"),
        "{text}"
    );
    // The restored directory carries what `verify --data-dir` needs (log.vkey, trust anchors).
    common::assert_data_dir_verifies(&restored, 1);
    // A wrong log key is refused.
    let other = dir.path().join("other.key");
    celltrail::keys::write_key_file(&other, &signer("x")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .args([
            "restore",
            "--from",
            to.to_str().unwrap(),
            "--data-dir",
            dir.path().join("r2").to_str().unwrap(),
            "--log-key",
            other.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not the log key"));

    let s = serve(
        &[
            "--data-dir",
            restored.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let mut c = client::connect(&s.addr).await.unwrap();
    let head = c
        .get_head(celltrail::pb::GetHeadRequest {
            chain_id: "keys".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.length, 1);
    drop(c);
    s.stop();
}
