//! Key files on disk: a signer's private key in the C2SP note signer-key format
//! (`PRIVATE+KEY+name+hash+base64`), written with 0600 permissions, and trust-anchor files
//! (one C2SP verifier key per line, `#` comments).

use crate::note::{NoteError, NoteSigner, NoteVerifier};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
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

/// Writes a new key file readable only by its owner. Refuses to overwrite an existing file.
pub fn write_key_file(path: &Path, signer: &NoteSigner) -> Result<(), KeyFileError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    writeln!(f, "{}", signer.to_key_string()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

pub fn read_key_file(path: &Path) -> Result<NoteSigner, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    NoteSigner::from_key_string(text.trim()).map_err(|e| KeyFileError::Format {
        path: path.display().to_string(),
        message: format!("not a celltrail key file (PRIVATE+KEY+...): {e}"),
    })
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
