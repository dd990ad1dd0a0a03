//! Signing with a key directory (`--keys-dir`, rules in `signin`): who signs (badge or key
//! name, or the person signed in to this session), then each signer's passphrase, which opens
//! their key file. Nothing is signed until every signer's key is open.

use super::args::EXIT_REJECTED;
use super::session::{Station, Step};
use super::signin::{count_failure, Failed};
use super::ui::big;
use crate::keys::{KeyFile, KeyFileError};
use crate::note::NoteSigner;
use crate::pb::SignatureMeaning;
use std::path::PathBuf;

/// A signer picked for a signature, not yet unlocked.
pub(super) struct Picked {
    pub name: String,
    path: PathBuf,
    pub meaning: SignatureMeaning,
}

/// `Err(step)`: the form ends there (cancelled, quit, or refused with a word on screen).
pub(super) type Flow<T> = Result<T, Step>;

impl Station {
    /// The PERFORMED signer: the person signed in to this session, unless it ended (LOGOUT or
    /// too long without input); else whoever scans their badge now.
    pub(super) fn pick_first(&mut self) -> anyhow::Result<Flow<Picked>> {
        if self.signed_in.is_some() && self.ui.idle_since_mark() > self.rules.idle {
            let who = self.signed_in.take().unwrap_or_default();
            println!(
                "  SESSION ENDED: {who} was signed out after more than {} min without input; \
                 identify again",
                self.rules.idle.as_secs().div_ceil(60)
            );
        }
        if let Some(name) = self.signed_in.clone() {
            let path = self.keys_dir()?.find(&name).map_err(anyhow::Error::msg)?.1;
            println!("  signing as {name} (signed in; LOGOUT to change)");
            return Ok(Ok(Picked {
                name,
                path,
                meaning: SignatureMeaning::Performed,
            }));
        }
        self.pick(
            "Sign: scan your badge or type your key name",
            None,
            SignatureMeaning::Performed,
        )
    }

    /// A second person for `meaning`: always identified anew, someone other than `first`.
    pub(super) fn pick_second(
        &mut self,
        first: &str,
        meaning: SignatureMeaning,
    ) -> anyhow::Result<Flow<Picked>> {
        self.pick(
            &format!(
                "Second person ({}): scan your badge or type your key name",
                meaning.as_str_name()
            ),
            Some(first),
            meaning,
        )
    }

    fn pick(
        &mut self,
        prompt: &str,
        not: Option<&str>,
        meaning: SignatureMeaning,
    ) -> anyhow::Result<Flow<Picked>> {
        let registry = self.queue.signer_infos().unwrap_or_default();
        loop {
            let Some(typed) = self.ui.ask(prompt) else {
                return Ok(Err(Step::Quit));
            };
            let keys = self.keys_dir()?;
            let found = match not {
                None => keys.find(&typed),
                Some(_) => keys.find_other(&typed),
            };
            let (name, path) = match found {
                Ok(found) => found,
                Err(e) => {
                    println!("  {e}");
                    continue;
                }
            };
            // A locked-out person is told now, so another may sign this same form.
            let locked_until = self.counters()?.get(&name)?.locked_until;
            if locked_until > crate::time::now_nanos() {
                println!(
                    "  {name} is locked out on this station until {} (too many wrong \
                     passphrases); another person may sign",
                    super::signin::locked_until_text(locked_until)
                );
                continue;
            }
            if not == Some(name.as_str()) {
                println!(
                    "  {name} already signs this event: the second person must be someone else"
                );
                continue;
            }
            let first = not.and_then(|n| registry.get(n));
            match registry.get(&name) {
                Some(i) if first.is_some_and(|f| f.printed_name == i.printed_name) => {
                    println!(
                        "  {name} is a key of {}, the same person as the first signer: the \
                         second person must be someone else",
                        i.printed_name
                    );
                    continue;
                }
                Some(i) => println!("  {} ({name}; {} at {})", i.printed_name, i.role, i.site),
                None if registry.is_empty() => {
                    println!("  {name} (this station has not seen the key registry yet)")
                }
                None => {
                    println!("  {name} is not a registered signer: ask the administrator");
                    continue;
                }
            }
            return Ok(Ok(Picked {
                name,
                path,
                meaning,
            }));
        }
    }

    /// Opens `p`'s key with the passphrase they type now; counts wrong ones and locks the
    /// person out on this station after the limit.
    pub(super) fn unlock(&mut self, p: &Picked) -> anyhow::Result<Flow<NoteSigner>> {
        let counters = self.counters()?;
        let kf = KeyFile::load(&p.path)?;
        if !kf.is_encrypted() && self.keys_dir()?.only().is_some() {
            // `--key` with an old plaintext file still signs for one release, but never as if
            // it were a Part 11 signature: there is no passphrase, only the file.
            big("NOT PART 11", &plaintext_lines(&p.name, &p.path));
            let Some(ans) = self.ui.ask(&format!(
                "{}: type YES to sign with this UNENCRYPTED key ({}; NOT a Part 11 signature)",
                p.name,
                p.meaning.as_str_name()
            )) else {
                return Ok(Err(Step::Quit));
            };
            if !ans.trim().eq_ignore_ascii_case("yes") {
                big("CANCELLED", &["nothing was signed".into()]);
                return Ok(Err(Step::Done(EXIT_REJECTED)));
            }
            return Ok(Ok(kf.open(&crate::keys::Passphrase::new(""))?));
        }
        if !kf.is_encrypted() {
            big(
                "REFUSED",
                &[
                    format!(
                        "{}'s key file is not encrypted, so a passphrase proves nothing:",
                        p.name
                    ),
                    format!(
                        "convert it with `celltrail key encrypt {}`",
                        p.path.display()
                    ),
                    "nothing was signed".into(),
                ],
            );
            return Ok(Err(Step::Done(EXIT_REJECTED)));
        }
        if kf.name() != p.name {
            anyhow::bail!(
                "{} holds key {:?}, not {:?}",
                p.path.display(),
                kf.name(),
                p.name
            );
        }
        loop {
            let now = crate::time::now_nanos();
            let mut a = counters.get(&p.name)?;
            if a.locked_until > now {
                big(
                    "LOCKED OUT",
                    &[
                        format!(
                            "{} is locked out on this station until {} (too many wrong \
                             passphrases)",
                            p.name,
                            super::signin::locked_until_text(a.locked_until)
                        ),
                        "nothing was signed; another person may sign, or wait".into(),
                    ],
                );
                return Ok(Err(Step::Done(EXIT_REJECTED)));
            }
            let Some(pass) = self.ui.ask_secret(&format!(
                "{}: type your passphrase to sign ({})",
                p.name,
                p.meaning.as_str_name()
            )) else {
                return Ok(Err(Step::Quit));
            };
            match kf.open(&pass) {
                Ok(signer) => {
                    if a.failed > 0 {
                        a.failed = 0;
                        counters.put(&p.name, &a)?;
                    }
                    return Ok(Ok(signer));
                }
                Err(KeyFileError::WrongPassphrase { .. }) => {
                    match count_failure(&mut a, &self.rules, now) {
                        Failed::Again { n, left } => {
                            counters.put(&p.name, &a)?;
                            println!(
                                "  wrong passphrase ({n} of {}; {left} more before {} is locked \
                                 out here)",
                                self.rules.max_attempts, p.name
                            );
                        }
                        Failed::LockedOut { until, n } => {
                            counters.put(&p.name, &a)?;
                            let line = format!(
                                "LOCKOUT {} at site {}: {n} wrong passphrases in a row; locked \
                                 out on this station until {}",
                                p.name,
                                self.a.site.as_deref().unwrap_or_default(),
                                match until {
                                    super::signin::UNTIL_UNLOCKED => "unlocked by QA".to_string(),
                                    t => crate::time::rfc3339(t),
                                }
                            );
                            counters.log(now, &line)?;
                            tracing::warn!(signer = %p.name, "{line}");
                            eprintln!("celltrail scan: {line}");
                            if self.signed_in.as_deref() == Some(p.name.as_str()) {
                                self.signed_in = None;
                            }
                            big("LOCKED OUT", &[line, "nothing was signed".into()]);
                            return Ok(Err(Step::Done(EXIT_REJECTED)));
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Opens every picked signer's key, in order; the first one signs in to the session.
    pub(super) fn unlock_all(
        &mut self,
        picked: &[Picked],
    ) -> anyhow::Result<Flow<Vec<NoteSigner>>> {
        let mut out = Vec::new();
        for (i, p) in picked.iter().enumerate() {
            match self.unlock(p)? {
                Ok(s) => out.push(s),
                Err(step) => return Ok(Err(step)),
            }
            if i == 0 && self.signed_in.as_deref() != Some(p.name.as_str()) {
                self.signed_in = Some(p.name.clone());
                self.ui.mark();
            }
        }
        Ok(Ok(out))
    }

    fn keys_dir(&self) -> anyhow::Result<&super::signin::KeysDir> {
        self.keys
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no --keys-dir: this station signs with --key"))
    }

    fn counters(&self) -> anyhow::Result<super::signin::Counters> {
        super::signin::Counters::new(self.queue.db())
    }
}

/// What a one-person station says about a plaintext key file (at start and at each signing).
pub(super) fn plaintext_lines(name: &str, path: &std::path::Path) -> Vec<String> {
    vec![
        format!("{name}'s key file is NOT ENCRYPTED (old PRIVATE+KEY format):"),
        "anyone who copies the file can sign as its owner, so what it signs here is".into(),
        "NOT a 21 CFR Part 11 electronic signature (no passphrase component).".into(),
        format!(
            "Convert it now: `celltrail key encrypt {}`; plaintext keys stop loading in the \
             next release.",
            path.display()
        ),
    ]
}
