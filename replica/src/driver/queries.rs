//! What users ask of the driver: updates, queries answered as of the certified height
//! with a witness to its root, and what became of an update.

use super::*;
use crate::ingress::Operation;

/// Adds an executed governance call's outcome to `answer`, on an NNS subnet's node
/// (`nns`: the subnet's kind, known without reading the state, so that other subnets'
/// request statuses read nothing more).
pub(super) fn with_governance(
    nns: bool,
    state: Option<&ReplicatedState>,
    answer: &mut RequestStatus,
) {
    let Some(state) = state.filter(|_| nns) else {
        return;
    };
    if !matches!(
        answer.status,
        RequestState::Executed | RequestState::Certified
    ) {
        return;
    }
    let Ok(id) = answer.message_id.parse::<CryptoHash>() else {
        return;
    };
    answer.governance = state
        .governance_reply(&id)
        .inspect_err(|e| tracing::warn!(error = %e, "reading a governance reply"))
        .ok()
        .flatten();
}

/// The CUP a replica starts from certifies the state at its height, unless a migration
/// changed that state's hash since (then queries wait for the next certification: a
/// witness leads to the migrated root, which the CUP does not sign).
pub(super) fn cup_certificates(
    cup: &Cup,
    state: &ReplicatedState,
) -> BTreeMap<Height, Certificate> {
    let c = cup.content();
    let mut out = BTreeMap::new();
    if (state.height(), state.state_hash()) != (c.height, c.state_hash) {
        return out;
    }
    let (signature, cup_content) = match cup {
        Cup::Signed(s) => (
            hex::encode(s.signature().to_bytes()),
            Some(hex::encode(s.content_bytes())),
        ),
        Cup::Registry(_) => (String::new(), None),
    };
    out.insert(
        c.height,
        Certificate {
            height: c.height.get(),
            state_hash: c.state_hash,
            signature,
            kind: "cup".into(),
            replica_version: c.replica_version.clone(),
            cup_content,
        },
    );
    out
}

impl Driver {
    /// Whether `m` would take its sender past its quota of the state (a best-effort check
    /// at submission; execution enforces it).
    pub(super) fn over_quota(&self, m: &SignedIngress) -> Option<IngressError> {
        let grows = match &m.ingress.operation {
            Operation::Put { key, value } | Operation::Append { key, value } => {
                (key.len() + value.len()) as u64
            }
            // Governance calls write the registry, which no sender's quota counts.
            Operation::Delete { .. } | Operation::Propose { .. } | Operation::Vote { .. } => {
                return None;
            }
        };
        let quota = crate::state::quota::QUOTAS.stored_bytes_per_sender;
        let stored = self
            .state
            .as_ref()?
            .stored_bytes_of(m.ingress.sender.as_bytes())
            .ok()?;
        (stored.saturating_add(grows) > quota)
            .then_some(IngressError::QuotaExceeded { stored, quota })
    }

    /// What became of update `id`, as this node knows it now.
    fn request_status(&self, id: &CryptoHash) -> RequestStatus {
        let in_pool = self.ingress.contains(id);
        let mut answer = self.requests.status(id, in_pool);
        let Some(state) = self.state.as_ref() else {
            return answer;
        };
        if answer.status == RequestState::Unknown && state.has_executed(id).unwrap_or(false) {
            // Executed before this process started (a restart, a switch of releases) or
            // long enough ago to be forgotten: its replay record says so, not its height.
            // Certified once the height this process started at is.
            answer.status = if self.requests.certified_height() >= self.started_at {
                RequestState::Certified
            } else {
                RequestState::Executed
            };
        }
        with_governance(self.is_nns(), Some(state), &mut answer);
        answer
    }

    pub(super) fn on_request(&mut self, r: Request) {
        match r {
            Request::Update(m, reply) => {
                let result = self.accept_from_user(m);
                let _ = reply.send(result);
            }
            Request::Query(key, reply) => {
                let _ = reply.send(self.query(key));
            }
            Request::Status { id, wait, reply } => {
                let now = self.request_status(&id);
                if wait {
                    self.requests.wait(id, now, reply);
                } else {
                    let _ = reply.send(now);
                }
            }
            Request::RegistryPage(read, reply) => {
                let _ = reply.send(self.registry_page(read));
            }
            Request::Resharing(reply) => {
                let _ = reply.send(self.core.resharing_view());
            }
            Request::Complaint(c) => self.core.on_event(
                crate::clocks(),
                Event::Resharing(consensus::resharing::ResharingItem::Complaint(c)),
            ),
        }
    }

    /// The registry's changes after `since` as of the newest certified height this node
    /// has executed, with the witnesses to that height's root and its certificate.
    fn registry_page(&self, read: CertifiedRegistryRead) -> Result<Vec<u8>, (bool, String)> {
        use crate::registry_page::{
            GovernancePage, MAX_PAGE_DELTA_BYTES, MAX_PAGE_PROPOSAL_BYTES, MAX_PAGE_PROPOSALS,
            MAX_PAGE_VERSIONS, RegistryPage, governance_meta_key, proposal_entry_key,
        };
        let not_yet = |e: &dyn std::fmt::Display| (false, e.to_string());
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| not_yet(&"no state (a catch-up failed)"))?;
        if !self.is_nns() {
            return Err((true, "this subnet does not keep the registry".into()));
        }
        if !state.keeps_registry().map_err(|e| not_yet(&e))? {
            // Before its first block, or while its state is synced after a restart.
            return Err(not_yet(&"no registry in this node's state yet: retry"));
        }
        let executed = state.height();
        let cert = self
            .certificates
            .range(..=executed)
            .next_back()
            .map(|(_, c)| c)
            .filter(|c| !c.signature.is_empty())
            .ok_or_else(|| not_yet(&"no certified height yet: retry"))?;
        let at = Height::new(cert.height);
        let later: Vec<&BlockUndo> = self.undo.range(at.increment()..).map(|(_, u)| u).collect();
        let check_root = |root: &CryptoHash| {
            if crate::state::tree::state_hash(at, root) != cert.state_hash {
                // Should not happen: the undos rebuild the tree at `at` exactly.
                tracing::error!(
                    height = %at,
                    "critical_error_witness_root: a registry page's root is not the certified one"
                );
            }
        };
        match read {
            CertifiedRegistryRead::Changes(since) => {
                let read = state
                    .registry_read(since, MAX_PAGE_VERSIONS, MAX_PAGE_DELTA_BYTES, &later)
                    .map_err(|e| not_yet(&e))?;
                check_root(&read.root);
                Ok(types::codec::encode(&RegistryPage {
                    since,
                    certified_height: cert.height,
                    certificate: cert.clone(),
                    state_schema: state.schema(),
                    latest: read.latest,
                    latest_witness: read.latest_witness.encode(),
                    deltas: read.deltas,
                    head: read
                        .head
                        .map(|(h, w)| (h, serde_bytes::ByteBuf::from(w.encode()))),
                }))
            }
            CertifiedRegistryRead::Proposals(from) => {
                let meta = state
                    .entry_at(&governance_meta_key(), &later)
                    .map_err(|e| not_yet(&e))?;
                check_root(&meta.root);
                let mut proposals = Vec::new();
                let mut bytes = 0;
                let mut id = from.max(1);
                while proposals.len() < MAX_PAGE_PROPOSALS {
                    let read = state
                        .entry_at(&proposal_entry_key(id), &later)
                        .map_err(|e| not_yet(&e))?;
                    // Ids are contiguous: the first absent one is the next to be made.
                    let Some(value) = read.stored else {
                        break;
                    };
                    bytes += value.len();
                    if !proposals.is_empty() && bytes > MAX_PAGE_PROPOSAL_BYTES {
                        break;
                    }
                    proposals.push((
                        serde_bytes::ByteBuf::from(value),
                        serde_bytes::ByteBuf::from(read.witness.encode()),
                    ));
                    id += 1;
                }
                Ok(types::codec::encode(&GovernancePage {
                    from: from.max(1),
                    certified_height: cert.height,
                    certificate: cert.clone(),
                    state_schema: state.schema(),
                    meta: meta.stored.map(serde_bytes::ByteBuf::from),
                    meta_witness: serde_bytes::ByteBuf::from(meta.witness.encode()),
                    proposals,
                }))
            }
        }
    }

    /// The value of `key` as of the newest certified height this node has executed, with
    /// the witness to that height's root and its certificate.
    pub(super) fn query(&self, key: String) -> QueryAnswer {
        let mut answer = QueryAnswer {
            key,
            value: None,
            value_hex: None,
            checksum: None,
            certified_height: 0,
            certificate: None,
            state_schema: None,
            witness: None,
        };
        let Some(state) = &self.state else {
            return answer;
        };
        let executed = state.height();
        let cert = self
            .certificates
            .range(..=executed)
            .next_back()
            .map(|(_, c)| c);
        let at = cert.map(|c| Height::new(c.height)).unwrap_or(executed);
        // The blocks after `at` know what they changed: the value, the key's bucket and
        // the top-tree nodes as they were at `at`.
        let later: Vec<&BlockUndo> = self.undo.range(at.increment()..).map(|(_, u)| u).collect();
        let read = match state.read_at(&answer.key, &later) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(key = %answer.key, error = %e, "reading a value");
                return answer;
            }
        };
        if let Some(c) = cert
            && types::Height::new(c.height) == at
            && crate::state::tree::state_hash(at, &read.root) != c.state_hash
        {
            // Should not happen: the undos rebuild the tree at `at` exactly.
            tracing::error!(
                key = %answer.key, height = %at,
                "critical_error_witness_root: the witness's root is not the certified one"
            );
        }
        let stored = read
            .stored
            .map(|s| crate::state::from_stored(state.schema(), &s))
            .transpose();
        let (value, checksum) = match stored {
            Ok(Some((v, c))) => (Some(v), c.map(hex::encode)),
            Ok(None) => (None, None),
            Err(e) => {
                tracing::error!(key = %answer.key, error = %e, "reading a value");
                return answer;
            }
        };
        (answer.value, answer.value_hex) = match value {
            None => (None, None),
            Some(v) => match String::from_utf8(v) {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(hex::encode(e.into_bytes()))),
            },
        };
        answer.checksum = checksum;
        answer.certified_height = at.get();
        answer.certificate = cert.cloned();
        answer.state_schema = Some(state.schema());
        answer.witness = Some(hex::encode(read.witness.encode()));
        answer
    }

    /// Drops the undos at or below the newest certified height this node has executed:
    /// queries are answered as of that height or a later one.
    pub(super) fn prune_undo(&mut self) {
        let Some(executed) = self.state.as_ref().map(ReplicatedState::height) else {
            return;
        };
        if let Some((&h, _)) = self.certificates.range(..=executed).next_back() {
            self.undo = self.undo.split_off(&h.increment());
        }
    }
}
