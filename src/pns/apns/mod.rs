//! Apple Push Notification service (pns-protocols.md §1): payload, credentials (provider
//! token or certificate), request, answers.

pub(crate) mod answer;
pub(crate) mod credentials;
pub(crate) mod native;
pub(crate) mod payload;
mod request;
mod settings;

pub(crate) use credentials::ApnsTokenCache;
pub use credentials::{ApnsCertificate, ApnsKey, DEFAULT_APNS_TOKEN_RENEWAL};
pub use payload::{ApnsNotification, ApnsPriority, ApnsPushType};
pub(crate) use request::Apns;
pub use settings::{ApnsAuth, ApnsSettings, APNS_PRODUCTION, APNS_SANDBOX};
