//! A node governance added to a subnet, before the CUP that names it: it reads the
//! resharing under way from a committee member's API (`GET /api/v1/resharing`), opens
//! the values dealt to it, and complains about each one that does not open
//! (`POST /api/v1/resharing/complaint`), so that a dealer that does not then answer in
//! the clear is not chosen and no Byzantine dealer can hand it a share it cannot use.
//!
//! It trusts the member for nothing: it rebuilds the resharing's plan from its own
//! registry copy and the best CUP (a member that lies about the resharing only makes
//! its dealings fail their checks here), takes only dealings signed by their dealer for
//! that plan and passing the public checks, and signs its complaints over that plan.

use consensus::resharing::{
    Committee, Complaint, MAX_RESHARING_VIEW_BYTES, Plan, ResharingView, SignedComplaint,
    complaint_message,
};
use crypto::{ed25519::Ed25519KeyPair, reshare::EncryptionSecretKey};
use cup::Cup;
use registry::{
    local::{SubnetAt, member_records, subnet_at},
    store::RegistryStore,
};
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};
use types::{CryptoHash, NodeId, codec, domain};

/// How often a joining node reads the resharing.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long one read or complaint may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What a joining node has done in the resharings it was dealt in.
#[derive(Debug, Default)]
pub struct Joiner {
    last_poll: Option<Instant>,
    rotation: usize,
    /// Complaints sent, by resharing context and member: each to every member once (a
    /// Byzantine member could drop it).
    sent: BTreeSet<(CryptoHash, u32, consensus::Threshold, usize)>,
}

/// One round's inputs, read from the registry copy under its lock.
#[derive(Debug)]
pub struct Round {
    /// The committee members' API addresses and node keys, in committee order.
    apis: Vec<String>,
    dealer_keys: Vec<crypto::ed25519::Ed25519PublicKey>,
    committee: Committee,
    subnet: types::SubnetId,
}

impl Round {
    /// The committee of the best CUP (`at_cup`, with the CUP's own committee if it names
    /// one), read from `store`. `None` if a record is missing.
    pub fn read<S: RegistryStore>(store: &S, at_cup: SubnetAt, best: &Cup) -> Option<Self> {
        let at = at_cup
            .with_cup_committee(store, best.content().committee.as_ref())
            .ok()?;
        Some(Self {
            apis: at
                .members
                .iter()
                .map(|m| format!("http://{}", m.http_address))
                .collect(),
            dealer_keys: at.members.iter().map(|m| m.ed25519_public_key).collect(),
            committee: Committee {
                nodes: at.record.committee().to_vec(),
                low: at.record.low_threshold_key.clone(),
                high: at.record.high_threshold_key.clone(),
            },
            subnet: best.content().subnet_id,
        })
    }
}

impl Joiner {
    /// Whether a round is due (twice a second at most).
    pub fn due(&self) -> bool {
        self.last_poll.is_none_or(|t| t.elapsed() >= POLL_INTERVAL)
    }

    /// Reads the resharing from the next committee member in turn and sends it this
    /// node's complaints. Errors are the member's or the network's: the next round asks
    /// another member.
    pub async fn round<S: RegistryStore>(
        &mut self,
        http: &reqwest::Client,
        store: &std::sync::Mutex<S>,
        round: Round,
        me: NodeId,
        node_key: &Ed25519KeyPair,
        encryption: &EncryptionSecretKey,
    ) -> Result<usize, String> {
        self.last_poll = Some(Instant::now());
        if round.apis.is_empty() {
            return Ok(0);
        }
        self.rotation = self.rotation.wrapping_add(1);
        let asked = self.rotation % round.apis.len();
        let api = &round.apis[asked];
        let Some(view) = read_view(http, api).await? else {
            return Ok(0);
        };
        // The plan, from this node's own registry copy.
        let plan = {
            let store = store.lock().unwrap_or_else(|p| p.into_inner());
            let at = subnet_at(&*store, &round.subnet, view.registry_version)
                .map_err(|e| e.to_string())?;
            let members = member_records(&*store, &at.record, view.registry_version)
                .map_err(|e| e.to_string())?;
            let keys: Option<Vec<_>> = members.iter().map(|m| m.dealing_encryption_key).collect();
            let keys = keys.ok_or("a member has no dealing encryption key")?;
            Plan::new(
                round.subnet,
                view.height,
                view.registry_version,
                round.committee.clone(),
                members.iter().map(|m| m.node_id).collect(),
                keys,
            )
            .map_err(|e| e.to_string())?
            .ok_or("the resharing changes nothing")?
        };
        let Some(j) = plan.to.iter().position(|n| *n == me) else {
            return Ok(0);
        };
        let complaints: Vec<Complaint> = plan
            .receiver_complaints(&view, &round.dealer_keys, j as u32, encryption)
            .into_iter()
            .filter(|c| {
                !self
                    .sent
                    .contains(&(*plan.context(), c.dealer, c.key, asked))
            })
            .collect();
        let mut sent = 0;
        for complaint in complaints {
            let m = complaint_message(&view.version, plan.context(), &complaint);
            let signed = SignedComplaint {
                complaint,
                signature: node_key.sign(domain::RESHARING_COMPLAINT, &m).0.to_vec(),
            };
            post_complaint(http, api, &signed).await?;
            tracing::warn!(dealer = complaint.dealer, key = ?complaint.key, "a resharing value dealt to this node does not open: complained");
            self.sent
                .insert((*plan.context(), complaint.dealer, complaint.key, asked));
            sent += 1;
        }
        Ok(sent)
    }
}

async fn read_view(http: &reqwest::Client, api: &str) -> Result<Option<ResharingView>, String> {
    let url = format!("{api}/api/v1/resharing");
    let resp = tokio::time::timeout(TIMEOUT, http.get(&url).timeout(TIMEOUT).send())
        .await
        .map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if resp.status().as_u16() == 404 {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", resp.status()));
    }
    let limits = netio::Limits::small(MAX_RESHARING_VIEW_BYTES, TIMEOUT);
    let body = netio::read_body(resp, &limits)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    codec::decode(&body, MAX_RESHARING_VIEW_BYTES)
        .map(Some)
        .map_err(|e| format!("{url}: {e}"))
}

async fn post_complaint(
    http: &reqwest::Client,
    api: &str,
    c: &SignedComplaint,
) -> Result<(), String> {
    let url = format!("{api}/api/v1/resharing/complaint");
    let resp = tokio::time::timeout(
        TIMEOUT,
        http.post(&url)
            .timeout(TIMEOUT)
            .body(codec::encode(c))
            .send(),
    )
    .await
    .map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))?
    .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", resp.status()));
    }
    Ok(())
}
