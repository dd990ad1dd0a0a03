//! Transport security with certificates made at test time (rcgen): TLS, mutual TLS that refuses
//! clients without a certificate or with one from another CA, the CLI's TLS flags against the
//! real binary, and the plain-text warning on a non-loopback address.

mod common;
mod realproc;
mod station_support;

use celltrail::pb::GetHeadRequest;
use celltrail::tls::{ServerTls, TlsOptions};
use common::TestServer;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::path::{Path, PathBuf};
use tonic::Code;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("celltrail test CA {name}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&pem, issuer.pem()).unwrap();
    Ca { issuer, pem }
}

/// Issues a certificate for `names` from `ca`; writes `{stem}.pem` and `{stem}.key`.
fn leaf(dir: &Path, ca: &Ca, stem: &str, names: &[&str], client: bool) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, stem);
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    server: (PathBuf, PathBuf),
    station: (PathBuf, PathBuf),
    rogue: (PathBuf, PathBuf),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_ = ca(dir.path(), "hospital");
    let other = ca(dir.path(), "other");
    let server = leaf(
        dir.path(),
        &ca_,
        "server",
        &["localhost", "127.0.0.1"],
        false,
    );
    let station = leaf(dir.path(), &ca_, "station", &["station-1"], true);
    let rogue = leaf(dir.path(), &other, "rogue", &["station-1"], true);
    Pki {
        dir,
        ca: ca_,
        server,
        station,
        rogue,
    }
}

/// A TLS server on a free port; stops when the returned server is dropped.
async fn start_tls(data: &Path, tls: ServerTls) -> (String, TestServer) {
    let srv = TestServer::builder(data)
        .tls(tls.config().unwrap())
        .start()
        .await;
    (srv.addr.to_string(), srv)
}

/// A GetHead on a missing chain: `Ok(())` when the server answered (NOT_FOUND), else the error.
async fn probe(addr: &str, tls: &TlsOptions) -> Result<(), String> {
    let mut c = celltrail::client::connect_with(addr, tls)
        .await
        .map_err(|e| e.to_string())?;
    match c
        .get_head(GetHeadRequest {
            chain_id: "NONE".into(),
        })
        .await
    {
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        Ok(_) => Err("chain NONE exists?".into()),
    }
}

fn opts(ca: Option<&Path>, id: Option<&(PathBuf, PathBuf)>) -> TlsOptions {
    TlsOptions {
        ca: ca.map(Path::to_path_buf),
        cert: id.map(|i| i.0.clone()),
        key: id.map(|i| i.1.clone()),
        domain: None,
    }
}

#[tokio::test]
async fn tls_server_answers_tls_clients_and_refuses_plain_text() {
    let p = pki();
    let data = tempfile::tempdir().unwrap();
    let tls = ServerTls {
        cert: p.server.0.clone(),
        key: p.server.1.clone(),
        client_ca: None,
    };
    let (addr, _stop) = start_tls(data.path(), tls).await;
    probe(&addr, &opts(Some(&p.ca.pem), None))
        .await
        .expect("TLS client");
    assert!(
        probe(&addr, &TlsOptions::default()).await.is_err(),
        "plain text must fail"
    );
    // A client that trusts another CA refuses the server.
    let other = p.dir.path().join("other-ca.pem");
    assert!(probe(&addr, &opts(Some(&other), None)).await.is_err());
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_or_from_another_ca() {
    let p = pki();
    let data = tempfile::tempdir().unwrap();
    let tls = ServerTls {
        cert: p.server.0.clone(),
        key: p.server.1.clone(),
        client_ca: Some(p.ca.pem.clone()),
    };
    let (addr, _stop) = start_tls(data.path(), tls).await;
    probe(&addr, &opts(Some(&p.ca.pem), Some(&p.station)))
        .await
        .expect("enrolled station");
    let no_cert = probe(&addr, &opts(Some(&p.ca.pem), None)).await;
    assert!(
        no_cert.is_err(),
        "client without a certificate must be refused"
    );
    let rogue = probe(&addr, &opts(Some(&p.ca.pem), Some(&p.rogue))).await;
    assert!(
        rogue.is_err(),
        "client certificate from another CA must be refused"
    );
    eprintln!(
        "no cert: {}\nrogue: {}",
        no_cert.unwrap_err(),
        rogue.unwrap_err()
    );
    // The enrolled station still works afterwards.
    probe(&addr, &opts(Some(&p.ca.pem), Some(&p.station)))
        .await
        .expect("station again");
}

/// The real binary; `key register --admin-key` opens the server's admin key with the
/// harness's passphrase (the one `serve` encrypted it under).
fn cli(args: &[&str]) -> std::process::Output {
    let pass = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pass.path(), format!("{}\n", realproc::PASSPHRASE)).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .args(args)
        .env("CELLTRAIL_PASSPHRASE_FILE", pass.path())
        .output()
        .expect("run celltrail")
}

#[tokio::test]
async fn cli_registers_a_key_over_mutual_tls_with_the_real_binary() {
    let p = pki();
    let data = tempfile::tempdir().unwrap();
    let s = |x: &Path| x.to_str().unwrap().to_string();
    let (cert, key, ca) = (s(&p.server.0), s(&p.server.1), s(&p.ca.pem));
    let srv = realproc::Proc::start(
        data.path(),
        &["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &ca],
    )
    .await;
    let admin = s(&data.path().join("admin.key"));
    let vkey = celltrail::note::NoteSigner::generate("nurse.tls")
        .unwrap()
        .verifier()
        .to_key_string();
    let register = |extra: &[&str]| {
        let mut a = vec![
            "key",
            "register",
            "--server",
            &srv.addr,
            "--admin-key",
            &admin,
            "--vkey",
            &vkey,
            "--role",
            "apheresis_nurse",
            "--site",
            "HOSP-A",
            "--printed-name",
            "TLS Nurse",
        ];
        a.extend_from_slice(extra);
        cli(&a)
    };
    let (sc, sk) = (s(&p.station.0), s(&p.station.1));
    let out = register(&["--tls-ca", &ca, "--tls-cert", &sc, "--tls-key", &sk]);
    assert!(
        out.status.success(),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("recorded in the key registry"));
    let out = register(&["--tls-ca", &ca]);
    assert!(!out.status.success(), "no client certificate: must fail");
    let out = register(&[]);
    assert!(!out.status.success(), "plain text: must fail");
}

/// Server TLS (certificate, key, client CA) from `serve`'s config file, and a client's server
/// address and TLS identity from the `[client]` section of its own file: mutual TLS configured
/// by files alone, paths relative to each file.
#[tokio::test]
async fn config_files_set_server_and_client_tls() {
    let p = pki();
    let data = tempfile::tempdir().unwrap();
    let server_toml = p.dir.path().join("server.toml");
    std::fs::write(
        &server_toml,
        "tls_cert = \"server.pem\"\ntls_key = \"server.key\"\nclient_ca = \"hospital-ca.pem\"\n",
    )
    .unwrap();
    let srv =
        realproc::Proc::start(data.path(), &["--config", server_toml.to_str().unwrap()]).await;
    // TLS, and mutual: a client without a certificate is refused.
    probe(&srv.addr, &opts(Some(&p.ca.pem), Some(&p.station)))
        .await
        .expect("station with its certificate");
    assert!(probe(&srv.addr, &opts(Some(&p.ca.pem), None))
        .await
        .is_err());
    assert!(probe(&srv.addr, &opts(None, None)).await.is_err());

    let station_toml = p.dir.path().join("station.toml");
    std::fs::write(
        &station_toml,
        format!(
            "[client]\nserver = \"{}\"\ntls_ca = \"hospital-ca.pem\"\ntls_cert = \"station.pem\"\ntls_key = \"station.key\"\n",
            srv.addr
        ),
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let key_list = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_celltrail"))
            .current_dir(elsewhere.path())
            .args(args)
            .env_remove("CELLTRAIL_SERVER")
            .output()
            .expect("run celltrail")
    };
    let cfg = station_toml.to_str().unwrap();
    let out = key_list(&["--config", cfg, "key", "list"]);
    assert!(
        out.status.success(),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the file the same command has no server address and no TLS: it fails.
    let out = key_list(&["key", "list", "--server", &srv.addr]);
    assert!(
        !out.status.success(),
        "plain text to a TLS server must fail"
    );
    // A flag beats the file.
    let out = key_list(&["--config", cfg, "key", "list", "--server", "127.0.0.1:1"]);
    assert!(!out.status.success(), "--server must override the file");
    // A client certificate without its key is refused before anything is sent.
    std::fs::write(
        &station_toml,
        format!(
            "[client]\nserver = \"{}\"\ntls_cert = \"station.pem\"\n",
            srv.addr
        ),
    )
    .unwrap();
    let out = key_list(&["--config", cfg, "key", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_cert is set but tls_key is not"), "{err}");
}

/// Starts `serve`, waits until it is serving, stops it and returns what it wrote to stderr.
fn stderr_of_serve(data: &Path, extra: &[&str]) -> String {
    realproc::Serve::new()
        .no_listen()
        .data_dir(data)
        .args(extra.iter().copied())
        .start()
        .stop()
}

#[test]
fn plain_text_on_a_non_loopback_address_warns_and_tls_does_not() {
    let p = pki();
    let data = tempfile::tempdir().unwrap();
    let err = stderr_of_serve(data.path(), &["--listen", "0.0.0.0:0"]);
    assert!(
        err.contains("WARNING: serving plain-text gRPC on non-loopback address"),
        "{err}"
    );
    // (The server's keys here are unencrypted, which has its own warning: not this one.)
    let err = stderr_of_serve(data.path(), &["--listen", "127.0.0.1:0"]);
    assert!(!err.contains("WARNING: serving plain-text"), "{err}");
    let s = |x: &Path| x.to_str().unwrap().to_string();
    let (cert, key, ca) = (s(&p.server.0), s(&p.server.1), s(&p.ca.pem));
    let err = stderr_of_serve(
        data.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--client-ca",
            &ca,
        ],
    );
    assert!(!err.contains("WARNING: serving plain-text"), "{err}");
    assert!(!err.contains("note: TLS without --client-ca"), "{err}");
}

/// The station's policy questions (GetAllowedNext, PreviewEvent) go over the station's TLS
/// flags like its appends: over mutual TLS the station is ONLINE, records the enrolment and
/// shows the policy's refusal of an event the chain does not allow (it never falls back to
/// "offline" because the policy RPCs spoke plain text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_asks_the_policy_over_its_tls_settings() {
    use station_support::*;
    let p = pki();
    let data = tempfile::tempdir().unwrap();
    let (addr, srv) = start_tls(
        &data.path().join("data"),
        ServerTls {
            cert: p.server.0.clone(),
            key: p.server.1.clone(),
            client_ca: Some(p.ca.pem.clone()),
        },
    )
    .await;
    let mut c = celltrail::client::connect_with(&addr, &opts(Some(&p.ca.pem), Some(&p.station)))
        .await
        .unwrap();
    let nurse = common::signer("nurse.tls");
    common::register(&mut c, &srv.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let key = key_file(data.path(), &nurse);
    let s = |x: &Path| x.to_str().unwrap().to_string();
    let (ca, sc, sk, k) = (s(&p.ca.pem), s(&p.station.0), s(&p.station.1), s(&key));
    let (bag, _) = din(700);
    let (wrist, _) = coi("PAT700");
    let tls = ["--tls-ca", &ca, "--tls-cert", &sc, "--tls-key", &sk];
    let queue = data.path().join("station");
    let mut args = tls.to_vec();
    args.extend([
        "--key",
        &k,
        "--site",
        "HOSP-A",
        "--yes",
        "--event",
        "enrolled",
        "--scan",
        &bag,
        "--scan",
        &wrist,
        "--set",
        "manufacturing_site=MFG-1",
    ]);
    let out = expect(&scan(srv.addr, &queue, &args).await, 0, "ACCEPTED");
    assert!(out.contains("ONLINE"), "{out}");
    let mut args = tls.to_vec();
    args.extend([
        "--key", &k, "--site", "HOSP-A", "--yes", "--event", "infused", "--scan", &bag,
    ]);
    let out = expect(&scan(srv.addr, &queue, &args).await, 1, "NO INFUSED NOW");
    assert!(
        out.contains("state Enrolled"),
        "the policy answered over TLS:\n{out}"
    );
}

/// A plain-text client pointed at a TLS server gets no gRPC answer at all; the error says to
/// check the address and to give `--tls-ca`, not only "Cancelled: operation was canceled".
#[tokio::test]
async fn plain_text_client_at_a_tls_server_is_told_to_give_tls_ca() {
    let p = pki();
    let data = tempfile::tempdir().unwrap();
    let s = |x: &Path| x.to_str().unwrap().to_string();
    let (cert, key) = (s(&p.server.0), s(&p.server.1));
    let srv = realproc::Proc::start(data.path(), &["--tls-cert", &cert, "--tls-key", &key]).await;
    for args in [
        vec!["chain", "BAG-1", "--server", &srv.addr],
        vec!["key", "list", "--server", &srv.addr],
    ] {
        let out = cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: plain text must fail");
        assert!(
            err.contains("--tls-ca") && err.contains("before the server answered"),
            "{args:?}: the error says what to do: {err}"
        );
    }
    let ca = s(&p.ca.pem);
    let out = cli(&["key", "list", "--server", &srv.addr, "--tls-ca", &ca]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
