//! Firebase Cloud Messaging HTTP v1 (pns-protocols.md §2): payload, service-account
//! credentials, request, answers.

pub(crate) mod answer;
pub(crate) mod credentials;
pub(crate) mod native;
pub(crate) mod payload;
mod request;
mod settings;

pub use credentials::FcmServiceAccount;
pub use payload::FcmNotification;
pub(crate) use request::Fcm;
pub use settings::{FcmSettings, FCM_ENDPOINT};
