//! The image's builder stage sees only what `deploy/Dockerfile` COPYs. This test assembles
//! exactly those files in an empty directory, in the Dockerfile's order, runs the stage's shell
//! steps there, and wherever the stage runs cargo runs `cargo metadata --locked` and `cargo
//! fetch --locked` (offline: the manifest, its targets and the lock file are checked, not the
//! network; `metadata` alone does not look for target files, `fetch` does) and checks that
//! every path `build.rs` names is there. A `[[bench]]`, `[[example]]`, proto or workspace member
//! added without a COPY fails here, not in a production image build.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Dockerfile's instructions (continuation lines joined, comments dropped) of the first
/// stage: `(KEYWORD, arguments)`.
fn builder_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(t);
            joined.push(std::mem::take(&mut cur));
        }
    }
    let mut stage = Vec::new();
    let mut froms = 0;
    for ins in joined {
        let (kw, args) = ins.split_once(char::is_whitespace).unwrap_or((&ins, ""));
        let kw = kw.to_ascii_uppercase();
        if kw == "FROM" {
            froms += 1;
            if froms > 1 {
                break;
            }
        }
        stage.push((kw, args.trim().to_string()));
    }
    stage
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("COPY {}: {e}", from.display()));
    }
}

/// `COPY a b ./` or `COPY dir ./dir` relative to the build context (the repository root).
fn copy(args: &str, context: &Path, workdir: &Path) {
    let words: Vec<&str> = args
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    assert!(
        !args.contains("--from"),
        "the builder stage copies from the context only: {args}"
    );
    let (dest, srcs) = words.split_last().expect("COPY needs a destination");
    let dest = workdir.join(dest);
    for s in srcs {
        let src = context.join(s);
        assert!(src.exists(), "COPY {s}: not in the repository");
        if dest.to_string_lossy().ends_with('/') || srcs.len() > 1 {
            copy_tree(&src, &dest.join(Path::new(s).file_name().unwrap()));
        } else {
            copy_tree(&src, &dest);
        }
    }
}

/// The string literals of `build.rs` that name a file or directory of the repository.
fn build_script_paths() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("build.rs")).unwrap();
    let mut out = Vec::new();
    for lit in text.split('"').skip(1).step_by(2) {
        let lit = lit.trim_start_matches("cargo:rerun-if-changed=");
        if !lit.is_empty() && Path::new(ROOT).join(lit).exists() {
            out.push(lit.to_string());
        }
    }
    out
}

/// Runs one `RUN` line: its `&&` steps in order; each cargo step becomes `cargo metadata
/// --locked` and `cargo fetch --locked` (offline) plus the build-input check; steps that use
/// the build's output (`target/`) are skipped.
fn run(args: &str, workdir: &Path, target: &Path) -> Vec<String> {
    let mut ran_cargo = Vec::new();
    for step in args.split("&&").map(str::trim) {
        if step.starts_with("cargo ") {
            for check in [
                // For this machine's target only: CI's cargo home holds the crates its own
                // build downloaded, not other platforms' (the image's fetch gets those).
                &[
                    "metadata",
                    "--locked",
                    "--offline",
                    "--format-version",
                    "1",
                    "--filter-platform",
                    "host-tuple",
                ][..],
                &["fetch", "--locked", "--offline", "--target", "host-tuple"],
            ] {
                let o = Command::new(env!("CARGO"))
                    .args(check)
                    .current_dir(workdir)
                    .env("CARGO_TARGET_DIR", target)
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "`{step}` in the image: `cargo {}` fails on exactly the files \
                     deploy/Dockerfile copies; add a COPY for what Cargo.toml needs:\n{}",
                    check.join(" "),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            for p in build_script_paths() {
                assert!(
                    workdir.join(&p).exists(),
                    "`{step}` in the image: build.rs needs `{p}`, which deploy/Dockerfile \
                     does not copy"
                );
            }
            ran_cargo.push(step.to_string());
        } else if !step.contains("target/") {
            let o = Command::new("sh")
                .args(["-c", step])
                .current_dir(workdir)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "`{step}`: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    ran_cargo
}

#[test]
fn dockerfile_copies_everything_the_manifest_needs() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/Dockerfile")).unwrap();
    let stage = builder_stage(&text);
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("target");
    let mut workdir: PathBuf = scratch.path().join("root");
    let mut copies = 0;
    let mut cargo_steps = Vec::new();
    for (kw, args) in &stage {
        match kw.as_str() {
            "WORKDIR" => {
                workdir = scratch
                    .path()
                    .join("root")
                    .join(args.trim_start_matches('/'));
                std::fs::create_dir_all(&workdir).unwrap();
            }
            "COPY" | "ADD" => {
                copy(args, Path::new(ROOT), &workdir);
                copies += 1;
            }
            "RUN" => cargo_steps.extend(run(args, &workdir, &target)),
            _ => {}
        }
    }
    // The stage as written today: manifest, lock, build script, protos, benches, then sources;
    // it fetches once before the sources and builds once after.
    assert!(copies >= 3, "{stage:?}");
    assert_eq!(
        cargo_steps.len(),
        2,
        "expected `cargo fetch` and `cargo build`: {stage:?}"
    );
    assert!(
        build_script_paths().iter().any(|p| p.starts_with("proto")),
        "build.rs's inputs were not found: {:?}",
        build_script_paths()
    );
}

#[test]
fn the_stage_parser_reads_continuations_and_stops_at_the_second_stage() {
    let stage = builder_stage(
        "# c\nFROM a AS b\nWORKDIR /src\nCOPY x \\\n  y ./\nRUN a \\\n && b\nFROM c\nCOPY --from=b /z /z\n",
    );
    assert_eq!(
        stage,
        [
            ("FROM".into(), "a AS b".into()),
            ("WORKDIR".into(), "/src".into()),
            ("COPY".into(), "x  y ./".into()),
            ("RUN".into(), "a  && b".into()),
        ]
    );
}
