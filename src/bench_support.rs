//! Entry points for the criterion benches (`benches/delivery.rs`): the per-device request
//! building and the credential caches, which are crate-internal. Not part of the API.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::dispatch::job::Job;
use crate::dispatch::pool::{Device, Work};
use crate::model::PushHandle;
use crate::model::{PerPlatform, Platform};
use crate::payload::Notification;
use crate::pns::apns::ApnsTokenCache;
use crate::pns::webpush::ece::encrypt;
use crate::pns::webpush::VapidCache;
use crate::pns::{ApnsKey, VapidKey};

/// Builds the request of every handle (APNs, FCM, WNS or Web Push, as the handle says) the
/// way the connections do; returns the body bytes built, so the work cannot be optimised
/// away.
pub fn build_requests(notification: &Notification, handles: &[PushHandle]) -> usize {
    let job = Job::new(notification.clone(), 1024);
    let origin = |p: Platform| match p {
        Platform::Apns => crate::pns::APNS_PRODUCTION,
        Platform::Fcm => crate::pns::FCM_ENDPOINT,
        // WNS and Web Push send to each device's own URI.
        _ => "",
    };
    let protocols =
        PerPlatform::from_fn(|p| crate::pns::protocol(p, origin(p), "com.example.app", "p").ok());
    let auth = http::HeaderValue::from_static("bearer x");
    let mut total = 0;
    for h in handles {
        let work = Work::new(
            job.clone(),
            Device {
                installation: None,
                handle: h.clone(),
            },
        );
        let Some(proto) = &protocols[h.platform()] else {
            return 0;
        };
        if let Ok((_, body)) = proto.build(&work.outgoing(), Some(&auth)) {
            total += body.len();
        }
    }
    total
}

/// An APNs provider-token cache.
pub struct ApnsTokens(ApnsTokenCache);

impl ApnsTokens {
    /// A cache renewing every 50 minutes.
    pub fn new(key: ApnsKey) -> Self {
        ApnsTokens(ApnsTokenCache::new(key, Duration::from_secs(50 * 60)))
    }

    /// The bearer header value at `now` (cached, or signed when due).
    pub fn bearer(&self, now: SystemTime) -> Arc<str> {
        self.0.bearer(now)
    }
}

/// A VAPID header cache.
pub struct VapidHeaders(VapidCache);

impl VapidHeaders {
    /// A cache for `key`.
    pub fn new(key: VapidKey) -> Self {
        VapidHeaders(VapidCache::new(key))
    }

    /// The `Authorization` value for `origin` at `now`.
    pub fn header(&self, origin: &str, now: SystemTime) -> Arc<str> {
        self.0.header(origin, now)
    }
}

/// RFC 8291 encryption of `plaintext` for a subscription.
pub fn web_push_encrypt(plaintext: &[u8], ua_public: &[u8; 65], auth: &[u8; 16]) -> usize {
    encrypt(plaintext, ua_public, auth).map_or(0, |b| b.len())
}

/// Classifies an arbitrary push-service answer with every platform's rules and renders the
/// verdict (fuzz target `pns_answers`): no input may panic. `header` is used as the value of
/// `Retry-After`, `X-WNS-Status` and `X-WNS-CONTINUE-AFTER` when it is a valid header value.
pub fn classify_any(status: u16, body: &[u8], header: &str) -> Vec<String> {
    use crate::pns::apns::answer::classify_apns;
    use crate::pns::fcm::answer::classify_fcm;
    use crate::pns::webpush::answer::classify_web_push;
    use crate::pns::wns::answer::classify_wns;
    use crate::time::parse_retry_after;
    let now = SystemTime::now();
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(header) {
        for name in ["retry-after", "x-wns-status", "x-wns-continue-after"] {
            headers.insert(http::HeaderName::from_static(name), v.clone());
        }
    }
    let _ = parse_retry_after(header, now);
    vec![
        format!("{:?}", classify_apns(status, body)),
        format!("{:?}", classify_fcm(status, Some(header), body, now)),
        format!("{:?}", classify_wns(status, &headers, now)),
        format!("{:?}", classify_web_push(status, &headers, now)),
    ]
}

/// The FCM request body for one token, as the connections send it.
pub fn fcm_body(n: &crate::payload::FcmNotification, token: &str) -> bytes::Bytes {
    n.body_for_token(token)
}
