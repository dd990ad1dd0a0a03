//! The layout of a data directory, in one place. A server's data directory holds `db/` (the
//! ledger store), `log.key` (the log's checkpoint signing key, 0600), `log.vkey` (its verifier
//! key, for auditors), `trust-anchors.txt` (operator admin verifier keys that may sign the key
//! registry) and, when a first start created it, `admin.key` (the first admin key, 0600); after a
//! log key rotation, `retired-keys/` holds the retired log keys. A
//! backup directory has the same public files plus `backup.json`, and never `log.key` or
//! `admin.key`. A witness directory (`celltrail witness`) holds `db/` (the checkpoints it
//! cosigned), `witness.key` and `witness.vkey`. Every other module asks this type for a path; none spells a file name.

use std::path::{Path, PathBuf};

/// A data (or backup) directory: paths only, no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ledger store.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    /// The log's private checkpoint signing key (never in a backup).
    pub fn log_key(&self) -> PathBuf {
        self.root.join("log.key")
    }

    /// The log's public verifier key.
    pub fn log_vkey(&self) -> PathBuf {
        self.root.join("log.vkey")
    }

    /// The next log key while `celltrail log rotate` runs (becomes `log.key` at its end).
    pub fn log_key_next(&self) -> PathBuf {
        self.root.join("log.key.next")
    }

    /// Where `celltrail log rotate` moves a retired log key and its verifier key, named by
    /// the retired origin: `retired-keys/<origin with '/' as '_'>.key` / `.vkey`.
    pub fn retired_key(&self, origin: &str, ext: &str) -> PathBuf {
        let safe: String = origin
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root.join("retired-keys").join(format!("{safe}.{ext}"))
    }

    /// The default trust-anchor file (admin verifier keys, one per line).
    pub fn trust_anchors(&self) -> PathBuf {
        self.root.join("trust-anchors.txt")
    }

    /// The first operator admin key, written when a first start created the trust anchors.
    pub fn admin_key(&self) -> PathBuf {
        self.root.join("admin.key")
    }

    /// A backup directory's log entries (length-delimited `BackupEntry` messages).
    pub fn backup_entries(&self) -> PathBuf {
        self.root.join("entries.bin")
    }

    /// A backup directory's chain heads (JSON: chain id → head).
    pub fn backup_heads(&self) -> PathBuf {
        self.root.join("heads.json")
    }

    /// A backup directory's manifest (`backup::Manifest`).
    pub fn backup_manifest(&self) -> PathBuf {
        self.root.join("backup.json")
    }

    /// A witness directory's cosigning key (`celltrail witness`, 0600, encrypted).
    pub fn witness_key(&self) -> PathBuf {
        self.root.join("witness.key")
    }

    /// A witness directory's public cosigner key, for the logs and auditors that trust it.
    pub fn witness_vkey(&self) -> PathBuf {
        self.root.join("witness.vkey")
    }
}

impl From<&Path> for DataDir {
    fn from(p: &Path) -> DataDir {
        DataDir::new(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_what_the_docs_and_older_servers_use() {
        let d = DataDir::new("/var/lib/celltrail");
        let names: Vec<String> = [
            d.db(),
            d.log_key(),
            d.log_vkey(),
            d.trust_anchors(),
            d.admin_key(),
            d.backup_manifest(),
            d.witness_key(),
            d.witness_vkey(),
        ]
        .iter()
        .map(|p| p.strip_prefix(d.root()).unwrap().display().to_string())
        .collect();
        assert_eq!(
            names,
            [
                "db",
                "log.key",
                "log.vkey",
                "trust-anchors.txt",
                "admin.key",
                "backup.json",
                "witness.key",
                "witness.vkey"
            ]
        );
    }
}
