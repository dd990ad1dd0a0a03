//! Transport security: turns certificate and key files (PEM) into tonic TLS configurations for
//! the server (`serve --tls-cert --tls-key [--client-ca]`, mutual TLS when a client CA is given)
//! and for clients (`--tls-ca [--tls-cert --tls-key]`). Reads files; holds no state.
//!
//! TLS protects the connection (who may connect, confidentiality). It does not replace event
//! signatures: every event is still signed by registered keys and checked by the ledger.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Server side: certificate chain and key, and optionally the CA that client certificates must
/// chain to (mutual TLS: connections without such a certificate are refused in the handshake).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Client side: the CA that the server's certificate must chain to, and optionally this
/// client's own certificate and key (for servers that require mutual TLS).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to check the server certificate against [default: the host of the address].
    pub domain: Option<String>,
}

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        bail!(
            "{what} {} is not PEM (expected a '-----BEGIN ...' block)",
            path.display()
        );
    }
    Ok(bytes)
}

impl ServerTls {
    pub fn config(&self) -> anyhow::Result<ServerTlsConfig> {
        let cert = read_pem(&self.cert, "TLS certificate")?;
        let key = read_pem(&self.key, "TLS key")?;
        let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            cfg = cfg.client_ca_root(Certificate::from_pem(read_pem(ca, "client CA")?));
        }
        Ok(cfg)
    }
}

impl TlsOptions {
    /// True when any TLS flag was given: the client then speaks TLS (`https://`).
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The client configuration for a server whose host name is `host`.
    pub fn config(&self, host: &str) -> anyhow::Result<ClientTlsConfig> {
        let ca = self.ca.as_ref().context(
            "TLS needs --tls-ca: the CA certificate (PEM) that signed the server's certificate",
        )?;
        let mut cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read_pem(ca, "TLS CA")?))
            .domain_name(self.domain.clone().unwrap_or_else(|| host.to_string()));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                cfg = cfg.identity(Identity::from_pem(
                    read_pem(cert, "client certificate")?,
                    read_pem(key, "client key")?,
                ));
            }
            (None, None) => {}
            _ => bail!("--tls-cert and --tls-key go together (client certificate and its key)"),
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tls_needs_a_ca_and_both_halves_of_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let no_ca = TlsOptions {
            cert: Some(pem.clone()),
            key: Some(pem.clone()),
            ..Default::default()
        };
        assert!(no_ca.enabled());
        assert!(no_ca
            .config("h")
            .unwrap_err()
            .to_string()
            .contains("--tls-ca"));
        let half = TlsOptions {
            ca: Some(pem.clone()),
            cert: Some(pem.clone()),
            ..Default::default()
        };
        assert!(half
            .config("h")
            .unwrap_err()
            .to_string()
            .contains("go together"));
        assert!(!TlsOptions::default().enabled());
    }

    #[test]
    fn rejects_files_that_are_not_pem() {
        let dir = tempfile::tempdir().unwrap();
        let der = dir.path().join("cert.der");
        std::fs::write(&der, [0x30, 0x82, 0x01, 0x00]).unwrap();
        let s = ServerTls {
            cert: der.clone(),
            key: der,
            client_ca: None,
        };
        let err = s.config().unwrap_err().to_string();
        assert!(err.contains("is not PEM"), "{err}");
    }
}
