//! Notification Hubs installation JSON (nh-rest-api.md §4.1, §5) ⇄ [`Installation`], and the
//! PATCH body (a JSON array of `{op, path, value}`) ⇄ [`PatchOp`]s.
//!
//! Input rules: `platform` case-insensitive (`apns`, `fcmv1`, `wns`, `browser`; `gcm` refused
//! because Google retired FCM legacy; `adm`, `baidu`, `xiaomi`, `mpns` refused as
//! unsupported); `pushChannel` a string, or `{endpoint, p256dh, auth}` for `browser`; the
//! read-only fields the SDK copies back from a GET (`expirationTime`, `lastUpdate`,
//! `lastActiveOn`, `pushChannelExpired`, `expiredPushChannel`) and the obsolete WNS
//! `secondaryTiles` are ignored; unknown fields are ignored (the SDK forwards whatever the
//! caller put in the object). `pushVariables` is refused when not empty: tagcast's
//! installations have no per-installation variables, and dropping them silently would render
//! templates differently from Azure. Every error names the field.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::model::Tag;
use crate::model::{Installation, InstallationId, PatchOp, Platform, Template, UserId};
use crate::model::{InvalidInput, PushHandle};

/// What the JSON of an installation or a PATCH got wrong (answer 400 with the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct JsonError {
    /// Where: `installationId`, `templates.t1.body`, `[2].path`, ….
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn jerr<T>(field: impl Into<String>, problem: impl Into<String>) -> Result<T, JsonError> {
    Err(JsonError {
        field: field.into(),
        problem: problem.into(),
    })
}

fn invalid(field: impl Into<String>) -> impl FnOnce(InvalidInput) -> JsonError {
    let field = field.into();
    move |e| JsonError {
        field,
        problem: e.to_string(),
    }
}

fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, JsonError> {
    match v {
        Value::String(s) => Ok(s),
        other => jerr(
            field,
            format!(
                "must be a string, not {}",
                crate::payload::json_type_name(other)
            ),
        ),
    }
}

/// A platform name of Notification Hubs (§5): `apns`, `fcmv1` (`fcmV1`, `FcmV1`), `wns`,
/// `browser`, any case; tagcast's own names (`fcm`, `webpush`) are accepted too.
pub fn parse_platform(s: &str) -> Result<Platform, JsonError> {
    match s.to_ascii_lowercase().as_str() {
        "apns" => Ok(Platform::Apns),
        "fcmv1" | "fcm" => Ok(Platform::Fcm),
        "wns" => Ok(Platform::Wns),
        "browser" | "webpush" => Ok(Platform::WebPush),
        "gcm" => jerr(
            "platform",
            "\"gcm\" (FCM legacy) is not supported: Google retired the legacy FCM API; register with platform \"fcmv1\"",
        ),
        "adm" | "baidu" | "xiaomi" | "mpns" => jerr(
            "platform",
            format!("{s:?} is not supported (supported: apns, fcmv1, wns, browser)"),
        ),
        _ => jerr(
            "platform",
            format!(
                "unknown platform {:?} (known: apns, fcmv1, wns, browser)",
                s.chars().take(40).collect::<String>()
            ),
        ),
    }
}

/// The platform's name in installation JSON (what a GET returns).
pub fn platform_name(p: Platform) -> &'static str {
    match p {
        Platform::Apns => "apns",
        Platform::Fcm => "fcmv1",
        Platform::Wns => "wns",
        Platform::WebPush => "browser",
    }
}

/// A `pushChannel` for `platform`: a string, or for `browser` an object
/// `{endpoint, p256dh, auth}` (also accepted as that object serialized into a string, the
/// form a PATCH `value` declared `string` takes).
pub fn parse_push_channel(
    platform: Platform,
    v: &Value,
    field: &str,
) -> Result<PushHandle, JsonError> {
    match (platform, v) {
        (Platform::WebPush, Value::Object(o)) => {
            let get = |k: &str| -> Result<&str, JsonError> {
                let f = format!("{field}.{k}");
                match o.get(k) {
                    Some(v) => string(v, &f),
                    None => jerr(f, "is required"),
                }
            };
            PushHandle::web_push(get("endpoint")?, get("p256dh")?, get("auth")?)
                .map_err(invalid(field))
        }
        (Platform::WebPush, Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(obj @ Value::Object(_)) => parse_push_channel(platform, &obj, field),
            _ => jerr(
                field,
                "for browser must be an object {\"endpoint\", \"p256dh\", \"auth\"}",
            ),
        },
        (Platform::Apns, Value::String(s)) => PushHandle::apns(s.trim()).map_err(invalid(field)),
        (Platform::Fcm, Value::String(s)) => PushHandle::fcm(s.trim()).map_err(invalid(field)),
        (Platform::Wns, Value::String(s)) => PushHandle::wns(s.trim()).map_err(invalid(field)),
        (_, other) => jerr(
            field,
            format!(
                "must be a string, not {}",
                crate::payload::json_type_name(other)
            ),
        ),
    }
}

fn parse_tags(v: &Value, field: &str) -> Result<Vec<Tag>, JsonError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![Tag::new(s).map_err(|e| JsonError {
            field: field.into(),
            problem: e.to_string(),
        })?]),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = format!("{field}[{i}]");
                Tag::new(string(t, &f)?).map_err(|e| JsonError {
                    field: f,
                    problem: e.to_string(),
                })
            })
            .collect(),
        other => jerr(
            field,
            format!(
                "must be an array of strings, not {}",
                crate::payload::json_type_name(other)
            ),
        ),
    }
}

fn parse_headers(v: &Value, field: &str) -> Result<BTreeMap<String, String>, JsonError> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| Ok((k.clone(), string(v, &format!("{field}.{k}"))?.to_string())))
            .collect(),
        // A PATCH value is declared `string`: accept the object serialized into one.
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(obj @ Value::Object(_)) => parse_headers(&obj, field),
            _ => jerr(field, "must be an object of header name to string value"),
        },
        other => jerr(
            field,
            format!(
                "must be an object, not {}",
                crate::payload::json_type_name(other)
            ),
        ),
    }
}

/// One template object `{body, headers?, tags?, expiry?}` (§5).
pub fn parse_template(v: &Value, field: &str) -> Result<Template, JsonError> {
    let o = match v {
        Value::Object(o) => o,
        // `add /templates/<name>` carries the object serialized as a JSON string (§5).
        Value::String(s) => {
            return match serde_json::from_str::<Value>(s) {
                Ok(obj @ Value::Object(_)) => parse_template(&obj, field),
                _ => jerr(
                    field,
                    "must be a template object {\"body\", \"headers\", \"tags\", \"expiry\"}",
                ),
            }
        }
        other => {
            return jerr(
                field,
                format!(
                    "must be an object, not {}",
                    crate::payload::json_type_name(other)
                ),
            )
        }
    };
    let body = match o.get("body") {
        Some(b) => string(b, &format!("{field}.body"))?.to_string(),
        None => return jerr(format!("{field}.body"), "is required"),
    };
    let headers = match o.get("headers") {
        Some(h) => parse_headers(h, &format!("{field}.headers"))?,
        None => BTreeMap::new(),
    };
    let tags = match o.get("tags") {
        Some(t) => parse_tags(t, &format!("{field}.tags"))?,
        None => Vec::new(),
    };
    let expiry = match o.get("expiry") {
        None | Some(Value::Null) => None,
        Some(e) => Some(string(e, &format!("{field}.expiry"))?.to_string()),
    };
    Ok(Template {
        body,
        headers,
        tags,
        expiry,
    })
}

fn object<'a>(json: &'a Value, what: &str) -> Result<&'a Map<String, Value>, JsonError> {
    match json {
        Value::Object(o) => Ok(o),
        other => jerr(
            what,
            format!(
                "the body must be a JSON object, not {}",
                crate::payload::json_type_name(other)
            ),
        ),
    }
}

/// Parses the body of `PUT /installations/{id}`. `url_id` is the id from the path: the
/// body's `installationId` must equal it when present, and is taken from it when absent.
pub fn parse_installation(
    body: &[u8],
    url_id: Option<&InstallationId>,
) -> Result<Installation, JsonError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| JsonError {
        field: "(body)".into(),
        problem: format!("not JSON: {e}"),
    })?;
    let o = object(&json, "(body)")?;
    let id = match (o.get("installationId"), url_id) {
        (Some(v), url) => {
            let id = InstallationId::new(string(v, "installationId")?)
                .map_err(invalid("installationId"))?;
            if let Some(u) = url {
                if *u != id {
                    return jerr(
                        "installationId",
                        format!(
                            "{:?} differs from the id in the URL {:?}",
                            id.as_str(),
                            u.as_str()
                        ),
                    );
                }
            }
            id
        }
        (None, Some(u)) => u.clone(),
        (None, None) => return jerr("installationId", "is required"),
    };
    let platform = match o.get("platform") {
        Some(p) => parse_platform(string(p, "platform")?)?,
        None => return jerr("platform", "is required"),
    };
    let handle = match o.get("pushChannel") {
        Some(v) => parse_push_channel(platform, v, "pushChannel")?,
        None => return jerr("pushChannel", "is required"),
    };
    let mut inst = Installation::new(id, handle);
    if let Some(t) = o.get("tags") {
        inst.tags = parse_tags(t, "tags")?;
    }
    match o.get("userId") {
        None | Some(Value::Null) => {}
        Some(u) => {
            inst.user_id = Some(UserId::new(string(u, "userId")?).map_err(invalid("userId"))?)
        }
    }
    match o.get("templates") {
        None | Some(Value::Null) => {}
        Some(Value::Object(ts)) => {
            for (name, t) in ts {
                inst.templates.insert(
                    name.clone(),
                    parse_template(t, &format!("templates.{name}"))?,
                );
            }
        }
        Some(other) => {
            return jerr(
                "templates",
                format!(
                    "must be an object, not {}",
                    crate::payload::json_type_name(other)
                ),
            )
        }
    }
    match o.get("pushVariables") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.is_empty() => {}
        Some(_) => {
            return jerr(
                "pushVariables",
                "is not supported: put the values in the template send's properties instead",
            )
        }
    }
    Ok(inst)
}

/// The JSON answer of `GET /installations/{id}` with the fields the SDK and Azure's clients
/// read: `installationId`, `platform`, `pushChannel` (an object for browser, `p256dh`/`auth`
/// base64url without padding; APNs tokens as lower-case hex), `pushChannelExpired`,
/// `expirationTime` (Azure's `9999-12-31T23:59:59.9999999Z` when it never expires),
/// `lastUpdate`, and `tags`, `userId`, `templates` when present.
pub fn installation_to_json(inst: &Installation) -> String {
    installation_to_json_for(inst, true)
}

/// [`installation_to_json`], with the Web Push subscription's secrets (`p256dh`, `auth`)
/// only when `push_secrets` (a Manage key; a Listen key never reads them).
pub fn installation_to_json_for(inst: &Installation, push_secrets: bool) -> String {
    let mut o = Map::new();
    o.insert("installationId".into(), inst.id.as_str().into());
    o.insert("platform".into(), platform_name(inst.platform()).into());
    let mut channel = push_channel_json(&inst.handle);
    if let (false, Value::Object(m)) = (push_secrets, &mut channel) {
        m.remove("p256dh");
        m.remove("auth");
    }
    o.insert("pushChannel".into(), channel);
    o.insert(
        "pushChannelExpired".into(),
        inst.push_channel_expired.into(),
    );
    o.insert(
        "expirationTime".into(),
        match inst.expiration_time {
            Some(t) => crate::time::rfc3339::format(t),
            None => NEVER.to_string(),
        }
        .into(),
    );
    o.insert(
        "lastUpdate".into(),
        crate::time::rfc3339::format(inst.last_update).into(),
    );
    if !inst.tags.is_empty() {
        o.insert("tags".into(), tags_json(&inst.tags));
    }
    if let Some(u) = &inst.user_id {
        o.insert("userId".into(), u.as_str().into());
    }
    if !inst.templates.is_empty() {
        let ts: Map<String, Value> = inst
            .templates
            .iter()
            .map(|(name, t)| (name.clone(), template_json(t)))
            .collect();
        o.insert("templates".into(), Value::Object(ts));
    }
    Value::Object(o).to_string()
}

/// Azure's "never expires" (nh-rest-api.md §5, tagged REC).
pub const NEVER: &str = "9999-12-31T23:59:59.9999999Z";

fn tags_json(tags: &[Tag]) -> Value {
    Value::Array(tags.iter().map(|t| Value::from(t.as_str())).collect())
}

fn push_channel_json(h: &PushHandle) -> Value {
    match h {
        PushHandle::WebPush(w) => {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            serde_json::json!({
                "endpoint": w.endpoint(),
                "p256dh": b64.encode(w.p256dh()),
                "auth": b64.encode(w.auth()),
            })
        }
        other => other.to_text().into(),
    }
}

fn template_json(t: &Template) -> Value {
    let mut o = Map::new();
    o.insert("body".into(), t.body.clone().into());
    if !t.headers.is_empty() {
        o.insert(
            "headers".into(),
            Value::Object(
                t.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect(),
            ),
        );
    }
    if !t.tags.is_empty() {
        o.insert("tags".into(), tags_json(&t.tags));
    }
    if let Some(e) = &t.expiry {
        o.insert("expiry".into(), e.clone().into());
    }
    Value::Object(o)
}

/// Parses a PATCH body (§4.1, §5) against the installation it applies to.
///
/// `current` is needed because Notification Hubs' PATCH addresses parts that [`PatchOp`] does
/// not (template parts, the whole tag list): those become whole-template or per-tag ops
/// computed from `current` and the earlier ops of the same body. The server must therefore
/// apply the result to the same version of the installation it passed here (read and apply
/// under one lock, or retry on a conflict).
///
/// | op and path | becomes |
/// |---|---|
/// | `add /tags` (string or array) | `AddTags` |
/// | `replace /tags` | `RemoveTag` for each current tag, then `AddTags` |
/// | `remove /tags` | `RemoveTag` for each current tag |
/// | `remove /tags/{tag}` | `RemoveTag` |
/// | `add`/`replace /userId`, `remove /userId` | `SetUser` |
/// | `add`/`replace /pushChannel` | `SetHandle` (same platform) |
/// | `add`/`replace /templates/{name}` (object, or object serialized in a string) | `AddTemplate` |
/// | `remove /templates/{name}` | `RemoveTemplate` |
/// | `add`/`replace /templates/{name}/body\|headers\|expiry`, `remove …/headers\|expiry` | `AddTemplate` with that part changed |
/// | `add /templates/{name}/tags` (appends), `replace …/tags`, `remove …/tags`, `remove …/tags/{tag}` | `AddTemplate` with the tags changed |
///
/// Refused with a message: `remove /pushChannel`, `/installationId`, `/platform`, read-only
/// fields (`/expirationTime`, `/lastUpdate`, `/pushChannelExpired`), `/pushVariables…`,
/// `/secondaryTiles…`, template parts of a template that does not exist, ops other than
/// `add`, `remove`, `replace`. Property names and ops compare ASCII case-insensitively.
pub fn parse_patch(body: &[u8], current: &Installation) -> Result<Vec<PatchOp>, JsonError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| JsonError {
        field: "(body)".into(),
        problem: format!("not JSON: {e}"),
    })?;
    let Value::Array(items) = json else {
        return jerr(
            "(body)",
            format!(
                "must be a JSON array of operations, not {}",
                crate::payload::json_type_name(&json)
            ),
        );
    };
    let platform = current.platform();
    let mut tags = current.tags.clone();
    let mut templates = current.templates.clone();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = |k: &str| format!("[{i}].{k}");
        let o = match item {
            Value::Object(o) => o,
            other => {
                return jerr(
                    format!("[{i}]"),
                    format!(
                        "must be an object, not {}",
                        crate::payload::json_type_name(other)
                    ),
                )
            }
        };
        let op = match o.get("op") {
            Some(v) => string(v, &at("op"))?.to_ascii_lowercase(),
            None => return jerr(at("op"), "is required"),
        };
        let Some(path) = o.get("path") else {
            return jerr(at("path"), "is required");
        };
        let path = string(path, &at("path"))?;
        let value = o.get("value");
        let need_value = || -> Result<&Value, JsonError> {
            value.ok_or_else(|| JsonError {
                field: at("value"),
                problem: format!("is required for {op} {path}"),
            })
        };
        let vfield = at("value");
        let Some(rest) = path.strip_prefix('/') else {
            return jerr(at("path"), format!("{path:?} must start with '/'"));
        };
        let segs: Vec<&str> = rest.split('/').collect();
        let seg0 = segs[0].to_ascii_lowercase();
        let unsupported = |why: &str| jerr(at("path"), format!("{op} {path}: {why}"));
        match (op.as_str(), seg0.as_str(), segs.len()) {
            ("add" | "remove" | "replace", _, _) => {}
            _ => {
                return jerr(
                    at("op"),
                    format!("{op:?} is not supported (add, remove, replace)"),
                )
            }
        }
        match (seg0.as_str(), segs.len(), op.as_str()) {
            ("tags", 1, "add") => {
                let new = parse_tags(need_value()?, &vfield)?;
                for t in &new {
                    if !tags.contains(t) {
                        tags.push(t.clone());
                    }
                }
                out.push(PatchOp::AddTags(new));
            }
            ("tags", 1, "remove" | "replace") => {
                let new = if op == "replace" {
                    Some(parse_tags(need_value()?, &vfield)?)
                } else {
                    None
                };
                for t in tags.drain(..) {
                    out.push(PatchOp::RemoveTag(t));
                }
                if let Some(new) = new {
                    for t in &new {
                        if !tags.contains(t) {
                            tags.push(t.clone());
                        }
                    }
                    out.push(PatchOp::AddTags(new));
                }
            }
            ("tags", 2, "remove") => {
                let t = Tag::new(segs[1]).map_err(|e| JsonError {
                    field: at("path"),
                    problem: e.to_string(),
                })?;
                tags.retain(|x| *x != t);
                out.push(PatchOp::RemoveTag(t));
            }
            ("tags", _, _) => return unsupported("use add /tags or remove /tags/{tag}"),
            ("userid", 1, "add" | "replace") => {
                let u = UserId::new(string(need_value()?, &vfield)?).map_err(invalid(vfield))?;
                out.push(PatchOp::SetUser(Some(u)));
            }
            ("userid", 1, "remove") => out.push(PatchOp::SetUser(None)),
            ("pushchannel", 1, "add" | "replace") => {
                out.push(PatchOp::SetHandle(parse_push_channel(
                    platform,
                    need_value()?,
                    &vfield,
                )?));
            }
            ("pushchannel", 1, "remove") => {
                return unsupported(
                    "an installation must have a push channel; delete the installation instead",
                )
            }
            ("templates", 2, "add" | "replace") => {
                let name = template_name(segs[1], &at("path"))?;
                let t = parse_template(need_value()?, &vfield)?;
                templates.insert(name.clone(), t.clone());
                out.push(PatchOp::AddTemplate(name, t));
            }
            ("templates", 2, "remove") => {
                let name = template_name(segs[1], &at("path"))?;
                templates.remove(&name);
                out.push(PatchOp::RemoveTemplate(name));
            }
            ("templates", 3 | 4, _) => {
                let name = template_name(segs[1], &at("path"))?;
                let Some(t) = templates.get_mut(&name) else {
                    return jerr(
                        at("path"),
                        format!("template {name:?} does not exist; add /templates/{name} first"),
                    );
                };
                let part = segs[2].to_ascii_lowercase();
                match (part.as_str(), segs.len(), op.as_str()) {
                    ("body", 3, "add" | "replace") => {
                        t.body = string(need_value()?, &vfield)?.to_string()
                    }
                    ("headers", 3, "add" | "replace") => {
                        t.headers = parse_headers(need_value()?, &vfield)?
                    }
                    ("headers", 3, "remove") => t.headers.clear(),
                    ("expiry", 3, "add" | "replace") => {
                        t.expiry = Some(string(need_value()?, &vfield)?.to_string())
                    }
                    ("expiry", 3, "remove") => t.expiry = None,
                    ("tags", 3, "add") => {
                        for tag in parse_tags(need_value()?, &vfield)? {
                            if !t.tags.contains(&tag) {
                                t.tags.push(tag);
                            }
                        }
                    }
                    ("tags", 3, "replace") => t.tags = parse_tags(need_value()?, &vfield)?,
                    ("tags", 3, "remove") => t.tags.clear(),
                    ("tags", 4, "remove") => {
                        let tag = Tag::new(segs[3]).map_err(|e| JsonError {
                            field: at("path"),
                            problem: e.to_string(),
                        })?;
                        t.tags.retain(|x| *x != tag);
                    }
                    ("body", 3, "remove") => return unsupported("a template must have a body"),
                    _ => {
                        return unsupported(
                            "known template parts are body, headers, tags, tags/{tag}, expiry",
                        )
                    }
                }
                out.push(PatchOp::AddTemplate(name, t.clone()));
            }
            ("installationid" | "platform", _, _) => {
                return unsupported("cannot be changed; create a new installation")
            }
            (
                "expirationtime" | "lastupdate" | "pushchannelexpired" | "expiredpushchannel"
                | "lastactiveon",
                _,
                _,
            ) => return unsupported("is read-only"),
            ("pushvariables", _, _) => return unsupported("pushVariables are not supported"),
            ("secondarytiles", _, _) => {
                return unsupported("secondaryTiles (obsolete WNS) are not supported")
            }
            _ => return unsupported("unknown path"),
        }
    }
    Ok(out)
}

fn template_name(seg: &str, field: &str) -> Result<String, JsonError> {
    if seg.is_empty() {
        return jerr(field, "the template name is empty");
    }
    Ok(seg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p256() -> String {
        let mut k = [7u8; 65];
        k[0] = 4;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k)
    }
    fn auth() -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 16])
    }
    fn id(s: &str) -> InstallationId {
        InstallationId::new(s).unwrap()
    }
    fn tag(s: &str) -> Tag {
        Tag::new(s).unwrap()
    }

    /// The SDK's request body from nh-rest-api.md §4.1 [TEST].
    const SDK_APNS: &str = r#"{"installationId":"inst1","pushChannel":"AB12","tags":["a","b"],"templates":{"t1":{"body":"{\"aps\":{\"alert\":\"$(msg)\"}}","headers":{"apns-priority":"10"},"tags":["x"]}},"userId":"u1","platform":"apns"}"#;

    #[test]
    fn sdk_apns_body() {
        let inst = parse_installation(SDK_APNS.as_bytes(), Some(&id("inst1"))).unwrap();
        assert_eq!(inst.id.as_str(), "inst1");
        assert_eq!(inst.handle, PushHandle::apns("ab12").unwrap());
        assert_eq!(inst.tags, [tag("a"), tag("b")]);
        assert_eq!(inst.user_id.as_ref().map(|u| u.as_str()), Some("u1"));
        let t = &inst.templates["t1"];
        assert_eq!(t.body, "{\"aps\":{\"alert\":\"$(msg)\"}}");
        assert_eq!(t.headers["apns-priority"], "10");
        assert_eq!(t.tags, [tag("x")]);
        assert_eq!(t.expiry, None);
    }

    #[test]
    fn platforms_and_channels() {
        for (p, ch, want) in [
            ("FcmV1", "\"tok:1\"", Platform::Fcm),
            ("fcmV1", "\"tok:1\"", Platform::Fcm),
            (
                "WNS",
                "\"https://db5.notify.windows.com/?token=x\"",
                Platform::Wns,
            ),
            ("APNS", "\"ab\"", Platform::Apns),
        ] {
            let body = format!(r#"{{"installationId":"i","platform":"{p}","pushChannel":{ch}}}"#);
            assert_eq!(
                parse_installation(body.as_bytes(), None)
                    .unwrap()
                    .platform(),
                want
            );
        }
        let body = format!(
            r#"{{"installationId":"i","platform":"browser","pushChannel":{{"endpoint":"https://push/x","p256dh":"{}","auth":"{}"}}}}"#,
            p256(),
            auth()
        );
        let inst = parse_installation(body.as_bytes(), None).unwrap();
        assert_eq!(inst.platform(), Platform::WebPush);
        // GET output round-trips (browser keys as base64url).
        let again = parse_installation(installation_to_json(&inst).as_bytes(), None).unwrap();
        assert_eq!(again.handle, inst.handle);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                r#"{"installationId":"i","platform":"gcm","pushChannel":"x"}"#,
                "platform: \"gcm\" (FCM legacy) is not supported",
            ),
            (
                r#"{"installationId":"i","platform":"baidu","pushChannel":"x"}"#,
                "platform: \"baidu\" is not supported",
            ),
            (
                r#"{"installationId":"i","platform":"nokia","pushChannel":"x"}"#,
                "platform: unknown platform \"nokia\"",
            ),
            (
                r#"{"installationId":"i","pushChannel":"x"}"#,
                "platform: is required",
            ),
            (
                r#"{"installationId":"i","platform":"apns"}"#,
                "pushChannel: is required",
            ),
            (
                r#"{"installationId":"i","platform":"apns","pushChannel":"xyz"}"#,
                "pushChannel: apns push handle has an odd number",
            ),
            (
                r#"{"installationId":"i","platform":"apns","pushChannel":5}"#,
                "pushChannel: must be a string, not a number",
            ),
            (
                r#"{"installationId":"i","platform":"browser","pushChannel":{"endpoint":"https://x/"}}"#,
                "pushChannel.p256dh: is required",
            ),
            (
                r#"{"installationId":"i","platform":"apns","pushChannel":"ab","tags":["ok","b d"]}"#,
                "tags[1]:",
            ),
            (
                r#"{"installationId":"i","platform":"apns","pushChannel":"ab","templates":{"t":{"headers":{}}}}"#,
                "templates.t.body: is required",
            ),
            (
                r#"{"installationId":"i","platform":"apns","pushChannel":"ab","templates":{"t":{"body":"x","headers":{"h":1}}}}"#,
                "templates.t.headers.h: must be a string",
            ),
            (
                r#"{"installationId":"i","platform":"apns","pushChannel":"ab","pushVariables":{"a":"b"}}"#,
                "pushVariables: is not supported",
            ),
            (
                r#"{"installationId":"other","platform":"apns","pushChannel":"ab"}"#,
                "installationId: \"other\" differs from the id in the URL \"i\"",
            ),
            (
                r#"[1]"#,
                "(body): the body must be a JSON object, not an array",
            ),
            (r#"{"#, "(body): not JSON"),
        ];
        for (body, want) in cases {
            let e = parse_installation(body.as_bytes(), Some(&id("i")))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{body}\n  got: {e}\n want: {want}");
        }
    }

    #[test]
    fn read_only_fields_ignored_and_get_shape() {
        let body = r#"{"installationId":"i","platform":"apns","pushChannel":"AB","expirationTime":"9999-12-31T23:59:59.9999999Z","lastUpdate":"x","pushChannelExpired":true,"pushVariables":{},"secondaryTiles":{},"extra":1}"#;
        let inst = parse_installation(body.as_bytes(), None).unwrap();
        assert!(!inst.push_channel_expired);
        assert_eq!(inst.expiration_time, None);
        assert_eq!(
            installation_to_json(&inst),
            r#"{"expirationTime":"9999-12-31T23:59:59.9999999Z","installationId":"i","lastUpdate":"1970-01-01T00:00:00Z","platform":"apns","pushChannel":"ab","pushChannelExpired":false}"#
        );
        // The installation id comes from the URL when the body has none.
        let inst = parse_installation(br#"{"platform":"apns","pushChannel":"AB"}"#, Some(&id("u")))
            .unwrap();
        assert_eq!(inst.id.as_str(), "u");
    }

    #[test]
    fn round_trip_full() {
        let inst = parse_installation(SDK_APNS.as_bytes(), None).unwrap();
        let json = installation_to_json(&inst);
        let again = parse_installation(json.as_bytes(), None).unwrap();
        assert_eq!(again, inst);
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["templates"]["t1"]["headers"]["apns-priority"], "10");
        assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    }

    fn current() -> Installation {
        parse_installation(SDK_APNS.as_bytes(), None).unwrap()
    }

    #[test]
    fn patch_basic_ops() {
        let body = r#"[
            {"op":"add","path":"/tags","value":"c"},
            {"op":"add","path":"/tags","value":["d","e"]},
            {"op":"remove","path":"/tags/a"},
            {"op":"add","path":"/userId","value":"u2"},
            {"op":"remove","path":"/userId"},
            {"op":"replace","path":"/pushChannel","value":"CDEF"},
            {"op":"add","path":"/templates/t2","value":"{\"body\":\"{}\",\"headers\":{}}"},
            {"op":"remove","path":"/templates/t2"}
        ]"#;
        let ops = parse_patch(body.as_bytes(), &current()).unwrap();
        assert_eq!(
            ops,
            vec![
                PatchOp::AddTags(vec![tag("c")]),
                PatchOp::AddTags(vec![tag("d"), tag("e")]),
                PatchOp::RemoveTag(tag("a")),
                PatchOp::SetUser(Some(UserId::new("u2").unwrap())),
                PatchOp::SetUser(None),
                PatchOp::SetHandle(PushHandle::apns("cdef").unwrap()),
                PatchOp::AddTemplate(
                    "t2".into(),
                    Template {
                        body: "{}".into(),
                        ..Template::default()
                    }
                ),
                PatchOp::RemoveTemplate("t2".into()),
            ]
        );
    }

    #[test]
    fn patch_whole_tags_and_template_parts() {
        let body = r#"[
            {"op":"replace","path":"/tags","value":["z"]},
            {"op":"add","path":"/templates/t1/body","value":"{\"aps\":{}}"},
            {"op":"add","path":"/templates/t1/tags","value":"y"},
            {"op":"remove","path":"/templates/t1/tags/x"},
            {"op":"add","path":"/templates/t1/headers","value":{"apns-push-type":"alert"}},
            {"op":"add","path":"/templates/t1/expiry","value":"$(exp)"}
        ]"#;
        let ops = parse_patch(body.as_bytes(), &current()).unwrap();
        assert_eq!(
            &ops[..3],
            &[
                PatchOp::RemoveTag(tag("a")),
                PatchOp::RemoveTag(tag("b")),
                PatchOp::AddTags(vec![tag("z")])
            ]
        );
        // Each template-part op carries every earlier change to that template.
        let PatchOp::AddTemplate(name, t) = ops.last().unwrap() else {
            panic!("{ops:?}")
        };
        assert_eq!(name, "t1");
        assert_eq!(t.body, "{\"aps\":{}}");
        assert_eq!(t.tags, [tag("y")]);
        assert_eq!(t.headers.len(), 1);
        assert_eq!(t.headers["apns-push-type"], "alert");
        assert_eq!(t.expiry.as_deref(), Some("$(exp)"));
        assert_eq!(ops.len(), 3 + 5);
        assert_eq!(
            parse_patch(br#"[{"op":"remove","path":"/tags"}]"#, &current()).unwrap(),
            [PatchOp::RemoveTag(tag("a")), PatchOp::RemoveTag(tag("b"))]
        );
    }

    #[test]
    fn patch_refusals() {
        for (body, want) in [
            (r#"{}"#, "(body): must be a JSON array"),
            (
                r#"[{"op":"move","path":"/tags"}]"#,
                "[0].op: \"move\" is not supported",
            ),
            (r#"[{"path":"/tags"}]"#, "[0].op: is required"),
            (r#"[{"op":"add"}]"#, "[0].path: is required"),
            (
                r#"[{"op":"add","path":"/tags"}]"#,
                "[0].value: is required for add /tags",
            ),
            (
                r#"[{"op":"add","path":"tags","value":"a"}]"#,
                "[0].path: \"tags\" must start with '/'",
            ),
            (
                r#"[{"op":"remove","path":"/pushChannel"}]"#,
                "[0].path: remove /pushChannel: an installation must have",
            ),
            (
                r#"[{"op":"add","path":"/platform","value":"wns"}]"#,
                "[0].path: add /platform: cannot be changed",
            ),
            (
                r#"[{"op":"add","path":"/expirationTime","value":"x"}]"#,
                "[0].path: add /expirationTime: is read-only",
            ),
            (
                r#"[{"op":"add","path":"/pushVariables/a","value":"x"}]"#,
                "[0].path: add /pushVariables/a: pushVariables are not supported",
            ),
            (
                r#"[{"op":"add","path":"/templates/nope/body","value":"x"}]"#,
                "[0].path: template \"nope\" does not exist",
            ),
            (
                r#"[{"op":"add","path":"/templates/t1/priority","value":"x"}]"#,
                "[0].path: add /templates/t1/priority: known template parts",
            ),
            (
                r#"[{"op":"add","path":"/tags/x","value":"x"}]"#,
                "[0].path: add /tags/x: use add /tags",
            ),
            (
                r#"[{"op":"add","path":"/nope","value":"x"}]"#,
                "[0].path: add /nope: unknown path",
            ),
            (
                r#"[{"op":"add","path":"/tags","value":"a"},{"op":"add","path":"/userId","value":7}]"#,
                "[1].value: must be a string, not a number",
            ),
            (
                r#"[{"op":"add","path":"/pushChannel","value":"wxyz"}]"#,
                "[0].value: apns push handle contains 'w'",
            ),
        ] {
            let e = parse_patch(body.as_bytes(), &current())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{body}\n  got: {e}\n want: {want}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..200), s in "\\PC{0,200}") {
            let _ = parse_installation(&body, None);
            let _ = parse_installation(s.as_bytes(), Some(&id("i")));
            let _ = parse_patch(&body, &current());
            let _ = parse_patch(s.as_bytes(), &current());
        }

        #[test]
        fn structured_never_panics(
            platform in "(apns|fcmv1|wns|browser|gcm|x)",
            channel in "\\PC{0,40}",
            tags in proptest::collection::vec("\\PC{0,10}", 0..4),
            path in "/(tags|userId|pushChannel|templates)(/[a-z0-9]{0,3}){0,3}",
            op in "(add|remove|replace|copy)",
            value in "\\PC{0,20}",
        ) {
            let body = serde_json::json!({"installationId": "i", "platform": platform, "pushChannel": channel, "tags": tags});
            let _ = parse_installation(body.to_string().as_bytes(), None);
            let patch = serde_json::json!([{"op": op, "path": path, "value": value}]);
            let _ = parse_patch(patch.to_string().as_bytes(), &current());
        }
    }
}
