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

use super::classify::Reason;
use crate::dispatch::job::{Final, Job};
use crate::registry::model::PushHandle;
use crate::registry::{InstallationId, PruneRequest, Registry};

/// How long the pruner waits for more dead handles before writing a partial batch.
const LINGER: Duration = Duration::from_millis(5);

pub(crate) struct PruneItem {
    pub(crate) job: Arc<Job>,
    pub(crate) installation: InstallationId,
    pub(crate) handle: PushHandle,
    pub(crate) invalid_since: Option<SystemTime>,
    #[allow(dead_code)] // kept for the events of the templates/events issue
    pub(crate) reason: Reason,
}

/// Starts the pruner; it ends when every sender is dropped.
pub(crate) fn spawn(registry: Option<Registry>, batch: usize) -> mpsc::Sender<PruneItem> {
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
            flush(&registry, std::mem::take(&mut buf)).await;
        }
    });
    tx
}

async fn flush(registry: &Option<Registry>, items: Vec<PruneItem>) {
    // Group by send and platform: a prune report is per call.
    let mut groups: Vec<(Arc<Job>, crate::registry::Platform, Vec<PruneRequest>)> = Vec::new();
    for it in items {
        let p = it.handle.platform();
        let req = PruneRequest {
            installation_id: it.installation,
            handle: it.handle,
            invalid_since: it.invalid_since,
        };
        match groups
            .iter_mut()
            .find(|(j, gp, _)| Arc::ptr_eq(j, &it.job) && *gp == p)
        {
            Some(g) => g.2.push(req),
            None => groups.push((it.job, p, vec![req])),
        }
    }
    for (job, p, reqs) in groups {
        let n = reqs.len() as u64;
        let Some(reg) = registry.clone() else {
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
        let result = tokio::task::spawn_blocking(move || reg.prune(&reqs)).await;
        match result {
            Ok(Ok(report)) => {
                let pruned = report.pruned as u64;
                let kept = report.kept_updated as u64;
                let gone = n - pruned - kept;
                metrics::counter!(crate::dispatch::metrics::PRUNED, "platform" => p.as_str())
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
