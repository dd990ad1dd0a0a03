//! Hostile audit bundles. The JSON file `celltrail verify BUNDLE` reads comes from an untrusted
//! server, so every case here goes through the CLI's own path: `Bundle::from_json_bytes`, then
//! `verify_bundle`, then both report renderings.
//!
//! One real bundle (built once: a real server on 127.0.0.1:0 records the key registry and the
//! first seven events of a CAR-T lifecycle; exported over gRPC with a consistency proof from a
//! checkpoint kept midway) is mutated byte by byte and structurally, and bundles forged with an
//! attacker's own log and admin keys (which the bundle's anchors may name) probe sizes and
//! counts. Properties: no panic; a bundle that verifies vouches for the original content only
//! (byte mutations: the same checkpoint and entries; structural ones: at most a prefix of a
//! chain whose signed head is absent, the documented limit of inclusion proofs); hostile sizes are refused without
//! allocating in proportion to the numbers they claim. `cargo +nightly fuzz run verify_bundle`
//! (fuzz/README.md) drives the same path with libFuzzer.

mod common;
mod lifecycle;

use celltrail::bundle::export::{anchors, from_server, Selection};
use celltrail::bundle::verify::{verify_bundle, Options, Report};
use celltrail::bundle::{b64, report, unb64, Bundle, Entry, FORMAT};
use celltrail::client::{sign_draft, Draft};
use celltrail::crypto::EventHash;
use celltrail::merkle;
use celltrail::note::{sign_note, Checkpoint, NoteSigner, NoteVerifier};
use celltrail::pb::{event_body::Detail, KeyRegistered, LogEntry, SignatureMeaning};
use celltrail::policy::Policy;
use common::mutate::{mutate, mutation, Mutation};
use common::*;
use lifecycle::{happy_path, ChainCursor, Keys};
use proptest::prelude::*;
use prost::Message;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ops::Range;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Allocation accounting: bytes requested on the current thread, so tests running in parallel
// do not count each other.

struct Counting;

thread_local! {
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes as u64)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting only reads a
// const-initialised thread-local that has no destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`; returns its result, the bytes it allocated in total (not the peak) and how long
/// it took.
fn measured<T>(f: impl FnOnce() -> T) -> (T, u64, Duration) {
    let before = ALLOCATED.with(Cell::get);
    let t = Instant::now();
    let out = f();
    let took = t.elapsed();
    (out, ALLOCATED.with(Cell::get) - before, took)
}

// ---------------------------------------------------------------------------------------------
// The honest bundle.

struct Fixture {
    bundle: Bundle,
    json: Vec<u8>,
    content: Content,
    /// The checkpoint note an auditor kept midway (`--previous`).
    kept: String,
    log_key: NoteVerifier,
    admins: Vec<NoteVerifier>,
    /// Byte ranges of the JSON's string contents (base64, the checkpoint note, names) and
    /// numbers (sizes, indices), where a mutation most often still parses and only the
    /// verifier can refuse it.
    values: Vec<Range<usize>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(build_fixture())
        })
        .join()
        .expect("fixture")
    })
}

async fn build_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let keys = Keys::new();
    keys.register(&mut c, &server.admin).await;
    let mut cur = ChainCursor::new("BAG-1", base_time());
    let mut steps = happy_path(&keys).into_iter();
    let receipts = cur.append(&mut c, steps.by_ref().take(3).collect()).await;
    let kept = receipts.last().unwrap().clone();
    cur.append(&mut c, steps.take(4).collect()).await;
    let vkey = std::fs::read_to_string(dir.path().join("log.vkey")).unwrap();
    let log_key = NoteVerifier::from_key_string(vkey.trim()).unwrap();
    let admins = vec![server.admin.verifier()];
    let bundle = from_server(
        &mut c,
        anchors(&log_key, &admins),
        &Selection::Chains(vec!["BAG-1".into()]),
        &[kept.tree_size],
    )
    .await
    .expect("export");
    server.stop().await;
    let json = bundle.to_json().into_bytes();
    Fixture {
        content: content(&bundle),
        values: value_ranges(&json),
        bundle,
        json,
        kept: kept.checkpoint,
        log_key,
        admins,
    }
}

/// The CLI's defaults: the bundle's own anchors, the built-in policy, no previous checkpoint.
fn defaults() -> &'static Options {
    static O: OnceLock<Options> = OnceLock::new();
    O.get_or_init(|| Options {
        log_key: None,
        admins: None,
        policy: Policy::default_autologous_car_t(),
        previous: None,
    })
}

/// A careful auditor: pinned log and admin keys, and the checkpoint kept midway.
fn pinned() -> &'static Options {
    static O: OnceLock<Options> = OnceLock::new();
    O.get_or_init(|| {
        let f = fixture();
        Options {
            log_key: Some(f.log_key.clone()),
            admins: Some(f.admins.clone()),
            policy: Policy::default_autologous_car_t(),
            previous: Some(f.kept.clone()),
        }
    })
}

/// Ranges inside the double quotes of every JSON string and of every number (our own pretty
/// JSON: escapes are only `\"`, `\\` and `\n`).
fn value_ranges(json: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'"' {
            let start = i + 1;
            i = start;
            while json[i] != b'"' {
                i += if json[i] == b'\\' { 2 } else { 1 };
            }
            out.push(start..i);
        } else if json[i].is_ascii_digit() {
            let start = i;
            while json[i + 1].is_ascii_digit() {
                i += 1;
            }
            out.push(start..i + 1);
        }
        i += 1;
    }
    out
}

/// Listed log index and exact bytes of each entry of a list.
type Listed = Vec<(u64, Vec<u8>)>;

/// What a verified bundle vouches for: the checkpoint and each listed entry's index and bytes.
#[derive(Debug, Clone, PartialEq)]
struct Content {
    checkpoint: String,
    tree_size: u64,
    registry: Listed,
    chains: Vec<(String, Listed)>,
}

fn content(b: &Bundle) -> Content {
    let entries = |es: &[Entry]| {
        es.iter()
            .map(|e| (e.index, unb64(&e.entry).unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    Content {
        checkpoint: b.checkpoint.clone(),
        tree_size: b.tree_size,
        registry: entries(&b.registry),
        chains: b
            .chains
            .iter()
            .map(|c| (c.chain_id.clone(), entries(&c.entries)))
            .collect(),
    }
}

/// True when `b` holds the original content with, at most, trailing entries left off a chain
/// (or the registry) that carries no signed head: inclusion proofs show presence, not
/// absence, and only the log's signed chain head proves a chain's end
/// (docs/bundle-format.md, step 5 and Limits).
fn is_original_or_unproven_prefix(b: &Bundle, orig: &Content) -> bool {
    let c = content(b);
    let fits = |es: &Vec<(u64, Vec<u8>)>, oes: &Vec<(u64, Vec<u8>)>, proven: bool| {
        if proven {
            es == oes
        } else {
            oes.starts_with(es)
        }
    };
    c.checkpoint == orig.checkpoint
        && c.tree_size == orig.tree_size
        && fits(&c.registry, &orig.registry, b.registry_head.is_some())
        && c.chains.iter().zip(&b.chains).all(|((id, es), bc)| {
            orig.chains
                .iter()
                .any(|(oid, oes)| oid == id && fits(es, oes, bc.head.is_some()))
        })
}

enum Expect {
    /// Byte mutations cannot remove a JSON array element: a verified bundle is the original.
    Original,
    /// Structural mutations can drop trailing entries, which verify only where no signed
    /// chain head proves the end.
    OriginalOrPrefix,
}

/// Verifies `b` as the CLI would, under the defaults and as a careful auditor; renders both
/// reports. Whatever verifies must vouch for the original content only.
fn check(b: &Bundle, expect: Expect) -> Result<(), TestCaseError> {
    let orig = &fixture().content;
    for opts in [defaults(), pinned()] {
        let r = verify_bundle(b, opts);
        let _ = report::json(&r);
        let _ = report::text(&r, "hostile.json");
        prop_assert_eq!(
            r.ok,
            r.failure.is_none(),
            "ok and failure disagree: {:?}",
            r.failure
        );
        if r.ok {
            let got = content(b);
            match expect {
                Expect::Original => prop_assert_eq!(&got, orig, "a mutated bundle verified"),
                Expect::OriginalOrPrefix => prop_assert!(
                    is_original_or_unproven_prefix(b, orig),
                    "a bundle with other content verified: {:?}",
                    got
                ),
            }
        }
    }
    Ok(())
}

/// Parses `bytes` the CLI's way and, if that works, checks the bundle.
fn check_bytes(bytes: &[u8], expect: Expect) -> Result<(), TestCaseError> {
    match Bundle::from_json_bytes(bytes) {
        Ok(b) => check(&b, expect),
        Err(e) => {
            prop_assert!(e.starts_with("not a bundle") || e.starts_with("bundle format is"));
            Ok(())
        }
    }
}

#[test]
fn honest_bundle_verifies_under_defaults_and_pinned_keys() {
    let f = fixture();
    for opts in [defaults(), pinned()] {
        let r = verify_bundle(&f.bundle, opts);
        assert!(r.ok, "{:?}", r.failure);
        assert_eq!(r.timeline.len(), 7);
        assert_eq!(r.registry_entries, 8);
    }
    assert!(pinned().previous.is_some() && f.bundle.consistency.len() == 1);
    assert!(f.json.len() < 50_000, "{} bytes", f.json.len());
    // The fuzz target's seed: CELLTRAIL_FUZZ_SEED_DIR=fuzz/corpus/verify_bundle cargo test ...
    if let Some(dir) = std::env::var_os("CELLTRAIL_FUZZ_SEED_DIR") {
        std::fs::write(std::path::Path::new(&dir).join("seed-bundle.json"), &f.json).unwrap();
    }
    assert!(f.values.len() > 50);
}

// ---------------------------------------------------------------------------------------------
// Byte mutations and random bytes.

/// Where a byte mutation of the bundle file lands.
#[derive(Debug, Clone)]
enum Aim {
    Anywhere,
    /// Inside one string or number.
    Value(prop::sample::Index),
    /// One number replaced by these digits.
    Number(prop::sample::Index, String),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_bundle_json_verifies_only_the_original_content(
        muts in proptest::collection::vec(mutation(), 1..4),
        aim in prop_oneof![
            Just(Aim::Anywhere),
            any::<prop::sample::Index>().prop_map(Aim::Value),
            (any::<prop::sample::Index>(), "[0-9]{1,21}").prop_map(|(i, d)| Aim::Number(i, d)),
        ],
    ) {
        let f = fixture();
        let splice = |r: &Range<usize>, with: &[u8]| {
            let mut out = f.json[..r.start].to_vec();
            out.extend_from_slice(with);
            out.extend_from_slice(&f.json[r.end..]);
            out
        };
        let bad = match aim {
            // Most mutations of the whole file break the JSON, so most cases aim inside one
            // value (a base64 entry or proof hash, the checkpoint, a key, a number) or replace
            // a number (a size or an index) with other digits.
            Aim::Anywhere => mutate(&f.json, &muts),
            Aim::Value(at) => {
                let r = &f.values[at.index(f.values.len())];
                splice(r, &mutate(&f.json[r.clone()], &muts))
            }
            Aim::Number(at, digits) => {
                let numbers: Vec<_> =
                    f.values.iter().filter(|r| f.json[r.start].is_ascii_digit()).collect();
                splice(numbers[at.index(numbers.len())], digits.as_bytes())
            }
        };
        check_bytes(&bad, Expect::Original)?;
    }

    #[test]
    fn random_bytes_as_a_bundle_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
        check_bytes(&bytes, Expect::Original)?;
        // Random bytes in a JSON string of an otherwise valid bundle: parse, then refuse.
        let mut b = fixture().bundle.clone();
        b.checkpoint = String::from_utf8_lossy(&bytes).into_owned();
        check(&b, Expect::Original)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Structural mutations of the parsed bundle.

/// Which entry list: the registry, or chain `n` (modulo the number of chains).
#[derive(Debug, Clone)]
enum List {
    Registry,
    Chain(prop::sample::Index),
}

#[derive(Debug, Clone)]
enum Edit {
    Drop(List, prop::sample::Index),
    Duplicate(List, prop::sample::Index),
    Swap(List, prop::sample::Index, prop::sample::Index),
    /// Moves an entry from one list to the end of another.
    Move(List, prop::sample::Index, List),
    SetIndex(List, prop::sample::Index, u64),
    TruncateProof(List, prop::sample::Index, prop::sample::Index),
    PadProof(List, prop::sample::Index, Vec<[u8; 32]>),
    ProofHash(List, prop::sample::Index, prop::sample::Index, Vec<u8>),
    EntryBytes(List, prop::sample::Index, Vec<u8>),
    /// Byte mutations of the decoded entry, re-encoded as valid base64.
    MutateEntry(List, prop::sample::Index, Vec<Mutation>),
    /// Any text where base64 belongs.
    EntryText(List, prop::sample::Index, String),
    /// Moves an entry to another log index, consistently: the listed index and the one in its
    /// bytes (the server writes both; only the inclusion proof ties them to the log).
    Reindex(List, prop::sample::Index, u64),
    /// Changes the server's acceptance time in the entry bytes (not covered by signatures).
    AcceptedAt(List, prop::sample::Index, i64),
    TreeSize(u64),
    ChainId(prop::sample::Index, String),
    ConsistencyOldSize(u64),
    ConsistencyProof(Vec<Vec<u8>>),
    AnchorLogKey(String),
    AdminKeys(Vec<String>),
}

/// Numbers a hostile server would pick: edges, powers of two, anything.
fn huge() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1u64 << 63),
        Just(i64::MAX as u64),
        0..64u64,
        any::<u64>(),
    ]
}

fn list() -> impl Strategy<Value = List> {
    prop_oneof![
        Just(List::Registry),
        any::<prop::sample::Index>().prop_map(List::Chain)
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    use proptest::collection::vec;
    let ix = || any::<prop::sample::Index>();
    prop_oneof![
        (list(), ix()).prop_map(|(l, i)| Edit::Drop(l, i)),
        (list(), ix()).prop_map(|(l, i)| Edit::Duplicate(l, i)),
        (list(), ix(), ix()).prop_map(|(l, i, j)| Edit::Swap(l, i, j)),
        (list(), ix(), list()).prop_map(|(l, i, to)| Edit::Move(l, i, to)),
        (list(), ix(), huge()).prop_map(|(l, i, n)| Edit::SetIndex(l, i, n)),
        (list(), ix(), ix()).prop_map(|(l, i, k)| Edit::TruncateProof(l, i, k)),
        (list(), ix(), vec(any::<[u8; 32]>(), 1..80)).prop_map(|(l, i, h)| Edit::PadProof(l, i, h)),
        (list(), ix(), ix(), vec(any::<u8>(), 0..40))
            .prop_map(|(l, i, k, b)| Edit::ProofHash(l, i, k, b)),
        (list(), ix(), vec(any::<u8>(), 0..600)).prop_map(|(l, i, b)| Edit::EntryBytes(l, i, b)),
        (list(), ix(), vec(mutation(), 1..4)).prop_map(|(l, i, m)| Edit::MutateEntry(l, i, m)),
        (list(), ix(), any::<String>()).prop_map(|(l, i, s)| Edit::EntryText(l, i, s)),
        (list(), ix(), huge()).prop_map(|(l, i, n)| Edit::Reindex(l, i, n)),
        (
            list(),
            ix(),
            prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>(), -1000..1000i64]
        )
            .prop_map(|(l, i, d)| Edit::AcceptedAt(l, i, d)),
        huge().prop_map(Edit::TreeSize),
        (ix(), "[A-Za-z0-9:=_.-]{0,12}|keys|\\PC{0,20}").prop_map(|(i, s)| Edit::ChainId(i, s)),
        huge().prop_map(Edit::ConsistencyOldSize),
        vec(vec(any::<u8>(), 0..40), 0..70).prop_map(Edit::ConsistencyProof),
        any::<String>().prop_map(Edit::AnchorLogKey),
        vec(any::<String>(), 0..3).prop_map(Edit::AdminKeys),
    ]
}

fn entries<'a>(b: &'a mut Bundle, l: &List) -> Option<&'a mut Vec<Entry>> {
    match l {
        List::Registry => Some(&mut b.registry),
        List::Chain(i) if !b.chains.is_empty() => {
            let n = i.index(b.chains.len());
            Some(&mut b.chains[n].entries)
        }
        List::Chain(_) => None,
    }
}

/// Edits the decoded `LogEntry` of `e` and re-encodes it (if an earlier edit left it decodable).
fn reencode(e: &mut Entry, f: impl FnOnce(&mut LogEntry)) {
    if let Some(mut le) = unb64(&e.entry)
        .ok()
        .and_then(|b| LogEntry::decode(b.as_slice()).ok())
    {
        f(&mut le);
        e.entry = b64(&le.encode_to_vec());
    }
}

fn apply(b: &mut Bundle, e: &Edit) {
    let entry = |b: &mut Bundle, l: &List, i: &prop::sample::Index| -> Option<(usize, usize)> {
        let es = entries(b, l)?;
        (!es.is_empty()).then(|| (i.index(es.len()), es.len()))
    };
    match e {
        Edit::Drop(l, i) => {
            if let Some((n, _)) = entry(b, l, i) {
                entries(b, l).unwrap().remove(n);
            }
        }
        Edit::Duplicate(l, i) => {
            if let Some((n, _)) = entry(b, l, i) {
                let es = entries(b, l).unwrap();
                let copy = es[n].clone();
                es.insert(n, copy);
            }
        }
        Edit::Swap(l, i, j) => {
            if let Some((n, len)) = entry(b, l, i) {
                entries(b, l).unwrap().swap(n, j.index(len));
            }
        }
        Edit::Move(l, i, to) => {
            if let Some((n, _)) = entry(b, l, i) {
                let moved = entries(b, l).unwrap().remove(n);
                if let Some(dest) = entries(b, to) {
                    dest.push(moved);
                }
            }
        }
        Edit::SetIndex(l, i, v) => {
            if let Some((n, _)) = entry(b, l, i) {
                entries(b, l).unwrap()[n].index = *v;
            }
        }
        Edit::TruncateProof(l, i, k) => {
            if let Some((n, _)) = entry(b, l, i) {
                let p = &mut entries(b, l).unwrap()[n].proof;
                if !p.is_empty() {
                    let keep = k.index(p.len());
                    p.truncate(keep);
                }
            }
        }
        Edit::PadProof(l, i, hashes) => {
            if let Some((n, _)) = entry(b, l, i) {
                let p = &mut entries(b, l).unwrap()[n].proof;
                p.extend(hashes.iter().map(|h| b64(h)));
            }
        }
        Edit::ProofHash(l, i, k, bytes) => {
            if let Some((n, _)) = entry(b, l, i) {
                let p = &mut entries(b, l).unwrap()[n].proof;
                if !p.is_empty() {
                    let at = k.index(p.len());
                    p[at] = b64(bytes);
                }
            }
        }
        Edit::EntryBytes(l, i, bytes) => {
            if let Some((n, _)) = entry(b, l, i) {
                entries(b, l).unwrap()[n].entry = b64(bytes);
            }
        }
        Edit::MutateEntry(l, i, muts) => {
            if let Some((n, _)) = entry(b, l, i) {
                let e = &mut entries(b, l).unwrap()[n];
                if let Ok(bytes) = unb64(&e.entry) {
                    e.entry = b64(&mutate(&bytes, muts));
                }
            }
        }
        Edit::EntryText(l, i, s) => {
            if let Some((n, _)) = entry(b, l, i) {
                entries(b, l).unwrap()[n].entry = s.clone();
            }
        }
        Edit::Reindex(l, i, v) => {
            if let Some((n, _)) = entry(b, l, i) {
                let e = &mut entries(b, l).unwrap()[n];
                reencode(e, |le| le.index = *v);
                e.index = *v;
            }
        }
        Edit::AcceptedAt(l, i, v) => {
            if let Some((n, _)) = entry(b, l, i) {
                // Small values shift the real time by seconds; large ones replace it.
                reencode(&mut entries(b, l).unwrap()[n], |le| {
                    le.accepted_at_unix_nanos = if (-1000..1000).contains(v) {
                        le.accepted_at_unix_nanos.saturating_add(v * 1_000_000_000)
                    } else {
                        *v
                    }
                });
            }
        }
        Edit::TreeSize(n) => b.tree_size = *n,
        Edit::ChainId(i, id) => {
            if !b.chains.is_empty() {
                let n = i.index(b.chains.len());
                b.chains[n].chain_id = id.clone();
            }
        }
        Edit::ConsistencyOldSize(n) => {
            if let Some(c) = b.consistency.first_mut() {
                c.old_size = *n;
            }
        }
        Edit::ConsistencyProof(p) => {
            if let Some(c) = b.consistency.first_mut() {
                c.proof = p.iter().map(|h| b64(h)).collect();
            }
        }
        Edit::AnchorLogKey(s) => b.anchors.log_key = s.clone(),
        Edit::AdminKeys(keys) => b.anchors.admin_keys = keys.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn structural_mutations_never_verify_other_content(edits in proptest::collection::vec(edit(), 1..4)) {
        let mut b = fixture().bundle.clone();
        for e in &edits {
            apply(&mut b, e);
        }
        let (res, bytes, took) = measured(|| check(&b, Expect::OriginalOrPrefix));
        res?;
        // Two verifications of a ~40 KB bundle; the claimed numbers must not inflate that.
        prop_assert!(bytes < 16 << 20, "{} bytes allocated", bytes);
        prop_assert!(took < Duration::from_secs(10), "took {:?}", took);
        // The same through the file format.
        check_bytes(b.to_json().as_bytes(), Expect::OriginalOrPrefix)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Forged bundles: what a hostile server can sign itself when the auditor trusts the anchors.

const ADMIN: &str = "admin.forged";

/// A self-consistent bundle of `n` key registrations, signed with the attacker's own log key
/// and admin key, both named in its anchors; `tweak` edits each entry before it is hashed.
fn forged(n: usize, mut tweak: impl FnMut(&mut LogEntry)) -> Bundle {
    let log = NoteSigner::generate("log.forged").unwrap();
    let admin = NoteSigner::generate(ADMIN).unwrap();
    let staff = NoteSigner::generate("staff.forged").unwrap();
    let t0 = base_time();
    let mut prev = vec![0u8; 32];
    let mut bytes = Vec::with_capacity(n);
    for i in 0..n {
        let ev = sign_draft(
            Draft {
                chain_id: "keys".into(),
                seq: i as u64,
                prev_hash: prev,
                occurred_at: t0,
                site: String::new(),
                comment: String::new(),
                detail: Detail::KeyRegistered(KeyRegistered {
                    key_id: format!("k{i}.forged"),
                    public_key: staff.key.verifying_key().as_bytes().to_vec(),
                    printed_name: format!("Forged Person {i}"),
                    role: "nurse".into(),
                    site: "CLINIC-0001".into(),
                    valid_from_unix_nanos: t0 - 86_400_000_000_000,
                    valid_until_unix_nanos: 0,
                }),
            },
            &[(&admin, SignatureMeaning::Performed)],
            t0,
        );
        prev = EventHash::of_body(&ev.body).0.to_vec();
        let mut entry = LogEntry {
            body: ev.body,
            signatures: ev.signatures,
            accepted_at_unix_nanos: t0,
            index: i as u64,
            format_version: 1,
        };
        tweak(&mut entry);
        bytes.push(entry.encode_to_vec());
    }
    let leaves: Vec<_> = bytes.iter().map(|b| merkle::leaf_hash(b)).collect();
    let cp = Checkpoint {
        origin: log.name.clone(),
        size: n as u64,
        root: merkle::root(&leaves),
        extensions: vec![],
    };
    let registry = bytes
        .iter()
        .enumerate()
        .map(|(i, b)| Entry {
            index: i as u64,
            entry: b64(b),
            proof: merkle::inclusion_proof(&leaves, i as u64)
                .unwrap()
                .iter()
                .map(|h| b64(h))
                .collect(),
        })
        .collect();
    Bundle {
        format: FORMAT.into(),
        exported_at: "2026-01-01T00:00:00Z".into(),
        anchors: anchors(&log.verifier(), &[admin.verifier()]),
        checkpoint: sign_note(&cp.to_text(), &[&log]).unwrap(),
        tree_size: n as u64,
        registry,
        registry_head: None,
        chains: vec![],
        consistency: vec![],
        later_checkpoints: vec![],
        log_links: vec![],
    }
}

/// Replaces the checkpoint with one signed by `log` (now the anchor) claiming `size`.
fn resign_checkpoint(b: &mut Bundle, log: &NoteSigner, size: u64) {
    let cp = Checkpoint {
        origin: log.name.clone(),
        size,
        root: [7; 32],
        extensions: vec![],
    };
    b.checkpoint = sign_note(&cp.to_text(), &[log]).unwrap();
    b.anchors.log_key = log.verifier().to_key_string();
    b.tree_size = size;
}

fn verify_measured(b: &Bundle) -> (Report, u64, Duration) {
    measured(|| verify_bundle(b, defaults()))
}

#[test]
fn forged_bundle_verifies_only_against_its_own_anchors() {
    // The helper below is sound: what it forges passes every check except key pinning.
    let b = forged(3, |_| {});
    let r = verify_bundle(&b, defaults());
    assert!(r.ok, "{:?}", r.failure);
    assert!(
        r.log_key_source.contains("not independent"),
        "{}",
        r.log_key_source
    );
    let r = verify_bundle(&b, pinned());
    assert!(!r.ok);
}

#[test]
fn many_key_registrations_verify_in_memory_linear_in_the_bundle() {
    // Each registry state used to be cloned whole after every key event: n registrations cost
    // n^2/2 key records, so a few MB of forged registry took gigabytes.
    let (small, large) = (100, 1000);
    let cost = |n: usize| {
        let b = forged(n, |_| {});
        let (r, bytes, _) = verify_measured(&b);
        assert!(r.ok, "{:?}", r.failure);
        assert_eq!(r.registry_entries, n);
        bytes as f64 / b.to_json().len() as f64
    };
    let (per_byte_small, per_byte_large) = (cost(small), cost(large));
    assert!(
        per_byte_large < 3.0 * per_byte_small,
        "allocation per bundle byte grows with the registry: {per_byte_small:.1} at {small} keys, {per_byte_large:.1} at {large}"
    );
}

#[test]
fn proof_of_a_million_hashes_is_refused_before_it_is_decoded() {
    let mut b = fixture().bundle.clone();
    let hash = b64(&[9u8; 32]);
    b.chains[0].entries[0].proof = vec![hash; 1_000_000];
    let (r, bytes, took) = verify_measured(&b);
    let f = r.failure.expect("refused");
    assert!(f.reason.contains("1000000 hashes"), "{f}");
    assert!(
        bytes < 4 << 20,
        "{bytes} bytes allocated for a refused proof"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn tree_size_and_indices_near_u64_max_are_refused_without_allocating() {
    let log = NoteSigner::generate("log.forged").unwrap();
    for size in [u64::MAX, u64::MAX - 1, 1 << 63] {
        // Entries that say they sit at the very end of that tree, so the proof check runs.
        let mut b = forged(2, |e| e.index = size - 1 - e.index);
        resign_checkpoint(&mut b, &log, size);
        for (k, e) in b.registry.iter_mut().enumerate() {
            e.index = size - 1 - k as u64;
            e.proof = vec![b64(&[1; 32]); 64];
        }
        let (r, bytes, took) = verify_measured(&b);
        assert!(!r.ok, "size {size}");
        assert_eq!(r.checkpoint.as_ref().map(|c| c.size), Some(size));
        assert!(bytes < 1 << 20, "size {size}: {bytes} bytes allocated");
        assert!(took < Duration::from_secs(1), "size {size}: took {took:?}");
    }
}

#[test]
fn entry_accepted_at_the_end_of_time_never_panics_the_verifier() {
    // check_shape added the clock-skew allowance to the entry's accepted_at: i64::MAX overflowed.
    // Forged with the attacker's own keys, such an entry is self-consistent (times are as
    // signed; the verifier has no clock): it must simply not panic.
    for at in [i64::MAX, i64::MAX - 1, i64::MIN] {
        let b = forged(2, |e| e.accepted_at_unix_nanos = at);
        let r = verify_bundle(&b, defaults());
        assert_eq!(r.ok, at != i64::MIN, "accepted_at {at}: {:?}", r.failure);
    }
    // The same in a real chain entry.
    let mut b = fixture().bundle.clone();
    let e = &mut b.chains[0].entries[2];
    let mut entry = LogEntry::decode(unb64(&e.entry).unwrap().as_slice()).unwrap();
    entry.accepted_at_unix_nanos = i64::MAX;
    e.entry = b64(&entry.encode_to_vec());
    let r = verify_bundle(&b, defaults());
    assert!(!r.ok);
}
