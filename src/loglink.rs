//! Log key rotation (docs/log-rotation.md): the `LogLink` event on the reserved `log` chain,
//! by which a log that changes its key (and origin) commits, in the first entry under the new
//! key, to the retired key's final checkpoint. Pure: parsing and the checks the ledger writer
//! and the offline verifier share; no I/O.
//!
//! The Merkle tree goes on across a rotation, so the retired key's final checkpoint (size F)
//! is a prefix of every checkpoint the new key signs, and an RFC 9162 consistency proof from F
//! joins them. A chain whose events straddle the rotation stays one hash chain in one tree.

use crate::merkle::Hash;
use crate::note::{open_note, Checkpoint, NoteVerifier};
use crate::pb::{event_body::Detail, EventBody, LogLink};

/// Chain id of the log-link events.
pub const LOG_CHAIN: &str = "log";

/// Store meta key holding the origin that `celltrail log retire` retired: a server whose log
/// key has that origin appends nothing (it still serves reads and gathers cosignatures of its
/// final checkpoint).
pub const META_RETIRED: &str = "log.retired_origin";

/// Whether events of `chain_id` are signed by operator admin keys (the key registry and the
/// log links) rather than by registered signer keys.
pub fn admin_signed(chain_id: &str) -> bool {
    chain_id == crate::registry::KEYS_CHAIN || chain_id == LOG_CHAIN
}

/// Why a log key was retired.
pub const REASONS: [&str; 2] = ["scheduled", "compromise"];

/// A `LogLink` whose keys parse and whose final checkpoint opens with the retired key.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub previous: NoteVerifier,
    pub next: NoteVerifier,
    /// The retired key's final checkpoint (parsed) and the signed note as carried.
    pub final_checkpoint: Checkpoint,
    pub final_note: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log link: {0}")]
pub struct LinkError(pub String);

fn err(s: impl Into<String>) -> LinkError {
    LinkError(s.into())
}

impl Link {
    /// Parses a `LogLink` detail and checks it on its own: both keys are note verifier keys of
    /// different origins, the reason is known, and the final checkpoint is a tlog-checkpoint
    /// of the retired origin, signed by the retired key, of at least one entry.
    pub fn parse(d: &LogLink) -> Result<Link, LinkError> {
        let previous = NoteVerifier::from_key_string(d.previous_log_key.trim())
            .map_err(|e| err(format!("previous_log_key is not a verifier key: {e}")))?;
        let next = NoteVerifier::from_key_string(d.log_key.trim())
            .map_err(|e| err(format!("log_key is not a verifier key: {e}")))?;
        if previous.name == next.name {
            return Err(err(format!(
                "the new log key has the retired origin {:?}; a new log key needs a new origin",
                next.name
            )));
        }
        if !REASONS.contains(&d.reason.as_str()) {
            return Err(err(format!(
                "reason is {:?}; expected one of {REASONS:?}",
                d.reason
            )));
        }
        let opened =
            open_note(&d.final_checkpoint, std::slice::from_ref(&previous)).map_err(|e| {
                err(format!(
                    "final_checkpoint does not verify with the retired key {}: {e}",
                    previous.to_key_string()
                ))
            })?;
        let cp = Checkpoint::parse(&opened.text)
            .map_err(|e| err(format!("final_checkpoint is not a tlog-checkpoint: {e}")))?;
        if cp.origin != previous.name {
            return Err(err(format!(
                "final_checkpoint names origin {:?}, but the retired key is {:?}",
                cp.origin, previous.name
            )));
        }
        if cp.size == 0 {
            return Err(err("final_checkpoint is of the empty tree"));
        }
        Ok(Link {
            previous,
            next,
            final_checkpoint: cp,
            final_note: d.final_checkpoint.clone(),
            reason: d.reason.clone(),
        })
    }

    /// The link of an event body, if it is one.
    pub fn of_body(body: &EventBody) -> Option<Result<Link, LinkError>> {
        match &body.detail {
            Some(Detail::LogLink(d)) => Some(Link::parse(d)),
            _ => None,
        }
    }

    /// Checks the link against the log it is appended to at `index`: the final checkpoint's
    /// tree is at most `index` entries and `root_at_final` (the log's root at that size) is its
    /// root, so the retired key's final checkpoint is a prefix of this log.
    pub fn check_prefix(&self, index: u64, root_at_final: &Hash) -> Result<(), LinkError> {
        let f = &self.final_checkpoint;
        if f.size > index {
            return Err(err(format!(
                "the retired key's final checkpoint has size {}, but the link is entry {index}: \
                 the final checkpoint must be of entries already in the log",
                f.size
            )));
        }
        if &f.root != root_at_final {
            return Err(err(format!(
                "the retired key's final checkpoint (size {}) has root {}, but this log's root \
                 at that size is {}: it is not a checkpoint of this log's history",
                f.size,
                hex::encode(f.root),
                hex::encode(root_at_final)
            )));
        }
        Ok(())
    }
}

/// The log keys a sequence of links (in `log` chain order) passes through, oldest first: the
/// first link's retired key, then each link's new key. Each link must retire the key the one
/// before it introduced, and no origin may come back.
pub fn key_sequence(links: &[Link]) -> Result<Vec<NoteVerifier>, LinkError> {
    let Some(first) = links.first() else {
        return Ok(Vec::new());
    };
    let mut keys = vec![first.previous.clone()];
    for (i, l) in links.iter().enumerate() {
        let last = keys.last().expect("keys starts non-empty");
        if l.previous != *last {
            return Err(err(format!(
                "link {i} retires key {}, but the key in use was {}",
                l.previous.to_key_string(),
                last.to_key_string()
            )));
        }
        if keys.iter().any(|k| k.name == l.next.name) {
            return Err(err(format!(
                "link {i} brings back origin {:?}; every log key needs a new origin",
                l.next.name
            )));
        }
        keys.push(l.next.clone());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{sign_note, NoteSigner};

    fn final_note(key: &NoteSigner, size: u64, root: Hash) -> String {
        let cp = Checkpoint {
            origin: key.name.clone(),
            size,
            root,
            extensions: vec![],
        };
        sign_note(&cp.to_text(), &[key]).unwrap()
    }

    fn link(old: &NoteSigner, new: &NoteSigner, size: u64) -> LogLink {
        LogLink {
            previous_log_key: old.verifier().to_key_string(),
            final_checkpoint: final_note(old, size, [7; 32]),
            log_key: new.verifier().to_key_string(),
            reason: "scheduled".into(),
        }
    }

    #[test]
    fn parses_a_link_and_checks_it_against_the_log() {
        let a = NoteSigner::generate("mfr.example/log-2026").unwrap();
        let b = NoteSigner::generate("mfr.example/log-2036").unwrap();
        let l = Link::parse(&link(&a, &b, 12)).unwrap();
        assert_eq!(l.final_checkpoint.size, 12);
        l.check_prefix(12, &[7; 32]).unwrap();
        l.check_prefix(20, &[7; 32]).unwrap();
        let e = l.check_prefix(11, &[7; 32]).unwrap_err().0;
        assert!(e.contains("must be of entries already in the log"), "{e}");
        let e = l.check_prefix(12, &[8; 32]).unwrap_err().0;
        assert!(e.contains("not a checkpoint of this log's history"), "{e}");
    }

    #[test]
    fn refuses_links_that_do_not_hold_on_their_own() {
        let a = NoteSigner::generate("mfr.example/log-2026").unwrap();
        let b = NoteSigner::generate("mfr.example/log-2036").unwrap();
        let same = NoteSigner::generate("mfr.example/log-2026").unwrap();
        let e = Link::parse(&link(&a, &same, 3)).unwrap_err().0;
        assert!(e.contains("needs a new origin"), "{e}");
        let mut d = link(&a, &b, 3);
        d.reason = "bored".into();
        assert!(Link::parse(&d).unwrap_err().0.contains("reason"));
        // A final checkpoint signed by another key than the retired one.
        let mut d = link(&a, &b, 3);
        d.final_checkpoint = final_note(&same, 3, [7; 32]);
        let e = Link::parse(&d).unwrap_err().0;
        assert!(e.contains("does not verify with the retired key"), "{e}");
        let mut d = link(&a, &b, 3);
        d.final_checkpoint = final_note(&a, 0, [7; 32]);
        assert!(Link::parse(&d).unwrap_err().0.contains("empty tree"));
        let mut d = link(&a, &b, 3);
        d.log_key = "nonsense".into();
        assert!(Link::parse(&d).unwrap_err().0.contains("log_key"));
    }

    #[test]
    fn key_sequence_follows_each_link_and_refuses_gaps_and_old_origins() {
        let k = |n: &str| NoteSigner::generate(n).unwrap();
        let (a, b, c) = (k("log/a"), k("log/b"), k("log/c"));
        let ab = Link::parse(&link(&a, &b, 3)).unwrap();
        let bc = Link::parse(&link(&b, &c, 5)).unwrap();
        let names: Vec<String> = key_sequence(&[ab.clone(), bc.clone()])
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(names, ["log/a", "log/b", "log/c"]);
        let e = key_sequence(&[bc.clone(), ab.clone()]).unwrap_err().0;
        assert!(e.contains("link 1 retires key"), "{e}");
        let ca = Link::parse(&link(&c, &a, 7)).unwrap();
        let e = key_sequence(&[ab, bc, ca]).unwrap_err().0;
        assert!(e.contains("brings back origin"), "{e}");
    }
}
