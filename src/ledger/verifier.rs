//! First stage of the append pipeline: takes a group off the queue, decodes each event, runs
//! the stateless checks (`rules::check_shape`, size) and verifies the signatures of keys it
//! already knows, strictly and in parallel, then hands the group to the writer.

use super::{Job, LedgerError, Msg};
use crate::crypto::{EventHash, SigError};
use crate::pb::{EventBody, SignedEvent};
use crate::registry::Registry;
use crate::rules::{check_shape, RuleError, MAX_ENTRY_BYTES};
use prost::Message;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// An event that passed every check, waiting for its group to commit.
pub(super) struct Accepted {
    pub(super) index: u64,
    pub(super) hash: EventHash,
    pub(super) chain_id: String,
    pub(super) seq: u64,
    /// Reasons of the holds this event opened.
    pub(super) holds_opened: Vec<String>,
}

/// An event that passed the stateless checks, with its signature verdicts (None = key not
/// known before this group; verified in order).
pub(super) struct Ready {
    pub(super) hash: EventHash,
    pub(super) body: EventBody,
    pub(super) sig_ok: Vec<Option<bool>>,
}

pub(super) enum Prep {
    Done(Outcome),
    Ready(Box<Ready>),
}

pub(super) enum Outcome {
    Accepted(Accepted),
    Duplicate(u64),
    Rejected(LedgerError),
}

/// First stage: takes a group off the queue, does the stateless checks and verifies the
/// signatures of keys it already knows (keys never change once registered, so a registry that
/// is a group behind gives the same verdicts; validity and revocation are the writer's).
pub(super) struct Verifier {
    pub(super) registry: Arc<RwLock<Registry>>,
    pub(super) max_group: usize,
}

/// What the verifier hands the writer, in queue order.
pub(super) enum Stage {
    Group(Vec<Job>, Vec<Prep>, i64),
    /// ops: backup. Run on the writer thread between two groups.
    AtBoundary(Box<dyn FnOnce() + Send>),
}

impl Verifier {
    pub(super) fn run(
        &mut self,
        mut rx: mpsc::Receiver<Msg>,
        out: std::sync::mpsc::SyncSender<Stage>,
    ) {
        let mut group = Vec::with_capacity(self.max_group);
        let mut stopping = false;
        let mut at_boundary = None; // ops: backup
        loop {
            match rx.blocking_recv() {
                Some(Msg::Append(job)) => group.push(job),
                Some(Msg::Stop) => stopping = true,
                Some(Msg::AtBoundary(f)) => at_boundary = Some(f), // ops: backup
                None => stopping = true,
            }
            while group.len() < self.max_group && !stopping && at_boundary.is_none() {
                match rx.try_recv() {
                    Ok(Msg::Append(job)) => group.push(job),
                    Ok(Msg::Stop) => stopping = true,
                    Ok(Msg::AtBoundary(f)) => at_boundary = Some(f), // ops: backup
                    Err(_) => break,
                }
            }
            if stopping {
                // Refuse new appends; answer everything already queued, then exit.
                rx.close();
                while let Ok(msg) = rx.try_recv() {
                    if let Msg::Append(job) = msg {
                        group.push(job);
                    }
                }
                while !group.is_empty() {
                    let n = group.len().min(self.max_group);
                    self.pass_on(group.drain(..n).collect(), &out);
                }
                return; // dropping `out` stops the writer once it has committed everything
            }
            self.pass_on(std::mem::take(&mut group), &out);
            crate::metrics::queue_depth(rx.len()); // ops: metrics
            if let Some(f) = at_boundary.take() {
                // ops: backup. Runs on the writer after every group before it is committed.
                let _ = out.send(Stage::AtBoundary(f));
            }
        }
    }

    fn pass_on(&self, group: Vec<Job>, out: &std::sync::mpsc::SyncSender<Stage>) {
        let now = crate::time::now_nanos();
        let verify_started = std::time::Instant::now(); // ops: metrics
        let prepared = self.prepare_group(&group, now);
        crate::metrics::group_verified(verify_started.elapsed()); // ops: metrics
        let _ = out.send(Stage::Group(group, prepared, now));
    }

    /// Stateless checks of every event in the group, then all signatures whose key is already
    /// known are verified at once, in parallel (strict).
    fn prepare_group(&self, group: &[Job], now: i64) -> Vec<Prep> {
        let mut preps: Vec<Prep> = group.iter().map(|j| self.prepare(&j.event, now)).collect();
        let registry = self.registry.read().expect("registry lock");
        let mut items = Vec::new();
        let mut slots = Vec::new();
        for (pi, (prep, job)) in preps.iter().zip(group).enumerate() {
            let Prep::Ready(p) = prep else { continue };
            for (si, sig) in job.event.signatures.iter().enumerate() {
                let key = if crate::loglink::admin_signed(&p.body.chain_id) {
                    registry.admin(&sig.key_id)
                } else {
                    registry.get(&sig.key_id).map(|r| &r.public_key)
                };
                let (Some(key), Some(msg)) = (
                    key,
                    crate::crypto::signature_message(
                        &p.hash,
                        sig.meaning,
                        sig.signed_at_unix_nanos,
                        &sig.key_id,
                    ),
                ) else {
                    continue;
                };
                let sig: [u8; 64] = sig
                    .signature
                    .as_slice()
                    .try_into()
                    .expect("length checked in prepare");
                items.push(crate::crypto::SigItem { key, msg, sig });
                slots.push((pi, si));
            }
        }
        let verdicts = crate::crypto::verify_strict_many(&items);
        drop(items);
        drop(registry);
        for ((pi, si), ok) in slots.into_iter().zip(verdicts) {
            if let Prep::Ready(p) = &mut preps[pi] {
                p.sig_ok[si] = Some(ok);
            }
        }
        preps
    }

    fn prepare(&self, ev: &SignedEvent, now: i64) -> Prep {
        let reject = |e| Prep::Done(Outcome::Rejected(e));
        if ev.body.len() > MAX_ENTRY_BYTES {
            return reject(
                RuleError::TooLarge {
                    size: ev.body.len(),
                }
                .into(),
            );
        }
        let hash = EventHash::of_body(&ev.body);
        let body = match EventBody::decode(ev.body.as_slice()) {
            Ok(b) => b,
            Err(e) => {
                return reject(super::malformed(format!(
                    "body bytes are not a valid celltrail.v1.EventBody: {e}"
                )))
            }
        };
        if let Err(e) = check_shape(&body, ev, now) {
            return reject(e.into());
        }
        if let Err(e) = crate::rules::check_known_fields(&ev.body) {
            return reject(e.into());
        }
        if let Some(sig) = ev.signatures.iter().find(|s| s.signature.len() != 64) {
            return reject(
                SigError::Length {
                    key_id: sig.key_id.clone(),
                    len: sig.signature.len(),
                }
                .into(),
            );
        }
        Prep::Ready(Box::new(Ready {
            hash,
            body,
            sig_ok: vec![None; ev.signatures.len()],
        }))
    }
}
