//! Authentication of `celltrail.v1.Admin` calls: the caller signs a server-issued challenge
//! with an operator admin key (one of the trust anchors that sign the key registry).
//!
//! `Admin/Challenge` hands out a random 32-byte nonce, valid for [`CHALLENGE_TTL`] and for one
//! call. The caller signs
//! `"celltrail.v1.admin\0" || op (u16 BE length || UTF-8) || nonce || signed_at unix-nanos
//! (i64 BE) || key_id (u16 BE length || UTF-8)` with ed25519 and sends it in [`AdminAuth`];
//! the server checks, in this order and before any work, that the key is an admin key, the
//! nonce is one it issued and has not expired or been used, the time is within five minutes of
//! its own, and the signature verifies (strict). Anything else is `PERMISSION_DENIED` with
//! what to do. At most [`MAX_OUTSTANDING`] challenges are kept; older ones are dropped first.

use crate::pb::AdminAuth;
use ed25519_dalek::VerifyingKey;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Status;

/// How long a challenge nonce may be used.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Challenges kept at once.
pub const MAX_OUTSTANDING: usize = 1024;
/// How far the signature time may be from the server's.
pub const MAX_SKEW_NANOS: i64 = 5 * 60 * crate::time::NANOS_PER_SEC;

const DOMAIN: &[u8] = b"celltrail.v1.admin\0";

/// The bytes an admin signs for `op` (e.g. "Backup"); `None` if a name is over 65,535 bytes.
pub fn message(op: &str, nonce: &[u8], signed_at: i64, key_id: &str) -> Option<Vec<u8>> {
    let op_len = u16::try_from(op.len()).ok()?;
    let key_len = u16::try_from(key_id.len()).ok()?;
    let mut m = Vec::with_capacity(DOMAIN.len() + 2 + op.len() + nonce.len() + 10 + key_id.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&op_len.to_be_bytes());
    m.extend_from_slice(op.as_bytes());
    m.extend_from_slice(nonce);
    m.extend_from_slice(&signed_at.to_be_bytes());
    m.extend_from_slice(&key_len.to_be_bytes());
    m.extend_from_slice(key_id.as_bytes());
    Some(m)
}

/// Signs `op` over `nonce` with an admin key (the client side).
pub fn sign(op: &str, nonce: &[u8], key: &crate::note::NoteSigner) -> AdminAuth {
    use ed25519_dalek::Signer as _;
    let signed_at = crate::time::now_nanos();
    let msg = message(op, nonce, signed_at, &key.name).expect("key names are short");
    AdminAuth {
        key_id: key.name.clone(),
        nonce: nonce.to_vec(),
        signed_at_unix_nanos: signed_at,
        signature: key.key.sign(&msg).to_bytes().to_vec(),
    }
}

/// Nonces issued (with when) and the order they were issued in.
type Issued = (HashMap<[u8; 32], Instant>, VecDeque<[u8; 32]>);

/// Challenges issued and not yet used.
#[derive(Default)]
pub struct Challenges {
    issued: Mutex<Issued>,
}

fn denied(why: impl std::fmt::Display) -> Status {
    Status::permission_denied(format!(
        "{why}; admin calls must be signed by an operator admin key of the server's trust-anchor \
         file over a fresh Admin/Challenge (`celltrail backup --admin-key FILE`)"
    ))
}

impl Challenges {
    /// A new single-use nonce.
    pub fn issue(&self) -> [u8; 32] {
        let nonce: [u8; 32] = rand::random();
        let mut g = self.issued.lock().expect("challenges");
        let (map, order) = &mut *g;
        while map.len() >= MAX_OUTSTANDING {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
        map.insert(nonce, Instant::now());
        order.push_back(nonce);
        nonce
    }

    /// Checks `auth` for `op`; consumes its nonce when it is accepted.
    pub fn verify(
        &self,
        op: &str,
        auth: Option<&AdminAuth>,
        admin_key: impl Fn(&str) -> Option<VerifyingKey>,
    ) -> Result<String, Status> {
        let auth = auth.ok_or_else(|| denied(format!("{op} carries no admin signature")))?;
        let key = admin_key(&auth.key_id).ok_or_else(|| {
            denied(format!(
                "key {:?} is not an operator admin key of this server",
                auth.key_id.chars().take(64).collect::<String>()
            ))
        })?;
        let nonce: [u8; 32] = auth
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| denied("the challenge nonce must be 32 bytes"))?;
        {
            let g = self.issued.lock().expect("challenges");
            match g.0.get(&nonce) {
                Some(at) if at.elapsed() <= CHALLENGE_TTL => {}
                Some(_) => return Err(denied("the challenge has expired (60 s); ask for a new one")),
                None => {
                    return Err(denied(
                        "the challenge nonce was not issued by this server or was already used; ask for a new one",
                    ))
                }
            }
        }
        let now = crate::time::now_nanos();
        if (auth.signed_at_unix_nanos - now).abs() > MAX_SKEW_NANOS {
            return Err(denied(format!(
                "the signature is dated {}, more than 5 minutes from server time {}; check the clock",
                crate::time::rfc3339(auth.signed_at_unix_nanos),
                crate::time::rfc3339(now)
            )));
        }
        let msg = message(op, &nonce, auth.signed_at_unix_nanos, &auth.key_id)
            .ok_or_else(|| denied("the key id is too long"))?;
        let sig: [u8; 64] = auth
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| denied("the signature must be 64 bytes"))?;
        crate::crypto::verify_strict_raw(&key, &msg, &sig)
            .map_err(|_| denied(format!("the signature by {} does not verify", auth.key_id)))?;
        let mut g = self.issued.lock().expect("challenges");
        if g.0.remove(&nonce).is_none() {
            return Err(denied(
                "the challenge nonce was already used; ask for a new one",
            ));
        }
        Ok(auth.key_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_signed_by_an_admin_is_accepted_once() {
        let admin = crate::note::NoteSigner::generate("admin").unwrap();
        let other = crate::note::NoteSigner::generate("admin").unwrap();
        let c = Challenges::default();
        let keys = |id: &str| (id == "admin").then(|| admin.key.verifying_key());
        let nonce = c.issue();
        // Someone else's key under the admin's name: refused, nonce not consumed.
        let forged = sign("Backup", &nonce, &other);
        assert!(c.verify("Backup", Some(&forged), keys).is_err());
        // Signed for another operation: refused.
        assert!(c
            .verify("Backup", Some(&sign("Restore", &nonce, &admin)), keys)
            .is_err());
        let ok = sign("Backup", &nonce, &admin);
        assert_eq!(c.verify("Backup", Some(&ok), keys).unwrap(), "admin");
        let again = c.verify("Backup", Some(&ok), keys).unwrap_err();
        assert!(again.message().contains("already used"), "{again:?}");
        let made_up = sign("Backup", &[7u8; 32], &admin);
        assert!(c.verify("Backup", Some(&made_up), keys).is_err());
        assert!(c.verify("Backup", None, keys).is_err());
    }

    #[test]
    fn outstanding_challenges_are_bounded() {
        let c = Challenges::default();
        let first = c.issue();
        for _ in 0..MAX_OUTSTANDING {
            c.issue();
        }
        assert!(!c.issued.lock().unwrap().0.contains_key(&first));
        assert_eq!(c.issued.lock().unwrap().0.len(), MAX_OUTSTANDING);
    }
}
