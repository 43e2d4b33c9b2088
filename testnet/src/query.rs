//! `testnet query`: one key from one node, and with `--verify` checked the way a client
//! that trusts nobody checks it: the answer's witness must lead to the state hash its
//! certificate certifies, and the certificate must verify under the subnet's public key
//! (from `DIR/genesis.json`), with `replica::certified::verify_read`.

use crypto::bls::BlsPublicKey;
use replica::certified::verify_read;
use serde_json::json;
use std::path::Path;

/// The subnet's high-threshold public key, from the testnet's genesis file: what
/// certifications and CUPs are signed with.
pub fn subnet_key(dir: &Path) -> Result<BlsPublicKey, String> {
    let path = dir.join("genesis.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let g = registry::genesis::Genesis::from_json(&text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    g.subnets
        .first()
        .map(|s| s.high_threshold_key.group_key)
        .ok_or_else(|| format!("{}: no subnet", path.display()))
}

/// `testnet query --dir D --key K [--node I] [--verify] [--json]`.
pub fn run(dir: &Path, key: &str, node: usize, verify: bool, as_json: bool) -> Result<(), String> {
    let l = crate::layout(dir)?;
    let n = l
        .nodes
        .get(node)
        .ok_or_else(|| format!("no node {node}: the testnet has {}", l.nodes.len()))?;
    let url = format!("http://{}", n.http_address);
    let subnet = if verify { Some(subnet_key(dir)?) } else { None };
    let client = crate::client()?;
    let answer = crate::runtime()?
        .block_on(crate::replica(&client, &url).query(key))
        .map_err(|e| e.to_string())?;
    if let Some(k) = &subnet {
        verify_read(&answer, k).map_err(|e| {
            format!(
                "node {node}'s answer for {key:?} at height {} does not verify: {e}",
                answer.certified_height
            )
        })?;
    }
    if as_json {
        let mut v = serde_json::to_value(&answer).map_err(|e| e.to_string())?;
        v["verified"] = json!(verify);
        println!("{v}");
    } else {
        let value = match (&answer.value, &answer.value_hex) {
            (Some(v), _) => format!("{v:?}"),
            (None, Some(h)) => format!("0x{h}"),
            (None, None) => "absent".into(),
        };
        println!(
            "{key} = {value} at certified height {}{}",
            answer.certified_height,
            if verify {
                " (witness and certificate verified)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
