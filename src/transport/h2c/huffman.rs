//! Huffman decoding of HPACK string literals (RFC 7541 §5.2, Appendix B). The code table is
//! the RFC's (as tabulated in the `h2` crate, MIT); the decoder is canonical: codes of one
//! length are consecutive, so a code is found by comparing its prefix with each length's
//! limit, after a 256-entry table that answers the codes of 8 bits or fewer at once.

use std::sync::OnceLock;

const ENCODE_CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

const ENCODE_CODE_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// EOS (symbol 256): 30 one bits. It must not appear in a string (§5.2).
const EOS_LEN: u8 = 30;

struct Tables {
    /// For each 8-bit prefix: (symbol, code length) when a code of at most 8 bits starts it,
    /// else length 0.
    short: [(u8, u8); 256],
    /// Per code length L (index L): one past the last L-bit code, as an L-bit number.
    limit: [u32; 31],
    /// Per code length: the first L-bit code.
    first: [u32; 31],
    /// Per code length: where its symbols start in `symbols`.
    offset: [usize; 31],
    /// The symbols ordered by (length, code); 256 is EOS.
    symbols: Vec<u16>,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let code = |s: usize| -> (u32, u8) {
            if s == 256 {
                ((1 << EOS_LEN) - 1, EOS_LEN)
            } else {
                (ENCODE_CODES[s], ENCODE_CODE_LENGTHS[s])
            }
        };
        let mut symbols: Vec<u16> = (0..=256).collect();
        symbols.sort_by_key(|&s| {
            let (c, l) = code(usize::from(s));
            (l, c)
        });
        let mut count = [0u32; 31];
        for s in 0..=256 {
            count[usize::from(code(s).1)] += 1;
        }
        let (mut first, mut limit, mut offset) = ([0u32; 31], [0u32; 31], [0usize; 31]);
        let (mut next, mut at) = (0u32, 0usize);
        for l in 1..31 {
            first[l] = next;
            limit[l] = next + count[l];
            offset[l] = at;
            at += count[l] as usize;
            next = (next + count[l]) << 1;
        }
        let mut short = [(0u8, 0u8); 256];
        for s in 0..256usize {
            let (c, l) = code(s);
            if l <= 8 {
                let base = (c << (8 - l)) as usize;
                for e in &mut short[base..base + (1 << (8 - l))] {
                    *e = (s as u8, l);
                }
            }
        }
        Tables {
            short,
            limit,
            first,
            offset,
            symbols,
        }
    })
}

/// Decodes a Huffman-coded string; `None` when it is malformed (EOS, or padding that is not
/// a prefix of EOS or longer than 7 bits).
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Option<()> {
    let t = tables();
    dst.reserve(src.len() * 8 / 5);
    // Bits not yet decoded, left-aligned in `acc`; `n` of them are valid.
    let mut acc: u64 = 0;
    let mut n: u32 = 0;
    let mut input = src.iter();
    loop {
        while n <= 56 {
            match input.next() {
                Some(&b) => {
                    acc |= u64::from(b) << (56 - n);
                    n += 8;
                }
                None => break,
            }
        }
        if n == 0 {
            return Some(());
        }
        // The next 8 bits, padded with ones past the end (the padding looks like EOS).
        let pad = if n < 8 { u64::MAX >> n } else { 0 };
        let peek8 = ((acc | pad) >> 56) as usize;
        let (sym, len) = t.short[peek8];
        if len != 0 {
            if u32::from(len) > n {
                return padding(acc, n);
            }
            dst.push(sym);
            acc <<= len;
            n -= u32::from(len);
            continue;
        }
        let mut found = false;
        for l in 9..=30u32 {
            if l > n {
                return padding(acc, n);
            }
            let c = (acc >> (64 - l)) as u32;
            if c < t.limit[l as usize] {
                let s = t.symbols[t.offset[l as usize] + (c - t.first[l as usize]) as usize];
                if s == 256 {
                    return None;
                }
                dst.push(s as u8);
                acc <<= l;
                n -= l;
                found = true;
                break;
            }
        }
        if !found {
            return None;
        }
    }
}

/// The last `n` bits: padding when fewer than 8 and all ones.
fn padding(acc: u64, n: u32) -> Option<()> {
    let ones = if n == 0 { 0 } else { u64::MAX << (64 - n) };
    (n < 8 && acc & ones == ones).then_some(())
}

/// Encodes `src` (for the tests and the fuzz target: this client writes raw literals).
#[cfg(any(test, feature = "bench-support"))]
pub(crate) fn encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut n) = (0u64, 0u32);
    for &b in src {
        let (c, l) = (
            u64::from(ENCODE_CODES[usize::from(b)]),
            u32::from(ENCODE_CODE_LENGTHS[usize::from(b)]),
        );
        acc = (acc << l) | c;
        n += l;
        while n >= 8 {
            out.push((acc >> (n - 8)) as u8);
            n -= 8;
        }
    }
    if n > 0 {
        out.push(((acc << (8 - n)) as u8) | (0xff >> n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7541_examples_decode() {
        // C.4.1: "www.example.com"; C.4.2: "no-cache"; C.4.3: "custom-key", "custom-value".
        let cases: [(&[u8], &str); 4] = [
            (
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
                "www.example.com",
            ),
            (&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], "no-cache"),
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
                "custom-key",
            ),
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
                "custom-value",
            ),
        ];
        for (coded, text) in cases {
            let mut out = Vec::new();
            decode(coded, &mut out).unwrap();
            assert_eq!(out, text.as_bytes());
            assert_eq!(encode(text.as_bytes()), coded);
        }
    }

    #[test]
    fn every_byte_round_trips_and_bad_padding_is_refused() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        decode(&encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
        // A whole byte of padding, zero padding ("0" then 000), and EOS are refused.
        let mut bad = encode(b"a");
        bad.push(0xff);
        assert!(decode(&bad, &mut Vec::new()).is_none());
        assert!(decode(&[0x00], &mut Vec::new()).is_none());
        assert!(decode(&[0xff, 0xff, 0xff, 0xff], &mut Vec::new()).is_none());
    }
}
