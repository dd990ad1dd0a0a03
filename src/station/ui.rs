//! The station's terminal: prompts, scanner lines from stdin (a keyboard-wedge scanner types
//! the code and Enter) and the big result words a gloved pharmacist reads from across the room.

use std::cell::Cell;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What Ctrl-C asks; the answer is the next line typed.
const QUIT_QUESTION: &str =
    "Ctrl-C: quit the station? Nothing unsigned is kept. Type YES to quit, \
                             Enter to go on";

pub struct Ui {
    /// False in scripted mode (`--yes`): nothing is ever asked.
    pub interactive: bool,
    /// Set when the operator typed CANCEL (or Esc): the form is abandoned, not the station.
    cancelled: std::cell::Cell<bool>,
    /// Set by Ctrl-C: the next line answers "quit the station?".
    interrupted: Arc<AtomicBool>,
    /// Set when the operator typed LOGOUT: the form is abandoned and the signer signed out.
    logout: Cell<bool>,
    /// When the last line was typed, and the longest wait between two lines since [`Ui::mark`]
    /// (a signing session ends after too long without input).
    last_input: Cell<Instant>,
    longest_gap: Cell<Duration>,
}

/// What the operator types to end the signing session (and abandon the form), at any prompt.
pub const LOGOUT: &str = "LOGOUT";

/// What the operator types to abandon a half-filled form, at any prompt.
pub const CANCEL: &str = "CANCEL";

impl Ui {
    /// An interactive terminal catches Ctrl-C and asks before quitting (it must be called
    /// inside the tokio runtime).
    pub fn new(interactive: bool) -> Ui {
        let interrupted = Arc::new(AtomicBool::new(false));
        if interactive {
            let flag = interrupted.clone();
            tokio::spawn(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    flag.store(true, Ordering::SeqCst);
                    print!("\n  {QUIT_QUESTION} > ");
                    let _ = std::io::stdout().flush();
                }
            });
        }
        Ui {
            interactive,
            cancelled: Cell::new(false),
            interrupted,
            logout: Cell::new(false),
            last_input: Cell::new(Instant::now()),
            longest_gap: Cell::new(Duration::ZERO),
        }
    }

    /// Whether the last `None` from [`Ui::ask`] was a LOGOUT (clears it).
    pub fn take_logout(&self) -> bool {
        self.logout.replace(false)
    }

    /// Starts measuring inactivity afresh (a signing session starts).
    pub fn mark(&self) {
        self.longest_gap.set(Duration::ZERO);
    }

    /// The longest time without input since [`Ui::mark`], counting the wait until now.
    pub fn idle_since_mark(&self) -> Duration {
        self.longest_gap.get().max(self.last_input.get().elapsed())
    }

    fn typed(&self) {
        let gap = self.last_input.get().elapsed();
        self.longest_gap.set(self.longest_gap.get().max(gap));
        self.last_input.set(Instant::now());
    }

    /// Says the form was abandoned and remembers it (as CANCEL does).
    fn cancel(&self) {
        self.cancelled.set(true);
        big(
            "CANCELLED",
            &["the form was abandoned: nothing was signed".into()],
        );
    }

    /// The commands every prompt understands; `true` when `t` was one (then the caller
    /// returns `None`).
    fn command(&self, t: &str) -> bool {
        if t.eq_ignore_ascii_case(CANCEL) || t.starts_with('\u{1b}') {
            self.cancel();
            return true;
        }
        if t.eq_ignore_ascii_case(LOGOUT) {
            self.logout.set(true);
            self.cancelled.set(true);
            big(
                "SIGNED OUT",
                &["the form was abandoned: nothing was signed".into()],
            );
            return true;
        }
        t.eq_ignore_ascii_case("quit") || t.eq_ignore_ascii_case("exit")
    }

    /// Asks for a passphrase without echo, on the station's terminal, with the same keys as
    /// every other prompt: `None` for an empty line (the signing is cancelled), CANCEL, Esc,
    /// LOGOUT, QUIT, end of input, or Ctrl-C answered YES (Ctrl-C answered with Enter asks
    /// for the passphrase again).
    pub fn ask_secret(&self, prompt: &str) -> Option<crate::keys::Passphrase> {
        loop {
            print!("{prompt} > ");
            let _ = std::io::stdout().flush();
            let line = {
                let _hidden = match NoEcho::on_stdin() {
                    Ok(h) => h,
                    Err(e) => {
                        println!(
                            "\n  cannot hide what is typed on this input ({e}): a passphrase is \
                             typed at the station's terminal"
                        );
                        self.cancel();
                        return None;
                    }
                };
                self.read_secret_line()
            };
            let p = line?;
            // A line typed after Ctrl-C answers "quit the station?", it is never a passphrase.
            if self.interrupted.swap(false, Ordering::SeqCst) {
                if p.expose().trim().eq_ignore_ascii_case("yes") {
                    println!("  quitting: nothing unsigned was kept");
                    return None;
                }
                println!("  going on");
                continue;
            }
            let t = p.expose().trim();
            if t.is_empty() {
                self.cancel();
                return None;
            }
            // Passphrases are at least 12 characters: these words are never one.
            if self.command(t) {
                return None;
            }
            return Some(p);
        }
    }

    /// One line from stdin straight into wiped memory, without its line end.
    fn read_secret_line(&self) -> Option<crate::keys::Passphrase> {
        let mut line = zeroize::Zeroizing::new(String::new());
        let read = tokio::task::block_in_place(|| std::io::stdin().lock().read_line(&mut line));
        self.typed();
        match read {
            Ok(0) | Err(_) => {
                println!();
                None
            }
            Ok(_) => {
                while line.ends_with(['\r', '\n']) {
                    line.pop();
                }
                Some(crate::keys::Passphrase::new(line.as_str()))
            }
        }
    }

    /// Whether the last `None` from [`Ui::ask`] was a CANCEL (clears it).
    pub fn take_cancelled(&self) -> bool {
        self.cancelled.replace(false)
    }

    /// Prints `prompt` and reads one line. `None` at end of input, for QUIT/EXIT (never taken
    /// as data), for CANCEL or Esc (then [`Ui::take_cancelled`] is true and the operator
    /// has been told that nothing was signed), and for LOGOUT (also [`Ui::take_logout`]).
    pub fn ask(&self, prompt: &str) -> Option<String> {
        let line = self.read(prompt)?;
        if self.command(line.trim()) {
            return None;
        }
        Some(line)
    }

    fn read(&self, prompt: &str) -> Option<String> {
        loop {
            print!("{prompt} > ");
            let _ = std::io::stdout().flush();
            let line = self.read_line()?;
            // A line typed after Ctrl-C answers "quit the station?", it is never data.
            if self.interrupted.swap(false, Ordering::SeqCst) {
                if line.trim().eq_ignore_ascii_case("yes") {
                    println!("  quitting: nothing unsigned was kept");
                    return None;
                }
                println!("  going on");
                continue;
            }
            return Some(line);
        }
    }

    fn read_line(&self) -> Option<String> {
        let mut line = String::new();
        let read = tokio::task::block_in_place(|| std::io::stdin().lock().read_line(&mut line));
        self.typed();
        match read {
            Ok(0) | Err(_) => {
                println!();
                None
            }
            Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
        }
    }
}

/// A result word in a box, with detail lines under it.
pub fn big(word: &str, details: &[String]) {
    let width = 52;
    let bar = "#".repeat(width);
    let inner = width - 6;
    let pad = inner.saturating_sub(word.len());
    let left = pad / 2;
    println!();
    println!("{bar}");
    println!("###{}###", " ".repeat(inner));
    println!(
        "###{}{}{}###",
        " ".repeat(left),
        word,
        " ".repeat(pad - left)
    );
    println!("###{}###", " ".repeat(inner));
    println!("{bar}");
    for d in details {
        println!("   {d}");
    }
    println!();
}

/// The terminal on stdin with echo off (the line end still echoes), restored when dropped.
/// Only echo changes: the line is read as every other line (Esc, Ctrl-C, CANCEL and QUIT
/// behave as at any prompt).
struct NoEcho {
    saved: libc::termios,
}

impl NoEcho {
    fn on_stdin() -> std::io::Result<NoEcho> {
        // SAFETY: an all-zero termios is a valid value for tcgetattr to overwrite.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr only writes the struct passed by pointer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        t.c_lflag |= libc::ECHONL;
        // SAFETY: tcsetattr only reads the struct passed by pointer.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(NoEcho { saved })
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: as above; restores the settings read in `on_stdin`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}
