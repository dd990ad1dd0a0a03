//! The flags of `celltrail scan` and its exit codes.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ScanArgs {
    #[command(flatten)]
    pub server: crate::client::ServerArg,
    /// Your key file (you sign PERFORMED). Interactive: you type its key name at the first
    /// signature of a session and its passphrase at each one (as with --keys-dir); scripted
    /// (--yes): the passphrase comes from CELLTRAIL_PASSPHRASE_FILE / _FD. Not needed with
    /// --drain.
    #[arg(long, env = "CELLTRAIL_KEY")]
    pub key: Option<PathBuf>,
    /// Directory of the signers' key files (NAME.key, and badges.txt mapping badge codes to key
    /// names). Each signer then scans their badge (or types their key name) and types their
    /// passphrase; later signings in the same session need the passphrase only. Interactive
    /// only; replaces --key and --cosign-key.
    #[arg(long, env = "CELLTRAIL_KEYS_DIR", conflicts_with_all = ["key", "cosign_key", "yes"])]
    pub keys_dir: Option<PathBuf>,
    /// Interactive: a signing session ends after this many seconds without input.
    #[arg(long, env = "CELLTRAIL_SESSION_TIMEOUT", default_value_t = 900)]
    pub session_timeout: u64,
    /// Interactive: wrong passphrases in a row before the person is locked out here.
    #[arg(long, env = "CELLTRAIL_MAX_PASSPHRASE_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_passphrase_attempts: u32,
    /// Interactive: how long a lockout lasts, in minutes; 0 = until QA unlocks the person
    /// (`celltrail station unlock`).
    #[arg(long, env = "CELLTRAIL_LOCKOUT_MINUTES", default_value_t = 30)]
    pub lockout_minutes: u64,
    /// A second person's key file, for events the policy wants two people on (bedside check:
    /// VERIFIED; shipment and hand-off: RECEIVED; destruction: APPROVED). Scripted: required
    /// for those, its passphrase from CELLTRAIL_COSIGN_PASSPHRASE_FILE / _FD. Interactive: the
    /// second person is asked for at each such event (this key's name is one they may type)
    /// and types their own passphrase.
    #[arg(long, env = "CELLTRAIL_COSIGN_KEY")]
    pub cosign_key: Option<PathBuf>,
    /// This station's site code (or GLN).
    #[arg(long, env = "CELLTRAIL_SITE")]
    pub site: Option<String>,
    /// Store-and-forward queue directory (sled).
    #[arg(long, env = "CELLTRAIL_QUEUE", default_value = "./celltrail-station")]
    pub queue: PathBuf,
    /// Event kind (collected, received, stored, dispensed, bedside_check, ...); asked if missing.
    #[arg(long)]
    pub event: Option<String>,
    /// Chain id [default: the first bag DIN scanned; a product bag whose DIN names no chain is
    /// looked up on the server (the chain whose events produced it)].
    #[arg(long)]
    pub chain: Option<String>,
    /// A scanned code, exactly as the scanner sends it (repeatable).
    #[arg(long = "scan")]
    pub scans: Vec<String>,
    /// Event fields, name=value (repeatable), as for `celltrail event`.
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Comment (required for "No" answers and deviations).
    #[arg(long)]
    pub comment: Option<String>,
    /// When it happened, RFC 3339 [default: now].
    #[arg(long)]
    pub at: Option<String>,
    /// Scripted mode: never ask, sign without confirmation; anything missing is an error.
    #[arg(long)]
    pub yes: bool,
    /// Bedside identity check (same as --event bedside_check).
    #[arg(long)]
    pub bedside: bool,
    /// Only send what is queued, then stop.
    #[arg(long)]
    pub drain: bool,
}

pub const EXIT_ACCEPTED: i32 = 0;
pub const EXIT_REJECTED: i32 = 1;
pub const EXIT_MISMATCH: i32 = 2;
pub const EXIT_QUEUED: i32 = 3;
