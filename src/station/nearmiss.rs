//! Near misses: when an identity check at the station fails (the bedside MISMATCH, a shipper
//! other than the one the shipment named scanned at a receipt), the station records a signed
//! `identity_check_failed` event on the chain for QA, signed PERFORMED by the person who
//! scanned, with what was scanned. It changes no custody state; offline it is queued like any
//! event. What the person must do (do not infuse, do not accept) was already shown.

use super::forward::Sent;
use super::session::Station;
use crate::client::{self, Draft, Fields};
use crate::note::NoteSigner;
use crate::pb::SignatureMeaning;
use std::collections::BTreeMap;

const KIND: &str = "identity_check_failed";

impl Station {
    /// Records the near miss on `chain` with the `fields` of an `identity_check_failed`
    /// detail; says on one line what became of it (never a big word: the MISMATCH stays the
    /// word on the screen).
    pub(super) async fn record_near_miss(
        &mut self,
        me: Option<&NoteSigner>,
        chain: &str,
        fields: BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        println!("  Recording this near miss for QA (it changes nothing on the chain).");
        // What the signature will be over, before anyone is asked to sign (as the SUMMARY
        // before an event's signature; another title, so nobody takes it for the check).
        println!("------------------- NEAR MISS RECORD -------------------");
        println!("  EVENT      {}", KIND.to_ascii_uppercase());
        println!("  CHAIN      {chain}");
        println!(
            "  SITE       {}",
            self.a.site.as_deref().unwrap_or_default()
        );
        println!("  WHEN       the time of signing");
        let width = fields.keys().map(|k| k.len()).max().unwrap_or(0).max(10);
        for (k, v) in &fields {
            println!("  {k:<width$} {v}");
        }
        println!(
            "  SIGNER     {} {}",
            me.map_or("the person who scanned", |k| k.name.as_str()),
            crate::manifest::meaning_text(SignatureMeaning::Performed as i32)
        );
        println!("---------------------------------------------------------");
        let detail = client::detail_from_fields(KIND, Fields::from_map(fields))
            .map_err(anyhow::Error::msg)?;
        let opened;
        let signer = match me {
            Some(me) => me,
            None => {
                let picked = match self.pick_first()? {
                    Ok(p) => p,
                    Err(_) => {
                        self.not_recorded("nobody signed it");
                        return Ok(());
                    }
                };
                match self.unlock_all(&[picked])? {
                    Ok(mut v) => {
                        opened = v.remove(0);
                        &opened
                    }
                    Err(_) => {
                        self.not_recorded("nobody signed it");
                        return Ok(());
                    }
                }
            }
        };
        let link = match self.link(chain, KIND).await? {
            Ok(l) => l,
            Err(why) => {
                self.not_recorded(&why);
                return Ok(());
            }
        };
        let now = crate::time::now_nanos();
        let ev = client::sign_draft(
            Draft {
                chain_id: chain.to_string(),
                seq: link.seq,
                prev_hash: hex::decode(&link.prev_hash)?,
                occurred_at: now,
                site: self.a.site.clone().unwrap_or_default(),
                comment: String::new(),
                detail,
            },
            &[(signer, SignatureMeaning::Performed)],
            now,
        );
        match self.send(ev, KIND).await? {
            Sent::Accepted(r) => println!(
                "  NEAR MISS RECORDED for QA: chain {chain} seq {} (log index {}), signed by {}",
                r.seq, r.index, signer.name
            ),
            Sent::Queued(n) => println!(
                "  NEAR MISS QUEUED for QA: chain {chain} seq {}, signed by {}, kept on this \
                 station until the server is back ({n} waiting)",
                link.seq, signer.name
            ),
            Sent::Refused(s) => self.not_recorded(&format!(
                "the server refused it ({:?}: {})",
                s.code(),
                s.message()
            )),
        }
        Ok(())
    }

    fn not_recorded(&mut self, why: &str) {
        // A CANCEL or LOGOUT at the signer's prompt ends only the near-miss record.
        if self.ui.take_logout() {
            self.signed_in = None;
        }
        self.ui.take_cancelled();
        println!("  NEAR MISS NOT RECORDED: {why}; tell QA what happened");
    }
}
