//! The README's quick start, run with the real binary: `serve` with zero configuration creates
//! its data directory and first admin key, then keygen → key register → event → chain.

mod common;
mod realproc;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

/// Starts `celltrail serve` in `cwd` with no flags but a free port; returns it, its address
/// and what it printed up to "serving on".
fn serve(cwd: &Path) -> (realproc::Proc, String, Vec<String>) {
    let p = realproc::Serve::new().cwd(cwd).start();
    let (addr, lines) = (p.addr.clone(), p.stdout_lines());
    (p, addr, lines)
}

/// Runs the binary in `cwd`; key passphrases come from `cwd/passphrase`, as an automated user
/// would provide them (never on the command line).
fn run(cwd: &Path, args: &[&str]) -> Output {
    realproc::command(cwd)
        .args(args)
        .env("CELLTRAIL_COSIGN_PASSPHRASE_FILE", cwd.join("passphrase"))
        .output()
        .unwrap()
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = run(cwd, args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn quick_start_from_zero_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (_server, addr, banner) = serve(cwd);
    let data = cwd.join("celltrail-data");
    for f in [
        "admin.key",
        "log.key",
        "log.vkey",
        "trust-anchors.txt",
        "db",
    ] {
        assert!(data.join(f).exists(), "{f} not created");
    }
    for f in ["admin.key", "log.key"] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f} must be private");
    }
    let banner = banner.join("\n");
    assert!(
        banner.contains("admin.key") && banner.contains("admin+"),
        "prints the admin key: {banner}"
    );

    let v_nurse = ok(
        cwd,
        &["keygen", "--name", "nurse.ada", "--out", "nurse.key"],
    );
    let v_courier = ok(
        cwd,
        &["keygen", "--name", "courier.bo", "--out", "courier.key"],
    );
    assert!(v_nurse.starts_with("nurse.ada+"));
    let s = ["--server", addr.as_str()];
    let reg = |vkey: &str, role: &str, site: &str| {
        let mut a = vec!["key", "register"];
        a.extend(s);
        a.extend([
            "--admin-key",
            "celltrail-data/admin.key",
            "--vkey",
            vkey.trim(),
            "--role",
            role,
            "--site",
            site,
            "--printed-name",
            "Test Person",
        ]);
        ok(cwd, &a)
    };
    reg(&v_nurse, "apheresis_nurse", "HOSP-A");
    reg(&v_courier, "courier", "COURIER-1");
    let event = |extra: &[&str]| {
        let mut a = vec!["event"];
        a.extend(s);
        a.extend(extra);
        run(cwd, &a)
    };
    let ended = format!(
        "collection_end={}",
        celltrail::time::rfc3339(celltrail::time::now_nanos() / 1_000_000_000 * 1_000_000_000)
    );
    for args in [
        &[
            "--key",
            "nurse.key",
            "--chain",
            "BAG-0001",
            "--kind",
            "enrolled",
            "--site",
            "HOSP-A",
            "--set",
            "coi_ref=COI-7F3A-2291",
            "--set",
            "manufacturing_site=MFG-1",
        ][..],
        &[
            "--key",
            "nurse.key",
            "--chain",
            "BAG-0001",
            "--kind",
            "collected",
            "--site",
            "HOSP-A",
            "--set",
            "din=A999926123456",
            "--set",
            "volume_ml=250",
            "--set",
            &ended,
        ],
        &[
            "--key",
            "nurse.key",
            "--chain",
            "BAG-0001",
            "--kind",
            "packed",
            "--site",
            "HOSP-A",
            "--set",
            "shipper_id=SHIP-1",
        ],
        &[
            "--key",
            "nurse.key",
            "--cosign",
            "courier.key:received",
            "--chain",
            "BAG-0001",
            "--kind",
            "shipped",
            "--site",
            "HOSP-A",
            "--set",
            "from_site=HOSP-A",
            "--set",
            "to_site=MFG-1",
            "--set",
            "shipper_id=SHIP-1",
        ],
    ] {
        let o = event(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A refused event exits non-zero with the server's reason.
    let now =
        celltrail::time::rfc3339(celltrail::time::now_nanos() / 1_000_000_000 * 1_000_000_000);
    let (started, ended_at) = (format!("started_at={now}"), format!("ended_at={now}"));
    let o = event(&[
        "--key",
        "nurse.key",
        "--chain",
        "BAG-0001",
        "--kind",
        "infused",
        "--site",
        "HOSP-A",
        "--set",
        "product_bag_id=X",
        "--set",
        &started,
        "--set",
        &ended_at,
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("FailedPrecondition") && err.contains("InTransitToManufacturing"),
        "{err}"
    );
    // A typo in a field name is caught before anything is signed.
    let o = event(&[
        "--key",
        "nurse.key",
        "--chain",
        "BAG-0001",
        "--kind",
        "received",
        "--site",
        "MFG-1",
        "--set",
        "temp_mx_c=4",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no field \"temp_mx_c\""));
    // Presence, not defaults (issue 13 point 1): a receipt given no readings is refused naming
    // every missing one (never signed as seal broken at 0.0 °C); nothing is recorded (the
    // chain below still has 4 events).
    let o = event(&[
        "--key",
        "nurse.key",
        "--chain",
        "BAG-0001",
        "--kind",
        "received",
        "--site",
        "MFG-1",
        "--set",
        "from_site=HOSP-A",
        "--set",
        "shipper_id=SHIP-1",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for field in ["seal_intact", "temp_min_c", "temp_max_c", "elapsed_seconds"] {
        assert!(err.contains(field), "{field} not named: {err}");
    }
    assert!(!String::from_utf8_lossy(&o.stdout).contains("recorded"));

    let table = ok(cwd, &["chain", "--server", &addr, "BAG-0001"]);
    assert!(
        table.contains("4 events, state InTransitToManufacturing"),
        "{table}"
    );
    let rows: Vec<&str> = table
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with(' '))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[3].contains("shipped"), "{table}");
    // Part 11 §11.50: each signature shows printed name, role, site, meaning, UTC and local time.
    let shipped_sigs: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.contains("shipped"))
        .skip(1)
        .collect();
    assert!(
        shipped_sigs.iter().any(|l| l.contains(
            "signed by Test Person (courier.bo; courier at COURIER-1) RECEIVED (took custody) 20"
        ) && l.contains(" UTC (")
            && l.contains(" local, UTC")),
        "{table}"
    );
    // Local time follows the reader's time zone (POSIX TZ "XYZ-2" is UTC+2).
    let o = realproc::command(cwd)
        .args(["chain", "--server", &addr, "BAG-0001"])
        .env("TZ", "XYZ-2")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains(" local, UTC+02:00)"), "{table}");
    assert!(!table.contains("_unix_nanos"), "{table}");

    // A reading that was not possible, declared with its reason: recorded, and the hold it
    // opens is printed by `event` and shown by `chain` (issue 13 points 1 and 7).
    let v_mfg = ok(cwd, &["keygen", "--name", "mfg.cy", "--out", "mfg.key"]);
    reg(&v_mfg, "manufacturing", "MFG-1");
    let o = event(&[
        "--key",
        "mfg.key",
        "--chain",
        "BAG-0001",
        "--kind",
        "received",
        "--site",
        "MFG-1",
        "--set",
        "from_site=HOSP-A",
        "--set",
        "shipper_id=SHIP-1",
        "--set",
        "seal_intact=true",
        "--set",
        "elapsed_seconds=600",
        "--set",
        "not_measured.temp_min_c=logger battery dead on arrival",
        "--set",
        "not_measured.temp_max_c=logger battery dead on arrival",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("recorded") && out.contains("HOLD OPENED: not_measured"),
        "{out}"
    );
    assert!(out.contains("logger battery dead on arrival"), "{out}");
    let table = ok(cwd, &["chain", "--server", &addr, "BAG-0001"]);
    assert!(table.contains("5 events, state AtManufacturing"), "{table}");
    assert!(table.contains("OPEN HOLD: not_measured"), "{table}");
}

#[test]
fn keygen_refuses_to_overwrite_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &["keygen", "--name", "qa.one", "--out", "qa.key"],
    );
    let o = run(
        dir.path(),
        &["keygen", "--name", "qa.one", "--out", "qa.key"],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("qa.key"));
}
