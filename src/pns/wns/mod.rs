//! Windows Push Notification Services (pns-protocols.md §3): payload, OAuth credentials,
//! request, answers.

pub(crate) mod answer;
pub(crate) mod credentials;
pub(crate) mod native;
pub(crate) mod payload;
mod request;
mod settings;

pub use credentials::WnsCredentials;
pub use payload::{WnsNotification, WnsType};
pub(crate) use request::Wns;
pub use settings::WnsSettings;
