//! The console over TLS: with `--tls-cert`/`--tls-key` the console speaks only TLS, and with
//! `--client-ca` it admits only clients with a certificate from that CA (mTLS, no token).
//! Certificates are made at test time (rcgen); the server is the real `celltrail serve`.

mod common;
mod realproc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn leaf(
    dir: &Path,
    ca: &CertifiedIssuer<'static, KeyPair>,
    stem: &str,
    client: bool,
) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, stem);
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// GET `path` over TLS, trusting `ca`, presenting `client` if given. `Err` if TLS fails.
async fn https_get(
    addr: &str,
    ca: &Path,
    client: Option<&(PathBuf, PathBuf)>,
    path: &str,
) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        Some((c, k)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).to_string())
}

#[tokio::test]
async fn console_speaks_only_tls_and_admits_only_certified_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "celltrail console test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let server = leaf(dir.path(), &ca, "server", false);
    let qa = leaf(dir.path(), &ca, "qa-reviewer", true);

    let p = realproc::Serve::new()
        .data_dir(&dir.path().join("data"))
        .args(["--http", "127.0.0.1:0", "--tls-cert"])
        .arg(&server.0)
        .arg("--tls-key")
        .arg(&server.1)
        .arg("--client-ca")
        .arg(&ca_pem)
        .start();
    let url = p.console_url();
    assert!(url.starts_with("https://"), "{url}");
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();

    // A certified client reads pages.
    let page = https_get(&addr, &ca_pem, Some(&qa), "/checkpoint")
        .await
        .unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Latest checkpoint"));
    assert!(page
        .to_ascii_lowercase()
        .contains("content-security-policy"));

    // Without a client certificate the handshake (or the first read) fails: no page.
    let refused = https_get(&addr, &ca_pem, None, "/checkpoint").await;
    assert!(
        !refused.as_deref().unwrap_or("").contains("200 OK"),
        "{refused:?}"
    );

    // Plain HTTP to the console port gets no page either.
    let mut plain = std::net::TcpStream::connect(&addr).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET /checkpoint HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("Latest checkpoint"));

    p.stop();
}
