//! Logs: the subscriber the binary installs (`[log]`: JSON or text, a level filter), one
//! access-log line per request (target `tagcast::access`) and one audit event per change
//! made through the API (target `tagcast::audit`). Neither ever carries a token, a
//! signature, a key or a request body: the key is named, the object is named, nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// `[log]` in the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (one JSON object per line, the default) or `text`.
    #[serde(default = "default_format")]
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `warn`, `tagcast=debug,info`, ...). Default `info`; the
    /// `RUST_LOG` environment variable overrides it.
    #[serde(default = "default_level")]
    pub level: String,
    /// Write the access log (one line per request). Default true.
    #[serde(default = "default_true")]
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_format(),
            level: default_level(),
            access: true,
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

fn default_format() -> LogFormat {
    LogFormat::Json
}

fn default_level() -> String {
    "info".into()
}

fn default_true() -> bool {
    true
}

/// Installs the process-wide subscriber writing to standard error. Returns an error when the
/// filter does not parse or another subscriber is installed already.
pub fn init(cfg: &LogConfig) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let mut filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&cfg.level),
    }
    .map_err(|e| format!("[log] level: {e}"))?;
    if !cfg.access {
        filter = filter.add_directive(
            "tagcast::access=off"
                .parse()
                .map_err(|e| format!("[log]: {e}"))?,
        );
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a file or a journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| format!("installing the log subscriber: {e}"))
}

/// One request, as the access log sees it.
pub(crate) struct Access<'a> {
    pub(crate) peer: SocketAddr,
    pub(crate) method: &'static str,
    pub(crate) route: &'static str,
    pub(crate) status: u16,
    pub(crate) elapsed: Duration,
    pub(crate) hub: Option<&'a str>,
    /// The name of the key whose token was accepted (never the token).
    pub(crate) key: Option<&'a str>,
    pub(crate) tracking_id: &'a str,
    /// The object a change acted on (installation, registration or notification id).
    pub(crate) object: Option<&'a str>,
}

/// The access-log line, and for a successful change an audit event.
pub(crate) fn access(a: &Access<'_>) {
    let ms = u64::try_from(a.elapsed.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        target: "tagcast::access",
        peer = %a.peer,
        method = a.method,
        route = a.route,
        status = a.status,
        ms,
        hub = a.hub.unwrap_or("-"),
        key = a.key.unwrap_or("-"),
        tracking_id = a.tracking_id,
        "request"
    );
    let changes = matches!(a.method, "PUT" | "PATCH" | "POST" | "DELETE");
    if changes && (200..300).contains(&a.status) {
        if let (Some(hub), Some(key)) = (a.hub, a.key) {
            tracing::info!(
                target: "tagcast::audit",
                hub,
                key,
                action = action(a.method, a.route),
                object = a.object.unwrap_or("-"),
                tracking_id = a.tracking_id,
                "change"
            );
        }
    }
}

/// What a change did, in words an auditor reads.
fn action(method: &str, route: &str) -> &'static str {
    match (method, route) {
        ("PUT", "installations") => "installation.write",
        ("PATCH", "installations") => "installation.patch",
        ("DELETE", "installations") => "installation.delete",
        ("POST", "messages") => "send",
        ("POST", "messages/$batch") => "send.direct_batch",
        ("POST", "schedulednotifications") => "schedule.create",
        ("DELETE", "schedulednotifications") => "schedule.cancel",
        ("POST", "registrations") | ("PUT", "registrations") => "registration.write",
        ("DELETE", "registrations") => "registration.delete",
        ("POST", "registrationIDs") => "registration.id",
        ("POST", "jobs") => "job.submit",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_name_every_changing_route() {
        assert_eq!(action("DELETE", "installations"), "installation.delete");
        assert_eq!(action("POST", "schedulednotifications"), "schedule.create");
        assert_eq!(action("POST", "jobs"), "job.submit");
        assert_eq!(action("GET", "installations"), "other");
    }

    #[test]
    fn the_log_section_reads_with_defaults() {
        let c: LogConfig = toml::from_str("").unwrap();
        assert_eq!(c.format, LogFormat::Json);
        assert_eq!(c.level, "info");
        assert!(c.access);
        let c: LogConfig = toml::from_str("format = \"text\"\naccess = false").unwrap();
        assert_eq!(c.format, LogFormat::Text);
        assert!(!c.access);
        assert!(toml::from_str::<LogConfig>("format = \"xml\"").is_err());
    }
}
