//! Entry points for the criterion benches (`benches/delivery.rs`): the per-device request
//! building and the credential caches, which are crate-internal. Not part of the API.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::dispatch::job::Job;
use crate::dispatch::pool::{Device, Work};
use crate::model::PushHandle;
use crate::model::{PerPlatform, Platform};
use crate::payload::Notification;
use crate::pns::apns::ApnsTokenCache;
use crate::pns::webpush::ece::encrypt;
use crate::pns::webpush::VapidCache;
use crate::pns::{ApnsKey, VapidKey};

/// Builds the request of every handle (APNs, FCM, WNS or Web Push, as the handle says) the
/// way the connections do; returns the body bytes built, so the work cannot be optimised
/// away.
pub fn build_requests(notification: &Notification, handles: &[PushHandle]) -> usize {
    let job = Job::new(notification.clone(), 1024);
    let origin = |p: Platform| match p {
        Platform::Apns => crate::pns::APNS_PRODUCTION,
        Platform::Fcm => crate::pns::FCM_ENDPOINT,
        // WNS and Web Push send to each device's own URI.
        _ => "",
    };
    let protocols =
        PerPlatform::from_fn(|p| crate::pns::protocol(p, origin(p), "com.example.app", "p").ok());
    let auth = http::HeaderValue::from_static("bearer x");
    let mut total = 0;
    for h in handles {
        let work = Work::new(
            job.clone(),
            Device {
                installation: None,
                handle: h.clone(),
            },
        );
        let Some(proto) = &protocols[h.platform()] else {
            return 0;
        };
        if let Ok((_, body)) = proto.build(&work.outgoing(), Some(&auth)) {
            total += body.len();
        }
    }
    total
}

/// An APNs provider-token cache.
pub struct ApnsTokens(ApnsTokenCache);

impl ApnsTokens {
    /// A cache renewing every 50 minutes.
    pub fn new(key: ApnsKey) -> Self {
        ApnsTokens(ApnsTokenCache::new(key, Duration::from_secs(50 * 60)))
    }

    /// The bearer header value at `now` (cached, or signed when due).
    pub fn bearer(&self, now: SystemTime) -> Arc<str> {
        self.0.bearer(now)
    }
}

/// A VAPID header cache.
pub struct VapidHeaders(VapidCache);

impl VapidHeaders {
    /// A cache for `key`.
    pub fn new(key: VapidKey) -> Self {
        VapidHeaders(VapidCache::new(key))
    }

    /// The `Authorization` value for `origin` at `now`.
    pub fn header(&self, origin: &str, now: SystemTime) -> Arc<str> {
        self.0.header(origin, now)
    }
}

/// RFC 8291 encryption of `plaintext` for a subscription.
pub fn web_push_encrypt(plaintext: &[u8], ua_public: &[u8; 65], auth: &[u8; 16]) -> usize {
    encrypt(plaintext, ua_public, auth).map_or(0, |b| b.len())
}

/// Classifies an arbitrary push-service answer with every platform's rules and renders the
/// verdict (fuzz target `pns_answers`): no input may panic. `header` is used as the value of
/// `Retry-After`, `X-WNS-Status` and `X-WNS-CONTINUE-AFTER` when it is a valid header value.
pub fn classify_any(status: u16, body: &[u8], header: &str) -> Vec<String> {
    use crate::pns::apns::answer::classify_apns;
    use crate::pns::fcm::answer::classify_fcm;
    use crate::pns::webpush::answer::classify_web_push;
    use crate::pns::wns::answer::classify_wns;
    use crate::time::parse_retry_after;
    let now = SystemTime::now();
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(header) {
        for name in ["retry-after", "x-wns-status", "x-wns-continue-after"] {
            headers.insert(http::HeaderName::from_static(name), v.clone());
        }
    }
    let _ = parse_retry_after(header, now);
    vec![
        format!("{:?}", classify_apns(status, body)),
        format!("{:?}", classify_fcm(status, Some(header), body, now)),
        format!("{:?}", classify_wns(status, &headers, now)),
        format!("{:?}", classify_web_push(status, &headers, now)),
    ]
}

/// The FCM request body for one token, as the connections send it.
pub fn fcm_body(n: &crate::payload::FcmNotification, token: &str) -> bytes::Bytes {
    n.body_for_token(token)
}

/// Feeds `data` to an HTTP/2 client connection (`transport::h2c`) as bytes from the service,
/// in the chunk sizes its first byte picks, with a few requests open; checks what must hold
/// whatever the service sends: no panic, every request comes back at most once (answered,
/// failed, or still open), and a connection error ends the connection. Returns the events.
pub fn h2c_recv(data: &[u8]) -> usize {
    use crate::transport::h2c::{Conn, Event};
    let mut conn: Conn<u32> = Conn::new();
    let mut settings = bytes::BytesMut::new();
    crate::transport::h2c::frame::settings(&mut settings, &[(3, 100)]);
    conn.recv(&mut settings).expect("plain SETTINGS read");
    let req = || {
        let mut r = http::Request::new(());
        *r.uri_mut() = http::Uri::from_static("https://push.example/3/device/ab");
        r
    };
    for i in 0..4u32 {
        let body = if i % 2 == 0 {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(vec![b'x'; 70_000])
        };
        conn.start(&req(), body, i).expect("room for four streams");
    }
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut seen = std::collections::HashSet::new();
    let mut buf = bytes::BytesMut::new();
    let mut events = 0;
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        let r = conn.recv(&mut buf);
        for ev in conn.events() {
            events += 1;
            if let Event::Answer(i, _) | Event::Failed(i, _) = ev {
                assert!(seen.insert(i), "stream of request {i} came back twice");
            }
        }
        if r.is_err() {
            assert!(!conn.can_start());
            for i in conn.fail_all() {
                assert!(seen.insert(i), "request {i} failed after coming back");
            }
            assert_eq!(conn.open_streams(), 0);
            return events;
        }
    }
    assert_eq!(seen.len() + conn.open_streams(), 4);
    events
}

/// HPACK-decodes `data` as an answer's header block and Huffman-decodes it as a string
/// (`transport::h2c`); what decodes is re-encoded and must decode to the same.
pub fn hpack_decode(data: &[u8]) -> usize {
    use crate::transport::h2c::{hpack, huffman};
    let mut fields = Vec::new();
    let _ = hpack::Decoder::default().decode(data, |n, v| fields.push((n.to_vec(), v.to_vec())));
    let mut enc = hpack::Encoder::default();
    let mut block = bytes::BytesMut::new();
    enc.begin(&mut block);
    for (n, v) in &fields {
        enc.field(&mut block, n, v, hpack::Mode::Index);
    }
    let mut back = Vec::new();
    hpack::Decoder::default()
        .decode(&block, |n, v| back.push((n.to_vec(), v.to_vec())))
        .expect("our block decodes");
    assert_eq!(back, fields);
    let mut out = Vec::new();
    if huffman::decode(data, &mut out).is_some() {
        let mut again = Vec::new();
        huffman::decode(&huffman::encode(&out), &mut again).expect("our coding decodes");
        assert_eq!(again, out);
    }
    fields.len()
}
