//! Pruning dead handles from the registry, in durable batches, with the APNs 410 race guard
//! (an installation written after the handle became invalid is kept).
//!
//! Dead verdicts arrive on a bounded channel (a full channel slows the connections that
//! produce them); the pruner gathers up to `batch` of them or what arrives within `LINGER`,
//! and calls [`Registry::prune`] once per send and platform on the blocking pool. A device's
//! final outcome (pruned, kept, or already gone) is recorded only once its prune is durable.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::job::{Final, Job};
use crate::events::{Event, WeakEventLog};
use crate::model::InstallationId;
use crate::model::PushHandle;
use crate::pns::verdict::Reason;
use crate::registry::{PruneRequest, Registry};

/// How long the pruner waits for more dead handles before writing a partial batch.
const LINGER: Duration = Duration::from_millis(5);

pub(crate) struct PruneItem {
    pub(crate) job: Arc<Job>,
    pub(crate) installation: InstallationId,
    pub(crate) handle: PushHandle,
    pub(crate) invalid_since: Option<SystemTime>,
    /// The service's reason, for the `installation.pruned` event.
    pub(crate) reason: Reason,
}

/// Starts the pruner; it ends when every sender is dropped.
pub(crate) fn spawn(
    registry: Option<Registry>,
    batch: usize,
    events: Option<WeakEventLog>,
) -> mpsc::Sender<PruneItem> {
    let batch = batch.max(1);
    let (tx, mut rx) = mpsc::channel::<PruneItem>(batch * 4);
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(batch);
        while let Some(first) = rx.recv().await {
            buf.push(first);
            let deadline = tokio::time::Instant::now() + LINGER;
            while buf.len() < batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(item)) => buf.push(item),
                    _ => break,
                }
            }
            flush(&registry, &events, std::mem::take(&mut buf)).await;
        }
    });
    tx
}

type Group = (
    Arc<Job>,
    crate::model::Platform,
    Vec<PruneRequest>,
    Vec<Reason>,
);

async fn flush(registry: &Option<Registry>, events: &Option<WeakEventLog>, items: Vec<PruneItem>) {
    // Group by send and platform: a prune report is per call.
    let mut groups: Vec<Group> = Vec::new();
    for it in items {
        let p = it.handle.platform();
        let req = PruneRequest {
            installation_id: it.installation,
            handle: it.handle,
            invalid_since: it.invalid_since,
        };
        match groups
            .iter_mut()
            .find(|(j, gp, _, _)| Arc::ptr_eq(j, &it.job) && *gp == p)
        {
            Some(g) => {
                g.2.push(req);
                g.3.push(it.reason);
            }
            None => groups.push((it.job, p, vec![req], vec![it.reason])),
        }
    }
    for (job, p, reqs, reasons) in groups {
        let n = reqs.len() as u64;
        let job_id = job.id.to_string();
        let Some(reg) = job.prune_into.clone().or_else(|| registry.clone()) else {
            job.finish(
                p,
                Final::Dead {
                    pruned: false,
                    kept: false,
                },
                n,
            );
            continue;
        };
        let events = events.as_ref().and_then(WeakEventLog::upgrade);
        let result = tokio::task::spawn_blocking(move || {
            let mut gone = Vec::new();
            let r = reg.prune_marking(&reqs, &mut |i| gone.push(i));
            if let (Ok(_), Some(ev)) = (&r, &events) {
                // The prunes are durable: record them, one event per installation.
                let batch: Vec<Event> = gone
                    .into_iter()
                    .map(|i| {
                        Event::installation_pruned(
                            reqs[i].installation_id.as_str(),
                            p.as_str(),
                            &reasons[i],
                            reqs[i].invalid_since,
                        )
                        .with_notification(job_id.clone())
                    })
                    .collect();
                if !batch.is_empty() {
                    if let Err(e) = ev.append_batch(batch) {
                        tracing::warn!("recording installation.pruned failed: {e}");
                    }
                }
            }
            r
        })
        .await;
        match result {
            Ok(Ok(report)) => {
                let pruned = report.pruned as u64;
                let kept = report.kept_updated as u64;
                let gone = n - pruned - kept;
                metrics::counter!(super::metrics::PRUNED, "platform" => p.as_str())
                    .increment(pruned);
                if pruned > 0 {
                    job.finish(
                        p,
                        Final::Dead {
                            pruned: true,
                            kept: false,
                        },
                        pruned,
                    );
                }
                if kept > 0 {
                    job.finish(
                        p,
                        Final::Dead {
                            pruned: false,
                            kept: true,
                        },
                        kept,
                    );
                }
                if gone > 0 {
                    job.finish(
                        p,
                        Final::Dead {
                            pruned: false,
                            kept: false,
                        },
                        gone,
                    );
                }
            }
            Ok(Err(e)) => {
                job.error(format!("pruning dead {p} handles failed: {e}"));
                job.finish(
                    p,
                    Final::Dead {
                        pruned: false,
                        kept: false,
                    },
                    n,
                );
            }
            Err(e) => {
                job.error(format!("pruning dead {p} handles panicked: {e}"));
                job.finish(
                    p,
                    Final::Dead {
                        pruned: false,
                        kept: false,
                    },
                    n,
                );
            }
        }
    }
}
