//! A small XML 1.0 well-formedness checker that reports attribute values and text runs to a
//! visitor, which is where template expressions live.
//!
//! What it checks (XML 1.0 fifth edition; what a push service's parser needs): one root
//! element; start and end tags balanced and matching; attribute values quoted, without `<`,
//! and unique per element; `&` only as one of the five predefined entities or a character
//! reference to an allowed character (§4.1, §4.6: no DTD, so no other entity exists); no `]]>`
//! in text; comments, processing instructions and CDATA sections terminated; only characters
//! XML allows (§2.2). Not supported: DOCTYPE declarations (a template has no use for a DTD, and
//! refusing them keeps entity expansion out). Names are checked loosely: a letter, `_`, `:` or
//! any non-ASCII character first, then also digits, `-` and `.`.

use std::ops::Range;

use super::expr::ExprErr;

/// Receives attribute values and text runs as they are met.
pub(crate) trait XmlVisitor {
    /// `value` is between the quotes; its references are known to be valid.
    fn attr_value(&mut self, src: &str, value: Range<usize>) -> Result<(), ExprErr>;
    /// `run` is character data between two pieces of markup, whitespace included.
    fn text(&mut self, src: &str, run: Range<usize>) -> Result<(), ExprErr>;
}

/// Checks nothing; for syntax-only scans.
pub(crate) struct NoVisit;

impl XmlVisitor for NoVisit {
    fn attr_value(&mut self, _: &str, _: Range<usize>) -> Result<(), ExprErr> {
        Ok(())
    }
    fn text(&mut self, _: &str, _: Range<usize>) -> Result<(), ExprErr> {
        Ok(())
    }
}

fn fail<T>(pos: usize, message: impl Into<String>) -> Result<T, ExprErr> {
    Err(ExprErr {
        pos,
        message: message.into(),
    })
}

pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).copied().is_some_and(is_ws) {
        i += 1;
    }
    i
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80
}

fn is_name_byte(b: u8) -> bool {
    is_name_start(b) || b.is_ascii_digit() || b == b'-' || b == b'.'
}

/// XML 1.0 §2.2 `Char`.
fn is_xml_char(c: u32) -> bool {
    matches!(c, 0x9 | 0xa | 0xd | 0x20..=0xd7ff | 0xe000..=0xfffd | 0x10000..=0x10ffff)
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| from + p)
}

/// At a `&`: the end of the reference and the character it stands for.
fn reference(b: &[u8], i: usize) -> Result<(usize, char), ExprErr> {
    let Some(semi) = b[i..]
        .iter()
        .take(12)
        .position(|&x| x == b';')
        .map(|p| i + p)
    else {
        return fail(
            i,
            "'&' must start an entity or character reference ending in ';' (write '&amp;')",
        );
    };
    let body = &b[i + 1..semi];
    let c = match body {
        b"lt" => '<',
        b"gt" => '>',
        b"amp" => '&',
        b"quot" => '"',
        b"apos" => '\'',
        [b'#', b'x', hex @ ..] if !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit) => {
            char_ref(hex, 16, i)?
        }
        [b'#', dec @ ..] if !dec.is_empty() && dec.iter().all(u8::is_ascii_digit) => {
            char_ref(dec, 10, i)?
        }
        _ => {
            return fail(
                i,
                "unknown entity (only &lt; &gt; &amp; &quot; &apos; and character references exist without a DTD)",
            )
        }
    };
    Ok((semi + 1, c))
}

fn char_ref(digits: &[u8], radix: u32, at: usize) -> Result<char, ExprErr> {
    let v = digits.iter().try_fold(0u32, |v, &d| {
        v.checked_mul(radix)?
            .checked_add((d as char).to_digit(radix)?)
    });
    match v.filter(|&v| is_xml_char(v)).and_then(char::from_u32) {
        Some(c) => Ok(c),
        None => fail(at, "character reference to a character XML does not allow"),
    }
}

/// Checks that references in `b[range]` are valid, and (for text) that `]]>` does not occur.
fn check_chars(b: &[u8], range: Range<usize>, text: bool) -> Result<(), ExprErr> {
    let mut i = range.start;
    while i < range.end {
        match b[i] {
            b'&' => i = reference(b, i)?.0,
            b']' if text && b[i..range.end].starts_with(b"]]>") => {
                return fail(i, "']]>' is not allowed in text (write ']]&gt;')")
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Skips a comment or processing instruction at `i` if there is one; `Ok(None)` otherwise.
fn misc(b: &[u8], i: usize) -> Result<Option<usize>, ExprErr> {
    if b[i..].starts_with(b"<!--") {
        // §2.5: "--" may not occur inside a comment, so the first "--" must close it.
        return match find(b, i + 4, b"--") {
            Some(d) if b.get(d + 2) == Some(&b'>') => Ok(Some(d + 3)),
            Some(d) => fail(d, "'--' is not allowed inside a comment"),
            None => fail(i, "unterminated comment: expected '-->'"),
        };
    }
    if b[i..].starts_with(b"<?") {
        return match find(b, i + 2, b"?>") {
            Some(e) => Ok(Some(e + 2)),
            None => fail(i, "unterminated processing instruction: expected '?>'"),
        };
    }
    Ok(None)
}

/// Scans the whole of `src` as one XML document (optional prolog without DOCTYPE, one root
/// element, optional comments and processing instructions after it).
pub(crate) fn scan(src: &str, v: &mut impl XmlVisitor) -> Result<(), ExprErr> {
    if let Some((i, c)) = src
        .char_indices()
        .find(|&(_, c)| !is_xml_char(u32::from(c)))
    {
        return fail(
            i,
            format!("character U+{:04X} is not allowed in XML", u32::from(c)),
        );
    }
    let b = src.as_bytes();
    let mut i = skip_ws(b, 0);
    // Prolog.
    loop {
        if i >= b.len() {
            return fail(i, "expected a root element");
        }
        if let Some(end) = misc(b, i)? {
            i = skip_ws(b, end);
            continue;
        }
        if b[i..].starts_with(b"<!DOCTYPE") {
            return fail(i, "DOCTYPE declarations are not supported in templates");
        }
        if b[i] == b'<' && b.get(i + 1).copied().is_some_and(is_name_start) {
            break;
        }
        return fail(i, "expected a root element");
    }
    // Open elements: (name, offset of its '<').
    let mut stack: Vec<(Range<usize>, usize)> = Vec::new();
    let mut attrs: Vec<Range<usize>> = Vec::new();
    loop {
        if i >= b.len() {
            let (name, at) = stack.last().cloned().unwrap_or((0..0, 0));
            return fail(
                i,
                format!(
                    "expected '</{}>' to close the element opened at byte {at}",
                    &src[name]
                ),
            );
        }
        if b[i] != b'<' {
            let end = b[i..]
                .iter()
                .position(|&x| x == b'<')
                .map_or(b.len(), |p| i + p);
            check_chars(b, i..end, true)?;
            v.text(src, i..end)?;
            i = end;
            continue;
        }
        if let Some(end) = misc(b, i)? {
            i = end;
            continue;
        }
        if b[i..].starts_with(b"<![CDATA[") {
            match find(b, i + 9, b"]]>") {
                Some(e) => i = e + 3,
                None => return fail(i, "unterminated CDATA section: expected ']]>'"),
            }
            continue;
        }
        if b[i..].starts_with(b"<!") {
            return fail(i, "expected a comment or a CDATA section after '<!'");
        }
        if b.get(i + 1) == Some(&b'/') {
            let start = i + 2;
            let end = name_end(b, start)?;
            let close = skip_ws(b, end);
            if b.get(close) != Some(&b'>') {
                return fail(close, "expected '>' to end the end tag");
            }
            // Non-empty: an element is pushed before any content is scanned.
            let (open_name, at) = stack.pop().unwrap_or((0..0, 0));
            if b[start..end] != b[open_name.clone()] {
                return fail(
                    i,
                    format!(
                        "expected '</{}>' to close the element opened at byte {at}",
                        &src[open_name]
                    ),
                );
            }
            i = close + 1;
        } else {
            let open = i;
            let name = i + 1..name_end(b, i + 1)?;
            i = name.end;
            attrs.clear();
            let empty = loop {
                let after_ws = skip_ws(b, i);
                match b.get(after_ws) {
                    Some(b'>') => {
                        i = after_ws + 1;
                        break false;
                    }
                    Some(b'/') if b.get(after_ws + 1) == Some(&b'>') => {
                        i = after_ws + 2;
                        break true;
                    }
                    None => return fail(after_ws, "expected '>' or '/>' to end the start tag"),
                    Some(_) if after_ws == i => {
                        return fail(i, "expected whitespace, '>' or '/>' in the start tag")
                    }
                    Some(_) => {}
                }
                i = after_ws;
                let an = i..name_end(b, i)?;
                if attrs.iter().any(|a| b[a.clone()] == b[an.clone()]) {
                    return fail(i, format!("duplicate attribute '{}'", &src[an]));
                }
                i = skip_ws(b, an.end);
                if b.get(i) != Some(&b'=') {
                    return fail(i, "expected '=' after the attribute name");
                }
                i = skip_ws(b, i + 1);
                let q = match b.get(i) {
                    Some(&q @ (b'"' | b'\'')) => q,
                    _ => return fail(i, "expected a quoted attribute value"),
                };
                let vstart = i + 1;
                let Some(vend) = b[vstart..].iter().position(|&x| x == q).map(|p| vstart + p)
                else {
                    return fail(i, "unterminated attribute value");
                };
                if let Some(lt) = b[vstart..vend].iter().position(|&x| x == b'<') {
                    return fail(
                        vstart + lt,
                        "'<' is not allowed in an attribute value (write '&lt;')",
                    );
                }
                check_chars(b, vstart..vend, false)?;
                v.attr_value(src, vstart..vend)?;
                attrs.push(an);
                i = vend + 1;
            };
            if !empty {
                stack.push((name, open));
            }
        }
        if stack.is_empty() {
            break;
        }
    }
    // Epilog.
    loop {
        i = skip_ws(b, i);
        if i >= b.len() {
            return Ok(());
        }
        match misc(b, i)? {
            Some(end) => i = end,
            None => return fail(i, "expected the end of the body after the root element"),
        }
    }
}

fn name_end(b: &[u8], start: usize) -> Result<usize, ExprErr> {
    if !b.get(start).copied().is_some_and(is_name_start) {
        return fail(start, "expected an XML name");
    }
    let mut i = start + 1;
    while b.get(i).copied().is_some_and(is_name_byte) {
        i += 1;
    }
    Ok(i)
}

/// Decodes references in text already checked by [`scan`]. Returns the text and, for each of
/// its bytes and its end, the offset in `raw` it came from.
pub(crate) fn decode(raw: &str) -> (String, Vec<usize>) {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut map = Vec::with_capacity(raw.len() + 1);
    let mut i = 0;
    while i < b.len() {
        let (next, c) = match b[i] {
            b'&' => reference(b, i).unwrap_or((i + 1, '&')),
            _ => {
                let c = raw[i..].chars().next().unwrap_or('\u{FFFD}');
                (i + c.len_utf8(), c)
            }
        };
        map.extend(std::iter::repeat_n(i, c.len_utf8()));
        out.push(c);
        i = next;
    }
    map.push(b.len());
    (out, map)
}
