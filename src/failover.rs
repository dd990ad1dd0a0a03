//! Clients that fail over: a server list (`--server a,b,c`), tried in order, the writer first
//! once known.
//!
//! Several servers may share one PostgreSQL database: one writes, the others are standbys
//! that answer reads and refuse appends with UNAVAILABLE, naming the writer in the
//! `celltrail-writer` trailer (see `api`). A call that finds a server down or a standby moves
//! on to the named writer or the next server; appends are idempotent (the same signed bytes
//! return the original receipt), so resending one whose answer was lost is safe. The process
//! remembers which server wrote last and starts there next time.

use crate::client::{is_transport_failure, Client};
use crate::pb::{Receipt, SignedEvent};
use std::sync::Mutex;

/// gRPC metadata key in which a standby names the writer's address.
pub const WRITER_HEADER: &str = "celltrail-writer";

/// The server that answered the last append (or that a standby named as the writer).
static WRITER: Mutex<Option<String>> = Mutex::new(None);

/// Splits `a,b,c` into addresses (blanks ignored).
pub fn parse_list(spec: &str) -> Vec<String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The servers in the order to try them: the remembered writer first, then the list.
pub fn ordered(list: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(list.len());
    if let Some(w) = remembered_writer() {
        if list.contains(&w) {
            out.push(w);
        }
    }
    for s in list {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// The writer this process last saw, if any.
pub fn remembered_writer() -> Option<String> {
    WRITER.lock().expect("writer memory").clone()
}

/// Remembers `server` as the writer.
pub fn remember_writer(server: &str) {
    *WRITER.lock().expect("writer memory") = Some(server.to_string());
}

/// The writer a standby named in its refusal, if the status is such a refusal.
pub fn writer_hint(s: &tonic::Status) -> Option<String> {
    if s.code() != tonic::Code::Unavailable {
        return None;
    }
    s.metadata()
        .get(WRITER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Whether a status is a standby's "not the writer" refusal.
pub fn is_not_writer(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable
        && (s.metadata().get(WRITER_HEADER).is_some()
            || s.message().starts_with("this server is a standby"))
}

/// Whether another server may answer where this one failed: it is down, the answer was lost,
/// or it is a standby.
pub fn try_next(s: &tonic::Status) -> bool {
    is_transport_failure(s) || is_not_writer(s)
}

/// A server list with the TLS settings to reach each.
#[derive(Debug, Clone)]
pub struct Servers {
    pub list: Vec<String>,
    pub tls: crate::tls::TlsOptions,
}

impl Servers {
    pub fn new(spec: &str, tls: crate::tls::TlsOptions) -> anyhow::Result<Servers> {
        let list = parse_list(spec);
        if list.is_empty() {
            anyhow::bail!("--server is empty: give one address or several as a,b,c");
        }
        Ok(Servers { list, tls })
    }

    /// Connects to the first reachable server (the remembered writer first).
    pub async fn connect(&self) -> anyhow::Result<(String, Client)> {
        let mut errors = Vec::new();
        for server in ordered(&self.list) {
            match crate::client::connect_with(&server, &self.tls).await {
                Ok(c) => return Ok((server, c)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        anyhow::bail!("no server answered: {}", errors.join("; "))
    }

    /// Appends `event` at the writer: a server that is down or a standby passes it on to the
    /// writer it names, or to the next server. Every server is tried at most twice.
    pub async fn append(&self, event: &SignedEvent) -> Result<Receipt, tonic::Status> {
        let mut queue: std::collections::VecDeque<String> = ordered(&self.list).into();
        let mut tries = 0;
        let mut last = tonic::Status::unavailable("no server to send the event to");
        while let Some(server) = queue.pop_front() {
            tries += 1;
            if tries > 2 * self.list.len() + 1 {
                break;
            }
            let mut c = match crate::client::connect_with(&server, &self.tls).await {
                Ok(c) => c,
                Err(e) => {
                    last = tonic::Status::unavailable(e.to_string());
                    continue;
                }
            };
            match c.append(event.clone()).await {
                Ok(r) => {
                    remember_writer(&server);
                    return Ok(r.into_inner());
                }
                Err(s) if try_next(&s) => {
                    if let Some(w) = writer_hint(&s).filter(|w| self.list.contains(w)) {
                        if w != server {
                            queue.retain(|q| q != &w);
                            queue.push_front(w);
                        }
                    }
                    last = s;
                }
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }

    /// [`crate::client::append_draft`] with failover: reads the chain's head from any server,
    /// signs once, then appends at the writer.
    pub async fn append_draft(
        &self,
        draft: crate::client::Draft,
        signers: &[(&crate::note::NoteSigner, crate::pb::SignatureMeaning)],
    ) -> anyhow::Result<Receipt> {
        self.append_draft_with(draft, Vec::new(), signers).await
    }

    /// [`Self::append_draft`] with readings declared not measured (`EventBody.not_measured`).
    pub async fn append_draft_with(
        &self,
        mut draft: crate::client::Draft,
        not_measured: Vec<crate::pb::NotMeasured>,
        signers: &[(&crate::note::NoteSigner, crate::pb::SignatureMeaning)],
    ) -> anyhow::Result<Receipt> {
        let (_, mut c) = self.connect().await?;
        let (seq, prev) = crate::client::next_link(&mut c, &draft.chain_id)
            .await
            .map_err(crate::client::status_error)?;
        draft.seq = seq;
        draft.prev_hash = prev;
        let ev =
            crate::client::sign_draft_with(draft, not_measured, signers, crate::time::now_nanos());
        self.append(&ev).await.map_err(crate::client::status_error)
    }
}

/// `--server` with its TLS flags, as the commands use it (here, not in `client`, so the client
/// does not depend on failover).
impl crate::client::ServerArg {
    /// Connects to the first of `--server` that answers, with the TLS flags given (plain
    /// text when none).
    pub async fn connect(&self) -> anyhow::Result<Client> {
        Ok(self.servers()?.connect().await?.1)
    }

    /// The `--server` list with the TLS flags, for calls that fail over (appends).
    pub fn servers(&self) -> anyhow::Result<Servers> {
        Servers::new(&self.server, self.tls())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_on_commas_and_blanks_are_dropped() {
        assert_eq!(parse_list(" a:1, b:2 ,,c:3 "), vec!["a:1", "b:2", "c:3"]);
        assert!(parse_list(" , ").is_empty());
    }

    #[test]
    fn a_standby_refusal_is_recognised_and_names_the_writer() {
        let mut s = tonic::Status::unavailable("this server is a standby; the writer is at b:2");
        assert!(is_not_writer(&s));
        assert_eq!(writer_hint(&s), None);
        s.metadata_mut()
            .insert(WRITER_HEADER, "b:2".parse().unwrap());
        assert_eq!(writer_hint(&s).as_deref(), Some("b:2"));
        assert!(try_next(&s));
        let other = tonic::Status::failed_precondition("stale prev_hash");
        assert!(!try_next(&other) && writer_hint(&other).is_none());
    }

    #[test]
    fn the_remembered_writer_is_tried_first_only_if_listed() {
        let list = parse_list("a:1,b:2,c:3");
        remember_writer("b:2");
        assert_eq!(ordered(&list), vec!["b:2", "a:1", "c:3"]);
        remember_writer("z:9");
        assert_eq!(ordered(&list), vec!["a:1", "b:2", "c:3"]);
    }
}
