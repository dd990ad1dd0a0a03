//! `celltrail key list [--json]`: the key registry as the log records it, one row per key:
//! name, role, site, printed name, validity, revocation and the admin who registered it.
//! `rows` is pure (entries of the `keys` chain in, rows out); `run` reads the chain over gRPC.

use prost::Message;
use serde::Serialize;

use crate::pb::{event_body::Detail, EventBody, LogEntry};

/// One registered key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRow {
    pub key_id: String,
    pub role: String,
    pub site: String,
    pub printed_name: String,
    /// RFC 3339 UTC.
    pub valid_from: String,
    /// RFC 3339 UTC, or `None` for no end.
    pub valid_until: Option<String>,
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<String>,
    /// Admin key(s) that signed the registration.
    pub registered_by: Vec<String>,
    /// Log index of the registration.
    pub registered_index: u64,
}

/// The rows of a `keys` chain, in registration order. Entries that do not decode are errors.
pub fn rows(entries: &[(u64, Vec<u8>)]) -> Result<Vec<KeyRow>, String> {
    let mut out: Vec<KeyRow> = Vec::new();
    for (index, bytes) in entries {
        let entry = LogEntry::decode(bytes.as_slice())
            .map_err(|e| format!("keys chain entry {index} does not decode: {e}"))?;
        let body = EventBody::decode(entry.body.as_slice())
            .map_err(|e| format!("keys chain entry {index} body does not decode: {e}"))?;
        match body.detail {
            Some(Detail::KeyRegistered(r)) => out.push(KeyRow {
                key_id: r.key_id,
                role: r.role,
                site: r.site,
                printed_name: r.printed_name,
                valid_from: crate::time::rfc3339(r.valid_from_unix_nanos),
                valid_until: (r.valid_until_unix_nanos != 0)
                    .then(|| crate::time::rfc3339(r.valid_until_unix_nanos)),
                revoked_at: None,
                revoke_reason: None,
                registered_by: entry.signatures.iter().map(|s| s.key_id.clone()).collect(),
                registered_index: *index,
            }),
            Some(Detail::KeyRevoked(r)) => {
                if let Some(row) = out.iter_mut().find(|k| k.key_id == r.key_id) {
                    row.revoked_at = Some(crate::time::rfc3339(r.revoked_at_unix_nanos));
                    row.revoke_reason = Some(r.reason);
                }
            }
            // A policy table activation is an admin record on the same chain, not a key.
            Some(Detail::PolicyActivated(_)) => {}
            _ => return Err(format!("keys chain entry {index} is not a key event")),
        }
    }
    Ok(out)
}

/// Renders the rows as an aligned table.
pub fn text(rows: &[KeyRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:<16} {:<14} {:<24} {:<20} {:<20} {:<20} registered by",
        "key", "role", "site", "printed name", "valid from", "valid until", "revoked at"
    );
    let secs = |t: &str| {
        t.split('.')
            .next()
            .unwrap_or(t)
            .trim_end_matches('Z')
            .to_string()
            + "Z"
    };
    for r in rows {
        let _ = writeln!(
            s,
            "{:<24} {:<16} {:<14} {:<24} {:<20} {:<20} {:<20} {}",
            r.key_id,
            r.role,
            r.site,
            r.printed_name,
            secs(&r.valid_from),
            r.valid_until.as_deref().map_or("-".into(), secs),
            r.revoked_at.as_deref().map_or("-".into(), secs),
            r.registered_by.join(", ")
        );
    }
    s
}

/// `celltrail key list`: reads the `keys` chain and prints it.
pub async fn run(server: &crate::client::ServerArg, json: bool) -> anyhow::Result<()> {
    let mut c = server.connect().await?;
    let entries = match crate::client::get_whole_chain(&mut c, crate::registry::KEYS_CHAIN).await {
        Ok(r) => r.entries.into_iter().map(|e| (e.index, e.entry)).collect(),
        Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
        Err(s) => return Err(crate::client::status_error(s)),
    };
    let rows = rows(&entries).map_err(|e| anyhow::anyhow!(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("the key registry is empty");
    } else {
        print!("{}", text(&rows));
    }
    Ok(())
}
