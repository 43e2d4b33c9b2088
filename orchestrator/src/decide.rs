//! The orchestrator's decision, a pure function of what the node knows:
//! `decide(local, peer CUPs, registry view) -> Decision`.
//!
//! 1. **Subnet**: from the local CUP if there is one, else from the registry's latest
//!    version (the subnet listing this node). Neither: [`Decision::Unassigned`].
//! 2. **Best CUP**: the highest valid one (`cup::choose_highest`) among the local CUP,
//!    the registry's genesis or recovery CUP for the subnet, and the peers' CUPs; a signed
//!    CUP counts only if it verifies against the subnet's key (the high-threshold key at
//!    the latest registry version, checked by a [`CupVerifier`]: BLS in production,
//!    the simulator's stand-in there), and only CUPs of this subnet count. An unsigned
//!    CUP counts only if the registry copy builds exactly it.
//! 3. **Release**: the replica version the best CUP says runs from it (a subnet whose
//!    nodes were not ready for a newly pinned version runs on, and its CUP says so), else
//!    the subnet's replica version at the CUP's registry version, never at the latest (a
//!    version applies from the CUP that pinned it), and that version's
//!    package (SHA-256 and URLs) at the same registry version ([`Release`]). If the local
//!    copy does not have that registry version yet, or lists no package for the version:
//!    [`Decision::Wait`].
//! 4. **Leaving**: a node that is in the committee (`SubnetRecord::committee`: the nodes
//!    holding the threshold keys' shares) neither at the best CUP's registry version nor
//!    at the latest, and not a member at the latest, stops its replica; it wipes its
//!    state only then (the subnet has moved past its removal, so nobody needs its
//!    state). A node missing only at the latest version keeps running: the subnet needs
//!    it until a CUP passes its removal. A member governance added that is not in the
//!    committee yet waits for the subnet to reshare its key to it.
//! 5. **Download ahead**: when the latest registry version assigns the subnet another
//!    release than the one to run, fetch it now, so the switch does not wait for it.
//! 6. **Recalled**: a release governance recalled (at the latest registry version: a
//!    recall applies at once, not from a CUP) is never run, whichever CUP names it
//!    ([`Decision::Hold`]: the replica stops and the node waits for a recovery CUP or a
//!    new deployment), and never downloaded ahead.
//! 7. The release to run is not the orchestrator's own (another version, or the same
//!    version id with another package, as when a retired id is elected again):
//!    [`Decision::Upgrade`]. A release is identified by its package's SHA-256; the
//!    version id alone never decides what runs.

use crypto::threshold::ThresholdPublicKey;
use cup::{Cup, SignedCup, choose_highest_by};
use registry::{
    local::{SubnetAt, registry_cup, subnet_at, subnet_of},
    records::{RegistryRecord, ReplicaVersionRecord, keys},
    store::RegistryStore,
};
use types::{NodeId, RegistryVersion, ReplicaVersion, SubnetId};

/// What a `Wait` says of a node governance added whose subnet has not reshared to it.
pub const NOT_IN_COMMITTEE: &str = "not yet in its committee";

/// What this node has locally.
#[derive(Clone, Debug)]
pub struct Local {
    pub node_id: NodeId,
    /// The version this orchestrator is (and the replica it starts).
    pub running_version: ReplicaVersion,
    /// The SHA-256 of the package this orchestrator's image came from (lowercase hex).
    pub running_package_sha256: String,
    /// The best CUP persisted so far.
    pub cup: Option<Cup>,
}

/// A release as the registry lists it at one registry version: what to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub version: ReplicaVersion,
    /// The package's SHA-256, lowercase hex: the image's name.
    pub package_sha256: String,
    pub urls: Vec<String>,
    /// Recalled by governance: never downloaded or run.
    pub recalled: bool,
}

impl Release {
    /// Whether this is the release `local` runs.
    pub fn is_running(&self, local: &Local) -> bool {
        self.version == local.running_version && self.package_sha256 == local.running_package_sha256
    }
}

/// The release `version` names at registry version `at`.
pub fn release_at<S: RegistryStore>(
    registry: &S,
    version: &ReplicaVersion,
    at: RegistryVersion,
) -> Result<Release, String> {
    let bytes = registry
        .get(&keys::replica_version(version), at)
        .map_err(|e| format!("reading version {version} at registry version {at}: {e}"))?
        .ok_or_else(|| format!("version {version} is not elected at registry version {at}"))?;
    let r = ReplicaVersionRecord::decode_value(&bytes)
        .map_err(|e| format!("version {version} at registry version {at}: {e}"))?;
    Ok(Release {
        version: r.version,
        package_sha256: r.release_package_sha256_hex.to_ascii_lowercase(),
        urls: r.release_package_urls,
        recalled: r.recalled,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// In no subnet: run nothing, keep replicating the registry.
    Unassigned,
    /// Cannot decide yet (say why); keep what runs, retry next tick.
    Wait { reason: String },
    /// Run (or keep running) this release's replica from `cup`.
    Run {
        subnet: SubnetId,
        cup: Box<Cup>,
        release: Release,
        /// A release the latest registry already assigns: download it ahead.
        prefetch: Option<Release>,
    },
    /// The CUP names another release: fetch it and re-execute into it.
    Upgrade {
        subnet: SubnetId,
        cup: Box<Cup>,
        release: Release,
    },
    /// The release to run was recalled: stop the replica, run and fetch nothing, and
    /// wait for a recovery CUP or another deployment.
    Hold { subnet: SubnetId, reason: String },
    /// Removed from the subnet: stop the replica; wipe its state if `wipe`.
    Leave { subnet: SubnetId, wipe: bool },
}

/// Whether a signed CUP carries its subnet's signature, given the subnet's key as the
/// registry lists it.
pub trait CupVerifier {
    fn verifies(&self, cup: &SignedCup, subnet_key: &ThresholdPublicKey) -> bool;
}

/// The production check: the BLS threshold signature against the subnet's group key.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlsCupVerifier;

impl CupVerifier for BlsCupVerifier {
    fn verifies(&self, cup: &SignedCup, subnet_key: &ThresholdPublicKey) -> bool {
        cup.verify(&subnet_key.group_key).is_ok()
    }
}

/// The last decision, by its inputs: [`decide`] is pure, and between CUPs its inputs
/// (the local CUP, the peers' CUPs, the registry copy's latest version, the running
/// release) rarely change, while deciding decodes the subnet's records (their BLS keys,
/// each with a subgroup check) and may verify CUP signatures. The registry copy's
/// versions never change once written, so its latest version stands for all of it. The
/// orchestrator and the simulator both decide through one.
#[derive(Debug, Default)]
pub struct Memo {
    key: Vec<u8>,
    decision: Option<Decision>,
    /// Decisions computed (not taken from the memo), for tests and profiles.
    pub computed: u64,
}

impl Memo {
    pub fn decide_with<S: RegistryStore, V: CupVerifier + ?Sized>(
        &mut self,
        local: &Local,
        peers: &[Cup],
        registry: &S,
        verifier: &V,
    ) -> Decision {
        let mut key = Vec::new();
        key.extend_from_slice(&registry.latest_version().get().to_be_bytes());
        for part in [
            local.node_id.to_string().as_bytes(),
            local.running_version.as_str().as_bytes(),
            local.running_package_sha256.as_bytes(),
        ] {
            key.extend_from_slice(&(part.len() as u64).to_be_bytes());
            key.extend_from_slice(part);
        }
        // Which CUP is the local one matters: mark it apart from the peers'.
        key.push(u8::from(local.cup.is_some()));
        for c in local.cup.iter().chain(peers) {
            let bytes = c.encode();
            key.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            key.extend_from_slice(&bytes);
        }
        if let Some(d) = &self.decision
            && self.key == key
        {
            return d.clone();
        }
        let d = decide_with(local, peers, registry, verifier);
        self.computed += 1;
        self.key = key;
        self.decision = Some(d.clone());
        d
    }

    /// [`Memo::decide_with`] with the BLS verifier.
    pub fn decide<S: RegistryStore>(
        &mut self,
        local: &Local,
        peers: &[Cup],
        registry: &S,
    ) -> Decision {
        self.decide_with(local, peers, registry, &BlsCupVerifier)
    }
}

/// The decision. `peers` are CUPs other nodes served (unverified; forged ones lose).
pub fn decide<S: RegistryStore>(local: &Local, peers: &[Cup], registry: &S) -> Decision {
    decide_with(local, peers, registry, &BlsCupVerifier)
}

/// [`decide`] with the signature check as an argument (the simulator's stand-in
/// signatures are not BLS); every other rule is the same code.
pub fn decide_with<S: RegistryStore, V: CupVerifier + ?Sized>(
    local: &Local,
    peers: &[Cup],
    registry: &S,
    verifier: &V,
) -> Decision {
    let (subnet, at_latest, best) = match best_cup(local, peers, registry, verifier) {
        Ok(x) => x,
        Err(d) => return *d,
    };
    decide_from(local, registry, subnet, at_latest, best)
}

/// The node's subnet (its CUP's, or the one governance assigned it to), that subnet at
/// the latest registry version, and the best valid CUP among the local one, the
/// registry's and the peers'; else the decision to wait (or that it is unassigned).
pub fn best_cup<S: RegistryStore, V: CupVerifier + ?Sized>(
    local: &Local,
    peers: &[Cup],
    registry: &S,
    verifier: &V,
) -> Result<(SubnetId, SubnetAt, Cup), Box<Decision>> {
    let latest = registry.latest_version();
    let subnet = match &local.cup {
        Some(c) => c.content().subnet_id,
        None => match subnet_of(registry, &local.node_id, latest) {
            Ok(Some(s)) => s,
            Ok(None) => return Err(Box::new(Decision::Unassigned)),
            Err(e) => return Err(Box::new(wait(format!("reading the registry: {e}")))),
        },
    };
    let at_latest = match subnet_at(registry, &subnet, latest) {
        Ok(s) => s,
        Err(e) => {
            return Err(Box::new(wait(format!(
                "subnet {subnet} at registry version {latest}: {e}"
            ))));
        }
    };
    let key = &at_latest.record.high_threshold_key;
    let from_registry = registry_cup(registry, &subnet, latest).ok();
    let mut candidates: Vec<Cup> = Vec::new();
    candidates.extend(local.cup.iter().cloned());
    candidates.extend(from_registry.iter().cloned().map(Cup::Registry));
    candidates.extend(peers.iter().cloned());
    // An unsigned CUP counts only if the registry copy builds exactly it (a file or a
    // peer cannot make one up): `choose_highest` trusts unsigned CUPs.
    candidates.retain(|c| {
        c.content().subnet_id == subnet
            && match c {
                Cup::Signed(_) => true,
                Cup::Registry(r) => from_registry.as_ref() == Some(r),
            }
    });
    let verifies = |c: &SignedCup| verifier.verifies(c, key);
    let Some(best) = choose_highest_by(candidates.iter(), verifies).cloned() else {
        return Err(Box::new(wait(format!("no valid CUP for subnet {subnet}"))));
    };
    Ok((subnet, at_latest, best))
}

fn decide_from<S: RegistryStore>(
    local: &Local,
    registry: &S,
    subnet: SubnetId,
    at_latest: SubnetAt,
    best: Cup,
) -> Decision {
    let latest = registry.latest_version();
    let pinned = best.content().registry_version;
    if pinned > latest {
        return wait(format!(
            "the best CUP pins registry version {pinned}; the local copy has {latest}"
        ));
    }
    // Usually the CUP pins the latest version: decode the record (and its keys) once.
    let at_cup_owned;
    let at_cup = if pinned == latest {
        &at_latest
    } else {
        at_cup_owned = match subnet_at(registry, &subnet, pinned) {
            Ok(s) => s,
            Err(e) => return wait(format!("subnet {subnet} at registry version {pinned}: {e}")),
        };
        &at_cup_owned
    };
    // A CUP that names a committee (a resharing dealt it the keys) decides who is in it;
    // the registry's key holders are the ones genesis dealt to.
    let committee = best.content().committee.as_ref();
    let in_committee = |s: &SubnetAt| match committee {
        Some(c) => c.nodes.contains(&local.node_id),
        None => s.index_of(&local.node_id).is_some(),
    };
    let in_committee_at_cup = in_committee(at_cup);
    let in_committee_at_latest = in_committee(&at_latest);
    let member_at_latest = at_latest.is_member(&local.node_id);
    if !in_committee_at_cup && !in_committee_at_latest && !member_at_latest {
        // Unambiguous only when the subnet itself signed a CUP past the removal; a
        // registry (recovery) CUP could be rolled back by the next proposal.
        let wipe = matches!(best, Cup::Signed(_));
        return Decision::Leave { subnet, wipe };
    }
    if !in_committee_at_cup && !in_committee_at_latest {
        // Governance added it; the committee that runs consensus holds the key.
        return wait(format!(
            "added to subnet {subnet}, {NOT_IN_COMMITTEE}: it joins once the subnet reshares its threshold keys to it"
        ));
    }
    if !in_committee_at_cup {
        // Added at a later version than the CUP pins: the subnet's CUPs will include it.
        return wait(format!(
            "not yet a member of subnet {subnet} at the CUP's registry version {pinned}"
        ));
    }
    let to_run = best
        .content()
        .version_to_run(&at_cup.record.replica_version);
    let release = match release_at(registry, to_run, pinned) {
        Ok(r) => r,
        Err(reason) => return wait(reason),
    };
    // A recall applies from the moment the registry copy has it, not from a CUP (read
    // at the latest version only when the CUP pins an older one: usually it is the same
    // record).
    let recalled = release.recalled
        || (pinned != latest
            && release_at(registry, &release.version, latest)
                .is_ok_and(|r| r.recalled && r.package_sha256 == release.package_sha256));
    if recalled {
        let reason = format!(
            "version {} is recalled by governance: waiting for a recovery CUP or another deployment to subnet {subnet}",
            release.version
        );
        return Decision::Hold { subnet, reason };
    }
    if !release.is_running(local) {
        return Decision::Upgrade {
            subnet,
            cup: Box::new(best),
            release,
        };
    }
    // Ahead of time, and only a release the registry lists (none: nothing to fetch yet).
    let prefetch = release_at(registry, &at_latest.record.replica_version, latest)
        .ok()
        .filter(|next| next != &release && !next.recalled);
    Decision::Run {
        subnet,
        cup: Box::new(best),
        release,
        prefetch,
    }
}

fn wait(reason: String) -> Decision {
    Decision::Wait { reason }
}
