//! The one table of event kinds and fields (`src/event_fields/table.rs`) covers the proto, and
//! `docs/events.md` and `celltrail event --help` are generated from it.
//! Regenerate the document: `CELLTRAIL_BLESS=1 cargo test --test events_doc`.

use celltrail::event_fields::{self, Required, KINDS};
use celltrail::policy::EventKind;
use std::collections::BTreeSet;
use std::process::Command;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md");

#[test]
fn every_detail_of_the_proto_has_a_row_and_every_row_a_proto_field() {
    let table: BTreeSet<&str> = KINDS.iter().map(|k| k.name).collect();
    assert_eq!(table.len(), KINDS.len(), "a kind is listed twice");
    let proto_kinds = event_fields::proto_kinds();
    // Custody details as the policy classifies them; the key registry's are `celltrail key`'s.
    assert_eq!(proto_kinds.len(), EventKind::ALL.len(), "{proto_kinds:?}");
    assert!(
        !proto_kinds.iter().any(|k| k.starts_with("key_")),
        "{proto_kinds:?}"
    );
    for proto in proto_kinds {
        assert!(
            table.contains(proto.as_str()),
            "EventBody.detail has `{proto}` but src/event_fields/table.rs KINDS has no row for it: \
             add one (its fields, units and meanings)"
        );
    }
    for k in KINDS {
        let desc = event_fields::detail_descriptor(k.name)
            .unwrap_or_else(|| panic!("KINDS row `{}` is not a field of EventBody.detail", k.name));
        let rows: BTreeSet<&str> = k.fields.iter().map(|f| f.proto).collect();
        assert_eq!(
            rows.len(),
            k.fields.len(),
            "{}: a field is listed twice",
            k.name
        );
        for fd in desc.fields() {
            assert!(
                rows.contains(fd.name()),
                "{} has field `{}` but KINDS row `{}` does not list it",
                desc.full_name(),
                fd.name(),
                k.name
            );
        }
        for f in k.fields {
            assert!(
                desc.get_field_by_name(f.proto).is_some(),
                "KINDS row `{}` lists `{}`, which {} does not have",
                k.name,
                f.proto,
                desc.full_name()
            );
            assert!(!f.about.is_empty(), "{}.{} says nothing", k.name, f.proto);
        }
    }
}

#[test]
fn every_policy_kind_has_a_row_and_every_presence_rule_names_a_row() {
    for kind in EventKind::ALL {
        let row = event_fields::kind(kind.name())
            .unwrap_or_else(|| panic!("policy kind {kind} has no KINDS row"));
        let fields = event_fields::fields(row);
        for (name, measurable) in celltrail::policy::presence::required_field_names(kind) {
            let f = fields
                .iter()
                .find(|f| f.proto == name)
                .unwrap_or_else(|| panic!("presence requires {kind}.{name}, not in the table"));
            let want = if measurable {
                Required::OrNotMeasured
            } else {
                Required::Yes
            };
            assert_eq!(f.required, want, "{kind}.{name}");
        }
    }
}

#[test]
fn docs_events_md_is_generated_from_the_table() {
    let want = event_fields::markdown();
    if std::env::var_os("CELLTRAIL_BLESS").is_some() {
        std::fs::write(DOC, &want).unwrap();
    }
    let have = std::fs::read_to_string(DOC).unwrap_or_default();
    assert!(
        have == want,
        "docs/events.md is not what src/event_fields/ generates; run \
         `CELLTRAIL_BLESS=1 cargo test --test events_doc` and commit the file"
    );
    // Spot checks that the generator writes what a reader needs.
    assert!(
        want.contains(
            "| `collection_end` | time |  | yes, or not_measured | when collection ended |"
        ),
        "{want}"
    );
    assert!(want.contains("| `din` | text |  | yes |"), "{want}");
    assert!(want.contains("| `param.NAME` | name=value |"), "{want}");
}

#[test]
fn event_help_lists_every_kind_and_field_with_type_and_required() {
    let o = Command::new(env!("CARGO_BIN_EXE_celltrail"))
        .args(["event", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8(o.stdout).unwrap();
    for k in KINDS {
        assert!(
            help.contains(&format!("\n  {} — ", k.name)),
            "{}: {help}",
            k.name
        );
        for f in event_fields::fields(k) {
            let line = help
                .lines()
                .skip_while(|l| !l.starts_with(&format!("  {} — ", k.name)))
                .skip(1)
                .take_while(|l| l.starts_with("    "))
                .find(|l| l.trim_start().starts_with(&format!("{} ", f.name)))
                .unwrap_or_else(|| {
                    panic!("{}.{} missing from event --help:\n{help}", k.name, f.name)
                });
            assert!(line.contains(f.ty.name()), "{line}");
            assert!(
                line.contains(&format!("required: {}", f.required.name())),
                "{line}"
            );
            assert!(line.contains(f.unit), "{line}");
        }
    }
    assert!(
        help.contains("volume_ml              integer    required: yes, or not_measured volume collected [mL]"),
        "{help}"
    );
}
