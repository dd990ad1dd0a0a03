//! Command-line interface: one binary, `celltrail`, with subcommands. Parses flags (every flag
//! also reads a `CELLTRAIL_*` environment variable), then calls the library; user-facing output
//! goes to stdout, diagnostics to stderr.

use crate::client::{self, detail_from_fields, Draft, Fields};
use crate::keys::{self, read_key_file, read_key_file_with, PassphraseSource};
use crate::note::NoteSigner;
use crate::pb::{
    event_body::Detail, EventBody, KeyRegistered, KeyRevoked, LogEntry, SignatureMeaning,
};
use crate::registry::KEYS_CHAIN;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use prost::Message;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "celltrail",
    version,
    about = "Chain-of-custody ledger for autologous cell therapy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// TOML config file: serve's keys at the top (data_dir, listen, tls_cert, ...), [client]
    /// (server, tls_ca, tls_cert, tls_key) for client commands, [station] (site, queue, key) for
    /// scan, queue and station; precedence: flag > environment > file > default.
    #[arg(long, global = true, env = "CELLTRAIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, global = true, env = "CELLTRAIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for Loki, Elasticsearch, Cloud Logging, ...).
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gRPC ledger server on an embedded sled store.
    Serve(ServeArgs),
    /// Make an encrypted ed25519 key file (PKCS#8 PEM, 0600) and print its verifier key.
    #[command(after_help = crate::keys::PASSPHRASE_HELP)]
    Keygen(KeygenArgs),
    /// Scanning station: scan codes, sign, submit; queues offline; bedside MATCH/MISMATCH.
    Scan(crate::station::ScanArgs),
    /// The station's offline queue: list what is waiting or refused, discard what was refused.
    #[command(subcommand, after_help = crate::station::QUEUE_EXIT_CODES)]
    Queue(crate::station::QueueCommand),
    /// The station's sign-in lockouts: list them and the sign-in log; QA unlocks a signer.
    #[command(subcommand, after_help = crate::station::STATION_EXIT_CODES)]
    Station(crate::station::StationCommand),
    /// The ledger's key registry: register, list or revoke signer keys (register and revoke
    /// need an admin key); encrypt an old plaintext key file.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Activate a custody policy table: an admin-signed record on the keys chain; every later
    /// entry is judged under it (docs/policy.md, "Tables in the log").
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Append one signed custody event to a bag's chain.
    #[command(after_help = crate::event_fields::help_text())]
    Event(EventArgs),
    /// Print a bag's chain as a table.
    Chain(ChainArgs),
    /// Write a self-contained audit bundle for one bag (or all) (docs/bundle-format.md).
    Export(crate::bundle::cmd::ExportArgs),
    /// Verify an audit bundle, or a copied data directory, offline; exit 0 only if all holds.
    Verify(crate::bundle::cmd::VerifyArgs),
    /// Add later witness-cosigned checkpoints (with consistency proofs) to a bundle, so
    /// `verify --quorum` can count witnesses that cosigned after the export.
    AttachCosigned(crate::bundle::attach::AttachArgs),
    /// Render the batch record of a bundle (or of a chain on a server): HTML, text or JSON.
    Report(crate::bundle::cmd::ReportArgs),
    /// Take a consistent online snapshot of a running server into a new directory.
    Backup(BackupArgs),
    /// Make a new data directory from a backup (the server must not be running on it).
    Restore(RestoreArgs),
    /// Run a C2SP tlog-witness: cosign a log's checkpoints after checking they are consistent.
    Witness(crate::witness_cmd::WitnessArgs),
    /// Follow a log: check every checkpoint's signature, consistency and cosignatures.
    Monitor(crate::monitor::MonitorArgs),
    /// Copy a log between stores (a data directory and PostgreSQL, either way) and prove the
    /// copy has the same root under the same signed checkpoint.
    Migrate(crate::migrate::MigrateArgs),
    /// Retire the log key and link a new one (docs/log-rotation.md).
    #[command(subcommand)]
    Log(crate::rotation::LogCommand),
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub server: crate::client::ServerArg,
    /// Directory to write the snapshot to (must not exist or be empty).
    #[arg(long, env = "CELLTRAIL_BACKUP_TO")]
    pub to: PathBuf,
    /// Operator admin key file (a key of the server's trust-anchor file): the server answers
    /// backups only to a signed challenge.
    #[arg(long, env = "CELLTRAIL_ADMIN_KEY")]
    pub admin_key: PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Backup directory written by `celltrail backup`.
    #[arg(long, env = "CELLTRAIL_RESTORE_FROM")]
    pub from: PathBuf,
    /// New data directory (must not exist or be empty).
    #[arg(long, env = "CELLTRAIL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The log's signing key file (log.key of the original data directory; never in backups).
    #[arg(long, env = "CELLTRAIL_LOG_KEY")]
    pub log_key: PathBuf,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Data directory (created with a log key and a first admin key if new).
    #[arg(long, env = "CELLTRAIL_DATA_DIR", default_value = "./celltrail-data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "CELLTRAIL_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Trust-anchor file: operator admin verifier keys, one per line [default: DATA_DIR/trust-anchors.txt].
    #[arg(long, env = "CELLTRAIL_TRUST_ANCHORS")]
    pub trust_anchors: Option<PathBuf>,
    /// Custody policy table (TOML) this log must have in force [default: the built-in
    /// autologous CAR-T table]. A new log records it as its first entry; a log whose table in
    /// force is another one refuses to start (change tables with `celltrail policy activate`).
    #[arg(long, env = "CELLTRAIL_POLICY")]
    pub policy: Option<PathBuf>,
    /// Log origin (checkpoint name) used when the log key is first created.
    #[arg(long, env = "CELLTRAIL_ORIGIN")]
    pub origin: Option<String>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "CELLTRAIL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "CELLTRAIL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: accept only clients whose certificate chains to this CA (PEM).
    #[arg(long, env = "CELLTRAIL_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9090) [default: off].
    #[arg(long, env = "CELLTRAIL_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Serve the log as C2SP tlog-tiles (checkpoint, Merkle tiles, entry bundles) over plain
    /// HTTP on ADDR, for generic transparency-log tooling [default: off]. No authentication:
    /// anyone who reaches ADDR reads every entry (docs/witness.md).
    #[arg(long, env = "CELLTRAIL_TILES")]
    pub tiles: Option<String>,
    #[command(flatten)]
    pub keys: crate::server::KeyPassphraseArg,
    /// Serve the read-only QA web console on ADDR (e.g. 127.0.0.1:8443) [default: off]. Over TLS
    /// when --tls-cert is given; needs --http-token-file or --client-ca (SECURITY.md).
    #[arg(long, env = "CELLTRAIL_HTTP")]
    pub http: Option<String>,
    /// File holding the console's bearer token (at least 16 characters; one line).
    #[arg(long, env = "CELLTRAIL_HTTP_TOKEN_FILE", requires = "http")]
    pub http_token_file: Option<PathBuf>,
    /// Submit checkpoints to a C2SP witness: URL=VKEY (the witness's URL prefix and the
    /// cosignature key `celltrail witness` prints). Repeat for several witnesses.
    #[arg(long = "witness", env = "CELLTRAIL_WITNESSES", value_delimiter = ',')]
    pub witnesses: Vec<String>,
    /// Keep the ledger in PostgreSQL instead of DATA_DIR/db: postgres://USER@HOST:PORT/DB
    /// (a password from PGPASSWORD, not the command line). Several servers may share one
    /// database: one writes, the others stand by and take over (deploy/postgres/README.md).
    #[arg(long, env = "CELLTRAIL_STORE")]
    pub store: Option<String>,
    /// With --store: the address clients dial to reach this server; a standby names the
    /// writer's [default: the address it listens on].
    #[arg(long, env = "CELLTRAIL_ADVERTISE")]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub bounds: crate::server::BoundsArgs,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Key id (name), e.g. nurse.alice; letters, digits and . _ - : / @, no spaces or '+'.
    #[arg(long)]
    pub name: String,
    /// Key file to write [default: NAME.key]; never overwritten.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Register a signer's verifier key with a role and site.
    Register {
        #[command(flatten)]
        server: crate::client::ServerArg,
        /// Admin key file (from the trust-anchor file).
        #[arg(long, env = "CELLTRAIL_ADMIN_KEY")]
        admin_key: PathBuf,
        /// The signer's verifier key, as printed by `celltrail keygen` (or a file holding it).
        /// (Hyphen values are taken, so a pasted PEM is refused by celltrail, not echoed by clap.)
        #[arg(long, allow_hyphen_values = true)]
        vkey: String,
        /// Role the custody policy checks (e.g. apheresis_nurse, courier, manufacturing, qc, qa, pharmacist, nurse).
        #[arg(long)]
        role: String,
        /// Site code or GLN the key acts for.
        #[arg(long)]
        site: String,
        /// Name printed on reports (a staff member's work name; never a patient).
        #[arg(long)]
        printed_name: String,
        /// Start of validity, RFC 3339 [default: now].
        #[arg(long)]
        valid_from: Option<String>,
        /// End of validity, RFC 3339 [default: none].
        #[arg(long)]
        valid_until: Option<String>,
    },
    /// List the key registry: name, role, site, printed name, validity, revocation, and the
    /// admin who registered each key.
    List {
        #[command(flatten)]
        server: client::ServerArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a signer key: its signatures from that time on are refused.
    Revoke {
        #[command(flatten)]
        server: crate::client::ServerArg,
        /// Admin key file (from the trust-anchor file).
        #[arg(long, env = "CELLTRAIL_ADMIN_KEY")]
        admin_key: PathBuf,
        /// The key's name, as `celltrail key list` shows it (e.g. nurse.ada).
        #[arg(long)]
        key_id: String,
        /// Why (recorded in the registry; e.g. "left the hospital", "badge lost").
        #[arg(long)]
        reason: String,
        /// Effective time, RFC 3339 [default: now]. Signatures the log recorded before the
        /// revocation stay valid even when this is earlier (README "Keys").
        #[arg(long)]
        at: Option<String>,
    },
    /// Encrypt an old plaintext key file (PRIVATE+KEY+...) in place under a new passphrase.
    #[command(after_help = crate::keys::PASSPHRASE_HELP)]
    Encrypt {
        /// The key file to convert (replaced by its encrypted form; same key, same name).
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Record FILE (a policy table, TOML) as the table in force from the next log entry on.
    Activate {
        #[command(flatten)]
        server: crate::client::ServerArg,
        /// Admin key file (from the trust-anchor file).
        #[arg(long, env = "CELLTRAIL_ADMIN_KEY")]
        admin_key: PathBuf,
        /// The policy table (TOML, docs/policy.md); checked here and by the server.
        file: PathBuf,
    },
}

async fn policy(p: PolicyCommand) -> anyhow::Result<()> {
    let PolicyCommand::Activate {
        server,
        admin_key,
        file,
    } = p;
    let toml = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let (loaded, detail) = crate::policy::PolicyBook::activation_of(&toml)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let admin = read_key_file(&admin_key)?;
    let servers = server.servers()?;
    let draft = Draft {
        chain_id: KEYS_CHAIN.into(),
        seq: 0,
        prev_hash: vec![],
        occurred_at: crate::time::now_nanos(),
        site: String::new(),
        comment: String::new(),
        detail: Detail::PolicyActivated(detail),
    };
    let r = servers
        .append_draft(draft, &[(&admin, SignatureMeaning::Performed)])
        .await?;
    println!(
        "policy table {} (sha256 {}) is in force after log index {} (keys chain seq {})",
        loaded.name(),
        hex::encode(loaded.sha256()),
        r.index,
        r.seq
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct EventArgs {
    #[command(flatten)]
    pub server: crate::client::ServerArg,
    /// Key file of the person who performed the event (signs PERFORMED).
    #[arg(long, env = "CELLTRAIL_KEY")]
    pub key: PathBuf,
    /// Further signers: KEYFILE:MEANING, e.g. nurse2.key:verified (repeatable).
    #[arg(long = "cosign")]
    pub cosign: Vec<String>,
    /// Chain id of the bag (e.g. its DIN or the chain-of-identity reference).
    #[arg(long)]
    pub chain: String,
    /// Event kind; every kind and its fields are listed below.
    #[arg(long)]
    pub kind: String,
    /// Site where the event happens.
    #[arg(long)]
    pub site: String,
    /// Event fields, name=value (repeatable); each kind's fields are listed below and in
    /// docs/events.md. A reading that was genuinely not possible: not_measured.FIELD=REASON
    /// (records it and opens a hold).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// When it happened, RFC 3339 [default: now].
    #[arg(long)]
    pub at: Option<String>,
    /// Free-text comment recorded with the event and signed with it (no PHI); some fields
    /// take it as their reason (see below).
    #[arg(long, default_value = "")]
    pub comment: String,
    /// Also write the receipt's signed checkpoint (a C2SP signed note) to this file, to keep
    /// for a later consistency check (`export --since-size N`, `verify --previous FILE`).
    #[arg(long)]
    pub checkpoint_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ChainArgs {
    #[command(flatten)]
    pub server: crate::client::ServerArg,
    /// Chain id.
    pub chain: String,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a, cli.log_format).await,
        Command::Keygen(a) => keygen(a),
        Command::Scan(a) => crate::station::run(a).await,
        Command::Queue(c) => crate::station::run_queue_command(c),
        Command::Station(c) => crate::station::run_station_command(c),
        Command::Key(k) => key(k).await,
        Command::Policy(p) => policy(p).await,
        Command::Event(a) => event(a).await,
        Command::Chain(a) => chain(a).await,
        Command::Export(a) => crate::bundle::cmd::export(a).await,
        Command::Verify(a) => crate::bundle::cmd::verify(a),
        Command::AttachCosigned(a) => crate::bundle::attach::run(a).await,
        Command::Report(a) => crate::bundle::cmd::report(a).await,
        Command::Backup(a) => backup(a).await,
        Command::Restore(a) => restore(a),
        Command::Witness(a) => crate::witness_cmd::run(a).await,
        Command::Monitor(a) => crate::monitor::run(a).await,
        Command::Migrate(a) => crate::migrate::run(a),
        Command::Log(c) => crate::rotation::run(c).await,
    }
}

/// The start-up lines of `serve`: plain text on stdout, or with `--log-format json` one JSON
/// object per line in the shape of the log lines (`timestamp`, `level`, `target`, `message`
/// and named fields), warnings on stderr as the logs are.
#[derive(Clone, Copy)]
struct Banner {
    json: bool,
}

impl Banner {
    /// A line for stderr whatever its level: a JSON object under `--log-format json`, else
    /// `celltrail: TEXT`.
    fn say_on_stderr(&self, level: &str, message: &str, text: &str) {
        if self.json {
            eprintln!("{}", self.json_line(level, message, &[]));
        } else {
            eprintln!("celltrail: {text}");
        }
    }

    fn say(&self, level: &str, message: &str, fields: &[(&str, String)], text: &str) {
        let line = if self.json {
            self.json_line(level, message, fields)
        } else {
            text.to_string()
        };
        match level {
            "INFO" => println!("{line}"),
            _ => eprintln!("{line}"),
        }
    }

    fn json_line(&self, level: &str, message: &str, fields: &[(&str, String)]) -> String {
        let mut o = serde_json::Map::new();
        o.insert(
            "timestamp".into(),
            crate::time::rfc3339(crate::time::now_nanos()).into(),
        );
        o.insert("level".into(), level.into());
        o.insert("message".into(), message.into());
        for (k, v) in fields {
            o.insert((*k).into(), v.clone().into());
        }
        o.insert("target".into(), "celltrail::serve".into());
        serde_json::Value::Object(o).to_string()
    }
}

async fn serve(a: ServeArgs, format: LogFormat) -> anyhow::Result<()> {
    let banner = Banner {
        json: format == LogFormat::Json,
    };
    // Everything that can be wrong on the command line is checked before the data directory
    // is opened, so a typo creates no directory and no keys.
    let witnesses = crate::witness::collect::parse_targets(&a.witnesses)?;
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::tls::ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: a.client_ca.clone(),
            }
            .config()?,
        ),
        _ => None,
    };
    let console = crate::console::cmd::check(&crate::console::cmd::ConsoleFlags {
        http: &a.http,
        http_token_file: &a.http_token_file,
        client_ca: &a.client_ca,
        tls_cert: &a.tls_cert,
        tls_key: &a.tls_key,
    })?;
    if let Some(s) = &a.store {
        if !crate::pg::is_postgres_url(s) {
            bail!(
                "--store {}: expected a PostgreSQL URL postgres://USER@HOST:PORT/DB (without \
                 --store the ledger is kept in DATA_DIR/db)",
                crate::pg::redact_url(s)
            );
        }
    }
    // The server's own keys are encrypted: their passphrase (asked last, after every flag
    // was checked).
    let key_passphrase = {
        let mut o = crate::server::ServeOptions::new(&a.data_dir);
        o.trust_anchors = a.trust_anchors.clone();
        crate::server::serve_key_passphrase(&o, a.keys.key_passphrase_file.as_deref())?
    };
    let shutdown = {
        let signalled = crate::server::shutdown_requested();
        async move {
            signalled.await;
            banner.say_on_stderr("INFO", "shutting down", crate::server::SHUTTING_DOWN);
        }
    };
    // Bound now (a taken or forbidden address fails here), listening only once the data
    // directory is open: a client that connects finds a server ready to answer.
    let socket = bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = socket.local_addr()?;
    let metrics = match &a.metrics_addr {
        Some(m) => Some(crate::metrics::start(m, std::future::pending()).await?),
        None => None,
    };
    let mut opts = crate::server::ServeOptions::new(&a.data_dir);
    opts.trust_anchors = a.trust_anchors;
    opts.policy = a.policy;
    opts.origin = a.origin;
    opts.key_passphrase = key_passphrase;
    // PostgreSQL: the store with its writer lease; kept until the ledger has drained, so a
    // clean stop hands the lease to a standby at once.
    let pg = match &a.store {
        Some(url) => {
            let advertise = match &a.advertise {
                Some(adv) => adv.clone(),
                None if addr.ip().is_unspecified() => bail!(
                    "--store: give --advertise HOST:PORT, the address clients dial to reach this \
                     server (it listens on {addr}, which a client cannot dial)"
                ),
                None => addr.to_string(),
            };
            let ss = crate::pg::lease::ServerStore::open(
                url,
                &advertise,
                &Default::default(),
                Default::default(),
            )?;
            opts.storage = Some(ss.store.clone());
            opts.ledger.role = Some(ss.role.clone());
            Some(ss)
        }
        None => None,
    };
    let opened = crate::server::open(&opts)?;
    let listener = socket
        .listen(1024)
        .with_context(|| format!("cannot listen on {addr}"))?;
    if let Some((path, vkey)) = &opened.created_admin {
        let anchors = crate::datadir::DataDir::new(&a.data_dir).trust_anchors();
        banner.say(
            "INFO",
            "created the first operator admin key",
            &[
                ("admin_key", path.display().to_string()),
                ("verifier_key", vkey.clone()),
                ("trust_anchors", anchors.display().to_string()),
            ],
            &format!(
                "Created the first operator admin key: {}\n  its verifier key (also in {}):\n  {vkey}\n  Keep this file safe: it registers and revokes every signer key.",
                path.display(),
                anchors.display()
            ),
        );
    }
    if tls.is_none() && !addr.ip().is_loopback() {
        banner.say("WARN", "plain-text gRPC on a non-loopback address", &[("addr", addr.to_string())],
            &format!("WARNING: serving plain-text gRPC on non-loopback address {addr}; anyone who reaches it can read the ledger (use --tls-cert/--tls-key and --client-ca)"));
    } else if tls.is_some() && a.client_ca.is_none() && !addr.ip().is_loopback() {
        banner.say("WARN", "TLS without --client-ca: any client can connect", &[("addr", addr.to_string())],
            "note: TLS without --client-ca: any client can connect (events still need registered signing keys)");
    }
    if let Some(t) = &a.tiles {
        let listener = tokio::net::TcpListener::bind(t)
            .await
            .with_context(|| format!("--tiles: cannot listen on {t}"))?;
        let bound = listener.local_addr()?;
        tokio::spawn(crate::tiles::serve(listener, opened.ledger.store().clone()));
        banner.say(
            "INFO",
            "celltrail tlog-tiles",
            &[("tiles_url", format!("http://{bound}/"))],
            &format!("celltrail tlog-tiles on http://{bound}/ (checkpoint, tile/…)"),
        );
    }
    if let Some(bound) = metrics {
        banner.say(
            "INFO",
            "celltrail metrics",
            &[("metrics_url", format!("http://{bound}/metrics"))],
            &format!("celltrail metrics on http://{bound}/metrics"),
        );
    }
    let vkey = opened.log_verifier.to_key_string();
    banner.say(
        "INFO",
        "celltrail log",
        &[("log_vkey", vkey.clone())],
        &format!("celltrail log {vkey} "),
    );
    let mut fields = vec![
        ("addr", addr.to_string()),
        ("data_dir", a.data_dir.display().to_string()),
    ];
    let text = match &pg {
        Some(ss) => {
            let role = match ss.role.epoch() {
                Some(e) => {
                    fields.push(("lease_epoch", e.to_string()));
                    format!("the writer, lease epoch {e}")
                }
                None => {
                    let w = ss.role.writer_address().unwrap_or_else(|| "unknown".into());
                    fields.push(("writer", w.clone()));
                    format!("a standby; the writer is {w}")
                }
            };
            fields.push(("store", ss.store.url().to_string()));
            format!(
                "celltrail serving on {addr} (data {}, store {}, {role})",
                a.data_dir.display(),
                ss.store.url(),
            )
        }
        None => format!(
            "celltrail serving on {addr} (data {})",
            a.data_dir.display()
        ),
    };
    banner.say("INFO", "celltrail serving", &fields, &text);
    let run_opts = crate::server::RunOptions::of(&opened)
        .with_tls(tls)
        .with_witnesses(witnesses)
        .with_net(a.bounds.options());
    let (shutdown, console_task) = match console {
        Some(c) => {
            let (shutdown, task) = c.start(&opened, shutdown).await?;
            (futures_util::future::Either::Left(shutdown), Some(task))
        }
        None => (futures_util::future::Either::Right(shutdown), None),
    };
    let served = crate::server::run(listener, opened.ledger, run_opts, shutdown).await;
    if let Some(t) = console_task {
        let _ = t.await;
    }
    // After the ledger drained: a clean stop hands the writer lease to a standby at once.
    drop(pg);
    served
}

/// Resolves `listen` (host:port) and binds a TCP socket to its first address, without
/// listening yet.
async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpSocket> {
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => e.into(),
        None => anyhow::anyhow!("the address resolves to nothing"),
    })
}

async fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let admin = read_key_file(&a.admin_key)?;
    let (m, audit) =
        crate::backup::backup_to_with(&a.server.server, &a.server.tls(), &a.to, &admin).await?;
    println!(
        "backup of {} written to {}: {} entries, {} chains, root {} (audited: chains link, root matches the signed checkpoint)",
        m.source,
        a.to.display(),
        audit.tree_size,
        audit.chains,
        hex::encode(audit.root)
    );
    Ok(())
}

fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    let audit = crate::backup::restore(&a.from, &a.data_dir, &a.log_key)?;
    println!(
        "restored {} into {}: {} entries, {} chains, root {}; start it with `celltrail serve --data-dir {}`",
        a.from.display(),
        a.data_dir.display(),
        audit.tree_size,
        audit.chains,
        hex::encode(audit.root),
        a.data_dir.display()
    );
    // The quick start's `--admin-key celltrail-data/admin.key` is not there after a restore.
    if !crate::datadir::DataDir::new(&a.data_dir)
        .admin_key()
        .exists()
    {
        println!(
            "admin.key is not in backups: to register or revoke keys and take backups with this \
             server, give `--admin-key FILE` naming the operator admin key from your key custody"
        );
    }
    Ok(())
}

fn keygen(a: KeygenArgs) -> anyhow::Result<()> {
    if !crate::registry::valid_key_id(&a.name) {
        bail!(
            "key name {:?} must be 1-128 characters with no spaces and no '+'",
            a.name
        );
    }
    let signer = NoteSigner::generate(&a.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}.key", a.name.replace('/', "_"))));
    if out.exists() {
        bail!("{} exists; a key file is never overwritten", out.display());
    }
    let pass = keys::new_passphrase(&keys::PassphraseSource::SIGNER, &a.name)?;
    keys::write_encrypted_key_file(&out, &signer, &pass, keys::KDF_ITERATIONS)?;
    eprintln!(
        "wrote {} (encrypted PKCS#8, mode 0600; the passphrase is needed to sign)",
        out.display()
    );
    println!("{}", signer.verifier().to_key_string());
    Ok(())
}

fn key_encrypt(file: &std::path::Path) -> anyhow::Result<()> {
    let kf = keys::KeyFile::load(file)?;
    if kf.is_encrypted() {
        bail!("{}: already encrypted; nothing to do", file.display());
    }
    let pass = keys::new_passphrase(&keys::PassphraseSource::SIGNER, kf.name())?;
    let signer = keys::encrypt_in_place(file, &pass, keys::KDF_ITERATIONS)?;
    eprintln!(
        "encrypted {} (key {}; PKCS#8, PBKDF2-SHA256 + AES-256-CBC). Copies and backups of the \
         old plaintext file still hold the key: delete them.",
        file.display(),
        signer.name
    );
    Ok(())
}

fn parse_time_or_now(s: &Option<String>) -> anyhow::Result<i64> {
    match s {
        Some(s) => crate::time::parse_rfc3339(s).map_err(|e| anyhow::anyhow!(e)),
        None => Ok(crate::time::now_nanos()),
    }
}

async fn key(k: KeyCommand) -> anyhow::Result<()> {
    let (server, admin_key, detail) = match k {
        KeyCommand::Encrypt { file } => return key_encrypt(&file),
        KeyCommand::List { server, json } => return crate::keylist::run(&server, json).await,
        KeyCommand::Register {
            server,
            admin_key,
            vkey,
            role,
            site,
            printed_name,
            valid_from,
            valid_until,
        } => {
            let v = crate::keys::verifier_key_arg("--vkey", &vkey)?;
            let detail = Detail::KeyRegistered(KeyRegistered {
                key_id: v.name.clone(),
                public_key: v.key.as_bytes().to_vec(),
                printed_name,
                role,
                site,
                valid_from_unix_nanos: parse_time_or_now(&valid_from)?,
                valid_until_unix_nanos: match &valid_until {
                    Some(_) => parse_time_or_now(&valid_until)?,
                    None => 0,
                },
            });
            (server, admin_key, detail)
        }
        KeyCommand::Revoke {
            server,
            admin_key,
            key_id,
            reason,
            at,
        } => {
            let detail = Detail::KeyRevoked(KeyRevoked {
                key_id,
                revoked_at_unix_nanos: parse_time_or_now(&at)?,
                reason,
            });
            (server, admin_key, detail)
        }
    };
    let admin = read_key_file(&admin_key)?;
    let servers = server.servers()?;
    let draft = Draft {
        chain_id: KEYS_CHAIN.into(),
        seq: 0,
        prev_hash: vec![],
        occurred_at: crate::time::now_nanos(),
        site: String::new(),
        comment: String::new(),
        detail,
    };
    let r = servers
        .append_draft(draft, &[(&admin, SignatureMeaning::Performed)])
        .await?;
    println!(
        "recorded in the key registry: log index {}, keys chain seq {}",
        r.index, r.seq
    );
    Ok(())
}

async fn event(a: EventArgs) -> anyhow::Result<()> {
    let performer = read_key_file(&a.key)?;
    let mut cosigners = Vec::new();
    for c in &a.cosign {
        let (path, meaning) = c
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("--cosign {c:?}: expected KEYFILE:MEANING"))?;
        let meaning = client::parse_meaning(meaning).map_err(|e| anyhow::anyhow!(e))?;
        cosigners.push((
            read_key_file_with(std::path::Path::new(path), &PassphraseSource::COSIGNER)?,
            meaning,
        ));
    }
    let mut fields = Fields::parse(&a.set).map_err(|e| anyhow::anyhow!(e))?;
    let not_measured = fields.take_not_measured(&a.kind);
    let detail = detail_from_fields(&a.kind, fields).map_err(|e| anyhow::anyhow!(e))?;
    let mut signers = vec![(&performer, SignatureMeaning::Performed)];
    signers.extend(cosigners.iter().map(|(k, m)| (k, *m)));
    let draft = Draft {
        chain_id: a.chain.clone(),
        seq: 0,
        prev_hash: vec![],
        occurred_at: parse_time_or_now(&a.at)?,
        site: a.site,
        comment: a.comment,
        detail,
    };
    let r = a
        .server
        .servers()?
        .append_draft_with(draft, not_measured, &signers)
        .await?;
    if let Some(path) = &a.checkpoint_out {
        if r.checkpoint.is_empty() {
            bail!(
                "the event was recorded (log index {}), but the receipt carries no checkpoint to write to {}",
                r.index,
                path.display()
            );
        }
        std::fs::write(path, &r.checkpoint).with_context(|| {
            format!(
                "the event was recorded (log index {}), but its checkpoint could not be written to {}",
                r.index,
                path.display()
            )
        })?;
    }
    println!(
        "{} {} seq {} recorded: log index {}, event {}{}",
        a.chain,
        a.kind,
        r.seq,
        r.index,
        hex::encode(&r.event_hash[..8]),
        if r.duplicate {
            " (already recorded)"
        } else {
            ""
        }
    );
    for h in &r.holds_opened {
        println!("HOLD OPENED: {h}; the chain is on hold until QA releases it");
    }
    Ok(())
}

async fn chain(a: ChainArgs) -> anyhow::Result<()> {
    let mut c = a.server.connect().await?;
    let resp = client::get_whole_chain(&mut c, &a.chain)
        .await
        .map_err(client::status_error)?;
    let head = resp.head.unwrap_or_default();
    let signers = client::signer_infos(&mut c).await;
    println!(
        "chain {}: {} events, state {}",
        a.chain, head.length, head.state
    );
    for h in &head.open_hold {
        println!("OPEN HOLD: {h}");
    }
    println!(
        "{:<4} {:<20} {:<12} {:<18} hash",
        "seq", "occurred (UTC)", "site", "event"
    );
    for e in resp.entries {
        let entry = LogEntry::decode(e.entry.as_slice())?;
        let body = EventBody::decode(entry.body.as_slice())?;
        let kind = body
            .detail
            .as_ref()
            .map(crate::rules::kind_name)
            .unwrap_or("?");
        let when = crate::time::rfc3339(
            body.occurred_at_unix_nanos - body.occurred_at_unix_nanos % 1_000_000_000,
        );
        println!(
            "{:<4} {:<20} {:<12} {:<18} {}",
            body.seq,
            when,
            body.site,
            kind,
            hex::encode(&e.event_hash[..8]),
        );
        for s in &entry.signatures {
            println!(
                "       signed by {}",
                crate::manifest::signature_line(
                    &s.key_id,
                    signers.get(&s.key_id),
                    s.meaning,
                    s.signed_at_unix_nanos
                )
            );
        }
    }
    Ok(())
}
