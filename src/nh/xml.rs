//! A small element tree over `quick-xml` for the few XML bodies Notification Hubs clients send
//! (registration descriptions), and the escaping used by every XML answer this module writes.
//!
//! Only what the codecs need: element local names (prefixes are dropped: a request body's
//! namespaces never change its meaning here), child elements in order, and the element's text
//! (character data and CDATA concatenated, the five predefined entities and character
//! references decoded). Attributes are not kept. Bounded: at most [`MAX_DEPTH`] levels and
//! [`MAX_ELEMENTS`] elements, so hostile input cannot exhaust the stack (the tree is dropped
//! recursively) or memory beyond the body's own size.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest nesting accepted. A registration entry is 4 levels deep (`entry/content/
/// *RegistrationDescription/ApnsHeaders/ApnsHeader/Header` is 6); 32 leaves room for
/// wrappers and still keeps the recursive drop shallow.
pub(crate) const MAX_DEPTH: usize = 32;
/// Most elements accepted in one document. A registration has ~10 plus two per header.
pub(crate) const MAX_ELEMENTS: usize = 4096;

/// One element: its local name, its element children and its own text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) children: Vec<Element>,
    /// Character data directly inside this element (not in children), entities decoded.
    pub(crate) text: String,
}

impl Element {
    /// The first child with this local name.
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name.
    pub(crate) fn children_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XmlError {
    /// Byte offset where reading stopped.
    pub(crate) pos: u64,
    pub(crate) message: String,
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.pos)
    }
}

fn local(name: &[u8]) -> String {
    let local = match name.iter().rposition(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    String::from_utf8_lossy(local).into_owned()
}

fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

/// Reads a whole document into its root element. Refuses: more than one root, text outside
/// the root, unbalanced or mismatched tags, unknown entities, DOCTYPE declarations (no DTD is
/// needed and refusing them keeps entity tricks out), and documents over the limits.
pub(crate) fn parse(src: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(src);
    reader.config_mut().check_end_names = true;
    reader.config_mut().check_comments = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let pos = reader.buffer_position();
        let fail = |message: String| XmlError { pos, message };
        let ev = reader
            .read_event()
            .map_err(|e| fail(format!("malformed XML: {e}")))?;
        match ev {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(fail("more than one root element".into()));
            }
            Event::Start(s) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(fail(format!(
                        "document too large (at most {MAX_DEPTH} levels and {MAX_ELEMENTS} elements)"
                    )));
                }
                stack.push(Element {
                    name: local(s.name().as_ref()),
                    ..Element::default()
                });
            }
            Event::Empty(s) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(fail(format!(
                        "document too large (at most {MAX_DEPTH} levels and {MAX_ELEMENTS} elements)"
                    )));
                }
                let el = Element {
                    name: local(s.name().as_ref()),
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                // quick-xml checked that the name matches the open element.
                let Some(el) = stack.pop() else {
                    return Err(fail("end tag without a start tag".into()));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t
                    .xml10_content()
                    .map_err(|e| fail(format!("bad text: {e}")))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(fail("text outside the root element".into())),
                }
            }
            Event::CData(c) => {
                let text = c
                    .xml10_content()
                    .map_err(|e| fail(format!("bad CDATA: {e}")))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None => return Err(fail("CDATA outside the root element".into())),
                }
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        let name = r.decode().map_err(|e| fail(format!("bad entity: {e}")))?;
                        predefined(&name).ok_or_else(|| fail(format!("unknown entity &{name};")))?
                    }
                    Err(e) => return Err(fail(format!("bad character reference: {e}"))),
                };
                match stack.last_mut() {
                    Some(el) => el.text.push(ch),
                    None => return Err(fail("reference outside the root element".into())),
                }
            }
            Event::DocType(_) => return Err(fail("DOCTYPE declarations are not accepted".into())),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(fail(format!(
                        "unclosed element <{}>",
                        stack[stack.len() - 1].name
                    )));
                }
                return root.ok_or_else(|| fail("document is empty".into()));
            }
        }
    }
}

/// Appends `s` escaped for XML character data or a double-quoted attribute value. Characters
/// XML 1.0 cannot carry at all (controls other than tab, LF, CR; U+FFFE/U+FFFF) become U+FFFD:
/// a well-formed answer matters more than those characters (the SDK validates before parsing,
/// §3.3 of nh-rest-api.md).
pub(crate) fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // CR would be normalised away by the reader; keep it as a reference.
            '\r' => out.push_str("&#xD;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// `s` escaped (see [`escape_into`]).
#[cfg(test)]
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

/// Appends `<name>escaped text</name>`.
pub(crate) fn leaf(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Appends `s` as CDATA sections (a `]]>` inside is split across two sections). Characters XML
/// cannot carry become U+FFFD as in [`escape_into`].
pub(crate) fn cdata_into(out: &mut String, s: &str) {
    out.push_str("<![CDATA[");
    for c in s.chars() {
        match c {
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
        if c == '>' && out.ends_with("]]>") {
            // Close before the '>' and reopen: "]]" + "]]><![CDATA[" + ">".
            out.truncate(out.len() - 1);
            out.push_str("]]><![CDATA[>");
        }
    }
    out.push_str("]]>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_text_entities_cdata() {
        let doc = r#"<?xml version="1.0"?><a:root xmlns:a="x" k="v"><b>1 &amp; 2 &#x41;</b><c><![CDATA[<x>]]></c><d/></a:root>"#;
        let el = parse(doc).unwrap();
        assert_eq!(el.name, "root");
        assert_eq!(el.child("b").unwrap().text, "1 & 2 A");
        assert_eq!(el.child("c").unwrap().text, "<x>");
        assert_eq!(el.child("d").unwrap().text, "");
    }

    #[test]
    fn refusals() {
        for (doc, want) in [
            ("", "document is empty"),
            ("<a></b>", "malformed"),
            ("<a>", "unclosed"),
            ("<a/><b/>", "more than one root"),
            ("x<a/>", "text outside"),
            ("<a>&foo;</a>", "unknown entity"),
            ("<!DOCTYPE a><a/>", "DOCTYPE"),
        ] {
            let e = parse(doc).unwrap_err().to_string();
            assert!(e.contains(want), "{doc:?}: {e}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().to_string().contains("too large"));
    }

    #[test]
    fn escaping_round_trips() {
        let s = "a<b>&\"c\"\r\n\u{1}]]>";
        let mut doc = String::from("<r><x>");
        escape_into(&mut doc, s);
        doc.push_str("</x><y>");
        cdata_into(&mut doc, "a]]>b]]]>c");
        doc.push_str("</y></r>");
        let el = parse(&doc).unwrap();
        assert_eq!(el.child("x").unwrap().text, "a<b>&\"c\"\r\n\u{FFFD}]]>");
        assert_eq!(el.child("y").unwrap().text, "a]]>b]]]>c");
    }
}
