//! Record versions and the preconditions of compare-and-set writes (server audit M6).
//!
//! Every write of an installation gives it a new [`Version`], taken under the partition lock
//! that orders writes to it, from a registry-wide hybrid clock: microseconds since the Unix
//! epoch, or one more than the last version handed out if that is larger. So the versions of
//! one installation only grow, also across a delete and a re-create (no ABA, which an ETag of
//! the last-write time in milliseconds had: two writes in one millisecond shared it), and they
//! stay near the wall clock (a million versions a second before they run ahead of it).
//! Recovery starts the clock above every version it read. Records written before versions
//! existed get `last_update_ms × 1000`, below any later write's version.

use std::fmt;
use std::str::FromStr;

use super::RegistryError;

/// The version of an installation: changes with every write of it, never repeats for an id
/// (see the module docs). Its decimal form ([`fmt::Display`], [`FromStr`]) is suitable as an
/// HTTP entity tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub(crate) u64);

impl Version {
    /// The version as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for Version {
    fn from(v: u64) -> Self {
        Version(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Version {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Version)
    }
}

/// What a conditional write requires of the installation's current state, checked atomically
/// with the write (under the partition write lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precondition {
    /// Nothing: an unconditional write.
    Any,
    /// The installation exists (`If-Match: *`).
    Exists,
    /// The installation does not exist (`If-None-Match: *`).
    Absent,
    /// The installation exists at exactly this version (`If-Match: "<version>"`).
    Version(Version),
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::Any => f.write_str("any state"),
            Precondition::Exists => f.write_str("existing"),
            Precondition::Absent => f.write_str("absent"),
            Precondition::Version(v) => write!(f, "at version {v}"),
        }
    }
}

impl Precondition {
    /// Checks the precondition against the current version of `id` (`None`: absent).
    pub(crate) fn check(self, id: &str, current: Option<Version>) -> Result<(), RegistryError> {
        let ok = match self {
            Precondition::Any => true,
            Precondition::Exists => current.is_some(),
            Precondition::Absent => current.is_none(),
            Precondition::Version(v) => current == Some(v),
        };
        if ok {
            return Ok(());
        }
        Err(RegistryError::VersionMismatch {
            id: id.to_string(),
            expected: self,
            current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions() {
        let v = Version(5);
        assert!(Precondition::Any.check("a", None).is_ok());
        assert!(Precondition::Exists.check("a", Some(v)).is_ok());
        assert!(Precondition::Exists.check("a", None).is_err());
        assert!(Precondition::Absent.check("a", None).is_ok());
        assert!(Precondition::Absent.check("a", Some(v)).is_err());
        assert!(Precondition::Version(v).check("a", Some(v)).is_ok());
        let e = Precondition::Version(v)
            .check("a", Some(Version(6)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "installation \"a\" is at version 6, not at version 5"
        );
        assert!(Precondition::Version(v).check("a", None).is_err());
        assert_eq!("17".parse::<Version>().unwrap(), Version(17));
    }
}
