//! The request each platform sends for one device, and how its answers are read: APNs
//! (pns-protocols.md §1.2), FCM v1 (§2.1), WNS (§3.2), Web Push (§4.1–4.3). Sans-IO.

use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};

use super::pool::{Protocol, Work};
use crate::credentials::encrypt;
use crate::feedback::classify::{
    classify_apns, classify_fcm, classify_web_push, classify_wns, Reason, Verdict,
};
use crate::model::PushHandle;
use crate::time::parse_retry_after;
use crate::transport::http1::Answer;

static APNS_ID: HeaderName = HeaderName::from_static("apns-id");

fn wrong_handle(what: &str) -> Reason {
    format!("handle is not {what}").into()
}

fn no_payload(what: &str) -> Reason {
    format!("notification has no {what} payload").into()
}

fn request(uri: Uri, headers: HeaderMap) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

fn uri(scheme_authority: &str, path: &str) -> Result<Uri, Reason> {
    let mut s = String::with_capacity(scheme_authority.len() + path.len());
    s.push_str(scheme_authority);
    s.push_str(path);
    s.parse::<Uri>()
        .map_err(|e| Reason::from(format!("bad request URI: {e}")))
}

/// Per-send prepared headers, built once for the first device of a send.
#[derive(Default)]
pub(crate) struct Prepared {
    apns: OnceLock<HeaderMap>,
    fcm: OnceLock<HeaderMap>,
    wns: OnceLock<HeaderMap>,
    web_push: OnceLock<HeaderMap>,
}

fn header_map(pairs: Vec<(HeaderName, HeaderValue)>) -> HeaderMap {
    let mut m = HeaderMap::with_capacity(pairs.len() + 3);
    for (k, v) in pairs {
        m.append(k, v);
    }
    m
}

pub(crate) struct Apns {
    pub(crate) origin: String,
    pub(crate) bundle_id: String,
}

impl Protocol for Apns {
    fn build(&self, w: &Work, auth: Option<&HeaderValue>) -> Result<(Request<()>, Bytes), Reason> {
        let n = w
            .notification()
            .apns_part()
            .ok_or_else(|| no_payload("APNs"))?;
        let PushHandle::Apns(token) = &w.device.handle else {
            return Err(wrong_handle("an APNs token"));
        };
        let own;
        let base = if w.own.is_some() {
            own = header_map(n.headers(&self.bundle_id));
            &own
        } else {
            w.job
                .prepared
                .apns
                .get_or_init(|| header_map(n.headers(&self.bundle_id)))
        };
        let mut path = String::with_capacity(10 + token.len() * 2);
        path.push_str("/3/device/");
        push_hex(&mut path, token);
        let mut headers = base.clone();
        if let Some(a) = auth {
            headers.insert(AUTHORIZATION, a.clone());
        }
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

pub(crate) struct Fcm {
    /// `https://host/v1/projects/{project}/messages:send`, parsed once (the same for every
    /// device).
    pub(crate) uri: Uri,
}

impl Fcm {
    pub(crate) fn new(origin: &str, project_id: &str) -> Result<Fcm, String> {
        uri(origin, &format!("/v1/projects/{project_id}/messages:send"))
            .map(|uri| Fcm { uri })
            .map_err(|e| e.to_string())
    }
}

impl Protocol for Fcm {
    fn build(&self, w: &Work, auth: Option<&HeaderValue>) -> Result<(Request<()>, Bytes), Reason> {
        let n = w
            .notification()
            .fcm_part()
            .ok_or_else(|| no_payload("FCM"))?;
        let PushHandle::Fcm(token) = &w.device.handle else {
            return Err(wrong_handle("an FCM token"));
        };
        let base = w.job.prepared.fcm.get_or_init(|| {
            let mut m = HeaderMap::new();
            m.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            m
        });
        let mut headers = base.clone();
        if let Some(a) = auth {
            headers.insert(AUTHORIZATION, a.clone());
        }
        Ok((request(self.uri.clone(), headers), n.body_for_token(token)))
    }

    fn classify(&self, a: &Answer) -> Verdict {
        let retry_after = a
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok());
        classify_fcm(a.status, retry_after, &a.body, std::time::SystemTime::now())
    }
}

pub(crate) struct Wns;

impl Protocol for Wns {
    fn build(&self, w: &Work, auth: Option<&HeaderValue>) -> Result<(Request<()>, Bytes), Reason> {
        let n = w
            .notification()
            .wns_part()
            .ok_or_else(|| no_payload("WNS"))?;
        let PushHandle::Wns(channel) = &w.device.handle else {
            return Err(wrong_handle("a WNS channel URI"));
        };
        let own;
        let base = if w.own.is_some() {
            own = header_map(n.headers());
            &own
        } else {
            w.job.prepared.wns.get_or_init(|| header_map(n.headers()))
        };
        let mut headers = base.clone();
        if let Some(a) = auth {
            headers.insert(AUTHORIZATION, a.clone());
        }
        let uri: Uri = channel
            .parse()
            .map_err(|e| Reason::from(format!("bad channel URI: {e}")))?;
        Ok((request(uri, headers), n.body().clone()))
    }

    fn classify(&self, a: &Answer) -> Verdict {
        classify_wns(a.status, &a.headers, std::time::SystemTime::now())
    }
}

pub(crate) struct WebPush;

impl Protocol for WebPush {
    fn build(&self, w: &Work, auth: Option<&HeaderValue>) -> Result<(Request<()>, Bytes), Reason> {
        let n = w
            .notification()
            .web_push_part()
            .ok_or_else(|| no_payload("Web Push"))?;
        let PushHandle::WebPush(sub) = &w.device.handle else {
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
        let own;
        let base = if w.own.is_some() {
            own = make();
            &own
        } else {
            w.job.prepared.web_push.get_or_init(make)
        };
        let body = encrypt(n.plaintext(), sub.p256dh(), sub.auth())
            .map_err(|e| Reason::from(format!("encryption failed: {e}")))?;
        let mut headers = base.clone();
        if let Some(a) = auth {
            headers.insert(AUTHORIZATION, a.clone());
        }
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
