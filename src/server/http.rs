//! Requests: routing, SAS, and one handler per Notification Hubs operation
//! (nh-rest-api.md §4). Status codes are the ones the official SDK accepts.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{Hub, Shared};
use crate::nh;
use crate::nh::sas::Rights;
use crate::payload::Notification;
use crate::template::Properties;
use crate::{
    Audience, Content, ExprLimits, InstallationId, NotificationId, PushHandle, RegistryError,
    SendError, SendRequest, TagExpr, TemplateSend,
};

pub(crate) type Resp = Response<Full<Bytes>>;

/// A failed request: status and the detail for NH's `<Error>` body.
#[derive(Debug)]
pub(crate) struct Fail(StatusCode, String);

impl Fail {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Fail {
        Fail(status, detail.into())
    }
    pub(crate) fn bad(detail: impl Into<String>) -> Fail {
        Fail::new(StatusCode::BAD_REQUEST, detail)
    }
    pub(crate) fn not_found(detail: impl Into<String>) -> Fail {
        Fail::new(StatusCode::NOT_FOUND, detail)
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
            RegistryError::Invalid(_) => Fail::bad(e.to_string()),
            RegistryError::NotFound(_) => Fail::not_found(e.to_string()),
            _ => Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<SendError> for Fail {
    fn from(e: SendError) -> Fail {
        match e {
            SendError::ShutDown => Fail::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            SendError::State(_) => Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            _ => Fail::bad(e.to_string()),
        }
    }
}

fn error_response(f: Fail) -> Resp {
    let body = nh::error_xml::error_body(f.0.as_u16(), &f.1);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = f.0;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
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

pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>, _peer: SocketAddr) -> Resp {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let resp = match route(&shared, req).await {
        Ok(r) => r,
        Err(f) => error_response(f),
    };
    metrics::counter!(
        "tagcast_http_requests_total",
        "method" => method.to_string(),
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("tagcast_http_request_seconds").record(started.elapsed().as_secs_f64());
    resp
}

async fn body(
    shared: &Shared,
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
    let bytes = Limited::new(body, max)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Fail::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is over {max} bytes"),
                )
            } else {
                Fail::bad(format!("reading the request body: {e}"))
            }
        })?
        .to_bytes();
    Ok((parts, bytes))
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Fail> {
    let path = req.uri().path().to_owned();
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), raw.as_slice()) {
        (&Method::GET, ["healthz"]) => {
            return Ok(response(StatusCode::OK, Some("text/plain"), "ok\n"))
        }
        (&Method::GET, ["readyz"]) => {
            return Ok(if shared.ready.load(Ordering::SeqCst) {
                response(StatusCode::OK, Some("text/plain"), "ready\n")
            } else {
                response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("text/plain"),
                    "shutting down\n",
                )
            })
        }
        (&Method::GET, ["metrics"]) => {
            let text = shared
                .metrics
                .as_ref()
                .map(|h| h.render())
                .unwrap_or_default();
            return Ok(response(
                StatusCode::OK,
                Some("text/plain; version=0.0.4"),
                text,
            ));
        }
        _ => {}
    }
    let segs: Vec<String> = raw
        .iter()
        .map(|s| percent_decode(s))
        .collect::<Result<_, _>>()?;
    let Some(hub_name) = segs.first().filter(|s| !s.is_empty()) else {
        return Err(Fail::not_found("no hub in the path"));
    };
    let hub = shared
        .hubs
        .get(&hub_name.to_ascii_lowercase())
        .cloned()
        .ok_or_else(|| Fail::not_found(format!("no hub {hub_name:?}")))?;
    // The operation path after the hub; a trailing empty segment (`/messages/`) is dropped.
    let mut op: Vec<&str> = segs[1..].iter().map(String::as_str).collect();
    if op.last() == Some(&"") {
        op.pop();
    }
    let origin = origin(shared, req.uri(), req.headers());
    let granted = authorize(&hub, &origin, req.headers())?;
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
    let q = query(req.uri());
    match (&method, op.as_slice()) {
        (&Method::PUT, ["installations", id]) => {
            need(Rights::LISTEN)?;
            let id = id.to_string();
            let (_, b) = body(shared, req).await?;
            put_installation(&hub, &id, &b).await
        }
        (&Method::PATCH, ["installations", id]) => {
            need(Rights::LISTEN)?;
            let id = id.to_string();
            let (_, b) = body(shared, req).await?;
            patch_installation(&hub, &id, &b).await
        }
        (&Method::GET, ["installations", id]) => {
            need(Rights::MANAGE)?;
            get_installation(&hub, id)
        }
        (&Method::DELETE, ["installations", id]) => {
            need(Rights::LISTEN)?;
            let id = installation_id(id)?;
            let reg = hub.registry.clone();
            blocking(move || reg.delete(&id)).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["messages"]) => {
            need(Rights::SEND)?;
            let (parts, b) = body(shared, req).await?;
            send(&hub, &origin, &parts.headers, &q, b, false).await
        }
        (&Method::POST, ["messages", "$batch"]) => {
            need(Rights::SEND)?;
            let (parts, b) = body(shared, req).await?;
            direct_batch(&hub, &origin, &parts.headers, b)
        }
        (&Method::GET, ["messages", id]) => {
            need(Rights::MANAGE)?;
            outcome(&hub, &origin, id)
        }
        (&Method::POST, ["schedulednotifications"]) => {
            need(Rights::SEND)?;
            let (parts, b) = body(shared, req).await?;
            send(&hub, &origin, &parts.headers, &q, b, true).await
        }
        (&Method::DELETE, ["schedulednotifications", id]) => {
            need(Rights::SEND)?;
            let id: NotificationId = id
                .parse()
                .map_err(|_| Fail::not_found(format!("no scheduled notification {id:?}")))?;
            if hub.engine.cancel_scheduled(id)? {
                Ok(empty(StatusCode::OK))
            } else {
                Err(Fail::not_found(format!(
                    "no pending scheduled notification {id}"
                )))
            }
        }
        _ => {
            let op: Vec<String> = op.iter().map(|s| s.to_string()).collect();
            let op: Vec<&str> = op.iter().map(String::as_str).collect();
            let (parts, b) = body(shared, req).await?;
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

fn authorize(hub: &Hub, origin: &str, headers: &HeaderMap) -> Result<Rights, Fail> {
    let unauthorized = |m: String| Fail::new(StatusCode::UNAUTHORIZED, m);
    let token = header(headers, "authorization").ok_or_else(|| {
        unauthorized("missing Authorization header (a SharedAccessSignature)".into())
    })?;
    let base = format!("{origin}/{}", hub.name);
    nh::sas::verify(token, &hub.keys, &base, SystemTime::now())
        .map_err(|e| unauthorized(e.to_string()))
}

fn installation_id(id: &str) -> Result<InstallationId, Fail> {
    InstallationId::new(id).map_err(|e| Fail::bad(e.to_string()))
}

/// Runs a registry call that waits for its durable commit off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, Fail> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(Fail::from)
}

async fn put_installation(hub: &Hub, id: &str, b: &[u8]) -> Result<Resp, Fail> {
    let id = installation_id(id)?;
    let inst = nh::installation_json::parse_installation(b, Some(&id)).map_err(bad)?;
    // Acknowledged = durable: waits for the group commit without holding a thread.
    hub.registry.upsert_async(inst).await?;
    Ok(empty(StatusCode::OK))
}

async fn patch_installation(hub: &Hub, id: &str, b: &[u8]) -> Result<Resp, Fail> {
    let id = installation_id(id)?;
    let current = hub
        .registry
        .get(&id)
        .ok_or_else(|| Fail::not_found("Installation not found."))?;
    let ops = nh::installation_json::parse_patch(b, &current).map_err(bad)?;
    let reg = hub.registry.clone();
    blocking(move || reg.patch(&id, &ops)).await?;
    Ok(empty(StatusCode::OK))
}

fn get_installation(hub: &Hub, id: &str) -> Result<Resp, Fail> {
    let id = installation_id(id)?;
    let inst = hub
        .registry
        .get(&id)
        .ok_or_else(|| Fail::not_found("Installation not found."))?;
    Ok(response(
        StatusCode::OK,
        Some("application/json; charset=utf-8"),
        nh::installation_json::installation_to_json(&inst),
    ))
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

/// The audience of a send: `ServiceBusNotification-Tags` (absent or the SDK's `undefined`:
/// broadcast).
fn audience(headers: &HeaderMap) -> Result<Audience, Fail> {
    match nh::headers::tag_selector(header(headers, "servicebusnotification-tags")).map_err(bad)? {
        nh::headers::TagSelector::Broadcast => Ok(Audience::All),
        nh::headers::TagSelector::Expression(expr) => {
            TagExpr::parse_with(expr, &ExprLimits::notification_hubs())
                .map(Audience::Expr)
                .map_err(|e| Fail::bad(format!("ServiceBusNotification-Tags: {e}")))
        }
    }
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
fn payload(headers: &HeaderMap, body: Bytes) -> Result<Content, Fail> {
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
            let n = Notification::from_native(p, body, &pass).map_err(bad)?;
            Ok(Content::Native(n))
        }
    }
}

async fn send(
    hub: &Hub,
    origin: &str,
    headers: &HeaderMap,
    q: &[(String, String)],
    body: Bytes,
    scheduled: bool,
) -> Result<Resp, Fail> {
    let has = |k: &str| q.iter().any(|(n, _)| n.eq_ignore_ascii_case(k));
    let payload = payload(headers, body)?;
    if has("direct") && !scheduled {
        let handle = direct_handle(headers)?;
        let Content::Native(n) = payload else {
            return Err(Fail::bad(
                "a direct send needs a native format, not template",
            ));
        };
        let h = hub.engine.send_to_handles(n, vec![handle])?;
        return Ok(created(origin, hub, "messages", h.id()));
    }
    let audience = audience(headers)?;
    let request = match payload {
        Content::Native(n) => SendRequest::native(n, audience),
        Content::Template(t) => SendRequest::template(t, audience),
    };
    if scheduled {
        let at = header(headers, "servicebusnotification-scheduletime")
            .ok_or_else(|| Fail::bad("missing ServiceBusNotification-ScheduleTime"))?;
        let at = nh::headers::schedule_time(at).map_err(bad)?;
        let id = hub.engine.schedule(request, at)?;
        return Ok(created(origin, hub, "schedulednotifications", id));
    }
    if has("test") {
        return test_send(hub, request).await;
    }
    let h = hub.engine.submit(request)?;
    Ok(created(origin, hub, "messages", h.id()))
}

/// A test send (`?test=true`): sent now and answered with the outcome per device, at most 10
/// devices as Notification Hubs does.
async fn test_send(hub: &Hub, request: SendRequest) -> Result<Resp, Fail> {
    const MAX: usize = 10;
    let targets: Vec<crate::Target> = hub
        .registry
        .resolve(request.audience())
        .batches(MAX)
        .next()
        .unwrap_or_default();
    let mut results = Vec::new();
    for t in targets.into_iter().take(MAX) {
        let one = SendRequest {
            audience: Audience::Installation(t.installation_id.clone()),
            ..request.clone()
        };
        let h = hub.engine.submit(one)?;
        let r = tokio::time::timeout(Duration::from_secs(30), h.wait())
            .await
            .unwrap_or_else(|_| h.progress());
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
        results.push(nh::notification_xml::TestSendResult {
            platform,
            handle: t.handle.to_text(),
            registration_id: t.installation_id.as_str().to_owned(),
            success: c.delivered > 0,
            outcome,
        });
    }
    Ok(response(
        StatusCode::CREATED,
        Some("application/xml; charset=utf-8"),
        nh::notification_xml::notification_outcome(&results),
    ))
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

fn direct_batch(hub: &Hub, origin: &str, headers: &HeaderMap, body: Bytes) -> Result<Resp, Fail> {
    let ct = header(headers, "content-type").unwrap_or("");
    let batch = nh::multipart::parse(ct, &body).map_err(bad)?;
    let format = format_of(headers)?;
    let platform = format
        .platform()
        .ok_or_else(|| Fail::bad("a direct batch needs a native format, not template"))?;
    let pass = passthrough(headers, format);
    let n = Notification::from_native(platform, batch.body, &pass).map_err(bad)?;
    let handles = batch
        .handles
        .iter()
        .map(|h| nh::headers::batch_handle(format, h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let h = hub.engine.send_to_handles(n, handles)?;
    Ok(created(origin, hub, "messages", h.id()))
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
