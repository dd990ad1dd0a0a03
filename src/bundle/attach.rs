//! `celltrail attach-cosigned`: adds later, witness-cosigned checkpoints of a bundle's log to
//! the bundle, each with the consistency proof from the bundle's checkpoint to it
//! (`Bundle::later_checkpoints`, docs/bundle-format.md). For a bundle exported before the
//! witnesses had cosigned (or offline from a data directory, which holds no cosignatures): its
//! own bytes stay as they were, and `verify --witness … --quorum K` counts the witnesses of the
//! later checkpoints. Candidates come from the log (`GetCheckpoint`'s cosigned checkpoint) and,
//! with `--witness-url`, from each witness's own latest checkpoint of the log, a source the log
//! operator does not control. Every candidate is checked as `verify` will check it before it is
//! written; one that does not extend the bundle's checkpoint is refused and shown as evidence.

use super::{b64, Bundle, LaterCheckpoint};
use crate::client::{status_error, ServerArg};
use crate::pb::{GetCheckpointRequest, GetConsistencyProofRequest};
use anyhow::{bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Bundle file to add later cosigned checkpoints to.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub server: ServerArg,
    /// Also fetch this witness's own latest cosigned checkpoint of the log (its base URL, as
    /// given to `serve --witness`; `GET URL/<hex SHA-256 of the origin>/checkpoint`). Repeatable.
    #[arg(
        long = "witness-url",
        env = "CELLTRAIL_ATTACH_WITNESS_URLS",
        value_delimiter = ','
    )]
    pub witness_urls: Vec<String>,
    /// Do not ask the log for its own cosigned checkpoint (only the --witness-url ones).
    #[arg(long, requires = "witness_urls")]
    pub no_log_checkpoint: bool,
    /// File to write [default: replace BUNDLE].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// The bundle's checkpoint text fields the command needs (not trusted: `verify` decides).
fn bundle_checkpoint(b: &Bundle) -> anyhow::Result<crate::note::Checkpoint> {
    let text = crate::log::note_text(&b.checkpoint)
        .context("the bundle's checkpoint is not a signed note")?;
    Ok(crate::note::Checkpoint::parse(text)?)
}

pub async fn run(a: AttachArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&a.bundle)
        .with_context(|| format!("cannot read bundle {}", a.bundle.display()))?;
    let mut b = Bundle::from_json_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.bundle.display()))?;
    let cp = bundle_checkpoint(&b)?;
    let log_key = crate::note::NoteVerifier::from_key_string(b.anchors.log_key.trim())
        .map_err(|e| anyhow::anyhow!("the bundle's anchor log_key: {e}"))?;
    let mut c = a.server.connect().await?;

    // Candidate notes: the log's cosigned checkpoint, then each witness's own.
    let mut candidates: Vec<(String, String)> = Vec::new();
    if !a.no_log_checkpoint {
        let r = c
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        match r.cosigned_checkpoint.is_empty() {
            true => eprintln!(
                "note: the log has no cosigned checkpoint (witnesses: {})",
                r.witnesses
            ),
            false => candidates.push(("the log".into(), r.cosigned_checkpoint)),
        }
    }
    let http = crate::witness::http::HttpClient::default();
    let origin_hash = hex::encode(Sha256::digest(cp.origin.as_bytes()));
    for url in &a.witness_urls {
        let url = url.trim_end_matches('/');
        let rep = http
            .get(&format!("{url}/{origin_hash}/checkpoint"))
            .await
            .with_context(|| format!("witness {url}"))?;
        if rep.status != 200 {
            bail!(
                "witness {url} answered {} for log {:?}: {}",
                rep.status,
                cp.origin,
                rep.body.trim()
            );
        }
        candidates.push((format!("witness {url}"), rep.body));
    }

    let mut added = 0;
    for (source, note) in candidates {
        let Some(text) = crate::log::note_text(&note) else {
            bail!("{source} served something that is not a signed note");
        };
        let size = crate::note::Checkpoint::parse(text)
            .with_context(|| format!("{source} served a checkpoint that does not parse"))?
            .size;
        if size < cp.size {
            eprintln!(
                "note: {source}'s cosigned checkpoint (size {size}) is older than the bundle's (size {}); skipped",
                cp.size
            );
            continue;
        }
        if b.later_checkpoints.iter().any(|l| l.checkpoint == note) {
            continue;
        }
        let proof = match size == cp.size {
            true => Vec::new(),
            false => c
                .get_consistency_proof(GetConsistencyProofRequest {
                    old_size: cp.size,
                    new_size: size,
                })
                .await
                .map_err(status_error)
                .with_context(|| format!("consistency proof from {} to {size}", cp.size))?
                .into_inner()
                .hashes
                .iter()
                .map(|h| b64(h))
                .collect(),
        };
        let later = LaterCheckpoint {
            checkpoint: note.clone(),
            proof,
        };
        // The check `verify` makes, against the bundle's own anchor (the auditor pins theirs).
        let mut trial = b.clone();
        trial.later_checkpoints = vec![later.clone()];
        let parsed = super::verify::open_checkpoint(&b.checkpoint, &log_key, "checkpoint")
            .map_err(|f| anyhow::anyhow!("{f}"))?;
        if let Err(f) = super::verify::check_later(&trial, &log_key, &parsed) {
            bail!(
                "{source}'s checkpoint is not a continuation of the bundle's: {f}\n\
                 --- the bundle's checkpoint ---\n{}--- {source}'s checkpoint ---\n{note}",
                b.checkpoint
            );
        }
        let others = crate::note::split_note(&note)
            .map(|(_, l)| l.len().saturating_sub(1))
            .unwrap_or(0);
        println!("added the checkpoint of size {size} from {source} ({others} cosignature(s))");
        b.later_checkpoints.push(later);
        added += 1;
    }
    if added == 0 {
        bail!("no later cosigned checkpoint to add; the bundle is unchanged");
    }
    let out = a.out.as_ref().unwrap_or(&a.bundle);
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, b.to_json()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote {}: {} later checkpoint(s)",
        out.display(),
        b.later_checkpoints.len()
    );
    Ok(())
}
