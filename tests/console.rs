//! The QA console (`serve --http`) in a real browser: the real `celltrail serve` process on the
//! batch-record fixture's data directory, driven by headless Chromium over DevTools. Asserts on
//! the rendered DOM (worklist, the open hold, search, the chain page's over-limit leg and hold,
//! the key registry, the checkpoint, the FAILED banner of a tampered bundle's record), that no
//! page logs a console error, CSP violation or dialog, and the printed record (print-to-PDF,
//! then pdftotext) on A4 and Letter. Screenshots and PDFs go to target/tmp/browser.

mod browser;
mod common;
mod lifecycle;
mod realproc;
mod record_fixture;

use browser::{artifacts, chromium, pdf_pages, Browser};
use record_fixture::{Fixture, MAIN, OPEN, XSS_CHAIN};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_celltrail");
const TOKEN: &str = "console-test-token-0123456789abcdef";

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(record_fixture::build())
        })
        .join()
        .unwrap()
    })
}

/// The real server with the console, on loopback ports it picks.
struct Server {
    _proc: realproc::Proc,
    console: String,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let token = data_dir.parent().unwrap().join("console.token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let p = realproc::Serve::new()
            .data_dir(data_dir)
            .args(["--http", "127.0.0.1:0", "--http-token-file"])
            .arg(&token)
            .args(extra.iter().copied())
            .start();
        let console = p.console_url();
        Server { _proc: p, console }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.console)
    }
}

/// A plain HTTP/1.1 GET (no browser): status line and headers, lower-cased, and the body.
fn http_get(base: &str, path: &str, auth: Option<&str>) -> (String, String) {
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn console_refuses_without_the_token_and_sends_strict_headers() {
    let f = fixture();
    let data = f.root.path().join("data-headers");
    common::copy_dir(&f.data_dir, &data);
    let server = Server::start(&data, &[]);
    let (head, _) = http_get(&server.console, "/", None);
    assert!(head.starts_with("http/1.1 303"), "{head}");
    assert!(head.contains("location: /login"));
    let (head, body) = http_get(&server.console, "/holds", Some("wrong-token-wrong-token"));
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(!body.contains(OPEN), "no data without the token");
    let (head, body) = http_get(&server.console, "/holds", Some(TOKEN));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains(OPEN));
    assert!(head.contains("content-security-policy: default-src 'none'; style-src 'sha256-"));
    assert!(head.contains("x-content-type-options: nosniff"));
    assert!(head.contains("x-frame-options: deny"));
    assert!(head.contains("cache-control: no-store"));
    let (head, _) = http_get(&server.console, "/chain/NO-SUCH-CHAIN", Some(TOKEN));
    assert!(head.starts_with("http/1.1 404"), "{head}");
    let (head, _) = http_get(&server.console, "/?state=bogus", Some(TOKEN));
    assert!(head.starts_with("http/1.1 400"), "{head}");
}

#[test]
fn serve_http_refuses_to_start_without_a_way_to_admit_people() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--http-token-file") && err.contains("--client-ca"),
        "{err}"
    );
    assert!(!data.exists(), "nothing created on a bad command line");
    let short = dir.path().join("short.token");
    std::fs::write(&short, "tooshort").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--http-token-file")
        .arg(&short)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 16 characters"), "{err}");
    assert!(!err.contains("tooshort"), "the token is never echoed");
}

#[test]
fn console_pages_in_headless_chromium() {
    let Some(bin) = chromium() else { return };
    let f = fixture();
    let data = f.root.path().join("data-browser");
    common::copy_dir(&f.data_dir, &data);
    let server = Server::start(&data, &[]);
    let out = artifacts();
    let mut b = Browser::launch(&bin);

    // Without the token: the sign-in form (which works without JavaScript).
    b.goto(&server.url("/"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    assert!(b.dom().contains("id=\"token\""));
    b.bearer(TOKEN);

    // Worklist: chains by state, the open hold counted.
    b.goto(&server.url("/"));
    let counts = b.text_of("#counts");
    assert!(
        counts.contains("Infused, destroyed or rejected\t1"),
        "{counts}"
    );
    assert!(counts.contains("At manufacturing\t1"), "{counts}");
    assert!(counts.contains("Open holds\t1"), "{counts}");
    let dom = b.dom();
    for c in [MAIN, OPEN, XSS_CHAIN] {
        assert!(
            dom.contains(&format!("href=\"/chain/{c}\"")),
            "worklist lacks {c}"
        );
    }
    b.screenshot(&out.join("worklist.png"));

    // Open holds with their age and rule.
    b.goto(&server.url("/holds"));
    let holds = b.text_of("#holds");
    assert!(
        holds.contains(OPEN) && holds.contains("temperature_range"),
        "{holds}"
    );
    assert!(holds.contains(" d"), "age in days: {holds}");

    // Search by product bag, DIN, CoI reference and chain id.
    for (q, expect) in [
        ("BAG-A", vec![MAIN]),
        // One bag, one chain: the other chains of the fixture collect their own DINs.
        ("W000025123456", vec![MAIN]),
        ("COI-7F3K-2291", vec![MAIN, OPEN, XSS_CHAIN]),
        (OPEN, vec![OPEN]),
    ] {
        b.goto(&server.url(&format!("/search?q={q}")));
        let summary = b.text_of("#search-summary");
        assert!(
            summary.starts_with(&format!("{} chain(s)", expect.len())),
            "{q}: {summary}"
        );
        let dom = b.dom();
        for c in expect {
            assert!(
                dom.contains(&format!("href=\"/chain/{c}\"")),
                "{q} should find {c}"
            );
        }
    }

    // The chain page: the batch record, verified, with the released hold and over-limit leg.
    b.goto(&server.url(&format!("/chain/{MAIN}")));
    assert_eq!(
        b.eval("document.querySelector('#verdict').className"),
        "banner verified"
    );
    let legs = b.text_of("#legs");
    let over: Vec<&str> = legs.lines().filter(|l| l.contains("OVER LIMIT")).collect();
    assert_eq!(over.len(), 1, "{legs}");
    assert!(over[0].contains("ambient exposure in transport (seq 4)"));
    let holds = b.text_of("#holds");
    assert!(
        holds.contains("ambient_exposure") && holds.contains("released at seq 6"),
        "{holds}"
    );
    assert!(b.text_of("#review").contains("qa.lena (test)"));
    assert_eq!(
        b.eval("document.querySelectorAll('svg.temp-chart').length"),
        2
    );
    b.screenshot(&out.join("batch-record.png"));
    // Printed on A4 and on Letter: numbered pages, headed with the chain; no table wider
    // than the printable width.
    b.call(
        "Emulation.setEmulatedMedia",
        serde_json::json!({"media": "print"}),
    );
    for (name, w, h, css_width) in [("a4", 8.27, 11.69, 703), ("letter", 8.5, 11.0, 725)] {
        b.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": css_width, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        let overflow = b.eval(
            "[...document.querySelectorAll('table, figure, .event')].filter(t => t.scrollWidth > t.clientWidth + 1 || t.getBoundingClientRect().right > document.documentElement.clientWidth + 1).length",
        );
        assert_eq!(
            overflow, 0,
            "{name}: a table is wider than the printed page"
        );
        let pdf = out.join(format!("batch-record-{name}.pdf"));
        b.pdf(&pdf, w, h);
        let pages = pdf_pages(&pdf);
        let n = pages.len();
        assert!(n >= 3, "{name}: {n} pages");
        for (i, p) in pages.iter().enumerate() {
            assert!(
                p.contains(&format!("Page {} of {n}", i + 1)),
                "{name} page {} lacks its number",
                i + 1
            );
            assert!(p.contains(MAIN), "{name} page {} lacks its header", i + 1);
        }
        let all = pages.concat();
        assert!(
            all.matches("(local)").count() >= 31,
            "{name}: every signature table's last column printed"
        );
        assert!(all.contains("OVER LIMIT"));
    }
    b.call(
        "Emulation.setEmulatedMedia",
        serde_json::json!({"media": ""}),
    );
    b.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 1100, "height": 1400, "deviceScaleFactor": 1, "mobile": false}),
    );

    // A chain whose every free text is a script tag: shown as text, nothing runs.
    b.goto(&server.url(&format!("/chain/{XSS_CHAIN}")));
    assert!(b.text_of("#holds").contains("<script>alert(1)</script>"));
    assert_eq!(b.eval("document.scripts.length"), 0);

    // Key registry and the latest checkpoint.
    b.goto(&server.url("/keys"));
    let keys = b.text_of("#keys");
    assert!(keys.contains("qa.lena") && keys.contains("nurse"), "{keys}");
    b.goto(&server.url("/checkpoint"));
    let size: u64 = b.text_of("#tree-size").trim().parse().unwrap();
    assert!(size > 40);

    // The record of a tampered bundle, opened from its file: FAILED at the top.
    let mut bundle =
        celltrail::bundle::Bundle::from_json(&std::fs::read_to_string(&f.main_bundle).unwrap())
            .unwrap();
    let e = &mut bundle.chains[0].entries[10];
    let mut bytes = celltrail::bundle::unb64(&e.entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    e.entry = celltrail::bundle::b64(&bytes);
    let tampered = out.join("tampered.bundle.json");
    std::fs::write(&tampered, bundle.to_json()).unwrap();
    let html = out.join("tampered-record.html");
    let o = Command::new(BIN)
        .arg("report")
        .arg(&tampered)
        .arg("--out")
        .arg(&html)
        .output()
        .unwrap();
    assert!(!o.status.success());
    b.goto(&format!("file://{}", html.display()));
    assert_eq!(
        b.eval("document.querySelector('.banner').className"),
        "banner failed"
    );
    assert!(b.text_of("#verdict").starts_with("FAILED"));
    assert_eq!(
        b.eval("document.querySelectorAll('.banner.verified').length"),
        0
    );
    b.screenshot(&out.join("tampered-record.png"));

    let errors = b.errors();
    assert!(errors.is_empty(), "browser errors: {errors:#?}");
    drop(server);
}

/// Clocks and limits follow the table the log has in force (issue 13 point 10), never the
/// start-up table: after an admin activates a table with a 180-minute thaw window, the at-risk
/// clock of a thawed product says 180 min, and the chain page measures the thaw → bedside
/// check leg against the table that judged the check (the built-in table allows 120 min).
#[test]
fn console_clocks_and_limits_follow_the_table_in_force() {
    use celltrail::pb::{event_body::Detail, PolicyActivated};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let addr = server._proc.addr.clone();
    let admin = realproc::admin_key(&data);
    let loose = celltrail::policy::DEFAULT_TABLE_TOML
        .replace("name = \"autologous-car-t\"", "name = \"thaw-180\"")
        .replace(
            "thaw_to_infusion_max_minutes = 120",
            "thaw_to_infusion_max_minutes = 180",
        );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = celltrail::client::connect(&addr).await.unwrap();
        let keys = lifecycle::Keys::new();
        keys.register(&mut c, &admin).await;
        let steps = lifecycle::happy_path(&keys);
        let dispense = steps
            .iter()
            .position(|s| matches!(s.detail, Detail::Dispensed(_)))
            .unwrap();
        let mut a = lifecycle::ChainCursor::with_own_bags("CLK-A", common::base_time());
        let mut rest = steps.into_iter();
        a.append(&mut c, rest.by_ref().take(dispense + 1).collect())
            .await;
        common::admin_event(
            &mut c,
            &admin,
            Detail::PolicyActivated(PolicyActivated {
                table_toml: loose.as_bytes().to_vec(),
                table_sha256: celltrail::policy::book::table_sha256(loose.as_bytes()).to_vec(),
                name: "thaw-180".into(),
            }),
        )
        .await
        .unwrap();
        // The bedside check, 20 min after the thaw, judged under the activated table.
        a.append(&mut c, rest.by_ref().take(1).collect()).await;
        let mut b = lifecycle::ChainCursor::with_own_bags("CLK-B", common::base_time());
        b.append(
            &mut c,
            lifecycle::happy_path(&keys)
                .into_iter()
                .take(dispense + 1)
                .collect(),
        )
        .await;
    });

    let (head, risks) = http_get(&server.console, "/at-risk", Some(TOKEN));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    for chain in ["CLK-A", "CLK-B"] {
        assert!(risks.contains(&format!("/chain/{chain}")), "{risks}");
    }
    assert!(risks.contains("180 min after thaw"), "{risks}");
    assert!(!risks.contains("120 min after thaw"), "{risks}");

    let (head, page) = http_get(&server.console, "/chain/CLK-A", Some(TOKEN));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(page.contains("banner verified"), "{page}");
    assert!(
        !page.contains("OVERRIDE"),
        "no override: the recorded tables judged"
    );
    let leg = page
        .split("<tr")
        .find(|row| row.contains("thaw → bedside check"))
        .unwrap_or_else(|| panic!("no thaw leg: {page}"));
    let limit = celltrail::bundle::record::fields::duration(180.0 * 60e9);
    assert!(
        leg.contains(&format!("<td>{limit}</td>")),
        "the leg's limit is the activated table's {limit}: {leg}"
    );
}

/// A near miss (a wrong patient at the bedside) reaches QA on the worklist: the counts name the
/// chains with near misses, the chain's row says how many and when, and the near-miss page lists
/// it — read from the chain summaries the writer keeps, in headless Chromium.
#[test]
fn near_misses_are_flagged_on_the_worklist_and_listed() {
    use celltrail::pb::{event_body::Detail, Enrolled, SignatureMeaning};
    let Some(bin) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let server = common::TestServer::start(&data).await;
        let mut c = server.client().await;
        let nurse = common::signer("nurse.near");
        common::register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
        let now = celltrail::time::now_nanos();
        let sign = |chain: &str, seq: u64, prev: Vec<u8>, detail: Detail| {
            common::signed_at_link(
                chain,
                seq,
                prev,
                now,
                "HOSP-A",
                detail,
                &[(&nurse, SignatureMeaning::Performed)],
            )
        };
        let enrolled = || {
            Detail::Enrolled(Enrolled {
                coi_ref: "CHA999926PAT001".into(),
                therapy: "CAR-T".into(),
                manufacturing_site: "MFG-1".into(),
            })
        };
        let near = c
            .append(sign("BAG-NEAR", 0, vec![0; 32], enrolled()))
            .await
            .expect("enrolled")
            .into_inner();
        c.append(sign("BAG-CALM", 0, vec![0; 32], enrolled()))
            .await
            .expect("enrolled");
        let mut prev = near.event_hash;
        for seq in 1..=2 {
            prev = c
                .append(sign(
                    "BAG-NEAR",
                    seq,
                    prev,
                    common::wrong_patient_near_miss(),
                ))
                .await
                .expect("near miss")
                .into_inner()
                .event_hash;
        }
        server.stop().await;
    });
    let server = Server::start(&data, &[]);
    let mut b = Browser::launch(&bin);
    b.bearer(TOKEN);

    b.goto(&server.url("/"));
    let counts = b.text_of("#counts");
    assert!(counts.contains("Chains with near misses\t1"), "{counts}");
    let rows = b.text_of("table.worklist");
    let near_row = rows
        .lines()
        .find(|l| l.contains("BAG-NEAR"))
        .unwrap_or_else(|| panic!("no BAG-NEAR row:\n{rows}"));
    assert!(near_row.contains("NEAR MISS ×2 (last "), "{near_row}");
    let calm_row = rows.lines().find(|l| l.contains("BAG-CALM")).unwrap();
    assert!(!calm_row.contains("NEAR MISS"), "{calm_row}");
    b.screenshot(&artifacts().join("worklist-near-misses.png"));

    b.goto(&server.url("/near-misses"));
    let listed = b.text_of("#near-misses");
    assert!(listed.contains("BAG-NEAR\tEnrolled\t2\t"), "{listed}");
    assert!(!listed.contains("BAG-CALM"), "{listed}");
    let errors = b.errors();
    assert!(errors.is_empty(), "browser errors: {errors:#?}");
}

/// A chain whose summary was written before near misses were counted (by an older version)
/// shows "not counted", and its next event counts the near misses already on the chain from
/// its stored entries: nothing recorded before is left out of the count.
#[test]
fn near_misses_recorded_before_they_were_counted_are_counted_at_the_next_event() {
    use celltrail::pb::{event_body::Detail, Enrolled, SignatureMeaning};
    use celltrail::storage::{Group, Storage};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let nurse = common::signer("nurse.old");
    let sign = |seq: u64, prev: Vec<u8>, detail: Detail| {
        common::signed_at_link(
            "BAG-OLD",
            seq,
            prev,
            celltrail::time::now_nanos(),
            "HOSP-A",
            detail,
            &[(&nurse, SignatureMeaning::Performed)],
        )
    };
    let near_miss = common::wrong_patient_near_miss;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prev = rt.block_on(async {
        let server = common::TestServer::start(&data).await;
        let mut c = server.client().await;
        common::register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
        let r = c
            .append(sign(
                0,
                vec![0; 32],
                Detail::Enrolled(Enrolled {
                    coi_ref: "CHA999926PAT001".into(),
                    therapy: "CAR-T".into(),
                    manufacturing_site: "MFG-1".into(),
                }),
            ))
            .await
            .expect("enrolled")
            .into_inner();
        let r = c
            .append(sign(1, r.event_hash, near_miss()))
            .await
            .expect("near miss")
            .into_inner();
        server.stop().await;
        r.event_hash
    });
    // What an older version left: the same summary without the near-miss count.
    let summary = |rewrite_as_old: bool| {
        let store = common::open_stopped_store(&data);
        let mut s = store.chain_summary("BAG-OLD").unwrap().expect("a summary");
        if rewrite_as_old {
            s.near_misses = None;
            store
                .commit(&Group {
                    summaries: vec![("BAG-OLD".into(), s.clone())],
                    tree_size: store.tree_size().unwrap(),
                    checkpoint: store.checkpoint().unwrap(),
                    ..Default::default()
                })
                .unwrap();
        }
        s
    };
    assert_eq!(summary(false).near_misses.map(|n| n.count), Some(1));
    assert_eq!(summary(true).near_misses, None);
    let page = celltrail::console::pages::near_misses(&[summary(false)], 1);
    assert!(
        page.html.contains("does not count near misses"),
        "the page says which chains were not counted"
    );
    rt.block_on(async {
        let server = common::TestServer::start(&data).await;
        let mut c = server.client().await;
        c.append(sign(2, prev, near_miss()))
            .await
            .expect("second near miss");
        server.stop().await;
    });
    let after = summary(false).near_misses.expect("counted again");
    assert_eq!(after.count, 2, "the stored near miss and the new one");
}
