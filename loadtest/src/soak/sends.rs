//! Send traffic: sends to a group's tag (a few devices each) or to one fresh tag, a broadcast to
//! the small hub now and then, reads of recent outcomes, and scheduled sends of which about
//! half are cancelled before they fire. Every acknowledged id is kept for the check after the
//! restart.

use std::time::{Duration, Instant, SystemTime};

use http::Method;
use rand::rngs::SmallRng;
use rand::Rng as _;

use super::client::{checks, Hub};
use super::Ctx;

/// An acknowledged send, schedule or cancellation.
#[derive(Clone, Debug)]
pub(crate) struct Acked {
    pub(crate) id: String,
    pub(crate) at: Instant,
}

/// How often the small hub gets a broadcast (in sends).
const BROADCAST_EVERY: u64 = 50;
/// How often a recent send's outcome is read (in sends).
const OUTCOME_EVERY: u64 = 5;

/// The notification id at the end of a `Location` (`.../messages/<id>?api-version=...`).
pub(crate) fn location_id(location: &str) -> Option<String> {
    let path = location.split('?').next()?;
    let id = path.rsplit('/').next()?;
    (!id.is_empty()).then(|| id.to_owned())
}

const APPLE: [(&str, &str); 2] = [
    ("content-type", "application/json;charset=utf-8"),
    ("servicebusnotification-format", "apple"),
];

/// Sends at `per_sec` until the traffic stops.
pub(crate) async fn sender(ctx: &Ctx, per_sec: f64, mut rng: SmallRng) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    while !ctx.stopped() {
        tick.tick().await;
        n += 1;
        let tag = if n % 10 == 0 {
            // A tag one PUT carried just now (maybe already replaced: then no device).
            let f = ctx.fresh.load(std::sync::atomic::Ordering::Relaxed);
            format!("f{}", f.saturating_sub(1))
        } else {
            format!("g{}", rng.gen_range(0..ctx.groups))
        };
        let mut h = APPLE.to_vec();
        h.push(("servicebusnotification-tags", &tag));
        let body = br#"{"aps":{"alert":"soak"}}"#.to_vec();
        let r = ctx.pool.call(
            &checks::SEND,
            Hub::Soak,
            Method::POST,
            "/messages/",
            &h,
            body,
        );
        if let Some(id) = r
            .await
            .filter(|r| r.status == 201)
            .and_then(|r| location_id(r.header("location")))
        {
            ctx.sends.lock().push(Acked {
                id,
                at: Instant::now(),
            });
        }
        if n % BROADCAST_EVERY == 0 {
            let body = br#"{"aps":{"alert":"soak broadcast"}}"#.to_vec();
            let r = ctx.pool.call(
                &checks::BROADCAST,
                Hub::Tiny,
                Method::POST,
                "/messages/",
                &APPLE,
                body,
            );
            let _ = r.await;
        }
        if n % OUTCOME_EVERY == 0 {
            let last = ctx.sends.lock().last().map(|a| a.id.clone());
            if let Some(id) = last {
                let path = format!("/messages/{id}");
                let _ = ctx
                    .pool
                    .call(&checks::OUTCOME, Hub::Soak, Method::GET, &path, &[], vec![])
                    .await;
            }
        }
    }
}

/// Schedules one send every `every` for 5-60 s ahead; cancels about half of them 1-10 s later
/// (a cancellation after the send fired is a 404).
pub(crate) async fn scheduler(ctx: &Ctx, every: Duration, mut rng: SmallRng) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cancels: Vec<(Instant, String)> = Vec::new();
    while !ctx.stopped() {
        tick.tick().await;
        let at = SystemTime::now() + Duration::from_secs(rng.gen_range(5..60));
        let at = super::rfc3339(at);
        let tag = format!("g{}", rng.gen_range(0..ctx.groups));
        let mut h = APPLE.to_vec();
        h.push(("servicebusnotification-tags", &tag));
        h.push(("servicebusnotification-scheduletime", &at));
        let body = br#"{"aps":{"alert":"soak scheduled"}}"#.to_vec();
        let r = ctx.pool.call(
            &checks::SCHEDULE,
            Hub::Soak,
            Method::POST,
            "/schedulednotifications/",
            &h,
            body,
        );
        if let Some(id) = r
            .await
            .filter(|r| r.status == 201)
            .and_then(|r| location_id(r.header("location")))
        {
            ctx.schedules.lock().push(Acked {
                id: id.clone(),
                at: Instant::now(),
            });
            if rng.gen_bool(0.5) {
                cancels.push((
                    Instant::now() + Duration::from_secs(rng.gen_range(1..10)),
                    id,
                ));
            }
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = cancels.into_iter().partition(|(t, _)| *t <= now);
        cancels = later;
        for (_, id) in due {
            let path = format!("/schedulednotifications/{id}");
            let r = ctx.pool.call(
                &checks::CANCEL,
                Hub::Soak,
                Method::DELETE,
                &path,
                &[],
                vec![],
            );
            if r.await.is_some_and(|r| r.status == 200) {
                ctx.cancels.lock().push(Acked {
                    id,
                    at: Instant::now(),
                });
            }
        }
    }
}

/// Walks the whole registration listing (`$top=100`, following `x-ms-continuationtoken`),
/// then waits `pause`, until the traffic stops. Counts walks and pages.
pub(crate) async fn lister(ctx: &Ctx, pause: Duration) {
    while !ctx.stopped() {
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                None => "/registrations?$top=100".to_owned(),
                Some(t) => format!("/registrations?$top=100&continuationtoken={}", encode(t)),
            };
            let r = ctx
                .pool
                .call(&checks::LIST, Hub::Soak, Method::GET, &path, &[], vec![])
                .await;
            let Some(r) = r.filter(|r| r.status == 200) else {
                break;
            };
            ctx.listed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            token = Some(r.header("x-ms-continuationtoken").to_owned()).filter(|t| !t.is_empty());
            if token.is_none() || ctx.stopped() {
                break;
            }
        }
        ctx.walks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }
}

/// Percent-encodes a continuation token for a query (it is an id: letters and digits here, but
/// the server may choose any form).
fn encode(t: &str) -> String {
    t.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One installation per device in the small hub, so its broadcasts reach a bounded number.
pub(crate) async fn seed_tiny(ctx: &Ctx, devices: u64) {
    for i in 0..devices {
        let id = format!("tiny{i}");
        let body = serde_json::json!({
            "installationId": id, "platform": "apns",
            "pushChannel": super::model::device_token(2_000_000 + i),
        });
        let path = format!("/installations/{id}");
        let h = [("content-type", "application/json")];
        let r = ctx.pool.call(
            &checks::PUT,
            Hub::Tiny,
            Method::PUT,
            &path,
            &h,
            body.to_string().into_bytes(),
        );
        let _ = r.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_locations() {
        assert_eq!(
            location_id("https://localhost:1/soak/messages/abc-1?api-version=2020-06").as_deref(),
            Some("abc-1")
        );
        assert_eq!(location_id("").as_deref(), None);
        assert_eq!(encode("t1 x/"), "t1%20x%2F");
    }
}
