//! The README's configuration table names every environment variable a flag reads and every
//! key the config file accepts.

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

/// The keys the config file accepts at `section` (top level when empty), read off the file
/// parser's own "unknown field, expected one of" message: no second list of keys.
fn accepted_keys(section: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    let text = if section.is_empty() {
        "zzz_not_a_key = 1\n".to_string()
    } else {
        format!("[{section}]\nzzz_not_a_key = 1\n")
    };
    std::fs::write(&f, text).unwrap();
    let err = celltrail::config::ConfigFile::load(&f)
        .unwrap_err()
        .to_string();
    let expected = err
        .split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| {
            if section.is_empty() {
                k.to_string()
            } else {
                format!("{section}.{k}")
            }
        })
        .collect()
}

#[test]
fn readme_table_names_every_config_file_key_and_only_real_ones() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut in_table = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<String> = line
            .replace("\\|", "¦")
            .split('|')
            .map(str::to_string)
            .collect();
        if let Some(col) = cells.get(3) {
            for k in col.split('`').skip(1).step_by(2) {
                in_table.insert(k.to_string());
            }
        }
    }
    let mut accepted = accepted_keys("");
    accepted.remove("client");
    accepted.remove("station");
    accepted.extend(accepted_keys("client"));
    accepted.extend(accepted_keys("station"));
    assert!(accepted.contains("client.server") && accepted.contains("station.site"));
    let missing: Vec<&String> = accepted.difference(&in_table).collect();
    assert!(
        missing.is_empty(),
        "README's table lacks config keys {missing:?}"
    );
    let unknown: Vec<&String> = in_table.difference(&accepted).collect();
    assert!(
        unknown.is_empty(),
        "README's table names keys the file refuses: {unknown:?}"
    );
}
