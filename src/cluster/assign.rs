//! Which node should own each partition, and which should follow it as hot standby
//! (CLUSTER.md, "Assignment"): rendezvous (highest-random-weight) hashing of the partition
//! over the live members. Every node computes the same map from the same member list, and a
//! member joining or leaving moves only the partitions whose first or second choice it is
//! (about P/N), so planned handoffs stay few.

use xxhash_rust::xxh3::xxh3_64;

/// A partition's first choice (owner) and second choice (standby, if there are two members).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The node that should own the partition.
    pub owner: String,
    /// The node that should follow it as hot standby.
    pub standby: Option<String>,
}

/// The weight of `node` for partition `p`.
fn weight(p: u16, node: &str) -> u64 {
    let mut key = Vec::with_capacity(node.len() + 3);
    key.extend_from_slice(&p.to_le_bytes());
    key.push(0);
    key.extend_from_slice(node.as_bytes());
    xxh3_64(&key)
}

/// The choice for partition `p` among `members` (`None` when there are none). Ties (equal
/// weights) go to the smaller name, so the order of `members` never matters.
pub fn choose(p: u16, members: &[String]) -> Option<Choice> {
    let mut ranked: Vec<(u64, &String)> = members.iter().map(|m| (weight(p, m), m)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    let mut it = ranked.into_iter().map(|(_, m)| m.clone());
    let owner = it.next()?;
    Some(Choice {
        owner,
        standby: it.next(),
    })
}

/// The choice for every partition `0..partitions`.
pub fn assign(partitions: u16, members: &[String]) -> Vec<Option<Choice>> {
    (0..partitions).map(|p| choose(p, members)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn every_node_computes_the_same_map_in_any_order() {
        let a = names(3);
        let mut b = a.clone();
        b.reverse();
        assert_eq!(assign(256, &a), assign(256, &b));
        assert_eq!(choose(0, &[]), None);
        let one = choose(7, &names(1)).unwrap();
        assert_eq!((one.owner.as_str(), one.standby), ("node-1", None));
        for c in assign(256, &a).into_iter().flatten() {
            assert_ne!(Some(&c.owner), c.standby.as_ref());
        }
    }

    #[test]
    fn partitions_spread_and_a_join_moves_about_a_share() {
        let three = assign(256, &names(3));
        for n in names(3) {
            let owned = three.iter().flatten().filter(|c| c.owner == n).count();
            assert!((50..=120).contains(&owned), "{n} owns {owned} of 256");
        }
        let four = assign(256, &names(4));
        let moved = three
            .iter()
            .zip(&four)
            .filter(|(a, b)| a.as_ref().unwrap().owner != b.as_ref().unwrap().owner)
            .count();
        // Only partitions the new node now owns move: about 256/4.
        assert!((30..=100).contains(&moved), "{moved} moved");
        for (a, b) in three.iter().zip(&four) {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            if a.owner != b.owner {
                assert_eq!(b.owner, "node-4", "a move between old nodes");
            }
        }
    }
}
