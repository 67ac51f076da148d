//! Template sends end to end against the mocks: per-device rendering and localisation,
//! template tags in targeting, escaping, per-device size rejections, several platforms.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{apns_token, dev_id, fill, finish, web_push_handle, Bed};
use tagcast::template::Properties;
use tagcast::{
    Audience, DispatchConfig, Engine, EngineConfig, Installation, InstallationId, Platform,
    PushHandle, Registry, RegistryConfig, SendState, Tag, TagExpr, Template,
};
use tagcast_mock::apns::{ApnsConfig, MockApns};
use tagcast_mock::fcm::FcmConfig;
use tagcast_mock::webpush::WebPushConfig;

fn props(pairs: &[(&str, &str)]) -> Properties {
    let mut p = Properties::new();
    for (k, v) in pairs {
        p.insert(k, *v);
    }
    p
}

fn template(body: &str) -> Template {
    Template {
        body: body.into(),
        ..Template::default()
    }
}

fn tags(t: &[&str]) -> Vec<Tag> {
    t.iter().map(|s| Tag::new(s).unwrap()).collect()
}

fn apns_device(i: u64) -> Installation {
    Installation::new(dev_id(i), PushHandle::apns(&apns_token(i)).unwrap())
}

/// The JSON the mock delivered to APNs device `i` (the only delivery expected).
fn delivered_json(mock: &MockApns, i: u64) -> serde_json::Value {
    let d = mock.deliveries_for(&apns_token(i));
    assert_eq!(d.len(), 1, "device {i}: {d:?}");
    serde_json::from_slice(&d[0].payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_renders_its_own_language_with_a_fallback() {
    let bed = Bed::new().apns(ApnsConfig::default()).start().await;
    let (mock, reg) = (bed.apns(), &bed.reg);
    let en = template(
        r##"{"aps":{"alert":{"title":"$(title_en)","body":"$(msg_en)"},"badge":"#(badge)"}}"##,
    );
    // The French template falls back to English when the backend sent no French text
    // (tagcast's default-is-a-property extension).
    let fr = template(
        r##"{"aps":{"alert":{"title":"$(title_fr:{$(title_en)})","body":"$(msg_fr:{$(msg_en)})"},"badge":"#(badge)"}}"##,
    );
    fill(
        reg,
        (0..200).map(|i| {
            apns_device(i).with_template("alert", if i % 2 == 0 { en.clone() } else { fr.clone() })
        }),
    );
    // Devices without templates are not part of a template send.
    fill(reg, (200..220).map(apns_device));
    let engine = bed.engine();

    let p = props(&[
        ("Title_EN", "News"),
        ("msg_en", "Hello"),
        ("title_fr", "Nouvelles"),
        ("MSG_FR", "Bonjour"),
        ("badge", "3"),
    ]);
    let h = engine.send_template(p, Audience::All).unwrap();
    let r = finish(&h, Duration::from_secs(30)).await;
    assert_eq!(r.state, SendState::Completed, "{r:#?}");
    assert_eq!(r.platform(Platform::Apns).delivered, 200, "{r:#?}");
    assert_eq!(r.audience, Some(200));
    let en0 = delivered_json(mock, 0);
    assert_eq!(en0["aps"]["alert"]["body"], "Hello");
    assert_eq!(en0["aps"]["alert"]["title"], "News");
    // `#(badge)` of a number is a JSON number.
    assert_eq!(en0["aps"]["badge"], 3);
    let fr1 = delivered_json(mock, 1);
    assert_eq!(fr1["aps"]["alert"]["body"], "Bonjour");
    assert_eq!(fr1["aps"]["alert"]["title"], "Nouvelles");
    assert!(mock.deliveries_for(&apns_token(205)).is_empty());

    // Without French properties the French devices get the English text.
    let bed2 = Bed::new().apns(ApnsConfig::default()).start().await;
    let (mock2, engine2) = (
        bed2.apns(),
        Engine::new(reg.clone(), bed2.config()).unwrap(),
    );
    let p = props(&[("title_en", "News"), ("msg_en", "Hello"), ("badge", "x")]);
    let r = finish(
        &engine2.send_template(p, Audience::All).unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(r.platform(Platform::Apns).delivered, 200, "{r:#?}");
    let fr1 = delivered_json(mock2, 1);
    assert_eq!(fr1["aps"]["alert"]["body"], "Hello");
    // A value that is not a number stays a string.
    assert_eq!(fr1["aps"]["badge"], "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_tags_count_in_targeting_one_push_per_matching_template() {
    let bed = Bed::new().apns(ApnsConfig::default()).start().await;
    let (mock, reg) = (bed.apns(), &bed.reg);
    let promo = Template {
        tags: tags(&["promo"]),
        ..template(r#"{"aps":{"alert":"{'promo ' + $(x)}"}}"#)
    };
    let plain = template(r#"{"aps":{"alert":"{'plain ' + $(x)}"}}"#);
    let mut both = apns_device(0).with_template("promo", promo.clone());
    both = both.with_template("plain", plain.clone());
    both.tags = tags(&["sports"]);
    let mut promo_only = apns_device(1).with_template("promo", promo);
    promo_only.tags = tags(&["news"]);
    let mut plain_only = apns_device(2).with_template("plain", plain);
    plain_only.tags = tags(&["sports"]);
    fill(reg, [both, promo_only, plain_only]);
    let engine = bed.engine();

    let send = |expr: &str| {
        engine
            .send_template(
                props(&[("x", "1")]),
                Audience::Expr(TagExpr::parse(expr).unwrap()),
            )
            .unwrap()
    };
    // Matched through the template's own tag only: one push per device, the promo template.
    let r = finish(&send("promo"), Duration::from_secs(20)).await;
    assert_eq!(r.platform(Platform::Apns).delivered, 2, "{r:#?}");
    // Device tags and template tags together: device 0's promo template ({sports, promo})
    // matches, its plain one ({sports}) does not; device 2 has no promo.
    let r = finish(&send("sports && promo"), Duration::from_secs(20)).await;
    assert_eq!(r.platform(Platform::Apns).delivered, 1, "{r:#?}");
    // Negation sees the template tags too: only plain templates of sports devices.
    let r = finish(&send("sports && !promo"), Duration::from_secs(20)).await;
    assert_eq!(r.platform(Platform::Apns).delivered, 2, "{r:#?}");
    // Device 0 matches "sports" with both templates: two pushes.
    let r = finish(&send("sports"), Duration::from_secs(20)).await;
    assert_eq!(r.platform(Platform::Apns).delivered, 3, "{r:#?}");
    let bodies: Vec<String> = mock
        .deliveries_for(&apns_token(0))
        .iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect();
    assert_eq!(bodies.iter().filter(|b| b.contains("promo 1")).count(), 3);
    assert_eq!(bodies.iter().filter(|b| b.contains("plain 1")).count(), 2);
    // Nobody: NoTargetFound.
    let r = finish(&send("nobody"), Duration::from_secs(20)).await;
    assert_eq!(r.state, SendState::NoTargetFound, "{r:#?}");
    assert_eq!(r.audience, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_are_escaped_and_oversized_renders_are_rejected_per_device() {
    let bed = Bed::new().apns(ApnsConfig::default()).start().await;
    let (mock, reg) = (bed.apns(), &bed.reg);
    let small = template(r#"{"aps":{"alert":"$(msg, 100)"}}"#);
    let big = template(r#"{"aps":{"alert":"$(msg)"}}"#);
    let with_headers = Template {
        headers: BTreeMap::from([
            ("apns-priority".to_owned(), "$(prio)".to_owned()),
            ("apns-collapse-id".to_owned(), "{'c-' + $(id)}".to_owned()),
        ]),
        ..template(r#"{"aps":{"alert":".(msg, 10)"}}"#)
    };
    fill(
        reg,
        [
            apns_device(0).with_template("t", small),
            apns_device(1).with_template("t", big),
            apns_device(2).with_template("t", with_headers),
        ],
    );
    let engine = bed.engine();
    let hostile = format!("\"quoted\" \\ back\nline \u{1} </x> {}", "é".repeat(3000));
    let p = props(&[("msg", &hostile), ("prio", "5"), ("id", "42")]);
    let r = finish(
        &engine.send_template(p, Audience::All).unwrap(),
        Duration::from_secs(20),
    )
    .await;
    let apns = r.platform(Platform::Apns);
    assert_eq!((apns.delivered, apns.rejected), (2, 1), "{r:#?}");
    // The reason names the template and the limit.
    let (key, n) = r.reasons.iter().next().unwrap();
    assert_eq!(*n, 1);
    assert!(key.1.contains("\"t\"") && key.1.contains("4096"), "{key:?}");
    // Clipped to 100 characters, escaped, valid JSON.
    let v = delivered_json(mock, 0);
    let expected: String = hostile.chars().take(100).collect();
    assert_eq!(v["aps"]["alert"], expected.as_str());
    // `.(msg, 10)`: 7 characters and "...".
    let v = delivered_json(mock, 2);
    let expected: String = hostile.chars().take(7).collect::<String>() + "...";
    assert_eq!(v["aps"]["alert"], expected.as_str());
    assert!(mock.deliveries_for(&apns_token(1)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_for_fcm_and_web_push_in_one_send() {
    let bed = Bed::new()
        .fcm(FcmConfig::default())
        .web_push(WebPushConfig::default())
        .start()
        .await;
    let (fcm, web) = (bed.fcm(), bed.web_push());
    let fcm_t =
        template(r#"{"message":{"notification":{"title":"$(title)"},"data":{"n":"$(n)"}}}"#);
    let web_t = template(r#"{"title":"$(title)","url":"%(path)"}"#);
    let subs = bed.subscribe(10);
    let mut devices = Vec::new();
    for i in 0..10u64 {
        devices.push(
            Installation::new(
                InstallationId::new(format!("android-{i}")).unwrap(),
                PushHandle::fcm(&format!("fcm-token-{i:024}")).unwrap(),
            )
            .with_template("t", fcm_t.clone()),
        );
        let s = &subs[i as usize];
        devices.push(
            Installation::new(
                InstallationId::new(format!("web-{i}")).unwrap(),
                web_push_handle(s),
            )
            .with_template("t", web_t.clone()),
        );
    }
    fill(&bed.reg, devices);
    // The engine's default dispatch tuning.
    let engine = bed.engine_with(EngineConfig {
        dispatch: DispatchConfig::default(),
        ..bed.config()
    });
    let p = props(&[("title", "Zoë \"quoted\""), ("n", "7"), ("path", "a b/é")]);
    let r = finish(
        &engine.send_template(p, Audience::All).unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(r.platform(Platform::Fcm).delivered, 10, "{r:#?}");
    assert_eq!(r.platform(Platform::WebPush).delivered, 10, "{r:#?}");
    let d = fcm.deliveries_for(&format!("fcm-token-{:024}", 3));
    let body: serde_json::Value = serde_json::from_slice(&d[0].payload).unwrap();
    assert_eq!(body["message"]["notification"]["title"], "Zoë \"quoted\"");
    assert_eq!(body["message"]["data"]["n"], "7");
    let d = web.deliveries_for(&subs[4].id);
    let body: serde_json::Value = serde_json::from_slice(&d[0].payload).unwrap();
    assert_eq!(body["url"], "a%20b%2F%C3%A9");
}

#[test]
fn malformed_templates_are_refused_at_registration_with_the_position() {
    let reg = Registry::ephemeral(RegistryConfig::default()).unwrap();
    let err = reg
        .upsert(apns_device(0).with_template("bad", template(r#"{"aps":{"alert":"$(msg"}}"#)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"bad\"") && err.contains("byte"), "{err}");
    let err = reg
        .upsert(apns_device(0).with_template("notjson", template(r#"{"aps":"#)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("notjson"), "{err}");
    assert_eq!(reg.count(), 0);
}
