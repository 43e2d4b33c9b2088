//! What the membership simulator checks of a resharing's CUP, and the new committee's
//! run from it.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn check_record(
    record: &CupCommittee,
    content: &CupContent,
    signature: &[u8],
    low: &crypto::threshold::ThresholdPublicKey,
    high: &crypto::threshold::ThresholdPublicKey,
    new_members: &[usize],
    machines: &[Machine],
    byzantine: &BTreeMap<usize, Dealer>,
    violations: &mut Vec<String>,
) {
    let ids: Vec<NodeId> = new_members.iter().map(|i| machines[*i].id).collect();
    if record.nodes != ids {
        violations.push("the CUP's committee is not the new members".into());
    }
    if record.low.group_key != low.group_key || record.high.group_key != high.group_key {
        violations.push("safety: the resharing changed a group key".into());
    }
    if BlsSignature::from_bytes(signature)
        .ok()
        .and_then(|s| {
            high.group_key
                .verify(domain::CUP_CONTENT, &content.encode(), &s)
                .ok()
        })
        .is_none()
    {
        violations.push("the resharing's CUP does not verify with the genesis key".into());
    }
    // Secrecy: each honest new member's share has a term from an honest dealer whose
    // value to it was never revealed.
    for (j, &m) in new_members.iter().enumerate() {
        if byzantine.contains_key(&m) {
            continue;
        }
        for (dealings, answers) in [
            (&record.dealt.low, &record.dealt.low_answers),
            (&record.dealt.high, &record.dealt.high_answers),
        ] {
            let secret = dealings.iter().any(|d| {
                !byzantine.contains_key(&(d.dealer as usize))
                    && !answers
                        .iter()
                        .any(|a| a.dealer == d.dealer && a.receiver == j as u32)
            });
            if !secret {
                violations.push(format!(
                    "secrecy: member {m}'s share has no unrevealed term from an honest dealer"
                ));
            }
        }
    }
}

/// The new committee starts from the CUP and must finalize on and sign its next CUP.
#[allow(clippy::too_many_arguments)]
pub(super) fn carry_on(
    net: &mut Net,
    record: &CupCommittee,
    content: &CupContent,
    machines: &[Machine],
    new_members: &[usize],
    byzantine: &BTreeMap<usize, Dealer>,
    mut shares: BTreeMap<
        usize,
        (
            crypto::threshold::SecretShare,
            crypto::threshold::SecretShare,
        ),
    >,
    registry: &[(RegistryVersion, SubnetInfo)],
    violations: &mut Vec<String>,
) {
    let m = new_members.len();
    let keys = SubnetKeys {
        ed25519: new_members
            .iter()
            .map(|i| machines[*i].ed.public_key())
            .collect(),
        bls: new_members
            .iter()
            .map(|i| machines[*i].bls.public_key())
            .collect(),
        low: record.low.clone(),
        high: record.high.clone(),
    };
    let committee = Committee::from_cup(record);
    let now = net.clock();
    // Byzantine members of the new committee stay silent (at most f of the old ones).
    let mut cores = Vec::new();
    let mut index = Vec::new();
    for (j, &mi) in new_members.iter().enumerate() {
        let Some((low_share, high_share)) = shares.remove(&j) else {
            continue;
        };
        if byzantine.contains_key(&mi) {
            continue;
        }
        let crypto = RealCrypto {
            keys: keys.clone(),
            secrets: NodeSecrets {
                ed25519: Ed25519KeyPair::from_seed(&machines[mi].ed.seed()),
                bls: machines[mi].bls.clone(),
                low_share,
                high_share,
                encryption: Some(machines[mi].enc.clone()),
            },
            hashes: Default::default(),
        };
        cores.push(
            Consensus::new(
                config(j, m, committee.clone(), None),
                crypto,
                Base::from_cup(content),
                registry.to_vec(),
                Vec::new(),
                now,
            )
            .expect("config"),
        );
        index.push(j as NodeIndex);
    }
    if cores.len() < m - max_faulty(m) {
        // More silent new members than the new committee tolerates: nothing to check.
        return;
    }
    // Cores talk by their committee index: route through `machine_of`.
    let k = cores.len();
    net.cores = cores;
    net.index = index;
    net.byzantine.clear();
    net.cups = vec![Vec::new(); k];
    net.queue.clear();
    // The faults were the old committee's (indices into its cores).
    net.faults = Default::default();
    net.persisted = vec![Vec::new(); k];
    net.bases = vec![Base::from_cup(content); k];
    net.max_lag = vec![0; k];
    let next = content.height.get() + 10;
    let all: Vec<usize> = (0..k).collect();
    let done = net.run_until(
        |net| (0..k).all(|i| net.cups[i].iter().any(|c| c.0.height.get() >= next)),
        |net| net.relay_cups(&all),
    );
    if !done {
        violations.push(format!(
            "liveness: the new committee of {m} ({k} running) made no CUP at {next}"
        ));
    }
}

pub(super) fn result(
    seed: u64,
    old: usize,
    new: usize,
    byzantine: &BTreeMap<usize, Dealer>,
    faults: Vec<String>,
    violations: Vec<String>,
    digest: Sha256,
) -> MembershipResult {
    MembershipResult {
        seed,
        old,
        new,
        byzantine: byzantine
            .iter()
            .map(|(i, b)| (*i, format!("{b:?}")))
            .collect(),
        faults,
        limitations: Vec::new(),
        violations,
        digest: hex::encode(digest.finalize()),
    }
}
