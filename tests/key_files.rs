//! Encrypted key files (Part 11 §11.200: what you have + what you know): `keygen` writes
//! encrypted PKCS#8 that OpenSSL opens, OpenSSL's keys open here, passphrases never come from
//! argv, plaintext keys load with a warning and convert with `key encrypt`, and the server's
//! own keys are encrypted under its passphrase file.

mod common;
mod realproc;

use celltrail::keys::{KeyFile, Passphrase, PassphraseSource};
use celltrail::note::NoteSigner;
use celltrail::server::ServeOptions;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_celltrail");
const PASS: &str = "correct horse battery staple";

fn celltrail(cwd: &Path, args: &[&str], pass_file: Option<&Path>) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(cwd).args(args);
    c.env_remove("CELLTRAIL_PASSPHRASE_FILE")
        .env_remove("CELLTRAIL_PASSPHRASE_FD");
    if let Some(p) = pass_file {
        c.env("CELLTRAIL_PASSPHRASE_FILE", p);
    }
    c.output().unwrap()
}

fn have_openssl() -> bool {
    Command::new("openssl").arg("version").output().is_ok()
}

/// The 32-byte Ed25519 public key OpenSSL derives from a key file.
fn openssl_public_key(key: &Path, pass_file: &Path) -> Vec<u8> {
    let o = Command::new("openssl")
        .args(["pkey", "-in"])
        .arg(key)
        .arg("-passin")
        .arg(format!("file:{}", pass_file.display()))
        .args(["-pubout", "-outform", "DER"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl pkey failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // SubjectPublicKeyInfo for Ed25519: 12-byte header, then the raw key.
    assert_eq!(o.stdout.len(), 44, "unexpected SPKI length");
    o.stdout[12..].to_vec()
}

fn pass_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("pass");
    std::fs::write(&p, format!("{PASS}\n")).unwrap();
    p
}

#[test]
fn keygen_writes_encrypted_pkcs8_that_openssl_opens() {
    let dir = tempfile::tempdir().unwrap();
    let pass = pass_file(dir.path());
    let o = celltrail(
        dir.path(),
        &["keygen", "--name", "nurse.pk8", "--out", "n.key"],
        Some(&pass),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vkey = String::from_utf8(o.stdout).unwrap();
    let verifier = celltrail::note::NoteVerifier::from_key_string(vkey.trim()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("n.key")).unwrap();
    assert!(
        text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{text}"
    );
    assert!(!text.contains("PRIVATE+KEY"), "{text}");
    // Opens here with the passphrase, to the printed key.
    let kf = KeyFile::load(&dir.path().join("n.key")).unwrap();
    let s = kf.open(&Passphrase::new(PASS)).unwrap();
    assert_eq!(s.verifier().to_key_string(), vkey.trim());
    if !have_openssl() {
        eprintln!("openssl not installed: OpenSSL direction not checked");
        return;
    }
    assert_eq!(
        openssl_public_key(&dir.path().join("n.key"), &pass),
        verifier.key.as_bytes().to_vec()
    );
    // And OpenSSL refuses a wrong passphrase (the file really is encrypted).
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase at all\n").unwrap();
    let o = Command::new("openssl")
        .args(["pkey", "-in"])
        .arg(dir.path().join("n.key"))
        .arg("-passin")
        .arg(format!("file:{}", wrong.display()))
        .arg("-noout")
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "openssl opened it with a wrong passphrase"
    );
}

#[test]
fn keys_made_by_openssl_open_and_sign() {
    if !have_openssl() {
        eprintln!("openssl not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pass = pass_file(dir.path());
    let key = dir.path().join("nurse.ossl.pem");
    let o = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass"])
        .arg(format!("file:{}", pass.display()))
        .arg("-out")
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kf = KeyFile::load(&key).unwrap();
    assert_eq!(kf.name(), "nurse.ossl", "name from the file name");
    let s = kf.open(&Passphrase::new(PASS)).unwrap();
    assert_eq!(
        s.key.verifying_key().as_bytes().to_vec(),
        openssl_public_key(&key, &pass)
    );
    assert!(kf.open(&Passphrase::new("wrong passphrase here")).is_err());
    // The same file read through the environment variable, as a station or the CLI does.
    let s2 =
        celltrail::keys::read_key_file_with(&key, &PassphraseSource::Given(Passphrase::new(PASS)))
            .unwrap();
    assert_eq!(s2.to_key_string(), s.to_key_string());
}

#[test]
fn keygen_refuses_a_short_passphrase_and_takes_none_from_argv() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "elevenchars\n").unwrap();
    let o = celltrail(
        dir.path(),
        &["keygen", "--name", "nurse.short", "--out", "s.key"],
        Some(&short),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("at least 12 characters"), "{err}");
    assert!(!err.contains("elevenchars"), "echoed the passphrase: {err}");
    assert!(!dir.path().join("s.key").exists());
    let o = celltrail(
        dir.path(),
        &[
            "keygen",
            "--name",
            "nurse.argv",
            "--passphrase",
            "correct horse battery",
        ],
        None,
    );
    assert!(!o.status.success(), "a passphrase flag must not exist");
}

/// On a terminal that echoes what is typed, `keygen` asks for the passphrase without echo,
/// refuses a short one and asks again, then asks it a second time; the key opens with it.
#[test]
fn keygen_asks_the_passphrase_twice_on_the_terminal_without_echo() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir.path())
        .arg("-c")
        .arg("stty echo && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(["keygen", "--name", "nurse.tty", "--out", "tty.key"])
        .env_remove("CELLTRAIL_PASSPHRASE_FILE")
        .env_remove("CELLTRAIL_PASSPHRASE_FD");
    let mut p = rexpect::session::spawn_command(cmd, Some(60_000)).expect("spawn in a pty");
    let mut seen = String::new();
    let mut step = |p: &mut rexpect::session::PtySession, want: &str, send: Option<&str>| {
        seen += &p
            .exp_string(want)
            .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}\nso far:\n{seen}"));
        seen += want;
        if let Some(line) = send {
            p.send_line(line).unwrap();
        }
    };
    step(&mut p, "New passphrase for", Some("tiny-secret"));
    step(&mut p, "at least 12 characters", None);
    step(&mut p, "New passphrase for", Some(PASS));
    step(&mut p, "Type it again", Some(PASS));
    seen += &p.exp_eof().expect("keygen ends");
    assert!(!seen.contains(PASS), "the passphrase was echoed:\n{seen}");
    assert!(
        !seen.contains("tiny-secret"),
        "the passphrase was echoed:\n{seen}"
    );
    let key = KeyFile::load(&dir.path().join("tty.key")).unwrap();
    assert!(key.is_encrypted());
    assert_eq!(key.open(&Passphrase::new(PASS)).unwrap().name, "nurse.tty");
}

#[test]
fn passphrase_from_a_file_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let pass = pass_file(dir.path());
    // The shell opens the passphrase file as fd 3 for the child.
    let o = Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!(
            "exec 3< '{}'; CELLTRAIL_PASSPHRASE_FD=3 '{BIN}' keygen --name nurse.fd --out fd.key",
            pass.display()
        ))
        .env_remove("CELLTRAIL_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kf = KeyFile::load(&dir.path().join("fd.key")).unwrap();
    kf.open(&Passphrase::new(PASS)).unwrap();
}

#[test]
fn plaintext_key_loads_with_a_warning_and_key_encrypt_converts_it() {
    let dir = tempfile::tempdir().unwrap();
    let pass = pass_file(dir.path());
    let old = dir.path().join("old.key");
    let s = NoteSigner::generate("nurse.old").unwrap();
    celltrail::keys::write_key_file(&old, &s).unwrap();
    let o = celltrail(dir.path(), &["key", "encrypt", "old.key"], Some(&pass));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kf = KeyFile::load(&old).unwrap();
    assert!(kf.is_encrypted());
    assert_eq!(kf.name(), "nurse.old");
    assert_eq!(
        kf.open(&Passphrase::new(PASS)).unwrap().to_key_string(),
        s.to_key_string()
    );
    let o = celltrail(dir.path(), &["key", "encrypt", "old.key"], Some(&pass));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already encrypted"));
}

#[test]
fn cli_warns_loudly_when_signing_with_a_plaintext_key() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("plain.key");
    celltrail::keys::write_key_file(&old, &NoteSigner::generate("nurse.plain").unwrap()).unwrap();
    // No server: the key is read (and warned about) before connecting.
    let o = celltrail(
        dir.path(),
        &[
            "event",
            "--server",
            "127.0.0.1:1",
            "--key",
            "plain.key",
            "--chain",
            "X",
            "--kind",
            "hold",
            "--site",
            "S",
            "--set",
            "reason=x",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("WARNING: key nurse.plain is stored UNENCRYPTED"),
        "{err}"
    );
    assert!(err.contains("celltrail key encrypt"), "{err}");
    assert!(
        err.contains("NOT a 21 CFR Part 11 electronic signature"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keys_are_encrypted_under_the_passphrase_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut opts = ServeOptions::new(&data);
    opts.key_passphrase = Some(Passphrase::new(PASS));
    opts.kdf_iterations = 1_000;
    let server = common::TestServer::start_with(opts.clone()).await;
    server.stop().await;
    for f in ["log.key", "admin.key"] {
        let kf = KeyFile::load(&data.join(f)).unwrap();
        assert!(kf.is_encrypted(), "{f} must be encrypted");
        kf.open(&Passphrase::new(PASS)).unwrap();
    }
    // A restart without the passphrase says what to give; with a wrong one it fails.
    let err = celltrail::server::open(&ServeOptions::new(&data))
        .err()
        .expect("must not open")
        .to_string();
    assert!(err.contains("--key-passphrase-file"), "{err}");
    let mut wrong = opts.clone();
    wrong.key_passphrase = Some(Passphrase::new("another passphrase"));
    let err = celltrail::server::open(&wrong)
        .err()
        .expect("must not open")
        .to_string();
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!err.contains("another passphrase"), "{err}");

    // The real binary with --key-passphrase-file restarts unattended, without a warning.
    let pf = pass_file(dir.path());
    std::fs::set_permissions(&pf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let p = realproc::Proc::start(&data, &["--key-passphrase-file", pf.to_str().unwrap()]).await;
    let mut c = p.client().await;
    // The decrypted admin key registers a signer; the decrypted log key signs the checkpoint.
    let admin = KeyFile::load(&data.join("admin.key"))
        .unwrap()
        .open(&Passphrase::new(PASS))
        .unwrap();
    let r = common::register(&mut c, &admin, &common::signer("nurse.srv"), "nurse", "S").await;
    let log_vkey = std::fs::read_to_string(data.join("log.vkey")).unwrap();
    let v = celltrail::note::NoteVerifier::from_key_string(log_vkey.trim()).unwrap();
    celltrail::note::open_note(&r.checkpoint, &[v]).expect("checkpoint signed by the log key");
    assert!(!p.stderr().contains("WARNING"), "{}", p.stderr());
}

/// Issue 14 point 1: `serve` never writes its own keys unencrypted. Without any passphrase
/// (no --key-passphrase-file, no CELLTRAIL_PASSPHRASE_FILE/_FD, no terminal) it refuses to
/// start and creates nothing; with the automation passphrase file it encrypts log.key and
/// admin.key under it; an old data directory with plaintext keys still starts, loudly warned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_writes_its_keys_encrypted_and_loads_old_plaintext_ones_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("CELLTRAIL_PASSPHRASE_FILE")
        .env_remove("CELLTRAIL_PASSPHRASE_FD")
        .env_remove("CELLTRAIL_KEY_PASSPHRASE_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--key-passphrase-file") && err.contains("encrypted"),
        "{err}"
    );
    assert!(!data.exists(), "nothing created without a passphrase");

    // The harness hands serve its passphrase as automation does (CELLTRAIL_PASSPHRASE_FILE).
    let p = realproc::Serve::new().data_dir(&data).start();
    let pass = std::fs::read_to_string(dir.path().join("passphrase")).unwrap();
    for f in ["log.key", "admin.key"] {
        let kf = KeyFile::load(&data.join(f)).unwrap();
        assert!(kf.is_encrypted(), "{f} must be encrypted");
        kf.open(&Passphrase::new(pass.trim_end())).unwrap();
    }
    assert!(!p.stderr().contains("UNENCRYPTED"), "{}", p.stderr());
    drop(p);

    // An old data directory whose keys are plaintext starts, with a loud warning.
    let old = dir.path().join("old");
    {
        // Stop the writer so the store's lock is free for the server process.
        let opened = celltrail::server::open(&ServeOptions::new(&old)).unwrap();
        opened.ledger.shutdown();
    }
    assert!(!KeyFile::load(&old.join("log.key")).unwrap().is_encrypted());
    let p = realproc::Serve::new().data_dir(&old).start();
    let mut err = String::new();
    for _ in 0..100 {
        err = p.stderr();
        if err.contains("UNENCRYPTED") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(err.contains("UNENCRYPTED"), "{err}");
    assert!(err.contains("celltrail key encrypt"), "{err}");
}

/// An operator restarting `serve` on a terminal who mistypes the passphrase is asked again
/// (three tries in all, nothing echoed) instead of the server exiting at the first typo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_terminal_asks_again_after_a_mistyped_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut opts = ServeOptions::new(&data);
    opts.key_passphrase = Some(Passphrase::new(PASS));
    opts.kdf_iterations = 1_000;
    common::TestServer::start_with(opts).await.stop().await;
    let serve = |data: std::path::PathBuf| {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env_remove("CELLTRAIL_PASSPHRASE_FILE")
            .env_remove("CELLTRAIL_PASSPHRASE_FD")
            .env_remove("CELLTRAIL_KEY_PASSPHRASE_FILE")
            .env("CELLTRAIL_LOG", "warn");
        rexpect::session::spawn_command(cmd, Some(30_000)).expect("spawn in a pty")
    };
    let d = data.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let mut p = serve(d);
        let mut seen = String::new();
        let mut step = |p: &mut rexpect::session::PtySession, want: &str, send: Option<&str>| {
            seen += &p
                .exp_string(want)
                .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}\nso far:\n{seen}"));
            seen += want;
            if let Some(line) = send {
                p.send_line(line).unwrap();
            }
        };
        step(&mut p, "Passphrase of the server's", Some("a typo in it!"));
        step(&mut p, "attempt 1 of 3", None);
        step(&mut p, "Passphrase of the server's", Some(PASS));
        step(&mut p, "serving on 127.0.0.1:", None);
        p.send_control('c').unwrap();
        seen += &p.exp_eof().unwrap_or_default();
        seen
    })
    .await
    .unwrap();
    assert!(
        !seen.contains(PASS) && !seen.contains("a typo in it!"),
        "{seen}"
    );
    // Three wrong ones: it stops, saying so.
    let seen = tokio::task::spawn_blocking(move || {
        let mut p = serve(data);
        let mut seen = String::new();
        for _ in 0..3 {
            seen += &p.exp_string("Passphrase of the server's").unwrap();
            p.send_line("still not it!").unwrap();
        }
        seen + &p.exp_eof().unwrap()
    })
    .await
    .unwrap();
    assert!(
        seen.contains("attempt 2 of 3")
            && !seen.contains("attempt 3 of 3")
            && seen.ends_with("wrong passphrase (or the key file is damaged)\r\n"),
        "{seen:?}"
    );
}
