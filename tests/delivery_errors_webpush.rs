//! Every outcome path of the delivery engine against the mock Web Push service: 404 and 410
//! subscriptions pruned, a 403 (another VAPID key) rejecting one subscription while the pool
//! goes on, endpoints the endpoint policy refuses (audit M1) rejected without a request.
//!
//! Each test checks the engine's [`tagcast::SendReport`] against the mock's own accounting.

mod common;

use std::time::Duration;

use common::*;
use tagcast::credentials::VapidKey;
use tagcast::{Audience, EngineConfig, Installation, Platform, PushHandle, WebPushSettings};
use tagcast_mock::webpush::{Expiry, WebPushConfig};

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Web Push

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_404_and_410_subscriptions_are_pruned() {
    let bed = Bed::new().web_push(WebPushConfig::default()).start().await;
    let (mock, reg) = (bed.web_push(), &bed.reg);
    let subs = bed.subscribe(40);
    for s in &subs[..5] {
        assert!(mock.expire(&s.id, Expiry::NotFound));
    }
    for s in &subs[5..12] {
        assert!(mock.expire(&s.id, Expiry::Gone));
    }
    fill(
        reg,
        subs.iter()
            .enumerate()
            .map(|(i, s)| Installation::new(dev_id(i as u64), web_push_handle(s))),
    );
    let engine = bed.engine();
    let report = finish(&engine.send(web_push_note(), Audience::All).unwrap(), LIMIT).await;
    let w = report.platform(Platform::WebPush);
    assert_eq!(
        (w.delivered, w.dead, w.pruned, w.credential_failure),
        (28, 12, 12, 0),
        "{report:#?}"
    );
    let stats = mock.stats();
    assert_eq!(responses_starting(&stats, "404"), 5, "{stats:#?}");
    assert_eq!(responses_starting(&stats, "410"), 7, "{stats:#?}");
    assert_eq!(stats.unique_handles, 28);
    assert_eq!(reg.count(), 28);
    for i in 0..12 {
        assert!(reg.get(&dev_id(i)).is_none(), "dev-{i} not pruned");
    }
    assert_all_present(reg, 12..40);
}

/// One subscription bound to another VAPID key: the push service answers 403 for it alone.
/// It is rejected (not pruned: it may work with the key it was made with), and the origin's
/// pool goes on serving every other subscription, in this send and the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_403_rejects_one_subscription_and_the_pool_goes_on() {
    let bed = Bed::new().web_push(WebPushConfig::default()).start().await;
    let mock = bed.web_push();
    let other = VapidKey::generate("mailto:ops@example.com").unwrap();
    let good = bed.subscribe(10);
    let foreign = mock.subscribe(Some(&server_key(&other)));
    let engine = bed.direct();

    // The foreign subscription first, then the good ones.
    let mut handles = vec![web_push_handle(&foreign)];
    handles.extend(good.iter().map(web_push_handle));
    let first = finish(
        &engine.send_to_handles(web_push_note(), handles).unwrap(),
        LIMIT,
    )
    .await;
    let w = first.platform(Platform::WebPush);
    assert_eq!(w.targeted, 11);
    assert_eq!(
        (w.delivered, w.rejected, w.credential_failure, w.dead),
        (10, 1, 0, 0),
        "{first:#?}"
    );
    assert_eq!(
        responses(&mock.stats(), "403 vapid-key-mismatch"),
        1,
        "{:#?}",
        mock.stats()
    );
    assert!(engine.credential_failures().is_empty());

    // The next send to the same origin is served.
    let second = finish(
        &engine
            .send_to_handles(web_push_note(), good.iter().map(web_push_handle).collect())
            .unwrap(),
        LIMIT,
    )
    .await;
    assert_eq!(
        second.platform(Platform::WebPush).delivered,
        10,
        "{second:#?}"
    );
}

/// The endpoint policy at send time (audit M1), with the default settings (public addresses
/// only): an endpoint whose name (`localhost`) resolves to loopback is refused after DNS
/// resolution and one at a loopback IP literal before any pool is made. The mock sees no
/// connection, and each device is rejected with a reason that names the policy. The same
/// endpoints with private addresses allowed are delivered, so nothing else stopped them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_endpoints_at_loopback_are_refused_without_a_request() {
    let bed = Bed::new().web_push(WebPushConfig::default()).start().await;
    let mock = bed.web_push();
    let subs = bed.subscribe(6);
    let at_localhost = |s: &tagcast_mock::webpush::Subscription| {
        let h = web_push_handle(s);
        let PushHandle::WebPush(w) = &h else {
            unreachable!()
        };
        let endpoint = w
            .endpoint()
            .replace("https://127.0.0.1:", "https://localhost:");
        assert_ne!(endpoint, w.endpoint(), "the mock is on 127.0.0.1");
        PushHandle::web_push(&endpoint, &s.p256dh, &s.auth).unwrap()
    };
    let named: Vec<PushHandle> = subs[..4].iter().map(at_localhost).collect();
    let literal: Vec<PushHandle> = subs[4..].iter().map(web_push_handle).collect();
    let config = |private: bool| EngineConfig {
        web_push: Some(WebPushSettings::new(bed.vapid().clone()).allow_private_endpoints(private)),
        tls_roots: bed.tls_roots(),
        dispatch: quick_dispatch(),
        ..Default::default()
    };

    let engine = bed.direct_with(config(false));
    let mut handles = named.clone();
    handles.extend(literal.iter().cloned());
    let report = finish(
        &engine.send_to_handles(web_push_note(), handles).unwrap(),
        LIMIT,
    )
    .await;
    let w = report.platform(Platform::WebPush);
    assert_eq!(
        (w.targeted, w.rejected, w.delivered, w.failed, w.skipped),
        (6, 6, 0, 0, 0),
        "{report:#?}"
    );
    let reasons: Vec<(&String, u64)> = report
        .reasons
        .iter()
        .filter(|((p, _), _)| *p == Platform::WebPush)
        .map(|((_, r), n)| (r, *n))
        .collect();
    let count = |f: &dyn Fn(&str) -> bool| -> u64 {
        reasons.iter().filter(|(r, _)| f(r)).map(|(_, n)| n).sum()
    };
    assert_eq!(
        count(&|r| r.contains("endpoint policy")
            && r.contains("host localhost resolves to")
            && r.contains("loopback")
            && r.contains("not a public address")),
        4,
        "{reasons:#?}"
    );
    assert_eq!(
        count(&|r| r
            == "Web Push endpoint policy: address 127.0.0.1 is loopback (127.0.0.0/8, RFC 1122), \
                not a public address"),
        2,
        "{reasons:#?}"
    );
    let stats = mock.stats();
    assert_eq!(
        (stats.connections_opened, stats.deliveries),
        (0, 0),
        "{stats:#?}"
    );
    engine.shutdown().await;

    // Control: with private addresses allowed, the same endpoints are reached: the literal
    // ones delivered, the named ones connected to (the mock then refuses their VAPID
    // audience, `https://localhost:…`, as not its own origin).
    let engine = bed.direct_with(config(true));
    let report = finish(
        &engine.send_to_handles(web_push_note(), literal).unwrap(),
        LIMIT,
    )
    .await;
    assert_eq!(
        report.platform(Platform::WebPush).delivered,
        2,
        "{report:#?}"
    );
    let opened = mock.stats().connections_opened;
    assert!(opened > 0);
    finish(
        &engine.send_to_handles(web_push_note(), named).unwrap(),
        LIMIT,
    )
    .await;
    assert!(
        mock.stats().connections_opened > opened,
        "{:#?}",
        mock.stats()
    );
}
