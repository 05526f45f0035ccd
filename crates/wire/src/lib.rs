//! Kuper Push-model wire formats (protocol.md §3, §4, §7, §9).
//!
//! Everything here is pure: bytes in, typed values out, and typed values back to JSON.
//! Parsing is lenient where Kuper is known to vary (strings vs numbers, absent optional
//! objects) and precise where it must refuse: every error names the JSON path at fault.

pub mod answer;
pub mod decimal;
pub mod forward;
pub mod kuper_error;
pub mod notification;
pub mod webhook;

pub use answer::CreatedAnswer;
pub use notification::{NotificationEvent, NotificationFormat};
pub use webhook::{OrderIdentity, OrderPayload, ParseError, PositionIn, WebhookEnvelope, WebhookEvent};
