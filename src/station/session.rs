//! One operator's run of the station: open the queue and connect, read scans, choose the
//! event, ask what the labels do not say, show the summary, sign, and hand the signed event to
//! `forward`; the bedside MATCH / MISMATCH before anything is signed.

use super::args::{ScanArgs, EXIT_ACCEPTED, EXIT_MISMATCH, EXIT_QUEUED, EXIT_REJECTED};
use super::net::{is_offline, try_connect};
use super::outlook;
use super::queue::{Link, Queue};
use super::ui::{big, Ui};
use super::{apply_scans, bedside_check, comment_required, form, queue_cmd, Code, Status};
use crate::client::{self, Client, Draft, Fields};
use crate::event_fields::KINDS;
use crate::keys::read_key_file;
use crate::note::NoteSigner;
use crate::pb::{FindChainsByBagRequest, SignatureMeaning};
use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use tonic::Code as GrpcCode;

pub(super) struct Station {
    pub(super) a: ScanArgs,
    pub(super) queue: Queue,
    pub(super) client: Option<Client>,
    pub(super) ui: Ui,
    pub(super) sent: u64,
    /// With `--keys-dir`: the signers' key files and badges (`signin`).
    pub(super) keys: Option<super::signin::KeysDir>,
    pub(super) rules: super::signin::Rules,
    /// The person signed in to this session (their first signature identified them).
    pub(super) signed_in: Option<String>,
}

/// What the operator or the script asked for before the station fills in the rest.
struct Request {
    kind: Option<String>,
    codes: Vec<Code>,
}

/// The menu of events for a known chain: what the policy allows next there.
struct Offered {
    chain: String,
    state: String,
    kinds: Vec<String>,
}

pub(super) enum Step {
    Done(i32),
    Quit,
}

impl Station {
    pub(super) async fn open(a: ScanArgs) -> anyhow::Result<Station> {
        // Draining sends what a station queued before: a queue that does not exist is a
        // wrong --queue, not an empty one.
        let queue = match a.drain {
            true => Queue::open_existing(&a.queue)?,
            false => Queue::open(&a.queue)?,
        };
        let mut client = try_connect(&a.server).await;
        if let Some(c) = client.as_mut() {
            // Who is who, for showing signatures (also offline, in `queue show`).
            queue.remember_signers(&client::signer_infos(c).await)?;
        }
        let ui = Ui::new(!a.yes && !a.drain);
        // Interactive signing is always by identification + passphrase (`signing`): with a
        // key directory, or with the one key of `--key` (and a second person's key files).
        let keys = match (&a.keys_dir, &a.key) {
            _ if a.drain => None,
            (Some(d), _) => Some(super::signin::KeysDir::open(d)?),
            (None, Some(k)) if ui.interactive => {
                Some(super::signin::KeysDir::single(k, a.cosign_key.as_deref())?)
            }
            _ => None,
        };
        let rules = super::signin::Rules {
            idle: std::time::Duration::from_secs(a.session_timeout),
            max_attempts: a.max_passphrase_attempts,
            lockout: std::time::Duration::from_secs(a.lockout_minutes * 60),
        };
        Ok(Station {
            a,
            queue,
            client,
            ui,
            sent: 0,
            keys,
            rules,
            signed_in: None,
        })
    }

    pub(super) fn queue_line(&self) -> anyhow::Result<String> {
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

    pub(super) async fn run(mut self) -> anyhow::Result<i32> {
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
        if self.a.site.is_none() {
            bail!("--site is required: the site code of this station");
        }
        let me = match (&self.keys, &self.a.key) {
            (Some(_), _) => None,
            (None, Some(key)) => Some(read_key_file(key)?),
            (None, None) => bail!(
                "--keys-dir DIR (signers pick their key by badge) or --key FILE is required: \
                 the station signs with its users' keys"
            ),
        };
        // Scripted (`--yes`): the second person's key opens now, its passphrase from the
        // automation variables. Interactive: each signer types their passphrase at signing.
        let mut cosigner = match (&self.a.cosign_key, &self.keys) {
            (Some(p), None) => Some(crate::keys::read_key_file_with(
                p,
                &crate::keys::PassphraseSource::COSIGNER,
            )?),
            _ => None,
        };
        let site = self.a.site.clone().unwrap_or_default();
        match (
            &me,
            &self.a.keys_dir,
            self.keys.as_ref().and_then(|k| k.only()),
        ) {
            (Some(me), _, _) => println!("Signing as {} at site {site}.", me.name),
            (None, Some(d), _) => println!(
                "Site {site}. Signers scan their badge (or type their key name) and type their \
                 passphrase at the first signature; later ones need the passphrase only. Keys \
                 in {}. LOGOUT ends the session.",
                d.display()
            ),
            (None, None, Some((name, path))) => {
                println!(
                    "Site {site}. Key file {}. At the first signature type your key name (or \
                     scan your badge) and your passphrase; later ones need the passphrase only. \
                     LOGOUT ends the session.",
                    path.display()
                );
                if !crate::keys::KeyFile::load(path)?.is_encrypted() {
                    big("NOT PART 11", &super::signing::plaintext_lines(name, path));
                }
                let automation = [
                    crate::keys::PASSPHRASE_FILE_ENV,
                    crate::keys::PASSPHRASE_FD_ENV,
                    crate::keys::COSIGN_PASSPHRASE_FILE_ENV,
                    crate::keys::COSIGN_PASSPHRASE_FD_ENV,
                ];
                for v in automation.iter().filter(|v| std::env::var_os(v).is_some()) {
                    println!(
                        "  {v} is not read by an interactive station: each signer types their \
                         own passphrase when signing (it is for scripted use, --yes)"
                    );
                }
            }
            (None, None, None) => {}
        }
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
            return match self.one_event(me.as_ref(), &mut cosigner, req).await? {
                Step::Done(c) => Ok(c),
                Step::Quit => Ok(EXIT_REJECTED),
            };
        }
        let mut last = EXIT_ACCEPTED;
        loop {
            // A second person who identified at a prompt signs one event only: the next
            // two-person step asks again (only --cosign-key, given at start, stays).
            if self.a.cosign_key.is_none() {
                cosigner = None;
            }
            match self.one_event(me.as_ref(), &mut cosigner, req).await? {
                Step::Done(c) => last = c,
                // LOGOUT ends the signing session and abandons the form, not the station.
                Step::Quit if self.ui.take_logout() => {
                    self.ui.take_cancelled();
                    if let Some(who) = self.signed_in.take() {
                        println!("  {who} signed out");
                    }
                    last = EXIT_REJECTED;
                }
                // CANCEL abandons the form, not the station.
                Step::Quit if self.ui.take_cancelled() => last = EXIT_REJECTED,
                Step::Quit => return Ok(last),
            }
            req = Request {
                kind: self.a.bedside.then(|| "bedside_check".to_string()),
                codes: Vec::new(),
            };
            self.reconnect_if_offline().await?;
            println!(
                "Next: scan the next bag, or type QUIT (CANCEL abandons a form at any prompt). ({})",
                self.queue_line()?
            );
        }
    }

    /// Offline: tries the server again and, when it answers, sends the queue in order.
    async fn reconnect_if_offline(&mut self) -> anyhow::Result<()> {
        if self.client.is_none() {
            self.client = try_connect(&self.a.server).await;
            if self.client.is_some() {
                println!("Server is back: sending the queue.");
                self.drain().await?;
            }
        }
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
            if KINDS.iter().any(|k| k.name == lower) {
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

    /// The events the policy allows next on the chain of the scanned bag (or `--chain`), as
    /// the server says (`GetAllowedNext`): the menu offers only these. `None` when no bag was
    /// scanned, the chain is new, has ended, or the server cannot say (offline): then the menu
    /// lists every kind and the check before the form refuses what is not allowed.
    async fn offered_kinds(&mut self, req: &Request) -> anyhow::Result<Option<Offered>> {
        let scanned = req.codes.iter().find_map(|c| match c {
            Code::Bag(b) => Some(b.clone()),
            _ => None,
        });
        let chain = match (self.a.chain.clone(), scanned) {
            (Some(c), _) => c,
            (None, Some(din)) => match self.chain_of_bag("", &din).await? {
                Ok(Some(found)) => found,
                Ok(None) => din,
                Err(_) => return Ok(None), // said again, with the reason, once a kind is chosen
            },
            (None, None) => return Ok(None),
        };
        if self.client.is_none() || self.queue.last_for_chain(&chain)?.is_some() {
            return Ok(None);
        }
        let site = self.a.site.clone().unwrap_or_default();
        let Some(n) = self.allowed_next(&chain, &site).await else {
            return Ok(None);
        };
        let kinds: Vec<String> = n
            .events
            .iter()
            .filter(|e| e.not_here.is_empty() && KINDS.iter().any(|k| k.name == e.kind))
            .map(|e| e.kind.clone())
            .collect();
        if n.state.is_empty() || n.state == crate::policy::START || kinds.is_empty() {
            return Ok(None);
        }
        Ok(Some(Offered {
            chain,
            state: n.state,
            kinds,
        }))
    }

    fn choose_kind(&self, offered: Option<&Offered>) -> Option<String> {
        let names: Vec<&str> = match offered {
            Some(o) => {
                println!(
                    "Chain {} is in state {}. Allowed next here:",
                    o.chain, o.state
                );
                o.kinds.iter().map(String::as_str).collect()
            }
            None => {
                println!("Which event?");
                KINDS.iter().map(|k| k.name).collect()
            }
        };
        for (i, k) in names.iter().enumerate() {
            print!("  {:>2} {:<19}", i + 1, k);
            if i % 3 == 2 {
                println!();
            }
        }
        println!();
        loop {
            let t = self.ui.ask("event")?.trim().to_ascii_lowercase();
            if let Ok(n) = t.parse::<usize>() {
                if (1..=names.len()).contains(&n) {
                    return Some(names[n - 1].to_string());
                }
            }
            // A kind typed by name that the menu does not offer goes on to the check before
            // the form, which says why it is not allowed now (nothing is asked or signed).
            if KINDS.iter().any(|k| k.name == t) {
                return Some(t);
            }
            println!("  type a number from the list or an event name");
        }
    }

    /// Asks until the answer parses (or is empty for an optional question).
    fn ask_field(&self, q: &form::Question, hint: &str) -> Option<Option<String>> {
        loop {
            let line = self.ui.ask(&format!("{}{hint}", q.prompt))?;
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
            if let Some(want) = form::expected_code(q.field) {
                // A prompted scan must be the code type asked for.
                match form::accept_scan(want, Code::from_scan(crate::codes::classify(t))) {
                    Ok(v) => return Some(Some(v)),
                    Err(e) => {
                        println!("  {e}");
                        continue;
                    }
                }
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
        me: Option<&NoteSigner>,
        cosigner: &mut Option<NoteSigner>,
        mut req: Request,
    ) -> anyhow::Result<Step> {
        let interactive = self.ui.interactive;
        if interactive && self.read_scans(&mut req).is_none() {
            return Ok(Step::Quit);
        }
        // The server may have come back while the station sat at `scan >`: the queue goes
        // first, then this event is chained, checked and sent online.
        if interactive {
            self.reconnect_if_offline().await?;
        }
        let kind = match req.kind.take() {
            Some(k) => k,
            None if interactive => {
                let offered = self.offered_kinds(&req).await?;
                match self.choose_kind(offered.as_ref()) {
                    Some(k) => k,
                    None => return Ok(Step::Quit),
                }
            }
            None => {
                big("REJECTED", &["--event KIND is required with --yes".into()]);
                return Ok(Step::Done(EXIT_REJECTED));
            }
        };
        if !KINDS.iter().any(|k| k.name == kind) {
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
        // Before any question: what the custody policy allows next on this chain (asked of
        // the server, so the station keeps no copy of the rules); offline, whether the event
        // can be chained at all. Asked again even when the menu asked it (`offered_kinds`):
        // the nurse may have taken minutes to choose, and a hold placed meanwhile must stop
        // the form.
        let next = self.allowed_next(&chain, &site).await;
        if let Some(n) = &next {
            if kind == "bedside_check" && !n.bedside_refusal_word.is_empty() {
                // Another patient's wristband matters more than the chain's state.
                if let Some(code) = self.wrong_patient_first(n, &chain, &fields, me).await? {
                    return Ok(Step::Done(code));
                }
            }
            if let Some(code) = refuse_before_form(n, &kind, &chain) {
                return Ok(Step::Done(code));
            }
            if !n.hold_reasons.is_empty() {
                println!("  ON HOLD: {}", n.hold_reasons.join("; "));
            }
            // Fields the chain already knows are shown, not asked.
            if kind == "received" {
                if let Some(f) = n.known.get("from_site") {
                    fields.entry("from_site".into()).or_insert(f.clone());
                    println!("  FROM SITE  {f}   (known from the shipment)");
                }
                if let Some(sh) = n.known.get("shipper_id") {
                    println!("  SHIPPER    {sh} was named by the shipment: scan it to confirm");
                }
            }
        } else if self.client.is_none()
            && kind != "enrolled"
            && self.queue.last_for_chain(&chain)?.is_none()
            && self.queue.head(&chain)?.is_none()
        {
            if kind == "bedside_check" {
                big(
                    "CANNOT CHECK",
                    &[
                        "the server is unreachable: the bedside check needs the chain".into(),
                        "NOTHING WAS SIGNED. Do not infuse until the check shows MATCH.".into(),
                    ],
                );
                return Ok(Step::Done(EXIT_MISMATCH));
            }
            big(
                "CANNOT CHAIN",
                &[
                    format!(
                        "OFFLINE, and this station has never seen chain {chain}: it cannot chain \
                         the event to the bag's history. Wait for the network."
                    ),
                    "nothing was asked and nothing was signed".into(),
                ],
            );
            return Ok(Step::Done(EXIT_REJECTED));
        }

        // At receipt, the shipper the shipment named must be scanned and be that one.
        let named_shipper = match (&next, kind.as_str()) {
            (Some(n), "received") => n.known.get("shipper_id").cloned(),
            // Offline: as this station last saw the shipment.
            (None, "received") => self.queue.shipper_of(&chain)?,
            _ => None,
        };
        if let Some(expected) = named_shipper {
            if !fields.contains_key("shipper_id") {
                if !interactive {
                    big(
                        "REJECTED",
                        &[
                            format!("the shipment named shipper {expected}: scan it (--scan GRAI)"),
                            "nothing was signed".into(),
                        ],
                    );
                    return Ok(Step::Done(EXIT_REJECTED));
                }
                let q = form::Question {
                    field: "shipper_id",
                    prompt: "Scan the shipper (GRAI) named by the shipment",
                    answer: form::Answer::Text,
                    optional: false,
                };
                match self.ask_field(&q, "") {
                    Some(Some(v)) => {
                        fields.insert("shipper_id".into(), v);
                    }
                    _ => return Ok(Step::Quit),
                }
            }
            let scanned = fields.get("shipper_id").cloned().unwrap_or_default();
            if scanned != expected {
                let reason = format!("scanned shipper {scanned}, the shipment named {expected}");
                big(
                    "WRONG SHIPPER",
                    &[
                        reason.clone(),
                        "NOTHING WAS SIGNED for the receipt. Do not accept this shipper;".into(),
                        "call the sender.".into(),
                    ],
                );
                let near_miss = BTreeMap::from([
                    ("check".to_string(), "received".to_string()),
                    ("reason".to_string(), reason),
                    ("scanned_shipper_id".to_string(), scanned),
                    ("expected_shipper_id".to_string(), expected),
                ]);
                self.record_near_miss(me, &chain, near_miss).await?;
                return Ok(Step::Done(EXIT_MISMATCH));
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
            let hint = outlook::range_hint(next.as_ref(), &kind, q.field);
            match self.ask_field(&q, &hint) {
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
            if let Some((code, near_miss)) = self.bedside(&chain, &wrist, &bag).await? {
                if let Some(reason) = near_miss {
                    let near_miss = BTreeMap::from([
                        ("check".to_string(), "bedside_check".to_string()),
                        ("reason".to_string(), reason),
                        ("scanned_wristband_coi_ref".to_string(), wrist.clone()),
                        ("scanned_bag_id".to_string(), bag.clone()),
                    ]);
                    self.record_near_miss(me, &chain, near_miss).await?;
                }
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

        // Who signs: interactively, picked now by badge or key name (the passphrases come
        // after the summary); scripted, the --key holder and the --cosign-key holder.
        let second = form::second_signature(&kind, &fields);
        let second_meaning = match second {
            Some(m) => Some(client::parse_meaning(m).map_err(|e| anyhow!(e))?),
            None => None,
        };
        let mut picked = Vec::new();
        if self.keys.is_some() {
            match self.pick_first()? {
                Ok(p) => picked.push(p),
                Err(step) => return Ok(step),
            }
            if let Some(m) = second_meaning {
                let first = picked[0].name.clone();
                match self.pick_second(&first, m)? {
                    Ok(p) => picked.push(p),
                    Err(step) => return Ok(step),
                }
            }
        } else if second.is_some() && cosigner.is_none() {
            // Scripted: the second person's key file comes with the command (interactive
            // stations pick every signer above).
            big(
                "REJECTED",
                &[format!(
                    "{kind} needs a second person: --cosign-key FILE ({})",
                    second.unwrap_or_default()
                )],
            );
            return Ok(Step::Done(EXIT_REJECTED));
        }
        // Names and meanings of the signers, in signing order.
        let who: Vec<(String, SignatureMeaning)> = if self.keys.is_some() {
            picked.iter().map(|p| (p.name.clone(), p.meaning)).collect()
        } else {
            let me = me.expect("--key is open without --keys-dir");
            let mut w = vec![(me.name.clone(), SignatureMeaning::Performed)];
            if let (Some(c), Some(m)) = (cosigner.as_ref(), second_meaning) {
                w.push((c.name.clone(), m));
            }
            w
        };
        if kind == "shipped" {
            if let Some((c, _)) = who.get(1) {
                fields.entry("courier".into()).or_insert(c.clone());
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
        // What the readings would do, judged by the server's policy before anyone signs.
        let mut warnings = Vec::new();
        if self.client.is_some() {
            let body = crate::pb::EventBody {
                chain_id: chain.clone(),
                seq: link.seq,
                prev_hash: hex::decode(&link.prev_hash).unwrap_or_default(),
                occurred_at_unix_nanos: occurred_at,
                site: site.clone(),
                actor_key_id: who[0].0.clone(),
                comment: comment.clone(),
                detail: Some(detail.clone()),
                not_measured: Vec::new(),
            };
            match outlook::preview(&self.a.server, prost::Message::encode_to_vec(&body)).await {
                Ok(p) if !p.refused.is_empty() => {
                    big("REFUSED", &[p.refused, "nothing was signed".into()]);
                    return Ok(Step::Done(EXIT_REJECTED));
                }
                Ok(p) => warnings = p.opens_hold,
                Err(_) => println!("  (could not ask the server whether this opens a hold)"),
            }
        } else {
            println!("  OFFLINE: the server cannot say now whether these readings open a hold");
        }
        println!("------------------------ SUMMARY ------------------------");
        for w in &warnings {
            println!("  THIS WILL OPEN A HOLD: {w}");
        }
        println!("  EVENT      {}", kind.to_ascii_uppercase());
        println!("  CHAIN      {chain}   (seq {})", link.seq);
        println!("  SITE       {site}");
        println!("  WHEN       {}", crate::manifest::when(occurred_at));
        let width = fields.keys().map(|k| k.len()).max().unwrap_or(0).max(10);
        for (k, v) in &fields {
            // Times as a person reads them: UTC and local, like the signatures.
            match crate::time::parse_rfc3339(v) {
                Ok(t) => println!("  {k:<width$} {}", crate::manifest::when(t)),
                Err(_) => println!("  {k:<width$} {v}"),
            }
        }
        if !comment.is_empty() {
            println!("  COMMENT    {comment}");
        }
        let infos = self.queue.signer_infos().unwrap_or_default();
        for (name, m) in &who {
            let line = match infos.get(name) {
                Some(i) => format!("{} ({name}; {} at {})", i.printed_name, i.role, i.site),
                None => format!("{name} (not in the key registry known here)"),
            };
            println!(
                "  SIGNER     {line} {}",
                crate::manifest::meaning_text(*m as i32)
            );
        }
        println!("---------------------------------------------------------");
        // Signing: interactively each signer's passphrase opens their key now; scripted
        // (`--yes`) the keys were opened at start.
        let unlocked = if self.keys.is_some() {
            match self.unlock_all(&picked)? {
                Ok(keys) => keys,
                Err(step) => return Ok(step),
            }
        } else {
            Vec::new()
        };
        let signers: Vec<(&NoteSigner, SignatureMeaning)> = if self.keys.is_some() {
            unlocked.iter().zip(who.iter().map(|w| w.1)).collect()
        } else {
            let me = me.expect("--key is open without --keys-dir");
            let mut v = vec![(me, SignatureMeaning::Performed)];
            if let (Some(c), Some(m)) = (cosigner.as_ref(), second_meaning) {
                v.push((c, m));
            }
            v
        };

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
        // Offline: the chain this station last saw the bag in (`remember_bag`).
        let remembered = match self.queue.head(din)? {
            Some(_) => None, // the DIN names a chain this station has seen
            None => self.queue.bag_chain(din)?,
        };
        let Some(c) = self.client.as_mut() else {
            return Ok(Ok(remembered));
        };
        match client::next_link(c, din).await {
            Ok((0, _)) => {} // no chain has this id
            Ok(_) => return Ok(Ok(None)),
            Err(s) => {
                if is_offline(&s) {
                    self.client = None;
                    return Ok(Ok(remembered));
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
                    [one] => {
                        self.queue.remember_bag(din, one)?;
                        Ok(Ok(Some(one.clone())))
                    }
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
                    return Ok(Ok(remembered));
                }
                Ok(Ok(None))
            }
        }
    }

    /// Where the next event of `chain` goes: after the chain's last queued event, else the
    /// server's head (live, or as last seen). `Err(reason)` when it cannot be known.
    pub(super) async fn link(
        &mut self,
        chain: &str,
        kind: &str,
    ) -> anyhow::Result<Result<Link, String>> {
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

    /// Remembers what an offline station needs of a chain it has seen online: which bags
    /// belong to it and where its next event goes.
    async fn learn_chain(&mut self, chain: &str, n: &crate::pb::AllowedNext) -> anyhow::Result<()> {
        for bag in n.bag_ids.iter().filter(|b| b.as_str() != chain) {
            self.queue.remember_bag(bag, chain)?;
        }
        self.queue
            .remember_shipper(chain, n.known.get("shipper_id").map(String::as_str))?;
        if n.state == "Start" || self.queue.last_for_chain(chain)?.is_some() {
            return Ok(());
        }
        if let Some(c) = self.client.as_mut() {
            if let Ok((seq, prev)) = client::next_link(c, chain).await {
                self.queue.set_head(
                    chain,
                    &Link {
                        seq,
                        prev_hash: hex::encode(prev),
                    },
                )?;
            }
        }
        Ok(())
    }

    /// What the policy allows next on `chain` (`None` offline or when the server cannot say).
    async fn allowed_next(&mut self, chain: &str, site: &str) -> Option<crate::pb::AllowedNext> {
        self.client.as_ref()?;
        match outlook::allowed_next(&self.a.server, chain, site).await {
            Ok(n) => {
                if let Err(e) = self.learn_chain(chain, &n).await {
                    println!("  (could not remember chain {chain} for offline use: {e:#})");
                }
                Some(n)
            }
            Err(s) if is_offline(&s) => {
                self.client = None;
                None
            }
            Err(s) => {
                println!(
                    "  (the server could not say what is allowed next: {})",
                    s.message()
                );
                None
            }
        }
    }

    /// Before a bedside check the policy refuses anyway (not dispensed, on hold, ...): when
    /// the scanned wristband is another patient's than the chain's, shows MISMATCH with both
    /// reasons and records the near miss; `None` when it is the chain's patient (or cannot be
    /// told), and the policy's refusal is shown instead.
    async fn wrong_patient_first(
        &mut self,
        n: &crate::pb::AllowedNext,
        chain: &str,
        fields: &BTreeMap<String, String>,
        me: Option<&NoteSigner>,
    ) -> anyhow::Result<Option<i32>> {
        let Some(wrist) = fields.get("wristband_coi_ref").cloned() else {
            return Ok(None);
        };
        let Some(c) = self.client.as_mut() else {
            return Ok(None);
        };
        let Ok(r) = client::get_whole_chain(c, chain).await else {
            return Ok(None);
        };
        let Some(line) = super::bedside::wrong_patient(&r.entries, &wrist) else {
            return Ok(None);
        };
        big(
            "MISMATCH",
            &[
                line.clone(),
                format!("and {}: {}", n.bedside_refusal_word, n.bedside_refusal),
                "NOTHING WAS SIGNED. Do not infuse. Call the pharmacy.".into(),
            ],
        );
        if n.terminal {
            println!("  NEAR MISS NOT RECORDED: the chain has ended; tell QA what happened");
            return Ok(Some(EXIT_MISMATCH));
        }
        let near_miss = BTreeMap::from([
            ("check".to_string(), "bedside_check".to_string()),
            ("reason".to_string(), line),
            ("scanned_wristband_coi_ref".to_string(), wrist),
            (
                "scanned_bag_id".to_string(),
                fields.get("product_bag_id").cloned().unwrap_or_default(),
            ),
        ]);
        self.record_near_miss(me, chain, near_miss).await?;
        Ok(Some(EXIT_MISMATCH))
    }

    /// Shows MATCH or MISMATCH; `Some((exit code, near miss))` when the check stops the event,
    /// with the reason to record when the scans did not match the chain.
    async fn bedside(
        &mut self,
        chain: &str,
        wrist: &str,
        bag: &str,
    ) -> anyhow::Result<Option<(i32, Option<String>)>> {
        let Some(c) = self.client.as_mut() else {
            big(
                "CANNOT CHECK",
                &[
                    "the server is unreachable: the bedside check needs the chain".into(),
                    "NOTHING WAS SIGNED. Do not infuse until the check shows MATCH.".into(),
                ],
            );
            return Ok(Some((EXIT_MISMATCH, None)));
        };
        let resp = crate::client::get_whole_chain(c, chain).await;
        let entries = match resp {
            Ok(r) => r.entries,
            Err(s) if s.code() == GrpcCode::NotFound => {
                big(
                    "MISMATCH",
                    &[
                        format!("no chain {chain} on the server: this bag is unknown"),
                        "NOTHING WAS SIGNED. Do not infuse. Call the pharmacy.".into(),
                    ],
                );
                return Ok(Some((EXIT_MISMATCH, None)));
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
                return Ok(Some((EXIT_MISMATCH, None)));
            }
        };
        let v = bedside_check(&entries, wrist, bag);
        if v.matched {
            big("MATCH", &v.lines);
            Ok(None)
        } else {
            let reason = v.lines.join("; ");
            let mut lines = v.lines;
            lines.push("NOTHING WAS SIGNED. Do not infuse. Call the pharmacy.".into());
            big("MISMATCH", &lines);
            Ok(Some((EXIT_MISMATCH, Some(reason))))
        }
    }
}

/// Stops an event the policy does not allow now, before any question; for a bedside check the
/// reason takes the big word's place (never MATCH for a bag that must not be infused).
fn refuse_before_form(n: &crate::pb::AllowedNext, kind: &str, chain: &str) -> Option<i32> {
    if kind == "bedside_check" && !n.bedside_refusal_word.is_empty() {
        big(
            &n.bedside_refusal_word,
            &[
                n.bedside_refusal.clone(),
                "NOTHING WAS SIGNED. Do not infuse. Call the pharmacy.".into(),
            ],
        );
        return Some(EXIT_MISMATCH);
    }
    match n.events.iter().find(|e| e.kind == kind) {
        None => {
            let allowed: Vec<&str> = n.events.iter().map(|e| e.kind.as_str()).collect();
            let mut lines = vec![format!("chain {chain} is in state {}", n.state)];
            if !n.hold_reasons.is_empty() {
                lines.push(format!("ON HOLD: {}", n.hold_reasons.join("; ")));
            }
            lines.push(if allowed.is_empty() {
                "nothing may follow: the chain has ended".into()
            } else {
                format!("allowed next: {}", allowed.join(", "))
            });
            lines.push("nothing was signed".into());
            big(&format!("NO {} NOW", kind.to_ascii_uppercase()), &lines);
            Some(EXIT_REJECTED)
        }
        Some(e) if !e.not_here.is_empty() => {
            big(
                "NOT AT THIS SITE",
                &[e.not_here.clone(), "nothing was signed".into()],
            );
            Some(EXIT_REJECTED)
        }
        Some(_) => None,
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
