//! RFC 6962 / RFC 9162 §2.1 Merkle tree math with SHA-256: leaf and node hashing, tree roots,
//! inclusion and consistency proofs (building and verifying them). Pure functions over hashes;
//! no I/O. Two families: reference functions over an in-memory slice of leaf hashes, and `_at`
//! functions that read the stored hash of every perfect subtree through a `get(level, index)`
//! callback with O(log n) calls, which is how the log serves proofs from its store. Matches the
//! vectors in `tests/vectors` byte for byte.
//!
//! Addressing: node `(level, index)` is the perfect subtree over leaves
//! `[index << level, (index + 1) << level)`; level 0 holds the leaf hashes. Proof hashes are
//! ordered leaf to root, as in RFC 6962 `PATH` / `PROOF`.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, node hash or tree root.
pub type Hash = [u8; 32];

/// Address of a stored perfect subtree: `(level, index)`, covering leaves
/// `[index << level, (index + 1) << level)`.
pub type NodeId = (u32, u64);

/// Why a proof was rejected or could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MerkleError {
    #[error("leaf index {index} is outside a tree of size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    #[error(
        "inclusion proof for leaf {index} in tree of size {tree_size} has {got} hashes, expected {want}"
    )]
    InclusionProofLength {
        index: u64,
        tree_size: u64,
        got: usize,
        want: usize,
    },
    #[error(
        "consistency proof from size {old_size} to size {new_size} has {got} hashes, expected {want}"
    )]
    ConsistencyProofLength {
        old_size: u64,
        new_size: u64,
        got: usize,
        want: usize,
    },
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeLarger { old_size: u64, new_size: u64 },
    #[error(
        "a consistency proof from the empty tree to size {new_size} proves nothing; the old size must be at least 1"
    )]
    OldSizeZero { new_size: u64 },
    #[error("trees of equal size {size} need an empty consistency proof, got {got} hashes")]
    ProofForEqualSizes { size: u64, got: usize },
    #[error("old root {} and new root {} differ though both trees have size {size}", short(.old_root), short(.new_root))]
    EqualSizeRootsDiffer {
        size: u64,
        old_root: Vec<u8>,
        new_root: Vec<u8>,
    },
    #[error("computed root {} does not match expected root {}", short(.computed), short(.expected))]
    RootMismatch { computed: Hash, expected: Hash },
    #[error("computed old root {} does not match expected old root {}", short(.computed), short(.expected))]
    OldRootMismatch { computed: Hash, expected: Hash },
    #[error("{what} is {len} bytes long, expected 32")]
    HashLength { what: String, len: usize },
}

/// First 8 bytes of a hash in hex, for messages.
fn short(h: &[u8]) -> String {
    let n = h.len().min(8);
    let dots = if h.len() > n { ".." } else { "" };
    format!("{}{dots}", hex::encode(&h[..n]))
}

/// Root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Leaf hash: SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// Interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    hash_children(left, right)
}

/// SHA-256(0x01 || left || right) over byte strings of any length (the upstream hasher
/// vectors use short children).
fn hash_children(left: &[u8], right: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly below `n` (n >= 2): RFC 6962's split point `k`.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

// ---------------------------------------------------------------------------------------------
// Reference functions over in-memory leaf hashes (RFC 6962 §2.1, recursive definitions).
// ---------------------------------------------------------------------------------------------

/// Merkle Tree Hash of the given leaf hashes (RFC 6962 `MTH`).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Inclusion proof (audit path, RFC 6962 `PATH`) of leaf `index` in the tree of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let tree_size = leaves.len() as u64;
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, tree_size });
    }
    fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
        if d.len() <= 1 {
            return;
        }
        let k = split(d.len() as u64) as usize;
        if m < k {
            path(m, &d[..k], out);
            out.push(root(&d[k..]));
        } else {
            path(m - k, &d[k..], out);
            out.push(root(&d[..k]));
        }
    }
    let mut out = Vec::new();
    path(index as usize, leaves, &mut out);
    Ok(out)
}

/// Consistency proof (RFC 6962 `PROOF`) that the first `old_size` leaves are a prefix of
/// `leaves`. Empty when `old_size == leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, MerkleError> {
    let new_size = leaves.len() as u64;
    if old_size > new_size {
        return Err(MerkleError::OldSizeLarger { old_size, new_size });
    }
    if old_size == 0 {
        return Err(MerkleError::OldSizeZero { new_size });
    }
    fn subproof(m: usize, d: &[Hash], whole: bool, out: &mut Vec<Hash>) {
        if m == d.len() {
            if !whole {
                out.push(root(d));
            }
            return;
        }
        let k = split(d.len() as u64) as usize;
        if m <= k {
            subproof(m, &d[..k], whole, out);
            out.push(root(&d[k..]));
        } else {
            subproof(m - k, &d[k..], false, out);
            out.push(root(&d[..k]));
        }
    }
    let mut out = Vec::new();
    subproof(old_size as usize, leaves, true, &mut out);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Verification (RFC 9162 §2.1.3.2 and §2.1.4.2).
// ---------------------------------------------------------------------------------------------

/// Number of hashes in the inclusion proof of leaf `index` in a tree of `size` (index < size):
/// one per level below the point where the leaf's path leaves the right border ("inner"), plus
/// one per left subtree hanging off the right border above it ("border").
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Number of hashes in the consistency proof from `old` to `new` (0 < old < new).
fn consistency_proof_len(old: u64, new: u64) -> usize {
    let shift = old.trailing_zeros();
    let seed_in_proof = usize::from(!old.is_power_of_two());
    // The proof is the inclusion path of leaf old-1 in the tree of `new`, from level `shift`
    // up (shift < inner because old < new), preceded by the seed unless old is a power of 2.
    inclusion_proof_len(old - 1, new) - shift as usize + seed_in_proof
}

/// Checks that `proof` proves leaf hash `leaf` is at `index` in the tree of `tree_size` leaves
/// whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, tree_size });
    }
    let want = inclusion_proof_len(index, tree_size);
    if proof.len() != want {
        return Err(MerkleError::InclusionProofLength {
            index,
            tree_size,
            got: proof.len(),
            want,
        });
    }
    let (mut fnn, mut sn) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in proof {
        // The length check above guarantees sn > 0 here (RFC step 4a).
        debug_assert!(sn != 0);
        if fnn & 1 == 1 || fnn == sn {
            r = node_hash(p, &r);
            while fnn & 1 == 0 && fnn != 0 {
                fnn >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnn >>= 1;
        sn >>= 1;
    }
    debug_assert_eq!(sn, 0);
    if r != *root {
        return Err(MerkleError::RootMismatch {
            computed: r,
            expected: *root,
        });
    }
    Ok(())
}

/// Checks that `proof` proves the tree of `old_size` leaves with root `old_root` is a prefix of
/// the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2). Equal sizes need an
/// empty proof and equal roots; a proof from the empty tree is rejected as meaningless.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    check_consistency_sizes(old_size, new_size, old_root, new_root, proof.len())?;
    if old_size == new_size {
        return Ok(());
    }
    let want = consistency_proof_len(old_size, new_size);
    if proof.len() != want {
        return Err(MerkleError::ConsistencyProofLength {
            old_size,
            new_size,
            got: proof.len(),
            want,
        });
    }
    // Step 2: if old_size is a power of two, the old root itself starts the path.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (&proof[0], &proof[1..])
    };
    let (mut fnn, mut sn) = (old_size - 1, new_size - 1);
    while fnn & 1 == 1 {
        fnn >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        // The length check above guarantees sn > 0 here (RFC step 6a).
        debug_assert!(sn != 0);
        if fnn & 1 == 1 || fnn == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnn & 1 == 0 && fnn != 0 {
                fnn >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnn >>= 1;
        sn >>= 1;
    }
    debug_assert_eq!(sn, 0);
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch {
            computed: fr,
            expected: *old_root,
        });
    }
    if sr != *new_root {
        return Err(MerkleError::RootMismatch {
            computed: sr,
            expected: *new_root,
        });
    }
    Ok(())
}

/// The size checks of consistency verification, shared by the typed and byte-slice forms.
/// Returns Ok for equal sizes only when the proof is empty and the roots are equal.
fn check_consistency_sizes(
    old_size: u64,
    new_size: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof_len: usize,
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OldSizeLarger { old_size, new_size });
    }
    if old_size == 0 {
        return Err(MerkleError::OldSizeZero { new_size });
    }
    if old_size == new_size {
        if proof_len != 0 {
            return Err(MerkleError::ProofForEqualSizes {
                size: old_size,
                got: proof_len,
            });
        }
        if old_root != new_root {
            return Err(MerkleError::EqualSizeRootsDiffer {
                size: old_size,
                old_root: old_root.to_vec(),
                new_root: new_root.to_vec(),
            });
        }
    }
    Ok(())
}

/// A 32-byte hash from a byte string received from outside (a proto field, a bundle).
pub fn hash_from_slice(bytes: &[u8], what: &str) -> Result<Hash, MerkleError> {
    bytes.try_into().map_err(|_| MerkleError::HashLength {
        what: what.to_string(),
        len: bytes.len(),
    })
}

fn proof_from_slices<B: AsRef<[u8]>>(proof: &[B]) -> Result<Vec<Hash>, MerkleError> {
    proof
        .iter()
        .enumerate()
        .map(|(i, p)| hash_from_slice(p.as_ref(), &format!("proof hash {i}")))
        .collect()
}

/// [`verify_inclusion`] over byte strings as they arrive on the wire: every hash must be 32
/// bytes long.
pub fn verify_inclusion_bytes<B: AsRef<[u8]>>(
    leaf: &[u8],
    index: u64,
    tree_size: u64,
    proof: &[B],
    root: &[u8],
) -> Result<(), MerkleError> {
    let leaf = hash_from_slice(leaf, "leaf hash")?;
    let root = hash_from_slice(root, "root")?;
    verify_inclusion(&leaf, index, tree_size, &proof_from_slices(proof)?, &root)
}

/// [`verify_consistency`] over byte strings as they arrive on the wire. As in
/// transparency-dev/merkle, equal sizes with an empty proof only compare the roots byte for
/// byte (two identical heads are consistent whatever they hold); otherwise every hash must be
/// 32 bytes long.
pub fn verify_consistency_bytes<B: AsRef<[u8]>>(
    old_size: u64,
    new_size: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[B],
) -> Result<(), MerkleError> {
    check_consistency_sizes(old_size, new_size, old_root, new_root, proof.len())?;
    if old_size == new_size {
        return Ok(());
    }
    let old_root = hash_from_slice(old_root, "old root")?;
    let new_root = hash_from_slice(new_root, "new root")?;
    verify_consistency(
        old_size,
        new_size,
        &old_root,
        &new_root,
        &proof_from_slices(proof)?,
    )
}

// ---------------------------------------------------------------------------------------------
// Storage-friendly variants over stored perfect-subtree hashes.
// ---------------------------------------------------------------------------------------------

/// MTH of leaves `[start, end)`, where the range is a node of the RFC 6962 tree (start is a
/// multiple of the power of two at or above `end - start`), from its perfect subtrees: one
/// `get` per set bit of `end - start`, left to right, folded right to left.
fn range_root<E>(
    start: u64,
    end: u64,
    get: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Hash, E> {
    debug_assert!(start < end);
    let mut parts = Vec::with_capacity(64);
    let mut at = start;
    let len = end - start;
    for level in (0..64u32).rev() {
        if len & (1 << level) != 0 {
            parts.push(get(level, at >> level)?);
            at += 1 << level;
        }
    }
    let mut acc = parts
        .pop()
        .expect("a non-empty range has at least one perfect subtree");
    while let Some(left) = parts.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// The perfect subtrees that make up the tree of `size` leaves, left to right (its compact
/// range, one per set bit of `size`): the only stored nodes that [`root_at`] reads for
/// `size`, and that [`nodes_completed_by_append`] reads from before `size` while appending
/// from index `size` on.
pub fn compact_range(size: u64) -> Vec<NodeId> {
    let mut out = Vec::with_capacity(size.count_ones() as usize);
    let mut at = 0u64;
    for level in (0..64u32).rev() {
        if size & (1 << level) != 0 {
            out.push((level, at >> level));
            at += 1 << level;
        }
    }
    out
}

/// Root of the tree of `size` leaves from stored perfect subtrees (`popcount(size)` calls).
pub fn root_at<E>(size: u64, mut get: impl FnMut(u32, u64) -> Result<Hash, E>) -> Result<Hash, E> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_root(0, size, &mut get)
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves from stored perfect subtrees.
/// The caller guarantees `index < size`.
pub fn inclusion_proof_at<E>(
    index: u64,
    size: u64,
    mut get: impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    debug_assert!(index < size);
    // Walk PATH top-down over the node [lo, lo + n); collect siblings, then reverse. Only the
    // first right sibling can be an imperfect range; below a left turn all nodes are perfect.
    let (mut m, mut lo, mut n) = (index, 0u64, size);
    let mut top_down = Vec::new();
    while n > 1 {
        let k = split(n);
        if m < k {
            top_down.push(range_root(lo + k, lo + n, &mut get)?);
            n = k;
        } else {
            top_down.push(get(k.trailing_zeros(), lo >> k.trailing_zeros())?);
            m -= k;
            lo += k;
            n -= k;
        }
    }
    top_down.reverse();
    Ok(top_down)
}

/// Consistency proof from `old_size` to `new_size` from stored perfect subtrees. The caller
/// guarantees `0 < old_size <= new_size`.
pub fn consistency_proof_at<E>(
    old_size: u64,
    new_size: u64,
    mut get: impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    debug_assert!(0 < old_size && old_size <= new_size);
    // Walk SUBPROOF top-down over the node [lo, lo + n); collect, then reverse.
    let (mut m, mut lo, mut n, mut whole) = (old_size, 0u64, new_size, true);
    let mut top_down = Vec::new();
    while m != n {
        let k = split(n);
        if m <= k {
            top_down.push(range_root(lo + k, lo + n, &mut get)?);
            n = k;
        } else {
            top_down.push(get(k.trailing_zeros(), lo >> k.trailing_zeros())?);
            m -= k;
            lo += k;
            n -= k;
            whole = false;
        }
    }
    if !whole {
        // The last step was a left turn (a right turn keeps m != n), so [lo, lo + n) is perfect.
        top_down.push(range_root(lo, lo + n, &mut get)?);
    }
    top_down.reverse();
    Ok(top_down)
}

/// The perfect-subtree nodes completed by appending leaf `index` with hash `leaf`: the leaf
/// itself at `(0, index)`, then one parent per trailing one bit of `index`, each combining the
/// stored left sibling (read with `get`) with the new right child.
pub fn nodes_completed_by_append<E>(
    index: u64,
    leaf: Hash,
    mut get: impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<(NodeId, Hash)>, E> {
    let mut out = vec![((0, index), leaf)];
    let (mut level, mut i, mut h) = (0u32, index, leaf);
    while i & 1 == 1 {
        let left = get(level, i - 1)?;
        h = node_hash(&left, &h);
        level += 1;
        i >>= 1;
        out.push(((level, i), h));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    fn vectors() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors"))
    }

    fn h(s: &str) -> Hash {
        hex::decode(s)
            .expect("hex in vectors")
            .try_into()
            .expect("32-byte hash in vectors")
    }

    fn hs(v: &[String]) -> Vec<Hash> {
        v.iter().map(|s| h(s)).collect()
    }

    // ---- rfc6962_merkle.json ----

    #[derive(Deserialize)]
    struct Rfc {
        empty_tree_root_hex: String,
        hasher_vectors: HasherVectors,
        leaves: Vec<Leaf>,
        node_hashes: NodeHashes,
        roots: Roots,
        compact_ranges: CompactRanges,
        inclusion_proofs: Vec<InclusionCase>,
        consistency_proofs: Vec<ConsistencyCase>,
        derived_exhaustive: Derived,
    }
    #[derive(Deserialize)]
    struct HasherVectors {
        cases: Vec<HasherCase>,
    }
    #[derive(Deserialize)]
    struct HasherCase {
        function: String,
        leaf_input_hex: Option<String>,
        left_hex: Option<String>,
        right_hex: Option<String>,
        expected_hex: String,
    }
    #[derive(Deserialize)]
    struct Leaf {
        index: u64,
        leaf_input_hex: String,
        leaf_hash_hex: String,
    }
    #[derive(Deserialize)]
    struct NodeHashes {
        levels: Vec<Vec<Node>>,
    }
    #[derive(Deserialize)]
    struct Node {
        level: u32,
        index: u64,
        hash_hex: String,
    }
    #[derive(Deserialize)]
    struct Roots {
        by_tree_size: Vec<RootCase>,
    }
    #[derive(Deserialize)]
    struct RootCase {
        tree_size: u64,
        root_hex: String,
    }
    #[derive(Deserialize)]
    struct CompactRanges {
        by_tree_size: Vec<CompactCase>,
    }
    #[derive(Deserialize)]
    struct CompactCase {
        tree_size: u64,
        nodes: Vec<Node>,
    }
    #[derive(Deserialize)]
    struct InclusionCase {
        leaf_index: u64,
        tree_size: u64,
        leaf_hash_hex: Option<String>,
        root_hex: Option<String>,
        proof_hex: Vec<String>,
    }
    #[derive(Deserialize)]
    struct ConsistencyCase {
        size1: u64,
        size2: u64,
        root1_hex: Option<String>,
        root2_hex: Option<String>,
        proof_hex: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Derived {
        inclusion_proofs: Vec<InclusionCase>,
        consistency_proofs: Vec<ConsistencyCase>,
    }

    fn rfc() -> Rfc {
        let text = std::fs::read_to_string(vectors().join("rfc6962_merkle.json"))
            .expect("read rfc6962_merkle.json");
        serde_json::from_str(&text).expect("parse rfc6962_merkle.json")
    }

    /// The 8 upstream leaf hashes, checked against their inputs.
    fn upstream_leaves(v: &Rfc) -> Vec<Hash> {
        v.leaves
            .iter()
            .enumerate()
            .map(|(i, l)| {
                assert_eq!(l.index, i as u64);
                let lh = leaf_hash(&hex::decode(&l.leaf_input_hex).unwrap());
                assert_eq!(lh, h(&l.leaf_hash_hex), "leaf {i}");
                lh
            })
            .collect()
    }

    #[test]
    fn hasher_vectors_match() {
        let v = rfc();
        assert_eq!(empty_root(), h(&v.empty_tree_root_hex));
        assert_eq!(v.hasher_vectors.cases.len(), 4);
        for c in &v.hasher_vectors.cases {
            let got = match c.function.as_str() {
                "empty_root" => empty_root(),
                "hash_leaf" => leaf_hash(&hex::decode(c.leaf_input_hex.as_ref().unwrap()).unwrap()),
                "hash_children" => hash_children(
                    &hex::decode(c.left_hex.as_ref().unwrap()).unwrap(),
                    &hex::decode(c.right_hex.as_ref().unwrap()).unwrap(),
                ),
                other => panic!("unknown hasher function {other}"),
            };
            assert_eq!(got, h(&c.expected_hex), "{}", c.function);
        }
    }

    #[test]
    fn roots_match_upstream_for_sizes_0_to_8() {
        let v = rfc();
        let leaves = upstream_leaves(&v);
        assert_eq!(v.roots.by_tree_size.len(), 9);
        for r in &v.roots.by_tree_size {
            assert_eq!(
                root(&leaves[..r.tree_size as usize]),
                h(&r.root_hex),
                "size {}",
                r.tree_size
            );
        }
    }

    #[test]
    fn appends_reproduce_upstream_node_hashes_and_compact_ranges() {
        let v = rfc();
        let leaves = upstream_leaves(&v);
        let mut store: HashMap<NodeId, Hash> = HashMap::new();
        for (i, l) in leaves.iter().enumerate() {
            let nodes = nodes_completed_by_append(i as u64, *l, |lv, ix| {
                store.get(&(lv, ix)).copied().ok_or(())
            })
            .unwrap();
            store.extend(nodes);
        }
        let mut upstream = 0;
        for level in &v.node_hashes.levels {
            for n in level {
                assert_eq!(store.get(&(n.level, n.index)), Some(&h(&n.hash_hex)));
                upstream += 1;
            }
        }
        assert_eq!(
            store.len(),
            upstream,
            "append completed exactly the upstream nodes"
        );

        // root_at reads exactly the compact range, left to right, and folds it to the root.
        for c in &v.compact_ranges.by_tree_size {
            let mut asked = Vec::new();
            let got = root_at(c.tree_size, |lv, ix| {
                asked.push((lv, ix));
                store.get(&(lv, ix)).copied().ok_or(())
            })
            .unwrap();
            let want: Vec<_> = c.nodes.iter().map(|n| (n.level, n.index)).collect();
            assert_eq!(asked, want, "size {}", c.tree_size);
            for n in &c.nodes {
                assert_eq!(store[&(n.level, n.index)], h(&n.hash_hex));
            }
            let want_root = &v.roots.by_tree_size[c.tree_size as usize];
            assert_eq!(got, h(&want_root.root_hex), "size {}", c.tree_size);
        }
    }

    fn check_inclusion_case(leaves: &[Hash], c: &InclusionCase) {
        let n = c.tree_size as usize;
        let proof = inclusion_proof(&leaves[..n], c.leaf_index).unwrap();
        assert_eq!(proof, hs(&c.proof_hex), "PATH({}, D[{n}])", c.leaf_index);
        let leaf = leaves[c.leaf_index as usize];
        if let Some(lh) = &c.leaf_hash_hex {
            assert_eq!(leaf, h(lh));
        }
        let r = root(&leaves[..n]);
        if let Some(rh) = &c.root_hex {
            assert_eq!(r, h(rh));
        }
        verify_inclusion(&leaf, c.leaf_index, c.tree_size, &proof, &r).unwrap();
    }

    fn check_consistency_case(leaves: &[Hash], c: &ConsistencyCase) {
        let (m, n) = (c.size1 as usize, c.size2 as usize);
        let proof = consistency_proof(&leaves[..n], c.size1).unwrap();
        assert_eq!(proof, hs(&c.proof_hex), "PROOF({m}, D[{n}])");
        let (r1, r2) = (root(&leaves[..m]), root(&leaves[..n]));
        if let (Some(a), Some(b)) = (&c.root1_hex, &c.root2_hex) {
            assert_eq!((r1, r2), (h(a), h(b)));
        }
        verify_consistency(c.size1, c.size2, &r1, &r2, &proof).unwrap();
    }

    #[test]
    fn upstream_inclusion_proofs_reproduced_and_verified() {
        let v = rfc();
        let leaves = upstream_leaves(&v);
        assert_eq!(v.inclusion_proofs.len(), 7);
        for c in &v.inclusion_proofs {
            check_inclusion_case(&leaves, c);
        }
    }

    #[test]
    fn upstream_consistency_proofs_reproduced_and_verified() {
        let v = rfc();
        let leaves = upstream_leaves(&v);
        assert_eq!(v.consistency_proofs.len(), 5);
        for c in &v.consistency_proofs {
            check_consistency_case(&leaves, c);
        }
    }

    #[test]
    fn derived_exhaustive_proofs_reproduced_and_verified() {
        let v = rfc();
        let leaves = upstream_leaves(&v);
        // All (index, size) with index < size <= 8 and all 1 <= m <= n <= 8.
        assert_eq!(v.derived_exhaustive.inclusion_proofs.len(), 36);
        assert_eq!(v.derived_exhaustive.consistency_proofs.len(), 36);
        for c in &v.derived_exhaustive.inclusion_proofs {
            check_inclusion_case(&leaves, c);
        }
        for c in &v.derived_exhaustive.consistency_proofs {
            check_consistency_case(&leaves, c);
        }
    }

    // ---- merkle_testdata/ (transparency-dev/merkle probes) ----

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct InclusionProbe {
        leaf_idx: u64,
        tree_size: u64,
        root: String,
        leaf_hash: String,
        proof: Option<Vec<String>>,
        want_err: bool,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ConsistencyProbe {
        size1: u64,
        size2: u64,
        root1: String,
        root2: String,
        proof: Option<Vec<String>>,
        want_err: bool,
    }

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64 in probe")
    }

    fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read probe dir") {
            let p = e.unwrap().path();
            if p.is_dir() {
                json_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
        out.sort();
    }

    #[test]
    fn inclusion_probes_get_expected_verdicts() {
        let mut files = Vec::new();
        json_files(&vectors().join("merkle_testdata/inclusion"), &mut files);
        assert_eq!(files.len(), 98);
        let mut accepted = 0;
        for f in &files {
            let p: InclusionProbe =
                serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            let proof: Vec<Vec<u8>> = p.proof.unwrap_or_default().iter().map(|s| b64(s)).collect();
            let got = verify_inclusion_bytes(
                &b64(&p.leaf_hash),
                p.leaf_idx,
                p.tree_size,
                &proof,
                &b64(&p.root),
            );
            assert_eq!(got.is_err(), p.want_err, "{}: {got:?}", f.display());
            accepted += usize::from(got.is_ok());
        }
        assert_eq!(accepted, 6);
    }

    #[test]
    fn consistency_probes_get_expected_verdicts() {
        let mut files = Vec::new();
        json_files(&vectors().join("merkle_testdata/consistency"), &mut files);
        assert_eq!(files.len(), 98);
        let mut accepted = 0;
        for f in &files {
            let p: ConsistencyProbe =
                serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            let proof: Vec<Vec<u8>> = p.proof.unwrap_or_default().iter().map(|s| b64(s)).collect();
            let got =
                verify_consistency_bytes(p.size1, p.size2, &b64(&p.root1), &b64(&p.root2), &proof);
            assert_eq!(got.is_err(), p.want_err, "{}: {got:?}", f.display());
            accepted += usize::from(got.is_ok());
        }
        assert_eq!(accepted, 6);
    }

    // ---- errors read as sentences ----

    #[test]
    fn errors_name_the_numbers() {
        let leaves: Vec<Hash> = (0u8..8).map(|i| leaf_hash(&[i])).collect();
        let r = root(&leaves);
        let proof = inclusion_proof(&leaves, 5).unwrap();
        let e = verify_inclusion(&leaves[5], 5, 8, &proof[..2], &r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "inclusion proof for leaf 5 in tree of size 8 has 2 hashes, expected 3"
        );
        let e = verify_inclusion(&leaves[4], 5, 8, &proof, &r).unwrap_err();
        assert!(matches!(e, MerkleError::RootMismatch { expected, .. } if expected == r));
        assert!(e.to_string().starts_with("computed root "), "{e}");
        assert!(e
            .to_string()
            .contains(&format!("expected root {}..", hex::encode(&r[..8]))));
        let e = verify_inclusion_bytes(&leaves[5], 5, 8, &[&proof[0][..], &[], &proof[2][..]], &r)
            .unwrap_err();
        assert_eq!(e.to_string(), "proof hash 1 is 0 bytes long, expected 32");
        assert_eq!(
            verify_consistency(9, 8, &r, &r, &[])
                .unwrap_err()
                .to_string(),
            "old tree size 9 is larger than new tree size 8"
        );
        assert_eq!(
            inclusion_proof(&leaves, 8),
            Err(MerkleError::IndexOutOfRange {
                index: 8,
                tree_size: 8
            })
        );
        assert_eq!(
            consistency_proof(&leaves, 0),
            Err(MerkleError::OldSizeZero { new_size: 8 })
        );
        assert_eq!(
            consistency_proof(&leaves, 9),
            Err(MerkleError::OldSizeLarger {
                old_size: 9,
                new_size: 8
            })
        );
    }

    // ---- the `_at` functions against the reference ----

    /// A `get` over `store` that counts its calls and fails on a node never stored.
    fn counted<'a>(
        store: &'a HashMap<NodeId, Hash>,
        reads: &'a mut usize,
    ) -> impl FnMut(u32, u64) -> Result<Hash, NodeId> + 'a {
        move |lv, ix| {
            *reads += 1;
            store.get(&(lv, ix)).copied().ok_or((lv, ix))
        }
    }

    /// Grows a store leaf by leaf with `nodes_completed_by_append` (whose `get` only finds
    /// nodes already stored), and after each append checks every root and proof the `_at`
    /// functions serve against the reference functions, and that each call reads O(log n)
    /// nodes.
    #[test]
    fn at_functions_match_reference_for_sizes_1_to_70() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut store: HashMap<NodeId, Hash> = HashMap::new();
        for size in 1..=70u64 {
            let index = size - 1;
            let before = store.len();
            let nodes = nodes_completed_by_append(index, leaves[index as usize], |lv, ix| {
                store.get(&(lv, ix)).copied().ok_or((lv, ix))
            })
            .unwrap();
            assert_eq!(nodes.len() as u32, index.trailing_ones() + 1);
            assert_eq!(nodes[0], ((0, index), leaves[index as usize]));
            store.extend(nodes);
            assert_eq!(store.len(), before + index.trailing_ones() as usize + 1);

            let tree = &leaves[..size as usize];
            let max_reads = 2 * (64 - size.leading_zeros()) as usize + 1;
            let mut reads = 0;
            let r = root_at(size, counted(&store, &mut reads)).unwrap();
            assert_eq!(r, root(tree), "root at size {size}");
            assert_eq!(reads, size.count_ones() as usize);
            for i in 0..size {
                let mut reads = 0;
                let p = inclusion_proof_at(i, size, counted(&store, &mut reads)).unwrap();
                assert_eq!(p, inclusion_proof(tree, i).unwrap(), "PATH({i}, {size})");
                assert!(reads <= max_reads, "PATH({i}, {size}) read {reads} nodes");
                verify_inclusion(&tree[i as usize], i, size, &p, &r).unwrap();
            }
            for old in 1..=size {
                let mut reads = 0;
                let p = consistency_proof_at(old, size, counted(&store, &mut reads)).unwrap();
                assert_eq!(
                    p,
                    consistency_proof(tree, old).unwrap(),
                    "PROOF({old}, {size})"
                );
                assert!(
                    reads <= max_reads,
                    "PROOF({old}, {size}) read {reads} nodes"
                );
                verify_consistency(old, size, &root(&tree[..old as usize]), &r, &p).unwrap();
            }
        }
    }

    /// A group of appends from any size, and the root after it, need no stored node but the
    /// compact range of the size the group starts from (what the writer keeps in memory).
    #[test]
    fn groups_read_only_the_compact_range_of_their_start() {
        let leaves: Vec<Hash> = (0u32..80).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut all: HashMap<NodeId, Hash> = HashMap::new();
        for start in 0..80u64 {
            let range = compact_range(start);
            assert_eq!(range.len() as u32, start.count_ones());
            let mut known: HashMap<NodeId, Hash> = range.iter().map(|id| (*id, all[id])).collect();
            for end in start + 1..=(start + 9).min(80) {
                let index = end - 1;
                let nodes = nodes_completed_by_append(index, leaves[index as usize], |lv, ix| {
                    known.get(&(lv, ix)).copied().ok_or((lv, ix))
                })
                .unwrap();
                known.extend(nodes.iter().copied());
                if index == start {
                    all.extend(nodes);
                }
                let r = root_at(end, |lv, ix| known.get(&(lv, ix)).copied().ok_or((lv, ix)));
                assert_eq!(r, Ok(root(&leaves[..end as usize])), "{start}..{end}");
            }
        }
        assert_eq!(compact_range(0), vec![]);
        assert_eq!(compact_range(13), vec![(3, 0), (2, 2), (0, 12)]);
    }

    #[test]
    fn at_functions_pass_store_errors_through() {
        let err = |_: u32, _: u64| -> Result<Hash, &'static str> { Err("disk on fire") };
        assert_eq!(root_at(5, err), Err("disk on fire"));
        assert_eq!(inclusion_proof_at(1, 5, err), Err("disk on fire"));
        assert_eq!(consistency_proof_at(3, 5, err), Err("disk on fire"));
        assert_eq!(
            nodes_completed_by_append(3, [0; 32], err),
            Err("disk on fire")
        );
        // Nothing to read: an even index completes only its own leaf; size 0 is the empty root.
        assert_eq!(
            nodes_completed_by_append(4, [7; 32], err),
            Ok(vec![((0, 4), [7; 32])])
        );
        assert_eq!(root_at(0, err), Ok(empty_root()));
    }

    // ---- properties ----

    fn flip(h: &mut Hash, bit: usize) {
        h[bit / 8] ^= 1 << (bit % 8);
    }

    proptest! {
        #[test]
        fn verifiers_never_panic_on_random_input(
            leaf in any::<[u8; 32]>(),
            root_a in any::<[u8; 32]>(),
            root_b in any::<[u8; 32]>(),
            a in prop_oneof![0u64..80, any::<u64>(), Just(u64::MAX)],
            b in prop_oneof![0u64..80, any::<u64>(), Just(u64::MAX)],
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
            raw in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
        ) {
            let _ = verify_inclusion(&leaf, a, b, &proof, &root_a);
            let _ = verify_consistency(a, b, &root_a, &root_b, &proof);
            let _ = verify_inclusion_bytes(&leaf, a, b, &raw, &root_a);
            let _ = verify_consistency_bytes(a, b, &root_a[..(a % 33) as usize], &root_b, &raw);
        }

        #[test]
        fn inclusion_rejects_any_single_flipped_bit(
            size in 1u64..=64,
            index_seed in any::<u64>(),
            target in any::<usize>(),
            bit in 0usize..256,
        ) {
            let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let index = index_seed % size;
            let mut leaf = leaves[index as usize];
            let mut r = root(&leaves);
            let mut proof = inclusion_proof(&leaves, index).unwrap();
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &r).is_ok());
            match target % (proof.len() + 2) {
                0 => flip(&mut leaf, bit),
                1 => flip(&mut r, bit),
                i => flip(&mut proof[i - 2], bit),
            }
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &r).is_err());
        }

        #[test]
        fn consistency_rejects_any_single_flipped_bit(
            new in 1u64..=64,
            old_seed in any::<u64>(),
            target in any::<usize>(),
            bit in 0usize..256,
        ) {
            let leaves: Vec<Hash> = (0..new).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let old = 1 + old_seed % new;
            let mut r1 = root(&leaves[..old as usize]);
            let mut r2 = root(&leaves);
            let mut proof = consistency_proof(&leaves, old).unwrap();
            prop_assert!(verify_consistency(old, new, &r1, &r2, &proof).is_ok());
            match target % (proof.len() + 2) {
                0 => flip(&mut r1, bit),
                1 => flip(&mut r2, bit),
                i => flip(&mut proof[i - 2], bit),
            }
            prop_assert!(verify_consistency(old, new, &r1, &r2, &proof).is_err());
        }
    }
}
