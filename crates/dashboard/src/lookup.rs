//! What several page groups take from a request: the session's team's
//! webhook named in the path, and a field of a submitted form.

use herald_domain::ids::{EndpointId, EndpointKind};
use herald_store::Endpoint;

use crate::session::Session;
use crate::{DashboardError, DashboardState};

/// The session's team's webhook with this id; anything else is a 404.
pub(crate) async fn load_webhook(
    state: &DashboardState,
    session: &Session,
    raw: &str,
) -> Result<Endpoint, DashboardError> {
    let id = EndpointId::parse(EndpointKind::Webhook, raw).ok_or(DashboardError::NotFound)?;
    let webhook = state.store.get_endpoint(&session.team, &id).await?;
    if webhook.id.kind() != EndpointKind::Webhook {
        return Err(DashboardError::NotFound);
    }
    Ok(webhook)
}

/// The first value of a form field.
pub(crate) fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}
