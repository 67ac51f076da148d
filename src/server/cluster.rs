//! Cluster mode in the server (`[cluster]`, issue 16): a hub served by a cluster node
//! ([`Node`]) instead of a local registry and engine. Installations go to their partition's
//! owner (through `devices.rs`, by version), registration listings to every owner, sends to
//! the hub's `NOTIFY` queue, outcomes come from `OUT`; a test send finds its devices at the
//! owners and sends them on this server's engine (docs/operations.md, "Cluster mode").
//!
//! ```text
//!  handler --> ClusterHub --> Node::upsert_if/patch_at/delete_if/get_versioned/list --> owner(s)
//!                        \--> NOTIFY accept / cancel        --> every node's driver
//!                        \--> OUT collect(home)              --> GET /messages/{id}
//! ```

use std::time::SystemTime;

use http::StatusCode;

use super::devices::WriteFail;
use super::http::Fail;
use super::ServerError;
use crate::cluster::notify::Totals;
use crate::cluster::{Cluster, ClusterConfig, Delivery, ListFilter, Node, NodeError};
use crate::{
    Content, Engine, Installation, InstallationId, NotificationId, PatchOp, Precondition, Registry,
    RegistryConfig, SendHandle, SendRequest, SendState, Target, Version, WriteOutcome,
};

/// The 501 of an operation cluster mode does not serve (none is routed here now: a handler
/// that asks for the local registry of a cluster hub gets it).
pub(crate) fn not_supported(what: &str) -> Fail {
    Fail::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{what} is not supported in cluster mode yet (docs/operations.md, \"Cluster \
             mode\", lists what is)"
        ),
    )
}

/// A hub's cluster node. The node sits behind a lock only so that shutdown can take it
/// (dropping it stops its tasks) while handlers share it.
pub(crate) struct ClusterHub {
    node: tokio::sync::RwLock<Option<Node>>,
    /// Set by the first round, read by `/readyz` without the lock.
    joined: std::sync::atomic::AtomicBool,
    delivery: Delivery,
    partitions: u16,
    /// `[cluster] leave_timeout_ms`.
    leave_within: std::time::Duration,
    /// The partitions' registry settings (a test send checks its devices with them).
    registry: RegistryConfig,
    /// The engine the node runs sends on (a test send's devices are sent on it).
    engine: Engine,
}

impl ClusterHub {
    /// Connects hub `hub` to the cluster, starts its node and its send loop on `engine`
    /// (an engine without a registry: each partition's registry is given per send).
    pub(crate) async fn start(
        config: &ClusterConfig,
        hub: &str,
        registry: RegistryConfig,
        engine: Engine,
    ) -> Result<ClusterHub, ServerError> {
        let cluster =
            Cluster::connect(config.clone(), hub)
                .await
                .map_err(|e| ServerError::Hub {
                    hub: hub.to_owned(),
                    message: e.to_string(),
                })?;
        let mut node = Node::start(cluster, registry.clone());
        node.run_sends(engine.clone());
        Ok(ClusterHub {
            node: tokio::sync::RwLock::new(Some(node)),
            joined: std::sync::atomic::AtomicBool::new(false),
            delivery: config.delivery,
            partitions: config.partitions,
            leave_within: std::time::Duration::from_millis(config.leave_timeout_ms),
            registry,
            engine,
        })
    }

    /// Whether the node finished its first round (`/readyz`).
    pub(crate) fn joined(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.joined.load(Ordering::Acquire) {
            return true;
        }
        let now = self
            .node
            .try_read()
            .ok()
            .and_then(|n| n.as_ref().map(Node::joined))
            .unwrap_or(false);
        if now {
            self.joined.store(true, Ordering::Release);
        }
        now
    }

    /// Stops the node: first a planned leave (its partitions handed to their new owners
    /// within `[cluster] leave_timeout_ms`, requests routed to them meanwhile), then, once the
    /// operations in progress on it ended, its tasks. What is still owned then is taken by
    /// the others after lease + margin, as after a crash.
    pub(crate) async fn stop(&self) {
        if !self.leave_within.is_zero() {
            if let Some(node) = self.node.read().await.as_ref() {
                if let Err(e) = node.leave(self.leave_within).await {
                    tracing::warn!(node = %node.name(), error = %e, "planned leave failed");
                }
            }
        }
        let node = self.node.write().await.take();
        drop(node);
    }

    /// The node, read-locked for the operation (shutdown waits for it); 503 once stopped.
    async fn node(&self) -> Result<tokio::sync::RwLockReadGuard<'_, Node>, Fail> {
        tokio::sync::RwLockReadGuard::try_map(self.node.read().await, Option::as_ref)
            .map_err(|_| Fail::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").retry_after(1))
    }

    pub(crate) async fn patch(&self, id: &InstallationId, ops: &[PatchOp]) -> Result<(), Fail> {
        self.node().await?.patch(id, ops).await.map_err(node_fail)?;
        Ok(())
    }

    pub(crate) async fn get_versioned(
        &self,
        id: &InstallationId,
    ) -> Result<Option<(Installation, Option<Version>)>, Fail> {
        self.node()
            .await?
            .get_versioned(id)
            .await
            .map_err(node_fail)
    }

    /// A node that is shutting down is a [`WriteFail::Unavailable`]; the node's answer as
    /// it is.
    pub(crate) async fn upsert_if(
        &self,
        inst: Installation,
        pre: Precondition,
    ) -> Result<WriteOutcome, WriteFail> {
        let node = self.node().await.map_err(WriteFail::Unavailable)?;
        Ok(node.upsert_if(inst, pre).await?)
    }

    pub(crate) async fn delete_if(
        &self,
        id: &InstallationId,
        pre: Precondition,
    ) -> Result<bool, WriteFail> {
        let node = self.node().await.map_err(WriteFail::Unavailable)?;
        Ok(node.delete_if(id, pre).await?)
    }

    pub(crate) async fn patch_at(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
        at: Version,
    ) -> Result<WriteOutcome, WriteFail> {
        let node = self.node().await.map_err(WriteFail::Unavailable)?;
        Ok(node.patch_at(id, ops, at).await?)
    }

    /// The hub's partitions.
    pub(crate) fn partitions(&self) -> u16 {
        self.partitions
    }

    /// One page of partition `p`'s ids from its owner ([`Node::list_partition`]).
    pub(crate) async fn list_partition(
        &self,
        p: u16,
        after: Option<&str>,
        top: usize,
    ) -> Result<(Vec<String>, bool), Fail> {
        self.node()
            .await?
            .list_partition(p, after, top, ListFilter::All)
            .await
            .map_err(node_fail)
    }

    /// One page of the hub's ids from every partition's owner ([`Node::list`]).
    pub(crate) async fn list(
        &self,
        after: Option<&str>,
        top: usize,
        filter: ListFilter,
    ) -> Result<(Vec<String>, bool), Fail> {
        self.node()
            .await?
            .list(after, top, filter)
            .await
            .map_err(node_fail)
    }

    /// Stores a send in `NOTIFY` under a fresh notification id (with the configured
    /// `delivery`); every node runs it on the partitions it owns, at or after `not_before`.
    pub(crate) async fn accept(
        &self,
        request: &SendRequest,
        not_before: Option<SystemTime>,
    ) -> Result<NotificationId, Fail> {
        self.node()
            .await?
            .send(request, self.delivery, not_before)
            .await
            .map_err(nats_fail)
    }

    /// Stores a cancel of `id` (a tombstone): partitions that have not started the send skip
    /// it; one that started finishes it.
    pub(crate) async fn cancel(&self, id: NotificationId) -> Result<(), Fail> {
        self.node()
            .await?
            .cluster()
            .notify()
            .cancel(id)
            .await
            .map_err(nats_fail)?;
        Ok(())
    }

    /// The send's totals summed at its home partition, `None` when no partition reported
    /// yet.
    pub(crate) async fn totals(&self, id: NotificationId) -> Result<Option<Totals>, Fail> {
        self.node().await?.totals(id).await.map_err(nats_fail)
    }

    /// A test send (`?test=true`): at most `max` matching devices, found by asking every
    /// partition's owner, each sent on this server's engine at once, one send per device
    /// (the caller waits for their reports). The devices are copied into a registry of
    /// their own for the send, so a handle the push service calls dead is reported but not
    /// pruned from the hub.
    pub(crate) async fn test_send(
        &self,
        request: &SendRequest,
        max: usize,
    ) -> Result<Vec<(SendHandle, Target)>, Fail> {
        let audience = request.audience();
        // The owners resolve the audience as the send would: the first `max` devices it
        // reaches (channel not expired, platform, a matching template).
        let filter = ListFilter::Matching(
            crate::service::request::audience_to_string(audience),
            matches!(request.content(), Content::Template(_)),
        );
        let (ids, _) = self.list(None, max, filter).await?;
        let ids: Vec<InstallationId> = ids
            .into_iter()
            .filter_map(|id| InstallationId::new(id).ok())
            .collect();
        let copy = Registry::ephemeral(self.registry.clone()).map_err(Fail::internal)?;
        for id in ids.iter().take(max) {
            if let Some((inst, _)) = self.get_versioned(id).await? {
                // What the owner holds passed the same rules.
                copy.upsert(inst).map_err(Fail::internal)?;
            }
        }
        let mut sends = Vec::new();
        match request.content() {
            Content::Native(n) => {
                let targets: Vec<Target> = copy
                    .resolve(audience)
                    .batches(max)
                    .next()
                    .unwrap_or_default();
                for t in targets.into_iter().take(max) {
                    let h = self
                        .engine
                        .send_to_targets(n.clone(), &copy, vec![t.clone()], None)?;
                    sends.push((h, t));
                }
            }
            Content::Template(template) => {
                let targets = copy
                    .resolve_templates(audience)
                    .batches(max)
                    .next()
                    .unwrap_or_default();
                for t in targets.into_iter().take(max) {
                    let target = t.target.clone();
                    let h = self.engine.send_templates_to_targets(
                        template.clone(),
                        &copy,
                        vec![t],
                        None,
                    )?;
                    sends.push((h, target));
                }
            }
        }
        Ok(sends)
    }

    /// A send's state from its totals: Completed once every partition finished.
    pub(crate) fn state(&self, t: &Totals) -> SendState {
        if t.finished >= usize::from(self.partitions) {
            SendState::Completed
        } else {
            SendState::Processing
        }
    }
}

/// `Refused` is the owner's registry's verdict: 400 with its text. `Unavailable`: no owner
/// answered in time, the write may or may not have been applied: 503, retry. A failed
/// precondition: 412, or 404 when the installation does not exist.
pub(crate) fn node_fail(e: NodeError) -> Fail {
    match e {
        NodeError::Refused(m) => Fail::bad(m),
        e @ NodeError::PreconditionFailed { .. } => Fail::from(WriteFail::from(e)),
        e @ NodeError::Unavailable { .. } => {
            Fail::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).retry_after(5)
        }
    }
}

fn nats_fail(e: crate::cluster::ClusterError) -> Fail {
    Fail::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).retry_after(5)
}
