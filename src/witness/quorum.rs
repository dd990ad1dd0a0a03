//! What `verify --witness VKEY … --quorum K` decides about a bundle's checkpoint: which listed
//! witnesses cosigned it or a later checkpoint proven to extend it (each cosignature verified
//! over the exact text of the checkpoint it is on), and whether at least K did. Pure.

use super::cosig::{verify_cosignatures, CosignerVerifier};
use crate::note::NoteVerifier;
use serde::Serialize;

/// The witness part of a verification report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WitnessReport {
    /// Signature lines other than the log's (cosignatures, checked or not) on the bundle's
    /// checkpoint and its later checkpoints.
    pub cosignatures_seen: usize,
    /// Listed witnesses whose cosignature verified, in the order given.
    pub cosigned_by: Vec<CosignedBy>,
    /// Listed witnesses without a valid cosignature on any of the checkpoints.
    pub missing: Vec<String>,
    /// Cosignatures required (`--quorum`), if any.
    pub quorum: Option<usize>,
    /// Size of the bundle's own checkpoint.
    pub bundle_size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CosignedBy {
    pub name: String,
    pub key: String,
    /// When the witness cosigned (RFC 3339 UTC).
    pub at: String,
    /// Size of the checkpoint it cosigned: the bundle's, or a later one that extends it.
    pub tree_size: u64,
}

impl WitnessReport {
    pub fn quorum_met(&self) -> bool {
        self.quorum.is_none_or(|k| self.cosigned_by.len() >= k)
    }

    fn later(&self, c: &CosignedBy) -> bool {
        c.tree_size > self.bundle_size
    }

    /// One line for the text report.
    pub fn line(&self) -> String {
        let names: Vec<String> = self
            .cosigned_by
            .iter()
            .map(|c| match self.later(c) {
                true => format!("{} at {} (on later size {})", c.name, c.at, c.tree_size),
                false => format!("{} at {}", c.name, c.at),
            })
            .collect();
        match (self.quorum, names.is_empty()) {
            (None, _) if self.cosigned_by.is_empty() && self.missing.is_empty() => format!(
                "{} cosignature(s) on the checkpoint, not checked (give --witness VKEY … --quorum K)",
                self.cosignatures_seen
            ),
            (None, true) => format!(
                "{} cosignature(s) on the checkpoint; none by the listed witnesses",
                self.cosignatures_seen
            ),
            (None, false) => format!(
                "cosigned by {} ({} cosignature(s) seen; no --quorum required)",
                names.join(", "),
                self.cosignatures_seen
            ),
            (Some(k), _) => format!(
                "quorum {k}: {} {} of the listed witnesses cosigned{}{}",
                if self.quorum_met() { "MET —" } else { "NOT MET —" },
                self.cosigned_by.len(),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names.join(", "))
                },
                if self.missing.is_empty() {
                    String::new()
                } else {
                    format!("; missing: {}", self.missing.join(", "))
                }
            ),
        }
    }
}

/// Checks the cosignatures on `notes`: the bundle's checkpoint note first, then later
/// checkpoints of the same log that the caller has already proven to extend it (all opened
/// with `log_key` by the caller). A witness counts once, for its cosignature on the smallest
/// checkpoint. A line by a listed witness that does not verify is an error: the note is
/// malformed.
pub fn check(
    notes: &[&str],
    log_key: &NoteVerifier,
    witnesses: &[CosignerVerifier],
    quorum: Option<usize>,
) -> Result<WitnessReport, String> {
    let mut cosignatures_seen = 0;
    // Per listed witness: (tree size, timestamp) of the cosignature that counts.
    let mut best: Vec<Option<(u64, u64)>> = vec![None; witnesses.len()];
    let mut bundle_size = None;
    for (i, note) in notes.iter().enumerate() {
        let (text, lines) = crate::note::split_note(note).map_err(|e| e.to_string())?;
        let size = crate::note::Checkpoint::parse(text)
            .map_err(|e| e.to_string())?
            .size;
        bundle_size.get_or_insert(size);
        cosignatures_seen += lines
            .iter()
            .filter(|l| !(l.name == log_key.name && l.key_hash == log_key.key_hash))
            .count();
        let got = verify_cosignatures(note, witnesses).map_err(|e| {
            let on = match i {
                0 => "the checkpoint".to_string(),
                _ => format!("later checkpoint {} (size {size})", i - 1),
            };
            format!("a listed witness's cosignature on {on} does not verify: {e}")
        })?;
        for c in got {
            let w = witnesses
                .iter()
                .position(|w| w.name == c.name && w.key_hash == c.key_hash)
                .expect("verify_cosignatures returns listed witnesses only");
            if best[w].is_none_or(|(s, _)| size < s) {
                best[w] = Some((size, c.timestamp));
            }
        }
    }
    let cosigned_by = witnesses
        .iter()
        .zip(&best)
        .filter_map(|(w, b)| {
            b.map(|(tree_size, ts)| CosignedBy {
                name: w.name.clone(),
                key: w.to_key_string(),
                at: crate::time::rfc3339(
                    (ts.min(i64::MAX as u64 / 1_000_000_000) as i64) * 1_000_000_000,
                ),
                tree_size,
            })
        })
        .collect();
    let missing = witnesses
        .iter()
        .zip(&best)
        .filter(|(_, b)| b.is_none())
        .map(|(w, _)| w.name.clone())
        .collect();
    Ok(WitnessReport {
        cosignatures_seen,
        cosigned_by,
        missing,
        quorum,
        bundle_size: bundle_size.unwrap_or(0),
    })
}
