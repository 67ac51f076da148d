//! A JSON syntax checker (RFC 8259) that reports every string *value* (not object keys) to a
//! visitor, which is where template expressions live. Iterative: nesting costs a byte of stack
//! vector, not a call frame.

use std::ops::Range;

use super::escape::json_number_end;
use super::expr::ExprErr;

/// Deepest nesting of arrays and objects accepted. serde_json refuses more than 128 levels by
/// default, push services' payloads are a few levels deep; 64 leaves room and keeps every
/// rendered body parseable by serde_json.
pub(crate) const MAX_JSON_DEPTH: usize = 64;

/// Receives the string values of a JSON document as they are met.
pub(crate) trait JsonVisitor {
    /// `quoted` is the whole string, quotes included, and is known to be a valid JSON string.
    fn string_value(&mut self, src: &str, quoted: Range<usize>) -> Result<(), ExprErr>;
}

/// Checks nothing; for syntax-only scans.
pub(crate) struct NoVisit;

impl JsonVisitor for NoVisit {
    fn string_value(&mut self, _: &str, _: Range<usize>) -> Result<(), ExprErr> {
        Ok(())
    }
}

fn fail<T>(pos: usize, message: impl Into<String>) -> Result<T, ExprErr> {
    Err(ExprErr {
        pos,
        message: message.into(),
    })
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// Scans the whole of `src` as one JSON value surrounded by optional whitespace.
pub(crate) fn scan(src: &str, v: &mut impl JsonVisitor) -> Result<(), ExprErr> {
    let b = src.as_bytes();
    let mut stack: Vec<u8> = Vec::new();
    let mut i = skip_ws(b, 0);
    // `true` when a value is expected next, `false` after a complete value.
    let mut want_value = true;
    loop {
        if want_value {
            match b.get(i) {
                Some(&open @ (b'{' | b'[')) => {
                    if stack.len() == MAX_JSON_DEPTH {
                        return fail(i, format!("JSON nests deeper than {MAX_JSON_DEPTH} levels"));
                    }
                    stack.push(open);
                    i = skip_ws(b, i + 1);
                    let close = if open == b'{' { b'}' } else { b']' };
                    if b.get(i) == Some(&close) {
                        stack.pop();
                        i += 1;
                        want_value = false;
                    } else if open == b'{' {
                        i = key(b, i)?;
                    }
                    continue;
                }
                Some(b'"') => {
                    let end = string_end(b, i)?;
                    v.string_value(src, i..end)?;
                    i = end;
                }
                Some(b't') if b[i..].starts_with(b"true") => i += 4,
                Some(b'f') if b[i..].starts_with(b"false") => i += 5,
                Some(b'n') if b[i..].starts_with(b"null") => i += 4,
                Some(b'-' | b'0'..=b'9') => {
                    let Some(end) = json_number_end(b, i) else {
                        return fail(i, "malformed JSON number");
                    };
                    if !src[i..end].parse::<f64>().is_ok_and(f64::is_finite) {
                        return fail(i, "JSON number out of range for a 64-bit float");
                    }
                    i = end;
                }
                Some(_) => return fail(i, "expected a JSON value"),
                None => return fail(i, "expected a JSON value, found the end of the body"),
            }
            want_value = false;
            continue;
        }
        i = skip_ws(b, i);
        let Some(&top) = stack.last() else {
            if i != b.len() {
                return fail(i, "expected the end of the body after the JSON value");
            }
            return Ok(());
        };
        match (top, b.get(i)) {
            (_, Some(b',')) => {
                i = skip_ws(b, i + 1);
                if top == b'{' {
                    i = key(b, i)?;
                }
                want_value = true;
            }
            (b'{', Some(b'}')) | (b'[', Some(b']')) => {
                stack.pop();
                i += 1;
            }
            (b'{', _) => return fail(i, "expected ',' or '}' in a JSON object"),
            _ => return fail(i, "expected ',' or ']' in a JSON array"),
        }
    }
}

/// At an object key: `"key" ws : ws`; returns where the value starts.
fn key(b: &[u8], i: usize) -> Result<usize, ExprErr> {
    if b.get(i) != Some(&b'"') {
        return fail(i, "expected a string key in a JSON object");
    }
    let i = skip_ws(b, string_end(b, i)?);
    if b.get(i) != Some(&b':') {
        return fail(i, "expected ':' after a JSON object key");
    }
    Ok(skip_ws(b, i + 1))
}

fn hex4(b: &[u8], i: usize) -> Option<u16> {
    let h = b.get(i..i + 4)?;
    let mut v = 0u16;
    for &c in h {
        v = v * 16 + (c as char).to_digit(16)? as u16;
    }
    Some(v)
}

/// At an opening `"`: the index just after the closing one. Checks escapes (surrogates must
/// pair, as serde_json requires) and refuses raw control characters.
pub(crate) fn string_end(b: &[u8], open: usize) -> Result<usize, ExprErr> {
    let mut i = open + 1;
    loop {
        match b.get(i) {
            None => return fail(open, "unterminated JSON string"),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let Some(u) = hex4(b, i + 2) else {
                        return fail(i, "expected four hex digits after \\u");
                    };
                    match u {
                        0xd800..=0xdbff => {
                            let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                                .then(|| hex4(b, i + 8))
                                .flatten();
                            if !matches!(low, Some(0xdc00..=0xdfff)) {
                                return fail(i, "lone UTF-16 surrogate in a \\u escape");
                            }
                            i += 12;
                        }
                        0xdc00..=0xdfff => return fail(i, "lone UTF-16 surrogate in a \\u escape"),
                        _ => i += 6,
                    }
                }
                _ => return fail(i, "invalid escape in a JSON string"),
            },
            Some(0..=0x1f) => {
                return fail(i, "control character in a JSON string (it must be escaped)")
            }
            Some(_) => i += 1,
        }
    }
}

/// Decodes the content of a valid JSON string (without its quotes). Returns the text and, for
/// each of its bytes and its end, the offset in `raw` it came from.
pub(crate) fn decode(raw: &str) -> (String, Vec<usize>) {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut map = Vec::with_capacity(raw.len() + 1);
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            let c = raw[i..].chars().next().unwrap_or('\u{FFFD}');
            for k in 0..c.len_utf8() {
                map.push(i + k);
            }
            out.push(c);
            i += c.len_utf8().max(1);
            continue;
        }
        let (c, len) = match b.get(i + 1) {
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => {
                let hi = hex4(b, i + 2).unwrap_or(0xfffd);
                if (0xd800..=0xdbff).contains(&hi) {
                    let lo = hex4(b, i + 8).unwrap_or(0xdc00);
                    let c = 0x10000 + ((u32::from(hi) - 0xd800) << 10) + (u32::from(lo) - 0xdc00);
                    (char::from_u32(c).unwrap_or('\u{FFFD}'), 12)
                } else {
                    (char::from_u32(u32::from(hi)).unwrap_or('\u{FFFD}'), 6)
                }
            }
            Some(&c) => (c as char, 2),
            None => ('\\', 1),
        };
        map.extend(std::iter::repeat_n(i, c.len_utf8()));
        out.push(c);
        i += len;
    }
    map.push(b.len());
    (out, map)
}
