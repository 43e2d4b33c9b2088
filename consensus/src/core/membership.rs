//! The subnet reshares its threshold keys to a new committee (issue 18), driven by the
//! chain:
//!
//! - A summary block whose pinned registry version names other members than the running
//!   committee *starts* a resharing ([`Plan`]) for the interval it begins
//!   ([`Resharing::Started`]).
//! - In that interval, every committee member deals both keys to the new members
//!   (derived from its shares, so the same dealing after a crash), signed with its node
//!   key; a receiver whose value does not open complains, signed with its node key; a
//!   dealer answers a complaint with the value in the clear. All three travel as
//!   [`Artifact::Resharing`] and block makers put them into blocks, each kind in its
//!   window of the interval: dealings in its first third, complaints in its first two
//!   thirds, answers until its end. A late complaint could otherwise disqualify an
//!   honest dealer that has no block left to answer in.
//! - The next summary *finishes* it ([`Resharing::Done`]) when its chain holds enough
//!   qualified dealings ([`Plan::outcome`]): it halts this committee like an upgrade,
//!   and its CUP carries the new committee, its share keys and the chosen dealings
//!   ([`cup::CupCommittee`]). Otherwise the resharing starts again from that summary.
//!
//! Every rule depends only on the chain, so every honest node judges each block, and
//! each summary's outcome, the same way.

use super::*;
use crate::resharing::{
    Answer, Complaint, Dealing, ItemKey, Plan, ResharingItem, ResharingView, SignedComplaint,
    SignedDealing,
};
use cup::CupCommittee;
use std::sync::Arc;

/// The most resharing items one block carries.
pub const MAX_RESHARING_ITEMS_PER_BLOCK: usize = 16;

/// A resharing some summary started, with what checking its items needs.
#[derive(Debug)]
pub(super) struct Interval {
    pub(super) plan: Plan,
    /// The new members' node keys, by new index: complaints are signed with them.
    pub(super) node_keys: Vec<[u8; 32]>,
}

/// The items of a resharing a node holds for block makers (made here or received), and
/// what it did in it.
#[derive(Debug, Default)]
pub(super) struct ResharingPool {
    /// The summary that started the resharing these belong to.
    pub(super) summary: Option<CryptoHash>,
    pub(super) items: BTreeMap<ItemKey, ResharingItem>,
    /// The items this node made (sent again after a quiet period).
    pub(super) own: BTreeSet<ItemKey>,
    /// The dealings this node opened its values of, by identity (their dealer's
    /// signature: every item held was checked, so two dealings never share one; no
    /// dealing is encoded or hashed again each round): pooled ones as they arrive, so a
    /// complaint is ready by the time its dealing reaches the chain (one made only then
    /// could miss a short complaint window), and the chain's, which may be another
    /// dealing of a dealer that dealt twice, or one a fork carried instead.
    pub(super) opened: BTreeSet<Vec<u8>>,
}

/// A resharing's chain: its items, oldest first.
struct ChainItems {
    items: Vec<ResharingItem>,
}

impl ChainItems {
    fn keys(&self) -> BTreeSet<ItemKey> {
        self.items.iter().map(|i| i.key()).collect()
    }

    fn dealing(&self, dealer: u32) -> Option<&Dealing> {
        self.items.iter().find_map(|i| match i {
            ResharingItem::Dealing(d) if d.dealing.dealer == dealer => Some(&d.dealing),
            _ => None,
        })
    }

    fn split(&self) -> (Vec<Dealing>, Vec<Complaint>, Vec<Answer>) {
        let (mut d, mut c, mut a) = (Vec::new(), Vec::new(), Vec::new());
        for i in &self.items {
            match i {
                ResharingItem::Dealing(x) => d.push(x.dealing.clone()),
                ResharingItem::Complaint(x) => c.push(x.complaint),
                ResharingItem::Answer(x) => a.push(x.clone()),
            }
        }
        (d, c, a)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Window {
    Dealing,
    Complaint,
    Answer,
}

impl<C: ConsensusCrypto> Consensus<C> {
    /// The resharing a summary at `height` pinning `rv` starts, if the members there
    /// differ from the running committee and everything a resharing needs is known.
    pub(super) fn plan_for(&mut self, height: Height, rv: RegistryVersion) -> Option<Interval> {
        let committee = self.cfg.committee.as_ref()?;
        let info = self.registry.get(&rv)?;
        if info.members.is_empty() {
            return None;
        }
        let ids: Vec<NodeId> = info.members.iter().map(|m| m.id).collect();
        if ids == committee.nodes {
            return None;
        }
        let keys: Option<Vec<_>> = info.members.iter().map(|m| m.encryption_key).collect();
        let node_keys = info.members.iter().map(|m| m.node_key).collect();
        let plan = keys
            .ok_or("a member has no dealing encryption key")
            .and_then(|keys| {
                Plan::new(self.cfg.subnet_id, height, rv, committee.clone(), ids, keys)
                    .map_err(|_| "the new committee is not a valid one")
            });
        match plan {
            Ok(Some(plan)) => Some(Interval { plan, node_keys }),
            Ok(None) => None,
            Err(why) => {
                self.stats.resharings_refused += 1;
                self.stats.last_invalid = Some(why);
                None
            }
        }
    }

    /// Where a summary block stands in a resharing, given its parent's pin: it finishes
    /// the one its interval ran (keeping the new committee's record), or starts one.
    pub(super) fn summary_resharing(
        &mut self,
        b: &Block,
        hash: CryptoHash,
        parent_pin: Pin,
    ) -> Resharing {
        if parent_pin.resharing == Resharing::Started {
            match self.outcome_of(b, parent_pin) {
                Ok(record) => {
                    self.reshared.insert(hash, (b.height, record));
                    return Resharing::Done;
                }
                Err(why) => {
                    self.stats.resharings_failed += 1;
                    self.stats.last_resharing_failure = Some(why);
                }
            }
        }
        match self.plan_for(b.height, b.context.registry_version) {
            Some(iv) => {
                self.plans.insert(hash, Arc::new(iv));
                Resharing::Started
            }
            None => Resharing::None,
        }
    }

    /// The new committee's record from the interval ending below summary `b`.
    fn outcome_of(&self, b: &Block, parent_pin: Pin) -> Result<CupCommittee, String> {
        let iv = self
            .plans
            .get(&parent_pin.summary)
            .ok_or("the resharing's plan is not known")?;
        let chain = self
            .chain_items(b.parent, Height::new(b.height.get() - 1), parent_pin.height)
            .ok_or("the interval's blocks are not held")?;
        let (dealings, mut complaints, answers) = chain.split();
        if self.cfg.broken_rule == Some(BrokenRule::IgnoreComplaints) {
            complaints.clear();
        }
        let out = iv
            .plan
            .outcome(&dealings, &complaints, &answers)
            .map_err(|e| e.to_string())?;
        Ok(iv.plan.record(&out, &dealings, &answers))
    }

    /// The resharing items on the chain from block `hash` at `height` down to (not
    /// including) the summary at `summary`, oldest first; `None` if a block is missing.
    fn chain_items(&self, hash: CryptoHash, height: Height, summary: Height) -> Option<ChainItems> {
        let mut blocks = Vec::new();
        let (mut hash, mut h) = (hash, height);
        while h > summary {
            let b = &self.pool.get(&h)?.blocks.get(&hash)?.proposal.block;
            blocks.push(&b.resharing);
            hash = b.parent;
            h = Height::new(h.get() - 1);
        }
        Some(ChainItems {
            items: blocks.into_iter().rev().flatten().cloned().collect(),
        })
    }

    /// The last height after the summary at which an item of this kind may go into a
    /// block (a third, two thirds, the whole interval).
    fn window_end(&self, w: Window) -> u64 {
        let l = self.cfg.dkg_interval_length;
        match w {
            Window::Dealing => (l / 3).max(1),
            Window::Complaint => (2 * l / 3).max(1),
            Window::Answer => l,
        }
    }

    pub(super) fn dealing_message(&self, iv: &Interval, d: &Dealing) -> Vec<u8> {
        crate::resharing::dealing_message(&self.cfg.version, iv.plan.context(), d)
    }

    fn complaint_message(&self, iv: &Interval, c: &Complaint) -> Vec<u8> {
        crate::resharing::complaint_message(&self.cfg.version, iv.plan.context(), c)
    }

    /// One item checked on its own against the interval (its signature, its public
    /// checks) and against the dealings it refers to.
    fn check_item(
        &self,
        iv: &Interval,
        item: &ResharingItem,
        dealing: impl Fn(u32) -> Option<Dealing>,
    ) -> Result<(), &'static str> {
        match item {
            ResharingItem::Dealing(d) => {
                let dealer = d.dealing.dealer;
                if dealer as usize >= self.cfg.n {
                    return Err("dealer out of range");
                }
                if !self.crypto.verify_node(
                    dealer,
                    domain::RESHARING_DEALING,
                    &self.dealing_message(iv, &d.dealing),
                    &d.signature,
                ) {
                    return Err("bad dealing signature");
                }
                iv.plan
                    .verify_dealing(&d.dealing)
                    .map_err(|_| "a dealing that fails its public checks")
            }
            ResharingItem::Complaint(c) => {
                let Some(key) = iv.node_keys.get(c.complaint.receiver as usize) else {
                    return Err("complaint by an unknown receiver");
                };
                if dealing(c.complaint.dealer).is_none() {
                    return Err("complaint about a dealing not on the chain");
                }
                if !self.crypto.verify_member(
                    key,
                    domain::RESHARING_COMPLAINT,
                    &self.complaint_message(iv, &c.complaint),
                    &c.signature,
                ) {
                    return Err("bad complaint signature");
                }
                Ok(())
            }
            ResharingItem::Answer(a) => {
                let j = &a.justification;
                let d = dealing(j.dealer).ok_or("answer about a dealing not on the chain")?;
                iv.plan
                    .reshare(a.key)
                    .check_justification(d.of(a.key), j)
                    .map(|_| ())
                    .map_err(|_| "an answer that does not check")
            }
        }
    }

    /// A block's resharing items: only in a running resharing interval's ordinary
    /// blocks, each kind in its window, none the chain holds already, a complaint after
    /// its dealing and an answer after its complaint, each checking.
    pub(super) fn check_resharing_items(&self, b: &Block, parent_pin: Pin, st: Status) -> Validity {
        if b.resharing.is_empty() {
            return Validity::Valid;
        }
        if b.is_summary || parent_pin.resharing != Resharing::Started || st != Status::Running {
            return Validity::Invalid("resharing items outside a resharing interval");
        }
        if b.resharing.len() > MAX_RESHARING_ITEMS_PER_BLOCK {
            return Validity::Invalid("too many resharing items");
        }
        let Some(iv) = self.plans.get(&parent_pin.summary) else {
            return Validity::Invalid("resharing items for an unknown resharing");
        };
        let Some(chain) =
            self.chain_items(b.parent, Height::new(b.height.get() - 1), parent_pin.height)
        else {
            return Validity::NotYet("the resharing interval's blocks");
        };
        let offset = b.height.get() - parent_pin.height.get();
        let mut keys = chain.keys();
        let mut dealings: BTreeMap<u32, Dealing> = chain
            .items
            .iter()
            .filter_map(|i| match i {
                ResharingItem::Dealing(d) => Some((d.dealing.dealer, d.dealing.clone())),
                _ => None,
            })
            .collect();
        for item in &b.resharing {
            let key = item.key();
            let window = match key {
                ItemKey::Dealing(_) => Window::Dealing,
                ItemKey::Complaint(..) => Window::Complaint,
                ItemKey::Answer(..) => Window::Answer,
            };
            if offset > self.window_end(window) {
                return Validity::Invalid("a resharing item past its window");
            }
            if let ItemKey::Answer(dealer, receiver, k) = key
                && !keys.contains(&ItemKey::Complaint(dealer, receiver, k))
            {
                return Validity::Invalid("an answer to no complaint");
            }
            if !keys.insert(key) {
                return Validity::Invalid("a resharing item the chain holds already");
            }
            if let Err(why) = self.check_item(iv, item, |i| dealings.get(&i).cloned()) {
                return Validity::Invalid(why);
            }
            if let ResharingItem::Dealing(d) = item {
                dealings.insert(d.dealing.dealer, d.dealing.clone());
            }
        }
        Validity::Valid
    }

    /// The interval the current round is in, if a resharing runs there.
    fn current_interval(&self) -> Option<(Pin, CryptoHash, Arc<Interval>)> {
        let (parent, _, ppin) = self.parent_of_round(self.round())?;
        if ppin.resharing != Resharing::Started || self.chain_status(ppin) != Some(Status::Running)
        {
            return None;
        }
        let iv = self.plans.get(&ppin.summary)?.clone();
        Some((ppin, parent, iv))
    }

    /// The pool, emptied when the resharing it held items of is no longer the one under
    /// way.
    fn pool_for(&mut self, summary: CryptoHash) -> &mut ResharingPool {
        if self.resharing_pool.summary != Some(summary) {
            self.resharing_pool = ResharingPool {
                summary: Some(summary),
                ..Default::default()
            };
        }
        &mut self.resharing_pool
    }

    /// This node's part in the resharing under way: its dealing, its complaints about
    /// the dealings on the chain whose values to it do not open, its answers to the
    /// complaints about its own.
    pub(super) fn resharing_step(&mut self) {
        let Some((ppin, parent, iv)) = self.current_interval() else {
            return;
        };
        let round = self.round();
        if self.resharing_round == Some((ppin.summary, round)) {
            return;
        }
        self.resharing_round = Some((ppin.summary, round));
        let offset = round.get() - ppin.height.get();
        let mut made: Vec<ResharingItem> = Vec::new();
        let me = self.cfg.me;
        self.pool_for(ppin.summary);
        let Some(secrets) = self.crypto.resharing_secrets() else {
            return;
        };
        let held = &self.resharing_pool.items;
        if offset <= self.window_end(Window::Dealing) && !held.contains_key(&ItemKey::Dealing(me)) {
            match iv.plan.deal(secrets.low_share, secrets.high_share) {
                Ok(dealing) => {
                    let signature = self.crypto.sign_node(
                        domain::RESHARING_DEALING,
                        &self.dealing_message(&iv, &dealing),
                    );
                    made.push(ResharingItem::Dealing(SignedDealing { dealing, signature }));
                }
                Err(_) => self.stats.resharings_refused += 1,
            }
        }
        let chain = self
            .chain_items(parent, Height::new(round.get() - 1), ppin.height)
            .unwrap_or(ChainItems { items: Vec::new() });
        // Complaints, as a receiver of the new committee.
        let my_id = self
            .cfg
            .committee
            .as_ref()
            .and_then(|c| c.nodes.get(me as usize).copied());
        let receiver = my_id.and_then(|id| iv.plan.to.iter().position(|n| *n == id));
        if let (Some(j), Some(key)) = (receiver, secrets.encryption)
            && offset <= self.window_end(Window::Complaint)
        {
            let j = j as u32;
            // The chain's dealings and the pooled ones, each opened once.
            let pool = &self.resharing_pool;
            let mut to_open: Vec<&SignedDealing> = Vec::new();
            let mut ids = Vec::new();
            let pooled = pool.items.values();
            for item in chain.items.iter().chain(pooled) {
                if let ResharingItem::Dealing(d) = item
                    && !pool.opened.contains(&d.signature)
                    && !ids.contains(&&d.signature)
                {
                    ids.push(&d.signature);
                    to_open.push(d);
                }
            }
            let mut complaints: Vec<Complaint> = Vec::new();
            for d in to_open {
                for c in iv.plan.bad_values(&d.dealing, j, key) {
                    let known = ItemKey::Complaint(c.dealer, c.receiver, c.key);
                    if !pool.items.contains_key(&known) && !complaints.contains(&c) {
                        complaints.push(c);
                    }
                }
            }
            let ids: Vec<Vec<u8>> = ids.into_iter().cloned().collect();
            self.resharing_pool.opened.extend(ids);
            for complaint in complaints {
                let signature = self.crypto.sign_node(
                    domain::RESHARING_COMPLAINT,
                    &self.complaint_message(&iv, &complaint),
                );
                made.push(ResharingItem::Complaint(SignedComplaint {
                    complaint,
                    signature,
                }));
            }
        }
        // Answers, as a dealer complained about.
        let keys = chain.keys();
        for item in &chain.items {
            let ResharingItem::Complaint(c) = item else {
                continue;
            };
            let c = c.complaint;
            let answer_key = ItemKey::Answer(c.dealer, c.receiver, c.key);
            if c.dealer != me
                || keys.contains(&answer_key)
                || self.resharing_pool.items.contains_key(&answer_key)
            {
                continue;
            }
            let share = match c.key {
                Threshold::Low => secrets.low_share,
                Threshold::High => secrets.high_share,
            };
            if let Ok(justification) = iv.plan.reshare(c.key).justify(share, c.receiver) {
                made.push(ResharingItem::Answer(Answer {
                    key: c.key,
                    justification,
                }));
            }
        }
        for item in made {
            self.resharing_pool.own.insert(item.key());
            self.resharing_pool.items.insert(item.key(), item.clone());
            self.broadcast(Artifact::Resharing {
                height: ppin.height,
                item,
            });
        }
    }

    /// A peer's item of the resharing under way: pooled for block makers once checked.
    pub(super) fn receive_resharing(&mut self, height: Height, item: ResharingItem) {
        let Some((ppin, parent, iv)) = self.current_interval() else {
            return;
        };
        if height != ppin.height || self.pool_for(ppin.summary).items.contains_key(&item.key()) {
            self.stats.redundant_artifacts += 1;
            return;
        }
        let chain = self.chain_items(parent, Height::new(self.round().get() - 1), ppin.height);
        let held = &self.resharing_pool.items;
        let dealing = |dealer: u32| {
            chain
                .as_ref()
                .and_then(|c| c.dealing(dealer).cloned())
                .or_else(|| match held.get(&ItemKey::Dealing(dealer)) {
                    Some(ResharingItem::Dealing(d)) => Some(d.dealing.clone()),
                    _ => None,
                })
        };
        if let Err(why) = self.check_item(&iv, &item, dealing) {
            self.stats.invalid_artifacts += 1;
            self.stats.last_invalid = Some(why);
            return;
        }
        self.resharing_pool.items.insert(item.key(), item);
    }

    /// The items a block at `h` on `parent` carries: the pooled ones its chain lacks, in
    /// their windows, each after what it refers to, at most
    /// [`MAX_RESHARING_ITEMS_PER_BLOCK`].
    pub(super) fn resharing_items_for(
        &self,
        h: Height,
        parent: CryptoHash,
        ppin: Pin,
    ) -> Vec<ResharingItem> {
        let Some(iv) = self.plans.get(&ppin.summary) else {
            return Vec::new();
        };
        if self.resharing_pool.summary != Some(ppin.summary) {
            return Vec::new();
        }
        let Some(chain) = self.chain_items(parent, Height::new(h.get() - 1), ppin.height) else {
            return Vec::new();
        };
        let offset = h.get() - ppin.height.get();
        let mut keys = chain.keys();
        let mut dealings: BTreeMap<u32, Dealing> = BTreeMap::new();
        for i in &chain.items {
            if let ResharingItem::Dealing(d) = i {
                dealings.insert(d.dealing.dealer, d.dealing.clone());
            }
        }
        let mut out = Vec::new();
        // Keys sort dealings first, then complaints, then answers.
        for (key, item) in &self.resharing_pool.items {
            if out.len() >= MAX_RESHARING_ITEMS_PER_BLOCK {
                break;
            }
            if keys.contains(key) {
                continue;
            }
            let fits = match *key {
                ItemKey::Dealing(_) => offset <= self.window_end(Window::Dealing),
                ItemKey::Complaint(dealer, ..) => {
                    offset <= self.window_end(Window::Complaint) && dealings.contains_key(&dealer)
                }
                ItemKey::Answer(dealer, receiver, k) => {
                    keys.contains(&ItemKey::Complaint(dealer, receiver, k))
                        // Checked against the chain's dealing, which may not be the one
                        // it was checked against on arrival (a dealer that dealt twice).
                        && self
                            .check_item(iv, item, |i| dealings.get(&i).cloned())
                            .is_ok()
                }
            };
            if !fits {
                continue;
            }
            keys.insert(*key);
            if let ResharingItem::Dealing(d) = item {
                dealings.insert(d.dealing.dealer, d.dealing.clone());
            }
            out.push(item.clone());
        }
        out
    }

    /// What this node's chain holds of the resharing under way, for receivers outside
    /// the committee (`GET /api/v1/resharing`).
    pub fn resharing_view(&self) -> Option<ResharingView> {
        let (ppin, parent, _) = self.current_interval()?;
        let chain = self.chain_items(parent, Height::new(self.round().get() - 1), ppin.height)?;
        Some(ResharingView {
            version: self.cfg.version.clone(),
            height: ppin.height,
            registry_version: ppin.rv,
            dealings: chain
                .items
                .into_iter()
                .filter_map(|i| match i {
                    ResharingItem::Dealing(d) => Some(d),
                    _ => None,
                })
                .collect(),
        })
    }

    /// The context hash of the resharing under way (what its dealings and complaints
    /// are signed over).
    pub fn resharing_context(&self) -> Option<CryptoHash> {
        self.current_interval().map(|(_, _, iv)| *iv.plan.context())
    }

    /// An item from outside the committee (a joining receiver's complaint through the
    /// API): pooled once checked, and gossiped so that any block maker can include it.
    pub(super) fn external_resharing(&mut self, item: ResharingItem) {
        let Some((ppin, _, _)) = self.current_interval() else {
            return;
        };
        let key = item.key();
        let known = self.resharing_pool.summary == Some(ppin.summary)
            && self.resharing_pool.items.contains_key(&key);
        self.receive_resharing(ppin.height, item.clone());
        if !known && self.resharing_pool.items.get(&key) == Some(&item) {
            self.broadcast(Artifact::Resharing {
                height: ppin.height,
                item,
            });
        }
    }

    /// This node's own items of the resharing under way, sent again (lost messages).
    pub(super) fn resend_resharing(&mut self) {
        let Some((ppin, _, _)) = self.current_interval() else {
            return;
        };
        if self.resharing_pool.summary != Some(ppin.summary) {
            return;
        }
        let pool = &self.resharing_pool;
        let mine: Vec<ResharingItem> = pool
            .own
            .iter()
            .filter_map(|k| pool.items.get(k).cloned())
            .collect();
        for item in mine {
            self.broadcast(Artifact::Resharing {
                height: ppin.height,
                item,
            });
        }
    }

    /// The committee record a CUP at summary `hash` carries: the new committee when that
    /// summary finished a resharing, else the one the base carried on.
    pub(super) fn committee_record(&self, hash: &CryptoHash) -> Option<CupCommittee> {
        match self.reshared.get(hash) {
            Some((_, record)) => Some(record.clone()),
            None => self.base.committee.clone(),
        }
    }

    /// Forgets resharings of summaries below `s` (the CUP there replaced them).
    pub(super) fn purge_resharing(&mut self, s: Height) {
        self.plans.retain(|_, iv| iv.plan.height >= s);
        self.reshared.retain(|_, (h, _)| *h >= s);
    }
}
