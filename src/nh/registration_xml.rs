//! Registrations in Atom XML (nh-rest-api.md §4.5): the registration descriptions the SDK
//! writes in request bodies, and the `<entry>` and `<feed>` answers its fast-xml-parser reads.
//!
//! Supported kinds (root element = kind + `RegistrationDescription`): `Apple`, `FcmV1`,
//! `Windows`, `Browser` and their `…Template` variants. `Gcm` is refused (Google retired FCM
//! legacy), `Adm`, `Baidu`, `Mpns`, `Xiaomi` as unsupported.
//!
//! Answers follow §3.3 and §8 item 10: unprefixed elements in NH's namespace, compact, no
//! `i:nil` or empty elements for absent values, `Tags` joined with `,` and no spaces, the
//! template body in CDATA, `ETag` as an element (the SDK reads it there, not from the header).
//!
//! # Storing registrations as installations
//!
//! Recommended mapping ([`Registration::to_installation`], [`Registration::from_installation`]):
//! installation id = registration id (ids from `POST /registrationIDs` are fresh UUIDs, so
//! they never collide with app-chosen installation ids in practice); the registration's tags
//! are the installation's tags; a template registration becomes an installation with one
//! template named `TemplateName` (or [`DEFAULT_TEMPLATE_NAME`]), with no template tags; the
//! `ETag` is the installation's `last_update` in unix milliseconds, which changes on every
//! write. Differences from Azure to be aware of: a template registration stored this way also
//! receives native sends to its platform (Azure's template registrations receive only template
//! sends), and an installation with several templates is listed as one registration (its
//! first template) instead of Azure's one per template.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::xml::{self, Element};
use crate::model::Tag;
use crate::model::{Installation, InstallationId, Platform, Template};
use crate::model::{InvalidInput, PushHandle};

/// `Content-Type` of an entry answer.
pub const ENTRY_CONTENT_TYPE: &str = "application/atom+xml;type=entry;charset=utf-8";
/// `Content-Type` of a feed answer.
pub const FEED_CONTENT_TYPE: &str = "application/atom+xml;type=feed;charset=utf-8";
/// The Atom namespace.
pub const ATOM_NAMESPACE: &str = "http://www.w3.org/2005/Atom";
/// Template name given to a template registration that has no `TemplateName`.
pub const DEFAULT_TEMPLATE_NAME: &str = "registration";

const NH_NS: &str = super::notification_xml::NH_NAMESPACE;
const XSI_NS: &str = super::notification_xml::XSI_NAMESPACE;
const ADO_NS: &str = "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata";
/// Azure's "never expires" `ExpirationTime` (tagged REC).
const NEVER: &str = "9999-12-31T23:59:59.9999999Z";

/// The template part of a template registration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistrationTemplate {
    /// `TemplateName`, if given.
    pub name: Option<String>,
    /// `BodyTemplate`.
    pub body: String,
    /// `ApnsHeaders` (Apple) or `WnsHeaders` (Windows) as header name → value; `Priority`
    /// (Apple) is kept as `apns-priority`.
    pub headers: BTreeMap<String, String>,
    /// `Expiry` (Apple): an RFC 3339 date when the SDK's JS `Date.toString()` form could be
    /// read (§8 item 7), else the text as given (a constant or template expression).
    pub expiry: Option<String>,
}

/// A registration (§4.5), native or template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `RegistrationId` (absent in SDK requests: the id is in the URL).
    pub registration_id: Option<String>,
    /// The device; its platform decides the kind (`Apple`, `FcmV1`, `Windows`, `Browser`).
    pub handle: PushHandle,
    /// `Tags`.
    pub tags: Vec<Tag>,
    /// Set for a `…TemplateRegistrationDescription`.
    pub template: Option<RegistrationTemplate>,
    /// `ExpirationTime` (answers only; ignored in requests). `None`: never.
    pub expiration_time: Option<SystemTime>,
    /// `ETag` (answers only; ignored in requests).
    pub etag: Option<String>,
}

/// Why a registration body was refused (answer 400 with the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registration: {0}")]
pub struct RegistrationError(String);

fn rerr<T>(m: impl Into<String>) -> Result<T, RegistrationError> {
    Err(RegistrationError(m.into()))
}

fn kind_name(p: Platform) -> &'static str {
    match p {
        Platform::Apns => "Apple",
        Platform::Fcm => "FcmV1",
        Platform::Wns => "Windows",
        Platform::WebPush => "Browser",
    }
}

impl Registration {
    /// The root element name, e.g. `AppleTemplateRegistrationDescription`.
    pub fn element_name(&self) -> String {
        format!(
            "{}{}RegistrationDescription",
            kind_name(self.handle.platform()),
            if self.template.is_some() {
                "Template"
            } else {
                ""
            }
        )
    }

    /// The installation this registration is stored as (see the module docs).
    pub fn to_installation(&self, id: InstallationId) -> Installation {
        let mut inst = Installation::new(id, self.handle.clone()).with_tags(self.tags.clone());
        if let Some(t) = &self.template {
            let name = t
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_TEMPLATE_NAME.to_string());
            inst.templates.insert(
                name,
                Template {
                    body: t.body.clone(),
                    headers: t.headers.clone(),
                    tags: Vec::new(),
                    expiry: t.expiry.clone(),
                },
            );
        }
        inst
    }

    /// The registration view of a stored installation (see the module docs): native when it
    /// has no template, else a template registration of its first template (by name).
    pub fn from_installation(inst: &Installation) -> Registration {
        let template = inst
            .templates
            .iter()
            .next()
            .map(|(name, t)| RegistrationTemplate {
                name: (name != DEFAULT_TEMPLATE_NAME).then(|| name.clone()),
                body: t.body.clone(),
                headers: t.headers.clone(),
                expiry: t.expiry.clone(),
            });
        let millis = inst
            .last_update
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Registration {
            registration_id: Some(inst.id.as_str().to_string()),
            handle: inst.handle.clone(),
            tags: inst.tags.clone(),
            template,
            expiration_time: inst.expiration_time,
            etag: Some(millis.to_string()),
        }
    }
}

fn text<'a>(d: &'a Element, name: &str) -> Option<&'a str> {
    d.child(name).map(|e| e.text.trim())
}

fn required<'a>(d: &'a Element, name: &str) -> Result<&'a str, RegistrationError> {
    match text(d, name) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => rerr(format!("<{name}> is required in <{}>", d.name)),
    }
}

fn handle_err(e: InvalidInput) -> RegistrationError {
    RegistrationError(e.to_string())
}

/// Parses a request body: an Atom `<entry>` whose `<content>` holds one registration
/// description (what the SDK sends), or a bare description (the import-file form, §4.7).
pub fn parse_registration(body: &str) -> Result<Registration, RegistrationError> {
    let root =
        xml::parse(body).map_err(|e| RegistrationError(format!("not well-formed XML: {e}")))?;
    let desc = if root.name == "entry" {
        let Some(content) = root.child("content") else {
            return rerr("<entry> has no <content>");
        };
        match content.children.as_slice() {
            [d] => d,
            [] => return rerr("<content> holds no registration description"),
            _ => return rerr("<content> must hold exactly one registration description"),
        }
    } else {
        &root
    };
    parse_description(desc)
}

fn parse_description(d: &Element) -> Result<Registration, RegistrationError> {
    let Some(kind) = d.name.strip_suffix("RegistrationDescription") else {
        return rerr(format!(
            "<{}> is not a registration description (e.g. <AppleRegistrationDescription>)",
            short(&d.name)
        ));
    };
    let (base, is_template) = match kind.strip_suffix("Template") {
        Some(b) => (b, true),
        None => (kind, false),
    };
    let handle = match base {
        "Apple" => PushHandle::apns(required(d, "DeviceToken")?).map_err(handle_err)?,
        "FcmV1" => PushHandle::fcm(required(d, "FcmV1RegistrationId")?).map_err(handle_err)?,
        "Windows" => PushHandle::wns(required(d, "ChannelUri")?).map_err(handle_err)?,
        "Browser" => PushHandle::web_push(
            required(d, "Endpoint")?,
            required(d, "P256DH")?,
            required(d, "Auth")?,
        )
        .map_err(handle_err)?,
        "Gcm" => {
            return rerr(format!(
                "<{}> (FCM legacy) is not supported: Google retired the legacy FCM API; register with FcmV1",
                d.name
            ))
        }
        "Adm" | "Baidu" | "Mpns" | "Xiaomi" => {
            return rerr(format!(
                "<{}> is not supported (supported: Apple, FcmV1, Windows, Browser and their templates)",
                d.name
            ))
        }
        _ => return rerr(format!("unknown registration kind <{}>", short(&d.name))),
    };
    let mut tags = Vec::new();
    if let Some(t) = text(d, "Tags") {
        for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            tags.push(Tag::new(part).map_err(|e| RegistrationError(format!("<Tags>: {e}")))?);
        }
    }
    if let Some(pv) = text(d, "PushVariables").filter(|v| !v.is_empty()) {
        let empty = matches!(serde_json::from_str::<serde_json::Value>(pv), Ok(serde_json::Value::Object(m)) if m.is_empty());
        if !empty {
            return rerr("<PushVariables> are not supported: put the values in the template send's properties instead");
        }
    }
    let template = if is_template {
        let Some(body) = d.child("BodyTemplate") else {
            return rerr(format!("<BodyTemplate> is required in <{}>", d.name));
        };
        let mut headers = BTreeMap::new();
        let (list, item) = match base {
            "Apple" => ("ApnsHeaders", "ApnsHeader"),
            "Windows" => ("WnsHeaders", "WnsHeader"),
            _ => ("", ""),
        };
        if let Some(l) = d.child(list) {
            for h in l.children_named(item) {
                let name = required(h, "Header")?;
                let value = text(h, "Value").unwrap_or("");
                headers.insert(name.to_string(), value.to_string());
            }
        }
        if base == "Apple" {
            if let Some(p) = text(d, "Priority").filter(|p| !p.is_empty()) {
                headers.insert("apns-priority".into(), p.to_string());
            }
        }
        let expiry = if base == "Apple" {
            text(d, "Expiry")
                .filter(|e| !e.is_empty())
                .map(|e| js_date_to_rfc3339(e).unwrap_or_else(|| e.to_string()))
        } else {
            None
        };
        Some(RegistrationTemplate {
            name: text(d, "TemplateName")
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            // The body is kept as written (CDATA keeps its whitespace meaningful).
            body: body.text.clone(),
            headers,
            expiry,
        })
    } else {
        None
    };
    Ok(Registration {
        registration_id: text(d, "RegistrationId")
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        handle,
        tags,
        template,
        expiration_time: None,
        etag: None,
    })
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Reads JavaScript's `Date.prototype.toString()` form, which the SDK writes for an Apple
/// template's `Expiry` (§8 item 7): `Tue Jan 01 2030 00:00:00 GMT+0000 (Coordinated
/// Universal Time)`. Returns the instant as RFC 3339 UTC.
pub fn js_date_to_rfc3339(s: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut it = s.split_whitespace();
    let _weekday = it.next()?;
    let month = MONTHS.iter().position(|m| Some(*m) == it.clone().next())? + 1;
    it.next();
    let day: u32 = it.next()?.parse().ok()?;
    let year: u32 = it.next()?.parse().ok()?;
    let time = it.next()?;
    let zone = it.next()?.strip_prefix("GMT")?;
    let (sign, hhmm) = zone.split_at_checked(1)?;
    if !matches!(sign, "+" | "-") || hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let iso = format!(
        "{year:04}-{month:02}-{day:02}T{time}{sign}{}:{}",
        &hhmm[..2],
        &hhmm[2..]
    );
    crate::time::rfc3339::parse(&iso)
        .ok()
        .map(crate::time::rfc3339::format)
}

/// Where the entries of an answer live: `base_url` is `https://host[:port]/{hub}` (no
/// trailing slash); `updated` goes into Atom's `updated`/`published`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomContext {
    /// `https://host[:port]/{hub}`.
    pub base_url: String,
    /// The answer's time.
    pub updated: SystemTime,
    /// Whether Web Push subscriptions carry their secrets (`P256DH`, `Auth`): only for keys
    /// with the Manage right; a Listen key (public in NH's model) never reads them.
    pub push_secrets: bool,
}

impl AtomContext {
    fn self_url(&self, id: &str) -> String {
        format!(
            "{}/registrations/{}?api-version=2020-06",
            self.base_url,
            super::sas::encode_uri_component(id)
        )
    }
}

fn description_xml(out: &mut String, r: &Registration, push_secrets: bool, one_line: bool) {
    let name = r.element_name();
    out.push('<');
    out.push_str(&name);
    out.push_str(" xmlns=\"");
    out.push_str(NH_NS);
    out.push_str("\" xmlns:i=\"");
    out.push_str(XSI_NS);
    out.push_str("\">");
    if let Some(e) = &r.etag {
        xml::leaf(out, "ETag", e);
    }
    let exp = r
        .expiration_time
        .map_or_else(|| NEVER.to_string(), crate::time::rfc3339::format);
    xml::leaf(out, "ExpirationTime", &exp);
    if let Some(id) = &r.registration_id {
        xml::leaf(out, "RegistrationId", id);
    }
    if !r.tags.is_empty() {
        let tags: Vec<&str> = r.tags.iter().map(Tag::as_str).collect();
        xml::leaf(out, "Tags", &tags.join(","));
    }
    match &r.handle {
        // Upper-case hex: the SDK's channel filter upper-cases APNs tokens (§4.5).
        PushHandle::Apns(_) => {
            xml::leaf(out, "DeviceToken", &r.handle.to_text().to_ascii_uppercase())
        }
        PushHandle::Fcm(t) => xml::leaf(out, "FcmV1RegistrationId", t),
        PushHandle::Wns(u) => xml::leaf(out, "ChannelUri", u),
        PushHandle::WebPush(w) => {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            xml::leaf(out, "Endpoint", w.endpoint());
            if push_secrets {
                xml::leaf(out, "P256DH", &b64.encode(w.p256dh()));
                xml::leaf(out, "Auth", &b64.encode(w.auth()));
            }
        }
    }
    if let Some(t) = &r.template {
        out.push_str("<BodyTemplate>");
        if one_line {
            // CDATA would carry the body's line breaks raw (see `description_line`).
            xml::escape_into(out, &t.body);
        } else {
            xml::cdata_into(out, &t.body);
        }
        out.push_str("</BodyTemplate>");
        let platform = r.handle.platform();
        if platform == Platform::Apns {
            if let Some(e) = &t.expiry {
                xml::leaf(out, "Expiry", e);
            }
        }
        if let Some(n) = &t.name {
            xml::leaf(out, "TemplateName", n);
        }
        let (list, item) = match platform {
            Platform::Apns => ("ApnsHeaders", "ApnsHeader"),
            Platform::Wns => ("WnsHeaders", "WnsHeader"),
            _ => ("", ""),
        };
        if !list.is_empty() && !t.headers.is_empty() {
            out.push('<');
            out.push_str(list);
            out.push('>');
            for (k, v) in &t.headers {
                out.push('<');
                out.push_str(item);
                out.push('>');
                xml::leaf(out, "Header", k);
                xml::leaf(out, "Value", v);
                out.push_str("</");
                out.push_str(item);
                out.push('>');
            }
            out.push_str("</");
            out.push_str(list);
            out.push('>');
        }
    }
    out.push_str("</");
    out.push_str(&name);
    out.push('>');
}

fn entry_into(out: &mut String, r: &Registration, ctx: &AtomContext, in_feed: bool) {
    out.push_str("<entry");
    if let Some(e) = &r.etag {
        out.push_str(" a:etag=\"");
        xml::escape_into(out, &format!("W/\"{e}\""));
        out.push('"');
    }
    if !in_feed {
        out.push_str(" xmlns=\"");
        out.push_str(ATOM_NAMESPACE);
        out.push('"');
    }
    out.push_str(" xmlns:a=\"");
    out.push_str(ADO_NS);
    out.push_str("\">");
    let updated = crate::time::rfc3339::format(ctx.updated);
    if let Some(id) = &r.registration_id {
        let url = ctx.self_url(id);
        xml::leaf(out, "id", &url);
        out.push_str("<title type=\"text\">");
        xml::escape_into(out, id);
        out.push_str("</title>");
        xml::leaf(out, "published", &updated);
        xml::leaf(out, "updated", &updated);
        out.push_str("<link rel=\"self\" href=\"");
        xml::escape_into(out, &url);
        out.push_str("\"/>");
    } else {
        xml::leaf(out, "updated", &updated);
    }
    out.push_str("<content type=\"application/xml\">");
    description_xml(out, r, ctx.push_secrets, false);
    out.push_str("</content></entry>");
}

/// One registration description on one line, Web Push secrets included: a row of an
/// import or export file (§4.7: one serialised registration description per line), which
/// [`parse_registration`] reads back. The template body is written as escaped text, and line
/// breaks anywhere as `&#xA;`, so that no row spans two lines.
pub fn description_line(r: &Registration) -> String {
    let mut out = String::with_capacity(512);
    description_xml(&mut out, r, true, true);
    // No CDATA section was written, so a reference means the same character everywhere.
    out.replace('\n', "&#xA;")
}

/// The `RegistrationId` of a registration description (a row of an import file naming the
/// registration to delete): the rest of the description is not checked.
pub fn registration_id_of(body: &str) -> Result<String, RegistrationError> {
    let root =
        xml::parse(body).map_err(|e| RegistrationError(format!("not well-formed XML: {e}")))?;
    let desc = match root.child("content") {
        Some(c) if root.name == "entry" => match c.children.as_slice() {
            [d] => d,
            _ => return rerr("<content> must hold exactly one registration description"),
        },
        _ => &root,
    };
    if !desc.name.ends_with("RegistrationDescription") {
        return rerr(format!(
            "<{}> is not a registration description (e.g. <AppleRegistrationDescription>)",
            short(&desc.name)
        ));
    }
    required(desc, "RegistrationId").map(str::to_string)
}

/// One registration as an Atom entry (answer of create, update and get).
pub fn entry_xml(r: &Registration, ctx: &AtomContext) -> String {
    let mut out = String::with_capacity(1024);
    entry_into(&mut out, r, ctx, false);
    out
}

/// A page of registrations as an Atom feed (answer of the list operations; the next page is
/// announced by the `x-ms-continuationtoken` header, not here).
pub fn feed_xml(regs: &[Registration], ctx: &AtomContext) -> String {
    let mut out = String::with_capacity(256 + 1024 * regs.len());
    out.push_str("<feed xmlns=\"");
    out.push_str(ATOM_NAMESPACE);
    out.push_str("\"><title type=\"text\">Registrations</title>");
    let url = format!("{}/registrations?api-version=2020-06", ctx.base_url);
    xml::leaf(&mut out, "id", &url);
    xml::leaf(
        &mut out,
        "updated",
        &crate::time::rfc3339::format(ctx.updated),
    );
    out.push_str("<link rel=\"self\" href=\"");
    xml::escape_into(&mut out, &url);
    out.push_str("\"/>");
    for r in regs {
        entry_into(&mut out, r, ctx, true);
    }
    out.push_str("</feed>");
    out
}

/// The ETag after `previous`: numeric ETags count up (Azure's `1`, `2`, …), anything else
/// restarts at `1`.
pub fn next_etag(previous: Option<&str>) -> String {
    previous
        .and_then(|p| p.parse::<u64>().ok())
        .map_or(1, |n| n.saturating_add(1))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;
    use std::time::Duration;

    fn secs(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    const PROLOG: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>";

    fn sdk_entry(desc: &str) -> String {
        format!("{PROLOG}<entry xmlns=\"http://www.w3.org/2005/Atom\"><updated>2024-01-01T00:00:00.000Z</updated><content type=\"application/xml\">{desc}</content></entry>")
    }

    fn ns(root: &str, inner: &str) -> String {
        format!("<{root} xmlns=\"{NH_NS}\" xmlns:i=\"{XSI_NS}\">{inner}</{root}>")
    }

    fn keys() -> (String, String) {
        let mut k = [9u8; 65];
        k[0] = 4;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        (b.encode(k), b.encode([2u8; 16]))
    }

    fn ctx() -> AtomContext {
        AtomContext {
            base_url: "https://localhost:8443/hub".into(),
            updated: secs(1_700_000_000),
            push_secrets: true,
        }
    }

    #[test]
    fn sdk_apple_entry() {
        // nh-rest-api.md §4.5 [TEST] (PushVariables empty here: non-empty ones are refused).
        let body = sdk_entry(&ns(
            "AppleRegistrationDescription",
            "<Tags>a,b</Tags><PushVariables>{}</PushVariables><DeviceToken>AB12</DeviceToken>",
        ));
        let r = parse_registration(&body).unwrap();
        assert_eq!(r.handle, PushHandle::apns("ab12").unwrap());
        assert_eq!(r.tags, [Tag::new("a").unwrap(), Tag::new("b").unwrap()]);
        assert_eq!(r.template, None);
        assert_eq!(r.registration_id, None);
        assert_eq!(r.element_name(), "AppleRegistrationDescription");
    }

    #[test]
    fn sdk_template_kinds() {
        let body = sdk_entry(&ns(
            "AppleTemplateRegistrationDescription",
            "<Tags>a, b</Tags><DeviceToken>AB12</DeviceToken><BodyTemplate><![CDATA[{\"aps\":{\"alert\":\"$(m)\"}}]]></BodyTemplate><TemplateName>t</TemplateName>\
<Expiry>Tue Jan 01 2030 00:00:00 GMT+0100 (Central European Standard Time)</Expiry><ApnsHeaders><ApnsHeader><Header>apns-push-type</Header><Value>alert</Value></ApnsHeader></ApnsHeaders>",
        ));
        let r = parse_registration(&body).unwrap();
        let t = r.template.clone().unwrap();
        assert_eq!(t.body, "{\"aps\":{\"alert\":\"$(m)\"}}");
        assert_eq!(t.name.as_deref(), Some("t"));
        assert_eq!(t.expiry.as_deref(), Some("2029-12-31T23:00:00Z"));
        assert_eq!(t.headers["apns-push-type"], "alert");
        assert_eq!(r.tags.len(), 2);

        let body = sdk_entry(&ns(
            "WindowsTemplateRegistrationDescription",
            "<ChannelUri>https://db5.notify.windows.com/?token=a&amp;b=c</ChannelUri><BodyTemplate><![CDATA[<toast>$(m)</toast>]]></BodyTemplate><WnsHeaders><WnsHeader><Header>X-WNS-Type</Header><Value>wns/toast</Value></WnsHeader></WnsHeaders>",
        ));
        let r = parse_registration(&body).unwrap();
        assert_eq!(
            r.handle,
            PushHandle::wns("https://db5.notify.windows.com/?token=a&b=c").unwrap()
        );
        assert_eq!(r.template.unwrap().headers["X-WNS-Type"], "wns/toast");

        let r = parse_registration(&sdk_entry(&ns("FcmV1TemplateRegistrationDescription", "<FcmV1RegistrationId>tok:1</FcmV1RegistrationId><BodyTemplate>{\"message\":{}}</BodyTemplate>"))).unwrap();
        assert_eq!(r.handle, PushHandle::fcm("tok:1").unwrap());
        assert_eq!(r.template.unwrap().body, "{\"message\":{}}");

        let (p, a) = keys();
        let r = parse_registration(&sdk_entry(&ns(
            "BrowserRegistrationDescription",
            &format!(
                "<Endpoint>https://push.example/x</Endpoint><P256DH>{p}</P256DH><Auth>{a}</Auth>"
            ),
        )))
        .unwrap();
        assert_eq!(r.handle.platform(), Platform::WebPush);
    }

    #[test]
    fn refusals() {
        for (desc, want) in [
            (
                ns(
                    "GcmRegistrationDescription",
                    "<GcmRegistrationId>x</GcmRegistrationId>",
                ),
                "FCM legacy",
            ),
            (ns("BaiduRegistrationDescription", ""), "is not supported"),
            (
                ns("FooRegistrationDescription", ""),
                "unknown registration kind <FooRegistrationDescription>",
            ),
            (ns("Apple", ""), "is not a registration description"),
            (
                ns("AppleRegistrationDescription", "<Tags>a</Tags>"),
                "<DeviceToken> is required",
            ),
            (
                ns(
                    "AppleRegistrationDescription",
                    "<DeviceToken>zz</DeviceToken>",
                ),
                "must be hex",
            ),
            (
                ns(
                    "AppleTemplateRegistrationDescription",
                    "<DeviceToken>ab</DeviceToken>",
                ),
                "<BodyTemplate> is required",
            ),
            (
                ns(
                    "AppleRegistrationDescription",
                    "<DeviceToken>ab</DeviceToken><Tags>a b</Tags>",
                ),
                "<Tags>:",
            ),
            (
                ns(
                    "AppleRegistrationDescription",
                    "<DeviceToken>ab</DeviceToken><PushVariables>{\"k\":\"v\"}</PushVariables>",
                ),
                "PushVariables",
            ),
            (
                ns(
                    "BrowserRegistrationDescription",
                    "<Endpoint>https://x/</Endpoint>",
                ),
                "<P256DH> is required",
            ),
        ] {
            let e = parse_registration(&sdk_entry(&desc))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{desc}\n  got: {e}\n want: {want}");
        }
        for (body, want) in [
            ("<entry><content/></entry>", "holds no registration"),
            ("<entry></entry>", "has no <content>"),
            ("<entry><content><a/><b/></content></entry>", "exactly one"),
            ("<entry>", "not well-formed"),
        ] {
            let e = parse_registration(body).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn entry_byte_exact() {
        let r = Registration {
            registration_id: Some("r1".into()),
            handle: PushHandle::apns("ab12").unwrap(),
            tags: vec![Tag::new("a").unwrap(), Tag::new("b").unwrap()],
            template: Some(RegistrationTemplate {
                name: Some("t".into()),
                body: "{\"aps\":{\"alert\":\"$(m)\"}}".into(),
                headers: [("apns-priority".to_string(), "10".to_string())].into(),
                expiry: None,
            }),
            expiration_time: None,
            etag: Some("3".into()),
        };
        assert_eq!(
            entry_xml(&r, &ctx()),
            "<entry a:etag=\"W/&quot;3&quot;\" xmlns=\"http://www.w3.org/2005/Atom\" xmlns:a=\"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata\">\
<id>https://localhost:8443/hub/registrations/r1?api-version=2020-06</id><title type=\"text\">r1</title>\
<published>2023-11-14T22:13:20Z</published><updated>2023-11-14T22:13:20Z</updated>\
<link rel=\"self\" href=\"https://localhost:8443/hub/registrations/r1?api-version=2020-06\"/>\
<content type=\"application/xml\"><AppleTemplateRegistrationDescription xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">\
<ETag>3</ETag><ExpirationTime>9999-12-31T23:59:59.9999999Z</ExpirationTime><RegistrationId>r1</RegistrationId><Tags>a,b</Tags><DeviceToken>AB12</DeviceToken>\
<BodyTemplate><![CDATA[{\"aps\":{\"alert\":\"$(m)\"}}]]></BodyTemplate><TemplateName>t</TemplateName>\
<ApnsHeaders><ApnsHeader><Header>apns-priority</Header><Value>10</Value></ApnsHeader></ApnsHeaders>\
</AppleTemplateRegistrationDescription></content></entry>"
        );
        // Round trip (ETag and ExpirationTime are answer-only).
        let back = parse_registration(&entry_xml(&r, &ctx())).unwrap();
        assert_eq!(back, Registration { etag: None, ..r });
    }

    #[test]
    fn feed_and_round_trips() {
        let (p, a) = keys();
        let regs = vec![
            Registration {
                registration_id: Some("r1".into()),
                handle: PushHandle::wns("https://db5.notify.windows.com/?token=a&b=c").unwrap(),
                tags: vec![],
                template: Some(RegistrationTemplate {
                    name: None,
                    body: "<toast>]]></toast>".into(),
                    headers: [("X-WNS-Type".to_string(), "wns/toast".to_string())].into(),
                    expiry: None,
                }),
                expiration_time: Some(secs(1_800_000_000)),
                etag: Some("1".into()),
            },
            Registration {
                registration_id: Some("r2".into()),
                handle: PushHandle::web_push("https://push.example/x", &p, &a).unwrap(),
                tags: vec![Tag::new("t").unwrap()],
                template: None,
                expiration_time: None,
                etag: None,
            },
        ];
        let feed = feed_xml(&regs, &ctx());
        assert!(feed.starts_with("<feed xmlns=\"http://www.w3.org/2005/Atom\"><title type=\"text\">Registrations</title><id>https://localhost:8443/hub/registrations?api-version=2020-06</id>"), "{feed}");
        let el = xml::parse(&feed).unwrap();
        let entries: Vec<_> = el.children_named("entry").collect();
        assert_eq!(entries.len(), 2);
        for (e, r) in entries.iter().zip(&regs) {
            let d = &e.child("content").unwrap().children[0];
            assert_eq!(d.child("ETag").map(|x| x.text.clone()), r.etag);
            let back = parse_description(d).unwrap();
            assert_eq!(
                back,
                Registration {
                    etag: None,
                    expiration_time: None,
                    ..r.clone()
                }
            );
        }
        assert!(feed.contains("<ExpirationTime>2027-01-15T08:00:00Z</ExpirationTime>"));
        assert_eq!(
            xml::parse(&feed_xml(&[], &ctx()))
                .unwrap()
                .children_named("entry")
                .count(),
            0
        );
    }

    #[test]
    fn lines_are_one_line_and_read_back() {
        let (p, a) = keys();
        let r = Registration {
            registration_id: Some("r1".into()),
            handle: PushHandle::web_push("https://push.example/x", &p, &a).unwrap(),
            tags: vec![Tag::new("t").unwrap()],
            template: Some(RegistrationTemplate {
                name: Some("n".into()),
                body: "{\"a\":\n\"b\"}\r\n]]>".into(),
                headers: BTreeMap::new(),
                expiry: None,
            }),
            expiration_time: None,
            etag: None,
        };
        let line = description_line(&r);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert!(
            line.starts_with("<BrowserTemplateRegistrationDescription "),
            "{line}"
        );
        assert!(
            line.contains(&format!("<P256DH>{p}</P256DH>")),
            "secrets: {line}"
        );
        assert_eq!(parse_registration(&line).unwrap(), r);
        assert_eq!(registration_id_of(&line).unwrap(), "r1");
        assert_eq!(
            registration_id_of("<AppleRegistrationDescription><RegistrationId> x </RegistrationId></AppleRegistrationDescription>")
                .unwrap(),
            "x"
        );
        assert_eq!(
            registration_id_of(&sdk_entry(&ns(
                "FcmV1RegistrationDescription",
                "<RegistrationId>e</RegistrationId>"
            )))
            .unwrap(),
            "e"
        );
        for (body, want) in [
            (
                "<AppleRegistrationDescription/>",
                "<RegistrationId> is required",
            ),
            (
                "<Apple><RegistrationId>x</RegistrationId></Apple>",
                "not a registration",
            ),
            ("<a", "not well-formed"),
        ] {
            let e = registration_id_of(body).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn installation_mapping() {
        let r = parse_registration(&sdk_entry(&ns("FcmV1TemplateRegistrationDescription", "<Tags>a</Tags><FcmV1RegistrationId>tok</FcmV1RegistrationId><BodyTemplate>{}</BodyTemplate>"))).unwrap();
        let inst = r.to_installation(InstallationId::new("r9").unwrap());
        assert_eq!(
            inst.templates.keys().collect::<Vec<_>>(),
            [DEFAULT_TEMPLATE_NAME]
        );
        let mut inst = inst;
        inst.last_update = UNIX_EPOCH + Duration::from_millis(1234);
        let back = Registration::from_installation(&inst);
        assert_eq!(back.registration_id.as_deref(), Some("r9"));
        assert_eq!(back.etag.as_deref(), Some("1234"));
        assert_eq!(back.template, r.template);
        assert_eq!(back.tags, r.tags);
        assert_eq!(next_etag(Some("1234")), "1235");
        assert_eq!(next_etag(Some("W/x")), "1");
        assert_eq!(next_etag(None), "1");
    }

    #[test]
    fn js_dates() {
        assert_eq!(
            js_date_to_rfc3339("Tue Jan 01 2030 00:00:00 GMT+0000 (Coordinated Universal Time)")
                .as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        assert_eq!(
            js_date_to_rfc3339("Mon Jun 03 2024 09:30:00 GMT-0700 (Pacific Daylight Time)")
                .as_deref(),
            Some("2024-06-03T16:30:00Z")
        );
        assert_eq!(js_date_to_rfc3339("$(expiry)"), None);
        assert_eq!(js_date_to_rfc3339("2030-01-01T00:00:00Z"), None);
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = parse_registration(&s);
        }

        #[test]
        fn structured_never_panics(
            kind in "(Apple|FcmV1|Windows|Browser|Gcm|X)(Template)?",
            tags in "[a-z, ]{0,20}",
            handle in "[ -~]{0,30}",
            body in "\\PC{0,40}",
        ) {
            let mut inner = format!("<Tags>{}</Tags><DeviceToken>{h}</DeviceToken><FcmV1RegistrationId>{h}</FcmV1RegistrationId><ChannelUri>{h}</ChannelUri><Endpoint>{h}</Endpoint><P256DH>{h}</P256DH><Auth>{h}</Auth><BodyTemplate>",
                xml::escape(&tags), h = xml::escape(&handle));
            xml::cdata_into(&mut inner, &body);
            inner.push_str("</BodyTemplate>");
            let doc = sdk_entry(&ns(&format!("{kind}RegistrationDescription"), &inner));
            if let Ok(r) = parse_registration(&doc) {
                let back = parse_registration(&entry_xml(&r, &ctx())).unwrap();
                prop_assert_eq!(&back, &r);
                // The one-line row of import/export files too.
                let line = description_line(&r);
                prop_assert!(!line.contains('\n'));
                prop_assert_eq!(parse_registration(&line).unwrap(), r);
            }
        }
    }
}
