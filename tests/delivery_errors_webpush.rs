//! Every outcome path of the delivery engine against the mock Web Push service: 404 and 410
//! subscriptions pruned, a 403 (another VAPID key) rejecting one subscription while the pool
//! goes on.
//!
//! Each test checks the engine's [`tagcast::SendReport`] against the mock's own accounting.

mod common;

use std::time::Duration;

use common::*;
use tagcast::credentials::VapidKey;
use tagcast::{Audience, Installation, Platform};
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
