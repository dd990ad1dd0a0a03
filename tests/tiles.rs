//! `serve --tiles ADDR` serves the log as C2SP tlog-tiles, read here over real HTTP by
//! Cloudflare's independent `tlog_tiles` implementation: its `TileHashReader` authenticates
//! every tile against the signed checkpoint's root, then proves inclusion of entries whose
//! bytes come from the entry bundles, and consistency with an earlier checkpoint.

mod common;
mod realproc;

use celltrail::note::{Checkpoint, NoteVerifier};
use realproc::{admin_key, Appender};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tlog_tiles::{Hash, Tile, TileHashReader, TileReader};

/// A blocking HTTP/1.1 GET: (status, body).
fn get(base: &str, path: &str) -> (u16, Vec<u8>) {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, raw[split + 4..].to_vec())
}

/// C2SP tile path (no height element) of a `tlog_tiles` tile of height 8.
fn c2sp_path(t: &Tile) -> String {
    let go = t.path(); // tile/8/<L>/<N>[.p/<W>]
    format!("tile/{}", go.strip_prefix("tile/8/").unwrap())
}

struct HttpTiles(String);

impl TileReader for HttpTiles {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        Ok(tiles
            .iter()
            .map(|t| {
                let (status, body) = get(&self.0, &c2sp_path(t));
                assert_eq!(status, 200, "{}", c2sp_path(t));
                body
            })
            .collect())
    }
    fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
}

/// The checkpoint served at /checkpoint, opened with the log key.
fn checkpoint(base: &str, key: &NoteVerifier) -> Checkpoint {
    let (status, body) = get(base, "checkpoint");
    assert_eq!(status, 200);
    let note = String::from_utf8(body).unwrap();
    let opened = celltrail::note::open_note(&note, std::slice::from_ref(key)).unwrap();
    Checkpoint::parse(&opened.text).unwrap()
}

#[tokio::test]
async fn generic_tlog_tiles_client_reads_and_proves_the_served_log() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    let p = realproc::Serve::new()
        .data_dir(&dir)
        .args(["--tiles", "127.0.0.1:0"])
        .start();
    let line = p.wait_for_line(
        |l| l.starts_with("celltrail tlog-tiles on http://"),
        Duration::from_secs(5),
    );
    let base = line
        .strip_prefix("celltrail tlog-tiles on ")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let key = NoteVerifier::from_key_string(
        std::fs::read_to_string(dir.join("log.vkey"))
            .unwrap()
            .trim(),
    )
    .unwrap();

    // A log of a few hundred entries: full and partial tiles at level 0, a partial level 1.
    let mut c = p.client().await;
    let admin = admin_key(&dir);
    let nurse = celltrail::note::NoteSigner::generate("nurse.tiles").unwrap();
    common::register(&mut c, &admin, &nurse, "apheresis_nurse", "HOSP-A").await;
    let mut a = Appender::new("BAG-TILES".into(), nurse.clone());
    let early = a
        .run(&mut c, Instant::now() + Duration::from_millis(100))
        .await;
    assert!(early > 0);
    let old = checkpoint(&base, &key);
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&base, &key).size < 300 {
        assert!(Instant::now() < deadline, "the log did not grow");
        a.run(&mut c, Instant::now() + Duration::from_millis(300))
            .await;
    }
    let cp = checkpoint(&base, &key);
    assert_eq!(cp.origin, key.name);

    let base2 = base.clone();
    let (size, root_hash, old_size, old_root) = (cp.size, cp.root, old.size, old.root);
    tokio::task::spawn_blocking(move || {
        let tiles = HttpTiles(base2.clone());
        let th = Hash(root_hash);
        let reader = TileHashReader::new(size, th, &tiles);
        // The tree hash recomputed from the tiles is the signed root.
        assert_eq!(tlog_tiles::tree_hash(size, &reader).unwrap(), th);
        // Inclusion of entries taken from the entry bundles, by the independent prover.
        for index in [0, 1, 255, 256, size - 1] {
            let n = index / 256;
            let full = (n + 1) * 256 <= size;
            let path = match full {
                true => format!(
                    "tile/entries/{}",
                    c2sp_path(&Tile::new(8, 0, n, 256, false)).trim_start_matches("tile/0/")
                ),
                false => format!(
                    "tile/entries/{}",
                    c2sp_path(&Tile::new(8, 0, n, (size - n * 256) as u32, false))
                        .trim_start_matches("tile/0/")
                ),
            };
            let (status, bundle) = get(&base2, &path);
            assert_eq!(status, 200, "{path}");
            // Walk the uint16 length-prefixed entries to the one wanted.
            let mut at = 0;
            let mut entry = &bundle[..0];
            for _ in 0..=(index % 256) {
                let len = u16::from_be_bytes([bundle[at], bundle[at + 1]]) as usize;
                entry = &bundle[at + 2..at + 2 + len];
                at += 2 + len;
            }
            let proof = tlog_tiles::prove_record(size, index, &reader).unwrap();
            tlog_tiles::check_record(&proof, size, th, index, tlog_tiles::record_hash(entry))
                .unwrap();
            let e = <celltrail::pb::LogEntry as prost::Message>::decode(entry).unwrap();
            assert_eq!(e.index, index);
        }
        // Consistency with the earlier checkpoint, proven from the tiles.
        let proof = tlog_tiles::prove_tree(size, old_size, &reader).unwrap();
        tlog_tiles::check_tree(&proof, size, th, old_size, Hash(old_root)).unwrap();
        // Tiles the tree does not cover are 404; malformed paths 400.
        assert_eq!(get(&base2, "tile/0/x001/000").0, 404);
        assert_eq!(get(&base2, "tile/0/1").0, 400);
        assert_eq!(get(&base2, "tile/2/000").0, 404);
    })
    .await
    .unwrap();
}
