//! The writer's in-order checks of one event, against the chain heads and key registry as
//! updated by the events before it in the same group: duplicates, the chain link
//! (`rules::check_link`), signer validity, then the key registry or the custody policy.

use super::verifier::{meaning_of, Accepted, Outcome, Ready};
use super::writer::{Overlay, Rotation, Writer};
use super::{malformed, stored_event_hash, LedgerError};
use crate::crypto::{verify_signature, EventHash, SigError};
use crate::loglink::{Link, LOG_CHAIN};
use crate::pb::{event_body::Detail, EventBody, LogEntry, SignedEvent};
use crate::policy::{ChainState, Context, EventKind, Signer, CURRENT_FORMAT};
use crate::registry::{KeyError, RegistryError, KEYS_CHAIN};
use crate::rules::{check_link, Head, RuleError, MAX_ENTRY_BYTES};
use prost::Message;

impl Writer {
    /// The in-order checks that depend on what came before: duplicates in this group, chain
    /// link, signer validity, registry or custody policy. An accepted event is staged in `ov`.
    pub(super) fn check_ready(
        &self,
        ev: &SignedEvent,
        ready: Box<Ready>,
        now: i64,
        ov: &mut Overlay,
    ) -> Result<Outcome, LedgerError> {
        let Ready { hash, body, sig_ok } = *ready;
        let head = self.head_of(&body.chain_id, ov)?;
        if let Some(index) = self.duplicate_of(&hash, &body, head.as_ref(), ov)? {
            return Ok(Outcome::Duplicate(index));
        }

        // Key rotation: a retired key appends nothing; a new key appends its link first.
        if !ov.linked {
            if let Some(why) = self.rotation.refusal(&self.log_key.name) {
                let link_awaited = matches!(self.rotation, Rotation::AwaitingLink { .. });
                if !(link_awaited && body.chain_id == LOG_CHAIN) {
                    return Err(LedgerError::KeyRotation(why));
                }
            }
        }

        // Chain link [R2, R3].
        check_link(&body, head.as_ref())?;

        // Signers [R4, R6].
        let (signers, unverified) = self.check_signers(ev, &body, &hash, &sig_ok, ov, now)?;

        // Build the log entry [R5].
        let index = self.tree_size + ov.batch.entries.len() as u64;
        let entry = LogEntry {
            body: ev.body.clone(),
            signatures: ev.signatures.clone(),
            accepted_at_unix_nanos: now,
            index,
            format_version: CURRENT_FORMAT,
        }
        .encode_to_vec();
        if entry.len() > MAX_ENTRY_BYTES {
            return Err(RuleError::TooLarge { size: entry.len() }.into());
        }

        // Registry or custody rules.
        let (state_name, state, holds_opened) =
            self.apply_rules(&body, head.as_ref(), &signers, ov, now, index)?;
        if unverified {
            // `may_sign` accepts a superset of what `apply` accepts, so this cannot happen; if
            // the two ever disagree, an unverified signature must not be recorded.
            return Err(LedgerError::Role(crate::policy::Violation {
                rule: "unexpected_signer".into(),
                state: state_name,
                expected: "signers the policy table takes for this event".into(),
                detail:
                    "a signature was not verified because its signer's role cannot sign this event"
                        .into(),
            }));
        }

        // One bag, one chain: a DIN or product bag id another chain names is refused.
        self.check_bags_free(&body, ov)?;

        self.stage_entry(ov, index, entry, hash, &body, state_name, state)?;
        Ok(Outcome::Accepted(Accepted {
            index,
            hash,
            chain_id: body.chain_id,
            seq: body.seq,
            holds_opened,
        }))
    }

    /// Refuses an event naming a bag (collection DIN, product bag) that another chain names,
    /// in the store or earlier in this group (ALREADY_EXISTS naming that chain).
    fn check_bags_free(&self, body: &EventBody, ov: &mut Overlay) -> Result<(), LedgerError> {
        if crate::loglink::admin_signed(&body.chain_id) {
            return Ok(());
        }
        for bag in crate::rules::bags_named(body) {
            // This group's chains first (they follow the committed ones in `chains_naming`),
            // so the message names the chain that took the bag most recently.
            let in_group = ov
                .batch
                .bags
                .iter()
                .find(|(d, c, _)| d == bag && *c != body.chain_id)
                .map(|(_, c, _)| c.clone());
            let other = match in_group {
                Some(c) => Some(c),
                None => self
                    .chains_naming(bag, ov)?
                    .into_iter()
                    .find(|c| *c != body.chain_id),
            };
            if let Some(chain) = other {
                return Err(LedgerError::BagTaken {
                    bag: crate::policy::presence::cut(bag),
                    chain,
                });
            }
        }
        Ok(())
    }

    /// The index of this very event if it is already in the log or earlier in this group.
    /// `head` is the chain's head before this event (`head_of`).
    fn duplicate_of(
        &self,
        hash: &EventHash,
        body: &EventBody,
        head: Option<&Head>,
        ov: &Overlay,
    ) -> Result<Option<u64>, LedgerError> {
        if let Some(index) = ov.hashes.get(hash) {
            return Ok(Some(*index));
        }
        // A resubmission names a (chain, seq) already taken; the event there tells whether it
        // is the same one (same hash: the same receipt again) or another (a fork, found by the
        // link check). A chain's seqs are taken from 0 up to its head's without gaps, so past
        // the head (or on a chain without one) nothing is taken and the store is not asked:
        // a new event costs no read.
        if head.is_none_or(|h| body.seq > h.seq) {
            return Ok(None);
        }
        if let Some(index) = self.store.chain_event(&body.chain_id, body.seq)? {
            if stored_event_hash(self.store.as_ref(), index)? == *hash {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// The chain's head as of the events before this one: this group's, the cache's, or the
    /// store's.
    fn head_of(&self, chain_id: &str, ov: &Overlay) -> Result<Option<Head>, LedgerError> {
        Ok(
            match ov
                .heads
                .get(chain_id)
                .or_else(|| self.committed.heads.get(chain_id))
            {
                Some(h) => Some(h.clone()),
                None => self.store.head(chain_id)?,
            },
        )
    }

    /// Every signature verifies and its key may sign now: an admin key on the keys chain, a
    /// registered, valid key elsewhere. Returns what the custody policy knows of the signers,
    /// and whether the signatures were left unverified because some signer's role cannot sign
    /// this event (the policy then refuses it, naming that signer).
    fn check_signers(
        &self,
        ev: &SignedEvent,
        body: &EventBody,
        hash: &EventHash,
        sig_ok: &[Option<bool>],
        ov: &Overlay,
        now: i64,
    ) -> Result<(Vec<Signer>, bool), LedgerError> {
        let registry = ov.registry.as_ref().unwrap_or(&self.registry);
        if crate::loglink::admin_signed(&body.chain_id) {
            for (sig, ok) in ev.signatures.iter().zip(sig_ok) {
                let key = registry
                    .admin(&sig.key_id)
                    .ok_or_else(|| KeyError::NotAdmin(sig.key_id.clone()))?;
                Self::signature_ok(*ok, key, hash, sig)?;
            }
            return Ok((Vec::new(), false));
        }
        let mut signers = Vec::with_capacity(ev.signatures.len());
        let mut records = Vec::with_capacity(ev.signatures.len());
        for sig in &ev.signatures {
            records.push(registry.signer_at(
                &sig.key_id,
                sig.signed_at_unix_nanos,
                now,
                CURRENT_FORMAT,
            )?);
        }
        // A signer in a role the table never takes for this event and meaning cannot count:
        // then no signature is verified and the policy refuses the event.
        let kind = body.detail.as_ref().and_then(EventKind::of);
        let unverified = !ev.signatures.iter().zip(&records).all(|(sig, rec)| {
            kind.is_some_and(|k| {
                self.book
                    .current()
                    .policy
                    .may_sign(k, &rec.role, meaning_of(sig))
            })
        });
        for ((sig, rec), ok) in ev.signatures.iter().zip(&records).zip(sig_ok) {
            if !unverified {
                Self::signature_ok(*ok, &rec.public_key, hash, sig)?;
            }
            signers.push(signer_of(rec, sig));
        }
        Ok((signers, unverified))
    }

    /// The key registry (keys chain) or the custody policy (every other chain) applied to the
    /// event: the chain's next state name, policy state and the reasons of holds it opened.
    fn apply_rules(
        &self,
        body: &EventBody,
        head: Option<&Head>,
        signers: &[Signer],
        ov: &mut Overlay,
        now: i64,
        index: u64,
    ) -> Result<(String, Option<ChainState>, Vec<String>), LedgerError> {
        let policy = ov
            .book
            .as_ref()
            .unwrap_or(&self.book)
            .current()
            .policy
            .clone();
        if body.chain_id == KEYS_CHAIN {
            if let Some(Detail::PolicyActivated(pa)) = &body.detail {
                let mut book = ov.book.take().unwrap_or_else(|| self.book.clone());
                let applied = book.activate(index, pa);
                ov.book = Some(book);
                applied.map_err(|e| {
                    RegistryError::Invalid(format!("policy table not activated: {e}"))
                })?;
                return Ok(("KeyRegistry".to_string(), None, Vec::new()));
            }
            let mut reg = ov.registry.take().unwrap_or_else(|| self.registry.clone());
            if let Some(Detail::KeyRegistered(r)) = &body.detail {
                if let Err(v) = policy.check_registration(r) {
                    ov.registry = Some(reg);
                    return Err(LedgerError::Invalid(v));
                }
            }
            let applied = match &body.detail {
                Some(Detail::KeyRegistered(r)) => reg.register(r),
                Some(Detail::KeyRevoked(r)) => reg.revoke(r),
                _ => Err(RegistryError::Invalid(
                    "the keys chain holds only KeyRegistered, KeyRevoked and PolicyActivated events".into(),
                )),
            };
            ov.registry = Some(reg);
            applied?;
            return Ok(("KeyRegistry".to_string(), None, Vec::new()));
        }
        if body.chain_id == LOG_CHAIN {
            return self.apply_link(body, ov);
        }
        if matches!(body.detail, Some(Detail::LogLink(_))) {
            return Err(malformed(format!(
                "log-link events belong on the {LOG_CHAIN} chain, not on chain {}",
                body.chain_id
            )));
        }
        if matches!(
            body.detail,
            Some(Detail::KeyRegistered(_))
                | Some(Detail::KeyRevoked(_))
                | Some(Detail::PolicyActivated(_))
        ) {
            return Err(malformed(format!(
                "key registry events belong on the {KEYS_CHAIN} chain, not on chain {}",
                crate::policy::cut(&body.chain_id)
            )));
        }
        let rebuilt;
        let prior: Option<&ChainState> = match head {
            Some(Head { state: Some(s), .. }) => Some(s),
            Some(_) => {
                rebuilt = self.rebuild_state(&body.chain_id)?;
                Some(&rebuilt)
            }
            None => None,
        };
        let ctx = Context::current(now);
        let next = policy.apply(prior, body, signers, &ctx).map_err(|v| {
            // A signer the table does not allow for this event (role, site, or a signature
            // it does not take) is PERMISSION_DENIED (docs/design.md §6); a missing field or bad code
            // is INVALID_ARGUMENT; everything else is a custody precondition.
            if v.is_malformed() {
                LedgerError::Invalid(v)
            } else if matches!(
                v.rule.as_str(),
                "signatures" | "signer_site" | "unexpected_signer"
            ) {
                LedgerError::Role(v)
            } else {
                LedgerError::Policy(v)
            }
        })?;
        let before = prior
            .and_then(|s| s.hold.as_ref())
            .map_or(0, |h| h.reasons.len());
        let opened = next
            .hold
            .as_ref()
            .map(|h| h.reasons.iter().skip(before).cloned().collect())
            .unwrap_or_default();
        Ok((next.state_name().to_string(), Some(next), opened))
    }

    /// A log link (`loglink`): accepted only as the first entry under a new log key, naming
    /// this server's key as the new one and, as the retired one, the key that signed the
    /// stored checkpoint; its final checkpoint must be a checkpoint of this log's history.
    fn apply_link(
        &self,
        body: &EventBody,
        ov: &mut Overlay,
    ) -> Result<(String, Option<ChainState>, Vec<String>), LedgerError> {
        let Some(Detail::LogLink(d)) = &body.detail else {
            return Err(malformed(format!(
                "the {LOG_CHAIN} chain holds only LogLink events"
            )));
        };
        let link = Link::parse(d).map_err(|e| malformed(e.to_string()))?;
        let own = self.log_key.verifier();
        let previous_origin = match (&self.rotation, ov.linked) {
            (Rotation::AwaitingLink { previous_origin }, false) => previous_origin,
            _ => {
                return Err(LedgerError::Link(format!(
                    "this log's checkpoints are already signed by its key {}: a link is only \
                     the first entry under a new log key (celltrail log rotate)",
                    own.to_key_string()
                )))
            }
        };
        if link.next != own {
            return Err(LedgerError::Link(format!(
                "the link introduces log key {}, but this server signs with {}",
                link.next.to_key_string(),
                own.to_key_string()
            )));
        }
        if link.previous.name != *previous_origin {
            return Err(LedgerError::Link(format!(
                "the link retires origin {:?}, but the log's checkpoints are signed by {previous_origin:?}",
                link.previous.name
            )));
        }
        let stored = self.store.checkpoint()?.unwrap_or_default();
        crate::note::open_note(&stored, std::slice::from_ref(&link.previous)).map_err(|e| {
            LedgerError::Link(format!(
                "the log's latest checkpoint does not verify with the retired key the link names ({}): {e}",
                link.previous.to_key_string()
            ))
        })?;
        let index = self.tree_size + ov.batch.entries.len() as u64;
        let size = link.final_checkpoint.size.min(index);
        let store = self.store.as_ref();
        let frontier = &self.committed.frontier;
        let root = crate::merkle::root_at(size, |l, i| {
            super::writer::node(store, &ov.nodes, frontier, l, i)
        })?;
        link.check_prefix(index, &root)
            .map_err(|e| LedgerError::Link(e.to_string()))?;
        ov.linked = true;
        Ok(("LogLink".to_string(), None, Vec::new()))
    }

    /// The policy state of a committed chain, replayed from its entries (heads on disk carry
    /// only seq, hash and state name).
    fn rebuild_state(&self, chain_id: &str) -> Result<ChainState, LedgerError> {
        replay_state(self.store.as_ref(), &self.registry, &self.book, chain_id)?.ok_or_else(|| {
            LedgerError::Storage(format!(
                "cannot rebuild the custody state of chain {chain_id}: the chain has no entries"
            ))
        })
    }

    /// The signature verdict computed in `prepare_group`, or a verification now for a key that
    /// was registered earlier in this same group.
    fn signature_ok(
        sig_ok: Option<bool>,
        key: &ed25519_dalek::VerifyingKey,
        hash: &EventHash,
        sig: &crate::pb::Signature,
    ) -> Result<(), LedgerError> {
        match sig_ok {
            Some(true) => Ok(()),
            Some(false) => Err(SigError::Invalid {
                key_id: sig.key_id.clone(),
                event: hash.short(),
            }
            .into()),
            None => Ok(verify_signature(key, hash, sig)?),
        }
    }
}

/// The policy state of a committed chain, replayed from its entries with `registry` and
/// `policy` (`None` for a chain with no entries). Keys never change role or site once
/// registered, so the signers are what they were when each entry was accepted. Used by the
/// writer and by the read side (the Station service).
pub(crate) fn replay_state(
    store: &dyn crate::storage::Storage,
    registry: &crate::registry::Registry,
    book: &crate::policy::PolicyBook,
    chain_id: &str,
) -> Result<Option<ChainState>, LedgerError> {
    replay_state_before(store, registry, book, chain_id, u64::MAX)
}

/// [`replay_state`] of the chain as it stood when the log held `tree_size` entries (only its
/// entries below that index).
pub(crate) fn replay_state_before(
    store: &dyn crate::storage::Storage,
    registry: &crate::registry::Registry,
    book: &crate::policy::PolicyBook,
    chain_id: &str,
    tree_size: u64,
) -> Result<Option<ChainState>, LedgerError> {
    replay_chain(store, registry, book, chain_id, tree_size, &mut |_, _| {})
}

/// The console's summary of a committed chain, replayed from its entries as the writer
/// derives it after each event (`None`: no entries, or not a custody chain).
pub(crate) fn replay_summary(
    store: &dyn crate::storage::Storage,
    registry: &crate::registry::Registry,
    book: &crate::policy::PolicyBook,
    chain_id: &str,
) -> Result<Option<crate::summary::ChainSummary>, LedgerError> {
    let mut summary: Option<crate::summary::ChainSummary> = None;
    let mut near_misses = crate::summary::NearMisses::default();
    replay_chain(
        store,
        registry,
        book,
        chain_id,
        u64::MAX,
        &mut |body, state| {
            near_misses = near_misses.after_event(body);
            summary = Some(crate::summary::ChainSummary::after(
                chain_id,
                summary.as_ref(),
                state,
                body.occurred_at_unix_nanos,
                near_misses,
            ));
        },
    )?;
    Ok(summary)
}

/// Replays a chain's entries below `tree_size` through the policy, calling `each` with every
/// event and the state after it; the state after the last.
fn replay_chain(
    store: &dyn crate::storage::Storage,
    registry: &crate::registry::Registry,
    book: &crate::policy::PolicyBook,
    chain_id: &str,
    tree_size: u64,
    each: &mut dyn FnMut(&EventBody, &ChainState),
) -> Result<Option<ChainState>, LedgerError> {
    let broken = |why: String| {
        LedgerError::Storage(format!(
            "cannot rebuild the custody state of chain {chain_id}: {why}"
        ))
    };
    let mut state: Option<ChainState> = None;
    for_each_stored(
        store,
        chain_id,
        tree_size,
        &broken,
        &mut |index, entry, body| {
            let ctx = Context {
                format: entry.format_version,
                accepted_at_unix_nanos: entry.accepted_at_unix_nanos,
            };
            let mut signers = Vec::with_capacity(entry.signatures.len());
            for sig in &entry.signatures {
                let rec = registry.get(&sig.key_id).ok_or_else(|| {
                    broken(format!(
                        "entry {index}: signer {} is not registered",
                        sig.key_id
                    ))
                })?;
                signers.push(signer_of(rec, sig));
            }
            let next = book
                .at(index)
                .policy
                .apply(state.as_ref(), &body, &signers, &ctx)
                .map_err(|v| {
                    broken(format!(
                        "entry {index} no longer passes the custody policy: {v}"
                    ))
                })?;
            each(&body, &next);
            state = Some(next);
            Ok(())
        },
    )?;
    Ok(state)
}

/// Calls `f` with each of a chain's stored entries below `tree_size`, decoded (index, entry,
/// body); a missing or undecodable entry is the error `broken` makes of the reason.
fn for_each_stored(
    store: &dyn crate::storage::Storage,
    chain_id: &str,
    tree_size: u64,
    broken: &dyn Fn(String) -> LedgerError,
    f: &mut dyn FnMut(u64, LogEntry, EventBody) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    for index in store.chain_indices(chain_id)? {
        if index >= tree_size {
            break;
        }
        let bytes = store
            .entry(index)?
            .ok_or_else(|| broken(format!("entry {index} is missing")))?;
        let entry = LogEntry::decode(bytes.as_slice())
            .map_err(|e| broken(format!("entry {index}: {e}")))?;
        let body = EventBody::decode(entry.body.as_slice())
            .map_err(|e| broken(format!("entry {index}: {e}")))?;
        f(index, entry, body)?;
    }
    Ok(())
}

/// What the custody policy knows of one verified signature.
fn signer_of(rec: &crate::registry::KeyRecord, sig: &crate::pb::Signature) -> Signer {
    Signer {
        key_id: rec.key_id.clone(),
        role: rec.role.clone(),
        site: rec.site.clone(),
        meaning: meaning_of(sig),
        signed_at_unix_nanos: sig.signed_at_unix_nanos,
        valid_from_unix_nanos: rec.valid_from,
    }
}

/// The near misses (`identity_check_failed`) among a chain's stored entries.
pub(super) fn near_misses_stored(
    store: &dyn crate::storage::Storage,
    chain_id: &str,
) -> Result<crate::summary::NearMisses, LedgerError> {
    let broken = |why: String| {
        LedgerError::Storage(format!(
            "cannot count the near misses of chain {chain_id}: {why}"
        ))
    };
    let mut n = crate::summary::NearMisses::default();
    for_each_stored(store, chain_id, u64::MAX, &broken, &mut |_, _, body| {
        n = n.after_event(&body);
        Ok(())
    })?;
    Ok(n)
}
