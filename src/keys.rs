//! Key files on disk: a signer's private key in the C2SP note signer-key format
//! (`PRIVATE+KEY+name+hash+base64`), written with 0600 permissions, and trust-anchor files
//! (one C2SP verifier key per line, `#` comments).

use crate::note::{NoteSigner, NoteVerifier};
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
        path: path.display().to_string(),
        source,
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

/// Parses a trust-anchor file: one verifier key per line; blank lines and `#` comments ignored.
pub fn parse_trust_anchors(text: &str, path: &Path) -> Result<Vec<NoteVerifier>, KeyFileError> {
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
