//! The station's store-and-forward queue: signed events waiting for the server, in the order
//! they were signed, in a local sled directory (`--queue`, default `./celltrail-station`).
//! Also remembers each chain's head as last seen from the server, so events signed while
//! offline chain to it. Every write is flushed before the station reports it. An event leaves
//! the queue only after the server answered with a receipt; events the server refused stay,
//! marked, until someone deals with them: `discard` moves a refused event, with the reason,
//! the time and its exact signed bytes, into a separate `discarded` tree that is never emptied.

use crate::crypto::EventHash;
use crate::pb::{EventBody, SignedEvent};
use anyhow::Context;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Why a queued event is not waiting any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting to be sent.
    Waiting,
    /// The chain moved on the server meanwhile (stale prev_hash, taken seq): it needs a rebase
    /// and a new signature by the people who signed it.
    Conflict(String),
    /// The server refused it for another reason (custody policy, key): it will never be
    /// accepted as it is.
    Rejected(String),
}

/// One queued event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    pub chain_id: String,
    pub seq: u64,
    pub kind: String,
    /// Hex event hash.
    pub event_hash: String,
    /// Hex of the encoded `SignedEvent`, exactly as signed.
    pub event: String,
    pub queued_at: i64,
    pub status: Status,
}

impl Queued {
    pub fn new(ev: &SignedEvent, kind: &str) -> anyhow::Result<Queued> {
        let body = EventBody::decode(ev.body.as_slice()).context("queued event body")?;
        Ok(Queued {
            chain_id: body.chain_id,
            seq: body.seq,
            kind: kind.to_string(),
            event_hash: hex::encode(EventHash::of_body(&ev.body).0),
            event: hex::encode(ev.encode_to_vec()),
            queued_at: crate::time::now_nanos(),
            status: Status::Waiting,
        })
    }

    pub fn signed_event(&self) -> anyhow::Result<SignedEvent> {
        let bytes = hex::decode(&self.event).context("queued event is not hex")?;
        SignedEvent::decode(bytes.as_slice()).context("queued event does not decode")
    }

    pub fn hash_bytes(&self) -> Vec<u8> {
        hex::decode(&self.event_hash).unwrap_or_default()
    }
}

impl Status {
    /// The word an operator reads: WAITING, CONFLICT or REJECTED.
    pub fn word(&self) -> &'static str {
        match self {
            Status::Waiting => "WAITING",
            Status::Conflict(_) => "CONFLICT",
            Status::Rejected(_) => "REJECTED",
        }
    }

    /// The server's (or the station's) reason for a CONFLICT or REJECTED.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Waiting => None,
            Status::Conflict(r) | Status::Rejected(r) => Some(r),
        }
    }
}

/// A refused event an operator took out of the queue. Kept for good: the exact signed bytes
/// (in `queued.event`), the refusal (`queued.status`), why it was discarded, when and by whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Discarded {
    /// The event's queue id (`#ID` in `celltrail queue list`).
    pub id: u64,
    pub queued: Queued,
    pub reason: String,
    pub discarded_at: i64,
    /// The operating-system user who ran `celltrail queue discard`, if known.
    pub discarded_by: Option<String>,
}

/// Why `Queue::discard` did not discard.
#[derive(Debug, thiserror::Error)]
pub enum DiscardError {
    #[error("--reason is empty: say why the event is discarded (it is kept with the event)")]
    EmptyReason,
    #[error("queue entry #{id} was already discarded at {at}: see `celltrail queue list --discarded`", at = crate::time::rfc3339(*.discarded_at))]
    AlreadyDiscarded { id: u64, discarded_at: i64 },
    #[error("no queue entry #{0} in this queue: see `celltrail queue list` for the ids")]
    UnknownId(u64),
    #[error(
        "queue entry #{id} ({chain} seq {seq} {kind}) is WAITING: the server has not refused it, \
         so there is nothing to discard; it is sent by `celltrail scan --drain`"
    )]
    StillWaiting {
        id: u64,
        chain: String,
        seq: u64,
        kind: String,
    },
    #[error("station queue: {0:#}")]
    Store(#[from] anyhow::Error),
}

/// Where the next event of a chain goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub seq: u64,
    /// Hex prev_hash.
    pub prev_hash: String,
}

pub struct Queue {
    db: sled::Db,
    events: sled::Tree,
    heads: sled::Tree,
    discarded: sled::Tree,
    /// What this station last saw in the key registry (key id → printed name, role, site), so
    /// queued events show who signed them while offline.
    signers: sled::Tree,
    /// Bag DIN → chain id, for chains this station has seen (offline bag lookup).
    bags: sled::Tree,
    /// Chain id → the shipper its shipment in transit named (checked at receipt offline).
    shippers: sled::Tree,
    /// Serialises `push`, which picks the next id from what is stored.
    push_lock: std::sync::Mutex<()>,
}

/// Key (in sled's default tree) of the last id `push` gave out.
const LAST_ID: &[u8] = b"last_id";

/// The file sled keeps its data in; a directory without it is not a station queue.
const SLED_DATA_FILE: &str = "db";

impl Queue {
    pub fn open(dir: &Path) -> anyhow::Result<Queue> {
        let db = crate::store::open_sled(sled::Config::new().path(dir)).with_context(|| {
            format!(
                "cannot open the station queue {} (is another station running on it?)",
                dir.display()
            )
        })?;
        Ok(Queue {
            events: db.open_tree("events")?,
            heads: db.open_tree("heads")?,
            discarded: db.open_tree("discarded")?,
            signers: db.open_tree("signers")?,
            bags: db.open_tree("bags")?,
            shippers: db.open_tree("shippers")?,
            db,
            push_lock: std::sync::Mutex::new(()),
        })
    }

    /// Opens a queue that must already exist; never creates a directory (for the commands that
    /// only look at or tidy a station's queue).
    pub fn open_existing(dir: &Path) -> anyhow::Result<Queue> {
        if !dir.is_dir() {
            anyhow::bail!(
                "no station queue at {}: the directory does not exist (check --queue or \
                 CELLTRAIL_QUEUE; a station creates it the first time it runs)",
                dir.display()
            );
        }
        if !dir.join(SLED_DATA_FILE).is_file() {
            anyhow::bail!(
                "{} is not a station queue: it holds no sled database (check --queue or \
                 CELLTRAIL_QUEUE)",
                dir.display()
            );
        }
        Queue::open(dir)
    }

    /// Appends a signed event at the end of the queue and flushes it to disk.
    ///
    /// Ids count up from 1 and are never reused (not after a send or a discard either), so an
    /// operator types `queue discard 3`, not a number sled made up.
    pub fn push(&self, q: &Queued) -> anyhow::Result<u64> {
        let _one_at_a_time = self.push_lock.lock().unwrap_or_else(|e| e.into_inner());
        let last = |t: &sled::Tree| -> anyhow::Result<u64> {
            Ok(match t.last()? {
                Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().context("queue key")?),
                None => 0,
            })
        };
        let counted = match self.db.get(LAST_ID)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().context("queue last id")?),
            None => 0,
        };
        // Older queues numbered with sled's generate_id: continue above what they hold.
        let id = counted.max(last(&self.events)?).max(last(&self.discarded)?) + 1;
        self.db.insert(LAST_ID, &id.to_be_bytes())?;
        self.events
            .insert(id.to_be_bytes(), serde_json::to_vec(q)?)?;
        self.db.flush().context("flush the station queue")?;
        Ok(id)
    }

    /// All queued events in order, with their ids.
    pub fn all(&self) -> anyhow::Result<Vec<(u64, Queued)>> {
        let mut out = Vec::new();
        for kv in self.events.iter() {
            let (k, v) = kv?;
            let id = u64::from_be_bytes(k.as_ref().try_into().context("queue key")?);
            out.push((id, serde_json::from_slice(&v).context("queue record")?));
        }
        Ok(out)
    }

    /// (waiting, needing attention).
    pub fn counts(&self) -> anyhow::Result<(usize, usize)> {
        let all = self.all()?;
        let waiting = all
            .iter()
            .filter(|(_, q)| q.status == Status::Waiting)
            .count();
        Ok((waiting, all.len() - waiting))
    }

    pub fn remove(&self, id: u64) -> anyhow::Result<()> {
        self.events.remove(id.to_be_bytes())?;
        self.db.flush().context("flush the station queue")?;
        Ok(())
    }

    pub fn set_status(&self, id: u64, status: Status) -> anyhow::Result<()> {
        if let Some(v) = self.events.get(id.to_be_bytes())? {
            let mut q: Queued = serde_json::from_slice(&v)?;
            q.status = status;
            self.events
                .insert(id.to_be_bytes(), serde_json::to_vec(&q)?)?;
            self.db.flush().context("flush the station queue")?;
        }
        Ok(())
    }

    /// The queued event `id`, if it is still in the queue.
    pub fn get(&self, id: u64) -> anyhow::Result<Option<Queued>> {
        match self.events.get(id.to_be_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).context("queue record")?)),
            None => Ok(None),
        }
    }

    /// (waiting, conflicted, rejected).
    pub fn counts_by_status(&self) -> anyhow::Result<(usize, usize, usize)> {
        let mut n = (0, 0, 0);
        for (_, q) in self.all()? {
            match q.status {
                Status::Waiting => n.0 += 1,
                Status::Conflict(_) => n.1 += 1,
                Status::Rejected(_) => n.2 += 1,
            }
        }
        Ok(n)
    }

    /// Moves the refused event `id` out of the queue into the `discarded` tree, with `reason`,
    /// in one sled transaction, and flushes. Only a CONFLICT or REJECTED event can go: a
    /// WAITING one has not been refused by anyone.
    pub fn discard(
        &self,
        id: u64,
        reason: &str,
        by: Option<String>,
    ) -> Result<Discarded, DiscardError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(DiscardError::EmptyReason);
        }
        let key = id.to_be_bytes();
        let Some(queued) = self.get(id)? else {
            if let Some(d) = self.discarded_one(id)? {
                return Err(DiscardError::AlreadyDiscarded {
                    id,
                    discarded_at: d.discarded_at,
                });
            }
            return Err(DiscardError::UnknownId(id));
        };
        if queued.status == Status::Waiting {
            return Err(DiscardError::StillWaiting {
                id,
                chain: queued.chain_id,
                seq: queued.seq,
                kind: queued.kind,
            });
        }
        let record = Discarded {
            id,
            queued,
            reason: reason.to_string(),
            discarded_at: crate::time::now_nanos(),
            discarded_by: by,
        };
        let bytes = serde_json::to_vec(&record).context("encode the discarded record")?;
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        let moved: Result<bool, TransactionError<()>> = (&self.events, &self.discarded)
            .transaction(|(events, discarded)| {
                // Re-checked inside the transaction: the entry must still be the refused one.
                let Some(now) = events.get(key)? else {
                    return Ok(false);
                };
                let now: Queued = serde_json::from_slice(&now)
                    .map_err(|_| ConflictableTransactionError::Abort(()))?;
                if now.status == Status::Waiting {
                    return Ok(false);
                }
                events.remove(&key[..])?;
                discarded.insert(&key[..], bytes.as_slice())?;
                Ok(true)
            });
        match moved {
            Ok(true) => {}
            Ok(false) => return Err(DiscardError::UnknownId(id)),
            Err(TransactionError::Abort(())) => {
                return Err(anyhow::anyhow!("queue entry #{id} does not decode").into())
            }
            Err(TransactionError::Storage(e)) => {
                return Err(anyhow::Error::new(e).context("move to discarded").into())
            }
        }
        self.db.flush().context("flush the station queue")?;
        Ok(record)
    }

    /// Every discarded event, oldest queue id first.
    pub fn discarded(&self) -> anyhow::Result<Vec<Discarded>> {
        let mut out = Vec::new();
        for kv in self.discarded.iter() {
            let (_, v) = kv?;
            out.push(serde_json::from_slice(&v).context("discarded record")?);
        }
        Ok(out)
    }

    /// The discarded event `id`, if there is one.
    pub fn discarded_one(&self, id: u64) -> anyhow::Result<Option<Discarded>> {
        match self.discarded.get(id.to_be_bytes())? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).context("discarded record")?,
            )),
            None => Ok(None),
        }
    }

    /// The last queued event of `chain`, if any.
    pub fn last_for_chain(&self, chain: &str) -> anyhow::Result<Option<Queued>> {
        Ok(self
            .all()?
            .into_iter()
            .rev()
            .map(|(_, q)| q)
            .find(|q| q.chain_id == chain))
    }

    /// Remembers where the server said `chain` continues.
    pub fn set_head(&self, chain: &str, link: &Link) -> anyhow::Result<()> {
        self.heads.insert(chain, serde_json::to_vec(link)?)?;
        self.db.flush().context("flush the station queue")?;
        Ok(())
    }

    pub fn head(&self, chain: &str) -> anyhow::Result<Option<Link>> {
        match self.heads.get(chain)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Remembers the key registry's record of each signer (replacing what was known).
    pub fn remember_signers(
        &self,
        infos: &std::collections::HashMap<String, crate::manifest::SignerInfo>,
    ) -> anyhow::Result<()> {
        for (k, v) in infos {
            self.signers.insert(k.as_bytes(), serde_json::to_vec(v)?)?;
        }
        self.db.flush().context("flush the station queue")?;
        Ok(())
    }

    /// The signers this station has seen in the key registry.
    pub fn signer_infos(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<String, crate::manifest::SignerInfo>> {
        let mut out = std::collections::HashMap::new();
        for kv in self.signers.iter() {
            let (k, v) = kv?;
            if let Ok(info) = serde_json::from_slice(&v) {
                out.insert(String::from_utf8_lossy(&k).into_owned(), info);
            }
        }
        Ok(out)
    }

    /// The station directory's database (for the sign-in counters, `signin`).
    pub(super) fn db(&self) -> sled::Db {
        self.db.clone()
    }

    /// The station's sign-in log (lockouts), oldest first.
    pub fn signin_log(&self) -> anyhow::Result<Vec<String>> {
        super::signin::Counters::new(self.db())?.logged()
    }

    /// Remembers that bag `din` belongs to `chain`.
    pub fn remember_bag(&self, din: &str, chain: &str) -> anyhow::Result<()> {
        if self.bags.get(din)?.as_deref() != Some(chain.as_bytes()) {
            self.bags.insert(din, chain.as_bytes())?;
            self.db.flush().context("flush the station queue")?;
        }
        Ok(())
    }

    /// Remembers the shipper `chain`'s shipment named (`None`: no shipment in transit).
    pub fn remember_shipper(&self, chain: &str, shipper: Option<&str>) -> anyhow::Result<()> {
        let now = self.shippers.get(chain)?;
        if now.as_deref() != shipper.map(str::as_bytes) {
            match shipper {
                Some(s) => self.shippers.insert(chain, s.as_bytes())?,
                None => self.shippers.remove(chain)?,
            };
            self.db.flush().context("flush the station queue")?;
        }
        Ok(())
    }

    /// The shipper `chain`'s shipment named, as last seen by this station.
    pub fn shipper_of(&self, chain: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .shippers
            .get(chain)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The chain bag `din` belongs to, as last seen by this station.
    pub fn bag_chain(&self, din: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .bags
            .get(din)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(chain: &str, seq: u64) -> SignedEvent {
        SignedEvent {
            body: EventBody {
                chain_id: chain.into(),
                seq,
                ..Default::default()
            }
            .encode_to_vec(),
            signatures: vec![],
        }
    }

    #[test]
    fn queue_keeps_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = Queue::open(dir.path()).unwrap();
            for seq in 1..=3 {
                q.push(&Queued::new(&ev("A", seq), "collected").unwrap())
                    .unwrap();
            }
            q.push(&Queued::new(&ev("B", 7), "stored").unwrap())
                .unwrap();
            q.set_head(
                "A",
                &Link {
                    seq: 1,
                    prev_hash: "00".into(),
                },
            )
            .unwrap();
        }
        let q = Queue::open(dir.path()).unwrap();
        let all = q.all().unwrap();
        let seqs: Vec<(String, u64)> = all
            .iter()
            .map(|(_, x)| (x.chain_id.clone(), x.seq))
            .collect();
        assert_eq!(
            seqs,
            [
                ("A".into(), 1),
                ("A".into(), 2),
                ("A".into(), 3),
                ("B".into(), 7)
            ]
        );
        assert_eq!(q.last_for_chain("A").unwrap().unwrap().seq, 3);
        assert_eq!(q.head("A").unwrap().unwrap().seq, 1);
        q.set_status(all[0].0, Status::Conflict("moved".into()))
            .unwrap();
        assert_eq!(q.counts().unwrap(), (3, 1));
        q.remove(all[1].0).unwrap();
        assert_eq!(q.all().unwrap().len(), 3);
        assert_eq!(
            q.all().unwrap()[0].1.signed_event().unwrap(),
            ev("A", 1),
            "the exact signed bytes come back"
        );
    }

    #[test]
    fn discard_moves_a_refused_event_with_its_reason_and_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (conflicted, rejected, waiting) = {
            let q = Queue::open(dir.path()).unwrap();
            let a = q
                .push(&Queued::new(&ev("A", 1), "collected").unwrap())
                .unwrap();
            let b = q
                .push(&Queued::new(&ev("B", 2), "stored").unwrap())
                .unwrap();
            let c = q
                .push(&Queued::new(&ev("C", 3), "received").unwrap())
                .unwrap();
            q.set_status(a, Status::Conflict("stale prev_hash: head is seq 1".into()))
                .unwrap();
            q.set_status(b, Status::Rejected("policy: not the custodian".into()))
                .unwrap();
            assert_eq!(q.counts_by_status().unwrap(), (1, 1, 1));
            let d = q
                .discard(
                    a,
                    "  recorded again on the current chain  ",
                    Some("pharm".into()),
                )
                .unwrap();
            assert_eq!(d.reason, "recorded again on the current chain", "trimmed");
            q.discard(b, "QA: event not needed", None).unwrap();
            (a, b, c)
        };
        // Both survive a reopen, in the discarded tree only.
        let q = Queue::open(dir.path()).unwrap();
        let left: Vec<u64> = q.all().unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(left, [waiting]);
        assert_eq!(q.counts_by_status().unwrap(), (1, 0, 0));
        let gone = q.discarded().unwrap();
        assert_eq!(
            gone.iter().map(|d| d.id).collect::<Vec<_>>(),
            [conflicted, rejected]
        );
        assert_eq!(gone[0].queued.signed_event().unwrap(), ev("A", 1));
        assert_eq!(
            gone[0].queued.status,
            Status::Conflict("stale prev_hash: head is seq 1".into()),
            "the server's refusal is kept"
        );
        assert_eq!(gone[0].discarded_by.as_deref(), Some("pharm"));
        assert!(gone[0].discarded_at > 0);
        assert_eq!(gone[1].reason, "QA: event not needed");
        assert_eq!(gone[1].queued.status.word(), "REJECTED");
        assert_eq!(q.discarded_one(rejected).unwrap().unwrap().queued.seq, 2);
        assert!(q.discarded_one(waiting).unwrap().is_none());
    }

    #[test]
    fn discard_refuses_waiting_unknown_twice_and_without_reason() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        let w = q
            .push(&Queued::new(&ev("A", 1), "collected").unwrap())
            .unwrap();
        let c = q
            .push(&Queued::new(&ev("B", 1), "collected").unwrap())
            .unwrap();
        q.set_status(c, Status::Conflict("moved".into())).unwrap();

        let e = q.discard(w, "why not", None).unwrap_err();
        assert!(
            matches!(e, DiscardError::StillWaiting { id, .. } if id == w),
            "{e}"
        );
        assert!(e.to_string().contains("is WAITING"), "{e}");
        let e = q.discard(c, " \t ", None).unwrap_err();
        assert!(matches!(e, DiscardError::EmptyReason), "{e}");
        let e = q.discard(9_999_999, "x", None).unwrap_err();
        assert!(matches!(e, DiscardError::UnknownId(9_999_999)), "{e}");
        assert!(e.to_string().starts_with("no queue entry #9999999"), "{e}");

        q.discard(c, "done", None).unwrap();
        let e = q.discard(c, "again", None).unwrap_err();
        assert!(
            matches!(e, DiscardError::AlreadyDiscarded { id, .. } if id == c),
            "{e}"
        );
        assert_eq!(q.discarded().unwrap().len(), 1, "discarded once");
        assert_eq!(
            q.discarded().unwrap()[0].reason,
            "done",
            "first reason kept"
        );
        assert_eq!(q.all().unwrap().len(), 1, "the waiting event stays");
    }

    #[test]
    fn open_existing_never_creates_a_queue() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-queue");
        let e = Queue::open_existing(&missing).err().expect("missing dir");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(
            !missing.exists(),
            "open_existing must not create the directory"
        );

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = Queue::open_existing(&empty).err().expect("not a queue");
        assert!(e.to_string().contains("is not a station queue"), "{e}");
        assert_eq!(
            std::fs::read_dir(&empty).unwrap().count(),
            0,
            "nothing written"
        );

        let real = dir.path().join("q");
        Queue::open(&real)
            .unwrap()
            .push(&Queued::new(&ev("A", 0), "enrolled").unwrap())
            .unwrap();
        assert_eq!(Queue::open_existing(&real).unwrap().all().unwrap().len(), 1);
    }

    #[test]
    fn ids_count_up_from_one_across_reopens_and_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<u64> = (0..3)
            .map(|i| {
                let q = Queue::open(dir.path()).unwrap();
                q.push(&Queued::new(&ev("A", i), "enrolled").unwrap())
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, [1, 2, 3]);
        let q = Queue::open(dir.path()).unwrap();
        for id in ids {
            q.remove(id).unwrap(); // sent
        }
        assert_eq!(
            q.push(&Queued::new(&ev("A", 3), "collected").unwrap())
                .unwrap(),
            4
        );
    }
}
