//! tagcast: a push-notification broadcast fan-out engine.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audience;
mod tag;

pub use tag::{is_tag_char, Tag, TagError, MAX_TAG_LEN, TAG_ALPHABET};
