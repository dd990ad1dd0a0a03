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
    /// Custody policy table (TOML) this log must have in force: recorded as the first entry
    /// of a new log, else refused unless it is the table in force (`put_in_force`). The
    /// writer judges under the log's tables only (the built-in table until an activation).
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
    /// The log key (the console's chain pages carry signed chain heads).
    pub log_signer: NoteSigner,
}

/// Opens the data directory, creating what is missing, and starts the ledger writer.
/// The files given in the options (policy, trust anchors) are read first: when one is
/// wrong, nothing is created.
pub fn open(opts: &ServeOptions) -> anyhow::Result<Opened> {
    let dir = DataDir::new(&opts.data_dir);
    let wanted = match &opts.policy {
        Some(p) => Some(PolicyFile::read(p)?),
        None => None,
    };
    if let Some(p) = &opts.trust_anchors {
        read_trust_anchors(p)?;
    }
    let log_path = dir.log_key();
    if wanted.is_some() && opts.trust_anchors.is_some() && !log_path.exists() {
        anyhow::bail!("{}", no_admin_to_record(opts));
    }
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
    let mut new_admin = None;
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
                new_admin = Some(admin);
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
    let ledger = Ledger::start(store, &admins, log_key, opts.ledger.clone())?;
    if let Some(wanted) = &wanted {
        if let Err(e) = put_in_force(&ledger, &dir, opts, &admins, wanted, new_admin) {
            ledger.shutdown();
            return Err(e);
        }
    }
    Ok(Opened {
        ledger,
        log_verifier,
        admins,
        created_admin,
        log_signer,
    })
}

/// The table `serve --policy FILE` names: exactly the bytes a `PolicyActivated` records.
struct PolicyFile {
    path: PathBuf,
    toml: Vec<u8>,
    policy: Policy,
    activation: crate::pb::PolicyActivated,
}

impl PolicyFile {
    /// Reads and loads the table before anything is created.
    fn read(path: &Path) -> anyhow::Result<PolicyFile> {
        let toml = std::fs::read(path)
            .with_context(|| format!("cannot read policy {}", path.display()))?;
        let (policy, activation) = crate::policy::PolicyBook::activation_of(&toml)
            .map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?;
        Ok(PolicyFile {
            path: path.to_path_buf(),
            toml,
            policy,
            activation,
        })
    }

    /// "site-b sha256:1a2b3c4d5e6f".
    fn describe(&self) -> String {
        format!(
            "{} sha256:{}",
            self.policy.name(),
            hex::encode(&crate::policy::book::table_sha256(&self.toml)[..6])
        )
    }
}

/// `serve --policy FILE`: the writer judges every entry under the table the log records (the
/// built-in table until a `PolicyActivated`), never under a file it was merely given. So FILE
/// must be the table in force: on a new log (no entry yet) this start records it as the first
/// entry, signed by the operator admin key this data directory holds; on a log whose table in
/// force is another one, the server refuses to start and says how to activate FILE.
fn put_in_force(
    ledger: &Arc<Ledger>,
    dir: &DataDir,
    opts: &ServeOptions,
    admins: &[NoteVerifier],
    wanted: &PolicyFile,
    created_admin: Option<NoteSigner>,
) -> anyhow::Result<()> {
    let book = ledger.policy_book();
    let current = book.current();
    if current.sha256 == wanted.policy.sha256() {
        return Ok(());
    }
    let file = wanted.path.display();
    if opts
        .ledger
        .role
        .as_ref()
        .is_some_and(|r| r.epoch().is_none())
    {
        // A standby judges nothing; when it becomes the writer it reloads the log's tables.
        eprintln!(
            "WARNING: --policy {file} ({}) is not the table in force in the log ({}); this \
             server stands by, and as the writer it will judge under the log's table. Activate \
             {file} with `celltrail policy activate {file} --server WRITER --admin-key ADMIN.key`",
            wanted.describe(),
            current.describe()
        );
        return Ok(());
    }
    let tree_size = ledger.store().tree_size()?;
    if tree_size == 0 {
        let admin = match created_admin {
            Some(a) => Some(a),
            None => own_admin_key(dir, opts, admins)?,
        };
        let Some(admin) = admin else {
            anyhow::bail!("{}", no_admin_to_record(opts));
        };
        let receipt = record_activation(ledger, &admin, wanted.activation.clone())
            .with_context(|| format!("--policy {file}: recording the table in the log"))?;
        eprintln!(
            "recorded policy table {} from {file} as log entry {}, signed by admin key {}: it \
             judges every entry of this log until another table is activated",
            wanted.describe(),
            receipt.index,
            admin.name
        );
        return Ok(());
    }
    anyhow::bail!(
        "--policy {file} ({}) is not the table in force in this log ({}), and the server judges \
         every entry under the table the log records. To put {file} in force, start without \
         --policy and run `celltrail policy activate {file} --server ADDR --admin-key \
         ADMIN.key` (an admin-signed record, in force from the next entry); to keep the log's \
         table, start without --policy (docs/policy.md, \"Tables in the log\")",
        wanted.describe(),
        current.describe()
    )
}

/// Why a new log cannot record `--policy FILE` itself, and what to do instead.
fn no_admin_to_record(opts: &ServeOptions) -> String {
    let file = opts
        .policy
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!(
        "--policy {file}: a new log records its table as its first entry, signed by the \
         operator admin key serve created in the data directory; serve holds no such key \
         (the trust anchors were given with --trust-anchors, or the data directory's \
         admin.key is not one of them). Start without --policy, then record the table before \
         the first custody event with `celltrail policy activate {file} --server ADDR \
         --admin-key ADMIN.key` (docs/policy.md, \"Tables in the log\")"
    )
}

/// The data directory's own `admin.key` (created by an earlier start), when it is one of the
/// trust anchors.
fn own_admin_key(
    dir: &DataDir,
    opts: &ServeOptions,
    admins: &[NoteVerifier],
) -> anyhow::Result<Option<NoteSigner>> {
    let path = dir.admin_key();
    if opts.trust_anchors.is_some() || !path.exists() {
        return Ok(None);
    }
    let admin = open_server_key(&path, opts)?;
    Ok(admins
        .iter()
        .any(|a| a.name == admin.name && a.key == admin.verifier().key)
        .then_some(admin))
}

/// Appends an admin-signed `PolicyActivated` through the writer (its checks decide) and waits
/// for the receipt. `open` is synchronous and may run on an async runtime's thread, so the
/// wait happens on a thread of its own.
fn record_activation(
    ledger: &Arc<Ledger>,
    admin: &NoteSigner,
    activation: crate::pb::PolicyActivated,
) -> anyhow::Result<crate::pb::Receipt> {
    let now = crate::time::now_nanos();
    let draft = crate::client::Draft {
        chain_id: crate::registry::KEYS_CHAIN.into(),
        // The first entry of a new log: the keys chain starts here.
        seq: 0,
        prev_hash: vec![0u8; 32],
        occurred_at: now,
        site: String::new(),
        comment: String::new(),
        detail: crate::pb::event_body::Detail::PolicyActivated(activation),
    };
    let ev = crate::client::sign_draft(
        draft,
        &[(admin, crate::pb::SignatureMeaning::Performed)],
        now,
    );
    let ledger = ledger.clone();
    std::thread::spawn(move || -> anyhow::Result<crate::pb::Receipt> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(ledger.append(ev))?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread recording the policy table panicked"))?
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
    if file.is_none() && !creating && typed_on_the_terminal() {
        return typed_server_passphrase(&log, what).map(Some);
    }
    Ok(Some(server_key_passphrase(file, what, creating)?))
}

/// How many times an operator at the terminal may type the server's passphrase.
const SERVE_PASSPHRASE_TRIES: u32 = 3;

/// True when the passphrase will be asked on the terminal (no automation variable is set).
fn typed_on_the_terminal() -> bool {
    use std::io::IsTerminal;
    let automated = [
        crate::keys::PASSPHRASE_FILE_ENV,
        crate::keys::PASSPHRASE_FD_ENV,
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    !automated && std::io::stdin().is_terminal()
}

/// Asks for the passphrase of an existing `log.key` on the terminal, checks it by opening the
/// key, and asks again after a typing mistake, [`SERVE_PASSPHRASE_TRIES`] times in all.
fn typed_server_passphrase(log: &Path, what: &str) -> anyhow::Result<Passphrase> {
    let key = KeyFile::load(log)?;
    let source = crate::keys::PassphraseSource::SIGNER;
    let mut attempt = 1;
    loop {
        let pass = source.get(&format!("Passphrase of {what}: "))?;
        match key.open(&pass) {
            Ok(_) => return Ok(pass),
            Err(crate::keys::KeyFileError::WrongPassphrase { .. })
                if attempt < SERVE_PASSPHRASE_TRIES =>
            {
                eprintln!(
                    "wrong passphrase for {} (attempt {attempt} of {SERVE_PASSPHRASE_TRIES}); \
                     type it again",
                    log.display()
                );
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
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
    let signalled = shutdown_requested();
    async move {
        signalled.await;
        eprintln!("celltrail: {SHUTTING_DOWN}");
    }
}

/// What a server says when it is asked to stop.
pub const SHUTTING_DOWN: &str = "shutting down (finishing appends in flight)";

/// [`shutdown_signal`] that says nothing (the caller reports the stop in its log format).
pub fn shutdown_requested() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
    }
}
