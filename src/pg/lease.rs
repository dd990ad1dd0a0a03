//! The writer lease: one row in `celltrail.lease` decides which of the servers sharing a
//! database may write.
//!
//! A server that finds the lease free or expired takes it by raising its `epoch` by one
//! (one UPDATE, so two servers can never both win an epoch). The writer renews it every
//! `interval`; the lease expires `ttl` after the last renewal, by the database's clock. Every
//! group commit locks the row `FOR SHARE` and checks its epoch (see `PgStore::commit`), so once
//! a standby has taken over, the old writer — paused, partitioned or just slow — can commit
//! nothing; it learns it lost the lease at its next renewal or commit and steps down. A paused
//! writer's open transaction would hold the row lock: PostgreSQL ends it after
//! `idle_in_transaction_session_timeout` (set by the store), and a takeover waits for a lock
//! at most `LOCK_WAIT` per attempt.

use super::{u64_of, PgError, PgStore};
use crate::role::Role;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timing of the lease. Takeover after a writer's loss takes at most `ttl + interval` plus the
/// time to reload the ledger's state.
#[derive(Debug, Clone)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub interval: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            ttl: Duration::from_secs(2),
            interval: Duration::from_millis(250),
        }
    }
}

/// Longest a takeover or renewal waits for the lease row's lock in one attempt.
const LOCK_WAIT: &str = "500ms";

/// The lease row as read.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseState {
    pub epoch: u64,
    pub holder: Option<String>,
    pub address: Option<String>,
    pub expired: bool,
}

impl PgStore {
    /// Takes the lease if it is free, expired or already ours; returns the new epoch.
    pub fn try_acquire_lease(
        &self,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, PgError> {
        let pool = self.pool.clone();
        let (holder, address) = (holder.to_string(), address.to_string());
        let ttl = ttl.as_secs_f64();
        self.run(async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
                .await?;
            let rows = match tx
                .query(
                    "UPDATE celltrail.lease SET epoch = epoch + 1, holder = $1, address = $2, \
                     expires_at = now() + make_interval(secs => $3) \
                     WHERE id = 1 AND (holder IS NULL OR expires_at IS NULL \
                                       OR expires_at < now() OR holder = $1) \
                     RETURNING epoch",
                    &[&holder, &address, &ttl],
                )
                .await
            {
                Ok(rows) => rows,
                Err(e) if is_lock_timeout(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            tx.commit().await?;
            rows.first()
                .map(|r| u64_of(r.get(0), "lease epoch"))
                .transpose()
        })
    }

    /// Extends the lease of `epoch`; false if it is no longer ours.
    pub fn renew_lease(&self, epoch: u64, ttl: Duration) -> Result<bool, PgError> {
        let pool = self.pool.clone();
        let ttl = ttl.as_secs_f64();
        let epoch = super::i64_of(epoch, "epoch")?;
        self.run(async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
                .await?;
            let n = tx
                .execute(
                    "UPDATE celltrail.lease SET expires_at = now() + make_interval(secs => $2) \
                     WHERE id = 1 AND epoch = $1",
                    &[&epoch, &ttl],
                )
                .await?;
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Lets the lease expire now (a clean shutdown), so a standby takes over at once.
    pub fn release_lease(&self, epoch: u64) -> Result<(), PgError> {
        let pool = self.pool.clone();
        let epoch = super::i64_of(epoch, "epoch")?;
        self.run(async move {
            let client = pool.get().await?;
            client
                .execute(
                    "UPDATE celltrail.lease SET expires_at = now() - interval '1 second' \
                     WHERE id = 1 AND epoch = $1",
                    &[&epoch],
                )
                .await?;
            Ok(())
        })
    }

    /// The lease row.
    pub fn lease(&self) -> Result<LeaseState, PgError> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await?;
            let r = client
                .query_one(
                    "SELECT epoch, holder, address, coalesce(expires_at < now(), true) \
                     FROM celltrail.lease WHERE id = 1",
                    &[],
                )
                .await?;
            Ok(LeaseState {
                epoch: u64_of(r.get(0), "lease epoch")?,
                holder: r.get(1),
                address: r.get(2),
                expired: r.get(3),
            })
        })
    }
}

fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// Keeps `role` in step with the lease: renews it while this server writes, tries to take
/// it while it does not. Runs on its own thread until stopped; on stop a writer releases the
/// lease so a standby takes over without waiting for it to expire.
pub struct LeaseKeeper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts keeping the lease for a server that clients reach at `address`. `holder`
    /// names this process uniquely (it is stored in the lease row).
    pub fn start(
        store: Arc<PgStore>,
        role: Arc<Role>,
        holder: String,
        address: String,
        timing: LeaseTiming,
    ) -> LeaseKeeper {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("celltrail-lease".into())
            .spawn(move || keep(&store, &role, &holder, &address, &timing, &stopping))
            .expect("spawn the lease thread");
        LeaseKeeper {
            stop,
            thread: Some(thread),
        }
    }

    /// One round now, on the caller's thread (servers call it once before serving, so the
    /// first server of a database is the writer from its first request).
    pub fn round(
        store: &PgStore,
        role: &Role,
        holder: &str,
        address: &str,
        timing: &LeaseTiming,
        last_renewed: &mut Instant,
    ) {
        match role.epoch() {
            Some(epoch) => match store.renew_lease(epoch, timing.ttl) {
                Ok(true) => *last_renewed = Instant::now(),
                Ok(false) => {
                    let writer = store.lease().ok().and_then(|l| l.address);
                    tracing::warn!(epoch, writer = ?writer, "lost the writer lease: stepping down to standby");
                    role.step_down(writer);
                }
                Err(e) => {
                    if last_renewed.elapsed() > timing.ttl {
                        tracing::warn!(error = %e, "cannot renew the writer lease: stepping down to standby");
                        role.step_down(None);
                    }
                }
            },
            None => match store.try_acquire_lease(holder, address, timing.ttl) {
                Ok(Some(epoch)) => {
                    tracing::info!(epoch, "holding the writer lease: this server now writes");
                    *last_renewed = Instant::now();
                    role.become_writer(epoch, address);
                }
                Ok(None) => {
                    if let Ok(l) = store.lease() {
                        role.set_writer_address(l.address.filter(|_| !l.expired));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot take the writer lease"),
            },
        }
    }

    /// Stops the thread; a writer releases its lease.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

fn keep(
    store: &PgStore,
    role: &Role,
    holder: &str,
    address: &str,
    timing: &LeaseTiming,
    stop: &AtomicBool,
) {
    let mut last_renewed = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        LeaseKeeper::round(store, role, holder, address, timing, &mut last_renewed);
        std::thread::sleep(timing.interval);
    }
    if let Some(epoch) = role.epoch() {
        role.step_down(None);
        if let Err(e) = store.release_lease(epoch) {
            tracing::warn!(error = %e, "cannot release the writer lease; a standby takes over when it expires");
        }
    }
}

/// A holder name unique to this process: host, pid and a random suffix.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    )
}

/// A server's PostgreSQL store with its lease: opened as a standby, one lease round run at
/// once (the first server of a database writes from its first request), then kept by a
/// thread. Drop the keeper after the ledger has drained, so a clean stop hands the lease over.
pub struct ServerStore {
    pub store: Arc<PgStore>,
    pub role: Arc<Role>,
    pub keeper: LeaseKeeper,
}

impl ServerStore {
    /// `advertise` is the address clients dial to reach this server (a standby names it).
    pub fn open(
        url: &str,
        advertise: &str,
        opts: &super::PgOptions,
        timing: LeaseTiming,
    ) -> Result<ServerStore, PgError> {
        let role = Arc::new(Role::standby());
        let store = Arc::new(PgStore::open(url, Some(role.clone()), opts)?);
        let holder = holder_name();
        let mut renewed = Instant::now();
        LeaseKeeper::round(&store, &role, &holder, advertise, &timing, &mut renewed);
        let keeper = LeaseKeeper::start(
            store.clone(),
            role.clone(),
            holder,
            advertise.to_string(),
            timing,
        );
        Ok(ServerStore {
            store,
            role,
            keeper,
        })
    }
}
