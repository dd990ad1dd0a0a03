//! The PostgreSQL store: the ledger's data in a PostgreSQL database, for deployments where
//! several celltrail servers share one replicated database (one writer, standbys that serve
//! reads and take over; see `lease`).
//!
//! Tables (schema `celltrail`, see `schema`): `entries` (index → the exact signed entry bytes,
//! with event hash, chain id and seq), `heads` (with the open hold's reasons), `summaries`
//! (the console worklist's row per chain), `nodes` (every completed Merkle subtree hash,
//! leaves included), `bags`, `log` (tree size and latest checkpoint, one row), `lease` (the
//! writer lease, one row). One group commit is one transaction that first proves the writer's
//! lease epoch (row locked `FOR SHARE`) and that the tree size is the one the group was built
//! on, then writes everything; it returns only after PostgreSQL reported the commit, which with
//! `synchronous_commit` on (checked at start) means the WAL is flushed (and with
//! `synchronous_standby_names` set, also on a synchronous standby).
//!
//! The rest of celltrail calls the store from plain threads (the writer, `spawn_blocking`
//! readers) and sometimes from async tasks; this store owns a small tokio runtime that drives
//! its connections, and each call waits for its query on a std channel, so it works from any
//! thread, inside or outside a runtime.

pub mod lease;
pub mod schema;
mod storage_impl;

use crate::crypto::EventHash;
use crate::role::Role;
use crate::rules::Head;
use crate::storage::Group;
use crate::summary::ChainSummary;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::sync::Arc;

/// Everything that can go wrong in the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "invalid PostgreSQL URL: {0} (expected postgres://USER@HOST:PORT/DB or key=value pairs)"
    )]
    Url(String),
    #[error("cannot reach PostgreSQL: {0}")]
    Connect(String),
    #[error("PostgreSQL failed: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Refused(String),
    #[error("the ledger store is corrupt: {0}")]
    Corrupt(String),
    /// This server does not hold the writer lease (or lost it): nothing was written.
    #[error("this server is not the writer (lease epoch {held:?}, current {current}); nothing was written")]
    Fenced { held: Option<u64>, current: u64 },
    /// The tree size changed under the group: another writer committed. Nothing was written.
    #[error("the log grew to {found} entries under this group (expected {expected}): another writer committed; nothing was written")]
    Conflict { expected: u64, found: u64 },
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Db(e),
            other => PgError::Connect(other.to_string()),
        }
    }
}

/// Settings of a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (the writer takes one per group; readers share the rest).
    pub pool_size: usize,
    /// PostgreSQL ends a session that sits idle inside a transaction this long (a paused
    /// writer's open transaction must not block the takeover for long).
    pub idle_in_transaction: std::time::Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 8,
            idle_in_transaction: std::time::Duration::from_secs(2),
        }
    }
}

/// A celltrail ledger store in PostgreSQL.
pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// Lease fencing: when set, a commit must hold the current lease epoch.
    role: Option<Arc<Role>>,
    /// The URL with any password removed (for messages).
    shown: String,
}

fn i64_of(v: u64, what: &str) -> Result<i64, PgError> {
    i64::try_from(v)
        .map_err(|_| PgError::Corrupt(format!("{what} {v} does not fit PostgreSQL's bigint")))
}

fn u64_of(v: i64, what: &str) -> Result<u64, PgError> {
    u64::try_from(v).map_err(|_| PgError::Corrupt(format!("{what} is negative ({v})")))
}

fn hash32(v: &[u8], what: &str) -> Result<[u8; 32], PgError> {
    v.try_into()
        .map_err(|_| PgError::Corrupt(format!("{what} is {} bytes, expected 32", v.len())))
}

/// The URL without its password, for logs and messages (never echo a secret).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.rsplit_once('@') {
            let user = userinfo.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}@{host}");
        }
        return url.to_string();
    }
    // key=value form: drop password=...
    url.split_whitespace()
        .filter(|kv| !kv.starts_with("password="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `s` names a PostgreSQL database rather than a directory.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl PgStore {
    /// Connects, checks the server's durability settings, applies missing migrations.
    /// `role` turns on lease fencing (servers); without it commits are unfenced (a tool that
    /// holds the lease itself, or tests).
    pub fn open(url: &str, role: Option<Arc<Role>>, opts: &PgOptions) -> Result<PgStore, PgError> {
        let store = Self::connect(url, role, opts)?;
        let pool = store.pool.clone();
        let shown = store.shown.clone();
        store.run(async move {
            let mut client = pool
                .get()
                .await
                .map_err(|e| PgError::Connect(format!("{shown}: {e}")))?;
            check_durability(&client).await?;
            schema::migrate(&mut client).await?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Opens an existing celltrail database for reading only (an auditor's `verify --store`,
    /// the source of `migrate`): never writes, so a read-only role is enough. Refuses a
    /// database without the celltrail schema or of a newer schema version.
    pub fn open_for_audit(url: &str) -> Result<PgStore, PgError> {
        let store = Self::connect(url, None, &PgOptions::default())?;
        let pool = store.pool.clone();
        let shown = store.shown.clone();
        store.run(async move {
            let client = pool
                .get()
                .await
                .map_err(|e| PgError::Connect(format!("{shown}: {e}")))?;
            let row = client
                .query_one(
                    "SELECT to_regclass('celltrail.schema_migrations') IS NOT NULL",
                    &[],
                )
                .await?;
            if !row.get::<_, bool>(0) {
                return Err(PgError::Refused(format!(
                    "{shown} holds no celltrail ledger (no schema celltrail)"
                )));
            }
            let version: i32 = client
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM celltrail.schema_migrations",
                    &[],
                )
                .await?
                .get(0);
            if version > schema::latest() {
                return Err(PgError::Refused(format!(
                    "the database's celltrail schema is at version {version}, written by a newer \
                     celltrail; this one reads up to version {}",
                    schema::latest()
                )));
            }
            Ok(())
        })?;
        Ok(store)
    }

    fn connect(url: &str, role: Option<Arc<Role>>, opts: &PgOptions) -> Result<PgStore, PgError> {
        let shown = redact_url(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Url(format!("{shown}: {e}")))?;
        if config.get_password().is_none() {
            if let Ok(pw) = std::env::var("PGPASSWORD") {
                config.password(pw);
            }
        }
        config.application_name("celltrail");
        config.options(format!(
            "-c idle_in_transaction_session_timeout={}",
            opts.idle_in_transaction.as_millis().max(1)
        ));
        config.connect_timeout(std::time::Duration::from_secs(5));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("celltrail-pg")
            .enable_all()
            .build()
            .map_err(|e| {
                PgError::Connect(format!("cannot start the PostgreSQL client runtime: {e}"))
            })?;
        let mgr = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _guard = rt.enter();
            Pool::builder(mgr)
                .max_size(opts.pool_size.max(2))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(std::time::Duration::from_secs(10)))
                .create_timeout(Some(std::time::Duration::from_secs(5)))
                .build()
                .map_err(|e| PgError::Connect(e.to_string()))?
        };
        Ok(PgStore {
            rt: Some(rt),
            pool,
            role,
            shown,
        })
    }

    /// The URL this store was opened with, password removed.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Runs `f` on the store's runtime and waits for it (from any thread).
    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, PgError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt
            .as_ref()
            .expect("runtime lives until drop")
            .spawn(async move {
                let _ = tx.send(f.await);
            });
        rx.recv()
            .unwrap_or_else(|_| Err(PgError::Connect("the PostgreSQL client stopped".into())))
    }

    /// One query's rows, through a pooled connection (statements cached per connection).
    fn query(
        &self,
        sql: &'static str,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
    ) -> Result<Vec<tokio_postgres::Row>, PgError> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(sql).await?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            Ok(client.query(&stmt, &refs).await?)
        })
    }

    pub fn tree_size(&self) -> Result<u64, PgError> {
        let rows = self.query("SELECT tree_size FROM celltrail.log WHERE id = 1", vec![])?;
        let row = rows
            .first()
            .ok_or_else(|| PgError::Corrupt("the celltrail.log row is missing".into()))?;
        u64_of(row.get(0), "tree size")
    }

    /// Tree size and checkpoint read together (one row, so always a consistent cut).
    pub fn log_row(&self) -> Result<(u64, Option<String>), PgError> {
        let rows = self.query(
            "SELECT tree_size, checkpoint FROM celltrail.log WHERE id = 1",
            vec![],
        )?;
        let row = rows
            .first()
            .ok_or_else(|| PgError::Corrupt("the celltrail.log row is missing".into()))?;
        Ok((u64_of(row.get(0), "tree size")?, row.get(1)))
    }

    /// A meta value set by an earlier group.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, PgError> {
        let rows = self.query(
            "SELECT value FROM celltrail.meta WHERE key = $1",
            vec![Box::new(key.to_string())],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// Bytes PostgreSQL uses for the celltrail tables and their indexes.
    pub fn size_on_disk(&self) -> Result<u64, PgError> {
        let rows = self.query(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'celltrail' AND c.relkind = 'r'",
            vec![],
        )?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0).max(0) as u64)
    }

    pub fn checkpoint(&self) -> Result<Option<String>, PgError> {
        let rows = self.query("SELECT checkpoint FROM celltrail.log WHERE id = 1", vec![])?;
        Ok(rows.first().and_then(|r| r.get::<_, Option<String>>(0)))
    }

    pub fn head(&self, chain_id: &str) -> Result<Option<Head>, PgError> {
        let rows = self.query(
            "SELECT seq, hash, state_name, hold FROM celltrail.heads WHERE chain_id = $1",
            vec![Box::new(chain_id.to_string())],
        )?;
        rows.first()
            .map(|r| {
                Ok(Head {
                    seq: u64_of(r.get(0), "head seq")?,
                    hash: hash32(r.get(1), "head hash")?,
                    state_name: r.get(2),
                    state: None,
                    hold: serde_json::from_slice(r.get::<_, &[u8]>(3))
                        .map_err(|e| PgError::Corrupt(format!("hold of chain {chain_id}: {e}")))?,
                })
            })
            .transpose()
    }

    /// The stored summary of a chain (`None` for a chain without one).
    pub fn chain_summary(&self, chain_id: &str) -> Result<Option<ChainSummary>, PgError> {
        let rows = self.query(
            "SELECT summary FROM celltrail.summaries WHERE chain_id = $1",
            vec![Box::new(chain_id.to_string())],
        )?;
        rows.first()
            .map(|r| {
                ChainSummary::from_bytes(r.get(0))
                    .ok_or_else(|| PgError::Corrupt(format!("summary of chain {chain_id}")))
            })
            .transpose()
    }

    /// Every custody chain's summary in chain id order; a chain without a stored summary
    /// (copied in by `migrate`) is listed with its head's state only. One query.
    pub fn chain_summaries(&self) -> Result<Vec<ChainSummary>, PgError> {
        let rows = self.query(
            "SELECT h.chain_id, h.seq, h.state_name, s.summary FROM celltrail.heads h \
             LEFT JOIN celltrail.summaries s ON s.chain_id = h.chain_id \
             WHERE h.chain_id <> $1 AND h.chain_id <> $2 ORDER BY h.chain_id",
            vec![
                Box::new(crate::registry::KEYS_CHAIN.to_string()),
                Box::new(crate::loglink::LOG_CHAIN.to_string()),
            ],
        )?;
        rows.iter()
            .map(|r| {
                let chain: String = r.get(0);
                match r.get::<_, Option<&[u8]>>(3) {
                    Some(b) => ChainSummary::from_bytes(b)
                        .ok_or_else(|| PgError::Corrupt(format!("summary of chain {chain}"))),
                    None => Ok(ChainSummary::from_head(
                        &chain,
                        r.get(2),
                        u64_of(r.get(1), "head seq")?,
                    )),
                }
            })
            .collect()
    }

    pub fn index_of_hash(&self, hash: &EventHash) -> Result<Option<u64>, PgError> {
        let rows = self.query(
            "SELECT idx FROM celltrail.entries WHERE event_hash = $1",
            vec![Box::new(hash.0.to_vec())],
        )?;
        rows.first().map(|r| u64_of(r.get(0), "index")).transpose()
    }

    pub fn chains_of_bag(&self, din: &str) -> Result<Vec<String>, PgError> {
        let rows = self.query(
            "SELECT chain_id FROM celltrail.bags WHERE din = $1 ORDER BY chain_id",
            vec![Box::new(din.to_string())],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub fn bag_in_chain(&self, din: &str, chain_id: &str) -> Result<bool, PgError> {
        let rows = self.query(
            "SELECT 1 FROM celltrail.bags WHERE din = $1 AND chain_id = $2",
            vec![Box::new(din.to_string()), Box::new(chain_id.to_string())],
        )?;
        Ok(!rows.is_empty())
    }

    pub fn chain_event(&self, chain_id: &str, seq: u64) -> Result<Option<u64>, PgError> {
        let rows = self.query(
            "SELECT idx FROM celltrail.entries WHERE chain_id = $1 AND seq = $2",
            vec![
                Box::new(chain_id.to_string()),
                Box::new(i64_of(seq, "seq")?),
            ],
        )?;
        rows.first().map(|r| u64_of(r.get(0), "index")).transpose()
    }

    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, PgError> {
        let rows = self.query(
            "SELECT bytes FROM celltrail.entries WHERE idx = $1",
            vec![Box::new(i64_of(index, "index")?)],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// Up to `limit` entries from `start` on, in index order.
    pub fn entries_from(&self, start: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
        let rows = self.query(
            "SELECT idx, bytes FROM celltrail.entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
            vec![
                Box::new(i64_of(start, "index")?),
                Box::new(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )?;
        rows.iter()
            .map(|r| Ok((u64_of(r.get(0), "index")?, r.get(1))))
            .collect()
    }

    /// Global indices of a chain's events in seq order.
    pub fn chain_indices(&self, chain_id: &str) -> Result<Vec<u64>, PgError> {
        let rows = self.query(
            "SELECT idx FROM celltrail.entries WHERE chain_id = $1 ORDER BY seq",
            vec![Box::new(chain_id.to_string())],
        )?;
        rows.iter().map(|r| u64_of(r.get(0), "index")).collect()
    }

    /// Ids of every chain, in byte order.
    pub fn chain_ids(&self) -> Result<Vec<String>, PgError> {
        let rows = self.query(
            "SELECT chain_id FROM celltrail.heads ORDER BY chain_id",
            vec![],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Hash of the perfect subtree (level, index), if it was completed.
    pub fn node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>, PgError> {
        let level = i16::try_from(level).map_err(|_| PgError::Corrupt(format!("level {level}")))?;
        let rows = self.query(
            "SELECT hash FROM celltrail.nodes WHERE level = $1 AND idx = $2",
            vec![Box::new(level), Box::new(i64_of(index, "node index")?)],
        )?;
        rows.first()
            .map(|r| hash32(r.get(0), "node hash"))
            .transpose()
    }

    /// The leaf hash recorded for entry `index` when it was appended.
    pub fn recorded_leaf(&self, index: u64) -> Result<Option<[u8; 32]>, PgError> {
        self.node(0, index)
    }

    /// Nothing to do: a commit is durable when it returns.
    pub fn flush(&self) -> Result<(), PgError> {
        Ok(())
    }

    /// Writes one group in one transaction that first proves the lease epoch (when fenced)
    /// and the tree size the group was built on. Returns after PostgreSQL reported the commit.
    pub fn commit(&self, batch: &Group) -> Result<(), PgError> {
        let held = match &self.role {
            Some(role) => match role.epoch() {
                Some(e) => Some(e),
                None => {
                    return Err(PgError::Fenced {
                        held: None,
                        current: 0,
                    })
                }
            },
            None => None,
        };
        let base = batch.tree_size - batch.entries.len() as u64;
        let w = WriteSet::of(batch)?;
        let pool = self.pool.clone();
        let new_size = i64_of(batch.tree_size, "tree size")?;
        let base_i = i64_of(base, "tree size")?;
        let checkpoint = batch.checkpoint.clone();
        let result = self.run(async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            // Every statement of the group is sent at once (tokio-postgres pipelines queries
            // polled together), each prepared once per connection (a statement given as text
            // would cost a round trip of its own to prepare, every group); the answers are
            // checked before COMMIT, so a stale epoch or tree size still commits nothing.
            let lease = async {
                match held {
                    Some(_) => {
                        let s = tx
                            .prepare_cached(
                                "SELECT epoch FROM celltrail.lease WHERE id = 1 FOR SHARE",
                            )
                            .await?;
                        tx.query_one(&s, &[]).await.map(Some)
                    }
                    None => Ok(None),
                }
            };
            let log_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                [&new_size, &checkpoint, &base_i];
            let log = async {
                let s = tx
                    .prepare_cached(
                        "UPDATE celltrail.log SET tree_size = $1, \
                         checkpoint = coalesce($2, checkpoint) WHERE id = 1 AND tree_size = $3",
                    )
                    .await?;
                tx.execute(&s, &log_params).await
            };
            let (lease, log, written) = futures_util::future::join3(lease, log, w.write(&tx)).await;
            let checked = (|| {
                if let (Some(held), Some(row)) = (held, lease?) {
                    let current = u64_of(row.get(0), "lease epoch")?;
                    if current != held {
                        return Err(PgError::Fenced {
                            held: Some(held),
                            current,
                        });
                    }
                }
                if log? != 1 {
                    return Err(PgError::Conflict {
                        expected: base,
                        found: base, // read again below, after the rollback
                    });
                }
                written
            })();
            if let Err(e) = checked {
                // Nothing of the group is committed. Which statement failed first depends on
                // the pipeline's order, so say why from the committed state: a newer lease
                // epoch (fenced), another tree size (conflict), else the error itself.
                tx.rollback().await?;
                if let Some(held) = held {
                    let row = client
                        .query_one("SELECT epoch FROM celltrail.lease WHERE id = 1", &[])
                        .await?;
                    let current = u64_of(row.get(0), "lease epoch")?;
                    if current != held {
                        return Err(PgError::Fenced {
                            held: Some(held),
                            current,
                        });
                    }
                }
                let found: i64 = client
                    .query_one("SELECT tree_size FROM celltrail.log WHERE id = 1", &[])
                    .await?
                    .get(0);
                let found = found.max(0) as u64;
                if found != base {
                    return Err(PgError::Conflict {
                        expected: base,
                        found,
                    });
                }
                return Err(e);
            }
            tx.commit().await?;
            Ok(())
        });
        if let (Err(PgError::Fenced { .. }), Some(role)) = (&result, &self.role) {
            role.step_down(None);
        }
        result
    }
}

/// A group's rows as column arrays, for one `INSERT … SELECT FROM unnest(…)` per table.
struct WriteSet {
    e_idx: Vec<i64>,
    e_bytes: Vec<Vec<u8>>,
    e_hash: Vec<Vec<u8>>,
    e_chain: Vec<String>,
    e_seq: Vec<i64>,
    h_chain: Vec<String>,
    h_seq: Vec<i64>,
    h_hash: Vec<Vec<u8>>,
    h_state: Vec<String>,
    h_hold: Vec<Vec<u8>>,
    s_chain: Vec<String>,
    s_summary: Vec<Vec<u8>>,
    n_level: Vec<i16>,
    n_idx: Vec<i64>,
    n_hash: Vec<Vec<u8>>,
    b_din: Vec<String>,
    b_chain: Vec<String>,
    b_idx: Vec<i64>,
    m_key: Vec<String>,
    m_value: Vec<Vec<u8>>,
}

impl WriteSet {
    fn of(batch: &Group) -> Result<WriteSet, PgError> {
        let mut w = WriteSet {
            e_idx: vec![],
            e_bytes: vec![],
            e_hash: vec![],
            e_chain: vec![],
            e_seq: vec![],
            h_chain: vec![],
            h_seq: vec![],
            h_hash: vec![],
            h_state: vec![],
            h_hold: vec![],
            s_chain: vec![],
            s_summary: vec![],
            n_level: vec![],
            n_idx: vec![],
            n_hash: vec![],
            b_din: vec![],
            b_chain: vec![],
            b_idx: vec![],
            m_key: vec![],
            m_value: vec![],
        };
        for e in &batch.entries {
            w.e_idx.push(i64_of(e.index, "index")?);
            w.e_bytes.push(e.bytes.clone());
            w.e_hash.push(e.event_hash.0.to_vec());
            w.e_chain.push(e.chain_id.clone());
            w.e_seq.push(i64_of(e.seq, "seq")?);
        }
        for (id, h) in &batch.heads {
            w.h_chain.push(id.clone());
            w.h_seq.push(i64_of(h.seq, "seq")?);
            w.h_hash.push(h.hash.to_vec());
            w.h_state.push(h.state_name.clone());
            w.h_hold
                .push(serde_json::to_vec(&h.hold).expect("strings serialize"));
        }
        for (id, summary) in &batch.summaries {
            w.s_chain.push(id.clone());
            w.s_summary.push(summary.to_bytes());
        }
        for ((level, index), hash) in &batch.nodes {
            w.n_level.push(
                i16::try_from(*level).map_err(|_| PgError::Corrupt(format!("level {level}")))?,
            );
            w.n_idx.push(i64_of(*index, "node index")?);
            w.n_hash.push(hash.to_vec());
        }
        for (key, value) in &batch.meta {
            w.m_key.push(key.clone());
            w.m_value.push(value.clone());
        }
        for (din, chain, index) in &batch.bags {
            w.b_din.push(din.clone());
            w.b_chain.push(chain.clone());
            w.b_idx.push(i64_of(*index, "index")?);
        }
        Ok(w)
    }

    async fn write(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), PgError> {
        type Sql<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
        let mut statements: Vec<(&'static str, Vec<Sql<'_>>)> = Vec::new();
        if !self.e_idx.is_empty() {
            statements.push((
                "INSERT INTO celltrail.entries (idx, bytes, event_hash, chain_id, seq) \
                 SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::text[], $5::bigint[])",
                vec![&self.e_idx, &self.e_bytes, &self.e_hash, &self.e_chain, &self.e_seq],
            ));
        }
        if !self.h_chain.is_empty() {
            statements.push((
                "INSERT INTO celltrail.heads (chain_id, seq, hash, state_name, hold) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::text[], $5::bytea[]) \
                 ON CONFLICT (chain_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
                 state_name = excluded.state_name, hold = excluded.hold",
                vec![&self.h_chain, &self.h_seq, &self.h_hash, &self.h_state, &self.h_hold],
            ));
        }
        if !self.s_chain.is_empty() {
            statements.push((
                "INSERT INTO celltrail.summaries (chain_id, summary) \
                 SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (chain_id) DO UPDATE SET summary = excluded.summary",
                vec![&self.s_chain, &self.s_summary],
            ));
        }
        if !self.n_idx.is_empty() {
            statements.push((
                "INSERT INTO celltrail.nodes (level, idx, hash) \
                 SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[]) \
                 ON CONFLICT DO NOTHING",
                vec![&self.n_level, &self.n_idx, &self.n_hash],
            ));
        }
        if !self.b_din.is_empty() {
            statements.push((
                "INSERT INTO celltrail.bags (din, chain_id, idx) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) \
                 ON CONFLICT DO NOTHING",
                vec![&self.b_din, &self.b_chain, &self.b_idx],
            ));
        }
        if !self.m_key.is_empty() {
            statements.push((
                "INSERT INTO celltrail.meta (key, value) \
                 SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                vec![&self.m_key, &self.m_value],
            ));
        }
        // Sent together (pipelined); PostgreSQL runs them in order within the transaction.
        let results = futures_util::future::join_all(statements.into_iter().map(
            |(sql, params)| async move {
                let s = tx.prepare_cached(sql).await?;
                tx.execute(&s, &params).await?;
                Ok::<(), PgError>(())
            },
        ))
        .await;
        results.into_iter().collect()
    }
}

/// Refuses a database on which a reported commit might not be durable.
async fn check_durability(client: &tokio_postgres::Client) -> Result<(), PgError> {
    let sync: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    if sync == "off" {
        return Err(PgError::Refused(
            "PostgreSQL has synchronous_commit=off: it reports a commit before the commit is on \
             disk, so a receipt could name an event that a crash then loses. Set \
             synchronous_commit to on (or remote_apply with a synchronous standby) for the \
             database or role celltrail uses (ALTER ROLE … SET synchronous_commit = on)"
                .into(),
        ));
    }
    let fsync: String = client.query_one("SHOW fsync", &[]).await?.get(0);
    if fsync == "off" {
        return Err(PgError::Refused(
            "PostgreSQL runs with fsync=off: committed data may not survive a crash, so celltrail \
             cannot give durable receipts. Turn fsync on in postgresql.conf"
                .into(),
        ));
    }
    Ok(())
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Never blocks, so dropping the store inside an async task is fine.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
