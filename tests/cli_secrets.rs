//! No secret is ever printed: every option that expects a verifier key (a file, a key string,
//! or its environment variable) refuses a private key — celltrail's own key files, their
//! contents, and PEM private keys, encrypted or not — with one sentence that says what to
//! give instead, and never echoes the key. Runs the real binary against a real server.

use base64::Engine as _;
use std::path::PathBuf;

mod common;
mod realproc;

use realproc::{run, serve};

const REFUSAL: &str = "this is a private key file; give its verifier key (.vkey / keygen's output)";

/// The secret parts of a private key file: the whole text, each line, and for a
/// `PRIVATE+KEY+...` string its base64 seed.
fn secret_parts(text: &str) -> Vec<String> {
    let mut parts = vec![text.trim().to_string()];
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("-----") {
            continue;
        }
        parts.push(line.to_string());
        if line.starts_with("PRIVATE+KEY+") {
            // PRIVATE+KEY+name+hash+base64: the seed may itself hold '+'.
            parts.push(line.splitn(5, '+').nth(4).unwrap().to_string());
        }
    }
    assert!(parts.iter().all(|p| p.len() >= 16), "{parts:?}");
    parts
}

/// A PEM block of `label` around random bytes, as `openssl genpkey` writes one.
fn pem(label: &str) -> String {
    let mut der = vec![0u8; 144]; // three full lines of base64
    for (i, b) in der.iter_mut().enumerate() {
        *b = (i as u8)
            .wrapping_mul(73)
            .wrapping_add(celltrail::time::now_nanos() as u8);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        body.join("\n")
    )
}

fn assert_refused(what: &str, (ok, out): (bool, String), secret: &str) {
    assert!(!ok, "{what}: accepted a private key:\n{out}");
    assert!(out.contains(REFUSAL), "{what}: no clear refusal:\n{out}");
    for part in secret_parts(secret) {
        assert!(
            !out.contains(&part),
            "{what}: printed the secret {part:?}:\n{out}"
        );
    }
}

#[test]
fn a_private_key_given_for_a_verifier_key_is_refused_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (_server, addr) = serve(cwd);
    let data = cwd.join("celltrail-data");
    let (ok, vkey) = run(
        cwd,
        &["keygen", "--name", "nurse.s", "--out", "nurse.key"],
        &[],
    );
    assert!(ok, "{vkey}");
    let vkey = vkey.lines().next().unwrap().to_string();
    // Keygen's output, saved to a file, is accepted by --vkey.
    std::fs::write(cwd.join("nurse.vkey"), format!("{vkey}\n")).unwrap();
    let (ok, out) = run(
        cwd,
        &[
            "key",
            "register",
            "--server",
            &addr,
            "--admin-key",
            "celltrail-data/admin.key",
            "--vkey",
            "nurse.vkey",
            "--role",
            "nurse",
            "--site",
            "HOSP-A",
            "--printed-name",
            "N. Urse",
        ],
        &[],
    );
    assert!(ok, "{out}");
    let good_vkey = "celltrail-data/log.vkey";
    let good_anchors = "celltrail-data/trust-anchors.txt";
    // A bundle to verify, exported with the right files.
    let (ok, out) = run(
        cwd,
        &[
            "export",
            "--server",
            &addr,
            "--all",
            "--log-vkey",
            good_vkey,
            "--trust-anchors",
            good_anchors,
            "--out",
            "good.json",
        ],
        &[],
    );
    assert!(ok, "{out}");
    std::fs::write(cwd.join("encrypted.pem"), pem("ENCRYPTED PRIVATE KEY")).unwrap();
    std::fs::write(cwd.join("pkcs8.pem"), pem("PRIVATE KEY")).unwrap();
    std::fs::write(cwd.join("openssh.key"), pem("OPENSSH PRIVATE KEY")).unwrap();
    let secrets: Vec<PathBuf> = vec![
        data.join("admin.key"),
        data.join("log.key"),
        cwd.join("nurse.key"),
        cwd.join("encrypted.pem"),
        cwd.join("pkcs8.pem"),
        cwd.join("openssh.key"),
    ];
    let mut checked = 0;
    for path in &secrets {
        let file = path.to_str().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let contents = text.trim();
        let export = |extra: &[&str], envs: &[(&str, &str)]| {
            let mut args = vec!["export", "--server", &addr, "--all", "--out", "x.json"];
            args.extend_from_slice(extra);
            run(cwd, &args, envs)
        };
        let mut cases: Vec<(String, (bool, String))> = vec![
            (
                "export --log-vkey FILE".into(),
                export(&["--log-vkey", file, "--trust-anchors", good_anchors], &[]),
            ),
            (
                "export --trust-anchors FILE".into(),
                export(&["--log-vkey", good_vkey, "--trust-anchors", file], &[]),
            ),
            (
                "CELLTRAIL_LOG_VKEY=FILE export".into(),
                export(
                    &["--trust-anchors", good_anchors],
                    &[("CELLTRAIL_LOG_VKEY", file)],
                ),
            ),
            (
                "CELLTRAIL_TRUST_ANCHORS=FILE export".into(),
                export(
                    &["--log-vkey", good_vkey],
                    &[("CELLTRAIL_TRUST_ANCHORS", file)],
                ),
            ),
            (
                "export --data-dir --log-vkey FILE".into(),
                run(
                    cwd,
                    &[
                        "export",
                        "--all",
                        "--data-dir",
                        "celltrail-data",
                        "--log-vkey",
                        file,
                        "--out",
                        "x.json",
                    ],
                    &[],
                ),
            ),
            (
                "verify --log-key FILE".into(),
                run(cwd, &["verify", "good.json", "--log-key", file], &[]),
            ),
            (
                "verify --log-key CONTENTS".into(),
                run(cwd, &["verify", "good.json", "--log-key", contents], &[]),
            ),
            (
                "CELLTRAIL_VERIFY_LOG_KEY=CONTENTS verify".into(),
                run(
                    cwd,
                    &["verify", "good.json"],
                    &[("CELLTRAIL_VERIFY_LOG_KEY", contents)],
                ),
            ),
            (
                "verify --trust-anchors FILE".into(),
                run(cwd, &["verify", "good.json", "--trust-anchors", file], &[]),
            ),
            (
                "verify --data-dir --log-key FILE".into(),
                run(
                    cwd,
                    &["verify", "--data-dir", "celltrail-data", "--log-key", file],
                    &[],
                ),
            ),
            (
                "verify --data-dir --trust-anchors FILE".into(),
                run(
                    cwd,
                    &[
                        "verify",
                        "--data-dir",
                        "celltrail-data",
                        "--trust-anchors",
                        file,
                    ],
                    &[],
                ),
            ),
            (
                "serve --trust-anchors FILE".into(),
                run(
                    cwd,
                    &[
                        "serve",
                        "--data-dir",
                        "fresh",
                        "--listen",
                        "127.0.0.1:0",
                        "--trust-anchors",
                        file,
                    ],
                    &[],
                ),
            ),
        ];
        for vkey in [file, contents] {
            cases.push((
                format!(
                    "key register --vkey {}",
                    if vkey == file { "FILE" } else { "CONTENTS" }
                ),
                run(
                    cwd,
                    &[
                        "key",
                        "register",
                        "--server",
                        &addr,
                        "--admin-key",
                        "celltrail-data/admin.key",
                        "--vkey",
                        vkey,
                        "--role",
                        "nurse",
                        "--site",
                        "HOSP-A",
                        "--printed-name",
                        "N. Urse",
                    ],
                    &[],
                ),
            ));
        }
        for (what, result) in cases {
            assert_refused(&format!("{what} ({})", path.display()), result, &text);
            checked += 1;
        }
        assert!(
            !cwd.join("fresh").exists(),
            "serve created a data directory"
        );
    }
    assert_eq!(checked, secrets.len() * 14);

    // A key's text pasted where its file's path belongs is not echoed either.
    let admin = std::fs::read_to_string(data.join("admin.key")).unwrap();
    for args in [
        vec![
            "event",
            "--server",
            &addr,
            "--key",
            admin.trim(),
            "--chain",
            "B",
            "--kind",
            "hold",
            "--site",
            "S",
            "--set",
            "reason=r",
        ],
        vec![
            "key",
            "revoke",
            "--server",
            &addr,
            "--admin-key",
            admin.trim(),
            "--key-id",
            "nurse.s",
            "--reason",
            "r",
        ],
    ] {
        let (ok, out) = run(cwd, &args, &[]);
        assert!(!ok, "{args:?}: {out}");
        assert!(out.contains("is not shown"), "{out}");
        for part in secret_parts(&admin) {
            assert!(
                !out.contains(&part),
                "{}: printed the secret:\n{out}",
                args[0]
            );
        }
    }
}
