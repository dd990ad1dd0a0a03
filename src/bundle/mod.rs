//! Audit bundles: the self-contained JSON file `celltrail export` writes and `celltrail verify`
//! checks with no network (docs/design.md §8). This module owns the file format (specified for third
//! parties in `docs/bundle-format.md`); `export` builds bundles from a running server or a
//! stopped data directory, `verify` replays them with the ledger's own pure rules (`ledger`
//! shape and link checks, `registry`, `policy`, `crypto`, `merkle`, `note`), and `report`
//! renders the verdict for people or machines.

pub mod attach;
pub mod audit;
pub mod cmd;
pub mod export;
pub mod record;
pub mod report;
pub mod verify;

pub use crate::note::{b64, unb64};
use serde::{Deserialize, Serialize};

/// Value of the `format` field of every bundle this version writes and reads.
pub const FORMAT: &str = "celltrail-bundle/v1";

/// The whole bundle file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    /// When the bundle was written (RFC 3339 UTC); informational.
    pub exported_at: String,
    pub anchors: Anchors,
    /// The C2SP signed note holding the tlog-checkpoint every proof is against.
    pub checkpoint: String,
    /// Size of that checkpoint's tree.
    pub tree_size: u64,
    /// Every entry of the `keys` chain in the checkpoint's tree, in seq order.
    pub registry: Vec<Entry>,
    /// The log's signed head statement of the `keys` chain at `tree_size`: proves no key
    /// registration or revocation follows the last one listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_head: Option<String>,
    /// Every entry of the `log` chain in the checkpoint's tree, in seq order: the log key
    /// rotations (`loglink`) that lead from earlier log keys to the checkpoint's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_links: Vec<Entry>,
    /// The exported chains, each with all its entries in the tree, in seq order.
    pub chains: Vec<Chain>,
    /// Consistency proofs from earlier tree sizes to `tree_size` (`export --since-size`).
    #[serde(default)]
    pub consistency: Vec<ConsistencyProof>,
    /// Later checkpoints of the same log, each with a consistency proof from `tree_size`: their
    /// witness cosignatures count toward `verify --quorum` (a witness that cosigned a later
    /// checkpoint has seen a history that contains this one). Added by `celltrail attach-cosigned`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub later_checkpoints: Vec<LaterCheckpoint>,
}

/// Keys the exporter copied in; an auditor should pin their own with `--log-key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anchors {
    /// C2SP note verifier key of the log (signs checkpoints).
    pub log_key: String,
    /// C2SP note verifier keys of the operator admins (sign the key registry).
    pub admin_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    pub chain_id: String,
    pub entries: Vec<Entry>,
    /// The log's signed head statement for this chain at the bundle's tree size
    /// (`note::ChainHeadStatement`): proves that no event of the chain follows the last entry.
    /// Absent in bundles from older exporters; the verdict then says the end is not proven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

/// One log entry: its exact bytes and its inclusion proof against the bundle's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    /// base64 (standard, padded) of the encoded `LogEntry` exactly as stored and hashed.
    pub entry: String,
    /// base64 hashes of the RFC 9162 inclusion proof, leaf to root.
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old_size: u64,
    /// base64 hashes of the RFC 9162 consistency proof from `old_size` to `tree_size`.
    pub proof: Vec<String>,
}

/// A later checkpoint of the bundle's log and the proof that it extends the bundle's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaterCheckpoint {
    /// The C2SP signed note: the log's signature and any witness cosignatures.
    pub checkpoint: String,
    /// base64 hashes of the RFC 9162 consistency proof from the bundle's `tree_size` to this
    /// checkpoint's size (empty when the sizes are equal).
    pub proof: Vec<String>,
}

impl Bundle {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("bundles serialize to JSON") + "\n"
    }

    /// Parses a bundle file's raw bytes exactly as `celltrail verify BUNDLE` does: UTF-8, then
    /// [`Bundle::from_json`]. The one entry point for bytes from outside (the CLI, the fuzzer).
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Bundle, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            format!(
                "not a bundle: not UTF-8 text (first bad byte at offset {})",
                e.valid_up_to()
            )
        })?;
        Self::from_json(text)
    }

    pub fn from_json(text: &str) -> Result<Bundle, String> {
        let b: Bundle = serde_json::from_str(text).map_err(|e| format!("not a bundle: {e}"))?;
        if b.format != FORMAT {
            return Err(format!(
                "bundle format is {:?}; this verifier reads {FORMAT:?}",
                b.format
            ));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bundle {
        Bundle {
            format: FORMAT.into(),
            exported_at: "2026-01-01T00:00:00Z".into(),
            anchors: Anchors {
                log_key: "log+01020304+AQ==".into(),
                admin_keys: vec!["admin+01020304+AQ==".into()],
            },
            checkpoint: "log\n1\nAA==\n\n— log AAAA\n".into(),
            tree_size: 1,
            registry: vec![],
            registry_head: None,
            log_links: vec![],
            chains: vec![Chain {
                chain_id: "BAG-1".into(),
                entries: vec![Entry {
                    index: 0,
                    entry: b64(b"\x00\x01\xff"),
                    proof: vec![],
                }],
                head: Some("celltrail chain head v1\n".into()),
            }],
            consistency: vec![],
            later_checkpoints: vec![],
        }
    }

    #[test]
    fn bundle_round_trips_through_json_with_exact_entry_bytes() {
        let b = sample();
        let back = Bundle::from_json(&b.to_json()).unwrap();
        assert_eq!(back, b);
        assert_eq!(
            unb64(&back.chains[0].entries[0].entry).unwrap(),
            b"\x00\x01\xff"
        );
    }

    #[test]
    fn rejects_other_formats_and_accepts_missing_consistency() {
        let mut b = sample();
        b.format = "celltrail-bundle/v2".into();
        let err = Bundle::from_json(&b.to_json()).unwrap_err();
        assert!(
            err.contains("this verifier reads \"celltrail-bundle/v1\""),
            "{err}"
        );
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v.as_object_mut().unwrap().remove("consistency");
        assert!(Bundle::from_json(&v.to_string()).is_ok());
        assert!(Bundle::from_json("{}")
            .unwrap_err()
            .starts_with("not a bundle"));
    }

    #[test]
    fn from_json_bytes_parses_like_from_json_and_refuses_non_utf8() {
        let json = sample().to_json();
        assert_eq!(Bundle::from_json_bytes(json.as_bytes()).unwrap(), sample());
        let mut bad = json.into_bytes();
        bad.insert(3, 0xff);
        let err = Bundle::from_json_bytes(&bad).unwrap_err();
        assert_eq!(
            err,
            "not a bundle: not UTF-8 text (first bad byte at offset 3)"
        );
    }
}
