//! Raw HTTP/1.1 against `tagcast serve` on loopback, shared by the server hardening tests
//! (`server_limits.rs`, `server_safety.rs`): one request per connection ([`call`]), a server
//! on a fresh data directory with a full and a Listen key ([`Env`]), tokens ([`sas`]) and
//! installation bodies. Written in the style of `server_ops.rs`, whose helpers these extend
//! (custom `Host`, a response type with case-insensitive header lookup, error details).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tagcast::nh::notification_xml::{NH_NAMESPACE, XSI_NAMESPACE};
use tagcast::nh::sas::token;
use tagcast::server::{Server, ServerConfig};
use tagcast_mock::apns::{self, ApnsConfig, MockApns, TEST_KEY_PEM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{apns_token, Bed};

/// The hub every test serves.
pub const HUB: &str = "ops";
/// Secret of the key `full` (Listen, Send, Manage); at least 32 characters, as the server
/// requires.
pub const KEY: &str = "c2VydmVyLWhhcmRlbmluZy10ZXN0cy1mdWxsLWtleQ";
/// Secret of the key `listen` (Listen only).
pub const LISTEN_KEY: &str = "c2VydmVyLWhhcmRlbmluZy10ZXN0cy1saXN0ZW4ta2V5";

/// Longest wait for any one answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// One HTTP answer: status, head (status line and headers) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    /// Parses a whole HTTP/1.1 answer as read off the wire.
    pub fn parse(raw: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Answer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The `<Detail>` of an NH error body, without the `TrackingId:…,TimeStamp:…` suffix.
    pub fn detail(&self) -> &str {
        let d = self
            .body
            .split_once("<Detail>")
            .and_then(|(_, r)| r.split_once("</Detail>"))
            .map_or("", |(d, _)| d);
        d.rsplit_once("TrackingId:").map_or(d, |(d, _)| d)
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); `Host` is the server's
/// address unless `headers` bring their own. Panics unless the whole answer arrives within
/// [`ANSWER_WITHIN`].
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Answer {
    try_call(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`call`], with connection errors returned (a server that stopped listening).
pub async fn try_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let mut s = tokio::time::timeout(ANSWER_WITHIN, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    req.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n",
        body.len()
    ));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {ANSWER_WITHIN:?}"))?;
    Ok(Answer::parse(&out))
}

/// Reads from `s` until a whole response head (and nothing more is required) arrived, at
/// most `limit`; `None` when nothing (or not a whole head) came in time.
pub async fn read_head(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            out.extend_from_slice(&buf[..n]);
            if out.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok().flatten()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Whether the server closes `s` (EOF or reset) within `limit`, reading and discarding what
/// arrives meanwhile.
pub async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let wait = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, wait).await.is_ok()
}

/// `Authorization: SharedAccessSignature …` for `audience`, valid for an hour.
pub fn sas_for(audience: &str, name: &str, key: &str) -> (&'static str, String) {
    sas_expiring(audience, name, key, unix_now() + 3600)
}

/// `Authorization` for `audience` expiring at `se` (Unix seconds).
pub fn sas_expiring(audience: &str, name: &str, key: &str, se: u64) -> (&'static str, String) {
    ("Authorization", token(audience, name, key, se))
}

/// `Authorization` for the namespace root `http://{addr}/`.
pub fn sas(addr: SocketAddr, name: &str, key: &str) -> (&'static str, String) {
    sas_for(&format!("http://{addr}/"), name, key)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `time` as `2030-01-01T00:00:00.000Z` (what the JS SDK sends as a schedule time).
pub fn iso8601(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `/ops/installations/{id}?api-version=2020-06`.
pub fn inst_path(id: &str) -> String {
    format!("/{HUB}/installations/{id}?api-version=2020-06")
}

/// `/ops/{rest}` with `api-version=2020-06` appended (`rest` may carry a query).
pub fn hub_path(rest: &str) -> String {
    let sep = if rest.contains('?') { '&' } else { '?' };
    format!("/{HUB}/{rest}{sep}api-version=2020-06")
}

/// An APNs installation `id` for device token `i`, with `tags`.
pub fn apns_inst(id: &str, i: u64, tags: &[&str]) -> String {
    serde_json::json!({
        "installationId": id,
        "platform": "apns",
        "pushChannel": apns_token(i),
        "tags": tags,
    })
    .to_string()
}

/// A server configuration: `[server]` on 127.0.0.1:0, plain HTTP, no drain delay, with
/// `server_extra` lines (which replace defaults of the same key); hub `ops` with keys `full`
/// and `listen`, `hub_extra` (e.g. a `[hub.limits]` table) and, with `apns`, the mock's
/// credentials and CA.
pub fn config(
    dir: &Path,
    apns: Option<&MockApns>,
    server_extra: &str,
    hub_extra: &str,
) -> ServerConfig {
    let defaults = [
        ("listen", "\"127.0.0.1:0\"".to_owned()),
        ("plain_http", "true".to_owned()),
        ("data_dir", format!("\"{}\"", dir.join("data").display())),
        ("shutdown_grace_secs", "10".to_owned()),
        ("drain_delay_secs", "0".to_owned()),
    ];
    let overridden = |k: &str| {
        server_extra
            .lines()
            .any(|l| l.split('=').next().map(str::trim) == Some(k))
    };
    let mut text = String::from("[server]\n");
    for (k, v) in defaults.iter().filter(|(k, _)| !overridden(k)) {
        text.push_str(&format!("{k} = {v}\n"));
    }
    text.push_str(server_extra);
    text.push_str(&format!(
        "\n[[hub]]\nname = \"{HUB}\"\n\
         [[hub.key]]\nname = \"full\"\nkey = \"{KEY}\"\nrights = [\"Listen\", \"Send\", \"Manage\"]\n\
         [[hub.key]]\nname = \"listen\"\nkey = \"{LISTEN_KEY}\"\nrights = [\"Listen\"]\n"
    ));
    if let Some(apns) = apns {
        let p8 = dir.join("key.p8");
        std::fs::write(&p8, TEST_KEY_PEM).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, apns.ca_cert_pem()).unwrap();
        // Inside `[[hub]]`, before any sub-table.
        let at = text.find("[[hub.key]]").unwrap();
        text.insert_str(
            at,
            &format!("ca_file = \"{}\"\nca_only = true\n", ca.display()),
        );
        text.push_str(&apns::hub_toml(&p8, &apns.base_url()));
    }
    text.push_str(hub_extra);
    ServerConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A running server on a fresh bed, with the tokens of its two keys.
pub struct Env {
    pub bed: Bed,
    pub server: Server,
    pub addr: SocketAddr,
    /// `Authorization` of the key `full`.
    pub full: (&'static str, String),
    /// `Authorization` of the key `listen`.
    pub listen: (&'static str, String),
}

/// What [`Env::start`] starts.
#[derive(Default)]
pub struct Setup {
    /// An APNs mock with this configuration, wired into the hub.
    pub apns: Option<ApnsConfig>,
    /// Lines for `[server]`.
    pub server: String,
    /// TOML after the hub's keys (`[hub.limits]` …).
    pub hub: String,
}

impl Env {
    pub async fn start(setup: Setup) -> Env {
        let mut bed = Bed::new();
        let with_apns = setup.apns.is_some();
        if let Some(a) = setup.apns {
            bed = bed.apns(a);
        }
        let bed = bed.start().await;
        let apns = with_apns.then(|| bed.apns());
        let cfg = config(bed.dir.path(), apns, &setup.server, &setup.hub);
        let server = Server::start(cfg).await.unwrap();
        let addr = server.local_addr();
        Env {
            full: sas(addr, "full", KEY),
            listen: sas(addr, "listen", LISTEN_KEY),
            bed,
            server,
            addr,
        }
    }

    /// A request with `headers` (no token unless given).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Answer {
        call(self.addr, method, path, headers, body).await
    }

    /// A request with the `full` key.
    pub async fn full(&self, method: &str, path: &str, body: &[u8]) -> Answer {
        self.call(method, path, std::slice::from_ref(&self.full), body)
            .await
    }

    /// A request with the `listen` key.
    pub async fn listen(&self, method: &str, path: &str, body: &[u8]) -> Answer {
        self.call(method, path, std::slice::from_ref(&self.listen), body)
            .await
    }

    /// The status of `GET /installations/{id}` with the `full` key.
    pub async fn get_status(&self, id: &str) -> u16 {
        self.full("GET", &inst_path(id), b"").await.status
    }

    /// Writes installation `id` (APNs device `i`, `tags`) with the `full` key; panics unless 200.
    pub async fn put_apns(&self, id: &str, i: u64, tags: &[&str]) {
        let a = self
            .full("PUT", &inst_path(id), apns_inst(id, i, tags).as_bytes())
            .await;
        assert_eq!(a.status, 200, "PUT {id}: {a:?}");
    }

    pub fn apns(&self) -> &MockApns {
        self.bed.apns()
    }
}

/// The headers of an APNs send to `tags` (none: broadcast) with the `full` key.
pub fn apns_send_headers(
    full: &(&'static str, String),
    tags: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        full.clone(),
        ("ServiceBusNotification-Format", "apple".to_owned()),
        ("Content-Type", "application/json;charset=utf-8".to_owned()),
        ("apns-priority", "10".to_owned()),
    ];
    if let Some(t) = tags {
        h.push(("ServiceBusNotification-Tags", t.to_owned()));
    }
    h
}

/// A small APNs alert body.
pub const ALERT: &[u8] = br#"{"aps":{"alert":"hardening"}}"#;

/// An Apple registration's Atom entry (`PUT /registrations/{id}`) for device `i` with `tags`
/// (comma-separated).
pub fn apple_registration(i: u64, tags: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><entry xmlns=\"http://www.w3.org/2005/Atom\">\
         <content type=\"application/xml\"><AppleRegistrationDescription xmlns=\"{NH_NAMESPACE}\" \
         xmlns:i=\"{XSI_NAMESPACE}\"><Tags>{tags}</Tags><DeviceToken>{}</DeviceToken>\
         </AppleRegistrationDescription></content></entry>",
        apns_token(i).to_ascii_uppercase()
    )
}

/// What the JS SDK sends to `submitNotificationHubJob` (nh-rest-api.md §4.7 [TEST]).
pub fn job_body(ty: &str, out: &str, input: Option<&str>) -> String {
    let imp = input
        .map(|i| format!("<ImportFileUri><![CDATA[{i}]]></ImportFileUri>"))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><entry xmlns=\"http://www.w3.org/2005/Atom\">\
         <updated>2024-01-01T00:00:00.000Z</updated><content type=\"application/xml\">\
         <NotificationHubJob xmlns=\"{NH_NAMESPACE}\" xmlns:i=\"{XSI_NAMESPACE}\"><Type>{ty}</Type>\
         <OutputContainerUri><![CDATA[{out}]]></OutputContainerUri>{imp}</NotificationHubJob></content></entry>"
    )
}
