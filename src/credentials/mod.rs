//! PNS credentials: APNs provider tokens and certificates, FCM service accounts, WNS OAuth,
//! VAPID, and RFC 8291 message encryption. Sans-IO: signing and parsing only; the transports
//! do the HTTP exchanges.
//!
//! | service | what the user gives | what a transport gets | refresh |
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
//!
//! Files: `jwt` (JWS signing, base64url), `apns`, `fcm`, `oauth` (token responses and form
//! encoding, shared by FCM and WNS), `wns`, `vapid`, `ece` (RFC 8291), `error`.

// The transports are written in parallel against these `pub(crate)` items; these allowances
// are removed when they use them.

// Reachable from the crate both as `credentials::ece::encrypt` and through the re-exports.
pub(crate) mod apns;
pub(crate) mod ece;
mod error;
pub(crate) mod fcm;
pub(crate) mod jwt;
pub(crate) mod oauth;
pub(crate) mod vapid;
pub(crate) mod wns;

pub use apns::{ApnsCertificate, ApnsKey, DEFAULT_APNS_TOKEN_RENEWAL};
pub use error::CredentialError;
pub use fcm::FcmServiceAccount;
pub use vapid::VapidKey;
pub use wns::WnsCredentials;

pub(crate) use apns::ApnsTokenCache;
pub(crate) use ece::encrypt;
pub(crate) use oauth::{parse_token_response, AccessToken};
pub(crate) use vapid::VapidCache;

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials and caches are shared across tasks and threads (tokio's habit).
    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<ApnsKey>();
        check::<ApnsCertificate>();
        check::<ApnsTokenCache>();
        check::<FcmServiceAccount>();
        check::<WnsCredentials>();
        check::<VapidKey>();
        check::<VapidCache>();
        check::<AccessToken>();
        check::<CredentialError>();
    }
}
