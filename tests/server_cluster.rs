//! `tagcast serve` in cluster mode (`[cluster]`, issue 16): two in-process servers whose hub
//! is served by cluster nodes on one 3-server NATS cluster, the APNs mock behind both.
//! Installations written through one server are read, patched and deleted through the
//! other; a broadcast accepted by one is delivered exactly once per device (the mock's
//! accounting) by both nodes' partitions, and `GET /messages/{id}` on either reports it
//! Completed with the right totals; a scheduled send fires; a template send renders on the
//! partitions' owners; a test send reaches at most 10 matching devices over every partition
//! and reports each; a bad `[cluster]` is refused at configuration time. ETags guard
//! installation and registration writes across the nodes, registration listings merge
//! every partition, and import/export jobs write to and read from every partition.
//!
//! Skipped (passes without running) when no `nats-server` ≥ 2.10.23 is found outside CI
//! (`TAGCAST_NATS_SERVER`), like `tests/cluster_*.rs`.
#![cfg(feature = "cluster")]

mod common;
mod rest;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use common::{apns_token, eventually};
use rest::{
    apns_inst, apns_send_headers, apple_registration, call, hub_path, inst_path, job_body, sas,
    Answer, ALERT, KEY,
};
use tagcast::server::{Server, ServerConfig};
use tagcast_mock::apns::ApnsConfig;
use tagcast_mock::nats::NatsCluster;

const DEVICES: u64 = 40;

/// `[cluster]` for node `node`: 16 partitions, a 1 s lease (failover is not what this
/// tests), 3 replicas on the 3-server NATS cluster.
fn cluster_toml(node: &str, nats: &NatsCluster) -> String {
    let urls: Vec<String> = nats.urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "\n[cluster]\nnats_urls = [{}]\nnode = \"{node}\"\npartitions = 16\nstream_groups = 4\n\
         lease_ms = 1000\nmargin_ms = 300\nclaim_size = 8\n",
        urls.join(", ")
    )
}

/// The `<tag>` texts of `xml`.
fn all_of(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|r| r.split_once(close.as_str()).map(|(v, _)| v.to_owned()))
        .collect()
}

/// The `<Count>` of outcome `name` in a cluster `NotificationDetails`.
fn count(xml: &str, name: &str) -> Option<u64> {
    let at = xml.find(&format!("<Name>{name}</Name>"))?;
    all_of(&xml[at..], "Count").first()?.parse().ok()
}

/// The id at the end of a send's `Location`.
fn location_id(a: &Answer, kind: &str) -> String {
    let loc = a
        .header("Location")
        .unwrap_or_else(|| panic!("no Location: {a:?}"));
    let path = loc.split('?').next().unwrap();
    assert!(path.contains(&format!("/ops/{kind}/")), "{loc}");
    assert!(loc.ends_with("?api-version=2020-06"), "{loc}");
    path.rsplit('/').next().unwrap().to_owned()
}

/// The number in `<tag>n</tag>` of `xml`.
fn count_leaf(xml: &str, tag: &str) -> Option<u64> {
    all_of(xml, tag).first().and_then(|v| v.parse().ok())
}

struct Node {
    server: Server,
    full: (&'static str, String),
}

impl Node {
    async fn call(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, String)],
        body: &[u8],
    ) -> Answer {
        let mut h = vec![self.full.clone()];
        h.extend(extra.iter().cloned());
        call(self.server.local_addr(), method, path, &h, body).await
    }
}

/// Waits until `GET /messages/{id}` on `node` says Completed; returns the body.
async fn completed(node: &Node, id: &str) -> String {
    eventually(Duration::from_secs(30), "the send completes", async || {
        let a = node
            .call("GET", &hub_path(&format!("messages/{id}")), &[], b"")
            .await;
        if a.status == 200 && all_of(&a.body, "State") == ["Completed"] {
            Ok(a.body)
        } else {
            Err(format!("{} {}", a.status, a.body))
        }
    })
    .await
}

fn deliveries_per_handle(bed: &common::Bed) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for d in bed.apns().deliveries() {
        *m.entry(d.handle).or_insert(0) += 1;
    }
    m
}

/// Two servers, `s1` and `s2`, on the cluster `nats`, each ready (`/readyz`).
async fn start_nodes(bed: &common::Bed, nats: &NatsCluster, hub_extra: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in ["s1", "s2"] {
        let dir = bed.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = rest::config(
            &dir,
            Some(bed.apns()),
            "",
            &format!("{hub_extra}{}", cluster_toml(name, nats)),
        );
        assert!(cfg.cluster.is_some());
        let server = Server::start(cfg).await.unwrap();
        let full = sas(server.local_addr(), "full", KEY);
        nodes.push(Node { server, full });
    }
    // /readyz: 200 once each node finished its first round.
    for n in &nodes {
        let addr = n.server.local_addr();
        eventually(Duration::from_secs(20), "/readyz is 200", async || {
            call(addr, "GET", "/readyz", &[], b"").await.status == 200
        })
        .await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_installations_and_sends_through_the_cluster() {
    let Some(nats) = tagcast_mock::nats::ready_cluster_for_test(3) else {
        return;
    };
    let bed = common::Bed::new()
        .apns(ApnsConfig {
            same_token_burst: None,
            ..ApnsConfig::default()
        })
        .start()
        .await;
    let nodes = start_nodes(&bed, &nats, "").await;
    let (s1, s2) = (&nodes[0], &nodes[1]);

    // Installations: written through s1, read through s2.
    for i in 0..DEVICES {
        let id = format!("dev-{i}");
        let tags: &[&str] = if i % 2 == 0 {
            &["all", "even"]
        } else {
            &["all"]
        };
        let a = s1
            .call(
                "PUT",
                &inst_path(&id),
                &[],
                apns_inst(&id, i, tags).as_bytes(),
            )
            .await;
        assert_eq!(a.status, 200, "PUT {id}: {a:?}");
    }
    for i in 0..DEVICES {
        let id = format!("dev-{i}");
        let a = s2.call("GET", &inst_path(&id), &[], b"").await;
        assert_eq!(a.status, 200, "GET {id}: {a:?}");
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["pushChannel"], apns_token(i), "{a:?}");
    }
    // PATCH through s2, read through s1; DELETE through s2.
    let patch = br#"[{"op":"add","path":"/tags","value":"patched"}]"#;
    let a = s2.call("PATCH", &inst_path("dev-1"), &[], patch).await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = s1.call("GET", &inst_path("dev-1"), &[], b"").await;
    assert!(a.body.contains("patched"), "{a:?}");
    let a = s2.call("PATCH", &inst_path("nobody"), &[], patch).await;
    assert_eq!(a.status, 404, "{a:?}");
    let a = s2.call("DELETE", &inst_path("dev-39"), &[], b"").await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(
        s1.call("GET", &inst_path("dev-39"), &[], b"").await.status,
        404
    );
    // The registry's own verdict: 400 with its text (an invalid device token).
    let bad = serde_json::json!({"installationId": "bad", "platform": "apns", "pushChannel": "zz"});
    let a = s1
        .call("PUT", &inst_path("bad"), &[], bad.to_string().as_bytes())
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    let live = DEVICES - 1;

    // A broadcast through s2: every live device exactly once; the outcome on s1.
    let a = s2
        .call(
            "POST",
            &hub_path("messages"),
            &apns_send_headers(&s2.full, None)[1..],
            ALERT,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let id = location_id(&a, "messages");
    let body = completed(s1, &id).await;
    assert_eq!(count(&body, "Targeted"), Some(live), "{body}");
    assert_eq!(count(&body, "Success"), Some(live), "{body}");
    assert_eq!(count(&body, "Failed"), Some(0), "{body}");
    assert_eq!(count(&body, "PossibleDuplicates"), Some(0), "{body}");
    assert_eq!(count(&body, "PartitionsFinished"), Some(16), "{body}");
    assert_eq!(all_of(&body, "NotificationId"), [id.as_str()], "{body}");
    let apns = all_of(&body, "ApnsOutcomeCounts");
    assert_eq!(apns.len(), 1, "{body}");
    assert_eq!(count(&apns[0], "Success"), Some(live), "{body}");
    // The node's metrics: owned partitions, chunk and claim latencies.
    let m = call(s1.server.local_addr(), "GET", "/metrics", &[], b"").await;
    assert_eq!(m.status, 200, "{m:?}");
    for name in [
        "tagcast_cluster_owned_partitions",
        "tagcast_cluster_chunk_seconds",
        "tagcast_cluster_claim_cas_seconds",
        "tagcast_cluster_write_route_seconds",
    ] {
        assert!(m.body.contains(name), "{name} missing from /metrics");
    }
    let per = deliveries_per_handle(&bed);
    assert_eq!(per.len() as u64, live, "{per:?}");
    assert!(per.values().all(|n| *n == 1), "a duplicate: {per:?}");
    assert!(
        !per.contains_key(&apns_token(39)),
        "a deleted device got it"
    );

    // A tag expression through s1: the even devices (dev-0 … dev-38).
    let before = bed.apns().deliveries().len();
    let a = s1
        .call(
            "POST",
            &hub_path("messages"),
            &apns_send_headers(&s1.full, Some("even && !patched"))[1..],
            ALERT,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let body = completed(s2, &location_id(&a, "messages")).await;
    assert_eq!(count(&body, "Success"), Some(20), "{body}");
    assert_eq!(bed.apns().deliveries().len() - before, 20);

    // A scheduled send fires once due; a far one is cancelled (a tombstone: 200).
    let before = bed.apns().deliveries().len();
    let mut h = apns_send_headers(&s1.full, Some("patched"))[1..].to_vec();
    h.push((
        "ServiceBusNotification-ScheduleTime",
        rest::iso8601(SystemTime::now() + Duration::from_secs(2)),
    ));
    let a = s1
        .call("POST", &hub_path("schedulednotifications"), &h, ALERT)
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let body = completed(s2, &location_id(&a, "schedulednotifications")).await;
    assert_eq!(count(&body, "Success"), Some(1), "{body}");
    assert_eq!(bed.apns().deliveries().len() - before, 1);
    let mut h = apns_send_headers(&s1.full, None)[1..].to_vec();
    h.push((
        "ServiceBusNotification-ScheduleTime",
        rest::iso8601(SystemTime::now() + Duration::from_secs(3600)),
    ));
    let a = s1
        .call("POST", &hub_path("schedulednotifications"), &h, ALERT)
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let sid = location_id(&a, "schedulednotifications");
    let a = s2
        .call(
            "DELETE",
            &hub_path(&format!("schedulednotifications/{sid}")),
            &[],
            b"",
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");

    // A direct send runs on the receiving server's engine; its outcome is read there as on
    // a single node (per-platform counts).
    let before = bed.apns().deliveries().len();
    let mut h = apns_send_headers(&s2.full, None)[1..].to_vec();
    h.push(("ServiceBusNotification-DeviceHandle", apns_token(100)));
    let a = s2
        .call("POST", &hub_path("messages?direct"), &h, ALERT)
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let did = location_id(&a, "messages");
    let body = eventually(
        Duration::from_secs(10),
        "the direct send completes",
        async || {
            let a = s2
                .call("GET", &hub_path(&format!("messages/{did}")), &[], b"")
                .await;
            if all_of(&a.body, "State") == ["Completed"] {
                Ok(a.body)
            } else {
                Err(format!("{} {}", a.status, a.body))
            }
        },
    )
    .await;
    assert!(body.contains("<ApnsOutcomeCounts>"), "{body}");
    assert_eq!(bed.apns().deliveries().len() - before, 1);

    // A template send: rendered on each partition's owner, one push per matching template
    // (dev-t0 has two, dev-t1 one that matches and one that does not; the other devices
    // none).
    let t = |body: &str, tags: &[&str]| serde_json::json!({"body": body, "tags": tags});
    for (name, i, templates) in [
        (
            "dev-t0",
            200,
            serde_json::json!({
                "a": t(r#"{"aps":{"alert":"$(m)","sound":"a"}}"#, &["greet"]),
                "b": t(r#"{"aps":{"alert":"$(m)","sound":"b"}}"#, &["greet"]),
            }),
        ),
        (
            "dev-t1",
            201,
            serde_json::json!({
                "a": t(r#"{"aps":{"alert":"$(m)","sound":"a"}}"#, &["greet"]),
                "c": t(r#"{"aps":{"alert":"$(m)","sound":"c"}}"#, &["other"]),
            }),
        ),
    ] {
        let inst = serde_json::json!({
            "installationId": name, "platform": "apns", "pushChannel": apns_token(i),
            "templates": templates,
        });
        let a = s2
            .call("PUT", &inst_path(name), &[], inst.to_string().as_bytes())
            .await;
        assert!(a.status == 200 || a.status == 201, "{a:?}");
    }
    let before = bed.apns().deliveries().len();
    let template = [
        ("ServiceBusNotification-Format", "template".to_owned()),
        ("ServiceBusNotification-Tags", "greet".to_owned()),
        ("Content-Type", "application/json".to_owned()),
    ];
    let a = s1
        .call(
            "POST",
            &hub_path("messages"),
            &template,
            br#"{"m":"from the cluster"}"#,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let body = completed(s2, &location_id(&a, "messages")).await;
    assert_eq!(count(&body, "Targeted"), Some(3), "{body}");
    assert_eq!(count(&body, "Success"), Some(3), "{body}");
    let mut got: Vec<(String, String)> = bed.apns().deliveries()[before..]
        .iter()
        .map(|d| {
            (
                d.handle.clone(),
                String::from_utf8_lossy(&d.payload).into_owned(),
            )
        })
        .collect();
    got.sort();
    let want = |i: u64, sound: &str| {
        (
            apns_token(i),
            format!(r#"{{"aps":{{"alert":"from the cluster","sound":"{sound}"}}}}"#),
        )
    };
    assert_eq!(
        got,
        [want(200, "a"), want(200, "b"), want(201, "a")],
        "{got:?}"
    );
    // A template test send finds its devices as the send does: by their templates' tags
    // (the installations carry none).
    let a = s2
        .call(
            "POST",
            &hub_path("messages?test=true"),
            &template,
            br#"{"m":"a test"}"#,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let mut ids = all_of(&a.body, "RegistrationId");
    ids.sort();
    assert_eq!(ids, ["dev-t0", "dev-t1"], "{}", a.body);

    // A test send: at most 10 matching devices, found over every partition, each sent once
    // and reported; the 201 carries the NotificationOutcome.
    let before = bed.apns().deliveries().len();
    let a = s1
        .call(
            "POST",
            &hub_path("messages?test=true"),
            &apns_send_headers(&s1.full, Some("even"))[1..],
            ALERT,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(count_leaf(&a.body, "Success"), Some(10), "{}", a.body);
    assert_eq!(count_leaf(&a.body, "Failure"), Some(0), "{}", a.body);
    let ids = all_of(&a.body, "RegistrationId");
    assert_eq!(ids.len(), 10, "{}", a.body);
    for id in &ids {
        let i: u64 = id.strip_prefix("dev-").unwrap().parse().unwrap();
        assert_eq!(i % 2, 0, "{id} is not tagged even");
    }
    assert_eq!(
        all_of(&a.body, "Outcome"),
        vec!["Success"; 10],
        "{}",
        a.body
    );
    let mut handles = all_of(&a.body, "PnsHandle");
    handles.sort();
    let mut got: Vec<String> = bed.apns().deliveries()[before..]
        .iter()
        .map(|d| d.handle.clone())
        .collect();
    got.sort();
    assert_eq!(
        got, handles,
        "each reported device got it once, and no other"
    );
    let a = s2
        .call(
            "POST",
            &hub_path("messages?test=true"),
            &apns_send_headers(&s2.full, Some("$InstallationId:{dev-3}"))[1..],
            ALERT,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(all_of(&a.body, "RegistrationId"), ["dev-3"], "{}", a.body);
    assert_eq!(bed.apns().deliveries().len(), before + 11);
    // Other methods on an installation: 405 as on a single node.
    let a = s1.call("POST", &inst_path("dev-2"), &[], b"").await;
    assert_eq!(a.status, 405, "{a:?}");

    // Outcomes per platform, summed over partitions: a token the push service refuses is
    // counted under its NH outcome (the mock answers a short token 400 BadDeviceToken).
    let short = serde_json::json!({
        "installationId": "short", "platform": "apns", "pushChannel": "abcd", "tags": ["shorty"],
    });
    let a = s1
        .call(
            "PUT",
            &inst_path("short"),
            &[],
            short.to_string().as_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = s2
        .call(
            "POST",
            &hub_path("messages"),
            &apns_send_headers(&s2.full, Some("shorty || $InstallationId:{dev-0}"))[1..],
            ALERT,
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let body = completed(s1, &location_id(&a, "messages")).await;
    assert_eq!(count(&body, "Targeted"), Some(2), "{body}");
    assert_eq!(count(&body, "Failed"), Some(1), "{body}");
    let apns = all_of(&body, "ApnsOutcomeCounts");
    assert_eq!(apns.len(), 1, "{body}");
    assert_eq!(count(&apns[0], "Success"), Some(1), "{body}");
    assert_eq!(count(&apns[0], "WrongToken"), Some(1), "{body}");
    assert!(all_of(&body, "FcmV1OutcomeCounts").is_empty(), "{body}");

    for n in nodes {
        n.server.shutdown().await;
    }
}

/// Every id of a registration listing at `path` (`?$top=2&…`), page by page, each page from
/// the other node.
async fn walk(nodes: &[Node], path: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        assert!(page < 20, "more pages than registrations: {seen:?}");
        let q = match &token {
            None => path.to_owned(),
            Some(t) => format!("{path}&continuationtoken={t}"),
        };
        let a = nodes[page % 2].call("GET", &hub_path(&q), &[], b"").await;
        assert_eq!(a.status, 200, "{q}: {a:?}");
        let ids = all_of(&a.body, "RegistrationId");
        assert!(ids.len() <= 2, "{ids:?}");
        seen.extend(ids);
        token = a.header("x-ms-continuationtoken").map(str::to_owned);
        if token.is_none() {
            return seen;
        }
    }
    unreachable!()
}

/// Versions and the registrations API in cluster mode: an installation's `ETag` read through
/// one node guards PUT, PATCH and DELETE through the other (412 when stale, nothing
/// written); registrations are created, read, listed page by page (the pages merged from
/// every partition's owner), found by tag and by channel, and deleted across the two nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_registrations_work_across_the_cluster() {
    let Some(nats) = tagcast_mock::nats::ready_cluster_for_test(3) else {
        return;
    };
    let bed = common::Bed::new().apns(ApnsConfig::default()).start().await;
    let nodes = start_nodes(&bed, &nats, "").await;
    let (s1, s2) = (&nodes[0], &nodes[1]);
    let if_match = |e: &str| vec![("If-Match", e.to_owned())];
    let tags_of = |a: &Answer| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        let mut t: Vec<String> = v["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        t.sort();
        t
    };

    // Installations.
    let e1 = inst_path("e1");
    let a = s1
        .call("PUT", &e1, &[], apns_inst("e1", 1, &["a"]).as_bytes())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let got = s2.call("GET", &e1, &[], b"").await;
    let first = got.header("ETag").expect("an ETag").to_owned();
    assert!(first.starts_with("W/\""), "{first}");
    let a = s1
        .call(
            "PUT",
            &e1,
            &if_match(&first),
            apns_inst("e1", 1, &["b"]).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let got = s2.call("GET", &e1, &[], b"").await;
    let second = got.header("ETag").expect("an ETag").to_owned();
    assert_ne!(first, second);
    assert_eq!(tags_of(&got), ["b"]);
    // Stale: 412 on PUT, PATCH and DELETE, through either node; nothing written.
    let a = s2
        .call(
            "PUT",
            &e1,
            &if_match(&first),
            apns_inst("e1", 1, &["c"]).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 412, "{a:?}");
    let patch = br#"[{"op":"add","path":"/tags","value":"patched"}]"#;
    let a = s1.call("PATCH", &e1, &if_match(&first), patch).await;
    assert_eq!(a.status, 412, "{a:?}");
    let a = s2.call("DELETE", &e1, &if_match(&first), b"").await;
    assert_eq!(a.status, 412, "{a:?}");
    let got = s1.call("GET", &e1, &[], b"").await;
    assert_eq!(tags_of(&got), ["b"], "{got:?}");
    assert_eq!(got.header("ETag"), Some(second.as_str()));
    // Current: applied.
    let a = s1.call("PATCH", &e1, &if_match(&second), patch).await;
    assert_eq!(a.status, 200, "{a:?}");
    let got = s2.call("GET", &e1, &[], b"").await;
    assert_eq!(tags_of(&got), ["b", "patched"], "{got:?}");
    let third = got.header("ETag").expect("an ETag").to_owned();
    assert_ne!(third, second);
    // `If-Match: *` needs the installation to exist.
    let a = s2
        .call(
            "PUT",
            &inst_path("e2"),
            &if_match("*"),
            apns_inst("e2", 2, &[]).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(s1.call("GET", &inst_path("e2"), &[], b"").await.status, 404);
    let a = s2.call("DELETE", &e1, &if_match(&third), b"").await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(s1.call("GET", &e1, &[], b"").await.status, 404);

    // Registrations: an id from s1, written through s2.
    let a = s1
        .call("POST", &hub_path("registrationIDs"), &[], b"")
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let loc = a.header("Location").expect("a Location").to_owned();
    let rid = loc
        .split("/registrations/")
        .nth(1)
        .and_then(|r| r.split('?').next())
        .expect("an id in the Location")
        .to_owned();
    let a = s2
        .call(
            "PUT",
            &hub_path(&format!("registrations/{rid}")),
            &[],
            apple_registration(10, "r").as_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let mut ids = vec![rid.clone()];
    for i in 0..5u64 {
        let id = format!("p{i}");
        let node = &nodes[i as usize % 2];
        let a = node
            .call(
                "PUT",
                &hub_path(&format!("registrations/{id}")),
                &[],
                apple_registration(20 + i, "p,q").as_bytes(),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.header("ETag").is_some(), "{a:?}");
        ids.push(id);
    }
    ids.sort();
    let p0 = hub_path("registrations/p0");
    let got = s2.call("GET", &p0, &[], b"").await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(all_of(&got.body, "Tags"), ["p,q"], "{got:?}");
    let etag = got.header("ETag").expect("an ETag").to_owned();
    let a = s1
        .call(
            "PUT",
            &p0,
            &if_match(&etag),
            apple_registration(20, "p").as_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = s2
        .call(
            "PUT",
            &p0,
            &if_match(&etag),
            apple_registration(20, "z").as_bytes(),
        )
        .await;
    assert_eq!(a.status, 412, "{a:?}");
    assert_eq!(
        all_of(&s1.call("GET", &p0, &[], b"").await.body, "Tags"),
        ["p"]
    );

    // Listings: the whole hub, a tag, a channel; pages from both nodes.
    assert_eq!(walk(&nodes, "registrations?$top=2").await, ids);
    assert_eq!(
        walk(&nodes, "tags/q/registrations?$top=2").await,
        ["p1", "p2", "p3", "p4"]
    );
    let token = apns_token(23).to_ascii_uppercase();
    let a = s1
        .call(
            "GET",
            &hub_path(&format!(
                "registrations?$filter=DeviceToken%20eq%20'{token}'"
            )),
            &[],
            b"",
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(all_of(&a.body, "RegistrationId"), ["p3"], "{a:?}");
    let a = s2
        .call(
            "GET",
            &hub_path("registrations?$filter=Colour%20eq%20'x'"),
            &[],
            b"",
        )
        .await;
    assert_eq!(a.status, 400, "{a:?}");

    // Delete: a stale ETag is refused, then it goes, then it is not found.
    let a = s2.call("DELETE", &p0, &if_match(&etag), b"").await;
    assert_eq!(a.status, 412, "{a:?}");
    let a = s2.call("DELETE", &p0, &[], b"").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(s1.call("GET", &p0, &[], b"").await.status, 404);
    assert_eq!(s1.call("DELETE", &p0, &[], b"").await.status, 404);

    for n in nodes {
        n.server.shutdown().await;
    }
}

/// Submits a job on `node` and waits until it ends; returns its id and final entry.
async fn run_job(node: &Node, ty: &str, input: Option<&str>) -> (String, String) {
    let jobs = hub_path("jobs");
    let a = node
        .call(
            "POST",
            &jobs,
            &[],
            job_body(ty, "file:///out", input).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 201, "{ty}: {a:?}");
    let id = all_of(&a.body, "JobId").pop().expect("a JobId");
    let path = hub_path(&format!("jobs/{id}"));
    let body = eventually(Duration::from_secs(60), "the job ends", async || {
        let a = node.call("GET", &path, &[], b"").await;
        match all_of(&a.body, "Status").first().map(String::as_str) {
            Some("Completed" | "Failed") => Ok(a.body),
            _ => Err(format!("{a:?}")),
        }
    })
    .await;
    (id, body)
}

/// Import/export jobs in cluster mode: rows imported through one server's job land at their
/// partitions' owners (read back through the other server), a bad row goes to Failed.txt,
/// and an export through the other server lists every installation of every partition. A
/// job is known to the server that runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_import_and_export_through_the_cluster() {
    let Some(nats) = tagcast_mock::nats::ready_cluster_for_test(3) else {
        return;
    };
    let bed = common::Bed::new().apns(ApnsConfig::default()).start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    const ROWS: u64 = 30;
    let mut input: Vec<String> = (0..ROWS)
        .map(|i| apns_inst(&format!("imp-{i:02}"), i, &["imported"]))
        .collect();
    input.insert(
        7,
        r#"{"installationId":"bad","platform":"apns","pushChannel":"zz"}"#.into(),
    );
    std::fs::write(dir.path().join("in.txt"), input.join("\n")).unwrap();
    let jobs = format!("\n[hub.jobs]\ndirectory = \"{}\"\n", dir.path().display());
    let nodes = start_nodes(&bed, &nats, &jobs).await;
    let (s1, s2) = (&nodes[0], &nodes[1]);

    let (import, entry) = run_job(s1, "ImportCreateInstallations", Some("file:///in.txt")).await;
    assert_eq!(all_of(&entry, "Status"), ["Completed"], "{entry}");
    let files = dir.path().join("out").join(rest::HUB).join(&import);
    let output = std::fs::read_to_string(files.join("Output.txt")).unwrap();
    assert_eq!(output.lines().count() as u64, ROWS, "{output}");
    let failed = std::fs::read_to_string(files.join("Failed.txt")).unwrap();
    assert_eq!(failed.lines().count(), 1, "{failed}");
    assert!(failed.starts_with("8\t"), "{failed}");
    for i in [0, 13, ROWS - 1] {
        let a = s2
            .call("GET", &inst_path(&format!("imp-{i:02}")), &[], b"")
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.contains("imported"), "{a:?}");
    }
    // A create of rows that exist: each one fails, nothing changes.
    let (again, entry) = run_job(s2, "ImportCreateInstallations", Some("file:///in.txt")).await;
    assert_eq!(all_of(&entry, "Status"), ["Completed"], "{entry}");
    let failed = std::fs::read_to_string(
        dir.path()
            .join("out")
            .join(rest::HUB)
            .join(&again)
            .join("Failed.txt"),
    )
    .unwrap();
    assert_eq!(
        failed.matches("already exists").count() as u64,
        ROWS,
        "{failed}"
    );

    let (export, entry) = run_job(s2, "ExportInstallations", None).await;
    assert_eq!(all_of(&entry, "Status"), ["Completed"], "{entry}");
    let output = std::fs::read_to_string(
        dir.path()
            .join("out")
            .join(rest::HUB)
            .join(&export)
            .join("Output.txt"),
    )
    .unwrap();
    let mut ids: Vec<String> = output
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["installationId"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    let want: Vec<String> = (0..ROWS).map(|i| format!("imp-{i:02}")).collect();
    assert_eq!(ids, want);
    // The import ran on s1: s2 does not know it.
    let a = s2
        .call("GET", &hub_path(&format!("jobs/{import}")), &[], b"")
        .await;
    assert_eq!(a.status, 404, "{a:?}");

    for n in nodes {
        n.server.shutdown().await;
    }
}

#[test]
fn a_bad_cluster_table_is_refused_with_a_clear_error() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\nplain_http = true\ndata_dir = \"/tmp/x\"\n\
                [[hub]]\nname = \"ops\"\n[[hub.key]]\nname = \"full\"\n\
                key = \"c2VydmVyLWhhcmRlbmluZy10ZXN0cy1mdWxsLWtleQ\"\nrights = [\"Send\"]\n";
    let cases = [
        ("[cluster]\nnats_urls = []\nnode = \"a\"\n", "nats_urls"),
        (
            "[cluster]\nnats_urls = [\"http://x:4222\"]\nnode = \"a\"\n",
            "is not nats://host:port",
        ),
        (
            "[cluster]\nnats_urls = [\"nats://x:4222\"]\nnode = \"a b\"\n",
            "[cluster] node",
        ),
        (
            "[cluster]\nnats_urls = [\"nats://x:4222\"]\nnode = \"a\"\nreplica = 3\n",
            "unknown field",
        ),
    ];
    for (cluster, expect) in cases {
        let text = format!("{base}{cluster}");
        let e = ServerConfig::from_toml(&text).expect_err(cluster);
        assert!(e.to_string().contains(expect), "{cluster}: {e}");
    }
    // Jobs are served in cluster mode: their table is checked as on a single node.
    let jobs = tempfile::tempdir().unwrap();
    let text = format!(
        "{base}[hub.jobs]\ndirectory = \"{}\"\n\
         [cluster]\nnats_urls = [\"nats://x:4222\"]\nnode = \"a\"\n",
        jobs.path().display()
    );
    let c = ServerConfig::from_toml(&text).expect("jobs with cluster");
    assert!(c.cluster.is_some());
    // Without [cluster], nothing changes.
    let c = ServerConfig::from_toml(base).unwrap();
    assert!(c.cluster.is_none());
}
