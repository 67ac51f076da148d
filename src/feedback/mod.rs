//! What the push services answered: classification into verdicts, pruning of dead handles,
//! per-notification telemetry.

pub(crate) mod classify;
pub(crate) mod prune;
