//! Who is in the cluster (CLUSTER.md, "Leases"): KV bucket `<prefix>_<hub>_members`, key
//! `n.<node>`, put by its node every round of its loop (node.rs). A member is live while
//! *this* node has seen its key's revision change within `lease + margin` on its own
//! monotonic clock: the rule of the leases, so no wall clock is compared between nodes. A
//! node is always live to itself. A key seen for the first time counts as a change (a node
//! that starts sees every member live for one window).
//!
//! ```text
//!  watch n.* (history: last value per key) ── revision r of n.x at t ──▶ seen[x] = (r, t)
//!  live(now) = {me} ∪ {x : now - seen[x].t < lease + margin}
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::ClusterError;

/// The own-clock liveness rule, without IO.
#[derive(Debug)]
pub(crate) struct Liveness {
    me: String,
    window: Duration,
    /// Per node: the revision last seen and when this node first saw it.
    seen: HashMap<String, (u64, Instant)>,
    /// This node is leaving: it no longer counts itself a member.
    leaving: bool,
    /// When the watch last delivered anything (this node's own puts, every lease/3,
    /// included).
    last_event: Option<Instant>,
}

impl Liveness {
    pub(crate) fn new(me: &str, window: Duration) -> Liveness {
        Liveness {
            me: me.to_owned(),
            window,
            seen: HashMap::new(),
            leaving: false,
            last_event: None,
        }
    }

    /// Whether the view is blind at `now`: nothing came through the watch for three
    /// quarters of a window, not even this node's own puts (every lease/3, about a quarter
    /// of the window: two or more missed in a row; the bucket or the watch is down, and the
    /// silence of the others says nothing about them). One missed put is not blindness: a
    /// view whose puts fail now and then still finds a dead member dead.
    fn blind(&self, now: Instant) -> bool {
        self.last_event
            .is_some_and(|last| now.saturating_duration_since(last) >= self.window * 3 / 4)
    }

    /// `node`'s key is at `revision`, as seen at `now`.
    pub(crate) fn observe(&mut self, node: &str, revision: u64, now: Instant) {
        if let Some(last) = self.last_event.filter(|_| self.blind(now)) {
            // The view works again: the blind stretch does not count against anyone (each
            // member's silence before it still does).
            let blind_for = now.saturating_duration_since(last);
            for e in self.seen.values_mut() {
                e.1 = (e.1 + blind_for).min(now);
            }
        }
        self.last_event = Some(self.last_event.map_or(now, |l| l.max(now)));
        match self.seen.get_mut(node) {
            Some(e) if e.0 == revision => {}
            Some(e) => *e = (revision, now),
            None => {
                self.seen.insert(node.to_owned(), (revision, now));
            }
        }
    }

    /// `node`'s key was deleted (a node that left).
    pub(crate) fn forget(&mut self, node: &str) {
        self.seen.remove(node);
    }

    /// The live members at `now`, sorted, this node included unless it is leaving; while
    /// the view is blind, as they stood at its last event.
    pub(crate) fn live(&self, now: Instant) -> Vec<String> {
        let now = match self.last_event {
            Some(last) if self.blind(now) => last,
            _ => now,
        };
        let mut out: Vec<String> = self
            .seen
            .iter()
            .filter(|(n, (_, at))| {
                *n != &self.me && now.saturating_duration_since(*at) < self.window
            })
            .map(|(n, _)| n.clone())
            .collect();
        if !self.leaving {
            out.push(self.me.clone());
        }
        out.sort();
        out
    }
}

/// This node's membership: its own key and its view of the others'.
pub(crate) struct Members {
    kv: kv::Store,
    me: String,
    view: parking_lot::Mutex<Liveness>,
}

fn key(node: &str) -> String {
    format!("n.{node}")
}

impl Members {
    pub(crate) fn new(kv: kv::Store, me: &str, window: Duration) -> Members {
        Members {
            kv,
            me: me.to_owned(),
            view: parking_lot::Mutex::new(Liveness::new(me, window)),
        }
    }

    /// Puts this node's key (a new revision: proof of life); nothing once it is leaving.
    pub(crate) async fn renew(&self) -> Result<(), ClusterError> {
        if self.view.lock().leaving {
            return Ok(());
        }
        self.kv
            .put(key(&self.me), Bytes::from(self.me.clone()))
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Nats(format!("renewing member {}: {e}", self.me)))
    }

    /// Leaves the cluster: this node stops counting itself and renewing its key, and deletes
    /// it, so every node's assignment (its own included) leaves it out.
    pub(crate) async fn leave(&self) -> Result<(), ClusterError> {
        self.view.lock().leaving = true;
        self.kv
            .delete(key(&self.me))
            .await
            .map_err(|e| ClusterError::Nats(format!("deleting member {}: {e}", self.me)))
    }

    /// The live members now.
    pub(crate) fn live(&self) -> Vec<String> {
        self.view.lock().live(Instant::now())
    }

    /// Follows the bucket until the task is aborted; a watch that ends or fails is started
    /// again (from the last value of every key) after a short pause.
    pub(crate) async fn watch(self: Arc<Self>) {
        loop {
            match self.kv.watch_with_history("n.*").await {
                Ok(mut w) => {
                    while let Some(e) = w.next().await {
                        let Ok(e) = e else { break };
                        let Some(node) = e.key.strip_prefix("n.") else {
                            continue;
                        };
                        let mut view = self.view.lock();
                        match e.operation {
                            kv::Operation::Put => view.observe(node, e.revision, Instant::now()),
                            kv::Operation::Delete | kv::Operation::Purge => view.forget(node),
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "members watch failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_live_while_its_revision_moves_within_the_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let w = ms(1300);
        let mut l = Liveness::new("a", w);
        assert_eq!(l.live(t0), ["a"]);
        // This node's own puts come through the watch every 500 ms (the view is not blind).
        let own = |l: &mut Liveness, at: u64| l.observe("a", 100 + at, t0 + ms(at));
        own(&mut l, 0);
        l.observe("b", 5, t0);
        l.observe("c", 9, t0);
        assert_eq!(l.live(t0), ["a", "b", "c"]);
        own(&mut l, 500);
        // b renews, c does not: the same revision seen again does not refresh it.
        own(&mut l, 1000);
        l.observe("b", 6, t0 + ms(1000));
        l.observe("c", 9, t0 + ms(1000));
        assert_eq!(l.live(t0 + ms(1299)), ["a", "b", "c"]);
        assert_eq!(l.live(t0 + ms(1300)), ["a", "b"]);
        own(&mut l, 1500);
        // c comes back with a new revision.
        own(&mut l, 2000);
        l.observe("c", 10, t0 + ms(2000));
        assert_eq!(l.live(t0 + ms(2100)), ["a", "b", "c"]);
        l.forget("b");
        assert_eq!(l.live(t0 + ms(2100)), ["a", "c"]);
        // This node is live to itself whatever its key says.
        for at in [2500, 3000, 3500] {
            own(&mut l, at);
        }
        assert_eq!(l.live(t0 + ms(3600)), ["a"]);
    }

    #[test]
    fn a_blind_view_declares_nobody_dead() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let w = ms(4000);
        let mut l = Liveness::new("a", w);
        // a puts every second and sees its own puts; b too, until 3 s.
        for s in 0..=3u64 {
            l.observe("a", 10 + 2 * s, t0 + ms(1000 * s));
            l.observe("b", 11 + 2 * s, t0 + ms(1000 * s));
        }
        // From 3 s the bucket is down: nothing at all comes through the watch, so b's
        // silence says nothing; the view stands as it was at 3 s.
        assert_eq!(l.live(t0 + ms(6000)), ["a", "b"]);
        assert_eq!(l.live(t0 + ms(15000)), ["a", "b"]);
        // At 15 s the bucket is back and a's put arrives first: b gets a fresh window.
        l.observe("a", 30, t0 + ms(15000));
        assert_eq!(l.live(t0 + ms(15500)), ["a", "b"]);
        l.observe("b", 31, t0 + ms(15600));
        // While the view works, a silent member is dead after the window: b stops at 15.6 s.
        for s in 16..=20u64 {
            l.observe("a", 40 + s, t0 + ms(1000 * s));
        }
        assert_eq!(l.live(t0 + ms(19500)), ["a", "b"]);
        assert_eq!(l.live(t0 + ms(19700)), ["a"]);
    }

    #[test]
    fn a_view_whose_own_puts_fail_now_and_then_still_finds_a_dead_member_dead() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        // lease 10 s + margin 2 s; puts every 3.3 s, every second one lost: events 6.7 s apart.
        let mut l = Liveness::new("a", ms(12_000));
        l.observe("a", 1, t0);
        l.observe("b", 1, t0);
        // b is dead from t0 on.
        for k in 1..=4u64 {
            l.observe("a", 1 + k, t0 + ms(6_700 * k));
        }
        assert_eq!(l.live(t0 + ms(11_900)), ["a", "b"]);
        assert_eq!(l.live(t0 + ms(13_400)), ["a"]);
        assert_eq!(l.live(t0 + ms(26_800)), ["a"]);
    }
}
