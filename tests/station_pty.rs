//! The interactive station driven through a real pseudo-terminal, as a keyboard-wedge scanner
//! and a person would: scan lines, an empty line, the event, the questions, YES, ACCEPTED.

mod common;
mod station_support;

use celltrail::pb::event_body::Detail;
use common::*;
use station_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_station_through_a_pty_records_an_enrolment() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let mut c = server.client().await;
    let nurse = signer("nurse.ada");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let key = key_file(dir.path(), &nurse);
    let (bag, chain) = din(321);
    let (wrist, coi_ref) = coi("PAT321");
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--queue")
        .arg(dir.path().join("station"))
        .arg("--key")
        .arg(&key)
        .arg("--site")
        .arg("HOSP-A")
        .env("CELLTRAIL_LOG", "warn");

    let transcript = tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
        let mut seen = String::new();
        let mut step = |p: &mut rexpect::session::PtySession, want: &str, send: Option<&str>| {
            seen += &p
                .exp_string(want)
                .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}\nso far:\n{seen}"));
            seen += want;
            if let Some(line) = send {
                p.send_line(line).unwrap();
            }
        };
        // The key file is encrypted: its passphrase is asked on the terminal, without echo.
        step(&mut p, "Passphrase for nurse.ada", Some(TEST_PASSPHRASE));
        step(&mut p, "scan >", Some("gibberish"));
        step(&mut p, "NOT A CODE THIS STATION KNOWS", None);
        step(&mut p, "scan >", Some(&bag));
        step(&mut p, "BAG (DIN)", None);
        step(&mut p, "scan >", Some(&wrist));
        step(&mut p, "CHAIN OF IDENTITY", None);
        step(&mut p, "scan >", Some(""));
        step(&mut p, "event >", Some("enrolled"));
        step(&mut p, "Manufacturing site code >", Some("MFG-1"));
        step(&mut p, "Therapy (Enter to skip) >", Some(""));
        step(&mut p, "Comment (Enter for none) >", Some(""));
        step(&mut p, "SUMMARY", None);
        step(&mut p, "type YES to sign (PERFORMED) >", Some("YES"));
        step(&mut p, "ACCEPTED", None);
        step(&mut p, "scan >", Some("QUIT"));
        p.exp_eof().expect("station exits on QUIT");
        seen
    })
    .await
    .unwrap();
    assert!(transcript.contains("ACCEPTED"));
    assert!(
        !transcript.contains(TEST_PASSPHRASE),
        "the passphrase was echoed:\n{transcript}"
    );

    let events = chain_events(&mut c, &chain).await;
    assert_eq!(kinds(&events), ["enrolled"]);
    match &events[0].0.detail {
        Some(Detail::Enrolled(e)) => {
            assert_eq!(e.coi_ref, coi_ref);
            assert_eq!(e.manufacturing_site, "MFG-1");
            assert_eq!(e.therapy, "");
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(events[0].1.signatures[0].key_id, "nurse.ada");
}

/// CANCEL abandons a half-filled form at any prompt ("nothing was signed") and the station
/// goes on; QUIT at the comment prompt quits, it is never taken as the comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_abandons_the_form_at_each_prompt_and_quit_is_never_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let mut c = server.client().await;
    let nurse = signer("nurse.ada");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let key = key_file(dir.path(), &nurse);
    let (bag, chain) = din(322);
    let (wrist, _) = coi("PAT322");
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--queue")
        .arg(dir.path().join("station"))
        .arg("--key")
        .arg(&key)
        .arg("--site")
        .arg("HOSP-A")
        .env("CELLTRAIL_PASSPHRASE_FILE", pass_path(&key))
        .env("CELLTRAIL_LOG", "warn");

    tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
        let mut seen = String::new();
        let mut step = |p: &mut rexpect::session::PtySession, want: &str, send: Option<&str>| {
            seen += &p
                .exp_string(want)
                .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}\nso far:\n{seen}"));
            seen += want;
            if let Some(line) = send {
                p.send_line(line).unwrap();
            }
        };
        let start =
            |step: &mut dyn FnMut(&mut rexpect::session::PtySession, &str, Option<&str>),
             p: &mut rexpect::session::PtySession| {
                step(p, "scan >", Some(&bag));
                step(p, "scan >", Some(&wrist));
                step(p, "scan >", Some(""));
                step(p, "event >", Some("enrolled"));
            };
        // CANCEL at the event prompt, at a question, at the comment, at the signature.
        step(&mut p, "scan >", Some(&bag));
        step(&mut p, "scan >", Some(""));
        step(&mut p, "event >", Some("cancel"));
        step(&mut p, "nothing was signed", None);
        start(&mut step, &mut p);
        step(&mut p, "Manufacturing site code >", Some("CANCEL"));
        step(&mut p, "nothing was signed", None);
        start(&mut step, &mut p);
        step(&mut p, "Manufacturing site code >", Some("MFG-1"));
        step(&mut p, "Therapy (Enter to skip) >", Some(""));
        step(&mut p, "Comment (Enter for none) >", Some("CANCEL"));
        step(&mut p, "nothing was signed", None);
        start(&mut step, &mut p);
        step(&mut p, "Manufacturing site code >", Some("MFG-1"));
        step(&mut p, "Therapy (Enter to skip) >", Some(""));
        step(&mut p, "Comment (Enter for none) >", Some(""));
        step(&mut p, "type YES to sign (PERFORMED) >", Some("CANCEL"));
        step(&mut p, "nothing was signed", None);
        // QUIT at the comment prompt quits the station; it never becomes the comment.
        start(&mut step, &mut p);
        step(&mut p, "Manufacturing site code >", Some("MFG-1"));
        step(&mut p, "Therapy (Enter to skip) >", Some(""));
        step(&mut p, "Comment (Enter for none) >", Some("QUIT"));
        p.exp_eof().expect("station exits on QUIT");
    })
    .await
    .unwrap();
    assert!(
        chain_events(&mut c, &chain).await.is_empty(),
        "nothing was recorded"
    );
}

/// Issue 14 point 7: offline, a station that has never seen the bag's chain says so right
/// after the event is chosen, before the form's first question, and signs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_station_says_it_cannot_chain_before_asking_any_question() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let addr = server.addr;
    let nurse = signer("pharm.pat");
    let key = key_file(dir.path(), &nurse);
    server.stop().await;
    let (bag, _) = din(330);
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(addr.to_string())
        .arg("--queue")
        .arg(dir.path().join("station"))
        .arg("--key")
        .arg(&key)
        .arg("--site")
        .arg("CLINIC-1")
        .env("CELLTRAIL_PASSPHRASE_FILE", pass_path(&key))
        .env("CELLTRAIL_LOG", "warn");
    let seen = tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
        let mut seen = String::new();
        let mut step = |p: &mut rexpect::session::PtySession, want: &str, send: Option<&str>| {
            seen += &p
                .exp_string(want)
                .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}\nso far:\n{seen}"));
            seen += want;
            if let Some(line) = send {
                p.send_line(line).unwrap();
            }
        };
        step(&mut p, "OFFLINE", None);
        step(&mut p, "scan >", Some(&bag));
        step(&mut p, "scan >", Some(""));
        step(&mut p, "event >", Some("stored"));
        step(&mut p, "CANNOT CHAIN", None);
        step(&mut p, "nothing was asked and nothing was signed", None);
        step(&mut p, "scan >", Some("QUIT"));
        p.exp_eof().expect("station exits on QUIT");
        seen
    })
    .await
    .unwrap();
    assert!(
        !seen.contains("storage location") && !seen.contains("temperature"),
        "no question was asked:\n{seen}"
    );
}

/// Issue 14 point 5 through a terminal: the shipper prompt at a receipt takes only a GRAI
/// (`YES` and a logger's GIAI are refused and asked again); Ctrl-C asks before quitting and
/// Enter goes on; Ctrl-C then YES quits, and nothing was signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompted_scans_are_checked_against_the_code_asked_and_ctrl_c_asks_before_quitting() {
    let s = shipped_to_mfg(620).await;
    let mut c = s.server.client().await;
    let before = snapshot(&mut c).await;
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(s.server.addr.to_string())
        .arg("--queue")
        .arg(s.dir.path().join("mfg-station"))
        .arg("--key")
        .arg(&s.mfg_key)
        .arg("--site")
        .arg("MFG-1")
        .env("CELLTRAIL_PASSPHRASE_FILE", pass_path(&s.mfg_key))
        .env("CELLTRAIL_LOG", "warn");
    let bag = s.bag.clone();
    tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
        let mut seen = String::new();
        let mut step = |p: &mut rexpect::session::PtySession, want: &str, send: Option<&str>| {
            seen += &p
                .exp_string(want)
                .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}\nso far:\n{seen}"));
            seen += want;
            if let Some(line) = send {
                p.send_line(line).unwrap();
            }
        };
        step(&mut p, "scan >", Some(&bag));
        step(&mut p, "scan >", Some(""));
        step(&mut p, "event >", Some("received"));
        step(&mut p, "FROM SITE  HOSP-A", None);
        step(&mut p, "named by the shipment >", Some("YES"));
        step(&mut p, "expected a shipper (GS1 GRAI)", None);
        step(
            &mut p,
            "named by the shipment >",
            Some("(8004)0950600013435LOGGER7"),
        );
        step(&mut p, "WRONG CODE TYPE", None);
        step(&mut p, "named by the shipment >", Some(SHIPPER));
        step(&mut p, "Seal intact? (yes/no) >", None);
        p.send_control('c').unwrap();
        step(&mut p, "quit the station?", Some(""));
        step(&mut p, "going on", None);
        step(&mut p, "Seal intact? (yes/no) >", Some("CANCEL"));
        step(&mut p, "nothing was signed", None);
        step(&mut p, "scan >", None);
        p.send_control('c').unwrap();
        step(&mut p, "quit the station?", Some("YES"));
        p.exp_eof().expect("station quits after Ctrl-C and YES");
    })
    .await
    .unwrap();
    assert_eq!(snapshot(&mut c).await, before, "nothing was signed");
}
