//! What the push services answered: the sans-IO classification of every answer into a
//! verdict (`classify`). Acting on verdicts (retries, pruning) is the dispatcher's.

pub(crate) mod classify;
