//! Table of bad installation inputs and the exact errors they produce.

use base64::Engine as _;
use tagcast::{
    Installation, InstallationId, Platform, PushHandle, Registry, RegistryConfig, Tag, Template,
    UserId,
};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn values_are_checked_when_built() {
    let mut key = [1u8; 65];
    key[0] = 4;
    let good_key = b64(&key);
    let good_auth = b64(&[2; 16]);
    let long_id = "x".repeat(257);
    let long_fcm = "t".repeat(4097);
    let long_apns = "ab".repeat(1025);
    let mut not_uncompressed = key;
    not_uncompressed[0] = 2;
    let cases: Vec<(&str, String)> = vec![
        ("empty id", InstallationId::new("").unwrap_err().to_string()),
        (
            "slash in id",
            InstallationId::new("a/b").unwrap_err().to_string(),
        ),
        (
            "control in id",
            InstallationId::new("a\u{7}b").unwrap_err().to_string(),
        ),
        (
            "long id",
            InstallationId::new(&long_id).unwrap_err().to_string(),
        ),
        ("empty user", UserId::new("").unwrap_err().to_string()),
        ("brace in user", UserId::new("a}b").unwrap_err().to_string()),
        (
            "unknown platform",
            "gcm".parse::<Platform>().unwrap_err().to_string(),
        ),
        ("empty apns", PushHandle::apns("").unwrap_err().to_string()),
        ("odd apns", PushHandle::apns("abc").unwrap_err().to_string()),
        (
            "non-hex apns",
            PushHandle::apns("zz").unwrap_err().to_string(),
        ),
        (
            "long apns",
            PushHandle::apns(&long_apns).unwrap_err().to_string(),
        ),
        ("empty fcm", PushHandle::fcm("").unwrap_err().to_string()),
        (
            "space in fcm",
            PushHandle::fcm("ab cd").unwrap_err().to_string(),
        ),
        (
            "long fcm",
            PushHandle::fcm(&long_fcm).unwrap_err().to_string(),
        ),
        (
            "http wns",
            PushHandle::wns("http://db5.notify.windows.com/")
                .unwrap_err()
                .to_string(),
        ),
        (
            "hostless wns",
            PushHandle::wns("https:///path").unwrap_err().to_string(),
        ),
        (
            "http web push",
            PushHandle::web_push("http://push.example/x", &good_key, &good_auth)
                .unwrap_err()
                .to_string(),
        ),
        (
            "short p256dh",
            PushHandle::web_push("https://push.example/x", &b64(&key[..33]), &good_auth)
                .unwrap_err()
                .to_string(),
        ),
        (
            "compressed p256dh",
            PushHandle::web_push(
                "https://push.example/x",
                &b64(&not_uncompressed),
                &good_auth,
            )
            .unwrap_err()
            .to_string(),
        ),
        (
            "bad base64 p256dh",
            PushHandle::web_push("https://push.example/x", "***", &good_auth)
                .unwrap_err()
                .to_string(),
        ),
        (
            "short auth",
            PushHandle::web_push("https://push.example/x", &good_key, &b64(&[1; 12]))
                .unwrap_err()
                .to_string(),
        ),
        ("empty tag", Tag::new("").unwrap_err().to_string()),
        ("space in tag", Tag::new("a b").unwrap_err().to_string()),
        ("dollar in tag", Tag::new("$x").unwrap_err().to_string()),
    ];
    let expected = [
        "installation id \"\" is empty",
        "installation id \"a/b\" contains '/'",
        "installation id \"a\\u{7}b\" contains a control character",
        &format!(
            "installation id {:?} is longer than 256 bytes",
            "x".repeat(80)
        ),
        "user id \"\" is empty",
        "user id \"a}b\" contains '}'",
        "unknown platform \"gcm\" (known: apns, fcm (fcmv1), wns (windows), webpush (browser))",
        "apns push handle is empty",
        "apns push handle has an odd number of hex digits (3)",
        "apns push handle contains 'z' at byte 0; it must be hex",
        "apns push handle is longer than 1024 bytes",
        "fcm push handle is empty",
        "fcm push handle contains ' '",
        "fcm push handle is longer than 4096 bytes",
        "wns push handle channel URI \"http://db5.notify.windows.com/\" is not an https:// URL",
        "wns push handle channel URI \"https:///path\" has no host",
        "webpush push handle endpoint \"http://push.example/x\" is not an https:// URL",
        "webpush push handle p256dh is 33 bytes; an uncompressed P-256 point is 65",
        "webpush push handle p256dh is not an uncompressed P-256 point (first byte must be 0x04)",
        "webpush push handle p256dh is not base64url",
        "webpush push handle auth is 12 bytes; it must be 16",
        "tag is empty (a tag is 1-120 characters of A-Z a-z 0-9 _ @ # . : -)",
        "tag 'a b' contains ' ' (allowed: A-Z a-z 0-9 _ @ # . : -)",
        "tag '$x' contains '$' (allowed: A-Z a-z 0-9 _ @ # . : -)",
    ];
    assert_eq!(cases.len(), expected.len());
    for ((name, got), want) in cases.iter().zip(expected) {
        assert_eq!(got, want, "case {name}");
    }
}

#[test]
fn registry_rules_are_checked_on_write() {
    let reg = Registry::ephemeral(RegistryConfig {
        max_tags_per_installation: 2,
        ..RegistryConfig::default()
    })
    .unwrap();
    let id = InstallationId::new("i").unwrap();
    let apns = PushHandle::apns("abcd").unwrap();
    let tags = |ts: &[&str]| ts.iter().map(|t| Tag::new(t).unwrap()).collect::<Vec<_>>();
    let cases: Vec<(Installation, &str)> = vec![
        (
            Installation::new(id.clone(), apns.clone()).with_tags(tags(&["a", "b", "c"])),
            "installation \"i\" has 3 tags; at most 2 are allowed",
        ),
        (
            Installation::new(id.clone(), apns.clone()).with_template(
                "t",
                Template {
                    body: r#"{"aps":{}}"#.into(),
                    tags: tags(&["a", "b", "c"]),
                    ..Template::default()
                },
            ),
            "installation \"i\" has 3 tags; at most 2 are allowed",
        ),
        (
            Installation::new(id.clone(), apns.clone()).with_template("", Template::default()),
            "invalid installation: template \"\" name must be 1-256 bytes",
        ),
        (
            Installation::new(id.clone(), apns.clone()).with_template("a/b", Template::default()),
            "invalid installation: template \"a/b\" name contains '/' or a control character",
        ),
        (
            Installation::new(id.clone(), apns.clone()).with_template(
                "big",
                Template {
                    body: "x".repeat(16 * 1024 + 1),
                    ..Template::default()
                },
            ),
            "invalid installation: template \"big\" body is 16385 bytes; at most 16384 are allowed",
        ),
        (
            Installation::new(
                id.clone(),
                PushHandle::wns("https://example.com/ch").unwrap(),
            ),
            "WNS channel host \"example.com\" is not allowed (allowed: *.notify.windows.com)",
        ),
    ];
    for (inst, want) in cases {
        assert_eq!(reg.upsert(inst).unwrap_err().to_string(), want);
    }
    assert_eq!(reg.count(), 0, "nothing invalid was stored");
}
