//! Blocks of outcome records: the final records of new sends recorded together (whose
//! starts were still held), written as one entry of the `outcomes_blocks` tree per enqueue
//! millisecond (split at [`MAX_RECORDS`] and [`MAX_BYTES`]) instead of one `outcomes` entry
//! each (issue 17: the one insert per send left on the per-event path). Every member of a
//! block is a send with a version-7 id of the same millisecond; the block's key is its
//! smallest member's id, so the blocks of one millisecond are found from that millisecond's
//! first possible id, and the tree holds them in enqueue-millisecond order (the blocks of one
//! millisecond, from different recordings, interleave by id: reads merge them).
//!
//! The stored form: the tag [`TAG`], the member count (u16, little-endian), one header per
//! member (its 16-byte big-endian id, then its record's length as a u32, little-endian), then
//! the records (JSON, as a single record is stored) one after another. Members are in id
//! order, ids strictly ascending.

use std::ops::Range;

/// The first byte of every block.
pub(super) const TAG: u8 = 0xB2;

/// At most this many records a block.
pub(super) const MAX_RECORDS: usize = 64;

/// At most this many bytes a block, its headers included (one larger record is a block by
/// itself).
/// sled keeps up to 17 entries in a leaf node and writes a node larger than a quarter of its
/// 512 KiB segment as a file of its own (a blob, several times the cost of an insert); 17
/// blocks of this size stay below that.
pub(super) const MAX_BYTES: usize = 6 * 1024;

const HEADER: usize = 16 + 4;

/// The stored form of `members`: (id key, record) pairs in strictly ascending id order, at
/// least one, at most [`MAX_RECORDS`].
pub(super) fn encode(members: &[([u8; 16], Vec<u8>)]) -> Vec<u8> {
    assert!(!members.is_empty() && members.len() <= MAX_RECORDS);
    debug_assert!(members.windows(2).all(|w| w[0].0 < w[1].0));
    let body: usize = members.iter().map(|(_, r)| r.len()).sum();
    let mut v = Vec::with_capacity(3 + members.len() * HEADER + body);
    v.push(TAG);
    v.extend_from_slice(
        &u16::try_from(members.len())
            .expect("at most 64")
            .to_le_bytes(),
    );
    for (id, r) in members {
        v.extend_from_slice(id);
        v.extend_from_slice(&(r.len() as u32).to_le_bytes());
    }
    for (_, r) in members {
        v.extend_from_slice(r);
    }
    v
}

/// A block member: its id key and where its record is in the block.
pub(super) type Member = ([u8; 16], Range<usize>);

/// The members of a stored block: each one's id key and its record's bytes in `v`. An error
/// says what is wrong with a block that is not one `encode` wrote.
pub(super) fn decode(v: &[u8]) -> Result<Vec<Member>, String> {
    if v.first() != Some(&TAG) {
        return Err("not an outcome block".into());
    }
    let n = match v.get(1..3) {
        Some(c) => usize::from(u16::from_le_bytes([c[0], c[1]])),
        None => return Err("outcome block cut short in its count".into()),
    };
    if n == 0 {
        return Err("outcome block without records".into());
    }
    let headers = 3 + n * HEADER;
    if v.len() < headers {
        return Err(format!(
            "outcome block of {n} records cut short in its headers"
        ));
    }
    let mut out: Vec<Member> = Vec::with_capacity(n);
    let mut at = headers;
    for h in v[3..headers].chunks_exact(HEADER) {
        let id: [u8; 16] = h[..16].try_into().expect("16 bytes");
        let len = u32::from_le_bytes(h[16..].try_into().expect("4 bytes")) as usize;
        if out.last().is_some_and(|(prev, _)| *prev >= id) {
            return Err("outcome block's ids out of order".into());
        }
        let end = at
            .checked_add(len)
            .filter(|e| *e <= v.len())
            .ok_or("outcome block cut short in its records")?;
        out.push((id, at..end));
        at = end;
    }
    if at != v.len() {
        return Err(format!(
            "outcome block has {} bytes after its records",
            v.len() - at
        ));
    }
    Ok(out)
}

/// Splits `members` (strictly ascending ids, all of one millisecond) into blocks within
/// [`MAX_RECORDS`] and [`MAX_BYTES`]: each block's key (its first id) and stored form.
pub(super) fn chunks(members: &[([u8; 16], Vec<u8>)]) -> Vec<([u8; 16], Vec<u8>)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < members.len() {
        let mut end = start;
        let mut bytes = 3;
        while end < members.len()
            && end - start < MAX_RECORDS
            && (end == start || bytes + HEADER + members[end].1.len() <= MAX_BYTES)
        {
            bytes += HEADER + members[end].1.len();
            end += 1;
        }
        out.push((members[start].0, encode(&members[start..end])));
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members() -> impl Strategy<Value = Vec<([u8; 16], Vec<u8>)>> {
        proptest::collection::btree_map(
            any::<u128>(),
            proptest::collection::vec(any::<u8>(), 0..400),
            1..200,
        )
        .prop_map(|m| m.into_iter().map(|(id, r)| (id.to_be_bytes(), r)).collect())
    }

    proptest! {
        /// What `encode` writes, `decode` reads back member by member; `chunks` keeps every
        /// member once, in order, and within the limits.
        #[test]
        fn blocks_read_back_what_was_written(m in members()) {
            let mut again = Vec::new();
            for (key, block) in chunks(&m) {
                let parts = decode(&block).unwrap();
                prop_assert_eq!(parts[0].0, key);
                prop_assert!(parts.len() <= MAX_RECORDS);
                prop_assert!(parts.len() == 1 || block.len() <= MAX_BYTES);
                for (id, r) in parts {
                    again.push((id, block[r].to_vec()));
                }
            }
            prop_assert_eq!(again, m);
        }

        /// Any bytes: an error or members within the bytes, never a panic.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(v in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(parts) = decode(&v) {
                for (_, r) in parts {
                    prop_assert!(r.end <= v.len());
                }
            }
        }

        /// A block cut short, or with bytes added, is an error, not fewer members.
        #[test]
        fn damaged_blocks_are_errors(m in members(), cut in any::<prop::sample::Index>()) {
            let block = encode(&m[..m.len().min(MAX_RECORDS)]);
            let at = cut.index(block.len());
            prop_assert!(decode(&block[..at]).is_err());
            let mut longer = block.clone();
            longer.push(0);
            prop_assert!(decode(&longer).is_err());
        }
    }

    #[test]
    fn ids_out_of_order_are_an_error() {
        let mut v = encode(&[([1; 16], b"{}".to_vec()), ([2; 16], b"{}".to_vec())]);
        // Swap the two ids.
        v[3..19].copy_from_slice(&[2; 16]);
        v[23..39].copy_from_slice(&[1; 16]);
        assert!(decode(&v).unwrap_err().contains("out of order"));
        assert!(decode(&[TAG, 0, 0])
            .unwrap_err()
            .contains("without records"));
    }
}
