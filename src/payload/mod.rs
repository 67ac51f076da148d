//! Notifications as callers write them: the native payloads of every service and Notification
//! Hubs' native parts ([`NativeParts`]), each defined in its folder of [`crate::pns`] (the
//! rules of the parts in `pns/<service>/native.rs`) and re-exported here, and the tests of
//! every payload against the mock services.
//!
//! A [`Notification`] carries at most one native payload per platform ([`ApnsNotification`],
//! [`FcmNotification`], [`WnsNotification`], [`WebPushNotification`]); devices of a platform
//! without one are skipped. Every payload is checked when it is built ("parse, don't
//! validate"): a payload that exists fits its service's documented limits
//! (`pns-protocols.md` §1.2–§1.5, §2.1, §3.2–§3.3, §4.1–§4.2), so nothing over a limit is ever
//! sent, and the [`PayloadError`] names the value and the limit.
//!
//! What the transports take per device is prepared once here: APNs, WNS and Web Push bodies
//! are shared `Bytes` (a reference-count increment per device), the header sets are built from
//! checked values, and an FCM body is one allocation and three copies per device
//! (`FcmNotification::body_for_token`).

#[cfg(test)]
mod mock_tests;

pub use crate::pns::{
    ApnsNotification, ApnsPriority, ApnsPushType, FcmNotification, NativeParts, Notification,
    PayloadError, WebPushNotification, WebPushUrgency, WnsNotification, WnsType,
};

pub(crate) use crate::pns::json_type_name;
