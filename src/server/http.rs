//! Requests: routing, SAS, and one handler per Notification Hubs operation
//! (nh-rest-api.md §4). Status codes are the ones the official SDK accepts.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::conn::Surface;
use super::devices::{Devices, WriteFail};
use super::{Backend, Hub, MetricsAccess, Shared};
use crate::nh;
use crate::nh::sas::Rights;
use crate::payload::Notification;
use crate::template::Properties;
use crate::{
    Audience, Content, ExprLimits, InstallationId, NotificationId, Precondition, PushHandle,
    RegistryError, SendError, SendRequest, TagExpr, TemplateSend, Version,
};

pub(crate) type Resp = Response<Full<Bytes>>;

/// A failed request: status, the detail for NH's `<Error>` body, and for 429 and 503 when
/// to come back.
#[derive(Debug)]
pub(crate) struct Fail {
    status: StatusCode,
    detail: String,
    retry_after: Option<u64>,
    /// `Allow` on a 405.
    allow: Option<&'static str>,
}

impl Fail {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Fail {
        Fail {
            status,
            detail: detail.into(),
            retry_after: None,
            allow: None,
        }
    }
    /// With `Retry-After: secs`.
    pub(crate) fn retry_after(mut self, secs: u64) -> Fail {
        self.retry_after = Some(secs);
        self
    }
    /// 405 with `Allow: allow`: the path names an operation, but not with this method.
    pub(crate) fn method_not_allowed(method: &Method, allow: &'static str) -> Fail {
        let mut f = Fail::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not an operation on this path; it allows {allow}"),
        );
        f.allow = Some(allow);
        f
    }
    pub(crate) fn bad(detail: impl Into<String>) -> Fail {
        Fail::new(StatusCode::BAD_REQUEST, detail)
    }
    pub(crate) fn not_found(detail: impl Into<String>) -> Fail {
        Fail::new(StatusCode::NOT_FOUND, detail)
    }
    /// The detail the `<Error>` body carries.
    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }
}

/// A parse error as a 400.
fn bad<E: std::fmt::Display>(e: E) -> Fail {
    Fail::bad(e.to_string())
}

fn right_name(r: Rights) -> &'static str {
    if r == Rights::MANAGE {
        "Manage"
    } else if r == Rights::SEND {
        "Send"
    } else {
        "Listen"
    }
}

impl From<RegistryError> for Fail {
    fn from(e: RegistryError) -> Fail {
        match e {
            RegistryError::NotFound(_) => Fail::not_found(e.to_string()),
            RegistryError::VersionMismatch { current: None, .. } => {
                Fail::not_found("Installation not found.")
            }
            RegistryError::VersionMismatch { .. } => Fail::new(
                StatusCode::PRECONDITION_FAILED,
                "the installation changed since it was read (ETag mismatch)",
            ),
            RegistryError::QuotaExceeded { max } => Fail::new(
                StatusCode::FORBIDDEN,
                format!("QuotaExceeded: the hub holds its maximum of {max} installations"),
            ),
            RegistryError::StorageFailed { .. } => {
                tracing::error!(error = %e, "write refused: the hub's storage failed");
                Fail::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the hub's storage failed; writes are refused until the server restarts",
                )
                .retry_after(30)
            }
            RegistryError::Store(_) => Fail::internal(e),
            // Everything else is about the request: bad values, too many tags, a WNS host
            // outside the allowlist, a handle moving platforms.
            _ => Fail::bad(e.to_string()),
        }
    }
}

impl From<SendError> for Fail {
    fn from(e: SendError) -> Fail {
        match e {
            SendError::ShutDown => Fail::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            SendError::State(_) | SendError::NoRegistry => Fail::internal(e),
            SendError::TooManySchedules { max } => Fail::new(
                StatusCode::FORBIDDEN,
                format!(
                    "QuotaExceeded: the hub has its maximum of {max} pending scheduled \
                     notifications ([hub.limits] max_pending_schedules)"
                ),
            ),
            _ => Fail::bad(e.to_string()),
        }
    }
}

impl Fail {
    /// A server-side failure: logged with its cause; the client gets a generic detail and
    /// the tracking id to quote.
    pub(crate) fn internal(e: impl std::fmt::Display) -> Fail {
        tracing::error!(error = %e, "request failed on the server side");
        Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server could not complete the request; it has been logged.",
        )
    }
}

/// What one request carries through the handlers: its deadline, its tracking id, and who
/// made it (for the access log).
pub(crate) struct Ctx {
    pub(crate) deadline: Instant,
    pub(crate) body_deadline: Instant,
    pub(crate) tracking_id: String,
    pub(crate) hub: Option<String>,
    pub(crate) key: Option<String>,
}

impl Ctx {
    /// Time left before the whole-request deadline.
    pub(crate) fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

fn error_response(f: Fail, tracking_id: &str) -> Resp {
    let body = nh::error_xml::error_body_tracked(
        f.status.as_u16(),
        &f.detail,
        tracking_id,
        SystemTime::now(),
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = f.status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    if let Some(secs) = f.retry_after {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(allow) = f.allow {
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

pub(crate) fn response(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: impl Into<Bytes>,
) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

pub(crate) fn empty(status: StatusCode) -> Resp {
    response(status, None, Bytes::new())
}

/// Percent-decodes a path segment or query value (`+` kept: paths do not use it for spaces).
pub(crate) fn percent_decode(s: &str) -> Result<String, Fail> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Fail::bad(format!("bad percent-encoding in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Fail::bad(format!("{s:?} is not UTF-8 once decoded")))
}

/// Query parameters, names and values decoded (`+` is a space in values).
fn query(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |x: &str| percent_decode(&x.replace('+', " ")).unwrap_or_else(|_| x.into());
            (dec(k), dec(v))
        })
        .collect()
}

/// A boolean query flag (`test`, `direct`): absent or `false` is off; present with no value
/// or `true` is on; anything else is refused.
fn flag(q: &[(String, String)], name: &str) -> Result<bool, Fail> {
    let mut on = false;
    for (k, v) in q.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)) {
        on = match v.to_ascii_lowercase().as_str() {
            "" | "true" => true,
            "false" => false,
            _ => {
                return Err(Fail::bad(format!(
                    "query parameter {k}={v:?}: expected true or false"
                )))
            }
        };
    }
    Ok(on)
}

/// The API versions of Notification Hubs' REST API this server speaks (nh-rest-api.md §3.1;
/// the SDKs send 2020-06, recorded traffic also 2017-04 and older).
const API_VERSIONS: [&str; 8] = [
    "2013-04", "2013-08", "2014-09", "2015-01", "2015-04", "2016-07", "2017-04", "2020-06",
];

fn check_api_version(q: &[(String, String)]) -> Result<(), Fail> {
    let Some((_, v)) = q
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
    else {
        return Err(Fail::bad(
            "the api-version query parameter is required (e.g. api-version=2020-06)",
        ));
    };
    if API_VERSIONS.contains(&v.as_str()) {
        Ok(())
    } else {
        Err(Fail::bad(format!(
            "api-version {:?} is not supported; use one of {}",
            crate::pns::shorten(v, 32),
            API_VERSIONS.join(", ")
        )))
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The origin clients reach us at: the configured public URL, or scheme + `Host` (HTTP/1.1)
/// or `:authority` (HTTP/2).
fn origin(shared: &Shared, uri: &http::Uri, headers: &HeaderMap) -> String {
    if let Some(u) = &shared.config.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = header(headers, "host")
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| shared.config.listen.to_string());
    let scheme = if shared.tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// The method as a metrics label: a fixed set, never the client's text.
fn method_label(m: &Method) -> Option<&'static str> {
    Some(match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => return None,
    })
}

/// The route as a metrics and log label: a fixed set, never the raw path.
pub(crate) fn route_label(path: &str) -> &'static str {
    let mut segs = path.trim_start_matches('/').split('/');
    let first = segs.next().unwrap_or("");
    match first {
        "healthz" => return "healthz",
        "readyz" => return "readyz",
        "metrics" => return "metrics",
        "" => return "other",
        _ => {}
    }
    let op = segs.next().unwrap_or("");
    let sub = segs.next();
    const OPS: [&str; 8] = [
        "installations",
        "messages",
        "schedulednotifications",
        "registrations",
        "registrationIDs",
        "tags",
        "jobs",
        "feedbackcontainer",
    ];
    match (OPS.iter().find(|o| o.eq_ignore_ascii_case(op)), sub) {
        (Some(&"messages"), Some("$batch")) => "messages/$batch",
        (Some(&"tags"), _) => "tags/registrations",
        (Some(o), _) => o,
        (None, _) => "other",
    }
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    surface: Surface,
) -> Resp {
    let started = Instant::now();
    let route = route_label(req.uri().path());
    let path_object = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .nth(2)
        .filter(|s| !s.is_empty())
        .map(|s| crate::pns::shorten(s, 128));
    let method = method_label(req.method());
    let mut ctx = Ctx {
        deadline: started + Duration::from_secs(shared.config.request_timeout_secs),
        body_deadline: started + Duration::from_secs(shared.config.body_read_timeout_secs),
        tracking_id: uuid::Uuid::new_v4().to_string(),
        hub: None,
        key: None,
    };
    let result = match (method, surface) {
        // Unknown methods: answered before anything else looks at the request.
        (None, _) => Err(Fail::new(
            StatusCode::NOT_IMPLEMENTED,
            "this method is not implemented",
        )),
        (Some(_), Surface::MetricsOnly) => metrics_only(&shared, &req),
        (Some(_), Surface::Api) => self::route(&shared, req, &mut ctx).await,
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(f) => error_response(f, &ctx.tracking_id),
    };
    if let Ok(v) = HeaderValue::from_str(&ctx.tracking_id) {
        resp.headers_mut().insert("trackingid", v.clone());
        resp.headers_mut().insert("x-ms-correlation-request-id", v);
    }
    let status = resp.status().as_u16();
    let method = method.unwrap_or("other");
    metrics::counter!(
        "tagcast_http_requests_total",
        "method" => method,
        "route" => route,
        "status" => status_label(status)
    )
    .increment(1);
    let elapsed = started.elapsed();
    metrics::histogram!("tagcast_http_request_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    // The object of a change: in the path, or for a new send or schedule its Location.
    let object = path_object.or_else(|| {
        let loc = resp.headers().get(http::header::LOCATION)?.to_str().ok()?;
        let path = loc.split('?').next()?;
        Some(crate::pns::shorten(path.rsplit('/').next()?, 128))
    });
    super::log::access(&super::log::Access {
        peer,
        method,
        route,
        status,
        elapsed,
        hub: ctx.hub.as_deref(),
        key: ctx.key.as_deref(),
        tracking_id: &ctx.tracking_id,
        object: object.as_deref(),
    });
    resp
}

/// A status code as a metrics label (statuses come from this server, so the set is fixed).
fn status_label(s: u16) -> &'static str {
    match s {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        412 => "412",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        501 => "501",
        503 => "503",
        _ if s < 300 => "2xx",
        _ if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// `metrics_listen`: `GET /metrics`, nothing else.
fn metrics_only(shared: &Shared, req: &Request<Incoming>) -> Result<Resp, Fail> {
    if req.method() == Method::GET && req.uri().path() == "/metrics" {
        Ok(metrics_page(shared))
    } else {
        Err(Fail::not_found("this listener serves /metrics only"))
    }
}

fn metrics_page(shared: &Shared) -> Resp {
    let text = shared
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    response(StatusCode::OK, Some("text/plain; version=0.0.4"), text)
}

/// `/metrics` on the API listener, as `MetricsAccess` allows.
fn metrics_on_api(shared: &Shared, headers: &HeaderMap) -> Result<Resp, Fail> {
    match &shared.metrics_access {
        MetricsAccess::Open => Ok(metrics_page(shared)),
        MetricsAccess::Token(t) => {
            let given = single_authorization(headers)?
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // Constant time in the token's content.
            let same = given.len() == t.len()
                && given
                    .bytes()
                    .zip(t.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if same {
                Ok(metrics_page(shared))
            } else {
                Err(Fail::new(
                    StatusCode::UNAUTHORIZED,
                    "/metrics needs Authorization: Bearer <metrics token>",
                ))
            }
        }
        MetricsAccess::Closed => Err(Fail::not_found("no operation at this path")),
    }
}

/// The one `Authorization` header, if any; two or more are refused (a proxy and this server
/// could disagree about which one counts).
fn single_authorization(headers: &HeaderMap) -> Result<Option<&str>, Fail> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(Fail::new(
            StatusCode::UNAUTHORIZED,
            "more than one Authorization header",
        ));
    }
    match first {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            Fail::new(
                StatusCode::UNAUTHORIZED,
                "the Authorization header is not visible ASCII",
            )
        }),
    }
}

async fn body(
    shared: &Shared,
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<(http::request::Parts, Bytes), Fail> {
    let (parts, body) = req.into_parts();
    let max = shared.config.max_body;
    if let Some(len) =
        header(&parts.headers, "content-length").and_then(|v| v.parse::<usize>().ok())
    {
        if len > max {
            return Err(Fail::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is {len} bytes; at most {max} are accepted"),
            ));
        }
    }
    if let Some(enc) = header(&parts.headers, "content-encoding") {
        if !enc.trim().eq_ignore_ascii_case("identity") {
            return Err(Fail::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding {:?} is not supported: send the body uncompressed",
                    crate::pns::shorten(enc, 32)
                ),
            ));
        }
    }
    let deadline = ctx.body_deadline.min(ctx.deadline);
    let read = Limited::new(body, max).collect();
    let bytes = match tokio::time::timeout_at(deadline.into(), read).await {
        Err(_) => {
            return Err(Fail::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    shared.config.body_read_timeout_secs
                ),
            ))
        }
        Ok(r) => r.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Fail::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is over {max} bytes"),
                )
            } else {
                Fail::bad(format!("reading the request body: {e}"))
            }
        })?,
    };
    // A body that came in one DATA frame is a slice of the connection's read buffer, and a
    // `Bytes` slice keeps that whole buffer block alive (h2 reads many frames into one block).
    // A send's payload lives on in the history of recent sends, so without the copy each send
    // pinned a block full of other requests' bytes (docs/benchmarks.md, "Server soak"). Bodies
    // are at most `max_body`; the copy is small beside parsing them.
    Ok((parts, Bytes::copy_from_slice(&bytes.to_bytes())))
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>, ctx: &mut Ctx) -> Result<Resp, Fail> {
    let path = req.uri().path().to_owned();
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), raw.as_slice()) {
        (&Method::GET, ["healthz"]) => {
            return Ok(response(StatusCode::OK, Some("text/plain"), "ok\n"))
        }
        (&Method::GET, ["readyz"]) => return Ok(readiness(shared)),
        (&Method::GET, ["metrics"]) => return metrics_on_api(shared, req.headers()),
        _ => {}
    }
    let segs: Vec<String> = raw
        .iter()
        .map(|s| percent_decode(s))
        .collect::<Result<_, _>>()?;
    let Some(hub_name) = segs.first().filter(|s| !s.is_empty()) else {
        return Err(Fail::not_found("no hub in the path"));
    };
    // An unknown hub answers like a bad token: whether a hub exists is not for anyone to probe.
    let Some(hub) = shared.hubs.get(&hub_name.to_ascii_lowercase()).cloned() else {
        tracing::info!(hub = %crate::pns::shorten(hub_name, 64), "request for an unknown hub");
        return Err(Fail::new(StatusCode::UNAUTHORIZED, INVALID_TOKEN));
    };
    ctx.hub = Some(hub.name.clone());
    // The operation path after the hub; a trailing empty segment (`/messages/`) is dropped.
    let mut op: Vec<&str> = segs[1..].iter().map(String::as_str).collect();
    if op.last() == Some(&"") {
        op.pop();
    }
    let origin = origin(shared, req.uri(), req.headers());
    let (granted, key) = authorize(shared, &hub, &origin, req.headers())?;
    let limited = hub.quotas.take(&key, Instant::now());
    ctx.key = Some(key);
    limited.map_err(|secs| {
        Fail::new(
            StatusCode::TOO_MANY_REQUESTS,
            "this key is over its request rate ([hub.limits] requests_per_second); retry later",
        )
        .retry_after(secs)
    })?;
    let q = query(req.uri());
    check_api_version(&q)?;
    let need = |r: Rights| -> Result<(), Fail> {
        if granted.allows(r) {
            Ok(())
        } else {
            Err(Fail::new(
                StatusCode::FORBIDDEN,
                format!("this key does not have the {} right", right_name(r)),
            ))
        }
    };
    let method = req.method().clone();
    let ctx: &Ctx = ctx;
    match (&method, op.as_slice()) {
        (&Method::PUT, ["installations", id]) => {
            need(Rights::LISTEN)?;
            let id = installation_id(id)?;
            let pre = super::devices::if_match(req.headers())?;
            let (_, b) = body(shared, ctx, req).await?;
            put_installation(&hub, id, &b, pre).await
        }
        (&Method::PATCH, ["installations", id]) => {
            need(Rights::LISTEN)?;
            let id = installation_id(id)?;
            let pre = super::devices::if_match(req.headers())?;
            let (_, b) = body(shared, ctx, req).await?;
            patch_installation(&hub, id, &b, pre).await
        }
        (&Method::GET, ["installations", id]) => {
            // One read policy with registrations: Listen reads an installation, without its
            // Web Push secrets; Manage reads everything.
            need(Rights::LISTEN)?;
            get_installation(&hub, id, granted.allows(Rights::MANAGE)).await
        }
        (&Method::DELETE, ["installations", id]) => {
            need(Rights::LISTEN)?;
            let id = installation_id(id)?;
            let pre = super::devices::if_match(req.headers())?;
            // Acknowledged = durable, without holding a thread through the commit wait.
            // Without If-Match, deleting an absent installation is a 204 as well.
            Devices::of(&hub).delete_if(&id, pre).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["messages"]) => {
            need(Rights::SEND)?;
            let (parts, b) = body(shared, ctx, req).await?;
            send(&hub, ctx, &origin, &parts.headers, &q, b, false).await
        }
        (&Method::POST, ["messages", "$batch"]) => {
            need(Rights::SEND)?;
            let (parts, b) = body(shared, ctx, req).await?;
            direct_batch(&hub, &origin, &parts.headers, b).await
        }
        (&Method::GET, ["messages", id]) => {
            need(Rights::MANAGE)?;
            if hub.cluster().is_some() {
                return cluster_outcome(&hub, &origin, id).await;
            }
            outcome(&hub, &origin, id)
        }
        (&Method::POST, ["schedulednotifications"]) => {
            need(Rights::SEND)?;
            let (parts, b) = body(shared, ctx, req).await?;
            send(&hub, ctx, &origin, &parts.headers, &q, b, true).await
        }
        (&Method::DELETE, ["schedulednotifications", id]) => {
            need(Rights::SEND)?;
            let id: NotificationId = id
                .parse()
                .map_err(|_| Fail::not_found(format!("no scheduled notification {id:?}")))?;
            if let Some(c) = hub.cluster() {
                // A tombstone in NOTIFY: whether the id was ever scheduled is not known
                // here, so 200 says the cancel is recorded (docs/operations.md).
                c.cancel(id).await?;
                return Ok(empty(StatusCode::OK));
            }
            if hub.engine.cancel_scheduled_async(id).await? {
                Ok(empty(StatusCode::OK))
            } else {
                Err(Fail::not_found(format!(
                    "no pending scheduled notification {id}"
                )))
            }
        }
        (_, ["jobs", ..]) => {
            // Import/export jobs (jobs.rs): Manage only, checked before the body is read.
            need(Rights::MANAGE)?;
            if let Some(allow) = allowed_methods(&op) {
                if !allow.split(", ").any(|m| m == method.as_str()) {
                    return Err(Fail::method_not_allowed(&method, allow));
                }
            }
            let (_, b) = body(shared, ctx, req).await?;
            super::jobs::route(&hub, &origin, &method, &op, ctx.key.as_deref(), b).await
        }
        _ => {
            let op: Vec<String> = op.iter().map(|s| s.to_string()).collect();
            let op: Vec<&str> = op.iter().map(String::as_str).collect();
            // A known path with another method: 405 naming the methods it takes, before any
            // body is read.
            if let Some(allow) = allowed_methods(&op) {
                if !allow.split(", ").any(|m| m == method.as_str()) {
                    return Err(Fail::method_not_allowed(&method, allow));
                }
            }
            // The right before the body: a key without it never makes the server buffer one.
            need(super::registrations::right_needed(&method, &op, &q))?;
            let (parts, b) = body(shared, ctx, req).await?;
            super::registrations::route(
                shared,
                &hub,
                &origin,
                &need,
                &method,
                &op,
                &q,
                &parts.headers,
                b,
            )
            .await
        }
    }
}

/// The methods a hub path takes (its `Allow` header), or `None` for a path that names no
/// operation (404).
pub(crate) fn allowed_methods(op: &[&str]) -> Option<&'static str> {
    Some(match op {
        ["installations", _] => "GET, PUT, PATCH, DELETE",
        ["messages"] | ["messages", "$batch"] | ["schedulednotifications"] => "POST",
        ["messages", _] => "GET",
        ["schedulednotifications", _] => "DELETE",
        [ids] if ids.eq_ignore_ascii_case("registrationIDs") => "POST",
        ["registrations"] => "GET, POST",
        ["registrations", _] => "GET, PUT, DELETE",
        ["tags", _, "registrations"] => "GET",
        ["jobs"] => "GET, POST",
        ["jobs", _] => "GET",
        _ => return None,
    })
}

/// The 401 detail for every token problem but a missing or expired one: which check failed
/// (unknown key name, signature, audience, hub) goes to the log, not to the client.
const INVALID_TOKEN: &str =
    "InvalidSignature: the SharedAccessSignature is not valid for this hub.";

/// Checks the request's token against the hub's keys and the origins a token may name.
/// Returns the rights and the key's name.
fn authorize(
    shared: &Shared,
    hub: &Hub,
    origin: &str,
    headers: &HeaderMap,
) -> Result<(Rights, String), Fail> {
    let unauthorized = |m: &str| Fail::new(StatusCode::UNAUTHORIZED, m);
    let token = single_authorization(headers)?.ok_or_else(|| {
        unauthorized(
            "MissingToken: an Authorization header with a SharedAccessSignature is required.",
        )
    })?;
    let bases: Vec<String> = if shared.audience_origins.is_empty() {
        vec![format!("{origin}/{}", hub.name)]
    } else {
        shared
            .audience_origins
            .iter()
            .map(|o| format!("{o}/{}", hub.name))
            .collect()
    };
    let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
    match hub.tokens.verify(
        token,
        &hub.keys,
        &bases,
        SystemTime::now(),
        nh::sas::DEFAULT_CLOCK_SKEW,
        shared
            .config
            .max_token_lifetime_secs
            .map(Duration::from_secs),
    ) {
        Ok(k) => Ok((k.rights, k.name.clone())),
        Err(e) => {
            tracing::info!(hub = %hub.name, reason = %e, "token refused");
            Err(match e {
                nh::sas::SasError::Expired { .. } => {
                    unauthorized("ExpiredToken: the SharedAccessSignature has expired.")
                }
                _ => unauthorized(INVALID_TOKEN),
            })
        }
    }
}

/// `/readyz`: 503 while shutting down or when a hub's storage failed.
fn readiness(shared: &Shared) -> Resp {
    if !shared.ready.load(Ordering::SeqCst) {
        return response(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("text/plain"),
            "shutting down\n",
        );
    }
    let mut joining: Vec<&str> = shared
        .hubs
        .values()
        .filter(|h| h.cluster().is_some_and(|c| !c.joined()))
        .map(|h| h.name.as_str())
        .collect();
    if !joining.is_empty() {
        joining.sort_unstable();
        return response(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("text/plain"),
            format!("joining the cluster: {}\n", joining.join(", ")),
        );
    }
    let mut broken: Vec<&str> = shared
        .hubs
        .values()
        .filter(|h| match &h.backend {
            Backend::Single(r) => r.storage_failure().is_some(),
            Backend::Cluster(_) => false,
        })
        .map(|h| h.name.as_str())
        .collect();
    if !broken.is_empty() {
        broken.sort_unstable();
        return response(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("text/plain"),
            format!("storage failed: {}\n", broken.join(", ")),
        );
    }
    response(StatusCode::OK, Some("text/plain"), "ready\n")
}

fn installation_id(id: &str) -> Result<InstallationId, Fail> {
    InstallationId::new(id).map_err(|e| Fail::bad(e.to_string()))
}

/// `PUT /installations/{id}`: created or replaced, durably; with `If-Match`, only if the
/// installation is at that version (`*`: exists), checked with the write (412 otherwise).
async fn put_installation(
    hub: &Hub,
    id: InstallationId,
    b: &[u8],
    pre: Precondition,
) -> Result<Resp, Fail> {
    let inst = nh::installation_json::parse_installation(b, Some(&id)).map_err(bad)?;
    check_template_topics(hub, &inst)?;
    // Acknowledged = durable: waits for the group commit (or the owner's JetStream ack)
    // without holding a thread.
    Devices::of(hub).upsert_if(inst, pre).await?;
    Ok(empty(StatusCode::OK))
}

/// How often a PATCH is parsed again against a newer version when a concurrent write got in
/// between its read and its write.
const PATCH_ATTEMPTS: usize = 8;

/// `PATCH /installations/{id}`: the operations are parsed against the version read and
/// applied to exactly that version, so a concurrent PUT is never overwritten and a
/// concurrent DELETE never undone; a concurrent write makes it read and parse again. With
/// `If-Match: "<version>"` it applies to that version only (412 when it moved on).
async fn patch_installation(
    hub: &Hub,
    id: InstallationId,
    b: &[u8],
    pre: Precondition,
) -> Result<Resp, Fail> {
    let devices = Devices::of(hub);
    for _ in 0..PATCH_ATTEMPTS {
        let (current, version) = devices
            .get_versioned(&id)
            .await?
            .ok_or_else(|| Fail::not_found("Installation not found."))?;
        if let Precondition::Version(want) = pre {
            if version != Some(want) {
                // An owner of an older version reports none: the ETag cannot match (412).
                return Err(WriteFail::Precondition(version.or(Some(Version::from(0)))).into());
            }
        }
        let ops = nh::installation_json::parse_patch(b, &current).map_err(bad)?;
        for op in &ops {
            if let crate::PatchOp::AddTemplate(_, t) = op {
                check_topic(hub, t.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            }
        }
        let Some(version) = version else {
            // A cluster owner of an older version, which reports no versions: the operations
            // apply to its current state (a rolling upgrade's window, docs/operations.md).
            let Some(c) = hub.cluster() else {
                return Err(Fail::internal("a local installation without a version"));
            };
            c.patch(&id, &ops).await?;
            return Ok(empty(StatusCode::OK));
        };
        match devices.patch_at(&id, &ops, version).await {
            Ok(()) => return Ok(empty(StatusCode::OK)),
            // A write in between: read and parse again, unless the client named a version.
            Err(WriteFail::Precondition(Some(_)))
                if matches!(pre, Precondition::Any | Precondition::Exists) =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Fail::new(
        StatusCode::CONFLICT,
        "the installation kept changing while this patch was applied; retry",
    ))
}

/// `GET /installations/{id}`, with its version as a weak `ETag`.
async fn get_installation(hub: &Hub, id: &str, push_secrets: bool) -> Result<Resp, Fail> {
    let id = installation_id(id)?;
    let (inst, version) = Devices::of(hub)
        .get_versioned(&id)
        .await?
        .ok_or_else(|| Fail::not_found("Installation not found."))?;
    let mut r = response(
        StatusCode::OK,
        Some("application/json; charset=utf-8"),
        nh::installation_json::installation_to_json_for(&inst, push_secrets),
    );
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(&format!("W/\"{v}\"")).ok()) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    Ok(r)
}

fn location(origin: &str, hub: &Hub, kind: &str, id: NotificationId) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{origin}/{}/{kind}/{id}?api-version=2020-06",
        hub.name
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("https://invalid/"))
}

fn created(origin: &str, hub: &Hub, kind: &str, id: NotificationId) -> Resp {
    let mut r = empty(StatusCode::CREATED);
    r.headers_mut()
        .insert(http::header::LOCATION, location(origin, hub, kind, id));
    r
}

/// The audience of a send: `ServiceBusNotification-Tags` (absent, or the SDK's `undefined`
/// on a test send: broadcast).
fn audience(headers: &HeaderMap, test_send: bool) -> Result<Audience, Fail> {
    let tags = header(headers, "servicebusnotification-tags");
    match nh::headers::tag_selector(tags, test_send).map_err(bad)? {
        nh::headers::TagSelector::Broadcast => Ok(Audience::All),
        nh::headers::TagSelector::Expression(expr) => {
            TagExpr::parse_with(expr, &ExprLimits::notification_hubs())
                .map(Audience::Expr)
                .map_err(|e| Fail::bad(format!("ServiceBusNotification-Tags: {e}")))
        }
    }
}

/// `apns-topic` may only name the hub's app: its bundle id, or the bundle id with a push
/// type's suffix (`.voip`, `.push-type.liveactivity`, ...). A team's `.p8` key can push to
/// every app of the team, so a free topic would let a Send key (or a Listen key, through
/// template headers) reach other apps' devices (audit M12).
pub(crate) fn check_topic<'a>(
    hub: &Hub,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), Fail> {
    for (name, topic) in headers {
        if !name.eq_ignore_ascii_case("apns-topic") {
            continue;
        }
        let topic = topic.trim();
        let fits = hub.apns_bundle_id.as_deref().is_some_and(|b| {
            topic.strip_prefix(b).is_some_and(|rest| {
                rest.is_empty()
                    || crate::ApnsPushType::ALL
                        .iter()
                        .any(|t| t.topic_suffix() == rest)
            })
        });
        if !fits {
            return Err(Fail::bad(format!(
                "apns-topic {:?} is not this hub's app: use its bundle id ({}), with a push \
                 type's suffix where one applies (e.g. .voip)",
                crate::pns::shorten(topic, 100),
                hub.apns_bundle_id
                    .as_deref()
                    .unwrap_or("no APNs credentials configured")
            )));
        }
    }
    Ok(())
}

/// The `apns-topic` template headers of an installation, checked like a send's.
pub(crate) fn check_template_topics(hub: &Hub, inst: &crate::Installation) -> Result<(), Fail> {
    for t in inst.templates.values() {
        check_topic(hub, t.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    }
    Ok(())
}

/// The request headers that travel to the push service for `format`.
fn passthrough(headers: &HeaderMap, format: nh::headers::Format) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| {
            nh::headers::header_role(format, n.as_str()) == nh::headers::HeaderRole::PassThrough
        })
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

fn format_of(headers: &HeaderMap) -> Result<nh::headers::Format, Fail> {
    let f = header(headers, "servicebusnotification-format")
        .ok_or_else(|| Fail::bad("missing ServiceBusNotification-Format"))?;
    nh::headers::Format::parse(f).map_err(bad)
}

/// What a send carries: a native payload or template properties.
fn payload(hub: &Hub, headers: &HeaderMap, body: Bytes) -> Result<Content, Fail> {
    let format = format_of(headers)?;
    match format.platform() {
        None => {
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| Fail::bad(format!("template properties: {e}")))?;
            let props = Properties::try_from(&v).map_err(|e| Fail::bad(e.to_string()))?;
            Ok(Content::Template(TemplateSend::new(props)))
        }
        Some(p) => {
            let pass = passthrough(headers, format);
            check_topic(hub, pass.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            let n = Notification::from_native(p, body, &pass).map_err(bad)?;
            Ok(Content::Native(n))
        }
    }
}

async fn send(
    hub: &Hub,
    ctx: &Ctx,
    origin: &str,
    headers: &HeaderMap,
    q: &[(String, String)],
    body: Bytes,
    scheduled: bool,
) -> Result<Resp, Fail> {
    let direct = flag(q, "direct")?;
    let test = flag(q, "test")?;
    if scheduled && (direct || test) {
        return Err(Fail::bad(
            "a scheduled notification cannot be direct or a test send (Notification Hubs has \
             no such operation); send it now with /messages instead",
        ));
    }
    if direct && test {
        return Err(Fail::bad("a direct send cannot be a test send"));
    }
    let payload = payload(hub, headers, body)?;
    if direct {
        let handle = direct_handle(headers)?;
        let Content::Native(n) = payload else {
            return Err(Fail::bad(
                "a direct send needs a native format, not template",
            ));
        };
        let slot = send_slot(hub)?;
        let h = hub.engine.send_to_handles(n, vec![handle])?;
        return Ok(accepted(origin, hub, h, slot).await);
    }
    let audience = audience(headers, test)?;
    if let Some(c) = hub.cluster() {
        return cluster_send(
            hub, c, ctx, origin, headers, payload, audience, test, scheduled,
        )
        .await;
    }
    let request = match payload {
        Content::Native(n) => SendRequest::native(n, audience),
        Content::Template(t) => SendRequest::template(t, audience),
    };
    if scheduled {
        let at = header(headers, "servicebusnotification-scheduletime")
            .ok_or_else(|| Fail::bad("missing ServiceBusNotification-ScheduleTime"))?;
        let at = nh::headers::schedule_time(at).map_err(bad)?;
        // The durable write runs off the async threads; a schedule is never refused after it
        // was persisted (the engine takes it back first).
        let id = hub.engine.schedule_async(request, at).await?;
        return Ok(created(origin, hub, "schedulednotifications", id));
    }
    let slot = send_slot(hub)?;
    if test {
        let r = test_send(hub, ctx, request).await;
        drop(slot);
        return r;
    }
    let h = hub.engine.submit(request)?;
    Ok(accepted(origin, hub, h, slot).await)
}

/// A slot among the hub's `max_sends_in_flight`, or 429.
fn send_slot(hub: &Hub) -> Result<tokio::sync::OwnedSemaphorePermit, Fail> {
    hub.quotas.send_slot().ok_or_else(|| {
        Fail::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the hub has {} sends in progress ([hub.limits] max_sends_in_flight); retry \
                 when one finishes",
                hub.quotas.max_sends()
            ),
        )
        .retry_after(1)
    })
}

/// 201 for an accepted send, once its outcome record is durable (a crash after the answer
/// leaves it readable, `Abandoned` at worst); its slot is held until the send finishes. The
/// send runs already: if the disk fails now the answer is still 201 (never a 5xx for an
/// accepted send, which the SDK would retry into a duplicate) and the failure is logged.
async fn accepted(
    origin: &str,
    hub: &Hub,
    h: crate::SendHandle,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Resp {
    // The slot first: a client that goes away during the flush must not free it while the
    // send runs on.
    h.hold_until_done(slot);
    if let Err(e) = hub.engine.sync_state().await {
        tracing::error!(hub = %hub.name, id = %h.id(), error = %e, "a send's outcome record could not be made durable");
    }
    created(origin, hub, "messages", h.id())
}

/// A test send (`?test=true`): sent now and answered with the outcome per device, at most 10
/// devices as Notification Hubs does.
/// Devices a test send reaches at most (Notification Hubs' limit).
const TEST_SEND_MAX: usize = 10;

async fn test_send(hub: &Hub, ctx: &Ctx, request: SendRequest) -> Result<Resp, Fail> {
    // Resolving an audience is CPU work over the whole registry: off the async threads.
    let (registry, audience) = (
        hub.registry("a test send")?.clone(),
        request.audience().clone(),
    );
    let targets: Vec<crate::Target> = tokio::task::spawn_blocking(move || {
        registry
            .resolve(&audience)
            .batches(TEST_SEND_MAX)
            .next()
            .unwrap_or_default()
    })
    .await
    .map_err(Fail::internal)?;
    let mut sends = Vec::new();
    for t in targets.into_iter().take(TEST_SEND_MAX) {
        let one = SendRequest {
            audience: Audience::Installation(t.installation_id.clone()),
            ..request.clone()
        };
        sends.push((hub.engine.submit(one)?, t));
    }
    Ok(test_outcome(ctx, sends).await)
}

/// The `NotificationOutcome` of a test send: a row per device, each from its own send's
/// report, waited for together up to one deadline (once a device's send is accepted its row
/// is answered, finished or not).
async fn test_outcome(ctx: &Ctx, sends: Vec<(crate::SendHandle, crate::Target)>) -> Resp {
    /// Longest a test send waits for its devices' answers (Notification Hubs' own bound).
    const WAIT: Duration = Duration::from_secs(30);
    let deadline = tokio::time::Instant::now() + WAIT.min(ctx.left());
    let waits = sends.iter().map(|(h, _)| async move {
        tokio::time::timeout_at(deadline, h.wait())
            .await
            .unwrap_or_else(|_| h.progress())
    });
    let reports = futures_util::future::join_all(waits).await;
    let results = sends
        .iter()
        .zip(reports)
        .map(|((_, t), r)| {
            let platform = t.handle.platform();
            let c = r.platform(platform);
            let outcome = if c.delivered > 0 {
                "Success".to_owned()
            } else {
                r.reasons
                    .keys()
                    .next()
                    .map(|(_, why)| nh::notification_xml::outcome_for_reason(why).to_owned())
                    .unwrap_or_else(|| format!("{:?}", r.state))
            };
            nh::notification_xml::TestSendResult {
                platform,
                handle: t.handle.to_text(),
                registration_id: t.installation_id.as_str().to_owned(),
                success: c.delivered > 0,
                outcome,
            }
        })
        .collect::<Vec<_>>();
    response(
        StatusCode::CREATED,
        Some("application/xml; charset=utf-8"),
        nh::notification_xml::notification_outcome(&results),
    )
}

fn direct_handle(headers: &HeaderMap) -> Result<PushHandle, Fail> {
    nh::headers::direct_handle(
        format_of(headers)?,
        header(headers, "servicebusnotification-devicehandle"),
        header(headers, "p256dh"),
        header(headers, "auth"),
    )
    .map_err(bad)
}

async fn direct_batch(
    hub: &Hub,
    origin: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Resp, Fail> {
    let ct = header(headers, "content-type").unwrap_or("");
    let batch = nh::multipart::parse(ct, &body).map_err(bad)?;
    let format = format_of(headers)?;
    let platform = format
        .platform()
        .ok_or_else(|| Fail::bad("a direct batch needs a native format, not template"))?;
    let pass = passthrough(headers, format);
    check_topic(hub, pass.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let n = Notification::from_native(platform, batch.body, &pass).map_err(bad)?;
    let handles = batch
        .handles
        .iter()
        .map(|h| nh::headers::batch_handle(format, h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let slot = send_slot(hub)?;
    let h = hub.engine.send_to_handles(n, handles)?;
    Ok(accepted(origin, hub, h, slot).await)
}

fn outcome(hub: &Hub, origin: &str, id: &str) -> Result<Resp, Fail> {
    let nid: NotificationId = id
        .parse()
        .map_err(|_| Fail::not_found(format!("no notification {id:?}")))?;
    let report = hub
        .engine
        .report(nid)
        .ok_or_else(|| Fail::not_found(format!("no notification {id}")))?;
    let host = origin.split_once("://").map_or(origin, |(_, h)| h);
    let location = nh::notification_xml::sb_location(host, &hub.name, id);
    let platforms: Vec<crate::Platform> = crate::Platform::ALL
        .into_iter()
        .filter(|p| report.platform(*p).targeted > 0)
        .collect();
    let targets = nh::notification_xml::target_platforms(&platforms, false);
    Ok(response(
        StatusCode::OK,
        Some("application/xml; charset=utf-8"),
        nh::notification_xml::notification_details(&report, &location, "", &targets),
    ))
}

/// A send in cluster mode: stored in `NOTIFY` under a fresh id and answered 201 with the
/// same `Location` as a single node's; every node runs it on the partitions it owns (a
/// template send renders on the partition's owner, one push per matching template). A test
/// send runs here ([`ClusterHub::test_send`](super::cluster::ClusterHub::test_send));
/// `max_sends_in_flight` does not apply (the API node does not see the send finish).
#[allow(clippy::too_many_arguments)]
async fn cluster_send(
    hub: &Hub,
    c: &super::cluster::ClusterHub,
    ctx: &Ctx,
    origin: &str,
    headers: &HeaderMap,
    payload: Content,
    audience: Audience,
    test: bool,
    scheduled: bool,
) -> Result<Resp, Fail> {
    let request = match payload {
        Content::Native(n) => SendRequest::native(n, audience),
        Content::Template(t) => SendRequest::template(t, audience),
    };
    if test {
        let sends = c.test_send(&request, TEST_SEND_MAX).await?;
        return Ok(test_outcome(ctx, sends).await);
    }
    if scheduled {
        let at = header(headers, "servicebusnotification-scheduletime")
            .ok_or_else(|| Fail::bad("missing ServiceBusNotification-ScheduleTime"))?;
        let at = nh::headers::schedule_time(at).map_err(bad)?;
        let id = c.accept(&request, Some(at)).await?;
        return Ok(created(origin, hub, "schedulednotifications", id));
    }
    let id = c.accept(&request, None).await?;
    Ok(created(origin, hub, "messages", id))
}

/// `GET /messages/{id}` in cluster mode: a direct send of this server's engine as on a
/// single node; otherwise the totals its partitions reported to `OUT`
/// ([`nh::notification_xml::cluster_notification_details`]), 404 until one reported.
async fn cluster_outcome(hub: &Hub, origin: &str, id: &str) -> Result<Resp, Fail> {
    let Some(c) = hub.cluster() else {
        return Err(Fail::internal("not in cluster mode"));
    };
    let nid: NotificationId = id
        .parse()
        .map_err(|_| Fail::not_found(format!("no notification {id:?}")))?;
    if hub.engine.report(nid).is_some() {
        return outcome(hub, origin, id);
    }
    let t = c.totals(nid).await?.ok_or_else(|| {
        Fail::not_found(format!(
            "no notification {nid} reported yet (cluster mode: a send is known once a \
             partition has started it; a scheduled send once it is due)"
        ))
    })?;
    let host = origin.split_once("://").map_or(origin, |(_, h)| h);
    let location = nh::notification_xml::sb_location(host, &hub.name, id);
    let counts = [
        ("Targeted", t.targeted),
        ("Success", t.delivered),
        ("Failed", t.failed),
        ("PossibleDuplicates", t.possible_duplicates),
        ("PossiblyMissed", t.possibly_missed),
        ("PartitionsReported", t.partitions as u64),
        ("PartitionsFinished", t.finished as u64),
    ];
    // Per platform as on a single node: the partitions' counts and reasons summed.
    let platforms: Vec<(crate::Platform, Vec<(&str, u64)>)> = crate::Platform::ALL
        .into_iter()
        .filter_map(|p| {
            let c = t.platforms.get(p.as_str())?;
            let o = crate::PlatformOutcomes {
                delivered: c.delivered,
                dead: c.dead,
                expired: c.expired,
                credential_failure: c.credential_failure,
                skipped: c.skipped,
                cancelled: c.cancelled,
                failed: c.failed,
                ..Default::default()
            };
            let reasons = c.reasons.iter().map(|(r, n)| (r.as_str(), *n));
            Some((p, nh::notification_xml::outcome_counts(&o, reasons)))
        })
        .collect();
    Ok(response(
        StatusCode::OK,
        Some("application/xml; charset=utf-8"),
        nh::notification_xml::cluster_notification_details(
            &nid.to_string(),
            &location,
            c.state(&t),
            &counts,
            &platforms,
        ),
    ))
}
