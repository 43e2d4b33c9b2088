//! Optimistic share verification. A share that arrives from its own signer over the
//! authenticated transport is pooled without checking its signature; when enough shares
//! for one value are held, they are combined (aggregated for the multi-signatures,
//! interpolated for the threshold ones) and the result is checked once. Only when that
//! check fails is every held share checked on its own, the bad ones dropped and blamed,
//! and the good ones combined again.
//!
//! Cost: one check per combination instead of one per share received (n - 1 shares of
//! each kind at each height). A Byzantine member can make a combination fail only with
//! shares in its own name (a share relayed by anyone else is checked on arrival, so no one
//! can pre-empt an honest signer's slot with a forgery); each failure costs one pass over
//! the shares held, which is what checking every share on arrival always cost.

use super::*;

/// How a set of shares combines and verifies.
#[derive(Clone, Copy, Debug)]
pub(super) enum Scheme {
    /// BLS multi-signature shares, aggregated (notarization, finalization).
    Multi(types::domain::Domain),
    /// Threshold BLS shares, interpolated (beacon, certification, CUP).
    Threshold(Threshold, types::domain::Domain),
}

/// A verified combination: who signed, and the signature.
#[derive(Clone, Debug)]
pub(super) struct Combined {
    pub(super) signers: Vec<NodeIndex>,
    pub(super) signature: Vec<u8>,
}

impl<C: ConsensusCrypto> Consensus<C> {
    /// Combines `need` of `shares` on `message` into a signature that verifies, or `None`
    /// with fewer than `need` good shares. The second value names the signers whose shares
    /// are bad (found only when a combination failed): the caller drops them from its pool.
    pub(super) fn combine_checked(
        &mut self,
        scheme: Scheme,
        message: &[u8],
        shares: &Shares,
        need: usize,
    ) -> (Option<Combined>, Vec<NodeIndex>) {
        if shares.len() < need {
            return (None, Vec::new());
        }
        let first: Vec<(NodeIndex, &[u8])> = shares
            .iter()
            .take(need)
            .map(|(i, s)| (*i, s.as_slice()))
            .collect();
        if let Some(c) = self.combine_and_verify(scheme, message, &first) {
            return (Some(c), Vec::new());
        }
        self.stats.share_fallbacks += 1;
        let bad: Vec<NodeIndex> = shares
            .iter()
            .filter(|(i, s)| !self.verify_share(scheme, **i, message, s))
            .map(|(i, _)| *i)
            .collect();
        if !bad.is_empty() {
            self.stats.invalid_artifacts += bad.len() as u64;
            self.stats.last_invalid =
                Some("bad share signature (found when its combination failed)");
        }
        let good: Vec<(NodeIndex, &[u8])> = shares
            .iter()
            .filter(|(i, _)| !bad.contains(i))
            .take(need)
            .map(|(i, s)| (*i, s.as_slice()))
            .collect();
        if good.len() < need {
            return (None, bad);
        }
        let combined = self.combine_and_verify(scheme, message, &good);
        if combined.is_none() {
            // Every share verified on its own, yet their combination does not.
            self.stats.critical_errors += 1;
        }
        (combined, bad)
    }

    fn combine_and_verify(
        &self,
        scheme: Scheme,
        message: &[u8],
        shares: &[(NodeIndex, &[u8])],
    ) -> Option<Combined> {
        let signers: Vec<NodeIndex> = shares.iter().map(|(i, _)| *i).collect();
        let signature = match scheme {
            Scheme::Multi(d) => {
                let sigs: Vec<&[u8]> = shares.iter().map(|(_, s)| *s).collect();
                let sig = self.crypto.aggregate_multi(&sigs)?;
                self.crypto
                    .verify_multi(&signers, d, message, &sig)
                    .then_some(sig)?
            }
            Scheme::Threshold(which, d) => {
                let sig = self.crypto.combine_threshold(which, shares)?;
                self.crypto
                    .verify_threshold(which, d, message, &sig)
                    .then_some(sig)?
            }
        };
        Some(Combined { signers, signature })
    }

    pub(super) fn verify_share(
        &self,
        scheme: Scheme,
        signer: NodeIndex,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        match scheme {
            Scheme::Multi(d) => self
                .crypto
                .verify_multi_share(signer, d, message, signature),
            Scheme::Threshold(which, d) => self
                .crypto
                .verify_threshold_share(which, signer, d, message, signature),
        }
    }
}
