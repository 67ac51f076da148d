//! What the user configures for Web Push ([`WebPushSettings`]: the VAPID key, the endpoint
//! policy) and the pools it makes ([`WebPushSettings::plan`]).

use std::sync::Arc;

use super::{VapidCache, VapidKey, WebPush};
use crate::model::EndpointPolicy;
use crate::pns::plan::{Credential, PoolPlan, Reach, Wire};

/// Web Push settings.
///
/// The endpoint policy (server audit M1): a subscription chooses the URL the engine posts to,
/// so by default an endpoint must be an `https` URL whose host, an IP literal or every
/// address its name resolves to when a connection is opened, is a public address: loopback,
/// private (RFC 1918, CGNAT), link-local (cloud metadata at 169.254.169.254), unique-local,
/// multicast, documentation and the other special ranges are refused, IPv4-mapped forms
/// included. [`allowed_hosts`](Self::allowed_hosts) narrows the hosts further;
/// [`allow_private_endpoints`](Self::allow_private_endpoints) lifts the address rule (tests
/// against local mocks). The registry checks the same rule when an installation is written
/// (`RegistryConfig::web_push_hosts`, `RegistryConfig::web_push_private_endpoints`).
#[derive(Clone, Debug)]
pub struct WebPushSettings {
    vapid: VapidKey,
    allowed_hosts: Vec<String>,
    private_endpoints: bool,
}

impl WebPushSettings {
    /// The VAPID key the subscriptions were made with; any host with public addresses.
    pub fn new(vapid: VapidKey) -> Self {
        WebPushSettings {
            vapid,
            allowed_hosts: Vec::new(),
            private_endpoints: false,
        }
    }

    /// Endpoint hosts allowed: exact hosts or `*.suffix` patterns, e.g.
    /// `*.push.services.mozilla.com`, `fcm.googleapis.com`, `*.notify.windows.com`,
    /// `web.push.apple.com`. Empty (the default): any host. Devices at other hosts are
    /// rejected without a connection.
    pub fn allowed_hosts(mut self, hosts: &[&str]) -> Self {
        self.allowed_hosts = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        self
    }

    /// Whether endpoints at non-public addresses (loopback, private, link-local, ...) may be
    /// posted to. Default `false`; tests against mock push services on 127.0.0.1, and
    /// embedders whose push service is on a private network, set `true`.
    pub fn allow_private_endpoints(mut self, allow: bool) -> Self {
        self.private_endpoints = allow;
        self
    }

    /// A pool per push-service origin the policy allows, opened on first use, with a VAPID
    /// header per origin (RFC 8292).
    pub(crate) fn plan(&self) -> PoolPlan {
        let policy = EndpointPolicy::new(&self.allowed_hosts, self.private_endpoints);
        let public_only = !policy.allows_private();
        PoolPlan {
            protocol: Arc::new(WebPush),
            credential: Credential::Vapid(Arc::new(VapidCache::new(self.vapid.clone()))),
            reach: Reach::PerOrigin {
                allows: Box::new(move |host| {
                    policy
                        .check_host(host)
                        .map_err(|p| format!("Web Push endpoint policy: {p}"))
                }),
                public_only,
            },
            wire: Wire::H2OrHttp1,
            warm_up: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pns::plan::HostCheck;

    fn reach(s: &WebPushSettings) -> (bool, HostCheck) {
        let Reach::PerOrigin {
            allows,
            public_only,
        } = s.plan().reach
        else {
            panic!("Web Push pools are per origin")
        };
        (public_only, allows)
    }

    #[test]
    fn public_addresses_only_by_default() {
        let key = VapidKey::generate("mailto:ops@example.com").unwrap();
        let (public_only, allows) = reach(&WebPushSettings::new(key.clone()));
        assert!(public_only);
        assert!(allows("fcm.googleapis.com").is_ok());
        assert!(allows("localhost").is_ok(), "checked once resolved");
        assert_eq!(
            allows("127.0.0.1").unwrap_err(),
            "Web Push endpoint policy: address 127.0.0.1 is loopback (127.0.0.0/8, RFC 1122), \
             not a public address"
        );
        assert!(allows("::ffff:169.254.169.254").is_err());

        let listed =
            WebPushSettings::new(key.clone()).allowed_hosts(&["*.Push.Services.Mozilla.com"]);
        let (_, allows) = reach(&listed);
        assert!(allows("updates.push.services.mozilla.com").is_ok());
        assert!(allows("fcm.googleapis.com")
            .unwrap_err()
            .contains("not on the allowlist"));

        let mocks = WebPushSettings::new(key).allow_private_endpoints(true);
        let (public_only, allows) = reach(&mocks);
        assert!(!public_only);
        assert!(allows("127.0.0.1").is_ok());
    }
}
