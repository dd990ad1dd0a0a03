//! Storage experiment: writes N synthetic entries through `Store::commit` in groups the way the
//! writer does (no gRPC, no signatures) and prints disk bytes vs raw entry bytes.
//! `cargo run --release --example store_space -- write DIR N` then `... open DIR` (RSS of a
//! fresh process that opens the store and reads its size).
use celltrail::rules::Head;
use celltrail::storage::{Group, NewEntry, Storage};
use celltrail::store::Store;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

#[path = "../benches/support/measure.rs"]
mod measure;
use measure::du;

fn rss_kib() -> u64 {
    measure::rss_kib("self")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[2]);
    if args[1] == "open" {
        let t = std::time::Instant::now();
        let s = Store::open(&dir).unwrap();
        let size = s.tree_size().unwrap();
        let _ = s.entry(size / 2).unwrap();
        println!(
            "open: tree_size {size} in {:.2?}, RSS {} MiB",
            t.elapsed(),
            rss_kib() / 1024
        );
        // A lookup by hash probes every run of the hash index: time the worst case (absent).
        let t = std::time::Instant::now();
        let n = 20;
        for i in 0..n {
            let absent = celltrail::crypto::EventHash([i as u8; 32]);
            assert_eq!(s.index_of_hash(&absent).unwrap(), None);
        }
        println!(
            "index_of_hash (absent, all runs probed): {:.2?} each",
            t.elapsed() / n
        );
        return;
    }
    let n: u64 = args[3].parse().unwrap();
    let group: u64 = std::env::var("GROUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let chains = 1000u64;
    let per_chain = n / chains;
    let store = Store::open(&dir).unwrap();
    let mut nodes: HashMap<(u32, u64), [u8; 32]> = HashMap::new();
    let mut raw = 0u64;
    let mut prev: HashMap<u64, [u8; 32]> = HashMap::new();
    let mut index = 0u64;
    let t = std::time::Instant::now();
    // 4 streams, each walking its chains one after another, interleaved in a group.
    let order: Vec<(u64, u64)> = {
        let mut streams: Vec<Vec<(u64, u64)>> = (0..4)
            .map(|s| {
                (s..chains)
                    .step_by(4)
                    .flat_map(|c| (0..per_chain).map(move |q| (c, q)))
                    .collect()
            })
            .collect();
        let mut out = Vec::new();
        let len = streams[0].len();
        for i in 0..len {
            for s in streams.iter_mut() {
                if i < s.len() {
                    out.push(s[i]);
                }
            }
        }
        out
    };
    for chunk in order.chunks(group as usize) {
        let mut batch = Group::default();
        let mut heads = HashMap::new();
        for &(c, q) in chunk {
            let mut bytes = vec![0u8; 326];
            let mut h = Sha256::new();
            h.update(index.to_be_bytes());
            let seed = h.finalize();
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = if i < 160 {
                    seed[i % 32] ^ (i as u8)
                } else {
                    b"M0001 HOSP-A collected S1234000 A999926123456 nurse-1 witness "[i % 60]
                };
            }
            raw += bytes.len() as u64;
            let hash: [u8; 32] = Sha256::digest(&bytes).into();
            let leaf = celltrail::merkle::leaf_hash(&bytes);
            let done = celltrail::merkle::nodes_completed_by_append(index, leaf, |l, i| {
                Ok::<_, ()>(nodes[&(l, i)])
            })
            .unwrap();
            for (id, h) in &done {
                nodes.insert(*id, *h);
                batch.nodes.push((*id, *h));
            }
            let chain_id = format!("M{c:04}");
            heads.insert(
                chain_id.clone(),
                Head {
                    seq: q,
                    hash,
                    state_name: "collected".into(),
                    state: None,
                    hold: Vec::new(),
                },
            );
            prev.insert(c, hash);
            batch.entries.push(NewEntry {
                index,
                bytes,
                event_hash: celltrail::crypto::EventHash(hash),
                chain_id,
                seq: q,
            });
            index += 1;
        }
        batch.heads = heads.into_iter().collect();
        batch.tree_size = index;
        batch.checkpoint = Some("x".repeat(300));
        store.commit(&batch).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let disk = du(&dir);
    println!(
        "write: {index} entries in {secs:.1}s ({:.0}/s), group {group}, raw {:.1} MB, disk {:.1} MB = {:.2}x, RSS {} MiB",
        index as f64 / secs,
        raw as f64 / 1e6,
        disk as f64 / 1e6,
        disk as f64 / raw as f64,
        rss_kib() / 1024
    );
    drop(store);
    let disk2 = du(&dir);
    println!(
        "after close: disk {:.1} MB = {:.2}x",
        disk2 as f64 / 1e6,
        disk2 as f64 / raw as f64
    );
}
