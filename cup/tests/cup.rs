//! Golden fixtures, compatibility across releases, tampering, ordering and the CLI.
//!
//! The fixtures are committed. Set `UPDATE_FIXTURES=1` to rewrite them after a
//! deliberate format change (and say why in the commit).
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::*;
use crypto::bls::BlsPublicKey;
use cup::{
    Cup, CupContent, CupError, CupParam, RegistryCup, RegistryCupKind, SignedCup, choose_highest,
};
use std::{fs, path::Path, process::Command};
use types::{CryptoHash, Height, RegistryVersion, codec, domain};

/// Writes the fixture when `UPDATE_FIXTURES` is set, else reads the committed one.
fn fixture(name: &str, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        // Tests run in parallel: write whole files only.
        let tmp = path.with_extension(format!("tmp{:?}", std::thread::current().id()));
        fs::write(&tmp, make()).expect("write fixture");
        fs::rename(&tmp, &path).expect("rename fixture");
    }
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn subnet_key() -> BlsPublicKey {
    let text = fixture("subnet_key.hex", || {
        format!("{}\n", dealing(4, 3, 42).public.group_key).into_bytes()
    });
    String::from_utf8(text)
        .expect("utf8")
        .trim()
        .parse()
        .expect("key")
}

fn signed_fixture() -> Vec<u8> {
    fixture("signed.cup", || {
        let d = dealing(4, 3, 42);
        Cup::Signed(sign(&d, fixture_content(&d.public.group_key.to_bytes()))).encode()
    })
}

/// A field the "newer release" adds: a u64 under a tag far above ours. (It was 10 until
/// readiness gating gave tag 10 to `next_replica_version`, then 11 until resharing gave
/// tag 11 to `committee`: this test caught both collisions.)
const NEWER_FIELD_TAG: u16 = 1000;

/// The CUP content type of a hypothetical next release, with one more (optional) field.
struct NewerCupContent {
    base: CupContent,
    shard_count: Option<u64>,
}

impl NewerCupContent {
    fn decode(bytes: &[u8]) -> Result<Self, CupError> {
        let mut base = CupContent::decode(bytes)?;
        let shard_count = match base.extensions.remove(&NEWER_FIELD_TAG) {
            None => None,
            Some(b) => Some(codec::decode::<u64>(&b, 8)?),
        };
        Ok(Self { base, shard_count })
    }

    fn encode(&self) -> Vec<u8> {
        let mut base = self.base.clone();
        if let Some(v) = self.shard_count {
            base.extensions.insert(NEWER_FIELD_TAG, codec::encode(&v));
        }
        base.encode()
    }
}

fn newer_fixture() -> Vec<u8> {
    fixture("signed_newer_release.cup", || {
        let d = dealing(4, 3, 42);
        let newer = NewerCupContent {
            base: fixture_content(&d.public.group_key.to_bytes()),
            shard_count: Some(3),
        };
        // What the newer release signs is its own encoding.
        let content = CupContent::decode(&newer.encode()).expect("decodes");
        Cup::Signed(sign(&d, content)).encode()
    })
}

fn genesis_fixture() -> Vec<u8> {
    fixture("genesis.cup", || {
        let d = dealing(4, 3, 42);
        let mut content = fixture_content(&d.public.group_key.to_bytes());
        content.height = Height::new(0);
        content.registry_version = RegistryVersion::new(1);
        Cup::Registry(RegistryCup {
            kind: RegistryCupKind::Genesis,
            content,
        })
        .encode()
    })
}

#[test]
fn golden_signed_fixture_decodes_verifies_and_reencodes_byte_for_byte() {
    let bytes = signed_fixture();
    let Cup::Signed(cup) = Cup::decode(&bytes).expect("decodes") else {
        panic!("not signed")
    };
    let key = subnet_key();
    assert_eq!(cup.content(), &fixture_content(&key.to_bytes()));
    // Today's encoder produces exactly the committed content bytes and file bytes: if the
    // encoding changes, this fails.
    assert_eq!(cup.content().encode(), cup.content_bytes());
    assert_eq!(Cup::Signed(cup.clone()).encode(), bytes);
    cup.verify(&key).expect("valid signature");
}

#[test]
fn golden_genesis_fixture_is_an_unsigned_registry_cup() {
    let bytes = genesis_fixture();
    let cup = Cup::decode(&bytes).expect("decodes");
    assert!(matches!(&cup, Cup::Registry(r) if r.kind == RegistryCupKind::Genesis));
    assert_eq!(
        cup.param(),
        CupParam {
            height: Height::new(0),
            registry_version: RegistryVersion::new(1)
        }
    );
    assert_eq!(cup.encode(), bytes);
    // A registry CUP is never accepted where a signed one is required.
    assert_eq!(
        SignedCup::decode(&bytes),
        Err(CupError::NotSigned { kind: "genesis" })
    );
}

#[test]
fn a_cup_from_a_newer_release_decodes_and_verifies_with_todays_type() {
    let bytes = newer_fixture();
    let Cup::Signed(cup) = Cup::decode(&bytes).expect("today decodes the newer CUP") else {
        panic!("not signed")
    };
    cup.verify(&subnet_key()).expect("and verifies it");
    assert_eq!(
        cup.content().extensions.keys().copied().collect::<Vec<_>>(),
        vec![NEWER_FIELD_TAG]
    );
    // Re-encoding keeps the unknown field, so the signed bytes survive a round trip.
    assert_eq!(cup.content().encode(), cup.content_bytes());
    assert_eq!(Cup::Signed(cup.clone()).encode(), bytes);
    // And the newer type reads its field back.
    let newer = NewerCupContent::decode(cup.content_bytes()).expect("newer decodes");
    assert_eq!(newer.shard_count, Some(3));
}

#[test]
fn todays_cup_decodes_with_the_newer_type() {
    let bytes = signed_fixture();
    let Cup::Signed(cup) = Cup::decode(&bytes).expect("decodes") else {
        panic!("not signed")
    };
    let newer = NewerCupContent::decode(cup.content_bytes()).expect("newer type decodes today's");
    assert_eq!(newer.shard_count, None);
    assert_eq!(newer.base, *cup.content());
    assert_eq!(
        newer.encode(),
        cup.content_bytes(),
        "the newer type re-encodes the signed bytes"
    );
}

#[test]
fn tampered_state_hash_is_rejected_by_the_signature() {
    let Cup::Signed(cup) = Cup::decode(&signed_fixture()).expect("decodes") else {
        panic!()
    };
    let mut content = cup.content().clone();
    content.state_hash = CryptoHash::of(domain::STATE_HASH, b"a different state");
    let forged = SignedCup::from_parts(content.encode(), *cup.signature()).expect("well formed");
    // The forgery is a well-formed file (its checksum is right)...
    let decoded = SignedCup::decode(&Cup::Signed(forged).encode()).expect("decodes");
    // ...whose signature does not verify.
    assert!(matches!(
        decoded.verify(&subnet_key()),
        Err(CupError::InvalidSignature { height, .. }) if height == Height::new(100)
    ));
}

#[test]
fn a_wrong_subnet_key_is_rejected() {
    let Cup::Signed(cup) = Cup::decode(&signed_fixture()).expect("decodes") else {
        panic!()
    };
    let other = dealing(4, 3, 43).public.group_key;
    assert!(matches!(
        cup.verify(&other),
        Err(CupError::InvalidSignature { .. })
    ));
}

#[test]
fn t_minus_one_shares_make_no_cup() {
    let d = dealing(4, 3, 42);
    let content = fixture_content(&d.public.group_key.to_bytes());
    let shares: Vec<_> = d.shares[..2]
        .iter()
        .map(|s| SignedCup::sign_share(&content, s))
        .collect();
    let err = SignedCup::combine(content.clone(), &d.public, &shares).expect_err("must fail");
    assert!(matches!(err, CupError::Combine { .. }), "{err}");
    // A bad share among t is caught by share verification, and spoils the combination.
    let mut shares: Vec<_> = d.shares[..3]
        .iter()
        .map(|s| SignedCup::sign_share(&content, s))
        .collect();
    let mut other = content.clone();
    other.height = Height::new(101);
    shares[1] = SignedCup::sign_share(&other, &d.shares[1]);
    assert!(SignedCup::verify_share(&content, &d.public, &shares[1]).is_err());
    assert!(SignedCup::verify_share(&content, &d.public, &shares[0]).is_ok());
    assert!(matches!(
        SignedCup::combine(content, &d.public, &shares),
        Err(CupError::InvalidSignature { .. })
    ));
}

#[test]
fn every_truncation_and_every_single_byte_flip_is_reported_as_corrupt() {
    let bytes = signed_fixture();
    for cut in 0..bytes.len() {
        assert!(
            Cup::decode(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes accepted"
        );
    }
    for pos in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x01;
        assert!(Cup::decode(&bad).is_err(), "flip at byte {pos} accepted");
    }
}

#[test]
fn an_oversized_encoding_is_refused_before_parsing() {
    let mut bytes = signed_fixture();
    bytes.resize(cup::MAX_CUP_BYTES + 1, 0);
    assert_eq!(
        Cup::decode(&bytes),
        Err(CupError::TooLarge {
            got: cup::MAX_CUP_BYTES + 1,
            limit: cup::MAX_CUP_BYTES
        })
    );
}

#[test]
fn partial_order_of_cup_params() {
    let p = |h, r| CupParam {
        height: Height::new(h),
        registry_version: RegistryVersion::new(r),
    };
    use std::cmp::Ordering::*;
    let table = [
        (p(10, 5), p(10, 5), Some(Equal)),
        (p(11, 5), p(10, 5), Some(Greater)),
        (p(11, 6), p(10, 5), Some(Greater)),
        (p(10, 6), p(10, 5), Some(Greater)), // recovery CUP at the same height
        (p(10, 4), p(10, 5), Some(Less)),
        (p(11, 4), p(10, 5), None), // higher, but an older registry version
        (p(9, 6), p(10, 5), None),
    ];
    for (a, b, expected) in table {
        assert_eq!(a.partial_cmp(&b), expected, "{a:?} vs {b:?}");
        assert_eq!(
            b.partial_cmp(&a),
            expected.map(|o| o.reverse()),
            "{b:?} vs {a:?}"
        );
    }
}

#[test]
fn choose_highest_picks_the_highest_valid_candidate() {
    let d = dealing(4, 3, 42);
    let key = d.public.group_key;
    let base = fixture_content(&key.to_bytes());
    let at = |h: u64, r: u64| {
        let mut c = base.clone();
        c.height = Height::new(h);
        c.registry_version = RegistryVersion::new(r);
        c
    };
    let genesis = Cup::Registry(RegistryCup {
        kind: RegistryCupKind::Genesis,
        content: at(0, 1),
    });
    let signed_100 = Cup::Signed(sign(&d, at(100, 7)));
    let recovery_100 = Cup::Registry(RegistryCup {
        kind: RegistryCupKind::Recovery,
        content: at(100, 9),
    });
    // A forged peer CUP: higher, but signed by another subnet's key.
    let forged_200 = Cup::Signed(sign(&dealing(4, 3, 99), at(200, 9)));

    let check = |candidates: &[&Cup], expected: Option<&Cup>| {
        assert_eq!(choose_highest(candidates.iter().copied(), &key), expected);
    };
    check(&[], None);
    check(&[&forged_200], None);
    check(&[&genesis], Some(&genesis));
    check(&[&genesis, &signed_100], Some(&signed_100));
    check(&[&signed_100, &genesis, &forged_200], Some(&signed_100));
    check(&[&signed_100, &recovery_100], Some(&recovery_100));
    check(
        &[&recovery_100, &signed_100, &forged_200, &genesis],
        Some(&recovery_100),
    );
}

fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cup"))
        .args(args)
        .output()
        .expect("run cup");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_inspect_reports_fields_validity_and_corruption() {
    let fixture = fixtures_dir().join("signed.cup");
    signed_fixture();
    let key = subnet_key().to_string();
    let path = fixture.to_str().expect("utf8 path");

    let (code, out, _) = run_cli(&["inspect", path, "--subnet-key", &key]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("height: 100") && out.contains("registry_version: 7"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "signature: valid"), "{out}");

    let (code, out, _) = run_cli(&["inspect", path, "--subnet-key", &key, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["signature"], "valid");
    assert_eq!(v["height"], 100);

    let wrong = dealing(4, 3, 43).public.group_key.to_string();
    let (code, out, _) = run_cli(&["inspect", path, "--subnet-key", &wrong]);
    assert_eq!(code, 1);
    assert!(out.contains("signature: INVALID ("), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let flipped = dir.path().join("flipped.cup");
    let mut bytes = fs::read(&fixture).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x80;
    fs::write(&flipped, &bytes).expect("write");
    let (code, _, err) = run_cli(&[
        "inspect",
        flipped.to_str().expect("utf8"),
        "--subnet-key",
        &key,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("corrupt"), "{err}");

    let (code, _, err) = run_cli(&["inspect", path, "--subnet-key", "zz"]);
    assert_eq!(code, 2);
    assert!(err.contains("--subnet-key"), "{err}");
    let (code, _, err) = run_cli(&[
        "inspect",
        Path::new("/nonexistent.cup").to_str().expect("s"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.cup"), "{err}");
}

#[test]
fn the_release_to_run_is_named_by_new_cups_and_by_the_registry_for_old_ones() {
    // The committed CUP predates the field: it names none, and the registry decides.
    let Cup::Signed(old) = Cup::decode(&signed_fixture()).expect("decodes") else {
        panic!("not signed")
    };
    let registry_says = types::ReplicaVersion::new("2.0.0").unwrap();
    assert_eq!(old.content().next_replica_version, None);
    assert_eq!(old.content().version_to_run(&registry_says), &registry_says);
    // A subnet that ran on without a ready quorum names the old release.
    let mut content = old.content().clone();
    let running = types::ReplicaVersion::new("1.0.0").unwrap();
    content.next_replica_version = Some(running.clone());
    let decoded = CupContent::decode(&content.encode()).expect("round trip");
    assert_eq!(decoded, content);
    assert_eq!(decoded.version_to_run(&registry_says), &running);
}
