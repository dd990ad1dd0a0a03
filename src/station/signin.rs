//! Who may sign at a station with a key directory (`--keys-dir`): a person identifies by
//! scanning their badge or typing their key name (the first component), then types their
//! passphrase (the second), as 21 CFR Part 11 §11.200(a)(1) asks: both at the first signing of
//! a continuous session, the passphrase at each later one. The session ends after a time
//! without input or on `LOGOUT`. Wrong passphrases are counted per person in the station's
//! directory; after `max_attempts` the person is locked out on this station for a while, and
//! each lockout is logged (stderr and the directory's `signin_log`).
//!
//! The key directory holds `NAME.key` files (encrypted PKCS#8, as `celltrail keygen` writes
//! them) and optionally `badges.txt`: one `BADGE-CODE KEY-NAME` per line (`#` comments), for
//! badges whose code is not the key name itself.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The badge file inside a key directory.
pub const BADGES_FILE: &str = "badges.txt";

/// The people who may sign at this station: their key files and badge codes.
pub struct KeysDir {
    dir: PathBuf,
    badges: BTreeMap<String, String>,
    /// A one-person station (`--key FILE`): the only key that signs first, and its file.
    only: Option<(String, PathBuf)>,
    /// Key files given at start for a second person (`--cosign-key FILE`), by key name.
    others: BTreeMap<String, PathBuf>,
}

impl KeysDir {
    /// Opens `dir` (it must exist) and reads its `badges.txt`, if any.
    pub fn open(dir: &Path) -> anyhow::Result<KeysDir> {
        if !dir.is_dir() {
            anyhow::bail!(
                "--keys-dir {}: not a directory (it holds the signers' NAME.key files)",
                dir.display()
            );
        }
        let mut badges = BTreeMap::new();
        let path = dir.join(BADGES_FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut parts = line.split_whitespace();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(code), Some(name), None) if crate::registry::valid_key_id(name) => {
                        badges.insert(code.to_string(), name.to_string());
                    }
                    _ => anyhow::bail!(
                        "{} line {}: expected `BADGE-CODE KEY-NAME`, found {line:?}",
                        path.display(),
                        i + 1
                    ),
                }
            }
        }
        Ok(KeysDir {
            dir: dir.to_path_buf(),
            badges,
            only: None,
            others: BTreeMap::new(),
        })
    }

    /// A one-person station (`--key FILE`): the first signer must identify as that key's
    /// name (or a badge mapped to it in a `badges.txt` beside the file). A second person
    /// identifies by the key name of `cosign` (`--cosign-key`), by a key name or badge of
    /// the key file's directory, or by typing the path to their key file.
    pub fn single(key: &Path, cosign: Option<&Path>) -> anyhow::Result<KeysDir> {
        let kf = crate::keys::KeyFile::load(key)?;
        let parent = match key.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut k = KeysDir::open(&parent)?;
        k.only = Some((kf.name().to_string(), key.to_path_buf()));
        if let Some(c) = cosign {
            let cf = crate::keys::KeyFile::load(c)?;
            k.others.insert(cf.name().to_string(), c.to_path_buf());
        }
        Ok(k)
    }

    /// The key file of a one-person station (`--key`), if this is one.
    pub fn only(&self) -> Option<&(String, PathBuf)> {
        self.only.as_ref()
    }

    /// The key name and key file of the first signer: a scanned badge or a typed key name
    /// (on a one-person station, only its own key).
    pub fn find(&self, typed: &str) -> Result<(String, PathBuf), String> {
        let Some((own, path)) = &self.only else {
            return self.find_in_dir(typed);
        };
        let t = typed.trim();
        let name = self.badges.get(t).map(String::as_str).unwrap_or(t);
        if name == own {
            return Ok((own.clone(), path.clone()));
        }
        // What was typed is not repeated: it may have been a passphrase typed too early.
        Err(format!(
            "that is not the identification of this station's key ({}): type the key name it \
             was made with (`celltrail keygen --name`) or scan your badge (your passphrase is \
             asked after the SUMMARY)",
            path.display()
        ))
    }

    /// The key name and key file of a second person: as [`KeysDir::find`] on a key
    /// directory; on a one-person station also a `--cosign-key` key's name or the path to a
    /// key file.
    pub fn find_other(&self, typed: &str) -> Result<(String, PathBuf), String> {
        if self.only.is_none() {
            return self.find_in_dir(typed);
        }
        let t = typed.trim();
        let name = self.badges.get(t).map(String::as_str).unwrap_or(t);
        if let Some(p) = self.others.get(name) {
            return Ok((name.to_string(), p.clone()));
        }
        if let Ok(found) = self.find_in_dir(t) {
            return Ok(found);
        }
        let path = Path::new(t);
        if t.contains('/') || t.ends_with(".key") || path.is_file() {
            return match crate::keys::KeyFile::load(path) {
                Ok(kf) => Ok((kf.name().to_string(), path.to_path_buf())),
                Err(e) => Err(format!("{e}")),
            };
        }
        Err(
            "that is no badge or key name known here: type your key name, scan your badge, \
             or type the path to your key file"
                .to_string(),
        )
    }

    fn find_in_dir(&self, typed: &str) -> Result<(String, PathBuf), String> {
        let t = typed.trim();
        // What was typed is not repeated: it may be a passphrase typed too early.
        let unknown = || {
            format!(
                "that is no badge known here and no key on this station; scan your badge \
                 again (your passphrase is asked after the SUMMARY), or ask the administrator \
                 to add your key to {}",
                self.dir.display()
            )
        };
        let name = match self.badges.get(t) {
            Some(n) => n.clone(),
            None if crate::registry::valid_key_id(t) => t.to_string(),
            None => return Err(unknown()),
        };
        let path = self.dir.join(format!("{name}.key"));
        if !path.is_file() {
            return Err(unknown());
        }
        Ok((name, path))
    }
}

/// The session and lockout rules of a station.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// A session ends after this long without input.
    pub idle: Duration,
    /// Wrong passphrases (in a row) before a person is locked out.
    pub max_attempts: u32,
    /// How long a lockout lasts; zero: until someone unlocks the person
    /// (`celltrail station unlock`).
    pub lockout: Duration,
}

/// `Attempts::locked_until` of a lockout that lasts until someone unlocks it.
pub const UNTIL_UNLOCKED: i64 = i64::MAX;

/// Until when a person is locked out, as a person reads it.
pub fn locked_until_text(until: i64) -> String {
    match until {
        UNTIL_UNLOCKED => "QA unlocks them (`celltrail station unlock`)".to_string(),
        t => format!(
            "{} (or until QA unlocks them: `celltrail station unlock`)",
            crate::manifest::when(t)
        ),
    }
}

/// A person's wrong passphrases as counted on this station.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempts {
    /// Wrong passphrases since the last right one.
    pub failed: u32,
    /// Locked out until (unix nanoseconds); 0 when not locked.
    pub locked_until: i64,
}

/// What one wrong passphrase did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// `n` wrong so far; `left` more are allowed.
    Again { n: u32, left: u32 },
    /// Locked out until this time (unix nanoseconds).
    LockedOut { until: i64, n: u32 },
}

/// Counts a wrong passphrase (pure).
pub fn count_failure(a: &mut Attempts, rules: &Rules, now: i64) -> Failed {
    a.failed += 1;
    if a.failed >= rules.max_attempts {
        a.locked_until = match rules.lockout.as_nanos() {
            0 => UNTIL_UNLOCKED,
            n => now.saturating_add(i64::try_from(n).unwrap_or(i64::MAX)),
        };
        let n = a.failed;
        a.failed = 0;
        Failed::LockedOut {
            until: a.locked_until,
            n,
        }
    } else {
        Failed::Again {
            n: a.failed,
            left: rules.max_attempts - a.failed,
        }
    }
}

/// The per-person attempt counters and the lockout log, in the station's directory.
pub struct Counters {
    attempts: sled::Tree,
    log: sled::Tree,
    db: sled::Db,
}

impl Counters {
    pub fn new(db: sled::Db) -> anyhow::Result<Counters> {
        Ok(Counters {
            attempts: db.open_tree("signin_attempts")?,
            log: db.open_tree("signin_log")?,
            db,
        })
    }

    pub fn get(&self, name: &str) -> anyhow::Result<Attempts> {
        Ok(match self.attempts.get(name)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => Attempts::default(),
        })
    }

    pub fn put(&self, name: &str, a: &Attempts) -> anyhow::Result<()> {
        self.attempts.insert(name, serde_json::to_vec(a)?)?;
        self.db.flush().context("flush the station directory")?;
        Ok(())
    }

    /// Every person with a counter on this station, by key name.
    pub fn all(&self) -> anyhow::Result<Vec<(String, Attempts)>> {
        self.attempts
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    serde_json::from_slice(&v).unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Appends a line to the lockout log (kept; never emptied by the station).
    pub fn log(&self, now: i64, line: &str) -> anyhow::Result<()> {
        let id = self.db.generate_id()?;
        let mut key = now.to_be_bytes().to_vec();
        key.extend_from_slice(&id.to_be_bytes());
        self.log.insert(key, line.as_bytes())?;
        self.db.flush().context("flush the station directory")?;
        Ok(())
    }

    /// Every logged line, oldest first.
    pub fn logged(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.logged_at()?.into_iter().map(|(_, l)| l).collect())
    }

    /// Every logged line with when it was logged (unix nanoseconds), oldest first.
    pub fn logged_at(&self) -> anyhow::Result<Vec<(i64, String)>> {
        self.log
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let at = k
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(i64::from_be_bytes)
                    .unwrap_or_default();
                Ok((at, String::from_utf8_lossy(&v).into_owned()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_passphrases_lock_out_after_the_limit_and_the_count_starts_again() {
        let rules = Rules {
            idle: Duration::from_secs(900),
            max_attempts: 3,
            lockout: Duration::from_secs(60),
        };
        let mut a = Attempts::default();
        assert_eq!(
            count_failure(&mut a, &rules, 0),
            Failed::Again { n: 1, left: 2 }
        );
        assert_eq!(
            count_failure(&mut a, &rules, 0),
            Failed::Again { n: 2, left: 1 }
        );
        assert_eq!(
            count_failure(&mut a, &rules, 5),
            Failed::LockedOut {
                until: 5 + 60_000_000_000,
                n: 3
            }
        );
        assert_eq!(a.failed, 0);
    }

    #[test]
    fn badges_and_key_names_find_key_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("nurse.ada.key"), "x").unwrap();
        std::fs::write(
            d.path().join(BADGES_FILE),
            "# badge  key\nB-0042 nurse.ada\n\n",
        )
        .unwrap();
        let k = KeysDir::open(d.path()).unwrap();
        assert_eq!(k.find("B-0042").unwrap().0, "nurse.ada");
        assert_eq!(k.find(" nurse.ada ").unwrap().0, "nurse.ada");
        assert!(k
            .find("nurse.ben")
            .unwrap_err()
            .contains("no key on this station"));
        assert!(k.find("YES PLEASE").unwrap_err().contains("no badge"));
        std::fs::write(d.path().join(BADGES_FILE), "B-1 a b\n").unwrap();
        assert!(KeysDir::open(d.path())
            .err()
            .unwrap()
            .to_string()
            .contains("line 1"));
    }
}
