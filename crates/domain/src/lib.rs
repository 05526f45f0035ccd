//! The order domain of kuper-bridge: fulfilment schemes, the state machines, composition and
//! money. No IO: every function takes the current order and the input and returns the decision
//! (new order, notifications to enqueue) or a typed refusal. Storage applies decisions inside
//! one transaction; the HTTP layer only maps errors to statuses.
//!
//! The single source of the rules is [`rules::RULES`]; allowed-action lists, 409 details and
//! the generated diagrams all read it.

pub mod composition;
pub mod deadlines;
pub mod diagram;
pub mod engine;
pub mod error;
pub mod input;
pub mod money;
pub mod order;
pub mod policy;
pub mod rules;
pub mod state;

pub use composition::{CollectedLine, Composition};
pub use deadlines::{Deadline, DeadlineKind, DeadlineSettings, DeadlineStage};
pub use engine::{ActionDecision, WebhookDecision, WebhookOutcome};
pub use error::DomainError;
pub use input::{CancelDescription, CancelReason, CustomerCode, OverrideReason, Parsed, PromisedTime};
pub use order::Order;
pub use policy::{Delivery, Policy, StoreProfile, MOSCOW};
pub use rules::{Action, ActionKind};
pub use state::{KuperState, OrderState, PaymentState, Scheme};
