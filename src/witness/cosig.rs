//! C2SP `tlog-cosignature` (Ed25519 `cosignature/v1`) and the `tlog-witness` request and
//! response texts. Pure: no I/O. A cosignature is a note signature line
//! `— <witness name> base64(key hash || u64 BE timestamp || Ed25519 signature)` whose key hash
//! uses signature type 0x04 and whose signed message is `cosignature/v1\ntime <ts>\n` followed by
//! the checkpoint text. The witness's private key is an ordinary note signer key file (the same
//! seed); only the key hash and the verifier key string differ (0x04 instead of 0x01).

use crate::merkle::Hash;
use crate::note::{self, NoteError, NoteSigner, SIGNATURE_PREFIX};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// Signature type byte of Ed25519 cosignature/v1 keys (c2sp.org/tlog-cosignature).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Most consistency proof lines a client may send (c2sp.org/tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// A witness's signing key.
#[derive(Clone)]
pub struct Cosigner {
    pub name: String,
    pub key_hash: u32,
    key: SigningKey,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cosigner({}+{:08x})", self.name, self.key_hash)
    }
}

/// What a client of a witness trusts: its name and public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignerVerifier {
    pub name: String,
    pub key_hash: u32,
    pub key: VerifyingKey,
}

/// One verified cosignature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    pub name: String,
    pub key_hash: u32,
    /// POSIX seconds at which the witness signed.
    pub timestamp: u64,
}

impl Cosigner {
    /// The cosigner with the seed and name of a note signer key (a `celltrail keygen` file).
    pub fn from_note_signer(s: &NoteSigner) -> Self {
        let key = s.key.clone();
        Cosigner {
            key_hash: note::key_hash_alg(
                &s.name,
                ALG_COSIGNATURE_V1,
                key.verifying_key().as_bytes(),
            ),
            name: s.name.clone(),
            key,
        }
    }

    pub fn verifier(&self) -> CosignerVerifier {
        CosignerVerifier {
            name: self.name.clone(),
            key_hash: self.key_hash,
            key: self.key.verifying_key(),
        }
    }

    /// The note signature line (`— name base64(...)\n`) cosigning `checkpoint_text` (the
    /// checkpoint note's text, ending in a newline) at `timestamp` (POSIX seconds, > 0).
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> String {
        let sig = self.key.sign(&signed_message(checkpoint_text, timestamp));
        let mut bytes = self.key_hash.to_be_bytes().to_vec();
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&sig.to_bytes());
        format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(bytes)
        )
    }
}

impl CosignerVerifier {
    /// Parses `name+hash8hex+base64(0x04||pub32)`.
    pub fn from_key_string(s: &str) -> Result<Self, NoteError> {
        let (name, key_hash, key) = note::parse_verifier_key(s, ALG_COSIGNATURE_V1)?;
        Ok(CosignerVerifier {
            name,
            key_hash,
            key,
        })
    }

    pub fn to_key_string(&self) -> String {
        note::verifier_key_string(&self.name, self.key_hash, ALG_COSIGNATURE_V1, &self.key)
    }
}

/// The message a cosignature/v1 signs.
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(checkpoint_text.as_bytes());
    m
}

/// Verifies the cosignatures on a signed checkpoint note by the given witnesses. Lines by
/// other keys (the log's, unknown witnesses') are ignored; a line whose name and key hash match
/// a listed witness but whose signature does not verify makes the note invalid (as for any
/// signed note). Returns one entry per witness that cosigned, in the order of `witnesses`.
pub fn verify_cosignatures(
    signed_note: &str,
    witnesses: &[CosignerVerifier],
) -> Result<Vec<Cosignature>, NoteError> {
    let (text, lines) = note::split_note(signed_note)?;
    let mut found: Vec<Option<Cosignature>> = vec![None; witnesses.len()];
    for l in &lines {
        for (i, w) in witnesses.iter().enumerate() {
            if w.name != l.name || w.key_hash != l.key_hash {
                continue;
            }
            let invalid = || NoteError::InvalidSignature {
                name: l.name.clone(),
                hash: l.key_hash,
                line: l.line,
            };
            if l.signature.len() != 8 + 64 {
                return Err(invalid());
            }
            let ts = u64::from_be_bytes(l.signature[..8].try_into().expect("8 bytes"));
            let sig = Signature::from_slice(&l.signature[8..]).map_err(|_| invalid())?;
            w.key
                .verify_strict(&signed_message(text, ts), &sig)
                .map_err(|_| invalid())?;
            let c = Cosignature {
                name: l.name.clone(),
                key_hash: l.key_hash,
                timestamp: ts,
            };
            // Keep the latest cosignature of a witness that signed twice.
            if found[i].as_ref().is_none_or(|f| f.timestamp < ts) {
                found[i] = Some(c);
            }
        }
    }
    Ok(found.into_iter().flatten().collect())
}

/// The signature lines of `signed_note` by the given witnesses (`— ...\n` each), to carry them
/// over to another copy of the same checkpoint. Unverified: call [`verify_cosignatures`].
pub fn cosignature_lines(signed_note: &str, witnesses: &[CosignerVerifier]) -> Vec<String> {
    let keys: Vec<(&str, u32)> = witnesses
        .iter()
        .map(|w| (w.name.as_str(), w.key_hash))
        .collect();
    cosignature_lines_for(signed_note, &keys)
}

/// The signature lines of `signed_note` whose (name, key hash) is one of `keys`, verbatim.
pub fn cosignature_lines_for(signed_note: &str, keys: &[(&str, u32)]) -> Vec<String> {
    let Ok((text, _)) = note::split_note(signed_note) else {
        return Vec::new();
    };
    signed_note[text.len() + 1..]
        .lines()
        .filter(|raw| {
            let Some((name, b64)) = raw
                .strip_prefix(SIGNATURE_PREFIX)
                .and_then(|b| b.split_once(' '))
            else {
                return false;
            };
            let Ok(sig) = STANDARD.decode(b64) else {
                return false;
            };
            sig.len() >= 4
                && keys.contains(&(name, u32::from_be_bytes([sig[0], sig[1], sig[2], sig[3]])))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Appends signature lines to a signed note (its existing lines stay first).
pub fn add_lines(signed_note: &str, lines: &[String]) -> String {
    let mut s = signed_note.to_string();
    for l in lines {
        if !s.contains(l.as_str()) {
            s.push_str(l);
        }
    }
    s
}

/// A parsed `add-checkpoint` request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, as sent.
    pub checkpoint: String,
}

/// Why a request body is malformed (the witness answers 400 Bad Request).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed add-checkpoint request: {0}")]
pub struct BadRequest(pub String);

impl AddCheckpoint {
    /// `old N\n` + one base64 hash per line + `\n` + the signed checkpoint.
    pub fn to_body(&self) -> String {
        let mut s = format!("old {}\n", self.old_size);
        for h in &self.proof {
            s.push_str(&STANDARD.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    pub fn parse(body: &str) -> Result<Self, BadRequest> {
        let bad = |m: &str| BadRequest(m.to_string());
        let (old_line, mut rest) = body
            .split_once('\n')
            .ok_or_else(|| bad("the body has no old size line"))?;
        let n = old_line
            .strip_prefix("old ")
            .ok_or_else(|| bad("the first line must be `old <size>`"))?;
        if n.is_empty()
            || !n.bytes().all(|b| b.is_ascii_digit())
            || (n.len() > 1 && n.starts_with('0'))
        {
            return Err(bad(
                "the old size is not a decimal number without leading zeros",
            ));
        }
        let old_size = n
            .parse::<u64>()
            .map_err(|_| bad("the old size does not fit in 64 bits"))?;
        let mut proof = Vec::new();
        loop {
            let (line, r) = rest
                .split_once('\n')
                .ok_or_else(|| bad("no empty line ends the consistency proof"))?;
            rest = r;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let h = STANDARD
                .decode(line)
                .ok()
                .and_then(|h| <Hash>::try_from(h).ok())
                .ok_or_else(|| bad("a consistency proof line is not base64 of 32 bytes"))?;
            proof.push(h);
        }
        if rest.is_empty() {
            return Err(bad("no checkpoint follows the empty line"));
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            checkpoint: rest.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{sign_note, Checkpoint};

    fn checkpoint_note(log: &NoteSigner, size: u64) -> String {
        let cp = Checkpoint {
            origin: log.name.clone(),
            size,
            root: [7; 32],
            extensions: vec![],
        };
        sign_note(&cp.to_text(), &[log]).unwrap()
    }

    #[test]
    fn cosignature_verifies_and_names_its_time() {
        let log = NoteSigner::generate("example.com/log").unwrap();
        let w = Cosigner::from_note_signer(&NoteSigner::generate("witness.example/w1").unwrap());
        let note = checkpoint_note(&log, 5);
        let text = crate::log::note_text(&note).unwrap();
        let signed = add_lines(&note, &[w.cosign(text, 1_700_000_000)]);
        let got = verify_cosignatures(&signed, &[w.verifier()]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].timestamp, 1_700_000_000);
        // The log's own signature still verifies and the cosignature is an unknown key to it.
        let opened = note::open_note(&signed, &[log.verifier()]).unwrap();
        assert_eq!(opened.unverified, vec![(w.name.clone(), w.key_hash)]);
    }

    #[test]
    fn cosigner_key_hash_uses_type_0x04_and_key_string_round_trips() {
        let s = NoteSigner::generate("w").unwrap();
        let c = Cosigner::from_note_signer(&s);
        assert_ne!(c.key_hash, s.key_hash);
        let vk = c.verifier().to_key_string();
        assert_eq!(
            CosignerVerifier::from_key_string(&vk).unwrap(),
            c.verifier()
        );
        // A note key string is not a witness key and vice versa.
        let err = CosignerVerifier::from_key_string(&s.verifier().to_key_string()).unwrap_err();
        assert!(err.to_string().contains("expected 0x04"), "{err}");
        assert!(note::NoteVerifier::from_key_string(&vk).is_err());
    }

    #[test]
    fn a_cosignature_over_other_text_or_time_is_refused() {
        let log = NoteSigner::generate("example.com/log").unwrap();
        let w = Cosigner::from_note_signer(&NoteSigner::generate("w1").unwrap());
        let note5 = checkpoint_note(&log, 5);
        let note6 = checkpoint_note(&log, 6);
        let line = w.cosign(crate::log::note_text(&note5).unwrap(), 10);
        let moved = add_lines(&note6, std::slice::from_ref(&line));
        let err = verify_cosignatures(&moved, &[w.verifier()]).unwrap_err();
        assert!(matches!(err, NoteError::InvalidSignature { .. }), "{err}");
        // Change the timestamp bytes: the signature covers them.
        let b64 = line.trim_end().rsplit(' ').next().unwrap();
        let mut raw = STANDARD.decode(b64).unwrap();
        raw[11] ^= 1;
        let forged = line.replace(b64, &STANDARD.encode(raw));
        let err = verify_cosignatures(&add_lines(&note5, &[forged]), &[w.verifier()]).unwrap_err();
        assert!(matches!(err, NoteError::InvalidSignature { .. }), "{err}");
        // Unknown witnesses are ignored.
        let other = Cosigner::from_note_signer(&NoteSigner::generate("w2").unwrap());
        assert!(
            verify_cosignatures(&add_lines(&note5, &[line]), &[other.verifier()])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn cosignature_lines_carry_only_the_listed_witnesses() {
        let log = NoteSigner::generate("l").unwrap();
        let w1 = Cosigner::from_note_signer(&NoteSigner::generate("w1").unwrap());
        let w2 = Cosigner::from_note_signer(&NoteSigner::generate("w2").unwrap());
        let note = checkpoint_note(&log, 3);
        let text = crate::log::note_text(&note).unwrap();
        let all = add_lines(&note, &[w1.cosign(text, 1), w2.cosign(text, 2)]);
        let lines = cosignature_lines(&all, &[w2.verifier()]);
        assert_eq!(lines, vec![w2.cosign(text, 2)]);
    }

    #[test]
    fn add_checkpoint_bodies_round_trip_and_bad_ones_are_refused() {
        let req = AddCheckpoint {
            old_size: 20,
            proof: vec![[1; 32], [2; 32]],
            checkpoint: "o\n21\nAA==\n\n— o AAAA\n".into(),
        };
        assert_eq!(AddCheckpoint::parse(&req.to_body()).unwrap(), req);
        for (body, why) in [
            ("", "no old size line"),
            ("old 01\n\nx", "leading zeros"),
            ("new 1\n\nx", "`old <size>`"),
            ("old 1\nnot-base64\n\nx", "not base64 of 32 bytes"),
            ("old 1\n", "no empty line"),
            ("old 1\n\n", "no checkpoint"),
            ("old 99999999999999999999\n\nx", "64 bits"),
        ] {
            let err = AddCheckpoint::parse(body).unwrap_err();
            assert!(err.0.contains(why), "{body:?}: {err}");
        }
        let many = AddCheckpoint {
            old_size: 1,
            proof: vec![[0; 32]; 64],
            checkpoint: "x".into(),
        };
        assert!(AddCheckpoint::parse(&many.to_body())
            .unwrap_err()
            .0
            .contains("63"));
    }
}
