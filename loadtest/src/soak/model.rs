//! What the server acknowledged for each tracked installation: the model the restart is checked
//! against.
//!
//! One operation at a time per tracked id (each id has its own lock, held across the request):
//! with two writes in flight on one id, their acknowledgements' order need not be the order they
//! took effect, and "the last acknowledged state" would be undefined. Races between writers are
//! exercised on a separate set of ids that the model does not track.

use std::collections::BTreeSet;

/// The last acknowledged state of an installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// Never written, or deleted (an acknowledged DELETE, or a 404 read).
    Absent,
    /// Written with exactly these tags (an acknowledged PUT, or a read after a PATCH).
    Present(BTreeSet<String>),
    /// A write was sent and not acknowledged (transport error, timeout, 5xx, or the kill): it
    /// may or may not have taken effect. The next acknowledged write or read resolves it.
    Doubt,
}

/// The tracked ids `t0`..`t<n>`, each with its last acknowledged state.
pub(crate) struct Tracked {
    slots: Vec<tokio::sync::Mutex<Known>>,
}

impl Tracked {
    pub(crate) fn new(n: usize) -> Tracked {
        Tracked {
            slots: (0..n)
                .map(|_| tokio::sync::Mutex::new(Known::Absent))
                .collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Exclusive use of id `i` while no other task has it.
    pub(crate) fn try_claim(&self, i: usize) -> Option<tokio::sync::MutexGuard<'_, Known>> {
        self.slots.get(i)?.try_lock().ok()
    }

    /// Every id's state (after the traffic stopped).
    pub(crate) async fn snapshot(&self) -> Vec<Known> {
        let mut out = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            out.push(s.lock().await.clone());
        }
        out
    }
}

/// The id of tracked installation `i`.
pub(crate) fn tracked_id(i: usize) -> String {
    format!("t{i}")
}

/// The tags of an installation's JSON (`GET /installations/{id}`); absent = none.
pub(crate) fn tags_of(json: &serde_json::Value) -> BTreeSet<String> {
    json["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A device token (64 hex digits) of its own for each installation: a handle belongs to one
/// installation ("one owner per handle"), so shared tokens would move devices between ids.
pub(crate) fn device_token(n: u64) -> String {
    format!("{:016x}{:048x}", n, n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_tokens() {
        let j = serde_json::json!({"installationId": "t1", "tags": ["b", "a"]});
        assert_eq!(
            tags_of(&j),
            ["a", "b"].iter().map(|s| s.to_string()).collect()
        );
        assert!(tags_of(&serde_json::json!({})).is_empty());
        assert_eq!(device_token(7).len(), 64);
        assert_ne!(device_token(1), device_token(2));
    }

    #[tokio::test]
    async fn one_claim_per_id() {
        let t = Tracked::new(2);
        let g = t.try_claim(0);
        assert!(g.is_some());
        assert!(t.try_claim(0).is_none());
        assert!(t.try_claim(1).is_some());
        assert!(t.try_claim(2).is_none());
        drop(g);
        assert_eq!(t.snapshot().await, vec![Known::Absent, Known::Absent]);
    }
}
