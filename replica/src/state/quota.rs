//! What one user (a sender key) may write, and what the whole state may hold.
//!
//! Execution enforces three bounds, deterministically, so every replica skips the same
//! updates (skipped updates are counted like duplicates; nothing of them is written):
//! - **per block:** the encoded updates of one sender in one block, at most
//!   [`crate::ingress::MAX_BLOCK_BYTES_PER_SENDER`] (an honest block maker already stops
//!   there; a Byzantine one cannot make a sender's flood execute);
//! - **per sender, in total:** the bytes a sender's writes keep in the state (key plus
//!   the value as written), at most `stored_bytes_per_sender`;
//! - **the whole state:** at most `state_bytes` of keys and values; past it, an update
//!   that would grow the state is skipped (deletes and shrinking writes still execute),
//!   so a full subnet refuses writes instead of filling its disks.
//!
//! Accounting lives in the state itself, as hashed entries: `o/<user key>` names the
//! sender whose write the value is (the last writer owns it), `q/<sender key>` is what
//! that sender's values take (u64, big-endian; absent at zero), and `q/total` the whole.
//! Overwriting or deleting another sender's value moves its bytes off that sender's
//! account. Sizes count the value as the user wrote it, not as a schema stores it, so a
//! migration changes no account.
//!
//! Quotas bound what one key can do; they do not stop one user from making many keys
//! (there is no cost to a key here), which is what `state_bytes` is for.

use super::{StateError, Writes, prefixed};
use rocksdb::DB;

/// The bounds execution enforces. Consensus-critical: every release must use the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub block_bytes_per_sender: usize,
    pub stored_bytes_per_sender: u64,
    pub state_bytes: u64,
}

/// The bounds every replica enforces.
pub const QUOTAS: Quotas = Quotas {
    block_bytes_per_sender: crate::ingress::MAX_BLOCK_BYTES_PER_SENDER,
    stored_bytes_per_sender: 1 << 30,
    state_bytes: 64 << 30,
};

/// The account of the whole state.
const TOTAL: &[u8] = b"q/total";

/// The entry naming who owns a user key's value.
pub(super) fn owner_key(user_key: &str) -> Vec<u8> {
    prefixed(b"o/", user_key.as_bytes())
}

fn account_key(sender: &[u8; 32]) -> Vec<u8> {
    prefixed(b"q/", sender)
}

fn read_u64(w: &Writes, db: &DB, key: &[u8]) -> Result<u64, StateError> {
    match w.current(db, key)? {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| StateError::Corrupt(format!("a quota account of {} bytes", b.len()))),
    }
}

fn write_u64(w: &mut Writes, key: Vec<u8>, v: u64) {
    w.write(key, (v > 0).then(|| v.to_be_bytes().to_vec()));
}

/// One write of `sender` to `user_key`: the value's size before and after (key plus
/// value as written; `None`: absent).
#[derive(Debug)]
pub(super) struct Change<'a> {
    pub sender: &'a [u8; 32],
    pub user_key: &'a str,
    pub before: Option<u64>,
    pub after: Option<u64>,
}

impl super::ReplicatedState {
    /// What `sender`'s values take in the state now (key plus value as written).
    pub fn stored_bytes_of(&self, sender: &[u8; 32]) -> Result<u64, StateError> {
        match self.db.get(account_key(sender))? {
            None => Ok(0),
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| StateError::Corrupt("a quota account of the wrong size".into())),
        }
    }
}

impl Quotas {
    /// Checks `c` against the accounts and, if it fits, books it (in the block's writes).
    /// `Ok(false)`: it does not fit, and nothing was written.
    pub(super) fn book(&self, w: &mut Writes, db: &DB, c: &Change) -> Result<bool, StateError> {
        let owner_entry = owner_key(c.user_key);
        let owner: Option<[u8; 32]> = match w.current(db, &owner_entry)? {
            None => None,
            Some(b) => Some(
                <[u8; 32]>::try_from(b.as_slice())
                    .map_err(|_| StateError::Corrupt("a value owner of the wrong size".into()))?,
            ),
        };
        let before = c.before.unwrap_or(0);
        let after = c.after.unwrap_or(0);
        let mine = read_u64(w, db, &account_key(c.sender))?;
        let mine_after = if owner.as_ref() == Some(c.sender) {
            mine.saturating_sub(before)
        } else {
            mine
        }
        .saturating_add(after);
        let total = read_u64(w, db, TOTAL)?;
        let total_after = total.saturating_sub(before).saturating_add(after);
        if after > 0 && mine_after > self.stored_bytes_per_sender {
            return Ok(false);
        }
        if after > before && total_after > self.state_bytes {
            return Ok(false);
        }
        // Only what changes is written (a delete of an absent entry is not a write).
        if let Some(o) = owner.filter(|o| o != c.sender)
            && before > 0
        {
            let theirs = read_u64(w, db, &account_key(&o))?;
            write_u64(w, account_key(&o), theirs.saturating_sub(before));
        }
        if mine_after != mine {
            write_u64(w, account_key(c.sender), mine_after);
        }
        if total_after != total {
            write_u64(w, TOTAL.to_vec(), total_after);
        }
        match (c.after, owner) {
            (Some(_), o) if o.as_ref() != Some(c.sender) => {
                w.write(owner_entry, Some(c.sender.to_vec()))
            }
            (None, Some(_)) => w.write(owner_entry, None),
            _ => {}
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ingress::{Ingress, Operation, SignedIngress},
        state::ReplicatedState,
    };
    use crypto::ed25519::Ed25519KeyPair;
    use types::{Height, NetworkId};

    const T: u64 = 1_000_000_000_000;
    const NET: NetworkId = NetworkId([5; 32]);

    fn from(user: u8, nonce: u64, operation: Operation) -> SignedIngress {
        let key = Ed25519KeyPair::from_seed(&[user; 32]);
        SignedIngress::sign(
            Ingress {
                network: NET,
                sender: key.public_key(),
                nonce,
                expiry_ns: T + 1_000_000,
                operation,
            },
            &key,
        )
    }

    fn put(k: &str, len: usize) -> Operation {
        Operation::Put {
            key: k.into(),
            value: vec![b'x'; len],
        }
    }

    fn account(s: &ReplicatedState, user: u8) -> u64 {
        let sender = *Ed25519KeyPair::from_seed(&[user; 32])
            .public_key()
            .as_bytes();
        s.db.get(account_key(&sender))
            .expect("get")
            .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    /// Runs one block; the ids of what executed.
    fn block(s: &mut ReplicatedState, msgs: Vec<SignedIngress>) -> usize {
        let h = s.height().increment();
        let r = s.execute(h, T + h.get(), &NET, &msgs).expect("execute");
        assert_eq!(r.state_hash, s.recompute_hash().expect("recompute"));
        r.executed.len()
    }

    fn state(q: Quotas) -> (tempfile::TempDir, ReplicatedState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ReplicatedState::open(dir.path())
            .expect("open")
            .with_quotas(q);
        (dir, s)
    }

    #[test]
    fn one_sender_gets_at_most_its_share_of_a_block_and_others_are_not_held_back() {
        let flood: Vec<SignedIngress> = (0..6)
            .map(|i| from(1, i, put(&format!("k{i}"), 200)))
            .collect();
        let size = flood[0].size();
        assert!(flood.iter().all(|m| m.size() == size));
        // Three of these fit in the sender's share of a block, not four.
        let (_d, mut s) = state(Quotas {
            block_bytes_per_sender: 3 * size + size / 2,
            ..QUOTAS
        });
        let mut msgs = flood;
        msgs.push(from(2, 0, put("other", 200)));
        assert_eq!(block(&mut s, msgs), 4);
        assert!(s.get("k2").expect("get").is_some() && s.get("k3").expect("get").is_none());
        assert!(s.get("other").expect("get").is_some());
        // The next block has room again.
        assert_eq!(block(&mut s, vec![from(1, 9, put("k9", 200))]), 1);
        assert_eq!(Height::new(2), s.height());
    }

    #[test]
    fn a_sender_keeps_at_most_its_quota_and_overwrites_and_deletes_move_the_bytes() {
        let (_d, mut s) = state(Quotas {
            stored_bytes_per_sender: 1_000,
            ..QUOTAS
        });
        // 2 + 400 bytes each: two fit, a third does not.
        assert_eq!(
            block(
                &mut s,
                vec![
                    from(1, 0, put("a1", 400)),
                    from(1, 1, put("a2", 400)),
                    from(1, 2, put("a3", 400))
                ]
            ),
            2
        );
        assert_eq!(account(&s, 1), 804);
        assert!(s.get("a3").expect("get").is_none());
        // Another sender overwrites a1 with a smaller value: the bytes move to it.
        assert_eq!(block(&mut s, vec![from(2, 0, put("a1", 10))]), 1);
        assert_eq!((account(&s, 1), account(&s, 2)), (402, 12));
        // Now a3 fits; deleting frees what was booked (also another sender's value).
        assert_eq!(block(&mut s, vec![from(1, 3, put("a3", 400))]), 1);
        assert_eq!(account(&s, 1), 804);
        let delete = |k: &str| Operation::Delete { key: k.into() };
        assert_eq!(
            block(
                &mut s,
                vec![from(2, 1, delete("a2")), from(1, 4, delete("a1"))]
            ),
            2
        );
        assert_eq!((account(&s, 1), account(&s, 2)), (402, 0));
        // A delete of a key nobody wrote changes no account.
        assert_eq!(block(&mut s, vec![from(3, 0, delete("nothing"))]), 1);
        assert_eq!(account(&s, 3), 0);
    }

    #[test]
    fn a_full_state_refuses_growth_but_not_shrinking() {
        let (_d, mut s) = state(Quotas {
            state_bytes: 1_000,
            ..QUOTAS
        });
        assert_eq!(
            block(
                &mut s,
                vec![from(1, 0, put("a", 600)), from(2, 0, put("b", 600))]
            ),
            1
        );
        assert!(s.get("b").expect("get").is_none());
        // Shrinking and deleting still work, and make room.
        assert_eq!(block(&mut s, vec![from(1, 1, put("a", 100))]), 1);
        assert_eq!(block(&mut s, vec![from(2, 1, put("b", 600))]), 1);
        assert_eq!(block(&mut s, vec![from(3, 0, put("c", 600))]), 0);
        assert_eq!(
            block(
                &mut s,
                vec![from(3, 1, Operation::Delete { key: "b".into() })]
            ),
            1
        );
        assert_eq!(block(&mut s, vec![from(3, 2, put("c", 600))]), 1);
    }
}
