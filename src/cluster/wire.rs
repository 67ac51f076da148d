//! The wire format of routed writes (`<prefix>.<hub>.w.<p>`, node.rs): a request is one
//! operation on one installation, an answer says what the owner's registry did. JSON through
//! private structs: the model types are not `Serialize` (and stay free to change), and a
//! request is parsed back through the model's constructors, so an operation that decodes is
//! valid (the owner's registry still checks its own limits: tags, hosts, quota).
//!
//! Sans-IO: bytes in, values out; node.rs does the requests.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{
    Installation, InstallationId, PatchOp, Platform, PushHandle, Tag, Template, UserId,
    WriteOutcome,
};

/// An operation on the registry of the partition its id hashes to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Upsert(Installation),
    Delete(InstallationId),
    Get(InstallationId),
    Patch(InstallationId, Vec<PatchOp>),
}

impl Op {
    /// The installation the operation is about.
    pub(crate) fn id(&self) -> &InstallationId {
        match self {
            Op::Upsert(i) => &i.id,
            Op::Delete(id) | Op::Get(id) | Op::Patch(id, _) => id,
        }
    }
}

/// What the owner answered.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    Written(WriteOutcome),
    Deleted(bool),
    Found(Option<Box<Installation>>),
    /// This node does not serve the partition (any more): retry, the owner is changing.
    NotOwner,
    /// The registry refused the operation; its error text.
    Refused(String),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WireOp {
    Upsert { inst: WireInstallation },
    Delete { id: String },
    Get { id: String },
    Patch { id: String, ops: Vec<WirePatch> },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
enum WireReply {
    Written { outcome: WireOutcome },
    Deleted { existed: bool },
    Found { inst: Option<WireInstallation> },
    NotOwner,
    Refused { message: String },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireOutcome {
    Created,
    Updated,
    Unchanged,
}

#[derive(Serialize, Deserialize)]
struct WireHandle {
    platform: String,
    /// Hex for APNs, the token, the channel URI, the Web Push endpoint.
    value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p256dh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireTemplate {
    body: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireInstallation {
    id: String,
    handle: WireHandle,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    templates: BTreeMap<String, WireTemplate>,
    /// Milliseconds since the Unix epoch (the registry keeps times to the millisecond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    /// Read-only fields, carried so that a routed `get` returns what a local one does.
    #[serde(default)]
    channel_expired: bool,
    #[serde(default)]
    last_update_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WirePatch {
    AddTags {
        tags: Vec<String>,
    },
    RemoveTag {
        tag: String,
    },
    SetHandle {
        handle: WireHandle,
    },
    SetUser {
        user: Option<String>,
    },
    AddTemplate {
        name: String,
        template: WireTemplate,
    },
    RemoveTemplate {
        name: String,
    },
    SetExpiration {
        ms: Option<u64>,
    },
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn handle_out(h: &PushHandle) -> WireHandle {
    let (p256dh, auth) = match h {
        PushHandle::WebPush(w) => (
            Some(URL_SAFE_NO_PAD.encode(w.p256dh())),
            Some(URL_SAFE_NO_PAD.encode(w.auth())),
        ),
        _ => (None, None),
    };
    WireHandle {
        platform: h.platform().as_str().to_owned(),
        value: h.to_text(),
        p256dh,
        auth,
    }
}

fn handle_in(w: WireHandle) -> Result<PushHandle, String> {
    let platform: Platform = w
        .platform
        .parse()
        .map_err(|_| format!("unknown platform {:?}", w.platform))?;
    let r = match platform {
        Platform::Apns => PushHandle::apns(&w.value),
        Platform::Fcm => PushHandle::fcm(&w.value),
        Platform::Wns => PushHandle::wns(&w.value),
        Platform::WebPush => PushHandle::web_push(
            &w.value,
            w.p256dh.as_deref().unwrap_or_default(),
            w.auth.as_deref().unwrap_or_default(),
        ),
    };
    r.map_err(|e| e.to_string())
}

fn tags_in(tags: Vec<String>) -> Result<Vec<Tag>, String> {
    tags.into_iter()
        .map(|t| Tag::new(t).map_err(|e| e.to_string()))
        .collect()
}

fn template_out(t: &Template) -> WireTemplate {
    WireTemplate {
        body: t.body.clone(),
        headers: t.headers.clone(),
        tags: t.tags.iter().map(|t| t.as_str().to_owned()).collect(),
        expiry: t.expiry.clone(),
    }
}

fn template_in(t: WireTemplate) -> Result<Template, String> {
    Ok(Template {
        body: t.body,
        headers: t.headers,
        tags: tags_in(t.tags)?,
        expiry: t.expiry,
    })
}

fn installation_out(i: &Installation) -> WireInstallation {
    WireInstallation {
        id: i.id.as_str().to_owned(),
        handle: handle_out(&i.handle),
        tags: i.tags.iter().map(|t| t.as_str().to_owned()).collect(),
        user: i.user_id.as_ref().map(|u| u.as_str().to_owned()),
        templates: i
            .templates
            .iter()
            .map(|(n, t)| (n.clone(), template_out(t)))
            .collect(),
        expires_ms: i.expiration_time.map(ms),
        channel_expired: i.push_channel_expired,
        last_update_ms: ms(i.last_update),
    }
}

fn id_in(id: String) -> Result<InstallationId, String> {
    InstallationId::new(id).map_err(|e| e.to_string())
}

fn user_in(u: Option<String>) -> Result<Option<UserId>, String> {
    u.map(|u| UserId::new(u).map_err(|e| e.to_string()))
        .transpose()
}

fn installation_in(w: WireInstallation) -> Result<Installation, String> {
    let mut i = Installation::new(id_in(w.id)?, handle_in(w.handle)?);
    i.tags = tags_in(w.tags)?;
    i.user_id = user_in(w.user)?;
    for (name, t) in w.templates {
        i.templates.insert(name, template_in(t)?);
    }
    i.expiration_time = w.expires_ms.map(time);
    i.push_channel_expired = w.channel_expired;
    i.last_update = time(w.last_update_ms);
    Ok(i)
}

fn patch_out(op: &PatchOp) -> WirePatch {
    match op {
        PatchOp::AddTags(t) => WirePatch::AddTags {
            tags: t.iter().map(|t| t.as_str().to_owned()).collect(),
        },
        PatchOp::RemoveTag(t) => WirePatch::RemoveTag {
            tag: t.as_str().to_owned(),
        },
        PatchOp::SetHandle(h) => WirePatch::SetHandle {
            handle: handle_out(h),
        },
        PatchOp::SetUser(u) => WirePatch::SetUser {
            user: u.as_ref().map(|u| u.as_str().to_owned()),
        },
        PatchOp::AddTemplate(n, t) => WirePatch::AddTemplate {
            name: n.clone(),
            template: template_out(t),
        },
        PatchOp::RemoveTemplate(n) => WirePatch::RemoveTemplate { name: n.clone() },
        PatchOp::SetExpiration(t) => WirePatch::SetExpiration { ms: t.map(ms) },
    }
}

fn patch_in(w: WirePatch) -> Result<PatchOp, String> {
    Ok(match w {
        WirePatch::AddTags { tags } => PatchOp::AddTags(tags_in(tags)?),
        WirePatch::RemoveTag { tag } => {
            PatchOp::RemoveTag(Tag::new(tag).map_err(|e| e.to_string())?)
        }
        WirePatch::SetHandle { handle } => PatchOp::SetHandle(handle_in(handle)?),
        WirePatch::SetUser { user } => PatchOp::SetUser(user_in(user)?),
        WirePatch::AddTemplate { name, template } => {
            PatchOp::AddTemplate(name, template_in(template)?)
        }
        WirePatch::RemoveTemplate { name } => PatchOp::RemoveTemplate(name),
        WirePatch::SetExpiration { ms } => PatchOp::SetExpiration(ms.map(time)),
    })
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Only strings, numbers, booleans and maps with string keys: serialising cannot fail.
    serde_json::to_vec(v).expect("wire values serialise")
}

/// The request for `op`.
pub(crate) fn encode_op(op: &Op) -> Vec<u8> {
    let w = match op {
        Op::Upsert(i) => WireOp::Upsert {
            inst: installation_out(i),
        },
        Op::Delete(id) => WireOp::Delete {
            id: id.as_str().to_owned(),
        },
        Op::Get(id) => WireOp::Get {
            id: id.as_str().to_owned(),
        },
        Op::Patch(id, ops) => WireOp::Patch {
            id: id.as_str().to_owned(),
            ops: ops.iter().map(patch_out).collect(),
        },
    };
    to_json(&w)
}

/// A request read back; the error says what was wrong with it.
pub(crate) fn decode_op(b: &[u8]) -> Result<Op, String> {
    let w: WireOp = serde_json::from_slice(b).map_err(|e| format!("bad request: {e}"))?;
    Ok(match w {
        WireOp::Upsert { inst } => Op::Upsert(installation_in(inst)?),
        WireOp::Delete { id } => Op::Delete(id_in(id)?),
        WireOp::Get { id } => Op::Get(id_in(id)?),
        WireOp::Patch { id, ops } => Op::Patch(
            id_in(id)?,
            ops.into_iter().map(patch_in).collect::<Result<_, _>>()?,
        ),
    })
}

/// The answer `r`.
pub(crate) fn encode_reply(r: &Reply) -> Vec<u8> {
    let w = match r {
        Reply::Written(o) => WireReply::Written {
            outcome: match o {
                WriteOutcome::Created => WireOutcome::Created,
                WriteOutcome::Updated => WireOutcome::Updated,
                WriteOutcome::Unchanged => WireOutcome::Unchanged,
            },
        },
        Reply::Deleted(existed) => WireReply::Deleted { existed: *existed },
        Reply::Found(i) => WireReply::Found {
            inst: i.as_deref().map(installation_out),
        },
        Reply::NotOwner => WireReply::NotOwner,
        Reply::Refused(m) => WireReply::Refused { message: m.clone() },
    };
    to_json(&w)
}

/// An answer read back.
pub(crate) fn decode_reply(b: &[u8]) -> Result<Reply, String> {
    let w: WireReply = serde_json::from_slice(b).map_err(|e| format!("bad answer: {e}"))?;
    Ok(match w {
        WireReply::Written { outcome } => Reply::Written(match outcome {
            WireOutcome::Created => WriteOutcome::Created,
            WireOutcome::Updated => WriteOutcome::Updated,
            WireOutcome::Unchanged => WriteOutcome::Unchanged,
        }),
        WireReply::Deleted { existed } => Reply::Deleted(existed),
        WireReply::Found { inst } => {
            Reply::Found(inst.map(installation_in).transpose()?.map(Box::new))
        }
        WireReply::NotOwner => Reply::NotOwner,
        WireReply::Refused { message } => Reply::Refused(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Installation {
        let mut headers = BTreeMap::new();
        headers.insert("X-WNS-Type".to_owned(), "wns/toast".to_owned());
        Installation::new(
            InstallationId::new("dev-1").unwrap(),
            PushHandle::web_push(
                "https://push.example/abc",
                &URL_SAFE_NO_PAD.encode([4u8; 65]),
                &URL_SAFE_NO_PAD.encode([7u8; 16]),
            )
            .unwrap(),
        )
        .with_tags([Tag::new("a").unwrap(), Tag::new("b:c").unwrap()])
        .with_user(UserId::new("u1").unwrap())
        .with_template(
            "t",
            Template {
                body: "{\"x\":\"$(m)\"}".into(),
                headers,
                tags: vec![Tag::new("tt").unwrap()],
                expiry: Some("$(e)".into()),
            },
        )
        .with_expiration(time(1_900_000_000_123))
    }

    #[test]
    fn operations_and_answers_round_trip() {
        let id = InstallationId::new("x").unwrap();
        let ops = vec![
            Op::Upsert(full()),
            Op::Upsert(Installation::new(
                id.clone(),
                PushHandle::apns("00ff").unwrap(),
            )),
            Op::Delete(id.clone()),
            Op::Get(id.clone()),
            Op::Patch(
                id.clone(),
                vec![
                    PatchOp::AddTags(vec![Tag::new("n").unwrap()]),
                    PatchOp::RemoveTag(Tag::new("a").unwrap()),
                    PatchOp::SetHandle(PushHandle::fcm("tok").unwrap()),
                    PatchOp::SetUser(None),
                    PatchOp::AddTemplate("t".into(), Template::default()),
                    PatchOp::RemoveTemplate("t".into()),
                    PatchOp::SetExpiration(Some(time(5))),
                ],
            ),
        ];
        for op in ops {
            assert_eq!(decode_op(&encode_op(&op)).unwrap(), op);
        }
        let mut read = full();
        read.push_channel_expired = true;
        read.last_update = time(1_800_000_000_000);
        let replies = vec![
            Reply::Written(WriteOutcome::Created),
            Reply::Written(WriteOutcome::Unchanged),
            Reply::Deleted(true),
            Reply::Found(Some(Box::new(read))),
            Reply::Found(None),
            Reply::NotOwner,
            Reply::Refused("installation \"x\" has 70 tags".into()),
        ];
        for r in replies {
            assert_eq!(decode_reply(&encode_reply(&r)).unwrap(), r);
        }
    }

    #[test]
    fn a_request_is_parsed_through_the_model() {
        let bad = br#"{"op":"upsert","inst":{"id":"x","handle":{"platform":"apns","value":"zz"}}}"#;
        let e = decode_op(bad).unwrap_err();
        assert!(e.contains("hex"), "{e}");
        let e = decode_op(br#"{"op":"get","id":""}"#).unwrap_err();
        assert!(!e.is_empty());
        assert!(decode_op(b"{}").unwrap_err().starts_with("bad request"));
    }
}
