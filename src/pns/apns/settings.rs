//! What the user configures for APNs ([`ApnsSettings`]: credential, bundle id, endpoint,
//! token renewal) and the pool it makes ([`ApnsSettings::plan`]).

use std::sync::Arc;
use std::time::Duration;

use super::{Apns, ApnsCertificate, ApnsKey, ApnsTokenCache};
use crate::pns::plan::{Credential, PoolPlan, Reach, Wire};
use crate::transport::Endpoint;

/// APNs production host (pns-protocols.md §1.1).
pub const APNS_PRODUCTION: &str = "https://api.push.apple.com";
/// APNs sandbox host (pns-protocols.md §1.1).
pub const APNS_SANDBOX: &str = "https://api.sandbox.push.apple.com";

/// How APNs requests are authenticated.
#[derive(Clone, Debug)]
pub enum ApnsAuth {
    /// Provider token (`.p8` key): one pool per (team, key, environment).
    Token(ApnsKey),
    /// TLS client certificate: one pool per certificate.
    Certificate(ApnsCertificate),
}

/// APNs settings.
#[derive(Clone, Debug)]
pub struct ApnsSettings {
    auth: ApnsAuth,
    bundle_id: String,
    endpoint: String,
    token_renewal: Duration,
}

impl ApnsSettings {
    /// Token auth against the production endpoint.
    pub fn token(key: ApnsKey, bundle_id: &str) -> Self {
        Self::new(ApnsAuth::Token(key), bundle_id)
    }

    /// Certificate auth against the production endpoint.
    pub fn certificate(cert: ApnsCertificate, bundle_id: &str) -> Self {
        Self::new(ApnsAuth::Certificate(cert), bundle_id)
    }

    fn new(auth: ApnsAuth, bundle_id: &str) -> Self {
        ApnsSettings {
            auth,
            bundle_id: bundle_id.to_string(),
            endpoint: APNS_PRODUCTION.to_string(),
            token_renewal: Duration::from_secs(50 * 60),
        }
    }

    /// Uses the sandbox (development) endpoint.
    pub fn sandbox(mut self) -> Self {
        self.endpoint = APNS_SANDBOX.to_string();
        self
    }

    /// Uses another `https://` endpoint (a mock server, a proxy).
    pub fn endpoint(mut self, url: &str) -> Self {
        self.endpoint = url.trim_end_matches('/').to_string();
        self
    }

    /// How often the provider token is renewed (clamped to Apple's 20–60 minutes).
    pub fn token_renewal(mut self, every: Duration) -> Self {
        self.token_renewal = every;
        self
    }

    /// One HTTP/2 pool at the endpoint, opened with the engine; token auth signs one JWT per
    /// renewal period and warms new connections up (§1.7), certificate auth authenticates in
    /// TLS.
    pub(crate) fn plan(&self) -> Result<PoolPlan, String> {
        let ep = Endpoint::from_url(&self.endpoint)?;
        let protocol = Arc::new(Apns::new(&ep.origin(), &self.bundle_id)?);
        let (credential, warm_up) = match &self.auth {
            ApnsAuth::Token(key) => (
                Credential::ProviderToken(Arc::new(ApnsTokenCache::new(
                    key.clone(),
                    self.token_renewal,
                ))),
                true,
            ),
            ApnsAuth::Certificate(c) => (
                Credential::Certificate {
                    chain: c.chain(),
                    key: c.key(),
                },
                false,
            ),
        };
        Ok(PoolPlan {
            protocol,
            credential,
            reach: Reach::Fixed(ep),
            wire: Wire::H2,
            warm_up,
        })
    }
}
