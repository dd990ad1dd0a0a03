//! What `verify --witness VKEY … --quorum K` decides about a bundle's checkpoint: which listed
//! witnesses cosigned it (each cosignature verified over the exact checkpoint text), and whether
//! at least K did. Pure.

use super::cosig::{verify_cosignatures, CosignerVerifier};
use crate::note::NoteVerifier;
use serde::Serialize;

/// The witness part of a verification report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WitnessReport {
    /// Signature lines on the checkpoint other than the log's (cosignatures, checked or not).
    pub cosignatures_seen: usize,
    /// Listed witnesses whose cosignature verified, in the order given.
    pub cosigned_by: Vec<CosignedBy>,
    /// Listed witnesses without a valid cosignature on this checkpoint.
    pub missing: Vec<String>,
    /// Cosignatures required (`--quorum`), if any.
    pub quorum: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CosignedBy {
    pub name: String,
    pub key: String,
    /// When the witness cosigned (RFC 3339 UTC).
    pub at: String,
}

impl WitnessReport {
    pub fn quorum_met(&self) -> bool {
        self.quorum.is_none_or(|k| self.cosigned_by.len() >= k)
    }

    /// One line for the text report.
    pub fn line(&self) -> String {
        let names: Vec<String> = self
            .cosigned_by
            .iter()
            .map(|c| format!("{} at {}", c.name, c.at))
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

/// Checks the cosignatures on `checkpoint_note` (already opened with `log_key` by the caller).
/// A line by a listed witness that does not verify is an error: the note is malformed.
pub fn check(
    checkpoint_note: &str,
    log_key: &NoteVerifier,
    witnesses: &[CosignerVerifier],
    quorum: Option<usize>,
) -> Result<WitnessReport, String> {
    let (_, lines) = crate::note::split_note(checkpoint_note).map_err(|e| e.to_string())?;
    let cosignatures_seen = lines
        .iter()
        .filter(|l| !(l.name == log_key.name && l.key_hash == log_key.key_hash))
        .count();
    let got = verify_cosignatures(checkpoint_note, witnesses)
        .map_err(|e| format!("a listed witness's cosignature does not verify: {e}"))?;
    let cosigned_by = got
        .iter()
        .map(|c| CosignedBy {
            name: c.name.clone(),
            key: witnesses
                .iter()
                .find(|w| w.name == c.name && w.key_hash == c.key_hash)
                .map(|w| w.to_key_string())
                .unwrap_or_default(),
            at: crate::time::rfc3339(
                (c.timestamp.min(i64::MAX as u64 / 1_000_000_000) as i64) * 1_000_000_000,
            ),
        })
        .collect();
    let missing = witnesses
        .iter()
        .filter(|w| {
            !got.iter()
                .any(|c| c.name == w.name && c.key_hash == w.key_hash)
        })
        .map(|w| w.name.clone())
        .collect();
    Ok(WitnessReport {
        cosignatures_seen,
        cosigned_by,
        missing,
        quorum,
    })
}
