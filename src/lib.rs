//! tagcast: a push-notification broadcast fan-out engine.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audience;
pub mod registry;
mod tag;

pub use audience::{ExprError, ExprLimits, ExprNode, TagExpr, TagRef};
pub use registry::model::{InvalidInput, PushHandle, WebPushSubscription};
pub use registry::store::StoreError;
pub use registry::{
    Audience, Installation, InstallationId, PatchOp, Platform, PruneReport, PruneRequest, Registry,
    RegistryConfig, RegistryError, RegistryStats, Resolution, Target, Template, UserId,
    WriteOutcome,
};
pub use tag::{is_tag_char, Tag, TagError, MAX_TAG_LEN, TAG_ALPHABET};
