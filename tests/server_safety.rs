//! The server's hardening of sends, rights, concurrency and quotas (audit
//! `shared/design/server-audit.md`, issue 15), through raw HTTP/1.1 on loopback against the
//! APNs mock: client errors as 400 (M3), `undefined` tags (M4), `test`/`direct` flags and no
//! scheduled direct send (M5, L6), per-key rates, sends in flight, installation and template
//! quotas, PATCH against DELETE and `If-Match` (M6), one read policy for Listen keys (M2, F6),
//! one tag in `/tags/{tag}` and paging (L5, H4). Every refusal is followed by a read (or the
//! mock's accounting) showing nothing changed.
//!
//! Not covered here: a storage failure through REST (H3). The failing store the registry's
//! unit tests inject (`ScriptedStore`, `src/registry/store.rs`) is `#[cfg(test)]` and
//! `Server::start` opens its registries from `data_dir` itself, so an integration test has
//! no way to hand the server a store whose flushes fail.

mod common;
mod rest;

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use common::{apns_token, eventually};
use rest::{
    apns_inst, apns_send_headers, apple_registration, hub_path, inst_path, Answer, Env, Setup,
    ALERT, HUB,
};
use tagcast_mock::apns::ApnsConfig;

/// A server with the APNs mock and `hub` after the keys (e.g. `[hub.limits]`).
async fn with_apns(apns: ApnsConfig, hub: &str) -> Env {
    Env::start(Setup {
        apns: Some(apns),
        hub: hub.to_owned(),
        ..Setup::default()
    })
    .await
}

/// Every `<tag>…</tag>` text in `xml`, in order.
fn all_of(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|r| r.split_once(close.as_str()).map(|(v, _)| v.to_owned()))
        .collect()
}

/// The message id at the end of a send's `Location`.
fn message_id(a: &Answer) -> String {
    let loc = a
        .header("Location")
        .unwrap_or_else(|| panic!("no Location: {a:?}"));
    let path = loc.split('?').next().unwrap();
    assert!(path.contains(&format!("/{HUB}/messages/")), "{loc}");
    path.rsplit('/').next().unwrap().to_owned()
}

/// Waits until send `id` has ended; returns its `<State>`.
async fn ended(env: &Env, id: &str) -> String {
    eventually(Duration::from_secs(10), "the send ends", async || {
        let a = env
            .full("GET", &hub_path(&format!("messages/{id}")), b"")
            .await;
        let state = all_of(&a.body, "State").pop().unwrap_or_default();
        match state.as_str() {
            "Completed" | "NoTargetFound" | "Abandoned" | "Cancelled" => Ok(state),
            _ => Err(format!("{} {}", a.status, a.body)),
        }
    })
    .await
}

fn deliveries(env: &Env) -> u64 {
    env.apns().stats().deliveries
}

async fn deliveries_reach(env: &Env, n: u64) {
    eventually(
        Duration::from_secs(10),
        "the mock's deliveries",
        async || {
            let d = deliveries(env);
            if d == n {
                Ok(())
            } else {
                Err(format!("{d} deliveries, waiting for {n}"))
            }
        },
    )
    .await
}

// audit M3: too many tags and a WNS host outside the allowlist are client errors (400), not
// 500s the SDK would retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_in_installations_are_400() {
    let env = Env::start(Setup::default()).await;
    let tags: Vec<String> = (0..61).map(|i| format!("tag{i}")).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let a = env
        .full(
            "PUT",
            &inst_path("many"),
            apns_inst("many", 1, &tags).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.detail().contains("60"), "the limit is named: {a:?}");
    assert_eq!(env.get_status("many").await, 404);
    // 60 is the limit, not a refusal.
    let a = env
        .full(
            "PUT",
            &inst_path("many"),
            apns_inst("many", 1, &tags[..60]).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");

    let wns = serde_json::json!({
        "installationId": "win",
        "platform": "wns",
        "pushChannel": "https://wns.attacker.example.test/?token=AwYAAAB",
    })
    .to_string();
    let a = env.full("PUT", &inst_path("win"), wns.as_bytes()).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.detail().contains("wns.attacker.example.test"), "{a:?}");
    assert_eq!(env.get_status("win").await, 404);
    env.server.shutdown().await;
}

// audit M4: `ServiceBusNotification-Tags: undefined` reaches nobody on a normal send; only a
// test send reads it as a broadcast (to at most 10 devices).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undefined_tags_broadcast_only_on_test_sends() {
    let env = with_apns(ApnsConfig::default(), "").await;
    for i in 0..12 {
        env.put_apns(&format!("u{i:02}"), i, &["t"]).await;
    }
    let a = env
        .call(
            "POST",
            &hub_path("messages"),
            &apns_send_headers(&env.full, Some("undefined")),
            ALERT,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let state = ended(&env, &message_id(&a)).await;
    assert_eq!(state, "NoTargetFound");
    assert_eq!(deliveries(&env), 0, "a send to `undefined` reached devices");

    let a = env
        .call(
            "POST",
            &hub_path("messages?test=true"),
            &apns_send_headers(&env.full, Some("undefined")),
            ALERT,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let results = all_of(&a.body, "RegistrationResult");
    assert_eq!(results.len(), 10, "{}", a.body);
    assert_eq!(all_of(&a.body, "Success"), ["10"], "{}", a.body);
    deliveries_reach(&env, 10).await;
    assert_eq!(env.apns().stats().unique_handles, 10);
    env.server.shutdown().await;
}

// audit M5, L6: no scheduled direct (or test) send; `test` and `direct` are booleans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_and_direct_are_booleans_and_schedules_are_never_direct() {
    let env = with_apns(ApnsConfig::default(), "").await;
    for i in 0..3 {
        env.put_apns(&format!("s{i}"), i, &["t"]).await;
    }
    // Due in a second, no Tags header: had it been kept, a broadcast to every device.
    let due = SystemTime::now() + Duration::from_secs(1);
    for flag in ["direct=true", "direct", "test=true"] {
        let mut h = apns_send_headers(&env.full, None);
        h.push(("ServiceBusNotification-ScheduleTime", rest::iso8601(due)));
        h.push(("ServiceBusNotification-DeviceHandle", apns_token(0)));
        let a = env
            .call(
                "POST",
                &hub_path(&format!("schedulednotifications?{flag}")),
                &h,
                ALERT,
            )
            .await;
        assert_eq!(a.status, 400, "{flag}: {a:?}");
        assert!(a.header("Location").is_none(), "{a:?}");
    }
    for bad in ["test=maybe", "direct=yes", "test=1"] {
        let a = env
            .call(
                "POST",
                &hub_path(&format!("messages?{bad}")),
                &apns_send_headers(&env.full, Some("t")),
                ALERT,
            )
            .await;
        assert_eq!(a.status, 400, "{bad}: {a:?}");
    }
    // `test=false`: a normal send (201, Location, no per-device outcome).
    let a = env
        .call(
            "POST",
            &hub_path("messages?test=false"),
            &apns_send_headers(&env.full, Some("t")),
            ALERT,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    assert!(!a.body.contains("NotificationOutcome"), "{a:?}");
    assert_eq!(ended(&env, &message_id(&a)).await, "Completed");
    deliveries_reach(&env, 3).await;
    // `direct=false`: a normal tag send, no device handle needed.
    let a = env
        .call(
            "POST",
            &hub_path("messages?direct=false"),
            &apns_send_headers(&env.full, Some("t")),
            ALERT,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(ended(&env, &message_id(&a)).await, "Completed");
    deliveries_reach(&env, 6).await;
    // Past the refused schedules' time (plus the scheduler's slack): nothing more was sent.
    let wait =
        due.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(1500);
    tokio::time::sleep(wait).await;
    assert_eq!(deliveries(&env), 6, "a refused schedule was sent");
    env.server.shutdown().await;
}

// Quotas: per-key rate limit, 429 with Retry-After; other keys unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429() {
    let env = Env::start(Setup {
        hub: "[hub.limits]\nrequests_per_second = 1\nburst = 2\n".into(),
        ..Setup::default()
    })
    .await;
    assert_eq!(env.listen("GET", &inst_path("r1"), b"").await.status, 404);
    assert_eq!(env.listen("GET", &inst_path("r1"), b"").await.status, 404);
    let a = env
        .listen(
            "PUT",
            &inst_path("r1"),
            apns_inst("r1", 1, &["t"]).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 429, "{a:?}");
    let secs: u64 = a
        .header("Retry-After")
        .unwrap_or_else(|| panic!("no Retry-After: {a:?}"))
        .parse()
        .unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
    // The other key has its own bucket, and sees the refused PUT did nothing.
    assert_eq!(env.get_status("r1").await, 404);
    assert_eq!(env.get_status("r1").await, 404);
    env.server.shutdown().await;
}

// Quotas: max_sends_in_flight; a send while the hub is at the cap is 429 and never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_beyond_the_in_flight_cap_get_429() {
    let slow = ApnsConfig {
        faults: tagcast_mock::Faults {
            latency: Duration::from_millis(1500),
            ..Default::default()
        },
        ..ApnsConfig::default()
    };
    let env = with_apns(slow, "[hub.limits]\nmax_sends_in_flight = 1\n").await;
    env.put_apns("f0", 0, &["t"]).await;
    let h = apns_send_headers(&env.full, Some("t"));
    let first = env.call("POST", &hub_path("messages"), &h, ALERT).await;
    assert_eq!(first.status, 201, "{first:?}");
    let second = env.call("POST", &hub_path("messages"), &h, ALERT).await;
    assert_eq!(second.status, 429, "{second:?}");
    assert!(second.header("Retry-After").is_some(), "{second:?}");
    assert!(second.header("Location").is_none(), "{second:?}");
    // A test send needs a slot too.
    let test = env
        .call("POST", &hub_path("messages?test=true"), &h, ALERT)
        .await;
    assert_eq!(test.status, 429, "{test:?}");
    assert_eq!(ended(&env, &message_id(&first)).await, "Completed");
    assert_eq!(deliveries(&env), 1, "only the first send reached the mock");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deliveries(&env), 1);
    env.server.shutdown().await;
}

// Quotas: max_installations (403 QuotaExceeded for a new one, replacing is fine) and
// max_templates_per_installation (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installation_and_template_quotas() {
    let env = Env::start(Setup {
        hub: "[hub.limits]\nmax_installations = 2\nmax_templates_per_installation = 1\n".into(),
        ..Setup::default()
    })
    .await;
    env.put_apns("q1", 1, &["a"]).await;
    env.put_apns("q2", 2, &["a"]).await;
    let a = env
        .full(
            "PUT",
            &inst_path("q3"),
            apns_inst("q3", 3, &["a"]).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.detail().contains("QuotaExceeded"), "{a:?}");
    assert_eq!(env.get_status("q3").await, 404);
    // Replacing an existing one is no new installation.
    let a = env
        .full(
            "PUT",
            &inst_path("q1"),
            apns_inst("q1", 1, &["b"]).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    // A registration is an installation too.
    let a = env
        .full(
            "PUT",
            &hub_path("registrations/q4"),
            apple_registration(4, "a").as_bytes(),
        )
        .await;
    assert_eq!(a.status, 403, "{a:?}");

    let template = |n: usize| {
        let ts: serde_json::Map<String, serde_json::Value> = (0..n)
            .map(|i| {
                (
                    format!("t{i}"),
                    serde_json::json!({"body": "{\"aps\":{\"alert\":\"$(m)\"}}"}),
                )
            })
            .collect();
        serde_json::json!({
            "installationId": "q2",
            "platform": "apns",
            "pushChannel": apns_token(2),
            "templates": ts,
        })
        .to_string()
    };
    let before = env.full("GET", &inst_path("q2"), b"").await;
    let a = env
        .full("PUT", &inst_path("q2"), template(2).as_bytes())
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.detail().contains('1'), "the limit is named: {a:?}");
    let after = env.full("GET", &inst_path("q2"), b"").await;
    assert_eq!(
        after.body, before.body,
        "a refused write changed the installation"
    );
    let a = env
        .full("PUT", &inst_path("q2"), template(1).as_bytes())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    env.server.shutdown().await;
}

// audit M6: a PATCH racing a DELETE never brings the installation back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_racing_delete_never_resurrects() {
    let env = Env::start(Setup::default()).await;
    let patch = br#"[{"op":"add","path":"/tags","value":"patched"}]"#;
    let mut patched_first = 0;
    for round in 0..50 {
        let id = format!("race{round}");
        env.put_apns(&id, round, &["t"]).await;
        let path = inst_path(&id);
        let (p, d) = tokio::join!(
            env.full("PATCH", &path, patch),
            env.full("DELETE", &path, b""),
        );
        assert_eq!(d.status, 204, "round {round}: {d:?}");
        assert!([200, 404, 409].contains(&p.status), "round {round}: {p:?}");
        patched_first += u32::from(p.status == 200);
        let g = env.full("GET", &inst_path(&id), b"").await;
        assert_eq!(
            g.status, 404,
            "round {round}: resurrected: {g:?} (PATCH {p:?})"
        );
    }
    eprintln!("PATCH answered 200 in {patched_first} of 50 rounds");
    env.server.shutdown().await;
}

// Installations take If-Match too (the GET's ETag): PUT, PATCH and DELETE are
// compare-and-set on the version, 412 when it moved on; `*` needs the installation to exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_guards_installation_writes() {
    let env = Env::start(Setup::default()).await;
    let path = inst_path("i1");
    let a = env
        .full("PUT", &path, apns_inst("i1", 1, &["a"]).as_bytes())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let first = env.full("GET", &path, b"").await;
    let first = first.header("ETag").expect("an ETag").to_owned();
    let with = |e: &str| vec![env.full.clone(), ("If-Match", e.to_owned())];
    let a = env
        .call(
            "PUT",
            &path,
            &with(&first),
            apns_inst("i1", 1, &["b"]).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let got = env.full("GET", &path, b"").await;
    let second = got.header("ETag").expect("an ETag").to_owned();
    assert_ne!(first, second);
    let patch = br#"[{"op":"add","path":"/tags","value":"p"}]"#;
    for (method, body) in [
        ("PUT", apns_inst("i1", 1, &["c"]).into_bytes()),
        ("PATCH", patch.to_vec()),
        ("DELETE", Vec::new()),
    ] {
        let a = env.call(method, &path, &with(&first), &body).await;
        assert_eq!(a.status, 412, "{method}: {a:?}");
    }
    let got = env.full("GET", &path, b"").await;
    assert_eq!(got.header("ETag"), Some(second.as_str()), "{got:?}");
    assert!(got.body.contains("\"b\""), "{got:?}");
    let a = env.call("PATCH", &path, &with(&second), patch).await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = env
        .call(
            "PUT",
            &inst_path("i2"),
            &with("*"),
            apns_inst("i2", 2, &[]).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(env.full("GET", &inst_path("i2"), b"").await.status, 404);
    let third = env.full("GET", &path, b"").await;
    let third = third.header("ETag").expect("an ETag").to_owned();
    let a = env.call("DELETE", &path, &with(&third), b"").await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(env.full("GET", &path, b"").await.status, 404);
    env.server.shutdown().await;
}

// audit M6: registration writes and deletes under If-Match are compare-and-set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_guards_registration_writes() {
    let env = Env::start(Setup::default()).await;
    let path = hub_path("registrations/reg1");
    let a = env
        .full("PUT", &path, apple_registration(7, "a").as_bytes())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let got = env.full("GET", &path, b"").await;
    let first = got.header("ETag").expect("an ETag").to_owned();
    assert_eq!(all_of(&got.body, "Tags"), ["a"]);
    // The ETag from the GET: accepted.
    let h = vec![env.full.clone(), ("If-Match", first.clone())];
    let a = env
        .call("PUT", &path, &h, apple_registration(7, "b").as_bytes())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let second = a.header("ETag").expect("an ETag").to_owned();
    assert_ne!(first, second);
    // The stale one: 412, content unchanged.
    let a = env
        .call("PUT", &path, &h, apple_registration(7, "c").as_bytes())
        .await;
    assert_eq!(a.status, 412, "{a:?}");
    let got = env.full("GET", &path, b"").await;
    assert_eq!(all_of(&got.body, "Tags"), ["b"], "{got:?}");
    assert_eq!(got.header("ETag"), Some(second.as_str()));
    // An ETag this server never issued: 412 too.
    let bogus = vec![
        env.full.clone(),
        ("If-Match", "W/\"not-a-version\"".to_owned()),
    ];
    let a = env
        .call("PUT", &path, &bogus, apple_registration(7, "d").as_bytes())
        .await;
    assert_eq!(a.status, 412, "{a:?}");
    // DELETE with the stale ETag: 412, still there.
    let a = env.call("DELETE", &path, &h, b"").await;
    assert_eq!(a.status, 412, "{a:?}");
    let got = env.full("GET", &path, b"").await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(all_of(&got.body, "Tags"), ["b"]);
    // With the current one: gone.
    let h = vec![env.full.clone(), ("If-Match", second)];
    let a = env.call("DELETE", &path, &h, b"").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(env.full("GET", &path, b"").await.status, 404);
    env.server.shutdown().await;
}

// audit M2, F6: a Listen key reads single devices without Web Push secrets, may look a
// channel up, and may not list the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_reads_without_web_push_secrets() {
    let env = Env::start(Setup::default()).await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut key = [7u8; 65];
    key[0] = 4;
    let (p256dh, auth) = (b64.encode(key), b64.encode([3u8; 16]));
    let endpoint = "https://push.example.test/sub/wp1";
    let body = serde_json::json!({
        "installationId": "wp1",
        "platform": "browser",
        "pushChannel": {"endpoint": endpoint, "p256dh": p256dh, "auth": auth},
        "tags": ["web"],
    })
    .to_string();
    let a = env.listen("PUT", &inst_path("wp1"), body.as_bytes()).await;
    assert_eq!(a.status, 200, "{a:?}");
    let secret_free = |a: &Answer| {
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.contains(endpoint), "{a:?}");
        for s in [
            p256dh.as_str(),
            auth.as_str(),
            "p256dh",
            "P256DH",
            "<Auth>",
            "\"auth\"",
        ] {
            assert!(!a.body.contains(s), "{s} visible to Listen: {}", a.body);
        }
    };
    let with_secrets = |a: &Answer| {
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.contains(&p256dh) && a.body.contains(&auth), "{a:?}");
    };
    let manage_before = env.full("GET", &inst_path("wp1"), b"").await;
    with_secrets(&manage_before);
    secret_free(&env.listen("GET", &inst_path("wp1"), b"").await);
    secret_free(&env.listen("GET", &hub_path("registrations/wp1"), b"").await);
    let reg = env.full("GET", &hub_path("registrations/wp1"), b"").await;
    with_secrets(&reg);
    assert!(
        reg.body.contains("<P256DH>") && reg.body.contains("<Auth>"),
        "{reg:?}"
    );

    // A channel lookup: Listen may; the answer carries no secrets either.
    let filter = format!(
        "registrations?$filter=ChannelUri%20eq%20'{}'",
        endpoint.replace(':', "%3A").replace('/', "%2F")
    );
    let found = env.listen("GET", &hub_path(&filter), b"").await;
    secret_free(&found);
    assert_eq!(all_of(&found.body, "RegistrationId"), ["wp1"], "{found:?}");
    // Listing the hub: Manage only.
    let a = env.listen("GET", &hub_path("registrations"), b"").await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(!a.body.contains(endpoint), "{a:?}");
    assert_eq!(
        env.full("GET", &hub_path("registrations"), b"")
            .await
            .status,
        200
    );
    // Reads changed nothing.
    let manage_after = env.full("GET", &inst_path("wp1"), b"").await;
    assert_eq!(manage_after.body, manage_before.body);
    env.server.shutdown().await;
}

// audit L5, H4: `/tags/{tag}` takes one tag; listings page in id order with continuation
// tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_listings_take_one_tag_and_pages_walk_the_hub() {
    let env = Env::start(Setup::default()).await;
    // Written out of order.
    for (n, i) in [3u64, 0, 4, 1, 2].iter().enumerate() {
        env.put_apns(
            &format!("p{i}"),
            *i,
            if n % 2 == 0 { &["x"] } else { &["y"] },
        )
        .await;
    }
    for expr in ["!x", "x%7C%7Cy", "x%20%26%26%20y"] {
        let a = env
            .full("GET", &hub_path(&format!("tags/{expr}/registrations")), b"")
            .await;
        assert_eq!(a.status, 400, "{expr}: {a:?}");
        assert!(!a.body.contains("<entry"), "{a:?}");
    }
    let a = env
        .full("GET", &hub_path("tags/x/registrations"), b"")
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(all_of(&a.body, "RegistrationId"), ["p2", "p3", "p4"]);

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        assert!(page < 5, "more pages than installations: {seen:?}");
        let q = match &token {
            None => "registrations?$top=2".to_owned(),
            Some(t) => format!("registrations?$top=2&continuationtoken={t}"),
        };
        let a = env.full("GET", &hub_path(&q), b"").await;
        assert_eq!(a.status, 200, "{a:?}");
        let ids = all_of(&a.body, "RegistrationId");
        assert!(ids.len() <= 2, "{ids:?}");
        seen.extend(ids);
        token = a.header("x-ms-continuationtoken").map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4"]);
    // `%24top`, as the SDK encodes it, is the same parameter.
    let a = env
        .full("GET", &hub_path("registrations?%24top=4"), b"")
        .await;
    assert_eq!(all_of(&a.body, "RegistrationId").len(), 4, "{a:?}");
    assert!(a.header("x-ms-continuationtoken").is_some());
    env.server.shutdown().await;
}

// audit H5: pending schedules are capped per hub; one more is 403 QuotaExceeded with nothing
// written, and a cancel makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_schedules_are_capped() {
    let env = with_apns(
        ApnsConfig::default(),
        "[hub.limits]\nmax_pending_schedules = 2\n",
    )
    .await;
    env.put_apns("s0", 0, &["t"]).await;
    let due = SystemTime::now() + Duration::from_secs(3600);
    let schedule = || async {
        let mut h = apns_send_headers(&env.full, Some("t"));
        h.push(("ServiceBusNotification-ScheduleTime", rest::iso8601(due)));
        env.call("POST", &hub_path("schedulednotifications"), &h, ALERT)
            .await
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let a = schedule().await;
        assert_eq!(a.status, 201, "{a:?}");
        let loc = a.header("Location").expect("Location").to_owned();
        let id = loc
            .split('?')
            .next()
            .and_then(|p| p.rsplit('/').next())
            .expect("an id")
            .to_owned();
        ids.push(id);
    }
    let a = schedule().await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.detail().contains("QuotaExceeded"), "{a:?}");
    assert!(a.header("Location").is_none(), "{a:?}");
    // A cancel makes room (and the cancelled one cannot be cancelled twice).
    let path = hub_path(&format!("schedulednotifications/{}", ids[0]));
    assert_eq!(env.full("DELETE", &path, b"").await.status, 200);
    assert_eq!(env.full("DELETE", &path, b"").await.status, 404);
    assert_eq!(schedule().await.status, 201);
    assert_eq!(env.apns().stats().unique_handles, 0, "nothing fired");
    env.server.shutdown().await;
}

// audit M1: a Web Push endpoint at a non-public address (metadata service, private network,
// loopback) or with user info is refused at registration with a 400, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_web_push_endpoints_are_refused() {
    let env = Env::start(Setup::default()).await;
    let b64 = |n: usize| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            vec![4u8; n],
        )
    };
    for (i, endpoint) in [
        "https://169.254.169.254/latest/meta-data",
        "https://10.1.2.3/push",
        "https://127.0.0.1:8443/push",
        "https://[::1]/push",
        "https://user:pw@push.example.com/push",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("wp{i}");
        let body = serde_json::json!({
            "installationId": id,
            "platform": "browser",
            "pushChannel": {"endpoint": endpoint, "p256dh": b64(65), "auth": b64(16)},
        })
        .to_string();
        let a = env.listen("PUT", &inst_path(&id), body.as_bytes()).await;
        assert_eq!(a.status, 400, "{endpoint}: {a:?}");
        assert!(
            a.detail().contains("refused") || a.detail().contains("user info"),
            "{endpoint}: {a:?}"
        );
        assert_eq!(env.get_status(&id).await, 404, "{endpoint} was stored");
    }
    env.server.shutdown().await;
}

// audit F22: a registration PUT does not replace an installation with fields the registration
// model cannot carry (it would drop them); a plain one it replaces as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_write_never_drops_installation_fields() {
    let env = Env::start(Setup::default()).await;
    let rich = format!(
        r#"{{"installationId":"rich1","platform":"apns","pushChannel":"{}","tags":["a"],"userId":"alice"}}"#,
        apns_token(3)
    );
    let a = env.full("PUT", &inst_path("rich1"), rich.as_bytes()).await;
    assert_eq!(a.status, 200, "{a:?}");
    let before = env.full("GET", &inst_path("rich1"), b"").await;
    let a = env
        .full(
            "PUT",
            &hub_path("registrations/rich1"),
            apple_registration(3, "b").as_bytes(),
        )
        .await;
    assert_eq!(a.status, 409, "{a:?}");
    assert!(
        a.detail().contains("userId") && a.detail().contains("/installations/rich1"),
        "{a:?}"
    );
    let after = env.full("GET", &inst_path("rich1"), b"").await;
    assert_eq!(after.body, before.body, "the refused write changed it");

    // No userId, one device, tags only: a registration can carry it and replaces it.
    env.put_apns("plain1", 4, &["a"]).await;
    let a = env
        .full(
            "PUT",
            &hub_path("registrations/plain1"),
            apple_registration(4, "b").as_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let after = env.full("GET", &inst_path("plain1"), b"").await;
    assert!(after.body.contains("\"b\""), "{}", after.body);
    env.server.shutdown().await;
}
