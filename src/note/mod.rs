//! C2SP signed notes (`c2sp.org/signed-note`), their Ed25519 key strings and the
//! `c2sp.org/tlog-checkpoint` note text. Owns the exact text formats: signing a note, opening
//! one against a list of known verifier keys, parsing and printing verifier keys
//! (`name+hash+base64(0x01||pub)`) and signer keys (`PRIVATE+KEY+name+hash+base64(0x01||seed)`,
//! the golang.org/x/mod/sumdb/note form), and checkpoint bodies. Pure: no I/O; key generation
//! only draws randomness from the OS. Behaviour follows golang.org/x/mod/sumdb/note, except
//! that every signature by a known key is verified (Go skips repeats of a key it has seen).

mod statement;

pub use statement::{ChainHeadStatement, CHAIN_HEAD_HEADER};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// Standard base64 with padding, as in signed notes, checkpoints and bundles.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64 with padding.
pub fn unb64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(s)
}
use std::collections::HashSet;

/// Most signature lines a note may carry (golang.org/x/mod's limit; C2SP requires >= 16).
pub const MAX_SIGNATURES: usize = 100;
/// Start of every signature line: EM DASH (U+2014) and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Signature type byte of Ed25519 keys.
const ALG_ED25519: u8 = 0x01;

/// True when `text` holds a private key rather than a verifier key: a note signer key
/// (`PRIVATE+KEY+...`) or a PEM private key of any kind (`-----BEGIN PRIVATE KEY-----`,
/// `ENCRYPTED PRIVATE KEY`, `OPENSSH PRIVATE KEY`, `EC PRIVATE KEY`, ...), anywhere in the text.
/// Callers use it to refuse such text without ever printing it.
pub fn looks_like_private_key(text: &str) -> bool {
    text.contains("PRIVATE+KEY+") || text.contains("PRIVATE KEY-----")
}

/// Why a key, note or checkpoint was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error(
        "key name {0:?} is invalid: it must be non-empty and contain no '+', whitespace or control characters"
    )]
    InvalidKeyName(String),
    /// The text given is not echoed: a malformed key may be a secret pasted by mistake.
    #[error("verifier key is malformed: {reason}")]
    MalformedVerifierKey { reason: String },
    /// A private key (celltrail's `PRIVATE+KEY+...` or any PEM `PRIVATE KEY`, encrypted or not)
    /// where a verifier key belongs. Never echoed.
    #[error("this is a private key file; give its verifier key (.vkey / keygen's output)")]
    PrivateKeyGiven,
    /// The signer key string itself is never echoed: it holds the private seed.
    #[error("signer key is malformed: {reason}")]
    MalformedSignerKey { reason: String },
    #[error(
        "key {name}+{hash:08x} uses signature type 0x{alg:02x}; expected 0x{expected:02x} (0x01 is an Ed25519 note key, 0x04 an Ed25519 cosignature/v1 witness key)"
    )]
    UnsupportedAlgorithm {
        name: String,
        hash: u32,
        alg: u8,
        expected: u8,
    },
    #[error(
        "key {name}: key hash {claimed:08x} in the key string does not match {computed:08x} computed from the name and public key"
    )]
    KeyHashMismatch {
        name: String,
        claimed: u32,
        computed: u32,
    },
    #[error("cannot generate a key: the operating system's random source failed: {0}")]
    Randomness(String),
    #[error("note text is invalid: {0}")]
    InvalidText(String),
    #[error("a note needs between 1 and {MAX_SIGNATURES} signers, got {0}")]
    SignerCount(usize),
    #[error("signer {name}+{hash:08x} is given twice")]
    DuplicateSigner { name: String, hash: u32 },
    #[error("malformed note: it is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("malformed note at line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error(
        "malformed note: it has {count} signature lines, more than the {MAX_SIGNATURES} accepted"
    )]
    TooManySignatures { count: usize },
    #[error(
        "ambiguous key {name}+{hash:08x}: more than one known verifier has this name and key hash"
    )]
    AmbiguousKey { name: String, hash: u32 },
    #[error("invalid signature for key {name}+{hash:08x} (line {line})")]
    InvalidSignature {
        name: String,
        hash: u32,
        line: usize,
    },
    #[error("note has no verifiable signatures: none of its signers ({}) is a known key", names(.unverified))]
    NoVerifiedSignature { unverified: Vec<(String, u32)> },
    #[error("malformed checkpoint at line {line}: {reason}")]
    Checkpoint { line: usize, reason: String },
}

fn names(keys: &[(String, u32)]) -> String {
    let v: Vec<String> = keys.iter().map(|(n, h)| format!("{n}+{h:08x}")).collect();
    v.join(", ")
}

/// C2SP key ID of an Ed25519 key: the first 4 bytes (big-endian) of
/// SHA-256(name || "\n" || 0x01 || public key).
pub fn key_hash(name: &str, public_key: &[u8; 32]) -> u32 {
    key_hash_alg(name, ALG_ED25519, public_key)
}

/// C2SP key ID for signature type `alg` (0x01 Ed25519 notes, 0x04 Ed25519 cosignature/v1):
/// the first 4 bytes (big-endian) of SHA-256(name || "\n" || alg || public key).
pub fn key_hash_alg(name: &str, alg: u8, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([alg]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// True for a valid C2SP key name: non-empty, no '+', no Unicode whitespace and no control
/// characters (a note may not contain them).
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control())
}

/// An Ed25519 key that signs notes under a name.
#[derive(Clone)]
pub struct NoteSigner {
    pub name: String,
    pub key_hash: u32,
    pub key: SigningKey,
}

/// The public half of a [`NoteSigner`]: what a note's reader trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    pub name: String,
    pub key_hash: u32,
    pub key: VerifyingKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        write!(f, "NoteSigner({}+{:08x})", self.name, self.key_hash)
    }
}

/// Splits `s` at the first `sep`; the second part is empty when `sep` is absent.
fn chop(s: &str, sep: char) -> (&str, Option<&str>) {
    match s.split_once(sep) {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

/// The parts of `name+hash+base64(alg||key)` after the name has been validated: the claimed
/// hash and the 32 key bytes. `bad` turns a reason into the caller's error.
fn parse_key_parts(
    rest: &str,
    name: &str,
    alg_wanted: u8,
    bad: &dyn Fn(String) -> NoteError,
) -> Result<(u32, [u8; 32]), NoteError> {
    if !valid_key_name(name) {
        return Err(bad(format!(
            "key name {name:?} is empty or contains '+', whitespace or control characters"
        )));
    }
    let (hash16, key64) = chop(rest, '+');
    let key64 = key64.ok_or_else(|| bad("missing '+' before the base64 key".into()))?;
    if hash16.len() != 8 || !hash16.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("key hash {hash16:?} is not 8 hex digits")));
    }
    let hash = u32::from_str_radix(hash16, 16).expect("8 hex digits fit in a u32");
    let key = STANDARD
        .decode(key64)
        .map_err(|e| bad(format!("key is not valid base64: {e}")))?;
    match key.first() {
        None => Err(bad("key is empty".into())),
        Some(&alg) if alg == alg_wanted => <[u8; 32]>::try_from(&key[1..])
            .map(|k| (hash, k))
            .map_err(|_| {
                bad(format!(
                    "Ed25519 key is {} bytes, expected 32",
                    key.len() - 1
                ))
            }),
        Some(&alg) => Err(NoteError::UnsupportedAlgorithm {
            name: name.to_string(),
            hash,
            alg,
            expected: alg_wanted,
        }),
    }
}

impl NoteSigner {
    /// A fresh random key named `name`.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::InvalidKeyName(name.to_string()));
        }
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| NoteError::Randomness(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        let key_hash = key_hash(name, key.verifying_key().as_bytes());
        Ok(NoteSigner {
            name: name.to_string(),
            key_hash,
            key,
        })
    }

    /// Names an existing key (e.g. one read from a PKCS#8 file).
    pub fn from_signing_key(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::InvalidKeyName(name.to_string()));
        }
        let key_hash = key_hash(name, key.verifying_key().as_bytes());
        Ok(NoteSigner {
            name: name.to_string(),
            key_hash,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+name+hash8hex+base64(0x01||seed32)`; the hash must match the key.
    pub fn from_key_string(s: &str) -> Result<Self, NoteError> {
        let bad = |reason: String| NoteError::MalformedSignerKey { reason };
        let rest = s
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("it does not start with PRIVATE+KEY+".into()))?;
        let (name, rest) = chop(rest, '+');
        let rest = rest.ok_or_else(|| bad("missing '+' after the key name".into()))?;
        let (claimed, seed) = parse_key_parts(rest, name, ALG_ED25519, &bad)?;
        let key = SigningKey::from_bytes(&seed);
        let computed = key_hash(name, key.verifying_key().as_bytes());
        if computed != claimed {
            return Err(NoteError::KeyHashMismatch {
                name: name.to_string(),
                claimed,
                computed,
            });
        }
        Ok(NoteSigner {
            name: name.to_string(),
            key_hash: claimed,
            key,
        })
    }

    /// `PRIVATE+KEY+name+hash8hex+base64(0x01||seed32)`. Holds the secret: never log it.
    pub fn to_key_string(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_hash,
            STANDARD.encode(k)
        )
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_hash: self.key_hash,
            key: self.key.verifying_key(),
        }
    }
}

/// Parses a verifier key string `name+hash8hex+base64(alg||pub32)` of signature type `alg`:
/// the key hash must be [`key_hash_alg`] of the name and key, and the key a valid Ed25519 point.
/// Used for note keys (0x01) and cosignature/v1 witness keys (0x04).
pub fn parse_verifier_key(s: &str, alg: u8) -> Result<(String, u32, VerifyingKey), NoteError> {
    if looks_like_private_key(s) {
        return Err(NoteError::PrivateKeyGiven);
    }
    let bad = |reason: String| NoteError::MalformedVerifierKey { reason };
    let (name, rest) = chop(s, '+');
    let rest = rest.ok_or_else(|| bad("missing '+' after the key name".into()))?;
    let (claimed, public) = parse_key_parts(rest, name, alg, &bad)?;
    let computed = key_hash_alg(name, alg, &public);
    if computed != claimed {
        return Err(NoteError::KeyHashMismatch {
            name: name.to_string(),
            claimed,
            computed,
        });
    }
    let key = VerifyingKey::from_bytes(&public)
        .map_err(|_| bad("public key is not a valid Ed25519 point".into()))?;
    Ok((name.to_string(), claimed, key))
}

/// `name+hash8hex+base64(alg||pub32)`.
pub fn verifier_key_string(name: &str, hash: u32, alg: u8, key: &VerifyingKey) -> String {
    let mut k = vec![alg];
    k.extend_from_slice(key.as_bytes());
    format!("{name}+{hash:08x}+{}", STANDARD.encode(k))
}

impl NoteVerifier {
    /// Parses `name+hash8hex+base64(0x01||pub32)`; the hash must match the name and key.
    pub fn from_key_string(s: &str) -> Result<Self, NoteError> {
        let (name, key_hash, key) = parse_verifier_key(s, ALG_ED25519)?;
        Ok(NoteVerifier {
            name,
            key_hash,
            key,
        })
    }

    /// `name+hash8hex+base64(0x01||pub32)`.
    pub fn to_key_string(&self) -> String {
        verifier_key_string(&self.name, self.key_hash, ALG_ED25519, &self.key)
    }
}

/// Checks note text: non-empty, ends in a newline, no control characters but newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::InvalidText(
            "it must be non-empty and end with a newline".into(),
        ));
    }
    if let Some((line, col, c)) = find_control(text) {
        return Err(NoteError::InvalidText(format!(
            "control character U+{:04X} at line {line}, column {col}",
            c as u32
        )));
    }
    Ok(())
}

/// First ASCII control character other than newline: (line, column, char), 1-based.
fn find_control(s: &str) -> Option<(usize, usize, char)> {
    s.split('\n').enumerate().find_map(|(i, l)| {
        l.chars()
            .enumerate()
            .find(|(_, c)| (*c as u32) < 0x20)
            .map(|(j, c)| (i + 1, j + 1, c))
    })
}

/// Signs `text` (non-empty, ending in a newline) with every signer, in order, and returns the
/// signed note: text, a blank line, one `— name base64(hash||sig)` line per signer.
pub fn sign_note(text: &str, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    check_text(text)?;
    if signers.is_empty() || signers.len() > MAX_SIGNATURES {
        return Err(NoteError::SignerCount(signers.len()));
    }
    let mut out = String::with_capacity(text.len() + 1 + signers.len() * 110);
    out.push_str(text);
    out.push('\n');
    let mut seen = HashSet::new();
    for s in signers {
        if !valid_key_name(&s.name) {
            return Err(NoteError::InvalidKeyName(s.name.clone()));
        }
        let computed = key_hash(&s.name, s.key.verifying_key().as_bytes());
        if computed != s.key_hash {
            return Err(NoteError::KeyHashMismatch {
                name: s.name.clone(),
                claimed: s.key_hash,
                computed,
            });
        }
        if !seen.insert((s.name.as_str(), s.key_hash)) {
            return Err(NoteError::DuplicateSigner {
                name: s.name.clone(),
                hash: s.key_hash,
            });
        }
        let mut sig = s.key_hash.to_be_bytes().to_vec();
        sig.extend_from_slice(&s.key.sign(text.as_bytes()).to_bytes());
        out.push_str(SIGNATURE_PREFIX);
        out.push_str(&s.name);
        out.push(' ');
        out.push_str(&STANDARD.encode(sig));
        out.push('\n');
    }
    Ok(out)
}

/// An opened note: its text (the signed message, ending in a newline) and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    /// Known keys whose signatures verified, each once, in order of appearance.
    pub verified: Vec<(String /* name */, u32 /* key hash */)>,
    /// Signatures by keys not in the verifier list (identical lines once), in order.
    pub unverified: Vec<(String, u32)>,
}

/// [`open_note`] over raw bytes, e.g. a file: rejects invalid UTF-8 first.
pub fn open_note_bytes(msg: &[u8], verifiers: &[NoteVerifier]) -> Result<Note, NoteError> {
    let msg = std::str::from_utf8(msg).map_err(|e| NoteError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    open_note(msg, verifiers)
}

/// One signature line of a note: key name, key hash and the signature bytes after the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLine {
    /// 1-based line number in the note.
    pub line: usize,
    pub name: String,
    pub key_hash: u32,
    pub signature: Vec<u8>,
}

/// Splits a signed note into its text (ending in a newline) and its signature lines, checking
/// only the syntax (what every reader of the note must refuse). Identical lines appear once.
/// [`open_note`] verifies note signatures on top of this; cosignatures (`witness::cosig`) too.
pub fn split_note(msg: &str) -> Result<(&str, Vec<SignatureLine>), NoteError> {
    if let Some((line, col, c)) = find_control(msg) {
        return Err(NoteError::Malformed {
            line,
            reason: format!("control character U+{:04X} at column {col}", c as u32),
        });
    }
    let lines_in = |s: &str| s.matches('\n').count();
    let Some(split) = msg.rfind("\n\n") else {
        return Err(NoteError::Malformed {
            line: lines_in(msg) + 1,
            reason: "no blank line separates the text from the signatures".into(),
        });
    };
    let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
    let first_sig_line = lines_in(text) + 2;
    if sigs.is_empty() {
        return Err(NoteError::Malformed {
            line: first_sig_line,
            reason: "no signature lines follow the blank line".into(),
        });
    }
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(NoteError::Malformed {
            line: first_sig_line + lines_in(sigs),
            reason: "the last signature line does not end with a newline".into(),
        });
    };
    let count = lines_in(sigs) + 1;
    if count > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures { count });
    }
    let mut out = Vec::new();
    let mut seen_lines = HashSet::new();
    for (i, raw) in sigs.split('\n').enumerate() {
        let line = first_sig_line + i;
        let bad = |reason: &str| NoteError::Malformed {
            line,
            reason: reason.to_string(),
        };
        let body = raw.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| {
            bad("expected a signature line starting with \"\u{2014} \" (U+2014, space)")
        })?;
        let (name, b64) = chop(body, ' ');
        if !valid_key_name(name) {
            return Err(bad(
                "the key name is empty or contains '+', whitespace or control characters",
            ));
        }
        let b64 = b64
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("the signature is missing"))?;
        let sig = STANDARD
            .decode(b64)
            .map_err(|_| bad("the signature is not valid base64"))?;
        if sig.len() < 5 {
            return Err(bad("the signature is shorter than a key hash and one byte"));
        }
        if !seen_lines.insert(body) {
            continue; // an identical line was already handled
        }
        out.push(SignatureLine {
            line,
            name: name.to_string(),
            key_hash: u32::from_be_bytes([sig[0], sig[1], sig[2], sig[3]]),
            signature: sig[4..].to_vec(),
        });
    }
    Ok((text, out))
}

/// Parses a signed note and verifies it against the known `verifiers`. Succeeds only if at
/// least one known key signed it and every signature by a known key verifies (Ed25519, strict);
/// signatures by unknown keys are listed, not checked.
pub fn open_note(msg: &str, verifiers: &[NoteVerifier]) -> Result<Note, NoteError> {
    let (text, lines) = split_note(msg)?;
    let mut note = Note {
        text: text.to_string(),
        verified: Vec::new(),
        unverified: Vec::new(),
    };
    for l in lines {
        let (name, hash, line) = (l.name.as_str(), l.key_hash, l.line);
        let mut known = verifiers
            .iter()
            .filter(|v| v.name == name && v.key_hash == hash);
        let Some(v) = known.next() else {
            note.unverified.push((name.to_string(), hash));
            continue;
        };
        if known.next().is_some() {
            return Err(NoteError::AmbiguousKey {
                name: name.to_string(),
                hash,
            });
        }
        let invalid = || NoteError::InvalidSignature {
            name: name.to_string(),
            hash,
            line,
        };
        let sig = Signature::from_slice(&l.signature).map_err(|_| invalid())?;
        v.key
            .verify_strict(text.as_bytes(), &sig)
            .map_err(|_| invalid())?;
        if !note.verified.iter().any(|(n, h)| n == name && *h == hash) {
            note.verified.push((name.to_string(), hash));
        }
    }
    if note.verified.is_empty() {
        return Err(NoteError::NoVerifiedSignature {
            unverified: note.unverified,
        });
    }
    Ok(note)
}

/// The body of a C2SP tlog checkpoint: origin, tree size, root hash, optional extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
    /// Opaque non-empty lines after the root (not recommended by the spec; kept verbatim).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: `origin\nsize\nbase64(root)\n` then each extension line. The origin and
    /// extensions must be non-empty single lines without control characters for
    /// [`Checkpoint::parse`] and [`sign_note`] to accept the result.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses checkpoint note text (the `text` of an opened note).
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = |line: usize, reason: String| NoteError::Checkpoint { line, reason };
        let Some(body) = text.strip_suffix('\n') else {
            return Err(bad(
                text.split('\n').count(),
                "the text does not end with a newline".into(),
            ));
        };
        if let Some((line, col, c)) = find_control(body) {
            return Err(bad(
                line,
                format!("control character U+{:04X} at column {col}", c as u32),
            ));
        }
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(bad(
                lines.len() + 1,
                format!(
                    "a checkpoint needs origin, size and root lines; the text has {}",
                    lines.len()
                ),
            ));
        }
        if let Some(i) = lines.iter().position(|l| l.is_empty()) {
            return Err(bad(i + 1, "the line is empty".into()));
        }
        let size_line = lines[1];
        if !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return Err(bad(
                2,
                format!("tree size {size_line:?} is not a decimal number without leading zeros"),
            ));
        }
        let size = size_line
            .parse::<u64>()
            .map_err(|_| bad(2, format!("tree size {size_line} does not fit in 64 bits")))?;
        let root = STANDARD
            .decode(lines[2])
            .ok()
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or_else(|| {
                bad(
                    3,
                    format!("root hash {:?} is not base64 of 32 bytes", lines[2]),
                )
            })?;
        Ok(Checkpoint {
            origin: lines[0].to_string(),
            size,
            root,
            extensions: lines[3..].iter().map(|l| l.to_string()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn vectors() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/signed_note.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("read signed_note.json"))
            .expect("parse signed_note.json")
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("string field {key}"))
    }

    fn verifier(k: &str) -> NoteVerifier {
        NoteVerifier::from_key_string(k).unwrap_or_else(|e| panic!("{k}: {e}"))
    }

    fn ids(keys: &[(String, u32)]) -> Vec<String> {
        keys.iter().map(|(n, h)| format!("{n}+{h:08x}")).collect()
    }

    fn strs(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    }

    /// A verifier key string parses into the parts the vector lists and prints back unchanged.
    fn check_vkey(key: &str, parsed: &Value) {
        let v = verifier(key);
        assert_eq!(v.name, s(parsed, "name"));
        assert_eq!(format!("{:08x}", v.key_hash), s(parsed, "key_id_hex"));
        assert_eq!(s(parsed, "alg_byte_hex"), "01");
        assert_eq!(hex::encode(v.key.as_bytes()), s(parsed, "public_key_hex"));
        assert_eq!(key_hash(&v.name, v.key.as_bytes()), v.key_hash);
        assert_eq!(v.to_key_string(), key);
    }

    #[test]
    fn verifier_keys_parse_and_round_trip() {
        let t = vectors();
        let g = &t["golang_mod_sumdb_note"];
        check_vkey(s(g, "verifier_key"), &g["verifier_key_parsed"]);
        check_vkey(
            s(g, "second_verifier_key"),
            &g["second_verifier_key_parsed"],
        );
        let c = &t["c2sp_signed_note_example"];
        check_vkey(s(c, "verifier_key"), &c["verifier_key_parsed"]);
        let sum = &t["tlog_checkpoint_verifiable_sum_golang_org"];
        check_vkey(s(sum, "verifier_key"), &sum["verifier_key_parsed"]);
        for k in strs(&sum["with_cosignatures"]["extra_verifier_keys"]) {
            assert_eq!(verifier(&k).to_key_string(), k);
        }
    }

    #[test]
    fn signer_keys_parse_match_their_verifier_and_round_trip() {
        let t = vectors();
        let g = &t["golang_mod_sumdb_note"];
        let skey = s(g, "signer_key");
        let signer = NoteSigner::from_key_string(skey).unwrap();
        assert_eq!(signer.name, s(&g["signer_key_parsed"], "name"));
        assert_eq!(
            hex::encode(signer.key.as_bytes()),
            s(&g["signer_key_parsed"], "seed_hex")
        );
        assert_eq!(signer.verifier(), verifier(s(g, "verifier_key")));
        assert_eq!(signer.to_key_string(), skey);

        let local = &t["sumdb_client_test_tree_notes"];
        let signer = NoteSigner::from_key_string(s(local, "signer_key")).unwrap();
        assert_eq!(signer.verifier(), verifier(s(local, "verifier_key")));
        assert_eq!(signer.key_hash, 0x00000c67);
    }

    #[test]
    fn a_private_key_is_refused_as_a_verifier_key_without_echo() {
        let signer = NoteSigner::generate("nurse.p").unwrap();
        let secret = signer.to_key_string();
        for text in [
            secret.clone(),
            format!("# pasted\n{secret}\n"),
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIGbMFcGCSqGSIb3\n-----END ENCRYPTED PRIVATE KEY-----\n".into(),
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2Vw\n-----END PRIVATE KEY-----\n".into(),
        ] {
            assert!(looks_like_private_key(&text), "{text}");
            let e = NoteVerifier::from_key_string(&text).unwrap_err();
            assert_eq!(e, NoteError::PrivateKeyGiven);
            assert!(!e.to_string().contains("MC4CAQ") && !e.to_string().contains("MIGb"));
        }
        assert!(!looks_like_private_key(&signer.verifier().to_key_string()));
        // A malformed verifier key is described, never echoed (it may be a pasted secret).
        let e = NoteVerifier::from_key_string("nurse+0000zz+c2VjcmV0LXNlZWQtYnl0ZXM=").unwrap_err();
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn bad_verifier_keys_are_rejected() {
        let t = vectors();
        let bad = t["golang_mod_sumdb_note"]["invalid_verifier_keys"]
            .as_array()
            .unwrap();
        assert_eq!(bad.len(), 2);
        // Its base64 has non-zero trailing bits, which the STANDARD engine already refuses
        // (Go's decoder is laxer and fails on the length instead).
        let wrong_len = NoteVerifier::from_key_string(s(&bad[0], "vkey")).unwrap_err();
        assert!(
            matches!(wrong_len, NoteError::MalformedVerifierKey { .. }),
            "{wrong_len}"
        );
        let unknown_alg = NoteVerifier::from_key_string(s(&bad[1], "vkey")).unwrap_err();
        assert_eq!(
            unknown_alg,
            NoteError::UnsupportedAlgorithm {
                name: "PeterNeumann".into(),
                hash: 0x173116ae,
                alg: 0x65,
                expected: 0x01,
            }
        );
    }

    #[test]
    fn malformed_key_strings_are_rejected_with_reasons() {
        let good = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        for (k, why) in [
            ("", "missing '+'"),
            ("PeterNeumann", "missing '+'"),
            ("PeterNeumann+c74f20a3", "missing '+' before"),
            (
                "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                "key name",
            ),
            (
                "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                "key name",
            ),
            (
                "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                "8 hex digits",
            ),
            (
                "PeterNeumann++c74f20a+Rpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                "8 hex digits",
            ),
            ("PeterNeumann+c74f20a3+", "key is empty"),
            (
                "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWAA==",
                "33 bytes, expected 32",
            ),
            (
                "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10Q=",
                "31 bytes, expected 32",
            ),
            (
                "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
                "base64",
            ),
        ] {
            let e = NoteVerifier::from_key_string(k).unwrap_err().to_string();
            assert!(e.contains(why), "{k:?}: {e}");
        }
        // Right key, wrong hash; and the key hash is case-insensitive on input.
        let e = NoteVerifier::from_key_string(&good.replace("c74f20a3", "c74f20a4")).unwrap_err();
        assert_eq!(
            e,
            NoteError::KeyHashMismatch {
                name: "PeterNeumann".into(),
                claimed: 0xc74f20a4,
                computed: 0xc74f20a3
            }
        );
        assert!(NoteVerifier::from_key_string(&good.replace("c74f20a3", "C74F20A3")).is_ok());
        // A signer key error never echoes the seed.
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let e = NoteSigner::from_key_string(skey).unwrap_err();
        assert!(matches!(e, NoteError::KeyHashMismatch { .. }));
        let e =
            NoteSigner::from_key_string(&skey.replace("PRIVATE+KEY", "PRIVATE+KYE")).unwrap_err();
        assert!(!e.to_string().contains("AYEKF"), "{e}");
        // A verifier key string is not a signer key string and vice versa.
        assert!(NoteSigner::from_key_string(good).is_err());
        assert!(NoteVerifier::from_key_string(skey).is_err());
    }

    #[test]
    fn sign_reproduces_go_test_sign_byte_for_byte() {
        let t = vectors();
        let g = &t["golang_mod_sumdb_note"];
        let signer = NoteSigner::from_key_string(s(g, "signer_key")).unwrap();
        let note = sign_note(s(g, "text"), &[&signer]).unwrap();
        assert_eq!(note, s(g, "signed_note"));
        assert_eq!(hex::encode(note.as_bytes()), s(g, "signed_note_hex"));
        let line = s(&g["signature_lines"], "PeterNeumann");
        assert!(note.ends_with(&format!("\n\n{line}")));
        let opened = open_note(&note, &[signer.verifier()]).unwrap();
        assert_eq!(opened.text, s(g, "text"));
        assert_eq!(ids(&opened.verified), ["PeterNeumann+c74f20a3"]);
        assert!(opened.unverified.is_empty());
    }

    /// Every TestOpen case: the verdict, the verified/unverified keys, and for errors the
    /// upstream error text.
    #[test]
    fn go_test_open_cases_get_expected_results() {
        let t = vectors();
        let cases = t["golang_mod_sumdb_note"]["open_cases"].as_array().unwrap();
        assert_eq!(cases.len(), 15);
        for c in cases {
            let desc = s(c, "desc");
            let known: Vec<NoteVerifier> = strs(&c["verifier_keys"])
                .iter()
                .map(|k| verifier(k))
                .collect();
            let msg = hex::decode(s(c, "note_hex")).unwrap();
            if let Some(text) = c["note"].as_str() {
                assert_eq!(text.as_bytes(), &msg[..], "{desc}");
            }
            let got = open_note_bytes(&msg, &known);
            let want = &c["expected"];
            match s(want, "result") {
                "ok" => {
                    let n = got.unwrap_or_else(|e| panic!("{desc}: {e}"));
                    assert_eq!(ids(&n.verified), strs(&want["verified"]), "{desc}");
                    let unverified = want.get("unverified").map(strs).unwrap_or_default();
                    assert_eq!(ids(&n.unverified), unverified, "{desc}");
                    assert!(msg.starts_with(n.text.as_bytes()), "{desc}");
                }
                "error" => {
                    let e = got.expect_err(desc);
                    assert!(e.to_string().contains(s(want, "error")), "{desc}: {e}");
                    if let Some(u) = want.get("unverified") {
                        let NoteError::NoVerifiedSignature { unverified } = &e else {
                            panic!("{desc}: {e:?}")
                        };
                        assert_eq!(&ids(unverified), &strs(u), "{desc}");
                    }
                }
                other => panic!("{desc}: unknown result {other}"),
            }
        }
    }

    #[test]
    fn c2sp_examples_open() {
        let t = vectors();
        let c = &t["c2sp_signed_note_example"];
        let n = open_note(s(c, "signed_note"), &[verifier(s(c, "verifier_key"))]).unwrap();
        assert_eq!(n.text, s(&c["python_result"], "text"));
        assert_eq!(ids(&n.verified), strs(&c["python_result"]["verified"]));

        // The intro example publishes no key: well-formed, but nothing verifies.
        let intro = &t["c2sp_signed_note_intro_example_unverifiable"];
        let e = open_note(s(intro, "signed_note"), &[]).unwrap_err();
        assert_eq!(
            e,
            NoteError::NoVerifiedSignature {
                unverified: vec![("quasimodo.example/salvatore".into(), 0x367ba04b)]
            }
        );
        assert!(e.to_string().contains(s(&intro["python_result"], "error")));
    }

    #[test]
    fn c2sp_checkpoint_example_parses() {
        let t = vectors();
        let c = &t["tlog_checkpoint_c2sp_example"];
        // No key is published for it; it names sum.golang.org's key id, and that key rejects it.
        let sum = verifier(s(
            &t["tlog_checkpoint_verifiable_sum_golang_org"],
            "verifier_key",
        ));
        let sum = NoteVerifier {
            name: s(c, "origin").to_string(),
            ..sum
        };
        let e = open_note(s(c, "signed_note"), &[sum]).unwrap_err();
        assert!(
            matches!(
                e,
                NoteError::InvalidSignature {
                    hash: 0x033de0ae,
                    ..
                }
            ),
            "{e}"
        );
        let e = open_note(s(c, "signed_note"), &[]).unwrap_err();
        let NoteError::NoVerifiedSignature { unverified } = e else {
            panic!()
        };
        assert_eq!(
            ids(&unverified),
            [format!(
                "{}+{}",
                s(c, "origin"),
                s(&c["signature"], "key_id_hex")
            )]
        );

        let text = s(c, "signed_note")
            .split_once("\n\n")
            .unwrap()
            .0
            .to_string()
            + "\n";
        let cp = Checkpoint::parse(&text).unwrap();
        assert_eq!(cp.origin, s(c, "origin"));
        assert_eq!(cp.size, c["tree_size"].as_u64().unwrap());
        assert_eq!(hex::encode(cp.root), s(c, "root_hash_hex"));
        assert!(cp.extensions.is_empty());
        assert_eq!(cp.to_text(), text);
    }

    #[test]
    fn sum_golang_org_checkpoint_verifies_and_parses() {
        let t = vectors();
        let c = &t["tlog_checkpoint_verifiable_sum_golang_org"];
        let n = open_note(s(c, "signed_note"), &[verifier(s(c, "verifier_key"))]).unwrap();
        assert_eq!(ids(&n.verified), strs(&c["python_result"]["verified"]));
        assert_eq!(n.text, s(&c["python_result"], "text"));
        let cp = Checkpoint::parse(&n.text).unwrap();
        assert_eq!(cp.origin, s(c, "origin"));
        assert_eq!(cp.size, c["tree_size"].as_u64().unwrap());
        assert_eq!(STANDARD.encode(cp.root), s(c, "root_hash_base64"));
        assert_eq!(hex::encode(cp.root), s(c, "root_hash_hex"));
        assert_eq!(cp.to_text(), n.text);

        let w = &c["with_cosignatures"];
        let mut known: Vec<NoteVerifier> = strs(&w["extra_verifier_keys"])
            .iter()
            .map(|k| verifier(k))
            .collect();
        known.push(verifier(s(c, "verifier_key")));
        let n = open_note(s(w, "signed_note"), &known).unwrap();
        assert_eq!(ids(&n.verified), strs(&w["python_result"]["verified"]));
        // With only the log's key, the cosignatures are listed as unverified.
        let n = open_note(s(w, "signed_note"), &known[3..]).unwrap();
        assert_eq!(ids(&n.verified), ["sum.golang.org+033de0ae"]);
        assert_eq!(
            ids(&n.unverified),
            ["monkeys+db4d9f7e", "bananas+cf639f13", "witness+f13a86db"]
        );
    }

    #[test]
    fn sumdb_tree_notes_from_go_client_test() {
        let t = vectors();
        let c = &t["sumdb_client_test_tree_notes"];
        let known = [verifier(s(c, "verifier_key"))];
        let mut checked = 0;
        for n in c["notes"].as_array().unwrap() {
            for (note_key, result_key) in [
                ("note_as_in_comment", "python_result_as_in_comment"),
                (
                    "note_with_header_from_test_wants",
                    "python_result_with_header_from_test_wants",
                ),
            ] {
                let (Some(msg), Some(want)) = (n[note_key].as_str(), n.get(result_key)) else {
                    continue;
                };
                let got = open_note(msg, &known);
                match s(want, "result") {
                    "ok" => {
                        let opened = got.unwrap();
                        assert_eq!(opened.text, s(want, "text"));
                        assert_eq!(ids(&opened.verified), strs(&want["verified"]));
                        assert!(Checkpoint::parse(&opened.text).is_ok());
                    }
                    _ => assert!(got.unwrap_err().to_string().contains(s(want, "error"))),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 3);
    }

    // ---- our own rules ----

    #[test]
    fn generated_keys_round_trip_and_sign() {
        let a = NoteSigner::generate("celltrail.example/log").unwrap();
        let b = NoteSigner::generate("witness.example").unwrap();
        assert_eq!(
            NoteSigner::from_key_string(&a.to_key_string())
                .unwrap()
                .key
                .as_bytes(),
            a.key.as_bytes()
        );
        assert_eq!(
            NoteVerifier::from_key_string(&a.verifier().to_key_string()).unwrap(),
            a.verifier()
        );
        assert!(!format!("{a:?}").contains(&STANDARD.encode(a.key.as_bytes())));
        let note = sign_note("hello\n\nworld\n", &[&a, &b]).unwrap();
        let n = open_note(&note, &[b.verifier(), a.verifier()]).unwrap();
        assert_eq!(n.text, "hello\n\nworld\n");
        assert_eq!(
            ids(&n.verified),
            ids(&[(a.name.clone(), a.key_hash), (b.name.clone(), b.key_hash)])
        );
        assert_eq!(
            NoteSigner::generate("bad name").unwrap_err(),
            NoteError::InvalidKeyName("bad name".into())
        );
    }

    #[test]
    fn sign_rejects_bad_text_and_signers() {
        let a = NoteSigner::generate("a").unwrap();
        for text in ["", "no newline", "tab\there\n", "bell\u{7}\n"] {
            assert!(
                matches!(sign_note(text, &[&a]), Err(NoteError::InvalidText(_))),
                "{text:?}"
            );
        }
        assert_eq!(sign_note("x\n", &[]), Err(NoteError::SignerCount(0)));
        assert_eq!(
            sign_note("x\n", &[&a, &a]),
            Err(NoteError::DuplicateSigner {
                name: "a".into(),
                hash: a.key_hash
            })
        );
        let mut forged = a.clone();
        forged.key_hash ^= 1;
        assert!(matches!(
            sign_note("x\n", &[&forged]),
            Err(NoteError::KeyHashMismatch { .. })
        ));
        let mut renamed = a.clone();
        renamed.name = "a+b".into();
        assert!(matches!(
            sign_note("x\n", &[&renamed]),
            Err(NoteError::InvalidKeyName(_))
        ));
    }

    #[test]
    fn open_rejects_bad_signatures_and_names_the_line() {
        let a = NoteSigner::generate("a.example").unwrap();
        let other = NoteSigner::generate("a.example").unwrap(); // same name, another key
        let note = sign_note("one\ntwo\n", &[&a]).unwrap();
        // Tampered text.
        let e = open_note(&note.replace("two", "tw0"), &[a.verifier()]).unwrap_err();
        assert_eq!(
            e,
            NoteError::InvalidSignature {
                name: "a.example".into(),
                hash: a.key_hash,
                line: 4
            }
        );
        // Same name and key hash but a different key: the signature must fail, not be skipped.
        let impostor = NoteVerifier {
            key: other.key.verifying_key(),
            ..a.verifier()
        };
        assert!(matches!(
            open_note(&note, &[impostor]),
            Err(NoteError::InvalidSignature { .. })
        ));
        // A second, different signature by the same known key is verified too.
        let line = note.lines().last().unwrap();
        let mut sig = STANDARD.decode(line.rsplit(' ').next().unwrap()).unwrap();
        sig[10] ^= 1;
        let doubled = format!("{note}\u{2014} a.example {}\n", STANDARD.encode(&sig));
        let e = open_note(&doubled, &[a.verifier()]).unwrap_err();
        assert_eq!(
            e,
            NoteError::InvalidSignature {
                name: "a.example".into(),
                hash: a.key_hash,
                line: 5
            }
        );
        // Format errors name the line.
        let e = open_note("one\ntwo\n\n- a.example AAAA\n", &[a.verifier()]).unwrap_err();
        assert_eq!(
            e.to_string().split(':').next().unwrap(),
            "malformed note at line 4"
        );
        let e = open_note("one\ntwo\n\n\u{2014} a.example AAAA\n", &[a.verifier()]).unwrap_err();
        assert!(e.to_string().contains("shorter than a key hash"), "{e}");
        let e = open_note("one\nt\u{1}wo\n\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed note at line 2: control character U+0001"),
            "{e}"
        );
        assert_eq!(
            open_note_bytes(b"ok\n\xff\n\n", &[]),
            Err(NoteError::NotUtf8 { offset: 3 })
        );
        // 100 signature lines are accepted, 101 are not.
        let sig_line = note.split_once("\n\n").unwrap().1;
        let many = |n: usize| format!("one\ntwo\n\n{}", sig_line.repeat(n));
        assert!(open_note(&many(100), &[a.verifier()]).is_ok());
        assert_eq!(
            open_note(&many(101), &[a.verifier()]),
            Err(NoteError::TooManySignatures { count: 101 })
        );
    }

    #[test]
    fn checkpoint_parse_rejects_malformed_bodies() {
        let root = STANDARD.encode([7u8; 32]);
        let ok = Checkpoint {
            origin: "log.example".into(),
            size: 0,
            root: [7; 32],
            extensions: vec!["ext one".into()],
        };
        assert_eq!(Checkpoint::parse(&ok.to_text()), Ok(ok.clone()));
        assert_eq!(ok.to_text(), format!("log.example\n0\n{root}\next one\n"));
        for (text, line, why) in [
            (format!("log\n5\n{root}"), 3, "does not end with a newline"),
            ("log\n5\n".to_string(), 3, "needs origin, size and root"),
            (format!("\n5\n{root}\n"), 1, "empty"),
            (format!("log\n05\n{root}\n"), 2, "leading zeros"),
            (format!("log\n+5\n{root}\n"), 2, "not a decimal"),
            (format!("log\n\n{root}\n"), 2, "empty"),
            (format!("log\n18446744073709551616\n{root}\n"), 2, "64 bits"),
            (
                format!("log\n5\n{}\n", STANDARD.encode([7u8; 31])),
                3,
                "32 bytes",
            ),
            (format!("log\n5\n{root}\n\n"), 4, "empty"),
            (
                format!("log\n5\n{root}\nx\ty\n"),
                4,
                "control character U+0009",
            ),
        ] {
            let e = Checkpoint::parse(&text).unwrap_err();
            let NoteError::Checkpoint { line: got, reason } = &e else {
                panic!("{e:?}")
            };
            assert_eq!(*got, line, "{text:?}: {e}");
            assert!(reason.contains(why), "{text:?}: {e}");
        }
        assert_eq!(
            Checkpoint::parse(&format!("log\n18446744073709551615\n{root}\n"))
                .unwrap()
                .size,
            u64::MAX
        );
    }

    #[test]
    fn key_names_follow_the_spec() {
        for ok in [
            "a",
            "example.com/log",
            "PeterNeumann",
            "quasimodo.example/salvatore",
            "ünï",
        ] {
            assert!(valid_key_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a+b",
            "a b",
            "a\tb",
            "a\u{a0}b",
            "a\u{2003}b",
            "a\u{7f}",
            "a\nb",
        ] {
            assert!(!valid_key_name(bad), "{bad:?}");
        }
    }

    // ---- properties ----

    /// Strings built from note-shaped pieces reach deeper parser states than random text.
    fn noteish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("\n".to_string()),
            Just("\n\n".to_string()),
            Just("\u{2014} ".to_string()),
            Just("+".to_string()),
            Just(" ".to_string()),
            Just("PRIVATE+KEY+".to_string()),
            Just("c74f20a3".to_string()),
            Just("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW".to_string()),
            Just("x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=".to_string()),
            Just("PeterNeumann".to_string()),
            "[0-9]{1,21}",
            "[A-Za-z0-9+/=]{0,50}",
            any::<String>(),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in prop_oneof![any::<String>(), noteish()]) {
            let peter = verifier("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW");
            let _ = open_note(&text, &[peter]);
            let _ = open_note_bytes(text.as_bytes(), &[]);
            let _ = Checkpoint::parse(&text);
            let _ = NoteVerifier::from_key_string(&text);
            let _ = NoteSigner::from_key_string(&text);
        }

        #[test]
        fn signed_notes_open(text in "[^\u{0}-\u{1f}]{0,40}(\n[^\u{0}-\u{1f}]{0,40}){0,4}\n") {
            let a = NoteSigner::generate("prop.example").unwrap();
            let note = sign_note(&text, &[&a]).unwrap();
            let n = open_note(&note, &[a.verifier()]).unwrap();
            prop_assert_eq!(n.text, text);
        }

        #[test]
        fn checkpoints_round_trip(
            origin in "[^\u{0}-\u{1f}]{1,30}", size in any::<u64>(), root in any::<[u8; 32]>(),
            extensions in proptest::collection::vec("[^\u{0}-\u{1f}]{1,20}", 0..3),
        ) {
            let cp = Checkpoint { origin, size, root, extensions };
            prop_assert_eq!(Checkpoint::parse(&cp.to_text()), Ok(cp));
        }
    }
}
