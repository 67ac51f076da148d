//! A hub's installations wherever they live: its own registry (single node) or its cluster
//! node's partition owners (`[cluster]`). The handlers that read and write single
//! installations by version (ETag, `If-Match`, PATCH) and list them (the registrations API)
//! go through [`Devices`], so both modes answer the same way.

use http::{HeaderMap, StatusCode};

use super::cluster::ClusterHub;
use super::http::Fail;
use super::Hub;
use crate::cluster::{ListFilter, NodeError, Smallest};
use crate::{
    Audience, Installation, InstallationId, PatchOp, Precondition, Registry, RegistryError,
    TagExpr, Version,
};

/// `If-Match` as a precondition of the write: absent is none, `*` is "exists", an ETag is
/// "exactly this version" (one this server did not issue can never match: 412).
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Precondition, Fail> {
    let Some(v) = headers.get(http::header::IF_MATCH) else {
        return Ok(Precondition::Any);
    };
    let v = v
        .to_str()
        .map_err(|_| Fail::bad("If-Match is not visible ASCII"))?;
    Ok(
        match crate::nh::headers::if_match(v).map_err(|e| Fail::bad(e.to_string()))? {
            crate::nh::headers::IfMatch::Any => Precondition::Exists,
            crate::nh::headers::IfMatch::ETag(want) => match want.parse::<Version>() {
                Ok(v) => Precondition::Version(v),
                Err(_) => {
                    return Err(Fail::new(
                        StatusCode::PRECONDITION_FAILED,
                        "the installation changed since it was read (ETag mismatch)",
                    ))
                }
            },
        },
    )
}

/// Where a hub's installations are.
pub(crate) enum Devices<'a> {
    Local(&'a Registry),
    Cluster(&'a ClusterHub),
}

/// A conditional write that did not happen: its precondition failed (a 412, or a 404 when
/// the installation is gone); the hub cannot take writes (its storage failed, or no
/// partition owner answered: the write may or may not have been applied), which stops an
/// import job; or the write was refused.
pub(crate) enum WriteFail {
    Precondition(Option<Version>),
    Unavailable(Fail),
    Other(Fail),
}

impl From<WriteFail> for Fail {
    fn from(e: WriteFail) -> Fail {
        match e {
            WriteFail::Precondition(None) => Fail::not_found("Installation not found."),
            WriteFail::Precondition(Some(_)) => Fail::new(
                StatusCode::PRECONDITION_FAILED,
                "the installation changed since it was read (ETag mismatch)",
            ),
            WriteFail::Unavailable(f) | WriteFail::Other(f) => f,
        }
    }
}

impl From<RegistryError> for WriteFail {
    fn from(e: RegistryError) -> WriteFail {
        match e {
            RegistryError::VersionMismatch { current, .. } => WriteFail::Precondition(current),
            e @ (RegistryError::StorageFailed { .. } | RegistryError::Store(_)) => {
                WriteFail::Unavailable(e.into())
            }
            e => WriteFail::Other(e.into()),
        }
    }
}

impl From<NodeError> for WriteFail {
    fn from(e: NodeError) -> WriteFail {
        match e {
            NodeError::PreconditionFailed { current, .. } => WriteFail::Precondition(current),
            e @ NodeError::Unavailable { .. } => {
                WriteFail::Unavailable(super::cluster::node_fail(e))
            }
            e => WriteFail::Other(super::cluster::node_fail(e)),
        }
    }
}

impl<'a> Devices<'a> {
    pub(crate) fn of(hub: &'a Hub) -> Devices<'a> {
        match hub.cluster() {
            Some(c) => Devices::Cluster(c),
            None => Devices::Local(
                hub.registry("installations")
                    .expect("a hub without a cluster has a registry"),
            ),
        }
    }

    /// The installation and its version (`None` only from a cluster owner of an older
    /// version).
    pub(crate) async fn get_versioned(
        &self,
        id: &InstallationId,
    ) -> Result<Option<(Installation, Option<Version>)>, Fail> {
        match self {
            Devices::Local(r) => Ok(r.get_versioned(id).map(|(i, v)| (i, Some(v)))),
            Devices::Cluster(c) => c.get_versioned(id).await,
        }
    }

    /// Writes `inst` durably if `pre` holds, checked with the write.
    pub(crate) async fn upsert_if(
        &self,
        inst: Installation,
        pre: Precondition,
    ) -> Result<(), WriteFail> {
        match self {
            Devices::Local(r) => r.upsert_if_async(inst, pre).await.map(drop)?,
            Devices::Cluster(c) => c.upsert_if(inst, pre).await.map(drop)?,
        }
        Ok(())
    }

    /// Deletes `id` durably if `pre` holds; whether it existed.
    pub(crate) async fn delete_if(
        &self,
        id: &InstallationId,
        pre: Precondition,
    ) -> Result<bool, WriteFail> {
        Ok(match self {
            Devices::Local(r) => r.delete_if_async(id, pre).await?,
            Devices::Cluster(c) => c.delete_if(id, pre).await?,
        })
    }

    /// Applies `ops` to exactly version `at`.
    pub(crate) async fn patch_at(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
        at: Version,
    ) -> Result<(), WriteFail> {
        match self {
            Devices::Local(r) => r.patch_at_async(id, ops, at).await.map(drop)?,
            Devices::Cluster(c) => c.patch_at(id, ops, at).await.map(drop)?,
        }
        Ok(())
    }

    /// One page of ids in id order: the `top` smallest after `after` that pass `filter`, and
    /// whether more follow. A bad filter is a 400.
    pub(crate) async fn list(
        &self,
        after: Option<String>,
        top: usize,
        filter: ListFilter,
    ) -> Result<(Vec<String>, bool), Fail> {
        if let ListFilter::Channel(f) = &filter {
            crate::nh::filter::check(f).map_err(Fail::bad)?;
        }
        if let ListFilter::Tags(e) = &filter {
            TagExpr::parse(e).map_err(|e| Fail::bad(format!("tag expression: {e}")))?;
        }
        match self {
            Devices::Cluster(c) => c.list(after.as_deref(), top, filter).await,
            Devices::Local(r) => {
                let reg = (*r).clone();
                // A scan of the hub: off the async threads, holding one page at a time.
                tokio::task::spawn_blocking(move || {
                    let mut pick = Smallest::new(after, top);
                    match filter {
                        ListFilter::All => reg.for_each_id(|id| pick.offer(id)),
                        ListFilter::Tags(e) => {
                            let expr = TagExpr::parse(&e).expect("checked above");
                            for batch in reg.resolve(&Audience::Expr(expr)).batches(4096) {
                                for t in batch {
                                    pick.offer(t.installation_id.as_str());
                                }
                            }
                        }
                        // Not asked of a local registry (test sends resolve it directly).
                        ListFilter::Matching(..) => {}
                        ListFilter::Channel(f) => reg.for_each(|inst| {
                            if pick.would_take(inst.id.as_str())
                                && crate::nh::filter::matches(&f, &inst).unwrap_or(false)
                            {
                                pick.offer(inst.id.as_str());
                            }
                        }),
                    }
                    pick.finish()
                })
                .await
                .map_err(Fail::internal)
            }
        }
    }
}
