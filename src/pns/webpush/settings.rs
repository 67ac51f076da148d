//! What the user configures for Web Push ([`WebPushSettings`]: the VAPID key) and the pools
//! it makes ([`WebPushSettings::plan`]).

use std::sync::Arc;

use super::{VapidCache, VapidKey, WebPush};
use crate::pns::plan::{Credential, PoolPlan, Reach, Wire};

/// Web Push settings.
#[derive(Clone, Debug)]
pub struct WebPushSettings {
    vapid: VapidKey,
}

impl WebPushSettings {
    /// The VAPID key the subscriptions were made with.
    pub fn new(vapid: VapidKey) -> Self {
        WebPushSettings { vapid }
    }

    /// A pool per push-service origin (any host: the subscription chose it), opened on first
    /// use, with a VAPID header per origin (RFC 8292).
    pub(crate) fn plan(&self) -> PoolPlan {
        PoolPlan {
            protocol: Arc::new(WebPush),
            credential: Credential::Vapid(Arc::new(VapidCache::new(self.vapid.clone()))),
            reach: Reach::PerOrigin {
                allows: Box::new(|_| Ok(())),
            },
            wire: Wire::H2OrHttp1,
            warm_up: false,
        }
    }
}
