//! The direct-batch body (`POST /{hub}/messages/$batch?direct=true`, nh-rest-api.md §4.2).
//!
//! The JS SDK sends exactly this (CRLF line ends, no CRLF after the closing delimiter):
//!
//! ```text
//! Content-Type: multipart/mixed; boundary = "nh-boundary-<uuid>"
//!
//! --nh-boundary-<uuid>
//! Content-type: <notification content type>
//! Content-Disposition: inline; name=notification
//!
//! <notification body>
//! --nh-boundary-<uuid>
//! Content-type: application/json
//! Content-Disposition: inline; name=devices
//!
//! ["t1","t2"]
//! --nh-boundary-<uuid>--
//! ```
//!
//! Parsing follows RFC 2046 §5.1.1 (delimiters are CRLF + `--` + boundary; a preamble and an
//! epilogue are ignored; transport padding after a delimiter is allowed) and accepts the
//! SDK's `boundary = "…"` with spaces around `=`. Each of the two named parts must appear
//! exactly once; anything else is refused with a message.

/// Most handles in one batch (nh-rest-api.md §6.3, tagged DOC).
pub const MAX_BATCH_HANDLES: usize = 1000;
/// Longest boundary RFC 2046 §5.1.1 allows.
const MAX_BOUNDARY_LEN: usize = 70;
/// Most header lines read per part (the SDK writes two).
const MAX_PART_HEADERS: usize = 16;

/// A parsed direct batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectBatch {
    /// The `Content-type` of the `notification` part (e.g. `application/json;charset=utf-8`).
    pub content_type: String,
    /// The notification body, byte for byte.
    pub body: Vec<u8>,
    /// The device handles of the `devices` part, in order (1 to [`MAX_BATCH_HANDLES`]).
    pub handles: Vec<String>,
}

/// Why a batch body was refused (answer 400 with the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("direct batch: {0}")]
pub struct MultipartError(String);

fn err<T>(m: impl Into<String>) -> Result<T, MultipartError> {
    Err(MultipartError(m.into()))
}

/// The boundary of a `multipart/mixed` content type, quoted or not, with or without spaces
/// around `=` (the SDK writes `boundary = "nh-boundary-…"`).
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/mixed") {
        return err(format!(
            "Content-Type is {:?}; a batch must be multipart/mixed",
            short(media)
        ));
    }
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let v = v.trim();
        let v = match v.strip_prefix('"') {
            Some(q) => match q.strip_suffix('"') {
                Some(inner) => inner,
                None => return err("the boundary parameter has an unbalanced quote"),
            },
            None => v,
        };
        if v.is_empty() || v.len() > MAX_BOUNDARY_LEN {
            return err(format!(
                "the boundary must be 1-{MAX_BOUNDARY_LEN} characters (RFC 2046 §5.1.1)"
            ));
        }
        if v.bytes().any(|b| b.is_ascii_control() || b >= 0x80) {
            return err("the boundary contains a control or non-ASCII character");
        }
        return Ok(v.to_string());
    }
    err("Content-Type has no boundary parameter")
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Skips RFC 2046 transport padding (spaces and tabs) and the CRLF after a delimiter.
fn after_delimiter(body: &[u8], mut i: usize) -> Result<usize, MultipartError> {
    while matches!(body.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if body.get(i..i + 2) == Some(b"\r\n") {
        Ok(i + 2)
    } else {
        err("a boundary line is not followed by CRLF")
    }
}

struct Part<'a> {
    name: Option<String>,
    content_type: Option<String>,
    body: &'a [u8],
}

fn parse_part(raw: &[u8]) -> Result<Part<'_>, MultipartError> {
    let (head, body) = if raw.starts_with(b"\r\n") {
        (&raw[..0], &raw[2..])
    } else {
        match find(raw, b"\r\n\r\n", 0) {
            Some(i) => (&raw[..i], &raw[i + 4..]),
            None => return err("a part has no blank line after its headers"),
        }
    };
    let head = std::str::from_utf8(head).or_else(|_| err("part headers are not UTF-8"))?;
    let mut part = Part {
        name: None,
        content_type: None,
        body,
    };
    for (n, line) in head.split("\r\n").enumerate() {
        if n >= MAX_PART_HEADERS {
            return err(format!("a part has more than {MAX_PART_HEADERS} headers"));
        }
        let Some((k, v)) = line.split_once(':') else {
            return err(format!("part header line {:?} has no ':'", short(line)));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-type") {
            part.content_type = Some(v.to_string());
        } else if k.eq_ignore_ascii_case("content-disposition") {
            for p in v.split(';').skip(1) {
                if let Some((pk, pv)) = p.split_once('=') {
                    if pk.trim().eq_ignore_ascii_case("name") {
                        let pv = pv.trim();
                        let pv = pv
                            .strip_prefix('"')
                            .and_then(|q| q.strip_suffix('"'))
                            .unwrap_or(pv);
                        part.name = Some(pv.to_string());
                    }
                }
            }
        }
    }
    Ok(part)
}

/// Parses a direct-batch body given its request `Content-Type`.
pub fn parse(content_type: &str, body: &[u8]) -> Result<DirectBatch, MultipartError> {
    let b = boundary(content_type)?;
    let dash = format!("--{b}");
    let delim = format!("\r\n--{b}");
    // The first delimiter may open the body (no preamble) or follow a preamble.
    let mut i = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        match find(body, delim.as_bytes(), 0) {
            Some(p) => p + delim.len(),
            None => return err(format!("the body has no boundary line \"--{}\"", short(&b))),
        }
    };
    let mut notification: Option<(String, Vec<u8>)> = None;
    let mut devices: Option<Vec<u8>> = None;
    loop {
        if body.get(i..i + 2) == Some(b"--") {
            break; // close delimiter; the epilogue is ignored
        }
        let start = after_delimiter(body, i)?;
        let Some(end) = find(body, delim.as_bytes(), start) else {
            return err("the body ends without a closing boundary");
        };
        let part = parse_part(&body[start..end])?;
        match part.name.as_deref() {
            Some("notification") => {
                if notification.is_some() {
                    return err("the part \"notification\" appears twice");
                }
                let ct = part.content_type.filter(|c| !c.is_empty()).ok_or_else(|| {
                    MultipartError("the part \"notification\" has no Content-Type".into())
                })?;
                notification = Some((ct, part.body.to_vec()));
            }
            Some("devices") => {
                if devices.is_some() {
                    return err("the part \"devices\" appears twice");
                }
                devices = Some(part.body.to_vec());
            }
            Some(other) => {
                return err(format!(
                    "unknown part {:?} (expected \"notification\" and \"devices\")",
                    short(other)
                ))
            }
            None => return err("a part has no Content-Disposition name"),
        }
        i = end + delim.len();
    }
    let (content_type, body) = notification
        .ok_or_else(|| MultipartError("the part \"notification\" is missing".into()))?;
    let devices =
        devices.ok_or_else(|| MultipartError("the part \"devices\" is missing".into()))?;
    let handles: Vec<String> = serde_json::from_slice(&devices).map_err(|e| {
        MultipartError(format!(
            "the part \"devices\" is not a JSON array of strings: {e}"
        ))
    })?;
    if handles.is_empty() {
        return err("the part \"devices\" lists no device");
    }
    if handles.len() > MAX_BATCH_HANDLES {
        return err(format!(
            "the part \"devices\" lists {} devices; at most {MAX_BATCH_HANDLES} are allowed",
            handles.len()
        ));
    }
    Ok(DirectBatch {
        content_type,
        body,
        handles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CT: &str =
        "multipart/mixed; boundary = \"nh-boundary-8d2f1c9a-0000-4000-8000-000000000001\"";

    fn sdk_body(content_type: &str, body: &str, devices: &str) -> Vec<u8> {
        let b = "nh-boundary-8d2f1c9a-0000-4000-8000-000000000001";
        format!(
            "--{b}\r\nContent-type: {content_type}\r\nContent-Disposition: inline; name=notification\r\n\r\n{body}\r\n--{b}\r\nContent-type: application/json\r\nContent-Disposition: inline; name=devices\r\n\r\n{devices}\r\n--{b}--"
        )
        .into_bytes()
    }

    #[test]
    fn sdk_shape() {
        let body = sdk_body(
            "application/json;charset=utf-8",
            "{\"aps\":{\"alert\":\"hi\\r\\n\"}}\r\nline2",
            "[\"t1\",\"t2\"]",
        );
        let b = parse(CT, &body).unwrap();
        assert_eq!(b.content_type, "application/json;charset=utf-8");
        assert_eq!(b.body, b"{\"aps\":{\"alert\":\"hi\\r\\n\"}}\r\nline2");
        assert_eq!(b.handles, ["t1", "t2"]);
    }

    #[test]
    fn boundaries() {
        assert_eq!(boundary("multipart/mixed; boundary=abc").unwrap(), "abc");
        assert_eq!(
            boundary("Multipart/Mixed;charset=x; BOUNDARY = \"a b\"").unwrap(),
            "a b"
        );
        assert!(boundary("application/json")
            .unwrap_err()
            .to_string()
            .contains("multipart/mixed"));
        assert!(boundary("multipart/mixed")
            .unwrap_err()
            .to_string()
            .contains("no boundary"));
        assert!(boundary("multipart/mixed; boundary=\"x").is_err());
        assert!(boundary(&format!("multipart/mixed; boundary={}", "x".repeat(71))).is_err());
    }

    #[test]
    fn tolerated() {
        // Preamble, epilogue, padding, quoted names, part order.
        let b = "B";
        let body = format!(
            "preamble\r\n--{b}  \r\nContent-Disposition: inline; name=\"devices\"\r\n\r\n[\"x\"]\r\n--{b}\r\ncontent-type: text/plain\r\ncontent-disposition: inline; name=notification\r\n\r\n\r\n--{b}--\r\nepilogue"
        );
        let p = parse("multipart/mixed; boundary=B", body.as_bytes()).unwrap();
        assert_eq!(
            (
                p.content_type.as_str(),
                p.body.as_slice(),
                p.handles.as_slice()
            ),
            ("text/plain", &b""[..], &["x".to_string()][..])
        );
    }

    #[test]
    fn refusals() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (sdk_body("a/b", "x", "[]"), "lists no device"),
            (sdk_body("a/b", "x", "[1]"), "not a JSON array of strings"),
            (
                sdk_body("a/b", "x", "{\"a\":1}"),
                "not a JSON array of strings",
            ),
            (sdk_body("", "x", "[\"a\"]"), "has no Content-Type"),
            (
                sdk_body(
                    "a/b",
                    "x",
                    &serde_json::to_string(&vec!["t"; 1001]).unwrap(),
                ),
                "lists 1001 devices; at most 1000",
            ),
            (b"nothing".to_vec(), "no boundary line"),
            (
                sdk_body("a/b", "x", "[\"a\"]")
                    .strip_suffix(b"--")
                    .unwrap()
                    .to_vec(),
                "not followed by CRLF",
            ),
            (
                String::from_utf8(sdk_body("a/b", "x", "[\"a\"]"))
                    .unwrap()
                    .replace("name=devices", "name=other")
                    .into_bytes(),
                "unknown part \"other\"",
            ),
            (
                String::from_utf8(sdk_body("a/b", "x", "[\"a\"]"))
                    .unwrap()
                    .replace("name=devices", "name=notification")
                    .into_bytes(),
                "appears twice",
            ),
            (
                String::from_utf8(sdk_body("a/b", "x", "[\"a\"]"))
                    .unwrap()
                    .replace(
                        "\r\n--nh-boundary-8d2f1c9a-0000-4000-8000-000000000001--",
                        "",
                    )
                    .into_bytes(),
                "without a closing boundary",
            ),
        ];
        for (body, want) in cases {
            let e = parse(CT, &body).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.starts_with("direct batch: "));
        }
        let only_devices =
            "--B\r\nContent-Disposition: inline; name=devices\r\n\r\n[\"a\"]\r\n--B--";
        assert!(
            parse("multipart/mixed; boundary=B", only_devices.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("\"notification\" is missing")
        );
    }

    proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..400), ct in ".{0,60}") {
            let _ = parse(&ct, &body);
            let _ = parse(CT, &body);
        }

        #[test]
        fn round_trip(body in "[^\r]{0,200}", handles in proptest::collection::vec("[A-Za-z0-9:_-]{1,40}", 1..20)) {
            let raw = sdk_body("application/json", &body, &serde_json::to_string(&handles).unwrap());
            let p = parse(CT, &raw).unwrap();
            prop_assert_eq!(p.body, body.into_bytes());
            prop_assert_eq!(p.handles, handles);
        }
    }
}
