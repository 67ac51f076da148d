//! Template sends on the delivery side: resolving the devices whose templates match, rendering
//! each matching template with the send's properties into a native payload, and feeding the
//! pushes into the pools like any other send's.

use std::sync::Arc;

use bytes::Bytes;

use super::job::{Final, Job};
use super::pool::{Device, Pool};
use super::{Dispatcher, OnSuspend, Paced, Remaining};
use crate::model::Platform;
use crate::payload::Notification;
use crate::registry::{Audience, TemplateTarget};
use crate::template::Properties;

impl Dispatcher {
    /// Runs `f` (an audience resolution) on a blocking thread, or on this one when `inline`
    /// (a point lookup: a hash lookup per partition, cheaper than the hand-off). `None` when
    /// there is no registry or the resolution failed; the job then has audience 0 (and the
    /// error).
    pub(super) async fn resolve_blocking<R: Send + 'static>(
        &self,
        job: &Job,
        inline: bool,
        f: impl FnOnce(crate::registry::Registry) -> R + Send + 'static,
    ) -> Option<R> {
        let Some(reg) = self.inner.registry.clone() else {
            job.set_audience(0);
            return None;
        };
        if inline {
            // A panic here is a bug; it ends this send (as on the blocking pool), not the
            // feeder's task with the send never ended.
            return match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(reg))) {
                Ok(r) => Some(r),
                Err(_) => {
                    job.error("resolving the audience failed: it panicked".to_string());
                    job.set_audience(0);
                    None
                }
            };
        }
        match tokio::task::spawn_blocking(move || f(reg)).await {
            Ok(r) => Some(r),
            Err(e) => {
                job.error(format!("resolving the audience failed: {e}"));
                job.set_audience(0);
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn feed_templates(
        &self,
        job: &Arc<Job>,
        audience: Audience,
        only: Option<Vec<crate::model::InstallationId>>,
        batch_size: usize,
        paced: &mut Paced,
        last: &mut Option<(Platform, String, Arc<Pool>)>,
        on_suspend: OnSuspend<'_>,
    ) {
        let kept = audience.clone();
        let inline = audience.is_point_lookup();
        let resolved = self.resolve_blocking(job, inline, move |reg| {
            let mut r = reg.resolve_templates(&audience);
            if let Some(ids) = &only {
                r.retain_installations(ids);
            }
            r
        });
        let Some(resolution) = resolved.await else {
            return;
        };
        // Pushes counted by an earlier run of a resumed send.
        let earlier = job.resumed_audience.unwrap_or(0);
        job.set_audience(earlier + resolution.candidates());
        let empty = Properties::new();
        let props = job.template.as_ref().unwrap_or(&empty);
        let mut pushes = 0u64;
        let mut body = Vec::with_capacity(1024);
        let mut batches = resolution.batches(batch_size);
        'feed: loop {
            if job.is_cancelled() {
                break;
            }
            let Some(batch) = batches.next() else { break };
            let mut batch = batch.into_iter();
            while let Some(t) = batch.next() {
                // One push per matching template; a device's permits are taken together
                // (capped by the window so a device with very many templates cannot block).
                let n = t.matching.len().min(1024);
                if !self.admit(job, n, paced).await {
                    if job.is_suspending() {
                        let rest = std::iter::once(t)
                            .chain(batch)
                            .chain(batches.flatten())
                            .map(|t| t.target.installation_id);
                        on_suspend(job, kept, Remaining::Installations(rest.collect()));
                    }
                    break 'feed;
                }
                pushes += self
                    .push_templates(job, &t, n, props, &mut body, last)
                    .await;
            }
        }
        job.set_audience_exact(earlier + pushes);
    }

    /// Routes the first `n` matching templates of `t`, each rendered with `props` (one push
    /// each; one that does not render is rejected); returns `n`.
    async fn push_templates(
        &self,
        job: &Arc<Job>,
        t: &TemplateTarget,
        n: usize,
        props: &Properties,
        body: &mut Vec<u8>,
        last: &mut Option<(Platform, String, Arc<Pool>)>,
    ) -> u64 {
        for name in t.matching.iter().take(n) {
            let platform = t.target.handle.platform();
            let device = Device {
                installation: Some(t.target.installation_id.clone()),
                handle: t.target.handle.clone(),
            };
            match self.render(t, name, props, body) {
                Ok(n) => self.route(job, device, Some(Box::new(n)), last).await,
                Err(why) => {
                    job.targeted(platform, 1);
                    job.finish(platform, Final::Rejected(why.into()), 1);
                }
            }
        }
        n as u64
    }

    /// Feeds the pushes of given template targets (a cluster partition's claimed range of a
    /// template send; the properties are the job's): one per matching template, as
    /// [`Dispatcher::feed_templates`] does for an audience.
    #[cfg(feature = "cluster")]
    pub(super) async fn feed_template_targets(
        &self,
        job: &Arc<Job>,
        targets: Vec<TemplateTarget>,
        paced: &mut Paced,
        last: &mut Option<(Platform, String, Arc<Pool>)>,
    ) {
        job.set_audience(targets.iter().map(|t| t.matching.len() as u64).sum());
        let empty = Properties::new();
        let props = job.template.as_ref().unwrap_or(&empty);
        let mut pushes = 0u64;
        let mut body = Vec::with_capacity(1024);
        for t in &targets {
            if job.is_cancelled() {
                break;
            }
            let n = t.matching.len().min(1024);
            if !self.admit(job, n, paced).await {
                break;
            }
            pushes += self.push_templates(job, t, n, props, &mut body, last).await;
        }
        job.set_audience_exact(pushes);
    }

    /// Renders template `name` of `t` into a native notification for its platform; the error
    /// is the reason the push is rejected.
    fn render(
        &self,
        t: &TemplateTarget,
        name: &str,
        props: &Properties,
        body: &mut Vec<u8>,
    ) -> Result<Notification, String> {
        let platform = t.target.handle.platform();
        let template = t
            .templates
            .get(name)
            .ok_or_else(|| format!("template {name:?} is gone"))?;
        let compiled = self
            .inner
            .templates
            .get_or_compile(template)
            .map_err(|e| format!("template {name:?}: {e}"))?;
        body.clear();
        let rendered = compiled
            .render(props, body)
            .map_err(|e| format!("template {name:?}: {e}"))?;
        let mut headers: Vec<(String, String)> = rendered
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if let Some(expiry) = rendered.expiry() {
            if platform == Platform::Apns {
                headers.push((
                    "ServiceBusNotification-Apns-Expiry".to_owned(),
                    expiry.to_owned(),
                ));
            }
        }
        Notification::from_native(platform, Bytes::copy_from_slice(body), &headers)
            .map_err(|e| format!("template {name:?}: {e}"))
    }
}
