//! `serve --tiles ADDR`: the log as a C2SP tlog-tiles HTTP API (c2sp.org/tlog-tiles), so
//! generic transparency-log tooling can read it: `GET /checkpoint` (the latest signed
//! checkpoint), `GET /tile/<L>/<N>[.p/<W>]` (256 Merkle Tree Hashes per full tile: at level L,
//! hash i of tile N is the perfect subtree of 256^L entries at position N·256+i, i.e. the
//! stored node at height 8·L) and `GET /tile/entries/<N>[.p/<W>]` (entry bundles: each entry
//! as a big-endian uint16 length and the exact stored `LogEntry` bytes, the Merkle leaf).
//! Read-only over the store; every answer is computed from stored perfect-subtree hashes and
//! entries, which never change once the tree covers them, so any tile the current tree covers
//! is served (partial ones too).

use crate::storage::Storage;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Hashes per full tile and entries per full bundle.
pub const TILE_WIDTH: u64 = 256;

/// What a tile path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRef {
    /// `None` for an entry bundle, else the tile level (0..=63).
    pub level: Option<u8>,
    pub index: u64,
    /// 1..=256 (256: a full tile).
    pub width: u64,
}

/// Parses `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]` (the part after `tile/`).
pub fn parse_path(path: &str) -> Result<TileRef, String> {
    let bad = || format!("malformed tile path: tile/{path}");
    let (level, rest) = path.split_once('/').ok_or_else(bad)?;
    let level = match level {
        "entries" => None,
        l => {
            let v: u8 = l.parse().map_err(|_| bad())?;
            if v > 63 || l != v.to_string() {
                return Err(bad());
            }
            Some(v)
        }
    };
    let (n, width) = match rest.split_once(".p/") {
        Some((n, w)) => {
            let v: u64 = w.parse().map_err(|_| bad())?;
            if !(1..TILE_WIDTH).contains(&v) || w != v.to_string() {
                return Err(bad());
            }
            (n, v)
        }
        None => (rest, TILE_WIDTH),
    };
    let parts: Vec<&str> = n.split('/').collect();
    let mut index: u64 = 0;
    for (i, p) in parts.iter().enumerate() {
        let digits = match i + 1 == parts.len() {
            true => *p,
            false => p.strip_prefix('x').ok_or_else(bad)?,
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        index = index
            .checked_mul(1000)
            .and_then(|x| x.checked_add(digits.parse::<u64>().expect("3 digits")))
            .ok_or_else(bad)?;
    }
    // Canonical only: no leading zero element (`x000/001` is `001`).
    if parts.len() > 7 || (parts.len() > 1 && parts[0] == "x000") {
        return Err(bad());
    }
    Ok(TileRef {
        level,
        index,
        width,
    })
}

/// The path of a tile (`<L>/<N>[.p/<W>]`, or `entries/…`), as `parse_path` reads it.
pub fn path_of(t: &TileRef) -> String {
    let mut n = format!("{:03}", t.index % 1000);
    let mut rest = t.index / 1000;
    while rest > 0 {
        n = format!("x{:03}/{n}", rest % 1000);
        rest /= 1000;
    }
    let level = t.level.map_or("entries".to_string(), |l| l.to_string());
    match t.width == TILE_WIDTH {
        true => format!("{level}/{n}"),
        false => format!("{level}/{n}.p/{}", t.width),
    }
}

/// The bytes of a tile or entry bundle of the tree of `size`; `Ok(None)` when that tree does
/// not cover it (404).
pub fn read(store: &dyn Storage, size: u64, t: &TileRef) -> Result<Option<Vec<u8>>, String> {
    let level = u32::from(t.level.unwrap_or(0));
    // Complete nodes at height 8·level in the tree.
    let nodes = match 8 * level {
        h if h >= 64 => 0,
        h => size >> h,
    };
    let first = t
        .index
        .checked_mul(TILE_WIDTH)
        .ok_or("tile index too large")?;
    let end = first.checked_add(t.width).ok_or("tile index too large")?;
    if end > nodes {
        return Ok(None);
    }
    let mut out = Vec::new();
    for i in first..end {
        match t.level {
            Some(_) => {
                let h = store
                    .node(8 * level, i)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("Merkle node ({}, {i}) is missing", 8 * level))?;
                out.extend_from_slice(&h);
            }
            None => {
                let e = store
                    .entry(i)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("entry {i} is missing"))?;
                let len = u16::try_from(e.len()).map_err(|_| {
                    format!(
                        "entry {i} is {} bytes, more than an entry bundle's 65535",
                        e.len()
                    )
                })?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&e);
            }
        }
    }
    Ok(Some(out))
}

type Shared = Arc<dyn Storage>;

async fn checkpoint(State(store): State<Shared>) -> Response {
    match tokio::task::spawn_blocking(move || store.checkpoint()).await {
        Ok(Ok(Some(note))) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache, max-age=2"),
            ],
            note,
        )
            .into_response(),
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "the log is empty\n").into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn tile(State(store): State<Shared>, Path(path): Path<String>) -> Response {
    let t = match parse_path(&path) {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let got = tokio::task::spawn_blocking(move || {
        let size = store.tree_size().map_err(|e| e.to_string())?;
        read(store.as_ref(), size, &t)
    })
    .await;
    match got {
        Ok(Ok(Some(bytes))) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            bytes,
        )
            .into_response(),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            format!("tile/{path}: the log's tree does not cover it (yet)\n"),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The tlog-tiles routes over `store`.
pub fn router(store: Arc<dyn Storage>) -> axum::Router {
    axum::Router::new()
        .route("/checkpoint", axum::routing::get(checkpoint))
        .route("/tile/{*path}", axum::routing::get(tile))
        .with_state(store)
}

/// Serves the tlog-tiles API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, store: Arc<dyn Storage>) {
    if let Err(e) = axum::serve(listener, router(store)).await {
        tracing::error!(error = %e, "tlog-tiles server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any request path parses or is refused without a panic; what parses prints back
        /// to itself.
        #[test]
        fn tile_path_parser_never_panics(path in proptest::prop_oneof![
            proptest::prelude::any::<String>(),
            "(entries|[0-9]{1,3})(/x[0-9]{3}){0,8}/[0-9]{3}(\\.p/[0-9]{1,4})?",
        ]) {
            if let Ok(t) = parse_path(&path) {
                proptest::prop_assert_eq!(path_of(&t), path);
            }
        }
    }

    #[test]
    fn tile_paths_round_trip_and_malformed_ones_are_refused() {
        for (path, t) in [
            ("0/000", (Some(0), 0, 256)),
            ("1/x001/x234/067", (Some(1), 1_234_067, 256)),
            ("2/000.p/1", (Some(2), 0, 1)),
            ("entries/x001/000.p/112", (None, 1000, 112)),
        ] {
            let want = TileRef {
                level: t.0,
                index: t.1,
                width: t.2,
            };
            assert_eq!(parse_path(path).unwrap(), want, "{path}");
            assert_eq!(path_of(&want), path);
        }
        for bad in [
            "0/0",
            "0/1234",
            "00/000",
            "64/000",
            "0/001/002",
            "0/x001",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/01",
            "entries",
            "0/abc",
            "data/000",
        ] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }
}
