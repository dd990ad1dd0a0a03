//! Offline verification of a bundle or of a copied data directory. No network, no clock: every
//! check is the ledger's own pure rule replayed over the exact stored bytes — `ledger::check_shape`
//! and `ledger::check_link` (with each entry's `accepted_at` as "now"), `registry` validity and
//! roles at signing time (the registry as it stood just before the entry's log index),
//! `crypto::verify_signature` (strict ed25519), `policy::Policy::apply` from seq 0, and
//! `merkle` inclusion / consistency proofs against a checkpoint opened with `note`.
//!
//! The verdict names the first broken entry (lowest log index) and why.

use super::{unb64, Bundle};
use crate::crypto::{verify_signature, EventHash};
use crate::loglink::{key_sequence, Link, LOG_CHAIN};
use crate::merkle::{self, Hash};
use crate::note::{open_note, Checkpoint, NoteVerifier};
use crate::pb::{event_body::Detail, EventBody, LogEntry, SignatureMeaning, SignedEvent};
use crate::policy::{ChainState, Context, Policy, PolicyBook, Signer};
use crate::registry::{KeyError, KeyRecord, Registry, KEYS_CHAIN};
use crate::rules::{check_link, check_shape, Head};
use prost::Message;
use serde::Serialize;
use std::collections::HashMap;

/// Most hashes an inclusion proof can need: one per level of a tree of up to 2^64 leaves.
/// Longer proofs are refused before their hashes are decoded.
pub const MAX_PROOF_HASHES: usize = 64;

/// What the auditor brings.
pub struct Options {
    /// The log key the auditor trusts; `None` = the bundle's (or data dir's) own anchor.
    pub log_key: Option<NoteVerifier>,
    /// Admin keys the auditor trusts; `None` = the bundle's (or data dir's) own anchors.
    pub admins: Option<Vec<NoteVerifier>>,
    pub policy: Policy,
    /// An earlier checkpoint note the auditor kept (`--previous`).
    pub previous: Option<String>,
}

/// The first thing that does not hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// Global log index of the broken entry (`None` for checkpoint-level failures).
    pub index: Option<u64>,
    pub chain: Option<String>,
    pub seq: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.index, &self.chain, self.seq) {
            (Some(i), Some(c), Some(s)) => write!(f, "entry {i} (chain {c} seq {s}): ")?,
            (Some(i), Some(c), None) => write!(f, "entry {i} (chain {c}): ")?,
            (Some(i), None, _) => write!(f, "entry {i}: ")?,
            _ => {}
        }
        f.write_str(&self.reason)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignerRow {
    pub key_id: String,
    pub printed_name: String,
    pub role: String,
    /// Site the key was registered for.
    pub site: String,
    pub meaning: String,
    pub signed_at: String,
    /// The same instant as unix nanoseconds (for renderers that show local time).
    #[serde(skip)]
    pub signed_at_unix_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineRow {
    pub index: u64,
    pub chain: String,
    pub seq: u64,
    pub occurred_at: String,
    pub site: String,
    pub event: String,
    /// A few words on what happened (step name, QC test and result, route, bag).
    pub detail: String,
    /// Custody state after the event.
    pub state: String,
    /// The policy table that judged the event: name and SHA-256 of its TOML.
    #[serde(default)]
    pub policy: String,
    pub event_hash: String,
    pub signers: Vec<SignerRow>,
    /// The verified event itself, for the batch record (`bundle::record`); not in `verify --json`.
    #[serde(skip)]
    pub verified: Option<Box<VerifiedEvent>>,
}

/// What the replay knew about one verified event: its exact body, when the log accepted it,
/// and the policy state after it (holds, QC, clocks).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedEvent {
    pub body_bytes: Vec<u8>,
    pub body: EventBody,
    pub accepted_at_unix_nanos: i64,
    pub state_after: ChainState,
    /// The table that judged it (the recorded one, or the auditor's override): the batch
    /// record measures its clocks and readings against this table's limits.
    pub policy: std::sync::Arc<Policy>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointInfo {
    pub origin: String,
    pub size: u64,
    pub root: String,
}

/// One policy table and the custody entries it judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyUse {
    pub name: String,
    pub sha256: String,
    /// Log index of its `PolicyActivated` event; `None` for the base table.
    pub activated_at_index: Option<u64>,
    pub entries: usize,
}

/// Everything `verify` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    /// The log verifier key the checkpoint was checked against.
    pub log_key: String,
    /// Where that key came from.
    pub log_key_source: String,
    pub checkpoint: Option<CheckpointInfo>,
    /// Size of the `--previous` checkpoint proven to be a prefix, if one was given.
    pub previous_size: Option<u64>,
    /// Sizes of the bundle's later checkpoints proven to extend its checkpoint
    /// (`later_checkpoints`); their cosignatures count toward `--quorum`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub later_checkpoints: Vec<u64>,
    pub registry_entries: usize,
    pub chains: usize,
    pub entries_verified: usize,
    pub inclusion_proofs: usize,
    pub policy: String,
    /// Every policy table the entries were judged under (the base table, then each one
    /// activated on the keys chain), with how many custody entries each judged.
    #[serde(default)]
    pub policies: Vec<PolicyUse>,
    /// Set when the auditor replaced the recorded tables with `--policy FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_override: Option<String>,
    pub timeline: Vec<TimelineRow>,
    /// Chains whose end the log's signed head statement proves (nothing follows the last
    /// entry in the checkpoint's tree), and those a bundle without statements leaves open.
    pub chain_ends_proven: Vec<String>,
    pub chain_ends_unproven: Vec<String>,
    /// Log key rotations the log went through before the checkpoint (`loglink`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_links: Vec<LinkReport>,
    /// Witness cosignatures on the checkpoint (`verify --witness … --quorum K`); absent for a
    /// data-directory audit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<crate::witness::quorum::WitnessReport>,
    /// Things that hold under the rules an entry was written with but an auditor should see,
    /// e.g. a format-0 entry accepted after a signer's key had expired.
    #[serde(default)]
    pub warnings: Vec<String>,
    pub failure: Option<Failure>,
}

/// One verified log key rotation: the link entry and the retired key's final checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkReport {
    /// Log index of the link entry (the first entry under the new key).
    pub index: u64,
    pub previous_origin: String,
    pub previous_log_key: String,
    /// The retired key's final checkpoint (signed note, with its cosignatures) and its size.
    pub final_checkpoint: String,
    pub final_size: u64,
    pub log_key: String,
    pub origin: String,
    pub reason: String,
    /// Witness cosignatures on the final checkpoint (`verify --witness … --quorum K`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<crate::witness::quorum::WitnessReport>,
}

impl Report {
    pub(super) fn new(log_key: &str, source: &str, policy: &Policy) -> Report {
        Report {
            ok: false,
            log_key: log_key.to_string(),
            log_key_source: source.to_string(),
            checkpoint: None,
            previous_size: None,
            later_checkpoints: Vec::new(),
            log_links: Vec::new(),
            registry_entries: 0,
            chains: 0,
            entries_verified: 0,
            inclusion_proofs: 0,
            policy: policy.name().to_string(),
            policies: Vec::new(),
            policy_override: None,
            timeline: Vec::new(),
            chain_ends_proven: Vec::new(),
            chain_ends_unproven: Vec::new(),
            witnesses: None,
            warnings: Vec::new(),
            failure: None,
        }
    }

    pub(super) fn fail(mut self, f: Failure) -> Report {
        self.ok = false;
        self.failure = Some(f);
        self
    }
}

pub(super) fn top(reason: impl Into<String>) -> Failure {
    Failure {
        index: None,
        chain: None,
        seq: None,
        reason: reason.into(),
    }
}

fn parse_key(s: &str, what: &str) -> Result<NoteVerifier, Failure> {
    NoteVerifier::from_key_string(s.trim())
        .map_err(|e| top(format!("{what} is not a verifier key: {e}")))
}

/// Opens `note` with the log key and parses the checkpoint; the origin must be the key's name.
pub(super) fn open_checkpoint(
    note: &str,
    key: &NoteVerifier,
    what: &str,
) -> Result<Checkpoint, Failure> {
    let opened = open_note(note, std::slice::from_ref(key)).map_err(|e| {
        top(format!(
            "{what}: signature does not verify with log key {}: {e}",
            key.to_key_string()
        ))
    })?;
    let cp = Checkpoint::parse(&opened.text)
        .map_err(|e| top(format!("{what} is not a tlog-checkpoint: {e}")))?;
    if cp.origin != key.name {
        return Err(top(format!(
            "{what} names origin {:?}, but the log key is {:?}",
            cp.origin, key.name
        )));
    }
    Ok(cp)
}

/// One entry to replay: where it claims to sit in the log, its exact bytes, its proof.
pub struct Item {
    pub index: u64,
    pub bytes: Vec<u8>,
    /// `None` when the caller checks the root over all entries itself (data-dir audit).
    pub proof: Option<Vec<Hash>>,
}

/// The key registry as it stood at every log index, in memory linear in the key events:
/// each key's successive records (registered, revoked) with the index of the event that made
/// each. (A snapshot of the whole registry per key event cost n²/2 records: a forged registry
/// of a few MB took gigabytes.)
struct Registries {
    history: HashMap<String, Vec<(u64, KeyRecord)>>,
    /// The operator admin keys' ids: a custody signature by one is named as such, as the
    /// server names it (`KeyError::AdminKey`), not as an unregistered key.
    admins: std::collections::HashSet<String>,
    /// The policy tables recorded on the keys chain, each in force after its index.
    book: PolicyBook,
}

impl Registries {
    /// The record of `key_id` if it may sign as [`Registry::signer_at`] would with the
    /// registry the server used for an entry at `index`: all key events before it.
    fn signer_at(
        &self,
        index: u64,
        key_id: &str,
        signed_at: i64,
        accepted_at: i64,
        format: u32,
    ) -> Result<&KeyRecord, KeyError> {
        let versions = self.history.get(key_id).map_or(&[][..], Vec::as_slice);
        let n = versions.partition_point(|(i, _)| *i < index);
        let (_, rec) = n.checked_sub(1).map(|n| &versions[n]).ok_or_else(|| {
            if self.admins.contains(key_id) {
                KeyError::AdminKey(key_id.to_string())
            } else {
                KeyError::Unknown(key_id.to_string())
            }
        })?;
        rec.may_sign(signed_at, accepted_at, format)?;
        Ok(rec)
    }

    /// A revocation of `key_id` recorded after `index` whose time is at or before `signed_at`
    /// (`key revoke --at` dated back): the signature was valid when the log recorded it, but
    /// the registry now says the key was revoked when it signed. Its index and record.
    fn revoked_later(&self, index: u64, key_id: &str, signed_at: i64) -> Option<&(u64, KeyRecord)> {
        self.history
            .get(key_id)?
            .iter()
            .find(|(i, r)| *i > index && r.revoked_at.is_some_and(|t| t <= signed_at))
    }
}

/// A decoded entry, checked for shape and link.
struct Decoded {
    entry: LogEntry,
    body: EventBody,
    hash: EventHash,
}

pub(super) struct Ctx {
    pub(super) root: Option<(u64, Hash)>,
    /// The auditor's table: the built-in one (no override) or `--policy FILE`.
    pub(super) policy: std::sync::Arc<Policy>,
    /// Keep each event's body and policy state in its timeline row (bundles, for the batch
    /// record); a whole data-dir audit does not, to stay small.
    pub(super) keep_events: bool,
}

/// SHA-256 of the built-in table: an auditor's `--policy` with other bytes is an override.
fn builtin_sha256() -> [u8; 32] {
    static H: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *H.get_or_init(|| {
        crate::policy::book::table_sha256(crate::policy::DEFAULT_TABLE_TOML.as_bytes())
    })
}

impl Ctx {
    /// Whether the auditor replaced the recorded tables (`verify --policy FILE`).
    fn overriding(&self) -> bool {
        self.policy.sha256() != builtin_sha256()
    }

    /// The table that judges the entry at `index`: the recorded one, or the override.
    fn table<'b>(
        &'b self,
        book: &'b PolicyBook,
        index: u64,
    ) -> (&'b std::sync::Arc<Policy>, String) {
        if self.overriding() {
            (
                &self.policy,
                format!(
                    "{} sha256:{} (--policy override)",
                    self.policy.name(),
                    hex::encode(&self.policy.sha256()[..6])
                ),
            )
        } else {
            let t = book.at(index);
            (&t.policy, t.describe())
        }
    }

    /// Checks the entry's inclusion proof, if it has one. Run after the signature and rule
    /// checks so that a tampered entry is reported by its most specific cause.
    fn prove(
        &self,
        item: &Item,
        chain: &str,
        seq: u64,
        report: &mut Report,
    ) -> Result<(), Failure> {
        if let (Some(proof), Some((size, root))) = (&item.proof, self.root) {
            let leaf = merkle::leaf_hash(&item.bytes);
            merkle::verify_inclusion(&leaf, item.index, size, proof, &root).map_err(|e| {
                Failure {
                    index: Some(item.index),
                    chain: Some(chain.to_string()),
                    seq: Some(seq),
                    reason: format!(
                        "inclusion proof against the checkpoint (size {size}) fails: {e}"
                    ),
                }
            })?;
            report.inclusion_proofs += 1;
        }
        Ok(())
    }

    /// Decodes and checks what every entry must satisfy: index, chain, shape, link.
    fn common(&self, item: &Item, chain: &str, head: Option<&Head>) -> Result<Decoded, Failure> {
        let at = |seq: Option<u64>, reason: String| Failure {
            index: Some(item.index),
            chain: Some(chain.to_string()),
            seq,
            reason,
        };
        let entry = LogEntry::decode(item.bytes.as_slice()).map_err(|e| {
            at(
                None,
                format!("entry bytes are not a celltrail.v1.LogEntry: {e}"),
            )
        })?;
        if entry.index != item.index {
            return Err(at(
                None,
                format!(
                    "entry bytes say log index {}, but it is listed at index {}",
                    entry.index, item.index
                ),
            ));
        }
        let body = EventBody::decode(entry.body.as_slice()).map_err(|e| {
            at(
                None,
                format!("event body bytes are not a celltrail.v1.EventBody: {e}"),
            )
        })?;
        let seq = Some(body.seq);
        if body.chain_id != chain {
            return Err(at(
                seq,
                format!("the event belongs to chain {}, not {chain}", body.chain_id),
            ));
        }
        let ev = SignedEvent {
            body: entry.body.clone(),
            signatures: entry.signatures.clone(),
        };
        check_shape(&body, &ev, entry.accepted_at_unix_nanos)
            .map_err(|e| at(seq, format!("malformed event: {e}")))?;
        if entry.format_version >= crate::policy::KNOWN_FIELDS_FORMAT {
            crate::rules::check_known_fields(&entry.body)
                .map_err(|e| at(seq, format!("malformed event: {e}")))?;
        }
        check_link(&body, head).map_err(|e| at(seq, format!("chain link broken: {e}")))?;
        Ok(Decoded {
            hash: EventHash::of_body(&entry.body),
            entry,
            body,
        })
    }

    /// Replays the keys chain with admin signatures; returns the registry before each entry,
    /// and the first failure (the registries stop there).
    fn registry(
        &self,
        items: &[Item],
        admins: &[NoteVerifier],
        report: &mut Report,
    ) -> (Registries, Option<Failure>) {
        let mut regs = Registries {
            history: HashMap::new(),
            admins: admins.iter().map(|a| a.name.clone()).collect(),
            book: PolicyBook::new(Policy::default_autologous_car_t()),
        };
        let mut live = Registry::new(admins);
        let mut head: Option<Head> = None;
        for item in items {
            match self.key_event(item, head.as_ref(), &mut live, &mut regs.book, report) {
                Ok((h, key_id)) => {
                    head = Some(h);
                    if let Some(key_id) = key_id {
                        let rec = live
                            .get(&key_id)
                            .expect("the event just registered or revoked it");
                        regs.history
                            .entry(key_id)
                            .or_default()
                            .push((item.index, rec.clone()));
                    }
                    report.registry_entries += 1;
                    report.entries_verified += 1;
                }
                Err(f) => return (regs, Some(f)),
            }
        }
        (regs, None)
    }

    /// Checks and applies one key event to `reg`; returns the new head and the key it changed.
    /// On failure `reg` may hold the event; the replay stops there.
    fn key_event(
        &self,
        item: &Item,
        head: Option<&Head>,
        reg: &mut Registry,
        book: &mut PolicyBook,
        report: &mut Report,
    ) -> Result<(Head, Option<String>), Failure> {
        let d = self.common(item, KEYS_CHAIN, head)?;
        let at = |reason: String| Failure {
            index: Some(item.index),
            chain: Some(KEYS_CHAIN.into()),
            seq: Some(d.body.seq),
            reason,
        };
        for sig in &d.entry.signatures {
            let key = reg.admin(&sig.key_id).ok_or_else(|| {
                at(format!(
                    "key {} is not an operator admin key of the trust anchors; only admins sign the keys chain",
                    sig.key_id
                ))
            })?;
            verify_signature(key, &d.hash, sig).map_err(|e| at(e.to_string()))?;
        }
        if let (Some(Detail::KeyRegistered(r)), true) =
            (&d.body.detail, d.entry.format_version >= 1)
        {
            self.table(book, item.index)
                .0
                .check_registration(r)
                .map_err(|v| at(format!("invalid key registration: {v}")))?;
        }
        let key_id = match &d.body.detail {
            Some(Detail::KeyRegistered(r)) => reg.register(r).map(|()| Some(r.key_id.clone())),
            Some(Detail::KeyRevoked(r)) => reg.revoke(r).map(|()| Some(r.key_id.clone())),
            Some(Detail::PolicyActivated(pa)) => {
                book.activate(item.index, pa)
                    .map_err(|e| at(format!("policy table not activated: {e}")))?;
                Ok(None)
            }
            _ => return Err(at(
                "the keys chain holds only KeyRegistered, KeyRevoked and PolicyActivated events"
                    .into(),
            )),
        }
        .map_err(|e| at(e.to_string()))?;
        self.prove(item, KEYS_CHAIN, d.body.seq, report)?;
        Ok((head_of(&d), key_id))
    }

    /// Replays one chain from seq 0; returns its timeline rows and the first failure.
    fn chain(
        &self,
        chain: &str,
        items: &[Item],
        regs: &Registries,
        report: &mut Report,
    ) -> (Vec<TimelineRow>, Option<Failure>) {
        let mut rows = Vec::new();
        let mut head: Option<Head> = None;
        let mut state: Option<ChainState> = None;
        for item in items {
            match self.custody_event(chain, item, head.as_ref(), state.as_ref(), regs, report) {
                Ok((d, next, row)) => {
                    head = Some(head_of(&d));
                    state = Some(next);
                    rows.push(row);
                    report.entries_verified += 1;
                }
                Err(f) => return (rows, Some(f)),
            }
        }
        (rows, None)
    }

    fn custody_event(
        &self,
        chain: &str,
        item: &Item,
        head: Option<&Head>,
        state: Option<&ChainState>,
        regs: &Registries,
        report: &mut Report,
    ) -> Result<(Decoded, ChainState, TimelineRow), Failure> {
        let d = self.common(item, chain, head)?;
        let at = |reason: String| Failure {
            index: Some(item.index),
            chain: Some(chain.to_string()),
            seq: Some(d.body.seq),
            reason,
        };
        let mut signers = Vec::new();
        let mut rows = Vec::new();
        for sig in &d.entry.signatures {
            let rec = regs
                .signer_at(
                    item.index,
                    &sig.key_id,
                    sig.signed_at_unix_nanos,
                    d.entry.accepted_at_unix_nanos,
                    d.entry.format_version,
                )
                .map_err(|e| at(format!("signer rejected: {e}")))?;
            if rec.expired_at(d.entry.accepted_at_unix_nanos) {
                // Only a format-0 entry gets here (format 1 refuses it above).
                report.warnings.push(format!(
                    "entry {} (chain {chain} seq {}): signer {} had expired at {} when the log accepted the entry at {} (entry format 0, before expiry was enforced like revocation)",
                    item.index,
                    d.body.seq,
                    rec.key_id,
                    crate::time::rfc3339(rec.valid_until),
                    crate::time::rfc3339(d.entry.accepted_at_unix_nanos)
                ));
            }
            verify_signature(&rec.public_key, &d.hash, sig).map_err(|e| at(e.to_string()))?;
            let meaning =
                SignatureMeaning::try_from(sig.meaning).unwrap_or(SignatureMeaning::Unspecified);
            if let Some((rev_index, rev)) =
                regs.revoked_later(item.index, &sig.key_id, sig.signed_at_unix_nanos)
            {
                report.warnings.push(format!(
                    "entry {} (chain {chain} seq {}): {} signed {} at {}, after the time its key was later declared revoked ({}, reason {:?}, recorded at log index {rev_index}); the log accepted it before the revocation was recorded: review this signature",
                    item.index,
                    d.body.seq,
                    rec.key_id,
                    meaning.as_str_name(),
                    crate::time::rfc3339(sig.signed_at_unix_nanos),
                    crate::time::rfc3339(rev.revoked_at.unwrap_or_default()),
                    rev.revoke_reason
                ));
            }
            signers.push(Signer {
                key_id: rec.key_id.clone(),
                role: rec.role.clone(),
                site: rec.site.clone(),
                meaning,
                signed_at_unix_nanos: sig.signed_at_unix_nanos,
                valid_from_unix_nanos: rec.valid_from,
            });
            rows.push(SignerRow {
                key_id: rec.key_id.clone(),
                printed_name: rec.printed_name.clone(),
                role: rec.role.clone(),
                site: rec.site.clone(),
                meaning: meaning.as_str_name().to_ascii_lowercase(),
                signed_at: crate::time::rfc3339(sig.signed_at_unix_nanos),
                signed_at_unix_nanos: sig.signed_at_unix_nanos,
            });
        }
        let ctx = Context {
            format: d.entry.format_version,
            accepted_at_unix_nanos: d.entry.accepted_at_unix_nanos,
        };
        let (policy, policy_text) = self.table(&regs.book, item.index);
        let next = policy
            .apply(state, &d.body, &signers, &ctx)
            .map_err(|v| at(format!("custody policy: {v} [table {policy_text}]")))?;
        self.prove(item, chain, d.body.seq, report)?;
        let row = TimelineRow {
            index: item.index,
            chain: chain.to_string(),
            seq: d.body.seq,
            occurred_at: crate::time::rfc3339(d.body.occurred_at_unix_nanos),
            site: d.body.site.clone(),
            event: d
                .body
                .detail
                .as_ref()
                .map(crate::rules::kind_name)
                .unwrap_or("?")
                .to_string(),
            detail: d.body.detail.as_ref().map(summary).unwrap_or_default(),
            state: next.state_name().to_string(),
            policy: policy_text,
            event_hash: d.hash.to_hex(),
            signers: rows,
            verified: self.keep_events.then(|| {
                Box::new(VerifiedEvent {
                    body_bytes: d.entry.body.clone(),
                    body: d.body.clone(),
                    accepted_at_unix_nanos: d.entry.accepted_at_unix_nanos,
                    state_after: next.clone(),
                    policy: policy.clone(),
                })
            }),
        };
        Ok((d, next, row))
    }
}

/// A few words on an event for the timeline (no PHI: the CoI reference is pseudonymous).
fn summary(d: &Detail) -> String {
    match d {
        Detail::Enrolled(e) => format!("CoI {}, {}", e.coi_ref, e.therapy),
        Detail::Collected(c) => format!("DIN {} {} mL", c.din, opt(c.volume_ml)),
        // Each of the three is optional: name only those the event records.
        Detail::Packed(p) => [
            ("shipper", &p.shipper_id),
            ("logger", &p.logger_id),
            ("seal", &p.seal_id),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", "),
        Detail::Shipped(s) => format!("{} -> {}", s.from_site, s.to_site),
        Detail::Received(r) => format!(
            "from {}, seal {}, {}..{} C",
            r.from_site,
            match r.seal_intact {
                Some(true) => "intact",
                Some(false) => "BROKEN",
                None => "not recorded",
            },
            opt(r.temp_min_c),
            opt(r.temp_max_c)
        ),
        Detail::ManufacturingStep(m) => m.step.clone(),
        Detail::QcResult(q) => format!(
            "{} {}",
            q.test,
            match q.passed {
                Some(true) => "passed",
                Some(false) => "FAILED",
                None => "not recorded",
            }
        ),
        Detail::Released(r) if r.exceptional => {
            format!("exceptional, deviation {}", r.deviation_id)
        }
        Detail::Rejected(r) => r.reason.clone(),
        Detail::Stored(s) => s.location.clone(),
        Detail::Dispensed(d) => format!("bag {}", d.product_bag_id),
        Detail::BedsideCheck(b) => format!("bag {}", b.product_bag_id),
        Detail::Infused(i) => format!("bag {}", i.product_bag_id),
        Detail::Hold(h) => h.reason.clone(),
        Detail::HoldReleased(h) => h.reason.clone(),
        Detail::Deviation(d) => d.deviation_id.clone(),
        Detail::Destroyed(d) => d.reason.clone(),
        Detail::CustodyHandoff(h) => format!("{} -> {}", h.from_site, h.to_site),
        Detail::IdentityCheckFailed(n) => format!("NEAR MISS at {}: {}", n.check, n.reason),
        _ => String::new(),
    }
}

/// A reading for display: "-" when it was not recorded.
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn head_of(d: &Decoded) -> Head {
    Head {
        hold: Vec::new(),
        seq: d.body.seq,
        hash: d.hash.0,
        state_name: String::new(),
        state: None,
    }
}

/// Replays the registry and every chain; records the timeline and the lowest-index failure.
pub(super) fn replay(
    ctx: &Ctx,
    registry: &[Item],
    chains: &[(String, Vec<Item>)],
    admins: &[NoteVerifier],
    report: &mut Report,
) -> Option<Failure> {
    let mut failures = Vec::new();
    let (regs, f) = ctx.registry(registry, admins, report);
    failures.extend(f);
    if ctx.overriding() {
        report.policy_override = Some(format!(
            "--policy {} sha256:{} replaced the tables recorded in the log for every entry",
            ctx.policy.name(),
            hex::encode(ctx.policy.sha256())
        ));
    } else {
        let tables = regs.book.tables();
        report.policies = tables
            .iter()
            .map(|t| PolicyUse {
                name: t.name.clone(),
                sha256: hex::encode(t.sha256),
                activated_at_index: t.activated_at,
                entries: chains
                    .iter()
                    .filter(|(id, _)| id != KEYS_CHAIN)
                    .flat_map(|(_, items)| items)
                    .filter(|i| regs.book.at(i.index).activated_at == t.activated_at)
                    .count(),
            })
            .collect();
        report.policy = regs
            .book
            .tables()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
    }
    for (id, items) in chains {
        if id == KEYS_CHAIN {
            failures.push(top(format!(
                "the {KEYS_CHAIN} chain is listed among the custody chains"
            )));
            continue;
        }
        let (rows, f) = ctx.chain(id, items, &regs, report);
        report.timeline.extend(rows);
        failures.extend(f);
    }
    report.chains = chains.len();
    failures.into_iter().min_by_key(|f| f.index.unwrap_or(0))
}

/// Reads the log links from their entries without trusting them yet: which log keys the log
/// went through, so the checkpoint can be opened with the right one. `replay_links` checks them.
pub(super) fn peek_links(items: &[Item]) -> Result<Vec<Link>, Failure> {
    items
        .iter()
        .map(|item| {
            let at = |reason: String| Failure {
                index: Some(item.index),
                chain: Some(LOG_CHAIN.to_string()),
                seq: None,
                reason,
            };
            let body = LogEntry::decode(item.bytes.as_slice())
                .ok()
                .and_then(|e| EventBody::decode(e.body.as_slice()).ok())
                .ok_or_else(|| at("entry is not a LogEntry holding an EventBody".into()))?;
            match Link::of_body(&body) {
                Some(Ok(l)) => Ok(l),
                Some(Err(e)) => Err(at(e.to_string())),
                None => Err(at(format!(
                    "the {LOG_CHAIN} chain holds only LogLink events"
                ))),
            }
        })
        .collect()
}

/// The key that signs the checkpoint, given the key the auditor trusts and the log's links:
/// the last link's new key. The trusted key must be that key (the links are then followed
/// back to the retired keys) or one the links retired (followed forward: each link is signed
/// by the operator admins and sits in the tree the checkpoint commits to). Returns the signer
/// and, when it was reached forward, a note for the report.
pub(super) fn checkpoint_signer(
    trusted: &NoteVerifier,
    links: &[Link],
) -> Result<(NoteVerifier, Option<String>), Failure> {
    let keys = key_sequence(links).map_err(|e| top(e.to_string()))?;
    let Some(signer) = keys.last() else {
        return Ok((trusted.clone(), None));
    };
    if signer == trusted {
        return Ok((signer.clone(), None));
    }
    match keys.iter().position(|k| k == trusted) {
        Some(i) => Ok((
            signer.clone(),
            Some(format!(
                "; followed {} log link(s) forward from that key to {}",
                keys.len() - 1 - i,
                signer.to_key_string()
            )),
        )),
        None => Err(top(format!(
            "the log's links lead from {} to {}, the key that signs the checkpoint; the log key you \
             trust ({}) is none of them",
            keys[0].to_key_string(),
            signer.to_key_string(),
            trusted.to_key_string()
        ))),
    }
}

/// Replays the log links like key events: entry checks, `log` chain link, signatures by the
/// operator admins, inclusion. Then each link's final checkpoint must lie between the previous
/// link and this one (`final_size` ≤ its index, and past the previous link), and `prefix`
/// must prove that checkpoint is a prefix of the log (consistency proof, or recomputed root).
pub(super) fn replay_links(
    ctx: &Ctx,
    items: &[Item],
    admins: &[NoteVerifier],
    report: &mut Report,
    prefix: impl Fn(&Link) -> Result<(), String>,
) -> Result<(), Failure> {
    let reg = Registry::new(admins);
    let mut head: Option<Head> = None;
    let mut after: Option<u64> = None;
    for item in items {
        let d = ctx.common(item, LOG_CHAIN, head.as_ref())?;
        let at = |reason: String| Failure {
            index: Some(item.index),
            chain: Some(LOG_CHAIN.into()),
            seq: Some(d.body.seq),
            reason,
        };
        for sig in &d.entry.signatures {
            let key = reg.admin(&sig.key_id).ok_or_else(|| {
                at(format!(
                    "key {} is not an operator admin key of the trust anchors; only admins sign log links",
                    sig.key_id
                ))
            })?;
            verify_signature(key, &d.hash, sig).map_err(|e| at(e.to_string()))?;
        }
        let link = match Link::of_body(&d.body) {
            Some(Ok(l)) => l,
            Some(Err(e)) => return Err(at(e.to_string())),
            None => {
                return Err(at(format!(
                    "the {LOG_CHAIN} chain holds only LogLink events"
                )))
            }
        };
        let f = link.final_checkpoint.size;
        if f > item.index || after.is_some_and(|a| f <= a) {
            return Err(at(format!(
                "the retired key's final checkpoint has size {f}; it must cover the previous link \
                 (entry {}) and no entry from this link (entry {}) on",
                after.map_or("none".into(), |a| a.to_string()),
                item.index
            )));
        }
        prefix(&link).map_err(|e| {
            at(format!(
                "the retired key's final checkpoint (origin {}, size {f}) is not a prefix of this log: {e}",
                link.previous.name
            ))
        })?;
        ctx.prove(item, LOG_CHAIN, d.body.seq, report)?;
        if f < item.index {
            report.warnings.push(format!(
                "entries {f} to {} were signed into the log only under the new key {} (the retired key's final checkpoint stops at size {f}; link reason: {})",
                item.index - 1,
                link.next.name,
                link.reason
            ));
        }
        report.log_links.push(LinkReport {
            index: item.index,
            previous_origin: link.previous.name.clone(),
            previous_log_key: link.previous.to_key_string(),
            final_checkpoint: link.final_note.clone(),
            final_size: f,
            log_key: link.next.to_key_string(),
            origin: link.next.name.clone(),
            reason: link.reason.clone(),
            witnesses: None,
        });
        report.entries_verified += 1;
        head = Some(head_of(&d));
        after = Some(item.index);
    }
    Ok(())
}

fn decode_items(entries: &[super::Entry], chain: &str) -> Result<Vec<Item>, Failure> {
    entries
        .iter()
        .map(|e| {
            let at = |reason: String| Failure {
                index: Some(e.index),
                chain: Some(chain.to_string()),
                seq: None,
                reason,
            };
            if e.proof.len() > MAX_PROOF_HASHES {
                return Err(at(format!(
                    "inclusion proof has {} hashes; no tree of up to 2^64 entries needs more than {MAX_PROOF_HASHES}",
                    e.proof.len()
                )));
            }
            let bytes = unb64(&e.entry).map_err(|err| at(format!("entry is not base64: {err}")))?;
            let proof = e
                .proof
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let raw = unb64(p)
                        .map_err(|err| at(format!("proof hash {i} is not base64: {err}")))?;
                    merkle::hash_from_slice(&raw, &format!("proof hash {i}"))
                        .map_err(|err| at(err.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Item {
                index: e.index,
                bytes,
                proof: Some(proof),
            })
        })
        .collect()
}

/// Verifies a bundle (docs/design.md §8, [R11]).
pub fn verify_bundle(b: &Bundle, opts: &Options) -> Report {
    let (key, source) = match &opts.log_key {
        Some(k) => (Ok(k.clone()), "--log-key (supplied by the auditor)"),
        None => (
            parse_key(&b.anchors.log_key, "bundle anchor log_key"),
            "the bundle's own anchor (not independent: pin it with --log-key)",
        ),
    };
    let key_string = key.as_ref().map(|k| k.to_key_string()).unwrap_or_default();
    let report = Report::new(&key_string, source, &opts.policy);
    let key = match key {
        Ok(k) => k,
        Err(f) => return report.fail(f),
    };
    let admins = match &opts.admins {
        Some(a) => Ok(a.clone()),
        None => b
            .anchors
            .admin_keys
            .iter()
            .map(|k| parse_key(k, "bundle anchor admin key"))
            .collect(),
    };
    let admins = match admins {
        Ok(a) => a,
        Err(f) => return report.fail(f),
    };
    let mut report = report;
    // Log key rotations: the checkpoint is signed by the last link's key.
    let link_items = match decode_items(&b.log_links, LOG_CHAIN) {
        Ok(i) => i,
        Err(f) => return report.fail(f),
    };
    let links = match peek_links(&link_items) {
        Ok(l) => l,
        Err(f) => return report.fail(f),
    };
    let key = match checkpoint_signer(&key, &links) {
        Ok((signer, followed)) => {
            report.log_key = signer.to_key_string();
            if let Some(note) = followed {
                report.log_key_source.push_str(&note);
            }
            signer
        }
        Err(f) => return report.fail(f),
    };
    let cp = match open_checkpoint(&b.checkpoint, &key, "checkpoint") {
        Ok(cp) => cp,
        Err(f) => return report.fail(f),
    };
    report.checkpoint = Some(CheckpointInfo {
        origin: cp.origin.clone(),
        size: cp.size,
        root: hex::encode(cp.root),
    });
    if cp.size != b.tree_size {
        return report.fail(top(format!(
            "bundle says tree_size {}, but its signed checkpoint has size {}",
            b.tree_size, cp.size
        )));
    }
    if let Some(c) = b
        .consistency
        .iter()
        .find(|c| c.proof.len() > 2 * MAX_PROOF_HASHES)
    {
        return report.fail(top(format!(
            "consistency proof from size {} has {} hashes; no tree of up to 2^64 entries needs more than {}",
            c.old_size,
            c.proof.len(),
            2 * MAX_PROOF_HASHES
        )));
    }
    if let Some(prev) = &opts.previous {
        // A checkpoint the auditor kept from before a log key rotation opens with the retired
        // key of its origin; the tree is the same, so the consistency proof is too.
        let origin = crate::log::note_text(prev)
            .and_then(|t| Checkpoint::parse(t).ok())
            .map(|c| c.origin);
        let prev_key = key_sequence(&links)
            .ok()
            .and_then(|ks| ks.into_iter().find(|k| Some(&k.name) == origin.as_ref()))
            .unwrap_or_else(|| key.clone());
        match check_previous(prev, &prev_key, &cp, |old| {
            b.consistency.iter().find(|c| c.old_size == old).map(|c| {
                c.proof
                    .iter()
                    .map(|p| unb64(p).unwrap_or_default())
                    .collect::<Vec<_>>()
            })
        }) {
            Ok(size) => report.previous_size = Some(size),
            Err(f) => return report.fail(f),
        }
    }
    match check_later(b, &key, &cp) {
        Ok(sizes) => report.later_checkpoints = sizes,
        Err(f) => return report.fail(f),
    }
    let registry = match decode_items(&b.registry, KEYS_CHAIN) {
        Ok(r) => r,
        Err(f) => return report.fail(f),
    };
    let mut chains = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in &b.chains {
        if !seen.insert(c.chain_id.as_str()) {
            return report.fail(top(format!(
                "chain {} is listed twice in the bundle",
                c.chain_id
            )));
        }
        match decode_items(&c.entries, &c.chain_id) {
            Ok(items) => chains.push((c.chain_id.clone(), items)),
            Err(f) => return report.fail(f),
        }
    }
    let ctx = Ctx {
        root: Some((cp.size, cp.root)),
        policy: std::sync::Arc::new(opts.policy.clone()),
        keep_events: true,
    };
    if let Some(f) = replay(&ctx, &registry, &chains, &admins, &mut report) {
        return report.fail(f);
    }
    let prefix = |l: &Link| {
        let f = &l.final_checkpoint;
        let c = b
            .consistency
            .iter()
            .find(|c| c.old_size == f.size)
            .ok_or_else(|| {
                format!(
                    "the bundle carries no consistency proof from size {} (export it again)",
                    f.size
                )
            })?;
        let proof: Vec<Vec<u8>> = c
            .proof
            .iter()
            .map(|p| unb64(p).unwrap_or_default())
            .collect();
        merkle::verify_consistency_bytes(f.size, cp.size, &f.root, &cp.root, &proof)
            .map_err(|e| e.to_string())
    };
    if let Err(f) = replay_links(&ctx, &link_items, &admins, &mut report, prefix) {
        return report.fail(f);
    }
    if let Some(note) = &b.registry_head {
        if let Err(f) = check_chain_end(note, &key, &cp, KEYS_CHAIN, &registry) {
            return report.fail(f);
        }
        report.chain_ends_proven.push(KEYS_CHAIN.to_string());
    } else if !registry.is_empty() || !chains.is_empty() {
        // Without the registry's signed head a later revocation could be left out.
        report.chain_ends_unproven.push(KEYS_CHAIN.to_string());
    }
    for (c, (_, items)) in b.chains.iter().zip(&chains) {
        match &c.head {
            Some(note) => match check_chain_end(note, &key, &cp, &c.chain_id, items) {
                Ok(()) => report.chain_ends_proven.push(c.chain_id.clone()),
                Err(f) => return report.fail(f),
            },
            None => report.chain_ends_unproven.push(c.chain_id.clone()),
        }
    }
    report.ok = true;
    report
}

/// Checks a chain's signed head statement against the bundle: signed by the log key, for the
/// checkpoint's log and tree size, and naming exactly the bundle's entries of the chain (their
/// number and the hash of the last). A log that omits a chain's later events from a bundle
/// must sign a false statement to make it verify, and that statement is then evidence.
fn check_chain_end(
    note: &str,
    key: &NoteVerifier,
    cp: &Checkpoint,
    chain: &str,
    items: &[Item],
) -> Result<(), Failure> {
    let last = items.last();
    let at = |reason: String| Failure {
        index: last.map(|i| i.index),
        chain: Some(chain.to_string()),
        seq: None,
        reason,
    };
    let opened = open_note(note, std::slice::from_ref(key)).map_err(|e| {
        at(format!(
            "chain head statement: signature does not verify with log key {}: {e}",
            key.to_key_string()
        ))
    })?;
    let st = crate::note::ChainHeadStatement::parse(&opened.text)
        .map_err(|e| at(format!("chain head statement does not parse: {e}")))?;
    if st.origin != cp.origin || st.chain_id != chain || st.tree_size != cp.size {
        return Err(at(format!(
            "chain head statement is about chain {:?} of log {:?} at tree size {}, not chain {chain:?} of {:?} at the checkpoint's size {}",
            st.chain_id, st.origin, st.tree_size, cp.origin, cp.size
        )));
    }
    let head = last
        .and_then(|i| LogEntry::decode(i.bytes.as_slice()).ok())
        .map(|e| EventHash::of_body(&e.body).0);
    if st.length != items.len() as u64 || head != Some(st.head_hash) {
        return Err(at(format!(
            "the log signed that chain {chain} has {} events ending with {} at tree size {}, \
             but the bundle holds {} ending with {}: events are missing from the bundle",
            st.length,
            hex::encode(st.head_hash),
            st.tree_size,
            items.len(),
            head.map(hex::encode).unwrap_or_else(|| "nothing".into())
        )));
    }
    Ok(())
}

/// Checks the bundle's later checkpoints: each signed by the log key for the same origin, not
/// smaller than `cp`, and proven by its consistency proof to extend `cp`. Returns their sizes.
/// A later checkpoint that does not extend the bundle's is not ignored: two checkpoints signed
/// by one log that no proof joins are a split view, so the bundle fails.
pub(super) fn check_later(
    b: &Bundle,
    key: &NoteVerifier,
    cp: &Checkpoint,
) -> Result<Vec<u64>, Failure> {
    let mut sizes = Vec::with_capacity(b.later_checkpoints.len());
    for (i, l) in b.later_checkpoints.iter().enumerate() {
        let what = format!("later checkpoint {i}");
        if l.proof.len() > 2 * MAX_PROOF_HASHES {
            return Err(top(format!(
                "{what}: its consistency proof has {} hashes; no tree of up to 2^64 entries needs more than {}",
                l.proof.len(),
                2 * MAX_PROOF_HASHES
            )));
        }
        let later = open_checkpoint(&l.checkpoint, key, &what)?;
        if later.size < cp.size {
            return Err(top(format!(
                "{what} (size {}) is older than the bundle's checkpoint (size {}); only a later checkpoint can vouch for it",
                later.size, cp.size
            )));
        }
        let proof = l
            .proof
            .iter()
            .enumerate()
            .map(|(j, h)| {
                unb64(h).map_err(|e| top(format!("{what}: proof hash {j} is not base64: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        merkle::verify_consistency_bytes(cp.size, later.size, &cp.root, &later.root, &proof)
            .map_err(|e| {
                top(format!(
                    "{what} (size {}) does not extend the bundle's checkpoint (size {}): {e}; \
                     if both are signed by the log, it has shown two histories (keep the bundle as evidence)",
                    later.size, cp.size
                ))
            })?;
        sizes.push(later.size);
    }
    Ok(sizes)
}

/// Checks that the auditor's earlier checkpoint, signed by `key`, is a prefix of `cp`;
/// returns its size.
pub(super) fn check_previous(
    prev_note: &str,
    key: &NoteVerifier,
    cp: &Checkpoint,
    proof_for: impl Fn(u64) -> Option<Vec<Vec<u8>>>,
) -> Result<u64, Failure> {
    // Opened with `key`: its origin is that key's name (the bundle's, or a retired key's that
    // the bundle's log links lead from).
    let prev = open_checkpoint(prev_note, key, "previous checkpoint")?;
    if prev.size > cp.size {
        return Err(top(format!(
            "previous checkpoint (size {}) is newer than the bundle's (size {}); export again",
            prev.size, cp.size
        )));
    }
    let proof = if prev.size == cp.size {
        Vec::new()
    } else {
        proof_for(prev.size).ok_or_else(|| {
            top(format!(
                "the bundle carries no consistency proof from size {}; export again with --since-size {}",
                prev.size, prev.size
            ))
        })?
    };
    merkle::verify_consistency_bytes(prev.size, cp.size, &prev.root, &cp.root, &proof).map_err(
        |e| {
            top(format!(
                "log history was rewritten: the previous checkpoint (size {}, root {}) is not a prefix of the bundle's checkpoint (size {}): {e}",
                prev.size,
                hex::encode(prev.root),
                cp.size
            ))
        },
    )?;
    Ok(prev.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{Anchors, LaterCheckpoint, FORMAT};
    use crate::note::{b64, sign_note, NoteSigner};

    /// The quick start packs with a logger and a seal but no shipper: the timeline named an
    /// empty shipper ("packed (shipper )").
    #[test]
    fn packed_summary_names_only_what_was_recorded() {
        let packed = |shipper: &str, logger: &str, seal: &str| {
            summary(&Detail::Packed(crate::pb::Packed {
                shipper_id: shipper.into(),
                logger_id: logger.into(),
                seal_id: seal.into(),
            }))
        };
        assert_eq!(packed("", "LOG-77", "SEAL-9"), "logger LOG-77, seal SEAL-9");
        assert_eq!(
            packed("09506000134352SHIP1", "LOG-77", ""),
            "shipper 09506000134352SHIP1, logger LOG-77"
        );
        assert_eq!(packed("", "", ""), "");
    }

    /// A log of `n` opaque leaves and its signed checkpoint at `size`.
    fn signed(log: &NoteSigner, leaves: &[Hash], size: usize) -> String {
        let cp = Checkpoint {
            origin: log.name.clone(),
            size: size as u64,
            root: merkle::root(&leaves[..size]),
            extensions: vec![],
        };
        sign_note(&cp.to_text(), &[log]).unwrap()
    }

    fn bundle(log: &NoteSigner, leaves: &[Hash], size: usize) -> Bundle {
        Bundle {
            format: FORMAT.into(),
            exported_at: "2026-01-01T00:00:00Z".into(),
            anchors: Anchors {
                log_key: log.verifier().to_key_string(),
                admin_keys: vec![],
            },
            checkpoint: signed(log, leaves, size),
            tree_size: size as u64,
            registry: vec![],
            registry_head: None,
            chains: vec![],
            consistency: vec![],
            later_checkpoints: vec![],
            log_links: vec![],
        }
    }

    fn later(log: &NoteSigner, leaves: &[Hash], old: usize, new: usize) -> LaterCheckpoint {
        LaterCheckpoint {
            checkpoint: signed(log, leaves, new),
            proof: merkle::consistency_proof(&leaves[..new], old as u64)
                .unwrap()
                .iter()
                .map(|h| b64(h))
                .collect(),
        }
    }

    fn opts() -> Options {
        Options {
            log_key: None,
            admins: None,
            policy: Policy::default_autologous_car_t(),
            previous: None,
        }
    }

    fn leaves(n: u8) -> Vec<Hash> {
        (0..n).map(|i| merkle::leaf_hash(&[i])).collect()
    }

    #[test]
    fn later_checkpoint_that_extends_the_bundle_is_accepted() {
        let log = NoteSigner::generate("log.example/a").unwrap();
        let l = leaves(9);
        let mut b = bundle(&log, &l, 5);
        b.later_checkpoints = vec![later(&log, &l, 5, 9), later(&log, &l, 5, 5)];
        let r = verify_bundle(&b, &opts());
        assert!(r.ok, "{:?}", r.failure);
        assert_eq!(r.later_checkpoints, vec![9, 5]);
    }

    #[test]
    fn later_checkpoint_with_a_tampered_proof_fails_the_bundle() {
        let log = NoteSigner::generate("log.example/a").unwrap();
        let l = leaves(9);
        let mut b = bundle(&log, &l, 5);
        let mut bad = later(&log, &l, 5, 9);
        let mut h = unb64(&bad.proof[1]).unwrap();
        h[0] ^= 1;
        bad.proof[1] = b64(&h);
        b.later_checkpoints = vec![bad];
        let r = verify_bundle(&b, &opts());
        let f = r.failure.unwrap().reason;
        assert!(
            f.contains(
                "later checkpoint 0 (size 9) does not extend the bundle's checkpoint (size 5)"
            ),
            "{f}"
        );
        // A later checkpoint of another history (same size and key, other leaves) fails too.
        let mut other = leaves(9);
        other[2] = merkle::leaf_hash(b"forged");
        b.later_checkpoints = vec![later(&log, &other, 5, 9)];
        assert!(!verify_bundle(&b, &opts()).ok);
    }

    proptest::proptest! {
        /// Hostile later checkpoints and log-link entries never panic the verifier: they fail
        /// it (or, for a well-formed later checkpoint of the same tree, pass).
        #[test]
        fn hostile_later_checkpoints_and_log_links_never_panic(
            note in proptest::prop_oneof![proptest::prelude::any::<String>(), "log.example/a\n[0-9]{1,3}\n[A-Za-z0-9+/=]{0,48}\n\n— log.example/a [A-Za-z0-9+/=]{0,120}\n"],
            proof in proptest::collection::vec("[A-Za-z0-9+/=]{0,48}", 0..5),
            entry in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            index in 0u64..20,
        ) {
            let log = NoteSigner::generate("log.example/a").unwrap();
            let l = leaves(9);
            let mut b = bundle(&log, &l, 5);
            b.later_checkpoints = vec![LaterCheckpoint { checkpoint: note.clone(), proof: proof.clone() }];
            let _ = verify_bundle(&b, &opts());
            b.later_checkpoints.clear();
            b.log_links = vec![crate::bundle::Entry { index, entry: b64(&entry), proof }];
            let r = verify_bundle(&b, &opts());
            proptest::prop_assert!(!r.ok);
        }
    }

    #[test]
    fn later_checkpoint_must_be_later_and_signed_by_the_log() {
        let log = NoteSigner::generate("log.example/a").unwrap();
        let l = leaves(9);
        let mut b = bundle(&log, &l, 5);
        b.later_checkpoints = vec![LaterCheckpoint {
            checkpoint: signed(&log, &l, 3),
            proof: vec![],
        }];
        let f = verify_bundle(&b, &opts()).failure.unwrap().reason;
        assert!(f.contains("is older than the bundle's checkpoint"), "{f}");

        let stranger = NoteSigner::generate("log.example/a").unwrap();
        b.later_checkpoints = vec![later(&stranger, &l, 5, 9)];
        let f = verify_bundle(&b, &opts()).failure.unwrap().reason;
        assert!(
            f.contains("later checkpoint 0: signature does not verify with log key"),
            "{f}"
        );
        b.later_checkpoints = vec![LaterCheckpoint {
            proof: vec![b64(&[0; 32]); 2 * MAX_PROOF_HASHES + 1],
            ..later(&log, &l, 5, 9)
        }];
        let f = verify_bundle(&b, &opts()).failure.unwrap().reason;
        assert!(
            f.contains("no tree of up to 2^64 entries needs more"),
            "{f}"
        );
    }
}
