//! What the user configures for WNS ([`WnsSettings`]: OAuth client credentials, the channel
//! host allowlist) and the pools it makes ([`WnsSettings::plan`]).

use std::sync::Arc;

use super::{Wns, WnsCredentials};
use crate::model::host_matches;
use crate::pns::plan::{Credential, PoolPlan, Reach, Wire};

/// WNS settings.
#[derive(Clone, Debug)]
pub struct WnsSettings {
    credentials: WnsCredentials,
    allowed_hosts: Vec<String>,
}

impl WnsSettings {
    /// OAuth client credentials; channel hosts allowed: `*.notify.windows.com`.
    pub fn new(credentials: WnsCredentials) -> Self {
        WnsSettings {
            credentials,
            allowed_hosts: vec!["*.notify.windows.com".to_string()],
        }
    }

    /// Replaces the channel host allowlist (`*.suffix` or exact hosts); tests allow the mock.
    pub fn allowed_hosts(mut self, hosts: &[&str]) -> Self {
        self.allowed_hosts = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        self
    }

    /// A pool per channel host on the allowlist, opened on first use, over HTTP/1.1 (§3.2),
    /// with one OAuth access token for all of them (§3.1).
    pub(crate) fn plan(&self) -> PoolPlan {
        let allowed = self.allowed_hosts.clone();
        PoolPlan {
            protocol: Arc::new(Wns),
            credential: Credential::OAuth(Arc::new(self.credentials.clone())),
            reach: Reach::PerOrigin {
                allows: Box::new(move |host| {
                    if host_matches(&allowed, host) {
                        Ok(())
                    } else {
                        Err(format!("WNS channel host {host} is not on the allowlist"))
                    }
                }),
                // The allowlist is the policy: the default names Microsoft's hosts only, and
                // tests name the loopback mock.
                public_only: false,
            },
            wire: Wire::Http1,
            warm_up: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_refuses_a_host_off_the_allowlist_naming_it() {
        let c = WnsCredentials::new("ms-app://s-1-15-2-1", "secret").unwrap();
        let plan = WnsSettings::new(c).allowed_hosts(&["Mock.Local"]).plan();
        let Reach::PerOrigin { allows, .. } = plan.reach else {
            panic!("WNS pools are per origin")
        };
        assert!(allows("mock.local").is_ok());
        assert_eq!(
            allows("db5.notify.windows.com").unwrap_err(),
            "WNS channel host db5.notify.windows.com is not on the allowlist"
        );
        assert_eq!(plan.wire, Wire::Http1);
    }
}
