//! HPACK (RFC 7541) for the client: an encoder that writes string literals raw (no Huffman
//! coding: CPU matters more than the bytes here, and a raw literal is a copy for the service to
//! decode as well) and indexes the header fields every request repeats; and the decoder of
//! answers (Huffman-coded strings, the dynamic table, size updates).

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

/// The dynamic table size this client starts with and never exceeds (SETTINGS_HEADER_TABLE_SIZE's
/// initial value; a peer may lower it).
pub(crate) const TABLE_SIZE: usize = 4096;

/// How a field is written (RFC 7541 §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Into the dynamic table: later blocks refer to it with one byte.
    Index,
    /// A literal that stays out of the table (a value used once, such as `:path`).
    Literal,
    /// A literal that intermediaries must not index either (credentials, `set_sensitive`).
    Never,
}

/// The encoder's half of the dynamic table.
#[derive(Debug)]
pub(crate) struct Encoder {
    /// Newest first: entry `i` has index 62 + `i`.
    table: VecDeque<(Bytes, Bytes)>,
    size: usize,
    max: usize,
    /// The smallest maximum since the last block, when it changed: signalled at the start of
    /// the next block (§4.2), followed by the current one if that is larger.
    lowest_since: Option<usize>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            table: VecDeque::new(),
            size: 0,
            max: TABLE_SIZE,
            lowest_since: None,
        }
    }
}

fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

impl Encoder {
    /// The peer's SETTINGS_HEADER_TABLE_SIZE (this encoder uses at most [`TABLE_SIZE`]).
    pub(crate) fn set_peer_max(&mut self, n: usize) {
        let n = n.min(TABLE_SIZE);
        if n == self.max {
            return;
        }
        self.max = n;
        self.lowest_since = Some(self.lowest_since.map_or(n, |l| l.min(n)));
        self.evict(0);
    }

    /// Starts a header block: the pending table size updates.
    pub(crate) fn begin(&mut self, out: &mut BytesMut) {
        if let Some(low) = self.lowest_since.take() {
            int(out, low, 5, 0x20);
            if self.max != low {
                int(out, self.max, 5, 0x20);
            }
        }
    }

    /// Writes one field.
    pub(crate) fn field(&mut self, out: &mut BytesMut, name: &[u8], value: &[u8], mode: Mode) {
        if let Some(i) = static_exact(name, value) {
            int(out, i, 7, 0x80);
            return;
        }
        if mode == Mode::Index {
            if let Some(i) = self
                .table
                .iter()
                .position(|(n, v)| **n == *name && **v == *value)
            {
                int(out, 62 + i, 7, 0x80);
                return;
            }
        }
        let name_index = static_name(name).unwrap_or(0);
        let size = entry_size(name, value);
        match mode {
            Mode::Index if size <= self.max => {
                int(out, name_index, 6, 0x40);
                self.evict(size);
                self.table
                    .push_front((Bytes::copy_from_slice(name), Bytes::copy_from_slice(value)));
                self.size += size;
            }
            Mode::Index | Mode::Literal => int(out, name_index, 4, 0x00),
            Mode::Never => int(out, name_index, 4, 0x10),
        }
        if name_index == 0 {
            string(out, name);
        }
        string(out, value);
    }

    /// Drops the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => break,
            }
        }
    }
}

/// An integer with an `bits`-bit prefix whose other bits are `first` (§5.1).
pub(crate) fn int(out: &mut BytesMut, mut v: usize, bits: u8, first: u8) {
    let max = (1usize << bits) - 1;
    if v < max {
        out.put_u8(first | v as u8);
        return;
    }
    out.put_u8(first | max as u8);
    v -= max;
    while v >= 128 {
        out.put_u8((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.put_u8(v as u8);
}

/// A raw string literal (§5.2, H = 0).
fn string(out: &mut BytesMut, s: &[u8]) {
    int(out, s.len(), 7, 0x00);
    out.put_slice(s);
}

/// The static table entries a client request uses whole.
fn static_exact(name: &[u8], value: &[u8]) -> Option<usize> {
    Some(match (name, value) {
        (b":method", b"GET") => 2,
        (b":method", b"POST") => 3,
        (b":path", b"/") => 4,
        (b":scheme", b"http") => 6,
        (b":scheme", b"https") => 7,
        _ => return None,
    })
}

/// The static table's index of a name (Appendix A).
fn static_name(name: &[u8]) -> Option<usize> {
    STATIC_NAMES.iter().position(|n| *n == name).map(|i| i + 1)
}

/// The names of the static table, index 1 first.
const STATIC_NAMES: [&[u8]; 61] = [
    b":authority",
    b":method",
    b":method",
    b":path",
    b":path",
    b":scheme",
    b":scheme",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b"accept-charset",
    b"accept-encoding",
    b"accept-language",
    b"accept-ranges",
    b"accept",
    b"access-control-allow-origin",
    b"age",
    b"allow",
    b"authorization",
    b"cache-control",
    b"content-disposition",
    b"content-encoding",
    b"content-language",
    b"content-length",
    b"content-location",
    b"content-range",
    b"content-type",
    b"cookie",
    b"date",
    b"etag",
    b"expect",
    b"expires",
    b"from",
    b"host",
    b"if-match",
    b"if-modified-since",
    b"if-none-match",
    b"if-range",
    b"if-unmodified-since",
    b"last-modified",
    b"link",
    b"location",
    b"max-forwards",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"range",
    b"referer",
    b"refresh",
    b"retry-after",
    b"server",
    b"set-cookie",
    b"strict-transport-security",
    b"transfer-encoding",
    b"user-agent",
    b"vary",
    b"via",
    b"www-authenticate",
];

/// The static table (Appendix A) with values, for decoding.
fn static_entry(i: usize) -> Option<(&'static [u8], &'static [u8])> {
    let value: &'static [u8] = match i {
        2 => b"GET",
        3 => b"POST",
        4 => b"/",
        5 => b"/index.html",
        6 => b"http",
        7 => b"https",
        8 => b"200",
        9 => b"204",
        10 => b"206",
        11 => b"304",
        12 => b"400",
        13 => b"404",
        14 => b"500",
        16 => b"gzip, deflate",
        1..=61 => b"",
        _ => return None,
    };
    Some((STATIC_NAMES[i - 1], value))
}

/// The decoder of answers' header blocks. Its table is never larger than [`TABLE_SIZE`]: the
/// size this client advertises by leaving SETTINGS_HEADER_TABLE_SIZE alone.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// Newest first.
    table: VecDeque<(Bytes, Bytes)>,
    size: usize,
    /// The size the service set last (at most [`TABLE_SIZE`]); `None` until it sets one.
    max: Option<usize>,
}

impl Decoder {
    fn max(&self) -> usize {
        self.max.unwrap_or(TABLE_SIZE)
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max() {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => break,
            }
        }
    }

    fn entry(&self, i: usize) -> Result<(&[u8], &[u8]), String> {
        if let Some(e) = static_entry(i) {
            return Ok(e);
        }
        match i.checked_sub(62).and_then(|d| self.table.get(d)) {
            Some((n, v)) => Ok((n, v)),
            None => Err(format!("HPACK: index {i} out of range")),
        }
    }

    /// The name at index `i`, shared with the table.
    fn name_of(&self, i: usize) -> Result<Bytes, String> {
        if let Some((n, _)) = static_entry(i) {
            return Ok(Bytes::from_static(n));
        }
        match i.checked_sub(62).and_then(|d| self.table.get(d)) {
            Some((n, _)) => Ok(n.clone()),
            None => Err(format!("HPACK: index {i} out of range")),
        }
    }

    /// Decodes a whole header block, calling `field` for each field in order.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), String> {
        let mut at = 0usize;
        let mut fields_seen = false;
        while at < block.len() {
            let b = block[at];
            if b & 0x80 != 0 {
                let i = read_int(block, &mut at, 7)?;
                let (n, v) = self.entry(i)?;
                field(n, v);
                fields_seen = true;
            } else if b & 0xe0 == 0x20 {
                // A table size update, only before the first field (§4.2).
                if fields_seen {
                    return Err("HPACK: a table size update after a field".into());
                }
                let n = read_int(block, &mut at, 5)?;
                if n > TABLE_SIZE {
                    return Err(format!("HPACK: table size {n} over {TABLE_SIZE}"));
                }
                self.max = Some(n);
                self.evict(0);
            } else {
                let (bits, index) = if b & 0x40 != 0 { (6, true) } else { (4, false) };
                let i = read_int(block, &mut at, bits)?;
                // A name from a table is shared, not copied (the table may change below).
                let (literal, shared);
                let name: &[u8] = if i == 0 {
                    literal = read_string(block, &mut at)?;
                    &literal
                } else {
                    shared = self.name_of(i)?;
                    &shared
                };
                let value = read_string(block, &mut at)?;
                field(name, &value);
                fields_seen = true;
                if index {
                    let size = entry_size(name, &value);
                    if size > self.max() {
                        // Larger than the table: the table empties (§4.4).
                        self.table.clear();
                        self.size = 0;
                    } else {
                        self.evict(size);
                        self.table.push_front((
                            Bytes::copy_from_slice(name),
                            Bytes::copy_from_slice(&value),
                        ));
                        self.size += size;
                    }
                }
            }
        }
        Ok(())
    }
}

/// An integer with a `bits`-bit prefix at `block[*at]` (§5.1).
fn read_int(block: &[u8], at: &mut usize, bits: u8) -> Result<usize, String> {
    let max = (1usize << bits) - 1;
    let mut v = usize::from(block[*at]) & max;
    *at += 1;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0u32;
    loop {
        let Some(&b) = block.get(*at) else {
            return Err("HPACK: truncated integer".into());
        };
        *at += 1;
        if shift > 28 {
            return Err("HPACK: integer too large".into());
        }
        v += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// A string literal at `block[*at]`: borrowed when raw, decoded when Huffman-coded.
fn read_string<'a>(block: &'a [u8], at: &mut usize) -> Result<Cow<'a, [u8]>, String> {
    let Some(&first) = block.get(*at) else {
        return Err("HPACK: truncated string".into());
    };
    let len = read_int(block, at, 7)?;
    let end = at
        .checked_add(len)
        .filter(|e| *e <= block.len())
        .ok_or("HPACK: truncated string")?;
    let raw = &block[*at..end];
    *at = end;
    if first & 0x80 == 0 {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::new();
    super::huffman::decode(raw, &mut out).ok_or("HPACK: bad Huffman code")?;
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(d: &mut Decoder, block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut got = Vec::new();
        d.decode(block, |n, v| got.push((n.to_vec(), v.to_vec())))
            .unwrap();
        got
    }

    #[test]
    fn repeated_fields_become_one_byte_and_decode_as_written() {
        let mut e = Encoder::default();
        let mut d = Decoder::default();
        let fields: Vec<(&[u8], &[u8], Mode)> = vec![
            (b":method", b"POST", Mode::Index),
            (b":scheme", b"https", Mode::Index),
            (b":authority", b"api.push.apple.com", Mode::Index),
            (b":path", b"/3/device/abcd", Mode::Literal),
            (b"apns-topic", b"com.example", Mode::Index),
            (b"authorization", b"bearer xyz", Mode::Never),
        ];
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let mut out = BytesMut::new();
            e.begin(&mut out);
            for (n, v, m) in &fields {
                e.field(&mut out, n, v, *m);
            }
            sizes.push(out.len());
            let want: Vec<_> = fields
                .iter()
                .map(|(n, v, _)| (n.to_vec(), v.to_vec()))
                .collect();
            assert_eq!(decode(&mut d, &out), want);
        }
        // `:authority` and `apns-topic` are one byte each from the second block on.
        assert!(sizes[1] < sizes[0]);
        assert_eq!(sizes[1], sizes[2]);
        assert_eq!(
            sizes[0] - sizes[1],
            (1 + 18 + 1) + (1 + 10 + 1 + 11 + 1) - 2
        );
    }

    #[test]
    fn a_lower_peer_table_size_is_signalled_and_kept() {
        let mut e = Encoder::default();
        let mut d = Decoder::default();
        let mut out = BytesMut::new();
        e.begin(&mut out);
        e.field(&mut out, b"x-a", &[b'a'; 100], Mode::Index);
        decode(&mut d, &out);
        e.set_peer_max(0);
        e.set_peer_max(200);
        let mut out = BytesMut::new();
        e.begin(&mut out);
        // The lowest size, then the current one.
        assert_eq!(&out[..], &[0x20, 0x3f, 0xa9, 0x01]);
        e.field(&mut out, b"x-a", &[b'a'; 100], Mode::Index);
        e.field(&mut out, b"x-b", &[b'b'; 100], Mode::Index);
        assert_eq!(decode(&mut d, &out).len(), 2);
        assert!(e.size <= 200);
        assert_eq!(e.table.len(), 1);
    }

    #[test]
    fn a_literal_may_take_its_name_from_either_table() {
        let mut d = Decoder::default();
        // `x-a: 1` into the table; then `x-a: 2` and `content-type: j` with indexed names
        // (dynamic 62, static 31), the second added to the table as well.
        let mut b = vec![0x40, 3];
        b.extend_from_slice(b"x-a\x011");
        b.extend_from_slice(&[0x0f, 62 - 15, 1, b'2', 0x40 | 31, 1, b'j']);
        assert_eq!(
            decode(&mut d, &b),
            vec![
                (b"x-a".to_vec(), b"1".to_vec()),
                (b"x-a".to_vec(), b"2".to_vec()),
                (b"content-type".to_vec(), b"j".to_vec()),
            ]
        );
        assert_eq!(d.table.len(), 2);
        assert_eq!(&d.table[0].0[..], b"content-type");
        assert!(Decoder::default()
            .decode(&[0x0f, 62 - 15, 0], |_, _| ())
            .is_err());
    }

    #[test]
    fn integers_follow_the_rfc_examples() {
        let mut out = BytesMut::new();
        int(&mut out, 10, 5, 0);
        int(&mut out, 1337, 5, 0);
        int(&mut out, 42, 8, 0);
        assert_eq!(&out[..], &[10, 31, 154, 10, 42]);
    }

    proptest::proptest! {
        /// Whatever fields, modes and table size changes: each block decodes to the fields
        /// written, in order, with the encoder's and decoder's tables in step.
        #[test]
        fn blocks_decode_to_the_fields_written(
            blocks in proptest::collection::vec(
                (
                    proptest::option::of(0usize..5000),
                    proptest::collection::vec(
                        ("[a-z-]{1,12}", proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0u8..3),
                        0..12,
                    ),
                ),
                1..12,
            )
        ) {
            let mut e = Encoder::default();
            let mut d = Decoder::default();
            for (resize, fields) in blocks {
                if let Some(n) = resize {
                    e.set_peer_max(n);
                }
                let mut out = BytesMut::new();
                e.begin(&mut out);
                for (n, v, m) in &fields {
                    let mode = [Mode::Index, Mode::Literal, Mode::Never][usize::from(*m)];
                    e.field(&mut out, n.as_bytes(), v, mode);
                }
                let want: Vec<_> = fields.iter().map(|(n, v, _)| (n.as_bytes().to_vec(), v.clone())).collect();
                proptest::prop_assert_eq!(decode(&mut d, &out), want);
                proptest::prop_assert!(e.size <= e.max);
                proptest::prop_assert_eq!(e.table.len(), d.table.len());
            }
        }
    }
}
