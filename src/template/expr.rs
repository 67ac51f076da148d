//! The expression language of one template value: parsed into a small tree, evaluated without
//! allocating. The grammar and the error messages are listed in the module docs of
//! [`crate::template`].

use super::escape::{clip_chars, ellipsis_cut, Sink};
use super::props::Properties;

/// Longest property name, in characters (nh-rest-api.md §6.2, from the .NET SDK's validator).
pub(crate) const MAX_NAME_LEN: usize = 120;
/// Deepest chain of fallback defaults (`$(a:{$(b:{$(c)})})` is 3). A tagcast extension, so the
/// bound is ours: localisation chains are 2-3 long; the bound keeps the parser's recursion small.
pub(crate) const MAX_FALLBACK_DEPTH: usize = 8;
/// Shortest length `.(p, n)` accepts: room for the `...` it appends (nh-rest-api.md §6.2).
const MIN_ELLIPSIS_LEN: u32 = 3;

/// An error found while parsing one value: a byte offset into the (decoded) value and what was
/// expected. The caller maps the offset to the template body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExprErr {
    pub(crate) pos: usize,
    pub(crate) message: String,
}

fn err<T>(pos: usize, message: impl Into<String>) -> Result<T, ExprErr> {
    Err(ExprErr {
        pos,
        message: message.into(),
    })
}

/// Where a value sits, which decides whether `#(...)` is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// A whole JSON string value.
    Json,
    /// An XML attribute value or text node.
    Xml,
    /// A header value or the expiry.
    Text,
}

/// A property reference with its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PropRef {
    /// ASCII-lower-cased name: looked up in [`Properties`] without allocating.
    pub(crate) name: Box<str>,
    pub(crate) default: Option<Default>,
}

/// What a missing property falls back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Default {
    /// `$(p:{text})`: literal text (escapes already removed).
    Text(Box<str>),
    /// `$(p:{$(other)})`: the tagcast extension, another property (with its own default).
    Prop(Box<PropRef>),
}

impl PropRef {
    /// The value: the property, else the default, else the empty string.
    pub(crate) fn resolve<'a>(&'a self, props: &'a Properties) -> &'a str {
        let mut r = self;
        loop {
            if let Some(v) = props.get_lower(&r.name) {
                return v;
            }
            match &r.default {
                None => return "",
                Some(Default::Text(t)) => return t,
                Some(Default::Prop(next)) => r = next,
            }
        }
    }

    /// Every name this reference may read, the fallbacks' included.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        let mut next = Some(self);
        std::iter::from_fn(move || {
            let r = next?;
            next = match &r.default {
                Some(Default::Prop(p)) => Some(p),
                _ => None,
            };
            Some(&*r.name)
        })
    }
}

/// How a property's value is transformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `$(p)`.
    Plain,
    /// `$(p, n)`: the first `n` characters.
    Clip(u32),
    /// `.(p, n)`: unchanged if at most `n` characters, else the first `n - 3` and `...`.
    Ellipsis(u32),
    /// `%(p)`: URI-encoded.
    Uri,
}

/// One operand: a transformed property or a literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Term {
    Prop(PropRef, Op),
    Lit(Box<str>),
}

/// A whole value's expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expr {
    /// `$(..)`, `.(..)` or `%(..)`.
    Single(PropRef, Op),
    /// `#(p)`: a JSON number when the value looks like one, else a JSON string.
    Number(PropRef),
    /// `{ t + t + ... }`.
    Concat(Box<[Term]>),
}

impl Term {
    /// Writes the term's text through `sink` (which escapes it).
    pub(crate) fn write<S: Sink + ?Sized>(&self, props: &Properties, sink: &mut S) {
        match self {
            Term::Lit(t) => sink.text(t),
            Term::Prop(r, op) => write_op(r.resolve(props), *op, sink),
        }
    }
}

pub(crate) fn write_op<S: Sink + ?Sized>(v: &str, op: Op, sink: &mut S) {
    match op {
        Op::Plain => sink.text(v),
        Op::Clip(n) => sink.text(clip_chars(v, n as usize)),
        Op::Ellipsis(n) => match ellipsis_cut(v, n as usize) {
            None => sink.text(v),
            Some(head) => {
                sink.text(head);
                sink.text("...");
            }
        },
        Op::Uri => sink.uri(v),
    }
}

impl Expr {
    /// Every property name the expression may read.
    pub(crate) fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Expr::Single(r, _) | Expr::Number(r) => Box::new(r.names()),
            Expr::Concat(terms) => Box::new(
                terms
                    .iter()
                    .flat_map(|t| match t {
                        Term::Prop(r, _) => Some(r.names()),
                        Term::Lit(_) => None,
                    })
                    .flatten(),
            ),
        }
    }
}

/// True when `s` starts the way an expression does: `$(`, `.(`, `%(`, `#(` or `{`.
pub(crate) fn is_expression(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        Some(b'{') => true,
        Some(b'$' | b'.' | b'%' | b'#') => b.get(1) == Some(&b'('),
        _ => false,
    }
}

/// Parses a whole value that [`is_expression`] accepted.
pub(crate) fn parse(s: &str, place: Place) -> Result<Expr, ExprErr> {
    let mut p = Parser {
        s: s.as_bytes(),
        src: s,
        i: 0,
    };
    let expr =
        match p.peek() {
            Some(b'{') => p.concat()?,
            Some(b'#') => {
                match place {
                    Place::Json => {}
                    Place::Xml => return err(0, "'#(...)' is only allowed in JSON templates"),
                    Place::Text => return err(
                        0,
                        "'#(...)' is only allowed in JSON templates, not in headers or the expiry",
                    ),
                }
                p.i += 2;
                let r = p.prop_tail(b'#', 0)?;
                Expr::Number(r.0)
            }
            Some(k @ (b'$' | b'.' | b'%')) => {
                p.i += 2;
                let (r, op) = p.prop_tail(k, 0)?;
                Expr::Single(r, op)
            }
            _ => return err(0, "expected '$(', '.(', '%(', '#(' or '{'"),
        };
    if p.i != s.len() {
        return err(
            p.i,
            "expected the end of the value after the expression (concatenate with {a + b})",
        );
    }
    Ok(expr)
}

/// The "sigil" of a fallback reference `$(p:{$(q)})`: like `$(` without a length.
const FALLBACK: u8 = 0;

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.i += 1;
        }
    }

    /// `{ term (+ term)* }`, at the `{`.
    fn concat(&mut self) -> Result<Expr, ExprErr> {
        let open = self.i;
        self.i += 1;
        let mut terms = Vec::new();
        loop {
            self.ws();
            terms.push(self.term()?);
            self.ws();
            match self.peek() {
                Some(b'+') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Expr::Concat(terms.into_boxed_slice()));
                }
                None => {
                    return err(
                        self.i,
                        format!("expected '+' or '}}' to close the '{{' at byte {open}"),
                    )
                }
                Some(_) => return err(self.i, "expected '+' or '}'"),
            }
        }
    }

    fn term(&mut self) -> Result<Term, ExprErr> {
        let at = self.i;
        match (self.peek(), self.s.get(at + 1)) {
            (Some(k @ (b'$' | b'.' | b'%')), Some(b'(')) => {
                self.i += 2;
                let (r, op) = self.prop_tail(k, 0)?;
                Ok(Term::Prop(r, op))
            }
            (Some(b'#'), Some(b'(')) => err(at, "'#(...)' is not allowed inside '{...}'"),
            (Some(q @ (b'\'' | b'"')), _) => self.literal(q).map(Term::Lit),
            (Some(b'{'), _) => err(
                at,
                "'{' cannot nest; expected a property reference or a quoted literal",
            ),
            _ => err(
                at,
                "expected a property reference ('$(', '.(', '%(') or a quoted literal",
            ),
        }
    }

    /// `'text'` or `"text"`, the quote doubled to escape it; at the opening quote.
    fn literal(&mut self, q: u8) -> Result<Box<str>, ExprErr> {
        let open = self.i;
        self.i += 1;
        let mut out = String::new();
        let mut from = self.i;
        loop {
            match self.peek() {
                None => {
                    return err(
                        open,
                        format!("unterminated literal: expected a closing {}", q as char),
                    )
                }
                Some(b) if b == q => {
                    out.push_str(&self.src[from..self.i]);
                    if self.s.get(self.i + 1) == Some(&q) {
                        out.push(q as char);
                        self.i += 2;
                        from = self.i;
                    } else {
                        self.i += 1;
                        return Ok(out.into_boxed_str());
                    }
                }
                Some(_) => self.i += 1,
            }
        }
    }

    /// After `k(`: `name [:{default}] [, n] )`, with what `k` allows (`k` is the sigil, or
    /// [`FALLBACK`] for the reference inside a default).
    fn prop_tail(&mut self, k: u8, depth: usize) -> Result<(PropRef, Op), ExprErr> {
        self.ws();
        let name = self.name()?;
        self.ws();
        let mut default = None;
        if self.peek() == Some(b':') {
            self.i += 1;
            if self.peek() != Some(b'{') {
                return err(self.i, "expected '{' after ':' (default value)");
            }
            default = Some(self.default(depth)?);
            self.ws();
        }
        let r = PropRef { name, default };
        let mut op = match k {
            b'%' => Op::Uri,
            _ => Op::Plain,
        };
        match (k, self.peek()) {
            (b'$', Some(b',')) | (b'.', Some(b',')) => {
                self.i += 1;
                self.ws();
                let at = self.i;
                let n = self.count()?;
                if k == b'.' {
                    if n < MIN_ELLIPSIS_LEN {
                        return err(
                            at,
                            format!("'.(...)' needs a length of at least {MIN_ELLIPSIS_LEN} (room for '...'), not {n}"),
                        );
                    }
                    op = Op::Ellipsis(n);
                } else {
                    op = Op::Clip(n);
                }
                self.ws();
                if self.peek() != Some(b')') {
                    return err(self.i, "expected ')' after the length");
                }
            }
            (b'.', _) => {
                return err(
                    self.i,
                    "expected ',' and a length after property name ('.(...)' needs one)",
                )
            }
            (_, Some(b')')) => {}
            (b'$', _) => {
                return err(
                    self.i,
                    "expected ')' after property name (or ', length' or ':{default}')",
                )
            }
            (FALLBACK, Some(b',')) => {
                return err(
                    self.i,
                    "expected ')' after property name (a fallback reference takes no length)",
                )
            }
            (_, Some(b',')) => {
                return err(
                    self.i,
                    format!(
                        "expected ')' after property name ('{}(...)' takes no length)",
                        k as char
                    ),
                )
            }
            _ => return err(self.i, "expected ')' after property name"),
        }
        self.i += 1;
        Ok((r, op))
    }

    fn name(&mut self) -> Result<Box<str>, ExprErr> {
        let start = self.i;
        while self.peek().is_some_and(is_name_byte) {
            self.i += 1;
        }
        let len = self.i - start;
        if len == 0 {
            return err(start, "expected a property name (letters, digits, '_')");
        }
        if len > MAX_NAME_LEN {
            return err(
                start,
                format!(
                    "property name is {len} characters long; at most {MAX_NAME_LEN} are allowed"
                ),
            );
        }
        Ok(self.src[start..self.i]
            .to_ascii_lowercase()
            .into_boxed_str())
    }

    fn count(&mut self) -> Result<u32, ExprErr> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i == start {
            return err(start, "expected a length (decimal digits)");
        }
        self.src[start..self.i].parse::<u32>().or_else(|_| {
            err(
                start,
                format!("length is too large; at most {} is allowed", u32::MAX),
            )
        })
    }

    /// At the `{` of a default: a fallback reference or literal text up to the unescaped `}`.
    fn default(&mut self, depth: usize) -> Result<Default, ExprErr> {
        let open = self.i;
        self.i += 1;
        if self.peek() == Some(b'$') && self.s.get(self.i + 1) == Some(&b'(') {
            if depth + 1 >= MAX_FALLBACK_DEPTH {
                return err(
                    self.i,
                    format!("fallback references nest deeper than {MAX_FALLBACK_DEPTH} levels"),
                );
            }
            self.i += 2;
            let (r, _) = self.prop_tail(FALLBACK, depth + 1)?;
            if self.peek() != Some(b'}') {
                return err(
                    self.i,
                    "expected '}' right after the fallback property reference",
                );
            }
            self.i += 1;
            return Ok(Default::Prop(Box::new(r)));
        }
        let mut out = String::new();
        let mut from = self.i;
        loop {
            match self.peek() {
                None => return err(open, "unterminated default value: expected '}'"),
                Some(b'}') => {
                    out.push_str(&self.src[from..self.i]);
                    self.i += 1;
                    return Ok(Default::Text(out.into_boxed_str()));
                }
                Some(b'\\') if matches!(self.s.get(self.i + 1), Some(b'}' | b'\\' | b'$')) => {
                    out.push_str(&self.src[from..self.i]);
                    from = self.i + 1;
                    self.i += 2;
                }
                Some(_) => self.i += 1,
            }
        }
    }
}
