//! The tree's tests: hashes against the codec, range proofs and witnesses at every position,
//! the incremental top tree, and the golden fixtures that pin the hash.

use super::*;
use std::collections::BTreeMap;

/// `n` keys `<prefix><i>` that fall in bucket `b` (found by trying; 2^16 tries a key).
pub(crate) fn keys_in_bucket(prefix: &str, b: u16, n: usize) -> Vec<Vec<u8>> {
    (0u64..)
        .map(|i| format!("{prefix}{i}").into_bytes())
        .filter(|k| bucket_of(k) == b)
        .take(n)
        .collect()
}

fn leaves(n: usize) -> Vec<CryptoHash> {
    (0..n)
        .map(|i| leaf_hash(format!("k{i}").as_bytes(), &value_hash(1, &[i as u8])))
        .collect()
}

#[test]
fn hand_framed_hashes_are_the_codec_encodings() {
    let v = b"some value".to_vec();
    assert_eq!(
        value_hash(2, &v),
        CryptoHash::of(
            domain::STATE_TREE_VALUE,
            &codec::encode(&(2u32, serde_bytes::ByteBuf::from(v.clone())))
        )
    );
    let vh = value_hash(1, &v);
    assert_eq!(
        leaf_hash(b"v/k", &vh),
        CryptoHash::of(
            domain::STATE_TREE_LEAF,
            &codec::encode(&(b"v/k".to_vec(), vh))
        )
    );
    assert_eq!(
        bucket_hash(3, &vh),
        CryptoHash::of(domain::STATE_TREE_BUCKET, &codec::encode(&(3u32, vh)))
    );
    assert_eq!(
        node_hash(&vh, &PAD),
        CryptoHash::of(domain::STATE_TREE_NODE, &[vh.0, PAD.0].concat())
    );
    // The schema is in the value hash: the same bytes in another layout hash apart.
    assert_ne!(value_hash(1, &v), value_hash(2, &v));
}

#[test]
fn a_bucket_tree_pads_to_a_power_of_two_and_its_root_is_the_walk_over_it() {
    assert_eq!(subroot(&[]), PAD);
    let l = leaves(1);
    assert_eq!(subroot(&l), l[0]);
    let l = leaves(3);
    assert_eq!(
        subroot(&l),
        node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &PAD))
    );
    for n in 1..40 {
        let l = leaves(n);
        assert_eq!(subroot(&l), node_over(&l, 0, 1 << depth(n as u64)), "{n}");
    }
}

#[test]
fn every_run_of_every_bucket_size_proves_and_a_changed_proof_does_not() {
    for n in 1..=17usize {
        let l = leaves(n);
        let root = subroot(&l);
        for start in 0..n {
            for end in start + 1..=n {
                let proof = range_proof(&l, start, end);
                let got = range_subroot(n as u64, start as u64, &l[start..end], &proof);
                assert_eq!(got, Ok(root), "{n} entries, run {start}..{end}");
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    bad[0].0[0] ^= 1;
                    assert_ne!(
                        range_subroot(n as u64, start as u64, &l[start..end], &bad),
                        Ok(root)
                    );
                    assert_eq!(
                        range_subroot(n as u64, start as u64, &l[start..end], &proof[1..]),
                        Err(ProofError::TooFewSiblings(1))
                    );
                }
                let mut long = proof.clone();
                long.push(PAD);
                assert_eq!(
                    range_subroot(n as u64, start as u64, &l[start..end], &long),
                    Err(ProofError::TooManySiblings(1))
                );
                // The same leaves claimed at another position, or in a bucket of another
                // count (the bucket hash binds the count: a sibling far from the run
                // may hide it from the subroot alone), lead elsewhere.
                if start > 0 {
                    assert_ne!(
                        range_subroot(n as u64, start as u64 - 1, &l[start..end], &proof),
                        Ok(root)
                    );
                }
                let bucket = bucket_hash(n as u32, &root);
                assert_ne!(
                    range_subroot(n as u64 + 1, start as u64, &l[start..end], &proof)
                        .map(|r| bucket_hash(n as u32 + 1, &r)),
                    Ok(bucket)
                );
            }
        }
    }
    assert!(
        range_subroot(3, 2, &leaves(2), &[]).is_err(),
        "past the end"
    );
    assert!(range_subroot(3, 0, &[], &[]).is_err(), "an empty run");
    assert_eq!(range_subroot(0, 0, &[], &[]), Ok(PAD));
}

#[test]
fn the_incremental_top_tree_equals_one_built_at_once_and_restores() {
    let hashes: Vec<(u16, CryptoHash)> = [0u16, 1, 77, 4096, 65535]
        .iter()
        .map(|&b| (b, bucket_hash(1, &leaves(1)[0])))
        .collect();
    let mut t = TopTree::empty();
    assert_eq!(t.root(), empty_root());
    let before = t.set_buckets(&hashes[..2]);
    assert_eq!(
        before.len(),
        2 + 16,
        "two sibling buckets share all 16 ancestors"
    );
    t.set_buckets(&hashes[2..]);
    assert_eq!(t.root(), TopTree::from_buckets(hashes.clone()).root());
    let snapshot = t.root();
    let undo = t.set_buckets(&[(77, empty_subtree(0))]);
    assert_ne!(t.root(), snapshot);
    t.restore(&undo);
    assert_eq!(t.root(), snapshot);
    for (b, _) in &hashes {
        assert_eq!(
            root_from_path(
                *b,
                t.bucket(*b),
                &TopTree::path_indices(*b)
                    .map(|i| t.node(i))
                    .collect::<Vec<_>>()
            ),
            Ok(t.root())
        );
    }
}

/// A top tree over a bucket holding `entries` (sorted), and the witness for `key`.
fn witness_in(entries: &[(Vec<u8>, CryptoHash)], key: &[u8]) -> (Witness, CryptoHash) {
    let b = bucket_of(key);
    let l: Vec<CryptoHash> = entries.iter().map(|(k, vh)| leaf_hash(k, vh)).collect();
    let t = TopTree::from_buckets([(b, bucket_hash(l.len() as u32, &subroot(&l)))]);
    let path = TopTree::path_indices(b).map(|i| t.node(i)).collect();
    (witness_for(key, entries, path), t.root())
}

#[test]
fn witnesses_prove_each_present_value_and_each_gap_and_nothing_else() {
    let b = 4242;
    let mut keys = keys_in_bucket("k", b, 9);
    keys.sort();
    // Present: the even keys; absent: the odd ones (before, between and after them).
    let entries: Vec<(Vec<u8>, CryptoHash)> = keys
        .iter()
        .step_by(2)
        .map(|k| (k.clone(), value_hash(1, k)))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let (w, root) = witness_in(&entries, k);
        let w = Witness::decode(&w.encode()).expect("round trip");
        if i % 2 == 0 {
            let vh = value_hash(1, k);
            assert_eq!(w.root(k, Some(&vh)), Ok(root), "key {i}");
            assert_ne!(w.root(k, Some(&value_hash(1, b"other"))), Ok(root));
            assert_ne!(w.root(k, Some(&value_hash(2, k))), Ok(root), "schema");
            assert!(
                w.root(k, None).is_err(),
                "an absence proof for a present key"
            );
        } else {
            assert_eq!(w.root(k, None), Ok(root), "key {i}");
            assert_ne!(w.root(k, Some(&value_hash(1, k))), Ok(root));
        }
        // The witness of one key does not prove another.
        let other = &keys[(i + 1) % keys.len()];
        assert_ne!(w.root(other, Some(&value_hash(1, other))), Ok(root));
        assert_ne!(w.root(other, None), Ok(root));
    }
    // An empty bucket proves every key of it absent.
    let (w, root) = witness_in(&[], &keys[0]);
    assert_eq!(root, empty_root());
    assert_eq!(w.root(&keys[0], None), Ok(root));
    // Neighbours that do not enclose the key, or a shortened path, are refused.
    let (mut w, _) = witness_in(&entries, &keys[3]);
    w.disclosed.swap(0, 1);
    assert!(matches!(w.root(&keys[3], None), Err(ProofError::Shape(_))));
    let (mut w, _) = witness_in(&entries, &keys[0]);
    w.path.pop();
    assert!(matches!(
        w.root(&keys[0], Some(&value_hash(1, &keys[0]))),
        Err(ProofError::Shape(_))
    ));
    let (mut w, _) = witness_in(&entries, &keys[0]);
    w.version = 2;
    assert_eq!(Witness::decode(&w.encode()), Err(ProofError::Version(2)));
    let mut bytes = witness_in(&entries, &keys[0]).0.encode();
    bytes.push(0);
    assert!(matches!(
        Witness::decode(&bytes),
        Err(ProofError::Malformed(_))
    ));
}

#[test]
fn the_empty_root_is_the_one_types_names() {
    assert_eq!(empty_root(), types::EMPTY_STATE_ROOT);
    assert_eq!(
        state_hash(Height::ZERO, &empty_root()),
        types::empty_state_hash()
    );
}

/// The fixed state the golden fixtures describe: a few entries of each kind.
fn fixture_state() -> BTreeMap<u16, Vec<(Vec<u8>, CryptoHash)>> {
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"v/alpha".to_vec(), b"1".to_vec()),
        (b"v/beta".to_vec(), b"two".to_vec()),
        (b"v/gamma".to_vec(), vec![0, 255, 7]),
        (b"x/0123".to_vec(), 99u64.to_be_bytes().to_vec()),
        (b"e/00000000".to_vec(), Vec::new()),
    ];
    // Two more keys in alpha's bucket, so the witness has a bucket tree to climb.
    for k in keys_in_bucket("v/alpha-", bucket_of(b"v/alpha"), 2) {
        entries.push((k, b"neighbour".to_vec()));
    }
    entries.sort();
    let mut buckets: BTreeMap<u16, Vec<(Vec<u8>, CryptoHash)>> = BTreeMap::new();
    for (k, v) in entries {
        buckets
            .entry(bucket_of(&k))
            .or_default()
            .push((k, value_hash(1, &v)));
    }
    buckets
}

fn fixture(name: &str, text: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, format!("{text}\n")).expect("write fixture");
    }
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_FIXTURES=1 writes it)", path.display()))
        .trim()
        .to_string()
}

#[test]
fn golden_fixtures_pin_the_root_and_a_witness() {
    let buckets = fixture_state();
    let t = TopTree::from_buckets(buckets.iter().map(|(b, e)| {
        let l: Vec<CryptoHash> = e.iter().map(|(k, vh)| leaf_hash(k, vh)).collect();
        (*b, bucket_hash(l.len() as u32, &subroot(&l)))
    }));
    let root = t.root();
    assert_eq!(
        fixture("state_tree_root.hex", &root.to_hex()),
        root.to_hex(),
        "the state tree's hash changed: every replica must change with it"
    );
    let key = b"v/alpha";
    let b = bucket_of(key);
    let path = TopTree::path_indices(b).map(|i| t.node(i)).collect();
    let w = witness_for(key, &buckets[&b], path);
    let hex = hex::encode(w.encode());
    assert_eq!(
        fixture("state_tree_witness.hex", &hex),
        hex,
        "the witness encoding changed: clients' verifiers must change with it"
    );
    let decoded = Witness::decode(&hex::decode(&hex).expect("hex")).expect("decode");
    assert_eq!(decoded.root(key, Some(&value_hash(1, b"1"))), Ok(root));
    let height = Height::new(7);
    assert_eq!(
        fixture(
            "state_tree_state_hash_at_7.hex",
            &state_hash(height, &root).to_hex()
        ),
        state_hash(height, &root).to_hex()
    );
}

#[test]
fn the_differing_buckets_of_two_top_trees_are_exactly_those_set_differently() {
    let h = |i: u8| CryptoHash([i; 32]);
    let base = TopTree::from_buckets([(0, h(1)), (7, h(2)), (40_000, h(3)), (65_535, h(4))]);
    assert_eq!(base.differing_buckets(&base.clone()), Vec::<u16>::new());
    let mut other = base.clone();
    // Changed, emptied, newly filled, and set to what it already was.
    other.set_buckets(&[
        (7, h(9)),
        (40_000, TopTree::empty().bucket(40_000)),
        (12, h(5)),
        (65_535, h(4)),
    ]);
    assert_eq!(base.differing_buckets(&other), vec![7, 12, 40_000]);
    assert_eq!(other.differing_buckets(&base), vec![7, 12, 40_000]);
    // What `to_bytes` writes reads back as the same tree; other lengths do not.
    let bytes = other.to_bytes();
    let back = TopTree::from_bytes(&bytes).expect("reads back");
    assert_eq!(
        (back.root(), back.differing_buckets(&other)),
        (other.root(), vec![])
    );
    assert!(TopTree::from_bytes(&bytes[1..]).is_none());
}
