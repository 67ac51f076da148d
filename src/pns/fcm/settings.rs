//! What the user configures for FCM ([`FcmSettings`]: service account, API origin) and the
//! pool it makes ([`FcmSettings::plan`]).

use std::sync::Arc;

use super::{Fcm, FcmServiceAccount};
use crate::pns::plan::{Credential, PoolPlan, Reach, Wire};
use crate::transport::Endpoint;

/// FCM v1 API origin (pns-protocols.md §2.1).
pub const FCM_ENDPOINT: &str = "https://fcm.googleapis.com";

/// FCM v1 settings.
#[derive(Clone, Debug)]
pub struct FcmSettings {
    account: FcmServiceAccount,
    endpoint: String,
}

impl FcmSettings {
    /// A service account; requests go to `https://fcm.googleapis.com`, tokens to the
    /// account's `token_uri`.
    pub fn new(account: FcmServiceAccount) -> Self {
        FcmSettings {
            account,
            endpoint: FCM_ENDPOINT.to_string(),
        }
    }

    /// Uses another `https://` API origin (a mock server).
    pub fn endpoint(mut self, url: &str) -> Self {
        self.endpoint = url.trim_end_matches('/').to_string();
        self
    }

    /// One pool at the API origin, opened with the engine, with the service account's OAuth
    /// access token (§2.2).
    pub(crate) fn plan(&self) -> Result<PoolPlan, String> {
        let ep = Endpoint::from_url(&self.endpoint)?;
        let protocol = Arc::new(Fcm::new(&ep.origin(), self.account.project_id())?);
        Ok(PoolPlan {
            protocol,
            credential: Credential::OAuth(Arc::new(self.account.clone())),
            reach: Reach::Fixed(ep),
            wire: Wire::H2OrHttp1,
            warm_up: false,
        })
    }
}
