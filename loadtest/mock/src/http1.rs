//! HTTP/1.1 transport of the mocks (RFC 9112): WNS, and the OAuth/Web Push/FCM endpoints when
//! ALPN picks `http/1.1`. Keep-alive, one request at a time, `Content-Length` bodies only —
//! chunked uploads get 411 (WNS forbids them, pns-protocols.md §3.2). The fault knobs map onto
//! HTTP/1.1 as: GOAWAY after N → `Connection: close` on the N-th answer; resets → TCP RST.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::server::{admin, process, ConnCtl, ConnInfo, InFlight, Outcome, Reply, Service, Shared};

/// Longest request head accepted (request line + headers).
const MAX_HEAD: usize = 16 * 1024;
/// Bodies above this are refused with 413 and the connection closed (every PNS limit is far
/// below: 4–5 KiB).
const MAX_BODY: usize = 1024 * 1024;

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

enum Head {
    Request(Box<http::request::Parts>, usize, bool),
    /// Answer this and close.
    Bad(StatusCode),
    Closed,
}

async fn read_head(io: &mut BufReader<Tls>) -> Head {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        match io.read_until(b'\n', &mut head).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(_) => {}
        }
        if head.len() > MAX_HEAD {
            return Head::Bad(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                // Tolerate empty lines before a request (RFC 9112 §2.2).
                head.clear();
                continue;
            }
            break;
        }
    }
    parse_head(&head)
}

fn parse_head(head: &[u8]) -> Head {
    let Ok(text) = std::str::from_utf8(head) else {
        return Head::Bad(StatusCode::BAD_REQUEST);
    };
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let Some(request_line) = lines.next() else {
        return Head::Bad(StatusCode::BAD_REQUEST);
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Bad(StatusCode::BAD_REQUEST);
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Head::Bad(StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }
    let mut builder =
        Request::builder()
            .method(method)
            .uri(target)
            .version(if version == "HTTP/1.0" {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            });
    let mut content_length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Head::Bad(StatusCode::BAD_REQUEST);
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if content_length.is_none_or(|c| c == n) => content_length = Some(n),
                _ => return Head::Bad(StatusCode::BAD_REQUEST),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value.eq_ignore_ascii_case("close");
        }
        builder = builder.header(name, value);
    }
    let Ok(req) = builder.body(()) else {
        return Head::Bad(StatusCode::BAD_REQUEST);
    };
    let (parts, ()) = req.into_parts();
    if chunked {
        return Head::Bad(StatusCode::LENGTH_REQUIRED);
    }
    let len = content_length.unwrap_or(0);
    if content_length.is_none() && parts.method == http::Method::POST {
        return Head::Bad(StatusCode::LENGTH_REQUIRED);
    }
    if len > MAX_BODY {
        return Head::Bad(StatusCode::PAYLOAD_TOO_LARGE);
    }
    Head::Request(Box::new(parts), len, close)
}

async fn write_reply(io: &mut BufReader<Tls>, reply: &Reply, close: bool) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256 + reply.body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            reply.status.as_u16(),
            reply.status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in &reply.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n", reply.body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&reply.body);
    let w = io.get_mut();
    w.write_all(&out).await?;
    w.flush().await
}

fn plain(status: StatusCode) -> Reply {
    let mut r = Reply::empty(status);
    r.key = Some(format!("{} http", status.as_u16()).into());
    r
}

pub(crate) async fn serve<S: Service>(
    shared: Arc<Shared<S>>,
    tls: Tls,
    info: ConnInfo,
    conn_no: u64,
) {
    let conn = shared.service.connect(&info);
    let ctl = ConnCtl::new(&shared.faults, conn_no, true);
    let mut io = BufReader::new(tls);
    let mut stream_no = 0u64;
    loop {
        let (parts, len, client_close) = match read_head(&mut io).await {
            Head::Request(p, l, c) => (*p, l, c),
            Head::Bad(status) => {
                let reply = plain(status);
                if let Some(k) = &reply.key {
                    shared.stats.response(k);
                }
                let _ = write_reply(&mut io, &reply, true).await;
                return;
            }
            Head::Closed => return,
        };
        let mut body = vec![0; len];
        if io.read_exact(&mut body).await.is_err() {
            return;
        }
        if parts.uri.path().starts_with("/__mock/") {
            let reply =
                admin(&shared.stats, &parts).or_else(|| shared.service.admin(&parts, &body));
            if let Some(reply) = reply {
                if write_reply(&mut io, &reply, client_close).await.is_err() || client_close {
                    return;
                }
                continue;
            }
        }
        stream_no += 1;
        let goaway = shared.faults.goaway_after_streams == Some(stream_no);
        if goaway {
            shared
                .stats
                .goaways_sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let close = client_close || goaway;
        let open = InFlight::enter(&shared.stats, &ctl);
        match process(
            &shared,
            &conn,
            &ctl,
            parts,
            Bytes::from(body),
            stream_no,
            &open,
        )
        .await
        {
            Outcome::Answer(reply) => {
                if write_reply(&mut io, &reply, close).await.is_err() || close {
                    return;
                }
            }
            Outcome::Refuse => {
                let _ = write_reply(&mut io, &plain(StatusCode::SERVICE_UNAVAILABLE), true).await;
                return;
            }
            Outcome::Silence => {
                // A reset fault: close with RST, no answer.
                let _ = io.get_ref().get_ref().0.set_zero_linger();
                return;
            }
        }
    }
}
