//! The state's tests: execution, the incremental tree against a recompute, checkpoints,
//! schemas and migration, reads at an earlier height, and state sync's checks.

use super::*;
use crate::ingress::Ingress;
use crypto::ed25519::Ed25519KeyPair;
use types::codec;

const T: u64 = 1_000_000_000_000;
const NET: NetworkId = NetworkId([5; 32]);

fn msg(nonce: u64, expiry_ns: u64, operation: Operation) -> SignedIngress {
    let key = Ed25519KeyPair::from_seed(&[3; 32]);
    SignedIngress::sign(
        Ingress {
            network: NET,
            sender: key.public_key(),
            nonce,
            expiry_ns,
            operation,
        },
        &key,
    )
}

fn put(k: &str, v: &str) -> Operation {
    Operation::Put {
        key: k.into(),
        value: v.as_bytes().to_vec(),
    }
}

#[test]
fn executes_puts_and_deletes_and_the_incremental_hash_matches_a_full_recompute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = ReplicatedState::open(dir.path()).expect("open");
    let blocks = [
        vec![
            msg(1, T + 100, put("a", "1")),
            msg(2, T + 100, put("b", "2")),
        ],
        vec![
            msg(3, T + 100, put("a", "3")),
            msg(4, T + 100, Operation::Delete { key: "b".into() }),
        ],
        vec![],
        vec![msg(5, T + 5, put("c", "4"))],
    ];
    let mut hashes = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let r = s
            .execute(Height::new(i as u64 + 1), T + i as u64, &NET, b)
            .expect("execute");
        assert_eq!(
            r.state_hash,
            s.recompute_hash().expect("recompute"),
            "height {}",
            i + 1
        );
        hashes.push(r.state_hash);
    }
    assert_eq!(s.get("a").expect("get"), Some(b"3".to_vec()));
    assert_eq!(s.get("b").expect("get"), None);
    assert_eq!(
        hashes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        hashes.len()
    );
    // Once message 5 expires its replay record is purged, and the hash still matches.
    let r = s
        .execute(Height::new(5), T + 10, &NET, &[])
        .expect("execute");
    assert_eq!(r.state_hash, s.recompute_hash().expect("recompute"));
    // The same blocks on another node give the same hashes.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut s2 = ReplicatedState::open(dir2.path()).expect("open");
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(
            s2.execute(Height::new(i as u64 + 1), T + i as u64, &NET, b)
                .expect("e")
                .state_hash,
            hashes[i]
        );
    }
}

#[test]
fn duplicates_execute_once_and_expired_messages_not_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = ReplicatedState::open(dir.path()).expect("open");
    let m = msg(1, T + 100, put("k", "v"));
    let r = s
        .execute(Height::new(1), T, &NET, &[m.clone(), m.clone()])
        .expect("execute");
    assert_eq!((r.executed.len(), r.skipped), (1, 1));
    let r = s
        .execute(Height::new(2), T + 1, &NET, std::slice::from_ref(&m))
        .expect("replay");
    assert_eq!((r.executed.len(), r.skipped), (0, 1));
    let late = msg(2, T + 1, put("k", "late"));
    let r = s
        .execute(Height::new(3), T + 2, &NET, &[late])
        .expect("expired");
    assert_eq!((r.executed.len(), r.skipped), (0, 1));
    assert_eq!(s.get("k").expect("get"), Some(b"v".to_vec()));
    assert!(matches!(
        s.execute(Height::new(9), T + 3, &NET, &[]),
        Err(StateError::OutOfOrder { .. })
    ));
}

#[test]
fn reopening_keeps_height_and_hash_and_a_checkpoint_reads_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = {
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        s.execute(Height::new(1), T, &NET, &[msg(1, T + 100, put("a", "1"))])
            .expect("execute");
        s.state_hash()
    };
    let s = ReplicatedState::open(dir.path()).expect("reopen");
    assert_eq!((s.height(), s.state_hash()), (Height::new(1), hash));
    let cp_root = tempfile::tempdir().expect("tempdir");
    let cp = cp_root.path().join("cp");
    s.checkpoint(&cp).expect("checkpoint");
    drop(s);
    let c = ReplicatedState::open(&cp).expect("open checkpoint");
    assert_eq!((c.height(), c.state_hash()), (Height::new(1), hash));
    assert_eq!(c.get("a").expect("get"), Some(b"1".to_vec()));
}

#[test]
fn a_kept_top_tree_is_used_only_while_it_is_the_states_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = dir.path().join("cp");
    let live = dir.path().join("live");
    let mut s = ReplicatedState::open(&live).expect("open");
    s.execute(Height::new(1), T, &NET, &[msg(1, T + 100, put("a", "1"))])
        .expect("execute");
    // The checkpoint keeps the tree; then a block changes the live state under it.
    s.checkpoint(&cp).expect("checkpoint");
    s.execute(Height::new(2), T, &NET, &[msg(2, T + 100, put("b", "2"))])
        .expect("execute");
    let live_hash = s.state_hash();
    drop(s);
    for (path, height, hash) in [
        (&cp, 1, None),
        // The kept tree is the checkpoint's, stale here: it must not be used.
        (&live, 2, Some(live_hash)),
    ] {
        let s = ReplicatedState::open(path).expect("open");
        let scanned = index::load_top(&s.db).expect("scan");
        assert_eq!(s.height(), Height::new(height));
        assert_eq!(s.top.root(), scanned.root());
        assert!(s.top.differing_buckets(&scanned).is_empty());
        if let Some(h) = hash {
            assert_eq!(s.state_hash(), h);
        }
        assert_eq!(s.recompute_hash().expect("recompute"), s.state_hash());
    }
}

#[test]
fn a_newer_schema_is_refused_without_touching_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = DB::open_default(dir.path()).expect("open");
        db.put(SCHEMA, (SCHEMA_VERSION + 1).to_be_bytes())
            .expect("put");
        db.put(b"v/x", b"future").expect("put");
    }
    let err = ReplicatedState::open(dir.path()).expect_err("refused");
    assert!(err.to_string().contains("newer than this release"), "{err}");
    let db = DB::open_default(dir.path()).expect("open");
    assert_eq!(
        schema::read_schema(&db).expect("schema"),
        SCHEMA_VERSION + 1
    );
    assert_eq!(db.get(b"v/x").expect("get"), Some(b"future".to_vec()));
}

#[test]
fn a_fresh_state_hashes_to_the_genesis_constant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = ReplicatedState::open(dir.path()).expect("open");
    assert_eq!(s.state_hash(), types::empty_state_hash());
    assert_eq!(
        s.recompute_hash().expect("recompute"),
        types::empty_state_hash()
    );
}

#[test]
fn execute_reports_each_written_keys_previous_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = ReplicatedState::open(dir.path()).expect("open");
    s.execute(Height::new(1), T, &NET, &[msg(1, T + 100, put("a", "1"))])
        .expect("execute");
    let r = s
        .execute(
            Height::new(2),
            T,
            &NET,
            &[
                msg(2, T + 100, put("a", "2")),
                msg(3, T + 100, put("a", "3")),
                msg(4, T + 100, put("b", "1")),
            ],
        )
        .expect("execute");
    // The value before the block, not before the last write in it (as stored).
    let a = r.undo.values.get("a").cloned().flatten().expect("a");
    assert_eq!(
        from_stored(s.schema(), &a).expect("stored").0,
        b"1".to_vec()
    );
    assert_eq!(r.undo.values.get("b"), Some(&None));
    assert_eq!(r.undo.values.len(), 2);
}

#[test]
fn restore_replaces_the_state_with_a_checkpoint_and_leaves_the_checkpoint_alone() {
    let root = tempfile::tempdir().expect("tempdir");
    let (state_dir, cp) = (root.path().join("state"), root.path().join("cp"));
    let mut s = ReplicatedState::open(&state_dir).expect("open");
    s.execute(Height::new(1), T, &NET, &[msg(1, T + 100, put("a", "1"))])
        .expect("execute");
    s.checkpoint(&cp).expect("checkpoint");
    let at_cp = s.state_hash();
    s.execute(Height::new(2), T, &NET, &[msg(2, T + 100, put("a", "2"))])
        .expect("execute");
    drop(s);
    assert_eq!(
        ReplicatedState::peek(&cp).expect("peek"),
        (Height::new(1), at_cp)
    );
    let mut r = ReplicatedState::restore(&cp, &state_dir).expect("restore");
    assert_eq!((r.height(), r.state_hash()), (Height::new(1), at_cp));
    assert_eq!(r.get("a").expect("get"), Some(b"1".to_vec()));
    // Writing the restored state does not change the checkpoint.
    r.execute(Height::new(2), T, &NET, &[msg(3, T + 100, put("a", "3"))])
        .expect("execute");
    drop(r);
    assert_eq!(
        ReplicatedState::peek(&cp).expect("peek"),
        (Height::new(1), at_cp)
    );
}

#[test]
fn a_block_update_signed_for_another_network_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = ReplicatedState::open(dir.path()).expect("open");
    let key = Ed25519KeyPair::from_seed(&[3; 32]);
    let foreign = SignedIngress::sign(
        Ingress {
            network: NetworkId([6; 32]),
            sender: key.public_key(),
            nonce: 1,
            expiry_ns: T + 100,
            operation: put("a", "1"),
        },
        &key,
    );
    let r = s
        .execute(Height::new(1), T, &NET, &[foreign])
        .expect("execute");
    assert_eq!((r.executed.len(), r.skipped), (0, 1));
    assert_eq!(s.get("a").expect("get"), None);
}

#[cfg(not(feature = "next-release"))]
#[test]
fn the_first_release_refuses_the_append_method() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = ReplicatedState::open(dir.path()).expect("open");
    let m = msg(
        1,
        T + 100,
        Operation::Append {
            key: "a".into(),
            value: b"x".to_vec(),
        },
    );
    assert_eq!(
        m.validate(T, &NET),
        Err(crate::ingress::IngressError::UnsupportedMethod("append"))
    );
    let r = s.execute(Height::new(1), T, &NET, &[m]).expect("execute");
    assert_eq!((r.executed.len(), r.skipped), (0, 1));
    assert_eq!(s.get("a").expect("get"), None);
}

/// A schema-1 state as the first release leaves it, written directly.
#[cfg(feature = "next-release")]
fn schema_1_state(dir: &Path, height: u64, values: &[(&str, &str)]) -> CryptoHash {
    let db = DB::open_default(dir).expect("open");
    let mut batch = WriteBatch::default();
    let mut entries: Vec<(Vec<u8>, CryptoHash)> = values
        .iter()
        .map(|(k, v)| {
            let k = user_entry_key(k);
            batch.put(&k, v.as_bytes());
            (k, tree::value_hash(1, v.as_bytes()))
        })
        .collect();
    // A replay record too: the migration leaves everything but values alone.
    batch.put(b"x/id", b"expiry");
    entries.push((b"x/id".to_vec(), tree::value_hash(1, b"expiry")));
    entries.sort();
    let top = index::write_all(entries, &mut batch);
    batch.put(SCHEMA, 1u32.to_be_bytes());
    batch.put(HEIGHT, height.to_be_bytes());
    db.write(batch).expect("write");
    tree::state_hash(Height::new(height), &top.root())
}

#[cfg(feature = "next-release")]
#[test]
fn the_migration_gives_every_value_its_checksum_once_and_keeps_the_height() {
    let dir = tempfile::tempdir().expect("tempdir");
    let values = [("a", "1"), ("b", "two"), ("c", "")];
    let before = schema_1_state(dir.path(), 5, &values);
    let mut s = ReplicatedState::open(dir.path()).expect("open");
    assert_eq!((s.schema(), s.state_hash()), (1, before));
    assert_eq!(
        s.get_stored("b").expect("get"),
        Some((b"two".to_vec(), None))
    );
    assert_eq!(s.migrate().expect("migrate"), 3);
    assert_eq!((s.schema(), s.height()), (2, Height::new(5)));
    assert_ne!(s.state_hash(), before);
    assert_eq!(s.state_hash(), s.recompute_hash().expect("recompute"));
    for (k, v) in values {
        assert_eq!(
            s.get_stored(k).expect("get"),
            Some((v.as_bytes().to_vec(), Some(value_checksum(v.as_bytes())))),
            "{k}"
        );
    }
    let after = s.state_hash();
    drop(s);
    let mut s = ReplicatedState::open(dir.path()).expect("reopen");
    assert_eq!((s.schema(), s.state_hash()), (2, after));
    assert_eq!(s.migrate().expect("again"), 0);
    assert_eq!(s.state_hash(), after);
    // New writes carry the new form, and a damaged checksum is caught.
    s.execute(Height::new(6), T, &NET, &[msg(1, T + 100, put("d", "4"))])
        .expect("execute");
    assert_eq!(
        s.get_stored("d").expect("get"),
        Some((b"4".to_vec(), Some(value_checksum(b"4"))))
    );
    drop(s);
    {
        let db = DB::open_default(dir.path()).expect("open");
        db.put(b"v/d", b"5\0\0\0\0\0\0\0\0").expect("put");
    }
    let s = ReplicatedState::open(dir.path()).expect("reopen");
    assert!(matches!(s.get("d"), Err(StateError::Corrupt(_))));
}

#[cfg(feature = "next-release")]
#[test]
fn append_extends_a_value_and_creates_a_missing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = ReplicatedState::open(dir.path()).expect("open");
    let append = |k: &str, v: &str| Operation::Append {
        key: k.into(),
        value: v.as_bytes().to_vec(),
    };
    let r = s
        .execute(
            Height::new(1),
            T,
            &NET,
            &[
                msg(1, T + 100, put("a", "x")),
                msg(2, T + 100, append("a", "y")),
                msg(3, T + 100, append("b", "z")),
            ],
        )
        .expect("execute");
    assert_eq!(r.executed.len(), 3);
    assert_eq!(s.get("a").expect("get"), Some(b"xy".to_vec()));
    assert_eq!(s.get("b").expect("get"), Some(b"z".to_vec()));
    assert_eq!(s.state_hash(), s.recompute_hash().expect("recompute"));
}

/// `n` user keys `<prefix><i>` whose entries fall in bucket `b`.
pub(crate) fn user_keys_in_bucket(prefix: &str, b: u16, n: usize) -> Vec<String> {
    (0u64..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| tree::bucket_of(&user_entry_key(k)) == b)
        .take(n)
        .collect()
}

/// Keys for the property test: five in one bucket, five in another, three anywhere.
fn prop_keys() -> &'static [String] {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut k = user_keys_in_bucket("p", 9, 5);
        k.extend(user_keys_in_bucket("q", 60_000, 5));
        k.extend(["r0", "r1", "r2"].map(String::from));
        k
    })
}

#[derive(Clone, Debug)]
enum Op {
    Put { key: usize, value: Vec<u8> },
    Delete { key: usize },
}

fn op() -> impl proptest::strategy::Strategy<Value = (Op, u64)> {
    use proptest::prelude::*;
    let n = prop_keys().len();
    let put = (0..n, proptest::collection::vec(any::<u8>(), 0..12))
        .prop_map(|(key, value)| Op::Put { key, value });
    let delete = (0..n).prop_map(|key| Op::Delete { key });
    // An expiry 1..40 ns after the block's time: later blocks purge some replay records.
    (prop_oneof![3 => put, 1 => delete], 1u64..40)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// After any blocks, the incremental root equals a from-scratch recompute, the state
    /// reopens to the same hash, and a read at every earlier height (through the undos
    /// of the blocks after it) returns that height's value with a witness to that
    /// height's root.
    #[test]
    fn the_incremental_tree_matches_a_recompute_and_reads_at_every_height_prove(
        blocks in proptest::collection::vec(proptest::collection::vec(op(), 0..8), 1..6)
    ) {
        let keys = prop_keys();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut models = vec![model.clone()];
        let mut roots = vec![s.root()];
        let mut undos = Vec::new();
        let mut nonce = 0;
        for (i, ops) in blocks.iter().enumerate() {
            let time = T + 10 * i as u64;
            let payload: Vec<SignedIngress> = ops
                .iter()
                .map(|(op, expiry)| {
                    nonce += 1;
                    let op = match op {
                        Op::Put { key, value } => {
                            model.insert(keys[*key].clone(), value.clone());
                            Operation::Put { key: keys[*key].clone(), value: value.clone() }
                        }
                        Op::Delete { key } => {
                            model.remove(&keys[*key]);
                            Operation::Delete { key: keys[*key].clone() }
                        }
                    };
                    msg(nonce, time + expiry, op)
                })
                .collect();
            let r = s.execute(Height::new(i as u64 + 1), time, &NET, &payload).expect("execute");
            proptest::prop_assert_eq!(r.executed.len(), payload.len());
            proptest::prop_assert_eq!(r.state_hash, s.recompute_hash().expect("recompute"));
            models.push(model.clone());
            roots.push(s.root());
            undos.push(r.undo);
        }
        for (h, root) in roots.iter().enumerate() {
            let later: Vec<&BlockUndo> = undos[h..].iter().collect();
            for key in keys {
                let read = s.read_at(key, &later).expect("read");
                proptest::prop_assert_eq!(read.root, *root, "height {}", h);
                let want = models[h].get(key).map(|v| to_stored(s.schema(), v));
                proptest::prop_assert_eq!(&read.stored, &want, "height {} key {}", h, key);
                let vh = want.as_ref().map(|v| tree::value_hash(s.schema(), v));
                proptest::prop_assert_eq!(
                    read.witness.root(&user_entry_key(key), vh.as_ref()),
                    Ok(*root)
                );
            }
        }
        let hash = s.state_hash();
        drop(s);
        let s = ReplicatedState::open(dir.path()).expect("reopen");
        proptest::prop_assert_eq!(s.state_hash(), hash);
    }
}

/// A checkpoint holding `big` values of 60 KB under ground keys in one bucket (more than
/// a chunk) and `more` other 60 KB values, with the state's hash.
fn sync_source(root: &Path, big: usize, more: usize) -> (std::path::PathBuf, CryptoHash) {
    let mut s = ReplicatedState::open(&root.join("state")).expect("open");
    let value = "x".repeat(60_000);
    let mut keys = user_keys_in_bucket("big", 777, big);
    keys.extend((0..more).map(|i| format!("k{i:03}")));
    // Eight 60 kB updates a block: one sender's share of a block (`quota`) holds eight.
    for (h, batch) in keys.chunks(8).enumerate() {
        let block: Vec<SignedIngress> = batch
            .iter()
            .enumerate()
            .map(|(i, k)| msg((h * 100 + i) as u64, T + 1000, put(k, &value)))
            .collect();
        let r = s
            .execute(Height::new(h as u64 + 1), T, &NET, &block)
            .expect("execute");
        assert_eq!(r.executed.len(), block.len());
    }
    let cp = root.join("cp");
    s.checkpoint(&cp).expect("checkpoint");
    (cp, s.state_hash())
}

#[test]
fn state_sync_rebuilds_a_checkpoint_chunk_by_chunk_even_a_bucket_larger_than_a_chunk() {
    let root = tempfile::tempdir().expect("tempdir");
    let (cp, expected) = sync_source(root.path(), 24, 20);
    let manifest = export_manifest(&cp).expect("manifest");
    let height = manifest.height;
    let target = root.path().join("synced");
    let mut import = StateImport::create(&target, height, expected, &manifest).expect("create");
    let (mut chunks, mut split) = (0, 0);
    while let Some(c) = import.cursor() {
        let chunk = export_chunk(&cp, c).expect("chunk");
        assert!(codec::encode(&chunk).len() <= MAX_CHUNK_BYTES);
        split += chunk
            .parts
            .iter()
            .filter(|p| !p.siblings.is_empty())
            .count();
        import.add(&chunk).expect("a genuine chunk verifies");
        chunks += 1;
        assert!(chunks < 100, "no progress");
    }
    assert!(chunks > 2, "{chunks} chunk(s)");
    assert!(split >= 2, "the big bucket came in parts with siblings");
    assert_eq!(import.written(), manifest.entries());
    import.finish().expect("finish");
    // As the driver does: the synced directory becomes a checkpoint, restored into place.
    let synced =
        ReplicatedState::restore(&target, &root.path().join("restored")).expect("restore synced");
    assert_eq!(synced.height(), height);
    assert_eq!(synced.state_hash(), expected);
    assert_eq!(synced.recompute_hash().expect("recompute"), expected);
    assert_eq!(
        synced.get("k007").expect("get"),
        Some("x".repeat(60_000).into_bytes())
    );
}

#[test]
fn state_sync_refuses_each_lie_in_a_manifest() {
    let root = tempfile::tempdir().expect("tempdir");
    let (cp, expected) = sync_source(root.path(), 3, 3);
    let m = export_manifest(&cp).expect("manifest");
    let target = root.path().join("t");
    let refused = |m: &StateManifest| StateImport::create(&target, m.height, expected, m).err();
    let mut bad = m.clone();
    bad.buckets[0].subroot.0[0] ^= 1;
    assert!(matches!(refused(&bad), Some(StateError::Unverified(_))));
    let mut bad = m.clone();
    bad.buckets[0].count += 1;
    assert!(matches!(refused(&bad), Some(StateError::Unverified(_))));
    let mut bad = m.clone();
    bad.buckets.pop();
    assert!(matches!(refused(&bad), Some(StateError::Unverified(_))));
    let mut bad = m.clone();
    bad.buckets.swap(0, 1);
    assert!(matches!(refused(&bad), Some(StateError::Unverified(_))));
    let mut bad = m.clone();
    bad.buckets.push(BucketSummary {
        bucket: u16::MAX,
        count: 0,
        subroot: tree::PAD,
    });
    assert!(matches!(refused(&bad), Some(StateError::Unverified(_))));
    // The right buckets for another height: another state hash.
    assert!(matches!(
        StateImport::create(&target, m.height.increment(), expected, &m),
        Err(StateError::Unverified(_))
    ));
    let mut bad = m.clone();
    bad.schema = SCHEMA_VERSION + 1;
    assert!(matches!(
        refused(&bad),
        Some(StateError::NewerSchema { .. })
    ));
    assert!(
        chunks::decode_manifest(&vec![0u8; MAX_MANIFEST_BYTES + 1]).is_err(),
        "too large"
    );
    assert!(refused(&m).is_none(), "the genuine manifest verifies");
}

#[test]
fn state_sync_refuses_each_lie_in_a_chunk_writes_nothing_of_it_and_resumes() {
    let root = tempfile::tempdir().expect("tempdir");
    // A bucket of three entries, and small ones.
    let (cp, expected) = sync_source(root.path(), 3, 12);
    let m = export_manifest(&cp).expect("manifest");
    let mut import =
        StateImport::create(&root.path().join("t"), m.height, expected, &m).expect("create");
    let start = import.cursor().expect("entries");
    let good = export_chunk(&cp, start).expect("chunk");
    assert!(good.parts.len() >= 2, "{} parts", good.parts.len());
    let multi = good
        .parts
        .iter()
        .position(|p| p.entries.len() >= 2)
        .expect("the three-entry bucket is in the first chunk");
    let lie = |f: &dyn Fn(&mut StateChunk)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let lies: Vec<(&str, StateChunk)> = vec![
        (
            "a changed value",
            lie(&|c| c.parts[0].entries[0].value[0] ^= 1),
        ),
        (
            "a changed key",
            lie(&|c| c.parts[0].entries[0].key.push(b'!')),
        ),
        ("a part out of order", lie(&|c| c.parts.swap(0, 1))),
        (
            "a bucket skipped",
            lie(&|c| {
                c.parts.remove(0);
            }),
        ),
        (
            "a part repeated",
            lie(&|c| {
                let p = c.parts[0].clone();
                c.parts.insert(1, p);
            }),
        ),
        ("a start off by one", lie(&|c| c.parts[0].start += 1)),
        ("another bucket's number", lie(&|c| c.parts[0].bucket ^= 1)),
        (
            "entries past the bucket's end",
            lie(&|c| {
                let e = c.parts[multi].entries[0].clone();
                c.parts[multi].entries.push(e);
            }),
        ),
        (
            "entries swapped",
            lie(&|c| c.parts[multi].entries.swap(0, 1)),
        ),
        (
            "a partial part before the last",
            lie(&|c| {
                let p = &mut c.parts[multi];
                let leaves: Vec<CryptoHash> = p
                    .entries
                    .iter()
                    .map(|e| tree::leaf_hash(&e.key, &tree::value_hash(m.schema, &e.value)))
                    .collect();
                p.entries.truncate(1);
                p.siblings = tree::range_proof(&leaves, 0, 1);
                if multi + 1 == c.parts.len() {
                    c.parts.push(c.parts[0].clone());
                }
            }),
        ),
        (
            "a sibling too many",
            lie(&|c| c.parts[0].siblings.push(tree::PAD)),
        ),
        ("no parts", lie(&|c| c.parts.clear())),
        ("an empty part", lie(&|c| c.parts[0].entries.clear())),
        ("another height", lie(&|c| c.height = c.height.increment())),
        ("another version", lie(&|c| c.version += 1)),
    ];
    for (what, chunk) in &lies {
        let err = import.add(chunk).expect_err(what);
        assert!(matches!(err, StateError::Unverified(_)), "{what}: {err}");
        assert_eq!(
            (import.cursor(), import.written()),
            (Some(start), 0),
            "{what} moved the import"
        );
    }
    assert!(
        chunks::decode_chunk(&vec![0u8; MAX_CHUNK_BYTES + 1]).is_err(),
        "too large"
    );
    // Nothing of the lies was written: the directory holds no entry yet.
    // The genuine chunk, from the next peer, continues where the import stands.
    let added = import.add(&good).expect("the genuine chunk");
    assert!(added > 0);
    assert_ne!(import.cursor(), Some(start));
    // A chunk that starts where the import already was is now out of order.
    assert!(import.add(&good).is_err(), "a replayed chunk");
    let err = StateImport::create(&root.path().join("t2"), m.height, expected, &m)
        .expect("create")
        .finish()
        .expect_err("unfinished");
    assert!(matches!(err, StateError::Unverified(_)), "{err}");
    while let Some(c) = import.cursor() {
        import
            .add(&export_chunk(&cp, c).expect("chunk"))
            .expect("add");
    }
    import.finish().expect("finish");
}

#[cfg(feature = "next-release")]
#[test]
fn state_sync_refuses_entries_claimed_in_another_schema() {
    let root = tempfile::tempdir().expect("tempdir");
    // A schema-1 state passed off as schema 2: the manifest verifies (the schema is in
    // the leaves, not the root), the first chunk does not.
    let hash = schema_1_state(&root.path().join("s1"), 3, &[("a", "1"), ("b", "2")]);
    let mut m = export_manifest(&root.path().join("s1")).expect("manifest");
    assert_eq!(m.schema, 1);
    m.schema = 2;
    let mut import =
        StateImport::create(&root.path().join("t"), m.height, hash, &m).expect("create");
    let chunk = export_chunk(&root.path().join("s1"), import.cursor().expect("c")).expect("chunk");
    assert!(matches!(import.add(&chunk), Err(StateError::Unverified(_))));
    // The genuine manifest from the next peer takes over, since nothing was written.
    m.schema = 1;
    import.accept_manifest(&m).expect("accept");
    import.add(&chunk).expect("add");
    // Once entries verified in schema 1, a manifest claiming 2 is a lie.
    m.schema = 2;
    assert!(matches!(
        import.accept_manifest(&m),
        Err(StateError::Unverified(_))
    ));
}

/// The race the retry is for: a writer that keeps writing and flushing (each flush
/// deletes the log an open may just have listed) while read-only opens run beside it.
/// Every open must succeed.
#[test]
fn read_only_opens_beside_a_writer_that_keeps_flushing_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = std::sync::Arc::new(
        DB::open(
            &{
                let mut o = db_options();
                o.create_if_missing(true);
                o
            },
            dir.path(),
        )
        .expect("open"),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (live, stop) = (live.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                live.put(i.to_be_bytes(), [0u8; 64]).expect("put");
                live.flush().expect("flush");
                i += 1;
                // Paced, so the table files stay few (the test opens them all each time).
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let mut failed = None;
    for _ in 0..200 {
        if let Err(e) = open_read_only_db(dir.path()) {
            failed = Some(e);
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(failed.is_none(), "a read-only open failed: {failed:?}");
}
