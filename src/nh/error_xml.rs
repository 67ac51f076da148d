//! Notification Hubs error bodies: `<Error><Code>404</Code><Detail>…</Detail></Error>`.
//!
//! The SDK turns such a body into the message `operations failed with: <Detail text>`
//! (nh-rest-api.md §3.2); any other body gives only `operation failed with status N`. Azure
//! appends `TrackingId:<guid>,TimeStamp:<time>` to the detail ([`error_body_tracked`]).

use std::time::SystemTime;

use super::xml;

/// The `Content-Type` Azure sends with error bodies (nh-rest-api.md §3.2, tagged REC).
pub const CONTENT_TYPE: &str = "application/xml; charset=utf-8";

/// `<Error><Code>{code}</Code><Detail>{detail}</Detail></Error>`, with `detail` escaped.
pub fn error_body(code: u16, detail: &str) -> String {
    let mut out = String::with_capacity(48 + detail.len());
    out.push_str("<Error><Code>");
    out.push_str(&code.to_string());
    out.push_str("</Code>");
    xml::leaf(&mut out, "Detail", detail);
    out.push_str("</Error>");
    out
}

/// Like [`error_body`], with Azure's suffix `TrackingId:<id>,TimeStamp:<time>` on the detail.
pub fn error_body_tracked(code: u16, detail: &str, tracking_id: &str, at: SystemTime) -> String {
    let detail = format!(
        "{detail}TrackingId:{tracking_id},TimeStamp:{}",
        crate::time::rfc3339::format(at)
    );
    error_body(code, &detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn byte_exact() {
        assert_eq!(
            error_body(404, "Installation not found."),
            "<Error><Code>404</Code><Detail>Installation not found.</Detail></Error>"
        );
        assert_eq!(
            error_body(400, "tag \"a<b\" & more"),
            "<Error><Code>400</Code><Detail>tag &quot;a&lt;b&quot; &amp; more</Detail></Error>"
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            error_body_tracked(404, "Installation not found.", "abc", at),
            "<Error><Code>404</Code><Detail>Installation not found.TrackingId:abc,TimeStamp:2023-11-14T22:13:20Z</Detail></Error>"
        );
    }

    #[test]
    fn parses_back() {
        let body = error_body(400, "x]]>&\u{0}");
        let el = xml::parse(&body).unwrap();
        assert_eq!(el.name, "Error");
        assert_eq!(el.child("Code").unwrap().text, "400");
        assert_eq!(el.child("Detail").unwrap().text, "x]]>&\u{FFFD}");
    }
}
