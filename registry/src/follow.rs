//! A registry server that follows the NNS subnet (issue 19: "a read-only, verifying cache
//! for tools"): every second it asks the NNS nodes in turn for the registry's changes and
//! governance's proposals (from the oldest one not final), each page checked with the NNS
//! subnet's key ([`crate::nns_source`]), and keeps what verifies in its store, which it
//! serves as any registry server does. It takes no proposal or vote (403: they go to an NNS node) and
//! decides nothing; nothing in a running network depends on it.

use crate::{
    nns_source::{NnsSource, NnsSourceError},
    server::{ServerState, router},
};
use std::{sync::Arc, time::Duration};

/// How often the copy asks for changes.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Serves `state` (opened with [`ServerState::open_following`]) and keeps it up to date
/// from `sources`, until the listener fails.
pub async fn serve_following(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    sources: Vec<NnsSource>,
) -> std::io::Result<()> {
    let copy = state.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(FOLLOW_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(errors) = follow_once(&copy, &sources).await {
                tracing::warn!(?errors, "no NNS node gave the registry's changes");
            }
        }
    });
    axum::serve(listener, router(state)).await
}

/// One round: the first source that answers with pages that verify is followed; the
/// errors of all when none does.
pub async fn follow_once(
    state: &ServerState,
    sources: &[NnsSource],
) -> Result<(), Vec<NnsSourceError>> {
    let mut errors = Vec::new();
    for source in sources {
        let round = async {
            source
                .poll_once_in(state.registry_lock(), |r| r.store_mut())
                .await?;
            // Final proposals never change: read again only from the oldest open one.
            let from = state.registry().governance().first_unsettled();
            let (proposals, next) = source.proposals_from(from).await?;
            state
                .registry()
                .mirror_governance_from(from, proposals, next)
                .map_err(|e| NnsSourceError::Store(e.to_string()))
        };
        match round.await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if matches!(e, NnsSourceError::Unverified { .. }) {
                    tracing::warn!(error = %e, "refused a page");
                }
                errors.push(e);
            }
        }
    }
    Err(errors)
}
