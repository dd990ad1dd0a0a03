//! The batch record as one self-contained HTML document: inline CSS (with print rules for A4
//! and Letter: page header, "Page N of M"), inline SVG, no script, no font or image fetched.
//! Every recorded text goes through maud, which escapes it; the only unescaped strings are the
//! stylesheet built here (whose one piece of data, the page header, is CSS-escaped) and the
//! markup maud produced. The document carries a Content-Security-Policy that allows nothing
//! but its own stylesheet (by hash), so even an injected tag could fetch and run nothing.

use super::{chart, BatchRecord, ChainRecord, EventRecord, Manifestation};
use base64::Engine as _;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sha2::{Digest, Sha256};

/// A rendered page and the Content-Security-Policy header it needs (the console sends it; the
/// document carries the same policy, less `frame-ancestors`, in a meta tag).
pub struct Page {
    pub html: String,
    pub csp: String,
}

const CSS: &str = r#"
:root { --fg:#111; --muted:#555; --line:#bbb; --ok:#0a6b2d; --bad:#b00020; --warn:#8a5a00; }
* { box-sizing: border-box; }
body { font: 10.5pt/1.35 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: var(--fg);
  margin: 0 auto; max-width: 1100px; padding: 12px 18px; }
h1 { font-size: 17pt; margin: 4px 0 8px; }
h2 { font-size: 13pt; margin: 18px 0 6px; border-bottom: 2px solid #333; padding-bottom: 2px;
  break-after: avoid; }
h3 { font-size: 11pt; margin: 12px 0 4px; break-after: avoid; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 10px; table-layout: fixed; }
th, td { border: 1px solid var(--line); padding: 3px 5px; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; word-break: break-word; }
th { background: #eee; font-weight: 600; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
.kv th { width: 24%; }
.muted { color: var(--muted); }
.mono { font-family: "DejaVu Sans Mono", monospace; font-size: 8.5pt; }
.banner { border: 3px solid; padding: 8px 12px; margin: 8px 0 12px; font-size: 12pt; }
.banner strong { font-size: 16pt; letter-spacing: 1px; }
.banner.verified { border-color: var(--ok); color: var(--ok); }
.banner.failed { border-color: var(--bad); color: #fff; background: var(--bad); }
.over, .fail, .open { color: var(--bad); font-weight: 700; }
.pass, .released { color: var(--ok); }
.notproven { color: var(--warn); font-weight: 700; }
.event { border: 1px solid var(--line); margin: 6px 0; padding: 4px 8px 6px; break-inside: avoid; }
.event h3 { margin: 2px 0 4px; }
.event table { margin: 2px 0 4px; }
.sig td, .sig th { font-size: 9pt; }
figure.chart { margin: 6px 0 10px; break-inside: avoid; }
figure.chart svg { width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: 9pt; color: var(--muted); }
.band { fill: #d8f0dc; }
.bandlabel, .tick, .xlabel { font-size: 9px; fill: #444; }
.axis { stroke: #333; stroke-width: 1; }
.grid { stroke: #ddd; stroke-width: 0.5; }
.reading.ok line { stroke: #1a4d8f; stroke-width: 3; }
.reading.ok circle { fill: #1a4d8f; }
.reading.out line { stroke: #b00020; stroke-width: 3; }
.reading.out circle { fill: #b00020; }
.outlabel { font-size: 9px; fill: #b00020; font-weight: 700; }
nav.console { border-bottom: 1px solid var(--line); padding: 4px 0 8px; margin-bottom: 8px; }
nav.console a { margin-right: 14px; }
form.search input[type=text] { width: 22em; }
.pager a { margin-right: 12px; }
@media print {
  body { max-width: none; padding: 0; font-size: 9.5pt; }
  nav.console, form.search, .pager { display: none; }
  a { color: inherit; text-decoration: none; }
  .banner.failed { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  th, .band { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

/// The stylesheet of a page: [`CSS`] plus the print page boxes naming `header`.
fn stylesheet(header: &str, failed: bool) -> String {
    let mut s = String::from(CSS);
    let mark = if failed {
        "\n.failed-mark { position: fixed; top: 40%; left: 0; right: 0; text-align: center; \
         font-size: 60pt; color: rgba(176,0,32,0.12); transform: rotate(-30deg); \
         pointer-events: none; z-index: -1; }\n"
    } else {
        ""
    };
    s.push_str(mark);
    s.push_str(&format!(
        "@page {{ size: auto; margin: 16mm 12mm 16mm 12mm;\n  \
         @top-left {{ content: \"{}\"; font: 8pt sans-serif; color: #444; }}\n  \
         @bottom-right {{ content: \"Page \" counter(page) \" of \" counter(pages); font: 8pt sans-serif; }}\n  \
         @bottom-left {{ content: \"celltrail batch record\"; font: 8pt sans-serif; color: #444; }}\n}}\n",
        css_string(header)
    ));
    s
}

/// Escapes text for a CSS double-quoted string: anything but plain characters becomes `\HEX `.
fn css_string(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._:=-/,()".contains(c) {
                c.to_string()
            } else {
                format!("\\{:x} ", c as u32)
            }
        })
        .collect()
}

/// A whole HTML document around `body`, with its stylesheet and CSP.
pub fn document(title: &str, header: &str, failed: bool, body: Markup) -> Page {
    let css = stylesheet(header, failed);
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(css.as_bytes()));
    // `frame-ancestors` works only as a header: the console sends it; a meta tag may not.
    let meta_csp = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self' data:; form-action 'self'; \
         base-uri 'none'"
    );
    let csp = format!("{meta_csp}; frame-ancestors 'none'");
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(meta_csp);
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                style { (PreEscaped(&css)) }
            }
            body class=(if failed { "failed" } else { "verified" }) {
                @if failed { div.failed-mark aria-hidden="true" { "FAILED" } }
                (body)
            }
        }
    };
    Page {
        html: page.into_string(),
        csp,
    }
}

/// The batch record as a standalone document.
pub fn render(r: &BatchRecord) -> Page {
    let first = r.chains.first().map_or("", |c| c.chain_id.as_str());
    let header = format!("{} — {}", first, r.verdict.status);
    let title = format!("Batch record {first} — {}", r.verdict.status);
    document(&title, &header, !r.verdict.ok, body(r))
}

/// The record's content (the console's chain page puts its navigation above it).
pub fn body(r: &BatchRecord) -> Markup {
    html! {
        (banner(r))
        h1 { "Batch record" @if let Some(c) = r.chains.first() { " — chain " span #chain-id { (c.chain_id) } } }
        p.muted { "Generated " (r.generated_at) " (" (r.generated_at_local) " local) from " (r.source)
            ". Times are UTC unless marked local." }
        @for c in &r.chains { (chain(c)) }
        @if r.chains.is_empty() { p { "No custody events verified." } }
        (verification(r))
    }
}

fn banner(r: &BatchRecord) -> Markup {
    let v = &r.verdict;
    html! {
        @if v.ok {
            div.banner.verified #verdict role="status" {
                strong { "VERIFIED" } " — every signature, key, chain link, policy step and inclusion proof checks against the signed checkpoint."
                @for c in &r.chains {
                    @if c.end != "complete" { br; span.notproven { "Chain " (c.chain_id) ": " (c.end) } }
                }
            }
        } @else {
            div.banner.failed #verdict role="alert" {
                strong { "FAILED" } " — this is NOT a valid batch record. Verification failed: "
                (v.failure.as_deref().unwrap_or("unknown"))
                br;
                (v.report.entries_verified) " entries verified before the failure; nothing after it can be trusted, and nothing below may be used for release."
            }
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn chain(c: &ChainRecord) -> Markup {
    html! {
        section.chain id=(format!("chain-{}", c.chain_id)) {
            h2 { "Chain " (c.chain_id) }
            table.kv {
                tr { th { "Chain of identity (CoI) reference" } td { (c.coi_ref) } }
                tr { th { "Therapy" } td { (c.therapy) } }
                tr { th { "Manufacturing site" } td { (c.manufacturing_site) } }
                tr { th { "Apheresis bag DINs" } td { (list(&c.dins)) } }
                tr { th { "Product bags" } td { (list(&c.product_bag_ids)) } }
                tr { th { "Current state" } td #state { (c.state) } }
                tr { th { "Chain end" } td class=(if c.end == "complete" { "pass" } else { "notproven" }) { (c.end) } }
                tr { th { "Open holds" } td #open-holds class=(if c.open_holds.is_empty() { "" } else { "open" }) {
                    @if c.open_holds.is_empty() { "none" }
                    @for h in &c.open_holds { "hold opened at seq " (h.opened_seq) " (" (h.age) " ago): " (h.reasons.join("; ")) br; }
                } }
            }
            h3 { "Holds" }
            @if c.holds.is_empty() { p.muted { "No hold was opened." } } @else {
                table #holds {
                    thead { tr { th { "Opened" } th { "By event" } th { "Reasons (rule: values)" } th { "Released" } th { "Open for" } } }
                    tbody { @for h in &c.holds { tr class=(if h.released_seq.is_some() { "hold hold-released" } else { "hold hold-open" }) {
                        td { "seq " (h.opened_seq) br; (h.opened_at) br; (h.opened_by) }
                        td { (h.opened_by_event) }
                        td { @for r in &h.reasons { (r) br; } }
                        td { @match (h.released_seq, &h.released_at) {
                            (Some(s), Some(at)) => { span.released { "released at seq " (s) } br; (at) br; "by " (h.released_by.as_deref().unwrap_or("")) br; (h.release_reason.as_deref().unwrap_or("")) }
                            _ => { span.open { "OPEN" } }
                        } }
                        td { (h.age) }
                    } } }
                }
            }
            h3 { "Elapsed time against policy limits" }
            @if c.legs.is_empty() { p.muted { "No timed leg recorded yet." } } @else {
                table #legs {
                    thead { tr { th { "Leg" } th { "From" } th { "To" } th { "Elapsed" } th { "Limit" } th { "" } } }
                    tbody { @for l in &c.legs { tr class=(if l.over_limit { "leg over" } else { "leg" }) {
                        td { (l.leg) } td { (l.from) } td { (l.to) } td { (l.elapsed) } td { (l.limit) }
                        td { @if l.over_limit { span.over { "OVER LIMIT" } } @else if l.limit_seconds.is_some() { span.pass { "within" } } }
                    } } }
                }
            }
            h3 { "Temperatures" }
            (chart::svg(&c.temperatures))
            @if !c.temperatures.is_empty() {
                table #temperatures {
                    thead { tr { th { "Seq" } th { "Event" } th { "Time" } th { "Recorded" } th { "Allowed" } th { "" } } }
                    tbody { @for t in &c.temperatures { tr {
                        td { (t.seq) } td { (t.event) } td { (t.at) } td { (chart::range_text(t)) }
                        td { @match (t.allowed_min_c, t.allowed_max_c) { (Some(a), Some(b)) => { (a) " to " (b) " °C" } _ => { "—" } } }
                        td { @if t.in_range { span.pass { "in range" } } @else { span.over { "OUT OF RANGE" } } }
                    } } }
                }
            }
            h3 { "QC results" }
            @if c.qc.is_empty() { p.muted { "No QC result recorded." } } @else {
                table #qc {
                    thead { tr { th { "Test" } th { "Method" } th { "Result" } th { "Specification" } th { "Pass/fail" } th { "Retest" } th { "Seq / time" } } }
                    tbody { @for q in &c.qc { tr {
                        td { (q.test) } td { (q.method) } td { (q.result) } td { (q.specification) }
                        td { @if q.passed { span.pass { "PASS" } } @else { span.fail { "FAIL" } } }
                        td { @if q.retest == 0 { "—" } @else { "retest " (q.retest) } }
                        td { (q.seq) br; (q.occurred_at) }
                    } } }
                }
            }
            h3 { "Deviations" }
            @if c.deviations.is_empty() { p.muted { "No deviation recorded." } } @else {
                table #deviations {
                    thead { tr { th { "Deviation" } th { "Description" } th { "Recorded" } th { "By" } } }
                    tbody { @for d in &c.deviations { tr {
                        td { (d.deviation_id) } td { (d.description) } td { "seq " (d.seq) br; (d.recorded_at) } td { (d.by) }
                    } } }
                }
            }
            h3 { "Near misses (identity checks failed)" }
            @if c.near_misses.is_empty() { p.muted { "No near miss recorded." } } @else {
                table #near-misses {
                    thead { tr { th { "Check" } th { "What did not match" } th { "Recorded" } th { "By" } } }
                    tbody { @for n in &c.near_misses { tr {
                        td { (n.check) } td.fail { (n.reason) } td { "seq " (n.seq) br; (n.recorded_at) } td { (n.by) }
                    } } }
                }
            }
            h3 { "Record review" }
            @if c.reviews.is_empty() {
                p.muted #review { "No record review is signed on this chain (a QA signature with meaning REVIEWED, see docs/report.md)." }
            } @else {
                table.sig #review {
                    thead { tr { th { "Reviewed with" } th { "Printed name" } th { "Role" } th { "Site" } th { "Meaning" } th { "Signed (UTC)" } th { "Signed (local)" } } }
                    tbody { @for r in &c.reviews { tr {
                        td { "seq " (r.seq) " " (r.event) } td { (r.signature.printed_name) } td { (r.signature.role) }
                        td { (r.signature.site) } td { (r.signature.meaning) } td { (r.signature.signed_at_utc) } td { (r.signature.signed_at_local) }
                    } } }
                }
            }
            h3 { "Events" }
            @for e in &c.events { (event(e)) }
        }
    }
}

fn event(e: &EventRecord) -> Markup {
    html! {
        div.event id=(format!("seq-{}", e.seq)) {
            h3 { "seq " (e.seq) " — " (e.event) @if e.on_hold_after { " " span.open { "(on hold)" } } }
            table.kv {
                tr { th { "Occurred at" } td { (e.occurred_at) " (" (e.occurred_at_local) " local)" } }
                tr { th { "Recorded by the log at" } td { (e.recorded_at) " — log index " (e.index) } }
                tr { th { "Site" } td { (e.site) } }
                tr { th { "Performed by (key)" } td { (e.actor_key_id) } }
                @for f in &e.fields { tr { th { (f.label) } td { (f.value) } } }
                @if !e.comment.is_empty() { tr { th { "Comment" } td { (e.comment) } } }
                tr { th { "State after" } td { (e.state_after) } }
                tr { th { "Event hash" } td.mono { (e.event_hash) } }
            }
            (signatures(&e.signatures))
        }
    }
}

fn signatures(s: &[Manifestation]) -> Markup {
    html! {
        table.sig {
            thead { tr { th { "Printed name" } th { "Role" } th { "Site" } th { "Meaning" } th { "Signed (UTC)" } th { "Signed (local)" } } }
            tbody { @for m in s { tr {
                td { (m.printed_name) br; span.muted { (m.key_id) } } td { (m.role) } td { (m.site) }
                td { strong { (m.meaning) } } td { (m.signed_at_utc) } td { (m.signed_at_local) }
            } } }
        }
    }
}

fn verification(r: &BatchRecord) -> Markup {
    let v = &r.verdict;
    html! {
        section #verification {
            h2 { "Verification" }
            table.kv {
                tr { th { "Verdict" } td class=(if v.ok { "pass" } else { "fail" }) { (v.status) } }
                @if let Some(f) = &v.failure { tr { th { "Failure" } td.fail { (f) } } }
                tr { th { "Log key" } td.mono { (v.log_key) } }
                tr { th { "Log key fingerprint" } td.mono { (v.log_key_fingerprint) } }
                tr { th { "Log key from" } td { (v.log_key_source) } }
                tr { th { "Policy" } td { (v.policy) } }
                @for c in &v.checks { tr { th { (c.check) } td { (c.outcome) } } }
            }
        }
    }
}
