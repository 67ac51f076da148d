//! Verification of a send against the mocks' own accounting: every live device of the
//! audience got exactly one delivery (a duplicate only where the engine reported an
//! ambiguous resend), every dead one was pruned, and every device has a final outcome.
//!
//! APNs and FCM mocks are fresh for each send, so their totals and delivered sets are this
//! send's. Web Push and WNS mocks live for the whole run, so their per-handle counts are
//! checked against what all sends so far should have delivered.

use std::collections::{BTreeSet, HashMap};

use tagcast::{Audience, Platform, PushHandle, Registry, SendReport};

use super::fixtures::PerSend;
use super::send::SendContext;
use crate::mock::{is_dead_handle, StatsSnapshot};

/// Expected deliveries per Web Push / WNS handle (platform, mock key), over all sends so
/// far.
pub(super) type PersistentCounts = HashMap<(Platform, String), u32>;

/// The key a mock accounts a handle under: the hex token (APNs), the token (FCM), the
/// subscription id (Web Push: the endpoint's last segment), the channel id (WNS: `token=`).
fn mock_key(h: &PushHandle) -> String {
    let text = h.to_text();
    match h.platform() {
        Platform::WebPush => text.rsplit('/').next().unwrap_or("").to_string(),
        Platform::Wns => text
            .split_once("token=")
            .map_or(text.clone(), |(_, id)| id.to_string()),
        _ => text,
    }
}

/// (platform, mock key) of every device of the audience.
pub(super) fn expected_handles(reg: &Registry, audience: &Audience) -> Vec<(Platform, String)> {
    let res = reg.resolve(audience);
    let mut out = Vec::with_capacity(res.count() as usize);
    for batch in res.batches(4096) {
        for t in batch {
            out.push((t.handle.platform(), mock_key(&t.handle)));
        }
    }
    out
}

/// One finished send, to be checked.
pub(super) struct SendCheck<'a> {
    pub(super) ctx: &'a SendContext<'a>,
    /// The engine's report of the send.
    pub(super) report: &'a SendReport,
    /// The audience as read before the send (empty with external mocks).
    pub(super) expected: &'a [(Platform, String)],
    pub(super) audience: &'a Audience,
}

impl SendCheck<'_> {
    /// The problems found (empty = passed). With external mocks only the engine's own
    /// counts can be checked.
    pub(super) fn problems(&self, per: &PerSend, counts: &mut PersistentCounts) -> Vec<String> {
        let mut problems = Vec::new();
        let t = self.report.total();
        if self.ctx.args.external() {
            let bad = t.failed + t.rejected + t.expired + t.credential_failure + t.skipped;
            if bad > 0 {
                problems.push(format!(
                    "{bad} devices were not delivered: {:?}",
                    self.report.reasons
                ));
            }
        } else {
            self.fresh(per, &mut problems);
            self.persistent(counts, &mut problems);
        }
        if t.finished() != t.targeted {
            problems.push(format!(
                "{} of {} devices have no final outcome",
                t.targeted - t.finished(),
                t.targeted
            ));
        }
        problems
    }

    /// Whether the mocks answer `key` as a dead handle.
    fn is_dead(&self, p: Platform, key: &str) -> bool {
        // The 410 race guard needs the mock's dead-token age at zero: APNs/FCM mocks here
        // have it; Web Push and WNS answer dead handles without a timestamp.
        let _ = p;
        is_dead_handle(self.ctx.faults.seed, key, self.ctx.faults.dead_fraction)
    }

    /// APNs and FCM (fresh mocks): exactly once per live device, dead ones pruned.
    fn fresh(&self, per: &PerSend, problems: &mut Vec<String>) {
        for (p, mock) in [
            (
                Platform::Apns,
                per.apns
                    .as_ref()
                    .map(|m| (m.stats(), m.delivered_handles())),
            ),
            (
                Platform::Fcm,
                per.fcm.as_ref().map(|m| (m.stats(), m.delivered_handles())),
            ),
        ] {
            let Some((stats, delivered)) = mock else {
                continue;
            };
            self.fresh_platform(p, &stats, &delivered, problems);
        }
        // No dead handle of the audience is still registered.
        let left = expected_handles(self.ctx.reg, self.audience)
            .into_iter()
            .filter(|(p, k)| matches!(p, Platform::Apns | Platform::Fcm) && self.is_dead(*p, k))
            .count();
        if left > 0 {
            problems.push(format!("{left} dead APNs/FCM handles are still registered"));
        }
    }

    /// One fresh mock's accounting against the audience's devices of its platform.
    fn fresh_platform(
        &self,
        p: Platform,
        stats: &StatsSnapshot,
        delivered: &BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        let mine: BTreeSet<&str> = self
            .expected
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, k)| k.as_str())
            .collect();
        let dead = mine.iter().filter(|k| self.is_dead(p, k)).count();
        let live = mine.len() - dead;
        if stats.unique_handles as usize != live {
            problems.push(format!(
                "{p}: the mock saw {} devices; {live} live devices were in the audience",
                stats.unique_handles
            ));
        }
        if let Some(h) = delivered.iter().find(|h| !mine.contains(h.as_str())) {
            problems.push(format!("{p}: {h} was delivered but is not in the audience"));
        }
        // Every duplicate must repeat a request whose answer was lost (ambiguous) with the
        // same id: the engine counted it.
        let o = self.report.platform(p);
        if stats.duplicate_deliveries > o.ambiguous_resends
            || (p == Platform::Apns && stats.duplicate_deliveries != stats.duplicates_of_ambiguous)
        {
            problems.push(format!(
                "{p}: the mock saw {} duplicate deliveries ({} repeating an ambiguous request); the engine reported {} ambiguous resends",
                stats.duplicate_deliveries, stats.duplicates_of_ambiguous, o.ambiguous_resends
            ));
        }
        if o.pruned as usize != dead {
            problems.push(format!(
                "{p}: {dead} dead handles in the audience; {} pruned",
                o.pruned
            ));
        }
    }

    /// Web Push and WNS (mocks for the whole run): per-handle counts over the sends so far.
    fn persistent(&self, counts: &mut PersistentCounts, problems: &mut Vec<String>) {
        let persistent = self.ctx.persistent;
        for (p, server) in [
            (Platform::WebPush, persistent.webpush.as_deref()),
            (Platform::Wns, persistent.wns.as_deref()),
        ] {
            let Some(server) = server else { continue };
            let o = self.report.platform(p);
            let mut dead = 0u64;
            for (_, k) in self.expected.iter().filter(|(q, _)| *q == p) {
                if self.is_dead(p, k) {
                    dead += 1;
                } else {
                    *counts.entry((p, k.clone())).or_default() += 1;
                }
            }
            let mut wrong = 0u64;
            let mut example = None;
            for ((_, k), want) in counts.iter().filter(|((q, _), _)| *q == p) {
                let got = server.deliveries_for(k).len() as u64;
                let want = u64::from(*want);
                // Ambiguous resends may add duplicates; nothing else may.
                if got < want || got > want + o.ambiguous_resends {
                    wrong += 1;
                    example
                        .get_or_insert_with(|| format!("{k}: {got} deliveries, {want} expected"));
                }
            }
            if wrong > 0 {
                problems.push(format!(
                    "{p}: {wrong} devices with the wrong number of deliveries (e.g. {})",
                    example.unwrap_or_default()
                ));
            }
            if o.pruned != dead {
                problems.push(format!(
                    "{p}: {dead} dead handles in the audience; {} pruned",
                    o.pruned
                ));
            }
        }
    }
}
