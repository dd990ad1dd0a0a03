//! `celltrail queue`: what an operator does with the station's store-and-forward queue when the
//! server refused something. `list` shows every queued event and why it is stuck, `discard`
//! takes a CONFLICT or REJECTED event out (into the `discarded` tree, kept with the reason and
//! its exact signed bytes), `show` prints one event decoded. Never creates a queue, never talks
//! to the server, never signs. Rendering is pure (`EntryView`, `render_*`); `run` does the I/O.

use super::queue::{Discarded, Queue, Queued, Status};
use crate::pb::{EventBody, SignatureMeaning};
use anyhow::Context;
use clap::{Args, Subcommand};
use prost::Message;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

impl QueueCommand {
    /// The `--queue` flag of whichever subcommand this is (for the config file's `[station]`).
    pub fn dir_mut(&mut self) -> &mut QueueDir {
        match self {
            QueueCommand::List(a) => &mut a.dir,
            QueueCommand::Discard(a) => &mut a.dir,
            QueueCommand::Show(a) => &mut a.dir,
        }
    }
}

pub const EXIT_CODES: &str = "Exit codes: 0 done (also: the queue is empty), 1 error or refused \
(unknown id, a WAITING entry, an empty --reason, no queue at --queue DIR, the queue is in use \
by a running station), 2 bad command line.";

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List queued events, their status and why the server refused them.
    ///
    /// One line per queued event: id, status (WAITING, CONFLICT, REJECTED), chain, seq, event,
    /// when it was signed (UTC) and by whom, then the server's reason for a CONFLICT or
    /// REJECTED, and a summary line. Never creates the queue directory; never contacts the
    /// server.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Take a CONFLICT or REJECTED event out of the queue, with a reason.
    ///
    /// The event is moved, not deleted: it is kept with your reason, the time, the OS user and
    /// its exact signed bytes, and shown by `celltrail queue list --discarded`. It is never
    /// sent. A WAITING event cannot be discarded (nobody refused it). Run it while no station
    /// is running on the queue.
    #[command(after_help = EXIT_CODES)]
    Discard(DiscardArgs),
    /// Print one queued (or discarded) event decoded: fields, signers, hashes.
    #[command(after_help = EXIT_CODES)]
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct QueueDir {
    /// The station's store-and-forward queue directory (as given to `celltrail scan`).
    #[arg(long, env = "CELLTRAIL_QUEUE", default_value = "./celltrail-station")]
    pub queue: PathBuf,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub dir: QueueDir,
    /// List the discarded events (with why, when and by whom) instead of the queue.
    #[arg(long)]
    pub discarded: bool,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DiscardArgs {
    #[command(flatten)]
    pub dir: QueueDir,
    /// Queue entry id, as `queue list` prints it (12 or #12).
    #[arg(value_parser = parse_id)]
    pub id: u64,
    /// Why it is discarded (e.g. "recorded again as seq 4 after the chain moved"); kept with it.
    #[arg(long)]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub dir: QueueDir,
    /// Queue entry id, as `queue list` prints it (12 or #12).
    #[arg(value_parser = parse_id)]
    pub id: u64,
}

/// `12` or `#12`.
pub fn parse_id(s: &str) -> Result<u64, String> {
    s.trim()
        .trim_start_matches('#')
        .parse()
        .map_err(|_| format!("{s:?} is not a queue entry id: expected a number like 12 or #12, as `celltrail queue list` prints it"))
}

pub fn run(cmd: QueueCommand) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::List(a) => list(a),
        QueueCommand::Discard(a) => discard(a),
        QueueCommand::Show(a) => show(a),
    }
}

fn list(a: ListArgs) -> anyhow::Result<()> {
    let q = Queue::open_existing(&a.dir.queue)?;
    let dir = a.dir.queue.display().to_string();
    let out = if a.discarded {
        let gone = q.discarded()?;
        if a.json {
            serde_json::to_string_pretty(&discarded_json(&dir, &gone))? + "\n"
        } else {
            render_discarded(&dir, &gone)
        }
    } else {
        let views: Vec<EntryView> = q
            .all()?
            .iter()
            .map(|(id, e)| EntryView::of(*id, e))
            .collect();
        if a.json {
            serde_json::to_string_pretty(&list_json(&dir, &views))? + "\n"
        } else {
            render_list(&dir, &views)
        }
    };
    print!("{out}");
    Ok(())
}

fn discard(a: DiscardArgs) -> anyhow::Result<()> {
    let q = Queue::open_existing(&a.dir.queue)?;
    let by = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty());
    let d = q.discard(a.id, &a.reason, by)?;
    let e = &d.queued;
    println!(
        "DISCARDED #{} ({} seq {} {}, was {}): kept with your reason under `celltrail queue list --discarded`; it will never be sent.",
        d.id,
        e.chain_id,
        e.seq,
        e.kind,
        e.status.word()
    );
    let later: Vec<(u64, Queued)> = q
        .all()?
        .into_iter()
        .filter(|(id, x)| x.chain_id == e.chain_id && *id > d.id)
        .collect();
    let refused: Vec<String> = later
        .iter()
        .filter(|(_, x)| x.status != Status::Waiting)
        .map(|(id, _)| format!("#{id}"))
        .collect();
    let waiting = later.len() - refused.len();
    if !refused.is_empty() {
        println!(
            "Chain {} still has refused {} {} signed after it: discard {} too before recording on this chain again.",
            e.chain_id,
            if refused.len() == 1 { "entry" } else { "entries" },
            refused.join(", "),
            if refused.len() == 1 { "it" } else { "them" },
        );
    }
    if waiting > 0 {
        println!(
            "Chain {} has {waiting} WAITING entr{} signed after it: {} chain to the discarded event and will be refused as CONFLICT when sent.",
            e.chain_id,
            if waiting == 1 { "y" } else { "ies" },
            if waiting == 1 { "it" } else { "they" },
        );
    }
    if refused.is_empty() {
        println!(
            "Record the event again on the current chain with `celltrail scan` if it still has to be recorded."
        );
    }
    Ok(())
}

fn show(a: ShowArgs) -> anyhow::Result<()> {
    let q = Queue::open_existing(&a.dir.queue)?;
    let signers = q.signer_infos()?;
    let out = if let Some(e) = q.get(a.id)? {
        render_show(a.id, &e, None, &signers)?
    } else if let Some(d) = q.discarded_one(a.id)? {
        render_show(a.id, &d.queued, Some(&d), &signers)?
    } else {
        anyhow::bail!(
            "no queue entry #{} in {} (queued or discarded): see `celltrail queue list`",
            a.id,
            a.queue_display()
        );
    };
    print!("{out}");
    Ok(())
}

impl ShowArgs {
    fn queue_display(&self) -> String {
        self.dir.queue.display().to_string()
    }
}

/// One signature as an operator reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignerView {
    pub key_id: String,
    pub meaning: String,
    pub signed_at: i64,
}

/// One queued event as `queue list` shows it.
#[derive(Debug, Clone)]
pub struct EntryView {
    pub id: u64,
    pub chain_id: String,
    pub seq: u64,
    pub kind: String,
    pub event_hash: String,
    pub queued_at: i64,
    pub status: Status,
    pub signers: Vec<SignerView>,
    /// Why the stored signed event could not be read, if it could not.
    pub unreadable: Option<String>,
}

impl EntryView {
    pub fn of(id: u64, q: &Queued) -> EntryView {
        let (signers, unreadable) = match q.signed_event() {
            Ok(ev) => (
                ev.signatures
                    .iter()
                    .map(|s| SignerView {
                        key_id: s.key_id.clone(),
                        meaning: SignatureMeaning::try_from(s.meaning)
                            .map(|m| m.as_str_name().to_ascii_lowercase())
                            .unwrap_or_else(|_| format!("meaning {}", s.meaning)),
                        signed_at: s.signed_at_unix_nanos,
                    })
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(format!("{e:#}"))),
        };
        EntryView {
            id,
            chain_id: q.chain_id.clone(),
            seq: q.seq,
            kind: q.kind.clone(),
            event_hash: q.event_hash.clone(),
            queued_at: q.queued_at,
            status: q.status.clone(),
            signers,
            unreadable,
        }
    }

    /// When it was signed: the PERFORMED signature's time, else the first signature's.
    pub fn signed_at(&self) -> Option<i64> {
        self.signers
            .iter()
            .find(|s| s.meaning == "performed")
            .or(self.signers.first())
            .map(|s| s.signed_at)
    }

    fn signers_text(&self) -> String {
        if let Some(e) = &self.unreadable {
            return format!("(stored event does not decode: {e})");
        }
        self.signers
            .iter()
            .map(|s| format!("{} ({})", s.key_id, s.meaning))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "chain_id": self.chain_id,
            "seq": self.seq,
            "kind": self.kind,
            "event_hash": self.event_hash,
            "status": self.status.word().to_ascii_lowercase(),
            "reason": self.status.reason(),
            "signed_at": self.signed_at().map(crate::time::rfc3339),
            "signed_at_unix_nanos": self.signed_at(),
            "queued_at": crate::time::rfc3339(self.queued_at),
            "signers": self.signers.iter().map(|s| json!({
                "key_id": s.key_id,
                "meaning": s.meaning,
                "signed_at": crate::time::rfc3339(s.signed_at),
            })).collect::<Vec<_>>(),
            "unreadable": self.unreadable,
        })
    }
}

/// A time to the second, for tables (`2026-11-25T13:00:00Z`).
fn seconds(nanos: i64) -> String {
    crate::time::rfc3339(nanos - nanos.rem_euclid(crate::time::NANOS_PER_SEC))
}

/// (waiting, conflicted, rejected).
pub fn tally(views: &[EntryView]) -> (usize, usize, usize) {
    let mut n = (0, 0, 0);
    for v in views {
        match v.status {
            Status::Waiting => n.0 += 1,
            Status::Conflict(_) => n.1 += 1,
            Status::Rejected(_) => n.2 += 1,
        }
    }
    n
}

pub fn render_list(dir: &str, views: &[EntryView]) -> String {
    let (w, c, r) = tally(views);
    let mut s = String::new();
    if views.is_empty() {
        let _ = writeln!(
            s,
            "Station queue {dir} is empty: nothing waiting, nothing refused."
        );
    } else {
        let _ = writeln!(s, "Station queue {dir}:");
        let ids: Vec<String> = views.iter().map(|v| format!("#{}", v.id)).collect();
        let wid = ids.iter().map(String::len).max().unwrap_or(0).max(2);
        let wch = views
            .iter()
            .map(|v| v.chain_id.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let wev = views.iter().map(|v| v.kind.len()).max().unwrap_or(0).max(5);
        let _ = writeln!(
            s,
            "{:<wid$}  {:<8}  {:<wch$}  {:>4}  {:<wev$}  {:<20}  SIGNERS",
            "ID", "STATUS", "CHAIN", "SEQ", "EVENT", "SIGNED AT (UTC)"
        );
        for (v, id) in views.iter().zip(&ids) {
            let _ = writeln!(
                s,
                "{:<wid$}  {:<8}  {:<wch$}  {:>4}  {:<wev$}  {:<20}  {}",
                id,
                v.status.word(),
                v.chain_id,
                v.seq,
                v.kind,
                v.signed_at().map(seconds).unwrap_or_else(|| "?".into()),
                v.signers_text()
            );
            if let Some(reason) = v.status.reason() {
                let _ = writeln!(s, "{:wid$}  reason: {reason}", "");
            }
        }
    }
    let _ = writeln!(s, "{w} waiting, {c} conflicted, {r} rejected");
    if c + r > 0 {
        let _ = writeln!(
            s,
            "A CONFLICT or REJECTED event will never be accepted as it was signed. Take it out with \
             `celltrail queue discard ID --reason TEXT` (it is kept, see `--discarded`), then \
             record the event again on the current chain with `celltrail scan`."
        );
    }
    s
}

pub fn render_discarded(dir: &str, gone: &[Discarded]) -> String {
    let mut s = String::new();
    if gone.is_empty() {
        let _ = writeln!(s, "Nothing was ever discarded from station queue {dir}.");
    } else {
        let _ = writeln!(
            s,
            "Discarded from station queue {dir} (kept for the record; never sent):"
        );
    }
    for d in gone {
        let v = EntryView::of(d.id, &d.queued);
        let _ = writeln!(
            s,
            "#{}  {} seq {} {}  signed {} by {}",
            v.id,
            v.chain_id,
            v.seq,
            v.kind,
            v.signed_at().map(seconds).unwrap_or_else(|| "?".into()),
            v.signers_text()
        );
        let _ = writeln!(
            s,
            "      was {}: {}",
            v.status.word(),
            v.status.reason().unwrap_or("")
        );
        let _ = writeln!(
            s,
            "      discarded {}{}: {}",
            seconds(d.discarded_at),
            d.discarded_by
                .as_deref()
                .map(|u| format!(" by {u}"))
                .unwrap_or_default(),
            d.reason
        );
        let _ = writeln!(s, "      event hash {}", v.event_hash);
    }
    let _ = writeln!(s, "{} discarded", gone.len());
    s
}

pub fn list_json(dir: &str, views: &[EntryView]) -> Value {
    let (w, c, r) = tally(views);
    json!({
        "queue": dir,
        "entries": views.iter().map(EntryView::json).collect::<Vec<_>>(),
        "summary": { "waiting": w, "conflicted": c, "rejected": r },
    })
}

pub fn discarded_json(dir: &str, gone: &[Discarded]) -> Value {
    json!({
        "queue": dir,
        "discarded": gone.iter().map(|d| {
            let mut v = EntryView::of(d.id, &d.queued).json();
            v["discard_reason"] = json!(d.reason);
            v["discarded_at"] = json!(crate::time::rfc3339(d.discarded_at));
            v["discarded_by"] = json!(d.discarded_by);
            v["signed_event_hex"] = json!(d.queued.event);
            v
        }).collect::<Vec<_>>(),
        "summary": { "discarded": gone.len() },
    })
}

/// One event decoded, for `queue show`.
pub fn render_show(
    id: u64,
    q: &Queued,
    discarded: Option<&Discarded>,
    signers: &std::collections::HashMap<String, crate::manifest::SignerInfo>,
) -> anyhow::Result<String> {
    let ev = q.signed_event()?;
    let body = EventBody::decode(ev.body.as_slice()).context("queued event body")?;
    let mut s = String::new();
    let where_ = if discarded.is_some() {
        "DISCARDED"
    } else {
        "QUEUED"
    };
    let _ = writeln!(s, "Queue entry #{id}: {where_}, {}", q.status.word());
    if let Some(r) = q.status.reason() {
        let _ = writeln!(s, "  reason       {r}");
    }
    if let Some(d) = discarded {
        let _ = writeln!(
            s,
            "  discarded    {}{}: {}",
            crate::time::rfc3339(d.discarded_at),
            d.discarded_by
                .as_deref()
                .map(|u| format!(" by {u}"))
                .unwrap_or_default(),
            d.reason
        );
    }
    let _ = writeln!(s, "  event        {}", q.kind);
    let _ = writeln!(s, "  chain        {}   seq {}", body.chain_id, body.seq);
    let _ = writeln!(s, "  event hash   {}", q.event_hash);
    let _ = writeln!(s, "  prev_hash    {}", hex::encode(&body.prev_hash));
    let _ = writeln!(
        s,
        "  occurred at  {}",
        crate::time::rfc3339(body.occurred_at_unix_nanos)
    );
    let _ = writeln!(s, "  site         {}", body.site);
    let _ = writeln!(s, "  actor        {}", body.actor_key_id);
    if !body.comment.is_empty() {
        let _ = writeln!(s, "  comment      {}", body.comment);
    }
    let _ = writeln!(s, "  queued at    {}", crate::time::rfc3339(q.queued_at));
    match crate::bundle::record::fields::detail_fields(&ev.body) {
        Some((kind, fields)) => {
            let _ = writeln!(s, "  detail       {kind}");
            for f in fields {
                let _ = writeln!(s, "    {:<24} {}", f.label, f.value);
            }
        }
        None => {
            let _ = writeln!(s, "  detail       (none)");
        }
    }
    // Part 11 §11.50: who (printed name, role, site as this station last saw the key
    // registry), meaning, UTC and local time.
    for sig in &ev.signatures {
        let info = signers.get(&sig.key_id);
        let _ = writeln!(
            s,
            "  signed by    {}",
            crate::manifest::signature_line(
                &sig.key_id,
                info,
                sig.meaning,
                sig.signed_at_unix_nanos
            )
        );
        let _ = writeln!(s, "    signature  {}", hex::encode(&sig.signature));
    }
    let _ = writeln!(
        s,
        "  signed event {} bytes (kept exactly as signed)",
        q.event.len() / 2
    );
    Ok(s)
}

/// The queue directory as the operator should pass it back (`--queue DIR` unless default).
pub fn queue_flag(dir: &Path) -> String {
    let shown = dir.display().to_string();
    if dir == Path::new("./celltrail-station") {
        String::new()
    } else if shown
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c))
    {
        format!(" --queue {shown}")
    } else {
        format!(" --queue '{}'", shown.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_with_or_without_hash() {
        assert_eq!(parse_id("12"), Ok(12));
        assert_eq!(parse_id("#12"), Ok(12));
        assert!(parse_id("twelve")
            .unwrap_err()
            .contains("not a queue entry id"));
        assert!(parse_id("").is_err());
    }

    #[test]
    fn queue_flag_is_pasteable_into_a_shell() {
        assert_eq!(queue_flag(Path::new("./celltrail-station")), "");
        assert_eq!(queue_flag(Path::new("/var/q-1")), " --queue /var/q-1");
        assert_eq!(
            queue_flag(Path::new("/mnt/pharmacy station/it's")),
            r" --queue '/mnt/pharmacy station/it'\''s'"
        );
    }
}
