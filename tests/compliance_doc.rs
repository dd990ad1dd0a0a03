//! docs/compliance.md's traceability matrix names tests; every one of them must exist (as a
//! `fn NAME(` in tests/ or src/), so the matrix cannot cite a test that was renamed or removed.

use std::path::Path;

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

/// Backquoted names in the last column of every table row.
fn named_tests(doc: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_end_matches('|').split('|').collect();
        let last = cells.last().unwrap_or(&"");
        for (i, part) in last.split('`').enumerate() {
            if i % 2 == 1 {
                names.push(part.to_string());
            }
        }
    }
    names
}

#[test]
fn every_test_named_in_the_compliance_matrix_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/compliance.md")).unwrap();
    let names = named_tests(&doc);
    assert!(
        names.len() >= 30,
        "the matrix names only {} tests",
        names.len()
    );
    let mut code = String::new();
    sources(&root.join("tests"), &mut code);
    sources(&root.join("src"), &mut code);
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !code.contains(&format!("fn {n}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/compliance.md names tests that do not exist: {missing:?}"
    );
    for clause in [
        "§11.10(a)",
        "§11.10(k)",
        "§11.50",
        "§11.70",
        "§11.100(a)",
        "§11.200(a)(1)",
        "§11.300(a)",
        "| §4 ",
        "| §7 ",
        "| §9 ",
        "| §12 ",
        "| §14 ",
        "| §17 ",
    ] {
        assert!(
            doc.contains(clause),
            "clause {clause} missing from the matrix"
        );
    }
}

#[test]
fn the_matrix_check_catches_a_missing_test() {
    let doc = "| §x | r | m | `no_such_test_anywhere_xyz` |\n";
    assert_eq!(named_tests(doc), ["no_such_test_anywhere_xyz"]);
}
