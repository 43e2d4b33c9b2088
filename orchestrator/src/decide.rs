//! The orchestrator's decision, a pure function of what the node knows:
//! `decide(local, peer CUPs, registry view) -> Decision`.
//!
//! 1. **Subnet**: from the local CUP if there is one, else from the registry's latest
//!    version (the subnet listing this node). Neither: [`Decision::Unassigned`].
//! 2. **Best CUP**: the highest valid one (`cup::choose_highest`) among the local CUP,
//!    the registry's genesis or recovery CUP for the subnet, and the peers' CUPs; a signed
//!    CUP counts only if it verifies against the subnet's key, and only CUPs of this
//!    subnet count.
//! 3. **Version**: the subnet's replica version at the best CUP's registry version, never
//!    at the latest (a version applies from the CUP that pinned it). If the local copy
//!    does not have that registry version yet: [`Decision::Wait`].
//! 4. **Leaving**: a node that is a member neither at the best CUP's registry version nor
//!    at the latest stops its replica; it wipes its state only then (the subnet has moved
//!    past its removal, so nobody needs its state). A node missing only at the latest
//!    version keeps running: the subnet needs it until a CUP passes its removal.
//! 5. **Download ahead**: when the latest registry version assigns the subnet another
//!    version than the one to run, fetch it now, so the switch does not wait for it.
//! 6. The version to run differs from the orchestrator's own: [`Decision::Upgrade`].

use cup::{Cup, choose_highest};
use registry::{
    local::{registry_cup, subnet_at, subnet_of},
    store::RegistryStore,
};
use types::{NodeId, ReplicaVersion, SubnetId};

/// What this node has locally.
#[derive(Clone, Debug)]
pub struct Local {
    pub node_id: NodeId,
    /// The version this orchestrator is (and the replica it starts).
    pub running_version: ReplicaVersion,
    /// The best CUP persisted so far.
    pub cup: Option<Cup>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// In no subnet: run nothing, keep replicating the registry.
    Unassigned,
    /// Cannot decide yet (say why); keep what runs, retry next tick.
    Wait { reason: String },
    /// Run (or keep running) this version's replica from `cup`.
    Run {
        subnet: SubnetId,
        cup: Box<Cup>,
        version: ReplicaVersion,
        /// A version the latest registry already assigns: download it ahead.
        prefetch: Option<ReplicaVersion>,
    },
    /// The CUP names another version: fetch it and re-execute into it.
    Upgrade {
        subnet: SubnetId,
        cup: Box<Cup>,
        version: ReplicaVersion,
    },
    /// Removed from the subnet: stop the replica; wipe its state if `wipe`.
    Leave { subnet: SubnetId, wipe: bool },
}

/// The decision. `peers` are CUPs other nodes served (unverified; forged ones lose).
pub fn decide<S: RegistryStore>(local: &Local, peers: &[Cup], registry: &S) -> Decision {
    let latest = registry.latest_version();
    let subnet = match &local.cup {
        Some(c) => c.content().subnet_id,
        None => match subnet_of(registry, &local.node_id, latest) {
            Ok(Some(s)) => s,
            Ok(None) => return Decision::Unassigned,
            Err(e) => return wait(format!("reading the registry: {e}")),
        },
    };
    let at_latest = match subnet_at(registry, &subnet, latest) {
        Ok(s) => s,
        Err(e) => return wait(format!("subnet {subnet} at registry version {latest}: {e}")),
    };
    let key = at_latest.record.high_threshold_key.group_key;
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
    let Some(best) = choose_highest(candidates.iter(), &key).cloned() else {
        return wait(format!("no valid CUP for subnet {subnet}"));
    };
    let pinned = best.content().registry_version;
    if pinned > latest {
        return wait(format!(
            "the best CUP pins registry version {pinned}; the local copy has {latest}"
        ));
    }
    let at_cup = match subnet_at(registry, &subnet, pinned) {
        Ok(s) => s,
        Err(e) => return wait(format!("subnet {subnet} at registry version {pinned}: {e}")),
    };
    let member_at_cup = at_cup.index_of(&local.node_id).is_some();
    let member_at_latest = at_latest.index_of(&local.node_id).is_some();
    if !member_at_cup && !member_at_latest {
        // Unambiguous only when the subnet itself signed a CUP past the removal; a
        // registry (recovery) CUP could be rolled back by the next proposal.
        let wipe = matches!(best, Cup::Signed(_));
        return Decision::Leave { subnet, wipe };
    }
    if !member_at_cup {
        // Added at a later version than the CUP pins: the subnet's CUPs will include it.
        return wait(format!(
            "not yet a member of subnet {subnet} at the CUP's registry version {pinned}"
        ));
    }
    let version = at_cup.record.replica_version.clone();
    if version != local.running_version {
        return Decision::Upgrade {
            subnet,
            cup: Box::new(best),
            version,
        };
    }
    let next = &at_latest.record.replica_version;
    let prefetch = (next != &version).then(|| next.clone());
    Decision::Run {
        subnet,
        cup: Box::new(best),
        version,
        prefetch,
    }
}

fn wait(reason: String) -> Decision {
    Decision::Wait { reason }
}
