//! What a service's pools are made of ([`PoolPlan`]): data that each service's `settings.rs`
//! gives from the user's settings, and that the dispatcher executes (it opens the
//! connections, fetches the OAuth tokens, builds the TLS configurations). Sans-IO, so a
//! service's wiring sits in its folder without `pns` importing delivery.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::apns::ApnsTokenCache;
use super::oauth::TokenRequest;
use super::request::Protocol;
use super::webpush::VapidCache;
use crate::transport::Endpoint;

/// How one configured service's pools are made.
pub(crate) struct PoolPlan {
    /// The request builder and answer reader every pool of the service shares.
    pub(crate) protocol: Arc<dyn Protocol>,
    /// Where the `authorization` (or the TLS client identity) comes from.
    pub(crate) credential: Credential,
    /// Where the pools connect.
    pub(crate) reach: Reach,
    /// The protocols the connections speak.
    pub(crate) wire: Wire,
    /// Connections start at one stream until a request succeeds (APNs token auth, §1.7).
    pub(crate) warm_up: bool,
}

/// Whether devices at a host may be sent to; `Err` says why not.
pub(crate) type HostCheck = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Where a service's pools connect.
pub(crate) enum Reach {
    /// One pool, opened with the engine (APNs, FCM).
    Fixed(Endpoint),
    /// One pool per origin of the devices' own URIs, opened on first use (WNS, Web Push);
    /// a host the service refuses (`allows` is `Err` with the reason) gets no pool.
    PerOrigin {
        /// Whether devices at this host may be sent to.
        allows: HostCheck,
        /// Connect only to public addresses: every address a host resolves to is checked
        /// before it is connected to (Web Push's endpoint policy, server audit M1).
        public_only: bool,
    },
}

/// The protocols a service's connections speak (TLS ALPN, and how requests are framed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    /// HTTP/2 only (APNs, pns-protocols.md §1.1).
    H2,
    /// HTTP/2 where the server offers it, HTTP/1.1 otherwise (FCM, Web Push push services).
    H2OrHttp1,
    /// HTTP/1.1, one request at a time per connection (WNS has no documented HTTP/2, §3.2).
    Http1,
}

/// Where a pool's credential comes from (by mechanism, not by service: a new service that
/// signs or fetches tokens like one of these reuses the variant).
pub(crate) enum Credential {
    /// A TLS client certificate (APNs certificate auth): no header, and a TLS failure is the
    /// credential's.
    Certificate {
        /// The certificate chain, leaf first.
        chain: Vec<CertificateDer<'static>>,
        /// The certificate's private key.
        key: PrivateKeyDer<'static>,
    },
    /// A provider token signed by the engine and renewed on a period (APNs token auth).
    ProviderToken(Arc<ApnsTokenCache>),
    /// An OAuth 2.0 access token from a token endpoint (FCM, WNS).
    OAuth(Arc<dyn TokenRequest>),
    /// A VAPID header per push-service origin (Web Push).
    Vapid(Arc<VapidCache>),
}
