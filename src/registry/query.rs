//! Resolution: evaluating a tag expression as bitmap algebra over one registry partition.
//!
//! The tag-expression *language* (parser, limits, printer) is [`crate::audience`]'s; evaluating
//! it over partitions is the registry's, so the audience module never reads registry internals.
//!
//! A [`TagExpr`] is first *compiled* against the registry's tag interner: leaves become tag ids
//! (or "unknown tag", which matches nothing), and `&&` / `||` chains are flattened into n-ary
//! nodes so evaluation recursion is bounded by the expression's nesting depth, not its length.
//! Then, per partition:
//!
//! | node | bitmap |
//! | --- | --- |
//! | `t` | the tag's bitmap (borrowed, no copy) |
//! | `!x` | `all - x` |
//! | `a && b && !c` | `(a & b) - c` — negated terms of a conjunction are subtracted, never complemented |
//! | `a \|\| b` | `a \| b` |
//! | `$InstallationId:{id}` | the id's slot if it is indexed |
//! | `$UserId:{u}` | the user's indexed slots |
//!
//! Every result is a subset of `all` (the indexed slots) because every leaf is. The same
//! compiled expression also tests single records ([`Compiled::matches`]), which the batch
//! iterator uses to re-check a slot when it is read, so a slot reused between resolution and
//! delivery never receives a notification it does not match.

use std::borrow::Cow;

use roaring::RoaringBitmap;

use super::partition::{Partition, Rec, TagId};
use crate::audience::{ExprNode, TagExpr, TagRef};

/// A tag expression bound to interned tag ids.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    /// A tag; `None` when no installation has ever carried it.
    Tag(Option<TagId>),
    InstallationId(Box<str>),
    UserId(Box<str>),
    Not(Box<Compiled>),
    And(Vec<Compiled>),
    Or(Vec<Compiled>),
    /// Every indexed slot (broadcast).
    All,
}

impl Compiled {
    /// Compiles `expr`, looking tags up with `lookup`.
    pub(crate) fn new(expr: &TagExpr, lookup: &dyn Fn(&str) -> Option<TagId>) -> Compiled {
        compile(expr.root(), lookup)
    }

    /// Evaluates against one partition.
    pub(crate) fn eval<'p>(&self, p: &'p Partition) -> Cow<'p, RoaringBitmap> {
        match self {
            Compiled::All => Cow::Borrowed(&p.all),
            Compiled::Tag(Some(t)) => match p.tags.get(t) {
                Some(b) => Cow::Borrowed(b),
                None => Cow::Owned(RoaringBitmap::new()),
            },
            Compiled::Tag(None) => Cow::Owned(RoaringBitmap::new()),
            Compiled::InstallationId(id) => {
                let mut b = RoaringBitmap::new();
                if let Some(s) = p.find_id(id) {
                    if p.all.contains(s) {
                        b.insert(s);
                    }
                }
                Cow::Owned(b)
            }
            Compiled::UserId(u) => {
                let mut b = p.find_user(u);
                b &= &p.all;
                Cow::Owned(b)
            }
            Compiled::Not(x) => Cow::Owned(&p.all - x.eval(p).as_ref()),
            Compiled::Or(xs) => {
                let mut acc: Option<Cow<'p, RoaringBitmap>> = None;
                for x in xs {
                    let b = x.eval(p);
                    acc = Some(match acc {
                        None => b,
                        Some(a) => Cow::Owned(a.into_owned() | b.as_ref()),
                    });
                }
                acc.unwrap_or_else(|| Cow::Owned(RoaringBitmap::new()))
            }
            Compiled::And(xs) => {
                // Positive terms intersect (smallest first would be better; the order of the
                // expression is kept, which is what the user wrote); negated terms subtract.
                let mut acc: Option<Cow<'p, RoaringBitmap>> = None;
                for x in xs.iter().filter(|x| !matches!(x, Compiled::Not(_))) {
                    let b = x.eval(p);
                    acc = Some(match acc {
                        None => b,
                        Some(a) => Cow::Owned(a.into_owned() & b.as_ref()),
                    });
                    if acc.as_ref().is_some_and(|a| a.is_empty()) {
                        return Cow::Owned(RoaringBitmap::new());
                    }
                }
                let mut acc = acc.unwrap_or(Cow::Borrowed(&p.all));
                for x in xs {
                    if let Compiled::Not(inner) = x {
                        let b = inner.eval(p);
                        acc = Cow::Owned(acc.into_owned() - b.as_ref());
                    }
                }
                acc
            }
        }
    }

    /// Whether the indexed record `r` matches.
    pub(crate) fn matches(&self, r: Rec<'_>) -> bool {
        match self {
            Compiled::All => true,
            Compiled::Tag(Some(t)) => r.has_tag(*t),
            Compiled::Tag(None) => false,
            Compiled::InstallationId(id) => r.id() == &**id,
            Compiled::UserId(u) => r.user() == Some(&**u),
            Compiled::Not(x) => !x.matches(r),
            Compiled::And(xs) => xs.iter().all(|x| x.matches(r)),
            Compiled::Or(xs) => xs.iter().any(|x| x.matches(r)),
        }
    }
}

fn compile(node: &ExprNode, lookup: &dyn Fn(&str) -> Option<TagId>) -> Compiled {
    match node {
        ExprNode::Tag(TagRef::Tag(t)) => Compiled::Tag(lookup(t.as_str())),
        ExprNode::Tag(TagRef::InstallationId(id)) => Compiled::InstallationId(id.as_str().into()),
        ExprNode::Tag(TagRef::UserId(u)) => Compiled::UserId(u.as_str().into()),
        ExprNode::Not(x) => match compile(x, lookup) {
            Compiled::Not(inner) => *inner,
            c => Compiled::Not(Box::new(c)),
        },
        ExprNode::And(..) => {
            let mut terms = Vec::new();
            flatten(node, true, lookup, &mut terms);
            Compiled::And(terms)
        }
        ExprNode::Or(..) => {
            let mut terms = Vec::new();
            flatten(node, false, lookup, &mut terms);
            Compiled::Or(terms)
        }
    }
}

/// Collects the operands of a chain of `&&` (`and == true`) or `||`, iteratively along the
/// left spine (left-associative parses make chains left-deep).
fn flatten(
    node: &ExprNode,
    and: bool,
    lookup: &dyn Fn(&str) -> Option<TagId>,
    out: &mut Vec<Compiled>,
) {
    let mut rights = Vec::new();
    let mut cur = node;
    while let (ExprNode::And(l, r), true) | (ExprNode::Or(l, r), false) = (cur, and) {
        rights.push(&**r);
        cur = l;
    }
    out.push(compile(cur, lookup));
    for r in rights.into_iter().rev() {
        match (r, and) {
            (ExprNode::And(..), true) | (ExprNode::Or(..), false) => flatten(r, and, lookup, out),
            _ => out.push(compile(r, lookup)),
        }
    }
}
