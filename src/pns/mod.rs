//! The push services, one folder each over a shared toolkit.
//!
//! Every service's folder has the same files (vector's sinks habit):
//!
//! | file | what it holds |
//! | --- | --- |
//! | `payload.rs` | the service's native payload, checked against its documented limits |
//! | `credentials.rs` | what the user gives to authenticate, and the token cache |
//! | `request.rs` | the request for one device: the service's [`request::Protocol`] |
//! | `answer.rs` | the service's answers into [`verdict::Verdict`]s, one golden test per row |
//! | `native.rs` | Notification Hubs' native body and headers into the payload and back, with their tests |
//! | `settings.rs` | what the user configures (e.g. [`ApnsSettings`]) and its `plan()`: what the service's pools are made of ([`plan::PoolPlan`]) |
//!
//! (Web Push also has `ece.rs`, RFC 8291 message encryption.) The toolkit beside them:
//! [`verdict`] (verdicts and the rules every service shares), [`request`] (the protocol
//! trait, the per-send header cache), [`plan`] (pool plans: credential by mechanism, fixed
//! endpoint or one pool per origin, wire), [`native`] (the native parts' shared helpers),
//! [`limits`] (payload errors), [`jwt`] and [`oauth`] (signing, token requests and responses
//! shared by APNs, FCM, WNS and VAPID), [`CredentialError`]. [`Notification`] holds one
//! payload per service.
//!
//! Adding a service (HMS, say) is one folder like these, and rows in tables: a variant of
//! [`crate::model::Platform`] and of [`crate::model::PushHandle`] (`model/`), one arm in each
//! function of the table below ([`from_native`], [`native_parts`], [`not_configured`], and
//! `protocol` for the benches) with the folder's module and re-exports, a field of
//! [`Notification`], an `EngineConfig` field with its arm in `EngineConfig::plan`
//! (`dispatch/mod.rs`), and the root re-exports (`lib.rs`). The dispatcher builds the pools
//! from the settings' plan without naming the service; a credential that works like an
//! existing one (HMS's OAuth client credentials) reuses its [`plan::Credential`] variant.
//!
//! Credentials at a glance:
//!
//! | service | what the user gives | what a connection gets | refresh |
//! |---|---|---|---|
//! | APNs token auth | [`ApnsKey`] (`.p8`, Key ID, Team ID) | `ApnsTokenCache::bearer` → `bearer <ES256 JWT>` | re-signed at 50 min (clamped 20–60), once per pool; `renew_if_issued_before` after `ExpiredProviderToken` |
//! | APNs certificate auth | [`ApnsCertificate`] (`.p12` or PEM) | `chain()` and `key()` for rustls client auth | — (certificates expire after a year) |
//! | FCM HTTP v1 | [`FcmServiceAccount`] (Google's JSON key) | `token_request_body` to POST to `token_uri`, then `parse_token_response` → `AccessToken` | `AccessToken::needs_refresh` (5 min or a tenth of the lifetime early) |
//! | WNS | [`WnsCredentials`] (Package SID, secret) | `token_request_body` to POST to `token_url`, then `parse_token_response` | as FCM |
//! | Web Push | [`VapidKey`] (P-256 key, contact) | `VapidCache::header(origin_of(endpoint), now)` and `ece::encrypt` for the body | header re-signed when < 1 h of its 12 h remains, per origin |
//!
//! Every value that exists is valid: constructors check keys (type, curve, size), identifiers
//! and URLs, and fail with a [`CredentialError`] that names the problem. `Debug` never prints
//! a secret. Caches are `Send + Sync` and shared by all connections of a pool; their read
//! paths take a read lock and clone an `Arc<str>`.

pub(crate) mod apns;
mod credential_error;
pub(crate) mod fcm;
pub(crate) mod jwt;
mod limits;
pub(crate) mod native;
mod notification;
pub(crate) mod oauth;
pub(crate) mod plan;
pub(crate) mod request;
pub(crate) mod verdict;
pub(crate) mod webpush;
pub(crate) mod wns;

use bytes::Bytes;

use crate::model::Platform;

pub use apns::{
    ApnsAuth, ApnsCertificate, ApnsKey, ApnsNotification, ApnsPriority, ApnsPushType, ApnsSettings,
    APNS_PRODUCTION, APNS_SANDBOX, DEFAULT_APNS_TOKEN_RENEWAL,
};
pub use credential_error::CredentialError;
pub use fcm::{FcmNotification, FcmServiceAccount, FcmSettings, FCM_ENDPOINT};
pub use limits::PayloadError;
pub(crate) use limits::{check_json_object_bytes, json_type_name, shorten};
pub use native::NativeParts;
pub use notification::Notification;
pub(crate) use oauth::{parse_token_response, AccessToken};
pub use webpush::{VapidKey, WebPushNotification, WebPushSettings, WebPushUrgency};
pub use wns::{WnsCredentials, WnsNotification, WnsSettings, WnsType};

// The table of services: one row per platform in each function below.

/// The request builder and answer reader of each platform with fixed settings, for the
/// benches (`bench_support`). The engine gets each service's from its settings' plan
/// (`<service>/settings.rs`). `origin` is the pool's `scheme://authority`; APNs needs the
/// app's bundle id (its topic), FCM the project id.
#[cfg(any(test, feature = "bench-support"))]
pub(crate) fn protocol(
    platform: Platform,
    origin: &str,
    apns_bundle_id: &str,
    fcm_project_id: &str,
) -> Result<std::sync::Arc<dyn request::Protocol>, String> {
    use std::sync::Arc;
    Ok(match platform {
        Platform::Apns => Arc::new(apns::Apns::new(origin, apns_bundle_id)?),
        Platform::Fcm => Arc::new(fcm::Fcm::new(origin, fcm_project_id)?),
        Platform::Wns => Arc::new(wns::Wns),
        Platform::WebPush => Arc::new(webpush::WebPush),
    })
}

/// Why a device of `platform` cannot be sent to when the engine has no settings for it.
pub(crate) fn not_configured(platform: Platform) -> &'static str {
    match platform {
        Platform::Apns => "no APNs credential configured",
        Platform::Fcm => "no FCM credential configured",
        Platform::Wns => "no WNS credential configured",
        Platform::WebPush => "no VAPID key configured",
    }
}

/// A notification for `platform` from Notification Hubs' native parts: each service's rules
/// are in its `native.rs` ([`Notification::from_native`] documents them).
fn from_native(
    platform: Platform,
    body: Bytes,
    headers: &[(String, String)],
) -> Result<Notification, PayloadError> {
    let n = Notification::new();
    Ok(match platform {
        Platform::Apns => n.apns(apns::native::from_native(body, headers)?),
        Platform::Fcm => n.fcm(fcm::native::from_native(&body, headers)?),
        Platform::Wns => n.wns(wns::native::from_native(body, headers)?),
        Platform::WebPush => n.web_push(webpush::native::from_native(body, headers)?),
    })
}

/// `n`'s payload for `platform` as a body and headers that [`from_native`] reads back.
fn native_parts(n: &Notification, platform: Platform) -> Option<(Bytes, Vec<(String, String)>)> {
    match platform {
        Platform::Apns => n.apns_part().map(apns::native::to_native),
        Platform::Fcm => n.fcm_part().map(fcm::native::to_native),
        Platform::Wns => n.wns_part().map(wns::native::to_native),
        Platform::WebPush => n.web_push_part().map(webpush::native::to_native),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials and caches are shared across tasks and threads (tokio's habit).
    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<ApnsKey>();
        check::<ApnsCertificate>();
        check::<apns::ApnsTokenCache>();
        check::<FcmServiceAccount>();
        check::<WnsCredentials>();
        check::<VapidKey>();
        check::<webpush::VapidCache>();
        check::<AccessToken>();
        check::<CredentialError>();
    }
}
