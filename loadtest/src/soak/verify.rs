//! The check after `kill -9` and restart: every tracked installation as last acknowledged, and
//! the outcome of every acknowledged send, schedule and cancellation readable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::Method;
use parking_lot::Mutex;

use super::client::{checks, Hub, Pool};
use super::model::{tracked_id, Known};
use super::registrations::installation_state;
use super::sends::Acked;

/// Reads in flight at once during the check.
const READERS: usize = 16;

/// Acknowledged installation writes against what the restarted server holds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteReport {
    /// Tracked ids.
    pub tracked: usize,
    /// Ids whose last acknowledged state is known (not in doubt), all checked.
    pub checked: usize,
    /// Of those, as acknowledged: present with the same tags, or absent.
    pub matched: usize,
    /// Acknowledged present, absent after the restart.
    pub lost: usize,
    /// Present with other tags than acknowledged.
    pub wrong_tags: usize,
    /// Acknowledged deleted, present after the restart.
    pub resurrected: usize,
    /// Reads that failed (no answer, or neither 200 nor 404).
    pub read_errors: usize,
    /// Ids with a write in flight at the kill (or unanswered): not judged.
    pub in_doubt: usize,
    /// Ids present (acknowledged) at the kill.
    pub present: usize,
    /// Differences between a read and the model during the traffic.
    pub live_mismatches: u64,
    /// The first differences, for the report.
    pub examples: Vec<String>,
}

impl WriteReport {
    /// Acknowledged writes the restart did not keep.
    pub fn lost_total(&self) -> usize {
        self.lost + self.wrong_tags + self.resurrected
    }
}

/// Reads every tracked id from the restarted server and compares.
pub(crate) async fn writes(pool: Arc<Pool>, known: Vec<Known>) -> WriteReport {
    let known = Arc::new(known);
    let report = Arc::new(Mutex::new(WriteReport {
        tracked: known.len(),
        ..WriteReport::default()
    }));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..READERS {
        let (pool, known, report, next) =
            (pool.clone(), known.clone(), report.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(k) = known.get(i) else { return };
                if *k == Known::Doubt {
                    report.lock().in_doubt += 1;
                    continue;
                }
                let path = format!("/installations/{}", tracked_id(i));
                let r = pool.call(
                    &checks::VERIFY_GET,
                    Hub::Soak,
                    Method::GET,
                    &path,
                    &[],
                    vec![],
                );
                let seen = installation_state(r.await);
                judge(&mut report.lock(), i, k, seen);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let r = report.lock().clone();
    r
}

fn judge(r: &mut WriteReport, i: usize, known: &Known, seen: Option<Known>) {
    r.checked += 1;
    if matches!(known, Known::Present(_)) {
        r.present += 1;
    }
    let Some(seen) = seen else {
        r.read_errors += 1;
        return;
    };
    match (known, &seen) {
        (a, b) if a == b => {
            r.matched += 1;
            return;
        }
        (Known::Present(_), Known::Absent) => r.lost += 1,
        (Known::Present(_), _) => r.wrong_tags += 1,
        _ => r.resurrected += 1,
    }
    if r.examples.len() < 10 {
        r.examples.push(format!(
            "{}: acknowledged {known:?}, after restart {seen:?}",
            tracked_id(i)
        ));
    }
}

/// Outcomes of acknowledged sends after the restart.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SendReport {
    /// Sends acknowledged (201).
    pub sends: usize,
    /// Schedules acknowledged (201).
    pub schedules: usize,
    /// Cancellations acknowledged (200).
    pub cancels: usize,
    /// Outcomes read after the restart (200), by their `State`.
    pub states: BTreeMap<String, u64>,
    /// Outcomes of acknowledged sends or schedules the restarted server does not know (404).
    pub missing: usize,
    /// Of the missing, the longest time between the acknowledgement and the kill, ms.
    pub missing_max_age_ms: u64,
    /// Acknowledged cancellations whose outcome is not `Cancelled` after the restart.
    pub cancel_not_kept: usize,
    /// Reads that failed.
    pub read_errors: usize,
}

/// What to read back: every acknowledged id, whether it was a cancellation, and its age at
/// the kill.
pub(crate) struct Acks {
    pub(crate) sends: Vec<Acked>,
    pub(crate) schedules: Vec<Acked>,
    pub(crate) cancels: Vec<Acked>,
    pub(crate) killed_at: Instant,
}

/// Reads the outcome of every acknowledged send and schedule.
pub(crate) async fn sends(pool: Arc<Pool>, acks: Acks) -> SendReport {
    let cancelled: std::collections::HashSet<String> =
        acks.cancels.iter().map(|a| a.id.clone()).collect();
    let mut all: Vec<(Acked, bool)> = acks.sends.iter().map(|a| (a.clone(), false)).collect();
    all.extend(
        acks.schedules
            .iter()
            .map(|a| (a.clone(), cancelled.contains(&a.id))),
    );
    let report = Arc::new(Mutex::new(SendReport {
        sends: acks.sends.len(),
        schedules: acks.schedules.len(),
        cancels: acks.cancels.len(),
        ..SendReport::default()
    }));
    let all = Arc::new(all);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..READERS {
        let (pool, all, report, next) = (pool.clone(), all.clone(), report.clone(), next.clone());
        let killed_at = acks.killed_at;
        tasks.spawn(async move {
            loop {
                let Some((a, was_cancelled)) = all.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                let path = format!("/messages/{}", a.id);
                let r = pool
                    .call(
                        &checks::VERIFY_OUTCOME,
                        Hub::Soak,
                        Method::GET,
                        &path,
                        &[],
                        vec![],
                    )
                    .await;
                let mut rep = report.lock();
                match r.map(|r| (r.status, outcome_state(&r.body))) {
                    Some((200, state)) => {
                        if *was_cancelled && state != "Cancelled" {
                            rep.cancel_not_kept += 1;
                        }
                        *rep.states.entry(state).or_default() += 1;
                    }
                    Some((404, _)) => {
                        rep.missing += 1;
                        let age = killed_at.saturating_duration_since(a.at).as_millis();
                        rep.missing_max_age_ms = rep
                            .missing_max_age_ms
                            .max(u64::try_from(age).unwrap_or(u64::MAX));
                    }
                    _ => rep.read_errors += 1,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let r = report.lock().clone();
    r
}

/// The `<State>` of a notification outcome (NH's XML), or `?`.
fn outcome_state(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split_once("<State>")
        .and_then(|(_, rest)| rest.split_once("</State>"))
        .map_or_else(|| "?".to_owned(), |(s, _)| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging() {
        let tags = |t: &[&str]| Known::Present(t.iter().map(|s| s.to_string()).collect());
        let mut r = WriteReport::default();
        judge(&mut r, 0, &tags(&["a"]), Some(tags(&["a"])));
        judge(&mut r, 1, &tags(&["a"]), Some(Known::Absent));
        judge(&mut r, 2, &tags(&["a"]), Some(tags(&["b"])));
        judge(&mut r, 3, &Known::Absent, Some(tags(&["b"])));
        judge(&mut r, 4, &Known::Absent, Some(Known::Absent));
        judge(&mut r, 5, &Known::Absent, None);
        assert_eq!(
            (
                r.checked,
                r.matched,
                r.lost,
                r.wrong_tags,
                r.resurrected,
                r.read_errors
            ),
            (6, 2, 1, 1, 1, 1)
        );
        assert_eq!(r.lost_total(), 3);
        assert_eq!(r.examples.len(), 3);
        assert_eq!(
            outcome_state(b"<a><State>Completed</State></a>"),
            "Completed"
        );
        assert_eq!(outcome_state(b"<a/>"), "?");
    }
}
