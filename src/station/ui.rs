//! The station's terminal: prompts, scanner lines from stdin (a keyboard-wedge scanner types
//! the code and Enter) and the big result words a gloved pharmacist reads from across the room.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
}

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
            cancelled: std::cell::Cell::new(false),
            interrupted,
        }
    }

    /// Whether the last `None` from [`Ui::ask`] was a CANCEL (clears it).
    pub fn take_cancelled(&self) -> bool {
        self.cancelled.replace(false)
    }

    /// Prints `prompt` and reads one line. `None` at end of input, for QUIT/EXIT (never taken
    /// as data), and for CANCEL or Esc (then [`Ui::take_cancelled`] is true and the operator
    /// has been told that nothing was signed).
    pub fn ask(&self, prompt: &str) -> Option<String> {
        let line = self.read(prompt)?;
        let t = line.trim();
        if t.eq_ignore_ascii_case(CANCEL) || t.starts_with('\u{1b}') {
            self.cancelled.set(true);
            big(
                "CANCELLED",
                &["the form was abandoned: nothing was signed".into()],
            );
            return None;
        }
        if t.eq_ignore_ascii_case("quit") || t.eq_ignore_ascii_case("exit") {
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
