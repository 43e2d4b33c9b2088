//! The store laws (module docs), checked against every implementation with a model.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

type Model = Vec<BTreeMap<String, Vec<u8>>>; // the full state at each version, from 0

fn model_apply(model: &mut Model, batch: &[Mutation]) -> Result<(), ()> {
    let current = model.last().cloned().unwrap_or_default();
    let mut next = current.clone();
    let mut seen = std::collections::BTreeSet::new();
    if batch.is_empty() {
        return Err(());
    }
    for m in batch {
        if !seen.insert(m.key().to_string()) {
            return Err(());
        }
        match m {
            Mutation::Insert { key, value } if !current.contains_key(key) => {
                next.insert(key.clone(), value.clone());
            }
            Mutation::Update { key, value } if current.contains_key(key) => {
                next.insert(key.clone(), value.clone());
            }
            Mutation::Delete { key } if current.contains_key(key) => {
                next.remove(key);
            }
            _ => return Err(()),
        }
    }
    model.push(next);
    Ok(())
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let key = prop::sample::select(vec!["a", "b", "c", "node_record_x"]).prop_map(String::from);
    let value = prop::collection::vec(any::<u8>(), 0..4);
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(key, value)| Mutation::Insert { key, value }),
        (key.clone(), value).prop_map(|(key, value)| Mutation::Update { key, value }),
        key.prop_map(|key| Mutation::Delete { key }),
    ]
}

fn batches() -> impl Strategy<Value = Vec<Vec<Mutation>>> {
    prop::collection::vec(prop::collection::vec(mutation(), 0..4), 1..24)
}

/// Applies the batches to `store` and the model side by side, checking every law after
/// every step.
fn check_laws<S: RegistryStore>(
    store: &mut S,
    batches: &[Vec<Mutation>],
) -> Result<(), TestCaseError> {
    let mut model: Model = vec![BTreeMap::new()];
    prop_assert_eq!(store.latest_version(), RegistryVersion::ZERO);
    for batch in batches {
        let before = store.latest_version();
        let expected = model_apply(&mut model, batch);
        let got = store.apply(batch);
        match (&expected, &got) {
            (Ok(()), Ok(v)) => prop_assert_eq!(*v, before.increment()),
            (Err(()), Err(_)) => prop_assert_eq!(store.latest_version(), before),
            _ => prop_assert!(
                false,
                "batch {:?}: model {:?}, store {:?}",
                batch,
                expected,
                got
            ),
        }
        let latest = store.latest_version();
        prop_assert_eq!(latest.get() as usize, model.len() - 1);
        // Law 2 and 3: every key at every version.
        for (v, state) in model.iter().enumerate() {
            for key in ["a", "b", "c", "node_record_x", "absent"] {
                let got = store
                    .get(key, RegistryVersion::new(v as u64))
                    .expect("available");
                prop_assert_eq!(got.as_ref(), state.get(key), "get({}, {})", key, v);
            }
        }
        let beyond = matches!(
            store.get("a", latest.increment()),
            Err(StoreError::VersionNotAvailable { .. })
        );
        prop_assert!(beyond, "a version beyond the latest must not be readable");
        prop_assert_eq!(
            &store.latest_snapshot().expect("snapshot"),
            model.last().expect("state")
        );
    }
    // Law 5: deltas replay, in pages of any size.
    for page in [1usize, 3, 1000] {
        let mut replica = MemoryStore::new();
        loop {
            let deltas = store
                .changes_since(replica.latest_version(), page)
                .expect("changes");
            if deltas.is_empty() {
                break;
            }
            prop_assert!(deltas.len() <= page);
            for d in &deltas {
                replica.append(d).expect("append");
            }
        }
        prop_assert_eq!(replica.latest_version(), store.latest_version());
        // The same pages appended whole.
        let mut paged = MemoryStore::new();
        loop {
            let deltas = store
                .changes_since(paged.latest_version(), page)
                .expect("changes");
            if deltas.is_empty() {
                break;
            }
            paged.append_all(&deltas).expect("append_all");
        }
        prop_assert_eq!(paged.latest_version(), store.latest_version());
        for v in 0..=store.latest_version().get() {
            for key in ["a", "b", "c", "node_record_x"] {
                let v = RegistryVersion::new(v);
                prop_assert_eq!(
                    replica.get(key, v).expect("r"),
                    store.get(key, v).expect("s")
                );
                prop_assert_eq!(paged.get(key, v).expect("p"), store.get(key, v).expect("s"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn memory_store_obeys_the_laws(batches in batches()) {
        check_laws(&mut MemoryStore::new(), &batches)?;
    }

    #[test]
    fn kv_store_obeys_the_laws(batches in batches()) {
        let mut store = KvStore::open(MemoryKv::default()).expect("open");
        check_laws(&mut store, &batches)?;
        // Reopened over the same entries, it reads the same.
        let latest = store.latest_version();
        let snapshot = store.latest_snapshot().expect("snapshot");
        let store = KvStore::open(store.into_kv()).expect("reopen");
        prop_assert_eq!(store.latest_version(), latest);
        prop_assert_eq!(store.latest_snapshot().expect("snapshot"), snapshot);
    }

    #[test]
    fn rocks_store_obeys_the_laws(batches in batches()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = RocksStore::open(dir.path()).expect("open");
        check_laws(&mut store, &batches)?;
        // Law 8 in its weak form: a reopened store reads the same.
        let before: Vec<_> = (0..=store.latest_version().get())
            .map(|v| store.get("a", RegistryVersion::new(v)).expect("get"))
            .collect();
        drop(store);
        let store = RocksStore::open(dir.path()).expect("reopen");
        let after: Vec<_> = (0..=store.latest_version().get())
            .map(|v| store.get("a", RegistryVersion::new(v)).expect("get"))
            .collect();
        prop_assert_eq!(before, after);
    }
}

fn every_store(check: impl Fn(&mut dyn RegistryStore)) {
    check(&mut MemoryStore::new());
    check(&mut KvStore::open(MemoryKv::default()).expect("open"));
    let dir = tempfile::tempdir().expect("tempdir");
    check(&mut RocksStore::open(dir.path()).expect("open"));
}

#[test]
fn refusals_name_the_problem_and_change_nothing() {
    every_store(|s| {
        let ins = |k: &str| Mutation::Insert {
            key: k.into(),
            value: vec![1],
        };
        s.apply(&[ins("a")]).expect("first insert");
        let check = |s: &mut dyn RegistryStore, batch: &[Mutation], expected: StoreError| {
            assert_eq!(s.apply(batch), Err(expected));
            assert_eq!(s.latest_version(), RegistryVersion::new(1));
        };
        check(
            s,
            &[ins("b"), ins("a")],
            StoreError::KeyAlreadyPresent { key: "a".into() },
        );
        check(
            s,
            &[Mutation::Update {
                key: "z".into(),
                value: vec![],
            }],
            StoreError::KeyAbsent {
                key: "z".into(),
                op: "update",
            },
        );
        check(
            s,
            &[Mutation::Delete { key: "z".into() }],
            StoreError::KeyAbsent {
                key: "z".into(),
                op: "delete",
            },
        );
        check(
            s,
            &[ins("b"), ins("b")],
            StoreError::DuplicateKey { key: "b".into() },
        );
        check(s, &[], StoreError::EmptyBatch);
        check(
            s,
            &[ins("has space")],
            StoreError::InvalidKey {
                key: "has space".into(),
                reason: "only printable ASCII without spaces is allowed",
            },
        );
        // "b" was not inserted by any refused batch.
        assert_eq!(s.get("b", RegistryVersion::new(1)), Ok(None));
        // A delta out of sequence is refused.
        let delta = VersionDelta {
            version: RegistryVersion::new(5),
            changes: vec![KeyChange {
                key: "q".into(),
                value: None,
            }],
        };
        assert!(matches!(
            s.append(&delta),
            Err(StoreError::NonContiguous { .. })
        ));
    });
}

#[test]
fn append_all_appends_every_delta_or_none() {
    every_store(|s| {
        let delta = |v: u64, key: &str| VersionDelta {
            version: RegistryVersion::new(v),
            changes: vec![KeyChange {
                key: key.into(),
                value: Some(v.to_be_bytes().to_vec()),
            }],
        };
        // The third delta skips a version: nothing of the page is written.
        assert!(matches!(
            s.append_all(&[delta(1, "a"), delta(2, "b"), delta(4, "c")]),
            Err(StoreError::NonContiguous { .. })
        ));
        assert_eq!(s.latest_version(), RegistryVersion::ZERO);
        assert!(matches!(
            s.get("a", RegistryVersion::new(1)),
            Err(StoreError::VersionNotAvailable { .. })
        ));
        s.append_all(&[delta(1, "a"), delta(2, "b"), delta(3, "a")])
            .expect("a contiguous page");
        assert_eq!(s.latest_version(), RegistryVersion::new(3));
        assert_eq!(
            s.get("a", RegistryVersion::new(2)),
            Ok(Some(1u64.to_be_bytes().to_vec()))
        );
        assert_eq!(
            s.get("a", RegistryVersion::new(3)),
            Ok(Some(3u64.to_be_bytes().to_vec()))
        );
        assert_eq!(
            s.changes_since(RegistryVersion::ZERO, 10).map(|d| d.len()),
            Ok(3)
        );
    });
}

#[test]
fn auxiliary_writes_commit_with_the_version() {
    every_store(|s| {
        let delta = s
            .prepare(&[Mutation::Insert {
                key: "k".into(),
                value: vec![2],
            }])
            .expect("prepare");
        s.commit(
            Some(&delta),
            &[
                ("gov/1".into(), Some(vec![9])),
                ("gov/2".into(), Some(vec![8])),
            ],
        )
        .expect("commit");
        assert_eq!(s.latest_version(), RegistryVersion::new(1));
        assert_eq!(s.aux_get("gov/1"), Ok(Some(vec![9])));
        s.commit(None, &[("gov/1".into(), None)]).expect("aux only");
        assert_eq!(
            s.latest_version(),
            RegistryVersion::new(1),
            "aux-only commits make no version"
        );
        assert_eq!(s.aux_scan("gov/"), Ok(vec![("gov/2".to_string(), vec![8])]));
    });
}
