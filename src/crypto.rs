//! Event hashing and signatures: the byte layouts of docs/design.md §3 (event hash, signature
//! message) and strict ed25519 verification. Pure functions; key strings and signed notes live
//! in `note`, key files on disk in `keys`.

use crate::pb::{Signature, SignatureMeaning};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Domain separator of the event hash (followed by one zero byte).
pub const EVENT_DOMAIN: &[u8] = b"celltrail.v1.event\0";
/// Domain separator of the signature message (followed by one zero byte).
pub const SIG_DOMAIN: &[u8] = b"celltrail.v1.sig\0";

/// SHA-256 event id of the exact body bytes a client encoded once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    pub const ZERO: EventHash = EventHash([0u8; 32]);

    pub fn of_body(body: &[u8]) -> EventHash {
        let mut h = Sha256::new();
        h.update(EVENT_DOMAIN);
        h.update(body);
        EventHash(h.finalize().into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<EventHash> {
        <[u8; 32]>::try_from(bytes).ok().map(EventHash)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 bytes in hex, for tables and messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl std::fmt::Debug for EventHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventHash({})", self.to_hex())
    }
}

impl std::fmt::Display for EventHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The message a signer signs (docs/design.md §3, fixed layout):
/// `"celltrail.v1.sig\0" || event_hash || meaning u32 BE || signed_at i64 BE || u16 BE len || key_id`.
///
/// Returns `None` when the key id is longer than a u16 length can say.
pub fn signature_message(
    event_hash: &EventHash,
    meaning: i32,
    signed_at_unix_nanos: i64,
    key_id: &str,
) -> Option<Vec<u8>> {
    let key_len = u16::try_from(key_id.len()).ok()?;
    let mut m = Vec::with_capacity(SIG_DOMAIN.len() + 32 + 4 + 8 + 2 + key_id.len());
    m.extend_from_slice(SIG_DOMAIN);
    m.extend_from_slice(&event_hash.0);
    m.extend_from_slice(&(meaning as u32).to_be_bytes());
    m.extend_from_slice(&signed_at_unix_nanos.to_be_bytes());
    m.extend_from_slice(&key_len.to_be_bytes());
    m.extend_from_slice(key_id.as_bytes());
    Some(m)
}

/// Signs `event_hash` as `key_id` with the given meaning and time.
pub fn sign_event(
    key: &SigningKey,
    key_id: &str,
    event_hash: &EventHash,
    meaning: SignatureMeaning,
    signed_at_unix_nanos: i64,
) -> Signature {
    let msg = signature_message(event_hash, meaning as i32, signed_at_unix_nanos, key_id)
        .expect("key ids are validated to be short when keys are made");
    Signature {
        key_id: key_id.to_string(),
        meaning: meaning as i32,
        signed_at_unix_nanos,
        signature: key.sign(&msg).to_bytes().to_vec(),
    }
}

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    #[error(
        "signature by {} is {len} bytes, expected 64",
        crate::policy::cut(key_id)
    )]
    Length { key_id: String, len: usize },
    #[error(
        "key id {:?} is too long ({len} bytes, at most 65535)",
        crate::policy::cut(key_id)
    )]
    KeyIdTooLong { key_id: String, len: usize },
    #[error(
        "signature by {} does not verify (strict ed25519) over event {event}",
        crate::policy::cut(key_id)
    )]
    Invalid { key_id: String, event: String },
}

/// Verifies one event signature with strict ed25519 semantics (`verify_strict`).
pub fn verify_signature(
    key: &VerifyingKey,
    event_hash: &EventHash,
    sig: &Signature,
) -> Result<(), SigError> {
    let msg = signature_message(
        event_hash,
        sig.meaning,
        sig.signed_at_unix_nanos,
        &sig.key_id,
    )
    .ok_or_else(|| SigError::KeyIdTooLong {
        key_id: sig.key_id.chars().take(40).collect(),
        len: sig.key_id.len(),
    })?;
    let bytes: [u8; 64] = sig
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| SigError::Length {
            key_id: sig.key_id.clone(),
            len: sig.signature.len(),
        })?;
    verify_strict_raw(key, &msg, &bytes).map_err(|_| SigError::Invalid {
        key_id: sig.key_id.clone(),
        event: event_hash.short(),
    })
}

static VERIFICATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Strict ed25519 verifications done in this process so far (lets a test see that the cheap
/// checks come first: a refused signer costs none).
pub fn verifications() -> u64 {
    VERIFICATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Raw strict ed25519 verification of `msg`; the one place the project calls `verify_strict`.
pub fn verify_strict_raw(
    key: &VerifyingKey,
    msg: &[u8],
    sig: &[u8; 64],
) -> Result<(), ed25519_dalek::SignatureError> {
    VERIFICATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
}

/// One signature to check: key, exact message, signature bytes.
pub struct SigItem<'a> {
    pub key: &'a VerifyingKey,
    pub msg: Vec<u8>,
    pub sig: [u8; 64],
}

/// Below this many signatures one thread verifies them all (thread start-up costs more).
const PARALLEL_MIN: usize = 32;

/// Strict verification of many signatures, spread over the machine's cores.
///
/// The verdict of each item is exactly `verify_strict`'s. ed25519-dalek's `verify_batch` is
/// deliberately NOT used to decide acceptance: it checks one random linear combination of the
/// cofactorless equations, so a signer who puts a small torsion component into R gets a
/// signature that `verify_strict` rejects accepted by the batch with probability >= 1/8
/// (test `batch_verification_disagrees_with_strict_on_torsion_in_r`). The server would then
/// log entries that an auditor's strict verifier rejects. Parallel strict checks keep the server
/// and the offline verifier in exact agreement.
pub fn verify_strict_many(items: &[SigItem<'_>]) -> Vec<bool> {
    let check = |it: &SigItem<'_>| verify_strict_raw(it.key, &it.msg, &it.sig).is_ok();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if items.len() < PARALLEL_MIN || threads == 1 {
        return items.iter().map(check).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let mut out = vec![false; items.len()];
    std::thread::scope(|scope| {
        for (part, res) in items.chunks(chunk).zip(out.chunks_mut(chunk)) {
            scope.spawn(move || {
                for (it, r) in part.iter().zip(res.iter_mut()) {
                    *r = check(it);
                }
            });
        }
    });
    out
}

/// Parses a 32-byte public key; rejects non-canonical or weak (small-order) points.
pub fn parse_public_key(bytes: &[u8]) -> Option<VerifyingKey> {
    let arr: [u8; 32] = bytes.try_into().ok()?;
    let key = VerifyingKey::from_bytes(&arr).ok()?;
    if key.is_weak() {
        return None;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors(name: &str) -> Value {
        let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).expect("vector file is JSON")
    }

    #[test]
    fn event_hash_is_sha256_of_domain_and_body() {
        // Hand-computed: python3 -c "import hashlib;print(hashlib.sha256(b'celltrail.v1.event\0abc').hexdigest())"
        assert_eq!(
            EventHash::of_body(b"abc").to_hex(),
            "3dabf940621502ed49a28d49b6461b34d5dd742ef4dba031789ca1721c6b1939"
        );
    }

    #[test]
    fn signature_message_layout_matches_hand_computed_bytes() {
        let hash = EventHash([0xAB; 32]);
        let msg = signature_message(
            &hash,
            SignatureMeaning::Verified as i32,
            0x0102_0304_0506_0708,
            "nurse.b",
        )
        .unwrap();
        let mut expected = b"celltrail.v1.sig\0".to_vec();
        expected.extend_from_slice(&[0xAB; 32]);
        expected.extend_from_slice(&[0, 0, 0, 2]); // VERIFIED = 2
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&[0, 7]);
        expected.extend_from_slice(b"nurse.b");
        assert_eq!(msg, expected);
        assert_eq!(msg.len(), 17 + 32 + 4 + 8 + 2 + 7);
        // negative times are two's complement big-endian
        let m2 = signature_message(&hash, 1, -1, "").unwrap();
        assert_eq!(&m2[17 + 32 + 4..17 + 32 + 4 + 8], &[0xFF; 8]);
        assert_eq!(&m2[m2.len() - 2..], &[0, 0]);
    }

    #[test]
    fn rejects_key_id_longer_than_u16() {
        let long = "k".repeat(70_000);
        assert!(signature_message(&EventHash::ZERO, 1, 0, &long).is_none());
    }

    #[test]
    fn sign_then_verify_and_any_changed_field_fails() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let hash = EventHash::of_body(b"body");
        let sig = sign_event(&key, "qa.one", &hash, SignatureMeaning::Approved, 42);
        verify_signature(&key.verifying_key(), &hash, &sig).unwrap();
        let mut s = sig.clone();
        s.meaning = SignatureMeaning::Performed as i32;
        assert!(matches!(
            verify_signature(&key.verifying_key(), &hash, &s),
            Err(SigError::Invalid { .. })
        ));
        let mut s = sig.clone();
        s.signed_at_unix_nanos = 43;
        assert!(verify_signature(&key.verifying_key(), &hash, &s).is_err());
        let mut s = sig.clone();
        s.key_id = "qa.two".into();
        assert!(verify_signature(&key.verifying_key(), &hash, &s).is_err());
        assert!(
            verify_signature(&key.verifying_key(), &EventHash::of_body(b"other"), &sig).is_err()
        );
        let mut s = sig;
        s.signature.pop();
        assert_eq!(
            verify_signature(&key.verifying_key(), &hash, &s),
            Err(SigError::Length {
                key_id: "qa.one".into(),
                len: 63
            })
        );
    }

    #[test]
    fn verify_strict_many_agrees_with_single_verification() {
        let keys: Vec<SigningKey> = (0..5u8)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
            .collect();
        let vks: Vec<VerifyingKey> = keys.iter().map(|k| k.verifying_key()).collect();
        let mut items = Vec::new();
        for n in 0..200usize {
            let k = n % keys.len();
            let msg = format!("event {n}").into_bytes();
            let mut sig = keys[k].sign(&msg).to_bytes();
            if n % 7 == 3 {
                sig[n % 64] ^= 0x40; // corrupt some
            }
            items.push(SigItem {
                key: &vks[k],
                msg,
                sig,
            });
        }
        let many = verify_strict_many(&items);
        let single: Vec<bool> = items
            .iter()
            .map(|i| verify_strict_raw(i.key, &i.msg, &i.sig).is_ok())
            .collect();
        assert_eq!(many, single);
        assert!(many.iter().any(|ok| !ok) && many.iter().any(|ok| *ok));
    }

    /// Why the server does not accept signatures on a batch verdict: a signature whose R carries
    /// an order-8 component fails `verify_strict` but passes `verify_batch` for some messages.
    #[test]
    fn batch_verification_disagrees_with_strict_on_torsion_in_r() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        use curve25519_dalek::scalar::Scalar;
        use sha2::Sha512;
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let vk = key.verifying_key();
        let a = key.to_scalar();
        let torsion = EIGHT_TORSION[1]; // a point of order 8
        let mut batch_accepted = 0;
        for n in 0..64u32 {
            let msg = n.to_be_bytes();
            let r = Scalar::from(1000u64 + n as u64);
            let big_r =
                (curve25519_dalek::constants::ED25519_BASEPOINT_POINT * r + torsion).compress();
            let k = Scalar::from_hash(
                Sha512::new()
                    .chain_update(big_r.as_bytes())
                    .chain_update(vk.as_bytes())
                    .chain_update(msg),
            );
            let s = r + k * a;
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(big_r.as_bytes());
            sig[32..].copy_from_slice(s.as_bytes());
            assert!(
                verify_strict_raw(&vk, &msg, &sig).is_err(),
                "strict must reject torsion in R"
            );
            assert!(
                !verify_strict_many(&[SigItem {
                    key: &vk,
                    msg: msg.to_vec(),
                    sig
                }])[0]
            );
            let dsig = ed25519_dalek::Signature::from_bytes(&sig);
            if ed25519_dalek::verify_batch(&[&msg[..]], &[dsig], &[vk]).is_ok() {
                batch_accepted += 1;
            }
        }
        assert!(
            batch_accepted > 0,
            "batch verification accepted none of 64 torsion signatures"
        );
    }

    #[test]
    fn rfc8032_vectors_pass_through_project_verify() {
        let v = vectors("rfc8032_ed25519.json");
        let cases = v["vectors"].as_array().expect("vectors array");
        assert!(cases.len() >= 5);
        for c in cases {
            let field = |k: &str| {
                hex::decode(c[k].as_str().unwrap_or_else(|| panic!("{k} in {c}"))).unwrap()
            };
            let sk: [u8; 32] = field("secret_key_hex").try_into().unwrap();
            let pk = field("public_key_hex");
            let msg = field("message_hex");
            let sig: [u8; 64] = field("signature_hex").try_into().unwrap();
            let signing = SigningKey::from_bytes(&sk);
            assert_eq!(signing.verifying_key().as_bytes().as_slice(), pk.as_slice());
            assert_eq!(
                signing.sign(&msg).to_bytes(),
                sig,
                "deterministic signature for {}",
                c["name"]
            );
            let vk = parse_public_key(&pk).expect("valid vector key");
            verify_strict_raw(&vk, &msg, &sig).unwrap();
            let mut bad = sig;
            bad[0] ^= 1;
            assert!(verify_strict_raw(&vk, &msg, &bad).is_err());
        }
    }

    #[test]
    fn ed25519_edge_cases_match_strict_expectations() {
        let v = vectors("ed25519_edge_cases.json");
        let mut checked = 0;
        for group in ["speccheck", "cctv"] {
            let cases = v[group]["cases"].as_array().expect("cases array");
            for c in cases {
                let get = |k: &str| {
                    hex::decode(c[k].as_str().unwrap_or_else(|| panic!("{k} in {c}"))).unwrap()
                };
                let (pk, msg, sig) = if group == "speccheck" {
                    (get("pub_key_hex"), get("message_hex"), get("signature_hex"))
                } else {
                    (get("key_hex"), get("msg_hex"), get("sig_hex"))
                };
                let expected = match c["expected_strict"].as_str() {
                    Some("accept") => true,
                    Some("reject") => false,
                    other => panic!("expected_strict {other:?} in {c}"),
                };
                let got = match (
                    <[u8; 32]>::try_from(pk.as_slice()),
                    <[u8; 64]>::try_from(sig.as_slice()),
                ) {
                    (Ok(pk), Ok(sig)) => VerifyingKey::from_bytes(&pk)
                        .map(|vk| verify_strict_raw(&vk, &msg, &sig).is_ok())
                        .unwrap_or(false),
                    _ => false,
                };
                assert_eq!(got, expected, "{group} case {c}");
                checked += 1;
            }
        }
        assert!(checked > 900, "checked {checked} edge cases");
    }
}
