//! Audience resolution: the tag-expression language and its evaluation.

mod expr;

pub use expr::{ExprError, ExprLimits, ExprNode, TagExpr, TagRef};
pub(crate) mod eval;
