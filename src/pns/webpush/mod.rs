//! Web Push (RFC 8030, 8291, 8292; pns-protocols.md §4): payload, VAPID credentials, message
//! encryption, request, answers.

pub(crate) mod answer;
pub(crate) mod credentials;
pub(crate) mod ece;
pub(crate) mod native;
pub(crate) mod payload;
mod request;
mod settings;

pub(crate) use credentials::VapidCache;
pub use credentials::VapidKey;
pub use payload::{WebPushNotification, WebPushUrgency};
pub(crate) use request::WebPush;
pub use settings::WebPushSettings;
