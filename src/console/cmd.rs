//! `serve --http`: checks the console flags before anything is opened, then starts the console
//! beside the gRPC server on the same runtime and stops it with the same shutdown signal.

use super::{Access, Console};
use anyhow::{bail, Context};
use std::future::Future;
use std::path::PathBuf;

/// Console settings that passed the checks.
pub struct Checked {
    addr: String,
    access: Access,
    tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
}

/// Shortest bearer token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The `serve` flags the console reads (`cli::ServeArgs` fills it; kept apart so the console
/// does not depend on the command line).
pub struct ConsoleFlags<'a> {
    pub http: &'a Option<String>,
    pub http_token_file: &'a Option<PathBuf>,
    pub client_ca: &'a Option<PathBuf>,
    pub tls_cert: &'a Option<PathBuf>,
    pub tls_key: &'a Option<PathBuf>,
}

/// `None` when `--http` is not given. Errors name the flag to fix; never the token.
pub fn check(a: &ConsoleFlags) -> anyhow::Result<Option<Checked>> {
    let Some(addr) = &a.http else {
        return Ok(None);
    };
    let access = match (&a.http_token_file, &a.client_ca) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the console token file {}", path.display())
            })?;
            let token = text.trim();
            if token.len() < MIN_TOKEN_LEN
                || token.chars().any(|c| c.is_whitespace() || c.is_control() || c == ';')
            {
                bail!(
                    "the console token in {} must be one line of at least {MIN_TOKEN_LEN} characters without spaces or ';' (e.g. `openssl rand -hex 32 > {}`)",
                    path.display(),
                    path.display()
                );
            }
            Access::Token(token.to_string())
        }
        (None, Some(_)) => Access::ClientCertificate,
        (None, None) => bail!(
            "--http needs a way to admit people: --http-token-file FILE (a bearer token) or --client-ca FILE with --tls-cert (client certificates); see SECURITY.md"
        ),
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone(), a.client_ca.clone())),
        _ => None,
    };
    Ok(Some(Checked {
        addr: addr.clone(),
        access,
        tls,
    }))
}

impl Checked {
    /// Binds and starts the console. Returns the shutdown future for the gRPC server (it also
    /// stops the console) and the console's task.
    pub async fn start(
        self,
        opened: &crate::server::Opened,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<(
        impl Future<Output = ()> + Send + 'static,
        tokio::task::JoinHandle<()>,
    )> {
        let acceptor = match &self.tls {
            Some((cert, key, ca)) => Some(super::tls::acceptor(cert, key, ca.as_deref())?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(&self.addr)
            .await
            .with_context(|| format!("cannot listen on {} for the console", self.addr))?;
        let addr = listener.local_addr()?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        if acceptor.is_none() && !addr.ip().is_loopback() {
            eprintln!("WARNING: serving the console over plain HTTP on non-loopback address {addr}; the token and the records cross the network in clear (use --tls-cert/--tls-key)");
        }
        let router = super::router(Console {
            store: opened.ledger.store().clone(),
            ledger: opened.ledger.clone(),
            log_verifier: opened.log_verifier.clone(),
            admins: opened.admins.clone(),
            log_key: Some(opened.log_signer.clone()),
            access: self.access,
            secure: acceptor.is_some(),
        });
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = super::serve(listener, router, acceptor, stop).await {
                tracing::error!(error = %e, "console stopped");
            }
        });
        println!("celltrail console on {scheme}://{addr}/");
        let shutdown = async move {
            shutdown.await;
            let _ = tx.send(true);
        };
        Ok((shutdown, task))
    }
}
