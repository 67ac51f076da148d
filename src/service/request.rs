//! What a send is: its content (native payloads or a template property bag), its audience and
//! its pace — and how a scheduled send is stored.

use serde::{Deserialize, Serialize};

use crate::audience::{ExprLimits, TagExpr};
use crate::dispatch::Pace;
use crate::model::{InstallationId, Platform, UserId};
use crate::payload::{Notification, PayloadError};
use crate::registry::Audience;
use crate::template::Properties;

/// What a send delivers.
// One value per send, moved a few times: its size does not matter, a box would only add
// noise to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Content {
    /// One native payload per platform.
    Native(Notification),
    /// A template send: every matching device renders its own templates with these
    /// properties (Notification Hubs' template notifications, nh-rest-api.md §6.2).
    Template(TemplateSend),
}

/// The property bag of a template send.
#[derive(Clone, Debug)]
pub struct TemplateSend {
    /// The properties the templates read (`$(name)`), names case-insensitive.
    pub properties: Properties,
    /// The engine stops retrying after this time.
    pub expires_at: Option<std::time::SystemTime>,
}

impl TemplateSend {
    /// A template send with `properties`.
    pub fn new(properties: Properties) -> TemplateSend {
        TemplateSend {
            properties,
            expires_at: None,
        }
    }
}

/// A send: content, audience and optional pace. Build one with [`SendRequest::native`] or
/// [`SendRequest::template`]; start it with [`Engine::submit`](crate::Engine::submit) or
/// schedule it with [`Engine::schedule`](crate::Engine::schedule).
#[derive(Clone, Debug)]
pub struct SendRequest {
    pub(crate) content: Content,
    pub(crate) audience: Audience,
    pub(crate) pace: Option<Pace>,
}

impl SendRequest {
    /// Native payloads to `audience`.
    pub fn native(notification: Notification, audience: Audience) -> SendRequest {
        SendRequest {
            content: Content::Native(notification),
            audience,
            pace: None,
        }
    }

    /// A template send to `audience`.
    pub fn template(send: TemplateSend, audience: Audience) -> SendRequest {
        SendRequest {
            content: Content::Template(send),
            audience,
            pace: None,
        }
    }

    /// Spreads the send at `pace` (a paced rollout); cancelling it stops the rest.
    pub fn paced(mut self, pace: Pace) -> SendRequest {
        self.pace = Some(pace);
        self
    }

    /// The audience.
    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    /// The content.
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// The pace, if any.
    pub fn pace(&self) -> Option<Pace> {
        self.pace
    }
}

/// A send as stored by the scheduler.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredRequest {
    audience: String,
    pace: Option<Pace>,
    /// Native parts (platform, base64 body, headers), or none for a template send.
    native: Vec<StoredPart>,
    /// Template properties, for a template send.
    template: Option<Vec<(String, String)>>,
    expires_at_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredPart {
    platform: String,
    body: String,
    headers: Vec<(String, String)>,
}

fn to_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_ms(ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

impl StoredRequest {
    pub(crate) fn from_request(r: &SendRequest) -> StoredRequest {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (native, template, expires) = match &r.content {
            Content::Native(n) => (
                n.native_parts()
                    .into_iter()
                    .map(|p| StoredPart {
                        platform: p.platform.as_str().to_owned(),
                        body: b64.encode(&p.body),
                        headers: p.headers,
                    })
                    .collect(),
                None,
                n.deadline(),
            ),
            Content::Template(t) => (
                Vec::new(),
                Some(
                    t.properties
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                ),
                t.expires_at,
            ),
        };
        StoredRequest {
            audience: audience_to_string(&r.audience),
            pace: r.pace,
            native,
            template,
            expires_at_ms: expires.map(to_ms),
        }
    }

    pub(crate) fn into_request(self) -> Result<SendRequest, String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let audience = audience_from_string(&self.audience)?;
        let expires = self.expires_at_ms.map(from_ms);
        let content = match self.template {
            Some(pairs) => {
                let mut properties = Properties::new();
                for (k, v) in pairs {
                    properties.insert(&k, v);
                }
                Content::Template(TemplateSend {
                    properties,
                    expires_at: expires,
                })
            }
            None => {
                let mut n = Notification::new();
                for p in self.native {
                    let platform: Platform = p.platform.parse().map_err(|e| format!("{e}"))?;
                    let body = b64.decode(&p.body).map_err(|e| e.to_string())?;
                    n = n.merge(
                        Notification::from_native(platform, body, &p.headers)
                            .map_err(|e: PayloadError| e.to_string())?,
                    );
                }
                if let Some(t) = expires {
                    n = n.expires_at(t);
                }
                Content::Native(n)
            }
        };
        Ok(SendRequest {
            content,
            audience,
            pace: self.pace,
        })
    }
}

/// The audience as text: `all`, `platform:<p>`, `expr:<tag expression>`,
/// `installation:<id>`, `user:<id>`.
pub(crate) fn audience_to_string(a: &Audience) -> String {
    match a {
        Audience::All => "all".into(),
        Audience::Platform(p) => format!("platform:{}", p.as_str()),
        Audience::Expr(e) => format!("expr:{e}"),
        Audience::Installation(id) => format!("installation:{}", id.as_str()),
        Audience::User(u) => format!("user:{}", u.as_str()),
    }
}

pub(crate) fn audience_from_string(s: &str) -> Result<Audience, String> {
    if s == "all" {
        return Ok(Audience::All);
    }
    let (kind, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("unknown audience {s:?}"))?;
    Ok(match kind {
        "platform" => Audience::Platform(rest.parse().map_err(|e| format!("{e}"))?),
        // The expression was accepted once under the engine's limits; read it back under
        // the loosest ones so a stored send never becomes unreadable.
        "expr" => Audience::Expr(
            TagExpr::parse_with(
                rest,
                &ExprLimits {
                    max_tags: usize::MAX,
                    max_depth: usize::MAX,
                    max_len: usize::MAX,
                    nh_preset: false,
                },
            )
            .map_err(|e| e.to_string())?,
        ),
        "installation" => {
            Audience::Installation(InstallationId::new(rest).map_err(|e| e.to_string())?)
        }
        "user" => Audience::User(UserId::new(rest).map_err(|e| e.to_string())?),
        _ => return Err(format!("unknown audience {s:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_read_back() {
        let cases = [
            Audience::All,
            Audience::Platform(Platform::WebPush),
            Audience::Expr(TagExpr::parse("(sports || news) && !premium").unwrap()),
            Audience::Installation(InstallationId::new("inst:1").unwrap()),
            Audience::User(UserId::new("u 1").unwrap()),
        ];
        for a in cases {
            assert_eq!(audience_from_string(&audience_to_string(&a)), Ok(a));
        }
        assert!(audience_from_string("everyone").is_err());
        assert!(audience_from_string("expr:(a").is_err());
    }
}
