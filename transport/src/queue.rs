//! A peer's outgoing queue: bounded, dropping the oldest message when full.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};
use tokio::sync::Notify;

/// A queued message; shared, so that a broadcast stores one copy for all peers.
pub(crate) type Message = Arc<[u8]>;

#[derive(Debug)]
pub(crate) struct PeerQueue {
    bound: usize,
    items: Mutex<VecDeque<Message>>,
    ready: Notify,
}

impl PeerQueue {
    /// `bound` is at least 1 (a validated config).
    pub(crate) fn new(bound: usize) -> Self {
        Self {
            bound: bound.max(1),
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
        }
    }

    fn items(&self) -> MutexGuard<'_, VecDeque<Message>> {
        // Every critical section is a single VecDeque operation: a panic cannot leave the
        // queue inconsistent, so a poisoned lock is taken over.
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `msg`; returns how many old messages were dropped to make room (0 or 1).
    pub(crate) fn push(&self, msg: Message) -> u64 {
        let dropped = {
            let mut items = self.items();
            let mut dropped = 0;
            while items.len() >= self.bound {
                items.pop_front();
                dropped += 1;
            }
            items.push_back(msg);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// Puts back, at the front, a message that could not be written. Returns false (and
    /// drops it) if newer messages have filled the queue meanwhile: it is then the oldest.
    pub(crate) fn push_front(&self, msg: Message) -> bool {
        let kept = {
            let mut items = self.items();
            if items.len() >= self.bound {
                false
            } else {
                items.push_front(msg);
                true
            }
        };
        if kept {
            self.ready.notify_one();
        }
        kept
    }

    /// The oldest message, waiting for one if the queue is empty. Cancel-safe: a message
    /// is removed only when this future completes.
    pub(crate) async fn pop(&self) -> Message {
        loop {
            if let Some(msg) = self.items().pop_front() {
                return msg;
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this await is not missed.
            self.ready.notified().await;
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(bytes: &[u8]) -> Message {
        Arc::from(bytes)
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_a_put_back_message_goes_first() {
        let q = PeerQueue::new(3);
        let dropped: u64 = (0u8..5).map(|i| q.push(m(&[i]))).sum();
        assert_eq!(dropped, 2);
        assert_eq!(q.len(), 3);
        let first = q.pop().await;
        assert_eq!(*first, [2]);
        // Written into a connection that broke: it goes back to the front.
        assert!(q.push_front(first));
        assert_eq!(*q.pop().await, [2]);
        assert_eq!(*q.pop().await, [3]);
        assert_eq!(*q.pop().await, [4]);
        assert_eq!(q.len(), 0);
        // When the queue filled meanwhile, the put-back message is the oldest: dropped.
        for i in 10..13 {
            q.push(m(&[i]));
        }
        assert!(!q.push_front(m(&[9])));
        assert_eq!(*q.pop().await, [10]);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = Arc::new(PeerQueue::new(2));
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.push(m(b"late"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
            .await
            .expect("pop woke up")
            .expect("task");
        assert_eq!(*got, *b"late");
    }
}
