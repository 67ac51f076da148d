//! The `$filter` of a registration listing: channel lookups by handle fields. Defined with
//! the model (`src/model/filter.rs`), which cluster nodes use without the server; re-exported
//! here with the rest of the Notification Hubs protocol.

pub use crate::model::filter::{check, is_channel_filter, matches};
