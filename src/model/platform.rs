//! The push services ([`Platform`]) and a value per platform ([`PerPlatform`]).

use std::fmt;
use std::str::FromStr;

use super::{shorten, InvalidInput};

/// A platform notification service.
///
/// `#[non_exhaustive]`: a service added later (HMS is next) is not a breaking change, so a
/// `match` outside this crate needs a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Platform {
    /// Apple Push Notification service (HTTP/2 provider API).
    Apns,
    /// Firebase Cloud Messaging HTTP v1.
    Fcm,
    /// Windows Push Notification Services.
    Wns,
    /// Web Push (RFC 8030 / 8291 / 8292).
    WebPush,
}

impl Platform {
    /// Every platform, in index order.
    pub const ALL: [Platform; 4] = [
        Platform::Apns,
        Platform::Fcm,
        Platform::Wns,
        Platform::WebPush,
    ];

    /// The canonical lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::Wns => "wns",
            Platform::WebPush => "webpush",
        }
    }

    /// The platform's stored code: its position in [`Platform::ALL`]. Written to disk (the
    /// platform byte of every registry record, the seed of the handle hash), so `ALL` is only
    /// ever appended to, never reordered.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The platform of a stored code ([`Platform::index`]); `None` for an unknown one.
    pub(crate) fn from_index(i: u8) -> Option<Platform> {
        Platform::ALL.get(i as usize).copied()
    }
}

impl FromStr for Platform {
    type Err = InvalidInput;
    /// Case-insensitive; accepts Notification Hubs' names too (`fcmv1`, `windows`, `browser`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "apns" | "apple" => Ok(Platform::Apns),
            "fcm" | "fcmv1" => Ok(Platform::Fcm),
            "wns" | "windows" => Ok(Platform::Wns),
            "webpush" | "browser" => Ok(Platform::WebPush),
            _ => Err(InvalidInput::Platform(shorten(s, 40))),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Platform {
    /// How many platforms there are: the length of [`Platform::ALL`] and of a [`PerPlatform`].
    pub const COUNT: usize = Platform::ALL.len();
}

/// One value per [`Platform`], indexed by the platform itself (`counts[Platform::Fcm]`).
///
/// It replaces arrays indexed by a platform's position, so that a fifth platform is one more
/// variant and one more entry in [`Platform::ALL`], not an edit of every `[T; 4]` in the code
/// and in the public API. Iteration is in [`Platform::ALL`] order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PerPlatform<T>([T; Platform::COUNT]);

impl<T> PerPlatform<T> {
    /// A value for each platform, made by `f`.
    pub fn from_fn(mut f: impl FnMut(Platform) -> T) -> Self {
        PerPlatform(std::array::from_fn(|i| f(Platform::ALL[i])))
    }

    /// `(platform, value)` pairs in [`Platform::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Platform, &T)> {
        Platform::ALL.into_iter().zip(self.0.iter())
    }

    /// `(platform, value)` pairs in [`Platform::ALL`] order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Platform, &mut T)> {
        Platform::ALL.into_iter().zip(self.0.iter_mut())
    }

    /// The values in [`Platform::ALL`] order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }

    /// A value for each platform, made from this one's by `f`.
    pub fn map<U>(self, mut f: impl FnMut(Platform, T) -> U) -> PerPlatform<U> {
        let mut platforms = Platform::ALL.into_iter();
        PerPlatform(self.0.map(|v| {
            // `ALL` and the array have the same length (`COUNT`), so `next` always has one.
            let p = platforms.next().unwrap_or(Platform::Apns);
            f(p, v)
        }))
    }
}

impl<T> std::ops::Index<Platform> for PerPlatform<T> {
    type Output = T;
    fn index(&self, p: Platform) -> &T {
        &self.0[p as usize]
    }
}

impl<T> std::ops::IndexMut<Platform> for PerPlatform<T> {
    fn index_mut(&mut self, p: Platform) -> &mut T {
        &mut self.0[p as usize]
    }
}

impl<T: fmt::Debug> fmt::Debug for PerPlatform<T> {
    /// As a map from platform name to value: `{apns: 3, fcm: 0, ...}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(p, v)| (p.as_str(), v)))
            .finish()
    }
}

impl<T: serde::Serialize> serde::Serialize for PerPlatform<T> {
    /// As a map keyed by the platform's canonical name (`{"apns": …, "fcm": …}`).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(Platform::COUNT))?;
        for (p, v) in self.iter() {
            m.serialize_entry(p.as_str(), v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_platform_is_indexed_by_platform_and_iterates_in_all_order() {
        let mut pp = PerPlatform::from_fn(|p| p.as_str().len());
        assert_eq!(pp[Platform::WebPush], 7);
        pp[Platform::Fcm] += 10;
        let seen: Vec<(Platform, usize)> = pp.iter().map(|(p, v)| (p, *v)).collect();
        assert_eq!(
            seen,
            vec![
                (Platform::Apns, 4),
                (Platform::Fcm, 13),
                (Platform::Wns, 3),
                (Platform::WebPush, 7)
            ]
        );
        let doubled = pp.map(|_, v| v * 2);
        assert_eq!(
            doubled.values().copied().sum::<usize>(),
            2 * (4 + 13 + 3 + 7)
        );
        assert_eq!(
            format!("{pp:?}"),
            r#"{"apns": 4, "fcm": 13, "wns": 3, "webpush": 7}"#
        );
        assert_eq!(
            serde_json::to_string(&pp).unwrap(),
            r#"{"apns":4,"fcm":13,"wns":3,"webpush":7}"#
        );
    }

    #[test]
    fn every_platform_has_its_own_slot() {
        for (i, p) in Platform::ALL.into_iter().enumerate() {
            assert_eq!(p as usize, i, "ALL is in discriminant order");
            assert_eq!(Platform::from_index(i as u8), Some(p));
        }
        assert_eq!(Platform::from_index(Platform::COUNT as u8), None);
    }
}
