//! The temperature chart: inline SVG (no script, no external resource), one panel per allowed
//! range so a 2–8 °C band and an LN2 band are each readable. Each reading is a dot (a point)
//! or a bar (the min..max a logger saw) at its time, over the shaded allowed range; a reading
//! outside its range is drawn red and labelled. Text goes through maud, so it is escaped.

use super::Reading;
use maud::{html, Markup};

const W: f64 = 760.0;
const H: f64 = 170.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;

/// An allowed range (°C), if the policy has one, and the readings checked against it.
type Panel<'a> = (Option<(f64, f64)>, Vec<&'a Reading>);

/// Readings grouped by allowed range (in order of first appearance).
fn panels(readings: &[Reading]) -> Vec<Panel<'_>> {
    let mut out: Vec<Panel<'_>> = Vec::new();
    for r in readings {
        let key = r.allowed_min_c.zip(r.allowed_max_c);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => out.push((key, vec![r])),
        }
    }
    out
}

/// The chart, or a sentence when nothing was recorded.
pub fn svg(readings: &[Reading]) -> Markup {
    if readings.is_empty() {
        return html! { p.muted { "No temperature was recorded on this chain." } };
    }
    html! {
        @for (allowed, rs) in panels(readings) {
            (panel(allowed, &rs))
        }
    }
}

fn panel(allowed: Option<(f64, f64)>, rs: &[&Reading]) -> Markup {
    let mut lo = rs.iter().map(|r| r.min_c).fold(f64::INFINITY, f64::min);
    let mut hi = rs.iter().map(|r| r.max_c).fold(f64::NEG_INFINITY, f64::max);
    if let Some((a, b)) = allowed {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    let pad = ((hi - lo) * 0.15).max(1.0);
    let (lo, hi) = (lo - pad, hi + pad);
    let t0 = rs.iter().map(|r| r.at_unix_nanos).min().unwrap_or(0) as f64;
    let t1 = rs.iter().map(|r| r.at_unix_nanos).max().unwrap_or(0) as f64;
    let span = (t1 - t0).max(1.0);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |t: i64| {
        if rs.len() == 1 || t1 == t0 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + 20.0 + (t as f64 - t0) / span * (plot_w - 40.0)
        }
    };
    let y = |c: f64| TOP + (hi - c) / (hi - lo) * plot_h;
    let ticks: Vec<f64> = (0..=4)
        .map(|i| lo + (hi - lo) * f64::from(i) / 4.0)
        .collect();
    let title = match allowed {
        Some((a, b)) => format!("Temperature readings against the allowed range {a} to {b} °C"),
        None => "Temperature readings (no range in the policy for these events)".to_string(),
    };
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {W} {H}")) role="img"
                aria-label=(title) class="temp-chart" {
                title { (title) }
                @if let Some((a, b)) = allowed {
                    rect.band x=(f1(LEFT)) y=(f1(y(b))) width=(f1(plot_w)) height=(f1(y(a) - y(b))) {}
                    text.bandlabel x=(f1(W - RIGHT - 4.0)) y=(f1(y(b) - 3.0)) text-anchor="end" {
                        "allowed " (a) " to " (b) " °C"
                    }
                }
                line.axis x1=(f1(LEFT)) y1=(f1(TOP)) x2=(f1(LEFT)) y2=(f1(TOP + plot_h)) {}
                line.axis x1=(f1(LEFT)) y1=(f1(TOP + plot_h)) x2=(f1(W - RIGHT)) y2=(f1(TOP + plot_h)) {}
                @for t in &ticks {
                    line.grid x1=(f1(LEFT)) y1=(f1(y(*t))) x2=(f1(W - RIGHT)) y2=(f1(y(*t))) {}
                    text.tick x=(f1(LEFT - 4.0)) y=(f1(y(*t) + 3.0)) text-anchor="end" { (format!("{t:.0}")) }
                }
                @for r in rs {
                    @let cls = if r.in_range { "reading ok" } else { "reading out" };
                    @let cx = x(r.at_unix_nanos);
                    g class=(cls) {
                        title { "seq " (r.seq) " " (r.event) " at " (r.at) ": " (range_text(r)) }
                        @if r.max_c > r.min_c {
                            line x1=(f1(cx)) y1=(f1(y(r.max_c))) x2=(f1(cx)) y2=(f1(y(r.min_c))) {}
                            circle cx=(f1(cx)) cy=(f1(y(r.max_c))) r="3" {}
                        }
                        circle cx=(f1(cx)) cy=(f1(y(r.min_c))) r="3" {}
                        text.xlabel x=(f1(cx)) y=(f1(H - 16.0)) text-anchor="middle" { "seq " (r.seq) }
                        text.xlabel x=(f1(cx)) y=(f1(H - 5.0)) text-anchor="middle" { (r.at.get(..10).unwrap_or(&r.at)) }
                        @if !r.in_range {
                            text.outlabel x=(f1(cx + 6.0)) y=(f1(y(r.min_c) - 4.0)) { "OUT OF RANGE " (range_text(r)) }
                        }
                    }
                }
            }
            figcaption { (title) }
        }
    }
}

pub fn range_text(r: &Reading) -> String {
    if r.max_c > r.min_c {
        format!("{} to {} °C", r.min_c, r.max_c)
    } else {
        format!("{} °C", r.min_c)
    }
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}
