//! First stage of the append pipeline: takes a group off the queue, decodes each event, runs
//! the stateless checks (`rules::check_shape`, size) and verifies the signatures of keys it
//! already knows, strictly and in parallel, then hands the group to the writer.

use super::{Job, LedgerError, Msg};
use crate::admission::{FairQueue, Peer};
use crate::crypto::{EventHash, SigError};
use crate::pb::SignatureMeaning;
use crate::pb::{EventBody, SignedEvent};
use crate::policy::EventKind;
use crate::registry::Registry;
use crate::rules::{check_shape, RuleError, MAX_ENTRY_BYTES};
use prost::Message;
use std::sync::{Arc, RwLock};

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
    pub(super) shared_group_signatures: usize,
    /// The policy tables; the current one caps signatures and says who may sign what.
    pub(super) book: Arc<RwLock<crate::policy::PolicyBook>>,
}

/// A group of checked events: its jobs, their checks, and the latest time they were checked
/// at. The verifier gathers one over several takes; the writer merges those waiting for it.
#[derive(Default)]
pub(super) struct Prepared {
    pub(super) jobs: Vec<Job>,
    pub(super) preps: Vec<Prep>,
    pub(super) now: i64,
}

impl Prepared {
    pub(super) fn extend(&mut self, more: Prepared) {
        self.jobs.extend(more.jobs);
        self.preps.extend(more.preps);
        self.now = self.now.max(more.now);
    }
}

/// What the verifier hands the writer, in queue order.
pub(super) enum Stage {
    Group(Prepared),
    /// ops: backup. Run on the writer thread between two groups.
    AtBoundary(Box<dyn FnOnce() + Send>),
}

impl Verifier {
    /// The table in force for the next entry (the writer replaces the book after a group
    /// that activated one).
    fn current_policy(&self) -> Arc<crate::policy::Policy> {
        self.book
            .read()
            .expect("policy book lock")
            .current()
            .policy
            .clone()
    }

    pub(super) fn run(
        &mut self,
        queue: &FairQueue<Job, Msg>,
        out: std::sync::mpsc::SyncSender<Stage>,
    ) {
        loop {
            // Streamed events accumulate into one group over several takes while more are
            // queued and no caller waits alone for its answer: the group commits (and pays its
            // fsync) once for up to `max_group` events, as if one client had sent them all. Each
            // take stays within the shared budget, so a unary append that arrives meanwhile is
            // taken after at most one more take, and the group before it is passed on first.
            let mut group = Prepared::default();
            let (control, closed) = loop {
                let taken = queue.take(
                    self.max_group - group.jobs.len(),
                    self.shared_group_signatures,
                    |job| job.event.signatures.len(),
                );
                if !taken.items.is_empty() {
                    group.extend(self.prepare_take(taken.items));
                }
                let pass_on = taken.urgent
                    || taken.control.is_some()
                    || taken.closed
                    || group.jobs.len() >= self.max_group
                    || queue.is_empty()
                    || queue.urgent_waiting();
                if pass_on {
                    break (taken.control, taken.closed);
                }
            };
            if !group.jobs.is_empty() {
                let _ = out.send(Stage::Group(group));
            }
            crate::metrics::queue_depth(queue.len()); // ops: metrics
            match control {
                Some(Msg::Stop) => {
                    // Refuse new appends; answer everything already queued, then exit.
                    queue.close();
                    loop {
                        let rest = queue.take(self.max_group, usize::MAX, |_| 0);
                        if !rest.items.is_empty() {
                            let _ = out.send(Stage::Group(self.prepare_take(rest.items)));
                        }
                        if let Some(Msg::AtBoundary(f)) = rest.control {
                            let _ = out.send(Stage::AtBoundary(f));
                        }
                        if rest.closed {
                            return; // dropping `out` stops the writer once it has committed all
                        }
                    }
                }
                // ops: backup. Runs on the writer after every group before it is committed.
                Some(Msg::AtBoundary(f)) => {
                    let _ = out.send(Stage::AtBoundary(f));
                }
                None if closed => return,
                None => {}
            }
        }
    }

    /// Checks one take off the queue (see [`Verifier::prepare_group`]).
    fn prepare_take(&self, items: Vec<(Arc<Peer>, Job)>) -> Prepared {
        let now = crate::time::now_nanos();
        let verify_started = std::time::Instant::now(); // ops: metrics
        let (peers, jobs): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        let preps = self.prepare_group(&peers, &jobs, now);
        crate::metrics::group_verified(verify_started.elapsed()); // ops: metrics
        Prepared { jobs, preps, now }
    }

    /// Stateless checks of every event in the group, then the cheap signer checks, then all
    /// signatures that could count are verified at once, in parallel (strict). A peer cut off
    /// gets its events refused unverified; each event with a failed signature is a strike
    /// against its peer.
    fn prepare_group(&self, peers: &[Arc<Peer>], group: &[Job], now: i64) -> Vec<Prep> {
        let mut preps: Vec<Prep> = group
            .iter()
            .zip(peers)
            .map(|(j, peer)| {
                if peer.is_cut_off() {
                    Prep::Done(Outcome::Rejected(LedgerError::CutOff))
                } else {
                    self.prepare(&j.event, now)
                }
            })
            .collect();
        let registry = self.registry.read().expect("registry lock");
        let mut items = Vec::new();
        let mut slots = Vec::new();
        for (pi, (prep, job)) in preps.iter().zip(group).enumerate() {
            let Prep::Ready(p) = prep else { continue };
            let Some(keys) = self.keys_worth_verifying(&registry, &p.body, &job.event, now) else {
                // Some signer cannot count: the writer refuses the event (or answers it as a
                // duplicate) without a verification.
                continue;
            };
            for (si, (sig, key)) in job.event.signatures.iter().zip(keys).enumerate() {
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
        let mut failed = vec![false; preps.len()];
        for ((pi, si), ok) in slots.into_iter().zip(verdicts) {
            if let Prep::Ready(p) = &mut preps[pi] {
                p.sig_ok[si] = Some(ok);
            }
            failed[pi] |= !ok;
        }
        for (peer, failed) in peers.iter().zip(failed) {
            if failed {
                peer.strike(1);
            }
        }
        preps
    }

    /// The keys to verify an event's signatures with (`None` in a slot: not known yet, the
    /// writer decides in order), or `None` when some signer already cannot count — not an
    /// admin on the keys chain; revoked, outside its validity, or in a role the policy never
    /// lets sign this kind of event with that meaning. Keys never change once registered and
    /// revocations are final, so a registry a group behind only errs towards verifying.
    fn keys_worth_verifying<'r>(
        &self,
        registry: &'r Registry,
        body: &EventBody,
        ev: &SignedEvent,
        now: i64,
    ) -> Option<Vec<Option<&'r ed25519_dalek::VerifyingKey>>> {
        let mut keys = Vec::with_capacity(ev.signatures.len());
        if crate::loglink::admin_signed(&body.chain_id) {
            for sig in &ev.signatures {
                keys.push(Some(registry.admin(&sig.key_id)?));
            }
            return Some(keys);
        }
        let kind = body.detail.as_ref().and_then(EventKind::of)?;
        for sig in &ev.signatures {
            match registry.get(&sig.key_id) {
                None => keys.push(None),
                Some(rec) => {
                    rec.may_sign(sig.signed_at_unix_nanos, now, crate::policy::CURRENT_FORMAT)
                        .ok()?;
                    if !self
                        .current_policy()
                        .may_sign(kind, &rec.role, meaning_of(sig))
                    {
                        return None;
                    }
                    keys.push(Some(&rec.public_key));
                }
            }
        }
        Some(keys)
    }

    fn prepare(&self, ev: &SignedEvent, now: i64) -> Prep {
        let reject = |e| Prep::Done(Outcome::Rejected(e));
        let policy = self.current_policy();
        if ev.signatures.len() > policy.signature_cap() {
            return reject(super::malformed(format!(
                "the event carries {} signatures; no transition of policy {:?} takes more than {} \
                 (at most {} are accepted); send only the signatures the transition asks for",
                ev.signatures.len(),
                policy.name(),
                policy.max_transition_signatures(),
                policy.signature_cap()
            )));
        }
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

/// A signature's meaning (Unspecified when the number is not a known meaning).
pub(super) fn meaning_of(sig: &crate::pb::Signature) -> SignatureMeaning {
    SignatureMeaning::try_from(sig.meaning).unwrap_or(SignatureMeaning::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, PolicyBook};

    /// Queues an event (one signature: each costs 1 against the bite) marked `tag`; urgent as a
    /// unary append, otherwise as a stream's.
    fn queue(q: &FairQueue<Job, Msg>, peer: &Arc<Peer>, tag: &str, urgent: bool) {
        let (reply, _) = tokio::sync::oneshot::channel();
        let job = Job {
            event: SignedEvent {
                body: tag.as_bytes().to_vec(),
                signatures: vec![Default::default()],
            },
            reply,
        };
        if urgent {
            q.try_push(peer, job).ok().expect("room");
        } else {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(q.push_wait(peer, job)).ok().expect("room");
        }
    }

    /// Runs the verifier over what is queued (bites of `bite` signatures) until a stop queued
    /// behind it all; the groups it handed the writer, as the tags of their events.
    fn groups_of(q: &FairQueue<Job, Msg>, bite: usize) -> Vec<Vec<String>> {
        let mut v = Verifier {
            registry: Arc::new(RwLock::new(Registry::new(&[]))),
            max_group: 1024,
            shared_group_signatures: bite,
            book: Arc::new(RwLock::new(PolicyBook::new(
                Policy::default_autologous_car_t(),
            ))),
        };
        let _ = q.push_control(Msg::Stop);
        let (tx, rx) = std::sync::mpsc::sync_channel(10_000);
        v.run(q, tx);
        rx.into_iter()
            .filter_map(|s| match s {
                Stage::Group(g) => Some(
                    g.jobs
                        .iter()
                        .map(|j| String::from_utf8_lossy(&j.event.body).into_owned())
                        .collect(),
                ),
                Stage::AtBoundary(_) => None,
            })
            .collect()
    }

    fn two_streams(q: &FairQueue<Job, Msg>) {
        let (a, b) = (Peer::local(), Peer::local());
        for _ in 0..300 {
            queue(q, &a, "a", false);
            queue(q, &b, "b", false);
        }
    }

    /// Two streams' queued events, taken in bites of 2 signatures (one event per stream), go on
    /// to the writer as one group: one commit, not 300.
    #[test]
    fn streamed_events_gather_into_one_group_over_several_takes() {
        let q = FairQueue::new(10_000);
        two_streams(&q);
        let sizes: Vec<usize> = groups_of(&q, 2).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![600]);
    }

    /// A unary append waiting behind the same streams ends the group being gathered after one
    /// bite, and its own group goes on after its bite: it never waits for 600 events.
    #[test]
    fn a_waiting_unary_append_ends_the_group_being_gathered() {
        let q = FairQueue::new(10_000);
        two_streams(&q);
        queue(&q, &Peer::local(), "station", true);
        let groups = groups_of(&q, 2);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 601);
        let at = groups
            .iter()
            .position(|g| g.iter().any(|t| t == "station"))
            .expect("the station's event was handed on");
        assert!(
            at <= 1 && groups[at].len() <= 3,
            "the station's event went on in group {at} of {} events: {:?}",
            groups[at].len(),
            groups.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}
