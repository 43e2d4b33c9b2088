//! The node directory: one machine's keys, its registry copy, and what the replica keeps.
//!
//! ```text
//! DIR/node.key, bls.key, low_share.key, high_share.key   secrets (0600, hex)
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
use std::path::{Path, PathBuf};
use types::Height;

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
