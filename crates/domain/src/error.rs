//! The one error type of the domain: a request that breaks a rule.

/// Input that breaks a rule of the contract. `field` names the offending field
/// in the request's own terms (`url`, `data.organization.teamId`), so that the
/// API can tell a person exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
