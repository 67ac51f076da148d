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
    ///
    /// The cached map holds the `authorization` it was first built with, so the common case
    /// (the same token, which the pool hands out as the same shared bytes) is one clone and no
    /// insert: a clone has no spare room, and an insert into it reallocates.
    pub(crate) fn headers(
        &self,
        cache: &OnceLock<HeaderMap>,
        make: impl FnOnce() -> HeaderMap,
        auth: Option<&HeaderValue>,
    ) -> HeaderMap {
        if self.own_payload {
            return with_auth(make(), auth);
        }
        let base = cache.get_or_init(|| with_auth(make(), auth));
        let cached = base.get(http::header::AUTHORIZATION);
        match (cached, auth) {
            (Some(c), Some(a)) if same_bytes(c, a) => base.clone(),
            (None, None) => base.clone(),
            (_, Some(_)) => with_auth(base.clone(), auth),
            (Some(_), None) => {
                let mut m = base.clone();
                m.remove(http::header::AUTHORIZATION);
                m
            }
        }
    }
}

/// Whether two header values are the same bytes; O(1) when they share them (the pool's
/// `HeaderCache` hands out clones of one value).
fn same_bytes(a: &HeaderValue, b: &HeaderValue) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    std::ptr::eq(a, b) || a == b
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

/// A service's scheme and authority, parsed once; [`Origin::uri`] adds a device's path without
/// parsing them again.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

impl Origin {
    /// `https://host[:port]`, nothing after the authority.
    pub(crate) fn parse(origin: &str) -> Result<Origin, String> {
        let u: Uri = origin
            .parse()
            .map_err(|e| format!("bad origin {origin:?}: {e}"))?;
        let parts = u.into_parts();
        match (parts.scheme, parts.authority, parts.path_and_query) {
            (Some(scheme), Some(authority), pq) if pq.as_ref().is_none_or(|p| p == "/") => {
                Ok(Origin { scheme, authority })
            }
            _ => Err(format!("bad origin {origin:?}: want scheme://host[:port]")),
        }
    }

    /// The absolute URI of `path` (which starts with `/`) at this origin.
    pub(crate) fn uri(&self, path: String) -> Result<Uri, Reason> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            http::uri::PathAndQuery::from_maybe_shared(Bytes::from(path))
                .map_err(|e| Reason::from(format!("bad request URI: {e}")))?,
        );
        Uri::from_parts(parts).map_err(|e| Reason::from(format!("bad request URI: {e}")))
    }
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
