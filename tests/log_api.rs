//! The transparency-log RPCs end to end: checkpoints, inclusion and consistency proofs served
//! by the real server, verified with the pure `merkle` and `note` code, and every bad request
//! answered with its precise status.

mod common;
mod lifecycle;

use base64::Engine as _;
use celltrail::merkle;
use celltrail::note::{open_note, Checkpoint, NoteVerifier};
use celltrail::pb::{
    get_inclusion_proof_request::Leaf, GetCheckpointRequest, GetConsistencyProofRequest,
    GetInclusionProofRequest, Receipt,
};
use common::*;
use lifecycle::{happy_path, ChainCursor, Keys};
use tonic::Code;

fn log_key(server: &TestServer) -> NoteVerifier {
    let text = std::fs::read_to_string(server.data_dir.join("log.vkey")).unwrap();
    NoteVerifier::from_key_string(text.trim()).unwrap()
}

fn open_cp(note: &str, key: &NoteVerifier) -> Checkpoint {
    let n = open_note(note, std::slice::from_ref(key)).expect("checkpoint verifies");
    Checkpoint::parse(&n.text).unwrap()
}

/// A server with 8 key events and 12 events of a bag: the receipts of the bag's events.
async fn populated() -> (
    tempfile::TempDir,
    TestServer,
    celltrail::client::Client,
    Vec<Receipt>,
) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let keys = Keys::new();
    keys.register(&mut c, &server.admin).await;
    let mut cur = ChainCursor::new("BAG-1", base_time());
    let steps: Vec<_> = happy_path(&keys).into_iter().take(12).collect();
    let receipts = cur.append(&mut c, steps).await;
    (dir, server, c, receipts)
}

#[tokio::test]
async fn checkpoint_is_signed_by_the_log_key_and_matches_the_last_receipt() {
    let (_d, server, mut c, receipts) = populated().await;
    let cp = c
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let last = receipts.last().unwrap();
    assert_eq!(cp.tree_size, 20);
    assert_eq!(cp.tree_size, last.tree_size);
    assert_eq!(cp.checkpoint, last.checkpoint);
    let parsed = open_cp(&cp.checkpoint, &log_key(&server));
    assert_eq!(parsed.size, 20);
    assert_eq!(parsed.root.to_vec(), cp.root_hash);
    assert_eq!(parsed.origin, log_key(&server).name);
}

#[tokio::test]
async fn inclusion_proofs_verify_for_every_entry_at_every_receipt_size() {
    let (_d, server, mut c, receipts) = populated().await;
    let key = log_key(&server);
    for r in &receipts {
        let cp = open_cp(&r.checkpoint, &key);
        for index in 0..cp.size {
            let p = c
                .get_inclusion_proof(GetInclusionProofRequest {
                    leaf: Some(Leaf::Index(index)),
                    tree_size: cp.size,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!((p.index, p.tree_size), (index, cp.size));
            assert_eq!(p.root_hash, cp.root.to_vec(), "root at size {}", cp.size);
            assert_eq!(p.leaf_hash, merkle::leaf_hash(&p.entry).to_vec());
            merkle::verify_inclusion_bytes(&p.leaf_hash, index, cp.size, &p.hashes, &cp.root)
                .unwrap_or_else(|e| panic!("index {index} size {}: {e}", cp.size));
            // A proof for another index must not verify.
            if cp.size > 1 {
                let other = (index + 1) % cp.size;
                assert!(merkle::verify_inclusion_bytes(
                    &p.leaf_hash,
                    other,
                    cp.size,
                    &p.hashes,
                    &cp.root
                )
                .is_err());
            }
        }
    }
}

#[tokio::test]
async fn inclusion_proof_by_event_hash_defaults_to_current_size_with_checkpoint() {
    let (_d, server, mut c, receipts) = populated().await;
    let r = &receipts[3];
    let p = c
        .get_inclusion_proof(GetInclusionProofRequest {
            leaf: Some(Leaf::EventHash(r.event_hash.clone())),
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.index, r.index);
    assert_eq!(p.tree_size, 20);
    let cp = open_cp(&p.checkpoint, &log_key(&server));
    merkle::verify_inclusion_bytes(&p.leaf_hash, p.index, cp.size, &p.hashes, &cp.root).unwrap();
}

#[tokio::test]
async fn consistency_proofs_verify_between_every_pair_of_checkpoints() {
    let (_d, server, mut c, receipts) = populated().await;
    let key = log_key(&server);
    let cps: Vec<Checkpoint> = receipts
        .iter()
        .map(|r| open_cp(&r.checkpoint, &key))
        .collect();
    for old in &cps {
        for new in cps.iter().filter(|n| n.size >= old.size) {
            let p = c
                .get_consistency_proof(GetConsistencyProofRequest {
                    old_size: old.size,
                    new_size: new.size,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                (p.old_root.clone(), p.new_root.clone()),
                (old.root.to_vec(), new.root.to_vec())
            );
            merkle::verify_consistency_bytes(old.size, new.size, &old.root, &new.root, &p.hashes)
                .unwrap_or_else(|e| panic!("{} -> {}: {e}", old.size, new.size));
            if old.size < new.size {
                let mut bad = p.hashes.clone();
                bad[0][0] ^= 1;
                assert!(merkle::verify_consistency_bytes(
                    old.size, new.size, &old.root, &new.root, &bad
                )
                .is_err());
            }
        }
    }
    // new_size 0 = current, and the checkpoint comes along.
    let p = c
        .get_consistency_proof(GetConsistencyProofRequest {
            old_size: 9,
            new_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.new_size, 20);
    let cp = open_cp(&p.checkpoint, &key);
    assert_eq!(cp.root.to_vec(), p.new_root);
    let b64 = base64::engine::general_purpose::STANDARD.encode(cp.root);
    assert!(p.checkpoint.contains(&b64));
}

/// GetSignedChainHead: signed by the log key, and at every receipt's tree size it names
/// exactly the chain's events up to that receipt; bad requests get precise statuses.
#[tokio::test]
async fn signed_chain_head_names_the_chain_events_in_each_tree_size() {
    use celltrail::note::ChainHeadStatement;
    use celltrail::pb::GetSignedChainHeadRequest;
    let (_d, server, mut c, receipts) = populated().await;
    let key = log_key(&server);
    let req = |chain: &str, tree_size| GetSignedChainHeadRequest {
        chain_id: chain.into(),
        tree_size,
    };
    for (i, r) in receipts.iter().enumerate() {
        let h = c
            .get_signed_chain_head(req("BAG-1", r.tree_size))
            .await
            .unwrap()
            .into_inner();
        let note = open_note(&h.note, std::slice::from_ref(&key)).expect("signed by the log");
        let st = ChainHeadStatement::parse(&note.text).unwrap();
        assert_eq!(
            (
                st.origin.as_str(),
                st.chain_id.as_str(),
                st.tree_size,
                st.length
            ),
            (key.name.as_str(), "BAG-1", r.tree_size, i as u64 + 1)
        );
        assert_eq!(st.head_hash.to_vec(), r.event_hash);
        assert_eq!((h.tree_size, h.length), (st.tree_size, st.length));
        assert_eq!(h.head_event_hash, r.event_hash);
    }
    // 0 = the current size.
    let now = c
        .get_signed_chain_head(req("BAG-1", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((now.tree_size, now.length), (20, 12));
    expect_status(
        c.get_signed_chain_head(req("BAG-9", 0)).await,
        Code::NotFound,
        "chain BAG-9 has no events in the first 20 log entries",
    )
    .await;
    expect_status(
        c.get_signed_chain_head(req("BAG-1", 8)).await,
        Code::NotFound,
        "chain BAG-1 has no events in the first 8 log entries",
    )
    .await;
    expect_status(
        c.get_signed_chain_head(req("BAG-1", 21)).await,
        Code::InvalidArgument,
        "tree size 21 is larger than the current checkpoint's size 20",
    )
    .await;
}

async fn expect_status(
    r: Result<tonic::Response<impl std::fmt::Debug>, tonic::Status>,
    code: Code,
    needle: &str,
) {
    let s = r.expect_err("must fail");
    assert_eq!(s.code(), code, "{}", s.message());
    assert!(
        s.message().contains(needle),
        "message {:?} should contain {needle:?}",
        s.message()
    );
}

#[tokio::test]
async fn bad_proof_requests_get_precise_statuses() {
    let (_d, _server, mut c, receipts) = populated().await;
    let incl = |leaf, tree_size| GetInclusionProofRequest {
        leaf: Some(leaf),
        tree_size,
    };
    expect_status(
        c.get_inclusion_proof(incl(Leaf::Index(3), 21)).await,
        Code::InvalidArgument,
        "tree size 21 is larger than the current checkpoint's size 20",
    )
    .await;
    expect_status(
        c.get_inclusion_proof(incl(Leaf::Index(20), 0)).await,
        Code::NotFound,
        "entry 20 does not exist: the log has 20 entries",
    )
    .await;
    expect_status(
        c.get_inclusion_proof(incl(Leaf::Index(15), 10)).await,
        Code::InvalidArgument,
        "entry 15 is not in the tree of size 10",
    )
    .await;
    expect_status(
        c.get_inclusion_proof(incl(Leaf::EventHash(vec![7; 32]), 0))
            .await,
        Code::NotFound,
        "no event with hash 0707",
    )
    .await;
    expect_status(
        c.get_inclusion_proof(incl(Leaf::EventHash(vec![7; 31]), 0))
            .await,
        Code::InvalidArgument,
        "event hash is 31 bytes, expected 32",
    )
    .await;
    expect_status(
        c.get_inclusion_proof(GetInclusionProofRequest {
            leaf: None,
            tree_size: 0,
        })
        .await,
        Code::InvalidArgument,
        "by index or by event_hash",
    )
    .await;
    let cons = |old_size, new_size| GetConsistencyProofRequest { old_size, new_size };
    expect_status(
        c.get_consistency_proof(cons(0, 10)).await,
        Code::InvalidArgument,
        "old tree size must be at least 1",
    )
    .await;
    expect_status(
        c.get_consistency_proof(cons(12, 10)).await,
        Code::InvalidArgument,
        "old tree size 12 is larger than the new tree size 10",
    )
    .await;
    expect_status(
        c.get_consistency_proof(cons(3, 25)).await,
        Code::InvalidArgument,
        "tree size 25 is larger than the current checkpoint's size 20",
    )
    .await;
    assert_eq!(receipts.len(), 12);
}

#[tokio::test]
async fn empty_log_has_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    expect_status(
        c.get_checkpoint(GetCheckpointRequest {}).await,
        Code::NotFound,
        "the log is empty",
    )
    .await;
    expect_status(
        c.get_inclusion_proof(GetInclusionProofRequest {
            leaf: Some(Leaf::Index(0)),
            tree_size: 0,
        })
        .await,
        Code::NotFound,
        "the log is empty",
    )
    .await;
    server.stop().await;
}
