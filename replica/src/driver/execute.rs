//! Executing finalized blocks and what follows from them on disk: checkpoints, CUP
//! files, the carry-over to the next release, catching up to a peer's CUP, and pausing
//! while storage is unavailable (a full disk) instead of crashing.

use super::*;

/// A delivered block on its way to the state, and how far it got.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) delivery: Delivery,
    /// Executed, with this state hash; its checkpoint and report to the core remain.
    pub(super) executed: Option<CryptoHash>,
}

/// A write failed because storage is unavailable (no space, an I/O error), not because
/// the data is wrong: worth waiting for, not worth crashing over.
pub(super) fn storage_unavailable(e: &ReplicaError) -> bool {
    let rocks = |r: &rocksdb::Error| {
        r.kind() == rocksdb::ErrorKind::IOError || r.to_string().contains("No space left")
    };
    match e {
        ReplicaError::Pool(r) | ReplicaError::State(crate::state::StateError::Storage(r)) => {
            rocks(r)
        }
        ReplicaError::Io(m) => m.contains("No space left") || m.contains("os error 28"),
        ReplicaError::StorageUnavailable(_) => true,
        _ => false,
    }
}

impl Driver {
    /// Executes the queued deliveries in order, each once. A write that fails because
    /// storage is unavailable stops here with the block still queued (the state's write
    /// is one batch: it happened or it did not), pausing the node until a retry succeeds.
    pub(super) fn execute_queued(&mut self) -> Result<(), ReplicaError> {
        while self.storage_error.is_none()
            && !self.pending_catch_up.is_pending()
            && let Some(mut q) = self.queued.pop_front()
        {
            match self.execute_one(&mut q) {
                Ok(()) => {}
                Err(e) if storage_unavailable(&e) => {
                    self.queued.push_front(q);
                    self.stall(&e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) fn execute_one(&mut self, q: &mut Queued) -> Result<(), ReplicaError> {
        let d = &q.delivery;
        let state_hash = match q.executed {
            Some(hash) => hash,
            None => {
                let payload =
                    decode_payload(&d.block.payload, MAX_PAYLOAD_BYTES).unwrap_or_default();
                let network = self.network;
                let started = std::time::Instant::now();
                // The pool's memory of checked signatures, lent to execution.
                let mut verified = std::mem::take(&mut self.ingress.verified);
                let install = self.registry_to_install(d.height);
                let r = install.and_then(|install| {
                    let (height, time_ns) = (d.height, d.block.context.time_ns);
                    let s = self.state_mut()?;
                    Ok(match &install {
                        Some(genesis) => s.execute_installing_registry(
                            height,
                            time_ns,
                            &network,
                            &payload,
                            &mut verified,
                            genesis,
                        )?,
                        None => {
                            s.execute_with(height, time_ns, &network, &payload, &mut verified)?
                        }
                    })
                });
                self.ingress.verified = verified;
                let r = r?;
                self.metrics
                    .block_execution_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.blocks_executed.inc();
                self.metrics
                    .messages_executed
                    .inc_by(r.executed.len() as u64);
                self.requests.executed(d.height, &r.executed);
                if !payload.is_empty() {
                    let b = PayloadBlock {
                        height: d.height.get(),
                        messages: payload.len(),
                        executed_at_ms: now_ns() / 1_000_000,
                    };
                    self.first_payload.get_or_insert(b);
                    self.last_payload = Some(b);
                }
                self.undo.insert(d.height, r.undo);
                // A certificate that came before its block is usable now.
                self.prune_undo();
                self.in_blocks = self.in_blocks.split_off(&d.height.increment());
                // Every update the block carries: executed, or a duplicate or invalid one
                // that must not be proposed again either.
                let carried: Vec<CryptoHash> = payload.iter().map(SignedIngress::id).collect();
                self.ingress.purge(&carried, now_ns());
                self.metrics.messages_skipped.inc_by(r.skipped as u64);
                self.payload_dirty = true;
                q.executed = Some(r.state_hash);
                r.state_hash
            }
        };
        if d.block.is_summary {
            self.checkpoint(d.height)?;
        }
        self.core.on_event(
            crate::clocks(),
            Event::StateComputed {
                height: d.height,
                state_hash,
            },
        );
        Ok(())
    }

    /// What the block at `height` installs before its payload: on an NNS subnet's first
    /// block, the genesis registry (version 1 of the registry this node replicated,
    /// which every node of the network verified alike) with governance's voting period.
    fn registry_to_install(
        &self,
        height: Height,
    ) -> Result<Option<crate::state::nns::RegistryGenesis>, ReplicaError> {
        let registry::records::SubnetKind::Nns {
            voting_period_seconds,
        } = self.subnet.record.subnet_kind()
        else {
            return Ok(None);
        };
        if height != Height::new(1) {
            return Ok(None);
        }
        let genesis = self
            .registry
            .changes_since(RegistryVersion::ZERO, 1)
            .map_err(|e| ReplicaError::Registry(format!("reading the genesis registry: {e}")))?;
        let Some(delta) = genesis.into_iter().next() else {
            return Err(ReplicaError::Registry(
                "the local registry has no version 1 to install on this NNS subnet".into(),
            ));
        };
        let mutations = delta
            .changes
            .into_iter()
            .filter_map(|c| {
                let value = c.value?;
                Some(registry::store::Mutation::Insert { key: c.key, value })
            })
            .collect();
        Ok(Some(crate::state::nns::RegistryGenesis {
            mutations,
            voting_period_ns: voting_period_seconds.saturating_mul(1_000_000_000),
        }))
    }

    /// Storage is unavailable: say so once, and pause (no messages in, nothing out, no
    /// execution) until [`Self::retry_storage`] succeeds.
    pub(super) fn stall(&mut self, e: &ReplicaError) {
        if self.storage_error.is_none() {
            tracing::error!(
                error = %e,
                executed = ?self.state.as_ref().map(|s| s.height()),
                "critical_error: storage is unavailable; execution and signing stop until a write succeeds again (nothing acknowledged is lost)"
            );
            self.metrics.storage_stalls.inc();
        }
        self.storage_error = Some(e.to_string());
        self.last_storage_retry = Some(std::time::Instant::now());
    }

    /// Tries storage again (at most every [`STORAGE_RETRY`]): reopens the state and the
    /// share store (RocksDB refuses writes after a failed one until reopened), persists
    /// then sends the share that could not be persisted, and executes what is queued.
    pub(super) fn retry_storage(&mut self) {
        if self
            .last_storage_retry
            .is_some_and(|t| t.elapsed() < STORAGE_RETRY)
        {
            return;
        }
        self.last_storage_retry = Some(std::time::Instant::now());
        let attempt = (|| -> Result<(), ReplicaError> {
            // One open handle at a time: each goes before it is opened again.
            self.state = None;
            // A pending catch-up replaces the state (which a failed one may have left
            // half-restored): the catch-up opens it.
            if !self.pending_catch_up.is_pending() {
                self.state = Some(ReplicatedState::open(&self.dir.state())?);
            }
            self.pool = None;
            let mut pool = PoolStore::open(&self.dir.pool())?;
            if let Some(e) = &self.unpersisted {
                pool.append(e)?;
            }
            self.pool = Some(pool);
            Ok(())
        })();
        match attempt {
            Ok(()) => {
                tracing::info!("storage is available again: resuming");
                self.storage_error = None;
                if let Some(e) = self.unpersisted.take() {
                    self.transport.broadcast(crate::wire::encode(&e));
                }
                if self.pending_catch_up.is_pending() {
                    return;
                }
                match self.execute_queued() {
                    Ok(()) => {}
                    Err(e) => tracing::error!(error = %e, "executing after the storage stall"),
                }
            }
            Err(e) => self.storage_error = Some(e.to_string()),
        }
    }

    pub(super) fn pool_mut(&mut self) -> Result<&mut PoolStore, ReplicaError> {
        self.pool.as_mut().ok_or_else(|| {
            ReplicaError::StorageUnavailable(
                "the share store is closed until storage returns".into(),
            )
        })
    }

    pub(super) fn state_mut(&mut self) -> Result<&mut ReplicatedState, ReplicaError> {
        self.state
            .as_mut()
            .ok_or_else(|| ReplicaError::Refused("no state (a catch-up failed)".into()))
    }

    /// Hands the updates still waiting in the pool to the next release: written
    /// durably ([`durable::write`]) to the node directory, loaded (and validated again) by the replica that
    /// starts from the CUP. An accepted update is not dropped by an upgrade.
    pub(super) fn carry_over(&self) {
        let waiting = self.ingress.select(now_ns(), MAX_INGRESS_BYTES, |_| false);
        if waiting.is_empty() {
            return;
        }
        let path = self.dir.carryover();
        match durable::write(&path, &encode_carryover(&waiting)) {
            Ok(()) => tracing::info!(
                updates = waiting.len(),
                "updates carried over to the next release"
            ),
            Err(e) => tracing::warn!(error = %e, "could not carry updates over"),
        }
    }

    /// Loads updates a previous release carried over (each validated again), then
    /// removes the file. A file this release cannot read (too large, or in an encoding
    /// it does not know) is reported, not silently dropped.
    pub fn take_carryover(&mut self) {
        let path = self.dir.carryover();
        let carried = match read_carryover(&path, MAX_INGRESS_BYTES) {
            Ok(None) => return,
            Ok(Some(carried)) => carried,
            Err(e) => {
                tracing::error!(error = %e, "critical_error_carryover: the carried-over updates do not read; they are dropped");
                Vec::new()
            }
        };
        let now = now_ns();
        let mut loaded = 0;
        for m in carried {
            if self.ingress.insert(m, now).is_ok() {
                loaded += 1;
            }
        }
        let _ = std::fs::remove_file(&path);
        if loaded > 0 {
            tracing::info!(
                updates = loaded,
                "updates carried over from the previous release"
            );
            self.payload_dirty = true;
        }
    }

    pub(super) fn checkpoint(&mut self, h: Height) -> Result<(), ReplicaError> {
        let dir = self.dir.checkpoint(h);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ReplicaError::Io(format!("{}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(self.dir.checkpoints())
            .map_err(|e| ReplicaError::Io(format!("{}: {e}", self.dir.checkpoints().display())))?;
        self.state_mut()?.checkpoint(&dir)?;
        self.metrics.checkpoints.inc();
        Ok(())
    }

    pub(super) fn cup_ready(
        &mut self,
        content: cup::CupContent,
        signature: &[u8],
    ) -> Result<(), ReplicaError> {
        let sig = crypto::bls::BlsSignature::from_bytes(signature)
            .map_err(|e| ReplicaError::Refused(format!("CUP signature: {e}")))?;
        let cup = SignedCup::from_parts(content.encode(), sig)
            .map_err(|e| ReplicaError::Refused(format!("CUP: {e}")))?;
        let h = content.height;
        if h <= self.cup_height && h != Height::ZERO {
            return Ok(());
        }
        let path = self.dir.write_cup(&Cup::Signed(cup))?;
        tracing::info!(height = %h, path = %path.display(), "CUP made");
        self.cup_height = h;
        self.metrics.cups_made.inc();
        self.pool_mut()?.purge_through(h)?;
        self.prune_checkpoints(h);
        Ok(())
    }

    /// Keeps the newest checkpoints and always the one at the CUP height.
    pub(super) fn prune_checkpoints(&self, cup_height: Height) {
        let Ok(entries) = std::fs::read_dir(self.dir.checkpoints()) else {
            return;
        };
        let mut heights: Vec<u64> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        heights.sort_unstable();
        let excess = heights.len().saturating_sub(MAX_CHECKPOINTS);
        for h in heights.into_iter().take(excess) {
            if h != cup_height.get() {
                let _ = std::fs::remove_dir_all(self.dir.checkpoint(Height::new(h)));
            }
        }
    }

    /// Catches up to the pending CUP, if any and storage allows. A catch-up that fails
    /// for want of space waits for it; one that no peer could serve is tried again
    /// after [`CATCH_UP_RETRY`] (or at once for a newer CUP): peers prune old
    /// checkpoints, so a CUP that waited may name a state no peer keeps. Execution stays
    /// paused meanwhile (the state was closed for the catch-up). Past
    /// [`CATCH_UP_PATIENCE`] the error ends the replica, and its orchestrator starts it
    /// again from the newest CUP it finds.
    pub(super) async fn try_pending_catch_up(&mut self) -> Result<(), ReplicaError> {
        if self.storage_error.is_some() {
            return Ok(());
        }
        let Some(target) = self.pending_catch_up.due(std::time::Instant::now()) else {
            return Ok(());
        };
        let height = target.0.height;
        match self.catch_up(target.clone()).await {
            Ok(()) => self.pending_catch_up.succeeded(),
            Err(e) if storage_unavailable(&e) => {
                self.pending_catch_up.wait_for_storage(target);
                self.stall(&e);
            }
            Err(e @ ReplicaError::StateSyncFailed(_)) => {
                let now = std::time::Instant::now();
                match self.pending_catch_up.no_peer_served(target, now) {
                    catch_up::AfterNoPeer::GiveUp => return Err(e),
                    catch_up::AfterNoPeer::RetryAt(_) => {
                        tracing::warn!(%height, error = %e, "catching up failed: trying again, or a newer CUP")
                    }
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// A peer's CUP is far ahead: fetch the state at its height and restart the core there.
    pub(super) async fn catch_up(
        &mut self,
        (content, signature): (cup::CupContent, Vec<u8>),
    ) -> Result<(), ReplicaError> {
        let Ok(sig) = crypto::bls::BlsSignature::from_bytes(&signature) else {
            return Ok(());
        };
        let Ok(signed) = SignedCup::from_parts(content.encode(), sig) else {
            return Ok(());
        };
        let cup = Cup::Signed(signed);
        let (subnet, me) = match start::check(&cup, &self.version, &self.node_id, &self.registry) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a peer's CUP");
                return Ok(());
            }
        };
        let h = content.height;
        tracing::info!(height = %h, "catching up to a peer's CUP");
        // Close the current state first: its directory is about to be replaced.
        self.state = None;
        // Blocks the old core delivered are below the CUP or delivered again by the new one.
        self.queued.clear();
        let (state, synced) =
            start::state_at(&self.dir, &subnet, &self.node_id, h, content.state_hash).await?;
        self.metrics.catch_ups.inc();
        if let Some(r) = synced {
            self.metrics.state_syncs.inc();
            self.metrics.state_sync_chunks.inc_by(r.chunks);
            self.metrics
                .state_sync_peers_dropped
                .inc_by(r.dropped.len() as u64);
        }
        self.dir.write_cup(&cup)?;
        self.pool_mut()?.purge_through(h)?;
        let keys = self.dir.keys()?;
        self.core = start::build_core(
            &cup,
            &self.version,
            &subnet,
            me,
            keys,
            &self.registry,
            self.pool
                .as_ref()
                .ok_or_else(|| ReplicaError::Refused("the share store is closed".into()))?,
            crate::clocks(),
        )?;
        if content.committee.is_some() {
            self.dir.retire_genesis_shares()?;
        }
        self.certificates = cup_certificates(&cup, &state);
        self.state = Some(state);
        self.index_of = index_of(&subnet);
        self.subnet = subnet;
        self.cup_height = h;
        self.undo.clear();
        self.payload_dirty = true;
        Ok(())
    }
}
