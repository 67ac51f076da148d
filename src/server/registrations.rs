//! Registrations, Notification Hubs' older device model (nh-rest-api.md §4.5, Atom XML), stored
//! as installations (`nh::registration_xml` has the mapping and the codec): the registration
//! id is the installation id; a template registration is an installation with one template.
//! Both models see the same devices. Differences from Azure: docs/operations.md.

use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::http::{Fail, Resp};
use super::{Hub, Shared};
use crate::nh::registration_xml::{
    entry_xml, feed_xml, parse_registration, AtomContext, Registration, ENTRY_CONTENT_TYPE,
    FEED_CONTENT_TYPE,
};
use crate::nh::sas::Rights;
use crate::{Audience, Installation, InstallationId, PushHandle, TagExpr};

/// Largest page of a listing.
const MAX_TOP: usize = 1000;

fn etag(inst: &Installation) -> String {
    Registration::from_installation(inst)
        .etag
        .unwrap_or_default()
}

fn context(origin: &str, hub: &Hub) -> AtomContext {
    AtomContext {
        base_url: format!("{}/{}", origin.replacen("http://", "https://", 1), hub.name),
        updated: SystemTime::now(),
    }
}

/// Reads a registration body into the installation it is stored as.
fn parse(body: &[u8], id: &InstallationId) -> Result<Installation, Fail> {
    let text = std::str::from_utf8(body).map_err(|_| Fail::bad("the body is not UTF-8"))?;
    let reg = parse_registration(text).map_err(|e| Fail::bad(e.to_string()))?;
    Ok(reg.to_installation(id.clone()))
}

fn entry_response(status: StatusCode, origin: &str, hub: &Hub, inst: &Installation) -> Resp {
    let reg = Registration::from_installation(inst);
    let body = entry_xml(&reg, &context(origin, hub));
    let mut r = super::http::response(status, Some(ENTRY_CONTENT_TYPE), body);
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", etag(inst))) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    r
}

fn feed_response(origin: &str, hub: &Hub, page: &[Installation], next: Option<String>) -> Resp {
    let regs: Vec<Registration> = page.iter().map(Registration::from_installation).collect();
    let body = feed_xml(&regs, &context(origin, hub));
    let mut r = super::http::response(StatusCode::OK, Some(FEED_CONTENT_TYPE), body);
    if let Some(t) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        r.headers_mut().insert("x-ms-continuationtoken", t);
    }
    r
}

/// Writes the registration in `body` under `id` (durably) and answers the stored entry.
async fn store(hub: &Hub, origin: &str, id: &InstallationId, body: &[u8]) -> Result<Resp, Fail> {
    let inst = parse(body, id)?;
    hub.registry.upsert_async(inst).await?;
    let stored = hub
        .registry
        .get(id)
        .ok_or_else(|| Fail::not_found("Registration not found."))?;
    Ok(entry_response(StatusCode::OK, origin, hub, &stored))
}

/// `If-Match` against the stored registration: `*` or absent passes; a stale etag is 412.
fn check_if_match(headers: &HeaderMap, current: Option<&Installation>) -> Result<(), Fail> {
    let Some(v) = headers
        .get(http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    match crate::nh::headers::if_match(v).map_err(|e| Fail::bad(e.to_string()))? {
        crate::nh::headers::IfMatch::Any => Ok(()),
        crate::nh::headers::IfMatch::ETag(want) => match current {
            Some(c) if etag(c) == want => Ok(()),
            Some(_) => Err(Fail::new(
                StatusCode::PRECONDITION_FAILED,
                "the registration changed since it was read (ETag mismatch)",
            )),
            None => Err(Fail::not_found("Registration not found.")),
        },
    }
}

/// One `<Field> eq '<value>'` clause of a `$filter`.
fn filter_matches(filter: &str, inst: &Installation) -> Result<bool, Fail> {
    for clause in filter.split(" and ") {
        let clause = clause.trim();
        let (field, value) = clause.split_once(" eq ").ok_or_else(|| {
            Fail::bad(format!(
                "$filter: cannot read {clause:?} (Field eq 'value')"
            ))
        })?;
        let value = value.trim().trim_matches('\'');
        let decoded = super::http::percent_decode(value).unwrap_or_else(|_| value.to_owned());
        let ok = match (field.trim(), &inst.handle) {
            ("DeviceToken", PushHandle::Apns(_)) => {
                inst.handle.to_text().eq_ignore_ascii_case(value)
            }
            ("FcmV1RegistrationId" | "GcmRegistrationId", PushHandle::Fcm(t)) => &**t == value,
            ("ChannelUri", PushHandle::Wns(u)) => **u == *decoded || &**u == value,
            ("ChannelUri", _) => inst.handle.to_text().eq_ignore_ascii_case(value),
            ("Endpoint", PushHandle::WebPush(s)) => s.endpoint() == decoded,
            ("P256DH", PushHandle::WebPush(s)) => {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s.p256dh()) == value
            }
            ("Auth", PushHandle::WebPush(s)) => {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s.auth()) == value
            }
            (
                "DeviceToken"
                | "FcmV1RegistrationId"
                | "GcmRegistrationId"
                | "Endpoint"
                | "P256DH"
                | "Auth",
                _,
            ) => false,
            (other, _) => {
                return Err(Fail::bad(format!("$filter: unknown field {other:?}")));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn new_registration_id() -> String {
    let a = uuid::Uuid::new_v4().as_u128();
    format!("{}-{}-1", (a >> 64) as u64 >> 1, (a as u64) >> 1)
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The registration operations; anything else is 404.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn route(
    shared: &Shared,
    hub: &Hub,
    origin: &str,
    need: &(dyn Fn(Rights) -> Result<(), Fail> + Sync),
    method: &Method,
    op: &[&str],
    q: &[(String, String)],
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Resp, Fail> {
    let _ = shared;
    match (method, op) {
        (&Method::POST, [ids]) if ids.eq_ignore_ascii_case("registrationIDs") => {
            need(Rights::LISTEN)?;
            let mut r = super::http::empty(StatusCode::CREATED);
            let https_origin = origin.replacen("http://", "https://", 1);
            let loc = format!(
                "{https_origin}/{}/registrations/{}?api-version=2020-06",
                hub.name,
                new_registration_id()
            );
            r.headers_mut().insert(
                http::header::LOCATION,
                HeaderValue::from_str(&loc).map_err(|e| Fail::bad(e.to_string()))?,
            );
            Ok(r)
        }
        (&Method::POST, ["registrations"]) => {
            need(Rights::LISTEN)?;
            let id =
                InstallationId::new(new_registration_id()).map_err(|e| Fail::bad(e.to_string()))?;
            store(hub, origin, &id, &body).await
        }
        (&Method::PUT, ["registrations", id]) => {
            need(Rights::LISTEN)?;
            let id = InstallationId::new(*id).map_err(|e| Fail::bad(e.to_string()))?;
            let current = hub.registry.get(&id);
            if headers.contains_key(http::header::IF_MATCH) {
                check_if_match(headers, current.as_ref())?;
            }
            store(hub, origin, &id, &body).await
        }
        (&Method::GET, ["registrations", id]) => {
            need(Rights::LISTEN)?;
            let id =
                InstallationId::new(*id).map_err(|_| Fail::not_found("Registration not found."))?;
            let inst = hub
                .registry
                .get(&id)
                .ok_or_else(|| Fail::not_found("Registration not found."))?;
            Ok(entry_response(StatusCode::OK, origin, hub, &inst))
        }
        (&Method::DELETE, ["registrations", id]) => {
            need(Rights::LISTEN)?;
            let id =
                InstallationId::new(*id).map_err(|_| Fail::not_found("Registration not found."))?;
            let current = hub.registry.get(&id);
            if current.is_none() {
                return Err(Fail::not_found("Registration not found."));
            }
            check_if_match(headers, current.as_ref())?;
            let reg = hub.registry.clone();
            tokio::task::spawn_blocking(move || reg.delete(&id))
                .await
                .map_err(|e| Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
            Ok(super::http::empty(StatusCode::OK))
        }
        (&Method::GET, ["registrations"]) => {
            need(Rights::MANAGE)?;
            let filter = param(q, "$filter").map(str::to_owned);
            let mut all = Vec::new();
            let mut err = None;
            hub.registry.for_each(|inst| {
                if err.is_some() {
                    return;
                }
                match filter.as_deref().map(|f| filter_matches(f, &inst)) {
                    None | Some(Ok(true)) => all.push(inst),
                    Some(Ok(false)) => {}
                    Some(Err(e)) => err = Some(e),
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            page(origin, hub, all, q)
        }
        (&Method::GET, ["tags", tag, "registrations"]) => {
            need(Rights::MANAGE)?;
            let expr = TagExpr::parse(tag).map_err(|e| Fail::bad(format!("tag {tag:?}: {e}")))?;
            let res = hub.registry.resolve(&Audience::Expr(expr));
            let mut all = Vec::new();
            for batch in res.batches(4096) {
                for t in batch {
                    if let Some(inst) = hub.registry.get(&t.installation_id) {
                        all.push(inst);
                    }
                }
            }
            page(origin, hub, all, q)
        }
        _ => Err(Fail::not_found(format!(
            "no operation {method} /{}",
            op.join("/")
        ))),
    }
}

/// One page of a listing: sorted by id; `$top` (default and most [`MAX_TOP`]); the
/// continuation token is the last id of the page, hex-encoded (URL-safe, opaque).
fn page(
    origin: &str,
    hub: &Hub,
    mut all: Vec<Installation>,
    q: &[(String, String)],
) -> Result<Resp, Fail> {
    all.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    let top = match param(q, "$top") {
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| Fail::bad(format!("$top {t:?} is not a number")))?
            .clamp(1, MAX_TOP),
        None => MAX_TOP,
    };
    let after = match param(q, "continuationtoken") {
        Some(t) => Some(
            (0..t.len())
                .step_by(2)
                .map(|i| t.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Fail::bad("continuationtoken is not one of ours"))?,
        ),
        None => None,
    };
    let start = match &after {
        Some(a) => all.partition_point(|i| i.id.as_str() <= a.as_str()),
        None => 0,
    };
    let page: Vec<Installation> = all.iter().skip(start).take(top).cloned().collect();
    let next = (start + page.len() < all.len())
        .then(|| page.last())
        .flatten()
        .map(|l| {
            l.id.as_str()
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
    Ok(feed_response(origin, hub, &page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_the_sdk() {
        let inst = Installation::new(
            InstallationId::new("r").unwrap(),
            PushHandle::apns("ab12").unwrap(),
        );
        assert!(filter_matches("DeviceToken eq 'AB12'", &inst).unwrap());
        assert!(!filter_matches("DeviceToken eq 'AB13'", &inst).unwrap());
        assert!(!filter_matches("FcmV1RegistrationId eq 'x'", &inst).unwrap());
        assert!(filter_matches("Colour eq 'x'", &inst).is_err());
    }
}
