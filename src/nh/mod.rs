//! Azure Notification Hubs REST compatibility: the sans-IO codecs a server needs so that the
//! official SDKs (`@azure/notification-hubs` 2.x) work unchanged
//! (`../shared/design/nh-rest-api.md` is the contract; section numbers below refer to it).
//!
//! Every item here is a pure function or a plain type: bytes and header values in, tagcast
//! types or answer bodies out. Nothing does IO.
//!
//! - [`sas`]: `SharedAccessSignature` tokens: verify, rights, generate (§2).
//! - [`headers`]: `ServiceBusNotification-*` headers, direct-send handles, `If-Match`, and
//!   which caller headers pass through to the push service (§4.2, §4.3, §8).
//! - [`installation_json`]: installation JSON and PATCH bodies ⇄ [`Installation`](crate::Installation),
//!   [`PatchOp`](crate::PatchOp) (§4.1, §5).
//! - [`registration_xml`]: Atom registration entries and feeds (§4.5).
//! - [`job_xml`]: import/export jobs: the `NotificationHubJob` request, entries and feeds
//!   (§4.7).
//! - [`multipart`]: the direct-batch `multipart/mixed` body (§4.2).
//! - [`notification_xml`]: the test-send `NotificationOutcome` and the `NotificationDetails`
//!   telemetry answer (§4.2, §7).
//! - [`error_xml`]: `<Error><Code/><Detail/></Error>` bodies (§3.2).
//! - [`filter`]: the `$filter` of a registration listing (channel lookups).

pub mod error_xml;
pub mod filter;
pub mod headers;
pub mod installation_json;
pub mod job_xml;
pub mod multipart;
pub mod notification_xml;
pub mod registration_xml;
pub mod sas;
mod xml;

/// The `api-version` the JS SDK 2.x sends (§3.1) and the answers' URLs carry.
pub const API_VERSION: &str = "2020-06";
