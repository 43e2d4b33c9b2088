//! From a node directory, a version and a CUP to the pieces of a running replica.
//!
//! Every check happens before anything is written: the CUP must verify (a signed CUP
//! against the subnet's key, a registry CUP against the registry's own description),
//! the registry must say this subnet runs this version at the CUP's registry version,
//! and this node must be a member. Then the state: the local state if it is exactly at
//! the CUP, else the checkpoint at the CUP's height (its hash must equal the CUP's state
//! hash), else an empty state for a CUP at height 0; anything else needs state sync.

use crate::{
    ReplicaError,
    node_dir::{NodeDir, NodeKeys},
    pool_store::PoolStore,
    state::ReplicatedState,
};
use consensus::{
    Base, Config, Consensus, Member, RealCrypto, SubnetInfo,
    artifact::NodeIndex,
    crypto::{NodeSecrets, SubnetKeys},
    resharing::{Committee, shares_from_cup},
};
use cup::Cup;
use registry::{
    local::{SubnetAt, member_records, registry_cup, subnet_at},
    records::{NodeRecord, SubnetRecord},
    store::{RegistryStore, RocksStore},
};
use types::{Height, NodeId, RegistryVersion, ReplicaVersion};

/// How long a node waits before re-sending its latest artifacts without progress.
pub const RESEND_INTERVAL_NS: u64 = 2_000_000_000;
/// The shortest round with work in it (`consensus::core::Config::min_round_ns`), as a
/// fraction of the subnet's initial notary delay: a loaded subnet runs at most
/// `MIN_ROUND_PARTS` times as many rounds as an idle one (measured in BENCHMARKS.md).
pub const MIN_ROUND_PARTS: u64 = 4;
/// A block this full marks a busy subnet (`consensus::core::Config::busy_payload_bytes`):
/// about 25 of the bench load's updates. A saturated 13-node subnet's blocks carry about
/// 33 (at 16 KiB its rounds stayed short and throughput fell from 398 to 325 a second);
/// the finality load's carry one or two.
pub const BUSY_PAYLOAD_BYTES: usize = 4 * 1024;
/// The largest block payload.
pub const MAX_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;
/// How far ahead of this node's clock a block's time may be: more than clocks kept by a
/// time daemon differ, far less than an update's lifetime (see `consensus::core`, Time).
pub const MAX_BLOCK_TIME_SKEW_NS: u64 = 2_000_000_000;

fn registry_err(e: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Registry(e.to_string())
}

/// Opens the node-local registry copy as a follower of the orchestrator's store.
pub fn open_registry(dir: &NodeDir) -> Result<RocksStore, ReplicaError> {
    open_registry_following(dir, &dir.registry_follower())
}

/// The same, with the follower's own directory at `follower` (a rehearsal uses a
/// throwaway one, so it never shares the running replica's).
pub fn open_registry_following(
    dir: &NodeDir,
    follower: &std::path::Path,
) -> Result<RocksStore, ReplicaError> {
    std::fs::create_dir_all(follower)
        .map_err(|e| ReplicaError::Io(format!("{}: {e}", follower.display())))?;
    RocksStore::open_secondary(&dir.registry(), follower).map_err(|e| {
        ReplicaError::Registry(format!(
            "cannot open the node-local registry copy in {}: {e}",
            dir.registry().display()
        ))
    })
}

/// The CUP to start from: the highest valid one among the given one and those this node
/// made before (a restarted replica never goes back below a CUP it made).
pub fn choose_cup(dir: &NodeDir, given: Cup, registry: &RocksStore) -> Result<Cup, ReplicaError> {
    let subnet = given.content().subnet_id;
    let record = subnet_at(
        registry,
        &subnet,
        registry
            .latest_version()
            .min(given.content().registry_version),
    )
    .map_err(registry_err)?;
    let key = record.record.high_threshold_key.group_key;
    // Unsigned CUPs count only if the registry copy builds exactly them.
    let from_registry = registry_cup(registry, &subnet, registry.latest_version()).ok();
    let mut all = vec![given];
    all.extend(dir.local_cups());
    all.retain(|c| {
        c.content().subnet_id == subnet
            && match c {
                Cup::Signed(_) => true,
                Cup::Registry(r) => from_registry.as_ref() == Some(r),
            }
    });
    let best = cup::choose_highest(all.iter(), &key).cloned();
    best.ok_or_else(|| ReplicaError::Refused("no valid CUP to start from".into()))
}

/// Checks the CUP and where this node stands in the subnet it describes.
pub fn check(
    cup: &Cup,
    version: &ReplicaVersion,
    node: &NodeId,
    registry: &RocksStore,
) -> Result<(SubnetAt, NodeIndex), ReplicaError> {
    let c = cup.content();
    let rv = c.registry_version;
    if rv > registry.latest_version() {
        return Err(ReplicaError::Registry(format!(
            "the CUP pins registry version {rv}, but the local copy has only {}; the orchestrator must replicate it first",
            registry.latest_version()
        )));
    }
    let subnet = subnet_at(registry, &c.subnet_id, rv).map_err(registry_err)?;
    match cup {
        Cup::Signed(s) => s
            .verify(&subnet.record.high_threshold_key.group_key)
            .map_err(|e| ReplicaError::Cup {
                path: format!("height {}", c.height),
                reason: e.to_string(),
            })?,
        Cup::Registry(r) => {
            let expected = registry_cup(registry, &c.subnet_id, registry.latest_version())
                .map_err(registry_err)?;
            if &expected != r {
                return Err(ReplicaError::Cup {
                    path: format!("height {}", c.height),
                    reason: "a registry CUP that the registry does not describe".into(),
                });
            }
        }
    }
    // After a resharing the CUP names the committee and its keys (same group key).
    let subnet = subnet
        .with_cup_committee(registry, c.committee.as_ref())
        .map_err(registry_err)?;
    let to_run = c.version_to_run(&subnet.record.replica_version);
    if to_run != version {
        return Err(ReplicaError::Refused(format!(
            "this is replica version {version}, but subnet {} runs {to_run} from the CUP at height {} (registry version {rv})",
            c.subnet_id, c.height
        )));
    }
    let me = subnet.index_of(node).ok_or_else(|| {
        ReplicaError::Refused(format!(
            "node {node} is not in the committee of subnet {} at the CUP at height {} (registry version {rv})",
            c.subnet_id, c.height
        ))
    })?;
    Ok((subnet, me as NodeIndex))
}

/// The state at the CUP's height, if this node has it; `None` means state sync. It acts
/// on [`plan_state_at`]'s choice, so a rehearsal and a start cannot choose differently.
pub fn local_state_at(
    dir: &NodeDir,
    height: Height,
    state_hash: types::CryptoHash,
) -> Result<Option<ReplicatedState>, ReplicaError> {
    let state_dir = dir.state();
    match plan_state_at(dir, height, state_hash)?.source {
        "state" => Ok(Some(ReplicatedState::open(&state_dir)?)),
        "checkpoint" => Ok(Some(ReplicatedState::restore(
            &dir.checkpoint(height),
            &state_dir,
        )?)),
        "empty" => {
            if state_dir.exists() {
                std::fs::remove_dir_all(&state_dir)
                    .map_err(|e| ReplicaError::Io(format!("{}: {e}", state_dir.display())))?;
            }
            Ok(Some(ReplicatedState::open(&state_dir)?))
        }
        _ => Ok(None),
    }
}

/// What starting from a CUP would do with the state, found without writing anything
/// (the rehearsal behind `replica --check`). It refuses where a start would refuse.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatePlan {
    /// Where the state at the CUP would come from: `state`, `checkpoint`, `empty` or
    /// `state_sync` (peers; its schema is known only then).
    pub source: &'static str,
    /// The schema it is in, when known.
    pub schema: Option<u32>,
    /// The schema this release would migrate it to, if it is older.
    pub migrate_to: Option<u32>,
}

pub fn plan_state_at(
    dir: &NodeDir,
    height: Height,
    state_hash: types::CryptoHash,
) -> Result<StatePlan, ReplicaError> {
    use crate::state::{SCHEMA_VERSION, StateError};
    let readable = |schema: u32, path: &std::path::Path| {
        if schema > SCHEMA_VERSION {
            return Err(ReplicaError::State(StateError::NewerSchema {
                dir: path.display().to_string(),
                found: schema,
                supported: SCHEMA_VERSION,
            }));
        }
        Ok(())
    };
    let plan = |source, schema: u32| StatePlan {
        source,
        schema: Some(schema),
        migrate_to: (schema < SCHEMA_VERSION).then_some(SCHEMA_VERSION),
    };
    let state_dir = dir.state();
    if state_dir.join("CURRENT").exists() {
        let (h, hash, schema) = ReplicatedState::peek_any(&state_dir)?;
        readable(schema, &state_dir)?;
        if (h, hash) == (height, state_hash) {
            return Ok(plan("state", schema));
        }
    }
    let cp = dir.checkpoint(height);
    if cp.join("CURRENT").exists() {
        let (h, hash, schema) = ReplicatedState::peek_any(&cp)?;
        readable(schema, &cp)?;
        if (h, hash) != (height, state_hash) {
            return Err(ReplicaError::Refused(format!(
                "the checkpoint in {} is at height {h} with state hash {hash}, but the CUP says height {height} with {state_hash}",
                cp.display()
            )));
        }
        return Ok(plan("checkpoint", schema));
    }
    if height == Height::ZERO {
        if state_hash != types::empty_state_hash() {
            return Err(ReplicaError::Refused(format!(
                "a CUP at height 0 must carry the empty state's hash, not {state_hash}"
            )));
        }
        return Ok(plan("empty", SCHEMA_VERSION));
    }
    Ok(StatePlan {
        source: "state_sync",
        schema: None,
        migrate_to: None,
    })
}

/// The state at the CUP's height: this node's own, or else fetched from the subnet's other
/// members (state sync), verified against the CUP, and kept as the checkpoint there; then
/// migrated to this release's schema (after the check: a migration changes the hash).
/// The report says what state sync did, if the state was fetched.
pub async fn state_at(
    dir: &NodeDir,
    subnet: &SubnetAt,
    me: &NodeId,
    height: Height,
    state_hash: types::CryptoHash,
) -> Result<(ReplicatedState, Option<crate::sync::SyncReport>), ReplicaError> {
    let premigrated = premigrated_state_at(dir, height, state_hash)?;
    if dir.premigrated().exists() {
        // A preflight's copy this start has no use for (its upgrade was recalled, or
        // there is no checkpoint at the CUP to bring it up to): it would only hold disk.
        let _ = std::fs::remove_dir_all(dir.premigrated());
    }
    let (mut state, fetched) = match premigrated {
        Some(s) => (s, None),
        None => match local_state_at(dir, height, state_hash)? {
            Some(s) => (s, None),
            None => {
                let (s, report) = fetch_state_at(dir, subnet, me, height, state_hash).await?;
                (s, Some(report))
            }
        },
    };
    let from = state.schema();
    let started = std::time::Instant::now();
    let rewritten = state.migrate()?;
    if state.schema() != from {
        tracing::info!(
            from,
            to = state.schema(),
            values = rewritten,
            ms = started.elapsed().as_millis() as u64,
            %height,
            "migrated the state"
        );
    }
    Ok((state, fetched))
}

/// The state at the CUP in this release's schema, from the copy this release's preflight
/// migrated ahead of the halt: the copy takes the state directory's place and is brought
/// up to the checkpoint at the CUP (old schema, opened read-only), so only what changed
/// since the copy's base is migrated now. `None` (the caller migrates the whole state)
/// without a copy, without a checkpoint at the CUP that matches it, when no migration is
/// due, or if the copy cannot follow; the checkpoint is never written, so every failure
/// leaves it to start from.
fn premigrated_state_at(
    dir: &NodeDir,
    height: Height,
    state_hash: types::CryptoHash,
) -> Result<Option<ReplicatedState>, ReplicaError> {
    let kept = dir.premigrated();
    let cp = dir.checkpoint(height);
    if !kept.join("CURRENT").exists() || !cp.join("CURRENT").exists() {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let src = match ReplicatedState::open_read_only(&cp) {
        Ok(s)
            if s.height() == height
                && s.state_hash() == state_hash
                && s.schema() < crate::state::SCHEMA_VERSION =>
        {
            s
        }
        // Not this CUP's state, or nothing to migrate: the usual start decides.
        _ => return Ok(None),
    };
    let io =
        |p: &std::path::Path, e: std::io::Error| ReplicaError::Io(format!("{}: {e}", p.display()));
    // The state directory holds the CUP's state or an older one; the checkpoint keeps
    // the CUP's, so a crash from here on restores from it and migrates the whole state.
    let state_dir = dir.state();
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir).map_err(|e| io(&state_dir, e))?;
    }
    durable::rename(&kept, &state_dir).map_err(|e| ReplicaError::Io(e.to_string()))?;
    let advanced = ReplicatedState::open(&state_dir).and_then(|mut copy| {
        let report = copy.advance_migrated(&src)?;
        Ok((copy, report))
    });
    match advanced {
        Ok((state, report)) => {
            tracing::info!(
                from_height = %report.from,
                height = %state.height(),
                buckets = report.buckets,
                entries = report.entries,
                ms = started.elapsed().as_millis() as u64,
                "brought the preflight's migrated copy up to the CUP"
            );
            Ok(Some(state))
        }
        Err(e) => {
            tracing::warn!(error = %e, "the preflight's migrated copy cannot be used: migrating the whole state");
            std::fs::remove_dir_all(&state_dir).map_err(|e| io(&state_dir, e))?;
            Ok(None)
        }
    }
}

/// The state at the CUP's height from the subnet's other members, kept as the local
/// checkpoint there.
async fn fetch_state_at(
    dir: &NodeDir,
    subnet: &SubnetAt,
    me: &NodeId,
    height: Height,
    state_hash: types::CryptoHash,
) -> Result<(ReplicatedState, crate::sync::SyncReport), ReplicaError> {
    let peers: Vec<String> = subnet
        .members
        .iter()
        .filter(|m| &m.node_id != me)
        .map(|m| m.http_address.clone())
        .collect();
    let io = |e: std::io::Error| ReplicaError::Io(format!("{}: {e}", dir.checkpoints().display()));
    let target = dir.state().with_extension("sync");
    let report = crate::sync::fetch_state(&peers, height, state_hash, &target).await?;
    tracing::info!(
        %height,
        entries = report.entries,
        chunks = report.chunks,
        dropped_peers = report.dropped.len(),
        "state sync done"
    );
    let cp = dir.checkpoint(height);
    std::fs::create_dir_all(dir.checkpoints()).map_err(io)?;
    if cp.exists() {
        std::fs::remove_dir_all(&cp).map_err(io)?;
    }
    durable::rename(&target, &cp).map_err(|e| ReplicaError::Io(e.to_string()))?;
    Ok((ReplicatedState::restore(&cp, &dir.state())?, report))
}

/// What consensus needs to know about the subnet at one registry version: its
/// version, its flags, and its members (`members`: their node records, in order).
pub fn subnet_info(r: &SubnetRecord, members: &[NodeRecord]) -> SubnetInfo {
    SubnetInfo {
        replica_version: r.replica_version.clone(),
        halt_at_cup_height: r.halt_at_cup_height,
        is_halted: r.is_halted,
        members: members
            .iter()
            .map(|m| Member {
                id: m.node_id,
                node_key: *m.ed25519_public_key.as_bytes(),
                encryption_key: m.dealing_encryption_key,
            })
            .collect(),
    }
}

/// The registry versions from `from` to the latest, as consensus events.
pub fn registry_events(
    registry: &RocksStore,
    subnet: &types::SubnetId,
    from: RegistryVersion,
) -> Vec<(RegistryVersion, SubnetInfo)> {
    let mut out = Vec::new();
    let mut v = from;
    while v <= registry.latest_version() {
        if let Ok(s) = subnet_at(registry, subnet, v) {
            // A member whose record is missing leaves the list empty: no resharing.
            let members = member_records(registry, &s.record, v).unwrap_or_default();
            out.push((v, subnet_info(&s.record, &members)));
        }
        v = RegistryVersion::new(v.get() + 1);
    }
    out
}

/// Builds the consensus core at the CUP, with this node's own shares restored.
#[allow(clippy::too_many_arguments)]
pub fn build_core(
    cup: &Cup,
    version: &ReplicaVersion,
    subnet: &SubnetAt,
    me: NodeIndex,
    keys: NodeKeys,
    registry: &RocksStore,
    pool: &PoolStore,
    now: consensus::Now,
) -> Result<Consensus<RealCrypto>, ReplicaError> {
    let c = cup.content();
    let r = &subnet.record;
    let (low_share, high_share) = match &c.committee {
        // Dealt by a resharing: computed from the CUP alone.
        Some(record) => {
            let key = keys.encryption.as_ref().ok_or_else(|| {
                ReplicaError::Refused(
                    "the CUP's committee was dealt by a resharing, and this node has no encryption.key to open its shares with".into(),
                )
            })?;
            shares_from_cup(record, me, key).map_err(|e| {
                ReplicaError::Refused(format!(
                    "this node's shares from the CUP at height {}: {e}",
                    c.height
                ))
            })?
        }
        None => keys.shares(me)?,
    };
    let crypto = RealCrypto {
        keys: SubnetKeys {
            ed25519: subnet
                .members
                .iter()
                .map(|m| m.ed25519_public_key)
                .collect(),
            bls: subnet.members.iter().map(|m| m.bls_public_key).collect(),
            low: r.low_threshold_key.clone(),
            high: r.high_threshold_key.clone(),
        },
        secrets: NodeSecrets {
            ed25519: keys.ed25519,
            bls: keys.bls,
            low_share,
            high_share,
            encryption: keys.encryption,
        },
        hashes: Default::default(),
    };
    let cfg = Config {
        subnet_id: c.subnet_id,
        me,
        n: subnet.members.len(),
        version: version.clone(),
        dkg_interval_length: r.dkg_interval_length,
        unit_delay_ns: r.unit_delay_ms * 1_000_000,
        initial_notary_delay_ns: r.initial_notary_delay_ms * 1_000_000,
        min_round_ns: r.initial_notary_delay_ms * 1_000_000 / MIN_ROUND_PARTS,
        busy_payload_bytes: BUSY_PAYLOAD_BYTES,
        resend_interval_ns: RESEND_INTERVAL_NS,
        max_payload_bytes: MAX_PAYLOAD_BYTES,
        max_block_time_skew_ns: MAX_BLOCK_TIME_SKEW_NS,
        broken_rule: None,
        committee: Some(Committee {
            nodes: r.committee().to_vec(),
            low: r.low_threshold_key.clone(),
            high: r.high_threshold_key.clone(),
        }),
    };
    let restored = pool.load_above(c.height)?;
    Consensus::new(
        cfg,
        crypto,
        Base::from_cup(c),
        registry_events(registry, &c.subnet_id, c.registry_version),
        restored,
        now,
    )
    .map_err(|e| ReplicaError::Refused(e.to_string()))
}
