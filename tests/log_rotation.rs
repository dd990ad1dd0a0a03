//! The ledger writer's rules for a log key rotation (`loglink`, docs/log-rotation.md), over
//! gRPC against the real server: a server whose key did not sign the stored checkpoint appends
//! nothing until the link; only an admin-signed link that retires the stored checkpoint's key,
//! names this server's key and commits to a checkpoint of this log's own history is accepted,
//! and only once; then the chains go on where they were. (The whole operator procedure with
//! witnesses, `log retire|final|rotate` and `verify` is in `tests/witnessed_log.rs`.)

mod common;
mod realproc;

use celltrail::client::{self, Client, Draft};
use celltrail::note::{sign_note, Checkpoint, NoteSigner};
use celltrail::pb::{event_body::Detail, GetCheckpointRequest, LogLink, SignatureMeaning};
use common::TestServer;
use realproc::Appender;
use std::path::Path;
use std::time::{Duration, Instant};

fn write_log_key(dir: &Path, key: &NoteSigner) {
    let _ = std::fs::remove_file(dir.join("log.key"));
    celltrail::keys::write_key_file(&dir.join("log.key"), key).unwrap();
    std::fs::write(
        dir.join("log.vkey"),
        format!("{}\n", key.verifier().to_key_string()),
    )
    .unwrap();
}

async fn checkpoint(c: &mut Client) -> (String, Checkpoint) {
    let r = c
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let text = celltrail::log::note_text(&r.checkpoint).unwrap();
    (r.checkpoint.clone(), Checkpoint::parse(text).unwrap())
}

async fn append_link(
    c: &mut Client,
    signer: &NoteSigner,
    link: LogLink,
) -> Result<celltrail::pb::Receipt, tonic::Status> {
    let (seq, prev) = client::next_link(c, "log").await?;
    let ev = client::sign_draft(
        Draft {
            chain_id: "log".into(),
            seq,
            prev_hash: prev,
            occurred_at: celltrail::time::now_nanos(),
            site: String::new(),
            comment: String::new(),
            detail: Detail::LogLink(link),
        },
        &[(signer, SignatureMeaning::Performed)],
        celltrail::time::now_nanos(),
    );
    c.append(ev).await.map(|r| r.into_inner())
}

/// One more custody event on BAG-ROT, signed by the nurse.
async fn one_event(c: &mut Client, nurse: &NoteSigner) -> Result<(), tonic::Status> {
    let (seq, prev) = client::next_link(c, "BAG-ROT").await?;
    let now = celltrail::time::now_nanos();
    let ev = client::sign_draft(
        Draft {
            chain_id: "BAG-ROT".into(),
            seq,
            prev_hash: prev,
            occurred_at: now,
            site: "HOSP-A".into(),
            comment: String::new(),
            detail: Detail::Collected(celltrail::pb::Collected {
                din: common::din_for("BAG-ROT"),
                product_code: "S1234000".into(),
                volume_ml: Some(250),
                collection_end_unix_nanos: Some(now),
            }),
        },
        &[(nurse, SignatureMeaning::Performed)],
        now,
    );
    c.append(ev).await.map(|_| ())
}

#[tokio::test]
async fn a_new_log_key_appends_only_after_its_link_to_the_retired_keys_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let old = NoteSigner::generate("rot.example/log-2026").unwrap();
    let new = NoteSigner::generate("rot.example/log-2036").unwrap();
    write_log_key(dir.path(), &old);

    // The old key's log: a nurse and a chain.
    let s = TestServer::start(dir.path()).await;
    let admin = s.admin.clone();
    let mut c = s.client().await;
    let nurse = NoteSigner::generate("nurse.rot").unwrap();
    common::register(&mut c, &admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let mut bag = Appender::new("BAG-ROT".into(), nurse.clone());
    let before = bag
        .run(&mut c, Instant::now() + Duration::from_millis(200))
        .await;
    assert!(before >= 2);
    let (final_note, final_cp) = checkpoint(&mut c).await;
    assert_eq!(final_cp.origin, old.name);
    s.stop().await;

    // The same store under the new key.
    write_log_key(dir.path(), &new);
    let s = TestServer::start(dir.path()).await;
    let mut c = s.client().await;
    let good = LogLink {
        previous_log_key: old.verifier().to_key_string(),
        final_checkpoint: final_note.clone(),
        log_key: new.verifier().to_key_string(),
        reason: "scheduled".into(),
    };

    // Nothing but the link: stations get UNAVAILABLE and keep their events.
    let err = one_event(&mut c, &nurse)
        .await
        .expect_err("appended under an unlinked key");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains("must be the link to the retired key's final checkpoint"),
        "{err:?}"
    );

    // A link signed by a non-admin key.
    let err = append_link(&mut c, &nurse, good.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // A link to a checkpoint of another history (signed by the old key, other root).
    let forged = Checkpoint {
        root: [9; 32],
        ..final_cp.clone()
    };
    let err = append_link(
        &mut c,
        &admin,
        LogLink {
            final_checkpoint: sign_note(&forged.to_text(), &[&old]).unwrap(),
            ..good.clone()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("not a checkpoint of this log's history"),
        "{err:?}"
    );

    // A link that introduces another key than the server's.
    let other = NoteSigner::generate("rot.example/log-other").unwrap();
    let err = append_link(
        &mut c,
        &admin,
        LogLink {
            log_key: other.verifier().to_key_string(),
            ..good.clone()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("introduces log key"), "{err:?}");

    // A link whose final checkpoint is not signed by the key it retires.
    let err = append_link(
        &mut c,
        &admin,
        LogLink {
            final_checkpoint: sign_note(&final_cp.to_text(), &[&other]).unwrap(),
            ..good.clone()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // The right link: the first entry under the new key.
    let r = append_link(&mut c, &admin, good.clone()).await.unwrap();
    assert_eq!(r.index, final_cp.size);
    let (_, cp) = checkpoint(&mut c).await;
    assert_eq!(cp.origin, new.name);

    // Only once: the log's checkpoints are now the new key's.
    let err = append_link(&mut c, &admin, good).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("already signed by its key"),
        "{err:?}"
    );

    // The chain goes on across the rotation.
    let after = bag
        .run(&mut c, Instant::now() + Duration::from_millis(200))
        .await;
    assert!(after >= 1);
    let head = client::next_link(&mut c, "BAG-ROT").await.unwrap().0;
    assert_eq!(head as usize, before + after);
    s.stop().await;
}
