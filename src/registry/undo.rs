//! Undo records: what a write replaced in memory, kept until the write is durable, so that a
//! write whose flush fails can be taken back (fail-stop storage, server audit H3).
//!
//! Every change a write makes to a partition pushes one [`Undo`] onto that partition's
//! [`UndoLog`], under the partition's write lock and in log order: the log position of the
//! entry that made the change, the installation id, and the record (with its templates) the id
//! held before, or `None` when the write created it. Entries whose position is below the log's
//! durable boundary (`Log::durable_below`) are dropped as writes go by. When a flush fails,
//! the registry takes every partition's write lock and applies the entries at or above the
//! boundary newest first: memory is then exactly the state the durable prefix of the log
//! describes (the state recovery would rebuild if the failed flush wrote nothing).
//!
//! A record kept here still holds its tag references (`interner.rs`): its tags cannot be
//! freed and their ids reused while it may come back.

use std::collections::VecDeque;

use super::partition::{MemRecord, Templates};

/// One change to take back; see the module docs.
pub(crate) struct Undo {
    /// Log position of the entry that made the change.
    pub pos: u64,
    /// The installation changed.
    pub id: Box<str>,
    /// What the id held before; `None` when the change created it.
    pub before: Option<(MemRecord, Option<Templates>)>,
}

/// A partition's undo records, oldest first.
#[derive(Default)]
pub(crate) struct UndoLog {
    entries: VecDeque<Undo>,
}

impl UndoLog {
    /// Records a change (positions only grow: the caller holds the partition's write lock).
    pub(crate) fn push(&mut self, u: Undo) {
        debug_assert!(self.entries.back().is_none_or(|b| b.pos <= u.pos));
        self.entries.push_back(u);
    }

    /// Drops the entries of durable changes (position below `durable_below`), calling `done`
    /// with each one's replaced record so its tag references can be given back.
    pub(crate) fn trim(&mut self, durable_below: u64, mut done: impl FnMut(MemRecord)) {
        while self.entries.front().is_some_and(|u| u.pos < durable_below) {
            if let Some(Undo {
                before: Some((mem, _)),
                ..
            }) = self.entries.pop_front()
            {
                done(mem);
            }
        }
    }

    /// Takes the entries of changes that are not durable, newest first.
    pub(crate) fn take_undurable(&mut self, durable_below: u64) -> Vec<Undo> {
        let keep = self.entries.partition_point(|u| u.pos < durable_below);
        let mut out: Vec<Undo> = self.entries.drain(keep..).collect();
        out.reverse();
        out
    }

    /// The records kept, oldest first.
    pub(crate) fn records(&self) -> impl Iterator<Item = &MemRecord> {
        self.entries
            .iter()
            .filter_map(|u| u.before.as_ref().map(|(m, _)| m))
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
