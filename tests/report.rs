//! `celltrail report`: the batch record of a real bundle (exported over gRPC from a real server)
//! rendered by the real binary as HTML, text and JSON; a tampered bundle's record says FAILED
//! at the top; every free-text field is escaped; `report --chain` exports from a running server.

mod common;
mod lifecycle;
mod record_fixture;

use record_fixture::{Fixture, MAIN, OPEN, XSS};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_celltrail");

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

fn report(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("report")
        .args(args)
        .env("TZ", "Europe/Berlin")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn html_of(bundle: &Path) -> String {
    let o = report(&[bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

/// The HTML document fetches and runs nothing: no script, no external reference of any kind.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script tag");
    for forbidden in [
        "<link",
        "<img",
        "<iframe",
        "@import",
        "url(",
        " src=",
        " href=\"http",
    ] {
        assert!(!lower.contains(forbidden), "found {forbidden:?}");
    }
    // The only absolute URL is the SVG namespace.
    let urls = lower.matches("http://").count() + lower.matches("https://").count();
    let ns = lower.matches("http://www.w3.org/2000/svg").count();
    assert_eq!(urls, ns, "an external URL besides the SVG namespace");
    assert!(lower.contains("content-security-policy"));
    assert!(lower.contains("default-src 'none'"));
}

#[test]
fn html_record_shows_hold_legs_qc_deviations_review_and_signatures() {
    let f = fixture();
    let html = html_of(&f.main_bundle);
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("batch-record.html"), &html).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("banner verified"), "verified banner");
    assert!(!html.contains("FAILED"));
    // Header.
    for s in [
        MAIN,
        "COI-7F3K-2291",
        "anti-CD19 CAR-T",
        "MFG-0001",
        "W000025123456",
        "BAG-A, BAG-B",
        "Infused",
    ] {
        assert!(html.contains(s), "header lacks {s}");
    }
    // The hold opened by the ambient exposure, and its release by QA.
    assert!(
        html.contains("ambient_exposure: 1h 30m out of controlled storage")
            || html.contains("ambient_exposure:")
    );
    assert!(html.contains("released at seq 6"), "hold release row");
    assert!(html.contains("Exposure assessed against stability data: no impact."));
    // The over-limit leg, and legs within their limit.
    let legs = &html[html.find("id=\"legs\"").expect("legs table")..];
    let legs = &legs[..legs.find("</table>").unwrap()];
    assert!(legs.contains("ambient exposure in transport (seq 4)"));
    assert!(legs.contains("1 h 30 min"));
    assert_eq!(legs.matches("OVER LIMIT").count(), 1, "{legs}");
    for leg in [
        "collection → receipt",
        "manufacturing window",
        "thaw → bedside check",
        "thaw → infusion",
        "vein-to-vein",
    ] {
        assert!(legs.contains(leg), "leg {leg} missing");
    }
    // QC table with the failed result and its retest; deviations.
    assert!(html.contains("14% cytotoxicity") && html.contains("31% cytotoxicity"));
    assert!(html.contains("retest 1"));
    assert!(html.contains(">FAIL<"));
    assert!(html.contains("DEV-001") && html.contains("DEV-002"));
    // Reviewer block: qa.lena signed the release REVIEWED.
    let review = &html[html.find("id=\"review\"").expect("review table")..];
    assert!(review[..review.find("</table>").unwrap()].contains("qa.lena (test)"));
    // Signature manifestation: printed name, role, site, meaning, UTC and local time.
    assert!(html.contains("nurse.ben (test)") && html.contains("VERIFIED"));
    assert!(
        html.contains("+01:00") || html.contains("+02:00"),
        "local time in Europe/Berlin"
    );
    // Temperature chart against allowed ranges.
    assert!(html.contains("<svg") && html.contains("allowed 2 to 8 °C"));
    assert!(html.contains("allowed -200 to -150 °C"));
    // Every event, with occurred and recorded times.
    assert_eq!(html.matches("class=\"event\"").count(), 32);
    assert_eq!(html.matches("Recorded by the log at").count(), 32);
    // Verification section, computed by verify.
    assert!(html.contains("Log key fingerprint"));
    assert!(html.contains("inclusion proofs against the checkpoint"));
    assert!(html.contains("the log signed that no event follows the last one shown"));
}

#[test]
fn open_hold_and_out_of_range_reading_are_flagged() {
    let html = html_of(&fixture().open_bundle);
    let open = &html[html.find("id=\"open-holds\"").unwrap()..];
    let open = &open[..open.find("</td>").unwrap()];
    assert!(open.contains("temperature_range"), "{open}");
    assert!(html.contains("OPEN"));
    assert!(html.contains("OUT OF RANGE 4 to 12 °C"));
}

#[test]
fn text_record_fits_100_columns_and_has_every_section() {
    let f = fixture();
    let o = report(&[f.main_bundle.to_str().unwrap(), "--format", "text"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.starts_with("VERIFIED"));
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line:?}",
            line.chars().count()
        );
    }
    for s in [
        "Holds",
        "Elapsed time against policy limits",
        "OVER LIMIT",
        "QC results",
        "retest 1",
        "Deviations",
        "Record review",
        "REVIEWED with seq",
        "Temperatures",
        "VERDICT: VERIFIED",
    ] {
        assert!(text.contains(s), "text lacks {s}");
    }
}

#[test]
fn json_record_has_every_event_field() {
    let f = fixture();
    let o = report(&[f.main_bundle.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "celltrail-batch-record/v1");
    assert_eq!(v["verdict"]["status"], "VERIFIED");
    let chain = &v["chains"][0];
    assert_eq!(chain["chain_id"], MAIN);
    let events = chain["events"].as_array().unwrap();
    assert_eq!(events.len(), 32);
    let received = &events[4];
    assert_eq!(received["event"], "received");
    let names: Vec<&str> = received["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "from_site",
            "seal_intact",
            "temp_min_c",
            "temp_max_c",
            "elapsed_seconds",
            "shipper_id"
        ]
    );
    assert_eq!(received["fields"][4]["raw"], 5400);
    assert!(received["recorded_at"].is_string() && received["occurred_at"].is_string());
    assert_eq!(chain["holds"][0]["released_seq"], 6);
    assert_eq!(chain["reviews"][0]["signature"]["meaning"], "REVIEWED");
    assert!(chain["legs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["over_limit"] == true));
}

/// Flips a character inside the base64 of one entry: the signature or proof then fails.
fn tampered(
    f: &Fixture,
    name: &str,
    edit: impl Fn(&mut celltrail::bundle::Bundle),
) -> std::path::PathBuf {
    let mut b =
        celltrail::bundle::Bundle::from_json(&std::fs::read_to_string(&f.main_bundle).unwrap())
            .unwrap();
    edit(&mut b);
    let path = f.root.path().join(name);
    std::fs::write(&path, b.to_json()).unwrap();
    path
}

pub fn tamper_entry(b: &mut celltrail::bundle::Bundle) {
    use celltrail::bundle::{b64, unb64};
    let e = &mut b.chains[0].entries[10];
    // One byte of the signed body changes (the entry still decodes, so the failure names
    // the chain's seq).
    use prost::Message;
    let mut entry = celltrail::pb::LogEntry::decode(unb64(&e.entry).unwrap().as_slice()).unwrap();
    let n = entry.body.len();
    entry.body[n / 2] ^= 0x01;
    e.entry = b64(&entry.encode_to_vec());
}

#[test]
fn tampered_bundle_record_says_failed_first_in_every_format() {
    let f = fixture();
    let path = tampered(f, "tampered.json", tamper_entry);
    let p = path.to_str().unwrap();
    let o = report(&[p]);
    assert!(!o.status.success(), "a failed record exits non-zero");
    assert!(String::from_utf8_lossy(&o.stderr).contains("verification FAILED"));
    let html = stdout(&o);
    let body = &html[html.find("<body").unwrap()..];
    let first_banner = body.find("class=\"banner").unwrap();
    assert!(
        body[first_banner..].starts_with("class=\"banner failed\""),
        "{}",
        &body[first_banner..first_banner + 80]
    );
    assert!(!html.contains("banner verified"));
    assert!(!html.contains(">VERIFIED<"));
    assert!(html.contains("NOT a valid batch record"));
    assert!(
        html.contains("(chain BAG-QA-1 seq 10)"),
        "names the broken entry"
    );
    let o = report(&[p, "--format", "text"]);
    assert!(stdout(&o).starts_with("FAILED"));
    assert!(stdout(&o).trim_end().ends_with("VERDICT: FAILED"));
    let o = report(&[p, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"]["status"], "FAILED");
    assert_eq!(v["verdict"]["ok"], false);
}

#[test]
fn every_free_text_field_is_escaped() {
    let f = fixture();
    let html = html_of(&f.xss_bundle);
    assert_self_contained(&html);
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
    // printed name (x4 signatures + header of enrolment), therapy, hold reason, deviation id
    // and description, hold release reason: all present, all escaped.
    assert!(
        html.matches(escaped).count() >= 8,
        "{}",
        html.matches(escaped).count()
    );
    assert!(!html.contains(XSS));
    // A forged bundle naming a chain with markup fails, and its name is escaped too
    // (also in the print header, which is CSS).
    let path = tampered(f, "forged-name.json", |b| b.chains[0].chain_id = XSS.into());
    let o = report(&[path.to_str().unwrap()]);
    let html = stdout(&o);
    assert!(html.contains("banner failed"));
    assert!(!html.to_ascii_lowercase().contains("<script"));
}

#[test]
fn report_chain_exports_from_a_running_server() {
    let f = fixture();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = common::TestServer::start(&f.data_dir).await;
        let addr = server.addr.to_string();
        let out = f.root.path().join("from-server.html");
        let args: Vec<String> = [
            "--chain",
            OPEN,
            "--server",
            &addr,
            "--log-vkey",
            f.log_vkey.to_str().unwrap(),
            "--trust-anchors",
            f.anchors.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        let o = tokio::task::spawn_blocking(move || {
            report(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let html = std::fs::read_to_string(&out).unwrap();
        assert!(html.contains("banner verified"));
        assert!(html.contains(&format!("server {addr} chain {OPEN}")));
        assert!(html.contains("temperature_range"));
        server.stop().await;
    });
}

/// `key revoke --at` dated before a signature the log already recorded: the entry stays valid
/// (judged by the registry as it stood), but `verify` and the batch record say that the key is
/// now recorded as revoked when it signed, instead of "unrevoked at signing time" alone.
#[test]
fn a_back_dated_revocation_is_a_warning_in_verify_and_in_the_record() {
    use celltrail::pb::{event_body::Detail, Enrolled, KeyRevoked, SignatureMeaning};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = common::TestServer::start(&data).await;
        let mut c = server.client().await;
        let nurse = common::signer("nurse.late");
        common::register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
        let now = celltrail::time::now_nanos();
        let ev = common::signed_at_link(
            "BAG-REV",
            0,
            vec![0; 32],
            now,
            "HOSP-A",
            Detail::Enrolled(Enrolled {
                coi_ref: "CHA999926PAT001".into(),
                therapy: "CAR-T".into(),
                manufacturing_site: "MFG-1".into(),
            }),
            &[(&nurse, SignatureMeaning::Performed)],
        );
        c.append(ev).await.expect("enrolled");
        common::admin_event(
            &mut c,
            &server.admin,
            Detail::KeyRevoked(KeyRevoked {
                key_id: nurse.name.clone(),
                revoked_at_unix_nanos: now - 3_600 * 1_000_000_000,
                reason: "badge lost".into(),
            }),
        )
        .await
        .unwrap();
        server.stop().await;
    });
    let bundle = dir.path().join("all.json");
    let o = Command::new(BIN)
        .args(["export", "--all", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(BIN)
        .arg("verify")
        .arg(&bundle)
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(
        o.status.success(),
        "still valid under the log's rules:\n{text}"
    );
    assert!(
        text.contains("WARNING: entry 1 (chain BAG-REV seq 0): nurse.late signed PERFORMED")
            && text.contains("later declared revoked"),
        "{text}"
    );
    let o = report(&[bundle.to_str().unwrap(), "--format", "text"]);
    let record = stdout(&o);
    let words = record.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("WARNING entry 1 (chain BAG-REV seq 0): nurse.late signed PERFORMED")
            && words.contains("later declared revoked"),
        "{record}"
    );
}

/// A wrong-patient near miss recorded at the bedside (`identity_check_failed`) has its own
/// section at the top of the batch record in every format, not only a line among the events.
#[test]
fn a_near_miss_has_its_own_section_in_every_format() {
    use celltrail::pb::{event_body::Detail, Enrolled, SignatureMeaning};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = common::TestServer::start(&data).await;
        let mut c = server.client().await;
        let nurse = common::signer("nurse.near");
        common::register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
        let now = celltrail::time::now_nanos();
        let sign = |seq: u64, prev: Vec<u8>, detail: Detail| {
            common::signed_at_link(
                "BAG-NEAR",
                seq,
                prev,
                now,
                "HOSP-A",
                detail,
                &[(&nurse, SignatureMeaning::Performed)],
            )
        };
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
        c.append(sign(1, r.event_hash, common::wrong_patient_near_miss()))
            .await
            .expect("near miss");
        server.stop().await;
    });
    let bundle = dir.path().join("near.json");
    let o = Command::new(BIN)
        .args(["export", "--all", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = bundle.to_str().unwrap();
    let text = stdout(&report(&[b, "--format", "text"]));
    let head = &text[..text.find("\nEvents").expect("an Events section")];
    assert!(
        head.contains("Near misses (identity checks failed)")
            && head.contains("NEAR MISS at bedside_check: WRISTBAND CHA999926PAT002"),
        "{text}"
    );
    let html = stdout(&report(&[b]));
    assert!(
        html.contains("id=\"near-misses\"") && html.contains("IS NOT the enrolled patient"),
        "{html}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&report(&[b, "--format", "json"]))).unwrap();
    let rows = &json["chains"][0]["near_misses"];
    assert_eq!(rows[0]["check"], "bedside_check", "{json}");
    assert_eq!(rows[0]["seq"], 1);
}
