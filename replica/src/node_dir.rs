//! The node directory: one machine's keys, its registry copy, and what the replica keeps.
//!
//! ```text
//! DIR/node.key, bls.key, low_share.key, high_share.key   secrets (0600, hex)
//! DIR/node.toml                 the orchestrator's configuration; the replica reads its
//!                               `registry_root_key` (the network it serves)
//! DIR/registry/                 the node-local registry copy (the orchestrator writes it)
//! DIR/cups/<height>.cup         CUPs this node's replicas made (newest wins)
//! DIR/replica/state/            the replicated state (RocksDB)
//! DIR/replica/checkpoints/<h>/  state checkpoints at summary heights (RocksDB hard links)
//! DIR/replica/pool/             this node's own consensus shares (RocksDB, synced)
//! DIR/replica/registry-follower/ the RocksDB secondary's own files
//! DIR/replica/ingress-carryover.bin  updates a halted release still held (next release)
//! ```

use crate::ReplicaError;
use crypto::{bls::BlsSecretKey, ed25519::Ed25519KeyPair, key_file, threshold::SecretShare};
use cup::Cup;
use std::{
    io::Read,
    path::{Path, PathBuf},
};
use types::{Height, NetworkId};

/// The largest `node.toml` read.
pub const MAX_NODE_TOML_BYTES: u64 = 64 * 1024;

#[derive(Clone, Debug)]
pub struct NodeDir {
    pub root: PathBuf,
}

/// The node's secrets. The threshold shares get their index from the subnet record.
#[derive(Debug)]
pub struct NodeKeys {
    pub ed25519: Ed25519KeyPair,
    pub bls: BlsSecretKey,
    pub low_share: BlsSecretKey,
    pub high_share: BlsSecretKey,
}

impl NodeKeys {
    pub fn shares(&self, index: u32) -> (SecretShare, SecretShare) {
        (
            SecretShare {
                index,
                key: self.low_share.clone(),
            },
            SecretShare {
                index,
                key: self.high_share.clone(),
            },
        )
    }
}

impl NodeDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn registry(&self) -> PathBuf {
        self.root.join("registry")
    }
    pub fn registry_follower(&self) -> PathBuf {
        self.root.join("replica").join("registry-follower")
    }
    pub fn cups(&self) -> PathBuf {
        self.root.join("cups")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("replica").join("state")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("replica").join("checkpoints")
    }
    pub fn checkpoint(&self, h: Height) -> PathBuf {
        self.checkpoints().join(format!("{:020}", h.get()))
    }
    pub fn pool(&self) -> PathBuf {
        self.root.join("replica").join("pool")
    }
    /// Updates a halted release accepted but never put in a block, for the next release.
    pub fn carryover(&self) -> PathBuf {
        self.root.join("replica").join("ingress-carryover.bin")
    }

    /// The orchestrator's configuration file.
    pub fn config(&self) -> PathBuf {
        self.root.join("node.toml")
    }

    /// The network this node serves: the hash of `node.toml`'s `registry_root_key`. Every
    /// update it accepts or executes must name it.
    pub fn network_id(&self) -> Result<NetworkId, ReplicaError> {
        #[derive(serde::Deserialize)]
        struct RootKey {
            registry_root_key: String,
        }
        let path = self.config();
        let err = |reason: String| ReplicaError::NodeDir {
            path: path.display().to_string(),
            reason,
        };
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_NODE_TOML_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| err(e.to_string()))?;
        if text.len() as u64 > MAX_NODE_TOML_BYTES {
            return Err(err(format!("larger than {MAX_NODE_TOML_BYTES} bytes")));
        }
        let config: RootKey = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let key: crypto::ed25519::Ed25519PublicKey = config
            .registry_root_key
            .trim()
            .parse()
            .map_err(|e| err(format!("registry_root_key: {e}")))?;
        Ok(NetworkId::from_registry_root_key(key.as_bytes()))
    }

    /// Reads the node's secrets, with the file named in any error.
    pub fn keys(&self) -> Result<NodeKeys, ReplicaError> {
        let bls = |name: &str| -> Result<BlsSecretKey, ReplicaError> {
            let path = self.root.join(name);
            let bytes = key_file::read(&path, 32).map_err(|e| ReplicaError::NodeDir {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            BlsSecretKey::from_bytes(&bytes).map_err(|e| ReplicaError::NodeDir {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        let path = self.root.join("node.key");
        let ed25519 = Ed25519KeyPair::read_from_file(&path).map_err(|e| ReplicaError::NodeDir {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(NodeKeys {
            ed25519,
            bls: bls("bls.key")?,
            low_share: bls("low_share.key")?,
            high_share: bls("high_share.key")?,
        })
    }

    /// Writes a CUP atomically (temporary file, fsync, rename, fsync of the directory),
    /// so a reader never sees half of one.
    pub fn write_cup(&self, cup: &Cup) -> Result<PathBuf, ReplicaError> {
        let dir = self.cups();
        let io = |e: std::io::Error| ReplicaError::Io(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let h = cup.content().height.get();
        let path = dir.join(format!("{h:020}.cup"));
        let tmp = dir.join(format!(".{h:020}.cup.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&cup.encode()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(path)
    }

    /// Every readable CUP in `cups/` (unreadable ones are skipped: a newer one can be
    /// fetched, and the file is left for inspection).
    pub fn local_cups(&self) -> Vec<Cup> {
        let Ok(entries) = std::fs::read_dir(self.cups()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "cup")
                && let Ok(bytes) = std::fs::read(&p)
            {
                match Cup::decode(&bytes) {
                    Ok(c) => out.push(c),
                    Err(err) => tracing::warn!(path = %p.display(), %err, "skipping a CUP file"),
                }
            }
        }
        out
    }
}

/// Reads and decodes a CUP file.
pub fn read_cup(path: &Path) -> Result<Cup, ReplicaError> {
    let bytes = std::fs::read(path).map_err(|e| ReplicaError::Cup {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Cup::decode(&bytes).map_err(|e| ReplicaError::Cup {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_is_the_hash_of_node_toml_s_registry_root_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = NodeDir::new(dir.path());
        let missing = node.network_id().expect_err("no node.toml");
        assert!(missing.to_string().contains("node.toml"), "{missing}");

        let key = Ed25519KeyPair::from_seed(&[1; 32]).public_key();
        // The orchestrator's other settings are there too; the replica ignores them.
        let text = format!(
            "registry_urls = [\"http://127.0.0.1:1\"]\nregistry_root_key = \"{key}\"\nlisten = \"127.0.0.1:2\"\n"
        );
        std::fs::write(node.config(), text).expect("write");
        assert_eq!(
            node.network_id().expect("read"),
            NetworkId::from_registry_root_key(key.as_bytes())
        );

        std::fs::write(node.config(), "registry_root_key = \"abcd\"\n").expect("write");
        let bad = node.network_id().expect_err("not a key");
        assert!(bad.to_string().contains("registry_root_key"), "{bad}");
        let huge = "#".repeat(MAX_NODE_TOML_BYTES as usize + 1);
        std::fs::write(node.config(), huge).expect("write");
        let too_large = node.network_id().expect_err("too large");
        assert!(too_large.to_string().contains("larger than"), "{too_large}");
    }
}
