//! The rough edges a new user hits with the real binary: a pipe closed by `head`, typos that
//! must create nothing, a missing queue, an unreachable server, keeping a checkpoint, errors
//! printed once, logs without colour codes, and a JSON start-up banner.

mod common;
mod realproc;

use realproc::{command, run, serve};
use std::io::Read;
use std::path::Path;
use std::process::Stdio;

fn ok(cwd: &Path, args: &[&str]) -> String {
    let (ok, out) = run(cwd, args, &[]);
    assert!(ok, "{args:?} failed:\n{out}");
    out
}

/// A server in `cwd` with a registered nurse (`nurse.key`) and one enrolled bag `BAG-1`.
fn served_with_a_bag(cwd: &Path) -> (realproc::Proc, String) {
    let (server, addr) = serve(cwd);
    let vkey = ok(cwd, &["keygen", "--name", "nurse.e", "--out", "nurse.key"]);
    let vkey = vkey.lines().next().unwrap().to_string();
    ok(
        cwd,
        &[
            "key",
            "register",
            "--server",
            &addr,
            "--admin-key",
            "celltrail-data/admin.key",
            "--vkey",
            &vkey,
            "--role",
            "apheresis_nurse",
            "--site",
            "HOSP-A",
            "--printed-name",
            "N. E",
        ],
    );
    ok(
        cwd,
        &[
            "event",
            "--server",
            &addr,
            "--key",
            "nurse.key",
            "--chain",
            "BAG-1",
            "--kind",
            "enrolled",
            "--site",
            "HOSP-A",
            "--set",
            "coi_ref=COI-1",
            "--set",
            "manufacturing_site=MFG-1",
        ],
    );
    (server, addr)
}

#[test]
fn output_into_a_closed_pipe_stops_quietly_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (_server, addr) = served_with_a_bag(cwd);
    ok(
        cwd,
        &[
            "export",
            "--server",
            &addr,
            "--chain",
            "BAG-1",
            "--log-vkey",
            "celltrail-data/log.vkey",
            "--trust-anchors",
            "celltrail-data/trust-anchors.txt",
            "--out",
            "b.json",
        ],
    );
    for args in [
        vec!["chain", "--server", &addr, "BAG-1"],
        vec!["verify", "b.json"],
        vec!["verify", "b.json", "--json"],
    ] {
        let mut child = command(cwd)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the first line, as `head -0` (or a fast `head`) does.
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
        assert!(!err.contains("Broken pipe"), "{args:?}:\n{err}");
        assert_eq!(status.code(), Some(141), "{args:?}: {status}\n{err}");
    }
}

#[test]
fn serve_with_a_bad_flag_creates_no_data_directory_and_no_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("bad-policy.toml"), "this is not = = toml").unwrap();
    std::fs::write(cwd.join("anchors.txt"), "not-a-key\n").unwrap();
    let cases: [&[&str]; 6] = [
        &["--listen", "not-an-address"],
        &["--listen", "192.0.2.1:1"], // TEST-NET: not an address of this machine
        &["--policy", "missing-policy.toml"],
        &["--policy", "bad-policy.toml"],
        &["--trust-anchors", "anchors.txt"],
        &["--origin", "has spaces"],
    ];
    for extra in cases {
        let mut args = vec!["serve", "--data-dir", "data"];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        let (ok, out) = run(cwd, &args, &[]);
        assert!(!ok, "{extra:?} was accepted:\n{out}");
        assert!(out.starts_with("celltrail: "), "{extra:?}:\n{out}");
        assert!(
            !cwd.join("data").exists(),
            "{extra:?} created the data directory"
        );
        assert!(!cwd.join("admin.key").exists());
    }
}

#[test]
fn drain_of_a_queue_that_does_not_exist_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(
        dir.path(),
        &[
            "scan",
            "--drain",
            "--queue",
            "no-such-queue",
            "--server",
            "127.0.0.1:1",
        ],
        &[],
    );
    assert!(!ok, "{out}");
    assert!(!out.contains("QUEUE EMPTY"), "{out}");
    assert!(out.contains("does not exist"), "{out}");
    assert!(!dir.path().join("no-such-queue").exists());
}

#[test]
fn backup_to_an_unreachable_server_leaves_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // free, then closed: nobody listens there
    let server = format!("127.0.0.1:{port}");
    ok(
        dir.path(),
        &["keygen", "--name", "admin.bk", "--out", "admin.key"],
    );
    let (ok, out) = run(
        dir.path(),
        &[
            "backup",
            "--server",
            &server,
            "--to",
            "bk",
            "--admin-key",
            "admin.key",
        ],
        &[],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("cannot connect"), "{out}");
    assert!(
        !dir.path().join("bk").exists(),
        "an empty backup directory was left"
    );
}

#[test]
fn event_keeps_its_signed_checkpoint_for_a_later_consistency_check() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (_server, addr) = served_with_a_bag(cwd);
    // A collection's readings are required (entry format 1).
    let ended = format!(
        "collection_end={}",
        celltrail::time::rfc3339(celltrail::time::now_nanos() / 1_000_000_000 * 1_000_000_000)
    );
    ok(
        cwd,
        &[
            "event",
            "--server",
            &addr,
            "--key",
            "nurse.key",
            "--chain",
            "BAG-1",
            "--kind",
            "collected",
            "--site",
            "HOSP-A",
            "--set",
            "din=A999926123456",
            "--set",
            "volume_ml=250",
            "--set",
            &ended,
            "--checkpoint-out",
            "kept.txt",
        ],
    );
    let kept = std::fs::read_to_string(cwd.join("kept.txt")).unwrap();
    let size: u64 = kept.lines().nth(1).unwrap().parse().unwrap();
    assert_eq!(size, 3, "key registration, enrolment, collection:\n{kept}");
    // Later: more events, then an export that proves the kept checkpoint is a prefix.
    ok(
        cwd,
        &[
            "event",
            "--server",
            &addr,
            "--key",
            "nurse.key",
            "--chain",
            "BAG-1",
            "--kind",
            "packed",
            "--site",
            "HOSP-A",
        ],
    );
    ok(
        cwd,
        &[
            "export",
            "--server",
            &addr,
            "--chain",
            "BAG-1",
            "--log-vkey",
            "celltrail-data/log.vkey",
            "--trust-anchors",
            "celltrail-data/trust-anchors.txt",
            "--since-size",
            "3",
            "--out",
            "later.json",
        ],
    );
    let out = ok(
        cwd,
        &[
            "verify",
            "later.json",
            "--log-key",
            "celltrail-data/log.vkey",
            "--previous",
            "kept.txt",
        ],
    );
    assert!(
        out.contains("VERDICT: OK") || out.contains("VERIFIED"),
        "{out}"
    );
}

#[test]
fn an_os_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "event",
            "--key",
            "missing.key",
            "--chain",
            "B",
            "--kind",
            "hold",
            "--site",
            "S",
        ],
        vec!["verify", "--data-dir", "missing-dir"],
        vec![
            "export",
            "--all",
            "--data-dir",
            "missing-dir",
            "--out",
            "x.json",
        ],
    ] {
        let (ok, out) = run(dir.path(), &args, &[]);
        assert!(!ok, "{out}");
        assert_eq!(
            out.matches("No such file or directory").count(),
            1,
            "{args:?}:\n{out}"
        );
    }
}

/// Starts `serve` with `format`, waits for its banner, makes one append, stops it; returns
/// (stdout, stderr).
fn serve_and_log(format: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let server = realproc::Serve::new()
        .cwd(cwd)
        .args(["--log-format", format])
        .start();
    let addr = server.addr.clone();
    let (_, vkey) = run(cwd, &["keygen", "--name", "n.l", "--out", "n.key"], &[]);
    let (registered, why) = run(
        cwd,
        &[
            "key",
            "register",
            "--server",
            &addr,
            "--admin-key",
            "celltrail-data/admin.key",
            "--vkey",
            vkey.lines().next().unwrap(),
            "--role",
            "nurse",
            "--site",
            "S",
            "--printed-name",
            "N",
        ],
        &[],
    );
    assert!(registered, "{why}");
    let banner = server.stdout_lines().join("\n");
    let err = server.stop();
    (banner, err)
}

#[test]
fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let (_, err) = serve_and_log("text");
    assert!(err.contains("append"), "no append log line:\n{err}");
    assert!(
        !err.contains('\x1b'),
        "ANSI escape codes in piped logs:\n{err:?}"
    );
}

#[test]
fn with_json_logs_the_startup_banner_is_json_too() {
    let (out, err) = serve_and_log("json");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let serving = lines
        .iter()
        .find(|v| v["message"] == "celltrail serving")
        .expect("a serving line");
    assert!(serving["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(serving["level"], "INFO");
    assert!(serving["timestamp"].is_string());
    let created = lines
        .iter()
        .find(|v| v["message"] == "created the first operator admin key")
        .expect("the admin key line");
    assert!(created["verifier_key"]
        .as_str()
        .unwrap()
        .starts_with("admin+"));
    assert!(lines.iter().any(|v| v["log_vkey"].is_string()));
    // Every line, the shutdown's included: a log pipeline reading JSON gets nothing else.
    for l in err.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not JSON ({e}) on stderr: {l}"));
    }
    assert!(
        err.contains("\"message\":\"shutting down\""),
        "no JSON shutdown line:\n{err}"
    );
}

/// `celltrail policy activate FILE` records the table (issue 13 point 10) and says where it is
/// in force; a table that does not load is refused before anything is sent.
#[test]
fn policy_activate_records_the_table_and_refuses_one_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let server = realproc::Serve::new().cwd(cwd).start();
    let addr = server.addr.clone();
    let table = celltrail::policy::DEFAULT_TABLE_TOML
        .replace("name = \"autologous-car-t\"", "name = \"site-b\"");
    std::fs::write(cwd.join("site-b.toml"), &table).unwrap();
    std::fs::write(cwd.join("broken.toml"), "name = \"broken\"\n").unwrap();
    let args = |file: &'static str| -> Vec<String> {
        [
            "policy",
            "activate",
            "--server",
            &addr,
            "--admin-key",
            "celltrail-data/admin.key",
            file,
        ]
        .map(String::from)
        .to_vec()
    };
    let broken = args("broken.toml");
    let (ok, out) = run(
        cwd,
        &broken.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    assert!(!ok && out.contains("broken.toml: policy table"), "{out}");
    let site_b = args("site-b.toml");
    let (ok, out) = run(
        cwd,
        &site_b.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    assert!(ok, "{out}");
    let sha = hex::encode(celltrail::policy::book::table_sha256(table.as_bytes()));
    assert!(
        out.contains(&format!(
            "policy table site-b (sha256 {sha}) is in force after log index 0"
        )),
        "{out}"
    );
    // The activation shares the keys chain: QA can still list the key registry after it.
    let (ok, out) = run(cwd, &["key", "list", "--server", &addr], &[]);
    assert!(ok && out.contains("the key registry is empty"), "{out}");
    server.stop();
}

/// Every option of every subcommand says what it is in `--help` (`event --comment` said
/// nothing, `key revoke --key-id` and `--reason` neither).
#[test]
fn every_option_of_every_command_has_help() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} --{}", a.get_long().unwrap_or(id)));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&celltrail::cli::Cli::command(), "celltrail", &mut missing);
    assert!(missing.is_empty(), "options without help: {missing:?}");
}
