//! `celltrail log retire | final | rotate`: the operator's side of a log key rotation
//! (docs/log-rotation.md). `retire` marks a stopped log's key retired in its store (the server
//! then appends nothing, but serves reads and gathers cosignatures of the final checkpoint);
//! `final` waits on a running server until its final checkpoint is cosigned and writes it out;
//! `rotate` makes the new log key and appends, through the ledger's own writer, the `LogLink`
//! event (signed by an operator admin) that commits to that final checkpoint, then puts the new
//! key in place and the retired one in `retired-keys/`. The rules live in `loglink` and in the
//! ledger writer; this module only does files and flags.

use crate::client::{sign_draft, status_error, Draft, ServerArg};
use crate::datadir::DataDir;
use crate::loglink::{Link, LOG_CHAIN, META_RETIRED, REASONS};
use crate::note::{Checkpoint, NoteSigner, NoteVerifier};
use crate::pb::{event_body::Detail, GetCheckpointRequest, LogLink, SignatureMeaning};
use crate::storage::{Group, Storage};
use crate::witness::cosig::CosignerVerifier;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Retire the log key of a STOPPED server's data directory: the server then appends
    /// nothing (stations keep their events queued) and its witnesses cosign the final checkpoint.
    Retire(RetireArgs),
    /// Wait until a running (retired) log's final checkpoint is cosigned, and write it out.
    Final(FinalArgs),
    /// In a STOPPED server's data directory: make the new log key (new origin) and append the
    /// link to the retired key's final checkpoint as the first entry under it.
    Rotate(RotateArgs),
}

#[derive(Args, Debug)]
pub struct RetireArgs {
    /// The log's data directory (the server must be stopped).
    #[arg(long, env = "CELLTRAIL_DATA_DIR")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct FinalArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// The retired log's verifier key (a key string or a file holding one, e.g. log.vkey).
    #[arg(long, env = "CELLTRAIL_VERIFY_LOG_KEY", allow_hyphen_values = true)]
    pub log_key: String,
    /// A witness whose cosignature the final checkpoint needs (its cosignature verifier key).
    #[arg(
        long = "witness",
        env = "CELLTRAIL_LOG_FINAL_WITNESSES",
        value_delimiter = ','
    )]
    pub witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned [default: all of them].
    #[arg(long, requires = "witnesses")]
    pub quorum: Option<usize>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// File to write the cosigned final checkpoint to.
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// The log's data directory (the server must be stopped).
    #[arg(long, env = "CELLTRAIL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The retired key's final checkpoint, as `celltrail log final` wrote it (with its
    /// cosignatures).
    #[arg(long = "final")]
    pub final_checkpoint: PathBuf,
    /// Origin (checkpoint name) of the new log key, e.g. `manufacturer.example/log-2036`.
    #[arg(long, env = "CELLTRAIL_ORIGIN")]
    pub new_origin: String,
    /// Why: `scheduled`, or `compromise` (then the final checkpoint may be an earlier one
    /// than the store's latest: the last one the witnesses cosigned before the compromise).
    #[arg(long, default_value = "scheduled")]
    pub reason: String,
    /// Operator admin key that signs the link [default: DATA_DIR/admin.key].
    #[arg(long, env = "CELLTRAIL_ADMIN_KEY")]
    pub admin_key: Option<PathBuf>,
    /// Trust-anchor file [default: DATA_DIR/trust-anchors.txt].
    #[arg(long, env = "CELLTRAIL_TRUST_ANCHORS")]
    pub trust_anchors: Option<PathBuf>,
    /// A witness that must have cosigned the final checkpoint (repeatable).
    #[arg(
        long = "witness",
        env = "CELLTRAIL_LOG_FINAL_WITNESSES",
        value_delimiter = ','
    )]
    pub witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned it [default: all of them].
    #[arg(long, requires = "witnesses")]
    pub quorum: Option<usize>,
    /// Encrypt the new log key under the first line of this file (as `serve` does) [default:
    /// CELLTRAIL_PASSPHRASE_FILE / _FD, else asked on the terminal].
    #[arg(long, env = "CELLTRAIL_KEY_PASSPHRASE_FILE")]
    pub key_passphrase_file: Option<PathBuf>,
}

pub async fn run(c: LogCommand) -> anyhow::Result<()> {
    match c {
        LogCommand::Retire(a) => retire(a),
        LogCommand::Final(a) => final_checkpoint(a).await,
        LogCommand::Rotate(a) => rotate(a).await,
    }
}

fn open_store(dir: &DataDir) -> anyhow::Result<crate::store::Store> {
    crate::store::Store::open(&dir.db()).with_context(|| {
        format!(
            "cannot open the store in {}: is the server still running on it? stop it first",
            dir.root().display()
        )
    })
}

fn stored_checkpoint(store: &dyn Storage) -> anyhow::Result<(String, Checkpoint)> {
    let note = store
        .checkpoint()?
        .context("the log is empty: there is nothing to retire")?;
    let text = crate::log::note_text(&note).context("the stored checkpoint is not a note")?;
    Ok((note.clone(), Checkpoint::parse(text)?))
}

fn retire(a: RetireArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&a.data_dir);
    let vkey = crate::keys::read_verifier_key_file(&dir.log_vkey())?;
    let store = open_store(&dir)?;
    let (_, cp) = stored_checkpoint(&store)?;
    if cp.origin != vkey.name {
        bail!(
            "the stored checkpoint is signed under origin {:?}, but {} is {:?}: this log key was already replaced",
            cp.origin,
            dir.log_vkey().display(),
            vkey.name
        );
    }
    store.commit(&Group {
        meta: vec![(META_RETIRED.to_string(), vkey.name.clone().into_bytes())],
        tree_size: store.tree_size()?,
        ..Group::default()
    })?;
    println!(
        "log {} retired at size {}: start the server again (it appends nothing now; stations keep \
         their events queued) so its witnesses cosign this final checkpoint, then run \
         `celltrail log final --server … --out final.note` and `celltrail log rotate`",
        vkey.name, cp.size
    );
    Ok(())
}

fn witness_keys(specs: &[String]) -> anyhow::Result<Vec<CosignerVerifier>> {
    specs
        .iter()
        .map(|s| {
            CosignerVerifier::from_key_string(s.trim())
                .map_err(|e| anyhow::anyhow!("--witness: {e}"))
        })
        .collect()
}

/// The quorum the final checkpoint needs: K of the listed witnesses (all by default).
fn quorum_met(
    note: &str,
    log_key: &NoteVerifier,
    keys: &[CosignerVerifier],
    quorum: Option<usize>,
) -> anyhow::Result<crate::witness::quorum::WitnessReport> {
    let k = quorum.unwrap_or(keys.len());
    if k > keys.len() {
        bail!(
            "--quorum {k} needs at least {k} --witness keys; {} given",
            keys.len()
        );
    }
    crate::witness::quorum::check(&[note], log_key, keys, Some(k)).map_err(|e| anyhow::anyhow!(e))
}

async fn final_checkpoint(a: FinalArgs) -> anyhow::Result<()> {
    let keys = witness_keys(&a.witnesses)?;
    let log_key = crate::keys::verifier_key_arg("--log-key", &a.log_key)?;
    let mut c = a.server.connect().await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(a.timeout_secs);
    loop {
        let r = c
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        let opened = crate::note::open_note(&r.checkpoint, std::slice::from_ref(&log_key))
            .map_err(|e| {
                anyhow::anyhow!("the log's checkpoint does not verify with --log-key: {e}")
            })?;
        let cp = Checkpoint::parse(&opened.text)?;
        let note = match (r.witnesses, r.cosigned_tree_size == r.tree_size) {
            (0, _) if keys.is_empty() => {
                eprintln!("note: the log has no witnesses; the final checkpoint carries its own signature only");
                Some(r.checkpoint.clone())
            }
            (_, true) if !r.cosigned_checkpoint.is_empty() => match keys.is_empty() {
                true => Some(r.cosigned_checkpoint.clone()),
                false => quorum_met(&r.cosigned_checkpoint, &log_key, &keys, a.quorum)?
                    .quorum_met()
                    .then(|| r.cosigned_checkpoint.clone()),
            },
            _ => None,
        };
        if let Some(note) = note {
            std::fs::write(&a.out, &note)
                .with_context(|| format!("cannot write {}", a.out.display()))?;
            println!(
                "wrote {}: final checkpoint of {} at size {} ({} signature line(s))",
                a.out.display(),
                cp.origin,
                cp.size,
                crate::note::split_note(&note)
                    .map(|(_, l)| l.len())
                    .unwrap_or(0)
            );
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "the log's checkpoint (size {}) was not cosigned as required within {} s \
                 (cosigned size {}): are its witnesses up, and is the log retired (no new entries)?",
                r.tree_size,
                a.timeout_secs,
                r.cosigned_tree_size
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

async fn rotate(a: RotateArgs) -> anyhow::Result<()> {
    if !REASONS.contains(&a.reason.as_str()) {
        bail!("--reason {:?}: expected one of {REASONS:?}", a.reason);
    }
    let dir = DataDir::new(&a.data_dir);
    let old = crate::keys::read_verifier_key_file(&dir.log_vkey())?;
    let final_note = std::fs::read_to_string(&a.final_checkpoint)
        .with_context(|| format!("cannot read {}", a.final_checkpoint.display()))?;
    let admins = crate::keys::read_trust_anchors(
        &a.trust_anchors
            .clone()
            .unwrap_or_else(|| dir.trust_anchors()),
    )?;
    let store: Arc<dyn Storage> = Arc::new(open_store(&dir)?);
    let (_, stored) = stored_checkpoint(store.as_ref())?;

    // The final checkpoint is checked before anything is written (the writer checks it again).
    if stored.origin == old.name {
        let opened =
            crate::note::open_note(&final_note, std::slice::from_ref(&old)).map_err(|e| {
                anyhow::anyhow!(
                    "--final {}: does not verify with the log key {}: {e}",
                    a.final_checkpoint.display(),
                    old.to_key_string()
                )
            })?;
        let f = Checkpoint::parse(&opened.text)?;
        if a.reason == "scheduled" && f.size != stored.size {
            bail!(
                "the final checkpoint has size {}, but the log has {} entries: retire the log \
                 (`celltrail log retire`) so nothing is appended after its final checkpoint, and \
                 take the final checkpoint again (`--reason compromise` links an earlier one)",
                f.size,
                stored.size
            );
        }
        let keys = witness_keys(&a.witnesses)?;
        if !keys.is_empty() {
            let w = quorum_met(&final_note, &old, &keys, a.quorum)?;
            if !w.quorum_met() {
                bail!("the final checkpoint: witness {}", w.line());
            }
        }
    }

    // Only now the keys, whose passphrases may be asked: a refused rotation asks nothing.
    let admin_path = a.admin_key.clone().unwrap_or_else(|| dir.admin_key());
    let admin = crate::keys::read_key_file(&admin_path)?;

    // The new key: made once, kept in log.key.next until the link is in (a rerun resumes).
    let next_path = dir.log_key_next();
    let new_key = match next_path.exists() {
        true => crate::keys::read_key_file(&next_path)?,
        false => {
            let k = NoteSigner::generate(&a.new_origin)
                .map_err(|e| anyhow::anyhow!("--new-origin {:?}: {e}", a.new_origin))?;
            // Encrypted like every server key (never plaintext), under the passphrase `serve`
            // will open it with.
            let pass = crate::server::server_key_passphrase(
                a.key_passphrase_file.as_deref(),
                "the new log key",
                true,
            )?;
            crate::keys::write_encrypted_key_file(
                &next_path,
                &k,
                &pass,
                crate::keys::KDF_ITERATIONS,
            )?;
            k
        }
    };
    if new_key.name != a.new_origin {
        bail!(
            "{} (from an earlier, unfinished rotate) is for origin {:?}, not {:?}: finish that one or remove the file",
            next_path.display(),
            new_key.name,
            a.new_origin
        );
    }

    if stored.origin == new_key.name {
        eprintln!("note: the link is already in the log (an earlier rotate stopped before its end); finishing");
    } else {
        if stored.origin != old.name {
            bail!(
                "the stored checkpoint is signed under origin {:?}, but {} is {:?}",
                stored.origin,
                dir.log_vkey().display(),
                old.name
            );
        }
        let link = Link::parse(&LogLink {
            previous_log_key: old.to_key_string(),
            final_checkpoint: final_note.clone(),
            log_key: new_key.verifier().to_key_string(),
            reason: a.reason.clone(),
        })
        .map_err(|e| anyhow::anyhow!("--final {}: {e}", a.final_checkpoint.display()))?;
        let f = &link.final_checkpoint;
        let head = store.head(LOG_CHAIN)?;
        let draft = Draft {
            chain_id: LOG_CHAIN.into(),
            seq: head.as_ref().map_or(0, |h| h.seq + 1),
            prev_hash: head.map_or(vec![0; 32], |h| h.hash.to_vec()),
            occurred_at: crate::time::now_nanos(),
            site: String::new(),
            comment: String::new(),
            detail: Detail::LogLink(LogLink {
                previous_log_key: old.to_key_string(),
                final_checkpoint: final_note,
                log_key: new_key.verifier().to_key_string(),
                reason: a.reason.clone(),
            }),
        };
        let ev = sign_draft(
            draft,
            &[(&admin, SignatureMeaning::Performed)],
            crate::time::now_nanos(),
        );
        let ledger = crate::ledger::Ledger::start(
            store.clone(),
            &admins,
            new_key.clone(),
            crate::ledger::LedgerOptions::default(),
        )?;
        let receipt = ledger.append(ev).await;
        ledger.shutdown_async().await;
        let r = receipt.map_err(|e| anyhow::anyhow!("the log refused the link: {e}"))?;
        println!(
            "linked: entry {} commits to {}'s final checkpoint (size {}); checkpoints are now signed by {}",
            r.index, old.name, f.size, new_key.name
        );
    }

    // Files: the retired key (if this directory has it) and its vkey out of the way, the new
    // key and vkey in place. Each step can be rerun.
    std::fs::create_dir_all(
        dir.retired_key(&old.name, "key")
            .parent()
            .expect("has a parent"),
    )?;
    if dir.log_key().exists() {
        std::fs::rename(dir.log_key(), dir.retired_key(&old.name, "key"))?;
    }
    std::fs::write(
        dir.retired_key(&old.name, "vkey"),
        format!("{}\n", old.to_key_string()),
    )?;
    std::fs::rename(&next_path, dir.log_key())?;
    std::fs::write(
        dir.log_vkey(),
        format!("{}\n", new_key.verifier().to_key_string()),
    )?;
    println!("new log key {}", new_key.verifier().to_key_string());
    println!(
        "next: give the new log.vkey to every witness (--log) and monitor, and to auditors with the \
         final checkpoint; remove the retired log from the witnesses; destroy or escrow {} \
         (docs/log-rotation.md)",
        dir.retired_key(&old.name, "key").display()
    );
    Ok(())
}
