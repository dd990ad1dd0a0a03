//! Key files on disk and the passphrases that open them.
//!
//! A signer's key file is an encrypted PKCS#8 PEM (`ENCRYPTED PRIVATE KEY`: PBES2 with
//! PBKDF2-HMAC-SHA256 and AES-256-CBC over a PKCS#8 v1 `PrivateKeyInfo`), the format `openssl
//! pkey` opens, preceded by one line naming the key (`celltrail-key-name: nurse.alice`; PEM
//! readers skip text before `-----BEGIN`). Keys are written with 0600 permissions and never
//! overwritten. The crypto is RustCrypto's `pkcs8`/`pkcs5` and ed25519-dalek's PKCS#8 support;
//! nothing here is hand-rolled.
//!
//! Passphrases come from the terminal without echo, or, for automation, from a file or an open
//! file descriptor named by an environment variable ([`PassphraseSource`]); never from argv.
//! The older plaintext format (the C2SP `PRIVATE+KEY+name+hash+base64` line) still loads for
//! one release, with a loud warning; `celltrail key encrypt FILE` converts it.
//!
//! Trust-anchor files (one C2SP verifier key per line, `#` comments) are public and live here
//! too.

use crate::note::{NoteError, NoteSigner, NoteVerifier};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use pkcs8::{pkcs5::pbes2, EncryptedPrivateKeyInfo, LineEnding, PrivateKeyInfo};
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// PBKDF2-HMAC-SHA256 iterations for new key files (OWASP's 2023 figure for PBKDF2-SHA256).
pub const KDF_ITERATIONS: u32 = 600_000;
/// Shortest passphrase accepted for a new or re-encrypted key file, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// Environment variable naming a file whose first line is the passphrase (automation).
pub const PASSPHRASE_FILE_ENV: &str = "CELLTRAIL_PASSPHRASE_FILE";
/// Environment variable naming an open file descriptor to read the passphrase from.
pub const PASSPHRASE_FD_ENV: &str = "CELLTRAIL_PASSPHRASE_FD";
/// As [`PASSPHRASE_FILE_ENV`], for the second signer's key (`--cosign`, `--cosign-key`).
pub const COSIGN_PASSPHRASE_FILE_ENV: &str = "CELLTRAIL_COSIGN_PASSPHRASE_FILE";
/// As [`PASSPHRASE_FD_ENV`], for the second signer's key.
pub const COSIGN_PASSPHRASE_FD_ENV: &str = "CELLTRAIL_COSIGN_PASSPHRASE_FD";

/// Help text for commands that read a passphrase.
pub const PASSPHRASE_HELP: &str = "Passphrase: asked on the terminal without echo; for automation \
set CELLTRAIL_PASSPHRASE_FILE to a file (mode 0600) whose first line is the passphrase, or \
CELLTRAIL_PASSPHRASE_FD to an open file descriptor. Never on the command line. At least 12 characters.";

const NAME_LINE: &str = "celltrail-key-name:";
const PEM_LABEL: &str = "ENCRYPTED PRIVATE KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    /// The passphrase did not open the key (the passphrase itself is never shown).
    #[error("{path}: wrong passphrase (or the key file is damaged)")]
    WrongPassphrase { path: String },
    #[error("passphrase too short: at least {MIN_PASSPHRASE_CHARS} characters (a few words are easiest to type and to remember)")]
    PassphraseTooShort,
    #[error("{0}")]
    Passphrase(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: shown(path),
        source,
    }
}

/// A path as errors print it, unless the "path" is a key pasted where its file's path belongs.
fn shown(path: &Path) -> String {
    let s = path.display().to_string();
    match crate::note::looks_like_private_key(&s) {
        true => "(a private key was given where its file's path belongs; it is not shown)".into(),
        false => s,
    }
}

fn format_err(path: &Path, message: impl Into<String>) -> KeyFileError {
    KeyFileError::Format {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// A passphrase held in memory that is wiped when dropped. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Passphrase {
    /// A passphrase to open an existing key with (no length rule: the key decides).
    pub fn new(s: impl Into<String>) -> Passphrase {
        Passphrase(Zeroizing::new(s.into()))
    }

    /// A passphrase to protect a key with: at least [`MIN_PASSPHRASE_CHARS`] characters.
    pub fn new_for_encryption(s: impl Into<String>) -> Result<Passphrase, KeyFileError> {
        let p = Passphrase::new(s);
        if p.0.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(KeyFileError::PassphraseTooShort);
        }
        Ok(p)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Where a passphrase comes from when a key file is opened.
#[derive(Debug, Clone)]
pub enum PassphraseSource {
    /// The file or descriptor named by these environment variables, else the terminal.
    Env {
        file_var: &'static str,
        fd_var: &'static str,
    },
    /// Already known (a station asked for it; a server read it from its passphrase file).
    Given(Passphrase),
}

impl PassphraseSource {
    /// The first signer's passphrase: `CELLTRAIL_PASSPHRASE_FILE` / `_FD`, else the terminal.
    pub const SIGNER: PassphraseSource = PassphraseSource::Env {
        file_var: PASSPHRASE_FILE_ENV,
        fd_var: PASSPHRASE_FD_ENV,
    };
    /// The second signer's: `CELLTRAIL_COSIGN_PASSPHRASE_FILE` / `_FD`, else the terminal.
    pub const COSIGNER: PassphraseSource = PassphraseSource::Env {
        file_var: COSIGN_PASSPHRASE_FILE_ENV,
        fd_var: COSIGN_PASSPHRASE_FD_ENV,
    };

    /// The passphrase; `prompt` is shown when it has to be asked on the terminal.
    pub fn get(&self, prompt: &str) -> Result<Passphrase, KeyFileError> {
        match self {
            PassphraseSource::Given(p) => Ok(p.clone()),
            PassphraseSource::Env { file_var, fd_var } => {
                if let Some(path) = std::env::var_os(file_var) {
                    return read_passphrase_file(Path::new(&path))
                        .map_err(|e| KeyFileError::Passphrase(format!("{file_var}: {e}")));
                }
                if let Ok(fd) = std::env::var(fd_var) {
                    let fd: u32 = fd.trim().parse().map_err(|_| {
                        KeyFileError::Passphrase(format!(
                            "{fd_var} must be a file descriptor number"
                        ))
                    })?;
                    return read_passphrase_file(&PathBuf::from(format!("/dev/fd/{fd}")))
                        .map_err(|e| KeyFileError::Passphrase(format!("{fd_var}: {e}")));
                }
                prompt_passphrase(prompt).map_err(|e| {
                    KeyFileError::Passphrase(format!(
                        "cannot ask for the passphrase on a terminal ({e}); for automation put it \
                         in a file (mode 0600) and name it in {file_var}, or pass an open file \
                         descriptor in {fd_var}"
                    ))
                })
            }
        }
    }
}

/// Reads the first line of `path` as a passphrase (a trailing newline is not part of it).
pub fn read_passphrase_file(path: &Path) -> Result<Passphrase, KeyFileError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format_err(path, "the passphrase file is not UTF-8 text"))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format_err(
            path,
            "the passphrase file is empty (its first line is the passphrase)",
        ));
    }
    Ok(Passphrase::new(line))
}

/// Asks on the terminal (`/dev/tty`) without echo.
pub fn prompt_passphrase(prompt: &str) -> std::io::Result<Passphrase> {
    rpassword::prompt_password(prompt).map(Passphrase::new)
}

/// A new passphrase for encrypting: from the source's file/descriptor as is, or asked twice
/// on the terminal. Enforces [`MIN_PASSPHRASE_CHARS`].
pub fn new_passphrase(source: &PassphraseSource, what: &str) -> Result<Passphrase, KeyFileError> {
    let automated = match source {
        PassphraseSource::Given(_) => true,
        PassphraseSource::Env { file_var, fd_var } => {
            std::env::var_os(file_var).is_some() || std::env::var_os(fd_var).is_some()
        }
    };
    loop {
        let p = source.get(&format!(
            "New passphrase for {what} (at least {MIN_PASSPHRASE_CHARS} characters): "
        ))?;
        let p = match Passphrase::new_for_encryption(p.expose()) {
            Ok(p) => p,
            Err(e) if automated => return Err(e),
            Err(e) => {
                eprintln!("{e}");
                continue;
            }
        };
        if automated {
            return Ok(p);
        }
        let again = source.get("Type it again: ")?;
        if again.expose() == p.expose() {
            return Ok(p);
        }
        eprintln!("the two passphrases differ; try again");
    }
}

/// The key as encrypted PKCS#8 PEM with its name line, as written to a key file.
pub fn encrypt_key_pem(
    signer: &NoteSigner,
    pass: &Passphrase,
    iterations: u32,
) -> Result<Zeroizing<String>, KeyFileError> {
    let fail = |e: String| KeyFileError::Format {
        path: signer.name.clone(),
        message: format!("cannot encrypt the key: {e}"),
    };
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(iterations, &salt, &iv)
        .map_err(|e| fail(e.to_string()))?;
    // PKCS#8 v2 (with the public key) is what ed25519-dalek writes; OpenSSL 3.0 reads only v1.
    let der = signer.key.to_pkcs8_der().map_err(|e| fail(e.to_string()))?;
    let mut info = PrivateKeyInfo::try_from(der.as_bytes()).map_err(|e| fail(e.to_string()))?;
    info.public_key = None;
    let enc = info
        .encrypt_with_params(params, pass.expose().as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let pem = enc
        .to_pem(PEM_LABEL, LineEnding::LF)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Zeroizing::new(format!(
        "{NAME_LINE} {}\n{}",
        signer.name,
        pem.as_str()
    )))
}

/// Writes a new encrypted key file readable only by its owner. Never overwrites a file.
/// `iterations` is [`KDF_ITERATIONS`] for real keys; tests may pass fewer (the file still
/// opens in OpenSSL).
pub fn write_encrypted_key_file(
    path: &Path,
    signer: &NoteSigner,
    pass: &Passphrase,
    iterations: u32,
) -> Result<(), KeyFileError> {
    let pem = encrypt_key_pem(signer, pass, iterations)?;
    write_new_private(path, pem.as_bytes())
}

fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Writes a new key file in the old plaintext format (0600, never overwrites). Kept for one
/// release: for servers started without a passphrase file and for tests. New signer keys are
/// written with [`write_encrypted_key_file`].
pub fn write_key_file(path: &Path, signer: &NoteSigner) -> Result<(), KeyFileError> {
    write_new_private(path, format!("{}\n", signer.to_key_string()).as_bytes())
}

/// A key file as found on disk, before any passphrase.
pub enum KeyFile {
    /// The old plaintext format (deprecated).
    Plain(NoteSigner),
    /// Encrypted PKCS#8; `name` from the name line, or the file name when there is none
    /// (a key made by `openssl genpkey`).
    Encrypted {
        path: PathBuf,
        name: String,
        pem: Zeroizing<String>,
    },
}

impl KeyFile {
    /// Reads and recognises a key file; opens nothing.
    pub fn load(path: &Path) -> Result<KeyFile, KeyFileError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
        let trimmed = text.trim();
        if trimmed.starts_with("PRIVATE+KEY+") {
            return NoteSigner::from_key_string(trimmed)
                .map(KeyFile::Plain)
                .map_err(|e| format_err(path, format!("not a celltrail key file: {e}")));
        }
        let begin = format!("-----BEGIN {PEM_LABEL}-----");
        let Some(at) = text.find(&begin) else {
            return Err(format_err(
                path,
                "not a celltrail key file: expected an ENCRYPTED PRIVATE KEY (PKCS#8 PEM) \
                 or the old PRIVATE+KEY+... line",
            ));
        };
        let name = text[..at]
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(NAME_LINE)
                    .map(|n| n.trim().to_string())
            })
            .unwrap_or_else(|| name_from_path(path));
        if !crate::registry::valid_key_id(&name) {
            return Err(format_err(
                path,
                format!("key name {name:?} is not a valid key id; put a line \"{NAME_LINE} NAME\" before the PEM"),
            ));
        }
        Ok(KeyFile::Encrypted {
            path: path.to_path_buf(),
            name,
            pem: Zeroizing::new(text[at..].to_string()),
        })
    }

    /// The key's name (its key id).
    pub fn name(&self) -> &str {
        match self {
            KeyFile::Plain(s) => &s.name,
            KeyFile::Encrypted { name, .. } => name,
        }
    }

    pub fn is_encrypted(&self) -> bool {
        matches!(self, KeyFile::Encrypted { .. })
    }

    /// Opens the key with `pass` (ignored for a plaintext file).
    pub fn open(&self, pass: &Passphrase) -> Result<NoteSigner, KeyFileError> {
        match self {
            KeyFile::Plain(s) => Ok(s.clone()),
            KeyFile::Encrypted { path, name, pem } => {
                let (label, doc) = pkcs8::SecretDocument::from_pem(pem)
                    .map_err(|e| format_err(path, format!("damaged PEM: {e}")))?;
                if label != PEM_LABEL {
                    return Err(format_err(path, format!("PEM label {label:?}")));
                }
                let enc = EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
                    .map_err(|e| format_err(path, format!("not encrypted PKCS#8: {e}")))?;
                let plain = enc.decrypt(pass.expose().as_bytes()).map_err(|_| {
                    KeyFileError::WrongPassphrase {
                        path: path.display().to_string(),
                    }
                })?;
                let key = SigningKey::from_pkcs8_der(plain.as_bytes()).map_err(|_| {
                    KeyFileError::WrongPassphrase {
                        path: path.display().to_string(),
                    }
                })?;
                Ok(NoteSigner::from_signing_key(name, key)
                    .map_err(|e| format_err(path, format!("key name {name:?}: {e}")))?)
            }
        }
    }

    /// Opens the key, asking `source` for the passphrase if it is encrypted; a plaintext file
    /// opens with a loud warning on stderr.
    pub fn open_with(&self, source: &PassphraseSource) -> Result<NoteSigner, KeyFileError> {
        match self {
            KeyFile::Plain(s) => {
                warn_plaintext(&s.name);
                Ok(s.clone())
            }
            KeyFile::Encrypted { path, name, .. } => {
                let pass = source.get(&format!("Passphrase for {name} ({}): ", path.display()))?;
                self.open(&pass)
            }
        }
    }
}

fn name_from_path(path: &Path) -> String {
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    stem.strip_suffix(".key")
        .or_else(|| stem.strip_suffix(".pem"))
        .unwrap_or(&stem)
        .to_string()
}

/// The deprecation warning for a plaintext key file.
pub fn warn_plaintext(name: &str) {
    eprintln!(
        "WARNING: key {name} is stored UNENCRYPTED (old PRIVATE+KEY format). Anyone who copies \
         the file can sign as its owner, so what it signs is NOT a 21 CFR Part 11 electronic \
         signature (there is no passphrase component). Convert it now: `celltrail key encrypt \
         FILE`. Plaintext key files stop loading in the next release."
    );
}

/// Opens a signer's key file: the passphrase from `CELLTRAIL_PASSPHRASE_FILE`/`_FD` or the
/// terminal; an old plaintext file loads with a warning.
pub fn read_key_file(path: &Path) -> Result<NoteSigner, KeyFileError> {
    KeyFile::load(path)?.open_with(&PassphraseSource::SIGNER)
}

/// As [`read_key_file`] with the passphrase from `source`.
pub fn read_key_file_with(
    path: &Path,
    source: &PassphraseSource,
) -> Result<NoteSigner, KeyFileError> {
    KeyFile::load(path)?.open_with(source)
}

/// `celltrail key encrypt FILE`: replaces a plaintext key file with an encrypted one (same
/// name and key). The new file is written beside it and renamed over it.
pub fn encrypt_in_place(
    path: &Path,
    pass: &Passphrase,
    iterations: u32,
) -> Result<NoteSigner, KeyFileError> {
    let signer = match KeyFile::load(path)? {
        KeyFile::Plain(s) => s,
        KeyFile::Encrypted { .. } => {
            return Err(format_err(path, "already encrypted; nothing to do"));
        }
    };
    let tmp = path.with_extension("key.encrypting");
    let _ = std::fs::remove_file(&tmp);
    write_encrypted_key_file(&tmp, &signer, pass, iterations)?;
    // Check the new file opens to the same key before the old one is replaced.
    let back = KeyFile::load(&tmp)?.open(pass)?;
    if back.to_key_string().as_bytes() != signer.to_key_string().as_bytes() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format_err(
            path,
            "the encrypted copy did not open to the same key",
        ));
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(signer)
}

/// The error for a private key given where a verifier key belongs; names the file, never its text.
fn private_key_given(path: &Path) -> KeyFileError {
    KeyFileError::Format {
        path: path.display().to_string(),
        message: NoteError::PrivateKeyGiven.to_string(),
    }
}

/// Parses a trust-anchor file: one verifier key per line; blank lines and `#` comments ignored.
/// A private key file (any line of it) is refused as a whole, and never echoed.
pub fn parse_trust_anchors(text: &str, path: &Path) -> Result<Vec<NoteVerifier>, KeyFileError> {
    if crate::note::looks_like_private_key(text) {
        return Err(private_key_given(path));
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v = NoteVerifier::from_key_string(line).map_err(|e| KeyFileError::Format {
            path: path.display().to_string(),
            message: format!("line {}: not a verifier key (name+hash+base64): {e}", n + 1),
        })?;
        out.push(v);
    }
    if out.is_empty() {
        return Err(KeyFileError::Format {
            path: path.display().to_string(),
            message: "no admin verifier keys in the trust-anchor file".into(),
        });
    }
    Ok(out)
}

pub fn read_trust_anchors(path: &Path) -> Result<Vec<NoteVerifier>, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    parse_trust_anchors(&text, path)
}

/// Reads a file holding one verifier key (`log.vkey`, keygen's output saved to a file).
pub fn read_verifier_key_file(path: &Path) -> Result<NoteVerifier, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    if crate::note::looks_like_private_key(&text) {
        return Err(private_key_given(path));
    }
    NoteVerifier::from_key_string(text.trim()).map_err(|e| KeyFileError::Format {
        path: path.display().to_string(),
        message: format!("not a verifier key (name+hash+base64): {e}"),
    })
}

/// A command-line value that is a verifier key string or the path of a file holding one.
/// A private key, given as text or as a file, is refused without echoing it; `flag` names
/// the option in the error (e.g. `--vkey`).
pub fn verifier_key_arg(flag: &str, value: &str) -> Result<NoteVerifier, KeyFileError> {
    let bad = |message: String| KeyFileError::Format {
        path: flag.to_string(),
        message,
    };
    if crate::note::looks_like_private_key(value) {
        return Err(bad(NoteError::PrivateKeyGiven.to_string()));
    }
    match NoteVerifier::from_key_string(value.trim()) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = Path::new(value);
            if path.is_file() {
                read_verifier_key_file(path)
            } else if value.trim().is_empty() {
                Err(bad(
                    "is empty: give the verifier key (name+hash+base64, as keygen prints) or the \
                     path of a file holding one"
                        .into(),
                ))
            } else if !value.contains('+') {
                // Every verifier key (and every key this refuses above) has a '+': this was
                // meant as a path, and the file is not there.
                Err(bad(format!(
                    "no such file {value:?}: give the path of the file holding the verifier key \
                     (e.g. DATA_DIR/log.vkey) or the key itself (name+hash+base64, as keygen prints)"
                )))
            } else {
                Err(bad(format!(
                    "neither a verifier key (name+hash+base64, as keygen prints) nor a file holding one: {e}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `verify --log-key demo/log.vkey` with a mistyped path said only that the value was
    /// "neither a verifier key nor a file": it now says the file is not there.
    #[test]
    fn a_missing_verifier_key_file_is_named_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("log.vkey");
        let err = verifier_key_arg("--log-key", missing.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--log-key") && err.contains("no such file") && err.contains("log.vkey"),
            "{err}"
        );
        let err = verifier_key_arg("--log-key", "name+1234+notbase64!")
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither a verifier key"), "{err}");
        let err = verifier_key_arg("--vkey", " ").unwrap_err().to_string();
        assert!(err.contains("--vkey") && err.contains("is empty"), "{err}");
    }

    /// Few iterations: these tests are about the format, not the work factor.
    const TEST_ITERATIONS: u32 = 1_000;

    fn pass() -> Passphrase {
        Passphrase::new_for_encryption("correct horse battery").unwrap()
    }

    #[test]
    fn key_file_is_owner_only_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let s = NoteSigner::generate("nurse.a").unwrap();
        write_key_file(&path, &s).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = read_key_file(&path).unwrap();
        assert_eq!(back.to_key_string(), s.to_key_string());
        assert!(
            write_key_file(&path, &s).is_err(),
            "must not overwrite a key file"
        );
    }

    #[test]
    fn encrypted_key_file_round_trips_and_hides_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nurse.b.key");
        let s = NoteSigner::generate("nurse.b").unwrap();
        write_encrypted_key_file(&path, &s, &pass(), TEST_ITERATIONS).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(
                "celltrail-key-name: nurse.b\n-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
            ),
            "{text}"
        );
        let seed64 =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s.key.as_bytes());
        assert!(!text.contains(&seed64[..20]));
        let kf = KeyFile::load(&path).unwrap();
        assert!(kf.is_encrypted());
        assert_eq!(kf.name(), "nurse.b");
        let back = kf.open(&pass()).unwrap();
        assert_eq!(back.to_key_string(), s.to_key_string());
        assert!(matches!(
            kf.open(&Passphrase::new("correct horse battery!")),
            Err(KeyFileError::WrongPassphrase { .. })
        ));
        assert!(
            write_encrypted_key_file(&path, &s, &pass(), TEST_ITERATIONS).is_err(),
            "must not overwrite a key file"
        );
    }

    #[test]
    fn short_passphrases_are_refused_for_new_keys() {
        assert!(matches!(
            Passphrase::new_for_encryption("elevenchars"),
            Err(KeyFileError::PassphraseTooShort)
        ));
        assert!(Passphrase::new_for_encryption("twelve chars").is_ok());
        let src = PassphraseSource::Given(Passphrase::new("short"));
        let err = new_passphrase(&src, "k").unwrap_err().to_string();
        assert!(err.contains("at least 12"), "{err}");
    }

    #[test]
    fn wrong_passphrase_message_does_not_echo_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.key");
        let s = NoteSigner::generate("x").unwrap();
        write_encrypted_key_file(&path, &s, &pass(), TEST_ITERATIONS).unwrap();
        let err = KeyFile::load(&path)
            .unwrap()
            .open(&Passphrase::new("hunter2-secret-guess"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong passphrase"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(format!("{:?}", pass()), "Passphrase(..)");
    }

    #[test]
    fn passphrase_file_first_line_is_the_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "correct horse battery\nignored\n").unwrap();
        assert_eq!(
            read_passphrase_file(&p).unwrap().expose(),
            "correct horse battery"
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(read_passphrase_file(&p)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn key_encrypt_converts_a_plaintext_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.key");
        let s = NoteSigner::generate("old.nurse").unwrap();
        write_key_file(&path, &s).unwrap();
        assert!(!KeyFile::load(&path).unwrap().is_encrypted());
        encrypt_in_place(&path, &pass(), TEST_ITERATIONS).unwrap();
        let kf = KeyFile::load(&path).unwrap();
        assert!(kf.is_encrypted());
        assert_eq!(kf.open(&pass()).unwrap().to_key_string(), s.to_key_string());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(encrypt_in_place(&path, &pass(), TEST_ITERATIONS)
            .unwrap_err()
            .to_string()
            .contains("already encrypted"));
    }

    #[test]
    fn trust_anchor_errors_name_the_line() {
        let p = Path::new("anchors.txt");
        let good = NoteSigner::generate("admin")
            .unwrap()
            .verifier()
            .to_key_string();
        let text = format!("# admins\n{good}\n\nnot-a-key\n");
        let err = parse_trust_anchors(&text, p).unwrap_err().to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(parse_trust_anchors("# nothing\n", p)
            .unwrap_err()
            .to_string()
            .contains("no admin"));
        assert_eq!(
            parse_trust_anchors(&format!("{good}\n"), p).unwrap().len(),
            1
        );
    }
}
