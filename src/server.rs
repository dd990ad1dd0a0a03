//! `celltrail serve`: opens (or creates) a data directory and runs the gRPC server on it.
//!
//! A first start with zero configuration creates the data directory (layout: `datadir`): the
//! store, the log key and, when no trust-anchor file existed, a first admin key whose path and
//! verifier key are printed once.

use crate::datadir::DataDir;
use crate::keys::{
    read_trust_anchors, write_encrypted_key_file, write_key_file, KeyFile, Passphrase,
};
use crate::ledger::{Ledger, LedgerOptions};
use crate::note::{NoteSigner, NoteVerifier};
use crate::policy::Policy;
use crate::storage::Storage;
use crate::store::Store;
use anyhow::Context;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::rules::MAX_GRPC_MESSAGE;
/// Longest a request may run on the server (a client's shorter `grpc-timeout` wins); an append
/// normally answers within one group commit, milliseconds.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often health re-checks that the store answers reads.
pub const READINESS_PROBE: std::time::Duration = std::time::Duration::from_secs(1);
/// Most requests one connection may have in progress at once; more wait for a free slot.
pub const CONCURRENCY_PER_CONNECTION: usize = 256;
/// How long open streams and watches may go on after SIGTERM before their connections are
/// closed.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A group's write and flush taking longer than this turns health NOT_SERVING.
pub const WATCHDOG_STALL: Duration = Duration::from_secs(30);
/// A group's write and flush taking longer than this ends the process with
/// [`EXIT_WRITER_STUCK`], so systemd or Kubernetes restarts it.
pub const WATCHDOG_EXIT: Duration = Duration::from_secs(120);
/// Exit status of a server whose writer stayed stuck (EX_SOFTWARE).
pub const EXIT_WRITER_STUCK: i32 = 70;

/// Bounds of a running server: connections, the shutdown grace period, the writer watchdog.
#[derive(Debug, Clone)]
pub struct NetOptions {
    pub conn: crate::conn::ConnLimits,
    pub shutdown_grace: Duration,
    pub watchdog_stall: Duration,
    /// `None`: never exit (the watchdog only reports).
    pub watchdog_exit: Option<Duration>,
    /// A backup whose client does not take the next message within this is cancelled.
    pub backup_send_timeout: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            conn: crate::conn::ConnLimits::default(),
            shutdown_grace: SHUTDOWN_GRACE,
            watchdog_stall: WATCHDOG_STALL,
            watchdog_exit: Some(WATCHDOG_EXIT),
            backup_send_timeout: crate::backup::SEND_TIMEOUT,
        }
    }
}

/// `serve` flags for the bounds in [`NetOptions`] (flags and environment only).
#[derive(clap::Args, Debug, Clone)]
pub struct BoundsArgs {
    /// Most client connections open at once (lowered to fit the open-file limit).
    #[arg(long, env = "CELLTRAIL_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Most client connections from one IP address.
    #[arg(long, env = "CELLTRAIL_MAX_CONNECTIONS_PER_IP", default_value_t = 128)]
    pub max_connections_per_ip: usize,
    /// A new connection must start its first request within this time (slowloris).
    #[arg(long, env = "CELLTRAIL_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// A connection with no request in progress is closed after this time.
    #[arg(long, env = "CELLTRAIL_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// After SIGTERM, open streams and watches are ended after this time.
    #[arg(long, env = "CELLTRAIL_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// A group's write and flush taking longer turns health NOT_SERVING (and logs an error).
    #[arg(long, env = "CELLTRAIL_WATCHDOG_STALL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub watchdog_stall: Duration,
    /// A group's write and flush taking longer ends the process (exit status 70) for a restart.
    #[arg(long, env = "CELLTRAIL_WATCHDOG_EXIT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub watchdog_exit: Duration,
}

impl BoundsArgs {
    pub fn options(&self) -> NetOptions {
        let conn = crate::conn::ConnLimits {
            max_connections: self.max_connections.max(1),
            max_per_ip: self.max_connections_per_ip.max(1),
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            ..crate::conn::ConnLimits::default()
        };
        NetOptions {
            conn: crate::conn::fit_open_file_limit(conn),
            shutdown_grace: self.shutdown_grace,
            watchdog_stall: self.watchdog_stall,
            watchdog_exit: Some(self.watchdog_exit.max(self.watchdog_stall)),
            backup_send_timeout: crate::backup::SEND_TIMEOUT,
        }
    }
}

/// Watches the writer: NOT_SERVING and an error log while one group's write and flush has
/// taken longer than `stall`; SERVING again if it finishes; exits the process with
/// [`EXIT_WRITER_STUCK`] past `exit`.
async fn watch_writer(
    ledger: Arc<Ledger>,
    health: tonic_health::server::HealthReporter,
    stall: Duration,
    exit: Option<Duration>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) {
    type LedgerSvc = crate::pb::ledger_server::LedgerServer<crate::api::LedgerService>;
    let tick = (stall / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut flagged = false;
    loop {
        tokio::time::sleep(tick).await;
        let busy = ledger.writer_busy_for();
        match busy {
            Some(d) if d >= stall => {
                if !flagged {
                    flagged = true;
                    tracing::error!(
                        stalled_s = d.as_secs(),
                        "the ledger writer has been inside one group's write and flush for over \
                         {stall:?}: health is NOT_SERVING; check the disk"
                    );
                    crate::metrics::writer_stalled(true);
                    health.set_not_serving::<LedgerSvc>().await;
                    health
                        .set_service_status("", tonic_health::ServingStatus::NotServing)
                        .await;
                }
                if let Some(exit) = exit.filter(|e| d >= *e) {
                    tracing::error!("the ledger writer is stuck for over {exit:?}: exiting");
                    eprintln!(
                        "celltrail: the ledger writer has been stuck in one group's write and \
                         flush for over {exit:?}; exiting (status {EXIT_WRITER_STUCK}) so the \
                         service manager restarts the server"
                    );
                    std::process::exit(EXIT_WRITER_STUCK);
                }
            }
            _ if flagged => {
                flagged = false;
                crate::metrics::writer_stalled(false);
                tracing::warn!("the ledger writer finished its stalled group");
                if !stopping.load(std::sync::atomic::Ordering::Acquire) {
                    health.set_serving::<LedgerSvc>().await;
                    health
                        .set_service_status("", tonic_health::ServingStatus::Serving)
                        .await;
                }
            }
            _ => {}
        }
    }
}

#[derive(Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    /// Trust-anchor file; default `DATA_DIR/trust-anchors.txt` (created with a first admin key).
    pub trust_anchors: Option<PathBuf>,
    /// Custody policy table (TOML); default: the embedded autologous CAR-T table.
    pub policy: Option<PathBuf>,
    /// Checkpoint origin (log name) used when the log key is first created.
    pub origin: Option<String>,
    pub ledger: LedgerOptions,
    /// Passphrase of `log.key` and `admin.key`. `serve` always gives one when it creates keys
    /// ([`serve_key_passphrase`]); without it (the in-process test servers) new keys are written
    /// unencrypted, with a warning.
    pub key_passphrase: Option<Passphrase>,
    /// PBKDF2 iterations for keys this start creates ([`crate::keys::KDF_ITERATIONS`]).
    pub kdf_iterations: u32,
    /// The ledger's storage; default: the sled store in `DATA_DIR/db`.
    pub storage: Option<Arc<dyn Storage>>,
}

impl ServeOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServeOptions {
            data_dir: data_dir.into(),
            trust_anchors: None,
            policy: None,
            origin: None,
            ledger: LedgerOptions::default(),
            key_passphrase: None,
            kdf_iterations: crate::keys::KDF_ITERATIONS,
            storage: None,
        }
    }
}

/// What opening a data directory produced.
pub struct Opened {
    pub ledger: Arc<Ledger>,
    pub log_verifier: NoteVerifier,
    pub admins: Vec<NoteVerifier>,
    /// Set when this start created the first admin key: (key file, verifier key).
    pub created_admin: Option<(PathBuf, String)>,
    /// The custody policy the ledger applies (the console replays chains with it).
    pub policy: Policy,
    /// The log key (the console's chain pages carry signed chain heads).
    pub log_signer: NoteSigner,
}

/// Opens the data directory, creating what is missing, and starts the ledger writer.
/// The files given in the options (policy, trust anchors) are read first: when one is
/// wrong, nothing is created.
pub fn open(opts: &ServeOptions) -> anyhow::Result<Opened> {
    let dir = DataDir::new(&opts.data_dir);
    let policy = match &opts.policy {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read policy {}", p.display()))?;
            Policy::from_toml(&text).map_err(|e| anyhow::anyhow!("policy {}: {e}", p.display()))?
        }
        None => Policy::default_autologous_car_t(),
    };
    if let Some(p) = &opts.trust_anchors {
        read_trust_anchors(p)?;
    }
    let log_path = dir.log_key();
    let new_log_key = match log_path.exists() {
        true => None,
        false => {
            let origin = opts.origin.clone().unwrap_or_else(|| {
                format!(
                    "celltrail.local/log-{}",
                    hex::encode(rand::random::<[u8; 4]>())
                )
            });
            Some(
                NoteSigner::generate(&origin)
                    .map_err(|e| anyhow::anyhow!("log origin {origin:?}: {e}"))?,
            )
        }
    };
    std::fs::create_dir_all(dir.root())
        .with_context(|| format!("cannot create data directory {}", dir.root().display()))?;

    let log_key = if let Some(key) = new_log_key {
        write_server_key(&log_path, &key, opts)?;
        std::fs::write(
            dir.log_vkey(),
            format!("{}\n", key.verifier().to_key_string()),
        )?;
        key
    } else {
        open_server_key(&log_path, opts)?
    };

    let mut created_admin = None;
    let anchors_path = match &opts.trust_anchors {
        Some(p) => p.clone(),
        None => {
            let p = dir.trust_anchors();
            if !p.exists() {
                let admin = NoteSigner::generate("admin").expect("'admin' is a valid key name");
                let key_path = dir.admin_key();
                write_server_key(&key_path, &admin, opts)?;
                let vkey = admin.verifier().to_key_string();
                std::fs::write(
                    &p,
                    format!("# celltrail trust anchors: operator admin keys that may sign the key registry\n{vkey}\n"),
                )?;
                created_admin = Some((key_path, vkey));
            }
            p
        }
    };
    let admins = read_trust_anchors(&anchors_path)?;

    let store: Arc<dyn Storage> = match &opts.storage {
        Some(s) => s.clone(),
        None => Arc::new(Store::open(&dir.db())?),
    };
    let log_verifier = log_key.verifier();
    // Refuse to serve a store that no longer holds the log its last checkpoint signed.
    crate::log::check_against_checkpoint(
        store.as_ref(),
        &log_verifier,
        &dir.db().display().to_string(),
    )?;
    let log_signer = log_key.clone();
    let ledger = Ledger::start(store, &admins, log_key, policy.clone(), opts.ledger.clone())?;
    let book = ledger.policy_book();
    if let Some(path) = &opts.policy {
        let current = book.current();
        if current.activated_at.is_some() {
            eprintln!(
                "WARNING: --policy {} is not used for new entries: the log's table {} is in force; activate another with `celltrail policy activate FILE`",
                path.display(),
                current.describe()
            );
        } else if policy.sha256() != Policy::default_autologous_car_t().sha256() {
            eprintln!(
                "WARNING: --policy {} is not a log record: a bundle cannot show that entries were judged under it; record it with `celltrail policy activate {}` (docs/policy.md, \"Tables in the log\")",
                path.display(),
                path.display()
            );
        }
    }
    Ok(Opened {
        ledger,
        log_verifier,
        admins,
        created_admin,
        policy,
        log_signer,
    })
}

/// Opens the server's own key (`log.key`) with the passphrase from `--key-passphrase-file`.
pub(crate) fn open_server_key(path: &Path, opts: &ServeOptions) -> anyhow::Result<NoteSigner> {
    let kf = KeyFile::load(path)?;
    match (&kf, &opts.key_passphrase) {
        (KeyFile::Plain(s), _) => {
            crate::keys::warn_plaintext(&s.name);
            Ok(s.clone())
        }
        (KeyFile::Encrypted { .. }, Some(p)) => Ok(kf.open(p)?),
        (KeyFile::Encrypted { .. }, None) => anyhow::bail!(
            "{} is encrypted: give --key-passphrase-file FILE (or CELLTRAIL_KEY_PASSPHRASE_FILE) \
             naming a file whose first line is its passphrase",
            path.display()
        ),
    }
}

/// Writes a key this start created: encrypted when a passphrase was given, else plaintext
/// with a warning.
pub(crate) fn write_server_key(
    path: &Path,
    key: &NoteSigner,
    opts: &ServeOptions,
) -> anyhow::Result<()> {
    match &opts.key_passphrase {
        Some(p) => write_encrypted_key_file(path, key, p, opts.kdf_iterations)?,
        None => {
            write_key_file(path, key)?;
            eprintln!(
                "WARNING: {} was written UNENCRYPTED because no --key-passphrase-file was given; \
                 anyone who copies it can sign as this server. Encrypt it with `celltrail key \
                 encrypt {}` and start with --key-passphrase-file (see SECURITY.md).",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// The passphrase of the server's own keys (`log.key`, `admin.key`) for `serve`: from
/// `--key-passphrase-file` (`file`), else `CELLTRAIL_PASSPHRASE_FILE` / `_FD` like every other
/// command, else asked on the terminal (twice when the keys are new). `None` only when every
/// key already exists unencrypted: old plaintext keys still load, with a warning, for one
/// release. New keys are never written unencrypted by `serve`.
pub fn serve_key_passphrase(
    opts: &ServeOptions,
    file: Option<&Path>,
) -> anyhow::Result<Option<Passphrase>> {
    let dir = DataDir::new(&opts.data_dir);
    let log = dir.log_key();
    let creating = !log.exists() || (opts.trust_anchors.is_none() && !dir.trust_anchors().exists());
    let encrypted = |p: &Path| p.exists() && KeyFile::load(p).is_ok_and(|k| k.is_encrypted());
    if file.is_none() && !creating && !encrypted(&log) {
        return Ok(None);
    }
    let what = "the server's log.key and admin.key";
    Ok(Some(server_key_passphrase(file, what, creating)?))
}

/// The passphrase for server keys (`what`): `file`, else `CELLTRAIL_PASSPHRASE_FILE` / `_FD`,
/// else the terminal (twice when `new`); an error saying what to give when none is there.
pub fn server_key_passphrase(
    file: Option<&Path>,
    what: &str,
    new: bool,
) -> anyhow::Result<Passphrase> {
    use std::io::IsTerminal;
    if let Some(p) = file {
        return read_key_passphrase_file(p);
    }
    let automated = [
        crate::keys::PASSPHRASE_FILE_ENV,
        crate::keys::PASSPHRASE_FD_ENV,
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if !automated && !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "{what} {} encrypted and their passphrase is needed: give --key-passphrase-file FILE \
             (or CELLTRAIL_KEY_PASSPHRASE_FILE) naming a file whose first line is the passphrase \
             (mode 0600, outside the data directory; see SECURITY.md), or run on a terminal to \
             type it",
            if new { "are written" } else { "are" }
        );
    }
    let source = crate::keys::PassphraseSource::SIGNER;
    Ok(if new {
        crate::keys::new_passphrase(&source, what)?
    } else {
        source.get(&format!("Passphrase of {what}: "))?
    })
}

/// Reads the server's key passphrase file, warning when others may read it.
pub fn read_key_passphrase_file(path: &Path) -> anyhow::Result<Passphrase> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("key passphrase file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "WARNING: key passphrase file {} is readable by other users; chmod 600 it",
            path.display()
        );
    }
    Ok(crate::keys::read_passphrase_file(path)?)
}

/// How [`run`] serves an opened data directory. There is no default: the public facts a
/// backup carries come from the directory that was opened ([`RunOptions::of`]), never blank.
pub struct RunOptions {
    /// What the admin service reports (log verifier key, trust anchors).
    pub info: crate::backup::ServerInfo,
    /// TLS (mutual TLS when the config has a client CA root); `None`: plain text.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Witnesses every new checkpoint is submitted to (`serve --witness`); the cosigned
    /// checkpoint is served in `GetCheckpoint` (see `witness::collect`).
    pub witnesses: Vec<crate::witness::collect::WitnessTarget>,
    /// Connection bounds, the shutdown grace period and the writer watchdog.
    pub net: NetOptions,
}

impl RunOptions {
    /// Plain-text serving of `opened`, with its server info.
    pub fn of(opened: &Opened) -> RunOptions {
        RunOptions {
            info: server_info(opened),
            tls: None,
            witnesses: Vec::new(),
            net: NetOptions::default(),
        }
    }

    /// The same over TLS.
    pub fn with_tls(mut self, tls: Option<tonic::transport::ServerTlsConfig>) -> RunOptions {
        self.tls = tls;
        self
    }

    /// The same, submitting checkpoints to `witnesses`.
    pub fn with_witnesses(
        mut self,
        witnesses: Vec<crate::witness::collect::WitnessTarget>,
    ) -> RunOptions {
        self.witnesses = witnesses;
        self
    }

    /// The same under explicit bounds (`serve`'s flags).
    pub fn with_net(mut self, net: NetOptions) -> RunOptions {
        self.net = net;
        self
    }
}

/// Serves the Ledger API on `listener` until `shutdown` resolves, then drains the writer.
///
/// Besides `celltrail.v1.Ledger` it serves `celltrail.v1.Admin` (online backup),
/// `grpc.health.v1.Health` and server reflection (v1 and v1alpha). Health reports NOT_SERVING until the
/// store is open and recovered (it is, by the time `run` is called: `open` recovers), SERVING
/// while serving, and NOT_SERVING again as soon as `shutdown` resolves. Then the server stops
/// accepting, answers what is in flight, and closes any connection still open (a stream, a
/// health watch) once `opts.net.shutdown_grace` has passed; then the writer drains.
pub async fn run(
    listener: tokio::net::TcpListener,
    ledger: Arc<Ledger>,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let RunOptions {
        info,
        tls,
        witnesses,
        net,
    } = opts;
    let cosigned = (!witnesses.is_empty())
        .then(|| crate::witness::collect::start(ledger.store().clone(), witnesses));
    type LedgerSvc = crate::pb::ledger_server::LedgerServer<crate::api::LedgerService>;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health.set_not_serving::<LedgerSvc>().await;
    // Reflection v1, and v1alpha beside it for older grpcurl and Python's grpcio-reflection.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .context("cannot build the reflection service")?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .context("cannot build the v1alpha reflection service")?;
    let service =
        LedgerSvc::new(crate::api::LedgerService::new(ledger.clone()).with_cosigned(cosigned))
            .max_decoding_message_size(MAX_GRPC_MESSAGE);
    let admin = crate::pb::admin_server::AdminServer::new(
        crate::backup::AdminService::new(ledger.clone(), info)
            .with_send_timeout(net.backup_send_timeout),
    );
    let station = crate::pb::station_server::StationServer::new(
        crate::station_api::StationService::new(ledger.clone()),
    )
    .max_decoding_message_size(MAX_GRPC_MESSAGE);
    crate::metrics::tree_size(ledger.store().tree_size().unwrap_or(0));
    // The store is open and recovered (`open` did that): ready.
    health.set_serving::<LedgerSvc>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // Readiness follows the store: SERVING while it answers reads (a standby's does: it serves
    // reads), NOT_SERVING while it does not (a database out of reach).
    let probe = {
        let reporter = health.clone();
        let store = ledger.store().clone();
        tokio::spawn(async move {
            let mut serving = true;
            loop {
                tokio::time::sleep(READINESS_PROBE).await;
                let s = store.clone();
                let ok = tokio::task::spawn_blocking(move || s.tree_size().is_ok())
                    .await
                    .unwrap_or(false);
                if ok != serving {
                    serving = ok;
                    if ok {
                        reporter.set_serving::<LedgerSvc>().await;
                    } else {
                        tracing::warn!("the store does not answer: health NOT_SERVING");
                        reporter.set_not_serving::<LedgerSvc>().await;
                    }
                }
            }
        })
    };
    let reporter = health.clone();
    let tracker = Arc::new(crate::conn::Tracker::default());
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = tokio::spawn(watch_writer(
        ledger.clone(),
        health.clone(),
        net.watchdog_stall,
        net.watchdog_exit,
        stopped.clone(),
    ));
    let shutdown = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            probe.abort();
            stopped.store(true, std::sync::atomic::Ordering::Release);
            stopping.notify_one();
            reporter.set_not_serving::<LedgerSvc>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
    };
    let grace = {
        let tracker = tracker.clone();
        let period = net.shutdown_grace;
        tokio::spawn(async move {
            stopping.notified().await;
            tokio::time::sleep(period).await;
            if tracker.open() > 0 {
                tracing::info!(
                    connections = tracker.open(),
                    "shutdown grace period over: closing open connections"
                );
            }
            tracker.close_all();
        })
    };
    // Bounded connections (`conn`); TCP_NODELAY is set on each: a receipt is one small frame
    // and Nagle plus delayed ACK would add ~40 ms to it.
    let incoming = crate::conn::incoming(listener, net.conn.clone(), tracker);
    let mut builder = tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .http2_keepalive_interval(Some(net.conn.keepalive_interval))
        .http2_keepalive_timeout(Some(net.conn.keepalive_timeout));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("invalid TLS configuration (certificate or key)")?;
    }
    let served = builder
        .layer(crate::conn::ActivityLayer)
        // The codes the contract names for an over-size or malformed message (api.rs).
        .layer(tower::util::MapResponseLayer::new(
            crate::api::contract_response::<tonic::body::Body>,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(station)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("gRPC server failed");
    grace.abort();
    ledger.shutdown_async().await;
    watchdog.abort();
    served
}

/// The public facts about a data directory that a backup carries.
/// Built from the admin keys the server loaded at start (never re-read from disk, so a backup
/// cannot silently carry empty anchors).
pub fn server_info(opened: &Opened) -> crate::backup::ServerInfo {
    let mut trust_anchors = String::from(
        "# celltrail trust anchors: operator admin keys that may sign the key registry\n",
    );
    for admin in &opened.admins {
        trust_anchors.push_str(&admin.to_key_string());
        trust_anchors.push('\n');
    }
    crate::backup::ServerInfo {
        log_vkey: opened.log_verifier.to_key_string(),
        trust_anchors,
    }
}

/// Flag for commands that open the server's own keys.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyPassphraseArg {
    /// File whose first line is the passphrase of log.key and admin.key (mode 0600; read once
    /// at start, for unattended restarts; see SECURITY.md).
    #[arg(long, env = "CELLTRAIL_KEY_PASSPHRASE_FILE")]
    pub key_passphrase_file: Option<PathBuf>,
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (not when
/// first polled), so a signal that arrives right after "serving on" is printed is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        eprintln!("celltrail: shutting down (finishing appends in flight)");
    }
}
