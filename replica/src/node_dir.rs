//! The node directory: one machine's keys, its registry copy, and what the replica keeps.
//!
//! ```text
//! DIR/node.key, bls.key, encryption.key, low_share.key, high_share.key   secrets (0600,
//!                               hex; the genesis shares only on genesis members)
//! DIR/node.toml                 the orchestrator's configuration; the replica reads its
//!                               `registry_root_key` (the network it serves)
//! DIR/registry/                 the node-local registry copy (the orchestrator writes it)
//! DIR/cups/<height>.cup         CUPs this node's replicas made (newest wins; the newest
//!                               KEEP_CUP_FILES are kept)
//! DIR/replica/state/            the replicated state (RocksDB)
//! DIR/replica/checkpoints/<h>/  state checkpoints at summary heights (RocksDB hard links)
//! DIR/replica/pool/             this node's own consensus shares (RocksDB, synced)
//! DIR/replica/registry-follower/ the RocksDB secondary's own files
//! DIR/replica/ingress-carryover.bin  updates a halted release still held (next release)
//! ```

use crate::ReplicaError;
use crypto::{
    bls::BlsSecretKey, ed25519::Ed25519KeyPair, key_file, reshare::EncryptionSecretKey,
    threshold::SecretShare,
};
use cup::Cup;
use std::{
    io::Read,
    path::{Path, PathBuf},
};
use types::{Height, NetworkId, ReplicaVersion};

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
    /// The genesis dealer's shares: absent on a machine that was not in a subnet at
    /// genesis (it gets its shares from a resharing's CUP).
    pub genesis_shares: Option<(BlsSecretKey, BlsSecretKey)>,
    /// `encryption.key`, the X25519 key resharings encrypt this node's values to (absent
    /// in node directories made before resharing existed).
    pub encryption: Option<EncryptionSecretKey>,
}

impl NodeKeys {
    /// The genesis shares at `index`, or why there are none.
    pub fn shares(&self, index: u32) -> Result<(SecretShare, SecretShare), ReplicaError> {
        let (low, high) = self.genesis_shares.as_ref().ok_or_else(|| {
            ReplicaError::Refused(
                "this node holds no genesis shares (low_share.key, high_share.key) and the CUP names no reshared committee".into(),
            )
        })?;
        Ok((
            SecretShare {
                index,
                key: low.clone(),
            },
            SecretShare {
                index,
                key: high.clone(),
            },
        ))
    }
}

/// Where the orchestrator writes its preflight verdict, in the node directory.
pub const READINESS_FILE: &str = "upgrade-readiness.json";
/// The orchestrator's wake-up socket (`orchestrator::handover::WAKE_SOCKET`): a datagram
/// there after each CUP written spares the handover the orchestrator's poll interval.
pub const WAKE_SOCKET: &str = "orchestrator.sock";
/// The most bytes of it read.
pub const MAX_READINESS_FILE_BYTES: u64 = 4096;

/// Where the replica reports its own part in the subnet to the orchestrator (its health
/// check after a switch), in the node directory.
pub const PROGRESS_FILE: &str = "replica-progress.json";
/// The most bytes of it read (the orchestrator's limit too).
pub const MAX_PROGRESS_FILE_BYTES: u64 = 4096;

/// `replica-progress.json`: the release running and the highest finalized height whose
/// notarization or finalization carries this node's share.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ProgressFile {
    pub version: ReplicaVersion,
    pub own_share_height: Option<u64>,
}

/// `upgrade-readiness.json`: whether this node's orchestrator fetched, verified and
/// rehearsed the release the registry deploys to the subnet, or why not.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ReadinessFile {
    pub version: ReplicaVersion,
    pub ready: bool,
    #[serde(default)]
    pub reason: String,
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
    /// A copy of a checkpoint the next release's preflight migrated, for the switch
    /// (`state::ahead`).
    pub fn premigrated(&self) -> PathBuf {
        self.root.join("replica").join("premigrated")
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

    /// This replica's report to the orchestrator ([`ProgressFile`]).
    pub fn progress_file(&self) -> PathBuf {
        self.root.join(PROGRESS_FILE)
    }

    /// Writes the report (atomically: the orchestrator never reads half of it).
    pub fn write_progress(&self, p: &ProgressFile) -> Result<(), ReplicaError> {
        let path = self.progress_file();
        let body = serde_json::to_vec(p).map_err(|e| ReplicaError::Io(e.to_string()))?;
        durable::write(&path, &body).map_err(|e| ReplicaError::Io(e.to_string()))
    }

    /// The orchestrator's preflight verdict on the release deployed to the subnet
    /// ([`ReadinessFile`]), which the replica signs and gossips as its readiness.
    pub fn readiness_file(&self) -> PathBuf {
        self.root.join(READINESS_FILE)
    }

    /// The orchestrator's current verdict, if it wrote one that parses (at most
    /// [`MAX_READINESS_FILE_BYTES`] are read).
    pub fn readiness(&self) -> Option<ReadinessFile> {
        let bytes = durable::read_bounded(&self.readiness_file(), MAX_READINESS_FILE_BYTES).ok()?;
        serde_json::from_slice(&bytes).ok()
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
        let path = self.root.join("encryption.key");
        let encryption = if path.exists() {
            let bytes = key_file::read(&path, 32).map_err(|e| ReplicaError::NodeDir {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| ReplicaError::NodeDir {
                path: path.display().to_string(),
                reason: "not 32 bytes".into(),
            })?;
            Some(EncryptionSecretKey::from_bytes(bytes))
        } else {
            None
        };
        let genesis_shares = if self.root.join("low_share.key").exists()
            || self.root.join("high_share.key").exists()
        {
            Some((bls("low_share.key")?, bls("high_share.key")?))
        } else {
            None
        };
        Ok(NodeKeys {
            ed25519,
            bls: bls("bls.key")?,
            genesis_shares,
            encryption,
        })
    }

    /// Deletes the genesis dealer's share files, durably: called once this node runs on
    /// shares a resharing dealt it (a CUP names its committee). No later CUP needs them
    /// (every later CUP carries the committee on), and a machine compromised after it
    /// left the genesis committee must not hand an attacker a share of that polynomial.
    pub fn retire_genesis_shares(&self) -> Result<(), ReplicaError> {
        let mut removed = false;
        for name in ["low_share.key", "high_share.key"] {
            let path = self.root.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ReplicaError::Io(format!("{}: {e}", path.display()))),
            }
        }
        if removed {
            durable::sync_dir(&self.root).map_err(|e| ReplicaError::Io(e.to_string()))?;
            tracing::info!("deleted the genesis share files: this node runs on reshared shares");
        }
        Ok(())
    }

    /// Writes a CUP durably ([`durable::write`]: a reader never sees half of one, and it
    /// survives a crash once this returns), then removes the oldest CUP files beyond
    /// [`KEEP_CUP_FILES`].
    pub fn write_cup(&self, cup: &Cup) -> Result<PathBuf, ReplicaError> {
        let dir = self.cups();
        std::fs::create_dir_all(&dir)
            .map_err(|e| ReplicaError::Io(format!("{}: {e}", dir.display())))?;
        let h = cup.content().height.get();
        let path = dir.join(cup_file_name(h));
        durable::write(&path, &cup.encode()).map_err(|e| ReplicaError::Io(e.to_string()))?;
        self.wake_orchestrator();
        if let Err(e) = prune_cups(&dir, KEEP_CUP_FILES) {
            // A full history is a disk-space matter, not a reason to stop making CUPs.
            tracing::warn!(error = %e, "pruning old CUP files");
        }
        Ok(path)
    }

    /// Tells the orchestrator, if one listens, that a CUP was written: one datagram on
    /// [`WAKE_SOCKET`], best effort (it then reads the file as it would at its next
    /// poll; a replica without an orchestrator loses nothing).
    pub fn wake_orchestrator(&self) {
        let path = self.root.join(WAKE_SOCKET);
        if let Ok(s) = std::os::unix::net::UnixDatagram::unbound()
            && s.set_nonblocking(true).is_ok()
        {
            let _ = s.send_to(b"cup", path);
        }
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
                && let Ok(bytes) = durable::read_bounded(&p, cup::MAX_CUP_BYTES as u64)
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

/// How many CUP files `cups/` keeps: the newest by height. A start uses the highest one
/// (and `DIR/cup.cup`, which the orchestrator keeps apart); older ones are history for an
/// operator, bounded so that a long-lived node's directory does not grow with its age.
pub const KEEP_CUP_FILES: usize = 8;
/// The most entries a prune of `cups/` looks at.
const MAX_CUP_DIR_ENTRIES: usize = 4096;

/// `cups/`'s file name for a CUP at height `h`: zero-padded, so names sort by height.
fn cup_file_name(h: u64) -> String {
    format!("{h:020}.cup")
}

/// Removes the CUP files of `dir` beyond the `keep` highest, and temporary files a killed
/// writer left. Never the highest: that is the one a start or the orchestrator uses.
/// Returns the heights removed.
pub fn prune_cups(dir: &Path, keep: usize) -> Result<Vec<u64>, ReplicaError> {
    let io = |e: std::io::Error| ReplicaError::Io(format!("{}: {e}", dir.display()));
    let mut heights: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir)
        .map_err(io)?
        .take(MAX_CUP_DIR_ENTRIES)
    {
        let name = entry.map_err(io)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(h) = name
            .strip_suffix(".cup")
            .and_then(|h| h.parse::<u64>().ok())
            && name == cup_file_name(h)
        {
            heights.push(h);
        }
    }
    heights.sort_unstable();
    let excess = heights.len().saturating_sub(keep.max(1));
    let removed: Vec<u64> = heights.into_iter().take(excess).collect();
    for h in &removed {
        std::fs::remove_file(dir.join(cup_file_name(*h))).map_err(io)?;
    }
    durable::remove_stale(dir).map_err(|e| ReplicaError::Io(e.to_string()))?;
    Ok(removed)
}

/// Reads and decodes a CUP file: at most [`cup::MAX_CUP_BYTES`] are read (a longer file is
/// refused before it is held).
pub fn read_cup(path: &Path) -> Result<Cup, ReplicaError> {
    let bytes =
        durable::read_bounded(path, cup::MAX_CUP_BYTES as u64).map_err(|e| ReplicaError::Cup {
            path: path.display().to_string(),
            reason: e.source.to_string(),
        })?;
    Cup::decode(&bytes).map_err(|e| ReplicaError::Cup {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use cup::{CupContent, RandomBeacon, RegistryCup, RegistryCupKind};
    use types::{CryptoHash, RegistryVersion, ReplicaVersion, SubnetId};

    fn cup_at(h: u64) -> Cup {
        Cup::Registry(RegistryCup {
            kind: RegistryCupKind::Recovery,
            content: CupContent {
                subnet_id: SubnetId([1; 32]),
                height: Height::new(h),
                block_hash: CryptoHash([2; 32]),
                block_time_ns: h,
                registry_version: RegistryVersion::new(1),
                replica_version: ReplicaVersion::new("1.0.0").unwrap(),
                random_beacon: RandomBeacon(vec![3; 32]),
                state_hash: CryptoHash([4; 32]),
                oldest_registry_version_in_use: RegistryVersion::new(1),
                next_replica_version: None,
                committee: None,
                extensions: Default::default(),
            },
        })
    }

    #[test]
    fn writing_a_cup_wakes_the_orchestrator_and_needs_none() {
        let dir = tempfile::tempdir().unwrap();
        let nd = NodeDir::new(dir.path());
        // No orchestrator listens: the CUP is written all the same.
        nd.write_cup(&cup_at(10)).unwrap();
        let listener =
            std::os::unix::net::UnixDatagram::bind(dir.path().join(WAKE_SOCKET)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        assert!(
            listener.recv(&mut buf).is_err(),
            "a datagram before any CUP"
        );
        nd.write_cup(&cup_at(20)).unwrap();
        let n = listener
            .recv(&mut buf)
            .expect("no wake-up after the CUP was written");
        assert_eq!(&buf[..n], b"cup");
        // The file was there before the wake-up was sent.
        assert!(
            nd.local_cups()
                .iter()
                .any(|c| c.content().height.get() == 20)
        );
    }

    #[test]
    fn cups_keep_a_bounded_history_and_always_the_highest() {
        let dir = tempfile::tempdir().unwrap();
        let nd = NodeDir::new(dir.path());
        // A writer killed mid-write left this; it goes with the next prune.
        std::fs::create_dir_all(nd.cups()).unwrap();
        std::fs::write(nd.cups().join(".x.cup.tmp-1-1"), b"half").unwrap();
        std::fs::write(nd.cups().join("notes.txt"), b"an operator's").unwrap();
        let heights: Vec<u64> = (1..=3 * KEEP_CUP_FILES as u64).map(|i| i * 10).collect();
        for h in &heights {
            nd.write_cup(&cup_at(*h)).unwrap();
        }
        let mut kept: Vec<u64> = nd
            .local_cups()
            .iter()
            .map(|c| c.content().height.get())
            .collect();
        kept.sort_unstable();
        assert_eq!(kept, heights[heights.len() - KEEP_CUP_FILES..]);
        let mut names: Vec<String> = std::fs::read_dir(nd.cups())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), KEEP_CUP_FILES + 1, "{names:?}");
        assert!(names.contains(&"notes.txt".to_string()), "{names:?}");
        // Even a keep of zero never removes the highest.
        assert_eq!(prune_cups(&nd.cups(), 0).unwrap().len(), KEEP_CUP_FILES - 1);
        assert_eq!(nd.local_cups().len(), 1);
        assert_eq!(
            nd.local_cups()[0].content().height.get(),
            *heights.last().unwrap()
        );
    }

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
