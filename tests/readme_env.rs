//! The README's configuration table names every environment variable a flag reads.

use clap::CommandFactory;
use std::collections::BTreeSet;

fn envs(cmd: &clap::Command, out: &mut BTreeSet<String>) {
    for a in cmd.get_arguments() {
        if let Some(e) = a.get_env() {
            out.insert(e.to_string_lossy().into_owned());
        }
    }
    for s in cmd.get_subcommands() {
        envs(s, out);
    }
}

#[test]
fn readme_lists_every_environment_variable_a_flag_reads() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut all = BTreeSet::new();
    envs(&celltrail::cli::Cli::command(), &mut all);
    assert!(all.len() > 20, "{all:?}");
    let missing: Vec<&String> = all
        .iter()
        .filter(|e| !readme.contains(&format!("`{e}`")))
        .collect();
    assert!(missing.is_empty(), "README.md's table lacks {missing:?}");
}
