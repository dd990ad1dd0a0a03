//! The station's terminal: prompts, scanner lines from stdin (a keyboard-wedge scanner types
//! the code and Enter) and the big result words a gloved pharmacist reads from across the room.

use std::io::{BufRead, Write};

pub struct Ui {
    /// False in scripted mode (`--yes`): nothing is ever asked.
    pub interactive: bool,
}

impl Ui {
    /// Prints `prompt` and reads one line; `None` at end of input.
    pub fn ask(&self, prompt: &str) -> Option<String> {
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
