//! Signed statements the log makes besides checkpoints: the chain head statement, which lets a
//! bundle prove that a chain ends where it ends. Text forms only (signed and opened as C2SP
//! signed notes by the code in `note`); pure.

type Hash = [u8; 32];

/// First line of a chain head statement. It holds spaces, which no note key name (and so no
/// checkpoint origin) may, so a statement can never be taken for a checkpoint or vice versa.
pub const CHAIN_HEAD_HEADER: &str = "celltrail chain head v1";

/// What the log signs about one chain so that a bundle can prove the chain ends where it
/// ends: in the tree of `tree_size` entries, chain `chain_id` has exactly `length` events and
/// the last one has hash `head_hash`. Text form (a C2SP signed-note body, signed by the log
/// key; docs/bundle-format.md):
///
/// ```text
/// celltrail chain head v1
/// <origin: the log's name, as in its checkpoints>
/// <chain id>
/// <tree size, decimal>
/// <number of events, decimal>
/// <hash of the last event, base64>
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHeadStatement {
    pub origin: String,
    pub chain_id: String,
    pub tree_size: u64,
    pub length: u64,
    pub head_hash: Hash,
}

impl ChainHeadStatement {
    pub fn to_text(&self) -> String {
        format!(
            "{CHAIN_HEAD_HEADER}\n{}\n{}\n{}\n{}\n{}\n",
            self.origin,
            self.chain_id,
            self.tree_size,
            self.length,
            super::b64(&self.head_hash)
        )
    }

    /// Parses the text form strictly: exactly these six lines, canonical numbers and base64.
    pub fn parse(text: &str) -> Result<ChainHeadStatement, String> {
        let body = text
            .strip_suffix('\n')
            .ok_or("a chain head statement ends with a newline")?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [header, origin, chain_id, size, length, hash] = lines[..] else {
            return Err(format!(
                "a chain head statement has 6 lines, this one {}",
                lines.len()
            ));
        };
        if header != CHAIN_HEAD_HEADER {
            return Err(format!(
                "first line is {header:?}, expected {CHAIN_HEAD_HEADER:?}"
            ));
        }
        let number = |s: &str, what: &str| -> Result<u64, String> {
            let n: u64 = s
                .parse()
                .map_err(|_| format!("{what} {s:?} is not a decimal number"))?;
            if n.to_string() != s {
                return Err(format!("{what} {s:?} is not in canonical decimal form"));
            }
            Ok(n)
        };
        let raw = super::unb64(hash).map_err(|e| format!("head hash is not base64: {e}"))?;
        let head_hash: Hash = raw
            .as_slice()
            .try_into()
            .map_err(|_| format!("head hash is {} bytes, expected 32", raw.len()))?;
        if super::b64(&head_hash) != hash {
            return Err("head hash is not in canonical base64".into());
        }
        if origin.is_empty() || chain_id.is_empty() {
            return Err("origin and chain id must not be empty".into());
        }
        Ok(ChainHeadStatement {
            origin: origin.to_string(),
            chain_id: chain_id.to_string(),
            tree_size: number(size, "tree size")?,
            length: number(length, "number of events")?,
            head_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_head_statement_round_trips_and_parses_only_its_canonical_form() {
        let st = ChainHeadStatement {
            origin: "celltrail.local/log-1".into(),
            chain_id: "A999926123456".into(),
            tree_size: 120,
            length: 26,
            head_hash: [7; 32],
        };
        let text = st.to_text();
        assert_eq!(
            text,
            "celltrail chain head v1\ncelltrail.local/log-1\nA999926123456\n120\n26\n\
             BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"
        );
        assert_eq!(ChainHeadStatement::parse(&text), Ok(st));
        let bad = [
            (text.replace("\n120\n", "\n0120\n"), "canonical decimal"),
            (text.replace("\n26\n", "\n+26\n"), "canonical decimal"),
            (text.replace("v1", "v2"), "first line"),
            (format!("{text}extra\n"), "6 lines"),
            (text.trim_end().to_string(), "ends with a newline"),
            (
                text.replace("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", "Bwc="),
                "32",
            ),
            (
                text.replace("\nA999926123456\n", "\n\n"),
                "must not be empty",
            ),
        ];
        for (t, why) in bad {
            let e = ChainHeadStatement::parse(&t).unwrap_err();
            assert!(e.contains(why), "{t:?}: {e}");
        }
    }
}
