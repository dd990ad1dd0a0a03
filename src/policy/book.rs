//! Which policy table judged which log entry: the built-in (or configured) base table, then
//! each table activated by a `PolicyActivated` event on the keys chain, in force from the next
//! log index on (docs/design.md, "Policy tables are records"). Pure; the writer and the offline
//! verifier build it from the same events and look up the same table for each entry.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::Policy;
use crate::pb::PolicyActivated;

/// One table and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub policy: Arc<Policy>,
    pub name: String,
    pub sha256: [u8; 32],
    /// Log index of the `PolicyActivated` event; `None` for the base table.
    pub activated_at: Option<u64>,
}

impl Table {
    /// "autologous-car-t sha256:1a2b3c4d5e6f (activated at index 12)".
    pub fn describe(&self) -> String {
        let hash = hex::encode(&self.sha256[..6]);
        match self.activated_at {
            Some(i) => format!("{} sha256:{hash} (activated at log index {i})", self.name),
            None => format!("{} sha256:{hash} (base table, not a log record)", self.name),
        }
    }
}

/// The base table and every activation, in log order.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyBook {
    tables: Vec<Table>,
}

/// SHA-256 of a table's TOML text.
pub fn table_sha256(toml: &[u8]) -> [u8; 32] {
    Sha256::digest(toml).into()
}

impl PolicyBook {
    /// A book whose base table (before any activation) is `base`.
    pub fn new(base: Policy) -> PolicyBook {
        PolicyBook {
            tables: vec![Table {
                name: base.name().to_string(),
                sha256: base.sha256(),
                policy: Arc::new(base),
                activated_at: None,
            }],
        }
    }

    /// Checks an activation: the hash and name match the TOML, and the table loads.
    pub fn check(pa: &PolicyActivated) -> Result<Policy, String> {
        let hash = table_sha256(&pa.table_toml);
        if pa.table_sha256 != hash {
            return Err(format!(
                "table_sha256 is {}, but the SHA-256 of table_toml is {}",
                hex::encode(&pa.table_sha256),
                hex::encode(hash)
            ));
        }
        let text = std::str::from_utf8(&pa.table_toml)
            .map_err(|e| format!("table_toml is not UTF-8: {e}"))?;
        let policy = Policy::from_toml(text).map_err(|e| e.to_string())?;
        if policy.name() != pa.name {
            return Err(format!(
                "name is {:?}, but the table's name is {:?}",
                super::cut(&pa.name),
                policy.name()
            ));
        }
        Ok(policy)
    }

    /// The activation of the table whose TOML is `toml` (exactly these bytes are recorded),
    /// with the loaded table; the error says why the table does not load.
    pub fn activation_of(toml: &[u8]) -> Result<(Policy, PolicyActivated), String> {
        let text = std::str::from_utf8(toml).map_err(|e| format!("the table is not UTF-8: {e}"))?;
        let policy = Policy::from_toml(text).map_err(|e| e.to_string())?;
        let pa = PolicyActivated {
            table_sha256: table_sha256(toml).to_vec(),
            name: policy.name().to_string(),
            table_toml: toml.to_vec(),
        };
        Ok((policy, pa))
    }

    /// Records the activation carried by the entry at log index `index`.
    pub fn activate(&mut self, index: u64, pa: &PolicyActivated) -> Result<(), String> {
        let policy = Self::check(pa)?;
        self.tables.push(Table {
            name: policy.name().to_string(),
            policy: Arc::new(policy),
            sha256: table_sha256(&pa.table_toml),
            activated_at: Some(index),
        });
        Ok(())
    }

    /// The table that judges an entry at log index `index`: the last one activated before it.
    pub fn at(&self, index: u64) -> &Table {
        self.tables
            .iter()
            .rev()
            .find(|t| t.activated_at.is_none_or(|a| a < index))
            .expect("the base table applies to every index")
    }

    /// The table in force for the next entry.
    pub fn current(&self) -> &Table {
        self.tables.last().expect("a book has its base table")
    }

    /// Every table, base first.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activation(toml: &str) -> PolicyActivated {
        PolicyActivated {
            table_toml: toml.as_bytes().to_vec(),
            table_sha256: table_sha256(toml.as_bytes()).to_vec(),
            name: Policy::from_toml(toml).unwrap().name().to_string(),
        }
    }

    #[test]
    fn a_table_judges_the_entries_after_its_activation_only() {
        let mut book = PolicyBook::new(Policy::default_autologous_car_t());
        let other = super::super::DEFAULT_TABLE_TOML
            .replace("name = \"autologous-car-t\"", "name = \"other\"");
        book.activate(5, &activation(&other)).unwrap();
        assert_eq!(book.at(5).name, "autologous-car-t");
        assert_eq!(book.at(6).name, "other");
        assert_eq!(book.at(6).activated_at, Some(5));
        assert_eq!(book.current().name, "other");
        assert_eq!(book.at(0).activated_at, None);
    }

    #[test]
    fn refuses_a_wrong_hash_a_wrong_name_and_a_table_that_does_not_load() {
        let toml = super::super::DEFAULT_TABLE_TOML;
        let mut bad = activation(toml);
        bad.table_sha256[31] ^= 1;
        assert!(PolicyBook::check(&bad)
            .unwrap_err()
            .contains("table_sha256 is"));
        let mut bad = activation(toml);
        bad.name = "something else".into();
        assert!(PolicyBook::check(&bad)
            .unwrap_err()
            .contains("but the table's name is"));
        let broken = "name = \"x\"";
        let bad = PolicyActivated {
            table_toml: broken.as_bytes().to_vec(),
            table_sha256: table_sha256(broken.as_bytes()).to_vec(),
            name: "x".into(),
        };
        assert!(PolicyBook::check(&bad)
            .unwrap_err()
            .contains("policy table"));
    }
}
