//! Sending to the server: submitting one event (or queuing it), appending at the writer among
//! `--server`, and replaying the queue in order.

use super::net::{is_conflict, is_offline, try_connect_one};
use super::queue::{Link, Queued, Status};
use super::session::Station;
use super::ui::big;
use super::{queue_cmd, EXIT_ACCEPTED, EXIT_QUEUED, EXIT_REJECTED};
use crate::client::Client;
use std::collections::BTreeMap;
use std::time::Duration;

/// Appends at the connected server; where that one is down or a standby and `--server` lists
/// others, at the writer among them (and stays connected to it).
async fn append_failover(
    c: &mut Client,
    server: &crate::client::ServerArg,
    ev: crate::pb::SignedEvent,
) -> Result<tonic::Response<crate::pb::Receipt>, tonic::Status> {
    match c.append(ev.clone()).await {
        Err(s)
            if crate::failover::try_next(&s)
                && crate::failover::parse_list(&server.server).len() > 1 =>
        {
            let servers = server
                .servers()
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            let r = servers.append(&ev).await?;
            if let Some(w) = crate::failover::remembered_writer() {
                if let Some(writer) = try_connect_one(&w, &server.tls()).await {
                    *c = writer;
                }
            }
            Ok(tonic::Response::new(r))
        }
        other => other,
    }
}

/// Test hooks of the replay, compiled into debug builds only (the crash tests drive the real
/// debug binary); a release build has none, so production never pauses or aborts here.
#[derive(Default)]
struct ReplayHooks {
    /// `CELLTRAIL_STATION_REPLAY_PAUSE_MS`: pause between two sends (a test kills the station
    /// mid-replay).
    pause_ms: u64,
    /// `CELLTRAIL_STATION_CRASH_AFTER_SEND`: abort right after the n-th receipt, before that
    /// event leaves the queue.
    crash_after: Option<u64>,
}

impl ReplayHooks {
    #[cfg(debug_assertions)]
    fn from_env() -> ReplayHooks {
        let env = |name: &str| -> Option<u64> { std::env::var(name).ok()?.trim().parse().ok() };
        ReplayHooks {
            pause_ms: env("CELLTRAIL_STATION_REPLAY_PAUSE_MS").unwrap_or(0),
            crash_after: env("CELLTRAIL_STATION_CRASH_AFTER_SEND"),
        }
    }

    #[cfg(not(debug_assertions))]
    fn from_env() -> ReplayHooks {
        ReplayHooks::default()
    }

    fn after_receipt(&self, sent: u64) {
        if self.crash_after == Some(sent) {
            eprintln!("celltrail scan: test hook: abort after send {sent}");
            std::process::abort();
        }
    }

    async fn between_sends(&self) {
        if self.pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.pause_ms)).await;
        }
    }
}

/// What became of an event handed to [`Station::send`].
pub(super) enum Sent {
    Accepted(crate::pb::Receipt),
    /// Kept on the station (the count of waiting events, this one included).
    Queued(usize),
    Refused(tonic::Status),
}

impl Station {
    /// Sends every waiting event in order. Stops at the first sign that the server is away;
    /// events the server refuses stay in the queue, marked, with the reason shown.
    pub(super) async fn drain(&mut self) -> anyhow::Result<()> {
        let hooks = ReplayHooks::from_env();
        let mut blocked: BTreeMap<String, u64> = BTreeMap::new();
        let all = self.queue.all()?;
        if all.is_empty() {
            return Ok(());
        }
        for (id, q) in all {
            if q.status != Status::Waiting {
                blocked.entry(q.chain_id.clone()).or_insert(id);
                continue;
            }
            if let Some(first) = blocked.get(&q.chain_id) {
                let why = format!(
                    "follows queued event #{first} of chain {} that the server did not accept",
                    q.chain_id
                );
                println!("  HELD  {} seq {} {}: {why}", q.chain_id, q.seq, q.kind);
                self.queue.set_status(id, Status::Conflict(why))?;
                continue;
            }
            let Some(c) = self.client.as_mut() else {
                break;
            };
            match append_failover(c, &self.a.server, q.signed_event()?).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.sent += 1;
                    hooks.after_receipt(self.sent);
                    self.queue.remove(id)?;
                    self.queue.set_head(
                        &q.chain_id,
                        &Link {
                            seq: r.seq + 1,
                            prev_hash: hex::encode(&r.event_hash),
                        },
                    )?;
                    println!(
                        "  SENT  {} seq {} {}: ACCEPTED, log index {}{}",
                        q.chain_id,
                        q.seq,
                        q.kind,
                        r.index,
                        if r.duplicate {
                            " (was already recorded)"
                        } else {
                            ""
                        }
                    );
                }
                Err(s) if is_offline(&s) => {
                    self.client = None;
                    break;
                }
                Err(s) => {
                    let (word, status) = if is_conflict(&s) {
                        ("CONFLICT", Status::Conflict(s.message().to_string()))
                    } else {
                        ("REJECTED", Status::Rejected(s.message().to_string()))
                    };
                    big(
                        word,
                        &[
                            format!(
                                "queued {} seq {} {} (signed offline) was refused:",
                                q.chain_id, q.seq, q.kind
                            ),
                            format!("{:?}: {}", s.code(), s.message()),
                            "It stays in the queue, marked. It is NOT rebased: a rebase needs"
                                .into(),
                            "the signers to sign again. Take it out with".into(),
                            format!(
                                "`celltrail queue discard {id} --reason TEXT{}`",
                                queue_cmd::queue_flag(&self.a.queue)
                            ),
                            "and record it again on the current chain.".into(),
                        ],
                    );
                    self.queue.set_status(id, status)?;
                    blocked.insert(q.chain_id.clone(), id);
                }
            }
            hooks.between_sends().await;
        }
        println!("  {}", self.queue_line()?);
        Ok(())
    }

    /// Sends now, or queues when the server is away.
    pub(super) async fn submit(
        &mut self,
        ev: crate::pb::SignedEvent,
        kind: &str,
    ) -> anyhow::Result<i32> {
        let q = Queued::new(&ev, kind)?;
        // Part 11 §11.50: who signed, as what, when (UTC and local), under the result word.
        let infos = self.queue.signer_infos().unwrap_or_default();
        let signed: Vec<String> = ev
            .signatures
            .iter()
            .map(|sig| {
                format!(
                    "SIGNED BY {}",
                    crate::manifest::signature_line(
                        &sig.key_id,
                        infos.get(&sig.key_id),
                        sig.meaning,
                        sig.signed_at_unix_nanos,
                    )
                )
            })
            .collect();
        match self.send(ev, kind).await? {
            Sent::Accepted(r) => {
                let mut lines = vec![
                    format!("{} {} seq {}", q.chain_id, kind, r.seq),
                    format!(
                        "log index {}, event {}{}",
                        r.index,
                        hex::encode(&r.event_hash[..8.min(r.event_hash.len())]),
                        if r.duplicate {
                            " (was already recorded)"
                        } else {
                            ""
                        }
                    ),
                ];
                lines.extend(signed);
                lines.extend(
                    r.holds_opened
                        .iter()
                        .map(|h| format!("HOLD OPENED: {h}; QA must release it")),
                );
                big("ACCEPTED", &lines);
                Ok(EXIT_ACCEPTED)
            }
            Sent::Refused(s) => {
                big(
                    "REJECTED",
                    &[
                        format!(
                            "{} {} seq {} was refused by the server:",
                            q.chain_id, kind, q.seq
                        ),
                        format!("{:?}: {}", s.code(), s.message()),
                    ],
                );
                Ok(EXIT_REJECTED)
            }
            Sent::Queued(waiting) => {
                let mut lines = vec![
                    format!(
                        "{} {} seq {} is signed and kept on this station",
                        q.chain_id, kind, q.seq
                    ),
                    "the server is unreachable; it is sent, in order, when the station reaches it \
                     again (at the next event, or `celltrail scan --drain`)"
                        .into(),
                ];
                lines.extend(signed);
                big(&format!("QUEUED ({waiting} waiting)"), &lines);
                Ok(EXIT_QUEUED)
            }
        }
    }

    /// Appends `ev` at the server, or pushes it on the queue when the server is away; says
    /// nothing (the caller does).
    pub(super) async fn send(
        &mut self,
        ev: crate::pb::SignedEvent,
        kind: &str,
    ) -> anyhow::Result<Sent> {
        let q = Queued::new(&ev, kind)?;
        if let Some(c) = self.client.as_mut() {
            match append_failover(c, &self.a.server, ev.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.queue.set_head(
                        &q.chain_id,
                        &Link {
                            seq: r.seq + 1,
                            prev_hash: hex::encode(&r.event_hash),
                        },
                    )?;
                    return Ok(Sent::Accepted(r));
                }
                Err(s) if is_offline(&s) => self.client = None,
                Err(s) => return Ok(Sent::Refused(s)),
            }
        }
        self.queue.push(&q)?;
        Ok(Sent::Queued(self.queue.counts()?.0))
    }
}
