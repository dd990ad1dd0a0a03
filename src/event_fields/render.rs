//! The table rendered for people: `celltrail event --help` and `docs/events.md`.

use super::{fields, KINDS};

/// The kinds and fields as plain text, for `celltrail event --help`.
pub fn help_text() -> String {
    let mut out = String::from(
        "Event kinds and their --set fields (also in docs/events.md). time: RFC 3339, e.g. \
         2026-11-29T09:30:00Z; list: comma separated; required \"yes, or not_measured\": a \
         reading that, if it was genuinely not possible, is declared instead with \
         --set not_measured.FIELD=\"why\" (recorded; opens a hold).\n",
    );
    for k in KINDS {
        out.push_str(&format!("\n  {} — {}\n", k.name, k.about));
        for f in fields(k) {
            let unit = if f.unit.is_empty() {
                String::new()
            } else {
                format!(" [{}]", f.unit)
            };
            out.push_str(&format!(
                "    {:<22} {:<10} required: {:<20} {}{}\n",
                f.name,
                f.ty.name(),
                f.required.name(),
                f.about,
                unit
            ));
        }
    }
    out
}

/// `docs/events.md`, generated from the table (`tests/events_doc.rs` keeps the file equal).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Event kinds and their fields\n\n\
         <!-- Generated from src/event_fields/table.rs by tests/events_doc.rs; do not edit by hand.\n     \
         Regenerate: CELLTRAIL_BLESS=1 cargo test --test events_doc -->\n\n\
         Every kind `celltrail event --kind KIND` and the scanning station record, with the\n\
         fields `--set NAME=VALUE` fills (the same list as `celltrail event --help`). *Type* is\n\
         the proto field's type as the command line takes it: `time` is RFC 3339\n\
         (`2026-11-29T09:30:00Z`), `yes/no` also takes `true/false`, `list` is comma separated.\n\
         *Required* is what the custody policy's presence rules demand (`src/policy/presence.rs`,\n\
         [docs/policy.md](policy.md)): **yes, or not_measured** marks a reading that, when it was\n\
         genuinely not possible, is declared `--set not_measured.NAME=\"why\"` instead; that is\n\
         recorded and opens a hold. The policy checks more than presence (values, order, signers):\n\
         see [docs/policy.md](policy.md).\n",
    );
    for k in KINDS {
        out.push_str(&format!(
            "\n## `{}`\n\n{}.\n\n",
            k.name,
            upper_first(k.about)
        ));
        out.push_str("| field | type | unit | required | meaning |\n|---|---|---|---|---|\n");
        for f in fields(k) {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                f.name,
                f.ty.name(),
                f.unit,
                f.required.name(),
                f.about
            ));
        }
    }
    out
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
