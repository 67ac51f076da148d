//! Installation ids and user ids: checked string newtypes.

use std::fmt;
use std::str::FromStr;

use super::{shorten, InvalidInput};

/// Longest installation id or user id, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// An installation id: 1-256 bytes, no control characters, no `/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstallationId(Box<str>);

/// The rule shared by installation ids and user ids: 1-256 bytes, no control characters,
/// and not `forbidden`. Returns what is wrong.
fn check_id(s: &str, forbidden: char) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > MAX_ID_LEN {
        return Err("is longer than 256 bytes");
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if s.contains(forbidden) {
        return Err(if forbidden == '/' {
            "contains '/'"
        } else {
            "contains '}'"
        });
    }
    Ok(())
}

impl InstallationId {
    /// Checks `s` against the rule.
    pub fn new(s: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let s = s.as_ref();
        check_id(s, '/').map_err(|problem| InvalidInput::InstallationId {
            id: shorten(s, 80),
            problem,
        })?;
        Ok(InstallationId(s.into()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user id: 1-256 bytes, no control characters, no `}` (so that the system tag
/// `$UserId:{...}` can name every user).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(Box<str>);

impl UserId {
    /// Checks `s` against the rule.
    pub fn new(s: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let s = s.as_ref();
        check_id(s, '}').map_err(|problem| InvalidInput::UserId {
            id: shorten(s, 80),
            problem,
        })?;
        Ok(UserId(s.into()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($t:ident) => {
        impl FromStr for $t {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $t::new(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_newtype_impls!(InstallationId);
string_newtype_impls!(UserId);
