//! SECURITY.md's "Hostile clients" table names, for each attack, the test that proves its
//! defence as `file::test_name` (or `src/PATH.rs::test_name` for a unit test); every one must
//! exist as `fn test_name(` in `tests/file.rs` (or in that source file),
//! and every attack of issue 16 must have a row, so the table cannot cite a test that was
//! renamed or removed, nor lose an attack.

use std::path::Path;

/// The "Hostile clients" section's table rows.
fn hostile_rows(doc: &str) -> Vec<&str> {
    let section = doc
        .split("\n### Hostile clients")
        .nth(1)
        .expect("SECURITY.md has a \"### Hostile clients\" section");
    let section = section.split("\n### ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Attack") && !l.starts_with("| ---"))
        .collect()
}

/// `file::name` (a test in `tests/file.rs`) and `src/PATH.rs::name` (a unit test) references
/// in a row's last cell, as (path from the crate root, test name).
fn named_tests(row: &str) -> Vec<(String, String)> {
    let last = row.trim_end_matches('|').rsplit('|').next().unwrap_or("");
    last.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|t| t.split_once("::"))
        .filter(|(_, name)| !name.contains(' ') && !name.contains("::"))
        .filter_map(|(file, name)| {
            let path = if file.starts_with("src/") && file.ends_with(".rs") {
                file.to_string()
            } else if !file.contains('/') {
                format!("tests/{file}.rs")
            } else {
                return None;
            };
            Some((path, name.to_string()))
        })
        .collect()
}

#[test]
fn every_attack_row_names_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("SECURITY.md")).unwrap();
    let rows = hostile_rows(&doc);
    assert!(rows.len() >= 9, "only {} rows in the table", rows.len());
    for row in &rows {
        let tests = named_tests(row);
        assert!(!tests.is_empty(), "a row names no test: {row}");
        for (file, name) in tests {
            let text = std::fs::read_to_string(root.join(&file))
                .unwrap_or_else(|_| panic!("SECURITY.md names {name} in {file}, which is missing"));
            assert!(
                text.contains(&format!("fn {name}(")),
                "SECURITY.md names {name} in {file}, which does not define it"
            );
        }
    }
}

#[test]
fn every_attack_of_issue_16_has_a_row() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("SECURITY.md")).unwrap();
    let rows = hostile_rows(&doc).join("\n");
    for attack in [
        "Signature-verification amplification",
        "Admin/Backup",
        "Idle connections",
        "Slowloris",
        "file descriptors",
        "stuck writer",
        "GetChain",
        "Corrupt store files",
        "open stream or health watch",
    ] {
        assert!(rows.contains(attack), "no row for: {attack}");
    }
}
