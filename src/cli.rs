//! Command-line interface: one binary, `celltrail`, with subcommands. Parses flags (every flag
//! also reads a `CELLTRAIL_*` environment variable), then calls the library; user-facing output
//! goes to stdout, diagnostics to stderr.

use crate::client::{self, detail_from_fields, Draft, Fields};
use crate::keys::{read_key_file, write_key_file};
use crate::note::NoteSigner;
use crate::pb::{
    event_body::Detail, EventBody, GetChainRequest, KeyRegistered, KeyRevoked, LogEntry,
    SignatureMeaning,
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
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gRPC ledger server on an embedded sled store.
    Serve(ServeArgs),
    /// Make an ed25519 key file (0600) and print its verifier key.
    Keygen(KeygenArgs),
    /// Scanning station: scan codes, sign, submit; queues offline; bedside MATCH/MISMATCH.
    Scan(crate::station::ScanArgs),
    /// Register or revoke a signer key in the ledger's key registry (needs an admin key).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Append one signed custody event to a bag's chain.
    Event(EventArgs),
    /// Print a bag's chain as a table.
    Chain(ChainArgs),
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
    /// Custody policy table (TOML) [default: the built-in autologous CAR-T table].
    #[arg(long, env = "CELLTRAIL_POLICY")]
    pub policy: Option<PathBuf>,
    /// Log origin (checkpoint name) used when the log key is first created.
    #[arg(long, env = "CELLTRAIL_ORIGIN")]
    pub origin: Option<String>,
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

#[derive(Args, Debug)]
pub struct ServerArg {
    /// Server address.
    #[arg(long, env = "CELLTRAIL_SERVER", default_value = "127.0.0.1:50051")]
    pub server: String,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Register a signer's verifier key with a role and site.
    Register {
        #[command(flatten)]
        server: ServerArg,
        /// Admin key file (from the trust-anchor file).
        #[arg(long, env = "CELLTRAIL_ADMIN_KEY")]
        admin_key: PathBuf,
        /// The signer's verifier key, as printed by `celltrail keygen`.
        #[arg(long)]
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
    /// Revoke a signer key: its signatures from that time on are refused.
    Revoke {
        #[command(flatten)]
        server: ServerArg,
        #[arg(long, env = "CELLTRAIL_ADMIN_KEY")]
        admin_key: PathBuf,
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        reason: String,
        /// Effective time, RFC 3339 [default: now].
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct EventArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Key file of the person who performed the event (signs PERFORMED).
    #[arg(long, env = "CELLTRAIL_KEY")]
    pub key: PathBuf,
    /// Further signers: KEYFILE:MEANING, e.g. nurse2.key:verified (repeatable).
    #[arg(long = "cosign")]
    pub cosign: Vec<String>,
    /// Chain id of the bag (e.g. its DIN or the chain-of-identity reference).
    #[arg(long)]
    pub chain: String,
    /// Event kind (enrolled, collected, shipped, received, ...).
    #[arg(long)]
    pub kind: String,
    /// Site where the event happens.
    #[arg(long)]
    pub site: String,
    /// Event fields, name=value (repeatable); see the README for each kind's fields.
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// When it happened, RFC 3339 [default: now].
    #[arg(long)]
    pub at: Option<String>,
    #[arg(long, default_value = "")]
    pub comment: String,
}

#[derive(Args, Debug)]
pub struct ChainArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Chain id.
    pub chain: String,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Keygen(a) => keygen(a),
        Command::Scan(a) => crate::station::run(a).await,
        Command::Key(k) => key(k).await,
        Command::Event(a) => event(a).await,
        Command::Chain(a) => chain(a).await,
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut opts = crate::server::ServeOptions::new(&a.data_dir);
    opts.trust_anchors = a.trust_anchors;
    opts.policy = a.policy;
    opts.origin = a.origin;
    let opened = crate::server::open(&opts)?;
    if let Some((path, vkey)) = &opened.created_admin {
        println!("Created the first operator admin key: {}", path.display());
        println!(
            "  its verifier key (also in {}):",
            a.data_dir.join("trust-anchors.txt").display()
        );
        println!("  {vkey}");
        println!("  Keep this file safe: it registers and revokes every signer key.");
    }
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        eprintln!("WARNING: serving plain-text gRPC on non-loopback address {addr}; anyone who reaches it can read the ledger");
    }
    println!("celltrail log {} ", opened.log_verifier.to_key_string());
    println!(
        "celltrail serving on {addr} (data {})",
        a.data_dir.display()
    );
    crate::server::run(listener, opened.ledger, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    eprintln!("celltrail: shutting down (finishing appends in flight)");
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
    write_key_file(&out, &signer)?;
    eprintln!("wrote {} (private, mode 0600)", out.display());
    println!("{}", signer.verifier().to_key_string());
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
            let v = crate::note::NoteVerifier::from_key_string(vkey.trim())
                .map_err(|e| anyhow::anyhow!("--vkey is not a verifier key: {e}"))?;
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
    let mut c = client::connect(&server.server).await?;
    let draft = Draft {
        chain_id: KEYS_CHAIN.into(),
        seq: 0,
        prev_hash: vec![],
        occurred_at: crate::time::now_nanos(),
        site: String::new(),
        comment: String::new(),
        detail,
    };
    let r = client::append_draft(&mut c, draft, &[(&admin, SignatureMeaning::Performed)]).await?;
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
        cosigners.push((read_key_file(std::path::Path::new(path))?, meaning));
    }
    let fields = Fields::parse(&a.set).map_err(|e| anyhow::anyhow!(e))?;
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
    let mut c = client::connect(&a.server.server).await?;
    let r = client::append_draft(&mut c, draft, &signers).await?;
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
    Ok(())
}

async fn chain(a: ChainArgs) -> anyhow::Result<()> {
    let mut c = client::connect(&a.server.server).await?;
    let resp = c
        .get_chain(GetChainRequest {
            chain_id: a.chain.clone(),
        })
        .await
        .map_err(client::status_error)?
        .into_inner();
    let head = resp.head.unwrap_or_default();
    println!(
        "chain {}: {} events, state {}",
        a.chain, head.length, head.state
    );
    println!(
        "{:<4} {:<20} {:<12} {:<18} {:<16} signers",
        "seq", "occurred (UTC)", "site", "event", "hash"
    );
    for e in resp.entries {
        let entry = LogEntry::decode(e.entry.as_slice())?;
        let body = EventBody::decode(entry.body.as_slice())?;
        let kind = body.detail.as_ref().map(client::kind_name).unwrap_or("?");
        let signers: Vec<String> = entry
            .signatures
            .iter()
            .map(|s| {
                let m = SignatureMeaning::try_from(s.meaning)
                    .map(|m| m.as_str_name())
                    .unwrap_or("?");
                format!("{} ({})", s.key_id, m.to_ascii_lowercase())
            })
            .collect();
        let when = crate::time::rfc3339(
            body.occurred_at_unix_nanos - body.occurred_at_unix_nanos % 1_000_000_000,
        );
        println!(
            "{:<4} {:<20} {:<12} {:<18} {:<16} {}",
            body.seq,
            when,
            body.site,
            kind,
            hex::encode(&e.event_hash[..8]),
            signers.join(", ")
        );
    }
    Ok(())
}
