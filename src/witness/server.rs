//! `celltrail witness`: a C2SP `tlog-witness` HTTP server. It cosigns a log's checkpoint only
//! when the checkpoint carries a valid signature by the log key it was configured with and is
//! consistent with the latest checkpoint it cosigned for that origin, so it never cosigns two
//! inconsistent trees or a smaller tree after a larger one. Its state (latest cosigned
//! checkpoint per origin) is a sled database in its own data directory; the check of the old
//! size and the write of the new state happen under one lock, and the state is flushed (fsync)
//! before a cosignature leaves the process, so a restart cannot roll it back.
//!
//! Routes (submission prefix = monitoring prefix = `/`):
//! `POST /add-checkpoint` and `GET /<hex SHA-256 of the origin>/checkpoint`.

use super::cosig::{AddCheckpoint, Cosigner};
use crate::merkle::{self, Hash};
use crate::note::{self, Checkpoint, NoteError, NoteVerifier};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Largest request body read (a checkpoint note and 63 proof lines fit many times over).
pub const MAX_BODY: usize = 64 * 1024;
/// Gauge: tree size of the latest checkpoint this witness cosigned, per log origin.
pub const COSIGNED_SIZE: &str = "celltrail_witness_cosigned_size";
/// Content type of a 409 answer (c2sp.org/tlog-witness).
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// A log the witness follows: its origin line and the keys that may sign its checkpoints.
#[derive(Debug, Clone)]
pub struct WitnessedLog {
    pub origin: String,
    pub keys: Vec<NoteVerifier>,
}

impl WitnessedLog {
    /// Parses `VKEY` (origin = the key's name) or `ORIGIN=VKEY`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (origin, vkey) = match (s.find('='), s.find('+')) {
            (Some(eq), Some(plus)) if eq < plus => (Some(&s[..eq]), &s[eq + 1..]),
            _ => (None, s),
        };
        // Never echo the input: it may be a pasted private key.
        let key = NoteVerifier::from_key_string(vkey)
            .map_err(|e| format!("--log: expected the log's VKEY or ORIGIN=VKEY: {e}"))?;
        Ok(WitnessedLog {
            origin: origin.map_or_else(|| key.name.clone(), str::to_string),
            keys: vec![key],
        })
    }
}

/// What the witness remembers per origin: the latest checkpoint it cosigned.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Latest {
    size: u64,
    #[serde(with = "b64hash")]
    root: Hash,
    /// The checkpoint with the log's verified signature(s) and this witness's cosignature.
    note: String,
}

mod b64hash {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    pub fn serialize<S: serde::Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(h))
    }
    pub fn deserialize<'d, D: serde::Deserializer<'d>>(d: D) -> Result<[u8; 32], D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        STANDARD
            .decode(s)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("not base64 of 32 bytes"))
    }
}

/// The witness: its key, the logs it follows and its persistent state.
pub struct Witness {
    cosigner: Cosigner,
    logs: HashMap<String, WitnessedLog>,
    latest: sled::Tree,
    /// Refused but validly signed checkpoints: possible evidence of log misbehaviour.
    evidence: sled::Tree,
    db: sled::Db,
    /// Serialises check-and-update of `latest` (the race the spec describes).
    lock: Mutex<()>,
}

/// The answer to one request: HTTP status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).expect("valid status codes only");
        (
            status,
            [(header::CONTENT_TYPE, self.content_type)],
            self.body,
        )
            .into_response()
    }
}

impl Witness {
    /// Opens (or creates) the witness state in `db_dir`.
    pub fn open(
        db_dir: &Path,
        cosigner: Cosigner,
        logs: Vec<WitnessedLog>,
    ) -> anyhow::Result<Self> {
        let db = sled::open(db_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the witness state {}: {e} (is another witness running on it?)",
                db_dir.display()
            )
        })?;
        let latest = db.open_tree("latest")?;
        let evidence = db.open_tree("evidence")?;
        let mut map = HashMap::new();
        for l in logs {
            if let Some(prev) = map.insert(l.origin.clone(), l) {
                anyhow::bail!(
                    "log origin {:?} is configured twice; give each origin once (with all its keys)",
                    prev.origin
                );
            }
        }
        Ok(Witness {
            cosigner,
            logs: map,
            latest,
            evidence,
            db,
            lock: Mutex::new(()),
        })
    }

    pub fn cosigner(&self) -> &Cosigner {
        &self.cosigner
    }

    fn load(&self, origin: &str) -> anyhow::Result<Option<Latest>> {
        match self.latest.get(origin.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
        }
    }

    /// The latest cosigned size per origin (for tests and status output).
    pub fn latest_size(&self, origin: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.load(origin)?.map(|l| l.size))
    }

    /// Handles an `add-checkpoint` request body. Blocking (sled flush): call off the runtime.
    pub fn add_checkpoint(&self, body: &[u8], now_secs: u64) -> Answer {
        match self.try_add(body, now_secs) {
            Ok(a) | Err(a) => a,
        }
    }

    fn try_add(&self, body: &[u8], now_secs: u64) -> Result<Answer, Answer> {
        let body = std::str::from_utf8(body)
            .map_err(|_| Answer::text(400, "malformed add-checkpoint request: not UTF-8"))?;
        let req = AddCheckpoint::parse(body).map_err(|e| Answer::text(400, e.to_string()))?;
        let (text, _) = note::split_note(&req.checkpoint).map_err(|e| {
            Answer::text(
                400,
                format!("malformed add-checkpoint request: checkpoint: {e}"),
            )
        })?;
        let cp = Checkpoint::parse(text)
            .map_err(|e| Answer::text(400, format!("malformed add-checkpoint request: {e}")))?;
        let log = self.logs.get(&cp.origin).ok_or_else(|| {
            Answer::text(
                404,
                format!(
                    "unknown log origin {:?}: this witness does not follow it",
                    cp.origin
                ),
            )
        })?;
        let opened = note::open_note(&req.checkpoint, &log.keys).map_err(|e| match e {
            NoteError::NoVerifiedSignature { .. } | NoteError::InvalidSignature { .. } => {
                Answer::text(
                    403,
                    format!(
                        "checkpoint of {:?} is not signed by its log key: {e}",
                        cp.origin
                    ),
                )
            }
            e => Answer::text(400, format!("malformed add-checkpoint request: {e}")),
        })?;
        if req.old_size > cp.size {
            return Err(Answer::text(
                400,
                format!(
                    "old size {} is larger than the checkpoint size {}",
                    req.old_size, cp.size
                ),
            ));
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let stored = self.load(&cp.origin).map_err(internal)?;
        let (stored_size, stored_root) = stored
            .as_ref()
            .map_or((0, merkle::empty_root()), |l| (l.size, l.root));
        if req.old_size != stored_size {
            return Err(Answer {
                status: 409,
                content_type: SIZE_CONTENT_TYPE,
                body: format!("{stored_size}\n"),
            });
        }
        let refuse = |why: String| -> Answer {
            self.keep_evidence(&cp.origin, &req.checkpoint, &why);
            Answer::text(422, why)
        };
        if cp.size == 0 && cp.root != merkle::empty_root() {
            return Err(refuse(
                "a checkpoint of size 0 must have the root of the empty tree".into(),
            ));
        }
        if req.old_size == 0 {
            if !req.proof.is_empty() {
                return Err(refuse(
                    "old size is 0: the consistency proof must be empty".into(),
                ));
            }
        } else if req.old_size == cp.size {
            if cp.root != stored_root || !req.proof.is_empty() {
                return Err(refuse(format!(
                    "checkpoint of size {} has a different root than the one this witness cosigned at that size: refusing a fork",
                    cp.size
                )));
            }
        } else if let Err(e) =
            merkle::verify_consistency(req.old_size, cp.size, &stored_root, &cp.root, &req.proof)
        {
            return Err(refuse(format!(
                "checkpoint of size {} is not consistent with the size {} this witness cosigned: {e}",
                cp.size, req.old_size
            )));
        }
        let line = self.cosigner.cosign(&opened.text, now_secs.max(1));
        // Keep the log's verified signature lines and add ours.
        let log_lines: Vec<String> = super::cosig::cosignature_lines_for(
            &req.checkpoint,
            &opened
                .verified
                .iter()
                .map(|(n, h)| (n.as_str(), *h))
                .collect::<Vec<_>>(),
        );
        let mut stored_note = format!("{}\n", opened.text);
        for l in &log_lines {
            stored_note.push_str(l);
        }
        stored_note.push_str(&line);
        let latest = Latest {
            size: cp.size,
            root: cp.root,
            note: stored_note,
        };
        let bytes = serde_json::to_vec(&latest).expect("state serializes");
        self.latest
            .insert(cp.origin.as_bytes(), bytes)
            .map_err(|e| internal(e.into()))?;
        self.db.flush().map_err(|e| internal(e.into()))?;
        metrics::gauge!(COSIGNED_SIZE, "origin" => cp.origin.clone()).set(cp.size as f64);
        Ok(Answer {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: line,
        })
    }

    fn keep_evidence(&self, origin: &str, checkpoint: &str, why: &str) {
        tracing::warn!(origin, why, "refused a validly signed checkpoint");
        let key = format!("{origin}\n{}", crate::time::now_nanos());
        let _ = self
            .evidence
            .insert(key.as_bytes(), format!("{why}\n\n{checkpoint}").as_bytes());
    }

    /// The latest cosigned checkpoint of the log whose origin hashes to `origin_hash`.
    pub fn checkpoint_by_hash(&self, origin_hash: &str) -> Answer {
        let Some(log) = self
            .logs
            .keys()
            .find(|o| hex::encode(Sha256::digest(o.as_bytes())) == origin_hash)
        else {
            return Answer::text(404, "unknown log: no followed origin has this SHA-256");
        };
        match self.load(log) {
            Ok(Some(l)) => Answer {
                status: 200,
                content_type: "text/plain; charset=utf-8",
                body: l.note,
            },
            Ok(None) => Answer::text(
                404,
                "this witness has not cosigned a checkpoint of the log yet",
            ),
            Err(e) => internal(e),
        }
    }
}

fn internal(e: anyhow::Error) -> Answer {
    tracing::error!(error = %e, "witness state failed");
    Answer::text(
        500,
        format!("witness state failed: {e}; nothing was cosigned"),
    )
}

/// The HTTP routes of a witness.
pub fn router(w: Arc<Witness>) -> axum::Router {
    axum::Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/{origin_hash}/checkpoint", get(get_checkpoint))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(w)
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Answer {
    let now = crate::time::now_nanos() / 1_000_000_000;
    tokio::task::spawn_blocking(move || w.add_checkpoint(&body, now.max(1) as u64))
        .await
        .unwrap_or_else(|e| Answer::text(500, format!("witness task failed: {e}")))
}

async fn get_checkpoint(
    State(w): State<Arc<Witness>>,
    UrlPath(origin_hash): UrlPath<String>,
) -> Answer {
    tokio::task::spawn_blocking(move || w.checkpoint_by_hash(&origin_hash))
        .await
        .unwrap_or_else(|e| Answer::text(500, format!("witness task failed: {e}")))
}

/// Serves the witness on `listener` until `shutdown` resolves, then flushes its state.
pub async fn run(
    listener: tokio::net::TcpListener,
    w: Arc<Witness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(w.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    w.db.flush()?;
    Ok(())
}
