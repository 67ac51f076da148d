//! Audience resolution: the tag-expression language and its evaluation.
