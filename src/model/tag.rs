//! Tags: the labels installations carry and tag expressions test.
//!
//! A tag is 1–120 characters of `A-Z a-z 0-9 _ @ # . : -` (Notification Hubs' rule,
//! `../shared/design/nh-rest-api.md` §5 "Limits"). Tags are case-sensitive. A [`Tag`] that exists
//! is valid: the only way to build one is [`Tag::new`] (or `str::parse`), which checks the rule.

use std::fmt;
use std::str::FromStr;

/// Longest tag, in characters (all allowed characters are ASCII, so also bytes).
/// Source: Notification Hubs' documented tag limit (nh-rest-api.md §5).
pub const MAX_TAG_LEN: usize = 120;

/// The characters a tag may contain, as written in error messages.
pub const TAG_ALPHABET: &str = "A-Z a-z 0-9 _ @ # . : -";

/// Whether `c` may appear in a tag.
#[inline]
pub fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '#' | '.' | ':' | '-')
}

/// A validated tag.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(Box<str>);

/// Why a string is not a tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// The empty string.
    #[error("tag is empty (a tag is 1-{MAX_TAG_LEN} characters of {TAG_ALPHABET})")]
    Empty,
    /// More than [`MAX_TAG_LEN`] characters.
    #[error("tag '{tag}' is {len} characters long; at most {MAX_TAG_LEN} are allowed")]
    TooLong {
        /// The offending tag (cut to 140 characters).
        tag: String,
        /// Its length in characters.
        len: usize,
    },
    /// A character outside [`TAG_ALPHABET`].
    #[error("tag '{tag}' contains {ch:?} (allowed: {TAG_ALPHABET})")]
    BadChar {
        /// The offending tag (cut to 140 characters).
        tag: String,
        /// The first character that is not allowed.
        ch: char,
    },
}

fn shorten(s: &str) -> String {
    s.chars().take(140).collect()
}

impl Tag {
    /// Checks `s` against the tag rule.
    pub fn new(s: impl AsRef<str>) -> Result<Tag, TagError> {
        let s = s.as_ref();
        if s.is_empty() {
            return Err(TagError::Empty);
        }
        if let Some(ch) = s.chars().find(|&c| !is_tag_char(c)) {
            return Err(TagError::BadChar {
                tag: shorten(s),
                ch,
            });
        }
        // Only ASCII is allowed, so bytes == characters here.
        if s.len() > MAX_TAG_LEN {
            return Err(TagError::TooLong {
                tag: shorten(s),
                len: s.len(),
            });
        }
        Ok(Tag(s.into()))
    }

    /// The tag's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tag::new(s)
    }
}

impl AsRef<str> for Tag {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Tag {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_whole_alphabet() {
        let t = Tag::new("Az09_@#.:-").unwrap();
        assert_eq!(t.as_str(), "Az09_@#.:-");
        assert!(Tag::new("x".repeat(MAX_TAG_LEN)).is_ok());
    }

    #[test]
    fn rejects_with_exact_messages() {
        assert_eq!(
            Tag::new("a b").unwrap_err().to_string(),
            "tag 'a b' contains ' ' (allowed: A-Z a-z 0-9 _ @ # . : -)"
        );
        assert_eq!(
            Tag::new("").unwrap_err().to_string(),
            "tag is empty (a tag is 1-120 characters of A-Z a-z 0-9 _ @ # . : -)"
        );
        let long = "x".repeat(121);
        assert_eq!(
            Tag::new(&long).unwrap_err(),
            TagError::TooLong {
                tag: long,
                len: 121
            }
        );
        assert!(matches!(
            Tag::new("é"),
            Err(TagError::BadChar { ch: 'é', .. })
        ));
        assert!(matches!(
            Tag::new("$x"),
            Err(TagError::BadChar { ch: '$', .. })
        ));
    }
}
