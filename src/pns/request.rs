//! The shared toolkit of the request side: the [`Protocol`] every service implements, what the
//! dispatcher hands it for one device ([`Outgoing`]), the per-send header cache ([`Prepared`])
//! and the helpers each service's `request.rs` builds with. Sans-IO.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};

use super::verdict::{Reason, Verdict};
use super::Notification;
use crate::model::{PerPlatform, PushHandle};
use crate::transport::http1::Answer;

/// Builds requests and reads answers for one platform (sans-IO).
pub(crate) trait Protocol: Send + Sync + 'static {
    /// The request for one device: head (absolute URI) and body. `Err` rejects the device
    /// for this send with the reason.
    fn build(
        &self,
        device: &Outgoing<'_>,
        auth: Option<&HeaderValue>,
    ) -> Result<(Request<()>, Bytes), Reason>;
    /// The verdict on an answer.
    fn classify(&self, answer: &Answer) -> Verdict;
}

impl Outgoing<'_> {
    /// This device's request headers: the send's, built once into `cache`, or, for a device
    /// with its own payload (a rendered template), built for it alone; with `auth` as the
    /// `authorization` header when there is one.
    pub(crate) fn headers(
        &self,
        cache: &OnceLock<HeaderMap>,
        make: impl FnOnce() -> HeaderMap,
        auth: Option<&HeaderValue>,
    ) -> HeaderMap {
        let base = if self.own_payload {
            make()
        } else {
            cache.get_or_init(make).clone()
        };
        with_auth(base, auth)
    }
}

/// `headers` with `auth` as the `authorization` header when there is one.
pub(crate) fn with_auth(mut headers: HeaderMap, auth: Option<&HeaderValue>) -> HeaderMap {
    if let Some(a) = auth {
        headers.insert(http::header::AUTHORIZATION, a.clone());
    }
    headers
}

/// One device's request as the dispatcher hands it to a [`Protocol`].
pub(crate) struct Outgoing<'a> {
    pub(crate) handle: &'a PushHandle,
    /// The payload this device gets: its own (a rendered template) or the send's.
    pub(crate) notification: &'a Notification,
    /// Whether `notification` is the device's own: its headers are then built for it alone
    /// instead of once per send in `prepared`.
    pub(crate) own_payload: bool,
    /// The send's header cache.
    pub(crate) prepared: &'a Prepared,
    /// Idempotency key: the `apns-id`, the same on every resend.
    pub(crate) idem: u128,
}

pub(crate) fn wrong_handle(what: &str) -> Reason {
    format!("handle is not {what}").into()
}

pub(crate) fn no_payload(what: &str) -> Reason {
    format!("notification has no {what} payload").into()
}

pub(crate) fn request(uri: Uri, headers: HeaderMap) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

pub(crate) fn uri(scheme_authority: &str, path: &str) -> Result<Uri, Reason> {
    let mut s = String::with_capacity(scheme_authority.len() + path.len());
    s.push_str(scheme_authority);
    s.push_str(path);
    s.parse::<Uri>()
        .map_err(|e| Reason::from(format!("bad request URI: {e}")))
}

/// Per-send prepared headers, built once for the first device of a send, one set per
/// platform (`prepared[Platform::Apns]`).
pub(crate) type Prepared = PerPlatform<OnceLock<HeaderMap>>;

pub(crate) fn header_map(pairs: Vec<(HeaderName, HeaderValue)>) -> HeaderMap {
    let mut m = HeaderMap::with_capacity(pairs.len() + 3);
    for (k, v) in pairs {
        m.append(k, v);
    }
    m
}
