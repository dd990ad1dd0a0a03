//! `celltrail witness`: flags, the witness's key and data directory, and the serve loop.
//!
//! Data directory: `witness.key` (the witness's signing key, 0600, created on first start with
//! `--name`), `witness.vkey` (its cosignature/v1 verifier key, for logs and auditors), `db/`
//! (sled: the latest cosigned checkpoint per log, and refused checkpoints kept as evidence).

use crate::note::NoteSigner;
use crate::witness::cosig::Cosigner;
use crate::witness::server::{Witness, WitnessedLog};
use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct WitnessArgs {
    /// Witness data directory (key and state; created if new).
    #[arg(
        long,
        env = "CELLTRAIL_WITNESS_DIR",
        default_value = "./celltrail-witness"
    )]
    pub data_dir: PathBuf,
    /// Witness name used when its key is first created, e.g. hospital.example/witness.
    #[arg(long, env = "CELLTRAIL_WITNESS_NAME")]
    pub name: Option<String>,
    /// Address to listen on (HTTP).
    #[arg(
        long,
        env = "CELLTRAIL_WITNESS_LISTEN",
        default_value = "127.0.0.1:7380"
    )]
    pub listen: String,
    /// A log to witness: its verifier key (log.vkey; origin = the key name) or ORIGIN=VKEY.
    /// Repeat for several logs.
    #[arg(long = "log", env = "CELLTRAIL_WITNESS_LOGS", value_delimiter = ',')]
    pub logs: Vec<String>,
    /// File with one log per line (as --log; blank lines and # comments ignored).
    #[arg(long, env = "CELLTRAIL_WITNESS_LOGS_FILE")]
    pub logs_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: off].
    #[arg(long, env = "CELLTRAIL_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Passphrase file of witness.key (first line; as `serve --key-passphrase-file`). Without
    /// it a new witness.key is written unencrypted, with a warning.
    #[command(flatten)]
    pub keys: crate::server::KeyPassphraseArg,
}

/// Reads `DIR/witness.key`, creating it (and `witness.vkey`) with `name` if missing; encrypted
/// with the passphrase from `passphrase_file` when given (the server key handling of `serve`).
pub fn open_key(
    dir: &Path,
    name: Option<&str>,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<Cosigner> {
    let mut opts = crate::server::ServeOptions::new(dir);
    if let Some(p) = passphrase_file {
        opts.key_passphrase = Some(crate::server::read_key_passphrase_file(p)?);
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create witness directory {}", dir.display()))?;
    let layout = crate::datadir::DataDir::new(dir);
    let path = layout.witness_key();
    let key = if path.exists() {
        let k = crate::server::open_server_key(&path, &opts)?;
        if let Some(n) = name {
            if n != k.name {
                anyhow::bail!(
                    "--name {n:?} differs from the name {:?} of the existing key {}; a witness keeps its name (drop --name)",
                    k.name,
                    path.display()
                );
            }
        }
        k
    } else {
        let name = name.with_context(|| {
            format!(
                "{} does not exist: give --name (e.g. --name hospital.example/witness) to create the witness key",
                path.display()
            )
        })?;
        let k = NoteSigner::generate(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
        crate::server::write_server_key(&path, &k, &opts)?;
        k
    };
    let c = Cosigner::from_note_signer(&key);
    std::fs::write(
        layout.witness_vkey(),
        format!("{}\n", c.verifier().to_key_string()),
    )?;
    Ok(c)
}

/// The logs from `--log` and `--logs-file`.
pub fn logs(a: &WitnessArgs) -> anyhow::Result<Vec<WitnessedLog>> {
    let mut out = Vec::new();
    for l in &a.logs {
        out.push(WitnessedLog::parse(l).map_err(anyhow::Error::msg)?);
    }
    if let Some(f) = &a.logs_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read logs file {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(
                WitnessedLog::parse(line)
                    .map_err(|e| anyhow::anyhow!("{} line {}: {e}", f.display(), n + 1))?,
            );
        }
    }
    if out.is_empty() {
        anyhow::bail!("no logs to witness: give --log VKEY (the log's log.vkey) or --logs-file");
    }
    Ok(out)
}

pub async fn run(a: WitnessArgs) -> anyhow::Result<()> {
    let cosigner = open_key(
        &a.data_dir,
        a.name.as_deref(),
        a.keys.key_passphrase_file.as_deref(),
    )?;
    let logs = logs(&a)?;
    let origins: Vec<String> = logs.iter().map(|l| l.origin.clone()).collect();
    let w = Arc::new(Witness::open(
        &crate::datadir::DataDir::new(&a.data_dir).db(),
        cosigner,
        logs,
    )?);
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    if let Some(m) = &a.metrics_addr {
        let bound = crate::metrics::start(m, std::future::pending()).await?;
        println!("celltrail metrics on http://{bound}/metrics");
    }
    println!(
        "celltrail witness {}",
        w.cosigner().verifier().to_key_string()
    );
    println!(
        "celltrail witness serving http://{} for {} (data {})",
        listener.local_addr()?,
        origins.join(", "),
        a.data_dir.display()
    );
    crate::witness::server::run(listener, w, crate::server::shutdown_signal()).await
}
