//! Mock push notification services (work in progress).

pub mod cli;
