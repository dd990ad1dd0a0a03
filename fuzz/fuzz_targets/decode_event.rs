//! Bytes as a `SignedEvent` through every stateless step of the append path: protobuf decode,
//! body decode, shape and link checks, signature verification.
#![no_main]

use celltrail::crypto::{verify_signature, EventHash};
use celltrail::rules::{check_link, check_shape, Head};
use celltrail::pb::{EventBody, SignedEvent};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = celltrail::pb::LogEntry::decode(data);
    let Ok(ev) = SignedEvent::decode(data) else {
        return;
    };
    let hash = EventHash::of_body(&ev.body);
    let Ok(body) = EventBody::decode(ev.body.as_slice()) else {
        return;
    };
    let now = 1_764_000_000_000_000_000;
    let _ = check_shape(&body, &ev, now);
    let _ = check_link(&body, None);
    let head = Head {
        seq: 3,
        hash: [7; 32],
        state_name: "Collected".into(),
        state: None,
    };
    let _ = check_link(&body, Some(&head));
    let key = ed25519_key();
    for sig in &ev.signatures {
        let _ = verify_signature(&key, &hash, sig);
    }
});

/// Any fixed key: signatures from the input almost never verify; the point is that checking
/// them never panics.
fn ed25519_key() -> ed25519_dalek::VerifyingKey {
    ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key()
}
