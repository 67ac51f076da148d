//! The APNs request for one device (pns-protocols.md §1.2): `POST /3/device/<token>` with
//! the `apns-*` headers, a provider token or the client certificate, and the `apns-id`.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};

use super::answer::classify_apns;
use crate::model::{Platform, PushHandle};
use crate::pns::request::{header_map, no_payload, request, uri, wrong_handle, Outgoing, Protocol};
use crate::pns::verdict::{Reason, Verdict};
use crate::time::parse_retry_after;
use crate::transport::http1::Answer;

static APNS_ID: HeaderName = HeaderName::from_static("apns-id");

pub(crate) struct Apns {
    pub(crate) origin: String,
    pub(crate) bundle_id: String,
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
            || header_map(n.headers(&self.bundle_id)),
            auth,
        );
        let mut path = String::with_capacity(10 + token.len() * 2);
        path.push_str("/3/device/");
        push_hex(&mut path, token);
        let id = uuid::Uuid::from_u128(w.idem);
        let mut buf = [0u8; 36];
        let id = id.hyphenated().encode_lower(&mut buf);
        headers.insert(
            APNS_ID.clone(),
            HeaderValue::from_str(id).map_err(|_| Reason::from("bad apns-id"))?,
        );
        Ok((
            request(uri(&self.origin, &path)?, headers),
            n.body().clone(),
        ))
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
