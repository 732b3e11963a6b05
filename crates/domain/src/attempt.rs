//! What one delivery attempt came to, and how the log shows it.
//!
//! A failed attempt is data, not an error: [`AttemptOutcome`] has a variant
//! for each way an attempt can end, and the retry policy matches on it.

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer.
    Success(u16),
    /// Any other HTTP status.
    Status(u16),
    /// No complete answer within the attempt timeout.
    Timeout,
    /// The connection could not be made, or broke (refused, reset, ...).
    Connect(String),
    /// The host name did not resolve.
    Dns(String),
    /// The TLS handshake failed.
    Tls(String),
    /// The target address is not allowed (internal address).
    RefusedTarget(String),
    /// Anything else that stopped the request.
    Other(String),
}

impl AttemptOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success(_))
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Success(code) | Self::Status(code) => Some(*code),
            _ => None,
        }
    }

    /// The error text shown in the log, `None` when there was an answer.
    pub fn error_text(&self) -> Option<String> {
        match self {
            Self::Success(_) | Self::Status(_) => None,
            Self::Timeout => Some("timed out waiting for the endpoint to answer".into()),
            Self::Connect(why) => Some(format!("connection failed: {why}")),
            Self::Dns(why) => Some(format!("DNS lookup failed: {why}")),
            Self::Tls(why) => Some(format!("TLS failed: {why}")),
            Self::RefusedTarget(why) => Some(format!("target refused: {why}")),
            Self::Other(why) => Some(why.clone()),
        }
    }
}

/// An attempt's status in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptStatus {
    Success,
    /// Failed, and another attempt is scheduled.
    Retrying,
    /// Failed, and it was the last one.
    Failed,
    /// Never sent: the endpoint failed before this delivery's turn came.
    Dropped,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "success" => Some(Self::Success),
            "retrying" => Some(Self::Retrying),
            "failed" => Some(Self::Failed),
            "dropped" => Some(Self::Dropped),
            _ => None,
        }
    }
}

/// Response bodies are kept up to this many bytes.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Response headers are kept up to this many bytes of names and values.
pub const MAX_RESPONSE_HEADERS: usize = 16 * 1024;

/// The name of the pair that ends a response's kept headers when some were
/// cut at [`MAX_RESPONSE_HEADERS`]; its value says how many.
pub const CUT_HEADERS_MARK: &str = "x-herald-headers-cut";
