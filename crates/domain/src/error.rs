use crate::rules::ActionKind;
use crate::state::OrderState;

/// Why the domain refused an input. Each variant maps to one HTTP status in the app layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The action breaks the order of events for this order's scheme (HTTP 409).
    #[error("{action} is not allowed in state {state}{reason}; allowed: {allowed}", reason = .reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(), allowed = if .allowed.is_empty() { if .state.is_final() { "nothing (the order is final)".to_string() } else { "nothing from the merchant now (Kuper completes this stage)".to_string() } } else { .allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ") })]
    InvalidTransition { action: ActionKind, state: OrderState, allowed: Vec<ActionKind>, reason: Option<String> },
    /// The request body is well-formed but its content is wrong (HTTP 422).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}
