//! [`Notification`]: one native payload per push service, as the caller wants the
//! notification to appear on each.

use std::time::SystemTime;

use super::apns::ApnsNotification;
use super::fcm::FcmNotification;
use super::webpush::WebPushNotification;
use super::wns::WnsNotification;
use crate::model::Platform;

/// One notification as the caller wants it to appear on every platform.
///
/// Holds one native payload per platform; a device whose platform has none is skipped.
/// Cloning copies small headers and bumps reference counts on the bodies.
#[derive(Clone, Debug, Default)]
pub struct Notification {
    apns: Option<ApnsNotification>,
    fcm: Option<FcmNotification>,
    wns: Option<WnsNotification>,
    web_push: Option<WebPushNotification>,
    expires_at: Option<SystemTime>,
}

impl Notification {
    /// A notification with no payload for any platform (nothing would be sent).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the payload sent to APNs devices.
    pub fn apns(mut self, n: ApnsNotification) -> Self {
        self.apns = Some(n);
        self
    }

    /// Sets the payload sent to FCM devices.
    pub fn fcm(mut self, n: FcmNotification) -> Self {
        self.fcm = Some(n);
        self
    }

    /// Sets the payload sent to WNS channels.
    pub fn wns(mut self, n: WnsNotification) -> Self {
        self.wns = Some(n);
        self
    }

    /// Sets the payload sent to Web Push subscriptions.
    pub fn web_push(mut self, n: WebPushNotification) -> Self {
        self.web_push = Some(n);
        self
    }

    /// The engine stops retrying deliveries of this notification after `t`.
    ///
    /// This is the engine's own deadline; it does not change what the services are told to
    /// store (`ApnsNotification::expiration`, `WebPushNotification::ttl`, `WnsNotification::ttl`).
    pub fn expires_at(mut self, t: SystemTime) -> Self {
        self.expires_at = Some(t);
        self
    }

    /// Whether the notification has a payload for platform `p`.
    pub fn has(&self, p: Platform) -> bool {
        match p {
            Platform::Apns => self.apns.is_some(),
            Platform::Fcm => self.fcm.is_some(),
            Platform::Wns => self.wns.is_some(),
            Platform::WebPush => self.web_push.is_some(),
        }
    }

    /// Adds `other`'s payloads for the platforms this notification has none for.
    pub fn merge(mut self, other: Notification) -> Notification {
        self.apns = self.apns.or(other.apns);
        self.fcm = self.fcm.or(other.fcm);
        self.wns = self.wns.or(other.wns);
        self.web_push = self.web_push.or(other.web_push);
        self.expires_at = self.expires_at.or(other.expires_at);
        self
    }

    /// The engine's own deadline, if one was set with [`Notification::expires_at`].
    pub fn deadline(&self) -> Option<SystemTime> {
        self.expires_at
    }

    pub(crate) fn apns_part(&self) -> Option<&ApnsNotification> {
        self.apns.as_ref()
    }

    pub(crate) fn fcm_part(&self) -> Option<&FcmNotification> {
        self.fcm.as_ref()
    }

    pub(crate) fn wns_part(&self) -> Option<&WnsNotification> {
        self.wns.as_ref()
    }

    pub(crate) fn web_push_part(&self) -> Option<&WebPushNotification> {
        self.web_push.as_ref()
    }

    pub(crate) fn expiry(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn notification_holds_one_payload_per_platform() {
        let n = Notification::new();
        assert!(Platform::ALL.iter().all(|p| !n.has(*p)));
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let n = n
            .apns(ApnsNotification::alert(r#"{"aps":{"alert":"hi"}}"#).unwrap())
            .web_push(WebPushNotification::new("hi").unwrap())
            .expires_at(at);
        assert!(n.has(Platform::Apns) && n.has(Platform::WebPush));
        assert!(!n.has(Platform::Fcm) && !n.has(Platform::Wns));
        assert!(n.apns_part().is_some() && n.web_push_part().is_some());
        assert!(n.fcm_part().is_none() && n.wns_part().is_none());
        assert_eq!(n.expiry(), Some(at));
        let n = n
            .fcm(FcmNotification::notification("t", "b").unwrap())
            .wns(WnsNotification::raw("x").unwrap());
        assert!(Platform::ALL.iter().all(|p| n.has(*p)));
        assert!(n.fcm_part().is_some() && n.wns_part().is_some());
    }
}
