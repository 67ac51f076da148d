//! Tag expressions: the Notification Hubs boolean language over tags, parsed into a plain tree.
//!
//! The `ServiceBusNotification-Tags` header of a send carries a single tag or a boolean expression
//! over tags (`../shared/design/nh-rest-api.md` §6.1). This module parses that text into a
//! [`TagExpr`], prints it back canonically, and evaluates it naively ([`TagExpr::matches`]), which
//! is the reference semantics the bitmap evaluator is tested against.
//!
//! # Grammar
//!
//! ```text
//! expr    = ws , or , ws ;
//! or      = and , { ws , "||" , and } ;                (* left-associative *)
//! and     = unary , { ws , "&&" , unary } ;            (* left-associative *)
//! unary   = ws , { "!" , ws } , primary ;
//! primary = leaf | "(" , or , ws , ")" ;
//! leaf    = tag | system ;
//! tag     = tagchar , { tagchar } ;                    (* 1-120 of A-Z a-z 0-9 _ @ # . : - *)
//! system  = ( "$InstallationId" | "$UserId" ) , ":{" , id , "}" ;
//! id      = idchar , { idchar } ;                      (* 1-256 bytes; no '}', no control char *)
//! ws      = { " " | "\t" | "\r" | "\n" } ;
//! ```
//!
//! Precedence is `!` over `&&` over `||`; NH does not document it, this is the natural reading
//! (§6.1). Tags are case-sensitive, and so are the system-tag names. A plain tag is lexed as the
//! longest run of characters up to whitespace or one of `& | ( ) !` and then checked with
//! [`crate::Tag::new`], so `a+b` is reported as a bad tag rather than as trailing garbage.
//! A system tag's id is everything up to the first `}`, so it may contain spaces and operators.
//!
//! # Errors and positions
//!
//! Every syntax error names a byte offset into the input (after skipping whitespace, i.e. where
//! the offending token starts; the end of the input when it is missing) and what was expected:
//!
//! | situation | message |
//! | --- | --- |
//! | empty or whitespace-only input | `expression is empty` (no position) |
//! | missing operand (`a &&`, `&& a`, `()`) | `expected a tag or '(' at byte N` |
//! | junk after a complete operand at top level (`a b`, `a !b`) | `expected '&&', '||' or end of expression at byte N` |
//! | junk after an operand inside parentheses (`(a b)`) | `expected '&&', '||' or ')' at byte N` |
//! | `)` without `(` | `unmatched ')' at byte N` |
//! | `(` never closed | `expected ')' to close '(' at byte N`, N = the opening parenthesis |
//! | single `&` / `|` | `expected '&&' at byte N` / `expected '||' at byte N` |
//! | bad tag | `at byte N: ` + [`crate::TagError`]'s message, N = start of the tag |
//! | `$Foo...` | `unknown system tag '$Foo' at byte N (known: $InstallationId:{...}, $UserId:{...})` |
//! | `$UserId` without `:{` | `expected ':{' after '$UserId' at byte N`, N = just after the name |
//! | `$UserId:{x` | `expected '}' to close '$UserId:{' at byte N`, N = the `$` |
//! | bad system-tag id | `at byte N: $UserId id is empty`, `... id is 300 bytes long; at most 256 are allowed`, `... id contains '\n' (control characters are not allowed)` |
//!
//! # Limits
//!
//! [`ExprLimits`] is checked while parsing, in this order: input length (before anything else),
//! nesting depth (each `!` and each `(` is one level; the error points at the token that goes one
//! level too deep), number of tag references (every leaf counts, repeats included; the parse stops
//! at the first reference over the limit and the count reported is the number of tag tokens in
//! the whole input), then, after a successful parse, the Notification Hubs preset.
//!
//! The defaults (1,000 tags, 64 levels, 64 KiB) are generous; they exist so that one request
//! cannot make the parser, the printer or the evaluator (all of which walk the tree) use
//! unbounded time, memory or stack: a tree's height is at most `max_tags - 1 + max_depth`.
//! `max_depth` is also the parser's recursion bound, so keep it in the hundreds at most.
//!
//! [`ExprLimits::notification_hubs`] adds the documented Notification Hubs rule: at most 20 tags
//! when the expression uses only `||` (or is a single tag), at most 6 when `&&` or `!` appears
//! (nh-rest-api.md §6.1; a newer secondary source says 10 for AND-only, but 20/6 is what the
//! stored docs say and is safe). Clients written against NH expect a hub to refuse what NH
//! refuses, so the preset lets a deployment be exactly as strict.
//!
//! # Printing
//!
//! [`TagExpr`]'s `Display` is canonical: ` && ` and ` || ` with one space, `!x` without, and only
//! the parentheses the tree needs (a lower-precedence child, or a right child of the same binary
//! operator, as in `a && (b && c)`). Parsing the printed text gives the same tree back.

use std::fmt;
use std::str::FromStr;

use nom::bytes::complete::{tag, take_till, take_till1, take_while};
use nom::character::complete::multispace0;
use nom::error::{ErrorKind, ParseError};
use nom::IResult;

use crate::model::{Tag, TagError};

/// Default for [`ExprLimits::max_tags`]; generous, bounds the tree's size and height.
const DEFAULT_MAX_TAGS: usize = 1000;
/// Default for [`ExprLimits::max_depth`]; bounds the parser's recursion and the tree's height.
const DEFAULT_MAX_DEPTH: usize = 64;
/// Default for [`ExprLimits::max_len`], in bytes.
const DEFAULT_MAX_LEN: usize = 64 * 1024;
/// NH: at most 20 tags when the expression uses only `||` (nh-rest-api.md §6.1).
const NH_MAX_OR_TAGS: usize = 20;
/// NH: at most 6 tags when the expression uses `&&` or `!` (nh-rest-api.md §6.1).
const NH_MAX_AND_NOT_TAGS: usize = 6;
/// Longest system-tag id, in bytes. NH documents no installationId/userId length
/// (nh-rest-api.md §5 "Limits"); 256 bounds what one leaf may hold.
const MAX_SYSTEM_ID_LEN: usize = 256;

/// Prefix of the system tag every installation carries (nh-rest-api.md §5).
const INSTALLATION_ID: &str = "$InstallationId";
/// Prefix of the system tag of installations with a `userId` (nh-rest-api.md §5).
const USER_ID: &str = "$UserId";

/// A parsed tag expression: a tree of [`ExprNode`]s plus counts cached from it.
///
/// Built by [`TagExpr::parse`] / [`TagExpr::parse_with`] (checked against [`ExprLimits`]) or by
/// [`TagExpr::from_node`] (not checked). Equality and hashing follow the tree only, so `(a)` and
/// `a` are equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TagExpr {
    root: ExprNode,
    tag_count: usize,
    depth: usize,
}

/// A node of a tag expression. A plain tree: evaluators walk it recursively.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExprNode {
    /// A leaf: true when the installation has this tag.
    Tag(TagRef),
    /// `!x`.
    Not(Box<ExprNode>),
    /// `l && r`.
    And(Box<ExprNode>, Box<ExprNode>),
    /// `l || r`.
    Or(Box<ExprNode>, Box<ExprNode>),
}

/// What a leaf refers to: a plain tag or one of the system tags NH gives every installation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TagRef {
    /// A plain tag.
    Tag(Tag),
    /// `$InstallationId:{id}`: the installation with this id. The parser guarantees the id is
    /// 1-256 bytes without `}` or control characters; built by hand it must be too, or the
    /// printed expression will not parse back.
    InstallationId(String),
    /// `$UserId:{id}`: the installations whose `userId` is this id (same rule for the id).
    UserId(String),
}

/// Limits checked while parsing. See the module docs for the order and the reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExprLimits {
    /// Most tag references (leaves, repeats included).
    pub max_tags: usize,
    /// Deepest nesting: each `!` and each `(` is one level.
    pub max_depth: usize,
    /// Longest input, in bytes.
    pub max_len: usize,
    /// Also apply Notification Hubs' rule: at most 20 tags with only `||`, 6 with `&&` or `!`.
    pub nh_preset: bool,
}

impl Default for ExprLimits {
    /// 1,000 tag references, depth 64, 64 KiB of input, no NH preset.
    fn default() -> Self {
        ExprLimits {
            max_tags: DEFAULT_MAX_TAGS,
            max_depth: DEFAULT_MAX_DEPTH,
            max_len: DEFAULT_MAX_LEN,
            nh_preset: false,
        }
    }
}

impl ExprLimits {
    /// The defaults plus Notification Hubs' tag-count rule (nh-rest-api.md §6.1).
    ///
    /// `max_tags` stays at the default: it bounds the tree while parsing, while the NH rule
    /// depends on whether `&&` or `!` appears anywhere, so it is checked after the parse.
    pub fn notification_hubs() -> Self {
        ExprLimits {
            nh_preset: true,
            ..ExprLimits::default()
        }
    }
}

/// Why a string is not a valid tag expression. Messages name the byte offset and what was
/// expected; the module docs list them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExprError {
    /// The input is empty or only whitespace.
    #[error("expression is empty")]
    Empty,
    /// The input is longer than [`ExprLimits::max_len`].
    #[error("expression is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tag, a system tag or `(` was expected.
    #[error("expected a tag or '(' at byte {pos}")]
    ExpectedOperand {
        /// Byte offset.
        pos: usize,
    },
    /// After a complete operand at the top level, something other than an operator or the end.
    #[error("expected '&&', '||' or end of expression at byte {pos}")]
    ExpectedOperatorOrEnd {
        /// Byte offset.
        pos: usize,
    },
    /// After an operand inside parentheses, something other than an operator or `)`.
    #[error("expected '&&', '||' or ')' at byte {pos}")]
    ExpectedOperatorOrClose {
        /// Byte offset.
        pos: usize,
    },
    /// A single `&`.
    #[error("expected '&&' at byte {pos}")]
    LoneAmpersand {
        /// Byte offset of the `&`.
        pos: usize,
    },
    /// A single `|`.
    #[error("expected '||' at byte {pos}")]
    LonePipe {
        /// Byte offset of the `|`.
        pos: usize,
    },
    /// A `)` with no `(` to close.
    #[error("unmatched ')' at byte {pos}")]
    UnmatchedClose {
        /// Byte offset of the `)`.
        pos: usize,
    },
    /// A `(` that the input never closes.
    #[error("expected ')' to close '(' at byte {pos}")]
    UnclosedParen {
        /// Byte offset of the `(`.
        pos: usize,
    },
    /// A plain tag that breaks the tag rule.
    #[error("at byte {pos}: {error}")]
    Tag {
        /// Byte offset of the tag's first character.
        pos: usize,
        /// What is wrong with it.
        error: TagError,
    },
    /// `$` followed by a name other than `InstallationId` or `UserId`.
    #[error(
        "unknown system tag '{name}' at byte {pos} (known: $InstallationId:{{...}}, $UserId:{{...}})"
    )]
    UnknownSystemTag {
        /// Byte offset of the `$`.
        pos: usize,
        /// The name, `$` included (cut to 140 characters).
        name: String,
    },
    /// A known system-tag name not followed by `:{`.
    #[error("expected ':{{' after '{name}' at byte {pos}")]
    ExpectedSystemTagOpen {
        /// Byte offset just after the name.
        pos: usize,
        /// `$InstallationId` or `$UserId`.
        name: &'static str,
    },
    /// A system tag whose `{` is never closed.
    #[error("expected '}}' to close '{name}:{{' at byte {pos}")]
    UnclosedSystemTag {
        /// Byte offset of the `$`.
        pos: usize,
        /// `$InstallationId` or `$UserId`.
        name: &'static str,
    },
    /// `$UserId:{}`.
    #[error("at byte {pos}: {name} id is empty")]
    EmptySystemTagId {
        /// Byte offset of the `$`.
        pos: usize,
        /// `$InstallationId` or `$UserId`.
        name: &'static str,
    },
    /// A system-tag id over 256 bytes.
    #[error("at byte {pos}: {name} id is {len} bytes long; at most {max} are allowed")]
    SystemTagIdTooLong {
        /// Byte offset of the `$`.
        pos: usize,
        /// `$InstallationId` or `$UserId`.
        name: &'static str,
        /// The id's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A system-tag id with a control character.
    #[error("at byte {pos}: {name} id contains {ch:?} (control characters are not allowed)")]
    SystemTagIdControl {
        /// Byte offset of the `$`.
        pos: usize,
        /// `$InstallationId` or `$UserId`.
        name: &'static str,
        /// The first control character.
        ch: char,
    },
    /// More nested `!` and `(` than [`ExprLimits::max_depth`].
    #[error("expression nests deeper than {max} levels at byte {pos}")]
    TooDeep {
        /// Byte offset of the `!` or `(` one level too deep.
        pos: usize,
        /// The limit.
        max: usize,
    },
    /// More tag references than [`ExprLimits::max_tags`].
    #[error("expression uses {count} tags; at most {max} are allowed")]
    TooManyTags {
        /// Tag tokens in the whole input.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// NH preset: more than 6 tags with `&&` or `!`.
    #[error("expression uses {count} tags; the NH preset allows {max} when && or ! is used")]
    NhTooManyAndNotTags {
        /// Tag references.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// NH preset: more than 20 tags with only `||`.
    #[error("expression uses {count} tags; the NH preset allows {max} when only || is used")]
    NhTooManyOrTags {
        /// Tag references.
        count: usize,
        /// The limit.
        max: usize,
    },
}

impl ExprError {
    /// The byte offset the error points at; `None` for errors about the whole expression
    /// (empty, too long, too many tags).
    pub fn position(&self) -> Option<usize> {
        use ExprError::*;
        match *self {
            Empty | TooLong { .. } | TooManyTags { .. } => None,
            NhTooManyAndNotTags { .. } | NhTooManyOrTags { .. } => None,
            ExpectedOperand { pos }
            | ExpectedOperatorOrEnd { pos }
            | ExpectedOperatorOrClose { pos }
            | LoneAmpersand { pos }
            | LonePipe { pos }
            | UnmatchedClose { pos }
            | UnclosedParen { pos }
            | Tag { pos, .. }
            | UnknownSystemTag { pos, .. }
            | ExpectedSystemTagOpen { pos, .. }
            | UnclosedSystemTag { pos, .. }
            | EmptySystemTagId { pos, .. }
            | SystemTagIdTooLong { pos, .. }
            | SystemTagIdControl { pos, .. }
            | TooDeep { pos, .. } => Some(pos),
        }
    }
}

impl TagExpr {
    /// Parses `s` with [`ExprLimits::default`].
    pub fn parse(s: &str) -> Result<TagExpr, ExprError> {
        TagExpr::parse_with(s, &ExprLimits::default())
    }

    /// Parses `s`, checking `limits`.
    pub fn parse_with(s: &str, limits: &ExprLimits) -> Result<TagExpr, ExprError> {
        if s.len() > limits.max_len {
            return Err(ExprError::TooLong {
                len: s.len(),
                max: limits.max_len,
            });
        }
        if ws(s).is_empty() {
            return Err(ExprError::Empty);
        }
        let mut parser = Parser {
            src: s,
            limits,
            tags: 0,
        };
        let (rest, root) = match parser.or_expr(s, 0) {
            Ok(done) => done,
            Err(nom::Err::Failure(PErr::Expr(e)) | nom::Err::Error(PErr::Expr(e))) => {
                return Err(e)
            }
            // A nom primitive's error only propagates through the `?`s in `plain_tag` and
            // `system_tag`, each on a primitive that cannot fail there (see the comments), and
            // complete parsers never return Incomplete; were either to happen, the operand at
            // that spot is what did not parse.
            Err(nom::Err::Failure(PErr::Nom(at)) | nom::Err::Error(PErr::Nom(at))) => {
                return Err(ExprError::ExpectedOperand {
                    pos: parser.pos(at),
                })
            }
            Err(nom::Err::Incomplete(_)) => {
                return Err(ExprError::ExpectedOperand { pos: s.len() })
            }
        };
        if !rest.is_empty() {
            return Err(parser.after_operand_error(rest, None));
        }
        let expr = TagExpr::from_node(root);
        if limits.nh_preset {
            let count = expr.tag_count;
            let and_or_not = expr
                .nodes()
                .any(|n| matches!(n, ExprNode::And(..) | ExprNode::Not(_)));
            if and_or_not && count > NH_MAX_AND_NOT_TAGS {
                return Err(ExprError::NhTooManyAndNotTags {
                    count,
                    max: NH_MAX_AND_NOT_TAGS,
                });
            }
            if count > NH_MAX_OR_TAGS {
                return Err(ExprError::NhTooManyOrTags {
                    count,
                    max: NH_MAX_OR_TAGS,
                });
            }
        }
        Ok(expr)
    }

    /// Wraps a tree built by hand. No limit is checked; counts are computed without recursion,
    /// but printing, `matches` and dropping recurse, so keep hand-built trees as shallow as
    /// parsed ones (height at most `max_tags - 1 + max_depth`).
    pub fn from_node(node: ExprNode) -> TagExpr {
        let (mut tag_count, mut depth) = (0, 0);
        // Pre-order walk carrying the nesting level at which each node is printed.
        let mut stack = vec![(&node, 0usize)];
        while let Some((n, level)) = stack.pop() {
            match n {
                ExprNode::Tag(_) => {
                    tag_count += 1;
                    depth = depth.max(level);
                }
                ExprNode::Not(x) => stack.push((x, level + 1 + usize::from(x.is_binary()))),
                ExprNode::And(l, r) => {
                    stack.push((r, level + usize::from(r.is_binary())));
                    stack.push((l, level + usize::from(matches!(**l, ExprNode::Or(..)))));
                }
                ExprNode::Or(l, r) => {
                    stack.push((r, level + usize::from(matches!(**r, ExprNode::Or(..)))));
                    stack.push((l, level));
                }
            }
        }
        TagExpr {
            root: node,
            tag_count,
            depth,
        }
    }

    /// The tree.
    pub fn root(&self) -> &ExprNode {
        &self.root
    }

    /// Every leaf, left to right, repeats included.
    pub fn tags(&self) -> impl Iterator<Item = &TagRef> + '_ {
        self.nodes().filter_map(|n| match n {
            ExprNode::Tag(t) => Some(t),
            _ => None,
        })
    }

    /// Number of leaves (tag references, repeats included): what the tag limits count.
    pub fn tag_count(&self) -> usize {
        self.tag_count
    }

    /// Nesting depth of the canonical printing: each `!` and each parenthesis pair is one level
    /// (`a || b` is 0, `!(a || b)` is 2). The depth of the text parsed may be larger (`((a))`).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Evaluates the expression for an installation; `has` says whether it carries a tag.
    /// The reference semantics: `&&` and `||` short-circuit left to right.
    pub fn matches(&self, mut has: impl FnMut(&TagRef) -> bool) -> bool {
        eval(&self.root, &mut has)
    }

    /// Every node, pre-order, without recursion.
    fn nodes(&self) -> impl Iterator<Item = &ExprNode> + '_ {
        let mut stack = vec![&self.root];
        std::iter::from_fn(move || {
            let n = stack.pop()?;
            match n {
                ExprNode::Tag(_) => {}
                ExprNode::Not(x) => stack.push(x),
                ExprNode::And(l, r) | ExprNode::Or(l, r) => {
                    stack.push(r);
                    stack.push(l);
                }
            }
            Some(n)
        })
    }
}

fn eval<F: FnMut(&TagRef) -> bool>(node: &ExprNode, has: &mut F) -> bool {
    match node {
        ExprNode::Tag(t) => has(t),
        ExprNode::Not(x) => !eval(x, has),
        ExprNode::And(l, r) => eval(l, has) && eval(r, has),
        ExprNode::Or(l, r) => eval(l, has) || eval(r, has),
    }
}

impl ExprNode {
    fn is_binary(&self) -> bool {
        matches!(self, ExprNode::And(..) | ExprNode::Or(..))
    }
}

impl FromStr for TagExpr {
    type Err = ExprError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TagExpr::parse(s)
    }
}

impl fmt::Display for TagExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.root, f)
    }
}

/// Prints `node`, in parentheses when `paren`.
fn write_child(f: &mut fmt::Formatter<'_>, node: &ExprNode, paren: bool) -> fmt::Result {
    if paren {
        write!(f, "({node})")
    } else {
        write!(f, "{node}")
    }
}

impl fmt::Display for ExprNode {
    /// Canonical form: minimal parentheses, ` && `, ` || `, `!x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExprNode::Tag(t) => write!(f, "{t}"),
            ExprNode::Not(x) => {
                f.write_str("!")?;
                write_child(f, x, x.is_binary())
            }
            ExprNode::And(l, r) => {
                write_child(f, l, matches!(**l, ExprNode::Or(..)))?;
                f.write_str(" && ")?;
                write_child(f, r, r.is_binary())
            }
            ExprNode::Or(l, r) => {
                write_child(f, l, false)?;
                f.write_str(" || ")?;
                write_child(f, r, matches!(**r, ExprNode::Or(..)))
            }
        }
    }
}

impl fmt::Display for TagRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagRef::Tag(t) => f.write_str(t.as_str()),
            TagRef::InstallationId(id) => write!(f, "{INSTALLATION_ID}:{{{id}}}"),
            TagRef::UserId(id) => write!(f, "{USER_ID}:{{{id}}}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

/// The parser's error: a nom primitive's failure (never escapes, see `parse_with`) or ours.
#[derive(Debug)]
enum PErr<'a> {
    Nom(&'a str),
    Expr(ExprError),
}

impl<'a> ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, _: ErrorKind) -> Self {
        PErr::Nom(input)
    }
    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a str, T, PErr<'a>>;

/// Whitespace allowed between tokens: ASCII space, tab, CR, LF (nom's `multispace0`).
fn ws(i: &str) -> &str {
    match multispace0::<_, PErr<'_>>(i) {
        Ok((rest, _)) => rest,
        // multispace0 accepts the empty match, so it cannot fail.
        Err(_) => i,
    }
}

/// The rest of `i` after the literal `t`, if `i` starts with it.
fn lit<'a>(t: &'static str, i: &'a str) -> Option<&'a str> {
    tag::<_, _, PErr<'a>>(t)(i).ok().map(|(rest, _)| rest)
}

/// Characters that end a plain tag's token.
fn is_delim(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '&' | '|' | '(' | ')' | '!')
}

/// Cuts a name for an error message, like `TagError` does.
fn shorten(s: &str) -> String {
    s.chars().take(140).collect()
}

struct Parser<'s, 'l> {
    src: &'s str,
    limits: &'l ExprLimits,
    /// Leaves parsed so far.
    tags: usize,
}

impl<'s> Parser<'s, '_> {
    fn pos(&self, rest: &str) -> usize {
        self.src.len() - rest.len()
    }

    fn fail<T>(e: ExprError) -> PResult<'s, T> {
        Err(nom::Err::Failure(PErr::Expr(e)))
    }

    /// `or = and { "||" and }`. Returns the rest with leading whitespace skipped.
    fn or_expr(&mut self, i: &'s str, depth: usize) -> PResult<'s, ExprNode> {
        let (mut i, mut lhs) = self.and_expr(i, depth)?;
        loop {
            let j = ws(i);
            let Some(k) = lit("||", j) else {
                return Ok((j, lhs));
            };
            let (k, rhs) = self.and_expr(k, depth)?;
            lhs = ExprNode::Or(Box::new(lhs), Box::new(rhs));
            i = k;
        }
    }

    /// `and = unary { "&&" unary }`. Returns the rest with leading whitespace skipped.
    fn and_expr(&mut self, i: &'s str, depth: usize) -> PResult<'s, ExprNode> {
        let (mut i, mut lhs) = self.unary(i, depth)?;
        loop {
            let j = ws(i);
            let Some(k) = lit("&&", j) else {
                return Ok((j, lhs));
            };
            let (k, rhs) = self.unary(k, depth)?;
            lhs = ExprNode::And(Box::new(lhs), Box::new(rhs));
            i = k;
        }
    }

    /// `unary = { "!" } primary`, as a loop so a run of `!` costs no stack.
    fn unary(&mut self, i: &'s str, depth: usize) -> PResult<'s, ExprNode> {
        let mut i = ws(i);
        let mut nots = 0;
        while let Some(rest) = lit("!", i) {
            if depth + nots >= self.limits.max_depth {
                return Self::fail(self.too_deep(i));
            }
            nots += 1;
            i = ws(rest);
        }
        let (i, mut node) = self.primary(i, depth + nots)?;
        for _ in 0..nots {
            node = ExprNode::Not(Box::new(node));
        }
        Ok((i, node))
    }

    /// `primary = leaf | "(" or ")"`; `i` starts at a token.
    fn primary(&mut self, i: &'s str, depth: usize) -> PResult<'s, ExprNode> {
        if let Some(inner) = lit("(", i) {
            if depth >= self.limits.max_depth {
                return Self::fail(self.too_deep(i));
            }
            let open = self.pos(i);
            let (rest, node) = self.or_expr(inner, depth + 1)?;
            return match lit(")", rest) {
                Some(rest) => Ok((rest, node)),
                None => Self::fail(self.after_operand_error(rest, Some(open))),
            };
        }
        let (rest, leaf) = match i.chars().next() {
            Some('$') => self.system_tag(i)?,
            Some(c) if !is_delim(c) => self.plain_tag(i)?,
            _ => return Self::fail(ExprError::ExpectedOperand { pos: self.pos(i) }),
        };
        self.tags += 1;
        if self.tags > self.limits.max_tags {
            // Stop here so the tree stays bounded, but report the whole input's count.
            return Self::fail(ExprError::TooManyTags {
                count: self.tags + count_tag_tokens(rest),
                max: self.limits.max_tags,
            });
        }
        Ok((rest, ExprNode::Tag(leaf)))
    }

    fn plain_tag(&self, i: &'s str) -> PResult<'s, TagRef> {
        // Cannot fail: `primary` calls this only when `i` starts with a non-delimiter.
        let (rest, text) = take_till1(is_delim)(i)?;
        match Tag::new(text) {
            Ok(t) => Ok((rest, TagRef::Tag(t))),
            Err(error) => Self::fail(ExprError::Tag {
                pos: self.pos(i),
                error,
            }),
        }
    }

    /// `$InstallationId:{id}` or `$UserId:{id}`; `i` starts at the `$`.
    fn system_tag(&self, i: &'s str) -> PResult<'s, TagRef> {
        let pos = self.pos(i);
        // `i` starts with the one-byte '$' (checked by `primary`), so `1..` is a char boundary;
        // `take_while` accepts the empty match, so it cannot fail.
        let (after_name, name_tail) =
            take_while(|c: char| c.is_ascii_alphanumeric() || c == '_')(&i[1..])?;
        let name = match &i[..1 + name_tail.len()] {
            INSTALLATION_ID => INSTALLATION_ID,
            USER_ID => USER_ID,
            other => {
                return Self::fail(ExprError::UnknownSystemTag {
                    pos,
                    name: shorten(other),
                })
            }
        };
        let Some(body) = lit(":{", after_name) else {
            return Self::fail(ExprError::ExpectedSystemTagOpen {
                pos: self.pos(after_name),
                name,
            });
        };
        // `take_till` accepts the empty match, so it cannot fail.
        let (close, id) = take_till(|c| c == '}')(body)?;
        let Some(rest) = lit("}", close) else {
            return Self::fail(ExprError::UnclosedSystemTag { pos, name });
        };
        if id.is_empty() {
            return Self::fail(ExprError::EmptySystemTagId { pos, name });
        }
        if let Some(ch) = id.chars().find(|c| c.is_control()) {
            return Self::fail(ExprError::SystemTagIdControl { pos, name, ch });
        }
        if id.len() > MAX_SYSTEM_ID_LEN {
            return Self::fail(ExprError::SystemTagIdTooLong {
                pos,
                name,
                len: id.len(),
                max: MAX_SYSTEM_ID_LEN,
            });
        }
        let leaf = if name == USER_ID {
            TagRef::UserId(id.to_owned())
        } else {
            TagRef::InstallationId(id.to_owned())
        };
        Ok((rest, leaf))
    }

    fn too_deep(&self, at: &str) -> ExprError {
        ExprError::TooDeep {
            pos: self.pos(at),
            max: self.limits.max_depth,
        }
    }

    /// What went wrong at `rest`, right after a complete operand that is neither followed by an
    /// operator nor by the end (top level, `open == None`) or `)` (inside the `(` at `open`).
    fn after_operand_error(&self, rest: &str, open: Option<usize>) -> ExprError {
        let pos = self.pos(rest);
        match (rest.chars().next(), open) {
            (None, Some(open)) => ExprError::UnclosedParen { pos: open },
            (Some('&'), _) => ExprError::LoneAmpersand { pos },
            (Some('|'), _) => ExprError::LonePipe { pos },
            (Some(')'), None) => ExprError::UnmatchedClose { pos },
            (_, Some(_)) => ExprError::ExpectedOperatorOrClose { pos },
            // `None, None` is a complete parse, which callers do not pass here.
            (_, None) => ExprError::ExpectedOperatorOrEnd { pos },
        }
    }
}

/// Counts the tag tokens in `s` lexically (for the too-many-tags message only).
fn count_tag_tokens(mut s: &str) -> usize {
    let mut n = 0;
    loop {
        s = s.trim_start_matches(|c: char| is_delim(c));
        if s.is_empty() {
            return n;
        }
        n += 1;
        let system_body = lit(INSTALLATION_ID, s)
            .or_else(|| lit(USER_ID, s))
            .and_then(|r| lit(":{", r));
        s = match system_body {
            Some(body) => body.find('}').map_or("", |close| &body[close + 1..]),
            None => s.find(is_delim).map_or("", |end| &s[end..]),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TagExpr {
        TagExpr::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }
    fn t(s: &str) -> ExprNode {
        ExprNode::Tag(TagRef::Tag(Tag::new(s).unwrap()))
    }
    fn not(x: ExprNode) -> ExprNode {
        ExprNode::Not(Box::new(x))
    }
    fn and(l: ExprNode, r: ExprNode) -> ExprNode {
        ExprNode::And(Box::new(l), Box::new(r))
    }
    fn or(l: ExprNode, r: ExprNode) -> ExprNode {
        ExprNode::Or(Box::new(l), Box::new(r))
    }

    #[test]
    fn precedence_not_over_and_over_or() {
        assert_eq!(
            p("a || b && !c").root(),
            &or(t("a"), and(t("b"), not(t("c"))))
        );
        assert_eq!(
            p("!a && b || c").root(),
            &or(and(not(t("a")), t("b")), t("c"))
        );
        assert_eq!(p("!(a || b)").root(), &not(or(t("a"), t("b"))));
        assert_eq!(p("(a || b) && c").root(), &and(or(t("a"), t("b")), t("c")));
    }

    #[test]
    fn binary_operators_are_left_associative() {
        assert_eq!(p("a && b && c").root(), &and(and(t("a"), t("b")), t("c")));
        assert_eq!(p("a || b || c").root(), &or(or(t("a"), t("b")), t("c")));
        assert_eq!(p("a && (b && c)").root(), &and(t("a"), and(t("b"), t("c"))));
    }

    #[test]
    fn whitespace_is_optional_and_any_of_four_kinds() {
        let want = p("a && !b || (c)");
        for s in [
            "a&&!b||(c)",
            " \t\r\na\n&&\t!\rb ||( c )\n",
            "a &&! b|| ( c)",
        ] {
            assert_eq!(p(s), want, "{s:?}");
        }
        assert_eq!(p("!!a").root(), &not(not(t("a"))));
        assert_eq!(p("! ! a").root(), &not(not(t("a"))));
    }

    #[test]
    fn tags_are_case_sensitive_and_use_the_whole_alphabet() {
        assert_ne!(p("A"), p("a"));
        assert_eq!(p("Az09_@#.:-").root(), &t("Az09_@#.:-"));
    }

    #[test]
    fn system_tags() {
        assert_eq!(
            p("$InstallationId:{abc-123} || $UserId:{a b && c(}").root(),
            &or(
                ExprNode::Tag(TagRef::InstallationId("abc-123".into())),
                ExprNode::Tag(TagRef::UserId("a b && c(".into()))
            )
        );
        assert_eq!(p("!$UserId:{é}").to_string(), "!$UserId:{é}");
        assert!(TagExpr::parse(&format!("$UserId:{{{}}}", "x".repeat(256))).is_ok());
        assert!(matches!(
            TagExpr::parse("$userid:{x}"),
            Err(ExprError::UnknownSystemTag { pos: 0, .. })
        ));
    }

    #[test]
    fn prints_canonically() {
        for (input, printed) in [
            ("a||b&&c", "a || b && c"),
            ("((a||b))&&c", "(a || b) && c"),
            ("a&&(b&&c)", "a && (b && c)"),
            ("(a&&b)&&c", "a && b && c"),
            ("a||(b||c)", "a || (b || c)"),
            ("a||(b&&c)", "a || b && c"),
            ("!(!a)", "!!a"),
            ("!(a&&b)", "!(a && b)"),
            ("!a&&!(b||c)", "!a && !(b || c)"),
        ] {
            let e = p(input);
            assert_eq!(e.to_string(), printed, "{input:?}");
            assert_eq!(p(printed), e);
        }
    }

    #[test]
    fn counts_tags_and_depth() {
        let e = p("a || !(b && a) || ((c))");
        assert_eq!(e.tag_count(), 4);
        assert_eq!(e.depth(), 2);
        let names: Vec<String> = e.tags().map(|t| t.to_string()).collect();
        assert_eq!(names, ["a", "b", "a", "c"]);
        assert_eq!(p("a").depth(), 0);
        assert_eq!(p("a && (b || !c)").depth(), 2);
    }

    #[test]
    fn evaluates_naively() {
        let e = p("a && !b || c");
        let eval = |set: &[&str]| e.matches(|t| set.contains(&t.to_string().as_str()));
        assert!(eval(&["a"]));
        assert!(!eval(&["a", "b"]));
        assert!(eval(&["a", "b", "c"]));
        assert!(!eval(&[]));
    }

    #[test]
    fn limits_are_checked_while_parsing() {
        let lim = ExprLimits {
            max_tags: 3,
            max_depth: 2,
            max_len: 100,
            nh_preset: false,
        };
        assert!(TagExpr::parse_with("!(a)", &lim).is_ok());
        assert_eq!(
            TagExpr::parse_with("!(!a)", &lim),
            Err(ExprError::TooDeep { pos: 2, max: 2 })
        );
        assert_eq!(
            TagExpr::parse_with("a||b||c||d||e", &lim),
            Err(ExprError::TooManyTags { count: 5, max: 3 })
        );
        // A deep pile of '(' or '!' stops at the limit, long before the stack would care.
        let big = ExprLimits {
            max_len: 1 << 20,
            ..ExprLimits::default()
        };
        for c in ["(", "!"] {
            let s = c.repeat(100_000);
            assert_eq!(
                TagExpr::parse_with(&s, &big),
                Err(ExprError::TooDeep { pos: 64, max: 64 })
            );
        }
    }

    #[test]
    fn counts_tag_tokens_lexically() {
        assert_eq!(count_tag_tokens(""), 0);
        assert_eq!(count_tag_tokens("a && !(b||c) d"), 4);
        assert_eq!(count_tag_tokens("$UserId:{x && y} || $Foo:{a b}"), 3);
        assert_eq!(count_tag_tokens("$UserId:{x"), 1);
    }
}
