//! Audiences: the tag-expression language (parser, limits, printer, the naive reference
//! evaluator). Evaluating an expression over the registry's partitions is
//! `registry::query`'s.

mod expr;

pub use expr::{ExprError, ExprLimits, ExprNode, TagExpr, TagRef};
