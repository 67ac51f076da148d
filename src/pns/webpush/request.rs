//! The Web Push request for one subscription (pns-protocols.md §4.1–4.3): `POST <endpoint>`,
//! the body encrypted (RFC 8291 aes128gcm), VAPID authorisation (RFC 8292).

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, Request, Uri};

use super::answer::classify_web_push;
use super::ece::encrypt;
use crate::model::{Platform, PushHandle};
use crate::pns::request::{header_map, no_payload, request, wrong_handle, Outgoing, Protocol};
use crate::pns::verdict::{Reason, Verdict};
use crate::transport::http1::Answer;

pub(crate) struct WebPush;

impl Protocol for WebPush {
    fn build(
        &self,
        w: &Outgoing<'_>,
        auth: Option<&HeaderValue>,
    ) -> Result<(Request<()>, Bytes), Reason> {
        let n = w
            .notification
            .web_push_part()
            .ok_or_else(|| no_payload("Web Push"))?;
        let PushHandle::WebPush(sub) = w.handle else {
            return Err(wrong_handle("a Web Push subscription"));
        };
        let make = || {
            let mut m = header_map(n.headers());
            m.insert(CONTENT_ENCODING, HeaderValue::from_static("aes128gcm"));
            m.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            m
        };
        let body = encrypt(n.plaintext(), sub.p256dh(), sub.auth())
            .map_err(|e| Reason::from(format!("encryption failed: {e}")))?;
        let headers = w.headers(&w.prepared[Platform::WebPush], make, auth);
        let uri: Uri = sub
            .endpoint()
            .parse()
            .map_err(|e| Reason::from(format!("bad endpoint: {e}")))?;
        Ok((request(uri, headers), Bytes::from(body)))
    }

    fn classify(&self, a: &Answer) -> Verdict {
        classify_web_push(a.status, &a.headers, std::time::SystemTime::now())
    }
}
