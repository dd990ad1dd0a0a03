//! The key registry: which signer keys exist, their role, site and validity, as recorded by
//! `KeyRegistered` / `KeyRevoked` events on the `keys` chain, plus the operator admin keys of
//! the trust-anchor file that may sign those events. Pure: built by replaying events, so the
//! server and the offline verifier decide signer validity with the same code.

use crate::note::NoteVerifier;
use crate::pb::{KeyRegistered, KeyRevoked};
use crate::policy::cut;
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;

/// Chain id of the key registry.
pub const KEYS_CHAIN: &str = "keys";
/// Longest key id accepted.
pub const MAX_KEY_ID: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub key_id: String,
    pub public_key: VerifyingKey,
    pub printed_name: String,
    pub role: String,
    pub site: String,
    pub valid_from: i64,
    /// 0 = no end.
    pub valid_until: i64,
    pub revoked_at: Option<i64>,
    pub revoke_reason: String,
}

impl KeyRecord {
    /// Whether this key may sign at `signed_at` in an event the log accepts at `accepted_at`
    /// (server time; offline, the entry's `accepted_at`).
    ///
    /// A revoked key signs nothing dated at or after its revocation time, and once that time
    /// has passed the log accepts nothing from it at all: the signature time is the signer's
    /// claim, so a stolen key could otherwise date a signature before the revocation
    /// (SECURITY.md, "Stolen station or staff key").
    ///
    /// From entry format 1 on, expiry works like revocation: once `valid_until` has passed
    /// the log accepts nothing the key signed, whatever `signed_at` it claims.
    pub fn may_sign(&self, signed_at: i64, accepted_at: i64, format: u32) -> Result<(), KeyError> {
        let key_id = &self.key_id;
        if let Some(revoked_at) = self.revoked_at {
            if signed_at >= revoked_at {
                return Err(KeyError::Revoked {
                    key_id: key_id.to_string(),
                    revoked_at: fmt_time(revoked_at),
                    reason: self.revoke_reason.clone(),
                    signed_at: fmt_time(signed_at),
                });
            }
            if accepted_at >= revoked_at {
                return Err(KeyError::RevokedBeforeAcceptance {
                    key_id: key_id.to_string(),
                    revoked_at: fmt_time(revoked_at),
                    reason: self.revoke_reason.clone(),
                    signed_at: fmt_time(signed_at),
                });
            }
        }
        if signed_at < self.valid_from || (self.valid_until != 0 && signed_at >= self.valid_until) {
            return Err(KeyError::OutsideValidity {
                key_id: key_id.to_string(),
                from: fmt_time(self.valid_from),
                until: if self.valid_until == 0 {
                    "no end".into()
                } else {
                    fmt_time(self.valid_until)
                },
                signed_at: fmt_time(signed_at),
            });
        }
        if format >= 1 && self.expired_at(accepted_at) {
            return Err(KeyError::ExpiredBeforeAcceptance {
                key_id: key_id.to_string(),
                until: fmt_time(self.valid_until),
                signed_at: fmt_time(signed_at),
                accepted_at: fmt_time(accepted_at),
            });
        }
        Ok(())
    }

    /// Whether the key's validity had ended by `at`.
    pub fn expired_at(&self, at: i64) -> bool {
        self.valid_until != 0 && at >= self.valid_until
    }
}

/// Why a signer may not sign at a given time.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key {} is not registered in the key registry", cut(.0))]
    Unknown(String),
    #[error("key {} is an operator admin key: admin keys sign only the keys chain (key registrations and revocations); a custody event is signed by the registered keys of the people who did it", cut(.0))]
    AdminKey(String),
    #[error(
        "key {} was revoked at {revoked_at} ({}); signature made at {signed_at}",
        cut(key_id),
        cut(reason)
    )]
    Revoked {
        key_id: String,
        revoked_at: String,
        reason: String,
        signed_at: String,
    },
    #[error(
        "key {} was revoked at {revoked_at} ({}); nothing it signs is accepted after \
         that, even a signature dated earlier (this one: {signed_at}); have another authorised \
         person sign",
        cut(key_id),
        cut(reason)
    )]
    RevokedBeforeAcceptance {
        key_id: String,
        revoked_at: String,
        reason: String,
        signed_at: String,
    },
    #[error(
        "key {} is valid from {from} until {until}; signature made at {signed_at} is outside",
        cut(key_id)
    )]
    OutsideValidity {
        key_id: String,
        from: String,
        until: String,
        signed_at: String,
    },
    #[error(
        "key {} expired at {until}; nothing it signs is accepted after that, even a \
         signature dated earlier (this one: {signed_at}, accepted {accepted_at}); have another \
         authorised person sign",
        cut(key_id)
    )]
    ExpiredBeforeAcceptance {
        key_id: String,
        until: String,
        signed_at: String,
        accepted_at: String,
    },
    #[error("key {} is not an operator admin key of the trust-anchor file; only admins sign the keys chain", cut(.0))]
    NotAdmin(String),
}

/// Why a key-registry event cannot be applied.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("invalid key registration: {0}")]
    Invalid(String),
    #[error("key {} is already registered; register a new key id instead", cut(.0))]
    AlreadyRegistered(String),
    #[error("key {} cannot be revoked: it is not registered", cut(.0))]
    RevokeUnknown(String),
    #[error("key {} is already revoked", cut(.0))]
    AlreadyRevoked(String),
}

/// Renders unix nanoseconds as RFC 3339 UTC for messages.
pub fn fmt_time(nanos: i64) -> String {
    crate::time::rfc3339(nanos)
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    admins: HashMap<String, VerifyingKey>,
    keys: HashMap<String, KeyRecord>,
}

/// True for key ids the registry accepts: a C2SP key name of at most 128 bytes.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_KEY_ID && crate::note::valid_key_name(id)
}

impl Registry {
    pub fn new(admins: &[NoteVerifier]) -> Registry {
        Registry {
            admins: admins.iter().map(|v| (v.name.clone(), v.key)).collect(),
            keys: HashMap::new(),
        }
    }

    pub fn admin(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.admins.get(key_id)
    }

    pub fn get(&self, key_id: &str) -> Option<&KeyRecord> {
        self.keys.get(key_id)
    }

    pub fn keys(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.values()
    }

    /// The record of `key_id` if it may sign at `signed_at` in an event the log accepts at
    /// `accepted_at` (see [`KeyRecord::may_sign`]).
    pub fn signer_at(
        &self,
        key_id: &str,
        signed_at: i64,
        accepted_at: i64,
        format: u32,
    ) -> Result<&KeyRecord, KeyError> {
        let rec = self.keys.get(key_id).ok_or_else(|| {
            if self.admins.contains_key(key_id) {
                KeyError::AdminKey(key_id.to_string())
            } else {
                KeyError::Unknown(key_id.to_string())
            }
        })?;
        rec.may_sign(signed_at, accepted_at, format)?;
        Ok(rec)
    }

    /// Checks a registration without applying it.
    pub fn check_register(&self, r: &KeyRegistered) -> Result<KeyRecord, RegistryError> {
        if !valid_key_id(&r.key_id) {
            return Err(RegistryError::Invalid(format!(
                "key id {:?} must be 1-{MAX_KEY_ID} bytes with no '+' and no whitespace",
                cut(&r.key_id)
            )));
        }
        if self.admins.contains_key(&r.key_id) {
            return Err(RegistryError::Invalid(format!(
                "key id {} is an operator admin key name",
                r.key_id
            )));
        }
        if self.keys.contains_key(&r.key_id) {
            return Err(RegistryError::AlreadyRegistered(r.key_id.clone()));
        }
        let public_key = crate::crypto::parse_public_key(&r.public_key).ok_or_else(|| {
            RegistryError::Invalid(format!(
                "public key of {} must be a valid 32-byte ed25519 key (got {} bytes or a weak point)",
                r.key_id,
                r.public_key.len()
            ))
        })?;
        if r.role.trim().is_empty() {
            return Err(RegistryError::Invalid(format!(
                "key {} has no role",
                r.key_id
            )));
        }
        if r.valid_until_unix_nanos != 0 && r.valid_until_unix_nanos <= r.valid_from_unix_nanos {
            return Err(RegistryError::Invalid(format!(
                "key {}: valid_until must be after valid_from",
                r.key_id
            )));
        }
        Ok(KeyRecord {
            key_id: r.key_id.clone(),
            public_key,
            printed_name: r.printed_name.clone(),
            role: r.role.clone(),
            site: r.site.clone(),
            valid_from: r.valid_from_unix_nanos,
            valid_until: r.valid_until_unix_nanos,
            revoked_at: None,
            revoke_reason: String::new(),
        })
    }

    pub fn register(&mut self, r: &KeyRegistered) -> Result<(), RegistryError> {
        let rec = self.check_register(r)?;
        self.keys.insert(rec.key_id.clone(), rec);
        Ok(())
    }

    pub fn check_revoke(&self, r: &KeyRevoked) -> Result<(), RegistryError> {
        match self.keys.get(&r.key_id) {
            None => Err(RegistryError::RevokeUnknown(r.key_id.clone())),
            Some(k) if k.revoked_at.is_some() => {
                Err(RegistryError::AlreadyRevoked(r.key_id.clone()))
            }
            Some(_) => Ok(()),
        }
    }

    pub fn revoke(&mut self, r: &KeyRevoked) -> Result<(), RegistryError> {
        self.check_revoke(r)?;
        let k = self.keys.get_mut(&r.key_id).expect("checked above");
        k.revoked_at = Some(r.revoked_at_unix_nanos);
        k.revoke_reason = r.reason.clone();
        Ok(())
    }
}
