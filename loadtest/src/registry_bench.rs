//! The registry benchmark.
