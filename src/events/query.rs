//! [`EventQuery`]: what [`crate::EventLog::search`] looks for.

use std::time::SystemTime;

use super::EventKind;

/// Most events one search returns.
pub const MAX_SEARCH_LIMIT: usize = 10_000;
/// Events a search returns when no limit is given.
pub const DEFAULT_SEARCH_LIMIT: usize = 100;

/// Which end of the log a search starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Highest sequence numbers (most recent appends) first.
    #[default]
    NewestFirst,
    /// Lowest sequence numbers first.
    OldestFirst,
}

/// A search of the event log: every criterion given must hold. Built with chained setters:
///
/// ```
/// use tagcast::{EventKind, EventQuery};
/// let q = EventQuery::new().kind(EventKind::InstallationPruned).installation("inst-7").limit(20);
/// ```
///
/// The search walks one index (the most selective criterion: notification id, then
/// installation id, then kind, then time range, else the log itself) and checks the other
/// criteria on each event it reads, so its cost is the matching entries of that index up to
/// `limit`, not the size of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventQuery {
    pub(crate) kind: Option<EventKind>,
    pub(crate) notification_id: Option<String>,
    pub(crate) installation_id: Option<String>,
    pub(crate) since: Option<SystemTime>,
    pub(crate) until: Option<SystemTime>,
    pub(crate) limit: usize,
    pub(crate) order: Order,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery::new()
    }
}

impl EventQuery {
    /// Everything, newest first, at most [`DEFAULT_SEARCH_LIMIT`] events.
    pub fn new() -> EventQuery {
        EventQuery {
            kind: None,
            notification_id: None,
            installation_id: None,
            since: None,
            until: None,
            limit: DEFAULT_SEARCH_LIMIT,
            order: Order::NewestFirst,
        }
    }

    /// Only events of `kind`.
    pub fn kind(mut self, kind: EventKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Only events about notification `id`. An engine's per-send final event
    /// (`notification.completed` / `.abandoned`) is found through the send's outcome record,
    /// so while that record is kept and only through the engine's log ([`crate::Engine::events`]).
    pub fn notification(mut self, id: impl Into<String>) -> Self {
        self.notification_id = Some(id.into());
        self
    }

    /// Only events about installation `id`.
    pub fn installation(mut self, id: impl Into<String>) -> Self {
        self.installation_id = Some(id.into());
        self
    }

    /// Only events whose time is at or after `t`.
    pub fn since(mut self, t: SystemTime) -> Self {
        self.since = Some(t);
        self
    }

    /// Only events whose time is before `t`.
    pub fn until(mut self, t: SystemTime) -> Self {
        self.until = Some(t);
        self
    }

    /// At most `n` events (clamped to 1..=[`MAX_SEARCH_LIMIT`]).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n.clamp(1, MAX_SEARCH_LIMIT);
        self
    }

    /// Result order (default newest first).
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Whether `e` meets every criterion.
    pub(crate) fn matches(&self, e: &super::Event) -> bool {
        self.kind.is_none_or(|k| k == e.kind)
            && self
                .notification_id
                .as_deref()
                .is_none_or(|id| e.notification_id.as_deref() == Some(id))
            && self
                .installation_id
                .as_deref()
                .is_none_or(|id| e.installation_id.as_deref() == Some(id))
            && self.since.is_none_or(|t| e.time >= t)
            && self.until.is_none_or(|t| e.time < t)
    }
}
