//! Signing in and out, and who is asking: the session cookie and the CSRF
//! check of every state-changing request.
//!
//! A sign-in link's token is used up in the same transaction that opens the
//! session, so a link works once. The session cookie holds a random token
//! (only its hash is stored) and is `HttpOnly`, `SameSite=Lax`, and `Secure`
//! when the public URL is https. [`Protected`] is the extractor of every POST:
//! it refuses a request from another origin, then one whose CSRF token (form
//! field `_csrf` or header `x-csrf-token`) is not the session's.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use herald_domain::dashboard::Token;
use herald_domain::ids::TeamId;
use herald_domain::keys::constant_time_eq;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::extract::Query;
use crate::{DashboardError, DashboardState, views};

const COOKIE: &str = "herald_session";
/// Dashboard forms are small; anything bigger is not one of ours.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A signed-in person: the team they may see, and their session's tokens.
#[derive(Clone)]
pub struct Session {
    pub team: TeamId,
    /// Goes into every page, for its forms and script.
    pub csrf: String,
    token: Token,
}

impl Session {
    /// The shell of a page for this session: its team's name and the CSRF token.
    pub async fn chrome(&self, state: &DashboardState) -> Result<views::Chrome, DashboardError> {
        let team = state.store.get_team(&self.team).await?;
        Ok(views::Chrome {
            team_name: team.name,
            csrf: self.csrf.clone(),
        })
    }
}

impl FromRequestParts<DashboardState> for Session {
    type Rejection = DashboardError;

    async fn from_request_parts(parts: &mut Parts, state: &DashboardState) -> Result<Self, DashboardError> {
        let token = session_cookie(&parts.headers).ok_or(DashboardError::SignedOut)?;
        let found = state
            .store
            .dashboard_session(&token.hash(), state.settings.clock.now_ms())
            .await?
            .ok_or(DashboardError::SignedOut)?;
        Ok(Self {
            team: found.team_id,
            csrf: token.csrf_token(),
            token,
        })
    }
}

/// A state-changing request that passed the origin and CSRF checks, with its
/// urlencoded form.
pub struct Protected<T> {
    pub session: Session,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<DashboardState> for Protected<T> {
    type Rejection = DashboardError;

    async fn from_request(req: Request, state: &DashboardState) -> Result<Self, DashboardError> {
        let (mut parts, body) = req.into_parts();
        if !same_origin(&parts.headers, &state.settings.public_url) {
            return Err(DashboardError::Forbidden(
                "this request came from another site, so it was not carried out",
            ));
        }
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| DashboardError::BadRequest("the form could not be read".into()))?;
        let presented = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| csrf_field(&bytes))
            .unwrap_or_default();
        if !constant_time_eq(&presented, &session.csrf) {
            return Err(DashboardError::Forbidden(
                "the form's security token is missing or out of date; reload the page and try again",
            ));
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| DashboardError::BadRequest(format!("the form is not valid: {e}")))?;
        Ok(Self { session, form })
    }
}

#[derive(Deserialize)]
pub struct SignInQuery {
    #[serde(default)]
    token: Option<String>,
}

/// `GET /`: the webhooks list is home.
pub async fn home() -> Redirect {
    Redirect::to("/webhooks")
}

/// `GET /sign-in?token=…`: uses up the link and opens a session.
#[tracing::instrument(skip_all)]
pub async fn sign_in(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> Result<Response, DashboardError> {
    let refused = || {
        (
            StatusCode::FORBIDDEN,
            views::message_page(
                "This sign-in link cannot be used",
                "It has expired or was already used: each link works once, for a short time. \
                 Ask your Herald operator for a new one.",
            ),
        )
            .into_response()
    };
    let Some(link) = query.token.as_deref().and_then(Token::parse) else {
        return Ok(refused());
    };
    let now = state.settings.clock.now_ms();
    let ttl = state.settings.session_ttl;
    let session = Token::generate();
    let opened = state
        .store
        .redeem_dashboard_link(&link.hash(), &session.hash(), now + ttl.as_millis() as i64, now)
        .await?;
    if opened.is_none() {
        return Ok(refused());
    }
    // A browser that was signed in before leaves its old session behind.
    if let Some(previous) = session_cookie(&headers) {
        state.store.delete_dashboard_session(&previous.hash()).await?;
    }
    let max_age = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let cookie = session_cookie_for(session.reveal().to_owned(), max_age, &state.settings.public_url);
    Ok(with_cookie(Redirect::to("/webhooks").into_response(), &cookie))
}

/// `POST /sign-out`: ends the session on the server and in the browser.
#[tracing::instrument(skip_all)]
pub async fn sign_out(
    State(state): State<DashboardState>,
    Protected { session, .. }: Protected<Vec<(String, String)>>,
) -> Result<Response, DashboardError> {
    state.store.delete_dashboard_session(&session.token.hash()).await?;
    let cookie = session_cookie_for(String::new(), 0, &state.settings.public_url);
    Ok(with_cookie(Redirect::to("/signed-out").into_response(), &cookie))
}

/// `GET /signed-out`: where sign-out lands.
pub async fn signed_out() -> Response {
    views::message_page(
        "You are signed out",
        "Your dashboard session has ended. To come back, ask your Herald operator for a new sign-in link.",
    )
    .into_response()
}

fn session_cookie(headers: &HeaderMap) -> Option<Token> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .and_then(|c| Token::parse(c.value()))
}

/// The `Set-Cookie` value of the session cookie: `value` for `max_age_s`
/// seconds (0 and an empty value end it), `HttpOnly`, `SameSite=Lax`, and
/// `Secure` when people reach the server over https.
fn session_cookie_for(value: String, max_age_s: i64, public_url: &str) -> String {
    cookie::Cookie::build((COOKIE, value))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age_s))
        .secure(public_url.starts_with("https://"))
        .build()
        .to_string()
}

fn csrf_field(body: &Bytes) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(name, _)| name == "_csrf")
        .map(|(_, value)| value.into_owned())
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Whether a state-changing request comes from this dashboard's own pages.
/// Browsers send `Origin` on every cross-origin POST (and `Sec-Fetch-Site`);
/// a request without either is not from a browser page, and still needs the
/// CSRF token. The origin may be the public URL's, or the one the request was
/// addressed to (`Host`), so that a server reached by another name still works.
fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site.eq_ignore_ascii_case("cross-site"))
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let public_origin = url::Url::parse(public_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    if origin == public_origin {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    !host.is_empty()
        && [format!("http://{host}"), format!("https://{host}")]
            .iter()
            .any(|o| o == origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_this_servers_origin_may_change_things() {
        let public = "http://127.0.0.1:8080";
        assert!(same_origin(&headers(&[]), public));
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:8080")]), public));
        assert!(same_origin(
            &headers(&[("origin", "http://herald.lan:9000"), ("host", "herald.lan:9000")]),
            public
        ));
        assert!(!same_origin(
            &headers(&[("origin", "https://evil.example"), ("host", "127.0.0.1:8080")]),
            public
        ));
        assert!(!same_origin(
            &headers(&[("origin", "null"), ("host", "127.0.0.1:8080")]),
            public
        ));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")]), public));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let token = Token::generate();
        let cookie = format!("a=b; {COOKIE}={}; c=d", token.reveal());
        assert_eq!(session_cookie(&headers(&[("cookie", &cookie)])), Some(token));
        assert_eq!(session_cookie(&headers(&[("cookie", "herald_session=<bad>")])), None);
    }

    #[test]
    fn the_csrf_field_is_read_from_a_form() {
        let body = Bytes::from_static(b"name=x&_csrf=abc%2Bd&url=y");
        assert_eq!(csrf_field(&body).as_deref(), Some("abc+d"));
        assert_eq!(csrf_field(&Bytes::from_static(b"name=x")), None);
    }
}
