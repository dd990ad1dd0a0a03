//! The one structured log line (and the metrics) per answered append.
//!
//! Fields: `chain`, `seq`, `kind` (event kind name), `result` (accepted, duplicate, rejected),
//! `code` (gRPC status name), `reason` (a fixed error category, plus the policy `rule` id),
//! `index` and `latency_us`. Never PHI and never free text: no chain-of-identity reference, no
//! comment, no field values, no error message (the client gets that in its status). A chain id
//! that is not a valid chain id is logged as `-`, so client input cannot forge log content.

use crate::ledger::LedgerError;
use crate::pb::{EventBody, Receipt, SignedEvent};
use crate::rules::{valid_chain_id, RuleError, MAX_ENTRY_BYTES};
use prost::Message;
use std::time::Duration;
use tonic::Code;

/// What may be logged about an event, taken before it is handed to the writer.
#[derive(Debug, Clone, Default)]
pub struct About {
    pub chain: Option<String>,
    pub seq: Option<u64>,
    pub kind: &'static str,
}

impl About {
    pub fn of(ev: &SignedEvent) -> About {
        if ev.body.len() > MAX_ENTRY_BYTES {
            return About {
                kind: "-",
                ..About::default()
            };
        }
        match EventBody::decode(ev.body.as_slice()) {
            Ok(b) => About {
                kind: b
                    .detail
                    .as_ref()
                    .map(crate::rules::kind_name)
                    .unwrap_or("-"),
                seq: Some(b.seq),
                chain: valid_chain_id(&b.chain_id).then_some(b.chain_id),
            },
            Err(_) => About {
                kind: "-",
                ..About::default()
            },
        }
    }
}

/// A fixed, PHI-free category of a rejection.
pub fn reason(e: &LedgerError) -> &'static str {
    match e {
        LedgerError::Rule(r) => match r {
            RuleError::Malformed(_) => "malformed",
            RuleError::TooLarge { .. } => "too_large",
            RuleError::UnknownChain { .. } => "unknown_chain",
            RuleError::Gap { .. } => "gap",
            RuleError::StalePrev { .. } => "stale_prev",
            RuleError::Fork { .. } => "fork",
        },
        LedgerError::BagTaken { .. } => "bag_taken",
        LedgerError::BadSignature(_) => "bad_signature",
        LedgerError::Overloaded(_) => "overloaded",
        LedgerError::Signer(_) => "signer",
        LedgerError::Registry(_) => "registry",
        LedgerError::Policy(_) => "policy",
        LedgerError::Invalid(_) => "invalid",
        LedgerError::Role(_) => "role",
        LedgerError::NotFound(_) => "not_found",
        LedgerError::Storage(_) => "storage",
        LedgerError::Corrupt(_) => "corrupt",
        LedgerError::Uncertain(_) => "uncertain",
        LedgerError::ShuttingDown => "shutting_down",
        LedgerError::NotWriter(_) => "not_writer",
        LedgerError::KeyRotation(_) => "key_rotation",
        LedgerError::Link(_) => "log_link",
        LedgerError::CutOff => "cut_off",
    }
}

/// Logs the append line and records the append metrics.
/// `code` is the gRPC code the caller answers with (`api::code_of` of the error, or OK).
pub fn append_answered(
    about: &About,
    result: &Result<Receipt, LedgerError>,
    code: Code,
    latency: Duration,
) {
    let chain = about.chain.as_deref().unwrap_or("-");
    let latency_us = latency.as_micros() as u64;
    match result {
        Ok(r) => {
            let outcome = if r.duplicate { "duplicate" } else { "accepted" };
            crate::metrics::append_answered(outcome, Code::Ok, latency);
            tracing::info!(
                chain,
                seq = r.seq,
                kind = about.kind,
                result = outcome,
                code = "OK",
                index = r.index,
                latency_us,
                "append"
            );
        }
        Err(e) => {
            crate::metrics::append_answered("rejected", code, latency);
            let rule = match e {
                LedgerError::Policy(v) | LedgerError::Role(v) if is_rule_id(&v.rule) => {
                    v.rule.as_str()
                }
                _ => "-",
            };
            tracing::info!(
                chain,
                seq = about.seq,
                kind = about.kind,
                result = "rejected",
                code = crate::metrics::code_name(code),
                reason = reason(e),
                rule,
                latency_us,
                "append"
            );
        }
    }
}

/// Policy rule ids are short identifiers from the policy table; anything else is not logged.
fn is_rule_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}
