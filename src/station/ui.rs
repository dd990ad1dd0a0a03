//! The station's terminal: prompts, scanner lines from stdin (a keyboard-wedge scanner types
//! the code and Enter) and the big result words a gloved pharmacist reads from across the room.

use std::io::{BufRead, Write};

pub struct Ui {
    /// False in scripted mode (`--yes`): nothing is ever asked.
    pub interactive: bool,
    /// Set when the operator typed CANCEL (or Esc): the form is abandoned, not the station.
    cancelled: std::cell::Cell<bool>,
}

/// What the operator types to abandon a half-filled form, at any prompt.
pub const CANCEL: &str = "CANCEL";

impl Ui {
    pub fn new(interactive: bool) -> Ui {
        Ui {
            interactive,
            cancelled: std::cell::Cell::new(false),
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
        print!("{prompt} > ");
        let _ = std::io::stdout().flush();
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
