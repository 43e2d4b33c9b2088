//! Membership changes (issue 18): one resharing per seed, through the production core
//! with the real BLS, ed25519 and resharing code, on a seeded network (latency, jitter,
//! reordering, loss, duplication). A seed draws a committee of 4 to `max_nodes`, a change
//! (nodes join, leave, or both: a replacement) and up to `f` Byzantine members of the old
//! committee, each dealing bad values to some receivers, withholding its dealing,
//! complaining about honest dealers, or never answering; every Byzantine member's blocks
//! are dropped. Honest joiners read a member's view of the resharing and complain through
//! it, as their orchestrators do. In half the seeds an honest old member crashes for a
//! while (restarting from its newest CUP and what it persisted, as a replica does), and
//! in half the old committee is partitioned in two for a while, at any point of the
//! resharing.
//!
//! Checkers: the resharing ends (within three intervals) with every honest old member
//! halted at the same CUP, which names the new members and keeps both group keys; every
//! honest new member computes its shares from that CUP alone; for every honest new
//! member and key, at least one chosen dealer is honest and never revealed its value to
//! it (so the Byzantine members, at most `f` old ones plus the values revealed, learn
//! nothing of its share); and the new committee, started from the CUP, finalizes on and
//! signs its next CUP under the genesis key.

use consensus::{
    Action, Base, BrokenRule, Config, Consensus, ConsensusCrypto, Event, Member, Now, RealCrypto,
    SubnetInfo,
    artifact::{Artifact, Envelope, NodeIndex},
    crypto::{NodeSecrets, SubnetKeys},
    resharing::{
        Committee, Plan, ResharingItem, SignedComplaint, complaint_message, dealing_message,
        shares_from_cup,
    },
};
use crypto::{
    bls::{BlsSecretKey, BlsSignature},
    ed25519::Ed25519KeyPair,
    reshare::EncryptionSecretKey,
    threshold::{deal, high_threshold, low_threshold, max_faulty},
};
use cup::{CupCommittee, CupContent};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use types::{CryptoHash, Height, NodeId, RegistryVersion, ReplicaVersion, SubnetId, domain};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const WALL: u64 = 1_780_000_000 * SEC;
/// Blocks behind the most advanced core (a third of the interval of 9) from which a
/// core may have missed the complaint window.
const LAGGING: u64 = 3;
/// The most virtual time one phase may take.
const PATIENCE_NS: u64 = 120 * SEC;

/// How a Byzantine member of the old committee behaves in the resharing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dealer {
    /// Deals some receivers values that do not decrypt, and does not answer.
    BadValues,
    /// Deals some receivers values that do not decrypt, and answers in the clear.
    BadValuesAnswered,
    /// Never sends its dealing.
    Withhold,
    /// Complains (as a receiver that stays) about every honest dealer.
    BadComplaints,
}

const DEALERS: [Dealer; 4] = [
    Dealer::BadValues,
    Dealer::BadValuesAnswered,
    Dealer::Withhold,
    Dealer::BadComplaints,
];

#[derive(Clone, Debug)]
pub struct MembershipConfig {
    pub max_nodes: usize,
    /// Draw Byzantine members (up to `f` of the old committee).
    pub byzantine: bool,
    pub broken_rule: Option<BrokenRule>,
    /// Draw a crash of an honest old member and a partition of the old committee (each
    /// in half the seeds).
    pub faults: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipResult {
    pub seed: u64,
    pub old: usize,
    pub new: usize,
    pub byzantine: Vec<(usize, String)>,
    /// The crash and partition drawn, if any.
    pub faults: Vec<String>,
    /// Outcomes the design accepts and documents (an honest member cut off through the
    /// complaint window left without shares), not violations.
    pub limitations: Vec<String>,
    pub violations: Vec<String>,
    pub digest: String,
}

mod checks;
mod net;

use checks::{carry_on, check_record, result};
use net::{Machine, Net};

fn version() -> ReplicaVersion {
    ReplicaVersion::new("release-A").expect("valid")
}

fn config(me: usize, n: usize, committee: Committee, broken: Option<BrokenRule>) -> Config {
    Config {
        subnet_id: SubnetId([7; 32]),
        me: me as NodeIndex,
        n,
        version: version(),
        dkg_interval_length: 9,
        unit_delay_ns: 200 * MS,
        initial_notary_delay_ns: 100 * MS,
        min_round_ns: 100 * MS,
        busy_payload_bytes: 1024,
        resend_interval_ns: SEC,
        max_payload_bytes: 1024,
        max_block_time_skew_ns: SEC,
        broken_rule: broken,
        committee: Some(committee),
    }
}

/// One seed: see the module docs.
pub fn run_membership_seed(seed: u64, cfg: &MembershipConfig) -> MembershipResult {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let n = rng.random_range(4..=cfg.max_nodes.max(4));
    // The change: joins, leaves (keeping at least three members), or a replacement.
    let f = max_faulty(n);
    let (leave, join) = match rng.random_range(0..3) {
        0 => (0, rng.random_range(1..=3)),
        1 => (rng.random_range(1..=(n - 4).max(1)).min(n - 1), 0),
        _ => {
            let k = rng.random_range(1..=2);
            (k, k)
        }
    };
    let leave = if n - leave < 1 { 0 } else { leave };
    let machines: Vec<Machine> = (0..n + join)
        .map(|i| Machine {
            id: NodeId([i as u8 + 1; 32]),
            ed: Ed25519KeyPair::generate(&mut rng),
            bls: BlsSecretKey::generate(&mut rng),
            enc: EncryptionSecretKey::generate(&mut rng),
        })
        .collect();
    let low = deal(n, low_threshold(n), &mut rng).expect("deal");
    let high = deal(n, high_threshold(n), &mut rng).expect("deal");
    let mut leaving: Vec<usize> = (0..n).collect();
    leaving.shuffle(&mut rng);
    leaving.truncate(leave);
    let new_members: Vec<usize> = (0..n + join).filter(|i| !leaving.contains(i)).collect();
    let mut byzantine = BTreeMap::new();
    if cfg.byzantine {
        let mut old: Vec<usize> = (0..n).collect();
        old.shuffle(&mut rng);
        for &i in old.iter().take(rng.random_range(0..=f)) {
            byzantine.insert(i, DEALERS[rng.random_range(0..DEALERS.len())]);
        }
    }
    // At most f of the new committee Byzantine too (the model's assumption).
    let f_new = max_faulty(new_members.len());
    let mut continuing = 0;
    byzantine.retain(|i, _| {
        if !new_members.contains(i) {
            return true;
        }
        continuing += 1;
        continuing <= f_new
    });
    let committee = Committee {
        nodes: (0..n).map(|i| machines[i].id).collect(),
        low: low.public.clone(),
        high: high.public.clone(),
    };
    let keys = SubnetKeys {
        ed25519: (0..n).map(|i| machines[i].ed.public_key()).collect(),
        bls: (0..n).map(|i| machines[i].bls.public_key()).collect(),
        low: low.public.clone(),
        high: high.public.clone(),
    };
    let genesis = Base {
        height: Height::ZERO,
        block_hash: CryptoHash([1; 32]),
        time_ns: WALL - SEC,
        registry_version: RegistryVersion::new(1),
        random_beacon: vec![2; 32],
        state_hash: CryptoHash([3; 32]),
        next_version: None,
        committee: None,
    };
    let member = |i: usize| Member {
        id: machines[i].id,
        node_key: *machines[i].ed.public_key().as_bytes(),
        encryption_key: Some(machines[i].enc.public_key()),
    };
    let info = |members: Vec<Member>| SubnetInfo {
        replica_version: version(),
        halt_at_cup_height: false,
        is_halted: false,
        members,
    };
    let registry = vec![
        (RegistryVersion::new(1), info((0..n).map(member).collect())),
        (
            RegistryVersion::new(2),
            info(new_members.iter().map(|i| member(*i)).collect()),
        ),
    ];
    let start = Now {
        mono_ns: SEC,
        wall_ns: WALL,
    };
    let cores: Vec<Consensus<RealCrypto>> = (0..n)
        .map(|i| {
            let crypto = RealCrypto {
                keys: keys.clone(),
                secrets: NodeSecrets {
                    ed25519: Ed25519KeyPair::from_seed(&machines[i].ed.seed()),
                    bls: machines[i].bls.clone(),
                    low_share: low.shares[i].clone(),
                    high_share: high.shares[i].clone(),
                    encryption: Some(machines[i].enc.clone()),
                },
                hashes: Default::default(),
            };
            Consensus::new(
                config(i, n, committee.clone(), cfg.broken_rule),
                crypto,
                genesis.clone(),
                registry[..1].to_vec(),
                Vec::new(),
                start,
            )
            .expect("config")
        })
        .collect();
    let draw = Draw {
        n,
        machines,
        committee,
        keys,
        new_members,
        byzantine,
    };
    let mut net = Net {
        rng: ChaCha20Rng::seed_from_u64(seed ^ 0x5eed),
        now: 0,
        seq: 0,
        cores,
        index: (0..n as NodeIndex).collect(),
        queue: BTreeMap::new(),
        byzantine: draw.byzantine.clone(),
        cups: vec![Vec::new(); n],
        digest: Sha256::new(),
        registry: registry.clone(),
        persisted: vec![Vec::new(); n],
        bases: vec![genesis.clone(); n],
        faults: Default::default(),
        complained_on_chain: BTreeSet::new(),
        max_lag: vec![0; n],
    };
    let mut violations = Vec::new();
    // Registry version 2 reaches every node at its own moment in the first second.
    let mut arrivals: Vec<(u64, usize)> = (0..n).map(|i| (rng.random_range(0..SEC), i)).collect();
    arrivals.sort();
    let honest_old: Vec<usize> = (0..n).filter(|i| !draw.byzantine.contains_key(i)).collect();
    if cfg.faults {
        net.faults = net::Faults::draw(seed, &honest_old, n);
    }
    let faults = net.faults.describe();
    let mut complained: BTreeSet<Sent> = BTreeSet::new();
    // Done: every honest old member halted at, or (lagging) adopted, the CUP that names
    // the new committee.
    let reshared = |net: &Net, i: usize| {
        net.cores[i].is_halted() || net.cups[i].iter().any(|c| c.0.committee.is_some())
    };
    let done = net.run_until(
        |net| honest_old.iter().all(|i| reshared(net, *i)),
        |net| {
            // Each orchestrator hands its replica a peer's newer CUP (a halted subnet's
            // last CUP reaches a node that missed its broadcast only this way).
            net.relay_cups(&honest_old);
            while let Some(&(t, i)) = arrivals.first() {
                if t > net.now {
                    break;
                }
                arrivals.remove(0);
                let now = net.clock();
                net.cores[i].on_event(
                    now,
                    Event::Registry {
                        version: RegistryVersion::new(2),
                        info: registry[1].1.clone(),
                    },
                );
            }
            complain(net, &draw, &honest_old, &mut complained);
        },
    );
    if !done {
        violations.push(format!(
            "liveness: honest old members not all halted within {PATIENCE_NS} ns: {:?}",
            honest_old
                .iter()
                .map(|i| (
                    i,
                    net.cores[*i].finalized_height().get(),
                    reshared(&net, *i)
                ))
                .collect::<Vec<_>>()
        ));
        // Why each stuck node is stuck, for the replay.
        for &i in &honest_old {
            if !reshared(&net, i) {
                let c = &net.cores[i];
                violations.push(format!(
                    "node {i}: {}; last invalid {:?}, last not yet {:?}, resharing failures {} ({:?})",
                    c.debug_round(),
                    c.stats().last_invalid,
                    c.stats().last_not_yet,
                    c.stats().resharings_failed,
                    c.stats().last_resharing_failure,
                ));
            }
        }
    }
    // Agreement: every honest old member's last CUP is the same, and names the new members.
    let last: Vec<Option<&(CupContent, Vec<u8>)>> =
        honest_old.iter().map(|i| net.cups[*i].last()).collect();
    let ended = match last.first().copied().flatten() {
        None => Err("no CUP".to_string()),
        Some((content, signature)) => match &content.committee {
            None => Err(format!("the CUP at {} names no committee", content.height)),
            Some(record) => Ok((content.clone(), signature.clone(), record.clone())),
        },
    };
    let (content, signature, record) = match ended {
        Ok(x) => x,
        Err(why) => {
            violations.push(why);
            let n_new = draw.new_members.len();
            return result(
                seed,
                n,
                n_new,
                &draw.byzantine,
                faults,
                violations,
                net.digest,
            );
        }
    };
    if last.iter().any(|c| c.map(|c| &c.0) != Some(&content)) {
        violations.push("safety: honest old members ended on different CUPs".into());
    }
    check_record(
        &record,
        &content,
        &signature,
        &low.public,
        &high.public,
        &draw.new_members,
        &draw.machines,
        &draw.byzantine,
        &mut violations,
    );
    // Each honest new member's shares, from the CUP alone. One cut off from the quorum
    // (crashed, on a partition's minority side, or left a third of an interval behind
    // the others, as a lost block can leave it) with no complaint of its own on the
    // chain may have missed the complaint window while a Byzantine dealer's bad value
    // to it was chosen: the documented price of complaints (THREATS.md, "a receiver down
    // through a whole complaint window"); it then counts against f of the new committee.
    // Any other honest member without shares is a violation (a complaint on the chain
    // that the outcome ignored among them: the planted rule).
    let mut shares = BTreeMap::new();
    let mut limitations = Vec::new();
    let quorum = n - max_faulty(n);
    for (j, &m) in draw.new_members.iter().enumerate() {
        match shares_from_cup(&record, j as u32, &draw.machines[m].enc) {
            Ok(s) => {
                shares.insert(j, s);
            }
            Err(e)
                if m < n
                    && !draw.byzantine.contains_key(&m)
                    && (net.faults.cut_off(m, quorum) || net.max_lag[m] >= LAGGING)
                    && !net.complained_on_chain.contains(&(j as u32)) =>
            {
                limitations.push(format!(
                    "member {m} (new index {j}), cut off or behind (by up to {} blocks) through the complaint window, has no shares: {e}",
                    net.max_lag[m]
                ));
            }
            Err(e) if !draw.byzantine.contains_key(&m) => violations.push(format!(
                "honest member {m} (new index {j}) has no shares: {e}"
            )),
            Err(_) => {}
        }
    }
    if violations.is_empty() {
        carry_on(
            &mut net,
            &record,
            &content,
            &draw.machines,
            &draw.new_members,
            &draw.byzantine,
            shares,
            &registry,
            &mut violations,
        );
    }
    MembershipResult {
        limitations,
        ..result(
            seed,
            n,
            draw.new_members.len(),
            &draw.byzantine,
            faults,
            violations,
            net.digest,
        )
    }
}

/// What a seed drew: the machines, the old committee and its keys, the new members, the
/// Byzantine ones.
struct Draw {
    n: usize,
    machines: Vec<Machine>,
    committee: Committee,
    keys: SubnetKeys,
    new_members: Vec<usize>,
    byzantine: BTreeMap<usize, Dealer>,
}

/// A complaint sent: by which member, in the resharing started at which height, about
/// which dealer and key, through which member.
type Sent = (usize, u64, u32, consensus::Threshold, usize);

/// One tick of the receivers outside the consensus rules: honest joiners read an honest
/// member's view and complain through it (as their orchestrators do); a Byzantine
/// member that stays complains about every honest dealer through itself.
fn complain(net: &mut Net, d: &Draw, honest_old: &[usize], complained: &mut BTreeSet<Sent>) {
    let via = honest_old[net.rng.random_range(0..honest_old.len())];
    if net.down(via) {
        return;
    }
    let Some(view) = net.cores[via].resharing_view() else {
        return;
    };
    let Some(plan) = Plan::new(
        SubnetId([7; 32]),
        view.height,
        view.registry_version,
        d.committee.clone(),
        d.new_members.iter().map(|i| d.machines[*i].id).collect(),
        d.new_members
            .iter()
            .map(|i| d.machines[*i].enc.public_key())
            .collect(),
    )
    .ok()
    .flatten() else {
        return;
    };
    let mut sends: Vec<(usize, SignedComplaint)> = Vec::new();
    for (j, &m) in d.new_members.iter().enumerate() {
        let complaints = if m >= d.n {
            plan.receiver_complaints(&view, &d.keys.ed25519, j as u32, &d.machines[m].enc)
        } else if d.byzantine.get(&m) == Some(&Dealer::BadComplaints) {
            view.dealings
                .iter()
                .filter(|s| !d.byzantine.contains_key(&(s.dealing.dealer as usize)))
                .flat_map(|d| {
                    [consensus::Threshold::Low, consensus::Threshold::High].map(|key| {
                        consensus::resharing::Complaint {
                            dealer: d.dealing.dealer,
                            receiver: j as u32,
                            key,
                        }
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        for c in complaints {
            // A joiner sends each complaint of each resharing through every member
            // once, as its orchestrator does (one member may crash with it unsent; a
            // resharing that failed starts again with new dealings).
            let through = if m < d.n { m } else { via };
            if !complained.insert((m, view.height.get(), c.dealer, c.key, through)) {
                continue;
            }
            let signature = d.machines[m]
                .ed
                .sign(
                    domain::RESHARING_COMPLAINT,
                    &complaint_message(&view.version, plan.context(), &c),
                )
                .0
                .to_vec();
            sends.push((
                through,
                SignedComplaint {
                    complaint: c,
                    signature,
                },
            ));
        }
    }
    for (through, c) in sends {
        if net.down(through) {
            continue;
        }
        let now = net.clock();
        net.cores[through].on_event(now, Event::Resharing(ResharingItem::Complaint(c)));
    }
}
