//! The structure the code must keep: the layers `ARCHITECTURE.md` states (a module uses only
//! modules of its own layer or below, and no two modules use each other), and every citation of
//! `docs/design.md` in the code names a section or rule that exists there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers, bottom first, as `ARCHITECTURE.md` lists them under "## Layers": one line per
/// layer, `N. **name** — \`module\`, \`module\` …`.
fn layers() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let section = text
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"## Layers\" section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines() {
        let Some((n, rest)) = line.split_once(". **") else {
            continue;
        };
        let Ok(level) = n.trim().parse::<usize>() else {
            continue;
        };
        let modules = rest.split_once(" — ").map_or("", |(_, m)| m);
        for m in modules.split('`').skip(1).step_by(2) {
            assert!(
                out.insert(m.to_string(), level).is_none(),
                "module {m} is in two layers"
            );
        }
    }
    assert!(out.len() > 10, "no layers found in ARCHITECTURE.md");
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`src/ledger/writer.rs` → `ledger`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root().join("src")).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// `crate::X` names used by a file's code (comments and the `#[cfg(test)]` tail excluded; test
/// modules may reach any layer).
fn uses(text: &str) -> BTreeSet<String> {
    let code = text.split("\n#[cfg(test)]").next().unwrap();
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap();
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Module → the modules it uses (edges between different top-level modules only).
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        if f.components().any(|c| c.as_os_str() == "tests") {
            continue; // test-only module directories (src/policy/tests)
        }
        let Some(m) = module_of(&f) else { continue };
        let text = std::fs::read_to_string(&f).unwrap();
        let entry = out.entry(m.clone()).or_default();
        for u in uses(&text) {
            if u != m {
                entry.insert(u);
            }
        }
    }
    out
}

#[test]
fn every_module_is_in_a_layer_and_uses_only_its_layer_or_below() {
    let layers = layers();
    let mut bad = Vec::new();
    for (m, used) in edges() {
        let Some(&lm) = layers.get(&m) else {
            bad.push(format!("module {m} is in no layer of ARCHITECTURE.md"));
            continue;
        };
        for u in used {
            match layers.get(&u) {
                None => bad.push(format!("{m} uses {u}, which is in no layer")),
                Some(&lu) if lu > lm => {
                    bad.push(format!("{m} (layer {lm}) reaches up to {u} (layer {lu})"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(bad.is_empty(), "layer violations:\n{}", bad.join("\n"));
}

#[test]
fn no_two_modules_use_each_other_directly_or_around_a_cycle() {
    let g = edges();
    // Depth-first search for a back edge; report the cycle.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for n in g.get(m).into_iter().flatten() {
            match state.get(n.as_str()) {
                Some(1) => {
                    let at = path.iter().position(|p| p == n).unwrap();
                    let mut cycle = path[at..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(n, g, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if !state.contains_key(m) {
            if let Some(c) = visit(m, &g, &mut state, &mut Vec::new()) {
                panic!("import cycle: {}", c.join(" -> "));
            }
        }
    }
}

#[test]
fn the_layer_check_sees_an_upward_edge() {
    // The checker itself: a file of layer-1 `rules` that used `server` would be refused.
    let layers = layers();
    let used = uses("use crate::server::ServeOptions;\n// crate::api in a comment\n");
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["server"]);
    assert!(layers["server"] > layers["rules"]);
}

/// Every `docs/design.md §n` / `DESIGN §n` and `[Rn]` cited in the code, docs and protos names a
/// section or rule of docs/design.md.
#[test]
fn every_design_citation_resolves() {
    let design = std::fs::read_to_string(root().join("docs/design.md")).unwrap();
    let sections: BTreeSet<String> = design
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .filter_map(|l| l.split_once('.').map(|(n, _)| n.to_string()))
        .collect();
    let rules: BTreeSet<String> = design
        .match_indices("[R")
        .filter_map(|(i, _)| {
            let n: String = design[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            (!n.is_empty() && design[i + 2 + n.len()..].starts_with(']')).then_some(n)
        })
        .collect();
    let mut files = Vec::new();
    for d in ["src", "tests", "proto", "docs", "benches"] {
        rust_files_any(&root().join(d), &mut files);
    }
    for f in [
        "ARCHITECTURE.md",
        "README.md",
        "SECURITY.md",
        "BENCHMARKS.md",
    ] {
        files.push(root().join(f));
    }
    let mut bad = Vec::new();
    let mut cited = 0;
    for f in files {
        if f.ends_with("docs/design.md") || f.ends_with("tests/structure.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for (i, _) in text.match_indices("§") {
            let before = &text[..i];
            if !(before.ends_with("design.md ") || before.ends_with("DESIGN ")) {
                continue;
            }
            let n: String = text[i + '§'.len_utf8()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            cited += 1;
            if !sections.contains(&n) {
                bad.push(format!("{}: design §{n} does not exist", f.display()));
            }
        }
        {
            for (i, _) in text.match_indices("[R") {
                let n: String = text[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                if n.is_empty() {
                    continue;
                }
                cited += 1;
                if !rules.contains(&n) {
                    bad.push(format!("{}: rule [R{n}] does not exist", f.display()));
                }
            }
        }
    }
    assert!(
        cited > 5,
        "found only {cited} citations; is the scan broken?"
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn rust_files_any(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files_any(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| x == "rs" || x == "md" || x == "proto")
        {
            out.push(p);
        }
    }
}

/// The file names of a data directory's layout, as string literals. Only `src/datadir.rs` may
/// spell them; everything else asks `DataDir` for a path.
const LAYOUT_NAMES: &[&str] = &[
    "\"db\"",
    "\"log.key\"",
    "\"log.vkey\"",
    "\"log.key.next\"",
    "\"retired-keys\"",
    "\"trust-anchors.txt\"",
    "\"admin.key\"",
    "\"entries.bin\"",
    "\"heads.json\"",
    "\"backup.json\"",
    "\"witness.key\"",
    "\"witness.vkey\"",
];

/// The production part of a source file: everything before its `#[cfg(test)]` module.
fn production_part(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod ").next().unwrap_or(text)
}

/// Lines of production code outside `src/datadir.rs` that spell a layout file name.
fn layout_literals_outside_datadir(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, text) in files {
        if path.ends_with("datadir.rs") {
            continue;
        }
        for (i, line) in production_part(text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for name in LAYOUT_NAMES {
                if code.contains(&format!("join({name})")) || code.contains(&format!("= {name};")) {
                    bad.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    bad
}

#[test]
fn only_the_data_directory_type_spells_the_layout() {
    let mut paths = Vec::new();
    rust_files(&root().join("src"), &mut paths);
    let files: Vec<(PathBuf, String)> = paths
        .into_iter()
        // The station queue's directory is sled's own (`db` there is sled's file, not ours).
        .filter(|p| !p.ends_with("station/queue.rs"))
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect();
    let bad = layout_literals_outside_datadir(&files);
    assert!(
        bad.is_empty(),
        "layout file names outside src/datadir.rs (add a DataDir method):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_layout_check_sees_a_spelled_file_name() {
    let files = vec![(
        PathBuf::from("src/witness_cmd.rs"),
        "fn f(dir: &Path) { let p = dir.join(\"witness.key\"); }\n".to_string(),
    )];
    assert_eq!(layout_literals_outside_datadir(&files).len(), 1);
}
