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
    Installation, InstallationId, PatchOp, Platform, Precondition, PushHandle, Tag, Template,
    UserId, Version, WriteOutcome,
};

/// An operation on the registry of the partition its id hashes to, or (`List`) on one
/// partition's registry.
///
/// The conditional forms have their own wire names (`upsert_if`, `delete_if`, `patch_at`)
/// rather than an optional field on the plain ones: a node of an older version refuses an
/// operation it does not know (a 400 to the client) instead of ignoring the condition and
/// writing unconditionally (rolling upgrades, docs/operations.md).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Upsert(Installation),
    Delete(InstallationId),
    Get(InstallationId),
    Patch(InstallationId, Vec<PatchOp>),
    /// Written if the precondition holds at the owner (checked with the write, under its
    /// partition lock); else [`Reply::PreconditionFailed`].
    UpsertIf(Installation, Precondition),
    /// Deleted if the precondition holds; else [`Reply::PreconditionFailed`].
    DeleteIf(InstallationId, Precondition),
    /// The patch applied to exactly this version; else [`Reply::PreconditionFailed`].
    PatchAt(InstallationId, Vec<PatchOp>, Version),
    /// A page of one partition's installation ids.
    List(ListQuery),
    /// Marks the installation `push_channel_expired` if it still holds the handle (another
    /// partition's installation took it: handles.rs).
    ExpireChannel(InstallationId, PushHandle),
}

/// The largest page a listing takes (the registrations API's `$top` maximum).
pub(crate) const MAX_LIST_TOP: usize = 1000;

/// A page of one partition's ids: the `top + 1` smallest after `after` that pass `filter`
/// (one more than a page, so that the caller merging partitions knows whether more follow).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ListQuery {
    pub(crate) partition: u16,
    pub(crate) after: Option<String>,
    pub(crate) top: usize,
    pub(crate) filter: ListFilter,
}

/// Which installations a [`ListQuery`] takes.
#[derive(Clone, Debug, PartialEq)]
pub enum ListFilter {
    /// Every installation.
    All,
    /// Those matching a tag expression (its text, parsed at the owner).
    Tags(String),
    /// Those matching a registration `$filter` ([`crate::nh::filter`]).
    Channel(String),
    /// Those a send to this audience reaches (text as `NOTIFY` stores it: `all`,
    /// `expr:<…>`, …), as the partition's send would resolve it: a template send (`true`)
    /// only devices with a matching template, expired channels never. A test send picks
    /// its devices with it.
    Matching(String, bool),
}

/// The `top` smallest ids after `after`, from ids offered in any order: memory for `top + 1`
/// ids, whatever the hub's size. Used by every listing of installations, on one node and per
/// partition in a cluster.
pub(crate) struct Smallest {
    after: Option<String>,
    top: usize,
    heap: std::collections::BinaryHeap<String>,
}

impl Smallest {
    pub(crate) fn new(after: Option<String>, top: usize) -> Smallest {
        Smallest {
            after,
            top,
            heap: std::collections::BinaryHeap::with_capacity(top + 2),
        }
    }

    /// Whether `id` would enter the page as things stand (to skip work on the rest).
    pub(crate) fn would_take(&self, id: &str) -> bool {
        self.after.as_deref().is_none_or(|a| id > a)
            && (self.heap.len() <= self.top || self.heap.peek().is_some_and(|m| id < m.as_str()))
    }

    pub(crate) fn offer(&mut self, id: &str) {
        if !self.would_take(id) {
            return;
        }
        self.heap.push(id.to_owned());
        // One beyond the page tells whether more follow.
        if self.heap.len() > self.top + 1 {
            self.heap.pop();
        }
    }

    /// The page and the one id beyond it, if any, in id order (a partition's answer to a
    /// [`ListQuery`]).
    pub(crate) fn into_sorted(self) -> Vec<String> {
        self.heap.into_sorted_vec()
    }

    /// The page in id order, and whether more ids follow it.
    pub(crate) fn finish(self) -> (Vec<String>, bool) {
        let mut ids = self.heap.into_sorted_vec();
        let more = ids.len() > self.top;
        ids.truncate(self.top);
        (ids, more)
    }
}

impl Op {
    /// The installation the operation is about (`None` for a listing).
    pub(crate) fn id(&self) -> Option<&InstallationId> {
        match self {
            Op::Upsert(i) | Op::UpsertIf(i, _) => Some(&i.id),
            Op::Delete(id)
            | Op::Get(id)
            | Op::Patch(id, _)
            | Op::DeleteIf(id, _)
            | Op::PatchAt(id, _, _)
            | Op::ExpireChannel(id, _) => Some(id),
            Op::List(_) => None,
        }
    }
}

/// What the owner answered.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    Written(WriteOutcome),
    Deleted(bool),
    /// The installation and its version (`None` from an owner of an older version, which
    /// does not send it).
    Found(Option<Box<(Installation, Option<Version>)>>),
    /// A conditional operation's precondition does not hold; the installation's current
    /// version (`None`: it does not exist).
    PreconditionFailed(Option<Version>),
    /// A page of a partition's ids, in id order ([`ListQuery`]).
    Listed(Vec<String>),
    /// This node does not serve the partition (any more): retry, the owner is changing.
    NotOwner,
    /// The registry refused the operation; its error text.
    Refused(String),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WireOp {
    Upsert {
        inst: WireInstallation,
    },
    Delete {
        id: String,
    },
    Get {
        id: String,
    },
    Patch {
        id: String,
        ops: Vec<WirePatch>,
    },
    UpsertIf {
        inst: WireInstallation,
        pre: WirePre,
    },
    DeleteIf {
        id: String,
        pre: WirePre,
    },
    PatchAt {
        id: String,
        ops: Vec<WirePatch>,
        version: u64,
    },
    ExpireChannel {
        id: String,
        handle: WireHandle,
    },
    List {
        partition: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        top: usize,
        filter: WireFilter,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum WirePre {
    Any,
    Exists,
    Absent,
    Version { v: u64 },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum WireFilter {
    All,
    Tags { expr: String },
    Channel { filter: String },
    Matching { audience: String, templates: bool },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
enum WireReply {
    Written {
        outcome: WireOutcome,
    },
    Deleted {
        existed: bool,
    },
    Found {
        inst: Option<Box<WireInstallation>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    PreconditionFailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current: Option<u64>,
    },
    Listed {
        ids: Vec<String>,
    },
    NotOwner,
    Refused {
        message: String,
    },
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

fn pre_out(p: Precondition) -> WirePre {
    match p {
        Precondition::Any => WirePre::Any,
        Precondition::Exists => WirePre::Exists,
        Precondition::Absent => WirePre::Absent,
        Precondition::Version(v) => WirePre::Version { v: v.get() },
    }
}

fn pre_in(w: WirePre) -> Precondition {
    match w {
        WirePre::Any => Precondition::Any,
        WirePre::Exists => Precondition::Exists,
        WirePre::Absent => Precondition::Absent,
        WirePre::Version { v } => Precondition::Version(Version::from(v)),
    }
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
        Op::UpsertIf(i, pre) => WireOp::UpsertIf {
            inst: installation_out(i),
            pre: pre_out(*pre),
        },
        Op::DeleteIf(id, pre) => WireOp::DeleteIf {
            id: id.as_str().to_owned(),
            pre: pre_out(*pre),
        },
        Op::PatchAt(id, ops, v) => WireOp::PatchAt {
            id: id.as_str().to_owned(),
            ops: ops.iter().map(patch_out).collect(),
            version: v.get(),
        },
        Op::ExpireChannel(id, h) => WireOp::ExpireChannel {
            id: id.as_str().to_owned(),
            handle: handle_out(h),
        },
        Op::List(q) => WireOp::List {
            partition: q.partition,
            after: q.after.clone(),
            top: q.top,
            filter: match &q.filter {
                ListFilter::All => WireFilter::All,
                ListFilter::Tags(e) => WireFilter::Tags { expr: e.clone() },
                ListFilter::Channel(f) => WireFilter::Channel { filter: f.clone() },
                ListFilter::Matching(a, t) => WireFilter::Matching {
                    audience: a.clone(),
                    templates: *t,
                },
            },
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
        WireOp::UpsertIf { inst, pre } => Op::UpsertIf(installation_in(inst)?, pre_in(pre)),
        WireOp::DeleteIf { id, pre } => Op::DeleteIf(id_in(id)?, pre_in(pre)),
        WireOp::PatchAt { id, ops, version } => Op::PatchAt(
            id_in(id)?,
            ops.into_iter().map(patch_in).collect::<Result<_, _>>()?,
            Version::from(version),
        ),
        WireOp::ExpireChannel { id, handle } => Op::ExpireChannel(id_in(id)?, handle_in(handle)?),
        WireOp::List {
            partition,
            after,
            top,
            filter,
        } => Op::List(ListQuery {
            partition,
            after,
            top,
            filter: match filter {
                WireFilter::All => ListFilter::All,
                WireFilter::Tags { expr } => ListFilter::Tags(expr),
                WireFilter::Channel { filter } => ListFilter::Channel(filter),
                WireFilter::Matching {
                    audience,
                    templates,
                } => ListFilter::Matching(audience, templates),
            },
        }),
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
        Reply::Found(f) => WireReply::Found {
            inst: f.as_deref().map(|(i, _)| Box::new(installation_out(i))),
            version: f.as_deref().and_then(|(_, v)| v.map(Version::get)),
        },
        Reply::PreconditionFailed(v) => WireReply::PreconditionFailed {
            current: v.map(Version::get),
        },
        Reply::Listed(ids) => WireReply::Listed { ids: ids.clone() },
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
        WireReply::Found { inst, version } => Reply::Found(
            inst.map(|i| installation_in(*i))
                .transpose()?
                .map(|i| Box::new((i, version.map(Version::from)))),
        ),
        WireReply::PreconditionFailed { current } => {
            Reply::PreconditionFailed(current.map(Version::from))
        }
        WireReply::Listed { ids } => Reply::Listed(ids),
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
            Op::UpsertIf(full(), Precondition::Version(Version::from(17))),
            Op::UpsertIf(full(), Precondition::Absent),
            Op::DeleteIf(id.clone(), Precondition::Exists),
            Op::DeleteIf(id.clone(), Precondition::Any),
            Op::PatchAt(
                id.clone(),
                vec![PatchOp::SetUser(None)],
                Version::from(u64::MAX),
            ),
            Op::List(ListQuery {
                partition: 63,
                after: Some("dev-9".into()),
                top: 1000,
                filter: ListFilter::Tags("a && !b".into()),
            }),
            Op::List(ListQuery {
                partition: 0,
                after: None,
                top: 1,
                filter: ListFilter::Channel("DeviceToken eq 'ab'".into()),
            }),
            Op::ExpireChannel(id.clone(), PushHandle::apns("00ff").unwrap()),
            Op::List(ListQuery {
                partition: 1,
                after: None,
                top: 5,
                filter: ListFilter::All,
            }),
            Op::List(ListQuery {
                partition: 2,
                after: None,
                top: 10,
                filter: ListFilter::Matching("expr:a && b".into(), true),
            }),
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
            Reply::Found(Some(Box::new((read.clone(), Some(Version::from(12)))))),
            Reply::Found(Some(Box::new((read, None)))),
            Reply::Found(None),
            Reply::PreconditionFailed(Some(Version::from(3))),
            Reply::PreconditionFailed(None),
            Reply::Listed(vec!["a".into(), "b".into()]),
            Reply::Listed(vec![]),
            Reply::NotOwner,
            Reply::Refused("installation \"x\" has 70 tags".into()),
        ];
        for r in replies {
            assert_eq!(decode_reply(&encode_reply(&r)).unwrap(), r);
        }
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
    fn an_answer_of_an_older_owner_reads_without_a_version() {
        let old = br#"{"r":"found","inst":{"id":"x","handle":{"platform":"fcm","value":"t"}}}"#;
        match decode_reply(old).unwrap() {
            Reply::Found(Some(f)) => assert_eq!(f.1, None),
            other => panic!("{other:?}"),
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
