//! `celltrail station`: what QA does about the sign-in lockouts of a station (`signin`).
//! `lockouts` lists who is locked out or has wrong passphrases counted, and the station's
//! sign-in log; `unlock NAME` ends a person's lockout before it expires. An unlock is itself
//! logged with who unlocked, when and why: the unlocker opens their own key with their
//! passphrase (so the log names a person, not whoever was at the keyboard), must be a
//! registered `qa` signer as this station last saw the key registry, and may not unlock
//! themselves. Like `celltrail queue`, it works on a stopped station's directory and never
//! talks to the server.

use super::queue::Queue;
use super::queue_cmd::QueueDir;
use super::signin::{locked_until_text, Attempts, Counters};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// The registry role that may unlock a signer.
pub const UNLOCK_ROLE: &str = "qa";

pub const EXIT_CODES: &str = "Exit codes: 0 done, 1 error or refused (no queue at --queue DIR, \
the station is running on it, NAME is not locked out, the unlocker is NAME, not a registered \
qa signer, or their passphrase is wrong; an empty --reason), 2 bad command line.";

#[derive(Subcommand, Debug)]
pub enum StationCommand {
    /// List the signers locked out on this station (and wrong passphrases counted), then the
    /// station's sign-in log: every lockout and unlock.
    #[command(after_help = EXIT_CODES)]
    Lockouts(LockoutsArgs),
    /// End a signer's lockout on this station before it expires (QA). Logged with who
    /// unlocked, when and why.
    ///
    /// The unlocker proves who they are with their own key file and its passphrase (asked on
    /// the terminal without echo, or CELLTRAIL_PASSPHRASE_FILE / _FD for automation); they must
    /// be registered with role qa (as this station last saw the key registry) and may not
    /// unlock themselves. Stop the station first (its directory is in use while it runs).
    #[command(after_help = EXIT_CODES)]
    Unlock(UnlockArgs),
}

impl StationCommand {
    /// The `--queue` flag of whichever subcommand this is (for the config file's `[station]`).
    pub fn dir_mut(&mut self) -> &mut QueueDir {
        match self {
            StationCommand::Lockouts(a) => &mut a.dir,
            StationCommand::Unlock(a) => &mut a.dir,
        }
    }
}

#[derive(Args, Debug)]
pub struct LockoutsArgs {
    #[command(flatten)]
    pub dir: QueueDir,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub dir: QueueDir,
    /// The locked-out signer's key name (as the lockout names them).
    pub name: String,
    /// Your key file (QA): it proves who unlocked.
    #[arg(long)]
    pub key: PathBuf,
    /// Why the lockout ends early (e.g. "identity confirmed in person; passphrase reset");
    /// kept in the log.
    #[arg(long)]
    pub reason: String,
}

pub fn run(cmd: StationCommand) -> anyhow::Result<()> {
    match cmd {
        StationCommand::Lockouts(a) => lockouts(a),
        StationCommand::Unlock(a) => unlock(a),
    }
}

fn lockouts(a: LockoutsArgs) -> anyhow::Result<()> {
    let q = Queue::open_existing(&a.dir.queue)?;
    let counters = Counters::new(q.db())?;
    let now = crate::time::now_nanos();
    let people = counters.all()?;
    let mut any = false;
    for (name, at) in &people {
        if let Some(line) = state_line(name, at, now) {
            println!("{line}");
            any = true;
        }
    }
    if !any {
        println!("nobody is locked out on this station");
    }
    let log = counters.logged_at()?;
    println!("sign-in log ({} lines):", log.len());
    for (at, l) in &log {
        println!("  {}  {l}", crate::manifest::when(*at));
    }
    Ok(())
}

/// One person's line in `lockouts`, or `None` when nothing is counted against them.
fn state_line(name: &str, a: &Attempts, now: i64) -> Option<String> {
    if a.locked_until > now {
        return Some(format!(
            "LOCKED OUT  {name}  until {}",
            locked_until_text(a.locked_until)
        ));
    }
    (a.failed > 0).then(|| {
        format!(
            "counting    {name}  {} wrong passphrase(s) since the last right one",
            a.failed
        )
    })
}

fn unlock(a: UnlockArgs) -> anyhow::Result<()> {
    let reason = a.reason.trim();
    if reason.is_empty() {
        anyhow::bail!("--reason is empty: say why the lockout ends early (it is kept in the log)");
    }
    let q = Queue::open_existing(&a.dir.queue)?;
    let counters = Counters::new(q.db())?;
    let now = crate::time::now_nanos();
    let before = counters.get(&a.name)?;
    if before.locked_until <= now {
        anyhow::bail!(
            "{} is not locked out on this station{}; nothing to unlock (`celltrail station \
             lockouts` lists who is)",
            a.name,
            match before.failed {
                0 => String::new(),
                n => format!(" ({n} wrong passphrase(s) counted; the next right one clears them)"),
            }
        );
    }
    let kf = crate::keys::KeyFile::load(&a.key)?;
    if !kf.is_encrypted() {
        anyhow::bail!(
            "{}: an unlock needs an encrypted key file (a plaintext key proves nothing about \
             who typed the command); convert it with `celltrail key encrypt {}`",
            a.key.display(),
            a.key.display()
        );
    }
    if kf.name() == a.name {
        anyhow::bail!(
            "{} cannot unlock themselves: another person (QA) must do it",
            a.name
        );
    }
    let registry = q.signer_infos()?;
    let who = match registry.get(kf.name()) {
        Some(i) if i.role == UNLOCK_ROLE => i.clone(),
        Some(i) => anyhow::bail!(
            "{} is registered as {} at {}: only a {UNLOCK_ROLE} signer may unlock",
            kf.name(),
            i.role,
            i.site
        ),
        None if registry.is_empty() => anyhow::bail!(
            "this station has not seen the key registry yet, so it cannot tell whether {} is \
             a {UNLOCK_ROLE} signer; start the station once while the server is reachable",
            kf.name()
        ),
        None => anyhow::bail!(
            "{} is not a registered signer (as this station last saw the key registry): only \
             a {UNLOCK_ROLE} signer may unlock",
            kf.name()
        ),
    };
    // The passphrase proves the unlocker is the key's owner.
    kf.open_with(&crate::keys::PassphraseSource::SIGNER)?;
    counters.put(&a.name, &Attempts::default())?;
    let line = format!(
        "UNLOCK {} by {} ({}, {} at {}) at {}: {reason}",
        a.name,
        kf.name(),
        who.printed_name,
        who.role,
        who.site,
        crate::time::rfc3339(now)
    );
    counters.log(now, &line)?;
    tracing::warn!(signer = %a.name, unlocked_by = %kf.name(), "{line}");
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_lines_say_who_is_locked_and_who_is_counted() {
        let locked = Attempts {
            failed: 0,
            locked_until: super::super::signin::UNTIL_UNLOCKED,
        };
        let line = state_line("nurse.ada", &locked, 5).unwrap();
        assert!(line.starts_with("LOCKED OUT  nurse.ada"), "{line}");
        assert!(line.contains("QA unlocks them"), "{line}");
        let counting = Attempts {
            failed: 2,
            locked_until: 0,
        };
        assert!(state_line("nurse.cy", &counting, 5)
            .unwrap()
            .contains("2 wrong passphrase(s)"));
        // An expired lockout with nothing counted since is no line at all.
        let expired = Attempts {
            failed: 0,
            locked_until: 4,
        };
        assert_eq!(state_line("nurse.bo", &expired, 5), None);
    }
}
