//! The APNs request for one device (pns-protocols.md §1.2): `POST /3/device/<token>` with
//! the `apns-*` headers, a provider token or the client certificate, and the `apns-id`.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};

use super::answer::classify_apns;
use crate::model::{Platform, PushHandle};
use crate::pns::request::{
    header_map, no_payload, request, wrong_handle, Origin, Outgoing, Protocol,
};
use crate::pns::verdict::{Reason, Verdict};
use crate::time::parse_retry_after;
use crate::transport::http1::Answer;

static APNS_ID: HeaderName = HeaderName::from_static("apns-id");

pub(crate) struct Apns {
    /// Scheme and authority, parsed once (`https://api.push.apple.com`).
    origin: Origin,
    bundle_id: String,
}

impl Apns {
    pub(crate) fn new(origin: &str, bundle_id: &str) -> Result<Apns, String> {
        Ok(Apns {
            origin: Origin::parse(origin)?,
            bundle_id: bundle_id.to_owned(),
        })
    }
}

impl Protocol for Apns {
    fn build(
        &self,
        w: &Outgoing<'_>,
        auth: Option<&HeaderValue>,
    ) -> Result<(Request<()>, Bytes), Reason> {
        let n = w
            .notification
            .apns_part()
            .ok_or_else(|| no_payload("APNs"))?;
        let PushHandle::Apns(token) = w.handle else {
            return Err(wrong_handle("an APNs token"));
        };
        let mut headers = w.headers(
            &w.prepared[Platform::Apns],
            || {
                let mut m = header_map(n.headers(&self.bundle_id));
                // A slot for the id, so that inserting each device's replaces it in place.
                m.insert(APNS_ID.clone(), HeaderValue::from_static(""));
                m
            },
            auth,
        );
        let mut path = String::with_capacity(10 + token.len() * 2);
        path.push_str("/3/device/");
        push_hex(&mut path, token);
        let id = uuid::Uuid::from_u128(w.idem);
        let mut buf = [0u8; 36];
        let id = id.hyphenated().encode_lower(&mut buf);
        let mut id = HeaderValue::from_str(id).map_err(|_| Reason::from("bad apns-id"))?;
        // Never indexed (HPACK, RFC 7541 §6.2.3): a value used once would otherwise enter the
        // connection's dynamic table on every request, evicting the headers every request
        // repeats (`apns-topic`, `apns-push-type`, ...) and making each lookup walk a chain of
        // stale ids.
        id.set_sensitive(true);
        headers.insert(APNS_ID.clone(), id);
        Ok((request(self.origin.uri(path)?, headers), n.body().clone()))
    }

    fn classify(&self, a: &Answer) -> Verdict {
        // The reason is in the body; a 429/503 may also carry Retry-After.
        let retry_after = a
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        classify_apns(a.status, &a.body).with_retry_after(retry_after)
    }
}

fn push_hex(s: &mut String, b: &[u8]) {
    const D: &[u8; 16] = b"0123456789abcdef";
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pns::request::Prepared;
    use crate::pns::Notification;

    fn build(
        apns: &Apns,
        n: &Notification,
        prepared: &Prepared,
        own_payload: bool,
        token: &[u8],
        idem: u128,
        auth: Option<&HeaderValue>,
    ) -> Request<()> {
        let handle = PushHandle::Apns(token.into());
        let w = Outgoing {
            handle: &handle,
            notification: n,
            own_payload,
            prepared,
            idem,
        };
        apns.build(&w, auth).unwrap().0
    }

    #[test]
    fn requests_share_the_send_headers_and_carry_their_own_id_path_and_current_token() {
        let apns = Apns::new("https://127.0.0.1:8443", "com.example.app").unwrap();
        let n = Notification::from_native(
            Platform::Apns,
            &br#"{"aps":{"alert":"hi"}}"#[..],
            &[("apns-priority".into(), "5".into())],
        )
        .unwrap();
        let prepared = Prepared::default();
        let a = HeaderValue::from_static("bearer a");
        let b = HeaderValue::from_static("bearer b");
        let get = |r: &Request<()>, name: &str| r.headers().get(name).cloned();

        let r1 = build(&apns, &n, &prepared, false, &[0xab, 0x01], 1, Some(&a));
        let r2 = build(&apns, &n, &prepared, false, &[0xcd], 2, Some(&a));
        assert_eq!(r1.uri().to_string(), "https://127.0.0.1:8443/3/device/ab01");
        assert_eq!(r2.uri().path(), "/3/device/cd");
        for r in [&r1, &r2] {
            assert_eq!(get(r, "authorization"), Some(a.clone()));
            assert_eq!(r.headers().get_all("authorization").iter().count(), 1);
            assert_eq!(get(r, "apns-topic").unwrap(), "com.example.app");
            assert_eq!(get(r, "apns-priority").unwrap(), "5");
            assert_eq!(r.headers().get_all("apns-id").iter().count(), 1);
            // Kept out of the HPACK dynamic table.
            assert!(get(r, "apns-id").unwrap().is_sensitive());
        }
        assert_eq!(
            get(&r1, "apns-id").unwrap(),
            "00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(
            get(&r2, "apns-id").unwrap(),
            "00000000-0000-0000-0000-000000000002"
        );

        // A renewed token replaces the cached one; no token removes it.
        let r3 = build(&apns, &n, &prepared, false, &[0xcd], 3, Some(&b));
        assert_eq!(get(&r3, "authorization"), Some(b.clone()));
        assert_eq!(r3.headers().get_all("authorization").iter().count(), 1);
        let r4 = build(&apns, &n, &prepared, false, &[0xcd], 4, None);
        assert_eq!(get(&r4, "authorization"), None);
        // A device with its own payload gets the same headers, built for it alone.
        let r5 = build(&apns, &n, &Prepared::default(), true, &[0xcd], 5, Some(&b));
        assert_eq!(get(&r5, "authorization"), Some(b));
        assert_eq!(
            get(&r5, "apns-id").unwrap(),
            "00000000-0000-0000-0000-000000000005"
        );
        assert_eq!(r5.headers().len(), r3.headers().len());
    }

    #[test]
    fn an_origin_with_a_path_is_refused() {
        assert!(Apns::new("https://h:1/x", "b").is_err());
        assert!(Apns::new("h:1", "b").is_err());
        assert!(Apns::new("https://h:1/", "b").is_ok());
    }
}
