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

/// Refuses a NUL character (`\u0000`) in a name, URL or id. JSON carries it
/// legally, but PostgreSQL's text cannot hold it, and no name or URL needs
/// one: both stores answer the same 400 naming the field. (Event data and
/// metadata keep it: they are stored as the JSON text, escapes and all.)
pub fn refuse_nul(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.contains('\0') {
        return Err(ValidationError::new(
            field,
            "must not contain a NUL character (\\u0000)",
        ));
    }
    Ok(())
}
