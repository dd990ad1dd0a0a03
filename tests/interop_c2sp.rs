//! Interop with an independent C2SP implementation: Cloudflare's `signed_note` and
//! `tlog_tiles` crates (crates.io, dev-dependencies). celltrail's checkpoints, verifier keys,
//! inclusion and consistency proofs and witness cosignatures are checked with their code, and a
//! checkpoint cosigned through their note API verifies in celltrail's verifier.
//!
//! The published crates (0.2.0) carry no cosignature type; Cloudflare's cosignature/v1 signer
//! and verifier live in their unpublished `tlog_cosignature` crate. `azul_cosignature_v1` below
//! is that code (cloudflare/azul `crates/tlog_cosignature/src/cosignature_v1.rs`, BSD-3-Clause,
//! Copyright (c) 2025 Cloudflare, Inc.) ported to the published `signed_note::{Signer,
//! Verifier}` traits with its message construction and encoding unchanged.

mod common;

use celltrail::note::{NoteSigner, NoteVerifier};
use celltrail::pb::{
    get_inclusion_proof_request::Leaf, GetCheckpointRequest, GetConsistencyProofRequest,
    GetInclusionProofRequest,
};
use celltrail::witness::cosig::{self, AddCheckpoint, Cosigner};
use celltrail::witness::server::{Witness, WitnessedLog};
use common::TestServer;
use signed_note::{Note, StandardVerifier, Verifier as _, VerifierList};

mod azul_cosignature_v1 {
    // Ported from cloudflare/azul crates/tlog_cosignature/src/cosignature_v1.rs (BSD-3-Clause).
    use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

    pub const COSIGNATURE_V1: u8 = 0x04;

    pub struct CosignatureV1CheckpointSigner {
        pub name: String,
        pub id: u32,
        pub k: SigningKey,
        pub timestamp_unix_secs: u64,
    }

    impl signed_note::Signer for CosignatureV1CheckpointSigner {
        fn name(&self) -> &str {
            &self.name
        }
        fn key_id(&self) -> u32 {
            self.id
        }
        fn sign(&self, checkpoint: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
            let mut msg =
                format!("cosignature/v1\ntime {}\n", self.timestamp_unix_secs).into_bytes();
            msg.extend(checkpoint);
            let sig = self.k.try_sign(&msg)?;
            let mut note_sig = self.timestamp_unix_secs.to_be_bytes().to_vec();
            note_sig.extend(&sig.to_bytes());
            Ok(note_sig)
        }
    }

    impl CosignatureV1CheckpointSigner {
        pub fn new(name: &str, k: SigningKey, ts: u64) -> Self {
            let mut key = vec![COSIGNATURE_V1];
            key.extend(k.verifying_key().to_bytes());
            CosignatureV1CheckpointSigner {
                id: signed_note::key_id(name, &key),
                name: name.into(),
                k,
                timestamp_unix_secs: ts,
            }
        }
    }

    pub struct CosignatureV1NoteVerifier {
        pub name: String,
        pub id: u32,
        pub verifying_key: VerifyingKey,
    }

    impl CosignatureV1NoteVerifier {
        pub fn new(name: &str, verifying_key: VerifyingKey) -> Self {
            let mut key = vec![COSIGNATURE_V1];
            key.extend(verifying_key.to_bytes());
            CosignatureV1NoteVerifier {
                id: signed_note::key_id(name, &key),
                name: name.into(),
                verifying_key,
            }
        }
    }

    impl signed_note::Verifier for CosignatureV1NoteVerifier {
        fn name(&self) -> &str {
            &self.name
        }
        fn key_id(&self) -> u32 {
            self.id
        }
        fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
            // The message itself should be a valid checkpoint.
            let Ok(checkpoint) = tlog_tiles::Checkpoint::from_bytes(msg) else {
                return false;
            };
            if sig.len() != 8 + 64 {
                return false;
            }
            let ts = u64::from_be_bytes(sig[..8].try_into().unwrap());
            let sig_bytes: [u8; 64] = sig[8..].try_into().unwrap();
            let mut m = format!("cosignature/v1\ntime {ts}\n").into_bytes();
            m.extend(checkpoint.to_bytes());
            self.verifying_key
                .verify(&m, &ed25519_dalek::Signature::from_bytes(&sig_bytes))
                .is_ok()
        }
    }
}

use azul_cosignature_v1::{CosignatureV1CheckpointSigner, CosignatureV1NoteVerifier};

/// A server with a few entries; returns it with its log verifier key.
async fn server_with_entries(dir: &std::path::Path, n: usize) -> (TestServer, NoteVerifier) {
    let s = TestServer::start(dir).await;
    let mut c = s.client().await;
    for i in 0..n {
        let k = common::signer(&format!("nurse.{i}"));
        common::register(&mut c, &s.admin, &k, "apheresis_nurse", "HOSP-A").await;
    }
    let vkey = std::fs::read_to_string(dir.join("log.vkey")).unwrap();
    (s, NoteVerifier::from_key_string(vkey.trim()).unwrap())
}

#[tokio::test]
async fn celltrail_checkpoints_and_proofs_verify_with_cloudflares_crates() {
    let dir = tempfile::tempdir().unwrap();
    let (s, log_key) = server_with_entries(dir.path(), 7).await;
    let mut c = s.client().await;
    let cp = c
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();

    // The verifier key string is the same in both implementations.
    assert_eq!(
        signed_note::new_ed25519_verifier_key(&log_key.name, &log_key.key),
        log_key.to_key_string()
    );
    // The signed note opens with their verifier and its text parses as their checkpoint.
    let v = StandardVerifier::new(&log_key.to_key_string()).unwrap();
    assert_eq!(v.key_id(), log_key.key_hash);
    let note = Note::from_bytes(cp.checkpoint.as_bytes()).unwrap();
    let (verified, unverified) = note.verify(&VerifierList::new(vec![Box::new(v)])).unwrap();
    assert_eq!((verified.len(), unverified.len()), (1, 0));
    let theirs = tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap();
    assert_eq!(theirs.origin(), log_key.name);
    assert_eq!(theirs.size(), cp.tree_size);
    assert_eq!(theirs.hash().0.to_vec(), cp.root_hash);
    assert_eq!(theirs.to_bytes(), note.text());

    // Inclusion proofs (RFC 6962) check with their tlog code.
    let th = tlog_tiles::Hash(cp.root_hash.clone().try_into().unwrap());
    for index in 0..cp.tree_size {
        let p = c
            .get_inclusion_proof(GetInclusionProofRequest {
                leaf: Some(Leaf::Index(index)),
                tree_size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let proof: Vec<tlog_tiles::Hash> = p
            .hashes
            .iter()
            .map(|h| tlog_tiles::Hash(h.clone().try_into().unwrap()))
            .collect();
        let leaf = tlog_tiles::record_hash(&p.entry);
        assert_eq!(leaf.0.to_vec(), p.leaf_hash);
        tlog_tiles::check_record(&proof, cp.tree_size, th, index, leaf).unwrap();
    }
    // Consistency proofs from every smaller size check with their code too.
    for old in 1..cp.tree_size {
        let p = c
            .get_consistency_proof(GetConsistencyProofRequest {
                old_size: old,
                new_size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let proof: Vec<tlog_tiles::Hash> = p
            .hashes
            .iter()
            .map(|h| tlog_tiles::Hash(h.clone().try_into().unwrap()))
            .collect();
        let oh = tlog_tiles::Hash(p.old_root.clone().try_into().unwrap());
        tlog_tiles::check_tree(&proof, cp.tree_size, th, old, oh).unwrap();
        // And a tampered proof fails there as it does here.
        let mut bad = proof.clone();
        bad[0].0[0] ^= 1;
        assert!(tlog_tiles::check_tree(&bad, cp.tree_size, th, old, oh).is_err());
    }
    s.stop().await;
}

#[tokio::test]
async fn celltrail_witness_cosignatures_verify_with_cloudflares_cosignature_v1_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let (s, log_key) = server_with_entries(dir.path(), 3).await;
    let mut c = s.client().await;
    let cp = c
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    s.stop().await;

    // A real celltrail witness (its own sled state) cosigns the served checkpoint.
    let wdir = tempfile::tempdir().unwrap();
    let wkey = NoteSigner::generate("cro.example/witness").unwrap();
    let w = Witness::open(
        wdir.path(),
        Cosigner::from_note_signer(&wkey),
        vec![WitnessedLog::parse(&log_key.to_key_string()).unwrap()],
    )
    .unwrap();
    let req = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        checkpoint: cp.checkpoint.clone(),
    };
    let a = w.add_checkpoint(req.to_body().as_bytes(), 1_767_225_600);
    assert_eq!(a.status, 200, "{}", a.body);
    let cosigned = cosig::add_lines(&cp.checkpoint, &[a.body]);

    // Their verifier, keyed from our witness vkey string, accepts the cosignature; their key ID
    // (type 0x04) is ours.
    let ours = Cosigner::from_note_signer(&wkey).verifier();
    let theirs = CosignatureV1NoteVerifier::new(&ours.name, ours.key);
    assert_eq!(theirs.id, ours.key_hash);
    let note = Note::from_bytes(cosigned.as_bytes()).unwrap();
    let (verified, unverified) = note
        .verify(&VerifierList::new(vec![
            Box::new(theirs),
            Box::new(StandardVerifier::new(&log_key.to_key_string()).unwrap()),
        ]))
        .unwrap();
    assert_eq!((verified.len(), unverified.len()), (2, 0));
    // The timestamp they read is the one the witness signed.
    let sig = verified.iter().find(|s| s.name() == ours.name).unwrap();
    assert_eq!(
        u64::from_be_bytes(sig.signature()[..8].try_into().unwrap()),
        1_767_225_600
    );
}

#[tokio::test]
async fn a_checkpoint_cosigned_by_cloudflares_cosigner_verifies_in_celltrail() {
    let dir = tempfile::tempdir().unwrap();
    let (s, log_key) = server_with_entries(dir.path(), 4).await;
    let mut c = s.client().await;
    let cp = c
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    s.stop().await;

    // Their cosigner signs through their note API (Note::add_sigs keeps the log's signature).
    let seed = NoteSigner::generate("regulator.example/witness").unwrap();
    let signer = CosignatureV1CheckpointSigner::new(&seed.name, seed.key.clone(), 1_767_225_601);
    let mut note = Note::from_bytes(cp.checkpoint.as_bytes()).unwrap();
    note.add_sigs(&[&signer]).unwrap();
    let cosigned = String::from_utf8(note.to_bytes()).unwrap();

    // celltrail's verifier: the log signature still opens, the cosignature verifies with the
    // witness key string celltrail derives, and the quorum check names the witness.
    celltrail::note::open_note(&cosigned, std::slice::from_ref(&log_key)).unwrap();
    let ours = Cosigner::from_note_signer(&seed).verifier();
    let got = cosig::verify_cosignatures(&cosigned, std::slice::from_ref(&ours)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].timestamp, 1_767_225_601);
    let r = celltrail::witness::quorum::check(
        &[&cosigned],
        &log_key,
        std::slice::from_ref(&ours),
        Some(1),
    )
    .unwrap();
    assert!(r.quorum_met());
    assert_eq!(r.cosigned_by[0].name, "regulator.example/witness");

    // The same cosigner over a different checkpoint does not verify in celltrail.
    let other = celltrail::note::Checkpoint {
        origin: log_key.name.clone(),
        size: cp.tree_size + 1,
        root: [1; 32],
        extensions: vec![],
    };
    let text = other.to_text();
    let mut moved =
        Note::from_bytes(format!("{text}\n{}", cosigned.rsplit_once("\n\n").unwrap().1).as_bytes())
            .unwrap();
    moved.add_sigs(&[]).unwrap();
    let moved = String::from_utf8(moved.to_bytes()).unwrap();
    assert!(cosig::verify_cosignatures(&moved, &[ours]).is_err());
}

#[test]
fn key_strings_agree_both_ways() {
    // Their generated key pair parses in celltrail and signs notes celltrail verifies.
    let (skey, vkey) = signed_note::generate_key(&mut rand::rngs::OsRng, "their.example/log");
    let ours = NoteSigner::from_key_string(&skey).unwrap();
    assert_eq!(ours.verifier().to_key_string(), vkey);
    let mut n = Note::new(
        b"their.example/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        &[],
    )
    .unwrap();
    n.add_sigs(&[&signed_note::StandardSigner::new(&skey).unwrap()])
        .unwrap();
    let msg = String::from_utf8(n.to_bytes()).unwrap();
    let opened =
        celltrail::note::open_note(&msg, &[NoteVerifier::from_key_string(&vkey).unwrap()]).unwrap();
    celltrail::note::Checkpoint::parse(&opened.text).unwrap();
    // And celltrail's signer key string parses in theirs.
    let mine = NoteSigner::generate("celltrail.example/log").unwrap();
    let s = signed_note::StandardSigner::new(&mine.to_key_string()).unwrap();
    assert_eq!(signed_note::Signer::key_id(&s), mine.key_hash);
}
