//! Send answers in XML: the test-send `NotificationOutcome` (nh-rest-api.md §4.2) and the
//! per-message telemetry `NotificationDetails` (§4.4, §7) made from a [`SendReport`].
//!
//! Both are written compact, with unprefixed elements in Notification Hubs' namespace (§3.3,
//! §8 item 10). Absent values are omitted, never written as `i:nil` or empty elements.
//!
//! # Outcome names
//!
//! tagcast counts each device's final outcome per platform ([`PlatformOutcomes`]); Notification
//! Hubs reports `<Outcome><Name>…</Name><Count>n</Count></Outcome>` per platform (§7). The
//! mapping:
//!
//! | tagcast | NH outcome | why |
//! |---|---|---|
//! | `delivered` | `Success` | accepted by the push service |
//! | `dead` (pruned, kept or not registered) | `ExpiredChannel` | the service said the handle is gone (APNs 410 `Unregistered`, FCM `UNREGISTERED`, WNS/Web Push 404/410) |
//! | `expired` | `AbandonedNotificationMessages` | the notification's own expiry passed while retrying |
//! | `credential_failure` | `InvalidCredentials` | the platform's credential failed; nothing was sent |
//! | `skipped` | `Skipped` | no payload or no credential for that platform |
//! | `cancelled` | `Dropped` | the send was cancelled before this device |
//! | `failed` + `rejected`, by reason | see [`outcome_for_reason`] | the service's reason decides |
//!
//! `throttled_then_delivered` is part of `delivered` and `retries` are events, not devices:
//! neither is reported. Devices still in flight are not reported either (they have no
//! outcome yet); the counts complete as the send does.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::xml;
use crate::dispatch::{PlatformOutcomes, SendReport, SendState};
use crate::model::Platform;

/// Notification Hubs' XML namespace.
pub const NH_NAMESPACE: &str =
    "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
/// The XML Schema instance namespace declared beside it.
pub const XSI_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The `Content-Type` of these answers.
pub const CONTENT_TYPE: &str = "application/xml; charset=utf-8";

fn open(out: &mut String, root: &str) {
    out.push('<');
    out.push_str(root);
    out.push_str(" xmlns=\"");
    out.push_str(NH_NAMESPACE);
    out.push_str("\" xmlns:i=\"");
    out.push_str(XSI_NAMESPACE);
    out.push_str("\">");
}

/// The `ApplicationPlatform` of a test-send result (the format names, §4.2; Azure's real
/// values were not captured, §9).
pub fn application_platform(p: Platform) -> &'static str {
    match p {
        Platform::Apns => "apple",
        Platform::Fcm => "fcmv1",
        Platform::Wns => "windows",
        Platform::WebPush => "browser",
    }
}

/// One registration's result in a test send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSendResult {
    /// The device's platform.
    pub platform: Platform,
    /// The handle as text (`PnsHandle`).
    pub handle: String,
    /// The registration or installation id (`RegistrationId`).
    pub registration_id: String,
    /// Whether the push service accepted it (counted in `Success`, else in `Failure`).
    pub success: bool,
    /// Free text for `Outcome`, e.g. the NH outcome name or the service's reason.
    pub outcome: String,
}

/// The body of a test send's 201 answer: `Success` and `Failure` counted from `results`,
/// and `Results` always present (the SDK crashes without it, §8 item 6).
pub fn notification_outcome(results: &[TestSendResult]) -> String {
    let success = results.iter().filter(|r| r.success).count();
    let mut out = String::with_capacity(256 + 160 * results.len());
    open(&mut out, "NotificationOutcome");
    xml::leaf(&mut out, "Success", &success.to_string());
    xml::leaf(&mut out, "Failure", &(results.len() - success).to_string());
    if results.is_empty() {
        out.push_str("<Results/>");
    } else {
        out.push_str("<Results>");
        for r in results {
            out.push_str("<RegistrationResult>");
            xml::leaf(
                &mut out,
                "ApplicationPlatform",
                application_platform(r.platform),
            );
            xml::leaf(&mut out, "PnsHandle", &r.handle);
            xml::leaf(&mut out, "RegistrationId", &r.registration_id);
            xml::leaf(&mut out, "Outcome", &r.outcome);
            out.push_str("</RegistrationResult>");
        }
        out.push_str("</Results>");
    }
    out.push_str("</NotificationOutcome>");
    out
}

/// The `State` of a send, spelled as the SDK's type spells it (§7; `Cancelled` with two l).
pub fn state_name(s: SendState) -> &'static str {
    match s {
        SendState::Scheduled => "Scheduled",
        SendState::Enqueued => "Enqueued",
        SendState::Processing => "Processing",
        SendState::Completed => "Completed",
        SendState::NoTargetFound => "NoTargetFound",
        SendState::Cancelled => "Cancelled",
        SendState::Abandoned => "Abandoned",
    }
}

/// The outcome-counts element of a platform (§7).
pub fn outcome_counts_element(p: Platform) -> &'static str {
    match p {
        Platform::Apns => "ApnsOutcomeCounts",
        Platform::Fcm => "FcmV1OutcomeCounts",
        Platform::Wns => "WnsOutcomeCounts",
        Platform::WebPush => "BrowserOutcomeCounts",
    }
}

/// The `TargetPlatforms` name of a platform (§7: `apple`, `windows`, … and, for template
/// sends, `appletemplate`, `windowstemplate`, …; `fcmv1` and `browser` are assumed, §9).
pub fn target_platform_name(p: Platform, template: bool) -> &'static str {
    match (p, template) {
        (Platform::Apns, false) => "apple",
        (Platform::Apns, true) => "appletemplate",
        (Platform::Fcm, false) => "fcmv1",
        (Platform::Fcm, true) => "fcmv1template",
        (Platform::Wns, false) => "windows",
        (Platform::Wns, true) => "windowstemplate",
        (Platform::WebPush, false) => "browser",
        (Platform::WebPush, true) => "browsertemplate",
    }
}

/// The `TargetPlatforms` list: names joined with `,` (no spaces, as the SDK splits lists
/// without trimming, §8 item 9).
pub fn target_platforms(platforms: &[Platform], template: bool) -> String {
    platforms
        .iter()
        .map(|&p| target_platform_name(p, template))
        .collect::<Vec<_>>()
        .join(",")
}

/// The NH outcome name of a `failed` or `rejected` device, from the reason the push service
/// (or tagcast, for a template that did not render) gave. Reasons are matched
/// case-insensitively as substrings, first match wins:
///
/// | reason contains | NH outcome |
/// |---|---|
/// | `channelthrottled` (WNS) | `ChannelThrottled` |
/// | `TooManyRequests` (APNs), `QUOTA_EXCEEDED` (FCM), `429`, `406` (WNS) | `Throttled` |
/// | `PayloadTooLarge` (APNs), `413`, `too large` | `InvalidNotificationSize` |
/// | `BadDeviceToken`, `DeviceTokenNotForTopic`, `MissingDeviceToken` (APNs) | `WrongToken` |
/// | `dropped` (WNS `X-WNS-Status`) | `Dropped` |
/// | `403` (Web Push: subscription of another VAPID key) | `BadChannel` |
/// | `InternalServerError`, `ServiceUnavailable`, `Shutdown`, `UNAVAILABLE`, `INTERNAL`, `500`…`504` | `PnsServerError` |
/// | `unprocessed`, `connect`, `unreachable`, `timed out`, `timeout`, `tls`, `dns`, `reset`, `gave up` | `PnsUnreachable` |
/// | anything else (`BadCollapseId`, `INVALID_ARGUMENT`, `400`, a template render error, …) | `InvalidNotificationFormat` |
pub fn outcome_for_reason(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| r.contains(n));
    if has(&["channelthrottled"]) {
        "ChannelThrottled"
    } else if has(&["toomanyrequests", "quota_exceeded", "429", "406"]) {
        "Throttled"
    } else if has(&["payloadtoolarge", "413", "too large"]) {
        "InvalidNotificationSize"
    } else if has(&[
        "baddevicetoken",
        "devicetokennotfortopic",
        "missingdevicetoken",
    ]) {
        "WrongToken"
    } else if has(&["dropped"]) {
        "Dropped"
    } else if has(&["403"]) {
        "BadChannel"
    } else if has(&[
        "internalservererror",
        "serviceunavailable",
        "shutdown",
        "unavailable",
        "internal",
        "500",
        "502",
        "503",
        "504",
    ]) {
        "PnsServerError"
    } else if has(&[
        "unprocessed",
        "connect",
        "unreachable",
        "timed out",
        "timeout",
        "tls",
        "dns",
        "reset",
        "gave up",
    ]) {
        "PnsUnreachable"
    } else {
        "InvalidNotificationFormat"
    }
}

/// The NH outcome counts of one platform, in a stable order (Success first, then by name);
/// only non-zero counts. `reasons` are this platform's (reason, count) pairs.
pub fn outcome_counts<'a>(
    o: &PlatformOutcomes,
    reasons: impl IntoIterator<Item = (&'a str, u64)>,
) -> Vec<(&'static str, u64)> {
    let mut m: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut add = |name: &'static str, n: u64| {
        if n > 0 {
            *m.entry(name).or_default() += n;
        }
    };
    add("ExpiredChannel", o.dead);
    add("AbandonedNotificationMessages", o.expired);
    add("InvalidCredentials", o.credential_failure);
    add("Skipped", o.skipped);
    add("Dropped", o.cancelled);
    // `reasons` break down failed + rejected; a snapshot taken mid-send may be off by the
    // devices finishing meanwhile: the rest is reported as UnknownError.
    let mut explained = 0u64;
    for (reason, n) in reasons {
        add(outcome_for_reason(reason), n);
        explained += n;
    }
    add(
        "UnknownError",
        (o.failed + o.rejected).saturating_sub(explained),
    );
    let mut out = Vec::with_capacity(m.len() + 1);
    if o.delivered > 0 {
        out.push(("Success", o.delivered));
    }
    out.extend(m);
    out
}

/// `sb://{host}/{hub}/messages/{id}?api-version=2020-06`, Azure's `Location` form (§7).
pub fn sb_location(host: &str, hub: &str, id: &str) -> String {
    format!("sb://{host}/{hub}/messages/{id}?api-version=2020-06")
}

fn time(out: &mut String, name: &str, t: Option<SystemTime>) {
    if let Some(t) = t {
        xml::leaf(out, name, &crate::time::rfc3339::format(t));
    }
}

/// The body of `GET /{hub}/messages/{id}` (§7): `NotificationId` (the report's id),
/// `Location` (e.g. from [`sb_location`]), `State`, `EnqueueTime`, `StartTime`, `EndTime`
/// (omitted until known), `NotificationBody` (escaped), `TargetPlatforms` (e.g. from
/// [`target_platforms`]; omitted when empty) and one `*OutcomeCounts` per platform that has
/// an outcome (mapping in the module docs). No `PnsErrorDetailsUri`: tagcast keeps no
/// per-device error blob.
pub fn notification_details(
    report: &SendReport,
    location: &str,
    body: &str,
    target_platforms: &str,
) -> String {
    let mut out = String::with_capacity(512 + body.len());
    open(&mut out, "NotificationDetails");
    xml::leaf(&mut out, "NotificationId", &report.id.to_string());
    xml::leaf(&mut out, "Location", location);
    xml::leaf(&mut out, "State", state_name(report.state));
    time(&mut out, "EnqueueTime", Some(report.enqueued_at));
    time(&mut out, "StartTime", report.started_at);
    time(&mut out, "EndTime", report.completed_at);
    xml::leaf(&mut out, "NotificationBody", body);
    if !target_platforms.is_empty() {
        xml::leaf(&mut out, "TargetPlatforms", target_platforms);
    }
    for p in Platform::ALL {
        let reasons = report
            .reasons
            .iter()
            .filter(|((rp, _), _)| *rp == p)
            .map(|((_, r), n)| (r.as_str(), *n));
        let counts = outcome_counts(report.platform(p), reasons);
        platform_counts(&mut out, p, &counts);
    }
    out.push_str("</NotificationDetails>");
    out
}

/// One `<Platform>OutcomeCounts` element (nothing when `counts` is empty).
fn platform_counts(out: &mut String, p: Platform, counts: &[(&str, u64)]) {
    if counts.is_empty() {
        return;
    }
    let el = outcome_counts_element(p);
    out.push('<');
    out.push_str(el);
    out.push('>');
    for (name, n) in counts {
        out.push_str("<Outcome>");
        xml::leaf(out, "Name", name);
        xml::leaf(out, "Count", &n.to_string());
        out.push_str("</Outcome>");
    }
    out.push_str("</");
    out.push_str(el);
    out.push('>');
}

/// A cluster send's `NotificationDetails` (cluster mode, docs/operations.md): no times and
/// no body. The totals are in `ClusterOutcomeCounts`, a tagcast element with the same
/// `<Outcome>` shape: `Targeted`, `Success` (accepted by the push service), `Failed` (every
/// other outcome: dead handles, rejections, expiries), `PossibleDuplicates` and
/// `PossiblyMissed` (devices whose claim a takeover re-sent or skipped),
/// `PartitionsReported` and `PartitionsFinished`. Then one `<Platform>OutcomeCounts` per
/// platform in `platforms` (from [`outcome_counts`]), as on a single node.
pub fn cluster_notification_details(
    id: &str,
    location: &str,
    state: SendState,
    counts: &[(&str, u64)],
    platforms: &[(Platform, Vec<(&str, u64)>)],
) -> String {
    let mut out = String::with_capacity(512);
    open(&mut out, "NotificationDetails");
    xml::leaf(&mut out, "NotificationId", id);
    xml::leaf(&mut out, "Location", location);
    xml::leaf(&mut out, "State", state_name(state));
    xml::leaf(&mut out, "NotificationBody", "");
    out.push_str("<ClusterOutcomeCounts>");
    for (name, n) in counts {
        out.push_str("<Outcome>");
        xml::leaf(&mut out, "Name", name);
        xml::leaf(&mut out, "Count", &n.to_string());
        out.push_str("</Outcome>");
    }
    out.push_str("</ClusterOutcomeCounts>");
    for (p, c) in platforms {
        platform_counts(&mut out, *p, c);
    }
    out.push_str("</NotificationDetails>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PerPlatform;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn cluster_details_byte_exact() {
        let xml = cluster_notification_details(
            "6a000000-0000-4000-8000-000000000001",
            "sb://h/ops/messages/x",
            SendState::Completed,
            &[("Targeted", 3), ("Success", 2)],
            &[(Platform::Apns, vec![("Success", 2), ("WrongToken", 1)])],
        );
        assert_eq!(
            xml,
            format!(
                "<NotificationDetails xmlns=\"{NH_NAMESPACE}\" xmlns:i=\"{XSI_NAMESPACE}\">\
                 <NotificationId>6a000000-0000-4000-8000-000000000001</NotificationId>\
                 <Location>sb://h/ops/messages/x</Location><State>Completed</State>\
                 <NotificationBody></NotificationBody><ClusterOutcomeCounts>\
                 <Outcome><Name>Targeted</Name><Count>3</Count></Outcome>\
                 <Outcome><Name>Success</Name><Count>2</Count></Outcome>\
                 </ClusterOutcomeCounts><ApnsOutcomeCounts>\
                 <Outcome><Name>Success</Name><Count>2</Count></Outcome>\
                 <Outcome><Name>WrongToken</Name><Count>1</Count></Outcome>\
                 </ApnsOutcomeCounts></NotificationDetails>"
            )
        );
    }

    #[test]
    fn test_send_outcome_byte_exact() {
        let r = TestSendResult {
            platform: Platform::Apns,
            handle: "ab12".into(),
            registration_id: "r1".into(),
            success: true,
            outcome: "Success".into(),
        };
        assert_eq!(
            notification_outcome(std::slice::from_ref(&r)),
            "<NotificationOutcome xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"><Success>1</Success><Failure>0</Failure><Results><RegistrationResult><ApplicationPlatform>apple</ApplicationPlatform><PnsHandle>ab12</PnsHandle><RegistrationId>r1</RegistrationId><Outcome>Success</Outcome></RegistrationResult></Results></NotificationOutcome>"
        );
        let empty = notification_outcome(&[]);
        assert!(
            empty.ends_with(
                "<Success>0</Success><Failure>0</Failure><Results/></NotificationOutcome>"
            ),
            "{empty}"
        );
        let bad = TestSendResult {
            success: false,
            outcome: "a<b".into(),
            ..r
        };
        let el = xml::parse(&notification_outcome(&[bad.clone(), bad])).unwrap();
        assert_eq!(el.child("Failure").unwrap().text, "2");
        let results = el.child("Results").unwrap();
        assert_eq!(results.children_named("RegistrationResult").count(), 2);
        assert_eq!(results.children[0].child("Outcome").unwrap().text, "a<b");
    }

    fn report() -> SendReport {
        let mut platforms = PerPlatform::<PlatformOutcomes>::default();
        let apns = &mut platforms[Platform::Apns];
        apns.targeted = 10;
        apns.delivered = 5;
        apns.dead = 1;
        apns.failed = 2;
        apns.rejected = 2;
        let wns = &mut platforms[Platform::Wns];
        wns.targeted = 1;
        wns.delivered = 1;
        let mut reasons = BTreeMap::new();
        reasons.insert((Platform::Apns, "PayloadTooLarge".to_string()), 1);
        reasons.insert((Platform::Apns, "BadDeviceToken".to_string()), 1);
        reasons.insert(
            (
                Platform::Apns,
                "gave up after 5 attempts: TooManyRequests".to_string(),
            ),
            1,
        );
        // One failure has no reason (mid-send snapshot): UnknownError.
        SendReport {
            id: "6f0c3b8e-0000-4000-8000-000000000001".parse().unwrap(),
            state: SendState::Completed,
            audience: Some(11),
            enqueued_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            started_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)),
            first_delivered_at: None,
            last_delivered_at: None,
            completed_at: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_001)),
            scheduled_for: None,
            platforms,
            reasons,
            errors: vec![],
        }
    }

    #[test]
    fn details_byte_exact() {
        let r = report();
        let loc = sb_location("localhost:8443", "hub", &r.id.to_string());
        let xml = notification_details(
            &r,
            &loc,
            "{\"aps\":{\"alert\":\"<hi>\"}}",
            &target_platforms(&[Platform::Apns, Platform::Wns], false),
        );
        assert_eq!(
            xml,
            "<NotificationDetails xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">\
<NotificationId>6f0c3b8e-0000-4000-8000-000000000001</NotificationId>\
<Location>sb://localhost:8443/hub/messages/6f0c3b8e-0000-4000-8000-000000000001?api-version=2020-06</Location>\
<State>Completed</State><EnqueueTime>2023-11-14T22:13:20Z</EnqueueTime><StartTime>2023-11-14T22:13:20.25Z</StartTime><EndTime>2023-11-14T22:13:21Z</EndTime>\
<NotificationBody>{&quot;aps&quot;:{&quot;alert&quot;:&quot;&lt;hi&gt;&quot;}}</NotificationBody><TargetPlatforms>apple,windows</TargetPlatforms>\
<ApnsOutcomeCounts><Outcome><Name>Success</Name><Count>5</Count></Outcome><Outcome><Name>ExpiredChannel</Name><Count>1</Count></Outcome>\
<Outcome><Name>InvalidNotificationSize</Name><Count>1</Count></Outcome><Outcome><Name>Throttled</Name><Count>1</Count></Outcome>\
<Outcome><Name>UnknownError</Name><Count>1</Count></Outcome><Outcome><Name>WrongToken</Name><Count>1</Count></Outcome></ApnsOutcomeCounts>\
<WnsOutcomeCounts><Outcome><Name>Success</Name><Count>1</Count></Outcome></WnsOutcomeCounts></NotificationDetails>"
        );
        let el = xml::parse(&xml).unwrap();
        assert_eq!(el.name, "NotificationDetails");
        assert!(el.child("FcmV1OutcomeCounts").is_none());
    }

    #[test]
    fn states_and_partial_reports() {
        let mut r = report();
        r.state = SendState::Enqueued;
        r.started_at = None;
        r.completed_at = None;
        r.platforms = PerPlatform::default();
        r.reasons.clear();
        let xml = notification_details(&r, "sb://h/hub/messages/x", "", "");
        assert!(xml.contains("<State>Enqueued</State><EnqueueTime>2023-11-14T22:13:20Z</EnqueueTime><NotificationBody></NotificationBody></NotificationDetails>"), "{xml}");
        for (s, n) in [
            (SendState::Scheduled, "Scheduled"),
            (SendState::Processing, "Processing"),
            (SendState::NoTargetFound, "NoTargetFound"),
            (SendState::Cancelled, "Cancelled"),
            (SendState::Abandoned, "Abandoned"),
        ] {
            assert_eq!(state_name(s), n);
        }
    }

    #[test]
    fn every_class_has_a_name() {
        let o = PlatformOutcomes {
            delivered: 1,
            dead: 2,
            expired: 3,
            credential_failure: 4,
            skipped: 5,
            cancelled: 6,
            failed: 1,
            ..PlatformOutcomes::default()
        };
        assert_eq!(
            outcome_counts(&o, [("503 Service Unavailable", 1)]),
            [
                ("Success", 1),
                ("AbandonedNotificationMessages", 3),
                ("Dropped", 6),
                ("ExpiredChannel", 2),
                ("InvalidCredentials", 4),
                ("PnsServerError", 1),
                ("Skipped", 5),
            ]
        );
    }

    #[test]
    fn reasons() {
        for (r, n) in [
            ("channelthrottled", "ChannelThrottled"),
            ("QUOTA_EXCEEDED", "Throttled"),
            ("406 Not Acceptable", "Throttled"),
            ("413 Payload Too Large", "InvalidNotificationSize"),
            ("DeviceTokenNotForTopic", "WrongToken"),
            ("dropped", "Dropped"),
            ("403 Forbidden", "BadChannel"),
            ("UNAVAILABLE", "PnsServerError"),
            (
                "gave up after 3 attempts: 500 Internal Server Error",
                "PnsServerError",
            ),
            ("connection lost: unprocessed", "PnsUnreachable"),
            ("BadCollapseId", "InvalidNotificationFormat"),
            ("INVALID_ARGUMENT", "InvalidNotificationFormat"),
            ("template t1 does not render", "InvalidNotificationFormat"),
        ] {
            assert_eq!(outcome_for_reason(r), n, "{r}");
        }
        assert_eq!(
            target_platforms(&[Platform::Fcm, Platform::WebPush], true),
            "fcmv1template,browsertemplate"
        );
    }
}
