//! A scanning station configured by one file: `[client]` names the server, `[station]` the
//! site, the queue directory and the operator's key; `scan`, `queue` and `chain` run with no
//! other flag, from a directory other than the file's (paths are relative to the file).

mod common;
mod station_support;

use station_support::*;
use std::process::Output;

/// Runs the real binary without blocking the test's runtime (the server runs on it).
async fn run(cwd: &std::path::Path, args: &[&str], pass: &std::path::Path) -> Output {
    let mut c = tokio::process::Command::new(BIN);
    c.current_dir(cwd)
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("CELLTRAIL_") {
            c.env_remove(k);
        }
    }
    c.env("CELLTRAIL_PASSPHRASE_FILE", pass)
        .env("CELLTRAIL_LOG", "warn")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_scanning_station_is_configured_by_one_file() {
    let site = site_with_nurse().await;
    let root = site.dir.path();
    let conf = root.join("station.toml");
    std::fs::write(
        &conf,
        format!(
            "[client]\nserver = \"{}\"\n\n[station]\nsite = \"HOSP-A\"\nqueue = \"station-queue\"\nkey = \"{}\"\n",
            site.server.addr,
            site.nurse.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    let cfg = conf.to_str().unwrap();
    let pass = pass_path(&site.nurse);
    let elsewhere = tempfile::tempdir().unwrap();
    let (bag, din13) = din(1);
    let (wrist, _) = coi("PAT100");
    let o = run(
        elsewhere.path(),
        &[
            "--config",
            cfg,
            "scan",
            "--yes",
            "--event",
            "enrolled",
            "--scan",
            &bag,
            "--scan",
            &wrist,
            "--set",
            "manufacturing_site=MFG-1",
        ],
        &pass,
    )
    .await;
    expect(&o, 0, "ACCEPTED");
    assert!(
        root.join("station-queue").is_dir(),
        "the queue is where the file says, relative to the file"
    );
    assert!(!elsewhere.path().join("celltrail-station").exists());
    let mut c = site.server.client().await;
    assert_eq!(kinds(&chain_events(&mut c, &din13).await), ["enrolled"]);
    let ev = chain_events(&mut c, &din13).await;
    assert_eq!(ev[0].0.site, "HOSP-A");

    // `queue list` reads the same queue; `chain` the same server.
    let o = run(elsewhere.path(), &["--config", cfg, "queue", "list"], &pass).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(elsewhere.path(), &["--config", cfg, "chain", &din13], &pass).await;
    assert!(
        stdout(&o).contains("1 events") || stdout(&o).contains("enrolled"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    // Flags beat the file: another site is refused by the policy for this nurse's key.
    let (bag2, _) = din(2);
    let o = run(
        elsewhere.path(),
        &[
            "--config",
            cfg,
            "scan",
            "--yes",
            "--site",
            "CLINIC-9",
            "--event",
            "enrolled",
            "--scan",
            &bag2,
            "--scan",
            &wrist,
            "--set",
            "manufacturing_site=MFG-1",
        ],
        &pass,
    )
    .await;
    expect(&o, 1, "REJECTED");
    // A typo in the station section is an error naming the key, not ignored.
    std::fs::write(&conf, "[station]\nsiet = \"HOSP-A\"\n").unwrap();
    let o = run(elsewhere.path(), &["--config", cfg, "queue", "list"], &pass).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("siet"), "{}", stderr(&o));
}
