//! The FCM v1 request for one device (pns-protocols.md §2.1): `POST
//! /v1/projects/<project>/messages:send` with an OAuth 2 bearer and the token in the body.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Uri};

use super::answer::classify_fcm;
use crate::model::{Platform, PushHandle};
use crate::pns::request::{no_payload, request, uri, with_auth, wrong_handle, Outgoing, Protocol};
use crate::pns::verdict::{Reason, Verdict};
use crate::transport::http1::Answer;

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
    fn build(
        &self,
        w: &Outgoing<'_>,
        auth: Option<&HeaderValue>,
    ) -> Result<(Request<()>, Bytes), Reason> {
        let n = w.notification.fcm_part().ok_or_else(|| no_payload("FCM"))?;
        let PushHandle::Fcm(token) = w.handle else {
            return Err(wrong_handle("an FCM token"));
        };
        let base = w.prepared[Platform::Fcm].get_or_init(|| {
            let mut m = HeaderMap::new();
            m.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            m
        });
        // Static headers: the cache serves devices with their own payload too.
        let headers = with_auth(base.clone(), auth);
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
