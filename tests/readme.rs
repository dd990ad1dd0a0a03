//! The README tells one story: its quick start and the scanning station's scripted block run as
//! written, read out of README.md at test time (the fenced `sh` block after each
//! `<!-- readme-test: NAME -->` line), against the real binary and a zero-configuration server
//! in an empty directory. The quick start runs as one script (`set -eu`); each station command
//! runs on its own and must exit as its comment says (`# exit N`, else 0). What the blocks
//! create must be git-ignored.

mod common; // realproc's appenders use it
mod realproc;

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The fenced block after `<!-- readme-test: NAME -->`.
fn block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- readme-test: {name} -->");
    let after = readme
        .split(&marker)
        .nth(1)
        .unwrap_or_else(|| panic!("README.md has no {marker} line"));
    let mut lines = after.lines().skip_while(|l| l.trim().is_empty());
    assert_eq!(
        lines.next().map(str::trim),
        Some("```sh"),
        "{marker} must be followed by a ```sh block"
    );
    lines
        .take_while(|l| l.trim() != "```")
        .collect::<Vec<_>>()
        .join("\n")
}

/// Shell commands of a block: continuation lines joined, comment-only and empty lines dropped.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        if cur.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

/// The exit status a command's trailing comment announces (`# exit 2`), else 0.
fn expected_exit(cmd: &str) -> i32 {
    cmd.rsplit_once('#')
        .and_then(|(_, c)| c.split("exit ").nth(1))
        .and_then(|n| n.trim().split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `bash -c SCRIPT` in `cwd` as a user at a terminal with the server running: the client's
/// default server is the test's (`CELLTRAIL_SERVER`), key passphrases come from a file as
/// scripts give them; nothing else of the test's environment leaks in.
fn bash(cwd: &Path, addr: &str, script: &str) -> (i32, String) {
    let mut c = Command::new("bash");
    c.arg("-c").arg(script).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("CELLTRAIL_") {
            c.env_remove(k);
        }
    }
    let pass = cwd.join("passphrase");
    let o = c
        .env("CELLTRAIL_SERVER", addr)
        .env("CELLTRAIL_PASSPHRASE_FILE", &pass)
        .env("CELLTRAIL_COSIGN_PASSPHRASE_FILE", &pass)
        .env("CELLTRAIL_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn readme_quick_start_and_station_blocks_run_as_written() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let quick = block(&readme, "quickstart");
    let station = block(&readme, "station");

    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    // `./target/release/celltrail` of the README is the binary under test.
    std::fs::create_dir_all(cwd.join("target/release")).unwrap();
    std::os::unix::fs::symlink(realproc::BIN, cwd.join("target/release/celltrail")).unwrap();
    // `cargo run --release -- serve`: zero configuration, in the same directory; the passphrase
    // its admin.key is encrypted under is the one the quick start's commands are given (the
    // harness hands `serve` the same file, as the user types it at the terminal).
    std::fs::write(cwd.join("passphrase"), "readme demo passphrase\n").unwrap();
    let server = realproc::Serve::new().cwd(cwd).start();

    let (code, out) = bash(cwd, &server.addr, &format!("set -eu\n{quick}"));
    assert_eq!(code, 0, "the quick start failed:\n{out}");
    assert!(
        out.contains("4 events, state InTransitToManufacturing"),
        "{out}"
    );

    // The station block, in the same shell as the quick start: its `ct` function.
    let ct = quick
        .lines()
        .find(|l| l.starts_with("ct()"))
        .expect("the quick start defines ct");
    let cmds = commands(&station);
    assert!(cmds.len() >= 2, "{cmds:?}");
    let mut outputs = Vec::new();
    for cmd in &cmds {
        let (code, out) = bash(cwd, &server.addr, &format!("{ct}\n{cmd}"));
        assert_eq!(
            code,
            expected_exit(cmd),
            "README station command exited {code}, its comment says {}:\n{cmd}\n{out}",
            expected_exit(cmd)
        );
        outputs.push(out);
    }
    let all = outputs.join("\n");
    assert!(all.contains("ACCEPTED"), "{all}");
    assert!(all.contains("NOTHING WAS SIGNED"), "{all}");
    assert!(!all.contains("QUEUED"), "{all}");
    // The story's readings are within the policy's limits: nothing waits for QA.
    assert!(!all.contains("HOLD"), "{all}");
    assert!(all.contains("NOT DISPENSED"), "{all}");
    let (_, chain) = bash(cwd, &server.addr, &format!("{ct}\nct chain BAG-0001"));
    assert!(chain.contains("5 events, state AtManufacturing"), "{chain}");
    assert!(chain.contains("received"), "{chain}");

    // Everything the blocks created is git-ignored in the repository (the test's own
    // `target` link and passphrase file aside).
    drop(server);
    for e in std::fs::read_dir(cwd).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name == "target" || name == "passphrase" {
            continue;
        }
        let ignored = Command::new("git")
            .args(["check-ignore", "-q", "--no-index", &format!("{name}/x")])
            .current_dir(ROOT)
            .status()
            .unwrap();
        assert!(
            ignored.success(),
            "the README's examples create `{name}`, which .gitignore does not cover"
        );
    }
}

#[test]
fn the_block_reader_joins_continuations_and_reads_exit_comments() {
    let cmds = commands("# c\nct a \\\n  --b\n\nct c   # exit 2\n");
    assert_eq!(cmds, ["ct a    --b", "ct c   # exit 2"]);
    assert_eq!(expected_exit(&cmds[0]), 0);
    assert_eq!(expected_exit(&cmds[1]), 2);
    assert_eq!(expected_exit("ct d # only send: exit 0"), 0);
}

/// The value of `--set NAME=VALUE` in a block.
fn set_value(block: &str, name: &str) -> String {
    let key = format!("--set {name}=");
    let rest = block
        .split(&key)
        .nth(1)
        .unwrap_or_else(|| panic!("no {key} in {block}"));
    rest.split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_readme_wristband_and_bag_codes_are_the_quick_starts_patient_and_bag() {
    use celltrail::codes::{classify, Scan};
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let quick = block(&readme, "quickstart");
    let station = block(&readme, "station");
    let coi_ref = set_value(&quick, "coi_ref");
    let din = set_value(&quick, "din");
    // Every code the station block scans, and every code the README's "What the station
    // reads" paragraph shows, is the quick start's patient or bag.
    let reads = readme
        .split("**What the station reads.**")
        .nth(1)
        .expect("README documents the wristband and DIN formats")
        .split("\n\n")
        .next()
        .unwrap();
    let mut scans: Vec<String> = station
        .split("--scan '")
        .skip(1)
        .map(|s| s.split('\'').next().unwrap().to_string())
        .collect();
    // (Fragments such as `&/` or `CH` in the prose are not codes, and the recorded values
    // `CHA999926PAT001` / `A999926123456` are what the ledger stores, not what is typed.)
    scans.extend(
        reads
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| s.len() >= 13 && *s != coi_ref && *s != din)
            .map(str::to_string),
    );
    let (mut cois, mut dins) = (0, 0);
    for s in &scans {
        match classify(s) {
            Scan::Coi(c) => {
                assert_eq!(
                    c.to_string(),
                    coi_ref,
                    "{s} is not the quick start's patient"
                );
                cois += 1;
            }
            Scan::Din(d, _) => {
                assert_eq!(d.to_string(), din, "{s} is not the quick start's bag");
                dins += 1;
            }
            Scan::Malformed(e) => panic!("README shows {s:?}, which the station refuses: {e}"),
            _ => {}
        }
    }
    // Bar code, typed and eye-readable forms of each.
    assert!(cois >= 3 && dins >= 3, "{scans:?}");
    // Typed without its check character, a DIN is refused: the README says so.
    assert!(matches!(classify(&din), Scan::Malformed(_)));
    assert!(reads.contains("followed by its check character"));
}
