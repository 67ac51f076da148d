//! tagcast-mock: faithful mock push services (pns-protocols.md) and a webhook receiver, for
//! the engine's in-process tests, the load harness and the `mock` command of `tagcast-loadtest`.
//!
//! The crate does not depend on `tagcast`: the engine's tests dev-depend on it (no dependency
//! cycle), and everything it checks (JWTs, VAPID, RFC 8291 payloads, webhook signatures) is
//! implemented here from the specifications, so the engine is tested against them rather than
//! against its own code.
//!
//! Layout: [`tls`] (generated CA and server certificate) and [`faults`] (fault knobs, the
//! dead-handle function) feed the shared server core (`server`: accept loop, HTTP/2 via `h2`
//! with the SETTINGS shim in `rewrite`, HTTP/1.1 in `http1`, fault injection, accounting in
//! [`stats`], admin paths `GET /__mock/stats` and `GET /__mock/delivered`). Each mock is a
//! protocol `Service` on top of it: [`apns`], [`fcm`], [`wns`], [`webpush`]. The [`testkit`]
//! holds the client side a test needs (provider tokens, OAuth assertions, VAPID, RFC 8291
//! encryption, a TLS/HTTP/2 client and a one-shot HTTP/1.1 client); [`cli`] is the `mock`
//! command, [`webhook`] the receiver for the engine's event webhooks.
//!
//! Every mock binds loopback only in the command (the library binds what it is given), answers
//! with the real service's status codes and reason bodies (pns-protocols.md), and never accepts
//! what the real service would reject.
//!
//! ```no_run
//! # async fn f() -> Result<(), tagcast_mock::MockError> {
//! use tagcast_mock::apns::{ApnsConfig, MockApns};
//! let apns = MockApns::start(ApnsConfig::default()).await?;
//! println!("{} trusts {}", apns.addr(), apns.ca_file().display());
//! let delivered = apns.delivered_handles();
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod apns;
pub mod cli;
mod error;
pub mod faults;
pub mod fcm;
mod http1;
mod jwt;
pub mod nats;
mod rewrite;
mod server;
pub mod stats;
pub mod testkit;
pub mod tls;
pub mod webhook;
pub mod webpush;
pub mod wns;

pub use error::MockError;
pub use faults::{is_dead_handle, Faults, ResetFault};
pub use server::MockServer;
pub use stats::{Delivery, StatsSnapshot};
pub use tls::MockTls;

#[cfg(test)]
mod tests {
    /// Public handles can be shared across tasks and threads (tokio's `async_send_sync` habit).
    #[test]
    fn public_handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::MockServer>();
        check::<super::apns::MockApns>();
        check::<super::fcm::MockFcm>();
        check::<super::wns::MockWns>();
        check::<super::webpush::MockWebPush>();
        check::<super::StatsSnapshot>();
        check::<super::MockTls>();
        check::<super::testkit::H2Client>();
        check::<super::MockError>();
    }
}
