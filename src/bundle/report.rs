//! Rendering a verification [`Report`]: a timeline a QA person can read, or JSON for machines.

use super::verify::Report;
use std::fmt::Write as _;

/// JSON of the whole report (stable field names, see `docs/bundle-format.md`).
pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).expect("reports serialize to JSON") + "\n"
}

/// The human-readable report: what was checked against what, the timeline per chain, the verdict.
pub fn text(r: &Report, what: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "celltrail verify {what}");
    let _ = writeln!(s, "log key:    {}", r.log_key);
    let _ = writeln!(s, "            from {}", r.log_key_source);
    if let Some(cp) = &r.checkpoint {
        let _ = writeln!(
            s,
            "checkpoint: {} size {} root {} (signature verified)",
            cp.origin, cp.size, cp.root
        );
    }
    if let Some(p) = r.previous_size {
        let _ = writeln!(
            s,
            "previous:   checkpoint of size {p} is a prefix of this log (history not rewritten)"
        );
    }
    if let Some(w) = &r.witnesses {
        let _ = writeln!(s, "witnesses:  {}", w.line());
    }
    for l in &r.log_links {
        let _ = writeln!(
            s,
            "log link:   entry {} retired {} ({}) at its final checkpoint of size {} (a prefix of this log); {} signs from there",
            l.index, l.previous_origin, l.reason, l.final_size, l.origin
        );
        if let Some(w) = &l.witnesses {
            let _ = writeln!(s, "            final checkpoint witnesses: {}", w.line());
        }
    }
    let _ = writeln!(s, "policy:     {}", r.policy);
    for p in &r.policies {
        let _ = writeln!(
            s,
            "  table {} sha256:{} {}: judged {} entries",
            p.name,
            p.sha256,
            match p.activated_at_index {
                Some(i) => format!("activated at log index {i}"),
                None => "(base table, before any activation)".to_string(),
            },
            p.entries
        );
    }
    if let Some(o) = &r.policy_override {
        let _ = writeln!(s, "  WARNING policy OVERRIDE: {o}");
    }
    let mut chain = "";
    for row in &r.timeline {
        if row.chain != chain {
            chain = &row.chain;
            let _ = writeln!(s, "\nchain {chain}");
            let _ = writeln!(
                s,
                "  {:<4} {:<6} {:<21} {:<12} {:<40} state after",
                "seq", "index", "occurred (UTC)", "site", "event"
            );
        }
        let event = if row.detail.is_empty() {
            row.event.clone()
        } else {
            format!("{} ({})", row.event, row.detail)
        };
        let _ = writeln!(
            s,
            "  {:<4} {:<6} {:<21} {:<12} {:<40} {}",
            row.seq,
            row.index,
            whole_seconds(&row.occurred_at),
            row.site,
            event,
            row.state,
        );
        // Part 11 §11.50: printed name, role, site, meaning, UTC and local time.
        for g in &row.signers {
            let info = crate::manifest::SignerInfo {
                printed_name: g.printed_name.clone(),
                role: g.role.clone(),
                site: g.site.clone(),
            };
            let _ = writeln!(
                s,
                "         signed by {}",
                crate::manifest::signature_line_named(
                    &g.key_id,
                    Some(&info),
                    &g.meaning,
                    g.signed_at_unix_nanos
                )
            );
        }
    }
    let _ = writeln!(s);
    if r.failure.is_none() {
        for c in &r.chain_ends_proven {
            let _ = writeln!(
                s,
                "chain {c}: complete — the log signed that no event of it follows the last one shown"
            );
        }
        for c in &r.chain_ends_unproven {
            let _ = writeln!(
                s,
                "chain {c}: END NOT PROVEN — the bundle has no signed chain head, so later events could be missing (export again with a current celltrail)"
            );
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "WARNING: {w}");
    }
    match &r.failure {
        None => {
            let proofs = if r.inclusion_proofs > 0 {
                format!("{} inclusion proofs", r.inclusion_proofs)
            } else {
                "Merkle root recomputed from every entry".to_string()
            };
            let _ = writeln!(
                s,
                "VERDICT: VERIFIED — {} entries ({} key registry, {} chains): strict signatures, key validity and roles at signing time, chain links, custody policy from seq 0, {proofs}, checkpoint signature.",
                r.entries_verified, r.registry_entries, r.chains
            );
        }
        Some(f) => {
            let _ = writeln!(s, "VERDICT: FAILED — {f}");
            let _ = writeln!(
                s,
                "({} entries verified before the failure; nothing after it can be trusted)",
                r.entries_verified
            );
        }
    }
    s
}

/// `2026-10-16T13:50:18.123Z` -> `2026-10-16T13:50:18Z` for the table (JSON keeps the full time).
fn whole_seconds(t: &str) -> String {
    match (t.find('.'), t.strip_suffix('Z')) {
        (Some(dot), Some(_)) => format!("{}Z", &t[..dot]),
        _ => t.to_string(),
    }
}
