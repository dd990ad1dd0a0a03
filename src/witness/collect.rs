//! The log side of witnessing: `serve --witness URL=VKEY` submits the latest signed checkpoint
//! to every configured witness (at most once per second, each witness in its own task with a
//! deadline, so a slow or dead witness delays neither appends nor the other witnesses), checks
//! each returned cosignature with the witness's key, and keeps the checkpoint with the most
//! cosignatures (the latest among equals) for `GetCheckpoint`. Reads the store only through
//! `log`; never blocks the writer.

use super::cosig::{self, CosignerVerifier};
use super::http::HttpClient;
use crate::log::{self, SignedCheckpoint};
use crate::storage::Storage;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Gauge: log entries the witness's latest cosigned checkpoint is behind the log (label
/// `witness`).
pub const WITNESS_LAG: &str = "celltrail_witness_lag_entries";
/// Counter: add-checkpoint calls by witness and result (`cosigned`, `conflict`, `refused`,
/// `unreachable`).
pub const WITNESS_SUBMISSIONS: &str = "celltrail_witness_submissions_total";
/// How often the latest checkpoint is offered to the witnesses, at most.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Cosigned checkpoints remembered (older sizes are dropped).
const KEEP: usize = 16;

/// A witness the log submits to: the URL prefix of its `add-checkpoint` and its key.
#[derive(Debug, Clone)]
pub struct WitnessTarget {
    pub url: String,
    pub key: CosignerVerifier,
}

impl WitnessTarget {
    /// Parses `URL=VKEY` (VKEY: `name+hash+base64(0x04||pub)`, as `celltrail witness` prints).
    pub fn parse(s: &str) -> Result<Self, String> {
        // Never echo the input: it may be a pasted private key.
        if crate::note::looks_like_private_key(s) {
            return Err(format!(
                "--witness: {}",
                crate::note::NoteError::PrivateKeyGiven
            ));
        }
        let (url, vkey) = s.split_once('=').ok_or_else(|| {
            "--witness: expected URL=VKEY (the witness's URL prefix and the key it printed)"
                .to_string()
        })?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(
                "--witness: expected URL=VKEY with a URL starting with http:// or https://"
                    .to_string(),
            );
        }
        let key = CosignerVerifier::from_key_string(vkey.trim())
            .map_err(|e| format!("witness {url}: {e}"))?;
        Ok(WitnessTarget {
            url: url.trim_end_matches('/').to_string(),
            key,
        })
    }
}

/// Parses every `--witness URL=VKEY`; a witness named twice is an error.
pub fn parse_targets(specs: &[String]) -> anyhow::Result<Vec<WitnessTarget>> {
    let mut out: Vec<WitnessTarget> = Vec::new();
    for s in specs {
        let t = WitnessTarget::parse(s).map_err(anyhow::Error::msg)?;
        if out.iter().any(|o| o.key == t.key) {
            anyhow::bail!("witness {} is given twice", t.key.name);
        }
        out.push(t);
    }
    Ok(out)
}

/// One witness's state as the log sees it.
#[derive(Debug, Clone, Default)]
pub struct WitnessStatus {
    pub name: String,
    /// Size of the latest checkpoint it cosigned (0: none yet).
    pub cosigned_size: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Inner {
    /// size → (the log's signed note, cosignature line per witness index).
    by_size: BTreeMap<u64, (String, BTreeMap<usize, String>)>,
    status: Vec<WitnessStatus>,
}

/// The cosigned checkpoints collected so far; shared with the gRPC service.
#[derive(Default)]
pub struct Cosigned {
    inner: Mutex<Inner>,
    witnesses: usize,
}

impl Cosigned {
    /// Number of configured witnesses.
    pub fn witnesses(&self) -> usize {
        self.witnesses
    }

    /// The checkpoint with the most cosignatures (the largest size among equals), as one
    /// signed note: the log's signature line(s) then every cosignature of that checkpoint.
    pub fn best(&self) -> Option<(u64, String)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_size
            .iter()
            .filter(|(_, (_, c))| !c.is_empty())
            .max_by_key(|(size, (_, c))| (c.len(), **size))
            .map(|(size, (note, c))| {
                let lines: Vec<String> = c.values().cloned().collect();
                (*size, cosig::add_lines(note, &lines))
            })
    }

    pub fn status(&self) -> Vec<WitnessStatus> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status
            .clone()
    }

    fn record(&self, i: usize, cp: &SignedCheckpoint, line: String) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_size
            .entry(cp.checkpoint.size)
            .or_insert_with(|| (cp.note.clone(), BTreeMap::new()))
            .1
            .insert(i, line);
        while g.by_size.len() > KEEP {
            let first = *g.by_size.keys().next().expect("non-empty");
            g.by_size.remove(&first);
        }
        g.status[i].cosigned_size = cp.checkpoint.size;
        g.status[i].last_error = None;
    }

    fn failed(&self, i: usize, why: String) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.status[i].last_error = Some(why);
    }
}

/// Starts one submitting task per witness (they end with the runtime). Returns the shared view of cosigned checkpoints.
pub fn start(store: Arc<dyn Storage>, targets: Vec<WitnessTarget>) -> Arc<Cosigned> {
    let cosigned = Arc::new(Cosigned {
        inner: Mutex::new(Inner {
            by_size: BTreeMap::new(),
            status: targets
                .iter()
                .map(|t| WitnessStatus {
                    name: t.key.name.clone(),
                    ..Default::default()
                })
                .collect(),
        }),
        witnesses: targets.len(),
    });
    let client = HttpClient::default();
    for (i, t) in targets.into_iter().enumerate() {
        tokio::spawn(follow(
            i,
            t,
            store.clone(),
            cosigned.clone(),
            client.clone(),
        ));
    }
    cosigned
}

/// What one submission did.
enum Outcome {
    /// The verified cosignature line.
    Cosigned(String),
    /// The witness's latest size differs from what we sent as old size.
    Conflict(u64),
    Failed(String),
}

async fn follow(
    i: usize,
    t: WitnessTarget,
    store: Arc<dyn Storage>,
    cosigned: Arc<Cosigned>,
    client: HttpClient,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The witness's latest cosigned size as we know it; learnt from a 409 when we guess wrong.
    let mut known: u64 = 0;
    let mut done: Option<u64> = None;
    loop {
        tick.tick().await;
        let s = store.clone();
        let cp = match tokio::task::spawn_blocking(move || log::checkpoint(s.as_ref())).await {
            Ok(Ok(Some(cp))) => cp,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                cosigned.failed(i, format!("reading the checkpoint: {e}"));
                continue;
            }
            Err(_) => return, // runtime shutting down
        };
        let lag = cp.checkpoint.size.saturating_sub(done.unwrap_or(0));
        metrics::gauge!(WITNESS_LAG, "witness" => t.key.name.clone()).set(lag as f64);
        if done == Some(cp.checkpoint.size) {
            continue;
        }
        // At most two tries: the second after a 409 told us the witness's size.
        for _ in 0..2 {
            let outcome = submit(&client, &t, &store, &cp, known).await;
            let result = match &outcome {
                Outcome::Cosigned(_) => "cosigned",
                Outcome::Conflict(_) => "conflict",
                Outcome::Failed(_) => "failed",
            };
            metrics::counter!(WITNESS_SUBMISSIONS, "witness" => t.key.name.clone(), "result" => result)
                .increment(1);
            match outcome {
                Outcome::Cosigned(line) => {
                    cosigned.record(i, &cp, line);
                    known = cp.checkpoint.size;
                    done = Some(known);
                    metrics::gauge!(WITNESS_LAG, "witness" => t.key.name.clone()).set(0.0);
                    break;
                }
                Outcome::Conflict(n) if n <= cp.checkpoint.size && n != known => known = n,
                Outcome::Conflict(n) => {
                    let why = format!(
                        "witness {} has cosigned size {n}, larger than this log's {}: the log was rolled back or forked",
                        t.key.name, cp.checkpoint.size
                    );
                    tracing::error!(witness = %t.key.name, "{why}");
                    cosigned.failed(i, why);
                    break;
                }
                Outcome::Failed(why) => {
                    tracing::warn!(witness = %t.key.name, "witness submission failed: {why}");
                    cosigned.failed(i, why);
                    break;
                }
            }
        }
    }
}

async fn submit(
    client: &HttpClient,
    t: &WitnessTarget,
    store: &Arc<dyn Storage>,
    cp: &SignedCheckpoint,
    old: u64,
) -> Outcome {
    let size = cp.checkpoint.size;
    let proof = if old == 0 || old >= size {
        Vec::new()
    } else {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || log::consistency_proof(s.as_ref(), old, size))
            .await
        {
            Ok(Ok(p)) => p.hashes,
            Ok(Err(e)) => return Outcome::Failed(format!("consistency proof {old}->{size}: {e}")),
            Err(e) => return Outcome::Failed(e.to_string()),
        }
    };
    let body = cosig::AddCheckpoint {
        old_size: old.min(size),
        proof,
        checkpoint: cp.note.clone(),
    }
    .to_body();
    let reply = match client
        .post(&format!("{}/add-checkpoint", t.url), body)
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("unreachable: {e}")),
    };
    match reply.status {
        200 => {
            let lines = cosig::cosignature_lines(
                &cosig::add_lines(&cp.note, std::slice::from_ref(&reply.body)),
                std::slice::from_ref(&t.key),
            );
            let note = cosig::add_lines(&cp.note, &lines);
            match cosig::verify_cosignatures(&note, std::slice::from_ref(&t.key)) {
                Ok(v) if !v.is_empty() => Outcome::Cosigned(lines.concat()),
                Ok(_) => {
                    Outcome::Failed("the answer holds no cosignature by the witness's key".into())
                }
                Err(e) => {
                    Outcome::Failed(format!("the witness's cosignature does not verify: {e}"))
                }
            }
        }
        409 => match reply.body.trim().parse::<u64>() {
            Ok(n) => Outcome::Conflict(n),
            Err(_) => Outcome::Failed(format!("409 with a malformed size {:?}", reply.body)),
        },
        s => Outcome::Failed(format!("HTTP {s}: {}", reply.body.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::NoteSigner;

    #[test]
    fn witness_specs_parse_and_a_pasted_private_key_is_never_echoed() {
        let k = NoteSigner::generate("w.example/w").unwrap();
        let v = super::super::cosig::Cosigner::from_note_signer(&k).verifier();
        let t = WitnessTarget::parse(&format!("http://h:1/=  {}", v.to_key_string())).unwrap();
        assert_eq!((t.url.as_str(), &t.key), ("http://h:1", &v));
        let secret = k.to_key_string();
        for bad in [
            secret.clone(),
            format!("http://h:1={secret}"),
            format!("h:1={}", v.to_key_string()),
            "no-equals".to_string(),
        ] {
            let e = WitnessTarget::parse(&bad).unwrap_err();
            // PRIVATE+KEY+name+hash+base64: the key material is the fifth field, whole (its
            // base64 may itself hold '+'; a short tail after one would match any message).
            let seed = secret.splitn(5, '+').nth(4).unwrap();
            assert!(seed.len() >= 40, "{secret}");
            assert!(!e.contains(seed), "{e}");
            assert!(e.starts_with("--witness"), "{e}");
        }
        let dup = vec![
            format!("http://a={}", v.to_key_string()),
            format!("http://b={}", v.to_key_string()),
        ];
        assert!(parse_targets(&dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
