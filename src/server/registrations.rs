//! Registrations, Notification Hubs' older device model (nh-rest-api.md §4.5, Atom XML), stored
//! as installations (`nh::registration_xml` has the mapping and the codec): the registration
//! id is the installation id; a template registration is an installation with one template.
//! Both models see the same devices. Differences from Azure: docs/operations.md.

use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::devices::{Devices, WriteFail};
use super::http::{Fail, Resp};
use super::{Hub, Shared};
use crate::cluster::ListFilter;
use crate::nh::registration_xml::{
    entry_xml, feed_xml, parse_registration, AtomContext, Registration, ENTRY_CONTENT_TYPE,
    FEED_CONTENT_TYPE,
};
use crate::nh::sas::Rights;
use crate::{Installation, InstallationId, Precondition, Version};

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
/// last-write time would repeat within a millisecond). `None` only from a cluster owner of an
/// older version: no ETag then.
fn entry_response(
    status: StatusCode,
    origin: &str,
    hub: &Hub,
    inst: &Installation,
    version: Option<Version>,
    push_secrets: bool,
) -> Resp {
    let mut reg = Registration::from_installation(inst);
    reg.etag = version.map(|v| v.to_string());
    let body = entry_xml(&reg, &context(origin, hub, push_secrets));
    let mut r = super::http::response(status, Some(ENTRY_CONTENT_TYPE), body);
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(&format!("W/\"{v}\"")).ok()) {
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
    let devices = Devices::of(hub);
    let mut written = false;
    for _ in 0..STORE_ATTEMPTS {
        let current = devices.get_versioned(id).await?;
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
            (Precondition::Any | Precondition::Exists, Some((_, Some(v)))) => {
                Precondition::Version(*v)
            }
            (Precondition::Any, None) => Precondition::Absent,
            (p, _) => *p,
        };
        let ours = derived != pre;
        match devices.upsert_if(inst.clone(), derived).await {
            Ok(()) => {
                written = true;
                break;
            }
            // The precondition added here lost a race: read again. A failed precondition
            // the client chose (If-Match) is the client's answer.
            Err(WriteFail::Precondition(_)) if ours => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if !written {
        return Err(Fail::new(
            StatusCode::CONFLICT,
            "the registration kept changing while it was written; retry",
        ));
    }
    let (stored, version) = devices
        .get_versioned(id)
        .await?
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
            store(
                hub,
                origin,
                &id,
                &body,
                super::devices::if_match(headers)?,
                manage,
            )
            .await
        }
        (&Method::GET, ["registrations", id]) => {
            need(Rights::LISTEN)?;
            let id =
                InstallationId::new(*id).map_err(|_| Fail::not_found("Registration not found."))?;
            let (inst, version) = Devices::of(hub)
                .get_versioned(&id)
                .await?
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
            let pre = match super::devices::if_match(headers)? {
                Precondition::Any => Precondition::Exists,
                p => p,
            };
            if !Devices::of(hub).delete_if(&id, pre).await? {
                return Err(Fail::not_found("Registration not found."));
            }
            Ok(super::http::empty(StatusCode::OK))
        }
        (&Method::GET, ["registrations"]) => {
            // Listing all, or by channel ($filter): Manage, or Listen for a channel lookup
            // (NH's rights model: Listen may "read registrations by channel").
            let filter = param(q, "$filter").map(str::to_owned);
            match &filter {
                Some(f) if crate::nh::filter::is_channel_filter(f) => need(Rights::LISTEN)?,
                _ => need(Rights::MANAGE)?,
            }
            let page_req = PageRequest::from_query(q)?;
            let filter = match filter {
                Some(f) => ListFilter::Channel(f),
                None => ListFilter::All,
            };
            let (ids, more) = Devices::of(hub)
                .list(page_req.after, page_req.top, filter)
                .await?;
            page(origin, hub, ids, more, manage).await
        }
        (&Method::GET, ["tags", tag, "registrations"]) => {
            need(Rights::MANAGE)?;
            // One tag, as Notification Hubs takes it (an expression such as `!x` would list
            // the whole hub).
            let tag = crate::Tag::new(*tag).map_err(|e| Fail::bad(format!("tag {tag:?}: {e}")))?;
            let page_req = PageRequest::from_query(q)?;
            let (ids, more) = Devices::of(hub)
                .list(
                    page_req.after,
                    page_req.top,
                    ListFilter::Tags(tag.as_str().to_owned()),
                )
                .await?;
            page(origin, hub, ids, more, manage).await
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
            Some(f) if crate::nh::filter::is_channel_filter(f) => Rights::LISTEN,
            _ => Rights::MANAGE,
        },
        (&Method::GET, ["tags", _, "registrations"]) => Rights::MANAGE,
        _ => Rights::LISTEN,
    }
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

/// One page of a listing, in id order; the continuation token is the last id of the page,
/// hex-encoded (URL-safe, opaque). An id deleted since it was picked is left out.
async fn page(
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
    let devices = Devices::of(hub);
    let ids: Vec<InstallationId> = ids
        .iter()
        .filter_map(|id| InstallationId::new(id.as_str()).ok())
        .collect();
    // In a cluster each read is a routed request: a few at a time, in page order.
    let mut page: Vec<(Installation, Option<Version>)> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(PAGE_READS_AT_ONCE) {
        let reads = join_all(chunk.iter().map(|id| devices.get_versioned(id))).await;
        for r in reads {
            if let Some(found) = r? {
                page.push(found);
            }
        }
    }
    Ok(feed_response(origin, hub, &page, next, push_secrets))
}

/// Reads of a listing page's installations in flight at once.
const PAGE_READS_AT_ONCE: usize = 32;
