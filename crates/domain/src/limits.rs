//! What one tenant may hold (contract §2), each with a setting. Past a
//! limit a request answers 422 `limit_exceeded` with the limit in its message.

/// The per-tenant limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Team webhooks one team may have (`HERALD_MAX_WEBHOOKS_PER_TEAM`).
    pub webhooks_per_team: usize,
    /// Real-time endpoints one bot may have
    /// (`HERALD_MAX_REALTIME_ENDPOINTS_PER_BOT`): each bot event is written
    /// once per endpoint, so this bounds what one publish can cost.
    pub realtime_endpoints_per_bot: usize,
}

impl Limits {
    pub const DEFAULT_WEBHOOKS_PER_TEAM: usize = 100;
    pub const DEFAULT_REALTIME_ENDPOINTS_PER_BOT: usize = 16;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            webhooks_per_team: Self::DEFAULT_WEBHOOKS_PER_TEAM,
            realtime_endpoints_per_bot: Self::DEFAULT_REALTIME_ENDPOINTS_PER_BOT,
        }
    }
}
