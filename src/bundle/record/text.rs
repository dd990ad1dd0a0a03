//! The batch record as plain text that fits 100 columns: `label: value` lines wrapped under
//! their label, tables as indented blocks. The verdict comes first; a FAILED record says so on
//! its first line and again at the end.

use super::{chart, BatchRecord, ChainRecord, EventRecord};
use std::fmt::Write as _;

/// Widest line the text record writes.
pub const WIDTH: usize = 100;

/// Appends `first` + `text` wrapped at [`WIDTH`], continuation lines indented by `indent`.
fn wrap(out: &mut String, first: &str, indent: usize, text: &str) {
    let mut line = first.to_string();
    let mut width = line.chars().count();
    let pad = " ".repeat(indent);
    for word in text.split_whitespace() {
        let mut word: String = word.to_string();
        let n = word.chars().count();
        if width + 1 + n > WIDTH && width > indent {
            out.push_str(line.trim_end());
            out.push('\n');
            line = pad.clone();
            width = indent;
        } else if width > 0 && !line.ends_with(' ') {
            line.push(' ');
            width += 1;
        }
        // A word longer than a line (a hash, a key) is cut.
        while width + word.chars().count() > WIDTH {
            let take = WIDTH - width;
            let head: String = word.chars().take(take).collect();
            word = word.chars().skip(take).collect();
            line.push_str(&head);
            out.push_str(&line);
            out.push('\n');
            line = pad.clone();
            width = indent;
        }
        width += word.chars().count();
        line.push_str(&word);
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn kv(out: &mut String, indent: usize, label: &str, value: &str) {
    let first = format!("{}{label:<22} ", " ".repeat(indent));
    let value = if value.is_empty() { "—" } else { value };
    wrap(out, &first, indent + 23, value);
}

/// The whole record as text.
pub fn render(r: &BatchRecord) -> String {
    let mut s = String::new();
    let v = &r.verdict;
    if v.ok {
        wrap(
            &mut s,
            "",
            0,
            "VERIFIED — every signature, key, chain link, policy step and inclusion proof checks against the signed checkpoint.",
        );
    } else {
        wrap(
            &mut s,
            "",
            0,
            &format!(
                "FAILED — this is NOT a valid batch record. Verification failed: {}",
                v.failure.as_deref().unwrap_or("unknown")
            ),
        );
        wrap(
            &mut s,
            "",
            0,
            &format!(
                "{} entries verified before the failure; nothing after it can be trusted, and nothing below may be used for release.",
                v.report.entries_verified
            ),
        );
    }
    let _ = writeln!(s, "{}", "=".repeat(WIDTH));
    wrap(
        &mut s,
        "",
        0,
        &format!(
            "celltrail batch record, generated {} ({} local) from {}. Times are UTC unless marked local.",
            r.generated_at, r.generated_at_local, r.source
        ),
    );
    for c in &r.chains {
        chain(&mut s, c);
    }
    let _ = writeln!(s, "\nVERIFICATION\n{}", "-".repeat(WIDTH));
    kv(&mut s, 0, "verdict", &v.status);
    if let Some(f) = &v.failure {
        kv(&mut s, 0, "failure", f);
    }
    kv(&mut s, 0, "log key", &v.log_key);
    kv(&mut s, 0, "log key fingerprint", &v.log_key_fingerprint);
    kv(&mut s, 0, "log key from", &v.log_key_source);
    kv(&mut s, 0, "policy", &v.policy);
    for c in &v.checks {
        kv(&mut s, 0, &c.check, &c.outcome);
    }
    let _ = writeln!(s, "{}", "=".repeat(WIDTH));
    let _ = writeln!(s, "VERDICT: {}", v.status);
    s
}

fn chain(s: &mut String, c: &ChainRecord) {
    let _ = writeln!(s, "\nCHAIN {}\n{}", c.chain_id, "-".repeat(WIDTH));
    kv(s, 0, "CoI reference", &c.coi_ref);
    kv(s, 0, "therapy", &c.therapy);
    kv(s, 0, "manufacturing site", &c.manufacturing_site);
    kv(s, 0, "apheresis DINs", &c.dins.join(", "));
    kv(s, 0, "product bags", &c.product_bag_ids.join(", "));
    kv(s, 0, "current state", &c.state);
    kv(s, 0, "chain end", &c.end);
    let open: Vec<String> = c
        .open_holds
        .iter()
        .map(|h| {
            format!(
                "OPEN since seq {} ({}): {}",
                h.opened_seq,
                h.age,
                h.reasons.join("; ")
            )
        })
        .collect();
    kv(
        s,
        0,
        "open holds",
        if open.is_empty() { "none" } else { "" },
    );
    for o in &open {
        wrap(s, "  ", 4, o);
    }

    let _ = writeln!(s, "\nHolds");
    if c.holds.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for h in &c.holds {
        let released = match (h.released_seq, &h.released_at) {
            (Some(seq), Some(at)) => format!(
                "released at seq {seq} {at} by {}: {}",
                h.released_by.as_deref().unwrap_or(""),
                h.release_reason.as_deref().unwrap_or("")
            ),
            _ => "OPEN".into(),
        };
        wrap(
            s,
            "  ",
            4,
            &format!(
                "opened at seq {} ({}) {} by {}; {}; open for {}",
                h.opened_seq, h.opened_by_event, h.opened_at, h.opened_by, released, h.age
            ),
        );
        for r in &h.reasons {
            wrap(s, "    reason: ", 12, r);
        }
    }

    let _ = writeln!(s, "\nElapsed time against policy limits");
    if c.legs.is_empty() {
        let _ = writeln!(s, "  none recorded yet");
    }
    for l in &c.legs {
        let flag = if l.over_limit {
            "OVER LIMIT"
        } else if l.limit_seconds.is_some() {
            "within"
        } else {
            ""
        };
        wrap(
            s,
            "  ",
            4,
            &format!("{}: {} (limit {}) {flag}", l.leg, l.elapsed, l.limit),
        );
        wrap(s, "    ", 6, &format!("from {} to {}", l.from, l.to));
    }

    let _ = writeln!(s, "\nTemperatures");
    if c.temperatures.is_empty() {
        let _ = writeln!(s, "  none recorded");
    }
    for t in &c.temperatures {
        let allowed = match (t.allowed_min_c, t.allowed_max_c) {
            (Some(a), Some(b)) => format!("allowed {a} to {b} °C"),
            _ => "no range in the policy".into(),
        };
        let flag = if t.in_range {
            "in range"
        } else {
            "OUT OF RANGE"
        };
        wrap(
            s,
            "  ",
            4,
            &format!(
                "seq {} {} {}: {}, {allowed}: {flag}",
                t.seq,
                t.event,
                t.at,
                chart::range_text(t)
            ),
        );
    }

    let _ = writeln!(s, "\nQC results");
    if c.qc.is_empty() {
        let _ = writeln!(s, "  none recorded");
    }
    for q in &c.qc {
        let retest = if q.retest == 0 {
            String::new()
        } else {
            format!(" (retest {})", q.retest)
        };
        wrap(
            s,
            "  ",
            4,
            &format!(
                "{} {}{retest}: {} — method {}; result {}; specification {}; seq {} {}",
                q.test,
                if q.passed { "PASS" } else { "FAIL" },
                q.test,
                q.method,
                q.result,
                q.specification,
                q.seq,
                q.occurred_at
            ),
        );
    }

    let _ = writeln!(s, "\nDeviations");
    if c.deviations.is_empty() {
        let _ = writeln!(s, "  none recorded");
    }
    for d in &c.deviations {
        wrap(
            s,
            "  ",
            4,
            &format!(
                "{}: {} (seq {} {} by {})",
                d.deviation_id, d.description, d.seq, d.recorded_at, d.by
            ),
        );
    }

    let _ = writeln!(s, "\nNear misses (identity checks failed)");
    if c.near_misses.is_empty() {
        let _ = writeln!(s, "  none recorded");
    }
    for n in &c.near_misses {
        wrap(
            s,
            "  ",
            4,
            &format!(
                "NEAR MISS at {}: {} (seq {} {} by {})",
                n.check, n.reason, n.seq, n.recorded_at, n.by
            ),
        );
    }

    let _ = writeln!(s, "\nRecord review");
    if c.reviews.is_empty() {
        let _ = writeln!(
            s,
            "  no record review is signed on this chain (a QA signature with meaning REVIEWED)"
        );
    }
    for r in &c.reviews {
        let m = &r.signature;
        wrap(
            s,
            "  ",
            4,
            &format!(
                "REVIEWED with seq {} {} by {} ({}, {}, site {}) at {} ({} local)",
                r.seq,
                r.event,
                m.printed_name,
                m.key_id,
                m.role,
                m.site,
                m.signed_at_utc,
                m.signed_at_local
            ),
        );
    }

    let _ = writeln!(s, "\nEvents");
    for e in &c.events {
        event(s, e);
    }
}

fn event(s: &mut String, e: &EventRecord) {
    let hold = if e.on_hold_after { "  (ON HOLD)" } else { "" };
    let _ = writeln!(s, "\n  seq {} {}{hold}", e.seq, e.event);
    kv(
        s,
        4,
        "occurred at",
        &format!("{} ({} local)", e.occurred_at, e.occurred_at_local),
    );
    kv(
        s,
        4,
        "recorded at",
        &format!("{} (log index {})", e.recorded_at, e.index),
    );
    kv(s, 4, "site", &e.site);
    kv(s, 4, "performed by (key)", &e.actor_key_id);
    for f in &e.fields {
        kv(s, 4, &f.label, &f.value);
    }
    if !e.comment.is_empty() {
        kv(s, 4, "comment", &e.comment);
    }
    kv(s, 4, "state after", &e.state_after);
    kv(s, 4, "event hash", &e.event_hash);
    for m in &e.signatures {
        kv(
            s,
            4,
            "signature",
            &format!(
                "{} — {} ({}, {}, site {}) at {} ({} local)",
                m.meaning,
                m.printed_name,
                m.key_id,
                m.role,
                m.site,
                m.signed_at_utc,
                m.signed_at_local
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_lines_within_width_and_cuts_long_words() {
        let mut s = String::new();
        let long = "x".repeat(250);
        wrap(
            &mut s,
            "label: ",
            7,
            &format!("a few words then {long} and more"),
        );
        for line in s.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
        assert_eq!(s.matches('x').count(), 250);
        assert!(s.starts_with("label: a few words then"));
    }
}
