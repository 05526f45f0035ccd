//! The synchronous answer to `order.created` (protocol.md §4).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedAnswer {
    /// Always `"created"`, even for an order the merchant will cancel (the brief's rule).
    pub status: String,
    /// The merchant's order id, always a JSON string.
    pub number: String,
    /// RFC 3339 with an explicit offset.
    #[serde(rename = "expectedAssemblyTime")]
    pub expected_assembly_time: String,
}

impl CreatedAnswer {
    pub fn new(number: impl Into<String>, expected_assembly_time: impl Into<String>) -> Self {
        Self { status: "created".into(), number: number.into(), expected_assembly_time: expected_assembly_time.into() }
    }
}
