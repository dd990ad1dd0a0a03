//! The console's pages as maud templates (every value escaped), in the batch record's style
//! and document shell (`bundle::record::html::document`): no script, plain links and GET
//! forms, so everything works without JavaScript. Pure: summaries and records in, HTML out.

use crate::bundle::record::fields::duration;
use crate::bundle::record::html::{document, Page};
use crate::registry::KeyRecord;
use crate::summary::{AtRisk, Bucket, ChainSummary};
use maud::{html, Markup};

/// Rows per page of every list.
pub const PAGE_SIZE: usize = 50;

fn nav() -> Markup {
    html! {
        nav.console {
            a href="/" { "Worklist" }
            a href="/holds" { "Open holds" }
            a href="/near-misses" { "Near misses" }
            a href="/at-risk" { "At-risk clocks" }
            a href="/keys" { "Key registry" }
            a href="/checkpoint" { "Checkpoint" }
        }
        form.search method="get" action="/search" {
            label for="q" { "Search DIN, product bag, CoI reference or chain id " }
            input #q type="text" name="q" required;
            " "
            button type="submit" { "Search" }
        }
    }
}

/// A console page: navigation, then `body`.
pub fn shell(title: &str, body: Markup) -> Page {
    document(
        &format!("{title} — celltrail console"),
        &format!("celltrail console — {title}"),
        false,
        html! { (nav()) h1 { (title) } (body) },
    )
}

/// A page of `items` (1-based `page`), and the pager links (keeping `query`).
fn paged<'a, T>(items: &'a [T], page: usize, base: &str) -> (&'a [T], Markup) {
    let pages = items.len().div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * PAGE_SIZE;
    let slice = &items[start.min(items.len())..(start + PAGE_SIZE).min(items.len())];
    let sep = if base.contains('?') { '&' } else { '?' };
    let pager = html! {
        p.pager {
            "Page " (page) " of " (pages) " (" (items.len()) " in all) "
            @if page > 1 { a rel="prev" href=(format!("{base}{sep}page={}", page - 1)) { "← previous" } }
            @if page < pages { a rel="next" href=(format!("{base}{sep}page={}", page + 1)) { "next →" } }
        }
    };
    (slice, pager)
}

fn chain_link(id: &str) -> Markup {
    html! { a href=(format!("/chain/{id}")) { (id) } }
}

fn time(nanos: i64) -> String {
    crate::time::rfc3339(nanos / crate::time::NANOS_PER_SEC * crate::time::NANOS_PER_SEC)
}

/// A chain's near misses in a list: the count and the last one's time, "not counted" for a
/// summary written before they were counted, nothing when there are none.
fn near_miss_cell(s: &ChainSummary) -> Markup {
    html! {
        @match s.near_misses {
            Some(n) if n.count > 0 => span.open { "NEAR MISS ×" (n.count) " (last " (time(n.last_unix_nanos)) ")" },
            Some(_) => {},
            None => span.muted { "not counted" },
        }
    }
}

fn chain_rows(rows: &[&ChainSummary], now: i64) -> Markup {
    html! {
        table.worklist {
            thead { tr { th { "Chain" } th { "State" } th { "CoI reference" } th { "DIN / product bags" } th { "Hold" } th { "Near misses" } th { "Last event" } } }
            tbody { @for s in rows { tr {
                td { (chain_link(&s.chain_id)) }
                td { (s.state) }
                td { (s.coi_ref) }
                td { (s.dins.join(", ")) @if !s.product_bag_ids.is_empty() { br; (s.product_bag_ids.join(", ")) } }
                td { @if let Some(h) = &s.hold { span.open { "ON HOLD " (duration((now - h.opened_at_unix_nanos) as f64)) } } }
                td { (near_miss_cell(s)) }
                td { (time(s.last_occurred_unix_nanos)) " (seq " (s.seq) ")" }
            } } }
        }
    }
}

/// Chains with near misses, the most recent first; and how many summaries do not count them.
pub fn near_misses(summaries: &[ChainSummary], page: usize) -> Page {
    let mut with: Vec<&ChainSummary> = summaries
        .iter()
        .filter(|s| s.near_misses.is_some_and(|n| n.count > 0))
        .collect();
    with.sort_by_key(|s| std::cmp::Reverse(s.near_misses.map(|n| n.last_unix_nanos)));
    let uncounted = summaries.iter().filter(|s| s.near_misses.is_none()).count();
    let (rows, pager) = paged(&with, page, "/near-misses");
    shell(
        "Near misses",
        html! {
            p.muted { "Identity checks that failed at a station (a wrong patient at the bedside, a wrong shipper at a receipt), recorded for QA; each chain's batch record lists them." }
            @if uncounted > 0 {
                p #uncounted { (uncounted) " chain(s) with a summary that does not count near misses (written by an older version, or none yet after a restore): their batch records list any; they are counted at their next event." }
            }
            @if with.is_empty() { p #no-near-misses { "No near miss is recorded." } }
            @else {
                table #near-misses {
                    thead { tr { th { "Chain" } th { "State" } th { "Near misses" } th { "Last" } } }
                    tbody { @for s in rows { @if let Some(n) = s.near_misses { tr {
                        td { (chain_link(&s.chain_id)) } td { (s.state) }
                        td.open { (n.count) }
                        td { (time(n.last_unix_nanos)) }
                    } } } }
                }
                (pager)
            }
        },
    )
}

/// The worklist: counts by state group, then the chains of one group (or all), paged.
/// `summaries` is every chain's summary, sorted by chain id.
pub fn worklist(
    summaries: &[ChainSummary],
    bucket: Option<Bucket>,
    page: usize,
    at_risk: usize,
    now: i64,
) -> Page {
    let mut counts = [0usize; Bucket::ALL.len()];
    let mut holds = 0;
    let mut near_misses = 0;
    for s in summaries {
        counts[s.bucket() as usize] += 1;
        holds += usize::from(s.hold.is_some());
        near_misses += usize::from(s.near_misses.is_some_and(|n| n.count > 0));
    }
    let selected: Vec<&ChainSummary> = summaries
        .iter()
        .filter(|s| bucket.is_none_or(|b| s.bucket() == b))
        .collect();
    let base = match bucket {
        Some(b) => format!("/?state={}", b.slug()),
        None => "/".to_string(),
    };
    let (rows, pager) = paged(&selected, page, &base);
    shell(
        "Worklist",
        html! {
            table.counts #counts {
                thead { tr { th { "Chains by state" } th { "Count" } } }
                tbody {
                    @for b in Bucket::ALL { @if counts[b as usize] > 0 || b != Bucket::Other {
                        tr { td { a href=(format!("/?state={}", b.slug())) { (b.title()) } } td { (counts[b as usize]) } }
                    } }
                    tr { td { a href="/" { "All chains" } } td { (summaries.len()) } }
                    tr { td { a href="/holds" { "Open holds" } } td class=(if holds > 0 { "open" } else { "" }) { (holds) } }
                    tr { td { a href="/near-misses" { "Chains with near misses" } } td class=(if near_misses > 0 { "open" } else { "" }) { (near_misses) } }
                    tr { td { a href="/at-risk" { "At-risk clocks" } } td class=(if at_risk > 0 { "over" } else { "" }) { (at_risk) } }
                }
            }
            h2 { (bucket.map_or("All chains", Bucket::title)) }
            (chain_rows(rows, now))
            (pager)
        },
    )
}

/// Open holds, oldest first.
pub fn holds(summaries: &[ChainSummary], page: usize, now: i64) -> Page {
    let mut open: Vec<&ChainSummary> = summaries.iter().filter(|s| s.hold.is_some()).collect();
    open.sort_by_key(|s| s.hold.as_ref().map(|h| h.opened_at_unix_nanos));
    let (rows, pager) = paged(&open, page, "/holds");
    shell(
        "Open holds",
        html! {
            @if open.is_empty() { p #no-holds { "No hold is open." } }
            @else {
                table #holds {
                    thead { tr { th { "Chain" } th { "State" } th { "Opened" } th { "Age" } th { "Reasons" } } }
                    tbody { @for s in rows { @if let Some(h) = &s.hold { tr {
                        td { (chain_link(&s.chain_id)) } td { (s.state) }
                        td { "seq " (h.opened_seq) br; (time(h.opened_at_unix_nanos)) }
                        td.open { (duration((now - h.opened_at_unix_nanos) as f64)) }
                        td { @for r in &h.reasons { (r) br; } }
                    } } } }
                }
                (pager)
            }
        },
    )
}

/// Clocks running out, most urgent first.
pub fn at_risk(risks: &[AtRisk], page: usize) -> Page {
    let (rows, pager) = paged(risks, page, "/at-risk");
    shell(
        "At-risk clocks",
        html! {
            p.muted { "Manufacturing window past 75 % of its length, thawed product not yet infused, product waiting at the treatment site over 7 days." }
            @if risks.is_empty() { p { "No clock is at risk." } }
            @else {
                table #at-risk {
                    thead { tr { th { "Chain" } th { "Clock" } th { "Time left" } th { "Limit" } } }
                    tbody { @for r in rows { tr {
                        td { (chain_link(&r.chain_id)) } td { (r.clock) }
                        td class=(if r.nanos < 0 { "over" } else { "" }) {
                            @if r.clock == "waiting at site" { "waiting " (duration(-r.nanos as f64)) }
                            @else if r.nanos < 0 { "OVERDUE by " (duration(-r.nanos as f64)) }
                            @else { (duration(r.nanos as f64)) " left" }
                        }
                        td { (r.detail) }
                    } } }
                }
                (pager)
            }
        },
    )
}

/// Search results for `q`.
pub fn search(q: &str, found: &[&ChainSummary], page: usize, now: i64) -> Page {
    let base = format!("/search?q={}", urlencode(q));
    let (rows, pager) = paged(found, page, &base);
    shell(
        "Search",
        html! {
            p #search-summary { (found.len()) " chain(s) for " strong { (q) } " (DIN, product bag, CoI reference or chain id)." }
            @if !found.is_empty() { (chain_rows(rows, now)) (pager) }
        },
    )
}

/// The key registry as it stands now.
pub fn keys(keys: &[KeyRecord], page: usize) -> Page {
    let (rows, pager) = paged(keys, page, "/keys");
    shell(
        "Key registry",
        html! {
            table #keys {
                thead { tr { th { "Key id" } th { "Printed name" } th { "Role" } th { "Site" } th { "Valid from" } th { "Valid until" } th { "Revoked" } } }
                tbody { @for k in rows { tr {
                    td { (k.key_id) } td { (k.printed_name) } td { (k.role) } td { (k.site) }
                    td { (time(k.valid_from)) }
                    td { @if k.valid_until == 0 { "no end" } @else { (time(k.valid_until)) } }
                    td { @if let Some(at) = k.revoked_at { span.open { "revoked " (time(at)) } br; (k.revoke_reason) } }
                } } }
            }
            (pager)
        },
    )
}

/// The latest signed checkpoint.
pub fn checkpoint(note: Option<&str>, origin: &str, size: u64, log_key: &str) -> Page {
    shell(
        "Latest checkpoint",
        html! {
            table.kv {
                tr { th { "Log" } td { (origin) } }
                tr { th { "Tree size" } td #tree-size { (size) } }
                tr { th { "Log verifier key" } td.mono { (log_key) } }
            }
            h2 { "Signed note" }
            pre.mono #checkpoint { (note.unwrap_or("the log is empty")) }
        },
    )
}

/// A message page (not found, bad request).
pub fn message(title: &str, text: &str) -> Page {
    shell(title, html! { p #message { (text) } })
}

/// The sign-in form for bearer-token access (sets a cookie; no JavaScript).
pub fn login(failed: bool) -> Page {
    document(
        "Sign in — celltrail console",
        "celltrail console",
        false,
        html! {
            h1 { "celltrail console" }
            @if failed { p.fail #login-failed { "That token is not valid." } }
            form method="post" action="/login" {
                label for="token" { "Access token " }
                input #token type="password" name="token" autocomplete="off" required;
                " "
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The chain page: the batch record (same renderer as `celltrail report`) under the navigation.
pub fn chain(rec: &crate::bundle::record::BatchRecord) -> Page {
    let id = rec.chains.first().map_or("", |c| c.chain_id.as_str());
    document(
        &format!("Batch record {id} — {}", rec.verdict.status),
        &format!("{id} — {}", rec.verdict.status),
        !rec.verdict.ok,
        html! { (nav()) (crate::bundle::record::html::body(rec)) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(n: usize) -> Vec<ChainSummary> {
        (0..n)
            .map(|i| {
                let mut s = ChainSummary::from_head(&format!("BAG-{i:04}"), "Stored", 9);
                s.coi_ref = "<b>COI</b>".into();
                s
            })
            .collect()
    }

    #[test]
    fn lists_are_paged_and_escaped() {
        let all = chains(120);
        let page = worklist(&all, None, 3, 0, 0).html;
        assert!(page.contains("Page 3 of 3 (120 in all)"));
        assert_eq!(page.matches("href=\"/chain/").count(), 20);
        assert!(page.contains("BAG-0100") && !page.contains("BAG-0099\""));
        assert!(page.contains("rel=\"prev\" href=\"/?page=2\""));
        assert!(!page.contains("rel=\"next\""));
        assert!(page.contains("&lt;b&gt;COI&lt;/b&gt;") && !page.contains("<b>COI"));
        // A page past the end shows the last one; page 0 the first.
        assert!(worklist(&all, None, 99, 0, 0).html.contains("Page 3 of 3"));
        let first = worklist(&all, Some(Bucket::AtSite), 0, 0, 0).html;
        assert!(first.contains("Page 1 of 3") && first.contains("/?state=at-site&amp;page=2"));
        assert_eq!(
            worklist(&all, Some(Bucket::Qc), 1, 0, 0)
                .html
                .matches("href=\"/chain/")
                .count(),
            0
        );
    }
}
