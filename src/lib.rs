//! tagcast: a push-notification broadcast fan-out engine.
//!
//! Modules, from the leaves up (each imports only modules listed before it; the module graph
//! and the walk of one notification are in `docs/architecture.md`):
//!
//! - `model`: the vocabulary every stage shares ([`Platform`], [`PerPlatform`], [`PushHandle`],
//!   [`InstallationId`], [`UserId`], [`Tag`], [`Template`], [`Installation`]); imports nothing.
//! - `time`: RFC 3339 date-times, HTTP-dates and `Retry-After`; imports nothing.
//! - `transport`: TLS, HTTP/2 and HTTP/1.1 connections (resolved addresses checked against the
//!   endpoint policy of `model`); imports `model`.
//! - `state`: the engine's own durable store ([`StateStore`]).
//! - `audience`: the tag-expression language ([`TagExpr`]).
//! - `pns`: one folder per push service (payload, credentials, request, answer) over a shared
//!   toolkit (verdicts, the protocol trait, JWT, OAuth); [`Notification`] holds one payload
//!   per service.
//! - `payload`: Notification Hubs' native formats ([`NativeParts`]) and the payload types.
//! - [`template`]: Notification Hubs' template language, compiled once, rendered per device.
//! - `registry`: installations ([`Registry`]), partitions with roaring-bitmap tag indexes,
//!   resolution of audiences, the durable chunked log in sled with group commit and recovery.
//! - [`events`]: the durable, searchable event log ([`EventLog`]) and its webhook
//!   subscriptions (signed CloudEvents, at least once, ordered, dead letters).
//! - `dispatch`: delivery: pools of persistent connections per credential, the feeders, the
//!   sans-IO delivery decisions, pruning; the configuration types ([`EngineConfig`]).
//! - `service`: the [`Engine`] above delivery: sends, schedules, outcome history, suspension
//!   and resumption.
//! - `server` and `nh` (feature `server`, on by default): `tagcast serve`, Notification Hubs'
//!   REST API.
//!
//! Everything a user touches is re-exported here; no sled, rkyv, roaring or hashbrown type
//! appears in the public API.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audience;
/// Internal hooks for the benches, fuzz targets and property tests: not part of the API, may
/// change in any release. Built only with the `bench-support` feature (and in unit tests).
#[cfg(any(test, feature = "bench-support"))]
#[doc(hidden)]
pub mod bench_support;
/// Cluster mode on NATS JetStream (issue 16; in progress: see the module's docs).
#[cfg(feature = "cluster")]
pub mod cluster;
/// The credentials each push service takes (each defined in its folder of `pns`).
pub mod credentials {
    pub use crate::pns::{
        ApnsCertificate, ApnsKey, CredentialError, FcmServiceAccount, VapidKey, WnsCredentials,
        DEFAULT_APNS_TOKEN_RENEWAL,
    };
}
mod dispatch;
pub mod events;
mod model;
#[cfg(feature = "server")]
pub mod nh;
mod payload;
mod pns;
mod registry;
#[cfg(feature = "server")]
pub mod server;
mod service;
mod state;
pub mod template;
mod time;
mod transport;

pub use audience::{ExprError, ExprLimits, ExprNode, TagExpr, TagRef};
pub use dispatch::metrics;
pub use dispatch::{
    DispatchConfig, EngineConfig, EngineError, NotificationId, Pace, PlatformOutcomes, RetryPolicy,
    SendReport, SendState, DEFAULT_RETENTION,
};
pub use events::{
    verify_signature, DeadLetter, Event, EventKind, EventLog, EventQuery, EventsConfig,
    EventsError, LoggedEvent, Order, SubscriptionState, SubscriptionStatus, WebhookConfig,
    WebhookSecret,
};
pub use model::{is_tag_char, Tag, TagError, MAX_TAG_LEN, TAG_ALPHABET};
pub use model::{InvalidInput, PerPlatform, PushHandle, WebPushSubscription};
pub use payload::{
    ApnsNotification, ApnsPriority, ApnsPushType, FcmNotification, NativeParts, Notification,
    PayloadError, WebPushNotification, WebPushUrgency, WnsNotification, WnsType,
};
pub use pns::{
    ApnsAuth, ApnsCertificate, ApnsKey, ApnsSettings, CredentialError, FcmServiceAccount,
    FcmSettings, VapidKey, WebPushSettings, WnsCredentials, WnsSettings, APNS_PRODUCTION,
    APNS_SANDBOX, FCM_ENDPOINT,
};
pub use registry::store::StoreError;
pub use registry::MAX_TAGS_LIMIT;
pub use registry::{
    Audience, Installation, InstallationId, PatchOp, Platform, Precondition, PruneReport,
    PruneRequest, Registry, RegistryConfig, RegistryError, RegistryStats, Resolution, Target,
    Template, TemplateBatches, TemplateResolution, TemplateTarget, UserId, Version, WriteOutcome,
    STORAGE_FAILED_METRIC as REGISTRY_STORAGE_FAILED_METRIC,
};
pub use service::{
    Content, Engine, ScheduledSend, SendError, SendHandle, SendRequest, TemplateSend,
};
pub use state::{StateConfig, StateError, StateStore, StorageFailure};
pub use template::Properties;
pub use transport::{TlsRoots, TransportError};
