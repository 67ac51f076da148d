//! The properties of a template send: names looked up case-insensitively, without allocating.

use std::cmp::Ordering;
use std::fmt;

/// The properties a template send fills the holes with (nh-rest-api.md §6.2: "a JSON object of
/// properties", string values; lookup is case-insensitive).
///
/// Names are stored ASCII-lower-cased in a sorted vector, so a lookup is a binary search that
/// compares bytes case-insensitively and allocates nothing. When two names differ only in case,
/// the one inserted last wins. Names that the template grammar cannot reference (anything but
/// `A-Z a-z 0-9 _`) are kept but never matched by a template.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// (lower-cased name, value), sorted by name, names unique.
    entries: Vec<(Box<str>, Box<str>)>,
}

/// Why a JSON value cannot be used as [`Properties`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PropertiesError {
    /// The value is not a JSON object.
    #[error("template properties must be a JSON object, not {found}")]
    NotAnObject {
        /// What it is: `an array`, `a string`, ...
        found: &'static str,
    },
    /// A property's value is an object or an array: NH properties are strings.
    #[error(
        "template property '{name}' is {found}; only strings, numbers and booleans are allowed"
    )]
    Nested {
        /// The property's name (cut to 140 characters).
        name: String,
        /// `an object` or `an array`.
        found: &'static str,
    },
}

/// Compares a stored (lower-case) name with `name`, ignoring the ASCII case of `name`.
fn cmp_ci(stored: &str, name: &str) -> Ordering {
    stored
        .bytes()
        .cmp(name.bytes().map(|b| b.to_ascii_lowercase()))
}

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Properties::default()
    }

    /// Sets `name` to `value`, replacing a property whose name differs only in ASCII case.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into().into_boxed_str();
        match self.entries.binary_search_by(|(k, _)| cmp_ci(k, name)) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => self
                .entries
                .insert(i, (name.to_ascii_lowercase().into_boxed_str(), value)),
        }
    }

    /// The value of `name`, compared without regard to ASCII case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .binary_search_by(|(k, _)| cmp_ci(k, name))
            .ok()
            .map(|i| &*self.entries[i].1)
    }

    /// Lookup by an already lower-cased name (what compiled templates hold).
    pub(crate) fn get_lower(&self, lower: &str) -> Option<&str> {
        self.entries
            .binary_search_by(|(k, _)| (**k).cmp(lower))
            .ok()
            .map(|i| &*self.entries[i].1)
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (lower-cased name, value) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    /// From a JSON object: strings as they are, numbers and booleans as their JSON text
    /// (`40`, `1.5`, `true`), `null` as a missing property. An object or array value is an
    /// error naming the property.
    pub fn from_json_map(
        map: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, PropertiesError> {
        use serde_json::Value;
        let mut pairs = Vec::with_capacity(map.len());
        for (name, v) in map {
            let text = match v {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(PropertiesError::Nested {
                        name: name.chars().take(140).collect(),
                        found: crate::payload::json_type_name(v),
                    })
                }
            };
            pairs.push((
                name.to_ascii_lowercase().into_boxed_str(),
                text.into_boxed_str(),
            ));
        }
        Ok(Properties::from_pairs(pairs))
    }

    /// From a JSON value, which must be an object; see [`Properties::from_json_map`].
    pub fn from_json(value: &serde_json::Value) -> Result<Self, PropertiesError> {
        match value {
            serde_json::Value::Object(map) => Properties::from_json_map(map),
            other => Err(PropertiesError::NotAnObject {
                found: crate::payload::json_type_name(other),
            }),
        }
    }

    /// Sorts lower-cased pairs, keeping the last of equal names.
    fn from_pairs(mut pairs: Vec<(Box<str>, Box<str>)>) -> Self {
        // Stable: among equal names the input order remains, and the last one is kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut entries: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            match entries.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => entries.push(p),
            }
        }
        Properties { entries }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Properties {
    /// Later pairs win over earlier ones whose names differ only in ASCII case.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Properties::from_pairs(
            iter.into_iter()
                .map(|(k, v)| {
                    (
                        k.as_ref().to_ascii_lowercase().into_boxed_str(),
                        Box::from(v.as_ref()),
                    )
                })
                .collect(),
        )
    }
}

impl TryFrom<&serde_json::Value> for Properties {
    type Error = PropertiesError;

    fn try_from(value: &serde_json::Value) -> Result<Self, PropertiesError> {
        Properties::from_json(value)
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
