//! The `export` and `verify` subcommands: flags (clap derive, `CELLTRAIL_*` env) and the glue
//! that reads files, calls `export` / `verify`, and prints the report. Wired into `cli`.

use crate::client::ServerArg;
use crate::datadir::DataDir;
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Chain id to export (repeatable).
    #[arg(long = "chain", required_unless_present = "all")]
    pub chains: Vec<String>,
    /// Export every chain.
    #[arg(long, conflicts_with = "chains")]
    pub all: bool,
    /// Export offline from a stopped server's data directory instead of over gRPC.
    #[arg(long, env = "CELLTRAIL_EXPORT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log verifier key file to copy into the bundle's anchors [default with --data-dir: DIR/log.vkey].
    #[arg(long, env = "CELLTRAIL_LOG_VKEY")]
    pub log_vkey: Option<PathBuf>,
    /// Trust-anchor file (admin verifier keys) to copy in [default with --data-dir: DIR/trust-anchors.txt].
    #[arg(long, env = "CELLTRAIL_TRUST_ANCHORS")]
    pub trust_anchors: Option<PathBuf>,
    /// Also include a consistency proof from this earlier tree size (repeatable), for an
    /// auditor who kept that checkpoint (`verify --previous`).
    #[arg(long = "since-size")]
    pub since_size: Vec<u64>,
    /// Bundle file to write.
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Bundle file written by `celltrail export`.
    #[arg(required_unless_present_any = ["data_dir", "store"])]
    pub bundle: Option<PathBuf>,
    /// Audit a whole copied data directory instead of a bundle.
    #[arg(long, conflicts_with = "bundle")]
    pub data_dir: Option<PathBuf>,
    /// Audit a whole PostgreSQL ledger (postgres://USER@HOST:PORT/DB; read-only access is
    /// enough) instead of a bundle; needs --log-key and --trust-anchors.
    #[arg(long, env = "CELLTRAIL_VERIFY_STORE", conflicts_with_all = ["bundle", "data_dir"])]
    pub store: Option<String>,
    /// Log verifier key the auditor trusts: a key string or a file holding one
    /// [default: the bundle's anchor, or DATA_DIR/log.vkey].
    // Hyphen values are taken, so a pasted PEM is refused by celltrail, not echoed by clap.
    #[arg(long, env = "CELLTRAIL_VERIFY_LOG_KEY", allow_hyphen_values = true)]
    pub log_key: Option<String>,
    /// Trust-anchor file of admin keys the auditor trusts [default: the bundle's anchors, or DATA_DIR/trust-anchors.txt].
    #[arg(long)]
    pub trust_anchors: Option<PathBuf>,
    /// Custody policy table (TOML) to replay [default: the built-in autologous CAR-T table].
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// An earlier signed checkpoint the auditor kept: also prove it is a prefix of this log.
    #[arg(long)]
    pub previous: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A witness the auditor trusts: its cosignature/v1 verifier key (name+hash+base64(0x04||key),
    /// as `celltrail witness` prints). Repeat for several.
    #[arg(
        long = "witness",
        env = "CELLTRAIL_VERIFY_WITNESSES",
        value_delimiter = ','
    )]
    pub witnesses: Vec<String>,
    /// Fail unless at least K of the --witness keys cosigned the bundle's checkpoint or a later
    /// checkpoint the bundle proves extends it (`celltrail attach-cosigned`).
    #[arg(long, requires = "witnesses")]
    pub quorum: Option<usize>,
}

fn read_vkey_file(path: &std::path::Path) -> anyhow::Result<crate::note::NoteVerifier> {
    Ok(crate::keys::read_verifier_key_file(path)?)
}

/// Adds the witness verdict to a verified bundle's report (`--witness`, `--quorum`).
fn check_witnesses(
    mut r: crate::bundle::verify::Report,
    notes: &[&str],
    specs: &[String],
    quorum: Option<usize>,
) -> anyhow::Result<crate::bundle::verify::Report> {
    use crate::witness::cosig::CosignerVerifier;
    let keys = specs
        .iter()
        .map(|s| {
            CosignerVerifier::from_key_string(s.trim())
                .map_err(|e| anyhow::anyhow!("--witness: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(k) = quorum {
        if k > keys.len() {
            bail!(
                "--quorum {k} needs at least {k} --witness keys; {} given",
                keys.len()
            );
        }
    }
    let log_key = crate::note::NoteVerifier::from_key_string(&r.log_key)
        .map_err(|e| anyhow::anyhow!("log key: {e}"))?;
    match crate::witness::quorum::check(notes, &log_key, &keys, quorum) {
        Ok(w) => {
            let met = w.quorum_met();
            let line = w.line();
            r.witnesses = Some(w);
            if !met {
                r = r.fail(crate::bundle::verify::top(format!(
                    "witness {line}: the checkpoint is not cosigned by enough independent witnesses, so the log could be showing a different history to others (add a later cosigned checkpoint with `celltrail attach-cosigned BUNDLE --server ADDR`, or ask the operator why the witnesses did not cosign)"
                )));
            }
        }
        Err(e) => r = r.fail(crate::bundle::verify::top(format!("checkpoint: {e}"))),
    }
    // Each retired log key's final checkpoint needs the same quorum: the bundle's entries
    // before it were witnessed under that key.
    for i in 0..r.log_links.len() {
        if r.failure.is_some() || keys.is_empty() {
            break;
        }
        let l = &r.log_links[i];
        let prev = crate::note::NoteVerifier::from_key_string(&l.previous_log_key)
            .map_err(|e| anyhow::anyhow!("retired log key: {e}"))?;
        let what = format!(
            "the final checkpoint of retired log {} (size {})",
            l.previous_origin, l.final_size
        );
        match crate::witness::quorum::check(&[l.final_checkpoint.as_str()], &prev, &keys, quorum) {
            Ok(w) => {
                let met = w.quorum_met();
                let line = w.line();
                r.log_links[i].witnesses = Some(w);
                if !met {
                    r = r.fail(crate::bundle::verify::top(format!(
                        "witness {line} on {what}: the entries it covers are not witnessed as required"
                    )));
                }
            }
            Err(e) => r = r.fail(crate::bundle::verify::top(format!("{what}: {e}"))),
        }
    }
    Ok(r)
}

pub async fn export(a: ExportArgs) -> anyhow::Result<()> {
    use crate::bundle::export::{anchors, from_server, from_store, Selection};
    let sel = if a.all {
        Selection::All
    } else {
        Selection::Chains(a.chains.clone())
    };
    let data_dir = a.data_dir.as_deref().map(DataDir::from);
    let vkey_path = a.log_vkey.clone().or_else(|| data_dir.as_ref().map(DataDir::log_vkey)).context(
        "--log-vkey FILE is required when exporting from a server (the log's verifier key, log.vkey)",
    )?;
    let anchors_path = a
        .trust_anchors
        .clone()
        .or_else(|| data_dir.as_ref().map(DataDir::trust_anchors))
        .context("--trust-anchors FILE is required when exporting from a server")?;
    let anchors = anchors(
        &read_vkey_file(&vkey_path)?,
        &crate::keys::read_trust_anchors(&anchors_path)?,
    );
    let bundle = match &data_dir {
        Some(dir) => {
            let store = crate::store::Store::open(&dir.db())
                .context("is the server still running on this data directory? stop it first")?;
            let key_path = dir.log_key();
            let log_key = match key_path.exists() {
                true => Some(crate::keys::read_key_file(&key_path)?),
                false => {
                    eprintln!(
                        "note: {} is missing: the bundle cannot carry signed chain heads, so it \
                         will not prove that its chains end where they end",
                        key_path.display()
                    );
                    None
                }
            };
            from_store(&store, anchors, log_key.as_ref(), &sel, &a.since_size)?
        }
        None => {
            let mut c = a.server.connect().await?;
            from_server(&mut c, anchors, &sel, &a.since_size).await?
        }
    };
    std::fs::write(&a.out, bundle.to_json())
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    let events: usize = bundle.chains.iter().map(|c| c.entries.len()).sum();
    println!(
        "wrote {}: {} chain(s), {} events, {} key registry entries, checkpoint size {}",
        a.out.display(),
        bundle.chains.len(),
        events,
        bundle.registry.len(),
        bundle.tree_size
    );
    Ok(())
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    use crate::bundle::{report, verify, Bundle};
    let policy = match &a.policy {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read policy {}", p.display()))?;
            crate::policy::Policy::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("policy {}: {e}", p.display()))?
        }
        None => crate::policy::Policy::default_autologous_car_t(),
    };
    let log_key = match &a.log_key {
        None => None,
        Some(s) => Some(crate::keys::verifier_key_arg("--log-key", s)?),
    };
    let admins = match &a.trust_anchors {
        Some(p) => Some(crate::keys::read_trust_anchors(p)?),
        None => None,
    };
    let previous = match &a.previous {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read previous checkpoint {}", p.display()))?,
        ),
        None => None,
    };
    let (r, what) = match (&a.bundle, &a.data_dir) {
        (None, None) if a.store.is_some() => {
            let url = a.store.as_deref().expect("checked by the guard");
            let shown = crate::pg::redact_url(url);
            let log_key = log_key.context(
                "--store needs --log-key: the log's verifier key (log.vkey) the auditor trusts",
            )?;
            let admins = admins
                .context("--store needs --trust-anchors: the admin keys the auditor trusts")?;
            let store = crate::pg::PgStore::open_for_audit(url)?;
            let keys = crate::bundle::audit::DataDirKeys {
                log_key,
                log_key_source: "--log-key (supplied by the auditor)".to_string(),
                admins,
            };
            let r = crate::bundle::audit::verify_store(&store, &keys, &policy, previous.as_deref());
            (r, format!("--store {shown}"))
        }
        (_, Some(root)) => {
            let dir = DataDir::new(root);
            let (log_key, source) = match log_key {
                Some(k) => (k, "--log-key (supplied by the auditor)".to_string()),
                None => {
                    let p = dir.log_vkey();
                    (
                        read_vkey_file(&p)?,
                        format!("{} (in the copied data directory)", p.display()),
                    )
                }
            };
            let admins = match admins {
                Some(a) => a,
                None => crate::keys::read_trust_anchors(&dir.trust_anchors())?,
            };
            let keys = crate::bundle::audit::DataDirKeys {
                log_key,
                log_key_source: source,
                admins,
            };
            let r = match crate::store::Store::open_for_audit(&dir.db()) {
                Ok(store) => {
                    crate::bundle::audit::verify_store(&store, &keys, &policy, previous.as_deref())
                }
                // Damaged files or a store that lost committed groups: that is the verdict.
                Err(
                    e @ (crate::storage::StorageError::CorruptAt { .. }
                    | crate::storage::StorageError::Corrupt(_)),
                ) => crate::bundle::audit::unopenable_store(&keys, &policy, e),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context("audit a copy of the data directory, not the live one"))
                }
            };
            (r, format!("--data-dir {}", root.display()))
        }
        (Some(path), None) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read bundle {}", path.display()))?;
            let b = Bundle::from_json_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let opts = verify::Options {
                log_key,
                admins,
                policy,
                previous,
            };
            let mut r = verify::verify_bundle(&b, &opts);
            if r.failure.is_none() {
                // verify_bundle proved every later checkpoint extends the bundle's.
                let notes: Vec<&str> = std::iter::once(b.checkpoint.as_str())
                    .chain(b.later_checkpoints.iter().map(|l| l.checkpoint.as_str()))
                    .collect();
                r = check_witnesses(r, &notes, &a.witnesses, a.quorum)?;
            }
            (r, path.display().to_string())
        }
        (None, None) => bail!("give a BUNDLE file, --data-dir DIR or --store postgres://…"),
    };
    if a.json {
        print!("{}", report::json(&r));
    } else {
        print!("{}", report::text(&r, &what));
    }
    match &r.failure {
        None => Ok(()),
        Some(f) => bail!("verification FAILED: {f}"),
    }
}

/// Output format of `celltrail report`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// One self-contained HTML document (prints on A4 and Letter).
    Html,
    /// Plain text within 100 columns.
    Text,
    /// Every field, machine-readable (docs/report.md).
    Json,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Bundle file written by `celltrail export` (offline).
    #[arg(required_unless_present = "chain", conflicts_with = "chain")]
    pub bundle: Option<PathBuf>,
    /// Instead of a bundle file: export this chain from a running server (--server), then render.
    #[arg(long)]
    pub chain: Option<String>,
    #[command(flatten)]
    pub server: ServerArg,
    /// With --chain: the log's verifier key file (log.vkey) to pin the export to.
    #[arg(long, env = "CELLTRAIL_LOG_VKEY", requires = "chain")]
    pub log_vkey: Option<PathBuf>,
    /// Trust-anchor file of admin keys (pins the bundle's; with --chain, required).
    #[arg(long, env = "CELLTRAIL_TRUST_ANCHORS")]
    pub trust_anchors: Option<PathBuf>,
    /// Custody policy table (TOML) to replay [default: the built-in autologous CAR-T table].
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
    pub format: ReportFormat,
    /// File to write [default: standard output].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

fn load_policy(path: Option<&std::path::Path>) -> anyhow::Result<crate::policy::Policy> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read policy {}", p.display()))?;
            crate::policy::Policy::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("policy {}: {e}", p.display()))
        }
        None => Ok(crate::policy::Policy::default_autologous_car_t()),
    }
}

/// Renders a batch record in `format`: verification by `verify::verify_bundle`, then
/// `record::build`. Returns the document and whether the bundle verified.
pub fn render_record(
    bundle: &crate::bundle::Bundle,
    opts: &crate::bundle::verify::Options,
    source: &str,
    format: ReportFormat,
) -> (String, bool) {
    use crate::bundle::record;
    let report = crate::bundle::verify::verify_bundle(bundle, opts);
    let rec = record::build(&report, source, crate::time::now_nanos());
    let doc = match format {
        ReportFormat::Html => record::html::render(&rec).html,
        ReportFormat::Text => record::text::render(&rec),
        ReportFormat::Json => {
            serde_json::to_string_pretty(&rec).expect("records serialize to JSON") + "\n"
        }
    };
    (doc, rec.verdict.ok)
}

pub async fn report(a: ReportArgs) -> anyhow::Result<()> {
    use crate::bundle::{verify, Bundle};
    let policy = load_policy(a.policy.as_deref())?;
    let admins = match &a.trust_anchors {
        Some(p) => Some(crate::keys::read_trust_anchors(p)?),
        None => None,
    };
    let (bundle, log_key, source) = match (&a.bundle, &a.chain) {
        (Some(path), _) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read bundle {}", path.display()))?;
            let b = Bundle::from_json_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (b, None, format!("bundle {}", path.display()))
        }
        (None, Some(chain)) => {
            use crate::bundle::export::{anchors, from_server, Selection};
            let vkey_path = a.log_vkey.as_ref().context(
                "--log-vkey FILE is required with --chain (the log's verifier key, log.vkey)",
            )?;
            let admins = admins.as_ref().context(
                "--trust-anchors FILE is required with --chain (the operator admin keys)",
            )?;
            let log_key = read_vkey_file(vkey_path)?;
            let mut c = a.server.connect().await?;
            let b = from_server(
                &mut c,
                anchors(&log_key, admins),
                &Selection::Chains(vec![chain.clone()]),
                &[],
            )
            .await?;
            (
                b,
                Some(log_key),
                format!("server {} chain {chain}", a.server.server),
            )
        }
        (None, None) => bail!("give a BUNDLE file or --chain ID with --server"),
    };
    let opts = verify::Options {
        log_key,
        admins,
        policy,
        previous: None,
    };
    let (doc, ok) = render_record(&bundle, &opts, &source, a.format);
    match &a.out {
        Some(p) => {
            std::fs::write(p, &doc).with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{doc}"),
    }
    if !ok {
        bail!("verification FAILED: the record says so at the top; do not use it for release");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::verify::{LinkReport, Report};
    use crate::note::{sign_note, Checkpoint, NoteSigner};
    use crate::witness::cosig::{add_lines, Cosigner};

    /// A checkpoint of `key`'s origin at `size`, cosigned by `by`.
    fn cosigned(key: &NoteSigner, size: u64, by: &[&Cosigner]) -> String {
        let text = Checkpoint {
            origin: key.name.clone(),
            size,
            root: [size as u8; 32],
            extensions: vec![],
        }
        .to_text();
        let lines: Vec<String> = by.iter().map(|w| w.cosign(&text, 1_800_000_000)).collect();
        add_lines(&sign_note(&text, &[key]).unwrap(), &lines)
    }

    #[test]
    fn the_quorum_also_binds_each_retired_keys_final_checkpoint() {
        let w = |n: &str| Cosigner::from_note_signer(&NoteSigner::generate(n).unwrap());
        let (w1, w2) = (w("hospital.example/w"), w("cro.example/w"));
        let specs = vec![w1.verifier().to_key_string(), w2.verifier().to_key_string()];
        let old = NoteSigner::generate("log.example/2026").unwrap();
        let new = NoteSigner::generate("log.example/2036").unwrap();
        let current = cosigned(&new, 9, &[&w1, &w2]);
        let report = |final_by: &[&Cosigner]| {
            let mut r = Report::new(
                &new.verifier().to_key_string(),
                "test",
                &crate::policy::Policy::default_autologous_car_t(),
            );
            r.ok = true;
            r.log_links = vec![LinkReport {
                index: 5,
                previous_origin: old.name.clone(),
                previous_log_key: old.verifier().to_key_string(),
                final_checkpoint: cosigned(&old, 5, final_by),
                final_size: 5,
                log_key: new.verifier().to_key_string(),
                origin: new.name.clone(),
                reason: "scheduled".into(),
                witnesses: None,
            }];
            r
        };
        let r = check_witnesses(report(&[&w1, &w2]), &[&current], &specs, Some(2)).unwrap();
        assert!(r.failure.is_none(), "{:?}", r.failure);
        assert!(r.log_links[0].witnesses.as_ref().unwrap().quorum_met());
        // The new checkpoint has both witnesses, the retired key's final checkpoint only one.
        let r = check_witnesses(report(&[&w1]), &[&current], &specs, Some(2)).unwrap();
        let f = r.failure.unwrap().reason;
        assert!(
            f.contains("quorum 2: NOT MET — 1")
                && f.contains("on the final checkpoint of retired log log.example/2026 (size 5)"),
            "{f}"
        );
    }
}
