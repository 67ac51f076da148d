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
use crate::{
    Audience, Installation, InstallationId, Precondition, PushHandle, RegistryError, TagExpr,
    Version,
};

/// Largest page of a listing.
const MAX_TOP: usize = 1000;

fn context(origin: &str, hub: &Hub, push_secrets: bool) -> AtomContext {
    AtomContext {
        push_secrets,
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

/// An entry with its ETag: the installation's version, which changes with every write (a
/// last-write time would repeat within a millisecond).
fn entry_response(
    status: StatusCode,
    origin: &str,
    hub: &Hub,
    inst: &Installation,
    version: Version,
    push_secrets: bool,
) -> Resp {
    let mut reg = Registration::from_installation(inst);
    reg.etag = Some(version.to_string());
    let body = entry_xml(&reg, &context(origin, hub, push_secrets));
    let mut r = super::http::response(status, Some(ENTRY_CONTENT_TYPE), body);
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}/{}/registrations/{}?api-version=2020-06",
        origin.replacen("http://", "https://", 1),
        hub.name,
        crate::nh::sas::encode_uri_component(inst.id.as_str())
    )) {
        r.headers_mut().insert(http::header::CONTENT_LOCATION, v);
    }
    r
}

fn feed_response(
    origin: &str,
    hub: &Hub,
    page: &[(Installation, Option<Version>)],
    next: Option<String>,
    push_secrets: bool,
) -> Resp {
    let regs: Vec<Registration> = page
        .iter()
        .map(|(inst, v)| {
            let mut reg = Registration::from_installation(inst);
            if let Some(v) = v {
                reg.etag = Some(v.to_string());
            }
            reg
        })
        .collect();
    let body = feed_xml(&regs, &context(origin, hub, push_secrets));
    let mut r = super::http::response(StatusCode::OK, Some(FEED_CONTENT_TYPE), body);
    if let Some(t) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        r.headers_mut().insert("x-ms-continuationtoken", t);
    }
    r
}

/// Writes the registration in `body` under `id` (durably, if `pre` holds) and answers the
/// stored entry.
async fn store(
    hub: &Hub,
    origin: &str,
    id: &InstallationId,
    body: &[u8],
    pre: Precondition,
    push_secrets: bool,
) -> Result<Resp, Fail> {
    let inst = parse(body, id)?;
    super::http::check_template_topics(hub, &inst)?;
    // An installation the registration model cannot carry (a user id, several templates,
    // template tags, an expiry) is not replaced through this path: that would drop those
    // fields silently (audit F22). The check and the write are one compare-and-set on the
    // version read, retried when a concurrent write got in between.
    let mut written = false;
    for _ in 0..STORE_ATTEMPTS {
        let current = hub.registry("the registrations API")?.get_versioned(id);
        if let Some((existing, _)) = &current {
            if let Some(why) = not_a_registration(existing) {
                return Err(Fail::new(
                    StatusCode::CONFLICT,
                    format!(
                        "{} is an installation with {why}, which a registration cannot carry; \
                         update it through /installations/{}",
                        id.as_str(),
                        id.as_str()
                    ),
                ));
            }
        }
        let derived = match (&pre, &current) {
            (Precondition::Any | Precondition::Exists, Some((_, v))) => Precondition::Version(*v),
            (Precondition::Any, None) => Precondition::Absent,
            (p, _) => *p,
        };
        let ours = derived != pre;
        match hub
            .registry("the registrations API")?
            .upsert_if_async(inst.clone(), derived)
            .await
        {
            Ok(_) => {
                written = true;
                break;
            }
            // The precondition added here lost a race: read again. A failed precondition
            // the client chose (If-Match) is the client's answer.
            Err(RegistryError::VersionMismatch { .. }) if ours => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if !written {
        return Err(Fail::new(
            StatusCode::CONFLICT,
            "the registration kept changing while it was written; retry",
        ));
    }
    let (stored, version) = hub
        .registry("the registrations API")?
        .get_versioned(id)
        .ok_or_else(|| Fail::not_found("Registration not found."))?;
    Ok(entry_response(
        StatusCode::OK,
        origin,
        hub,
        &stored,
        version,
        push_secrets,
    ))
}

/// Tries of a registration write whose compare-and-set lost a race.
const STORE_ATTEMPTS: usize = 8;

/// What of `inst` a registration cannot carry (`None`: nothing; it can be replaced as one).
fn not_a_registration(inst: &Installation) -> Option<String> {
    let mut what = Vec::new();
    if inst.user_id.is_some() {
        what.push("a userId".to_owned());
    }
    if inst.templates.len() > 1 {
        what.push(format!("{} templates", inst.templates.len()));
    }
    if inst.templates.values().any(|t| !t.tags.is_empty()) {
        what.push("template tags".to_owned());
    }
    if inst.expiration_time.is_some() {
        what.push("an expirationTime".to_owned());
    }
    (!what.is_empty()).then(|| what.join(", "))
}

/// `If-Match` as a precondition of the write: absent is none, `*` is "exists", an ETag is
/// "exactly this version" (one this server did not issue can never match: 412).
fn if_match(headers: &HeaderMap) -> Result<Precondition, Fail> {
    let Some(v) = headers.get(http::header::IF_MATCH) else {
        return Ok(Precondition::Any);
    };
    let v = v
        .to_str()
        .map_err(|_| Fail::bad("If-Match is not visible ASCII"))?;
    Ok(
        match crate::nh::headers::if_match(v).map_err(|e| Fail::bad(e.to_string()))? {
            crate::nh::headers::IfMatch::Any => Precondition::Exists,
            crate::nh::headers::IfMatch::ETag(want) => match want.parse::<Version>() {
                Ok(v) => Precondition::Version(v),
                Err(_) => {
                    return Err(Fail::new(
                        StatusCode::PRECONDITION_FAILED,
                        "the registration changed since it was read (ETag mismatch)",
                    ))
                }
            },
        },
    )
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

pub(crate) fn new_registration_id() -> String {
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
    // One read policy for registrations and installations: Listen reads single devices and
    // channel lookups, without Web Push secrets; those need Manage.
    let manage = need(Rights::MANAGE).is_ok();
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
            store(hub, origin, &id, &body, Precondition::Any, manage).await
        }
        (&Method::PUT, ["registrations", id]) => {
            need(Rights::LISTEN)?;
            let id = InstallationId::new(*id).map_err(|e| Fail::bad(e.to_string()))?;
            // Checked and written in one step: a concurrent write in between is a 412.
            store(hub, origin, &id, &body, if_match(headers)?, manage).await
        }
        (&Method::GET, ["registrations", id]) => {
            need(Rights::LISTEN)?;
            let id =
                InstallationId::new(*id).map_err(|_| Fail::not_found("Registration not found."))?;
            let (inst, version) = hub
                .registry("the registrations API")?
                .get_versioned(&id)
                .ok_or_else(|| Fail::not_found("Registration not found."))?;
            Ok(entry_response(
                StatusCode::OK,
                origin,
                hub,
                &inst,
                version,
                manage,
            ))
        }
        (&Method::DELETE, ["registrations", id]) => {
            need(Rights::LISTEN)?;
            let id =
                InstallationId::new(*id).map_err(|_| Fail::not_found("Registration not found."))?;
            let pre = match if_match(headers)? {
                Precondition::Any => Precondition::Exists,
                p => p,
            };
            if !hub
                .registry("the registrations API")?
                .delete_if_async(&id, pre)
                .await?
            {
                return Err(Fail::not_found("Registration not found."));
            }
            Ok(super::http::empty(StatusCode::OK))
        }
        (&Method::GET, ["registrations"]) => {
            // Listing all, or by channel ($filter): Manage, or Listen for a channel lookup
            // (NH's rights model: Listen may "read registrations by channel").
            let filter = param(q, "$filter").map(str::to_owned);
            match &filter {
                Some(f) if is_channel_filter(f) => need(Rights::LISTEN)?,
                _ => need(Rights::MANAGE)?,
            }
            let page_req = PageRequest::from_query(q)?;
            let reg = hub.registry("the registrations API")?.clone();
            // A scan of the hub: off the async threads, holding one page at a time.
            let (ids, more) = tokio::task::spawn_blocking(move || match filter {
                None => {
                    let mut pick = Smallest::new(page_req.after.clone(), page_req.top);
                    reg.for_each_id(|id| pick.offer(id));
                    Ok(pick.finish())
                }
                Some(f) => {
                    let mut pick = Smallest::new(page_req.after.clone(), page_req.top);
                    let mut err = None;
                    reg.for_each(|inst| {
                        if err.is_none() && pick.would_take(inst.id.as_str()) {
                            match filter_matches(&f, &inst) {
                                Ok(true) => pick.offer(inst.id.as_str()),
                                Ok(false) => {}
                                Err(e) => err = Some(e),
                            }
                        }
                    });
                    match err {
                        Some(e) => Err(e),
                        None => Ok(pick.finish()),
                    }
                }
            })
            .await
            .map_err(Fail::internal)??;
            page(origin, hub, ids, more, manage)
        }
        (&Method::GET, ["tags", tag, "registrations"]) => {
            need(Rights::MANAGE)?;
            // One tag, as Notification Hubs takes it (an expression such as `!x` would list
            // the whole hub).
            let tag = crate::Tag::new(*tag).map_err(|e| Fail::bad(format!("tag {tag:?}: {e}")))?;
            let expr = TagExpr::parse(tag.as_str())
                .map_err(|e| Fail::bad(format!("tag {:?}: {e}", tag.as_str())))?;
            let page_req = PageRequest::from_query(q)?;
            let reg = hub.registry("the registrations API")?.clone();
            let (ids, more) = tokio::task::spawn_blocking(move || {
                let mut pick = Smallest::new(page_req.after.clone(), page_req.top);
                for batch in reg.resolve(&Audience::Expr(expr)).batches(4096) {
                    for t in batch {
                        pick.offer(t.installation_id.as_str());
                    }
                }
                pick.finish()
            })
            .await
            .map_err(Fail::internal)?;
            page(origin, hub, ids, more, manage)
        }
        _ => Err(Fail::not_found(format!(
            "no operation {method} /{}",
            op.join("/")
        ))),
    }
}

/// The right a registration operation needs at least (checked before its body is read).
pub(crate) fn right_needed(method: &Method, op: &[&str], q: &[(String, String)]) -> Rights {
    match (method, op) {
        (&Method::GET, ["registrations"]) => match param(q, "$filter") {
            Some(f) if is_channel_filter(f) => Rights::LISTEN,
            _ => Rights::MANAGE,
        },
        (&Method::GET, ["tags", _, "registrations"]) => Rights::MANAGE,
        _ => Rights::LISTEN,
    }
}

/// Whether a `$filter` only looks up a channel (`ChannelUri`, `DeviceToken`, ...): the lookup
/// a device makes with the Listen key.
fn is_channel_filter(filter: &str) -> bool {
    const CHANNEL_FIELDS: [&str; 7] = [
        "DeviceToken",
        "FcmV1RegistrationId",
        "GcmRegistrationId",
        "ChannelUri",
        "Endpoint",
        "P256DH",
        "Auth",
    ];
    filter.split(" and ").all(|c| {
        c.split_once(" eq ")
            .is_some_and(|(f, _)| CHANNEL_FIELDS.contains(&f.trim()))
    })
}

/// `$top` and `continuationtoken` of a listing.
struct PageRequest {
    top: usize,
    after: Option<String>,
}

impl PageRequest {
    fn from_query(q: &[(String, String)]) -> Result<PageRequest, Fail> {
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
        Ok(PageRequest { top, after })
    }
}

/// The `top` smallest ids after `after`, from ids offered in any order: memory for `top + 1`
/// ids, whatever the hub's size.
struct Smallest {
    after: Option<String>,
    top: usize,
    heap: std::collections::BinaryHeap<String>,
}

impl Smallest {
    fn new(after: Option<String>, top: usize) -> Smallest {
        Smallest {
            after,
            top,
            heap: std::collections::BinaryHeap::with_capacity(top + 2),
        }
    }

    /// Whether `id` would enter the page as things stand (to skip work on the rest).
    fn would_take(&self, id: &str) -> bool {
        self.after.as_deref().is_none_or(|a| id > a)
            && (self.heap.len() <= self.top || self.heap.peek().is_some_and(|m| id < m.as_str()))
    }

    fn offer(&mut self, id: &str) {
        if !self.would_take(id) {
            return;
        }
        self.heap.push(id.to_owned());
        // One beyond the page tells whether more follow.
        if self.heap.len() > self.top + 1 {
            self.heap.pop();
        }
    }

    /// The page in id order, and whether more ids follow it.
    fn finish(self) -> (Vec<String>, bool) {
        let mut ids = self.heap.into_sorted_vec();
        let more = ids.len() > self.top;
        ids.truncate(self.top);
        (ids, more)
    }
}

/// One page of a listing, in id order; the continuation token is the last id of the page,
/// hex-encoded (URL-safe, opaque). An id deleted since it was picked is left out.
fn page(
    origin: &str,
    hub: &Hub,
    ids: Vec<String>,
    more: bool,
    push_secrets: bool,
) -> Result<Resp, Fail> {
    let next = more
        .then(|| ids.last())
        .flatten()
        .map(|l| l.bytes().map(|b| format!("{b:02x}")).collect::<String>());
    let registry = hub.registry("the registrations API")?;
    let page: Vec<(Installation, Option<Version>)> = ids
        .iter()
        .filter_map(|id| InstallationId::new(id.as_str()).ok())
        .filter_map(|id| registry.get_versioned(&id))
        .map(|(inst, v)| (inst, Some(v)))
        .collect();
    Ok(feed_response(origin, hub, &page, next, push_secrets))
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

    #[test]
    fn pages_hold_the_smallest_ids_after_the_token() {
        let ids: Vec<String> = (0..100).rev().map(|i| format!("id{i:03}")).collect();
        let mut pick = Smallest::new(None, 10);
        ids.iter().for_each(|i| pick.offer(i));
        let (page, more) = pick.finish();
        assert_eq!(page.first().map(String::as_str), Some("id000"));
        assert_eq!(page.last().map(String::as_str), Some("id009"));
        assert!(more);
        let mut pick = Smallest::new(Some("id094".into()), 10);
        ids.iter().for_each(|i| pick.offer(i));
        let (page, more) = pick.finish();
        assert_eq!(page, vec!["id095", "id096", "id097", "id098", "id099"]);
        assert!(!more);
    }

    #[test]
    fn only_channel_filters_are_channel_lookups() {
        assert!(is_channel_filter("ChannelUri eq 'https://x'"));
        assert!(is_channel_filter("Endpoint eq 'a' and P256DH eq 'b'"));
        assert!(!is_channel_filter("Tags eq 'x'"));
        assert!(!is_channel_filter("ChannelUri eq 'a' and Colour eq 'b'"));
    }
}
