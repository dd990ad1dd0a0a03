//! The station's store-and-forward queue: signed events waiting for the server, in the order
//! they were signed, in a local sled directory (`--queue`, default `./celltrail-station`).
//! Also remembers each chain's head as last seen from the server, so events signed while
//! offline chain to it. Every write is flushed before the station reports it. An event leaves
//! the queue only after the server answered with a receipt; events the server refused stay,
//! marked, until someone deals with them.

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
}

impl Queue {
    pub fn open(dir: &Path) -> anyhow::Result<Queue> {
        let db = sled::open(dir).with_context(|| {
            format!(
                "cannot open the station queue {} (is another station running on it?)",
                dir.display()
            )
        })?;
        Ok(Queue {
            events: db.open_tree("events")?,
            heads: db.open_tree("heads")?,
            db,
        })
    }

    /// Appends a signed event at the end of the queue and flushes it to disk.
    pub fn push(&self, q: &Queued) -> anyhow::Result<u64> {
        let id = self.db.generate_id()?;
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
}
