//! The interactive station driven through a real pseudo-terminal, as a keyboard-wedge scanner
//! and a person would: scan lines, an empty line, the event, the questions, YES, ACCEPTED.

mod common;
mod station_support;

use celltrail::pb::event_body::Detail;
use celltrail::pb::SignatureMeaning;
use common::*;
use station_support::*;

/// Issue 14 point 2 at a one-person station (`--key FILE`), through a real terminal: the first
/// signature of the session takes the key's name (identification) and its passphrase, typed
/// without echo; a later one the passphrase only (a wrong one is counted); after LOGOUT the
/// identification is asked again, and another name is not taken for this station's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_station_asks_key_name_and_passphrase_first_then_the_passphrase_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let mut c = server.client().await;
    let nurse = signer("nurse.ada");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let key = key_file(dir.path(), &nurse);
    let (bag, chain) = din(321);
    let (wrist, coi_ref) = coi("PAT321");
    // The test terminal does not echo input; this one does, as a ward terminal would, so
    // the passphrase not showing is the station's doing.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("stty echo && exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("scan")
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--queue")
        .arg(dir.path().join("station"))
        .arg("--key")
        .arg(&key)
        .arg("--site")
        .arg("HOSP-A")
        .env_remove("CELLTRAIL_PASSPHRASE_FILE")
        .env("CELLTRAIL_LOG", "warn");

    let transcript = tokio::task::spawn_blocking(move || {
        let mut t = Pty::spawn(cmd);
        t.step("LOGOUT ends the session", None);
        t.step("scan >", Some("gibberish"));
        t.step("NOT A CODE THIS STATION KNOWS", None);
        t.step("scan >", Some(&bag));
        t.step("BAG (DIN)", None);
        t.step("scan >", Some(&wrist));
        t.step("CHAIN OF IDENTITY", None);
        t.step("scan >", Some(""));
        t.step("event >", Some("enrolled"));
        t.step("Manufacturing site code >", Some("MFG-1"));
        t.step("Therapy (Enter to skip) >", Some(""));
        t.step("Comment (Enter for none) >", Some(""));
        // First signature: identification, then (after the summary) the passphrase.
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("nurse.cy"),
        );
        t.step("not the identification of this station's key", None);
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("nurse.ada"),
        );
        t.step("SUMMARY", None);
        t.step("WHEN       ", None);
        t.step(" UTC (", None);
        t.step(
            "SIGNER     nurse.ada (test) (nurse.ada; apheresis_nurse at HOSP-A) PERFORMED",
            None,
        );
        t.step(
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            Some(TEST_PASSPHRASE),
        );
        t.step("ACCEPTED", None);
        // Part 11 §11.50 under the result word: printed name, role, site, meaning, UTC and
        // local time.
        t.step(
            "SIGNED BY nurse.ada (test) (nurse.ada; apheresis_nurse at HOSP-A) PERFORMED (did \
             the step) ",
            None,
        );
        t.step(" UTC (", None);
        t.step(" local, UTC", None);
        // A later signature in the same session: the passphrase only, never YES. The chain
        // is known now, so the menu offers only what the policy allows next.
        t.step("scan >", Some(&bag));
        t.step("scan >", Some(""));
        t.step("is in state Enrolled. Allowed next here:", None);
        t.step("event >", Some("collected"));
        t.step("Volume in mL >", Some("100"));
        t.step("(Enter = now) >", Some(""));
        t.step("Comment (Enter for none) >", Some(""));
        t.step("signing as nurse.ada (signed in", None);
        t.step("SUMMARY", None);
        // A time field reads like the signatures: UTC and local.
        t.step("collection_end ", None);
        t.step(" UTC (", None);
        t.step(" local, UTC", None);
        // Ctrl-C at the hidden prompt asks before quitting; Enter goes on, and the
        // passphrase is asked again.
        t.step(
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            None,
        );
        t.p.send_control('c').unwrap();
        t.step("quit the station?", Some(""));
        t.step("going on", None);
        t.step(
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            Some("YES"),
        );
        t.step("wrong passphrase (1 of 5", None);
        t.step(
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            Some(TEST_PASSPHRASE),
        );
        t.step("ACCEPTED", None);
        // LOGOUT ends the session: the next signature asks who signs again.
        t.step("scan >", Some("LOGOUT"));
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
        transcript.contains("scan > gibberish"),
        "the terminal echoes what is typed:\n{transcript}"
    );
    assert!(
        !transcript.contains(TEST_PASSPHRASE),
        "the passphrase was echoed:\n{transcript}"
    );
    assert!(
        !transcript.contains("type YES to sign"),
        "a --key station never signs on YES:\n{transcript}"
    );
    for raw in ["unix_nanos", "SignatureMeaning", "Signature {", "Some("] {
        assert!(!transcript.contains(raw), "{raw} on screen:\n{transcript}");
    }
    // The menu for the enrolled chain: collection is offered, what cannot follow is not.
    let menu = transcript
        .split("Allowed next here:")
        .nth(1)
        .and_then(|rest| rest.split("event >").next())
        .expect("the menu of allowed events");
    assert!(menu.contains("collected"), "menu:\n{menu}");
    for not_now in ["infused", "dispensed", "bedside_check", "enrolled"] {
        assert!(!menu.contains(not_now), "{not_now} offered:\n{menu}");
    }
    // Before the chain existed the menu listed every kind.
    assert!(transcript.contains("Which event?"), "{transcript}");

    let events = chain_events(&mut c, &chain).await;
    assert_eq!(kinds(&events), ["enrolled", "collected"]);
    match &events[0].0.detail {
        Some(Detail::Enrolled(e)) => {
            assert_eq!(e.coi_ref, coi_ref);
            assert_eq!(e.manufacturing_site, "MFG-1");
            assert_eq!(e.therapy, "");
        }
        d => panic!("{d:?}"),
    }
    for (_, e) in &events {
        assert_eq!(e.signatures[0].key_id, "nurse.ada");
    }
}

/// An old plaintext key file still signs at a `--key` station for one release, but the station
/// says loudly, at start and at the signature, that this is not a Part 11 signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_key_station_says_loudly_it_is_not_a_part_11_signature() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let mut c = server.client().await;
    let nurse = signer("nurse.ada");
    register(&mut c, &server.admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let key = dir.path().join("old.key");
    celltrail::keys::write_key_file(&key, &nurse).unwrap();
    let (bag, chain) = din(323);
    let (wrist, _) = coi("PAT323");
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
    tokio::task::spawn_blocking(move || {
        let mut t = Pty::spawn(cmd);
        t.step("NOT PART 11", None);
        t.step("NOT a 21 CFR Part 11 electronic signature", None);
        t.step("celltrail key encrypt", None);
        t.step("scan >", Some(&bag));
        t.step("scan >", Some(&wrist));
        t.step("scan >", Some(""));
        t.step("event >", Some("enrolled"));
        t.step("Manufacturing site code >", Some("MFG-1"));
        t.step("Therapy (Enter to skip) >", Some(""));
        t.step("Comment (Enter for none) >", Some(""));
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("nurse.ada"),
        );
        t.step("SUMMARY", None);
        t.step("NOT PART 11", None);
        t.step(
            "nurse.ada: type YES to sign with this UNENCRYPTED key (PERFORMED; NOT a Part 11 \
             signature) >",
            Some("YES"),
        );
        t.step("ACCEPTED", None);
        t.step("scan >", Some("QUIT"));
        t.p.exp_eof().expect("station exits on QUIT");
    })
    .await
    .unwrap();
    assert_eq!(kinds(&chain_events(&mut c, &chain).await), ["enrolled"]);
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
        // An interactive station never takes a passphrase from the automation variable.
        step(
            &mut p,
            "CELLTRAIL_PASSPHRASE_FILE is not read by an interactive station",
            None,
        );
        // CANCEL at the event prompt, at a question, at the comment, at the signer's
        // identification and at the passphrase.
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
        step(
            &mut p,
            "Sign: scan your badge or type your key name >",
            Some("CANCEL"),
        );
        step(&mut p, "nothing was signed", None);
        start(&mut step, &mut p);
        step(&mut p, "Manufacturing site code >", Some("MFG-1"));
        step(&mut p, "Therapy (Enter to skip) >", Some(""));
        step(&mut p, "Comment (Enter for none) >", Some(""));
        step(
            &mut p,
            "Sign: scan your badge or type your key name >",
            Some("nurse.ada"),
        );
        step(
            &mut p,
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            Some("CANCEL"),
        );
        step(&mut p, "nothing was signed", None);
        // Esc (and Enter) at a question abandons the form, as CANCEL does.
        start(&mut step, &mut p);
        step(&mut p, "Manufacturing site code >", Some("\u{1b}"));
        step(&mut p, "nothing was signed", None);
        // Esc (and Enter) at the hidden passphrase prompt abandons the form too.
        start(&mut step, &mut p);
        step(&mut p, "Manufacturing site code >", Some("MFG-1"));
        step(&mut p, "Therapy (Enter to skip) >", Some(""));
        step(&mut p, "Comment (Enter for none) >", Some(""));
        step(
            &mut p,
            "Sign: scan your badge or type your key name >",
            Some("nurse.ada"),
        );
        step(
            &mut p,
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            Some("\u{1b}"),
        );
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
/// What a nurse types at the badge prompt by mistake.
const EARLY_PASSPHRASE: &str = "typed at the badge prompt";

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
    // A second key of nurse.ada (same printed name), as after a key rotation.
    let ada2 = signer("nurse.ada2");
    let mut c = b.server.client().await;
    let again = celltrail::pb::event_body::Detail::KeyRegistered(celltrail::pb::KeyRegistered {
        key_id: ada2.name.clone(),
        public_key: ada2.key.verifying_key().as_bytes().to_vec(),
        printed_name: "nurse.ada (test)".into(),
        role: "apheresis_nurse".into(),
        site: "HOSP-A".into(),
        valid_from_unix_nanos: base_time() - 365 * 86_400 * 1_000_000_000,
        valid_until_unix_nanos: 0,
    });
    admin_event(&mut c, &b.server.admin, again).await.unwrap();
    key_file(&b.keys, &ada2);
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
        // A passphrase typed too early, at the badge prompt, is not repeated on the screen.
        t.step(
            "Sign: scan your badge or type your key name >",
            Some(EARLY_PASSPHRASE),
        );
        t.step("your passphrase is asked after the SUMMARY", None);
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
        t.step(
            "nurse.ada already signs this event: the second person must be someone else",
            None,
        );
        // Another key of the same person is not a second person either.
        t.step(
            "Second person (RECEIVED): scan your badge or type your key name >",
            Some("nurse.ada2"),
        );
        t.step(
            "nurse.ada2 is a key of nurse.ada (test), the same person as the first signer",
            None,
        );
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
    // (The test terminal does not echo input, so any copy is the station's.)
    assert!(
        !seen.contains(EARLY_PASSPHRASE),
        "what was typed at the badge prompt was repeated:\n{seen}"
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
/// after N (logged, and still locked on the next try, which says so when they identify, so
/// another person signs the same form); the session ends after the inactivity timeout and the
/// badge is asked again.
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
        // Told at once, and the form is kept: another nurse signs it.
        t.step("nurse.ada is locked out on this station until", None);
        t.step("another person may sign", None);
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

/// Issue 14 point 2 with `--key`: a second person identifies at the prompt (the path to their
/// key file, or their badge) for that event only, must be someone else, and types their own
/// passphrase (the automation variables are not read by an interactive station); the next
/// two-person step asks for a second person and their passphrase again.
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
    let seen = tokio::task::spawn_blocking(move || {
        let mut t = Pty::spawn(cmd);
        t.step(
            "CELLTRAIL_PASSPHRASE_FILE is not read by an interactive station",
            None,
        );
        t.step(
            "CELLTRAIL_COSIGN_PASSPHRASE_FILE is not read by an interactive station",
            None,
        );
        for (i, bag) in [&bag1, &bag2].into_iter().enumerate() {
            t.step("scan >", Some(bag));
            t.step("scan >", Some(""));
            t.step("event >", Some("shipped"));
            t.step("Destination site code >", Some("MFG-1"));
            t.step("Condition (e.g. 2-8C, LN2 dry shipper) >", Some(""));
            t.step("Comment (Enter for none) >", Some(""));
            if i == 0 {
                t.step(
                    "Sign: scan your badge or type your key name >",
                    Some("nurse.ada"),
                );
            } else {
                t.step("signing as nurse.ada (signed in", None);
            }
            // The second person is asked for at every two-person event, is someone else, and
            // types their own passphrase each time.
            t.step(
                "Second person (RECEIVED): scan your badge or type your key name >",
                Some("nurse.ada"),
            );
            t.step("the second person must be someone else", None);
            let who = match i {
                0 => courier_key.to_str().unwrap().to_string(),
                _ => "B-BO".to_string(),
            };
            t.step(
                "Second person (RECEIVED): scan your badge or type your key name >",
                Some(&who),
            );
            t.step("SUMMARY", None);
            t.step(
                "nurse.ada: type your passphrase to sign (PERFORMED) >",
                Some(TEST_PASSPHRASE),
            );
            t.step(
                "courier.bo: type your passphrase to sign (RECEIVED) >",
                Some(COURIER_PASSPHRASE),
            );
            t.step("ACCEPTED", None);
        }
        t.step("scan >", Some("QUIT"));
        t.p.exp_eof().expect("station exits on QUIT");
        t.seen
    })
    .await
    .unwrap();
    assert!(!seen.contains(COURIER_PASSPHRASE), "{seen}");
    let mut c = b.server.client().await;
    let events = chain_events(&mut c, &b.chain).await;
    let last = &events.last().unwrap().1.signatures;
    assert_eq!(last[1].key_id, "courier.bo");
}

/// `celltrail station …` against a stopped station's directory, with `env` set.
fn station_cmd(args: &[&str], env: &[(&str, &std::path::Path)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("station")
        .args(args)
        .env_remove("CELLTRAIL_QUEUE")
        .env_remove("CELLTRAIL_PASSPHRASE_FILE")
        .env("CELLTRAIL_LOG", "warn")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run celltrail station")
}

/// Issue 14 point 2, the way out of a lockout: with `--lockout-minutes 0` a locked-out signer
/// stays locked until QA unlocks them. `celltrail station lockouts` lists them; `unlock` is
/// refused to the person themselves, to a signer who is not QA, with an empty reason, and with
/// a wrong passphrase (still locked); a QA signer with their passphrase unlocks, the log says
/// who, when and why, and the person signs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qa_unlocks_a_locked_out_signer_and_the_unlock_is_logged_with_who() {
    let b = badged(342, true).await;
    let qa = signer("qa.quinn");
    let mut c = b.server.client().await;
    register(&mut c, &b.server.admin, &qa, "qa", "HOSP-A").await;
    let qa_key = key_file(b.dir.path(), &qa);
    let station_dir = b.dir.path().join("station");
    let cmd = badge_station(
        &b,
        &["--max-passphrase-attempts", "1", "--lockout-minutes", "0"],
    );
    let bag = b.bag.clone();
    let collect = move |t: &mut Pty| {
        t.step("scan >", Some(&bag));
        t.step("scan >", Some(""));
        t.step("event >", Some("collected"));
        t.step("Volume in mL >", Some("100"));
        t.step("(Enter = now) >", Some(""));
        t.step("Comment (Enter for none) >", Some(""));
        t.step(
            "Sign: scan your badge or type your key name >",
            Some("B-ADA"),
        );
    };
    let again = collect.clone();
    tokio::task::spawn_blocking(move || {
        let mut t = Pty::spawn(cmd);
        collect(&mut t);
        t.step(
            "passphrase to sign (PERFORMED) >",
            Some("not the right passphrase"),
        );
        t.step("locked out on this station until unlocked by QA", None);
        t.step("scan >", Some("QUIT"));
        t.p.exp_eof().expect("station exits on QUIT");
    })
    .await
    .unwrap();

    let q = station_dir.to_str().unwrap();
    let listed = station_cmd(&["lockouts", "--queue", q], &[]);
    let out = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.status.success(), "{listed:?}");
    assert!(
        out.contains("LOCKED OUT  nurse.ada  until QA unlocks them"),
        "{out}"
    );
    assert!(out.contains("LOCKOUT nurse.ada at site HOSP-A"), "{out}");
    assert!(out.contains(" UTC ("), "each log line says when:\n{out}");

    let ada_key = b.keys.join("nurse.ada.key");
    let cy_key = b.keys.join("nurse.cy.key");
    let refused = |o: std::process::Output, msg: &str| {
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(1), "{msg}: {o:?}");
        assert!(err.contains(msg), "stderr should say {msg:?}:\n{err}");
    };
    let why = ["--reason", "identity confirmed in person"];
    let unlock = |key: &std::path::Path, reason: &[&str], pass: &std::path::Path| {
        let mut args = vec!["unlock", "nurse.ada", "--queue", q, "--key"];
        args.push(key.to_str().unwrap());
        args.extend_from_slice(reason);
        station_cmd(&args, &[("CELLTRAIL_PASSPHRASE_FILE", pass)])
    };
    refused(
        unlock(&ada_key, &why, &pass_path(&ada_key)),
        "nurse.ada cannot unlock themselves",
    );
    refused(
        unlock(&cy_key, &why, &pass_path(&cy_key)),
        "only a qa signer may unlock",
    );
    refused(
        unlock(&qa_key, &["--reason", "  "], &pass_path(&qa_key)),
        "--reason is empty",
    );
    let wrong = b.dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not quinn's passphrase\n").unwrap();
    refused(unlock(&qa_key, &why, &wrong), "wrong passphrase");
    let still = station_cmd(&["lockouts", "--queue", q], &[]);
    assert!(
        String::from_utf8_lossy(&still.stdout).contains("LOCKED OUT  nurse.ada"),
        "a refused unlock changes nothing: {still:?}"
    );

    let done = unlock(&qa_key, &why, &pass_path(&qa_key));
    let out = String::from_utf8_lossy(&done.stdout).to_string();
    assert!(done.status.success(), "{done:?}");
    assert!(
        out.contains("UNLOCK nurse.ada by qa.quinn (")
            && out.contains("qa at HOSP-A")
            && out.ends_with(": identity confirmed in person\n"),
        "{out}"
    );
    assert!(!out.contains(TEST_PASSPHRASE), "{out}");
    let listed = station_cmd(&["lockouts", "--queue", q], &[]);
    let out = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        out.contains("nobody is locked out on this station"),
        "{out}"
    );
    assert!(out.contains("sign-in log (2 lines)"), "{out}");
    assert!(out.contains("UNLOCK nurse.ada by qa.quinn"), "{out}");
    refused(
        unlock(&qa_key, &why, &pass_path(&qa_key)),
        "nurse.ada is not locked out on this station",
    );
    // The station is open to nurse.ada again (whom the old counter no longer blocks).
    let cmd = badge_station(
        &b,
        &["--max-passphrase-attempts", "1", "--lockout-minutes", "0"],
    );
    tokio::task::spawn_blocking(move || {
        let mut t = Pty::spawn(cmd);
        again(&mut t);
        t.step(
            "nurse.ada: type your passphrase to sign (PERFORMED) >",
            Some(TEST_PASSPHRASE),
        );
        t.step("ACCEPTED", None);
        t.step("scan >", Some("QUIT"));
        t.p.exp_eof().expect("station exits on QUIT");
    })
    .await
    .unwrap();
    let events = chain_events(&mut c, &b.chain).await;
    assert_eq!(kinds(&events), ["enrolled", "collected", "collected"]);
}

/// A station left at `scan >` while the server was away and came back: the next scan sends
/// the queue before anything is asked, so the queued event is recorded and the new event is
/// chained online, not queued behind it while the server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_waiting_at_scan_sends_its_queue_when_the_server_is_back() {
    let mut site = site_with_nurse().await;
    let addr = site.server.addr;
    let queue = site.dir.path().join("station");
    let nurse = site.nurse.to_str().unwrap().to_string();
    let (bag, chain) = din(440);
    let (wrist, _) = coi("PAT440");
    expect(
        &scan_enrolment(addr, &queue, &nurse, &bag, &wrist).await,
        0,
        "ACCEPTED",
    );
    let data_dir = site.server.data_dir.clone();
    site.server.stop().await;
    let queued = scan(
        addr,
        &queue,
        &[
            "--key",
            &nurse,
            "--site",
            "HOSP-A",
            "--event",
            "collected",
            "--scan",
            &bag,
            "--scan",
            PRODUCT,
            "--set",
            "volume_ml=250",
            "--set",
            &collection_end_now(),
            "--yes",
        ],
    )
    .await;
    expect(&queued, 3, "QUEUED (1 waiting)");

    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("scan")
        .arg("--server")
        .arg(addr.to_string())
        .arg("--queue")
        .arg(&queue)
        .arg("--key")
        .arg(&site.nurse)
        .arg("--site")
        .arg("HOSP-A")
        .env_remove("CELLTRAIL_PASSPHRASE_FILE")
        .env("CELLTRAIL_LOG", "warn");
    let mut p = tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
        p.exp_string("OFFLINE").expect("starts offline");
        p.exp_string("scan >").expect("scan prompt");
        p
    })
    .await
    .unwrap();
    site.server = TestServer::start_on(celltrail::server::ServeOptions::new(&data_dir), addr).await;
    let seen = tokio::task::spawn_blocking(move || {
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
        p.send_line(&bag).unwrap();
        step(&mut p, "scan >", Some(""));
        step(&mut p, "event >", Some("CANCEL"));
        step(&mut p, "scan >", Some("QUIT"));
        p.exp_eof().expect("station exits on QUIT");
        seen
    })
    .await
    .unwrap();
    let sent = seen
        .find("SENT")
        .unwrap_or_else(|| panic!("queue not sent:\n{seen}"));
    assert!(
        seen.contains("Server is back: sending the queue.") && sent < seen.find("event >").unwrap(),
        "the queue goes before the event is chosen:\n{seen}"
    );
    let mut c = site.server.client().await;
    assert_eq!(
        kinds(&chain_events(&mut c, &chain).await),
        ["enrolled", "collected"]
    );
}
