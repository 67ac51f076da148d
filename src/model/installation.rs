//! Installations, their named templates and Notification Hubs' PATCH operations.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::{InstallationId, Platform, PushHandle, Tag, UserId};

/// A named template: a body in Notification Hubs' template language, headers and its own tags.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Template {
    /// The body (JSON for APNs/FCM/Web Push, XML or raw for WNS).
    pub body: String,
    /// Headers (e.g. `X-WNS-Type`, `apns-priority`).
    pub headers: BTreeMap<String, String>,
    /// The template's own tags: a device matches a template send when its tags or these do.
    pub tags: Vec<Tag>,
    /// APNs only: the expiry, constant or template expression.
    pub expiry: Option<String>,
}

/// Longest template name, in bytes.
pub const MAX_TEMPLATE_NAME_LEN: usize = 256;
/// Largest template body, in bytes (a rendered payload may not exceed 5 KiB on any PNS; the
/// template source may be larger because of expressions, so allow 16 KiB).
pub const MAX_TEMPLATE_BODY_LEN: usize = 16 * 1024;

/// A device registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    /// The installation's id, chosen by the app.
    pub id: InstallationId,
    /// Where to reach the device; its variant names the platform.
    pub handle: PushHandle,
    /// Tags, in the order given (duplicates are dropped when written).
    pub tags: Vec<Tag>,
    /// The user this device belongs to; targetable as `$UserId:{id}`.
    pub user_id: Option<UserId>,
    /// Named templates.
    pub templates: BTreeMap<String, Template>,
    /// After this time the installation is invisible to sends and reaped.
    pub expiration_time: Option<SystemTime>,
    /// Set when the push service reported the handle dead or another installation took it.
    /// Read-only: ignored when written (a write with a handle revives the installation).
    pub push_channel_expired: bool,
    /// When the installation was last written. Read-only: set by the registry.
    pub last_update: SystemTime,
}

impl Installation {
    /// An installation with no tags, user, templates or expiry.
    pub fn new(id: InstallationId, handle: PushHandle) -> Self {
        Installation {
            id,
            handle,
            tags: Vec::new(),
            user_id: None,
            templates: BTreeMap::new(),
            expiration_time: None,
            push_channel_expired: false,
            last_update: SystemTime::UNIX_EPOCH,
        }
    }

    /// Replaces the tags.
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags = tags.into_iter().collect();
        self
    }

    /// Sets the user id.
    pub fn with_user(mut self, user: UserId) -> Self {
        self.user_id = Some(user);
        self
    }

    /// Adds or replaces a template.
    pub fn with_template(mut self, name: impl Into<String>, template: Template) -> Self {
        self.templates.insert(name.into(), template);
        self
    }

    /// Sets the expiration time.
    pub fn with_expiration(mut self, at: SystemTime) -> Self {
        self.expiration_time = Some(at);
        self
    }

    /// The platform of the handle.
    pub fn platform(&self) -> Platform {
        self.handle.platform()
    }
}

/// One Notification Hubs PATCH operation on an installation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatchOp {
    /// `add /tags` with a string or array value: appends tags not yet present.
    AddTags(Vec<Tag>),
    /// `remove /tags/<tag>`: removes a tag by value (absent tags are ignored).
    RemoveTag(Tag),
    /// `add /pushChannel`: sets the handle (platform may not change) and revives the channel.
    SetHandle(PushHandle),
    /// `add /userId` / `remove /userId`.
    SetUser(Option<UserId>),
    /// `add /templates/<name>`.
    AddTemplate(String, Template),
    /// `remove /templates/<name>`.
    RemoveTemplate(String),
    /// Sets or clears the expiration time.
    SetExpiration(Option<SystemTime>),
}
