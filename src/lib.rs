//! tagcast: a push-notification broadcast fan-out engine.
//!
//! Layout and data flow (see `docs/architecture.md`):
//!
//! ```text
//! registry (installations, tag index, durable log)  --slots-->  audience (tag expressions)
//!      ^                                                              |
//!      +------------------- prune (feedback) ------------------ targets in batches
//! ```
//!
//! - [`registry`]: installations ([`Installation`]), partitions with roaring-bitmap tag
//!   indexes, the durable chunked log in sled with group commit, compaction and recovery.
//! - [`audience`]: the tag-expression language ([`TagExpr`]) and its evaluation.
//!
//! Everything a user touches is re-exported here; no sled, rkyv, roaring or hashbrown type
//! appears in the public API.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audience;
#[doc(hidden)]
pub mod bench_support;
pub mod credentials;
pub mod dispatch;
pub mod feedback;
pub mod payload;
pub mod registry;
mod tag;
mod transport;

pub use audience::{ExprError, ExprLimits, ExprNode, TagExpr, TagRef};
pub use dispatch::{
    ApnsAuth, ApnsSettings, DispatchConfig, Engine, EngineConfig, EngineError, FcmSettings,
    NotificationId, PlatformOutcomes, RetryPolicy, SendError, SendHandle, SendReport, SendState,
    WebPushSettings, WnsSettings,
};
pub use registry::model::{InvalidInput, PushHandle, WebPushSubscription};
pub use registry::store::StoreError;
pub use registry::{
    Audience, Installation, InstallationId, PatchOp, Platform, PruneReport, PruneRequest, Registry,
    RegistryConfig, RegistryError, RegistryStats, Resolution, Target, Template, UserId,
    WriteOutcome,
};
pub use tag::{is_tag_char, Tag, TagError, MAX_TAG_LEN, TAG_ALPHABET};
pub use transport::{TlsRoots, TransportError};
