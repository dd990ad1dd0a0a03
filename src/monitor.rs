//! `celltrail monitor`: follows a log the way an auditor who trusts nobody would. Every
//! checkpoint it is shown (by the log, and by each witness it asks) must carry a valid log
//! signature and be consistent with the last checkpoint it accepted, which it keeps on disk; on a
//! rollback (a smaller tree after a larger one) or a split view (two trees that no consistency
//! proof joins) it prints both signed checkpoints as evidence, keeps them in its state
//! directory, and exits with status 3. The decision is [`judge`], a pure function; the rest
//! fetches checkpoints and proofs and keeps state.
//!
//! State directory: `state.json` (origin, size, root and the signed note last accepted; replaced
//! atomically and fsynced), `evidence-<unix seconds>.txt` for each alarm.
//!
//! After a log key rotation (`loglink`) the log's checkpoint no longer opens with the pinned
//! key: the monitor reads the log's `log` chain, follows the links from the pinned key to the
//! current one, checks the retired key's final checkpoint against what it saw, and goes on in
//! the same tree under the new origin.

use crate::client::{status_error, Client};
use crate::merkle::{self, Hash};
use crate::note::{open_note, Checkpoint, NoteVerifier};
use crate::pb::{GetCheckpointRequest, GetConsistencyProofRequest};
use crate::witness::cosig::{verify_cosignatures, CosignerVerifier};
use crate::witness::http::HttpClient;
use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit status of `celltrail monitor` when it found a rollback or split view.
pub const ALARM_EXIT: i32 = 3;
/// Gauge: 1 once the monitor found a rollback or split view (it stops checking), else 0.
pub const ALARM: &str = "celltrail_monitor_alarm";
/// Gauge: tree size of the latest checkpoint the monitor accepted.
pub const SEEN_SIZE: &str = "celltrail_monitor_tree_size";
/// Gauge: witness cosignatures on the log's cosigned checkpoint at the last check.
pub const COSIGNATURES: &str = "celltrail_monitor_cosignatures";

#[derive(Args, Debug)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub server: crate::client::ServerArg,
    /// The log's verifier key, or a file holding it (log.vkey). Pin it from an independent source.
    #[arg(long, env = "CELLTRAIL_LOG_KEY")]
    pub log_key: String,
    /// State directory: the last accepted checkpoint and any evidence (created if new).
    #[arg(
        long,
        env = "CELLTRAIL_MONITOR_STATE",
        default_value = "./celltrail-monitor"
    )]
    pub state: PathBuf,
    /// A witness whose cosignatures on the log's cosigned checkpoint are checked: its
    /// cosignature key (VKEY), or URL=VKEY to also fetch the witness's own latest checkpoint of
    /// the log and check it against the log's. Repeat for several.
    #[arg(
        long = "witness",
        env = "CELLTRAIL_MONITOR_WITNESSES",
        value_delimiter = ','
    )]
    pub witnesses: Vec<String>,
    /// Check once and exit (0: consistent; 3: alarm) instead of following the log.
    #[arg(long)]
    pub once: bool,
    /// Time between checks when following.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (run as a service) [default: off].
    #[arg(long, env = "CELLTRAIL_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

/// What the monitor keeps between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub origin: String,
    pub size: u64,
    /// base64 root.
    pub root: String,
    pub note: String,
}

impl Seen {
    fn root(&self) -> Hash {
        crate::bundle::unb64(&self.root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .unwrap_or([0; 32])
    }
}

/// A rollback or split view, with both signed checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub kind: &'static str,
    pub reason: String,
    pub earlier: String,
    pub now: String,
    /// Where `now` came from (the log, or a witness).
    pub source: String,
}

impl Alarm {
    pub fn evidence(&self) -> String {
        format!(
            "ALARM: {}: {}\n\n--- signed checkpoint accepted earlier ---\n{}\n--- signed checkpoint from {} ---\n{}",
            self.kind, self.reason, self.earlier, self.source, self.now
        )
    }
}

/// The verdict on a new checkpoint against the last accepted one. `proof` is the log's
/// consistency proof between the two sizes (smaller to larger), when the sizes differ and the
/// log gave one. Pure.
pub fn judge(
    seen: &Seen,
    new: &Checkpoint,
    new_note: &str,
    source: &str,
    proof: Option<&[Hash]>,
) -> Result<(), Alarm> {
    let alarm = |kind, reason: String| Alarm {
        kind,
        reason,
        earlier: seen.note.clone(),
        now: new_note.to_string(),
        source: source.to_string(),
    };
    if new.origin != seen.origin {
        return Err(alarm(
            "wrong log",
            format!(
                "origin {:?} is not the followed log {:?}",
                new.origin, seen.origin
            ),
        ));
    }
    let old_root = seen.root();
    if new.size == seen.size {
        if new.root != old_root {
            return Err(alarm(
                "split view",
                format!(
                    "two checkpoints of size {} with different roots, both signed by the log key",
                    new.size
                ),
            ));
        }
        return Ok(());
    }
    let (small, big, small_root, big_root) = if new.size > seen.size {
        (seen.size, new.size, old_root, new.root)
    } else {
        (new.size, seen.size, new.root, old_root)
    };
    let consistent = small == 0
        || proof.is_some_and(|p| {
            merkle::verify_consistency(small, big, &small_root, &big_root, p).is_ok()
        });
    if new.size < seen.size && source_is_log(source) {
        // The log itself now claims a smaller tree than one it signed before.
        return Err(alarm(
            "rollback",
            format!(
                "the log now shows size {} after it signed size {}",
                new.size, seen.size
            ),
        ));
    }
    if !consistent {
        return Err(alarm(
            "split view",
            format!(
                "no valid consistency proof from size {small} to size {big}: the log signed two histories"
            ),
        ));
    }
    Ok(())
}

fn source_is_log(source: &str) -> bool {
    source.starts_with("log ")
}

fn read_state(dir: &Path) -> anyhow::Result<Option<Seen>> {
    let p = dir.join("state.json");
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!(
                "monitor state {} is corrupt; restore it from a copy (it is what detects a rollback)",
                p.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn read_log_key(s: &str) -> anyhow::Result<NoteVerifier> {
    let text = match std::fs::read_to_string(s) {
        Ok(t) => t,
        Err(_) => s.to_string(),
    };
    NoteVerifier::from_key_string(text.trim()).map_err(|e| anyhow::anyhow!("--log-key: {e}"))
}

/// A witness as the monitor sees it.
struct WitnessSpec {
    url: Option<String>,
    key: CosignerVerifier,
}

fn parse_witness(s: &str) -> anyhow::Result<WitnessSpec> {
    let (url, vkey) = match s.split_once('=') {
        Some((u, v)) if u.starts_with("http://") || u.starts_with("https://") => {
            (Some(u.trim_end_matches('/').to_string()), v)
        }
        _ => (None, s),
    };
    let key = CosignerVerifier::from_key_string(vkey.trim())
        .map_err(|e| anyhow::anyhow!("--witness: {e}"))?;
    Ok(WitnessSpec { url, key })
}

/// The key that signs the log's checkpoint `note`: the pinned key, or the one the log's
/// links (`log` chain) lead to from it. Returns it and the links followed.
async fn current_key(
    c: &mut Client,
    pinned: &NoteVerifier,
    note: &str,
) -> anyhow::Result<(NoteVerifier, Vec<crate::loglink::Link>)> {
    let pinned_err = match open_note(note, std::slice::from_ref(pinned)) {
        Ok(_) => return Ok((pinned.clone(), Vec::new())),
        Err(e) => e,
    };
    let chain = match crate::client::get_whole_chain(c, crate::loglink::LOG_CHAIN).await {
        Ok(r) => r.entries,
        Err(st) if st.code() == tonic::Code::NotFound => Vec::new(),
        Err(st) => return Err(status_error(st)),
    };
    let mut links = Vec::new();
    for e in &chain {
        use prost::Message;
        let body = crate::pb::LogEntry::decode(e.entry.as_slice())
            .ok()
            .and_then(|le| crate::pb::EventBody::decode(le.body.as_slice()).ok())
            .with_context(|| format!("log link entry {} does not decode", e.index))?;
        match crate::loglink::Link::of_body(&body) {
            Some(Ok(l)) => links.push(l),
            Some(Err(err)) => anyhow::bail!("log link entry {}: {err}", e.index),
            None => anyhow::bail!("entry {} on the log chain is not a log link", e.index),
        }
    }
    let keys = crate::loglink::key_sequence(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    match (keys.iter().position(|k| k == pinned), keys.last()) {
        (Some(i), Some(last)) if open_note(note, std::slice::from_ref(last)).is_ok() => {
            let from = links
                .iter()
                .position(|l| l.previous == keys[i])
                .unwrap_or(links.len());
            Ok((last.clone(), links[from..].to_vec()))
        }
        _ => anyhow::bail!(
            "the log's checkpoint does not verify with --log-key {} ({pinned_err}), and no log \
             link leads from that key to the one that signed it",
            pinned.to_key_string()
        ),
    }
}

/// One pass: fetch, verify, compare, persist. `Ok(Err(alarm))` is a detected misbehaviour.
async fn check_once(
    c: &mut Client,
    log_key: &NoteVerifier,
    witnesses: &[WitnessSpec],
    http: &HttpClient,
    dir: &Path,
    server: &str,
) -> anyhow::Result<Result<String, Alarm>> {
    let r = c
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let (key, links) = current_key(c, log_key, &r.checkpoint).await?;
    let log_key = &key;
    let mut views: Vec<(String, String)> = vec![(format!("log {server}"), r.checkpoint.clone())];
    let keys: Vec<CosignerVerifier> = witnesses.iter().map(|w| w.key.clone()).collect();
    let mut cosigners = Vec::new();
    if !r.cosigned_checkpoint.is_empty() {
        let cos = verify_cosignatures(&r.cosigned_checkpoint, &keys)
            .map_err(|e| anyhow::anyhow!("the log's cosigned checkpoint: {e}"))?;
        cosigners = cos.iter().map(|c| c.name.clone()).collect();
        views.push((
            format!("log {server} (cosigned checkpoint)"),
            r.cosigned_checkpoint.clone(),
        ));
    }
    metrics::gauge!(COSIGNATURES).set(cosigners.len() as f64);
    for w in witnesses {
        let Some(url) = &w.url else { continue };
        let origin_hash = hex::encode(Sha256::digest(log_key.name.as_bytes()));
        match http.get(&format!("{url}/{origin_hash}/checkpoint")).await {
            Ok(rep) if rep.status == 200 => {
                let ok = verify_cosignatures(&rep.body, std::slice::from_ref(&w.key))
                    .map(|v| !v.is_empty())
                    .unwrap_or(false);
                if !ok {
                    anyhow::bail!(
                        "witness {url} served a checkpoint without a valid cosignature of its own"
                    );
                }
                views.push((format!("witness {} ({url})", w.key.name), rep.body));
            }
            Ok(rep) if rep.status == 404 => {}
            Ok(rep) => tracing::warn!(witness = %url, status = rep.status, "witness checkpoint"),
            Err(e) => tracing::warn!(witness = %url, "witness unreachable: {e}"),
        }
    }

    let mut seen = read_state(dir)?;
    // Across a key rotation: the retired key's final checkpoint must agree with what was seen
    // under that key; then the same tree goes on under the new origin.
    for l in &links {
        let Some(s) = seen.as_mut() else { break };
        if s.origin != l.previous.name {
            continue;
        }
        let f = &l.final_checkpoint;
        let proof = match f.size != s.size && f.size.min(s.size) > 0 {
            true => c
                .get_consistency_proof(GetConsistencyProofRequest {
                    old_size: f.size.min(s.size),
                    new_size: f.size.max(s.size),
                })
                .await
                .ok()
                .map(|p| {
                    p.into_inner()
                        .hashes
                        .iter()
                        .map(|h| <Hash>::try_from(h.as_slice()).unwrap_or([0; 32]))
                        .collect::<Vec<_>>()
                }),
            false => None,
        };
        let source = format!(
            "log link to {} (final checkpoint of {})",
            l.next.name, l.previous.name
        );
        if let Err(a) = judge(s, f, &l.final_note, &source, proof.as_deref()) {
            return Ok(Err(a));
        }
        tracing::info!(from = %l.previous.name, to = %l.next.name, "followed a log key rotation");
        s.origin = l.next.name.clone();
    }
    let mut accepted = Vec::new();
    for (source, note) in views {
        let opened = open_note(&note, std::slice::from_ref(log_key))
            .map_err(|e| anyhow::anyhow!("checkpoint from {source}: {e}"))?;
        let cp = Checkpoint::parse(&opened.text)
            .map_err(|e| anyhow::anyhow!("checkpoint from {source}: {e}"))?;
        let Some(s) = &seen else {
            seen = Some(Seen {
                origin: cp.origin.clone(),
                size: cp.size,
                root: crate::bundle::b64(&cp.root),
                note: note.clone(),
            });
            continue;
        };
        let proof = if cp.size != s.size && cp.size.min(s.size) > 0 {
            let (old, new) = (cp.size.min(s.size), cp.size.max(s.size));
            match c
                .get_consistency_proof(GetConsistencyProofRequest {
                    old_size: old,
                    new_size: new,
                })
                .await
            {
                Ok(p) => Some(p.into_inner().hashes),
                // A witness ahead of what the log showed us: judge it next time.
                Err(st) if !source_is_log(&source) && cp.size > s.size => {
                    tracing::info!("{source} is ahead of the log ({}): {st}", cp.size);
                    continue;
                }
                Err(_) => None,
            }
        } else {
            None
        };
        let proof: Option<Vec<Hash>> = proof.map(|p| {
            p.iter()
                .map(|h| <Hash>::try_from(h.as_slice()).unwrap_or([0; 32]))
                .collect()
        });
        if let Err(a) = judge(s, &cp, &note, &source, proof.as_deref()) {
            return Ok(Err(a));
        }
        if cp.size > s.size && source_is_log(&source) {
            seen = Some(Seen {
                origin: cp.origin.clone(),
                size: cp.size,
                root: crate::bundle::b64(&cp.root),
                note: note.clone(),
            });
        }
        accepted.push(source);
    }
    let s = seen.expect("the log's checkpoint was read");
    write_atomic(dir, "state.json", &serde_json::to_vec_pretty(&s)?)?;
    metrics::gauge!(SEEN_SIZE).set(s.size as f64);
    let cos = match (keys.is_empty(), cosigners.is_empty()) {
        (true, _) => String::new(),
        (false, true) => ", no witness cosignature yet".into(),
        (false, false) => format!(", cosigned by {}", cosigners.join(", ")),
    };
    Ok(Ok(format!(
        "ok: {} size {} consistent with everything seen before{cos}",
        s.origin, s.size
    )))
}

pub async fn run(a: MonitorArgs) -> anyhow::Result<()> {
    let log_key = read_log_key(&a.log_key)?;
    let witnesses = a
        .witnesses
        .iter()
        .map(|w| parse_witness(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(&a.state)
        .with_context(|| format!("cannot create state directory {}", a.state.display()))?;
    if let Some(m) = &a.metrics_addr {
        let bound = crate::metrics::start(m, std::future::pending()).await?;
        println!("celltrail monitor metrics on http://{bound}/metrics");
    }
    metrics::gauge!(ALARM).set(0.0);
    let http = HttpClient::default();
    let mut client: Option<Client> = None;
    loop {
        if client.is_none() {
            match a.server.connect().await {
                Ok(c) => client = Some(c),
                Err(e) if !a.once => tracing::warn!("cannot reach {}: {e:#}", a.server.server),
                Err(e) => return Err(e),
            }
        }
        if let Some(c) = client.as_mut() {
            match check_once(c, &log_key, &witnesses, &http, &a.state, &a.server.server).await {
                Ok(Ok(line)) => println!("{line}"),
                Ok(Err(alarm)) => {
                    let text = alarm.evidence();
                    println!("{text}");
                    let name = format!("evidence-{}.txt", crate::time::now_nanos() / 1_000_000_000);
                    write_atomic(&a.state, &name, text.as_bytes())?;
                    eprintln!(
                        "celltrail monitor: {} detected; evidence kept in {}",
                        alarm.kind,
                        a.state.join(&name).display()
                    );
                    metrics::gauge!(ALARM).set(1.0);
                    if a.metrics_addr.is_some() && !a.once {
                        // As a service: keep the alarm visible until stopped.
                        crate::server::shutdown_signal().await;
                    }
                    std::process::exit(ALARM_EXIT);
                }
                Err(e) if a.once => return Err(e),
                Err(e) => {
                    tracing::warn!("check failed: {e:#}");
                    client = None;
                }
            }
        }
        if a.once {
            return Ok(());
        }
        tokio::time::sleep(a.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64, tag: u8) -> Vec<Hash> {
        (0..n).map(|i| merkle::leaf_hash(&[tag, i as u8])).collect()
    }

    fn seen(l: &[Hash]) -> Seen {
        Seen {
            origin: "o".into(),
            size: l.len() as u64,
            root: crate::bundle::b64(&merkle::root(l)),
            note: "earlier\n".into(),
        }
    }

    fn cp(l: &[Hash]) -> Checkpoint {
        Checkpoint {
            origin: "o".into(),
            size: l.len() as u64,
            root: merkle::root(l),
            extensions: vec![],
        }
    }

    #[test]
    fn judge_accepts_growth_with_a_proof_and_refuses_forks_and_rollbacks() {
        let a = leaves(7, 1);
        let s = seen(&a[..4]);
        let p = merkle::consistency_proof(&a, 4).unwrap();
        assert!(judge(&s, &cp(&a), "n", "log x", Some(&p)).is_ok());
        assert!(judge(&s, &cp(&a[..4]), "n", "log x", None).is_ok());
        // A fork: same first 3 leaves, a different 4th and beyond.
        let mut b = a.clone();
        b[3] = merkle::leaf_hash(b"other");
        let pb = merkle::consistency_proof(&b, 4).unwrap();
        let e = judge(&s, &cp(&b), "n", "log x", Some(&pb)).unwrap_err();
        assert_eq!(e.kind, "split view");
        assert!(e.evidence().contains("earlier\n") && e.evidence().contains("\nn"));
        let e = judge(&s, &cp(&b[..4]), "n", "log x", None).unwrap_err();
        assert_eq!(e.kind, "split view");
        // The log showing a smaller tree is a rollback, even with a valid proof.
        let s7 = seen(&a);
        let p = merkle::consistency_proof(&a, 4).unwrap();
        assert_eq!(
            judge(&s7, &cp(&a[..4]), "n", "log x", Some(&p))
                .unwrap_err()
                .kind,
            "rollback"
        );
        // A witness lagging behind with a consistent older checkpoint is fine.
        assert!(judge(&s7, &cp(&a[..4]), "n", "witness w", Some(&p)).is_ok());
        // No proof at all for a larger tree: refused.
        assert!(judge(&s, &cp(&a), "n", "log x", None).is_err());
    }
}
