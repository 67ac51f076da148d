//! Output escaping (JSON string content, XML text and attributes, raw header text), clipping by
//! characters and URI encoding, all without allocating.

/// Where rendered text goes. Implementations escape what they are given for their context.
pub(crate) trait Sink {
    /// Appends `s`, escaped.
    fn text(&mut self, s: &str);

    /// Appends `s` URI-encoded (RFC 3986 §2.3: unreserved characters kept, every other byte of
    /// the UTF-8 encoding as `%XX`, upper-case hex as §2.1 recommends), then escaped.
    fn uri(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let b = s.as_bytes();
        let mut run = 0;
        for (i, &x) in b.iter().enumerate() {
            if x.is_ascii_alphanumeric() || matches!(x, b'-' | b'.' | b'_' | b'~') {
                continue;
            }
            // A non-empty run starts and ends next to ASCII bytes or at the ends of `s`: on
            // char boundaries. (An empty one may sit inside a multi-byte character.)
            if run < i {
                self.text(&s[run..i]);
            }
            let enc = [b'%', HEX[usize::from(x >> 4)], HEX[usize::from(x & 15)]];
            // Always ASCII, so always UTF-8.
            if let Ok(t) = std::str::from_utf8(&enc) {
                self.text(t);
            }
            run = i + 1;
        }
        if run < b.len() {
            self.text(&s[run..]);
        }
    }
}

/// Text as is (header values, the expiry).
pub(crate) struct Raw<'a>(pub(crate) &'a mut String);

impl Sink for Raw<'_> {
    fn text(&mut self, s: &str) {
        self.0.push_str(s);
    }
}

/// The content of a JSON string (RFC 8259 §7): `"` and `\` escaped, control characters as
/// `\n`, `\r`, `\t` or `\u00XX`. Everything else, non-ASCII included, is copied: the output is
/// UTF-8 JSON, which is what every push service takes.
pub(crate) struct JsonStr<'a>(pub(crate) &'a mut Vec<u8>);

impl Sink for JsonStr<'_> {
    fn text(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let out = &mut *self.0;
        let b = s.as_bytes();
        let mut run = 0;
        for (i, &x) in b.iter().enumerate() {
            let esc: &[u8] = match x {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f => &[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(x >> 4)],
                    HEX[usize::from(x & 15)],
                ],
                _ => continue,
            };
            out.extend_from_slice(&b[run..i]);
            out.extend_from_slice(esc);
            run = i + 1;
        }
        out.extend_from_slice(&b[run..]);
    }
}

/// XML character data (`attr == false`) or an attribute value (`attr == true`).
///
/// `& < > " '` become the predefined entities everywhere. CR is written `&#13;` (a parser turns
/// a literal CR into LF, XML 1.0 §2.11) and, in attributes, TAB and LF are written `&#9;` and
/// `&#10;` (attribute-value normalisation turns literal ones into spaces, §3.3.3), so that the
/// value a parser reads back is the property's. Characters XML 1.0 cannot carry at all (§2.2:
/// C0 controls other than TAB, LF, CR; U+FFFE; U+FFFF) become U+FFFD: not even a character
/// reference may name them, and a toast that does not parse is dropped by the push service.
pub(crate) struct Xml<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) attr: bool,
}

impl Sink for Xml<'_> {
    fn text(&mut self, s: &str) {
        let out = &mut *self.out;
        let b = s.as_bytes();
        let mut run = 0;
        let mut i = 0;
        while i < b.len() {
            let x = b[i];
            let mut width = 1;
            let esc: &[u8] = match x {
                b'&' => b"&amp;",
                b'<' => b"&lt;",
                b'>' => b"&gt;",
                b'"' => b"&quot;",
                b'\'' => b"&apos;",
                b'\r' => b"&#13;",
                b'\t' if self.attr => b"&#9;",
                b'\n' if self.attr => b"&#10;",
                b'\t' | b'\n' => {
                    i += 1;
                    continue;
                }
                0..=0x1f => "\u{FFFD}".as_bytes(),
                // U+FFFE and U+FFFF are EF BF BE / EF BF BF.
                0xef if b.get(i + 1) == Some(&0xbf)
                    && matches!(b.get(i + 2), Some(0xbe | 0xbf)) =>
                {
                    width = 3;
                    "\u{FFFD}".as_bytes()
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&b[run..i]);
            out.extend_from_slice(esc);
            i += width;
            run = i;
        }
        out.extend_from_slice(&b[run..]);
    }
}

/// The first `n` characters (Unicode scalar values) of `v`.
pub(crate) fn clip_chars(v: &str, n: usize) -> &str {
    if v.len() <= n {
        // At most `len` characters: nothing to cut.
        return v;
    }
    match v.char_indices().nth(n) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// For `.(p, n)`: `None` when `v` has at most `n` characters (keep it), else the first `n - 3`
/// characters, to be followed by `...`.
pub(crate) fn ellipsis_cut(v: &str, n: usize) -> Option<&str> {
    if v.len() <= n {
        return None;
    }
    let keep = n.saturating_sub(3);
    let mut cut = v.len();
    for (k, (i, _)) in v.char_indices().enumerate() {
        if k == keep {
            cut = i;
        }
        if k == n {
            return Some(&v[..cut]);
        }
    }
    None
}

/// The end of a JSON number (RFC 8259 §6) starting at `i`, if one does:
/// `-? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`.
pub(crate) fn json_number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        let s = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > s).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i)?,
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

/// Whether `#(p)` writes `v` as a number: the whole of `v` is a JSON number (NH's JavaScript
/// number pattern, plus a leading `-`) that an `f64` holds without overflowing (`1e999` is
/// valid JSON, but serde_json and most PNS parsers refuse it, so it stays a string).
pub(crate) fn is_number(v: &str) -> bool {
    json_number_end(v.as_bytes(), 0) == Some(v.len()) && v.parse::<f64>().is_ok_and(f64::is_finite)
}
