//! The official Ethereum consensus BLS test vectors (../shared/testvectors/bls), run
//! through the same `crypto::bls` functions the protocol uses. Every case must pass,
//! including the ones that must be rejected; the case counts are checked so that a
//! missing directory or an unparsed file cannot pass silently.
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crypto::bls;
use std::path::PathBuf;
use yaml_rust2::{Yaml, YamlLoader};

fn vectors_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BLS_TEST_VECTORS") {
        return PathBuf::from(dir);
    }
    manifest_dir().join("../../shared/testvectors/bls")
}

fn hex_bytes(y: &Yaml) -> Vec<u8> {
    let s = y
        .as_str()
        .unwrap_or_else(|| panic!("expected a hex string, got {y:?}"));
    hex::decode(s.trim_start_matches("0x")).unwrap_or_else(|e| panic!("bad hex {s}: {e}"))
}

fn hex_list(y: &Yaml) -> Vec<Vec<u8>> {
    y.as_vec()
        .unwrap_or_else(|| panic!("expected a list, got {y:?}"))
        .iter()
        .map(hex_bytes)
        .collect()
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(|x| x.as_slice()).collect()
}

/// Runs `check(name, input, output)` on every case of a handler; returns the count.
fn run(handler: &str, check: impl Fn(&str, &Yaml, &Yaml)) -> usize {
    let dir = vectors_dir().join(handler);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("test vectors not found at {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    entries.sort();
    for path in &entries {
        let text = std::fs::read_to_string(path).expect("read vector");
        let docs = YamlLoader::load_from_str(&text).expect("parse yaml");
        let doc = &docs[0];
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        check(name, &doc["input"], &doc["output"]);
    }
    entries.len()
}

#[test]
fn sign() {
    let n = run("sign", |name, input, output| {
        let got = bls::raw_sign(&hex_bytes(&input["privkey"]), &hex_bytes(&input["message"]));
        if output.is_null() {
            assert!(got.is_err(), "{name}: must fail");
        } else {
            assert_eq!(got.expect(name).to_vec(), hex_bytes(output), "{name}");
        }
    });
    assert_eq!(n, 10);
}

#[test]
fn verify() {
    let n = run("verify", |name, input, output| {
        let got = bls::raw_verify(
            &hex_bytes(&input["pubkey"]),
            &hex_bytes(&input["message"]),
            &hex_bytes(&input["signature"]),
        );
        assert_eq!(Some(got), output.as_bool(), "{name}");
    });
    assert_eq!(n, 28);
}

#[test]
fn aggregate() {
    let n = run("aggregate", |name, input, output| {
        let sigs = hex_list(input);
        let got = bls::raw_aggregate(&refs(&sigs));
        if output.is_null() {
            assert!(got.is_err(), "{name}: must fail");
        } else {
            assert_eq!(got.expect(name).to_vec(), hex_bytes(output), "{name}");
        }
    });
    assert_eq!(n, 4);
}

#[test]
fn fast_aggregate_verify() {
    let n = run("fast_aggregate_verify", |name, input, output| {
        let pks = hex_list(&input["pubkeys"]);
        let got = bls::raw_fast_aggregate_verify(
            &refs(&pks),
            &hex_bytes(&input["message"]),
            &hex_bytes(&input["signature"]),
        );
        assert_eq!(Some(got), output.as_bool(), "{name}");
    });
    assert_eq!(n, 9);
}

#[test]
fn aggregate_verify() {
    let n = run("aggregate_verify", |name, input, output| {
        let pks = hex_list(&input["pubkeys"]);
        let msgs = hex_list(&input["messages"]);
        let got =
            bls::raw_aggregate_verify(&refs(&pks), &refs(&msgs), &hex_bytes(&input["signature"]));
        assert_eq!(Some(got), output.as_bool(), "{name}");
    });
    assert_eq!(n, 3);
}

#[test]
fn eth_aggregate_pubkeys() {
    let n = run("eth_aggregate_pubkeys", |name, input, output| {
        let pks = hex_list(input);
        let got = bls::raw_aggregate_public_keys(&refs(&pks));
        if output.is_null() {
            assert!(got.is_err(), "{name}: must fail");
        } else {
            assert_eq!(got.expect(name).to_vec(), hex_bytes(output), "{name}");
        }
    });
    assert_eq!(n, 7);
}

#[test]
fn eth_fast_aggregate_verify() {
    let n = run("eth_fast_aggregate_verify", |name, input, output| {
        let pks = hex_list(&input["pubkeys"]);
        let got = bls::raw_eth_fast_aggregate_verify(
            &refs(&pks),
            &hex_bytes(&input["message"]),
            &hex_bytes(&input["signature"]),
        );
        assert_eq!(Some(got), output.as_bool(), "{name}");
    });
    assert_eq!(n, 11);
}

/// The typed, domain-separated API is the raw one over the framed message: a signature
/// made by `BlsSecretKey::sign` verifies with `raw_verify` on `domain.frame(bytes)`.
#[test]
fn typed_api_is_the_raw_api_over_the_framed_message() {
    let sk_bytes = hex::decode("263dbd792f5b1be47ed85f8938c0f29586af0d3ac7b977f21c278fe1462040e3")
        .expect("hex");
    let sk = bls::BlsSecretKey::from_bytes(&sk_bytes).expect("key");
    let d = types::domain::NOTARIZATION;
    let sig = sk.sign(d, b"block");
    assert!(bls::raw_verify(
        &sk.public_key().to_bytes(),
        &d.frame(b"block"),
        &sig.to_bytes()
    ));
    assert_eq!(
        bls::raw_sign(&sk_bytes, &d.frame(b"block")).expect("sign"),
        sig.to_bytes()
    );
}

/// This crate's directory, read when the test runs: a target directory shared between
/// clones can hold a test binary built in another clone, so a path baked in at compile
/// time (`env!`) may point at a directory that is gone.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
