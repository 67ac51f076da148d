//! Where a pool's `authorization` header comes from: the cached APNs provider token, a cached
//! OAuth access token (FCM, WNS) fetched from the token endpoint when due, a VAPID header per
//! push-service origin, or nothing (APNs certificate auth). Never signed or fetched per
//! request (pns-protocols.md §8 item 1).

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;
use parking_lot::{Mutex, RwLock};

use crate::pns::apns::ApnsTokenCache;
use crate::pns::oauth::TokenRequest;
use crate::pns::webpush::VapidCache;
use crate::pns::{parse_token_response, AccessToken};
use crate::transport::http1::post_form;

pub(crate) enum AuthSource {
    /// TLS client certificate: no header.
    None,
    Apns(Arc<ApnsTokenCache>),
    OAuth(Arc<OAuth>),
    Vapid {
        cache: Arc<VapidCache>,
        origin: String,
    },
}

/// Why no `authorization` header could be had.
#[derive(Debug)]
pub(crate) struct AuthError {
    pub(crate) message: String,
    /// The token endpoint may answer later (network, timeout, 429, 5xx); anything else is
    /// the credential's or the configuration's fault.
    pub(crate) transient: bool,
}

/// Longest wait for a token endpoint's answer.
const TOKEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The last header built, so the common case (token unchanged) allocates nothing.
#[derive(Default)]
pub(crate) struct HeaderCache(Mutex<Option<(Arc<str>, HeaderValue)>>);

impl HeaderCache {
    fn get(&self, s: Arc<str>) -> Result<HeaderValue, String> {
        let mut g = self.0.lock();
        if let Some((k, v)) = &*g {
            if Arc::ptr_eq(k, &s) {
                return Ok(v.clone());
            }
        }
        let mut v = HeaderValue::from_str(&s)
            .map_err(|_| "authorization token is not a valid header value".to_string())?;
        v.set_sensitive(true);
        *g = Some((s, v.clone()));
        Ok(v)
    }
}

impl AuthSource {
    /// The `authorization` header for requests sent now.
    pub(crate) async fn bearer(
        &self,
        cache: &HeaderCache,
    ) -> Result<Option<HeaderValue>, AuthError> {
        let now = SystemTime::now();
        let s = match self {
            AuthSource::None => return Ok(None),
            AuthSource::Apns(c) => c.bearer(now),
            AuthSource::OAuth(o) => o.bearer(now).await?,
            AuthSource::Vapid { cache, origin } => cache.header(origin, now),
        };
        cache.get(s).map(Some).map_err(|message| AuthError {
            message,
            transient: false,
        })
    }

    /// The service refused `used` as expired or invalid: get a new one before the next
    /// request (once, however many streams saw the refusal).
    pub(crate) fn invalidate(&self, used: &HeaderValue) {
        let now = SystemTime::now();
        match self {
            AuthSource::None | AuthSource::Vapid { .. } => {}
            AuthSource::Apns(c) => {
                let (current, issued) = c.bearer_issued(now);
                if current.as_bytes() == used.as_bytes() {
                    c.renew_if_issued_before(now, issued);
                }
            }
            AuthSource::OAuth(o) => o.invalidate(used),
        }
    }
}

/// A cached OAuth access token with single-flight refresh, for any credential that gets its
/// tokens from a token endpoint (the service says where and what to post: [`TokenRequest`]).
pub(crate) struct OAuth {
    credential: Arc<dyn TokenRequest>,
    tls: Arc<rustls::ClientConfig>,
    current: RwLock<Option<AccessToken>>,
    refresh: tokio::sync::Mutex<()>,
    pub(crate) fetches: std::sync::atomic::AtomicU64,
}

impl OAuth {
    pub(crate) fn new(credential: Arc<dyn TokenRequest>, tls: Arc<rustls::ClientConfig>) -> Self {
        OAuth {
            credential,
            tls,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            fetches: Default::default(),
        }
    }

    fn cached(&self, now: SystemTime) -> Option<Arc<str>> {
        self.current
            .read()
            .as_ref()
            .filter(|t| !t.needs_refresh(now))
            .map(|t| t.bearer.clone())
    }

    async fn bearer(&self, now: SystemTime) -> Result<Arc<str>, AuthError> {
        if let Some(b) = self.cached(now) {
            return Ok(b);
        }
        let _guard = self.refresh.lock().await;
        if let Some(b) = self.cached(now) {
            return Ok(b);
        }
        let c = &self.credential;
        let (url, form, what) = (
            c.token_endpoint().to_string(),
            c.token_request_form(now),
            c.service(),
        );
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fetch = post_form(&url, form, self.tls.clone());
        let fetched = match tokio::time::timeout(TOKEN_TIMEOUT, fetch).await {
            Err(_) => Err(AuthError {
                message: format!("{what} token endpoint {url}: no answer within {TOKEN_TIMEOUT:?}"),
                transient: true,
            }),
            Ok(Err(e)) => Err(AuthError {
                message: format!("{what} token endpoint {url}: {e}"),
                transient: true,
            }),
            Ok(Ok(answer)) => parse_token_response(answer.status, &answer.body, SystemTime::now())
                .map_err(|e| AuthError {
                    message: format!("{what} token endpoint {url}: {e}"),
                    transient: e.is_transient(),
                }),
        };
        match fetched {
            Ok(token) => {
                let b = token.bearer.clone();
                *self.current.write() = Some(token);
                Ok(b)
            }
            // The refresh is due minutes before expiry: while the token endpoint is down,
            // the old token still works.
            Err(e) if e.transient => match &*self.current.read() {
                Some(t) if t.expires_at > SystemTime::now() => Ok(t.bearer.clone()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn invalidate(&self, used: &HeaderValue) {
        let mut g = self.current.write();
        if g.as_ref()
            .is_some_and(|t| t.bearer.as_bytes() == used.as_bytes())
        {
            *g = None;
        }
    }
}
