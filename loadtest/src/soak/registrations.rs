//! Registration traffic: installation PUTs with fresh tags, PATCHes and DELETEs on the tracked
//! ids (one request at a time per id, every acknowledgement recorded in the model), and the
//! same operations racing freely on a small shared set of ids.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use http::Method;
use rand::rngs::SmallRng;
use rand::Rng as _;

use super::client::{checks, Check, Hub};
use super::model::{device_token, tags_of, tracked_id, Known};
use super::Ctx;

const JSON: (&str, &str) = ("content-type", "application/json");

/// One paced worker: tracked operations and, with probability `race_share`, racing ones.
pub(crate) async fn worker(ctx: &Ctx, per_sec: f64, race_share: f64, mut rng: SmallRng) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs_f64(1.0 / per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !ctx.stopped() {
        tick.tick().await;
        if rng.gen_bool(race_share) {
            race_op(ctx, &mut rng).await;
        } else {
            tracked_op(ctx, &mut rng).await;
        }
    }
}

/// The tags of a PUT: a tag no installation had before (fresh strings all the time: the
/// registry must reclaim the old ones) and the id's group (what sends address).
fn fresh_tags(ctx: &Ctx, group: usize) -> BTreeSet<String> {
    let n = ctx.fresh.fetch_add(1, Ordering::Relaxed);
    [format!("f{n}"), format!("g{group}")].into_iter().collect()
}

fn installation_body(id: &str, token: &str, tags: &BTreeSet<String>) -> Vec<u8> {
    serde_json::json!({
        "installationId": id,
        "platform": "apns",
        "pushChannel": token,
        "tags": tags,
    })
    .to_string()
    .into_bytes()
}

/// One operation on a tracked id that no other task holds: PUT (50%), DELETE (15%), PATCH then
/// a read-back (25%), or a read compared with the model (10%).
async fn tracked_op(ctx: &Ctx, rng: &mut SmallRng) {
    let n = ctx.tracked.len();
    let Some((i, mut known)) = (0..8).find_map(|_| {
        let i = rng.gen_range(0..n);
        ctx.tracked.try_claim(i).map(|g| (i, g))
    }) else {
        return;
    };
    let id = tracked_id(i);
    let path = format!("/installations/{id}");
    let roll = rng.gen_range(0..100);
    let next = if roll < 50 {
        let tags = fresh_tags(ctx, i % ctx.groups);
        let body = installation_body(&id, &device_token(i as u64), &tags);
        let r = ctx
            .pool
            .call(&checks::PUT, Hub::Soak, Method::PUT, &path, &[JSON], body);
        ack(r.await.map(|r| r.status), 200, Known::Present(tags), &known)
    } else if roll < 65 {
        let r = ctx.pool.call(
            &checks::DELETE,
            Hub::Soak,
            Method::DELETE,
            &path,
            &[],
            vec![],
        );
        match r.await.map(|r| r.status) {
            Some(200 | 204) => Known::Absent,
            Some(s) if s < 500 => known.clone(),
            _ => Known::Doubt,
        }
    } else if roll < 90 {
        patch_and_read(ctx, &id, &known).await
    } else {
        let r = ctx
            .pool
            .call(&checks::GET, Hub::Soak, Method::GET, &path, &[], vec![]);
        let seen = installation_state(r.await);
        if let (Some(seen), false) = (&seen, matches!(*known, Known::Doubt)) {
            if *seen != *known {
                ctx.live_mismatch(format!("{id}: acknowledged {known:?}, read {seen:?}"));
            }
        }
        seen.unwrap_or_else(|| known.clone())
    };
    *known = next;
}

/// The state after a write answered `status`: `acked` on `ok`, unchanged on a refusal (4xx:
/// nothing changed), in doubt otherwise.
fn ack(status: Option<u16>, ok: u16, acked: Known, before: &Known) -> Known {
    match status {
        Some(s) if s == ok => acked,
        Some(s) if s < 500 => before.clone(),
        _ => Known::Doubt,
    }
}

/// PATCH: drop one of the known tags and add a fresh one, then read back (the PATCH's result
/// depends on the state it applied to; the read under the id's lock shows exactly that).
async fn patch_and_read(ctx: &Ctx, id: &str, known: &Known) -> Known {
    let mut ops = Vec::new();
    if let Known::Present(tags) = known {
        if let Some(t) = tags
            .iter()
            .find(|t| t.starts_with('f') || t.starts_with('p'))
        {
            ops.push(serde_json::json!({"op": "remove", "path": format!("/tags/{t}")}));
        }
    }
    let n = ctx.fresh.fetch_add(1, Ordering::Relaxed);
    ops.push(serde_json::json!({"op": "add", "path": "/tags", "value": format!("p{n}")}));
    let path = format!("/installations/{id}");
    let body = serde_json::Value::Array(ops).to_string().into_bytes();
    let r = ctx.pool.call(
        &checks::PATCH,
        Hub::Soak,
        Method::PATCH,
        &path,
        &[JSON],
        body,
    );
    let patched = r.await.map(|r| r.status);
    if patched == Some(404) && matches!(known, Known::Present(_)) {
        ctx.live_mismatch(format!("{id}: acknowledged {known:?}, PATCH answered 404"));
    }
    let r = ctx
        .pool
        .call(&checks::GET, Hub::Soak, Method::GET, &path, &[], vec![]);
    match (patched, installation_state(r.await)) {
        // The read is after the PATCH under the same lock: it is the acknowledged state.
        (Some(s), Some(seen)) if s < 500 => seen,
        _ => Known::Doubt,
    }
}

/// The state a `GET /installations/{id}` shows, or `None` if it did not answer 200 or 404.
pub(crate) fn installation_state(r: Option<crate::mock::testkit::TestResponse>) -> Option<Known> {
    let r = r?;
    match r.status {
        200 => Some(Known::Present(tags_of(&r.json()))),
        404 => Some(Known::Absent),
        _ => None,
    }
}

/// One operation on the racing ids `r0`..: any task, any time, no model; only the statuses are
/// checked.
async fn race_op(ctx: &Ctx, rng: &mut SmallRng) {
    let i = rng.gen_range(0..ctx.race_ids.max(1));
    let id = format!("r{i}");
    let path = format!("/installations/{id}");
    let n = ctx.fresh.fetch_add(1, Ordering::Relaxed);
    let (check, method, body): (&Check, Method, Vec<u8>) = match rng.gen_range(0..4) {
        0 => {
            let tags = fresh_tags(ctx, i % ctx.groups);
            let body = installation_body(&id, &device_token(1_000_000 + i as u64), &tags);
            (&checks::RACE_PUT, Method::PUT, body)
        }
        1 => {
            // Adds, or replaces all tags (so adds never pile up to the 60-tag limit).
            let op = if n % 2 == 0 {
                serde_json::json!([{"op": "add", "path": "/tags", "value": format!("q{n}")}])
            } else {
                serde_json::json!([{"op": "replace", "path": "/tags", "value": [format!("q{n}")]}])
            };
            (
                &checks::RACE_PATCH,
                Method::PATCH,
                op.to_string().into_bytes(),
            )
        }
        2 => (&checks::RACE_DELETE, Method::DELETE, Vec::new()),
        _ => (&checks::RACE_GET, Method::GET, Vec::new()),
    };
    let _ = ctx
        .pool
        .call(check, Hub::Soak, method, &path, &[JSON], body)
        .await;
}
