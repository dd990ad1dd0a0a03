//! The interactive station driven through a real pseudo-terminal, as a keyboard-wedge scanner
//! and a person would: scan lines, an empty line, the event, the questions, YES, ACCEPTED.

mod common;
mod station_support;

use celltrail::pb::event_body::Detail;
use celltrail::pb::SignatureMeaning;
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
    let cmd = s.mfg_station();
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

/// A station process in a pseudo-terminal and what it printed so far.
struct Pty {
    p: rexpect::session::PtySession,
    seen: String,
}

impl Pty {
    fn spawn(cmd: std::process::Command) -> Pty {
        Pty {
            p: rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty"),
            seen: String::new(),
        }
    }

    /// Waits for `want`, then types `send` (and Enter) if given.
    fn step(&mut self, want: &str, send: Option<&str>) {
        let before = self
            .p
            .exp_string(want)
            .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}\nso far:\n{}", self.seen));
        self.seen += &before;
        self.seen += want;
        if let Some(line) = send {
            self.p.send_line(line).unwrap();
        }
    }
}

const COURIER_PASSPHRASE: &str = "courier's own passphrase";

/// A server with nurse.ada, nurse.cy (apheresis nurses at HOSP-A) and courier.bo registered,
/// a chain enrolled (and collected, if `collect`) at HOSP-A by the scripted station, and a
/// key directory with the three key files and badges B-ADA, B-CY, B-BO.
struct Badged {
    dir: tempfile::TempDir,
    server: TestServer,
    bag: String,
    chain: String,
    keys: std::path::PathBuf,
}

async fn badged(n: u32, collect: bool) -> Badged {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let mut c = server.client().await;
    let (ada, cy, bo) = (
        signer("nurse.ada"),
        signer("nurse.cy"),
        signer("courier.bo"),
    );
    register(&mut c, &server.admin, &ada, "apheresis_nurse", "HOSP-A").await;
    register(&mut c, &server.admin, &cy, "apheresis_nurse", "HOSP-A").await;
    register(&mut c, &server.admin, &bo, "courier", "COURIER-1").await;
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let ada_key = key_file(&keys, &ada);
    key_file(&keys, &cy);
    celltrail::keys::write_encrypted_key_file(
        &keys.join("courier.bo.key"),
        &bo,
        &celltrail::keys::Passphrase::new(COURIER_PASSPHRASE),
        TEST_KDF_ITERATIONS,
    )
    .unwrap();
    std::fs::write(
        keys.join("badges.txt"),
        "B-ADA nurse.ada\nB-CY nurse.cy\nB-BO courier.bo\n",
    )
    .unwrap();
    let (bag, chain) = din(n);
    let (wrist, _) = coi(&format!("PAT{n}"));
    let queue = dir.path().join("scripted");
    let k = ada_key.to_str().unwrap();
    expect(
        &scan_enrolment(server.addr, &queue, k, &bag, &wrist).await,
        0,
        "ACCEPTED",
    );
    if collect {
        let ended = collection_end_now();
        let args = [
            "--key",
            k,
            "--site",
            "HOSP-A",
            "--yes",
            "--event",
            "collected",
            "--scan",
            &bag,
            "--set",
            "volume_ml=250",
            "--set",
            &ended,
        ];
        expect(&scan(server.addr, &queue, &args).await, 0, "ACCEPTED");
    }
    Badged {
        dir,
        server,
        bag,
        chain,
        keys,
    }
}

fn badge_station(b: &Badged, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(b.server.addr.to_string())
        .arg("--queue")
        .arg(b.dir.path().join("station"))
        .arg("--keys-dir")
        .arg(&b.keys)
        .arg("--site")
        .arg("HOSP-A")
        .args(extra)
        .env_remove("CELLTRAIL_KEY")
        .env_remove("CELLTRAIL_PASSPHRASE_FILE")
        .env("CELLTRAIL_LOG", "warn");
    cmd
}

/// Issue 14 point 2: the first signature of a session takes the badge and the passphrase, a
/// later one the passphrase only; the second person of a two-person step is identified anew,
/// must be someone else, and types their own passphrase (not the first person's); LOGOUT ends
/// the session, and the next signature asks for the badge again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badge_then_passphrase_signs_and_the_second_person_is_someone_else_with_their_own_passphrase(
) {
    let b = badged(340, true).await;
    let cmd = badge_station(&b, &[]);
    let bag = b.bag.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let mut t = Pty::spawn(cmd);
        t.step("LOGOUT ends the session", None);
        // Packing: one signer, first signature of the session: badge, then passphrase.
        t.step("scan >", Some(&bag));
        t.step("scan >", Some(SHIPPER));
        t.step("scan >", Some(""));
        t.step("event >", Some("packed"));
        t.step("Scan the temperature logger (GIAI) >", Some(""));
        t.step("Seal number (Enter to skip) >", Some(""));
        t.step("Comment (Enter for none) >", Some(""));
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("B-NOBODY"),
        );
        t.step("no badge known here", None);
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("B-ADA"),
        );
        t.step("SUMMARY", None);
        t.step(
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            Some(TEST_PASSPHRASE),
        );
        t.step("ACCEPTED", None);
        // Shipping: nurse.ada is signed in (passphrase only); the courier is picked anew.
        t.step("scan >", Some(&bag));
        t.step("scan >", Some(SHIPPER));
        t.step("scan >", Some(""));
        t.step("event >", Some("shipped"));
        t.step("Destination site code >", Some("MFG-1"));
        t.step("Condition (e.g. 2-8C, LN2 dry shipper) >", Some(""));
        t.step("Comment (Enter for none) >", Some(""));
        t.step("signing as nurse.ada (signed in", None);
        t.step(
            "Second person (RECEIVED): scan your badge or type your key name >",
            Some("B-ADA"),
        );
        t.step("the second person must be someone else", None);
        t.step(
            "Second person (RECEIVED): scan your badge or type your key name >",
            Some("courier.bo"),
        );
        t.step("SUMMARY", None);
        t.step(
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            Some(TEST_PASSPHRASE),
        );
        // The courier cannot sign with the nurse's passphrase.
        t.step(
            "courier.bo: type your passphrase to sign (RECEIVED) >",
            Some(TEST_PASSPHRASE),
        );
        t.step("wrong passphrase (1 of 5", None);
        t.step(
            "courier.bo: type your passphrase to sign (RECEIVED) >",
            Some(COURIER_PASSPHRASE),
        );
        t.step("ACCEPTED", None);
        // LOGOUT: the next signature needs the badge again.
        t.step("scan >", Some("LOGOUT"));
        t.step("SIGNED OUT", None);
        t.step("nurse.ada signed out", None);
        t.step("scan >", Some(&bag));
        t.step("scan >", Some(""));
        t.step("event >", Some("hold"));
        t.step("Reason >", Some("label smudged"));
        t.step(
            "Comment (required: hold is a deviation) >",
            Some("label smudged"),
        );
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("CANCEL"),
        );
        t.step("nothing was signed", None);
        t.step("scan >", Some("QUIT"));
        t.p.exp_eof().expect("station exits on QUIT");
        t.seen
    })
    .await
    .unwrap();
    assert!(
        !seen.contains(TEST_PASSPHRASE),
        "a passphrase was echoed:\n{seen}"
    );
    assert!(
        !seen.contains(COURIER_PASSPHRASE),
        "a passphrase was echoed:\n{seen}"
    );
    let mut c = b.server.client().await;
    let events = chain_events(&mut c, &b.chain).await;
    assert_eq!(
        kinds(&events),
        ["enrolled", "collected", "packed", "shipped"]
    );
    let sigs: Vec<(String, i32)> = events[3]
        .1
        .signatures
        .iter()
        .map(|s| (s.key_id.clone(), s.meaning))
        .collect();
    assert_eq!(
        sigs,
        [
            ("nurse.ada".to_string(), SignatureMeaning::Performed as i32),
            ("courier.bo".to_string(), SignatureMeaning::Received as i32)
        ]
    );
}

/// Issue 14 point 2: wrong passphrases are counted and lock the person out on this station
/// after N (logged, and still locked on the next try); the session ends after the inactivity
/// timeout and the badge is asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passphrases_lock_the_signer_out_and_an_idle_session_ends() {
    let b = badged(341, true).await;
    let cmd = badge_station(
        &b,
        &["--max-passphrase-attempts", "2", "--session-timeout", "2"],
    );
    let bag = b.bag.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let mut t = Pty::spawn(cmd);
        let collect = |t: &mut Pty| {
            t.step("scan >", Some(&bag));
            t.step("scan >", Some(""));
            t.step("event >", Some("collected"));
            t.step("Volume in mL >", Some("100"));
            t.step("(Enter = now) >", Some(""));
            t.step("Comment (Enter for none) >", Some(""));
        };
        collect(&mut t);
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("B-ADA"),
        );
        t.step(
            "passphrase to sign (PERFORMED) >",
            Some("not the right passphrase"),
        );
        t.step("wrong passphrase (1 of 2", None);
        t.step(
            "passphrase to sign (PERFORMED) >",
            Some("still not the right one"),
        );
        t.step(
            "LOCKOUT nurse.ada at site HOSP-A: 2 wrong passphrases",
            None,
        );
        t.step("LOCKED OUT", None);
        collect(&mut t);
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("B-ADA"),
        );
        t.step("nurse.ada is locked out on this station until", None);
        t.step("nothing was signed", None);
        // Another nurse signs; after more than the timeout without input, the badge again.
        collect(&mut t);
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("B-CY"),
        );
        t.step(
            "nurse.cy: type your passphrase to sign (PERFORMED) >",
            Some(TEST_PASSPHRASE),
        );
        t.step("ACCEPTED", None);
        t.step("scan >", None);
        std::thread::sleep(std::time::Duration::from_secs(3));
        t.p.send_line(&bag).unwrap();
        collect(&mut t);
        t.step("SESSION ENDED: nurse.cy was signed out", None);
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("CANCEL"),
        );
        t.step("scan >", Some("QUIT"));
        t.p.exp_eof().expect("station exits on QUIT");
        t.seen
    })
    .await
    .unwrap();
    assert!(!seen.contains("not the right passphrase"), "{seen}");
    let q = celltrail::station::Queue::open(&b.dir.path().join("station")).unwrap();
    let log = q.signin_log().unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].starts_with("LOCKOUT nurse.ada"), "{log:?}");
    let mut c = b.server.client().await;
    let events = chain_events(&mut c, &b.chain).await;
    assert_eq!(kinds(&events), ["enrolled", "collected", "collected"]);
    assert_eq!(events[2].1.signatures[0].key_id, "nurse.cy");
}

/// Issue 14 point 2 with `--key`: a second person who gave their key file at the prompt signs
/// that event only; the next two-person step asks for a second person again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_person_from_the_prompt_signs_one_event_only() {
    let b = badged(350, true).await;
    let (bag2, _) = din(351);
    let (wrist2, _) = coi("PAT351");
    let ada = b.keys.join("nurse.ada.key");
    let k = ada.to_str().unwrap();
    let queue = b.dir.path().join("scripted");
    expect(
        &scan_enrolment(b.server.addr, &queue, k, &bag2, &wrist2).await,
        0,
        "ACCEPTED",
    );
    let ended = collection_end_now();
    for (bag, extra) in [
        (&b.bag, vec!["--event", "packed", "--scan", SHIPPER]),
        (
            &bag2,
            vec![
                "--event",
                "collected",
                "--set",
                "volume_ml=250",
                "--set",
                &ended,
            ],
        ),
        (&bag2, vec!["--event", "packed", "--scan", SHIPPER]),
    ] {
        let mut args = vec![
            "--key",
            k,
            "--site",
            "HOSP-A",
            "--yes",
            "--scan",
            bag.as_str(),
        ];
        args.extend(extra);
        expect(&scan(b.server.addr, &queue, &args).await, 0, "ACCEPTED");
    }
    let courier_pass = b.dir.path().join("courier.pass");
    std::fs::write(&courier_pass, format!("{COURIER_PASSPHRASE}\n")).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(b.server.addr.to_string())
        .arg("--queue")
        .arg(b.dir.path().join("station"))
        .arg("--key")
        .arg(&ada)
        .arg("--site")
        .arg("HOSP-A")
        .env("CELLTRAIL_PASSPHRASE_FILE", pass_path(&ada))
        .env("CELLTRAIL_COSIGN_PASSPHRASE_FILE", &courier_pass)
        .env("CELLTRAIL_LOG", "warn");
    let courier_key = b.keys.join("courier.bo.key");
    let (bag1, bag2) = (b.bag.clone(), bag2.clone());
    tokio::task::spawn_blocking(move || {
        let mut t = Pty::spawn(cmd);
        for bag in [&bag1, &bag2] {
            t.step("scan >", Some(bag));
            t.step("scan >", Some(""));
            t.step("event >", Some("shipped"));
            t.step("Destination site code >", Some("MFG-1"));
            t.step("Condition (e.g. 2-8C, LN2 dry shipper) >", Some(""));
            t.step("Comment (Enter for none) >", Some(""));
            t.step(
                "Second person (received): path to your key file >",
                Some(courier_key.to_str().unwrap()),
            );
            t.step("nurse.ada: type YES to sign (PERFORMED) >", Some("YES"));
            t.step("courier.bo: type YES to sign (RECEIVED) >", Some("YES"));
            t.step("ACCEPTED", None);
        }
        t.step("scan >", Some("QUIT"));
        t.p.exp_eof().expect("station exits on QUIT");
    })
    .await
    .unwrap();
}
