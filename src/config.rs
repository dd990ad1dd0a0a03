//! Configuration: command-line flags, `CELLTRAIL_*` environment variables and an optional TOML
//! file (`--config FILE` / `CELLTRAIL_CONFIG`), merged with the precedence
//! **flag > environment > file > built-in default**.
//!
//! clap already merges flags, environment and defaults; this module asks clap where each value
//! came from and lets the file override only values that came from a default (or nowhere).
//! Relative paths in the file are relative to the file's directory. Unknown keys are an error,
//! so a typo is not silently ignored.
//!
//! Top-level keys are `serve`'s (including its TLS); `[client]` holds what every client command
//! takes (`server`, `tls_ca`, `tls_cert`, `tls_key`), `[station]` what `scan`, `queue` and
//! `station` take (`site`, `queue`, `key`), so a scanning station is configured by one file.

use crate::cli::{Cli, Command, KeyCommand, LogFormat, ServeArgs};
use crate::client::ServerArg;
use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The TOML configuration file. Every key is optional; names match the flags.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `serve --tls-cert` / `--tls-key` / `--client-ca`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    /// What every client command takes.
    #[serde(default)]
    pub client: ClientSection,
    /// What `scan`, `queue` and `station` take.
    #[serde(default)]
    pub station: StationSection,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub trust_anchors: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub origin: Option<String>,
    pub metrics_addr: Option<String>,
    /// Witnesses to submit checkpoints to, each `URL=VKEY` (as `serve --witness`).
    pub witnesses: Option<Vec<String>>,
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing `EnvFilter` syntax); `CELLTRAIL_LOG` overrides it.
    pub log: Option<String>,
    /// PostgreSQL store URL (`serve --store`).
    pub store: Option<String>,
    /// Address clients dial to reach this server (`serve --advertise`).
    pub advertise: Option<String>,
    /// File whose first line is the passphrase of log.key and admin.key
    /// (`serve --key-passphrase-file`; the file itself must be 0600, as for the flag).
    pub key_passphrase_file: Option<PathBuf>,
}

/// `[client]`: the flags of every client command (event, chain, scan, key, export, report,
/// backup, monitor).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// `--server` (one address, or several as `a,b,c`).
    pub server: Option<String>,
    /// `--tls-ca`, `--tls-cert`, `--tls-key` (the client's own certificate for mutual TLS).
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `[station]`: the flags of `scan` (and the `--queue` of `queue` and `station`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationSection {
    /// `scan --site`.
    pub site: Option<String>,
    /// `scan --queue`, `queue ... --queue`.
    pub queue: Option<PathBuf>,
    /// `scan --key`: the operator's key file (one signer; excludes `keys_dir`).
    pub key: Option<PathBuf>,
    /// `scan --keys-dir`: the signers' key files and `badges.txt` (badge and passphrase
    /// signing; excludes `key`).
    pub keys_dir: Option<PathBuf>,
    /// `scan --session-timeout` (seconds), `--max-passphrase-attempts`, `--lockout-minutes`.
    pub session_timeout: Option<u64>,
    pub max_passphrase_attempts: Option<u32>,
    pub lockout_minutes: Option<u64>,
}

impl ConfigFile {
    /// Reads and parses `path`; relative paths inside are resolved against its directory.
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut file: ConfigFile = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut file.data_dir,
            &mut file.trust_anchors,
            &mut file.policy,
            &mut file.tls_cert,
            &mut file.tls_key,
            &mut file.client_ca,
            &mut file.key_passphrase_file,
            &mut file.client.tls_ca,
            &mut file.client.tls_cert,
            &mut file.client.tls_key,
            &mut file.station.queue,
            &mut file.station.key,
            &mut file.station.keys_dir,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }
}

/// What the process needs before running a subcommand (logging setup).
#[derive(Debug, Clone)]
pub struct Settings {
    pub log_format: LogFormat,
    /// Log filter from `CELLTRAIL_LOG`, else the file's `log`, else `info`.
    pub log_filter: String,
}

/// True when `id` was neither given as a flag nor read from the environment.
fn defaulted(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.try_get_raw(id).ok().and_then(|_| m.value_source(id)),
        None | Some(ValueSource::DefaultValue)
    )
}

/// Applies the file under the flags and environment of `serve`.
pub fn apply_to_serve(a: &mut ServeArgs, m: &ArgMatches, file: &ConfigFile) {
    if defaulted(m, "data_dir") {
        if let Some(v) = &file.data_dir {
            a.data_dir = v.clone();
        }
    }
    if defaulted(m, "listen") {
        if let Some(v) = &file.listen {
            a.listen = v.clone();
        }
    }
    if defaulted(m, "trust_anchors") && file.trust_anchors.is_some() {
        a.trust_anchors = file.trust_anchors.clone();
    }
    if defaulted(m, "policy") && file.policy.is_some() {
        a.policy = file.policy.clone();
    }
    if defaulted(m, "origin") && file.origin.is_some() {
        a.origin = file.origin.clone();
    }
    if defaulted(m, "metrics_addr") && file.metrics_addr.is_some() {
        a.metrics_addr = file.metrics_addr.clone();
    }
    if defaulted(m, "witnesses") {
        if let Some(w) = &file.witnesses {
            a.witnesses = w.clone();
        }
    }
    fill(&mut a.tls_cert, m, "tls_cert", &file.tls_cert);
    fill(&mut a.tls_key, m, "tls_key", &file.tls_key);
    fill(&mut a.client_ca, m, "client_ca", &file.client_ca);
    fill(&mut a.store, m, "store", &file.store);
    fill(&mut a.advertise, m, "advertise", &file.advertise);
    fill(
        &mut a.keys.key_passphrase_file,
        m,
        "key_passphrase_file",
        &file.key_passphrase_file,
    );
}

/// Sets an optional value from the file when neither a flag nor the environment gave it.
fn fill<T: Clone>(v: &mut Option<T>, m: &ArgMatches, id: &str, file: &Option<T>) {
    if defaulted(m, id) && file.is_some() {
        *v = file.clone();
    }
}

/// Applies `[client]` under the flags and environment of a client command.
pub fn apply_to_client(a: &mut ServerArg, m: &ArgMatches, c: &ClientSection) {
    if defaulted(m, "server") {
        if let Some(v) = &c.server {
            a.server = v.clone();
        }
    }
    fill(&mut a.tls_ca, m, "tls_ca", &c.tls_ca);
    fill(&mut a.tls_cert, m, "tls_cert", &c.tls_cert);
    fill(&mut a.tls_key, m, "tls_key", &c.tls_key);
}

/// The client flags of a subcommand, if it has them.
fn server_arg(cmd: &mut Command) -> Option<&mut ServerArg> {
    Some(match cmd {
        Command::Scan(a) => &mut a.server,
        Command::Event(a) => &mut a.server,
        Command::Chain(a) => &mut a.server,
        Command::Export(a) => &mut a.server,
        Command::Report(a) => &mut a.server,
        Command::Backup(a) => &mut a.server,
        Command::Monitor(a) => &mut a.server,
        Command::Key(KeyCommand::Register { server, .. })
        | Command::Key(KeyCommand::List { server, .. })
        | Command::Key(KeyCommand::Revoke { server, .. }) => server,
        _ => return None,
    })
}

/// A certificate needs its key, and the other way round, wherever each came from.
fn check_pair(what: &str, cert: &Option<PathBuf>, key: &Option<PathBuf>) -> anyhow::Result<()> {
    match (cert, key) {
        (Some(_), None) => anyhow::bail!(
            "{what}: tls_cert is set but tls_key is not; give both (flags, environment or config file)"
        ),
        (None, Some(_)) => anyhow::bail!(
            "{what}: tls_key is set but tls_cert is not; give both (flags, environment or config file)"
        ),
        _ => Ok(()),
    }
}

/// Parses `args` (the process arguments) into a [`Cli`] with the config file merged in.
pub fn parse_from<I, T>(args: I) -> anyhow::Result<(Cli, Settings)>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command()
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    resolve(&matches)
}

/// [`parse_from`] over already parsed matches.
pub fn resolve(matches: &ArgMatches) -> anyhow::Result<(Cli, Settings)> {
    let mut cli = Cli::from_arg_matches(matches).unwrap_or_else(|e| e.exit());
    let file = match &cli.config {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let sub = matches.subcommand().map(|(_, m)| m);
    let format_defaulted =
        defaulted(matches, "log_format") && sub.is_none_or(|m| defaulted(m, "log_format"));
    if format_defaulted {
        if let Some(f) = file.log_format {
            cli.log_format = f;
        }
    }
    // The matches of the innermost subcommand (`key register`'s, not `key`'s).
    let mut leaf = matches;
    while let Some((_, m)) = leaf.subcommand() {
        leaf = m;
    }
    if let (Command::Serve(a), Some(m)) = (&mut cli.command, matches.subcommand_matches("serve")) {
        apply_to_serve(a, m, &file);
        check_pair("serve", &a.tls_cert, &a.tls_key)?;
        if a.client_ca.is_some() && a.tls_cert.is_none() {
            anyhow::bail!("serve: client_ca (mutual TLS) needs tls_cert and tls_key");
        }
    }
    if let Some(a) = server_arg(&mut cli.command) {
        apply_to_client(a, leaf, &file.client);
        check_pair("client", &a.tls_cert, &a.tls_key)?;
    }
    let st = &file.station;
    match &mut cli.command {
        Command::Scan(a) => {
            if st.key.is_some() && st.keys_dir.is_some() {
                anyhow::bail!(
                    "config file [station]: key (one signer) and keys_dir (badge signing) \
                     exclude each other; keep one"
                );
            }
            fill(&mut a.site, leaf, "site", &st.site);
            // A signer given on the command line replaces the file's way of signing.
            if a.keys_dir.is_none() {
                fill(&mut a.key, leaf, "key", &st.key);
            }
            if a.key.is_none() && a.cosign_key.is_none() && !a.yes {
                fill(&mut a.keys_dir, leaf, "keys_dir", &st.keys_dir);
            }
            if defaulted(leaf, "queue") {
                if let Some(q) = &st.queue {
                    a.queue = q.clone();
                }
            }
            if let (Some(v), true) = (st.session_timeout, defaulted(leaf, "session_timeout")) {
                a.session_timeout = v;
            }
            if let (Some(v), true) = (
                st.max_passphrase_attempts,
                defaulted(leaf, "max_passphrase_attempts"),
            ) {
                if v == 0 {
                    anyhow::bail!(
                        "config file [station]: max_passphrase_attempts must be 1 or more"
                    );
                }
                a.max_passphrase_attempts = v;
            }
            if let (Some(v), true) = (st.lockout_minutes, defaulted(leaf, "lockout_minutes")) {
                a.lockout_minutes = v;
            }
        }
        Command::Queue(q) => {
            if let (Some(dir), true) = (&st.queue, defaulted(leaf, "queue")) {
                q.dir_mut().queue = dir.clone();
            }
        }
        Command::Station(q) => {
            if let (Some(dir), true) = (&st.queue, defaulted(leaf, "queue")) {
                q.dir_mut().queue = dir.clone();
            }
        }
        _ => {}
    }
    let log_filter = std::env::var("CELLTRAIL_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .or(file.log.clone())
        .unwrap_or_else(|| "info".to_string());
    let settings = Settings {
        log_format: cli.log_format,
        log_filter,
    };
    Ok((cli, settings))
}

/// Installs the global tracing subscriber: text or JSON lines on stderr.
pub fn init_logging(s: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&s.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match s.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let m = Cli::command().try_get_matches_from(args).unwrap();
        resolve(&m).unwrap().0
    }

    fn serve(cli: Cli) -> ServeArgs {
        match cli.command {
            Command::Serve(a) => a,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn file_overrides_defaults_but_not_flags() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("celltrail.toml");
        std::fs::write(
            &cfg,
            "data_dir = \"data\"\nlisten = \"0.0.0.0:6000\"\nmetrics_addr = \"127.0.0.1:9000\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let cli = parse(&[
            "celltrail",
            "--config",
            c,
            "serve",
            "--listen",
            "127.0.0.1:7000",
        ]);
        assert_eq!(cli.log_format, LogFormat::Json);
        let a = serve(cli);
        assert_eq!(a.listen, "127.0.0.1:7000", "flag beats file");
        assert_eq!(
            a.data_dir,
            dir.path().join("data"),
            "file beats default, relative to file"
        );
        assert_eq!(a.metrics_addr.as_deref(), Some("127.0.0.1:9000"));
    }

    /// Issue 18: serve's PostgreSQL store and advertised address come from the file too.
    #[test]
    fn file_gives_the_store_and_the_advertised_address() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("celltrail.toml");
        std::fs::write(
            &cfg,
            "store = \"postgres://celltrail@db:5432/ledger\"\nadvertise = \"a:50051\"\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let a = serve(parse(&["celltrail", "--config", c, "serve"]));
        assert_eq!(
            a.store.as_deref(),
            Some("postgres://celltrail@db:5432/ledger")
        );
        assert_eq!(a.advertise.as_deref(), Some("a:50051"));
        let a = serve(parse(&[
            "celltrail",
            "--config",
            c,
            "serve",
            "--advertise",
            "b:1",
        ]));
        assert_eq!(a.advertise.as_deref(), Some("b:1"), "flag beats file");
    }

    /// An unattended server configured by one file: the passphrase file of its keys comes from
    /// the file (relative to it), and a flag still wins.
    #[test]
    fn file_gives_the_key_passphrase_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("celltrail.toml");
        std::fs::write(&cfg, "key_passphrase_file = \"secrets/pass\"\n").unwrap();
        let c = cfg.to_str().unwrap();
        let a = serve(parse(&["celltrail", "--config", c, "serve"]));
        assert_eq!(
            a.keys.key_passphrase_file,
            Some(dir.path().join("secrets/pass")),
            "from the file, relative to it"
        );
        let a = serve(parse(&[
            "celltrail",
            "--config",
            c,
            "serve",
            "--key-passphrase-file",
            "/run/other",
        ]));
        assert_eq!(
            a.keys.key_passphrase_file.as_deref(),
            Some(std::path::Path::new("/run/other")),
            "flag beats file"
        );
    }

    /// `[client] server` is the default of every client command's --server (a server list
    /// too, as issue 18 wants for failover); a flag still wins; nested subcommands get it.
    #[test]
    fn client_section_gives_every_client_command_its_server_list() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("celltrail.toml");
        std::fs::write(
            &cfg,
            "listen = \"0.0.0.0:50051\"\n[client]\nserver = \"a:50051,b:50051\"\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let server_of = |args: &[&str]| match parse(args).command {
            Command::Backup(b) => b.server.server,
            Command::Key(KeyCommand::List { server, .. }) => server.server,
            Command::Scan(s) => s.server.server,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            server_of(&[
                "celltrail",
                "--config",
                c,
                "backup",
                "--to",
                "x",
                "--admin-key",
                "k"
            ]),
            "a:50051,b:50051"
        );
        assert_eq!(
            server_of(&["celltrail", "key", "list", "--config", c]),
            "a:50051,b:50051"
        );
        assert_eq!(
            server_of(&["celltrail", "--config", c, "scan", "--drain"]),
            "a:50051,b:50051"
        );
        assert_eq!(
            server_of(&[
                "celltrail",
                "--config",
                c,
                "backup",
                "--to",
                "x",
                "--admin-key",
                "k",
                "--server",
                "c:1"
            ]),
            "c:1",
            "flag beats file"
        );
        assert_eq!(
            server_of(&["celltrail", "backup", "--to", "x", "--admin-key", "k"]),
            "127.0.0.1:50051",
            "no file: the built-in default"
        );
        // serve's own keys do not leak into the clients, nor the clients' into serve.
        let a = serve(parse(&["celltrail", "--config", c, "serve"]));
        assert_eq!(a.listen, "0.0.0.0:50051");
    }

    /// A badge-signing station from the file alone; a signer on the command line (`--key`, or
    /// scripted `--yes`) replaces the file's key directory; the file may not name both ways.
    #[test]
    fn station_section_sets_badge_signing_and_a_command_line_signer_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("station.toml");
        std::fs::write(
            &cfg,
            "[station]\nsite = \"CLINIC-1\"\nkeys_dir = \"keys\"\nsession_timeout = 300\n\
             max_passphrase_attempts = 3\nlockout_minutes = 10\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let scan = |args: &[&str]| match parse(args).command {
            Command::Scan(s) => s,
            other => panic!("unexpected {other:?}"),
        };
        let s = scan(&["celltrail", "--config", c, "scan"]);
        assert_eq!(
            s.keys_dir,
            Some(dir.path().join("keys")),
            "relative to the file"
        );
        assert_eq!(s.site.as_deref(), Some("CLINIC-1"));
        assert_eq!(
            (
                s.session_timeout,
                s.max_passphrase_attempts,
                s.lockout_minutes
            ),
            (300, 3, 10)
        );
        let s = scan(&[
            "celltrail",
            "--config",
            c,
            "scan",
            "--session-timeout",
            "60",
        ]);
        assert_eq!(s.session_timeout, 60, "flag beats file");
        let s = scan(&["celltrail", "--config", c, "scan", "--key", "me.key"]);
        assert_eq!((s.key.is_some(), s.keys_dir), (true, None));
        let s = scan(&[
            "celltrail",
            "--config",
            c,
            "scan",
            "--yes",
            "--event",
            "stored",
        ]);
        assert_eq!(
            s.keys_dir, None,
            "scripted mode signs with --key, never badges"
        );
        std::fs::write(&cfg, "[station]\nkey = \"me.key\"\nkeys_dir = \"keys\"\n").unwrap();
        let m = Cli::command()
            .try_get_matches_from(["celltrail", "--config", c, "scan"])
            .unwrap();
        let err = resolve(&m).unwrap_err().to_string();
        assert!(err.contains("exclude each other"), "{err}");
    }

    /// `celltrail station lockouts|unlock` find the station's directory where `scan` keeps it.
    #[test]
    fn station_section_gives_the_lockout_commands_the_station_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("station.toml");
        std::fs::write(&cfg, "[station]\nqueue = \"ward-3\"\n").unwrap();
        let c = cfg.to_str().unwrap();
        let queue_of = |args: &[&str]| match parse(args).command {
            Command::Station(mut s) => s.dir_mut().queue.clone(),
            other => panic!("unexpected {other:?}"),
        };
        let unlock = ["unlock", "nurse.ada", "--key", "qa.key", "--reason", "seen"];
        let mut args = vec!["celltrail", "--config", c, "station"];
        args.extend(unlock);
        assert_eq!(queue_of(&args), dir.path().join("ward-3"));
        let args = ["celltrail", "--config", c, "station", "lockouts"];
        assert_eq!(queue_of(&args), dir.path().join("ward-3"));
        let args = [
            "celltrail",
            "--config",
            c,
            "station",
            "lockouts",
            "--queue",
            "other",
        ];
        assert_eq!(queue_of(&args), PathBuf::from("other"), "flag beats file");
    }

    #[test]
    fn flag_after_subcommand_beats_file_for_global_log_format() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "log_format = \"json\"\n").unwrap();
        let cli = parse(&[
            "celltrail",
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--log-format",
            "text",
        ]);
        assert_eq!(cli.log_format, LogFormat::Text);
    }

    #[test]
    fn unknown_key_in_config_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "listn = \"x\"\n").unwrap();
        let err = ConfigFile::load(&cfg).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
    }
}
