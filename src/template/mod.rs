//! Notification Hubs templates: a JSON or XML body whose string values, attribute values and
//! text nodes may be expressions over the properties of a template send
//! (`../shared/design/nh-rest-api.md` §6.2). Compiled once per template, rendered per send into
//! a reused buffer.
//!
//! # Bodies
//!
//! The first non-whitespace character decides the format: `{` or `[` is JSON, `<` is XML,
//! anything else is a compile error. Compiling checks the body is well formed: full JSON syntax
//! (RFC 8259; also refused, because serde_json and push services refuse them: lone `\u`
//! surrogates, numbers that overflow an `f64`, nesting deeper than 64), or XML well-formedness
//! as the small scanner in `xml.rs` checks it (balanced tags, quoted unique attributes, valid
//! references, no DOCTYPE).
//!
//! An expression may only be a *whole* value:
//!
//! - JSON: a whole string value (never an object key), after its escapes are decoded;
//! - XML: a whole attribute value, or a whole text node with its surrounding XML whitespace
//!   trimmed (the whitespace stays in the output), after references are decoded.
//!
//! A value is an expression when it starts with `$(`, `.(`, `%(`, `#(` or `{`; a malformed one is
//! a compile error. Any other value is a literal and is copied byte for byte, as is everything
//! between the values: the output is the template with its holes filled.
//!
//! # Grammar
//!
//! ```text
//! value    = single | number | concat ;            (* the whole value, nothing after it *)
//! single   = ( "$(" ws ref [ ws "," ws count ] | ".(" ws ref ws "," ws count | "%(" ws ref ) ws ")" ;
//! number   = "#(" ws ref ws ")" ;                   (* JSON string values only *)
//! concat   = "{" ws term { ws "+" ws term } ws "}" ;
//! term     = single | literal ;                     (* no '#(', no nested '{' *)
//! literal  = "'" { char - "'" | "''" } "'" | '"' { char - '"' | '""' } '"' ;
//! ref      = name [ ws ":{" default "}" ] ;
//! default  = fallback | text ;
//! fallback = "$(" ws ref ws ")" ;                   (* tagcast extension, exactly, nothing around it *)
//! text     = { char - "}" | "\}" | "\\" | "\$" } ;  (* any other '\' is kept as is *)
//! name     = 1-120 of [A-Za-z0-9_] ;                (* looked up ignoring ASCII case *)
//! count    = digits ;                              (* 0 ..= 4294967295; '.(' needs >= 3 *)
//! ws       = { " " | "\t" | "\r" | "\n" } ;
//! ```
//!
//! | expression | value |
//! | --- | --- |
//! | `$(p)` | the property, `""` when missing |
//! | `$(p, n)` | its first `n` characters (Unicode scalar values) |
//! | `.(p, n)` | unchanged when at most `n` characters, else the first `n - 3` and `...` |
//! | `%(p)` | URI-encoded: RFC 3986 unreserved characters kept, other UTF-8 bytes as `%XX` |
//! | `#(p)` | JSON only: an unquoted JSON number when the value is one (see below), else a string |
//! | `{a + 'x' + b}` | the terms concatenated (the quote doubled inside a literal: `'it''s'`) |
//! | `$(p:{text})` | `text` when `p` is missing (a present but empty `p` is kept) |
//! | `$(p:{$(q)})` | `q` when `p` is missing, itself with an optional default |
//!
//! Edge decisions, where NH's documentation is silent:
//!
//! - `#(p)` writes a number when the whole value matches
//!   `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: NH's pattern plus an optional leading
//!   `-` (JSON allows it and a negative badge delta is a number), and the value fits an `f64`
//!   (`1e999` stays a string: serde_json and PNS parsers refuse it).
//! - Defaults are allowed on all four property forms. A default is literal text with `\}`,
//!   `\\` and `\$` escapes. **Extension**: a default that is exactly one property reference,
//!   `$(p:{$(q)})` or `$(p:{$(q:{...})})`, falls back to that property, for localisation:
//!   `$(msg_fr:{$(msg_en)})`. Nothing may surround the reference inside the braces; a literal
//!   default starting with `$(` is written `\$(`. Chains are at most 8 references long.
//! - No whitespace is allowed before or after a whole JSON value's expression
//!   (`" $(p)"` is a literal, `"$(p) "` is an error); XML text nodes are trimmed first.
//! - Rendered JSON strings are escaped (`"`, `\`, control characters) so the output is valid
//!   JSON whatever the properties hold. Rendered XML escapes `& < > " '`, writes CR (and TAB,
//!   LF in attributes) as character references so they read back unchanged, and replaces
//!   characters XML cannot carry (C0 controls, U+FFFE, U+FFFF) with U+FFFD.
//!
//! # Headers and expiry
//!
//! Each header value and the expiry of a [`crate::Template`] is a *text* template: a literal, or
//! one expression of the grammar above without `#(`. Header names must be HTTP tokens. A
//! rendered header value or expiry may not contain control characters other than TAB (CR, LF
//! and NUL would split or truncate the header): that is a [`RenderError`], not a panic.
//!
//! # Errors
//!
//! A [`TemplateError`] names the part (body, header, expiry), the byte offset in that part's
//! text where the problem is (the start of what is wrong, or where the missing token was
//! expected; for unterminated literals and defaults, the opening quote or brace), and what was
//! expected: `template body, byte 17: expected ')' after property name`.
//!
//! # Cost
//!
//! Rendering appends to a caller's buffer and allocates nothing for literals, `$(p)`, `#(p)`,
//! clipping, `%(p)` or concatenations: property values are borrowed, names are stored
//! lower-cased so a lookup is a binary search without allocation. [`TemplateCache`] keeps the
//! compiled form of the templates in use.

mod cache;
mod escape;
mod expr;
mod json;
mod props;
#[cfg(test)]
mod tests;
mod xml;

use std::fmt;
use std::ops::Range;

pub use cache::{TemplateCache, DEFAULT_CACHE_CAPACITY};
pub use props::{Properties, PropertiesError};

use escape::{is_number, JsonStr, Raw, Sink, Xml};
use expr::{is_expression, write_op, Expr, ExprErr, Place};

/// The format of a template body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyFormat {
    /// Starts with `{` or `[`: APNs, FCM, Web Push and WNS raw-JSON payloads.
    Json,
    /// Starts with `<`: WNS toasts, tiles and badges.
    Xml,
}

/// Which part of an installation template an error is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TemplatePart {
    /// The body.
    Body,
    /// A text template compiled on its own ([`CompiledText::compile`]).
    Text,
    /// The header of this name (its name or its value).
    Header(String),
    /// The expiry.
    Expiry,
}

impl fmt::Display for TemplatePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplatePart::Body => f.write_str("template body"),
            TemplatePart::Text => f.write_str("text template"),
            TemplatePart::Header(name) => write!(f, "header '{name}'"),
            TemplatePart::Expiry => f.write_str("expiry"),
        }
    }
}

/// Why a template does not compile: the part, the byte offset in that part's text, and what was
/// expected there. Displays as `template body, byte 17: expected ')' after property name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    part: TemplatePart,
    offset: usize,
    message: String,
}

impl TemplateError {
    fn new(part: TemplatePart, e: ExprErr) -> Self {
        TemplateError {
            part,
            offset: e.pos,
            message: e.message,
        }
    }

    /// The part of the template that is wrong.
    pub fn part(&self) -> &TemplatePart {
        &self.part
    }

    /// Byte offset in that part's text (the body, the header value or name, the expiry).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// What is wrong, without the part and offset.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, byte {}: {}", self.part, self.offset, self.message)
    }
}

impl std::error::Error for TemplateError {}

/// Why a template did not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A rendered header value holds a byte HTTP header values may not (a control character
    /// other than TAB: RFC 9110 §5.5).
    #[error("rendered value of header '{name}' contains byte 0x{byte:02x}, which a header value may not hold")]
    HeaderValue {
        /// The header's name.
        name: String,
        /// The first offending byte.
        byte: u8,
    },
    /// The rendered expiry holds such a byte.
    #[error("rendered expiry contains byte 0x{byte:02x}, which a header value may not hold")]
    Expiry {
        /// The first offending byte.
        byte: u8,
    },
}

/// Where a hole sits, which decides how it is escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// Replaces a whole JSON string, quotes included.
    Json,
    /// XML character data.
    XmlText,
    /// An XML attribute value, between the quotes.
    XmlAttr,
}

#[derive(Clone, Debug)]
enum Segment {
    /// Copied from the source.
    Lit(Range<usize>),
    /// Filled from the properties.
    Hole(Expr, Ctx),
}

/// A compiled template body. Immutable, `Send + Sync`: compile once, render from any thread.
#[derive(Clone, Debug)]
pub struct CompiledTemplate {
    src: Box<str>,
    format: BodyFormat,
    segments: Vec<Segment>,
    /// Distinct lower-cased names referenced, in order of first appearance.
    names: Vec<Box<str>>,
}

/// Collects holes while a scanner walks the body.
struct Compiler {
    segments: Vec<Segment>,
    lit_from: usize,
    names: Vec<Box<str>>,
}

impl Compiler {
    fn hole(&mut self, range: Range<usize>, expr: Expr, ctx: Ctx) {
        if range.start > self.lit_from {
            self.segments.push(Segment::Lit(self.lit_from..range.start));
        }
        for n in expr.names() {
            if !self.names.iter().any(|k| **k == *n) {
                self.names.push(n.into());
            }
        }
        self.segments.push(Segment::Hole(expr, ctx));
        self.lit_from = range.end;
    }

    /// Parses `src[content]` if it is an expression; `escape` starts an escape sequence and
    /// `decode` decodes the content with its offset map.
    fn value(
        src: &str,
        content: Range<usize>,
        escape: u8,
        decode: fn(&str) -> (String, Vec<usize>),
        place: Place,
    ) -> Result<Option<Expr>, ExprErr> {
        let raw = &src[content.clone()];
        let at = |e: ExprErr, map: Option<&[usize]>| ExprErr {
            pos: content.start + map.map_or(e.pos, |m| m[e.pos.min(m.len() - 1)]),
            message: e.message,
        };
        if !raw.as_bytes().contains(&escape) {
            if !is_expression(raw) {
                return Ok(None);
            }
            return expr::parse(raw, place).map(Some).map_err(|e| at(e, None));
        }
        let (text, map) = decode(raw);
        if !is_expression(&text) {
            return Ok(None);
        }
        expr::parse(&text, place)
            .map(Some)
            .map_err(|e| at(e, Some(&map)))
    }
}

impl json::JsonVisitor for Compiler {
    fn string_value(&mut self, src: &str, quoted: Range<usize>) -> Result<(), ExprErr> {
        let content = quoted.start + 1..quoted.end - 1;
        if let Some(e) = Compiler::value(src, content, b'\\', json::decode, Place::Json)? {
            self.hole(quoted, e, Ctx::Json);
        }
        Ok(())
    }
}

impl xml::XmlVisitor for Compiler {
    fn attr_value(&mut self, src: &str, value: Range<usize>) -> Result<(), ExprErr> {
        if let Some(e) = Compiler::value(src, value.clone(), b'&', xml::decode, Place::Xml)? {
            self.hole(value, e, Ctx::XmlAttr);
        }
        Ok(())
    }

    fn text(&mut self, src: &str, run: Range<usize>) -> Result<(), ExprErr> {
        let b = src.as_bytes();
        let (mut s, mut e) = (run.start, run.end);
        while s < e && xml::is_ws(b[s]) {
            s += 1;
        }
        while e > s && xml::is_ws(b[e - 1]) {
            e -= 1;
        }
        if let Some(x) = Compiler::value(src, s..e, b'&', xml::decode, Place::Xml)? {
            self.hole(s..e, x, Ctx::XmlText);
        }
        Ok(())
    }
}

impl CompiledTemplate {
    /// Compiles a body: detects the format, checks it is well formed and parses every
    /// expression. Errors have [`TemplatePart::Body`] and a byte offset into `body`.
    pub fn compile(body: &str) -> Result<CompiledTemplate, TemplateError> {
        let bad = |e| TemplateError::new(TemplatePart::Body, e);
        let first = body.bytes().position(|b| !xml::is_ws(b));
        let format = match first.map(|i| body.as_bytes()[i]) {
            Some(b'{' | b'[') => BodyFormat::Json,
            Some(b'<') => BodyFormat::Xml,
            Some(_) => {
                return Err(bad(ExprErr {
                    pos: first.unwrap_or(0),
                    message: "expected '{' or '[' (a JSON body) or '<' (an XML body)".into(),
                }))
            }
            None => {
                return Err(bad(ExprErr {
                    pos: body.len(),
                    message: "template body is empty".into(),
                }))
            }
        };
        let mut c = Compiler {
            segments: Vec::new(),
            lit_from: 0,
            names: Vec::new(),
        };
        match format {
            BodyFormat::Json => json::scan(body, &mut c),
            BodyFormat::Xml => xml::scan(body, &mut c),
        }
        .map_err(bad)?;
        if c.lit_from < body.len() {
            c.segments.push(Segment::Lit(c.lit_from..body.len()));
        }
        Ok(CompiledTemplate {
            src: body.into(),
            format,
            segments: c.segments,
            names: c.names,
        })
    }

    /// JSON or XML.
    pub fn format(&self) -> BodyFormat {
        self.format
    }

    /// The body it was compiled from.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// The distinct property names the body refers to (fallbacks included), lower-cased, in
    /// order of first appearance.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    /// Appends the rendered body to `out`. Rendering a body cannot fail today (every value is
    /// escaped); the `Result` leaves room for limits. On error `out` is left as it was.
    pub fn render_into(&self, props: &Properties, out: &mut Vec<u8>) -> Result<(), RenderError> {
        for seg in &self.segments {
            match seg {
                Segment::Lit(r) => out.extend_from_slice(&self.src.as_bytes()[r.clone()]),
                Segment::Hole(e, ctx) => render_hole(e, *ctx, props, out),
            }
        }
        Ok(())
    }

    /// Renders into a new buffer.
    pub fn render(&self, props: &Properties) -> Result<Vec<u8>, RenderError> {
        let mut out = Vec::with_capacity(self.src.len() + 64);
        self.render_into(props, &mut out)?;
        Ok(out)
    }
}

fn render_hole(e: &Expr, ctx: Ctx, props: &Properties, out: &mut Vec<u8>) {
    match ctx {
        Ctx::Json => {
            if let Expr::Number(r) = e {
                let v = r.resolve(props);
                if is_number(v) {
                    out.extend_from_slice(v.as_bytes());
                    return;
                }
            }
            out.push(b'"');
            write_expr(e, props, &mut JsonStr(out));
            out.push(b'"');
        }
        Ctx::XmlText | Ctx::XmlAttr => write_expr(
            e,
            props,
            &mut Xml {
                out,
                attr: ctx == Ctx::XmlAttr,
            },
        ),
    }
}

fn write_expr<S: Sink>(e: &Expr, props: &Properties, sink: &mut S) {
    match e {
        Expr::Single(r, op) => write_op(r.resolve(props), *op, sink),
        // Outside a JSON string value the parser refuses `#(`; were it here, plain text.
        Expr::Number(r) => sink.text(r.resolve(props)),
        Expr::Concat(terms) => {
            for t in terms.iter() {
                t.write(props, sink);
            }
        }
    }
}

/// Checks that `body` is well-formed JSON or XML as templates must be (the same checks as
/// [`CompiledTemplate::compile`], without looking at expressions): useful on a rendered body or
/// a native payload.
pub fn check_body(body: &str) -> Result<BodyFormat, TemplateError> {
    let bad = |e| TemplateError::new(TemplatePart::Body, e);
    let first = body.bytes().position(|b| !xml::is_ws(b));
    match first.map(|i| body.as_bytes()[i]) {
        Some(b'{' | b'[') => json::scan(body, &mut json::NoVisit)
            .map(|()| BodyFormat::Json)
            .map_err(bad),
        Some(b'<') => xml::scan(body, &mut xml::NoVisit)
            .map(|()| BodyFormat::Xml)
            .map_err(bad),
        _ => CompiledTemplate::compile(body).map(|t| t.format),
    }
}

/// A compiled text template: a header value or the expiry. Either a literal or one expression
/// (no `#(`); rendered without escaping.
#[derive(Clone, Debug)]
pub struct CompiledText {
    src: Box<str>,
    expr: Option<Expr>,
}

impl CompiledText {
    /// Compiles `text`. Errors have [`TemplatePart::Text`].
    pub fn compile(text: &str) -> Result<CompiledText, TemplateError> {
        CompiledText::compile_as(text, TemplatePart::Text)
    }

    fn compile_as(text: &str, part: TemplatePart) -> Result<CompiledText, TemplateError> {
        let expr = if is_expression(text) {
            Some(expr::parse(text, Place::Text).map_err(|e| TemplateError::new(part, e))?)
        } else {
            None
        };
        Ok(CompiledText {
            src: text.into(),
            expr,
        })
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// Whether it is a literal (no expression).
    pub fn is_literal(&self) -> bool {
        self.expr.is_none()
    }

    /// The distinct property names referenced, lower-cased.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        let mut seen: Vec<&str> = Vec::new();
        self.expr.iter().flat_map(|e| e.names()).filter(move |n| {
            let new = !seen.contains(n);
            if new {
                seen.push(n);
            }
            new
        })
    }

    /// Appends the rendered text to `out`, as is: it does not check that the result is a valid
    /// header value ([`CompiledInstallationTemplate::render`] does).
    pub fn render_into(&self, props: &Properties, out: &mut String) {
        match &self.expr {
            None => out.push_str(&self.src),
            Some(e) => write_expr(e, props, &mut Raw(out)),
        }
    }
}

/// The first byte a header value may not hold (RFC 9110 §5.5: no control characters but TAB).
fn bad_header_byte(v: &str) -> Option<(usize, u8)> {
    v.bytes()
        .enumerate()
        .find(|&(_, b)| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// RFC 9110 §5.1 field names are tokens (§5.6.2).
fn bad_token_byte(name: &str) -> Option<usize> {
    name.bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)))
}

/// A compiled [`crate::Template`]: body, headers and expiry.
#[derive(Clone, Debug)]
pub struct CompiledInstallationTemplate {
    body: CompiledTemplate,
    headers: Vec<(String, CompiledText)>,
    expiry: Option<CompiledText>,
}

impl CompiledInstallationTemplate {
    /// Compiles every part; the error names the part (body, header, expiry) and the offset.
    /// Header names must be HTTP tokens, and literal header values and a literal expiry must
    /// be valid header values.
    pub fn compile(t: &crate::model::Template) -> Result<Self, TemplateError> {
        let body = CompiledTemplate::compile(&t.body)?;
        let mut headers = Vec::with_capacity(t.headers.len());
        for (name, value) in &t.headers {
            let part = || TemplatePart::Header(name.clone());
            let at = |pos, message: String| TemplateError {
                part: part(),
                offset: pos,
                message,
            };
            if name.is_empty() {
                return Err(at(0, "header name is empty".into()));
            }
            if let Some(i) = bad_token_byte(name) {
                return Err(at(
                    i,
                    "header name: only letters, digits and !#$%&'*+-.^_`|~ are allowed".into(),
                ));
            }
            let text = CompiledText::compile_as(value, part())?;
            if text.is_literal() {
                if let Some((i, b)) = bad_header_byte(value) {
                    return Err(at(
                        i,
                        format!("byte 0x{b:02x} is not allowed in a header value"),
                    ));
                }
            }
            headers.push((name.clone(), text));
        }
        let expiry = match &t.expiry {
            None => None,
            Some(x) => {
                let text = CompiledText::compile_as(x, TemplatePart::Expiry)?;
                if text.is_literal() {
                    if let Some((i, b)) = bad_header_byte(x) {
                        return Err(TemplateError {
                            part: TemplatePart::Expiry,
                            offset: i,
                            message: format!("byte 0x{b:02x} is not allowed in the expiry"),
                        });
                    }
                }
                Some(text)
            }
        };
        Ok(CompiledInstallationTemplate {
            body,
            headers,
            expiry,
        })
    }

    /// The compiled body.
    pub fn body(&self) -> &CompiledTemplate {
        &self.body
    }

    /// The compiled headers, in name order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &CompiledText)> {
        self.headers.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The compiled expiry.
    pub fn expiry(&self) -> Option<&CompiledText> {
        self.expiry.as_ref()
    }

    /// Every distinct property name referenced by the body, headers and expiry, lower-cased.
    pub fn properties(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.body.properties().collect();
        let texts = self
            .headers
            .iter()
            .map(|(_, t)| t)
            .chain(self.expiry.iter());
        for t in texts {
            for n in t.properties() {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Appends the rendered body to `body` and returns the rendered headers and expiry. On
    /// error `body` is left as it was.
    pub fn render(
        &self,
        props: &Properties,
        body: &mut Vec<u8>,
    ) -> Result<RenderedHeaders<'_>, RenderError> {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(self.headers.len());
        for (name, t) in &self.headers {
            let start = text.len();
            t.render_into(props, &mut text);
            if let Some((_, byte)) = bad_header_byte(&text[start..]) {
                return Err(RenderError::HeaderValue {
                    name: name.clone(),
                    byte,
                });
            }
            ends.push(text.len());
        }
        let expiry = match &self.expiry {
            None => None,
            Some(t) => {
                let start = text.len();
                t.render_into(props, &mut text);
                if let Some((_, byte)) = bad_header_byte(&text[start..]) {
                    return Err(RenderError::Expiry { byte });
                }
                Some(start..text.len())
            }
        };
        let len = body.len();
        if let Err(e) = self.body.render_into(props, body) {
            body.truncate(len);
            return Err(e);
        }
        Ok(RenderedHeaders {
            template: self,
            text,
            ends,
            expiry,
        })
    }
}

/// The headers and expiry of one rendered [`CompiledInstallationTemplate`]: every value in one
/// string, names borrowed from the template.
#[derive(Clone, Debug)]
pub struct RenderedHeaders<'t> {
    template: &'t CompiledInstallationTemplate,
    text: String,
    /// End of each header's value in `text`, in the template's header order.
    ends: Vec<usize>,
    expiry: Option<Range<usize>>,
}

impl<'t> RenderedHeaders<'t> {
    /// (name, value) pairs in name order. Values may be empty (a missing property).
    pub fn iter(&self) -> impl Iterator<Item = (&'t str, &str)> + '_ {
        let names = self.template.headers.iter().map(|(n, _)| n.as_str());
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        names
            .zip(starts.zip(self.ends.iter().copied()))
            .map(|(n, (s, e))| (n, &self.text[s..e]))
    }

    /// The value of the header `name`, compared without regard to ASCII case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The rendered expiry; `None` when the template has none or it rendered empty.
    pub fn expiry(&self) -> Option<&str> {
        self.expiry
            .clone()
            .map(|r| &self.text[r])
            .filter(|s| !s.is_empty())
    }
}

/// Compile-time check that compiled templates can be shared between threads.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<CompiledTemplate>();
    shared::<CompiledText>();
    shared::<CompiledInstallationTemplate>();
    shared::<TemplateCache>();
    shared::<Properties>();
    shared::<TemplateError>();
};
