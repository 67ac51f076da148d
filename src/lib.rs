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
//! - [`events`]: the durable, searchable event log ([`EventLog`]) and its webhook
//!   subscriptions (signed CloudEvents, at least once, ordered, dead letters).
//! - [`template`]: Notification Hubs' template language, compiled once and rendered per device.
//!
//! Everything a user touches is re-exported here; no sled, rkyv, roaring or hashbrown type
//! appears in the public API.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audience;
/// Internal hooks for the benches, fuzz targets and property tests: not part of the API, may
/// change in any release. Built only with the `bench-support` feature (and in unit tests).
#[cfg(any(test, feature = "bench-support"))]
#[doc(hidden)]
pub mod bench_support;
/// The credentials each push service takes (each defined in its folder of `pns`).
pub mod credentials {
    pub use crate::pns::{
        ApnsCertificate, ApnsKey, CredentialError, FcmServiceAccount, VapidKey, WnsCredentials,
        DEFAULT_APNS_TOKEN_RENEWAL,
    };
}
pub mod dispatch;
pub mod events;
pub mod model;
#[cfg(feature = "server")]
pub mod nh;
pub mod payload;
mod pns;
pub mod registry;
#[cfg(feature = "server")]
pub mod server;
pub mod state;
pub mod template;
mod time;
mod transport;

pub use audience::{ExprError, ExprLimits, ExprNode, TagExpr, TagRef};
pub use dispatch::{
    ApnsAuth, ApnsSettings, Content, DispatchConfig, Engine, EngineConfig, EngineError,
    FcmSettings, NotificationId, Pace, PlatformOutcomes, RetryPolicy, ScheduledSend, SendError,
    SendHandle, SendReport, SendRequest, SendState, TemplateSend, WebPushSettings, WnsSettings,
};
pub use events::{
    verify_signature, DeadLetter, Event, EventKind, EventLog, EventQuery, EventsConfig,
    EventsError, LoggedEvent, Order, SubscriptionState, SubscriptionStatus, WebhookConfig,
    WebhookSecret,
};
pub use model::{is_tag_char, Tag, TagError, MAX_TAG_LEN, TAG_ALPHABET};
pub use model::{InvalidInput, PushHandle, WebPushSubscription};
pub use payload::{
    ApnsNotification, ApnsPriority, ApnsPushType, FcmNotification, NativeParts, Notification,
    PayloadError, WebPushNotification, WebPushUrgency, WnsNotification, WnsType,
};
pub use pns::{
    ApnsCertificate, ApnsKey, CredentialError, FcmServiceAccount, VapidKey, WnsCredentials,
};
pub use registry::store::StoreError;
pub use registry::{
    Audience, Installation, InstallationId, PatchOp, Platform, PruneReport, PruneRequest, Registry,
    RegistryConfig, RegistryError, RegistryStats, Resolution, Target, Template, TemplateBatches,
    TemplateResolution, TemplateTarget, UserId, WriteOutcome,
};
pub use state::{StateError, StateStore};
pub use transport::{TlsRoots, TransportError};
