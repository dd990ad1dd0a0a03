//! The tests every [`Storage`] backend must pass, written once against the trait. A backend
//! runs them all with one line in an integration test:
//!
//! ```ignore
//! celltrail::storage_suite!(|dir: &std::path::Path| -> Box<dyn celltrail::storage::Storage> {
//!     Box::new(celltrail::store::Store::open(dir).unwrap())
//! });
//! ```
//!
//! `open(dir)` must open (creating if new) the backend's store for directory `dir`; opening the
//! same `dir` again must give the same data (the durability cases reopen). A backend that does
//! not live in a directory (a database server) may derive its database name from `dir`. The
//! macro gives each case a new temporary directory (the test crate needs `tempfile`).

use super::{Group, Hash, NewEntry, Storage};
use crate::crypto::EventHash;
use crate::merkle;
use crate::pb::{event_body::Detail, Collected, EventBody, LogEntry, ManufacturingStep};
use crate::rules::{bags_named, Head};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// How the suite opens a backend (see the module documentation).
pub type Open<'a> = &'a dyn Fn(&Path) -> Box<dyn Storage>;

/// Builds well-formed groups the way the ledger's writer does: consecutive indices, chain
/// heads, the Merkle nodes each entry completes, first mentions of bags, a checkpoint text.
#[derive(Default)]
pub struct Builder {
    size: u64,
    nodes: HashMap<(u32, u64), Hash>,
    heads: HashMap<String, Head>,
    bags: Vec<(String, String)>,
    /// Every entry so far, in index order: (bytes, event hash, chain id, seq).
    pub entries: Vec<(Vec<u8>, EventHash, String, u64)>,
}

impl Builder {
    /// A group appending one event to each chain in `chains`, in order. A chain id of the
    /// form `C` names no bag; every fourth event collects bag `BAG-<index>`, and an event of
    /// chain `MFG…` makes product bag `P-<chain>`.
    pub fn group(&mut self, chains: &[&str]) -> Group {
        let mut g = Group::default();
        let mut group_heads: Vec<String> = Vec::new();
        for chain in chains {
            let index = self.size;
            let seq = self.heads.get(*chain).map_or(0, |h| h.seq + 1);
            let detail = if chain.starts_with("MFG") {
                Some(Detail::ManufacturingStep(ManufacturingStep {
                    product_bag_ids: vec![format!("P-{chain}")],
                    ..Default::default()
                }))
            } else if index.is_multiple_of(4) {
                Some(Detail::Collected(Collected {
                    din: format!("BAG-{index}"),
                    ..Default::default()
                }))
            } else {
                None
            };
            let body = EventBody {
                chain_id: chain.to_string(),
                seq,
                prev_hash: self
                    .heads
                    .get(*chain)
                    .map_or(vec![0; 32], |h| h.hash.to_vec()),
                detail,
                ..Default::default()
            };
            let body_bytes = body.encode_to_vec();
            let hash = EventHash::of_body(&body_bytes);
            let bytes = LogEntry {
                body: body_bytes,
                index,
                accepted_at_unix_nanos: 1 + index as i64,
                ..Default::default()
            }
            .encode_to_vec();
            let leaf = merkle::leaf_hash(&bytes);
            let completed = merkle::nodes_completed_by_append(index, leaf, |l, i| {
                self.nodes.get(&(l, i)).copied().ok_or(())
            })
            .expect("every node below a completed one exists");
            for (id, h) in completed {
                self.nodes.insert(id, h);
                g.nodes.push((id, h));
            }
            for bag in bags_named(&body) {
                let pair = (bag.to_string(), chain.to_string());
                if !self.bags.contains(&pair) {
                    self.bags.push(pair);
                    g.bags.push((bag.to_string(), chain.to_string(), index));
                }
            }
            let head = Head {
                seq,
                hash: hash.0,
                state_name: format!("S{seq}"),
                state: None,
                hold: Vec::new(),
            };
            self.heads.insert(chain.to_string(), head);
            if !group_heads.iter().any(|c| c == chain) {
                group_heads.push(chain.to_string());
            }
            g.entries.push(NewEntry {
                index,
                bytes: bytes.clone(),
                event_hash: hash,
                chain_id: chain.to_string(),
                seq,
            });
            self.entries.push((bytes, hash, chain.to_string(), seq));
            self.size += 1;
        }
        g.heads = group_heads
            .into_iter()
            .map(|c| {
                let h = self.heads[&c].clone();
                (c, h)
            })
            .collect();
        g.tree_size = self.size;
        g.checkpoint = Some(format!("checkpoint at {}\n", self.size));
        g
    }

    /// The Merkle leaves of every entry so far.
    pub fn leaves(&self) -> Vec<Hash> {
        self.entries
            .iter()
            .map(|(b, ..)| merkle::leaf_hash(b))
            .collect()
    }

    pub fn head(&self, chain: &str) -> Option<&Head> {
        self.heads.get(chain)
    }
}

/// Checks every read of `s` against what `b` wrote.
pub fn assert_reads_match(s: &dyn Storage, b: &Builder) {
    let size = b.entries.len() as u64;
    assert_eq!(s.tree_size().unwrap(), size, "tree size");
    let cut = s.cut().unwrap();
    assert_eq!(cut.tree_size, size);
    assert_eq!(
        cut.checkpoint,
        (size > 0).then(|| format!("checkpoint at {size}\n"))
    );
    let mut by_chain: HashMap<&str, Vec<u64>> = HashMap::new();
    for (i, (bytes, hash, chain, seq)) in b.entries.iter().enumerate() {
        let i = i as u64;
        assert_eq!(
            s.entry(i).unwrap().as_deref(),
            Some(&bytes[..]),
            "entry {i}"
        );
        assert_eq!(
            s.index_of_hash(hash).unwrap(),
            Some(i),
            "index of entry {i}"
        );
        assert_eq!(
            s.chain_event(chain, *seq).unwrap(),
            Some(i),
            "chain event {i}"
        );
        if let Some(leaf) = s.recorded_leaf(i).unwrap() {
            assert_eq!(leaf, merkle::leaf_hash(bytes), "recorded leaf {i}");
        }
        by_chain.entry(chain).or_default().push(i);
    }
    assert_eq!(s.entry(size).unwrap(), None, "no entry past the end");
    assert_eq!(
        s.index_of_hash(&EventHash([0xee; 32])).unwrap(),
        None,
        "unknown hash"
    );
    let mut ids: Vec<String> = by_chain.keys().map(|c| c.to_string()).collect();
    ids.sort();
    assert_eq!(s.chain_ids().unwrap(), ids);
    for (chain, indices) in &by_chain {
        assert_eq!(&s.chain_indices(chain).unwrap(), indices, "chain {chain}");
        assert_eq!(
            s.head(chain).unwrap().as_ref(),
            b.head(chain),
            "head {chain}"
        );
        assert_eq!(
            s.chain_event(chain, indices.len() as u64).unwrap(),
            None,
            "no event past the head of {chain}"
        );
    }
    assert_eq!(s.head("no-such-chain").unwrap(), None);
    let all = s.entries_from(0, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, size);
    for (k, (i, bytes)) in all.iter().enumerate() {
        assert_eq!(*i, k as u64);
        assert_eq!(bytes, &b.entries[k].0);
    }
    if size > 2 {
        let page = s.entries_from(1, 2).unwrap();
        assert_eq!(page.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2]);
    }
    let leaves = b.leaves();
    for level in 0..12u32 {
        let width = 1u64 << level;
        for index in 0..=(size / width) {
            let want = ((index + 1) * width <= size).then(|| {
                merkle::root(&leaves[(index * width) as usize..((index + 1) * width) as usize])
            });
            assert_eq!(
                s.node(level, index).unwrap(),
                want,
                "node ({level},{index})"
            );
        }
    }
    assert_eq!(
        merkle::root_at(size, |l, i| s.node(l, i).map(|h| h.expect("node exists"))).unwrap(),
        merkle::root(&leaves),
        "root at {size}"
    );
}

/// An empty store answers every read with nothing.
pub fn empty_store_answers_nothing(open: Open, dir: &Path) {
    let s = open(dir);
    assert_eq!(s.tree_size().unwrap(), 0);
    assert_eq!(s.checkpoint().unwrap(), None);
    assert_eq!(s.entry(0).unwrap(), None);
    assert!(s.entries_from(0, 10).unwrap().is_empty());
    assert_eq!(s.head("A").unwrap(), None);
    assert!(s.chain_ids().unwrap().is_empty());
    assert!(s.chain_indices("A").unwrap().is_empty());
    assert_eq!(s.chain_event("A", 0).unwrap(), None);
    assert_eq!(s.index_of_hash(&EventHash([1; 32])).unwrap(), None);
    assert!(s.chains_of_bag("BAG-0").unwrap().is_empty());
    assert!(!s.bag_in_chain("BAG-0", "A").unwrap());
    assert_eq!(s.node(0, 0).unwrap(), None);
    assert_eq!(s.node(4, 0).unwrap(), None);
    assert_eq!(s.meta("anything").unwrap(), None);
    assert_eq!(s.cut().unwrap().tree_size, 0);
}

/// Groups commit and every index answers for them; reopening gives the same answers.
pub fn committed_groups_are_readable_and_survive_reopen(open: Open, dir: &Path) {
    let mut b = Builder::default();
    {
        let s = open(dir);
        // Groups of several sizes across block and run boundaries: 1, 3, 15, 16, 17 and more.
        let chains = ["A", "B", "AB", "MFG-1", "C"];
        for n in [1usize, 3, 15, 16, 17, 40, 2] {
            let names: Vec<&str> = (0..n).map(|k| chains[k % chains.len()]).collect();
            let g = b.group(&names);
            s.commit(&g).unwrap();
            assert_reads_match(s.as_ref(), &b);
        }
    }
    let s = open(dir);
    assert_reads_match(s.as_ref(), &b);
}

/// A chain id that is a prefix of another never sees the other's events, and a bag id that is a
/// prefix of another never matches it.
pub fn prefixes_do_not_leak(open: Open, dir: &Path) {
    let s = open(dir);
    let mut b = Builder::default();
    let g = b.group(&["A", "AB", "A", "AB", "ABC"]);
    s.commit(&g).unwrap();
    assert_eq!(s.chain_indices("A").unwrap(), [0, 2]);
    assert_eq!(s.chain_indices("AB").unwrap(), [1, 3]);
    assert_eq!(s.chain_indices("ABC").unwrap(), [4]);
    // BAG-0 (entry 0) and BAG-4 (entry 4) are collected; BAG- is a prefix of both.
    assert_eq!(s.chains_of_bag("BAG-0").unwrap(), ["A"]);
    assert_eq!(s.chains_of_bag("BAG-4").unwrap(), ["ABC"]);
    assert!(s.chains_of_bag("BAG-").unwrap().is_empty());
    assert!(s.bag_in_chain("BAG-0", "A").unwrap());
    assert!(!s.bag_in_chain("BAG-0", "AB").unwrap());
}

/// Bags: every chain that names a bag is found, in byte order.
pub fn bags_map_to_every_chain_that_names_them(open: Open, dir: &Path) {
    let s = open(dir);
    let mut g = Builder::default().group(&["X"]);
    g.bags = vec![
        ("P-1".into(), "Z".into(), 0),
        ("P-1".into(), "B".into(), 0),
        ("P-10".into(), "Q".into(), 0),
    ];
    s.commit(&g).unwrap();
    assert_eq!(s.chains_of_bag("P-1").unwrap(), ["B", "Z"]);
    assert_eq!(s.chains_of_bag("P-10").unwrap(), ["Q"]);
    assert!(s.bag_in_chain("P-1", "Z").unwrap());
}

/// Meta values set by a group are read back, after a reopen too; later groups overwrite them.
pub fn meta_values_round_trip(open: Open, dir: &Path) {
    let mut b = Builder::default();
    {
        let s = open(dir);
        let mut g = b.group(&["A"]);
        g.meta = vec![("policy".into(), b"v1".to_vec()), ("x".into(), vec![])];
        s.commit(&g).unwrap();
        assert_eq!(s.meta("policy").unwrap().as_deref(), Some(&b"v1"[..]));
        let mut g = b.group(&["A"]);
        g.meta = vec![("policy".into(), b"v2".to_vec())];
        s.commit(&g).unwrap();
    }
    let s = open(dir);
    assert_eq!(s.meta("policy").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(s.meta("x").unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(
        s.meta("tree_size").unwrap(),
        None,
        "meta keys are not internal keys"
    );
}

/// A log of more than 1,024 entries (where backends often change layout: runs, blocks) is
/// still read back exactly.
pub fn a_log_past_a_thousand_entries_reads_back(open: Open, dir: &Path) {
    let s = open(dir);
    let mut b = Builder::default();
    let chains = ["A", "B", "C", "D", "E", "F", "G"];
    while b.entries.len() < 1100 {
        let names: Vec<&str> = (0..100).map(|k| chains[k % chains.len()]).collect();
        s.commit(&b.group(&names)).unwrap();
    }
    assert_reads_match(s.as_ref(), &b);
}

/// A head keeps the reasons of its open hold until a later group clears them; a chain's stored
/// summary is read back as written, and a chain without one is listed from its head (the keys
/// and log-link chains never). All of it survives a reopen.
pub fn holds_and_summaries_round_trip(open: Open, dir: &Path) {
    use crate::summary::{ChainSummary, HoldSummary};
    let mut b = Builder::default();
    let reasons = vec!["temperature_range: logger recorded 3.5..14.5 C".to_string()];
    let summary = ChainSummary {
        hold: Some(HoldSummary {
            opened_seq: 0,
            opened_at_unix_nanos: 7,
            reasons: reasons.clone(),
        }),
        coi_ref: "COI-1".into(),
        dins: vec!["BAG-0".into()],
        ..ChainSummary::from_head("A", "S0", 0)
    };
    {
        let s = open(dir);
        let keys = crate::registry::KEYS_CHAIN;
        let links = crate::loglink::LOG_CHAIN;
        let mut g = b.group(&["A", "B", keys, links]);
        g.heads[0].1.hold = reasons.clone();
        g.summaries = vec![("A".into(), summary.clone())];
        s.commit(&g).unwrap();
        assert_eq!(s.head("A").unwrap().unwrap().hold, reasons);
        assert!(s.head("B").unwrap().unwrap().hold.is_empty());
        assert_eq!(s.chain_summary("A").unwrap(), Some(summary.clone()));
        assert_eq!(s.chain_summary("B").unwrap(), None);
    }
    let s = open(dir);
    assert_eq!(s.head("A").unwrap().unwrap().hold, reasons);
    assert_eq!(
        s.chain_summaries().unwrap(),
        [summary.clone(), ChainSummary::from_head("B", "S0", 0)]
    );
    // The hold is released: the next head carries no reasons, the summary is rewritten.
    let mut g = b.group(&["A"]);
    let released = ChainSummary {
        hold: None,
        ..ChainSummary::from_head("A", "S1", 1)
    };
    g.summaries = vec![("A".into(), released.clone())];
    s.commit(&g).unwrap();
    assert!(s.head("A").unwrap().unwrap().hold.is_empty());
    assert_eq!(s.chain_summary("A").unwrap(), Some(released));
}

/// Runs every case of the suite against one backend: `storage_suite!(open)` in a test file.
#[macro_export]
macro_rules! storage_suite {
    ($open:expr) => {
        #[test]
        fn storage_empty_store_answers_nothing() {
            $crate::storage::suite::empty_store_answers_nothing(
                &$open,
                tempfile::tempdir().unwrap().path(),
            );
        }
        #[test]
        fn storage_committed_groups_are_readable_and_survive_reopen() {
            $crate::storage::suite::committed_groups_are_readable_and_survive_reopen(
                &$open,
                tempfile::tempdir().unwrap().path(),
            );
        }
        #[test]
        fn storage_prefixes_do_not_leak() {
            $crate::storage::suite::prefixes_do_not_leak(
                &$open,
                tempfile::tempdir().unwrap().path(),
            );
        }
        #[test]
        fn storage_bags_map_to_every_chain_that_names_them() {
            $crate::storage::suite::bags_map_to_every_chain_that_names_them(
                &$open,
                tempfile::tempdir().unwrap().path(),
            );
        }
        #[test]
        fn storage_meta_values_round_trip() {
            $crate::storage::suite::meta_values_round_trip(
                &$open,
                tempfile::tempdir().unwrap().path(),
            );
        }
        #[test]
        fn storage_holds_and_summaries_round_trip() {
            $crate::storage::suite::holds_and_summaries_round_trip(
                &$open,
                tempfile::tempdir().unwrap().path(),
            );
        }
        #[test]
        fn storage_a_log_past_a_thousand_entries_reads_back() {
            $crate::storage::suite::a_log_past_a_thousand_entries_reads_back(
                &$open,
                tempfile::tempdir().unwrap().path(),
            );
        }
    };
}
