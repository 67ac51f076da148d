//! The vocabulary every stage shares: platforms, push handles, ids, tags, templates and
//! installations, and [`PerPlatform`], a value per platform.
//!
//! This is the leaf of the crate's module graph: it imports nothing else of the crate, and
//! everything else may import it (docs/architecture.md, "Module graph").
//!
//! Compatible with Azure Notification Hubs' installation (`../shared/design/nh-rest-api.md` §5).
//! Every value here is checked when it is built ("parse, don't validate"): an [`InstallationId`],
//! a [`PushHandle`], a [`UserId`] or a [`Tag`] that exists is well formed. Rules that depend on
//! the registry's configuration (tags per installation, the WNS host allowlist, templates that
//! must compile) are checked by the registry when the installation is written.

mod endpoint;
#[cfg(any(feature = "server", feature = "cluster"))]
pub(crate) mod filter;
mod handle;
mod ids;
mod installation;
mod platform;
mod tag;

pub(crate) use endpoint::{host_matches, require_public, EndpointPolicy};
pub(crate) use handle::check_https_uri;
pub use handle::{PushHandle, WebPushSubscription};
pub use ids::{InstallationId, UserId};
pub use installation::{
    Installation, PatchOp, Template, MAX_TEMPLATE_BODY_LEN, MAX_TEMPLATE_NAME_LEN,
};
pub use platform::{PerPlatform, Platform};
pub use tag::{is_tag_char, Tag, TagError, MAX_TAG_LEN, TAG_ALPHABET};

/// Why a value is not a valid part of an installation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// An installation id broke the rule.
    #[error("installation id {id:?} {problem}")]
    InstallationId {
        /// The offending id (cut to 80 characters).
        id: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A user id broke the rule.
    #[error("user id {id:?} {problem}")]
    UserId {
        /// The offending id (cut to 80 characters).
        id: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A platform name is not known.
    #[error("unknown platform {0:?} (known: apns, fcm (fcmv1), wns (windows), webpush (browser))")]
    Platform(String),
    /// A push handle is malformed for its platform.
    #[error("{platform} push handle {problem}")]
    Handle {
        /// The handle's platform.
        platform: Platform,
        /// What is wrong.
        problem: String,
    },
    /// A tag is malformed.
    #[error(transparent)]
    Tag(#[from] crate::TagError),
    /// A template is malformed.
    #[error("template {name:?} {problem}")]
    Template {
        /// The template's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

pub(crate) fn shorten(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn apns_tokens_any_even_length_and_case() {
        let t = PushHandle::apns("ABcd01").unwrap();
        assert_eq!(t.to_text(), "abcd01");
        assert_eq!(t.key(), &[0xab, 0xcd, 0x01]);
        let long = "ab".repeat(100); // Live Activity tokens are longer than 32 bytes
        assert!(PushHandle::apns(&long).is_ok());
        assert_eq!(
            PushHandle::apns("abc").unwrap_err().to_string(),
            "apns push handle has an odd number of hex digits (3)"
        );
        assert_eq!(
            PushHandle::apns("abzz").unwrap_err().to_string(),
            "apns push handle contains 'z' at byte 2; it must be hex"
        );
    }

    #[test]
    fn ids() {
        assert!(InstallationId::new("a".repeat(256)).is_ok());
        assert_eq!(
            InstallationId::new("a/b").unwrap_err().to_string(),
            "installation id \"a/b\" contains '/'"
        );
        assert!(InstallationId::new("").is_err());
        assert!(InstallationId::new("a\nb").is_err());
        assert!(InstallationId::new("a".repeat(257)).is_err());
        assert!(UserId::new("u}").is_err());
    }

    #[test]
    fn uris_and_web_push() {
        assert_eq!(
            check_https_uri("https://DB5.Notify.Windows.com/?token=x").unwrap(),
            "db5.notify.windows.com"
        );
        assert_eq!(check_https_uri("https://[::1]:8443/x").unwrap(), "::1");
        assert!(check_https_uri("http://x").is_err());
        assert_eq!(
            check_https_uri("https://user:pw@push.example/x").unwrap_err(),
            "\"https://user:pw@push.example/x\" has user info or a backslash in its authority; \
             push URLs carry neither"
        );
        assert!(check_https_uri("https://169.254.169.254\\@push.example/").is_err());
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([4u8; 65]);
        let a = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 16]);
        assert!(PushHandle::web_push("https://push.example/x", &p, &a).is_ok());
        let short = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([4u8; 64]);
        assert_eq!(
            PushHandle::web_push("https://push.example/x", &short, &a)
                .unwrap_err()
                .to_string(),
            "webpush push handle p256dh is 64 bytes; an uncompressed P-256 point is 65"
        );
    }

    #[test]
    fn platform_names() {
        assert_eq!("FCMv1".parse::<Platform>().unwrap(), Platform::Fcm);
        assert_eq!("browser".parse::<Platform>().unwrap(), Platform::WebPush);
        assert!("gcm".parse::<Platform>().is_err());
    }
}
