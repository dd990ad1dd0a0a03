//! `celltrail scan`: the scanning station. Reads scanner lines, recognises each code
//! (`codes::classify`), asks only what it cannot infer, shows a summary, signs with the
//! station user's key (and a second person's where the policy needs two) and submits. When the
//! server is unreachable the signed event goes into a local store-and-forward queue (`queue`)
//! that is replayed in order on the next contact; nothing is rebased silently and nothing is
//! sent twice (the server answers an identical resubmission with `duplicate = true`). At the
//! bedside it shows MATCH / MISMATCH (`bedside`) before anything can be signed.
//!
//! Exit codes: 0 ACCEPTED (or queue drained), 1 REJECTED or error, 2 MISMATCH / bedside check
//! impossible, 3 QUEUED (signed and kept locally, waiting for the server).

mod bedside;
mod form;
mod queue;
mod queue_cmd;
mod ui;

pub use bedside::{check as bedside_check, Verdict};
pub use form::{apply_scans, comment_required, Code};
pub use queue::{DiscardError, Discarded, Link, Queue, Queued, Status};
pub use queue_cmd::{run as run_queue_command, QueueCommand, EXIT_CODES as QUEUE_EXIT_CODES};

use crate::client::{self, Client, Draft, Fields, KINDS};
use crate::keys::read_key_file;
use crate::note::NoteSigner;
use crate::pb::{
    ledger_client::LedgerClient, FindChainsByBagRequest, GetChainRequest, SignatureMeaning,
};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code as GrpcCode;
use ui::{big, Ui};

#[derive(Args, Debug)]
pub struct ScanArgs {
    #[command(flatten)]
    pub server: crate::client::ServerArg,
    /// Your key file (you sign PERFORMED). Not needed with --drain.
    #[arg(long, env = "CELLTRAIL_KEY")]
    pub key: Option<PathBuf>,
    /// A second person's key file, for events the policy wants two people on (bedside check:
    /// VERIFIED; shipment and hand-off: RECEIVED; destruction: APPROVED). Asked for if missing.
    #[arg(long, env = "CELLTRAIL_COSIGN_KEY")]
    pub cosign_key: Option<PathBuf>,
    /// This station's site code (or GLN).
    #[arg(long, env = "CELLTRAIL_SITE")]
    pub site: Option<String>,
    /// Store-and-forward queue directory (sled).
    #[arg(long, env = "CELLTRAIL_QUEUE", default_value = "./celltrail-station")]
    pub queue: PathBuf,
    /// Event kind (collected, received, stored, dispensed, bedside_check, ...); asked if missing.
    #[arg(long)]
    pub event: Option<String>,
    /// Chain id [default: the first bag DIN scanned; a product bag whose DIN names no chain is
    /// looked up on the server (the chain whose events produced it)].
    #[arg(long)]
    pub chain: Option<String>,
    /// A scanned code, exactly as the scanner sends it (repeatable).
    #[arg(long = "scan")]
    pub scans: Vec<String>,
    /// Event fields, name=value (repeatable), as for `celltrail event`.
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Comment (required for "No" answers and deviations).
    #[arg(long)]
    pub comment: Option<String>,
    /// When it happened, RFC 3339 [default: now].
    #[arg(long)]
    pub at: Option<String>,
    /// Scripted mode: never ask, sign without confirmation; anything missing is an error.
    #[arg(long)]
    pub yes: bool,
    /// Bedside identity check (same as --event bedside_check).
    #[arg(long)]
    pub bedside: bool,
    /// Only send what is queued, then stop.
    #[arg(long)]
    pub drain: bool,
}

pub const EXIT_ACCEPTED: i32 = 0;
pub const EXIT_REJECTED: i32 = 1;
pub const EXIT_MISMATCH: i32 = 2;
pub const EXIT_QUEUED: i32 = 3;

/// Runs the station; exits the process with the station's exit code when it is not 0.
pub async fn run(a: ScanArgs) -> anyhow::Result<()> {
    let code = Station::open(a).await?.run().await?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Connects with short timeouts: a station must fall back to its queue quickly.
async fn try_connect(server: &str) -> Option<Client> {
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let ep = tonic::transport::Endpoint::from_shared(url)
        .ok()?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(20));
    let ch = ep.connect().await.ok()?;
    Some(LedgerClient::new(ch).max_decoding_message_size(crate::rules::MAX_GRPC_MESSAGE))
}

/// The server could not be reached or the answer was lost (as opposed to: it answered no).
fn is_offline(s: &tonic::Status) -> bool {
    crate::client::is_transport_failure(s)
}

/// The chain moved on the server since the event was signed (needs a rebase and re-signature).
fn is_conflict(s: &tonic::Status) -> bool {
    s.code() == GrpcCode::AlreadyExists
        || (s.code() == GrpcCode::FailedPrecondition
            && (s.message().starts_with("stale prev_hash")
                || s.message().contains("would leave a gap")
                || s.message().contains("does not exist; its first event")))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

struct Station {
    a: ScanArgs,
    queue: Queue,
    client: Option<Client>,
    ui: Ui,
    sent: u64,
}

/// What the operator or the script asked for before the station fills in the rest.
struct Request {
    kind: Option<String>,
    codes: Vec<Code>,
}

enum Step {
    Done(i32),
    Quit,
}

impl Station {
    async fn open(a: ScanArgs) -> anyhow::Result<Station> {
        let queue = Queue::open(&a.queue)?;
        let client = try_connect(&a.server.server).await;
        let ui = Ui {
            interactive: !a.yes && !a.drain,
        };
        Ok(Station {
            a,
            queue,
            client,
            ui,
            sent: 0,
        })
    }

    fn queue_line(&self) -> anyhow::Result<String> {
        let (waiting, attention) = self.queue.counts()?;
        Ok(if attention > 0 {
            format!(
                "queue: {waiting} waiting, {attention} NEED ATTENTION (refused by the server; \
                 see `celltrail queue list{}`)",
                queue_cmd::queue_flag(&self.a.queue)
            )
        } else {
            format!("queue: {waiting} waiting")
        })
    }

    async fn run(mut self) -> anyhow::Result<i32> {
        println!(
            "CELLTRAIL STATION  server {} {}  {}",
            self.a.server.server,
            if self.client.is_some() {
                "ONLINE"
            } else {
                "OFFLINE"
            },
            self.queue_line()?
        );
        self.drain().await?;
        if self.a.drain {
            let (waiting, attention) = self.queue.counts()?;
            if waiting == 0 && attention == 0 {
                big("QUEUE EMPTY", &["every queued event was recorded".into()]);
                return Ok(EXIT_ACCEPTED);
            }
            if waiting > 0 {
                big(
                    &format!("QUEUED ({waiting} waiting)"),
                    &["the server is unreachable; run again when it is back".into()],
                );
                return Ok(EXIT_QUEUED);
            }
            big(
                "ATTENTION",
                &[
                    format!("{attention} queued event(s) were refused by the server; see above"),
                    format!(
                        "list them: `celltrail queue list{}`",
                        queue_cmd::queue_flag(&self.a.queue)
                    ),
                    format!(
                        "then `celltrail queue discard ID --reason TEXT{}` and record them again",
                        queue_cmd::queue_flag(&self.a.queue)
                    ),
                ],
            );
            return Ok(EXIT_REJECTED);
        }
        let key =
            self.a.key.clone().ok_or_else(|| {
                anyhow!("--key FILE is required: the station signs with your key")
            })?;
        let me = read_key_file(&key)?;
        if self.a.site.is_none() {
            bail!("--site is required: the site code of this station");
        }
        let mut cosigner = match &self.a.cosign_key {
            Some(p) => Some(crate::keys::read_key_file_with(
                p,
                &crate::keys::PassphraseSource::COSIGNER,
            )?),
            None => None,
        };
        println!(
            "Signed in as {} at site {}.",
            me.name,
            self.a.site.as_deref().unwrap_or_default()
        );
        let mut req = Request {
            kind: self
                .a
                .event
                .clone()
                .or_else(|| self.a.bedside.then(|| "bedside_check".to_string())),
            codes: Vec::new(),
        };
        for s in &self.a.scans.clone() {
            match Code::from_scan(crate::codes::classify(s)) {
                Ok(c) => req.codes.push(c),
                Err(e) if self.ui.interactive => println!("  {e}"),
                Err(e) => {
                    big("REJECTED", &[format!("--scan {s:?}: {e}")]);
                    return Ok(EXIT_REJECTED);
                }
            }
        }
        if !self.ui.interactive {
            return match self.one_event(&me, &mut cosigner, req).await? {
                Step::Done(c) => Ok(c),
                Step::Quit => Ok(EXIT_REJECTED),
            };
        }
        let mut last = EXIT_ACCEPTED;
        loop {
            match self.one_event(&me, &mut cosigner, req).await? {
                Step::Done(c) => last = c,
                Step::Quit => return Ok(last),
            }
            req = Request {
                kind: self.a.bedside.then(|| "bedside_check".to_string()),
                codes: Vec::new(),
            };
            if self.client.is_none() {
                self.client = try_connect(&self.a.server.server).await;
                if self.client.is_some() {
                    println!("Server is back: sending the queue.");
                    self.drain().await?;
                }
            }
            println!(
                "Next: scan the next bag, or type QUIT. ({})",
                self.queue_line()?
            );
        }
    }

    /// Sends every waiting event in order. Stops at the first sign that the server is away;
    /// events the server refuses stay in the queue, marked, with the reason shown.
    async fn drain(&mut self) -> anyhow::Result<()> {
        let pause = env_u64("CELLTRAIL_STATION_REPLAY_PAUSE_MS").unwrap_or(0);
        let crash_after = env_u64("CELLTRAIL_STATION_CRASH_AFTER_SEND");
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
            match c.append(q.signed_event()?).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.sent += 1;
                    if crash_after == Some(self.sent) {
                        eprintln!("celltrail scan: test hook: abort after send {}", self.sent);
                        std::process::abort();
                    }
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
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
        println!("  {}", self.queue_line()?);
        Ok(())
    }

    /// Reads scans until an empty line; typed event names choose the event.
    fn read_scans(&self, req: &mut Request) -> Option<()> {
        println!("Scan the bag and the other codes, then press Enter on an empty line.");
        loop {
            let line = self.ui.ask("scan")?;
            let t = line.trim();
            if t.is_empty() {
                if req.codes.is_empty() && req.kind.is_none() {
                    continue;
                }
                return Some(());
            }
            if t.eq_ignore_ascii_case("quit") || t.eq_ignore_ascii_case("exit") {
                return None;
            }
            let lower = t.to_ascii_lowercase();
            if KINDS.iter().any(|(k, _)| *k == lower) {
                println!("  EVENT  {lower}");
                req.kind = Some(lower);
                continue;
            }
            match Code::from_scan(crate::codes::classify(t)) {
                Ok(c) => {
                    println!("  {}", c.describe());
                    req.codes.push(c);
                }
                Err(e) => println!("  {e}"),
            }
        }
    }

    fn choose_kind(&self) -> Option<String> {
        println!("Which event?");
        for (i, (k, _)) in KINDS.iter().enumerate() {
            print!("  {:>2} {:<19}", i + 1, k);
            if i % 3 == 2 {
                println!();
            }
        }
        println!();
        loop {
            let t = self.ui.ask("event")?.trim().to_ascii_lowercase();
            if let Ok(n) = t.parse::<usize>() {
                if (1..=KINDS.len()).contains(&n) {
                    return Some(KINDS[n - 1].0.to_string());
                }
            }
            if KINDS.iter().any(|(k, _)| *k == t) {
                return Some(t);
            }
            println!("  type a number from the list or an event name");
        }
    }

    /// Asks until the answer parses (or is empty for an optional question).
    fn ask_field(&self, q: &form::Question) -> Option<Option<String>> {
        loop {
            let line = self.ui.ask(q.prompt)?;
            let t = line.trim();
            if t.is_empty() && q.optional {
                return Some(if q.answer == form::Answer::MinutesAgo {
                    form::parse_answer(q.answer, "", crate::time::now_nanos()).ok()
                } else {
                    None
                });
            }
            if t.is_empty() {
                println!("  needed: {}", q.prompt);
                continue;
            }
            if q.answer == form::Answer::Text {
                // A scanned answer is recognised like any scan; free text stays as typed.
                match Code::from_scan(crate::codes::classify(t)) {
                    Ok(Code::Bag(v) | Code::Wristband(v) | Code::Shipper(v) | Code::Asset(v))
                    | Ok(Code::Product(v)) => return Some(Some(v)),
                    Err(e) if e.starts_with("BAD CODE") => {
                        println!("  {e}");
                        continue;
                    }
                    _ => return Some(Some(t.to_string())),
                }
            }
            match form::parse_answer(q.answer, t, crate::time::now_nanos()) {
                Ok(v) => return Some(Some(v)),
                Err(e) => println!("  {e}"),
            }
        }
    }

    /// One event from scans to ACCEPTED / REJECTED / QUEUED / MISMATCH.
    async fn one_event(
        &mut self,
        me: &NoteSigner,
        cosigner: &mut Option<NoteSigner>,
        mut req: Request,
    ) -> anyhow::Result<Step> {
        let interactive = self.ui.interactive;
        if interactive && self.read_scans(&mut req).is_none() {
            return Ok(Step::Quit);
        }
        let kind = match req.kind.take() {
            Some(k) => k,
            None if interactive => match self.choose_kind() {
                Some(k) => k,
                None => return Ok(Step::Quit),
            },
            None => {
                big("REJECTED", &["--event KIND is required with --yes".into()]);
                return Ok(Step::Done(EXIT_REJECTED));
            }
        };
        if !KINDS.iter().any(|(k, _)| *k == kind) {
            big("REJECTED", &[format!("unknown event kind {kind:?}")]);
            return Ok(Step::Done(EXIT_REJECTED));
        }
        let site = self.a.site.clone().unwrap_or_default();
        let mut fields = match Fields::parse(&self.a.set) {
            Ok(_) => parse_set(&self.a.set),
            Err(e) => {
                big("REJECTED", &[e]);
                return Ok(Step::Done(EXIT_REJECTED));
            }
        };
        let (mut chain, warnings) =
            apply_scans(&kind, self.a.chain.as_deref(), &req.codes, &mut fields);
        for w in warnings {
            println!("  {w}");
        }
        while chain.is_none() {
            if !interactive {
                big(
                    "REJECTED",
                    &["no chain: scan the bag's DIN (--scan) or give --chain".into()],
                );
                return Ok(Step::Done(EXIT_REJECTED));
            }
            let Some(line) = self.ui.ask("Scan the bag (DIN) that names the chain") else {
                return Ok(Step::Quit);
            };
            match Code::from_scan(crate::codes::classify(&line)) {
                Ok(c @ Code::Bag(_)) => {
                    req.codes.insert(0, c);
                    fields = parse_set(&self.a.set);
                    chain = apply_scans(&kind, self.a.chain.as_deref(), &req.codes, &mut fields).0;
                }
                Ok(other) => println!("  that is a {}, not a bag", other.describe()),
                Err(e) => println!("  {e}"),
            }
        }
        let mut chain = chain.expect("loop above ends only with a chain");
        if self.a.chain.is_none() {
            match self.chain_of_bag(&kind, &chain).await? {
                Ok(Some(found)) => {
                    println!("  bag {chain} belongs to chain {found}");
                    chain = found;
                }
                Ok(None) => {}
                Err(why) => {
                    big("REJECTED", &[why]);
                    return Ok(Step::Done(EXIT_REJECTED));
                }
            }
        }
        // Inferred from the station and the second person.
        if matches!(kind.as_str(), "shipped" | "custody_handoff") {
            fields.entry("from_site".into()).or_insert(site.clone());
        }

        // Ask what the scans and --set did not give.
        for q in form::questions(&kind) {
            if fields.contains_key(q.field) || !interactive {
                continue;
            }
            match self.ask_field(&q) {
                None => return Ok(Step::Quit),
                Some(Some(v)) => {
                    fields.insert(q.field.to_string(), v);
                }
                Some(None) => {}
            }
        }

        if kind == "bedside_check" {
            let wrist = fields.get("wristband_coi_ref").cloned().unwrap_or_default();
            let bag = fields.get("product_bag_id").cloned().unwrap_or_default();
            if wrist.is_empty() || bag.is_empty() {
                big(
                    "MISMATCH",
                    &["scan BOTH the wristband (CoI) and the product bag (DIN)".into()],
                );
                return Ok(Step::Done(EXIT_MISMATCH));
            }
            if let Some(code) = self.bedside(&chain, &wrist, &bag).await? {
                return Ok(Step::Done(code));
            }
        }

        // Comment: required for a No answer or a deviation.
        let mut comment = self.a.comment.clone().unwrap_or_default();
        if let Some(why) = comment_required(&kind, &fields) {
            while comment.trim().is_empty() {
                if !interactive {
                    big(
                        "REJECTED",
                        &[format!("a comment is required ({why}): add --comment TEXT")],
                    );
                    return Ok(Step::Done(EXIT_REJECTED));
                }
                match self.ui.ask(&format!("Comment (required: {why})")) {
                    Some(c) => comment = c.trim().to_string(),
                    None => return Ok(Step::Quit),
                }
            }
        } else if interactive && self.a.comment.is_none() {
            match self.ui.ask("Comment (Enter for none)") {
                Some(c) => comment = c.trim().to_string(),
                None => return Ok(Step::Quit),
            }
        }

        // Second person.
        let second = form::second_signature(&kind, &fields);
        if second.is_some() && cosigner.is_none() {
            if !interactive {
                big(
                    "REJECTED",
                    &[format!(
                        "{kind} needs a second person: --cosign-key FILE ({})",
                        second.unwrap_or_default()
                    )],
                );
                return Ok(Step::Done(EXIT_REJECTED));
            }
            loop {
                let Some(p) = self.ui.ask(&format!(
                    "Second person ({}): path to your key file",
                    second.unwrap_or_default()
                )) else {
                    return Ok(Step::Quit);
                };
                match crate::keys::read_key_file_with(
                    std::path::Path::new(p.trim()),
                    &crate::keys::PassphraseSource::COSIGNER,
                ) {
                    Ok(k) if k.name == me.name => {
                        println!("  the second person must be someone else")
                    }
                    Ok(k) => {
                        *cosigner = Some(k);
                        break;
                    }
                    Err(e) => println!("  {e}"),
                }
            }
        }
        if kind == "shipped" {
            if let Some(c) = cosigner.as_ref() {
                fields.entry("courier".into()).or_insert(c.name.clone());
            }
        }

        let detail = match client::detail_from_fields(&kind, Fields::from_map(fields.clone())) {
            Ok(d) => d,
            Err(e) => {
                big("REJECTED", &[e, "nothing was signed".into()]);
                return Ok(Step::Done(EXIT_REJECTED));
            }
        };
        let occurred_at = match &self.a.at {
            Some(t) => crate::time::parse_rfc3339(t).map_err(|e| anyhow!("--at: {e}"))?,
            None => crate::time::now_nanos(),
        };

        let link = match self.link(&chain, &kind).await? {
            Ok(l) => l,
            Err(why) => {
                big("REJECTED", &[why, "nothing was signed".into()]);
                return Ok(Step::Done(EXIT_REJECTED));
            }
        };

        // Summary and confirmation.
        let mut signers: Vec<(&NoteSigner, SignatureMeaning)> =
            vec![(me, SignatureMeaning::Performed)];
        let second_meaning = match second {
            Some(m) => Some(client::parse_meaning(m).map_err(|e| anyhow!(e))?),
            None => None,
        };
        if let (Some(c), Some(m)) = (cosigner.as_ref(), second_meaning) {
            signers.push((c, m));
        }
        println!("------------------------ SUMMARY ------------------------");
        println!("  EVENT      {}", kind.to_ascii_uppercase());
        println!("  CHAIN      {chain}   (seq {})", link.seq);
        println!("  SITE       {site}");
        for (k, v) in &fields {
            println!("  {:<10} {v}", k);
        }
        if !comment.is_empty() {
            println!("  COMMENT    {comment}");
        }
        for (s, m) in &signers {
            println!("  SIGNER     {} ({})", s.name, m.as_str_name());
        }
        println!("---------------------------------------------------------");
        if interactive {
            for (s, m) in &signers {
                let Some(ans) = self.ui.ask(&format!(
                    "{}: type YES to sign ({})",
                    s.name,
                    m.as_str_name()
                )) else {
                    return Ok(Step::Quit);
                };
                if !ans.trim().eq_ignore_ascii_case("yes") && !ans.trim().eq_ignore_ascii_case("y")
                {
                    big("CANCELLED", &["nothing was signed".into()]);
                    return Ok(Step::Done(EXIT_REJECTED));
                }
            }
        }

        let prev_hash = hex::decode(&link.prev_hash).context("stored prev_hash")?;
        let ev = client::sign_draft(
            Draft {
                chain_id: chain.clone(),
                seq: link.seq,
                prev_hash,
                occurred_at,
                site,
                comment,
                detail,
            },
            &signers,
            crate::time::now_nanos(),
        );
        Ok(Step::Done(self.submit(ev, &kind).await?))
    }

    /// The chain a scanned bag belongs to when no chain has the bag's DIN as its id (a product
    /// bag made from the apheresis bag that names the chain): asked of the server's bag index.
    /// `Ok(None)`: keep `din` as the chain (it is one, the station has events queued for it,
    /// the event starts a chain, the server does not know the bag, or it is unreachable).
    async fn chain_of_bag(
        &mut self,
        kind: &str,
        din: &str,
    ) -> anyhow::Result<Result<Option<String>, String>> {
        if kind == "enrolled" || self.queue.last_for_chain(din)?.is_some() {
            return Ok(Ok(None));
        }
        let Some(c) = self.client.as_mut() else {
            return Ok(Ok(None));
        };
        match client::next_link(c, din).await {
            Ok((0, _)) => {} // no chain has this id
            Ok(_) => return Ok(Ok(None)),
            Err(s) => {
                if is_offline(&s) {
                    self.client = None;
                }
                return Ok(Ok(None));
            }
        }
        let found = c
            .find_chains_by_bag(FindChainsByBagRequest {
                din: din.to_string(),
            })
            .await;
        match found {
            Ok(r) => {
                let chains: Vec<String> = r
                    .into_inner()
                    .chains
                    .into_iter()
                    .map(|h| h.chain_id)
                    .collect();
                match chains.as_slice() {
                    [one] => Ok(Ok(Some(one.clone()))),
                    _ => Ok(Err(format!(
                        "bag {din} is named by {} chains ({}): give --chain",
                        chains.len(),
                        chains.join(", ")
                    ))),
                }
            }
            Err(s) => {
                if is_offline(&s) {
                    self.client = None;
                }
                Ok(Ok(None))
            }
        }
    }

    /// Where the next event of `chain` goes: after the chain's last queued event, else the
    /// server's head (live, or as last seen). `Err(reason)` when it cannot be known.
    async fn link(&mut self, chain: &str, kind: &str) -> anyhow::Result<Result<Link, String>> {
        let queued = self.queue.all()?;
        if let Some((id, q)) = queued
            .iter()
            .find(|(_, q)| q.chain_id == chain && q.status != Status::Waiting)
        {
            return Ok(Err(format!(
                "chain {chain} has queued event #{id} (seq {}, {}) that the server refused; \
                 deal with it first: `celltrail queue list{}`, then `celltrail queue discard \
                 {id} --reason TEXT`",
                q.seq,
                q.kind,
                queue_cmd::queue_flag(&self.a.queue)
            )));
        }
        if let Some(q) = self.queue.last_for_chain(chain)? {
            return Ok(Ok(Link {
                seq: q.seq + 1,
                prev_hash: q.event_hash.clone(),
            }));
        }
        if let Some(c) = self.client.as_mut() {
            match client::next_link(c, chain).await {
                Ok((seq, prev)) => {
                    let l = Link {
                        seq,
                        prev_hash: hex::encode(prev),
                    };
                    self.queue.set_head(chain, &l)?;
                    return Ok(Ok(l));
                }
                Err(s) if is_offline(&s) => self.client = None,
                Err(s) => return Ok(Err(format!("{:?}: {}", s.code(), s.message()))),
            }
        }
        if let Some(l) = self.queue.head(chain)? {
            return Ok(Ok(l));
        }
        if kind == "enrolled" {
            return Ok(Ok(Link {
                seq: 0,
                prev_hash: hex::encode([0u8; 32]),
            }));
        }
        Ok(Err(format!(
            "OFFLINE, and this station has never seen chain {chain}: it cannot chain the event \
             to the bag's history. Wait for the network."
        )))
    }

    /// Sends now, or queues when the server is away.
    async fn submit(&mut self, ev: crate::pb::SignedEvent, kind: &str) -> anyhow::Result<i32> {
        let q = Queued::new(&ev, kind)?;
        if let Some(c) = self.client.as_mut() {
            match c.append(ev.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.queue.set_head(
                        &q.chain_id,
                        &Link {
                            seq: r.seq + 1,
                            prev_hash: hex::encode(&r.event_hash),
                        },
                    )?;
                    big(
                        "ACCEPTED",
                        &[
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
                        ],
                    );
                    return Ok(EXIT_ACCEPTED);
                }
                Err(s) if is_offline(&s) => self.client = None,
                Err(s) => {
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
                    return Ok(EXIT_REJECTED);
                }
            }
        }
        self.queue.push(&q)?;
        let (waiting, _) = self.queue.counts()?;
        big(
            &format!("QUEUED ({waiting} waiting)"),
            &[
                format!(
                    "{} {} seq {} is signed and kept on this station",
                    q.chain_id, kind, q.seq
                ),
                "the server is unreachable; it is sent when the network is back".into(),
            ],
        );
        Ok(EXIT_QUEUED)
    }

    /// Shows MATCH or MISMATCH; `Some(exit code)` when the check stops the event.
    async fn bedside(
        &mut self,
        chain: &str,
        wrist: &str,
        bag: &str,
    ) -> anyhow::Result<Option<i32>> {
        let Some(c) = self.client.as_mut() else {
            big(
                "CANNOT CHECK",
                &[
                    "the server is unreachable: the bedside check needs the chain".into(),
                    "NOTHING WAS SIGNED. Do not infuse until the check shows MATCH.".into(),
                ],
            );
            return Ok(Some(EXIT_MISMATCH));
        };
        let resp = c
            .get_chain(GetChainRequest {
                chain_id: chain.to_string(),
            })
            .await;
        let entries = match resp {
            Ok(r) => r.into_inner().entries,
            Err(s) if s.code() == GrpcCode::NotFound => {
                big(
                    "MISMATCH",
                    &[
                        format!("no chain {chain} on the server: this bag is unknown"),
                        "NOTHING WAS SIGNED. Do not infuse. Call the pharmacy.".into(),
                    ],
                );
                return Ok(Some(EXIT_MISMATCH));
            }
            Err(s) => {
                if is_offline(&s) {
                    self.client = None;
                }
                big(
                    "CANNOT CHECK",
                    &[
                        format!("{:?}: {}", s.code(), s.message()),
                        "NOTHING WAS SIGNED. Do not infuse until the check shows MATCH.".into(),
                    ],
                );
                return Ok(Some(EXIT_MISMATCH));
            }
        };
        let v = bedside_check(&entries, wrist, bag);
        if v.matched {
            big("MATCH", &v.lines);
            Ok(None)
        } else {
            let mut lines = v.lines;
            lines.push("NOTHING WAS SIGNED. Do not infuse. Call the pharmacy.".into());
            big("MISMATCH", &lines);
            Ok(Some(EXIT_MISMATCH))
        }
    }
}

/// `--set` pairs as a map (already validated by `Fields::parse`).
fn parse_set(pairs: &[String]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}
