//! WNS credentials (pns-protocols.md §3.1): the Package SID and client secret of a Windows
//! app, and the OAuth client-credentials request (scope `notify.windows.com`) that yields the
//! access token (parsed by [`super::oauth::parse_token_response`]).

use std::fmt;
use std::sync::Arc;

use crate::pns::oauth;
use crate::pns::CredentialError;

const WNS: &str = "WNS credentials";

/// The classic WNS token endpoint (pns-protocols.md §3.1).
pub(crate) const DEFAULT_WNS_TOKEN_URL: &str = "https://login.live.com/accesstoken.srf";
/// The scope the token request carries (pns-protocols.md §3.1).
const SCOPE: &str = "notify.windows.com";
/// A Package SID as the Partner Center shows it (pns-protocols.md §3.1).
const PACKAGE_SID_PREFIX: &str = "ms-app://";

/// A Windows app's WNS identity: Package SID (`ms-app://s-1-15-2-…`) and client secret, and
/// the token endpoint they are sent to. `Debug` never prints the secret.
#[derive(Clone)]
pub struct WnsCredentials {
    client_id: Box<str>,
    client_secret: Arc<str>,
    token_url: Box<str>,
}

impl fmt::Debug for WnsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WnsCredentials")
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl WnsCredentials {
    /// Credentials for the app whose Package SID is `client_id` (it starts with `ms-app://`)
    /// and whose secret is `client_secret` (not empty).
    pub fn new(client_id: &str, client_secret: &str) -> Result<Self, CredentialError> {
        let sid = client_id.strip_prefix(PACKAGE_SID_PREFIX).unwrap_or("");
        if sid.is_empty()
            || client_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(CredentialError::invalid(
                WNS,
                format!(
                    "client id {client_id:?} is not a Package SID (`{PACKAGE_SID_PREFIX}s-1-15-2-…`, \
                     without spaces)"
                ),
            ));
        }
        if client_secret.is_empty() {
            return Err(CredentialError::invalid(WNS, "client secret is empty"));
        }
        Ok(WnsCredentials {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            token_url: DEFAULT_WNS_TOKEN_URL.into(),
        })
    }

    /// The same credentials sent to another token endpoint (a test server); it must be an
    /// `https://` URL with a host.
    pub fn with_token_url(mut self, url: &str) -> Result<Self, CredentialError> {
        let host = url
            .strip_prefix("https://")
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        match host {
            Some(h)
                if !h.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                self.token_url = url.into();
                Ok(self)
            }
            _ => Err(CredentialError::invalid(
                WNS,
                format!("token URL {url:?} is not an https:// URL with a host"),
            )),
        }
    }

    /// The token endpoint (default `https://login.live.com/accesstoken.srf`).
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The Package SID.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The form-encoded token request:
    /// `grant_type=client_credentials&client_id=…&client_secret=…&scope=notify.windows.com`.
    pub(crate) fn token_request_body(&self) -> String {
        oauth::form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("scope", SCOPE),
        ])
    }
}

impl crate::pns::oauth::TokenRequest for WnsCredentials {
    fn service(&self) -> &'static str {
        "WNS"
    }
    fn token_endpoint(&self) -> &str {
        self.token_url()
    }
    /// Client credentials do not depend on the time.
    fn token_request_form(&self, _now: std::time::SystemTime) -> String {
        self.token_request_body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tagcast_mock::wns::{TEST_CLIENT_ID, TEST_CLIENT_SECRET};

    #[test]
    fn request_body_is_percent_encoded() {
        let c = WnsCredentials::new("ms-app://s-1-15-2-1", "a+b/c=d&e f%").unwrap();
        assert_eq!(c.token_url(), DEFAULT_WNS_TOKEN_URL);
        assert_eq!(
            c.token_request_body(),
            "grant_type=client_credentials&client_id=ms-app%3A%2F%2Fs-1-15-2-1\
             &client_secret=a%2Bb%2Fc%3Dd%26e+f%25&scope=notify.windows.com"
        );
        let debug = format!("{c:?}");
        assert!(debug.contains("s-1-15-2-1") && !debug.contains("a+b"));
    }

    #[test]
    fn bad_ids_secrets_and_urls_are_refused() {
        let err = |r: Result<WnsCredentials, CredentialError>| r.unwrap_err().to_string();
        assert_eq!(
            err(WnsCredentials::new("s-1-15-2-1", "x")),
            "WNS credentials: client id \"s-1-15-2-1\" is not a Package SID \
             (`ms-app://s-1-15-2-…`, without spaces)"
        );
        assert!(err(WnsCredentials::new("ms-app://", "x")).contains("not a Package SID"));
        assert_eq!(
            err(WnsCredentials::new(TEST_CLIENT_ID, "")),
            "WNS credentials: client secret is empty"
        );
        let c = WnsCredentials::new(TEST_CLIENT_ID, TEST_CLIENT_SECRET).unwrap();
        for bad in [
            "http://login.live.com/accesstoken.srf",
            "https://",
            "https:///x",
            "x",
        ] {
            assert_eq!(
                err(c.clone().with_token_url(bad)),
                format!("WNS credentials: token URL {bad:?} is not an https:// URL with a host")
            );
        }
        let c = c
            .with_token_url("https://127.0.0.1:8443/accesstoken.srf")
            .unwrap();
        assert_eq!(c.token_url(), "https://127.0.0.1:8443/accesstoken.srf");
    }

    /// The mock's token endpoint accepts the request; the token authorizes a raw push.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mock_wns_grants_a_token_that_pushes() {
        use tagcast_mock::testkit::http1_request;
        use tagcast_mock::wns::{MockWns, WnsConfig};
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            let wns = MockWns::start(WnsConfig::default()).await.unwrap();
            let creds = WnsCredentials::new(TEST_CLIENT_ID, TEST_CLIENT_SECRET)
                .unwrap()
                .with_token_url(&wns.token_url())
                .unwrap();
            let path = creds.token_url().trim_start_matches(&wns.base_url());
            let now = std::time::SystemTime::now();
            let form = [("content-type", "application/x-www-form-urlencoded")];
            let body = creds.token_request_body();
            let r = http1_request(
                wns.addr(),
                wns.ca_cert_pem(),
                "POST",
                path,
                &form,
                body.as_bytes(),
            )
            .await
            .unwrap();
            let token = oauth::parse_token_response(r.status, &r.body, now).unwrap();
            let channel = wns.create_channel();
            let channel_path = channel.uri.trim_start_matches(&wns.base_url());
            let r = http1_request(
                wns.addr(),
                wns.ca_cert_pem(),
                "POST",
                channel_path,
                &[
                    ("authorization", &token.bearer),
                    ("x-wns-type", "wns/raw"),
                    ("content-type", "application/octet-stream"),
                ],
                b"hello",
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200, "{}", r.header("x-wns-error-description"));

            let wrong = WnsCredentials::new(TEST_CLIENT_ID, "wrong").unwrap();
            let body = wrong.token_request_body();
            let r = http1_request(
                wns.addr(),
                wns.ca_cert_pem(),
                "POST",
                path,
                &form,
                body.as_bytes(),
            )
            .await
            .unwrap();
            let e = oauth::parse_token_response(r.status, &r.body, now).unwrap_err();
            assert_eq!(
                e.to_string(),
                "token endpoint answered 400: invalid_client (Invalid client id or secret)"
            );
            wns.shutdown().await;
        })
        .await
        .expect("test timed out");
    }
}
