//! The ledger's rules as pure functions over values: the limits, chain-id validity, the shape
//! of a signed event, the chain link (seq / prev_hash) against a chain's head, which bags an
//! event names, and the short name of each event kind. The writer (`ledger`), the offline
//! verifier (`bundle::verify`) and the backup audit (`backup`) all decide with these
//! functions, so no rule has a second copy. No I/O.

use crate::crypto::EventHash;
use crate::pb::{event_body::Detail, EventBody, SignatureMeaning, SignedEvent};
use crate::policy::cut;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Largest log entry (encoded `LogEntry`) accepted (docs/design.md §5, "Limits").
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Most bytes a `LogEntry` adds around the body, besides the signatures (events.proto, layout 6).
pub const ENTRY_OVERHEAD_BYTES: usize = 28;
/// Most bytes one signature adds to a `LogEntry` (a key id of up to 128 bytes).
pub const SIGNATURE_OVERHEAD_BYTES: usize = 213;

/// The largest body a client may sign with `signatures` signatures: it always fits in an entry.
pub const fn max_body_bytes(signatures: usize) -> usize {
    MAX_ENTRY_BYTES - ENTRY_OVERHEAD_BYTES - SIGNATURE_OVERHEAD_BYTES * signatures
}
/// Largest gRPC message a server or station decodes (an entry is capped at 64 KiB; this leaves
/// room for signatures while refusing anything absurd before it is buffered).
pub const MAX_GRPC_MESSAGE: usize = 256 * 1024;
/// Longest chain id.
pub const MAX_CHAIN_ID: usize = 128;
/// How far in the future a signature or event time may be (clock skew between stations).
pub const MAX_CLOCK_SKEW_NANOS: i64 = 5 * 60 * crate::time::NANOS_PER_SEC;

/// An event that breaks one of the ledger's rules; each variant says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{0}")]
    Malformed(String),
    #[error("entry is {size} bytes; the limit is {MAX_ENTRY_BYTES} bytes (64 KiB)")]
    TooLarge { size: usize },
    #[error(
        "chain {} does not exist; its first event must have seq 0 (got seq {seq})",
        cut(chain)
    )]
    UnknownChain { chain: String, seq: u64 },
    #[error("chain {} is at seq {head_seq} (head hash {head_hash}); seq {seq} would leave a gap: the next event is seq {next} with prev_hash {head_hash}; rebase on the head and re-sign", cut(chain), next = head_seq + 1)]
    Gap {
        chain: String,
        seq: u64,
        head_seq: u64,
        head_hash: String,
    },
    #[error("stale prev_hash for chain {} seq {seq}: current head is seq {head_seq} hash {head_hash}; rebase on it and re-sign", cut(chain))]
    StalePrev {
        chain: String,
        seq: u64,
        head_seq: u64,
        head_hash: String,
    },
    #[error("seq {seq} of chain {} is already taken by a different event; current head is seq {head_seq} hash {head_hash}", cut(chain))]
    Fork {
        chain: String,
        seq: u64,
        head_seq: u64,
        head_hash: String,
    },
}

pub fn malformed(msg: impl Into<String>) -> RuleError {
    RuleError::Malformed(msg.into())
}

/// The head of one chain: its last event's seq and hash and the custody state after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    #[serde(with = "hex_hash")]
    pub hash: [u8; 32],
    /// Name of the custody state after the head event.
    pub state_name: String,
    /// Policy state after the head event, as the writer holds it in memory. Never stored: it
    /// is rebuilt from the chain's entries when needed (`None` after a read from storage, and
    /// for chains the policy does not govern), so each append rewrites only a small head record.
    #[serde(skip)]
    pub state: Option<crate::policy::ChainState>,
    /// Reasons of the hold open after the head event (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hold: Vec<String>,
}

impl Head {
    /// The head after event `seq` with `hash`, which left the chain in `state` (its open
    /// hold's reasons copied out, as stored).
    pub fn after(
        seq: u64,
        hash: [u8; 32],
        state_name: String,
        state: Option<crate::policy::ChainState>,
    ) -> Head {
        Head {
            seq,
            hash,
            state_name,
            hold: state
                .as_ref()
                .and_then(|s| s.hold.as_ref())
                .map(|h| h.reasons.clone())
                .unwrap_or_default(),
            state,
        }
    }

    pub fn event_hash(&self) -> EventHash {
        EventHash(self.hash)
    }
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("hash must be 32 bytes"))
    }
}

/// Valid chain ids: 1-128 characters from `[A-Za-z0-9._:=-]`.
pub fn valid_chain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CHAIN_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:=-".contains(&b))
}

/// Short name of an event detail, as used on the command line, in tables and in logs.
pub fn kind_name(d: &Detail) -> &'static str {
    match d {
        Detail::KeyRegistered(_) => "key_registered",
        Detail::KeyRevoked(_) => "key_revoked",
        Detail::LogLink(_) => "log_link",
        Detail::PolicyActivated(_) => "policy_activated",
        Detail::Enrolled(_) => "enrolled",
        Detail::Collected(_) => "collected",
        Detail::Packed(_) => "packed",
        Detail::Shipped(_) => "shipped",
        Detail::Received(_) => "received",
        Detail::ManufacturingStep(_) => "manufacturing_step",
        Detail::QcResult(_) => "qc_result",
        Detail::Released(_) => "released",
        Detail::Rejected(_) => "rejected",
        Detail::Stored(_) => "stored",
        Detail::Dispensed(_) => "dispensed",
        Detail::BedsideCheck(_) => "bedside_check",
        Detail::Infused(_) => "infused",
        Detail::Hold(_) => "hold",
        Detail::HoldReleased(_) => "hold_released",
        Detail::Deviation(_) => "deviation",
        Detail::Destroyed(_) => "destroyed",
        Detail::CustodyHandoff(_) => "custody_handoff",
        Detail::LymphodepletionStarted(_) => "lymphodepletion_started",
        Detail::LymphodepletionCompleted(_) => "lymphodepletion_completed",
        Detail::IdentityCheckFailed(_) => "identity_check_failed",
    }
}

/// Field checks that need no state.
pub fn check_shape(body: &EventBody, ev: &SignedEvent, now: i64) -> Result<(), RuleError> {
    if !valid_chain_id(&body.chain_id) {
        return Err(malformed(format!(
            "chain id {:?} must be 1-{MAX_CHAIN_ID} characters from A-Z a-z 0-9 . _ : = -",
            body.chain_id.chars().take(40).collect::<String>()
        )));
    }
    if body.prev_hash.len() != 32 {
        return Err(malformed(format!(
            "prev_hash is {} bytes, expected 32",
            body.prev_hash.len()
        )));
    }
    if body.detail.is_none() {
        return Err(malformed(
            "event body has no event detail (the oneof `detail` is empty)",
        ));
    }
    if body.occurred_at_unix_nanos <= 0 {
        return Err(malformed("occurred_at_unix_nanos is missing"));
    }
    if body.occurred_at_unix_nanos > now.saturating_add(MAX_CLOCK_SKEW_NANOS) {
        return Err(malformed(format!(
            "occurred_at {} is in the future (server time {}); check the station clock",
            crate::time::rfc3339(body.occurred_at_unix_nanos),
            crate::time::rfc3339(now)
        )));
    }
    if ev.signatures.is_empty() {
        return Err(malformed(
            "the event has no signatures; at least the performer must sign",
        ));
    }
    let mut seen = HashSet::new();
    let mut actor_performed = false;
    for sig in &ev.signatures {
        if !seen.insert(sig.key_id.as_str()) {
            return Err(malformed(format!(
                "key {} signs the event more than once",
                cut(&sig.key_id)
            )));
        }
        let meaning = SignatureMeaning::try_from(sig.meaning)
            .ok()
            .filter(|m| *m != SignatureMeaning::Unspecified)
            .ok_or_else(|| {
                malformed(format!(
                    "signature by {} has no valid meaning ({})",
                    cut(&sig.key_id),
                    sig.meaning
                ))
            })?;
        if sig.signed_at_unix_nanos > now.saturating_add(MAX_CLOCK_SKEW_NANOS) {
            return Err(malformed(format!(
                "signature by {} is dated {}, in the future (server time {}); check the station clock",
                cut(&sig.key_id),
                crate::time::rfc3339(sig.signed_at_unix_nanos),
                crate::time::rfc3339(now)
            )));
        }
        if sig.key_id == body.actor_key_id && meaning == SignatureMeaning::Performed {
            actor_performed = true;
        }
    }
    if !actor_performed {
        return Err(malformed(format!(
            "actor {:?} must sign the event with meaning PERFORMED",
            cut(&body.actor_key_id)
        )));
    }
    Ok(())
}

/// Fields in encoded `EventBody` bytes that this build's proto does not define, one line per
/// message that has any: its path and the unknown field numbers, e.g.
/// `EventBody.received: field 9`. prost drops unknown fields when it decodes, so the body would
/// be signed, stored and hashed with content no reader shows; reflection keeps them.
pub fn unknown_fields(body: &[u8]) -> Vec<String> {
    use prost_reflect::{DynamicMessage, Value};
    fn walk(m: &DynamicMessage, path: &str, out: &mut Vec<String>) {
        let mut numbers: Vec<u32> = m.unknown_fields().map(|f| f.number()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        if !numbers.is_empty() {
            let list: Vec<String> = numbers.iter().map(u32::to_string).collect();
            out.push(format!(
                "{path}: field{} {}",
                if numbers.len() > 1 { "s" } else { "" },
                list.join(", ")
            ));
        }
        for (fd, v) in m.fields() {
            let p = format!("{path}.{}", fd.name());
            match v {
                Value::Message(sub) => walk(sub, &p, out),
                Value::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Message(sub) = item {
                            walk(sub, &format!("{p}[{i}]"), out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let desc = crate::pb::descriptor_pool()
        .get_message_by_name("celltrail.v1.EventBody")
        .expect("events.proto defines EventBody");
    match DynamicMessage::decode(desc, body) {
        Ok(m) => {
            let mut out = Vec::new();
            walk(&m, "EventBody", &mut out);
            out
        }
        Err(e) => vec![format!("EventBody: does not decode ({e})")],
    }
}

/// Refuses a body with fields this server does not know (entry format 2 on; the offline
/// verifier applies it to entries of that format).
pub fn check_known_fields(body: &[u8]) -> Result<(), RuleError> {
    let unknown = unknown_fields(body);
    if unknown.is_empty() {
        return Ok(());
    }
    Err(malformed(format!(
        "the event body carries fields this server does not know ({}); the ledger does not sign \
         off on content no reader shows: build the body from this server's celltrail.v1 \
         events.proto (or upgrade the server)",
        crate::policy::cut_text(&unknown.join("; "), 300)
    )))
}

/// seq / prev_hash rules [R2, R3].
pub fn check_link(body: &EventBody, head: Option<&Head>) -> Result<(), RuleError> {
    let chain = body.chain_id.clone();
    match head {
        None if body.seq != 0 => Err(RuleError::UnknownChain {
            chain,
            seq: body.seq,
        }),
        None if body.prev_hash != [0u8; 32] => Err(malformed(format!(
            "first event (seq 0) of chain {chain} must carry prev_hash of 32 zero bytes"
        ))),
        None => Ok(()),
        Some(h) if body.seq <= h.seq => Err(RuleError::Fork {
            chain,
            seq: body.seq,
            head_seq: h.seq,
            head_hash: hex::encode(h.hash),
        }),
        Some(h) if body.seq > h.seq + 1 => Err(RuleError::Gap {
            chain,
            seq: body.seq,
            head_seq: h.seq,
            head_hash: hex::encode(h.hash),
        }),
        Some(h) if body.prev_hash != h.hash => Err(RuleError::StalePrev {
            chain,
            seq: body.seq,
            head_seq: h.seq,
            head_hash: hex::encode(h.hash),
        }),
        Some(_) => Ok(()),
    }
}

/// Longest bag id the `bags` index holds (a DIN is 13 characters, a GS1 SSCC 18).
pub const MAX_BAG_ID: usize = 64;

/// The bags an event names: the apheresis bag of a collection, the product bags of a
/// manufacturing step. The `bags` index maps each to its chain (`FindChainsByBag`); ids that
/// are empty, longer than `MAX_BAG_ID` or hold a NUL (the index's separator) are not indexed.
pub fn bags_named(body: &EventBody) -> Vec<&str> {
    match &body.detail {
        Some(Detail::Collected(c)) => vec![c.din.as_str()],
        Some(Detail::ManufacturingStep(m)) => {
            m.product_bag_ids.iter().map(String::as_str).collect()
        }
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|d| !d.is_empty() && d.len() <= MAX_BAG_ID && !d.contains('\0'))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{LogEntry, Signature};
    use prost::Message;

    /// The documented largest body (events.proto, layout 6) fills an entry exactly when every
    /// other field takes its most bytes, so it always fits.
    #[test]
    fn the_largest_body_fits_an_entry_with_the_widest_other_fields() {
        for n in 1..=6 {
            let entry = LogEntry {
                body: vec![0x42; max_body_bytes(n)],
                signatures: (0..n)
                    .map(|i| Signature {
                        key_id: format!("{i}{}", "k".repeat(127)),
                        meaning: SignatureMeaning::Released as i32,
                        signed_at_unix_nanos: -1,
                        signature: vec![7; 64],
                    })
                    .collect(),
                accepted_at_unix_nanos: -1,
                index: u64::MAX,
                format_version: crate::policy::CURRENT_FORMAT,
            };
            assert_eq!(
                entry.encode_to_vec().len(),
                MAX_ENTRY_BYTES,
                "{n} signatures"
            );
        }
        assert_eq!(max_body_bytes(1), 65295);
        assert_eq!(max_body_bytes(4), 64656);
        // The contract states the same numbers a client in another language reads.
        let proto = include_str!("../proto/celltrail/v1/events.proto").replace("//", "");
        let proto = proto.split_whitespace().collect::<Vec<_>>().join(" ");
        for (n, words) in [(1, "one signature"), (2, "two"), (4, "four")] {
            let text = format!("{} with {words}", max_body_bytes(n));
            assert!(proto.contains(&text), "events.proto does not say {text:?}");
        }
        assert!(proto.contains(&format!("capped at {MAX_ENTRY_BYTES} bytes")));
    }
}
