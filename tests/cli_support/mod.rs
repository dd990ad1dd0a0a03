//! Runs the real `celltrail` binary as a user would: a zero-configuration server in a
//! scratch directory, and commands run to completion with a time limit.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_celltrail");

pub struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn command(cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("CELLTRAIL_") {
            c.env_remove(k);
        }
    }
    // Key passphrases come from a file, as automation gives them (never on the command line).
    let pass = cwd.join("passphrase");
    if !pass.exists() {
        std::fs::write(&pass, "cli test passphrase\n").unwrap();
    }
    c.env("CELLTRAIL_PASSPHRASE_FILE", &pass);
    c
}

/// Starts `celltrail serve` with zero configuration in `cwd`; returns its address.
pub fn serve(cwd: &Path) -> (Serve, String) {
    let child = command(cwd)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut serve = Serve(child);
    let mut out = BufReader::new(serve.0.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "serve exited early");
        if let Some(rest) = line.trim_end().strip_prefix("celltrail serving on ") {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            return (serve, addr);
        }
    }
}

/// Runs `args` (with `envs`) to completion, at most 60 s; returns (success, stdout + stderr).
pub fn run(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut c = command(cwd);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}
