//! Team webhooks and bots with their real-time endpoints ([`Endpoints`]).

use super::*;

/// `position` orders a bot's endpoints as its Create Bot request listed them.
pub(super) fn insert_endpoint(c: &Connection, e: &Endpoint, position: usize) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO endpoints (id, kind, team_id, bot_id, name, url, event_types, status, secret, metadata, created_at, position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            e.id.as_str(),
            e.id.kind().as_str(),
            e.team_id.as_str(),
            e.bot_id.as_ref().map(|b| b.as_str()),
            e.name,
            e.url,
            event_types_json(&e.event_types),
            e.status.as_str(),
            e.secret.reveal(),
            e.metadata,
            e.created_at,
            position as i64
        ])
    })
    .map_err(internal)?;
    Ok(())
}

/// A bot's real-time endpoints in the order its Create Bot request gave them:
/// insertion order, since ids minted in the same millisecond sort at random.
pub(super) fn bot_endpoints(c: &Connection, bot: &str) -> StoreResult<Vec<Endpoint>> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE bot_id = ?1 ORDER BY position"
        ))
        .map_err(internal)?;
    let rows = stmt.query_map([bot], endpoint_from_row).map_err(internal)?;
    rows.map(|r| r.map_err(internal)).collect()
}

pub(super) fn load_endpoint(c: &Connection, team: &str, id: &str) -> StoreResult<Endpoint> {
    c.query_row(
        &format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = ?1 AND team_id = ?2"),
        params![id, team],
        endpoint_from_row,
    )
    .optional()
    .map_err(internal)?
    .ok_or(StoreError::NotFound)
}

#[async_trait]
impl Endpoints for SqliteStore {
    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_team: usize) -> StoreResult<bool> {
        let e = endpoint.clone();
        self.conns
            .write(move |c| {
                let count: i64 = c
                    .query_row(
                        "SELECT COUNT(*) FROM endpoints WHERE team_id = ?1 AND kind = ?2",
                        params![e.team_id.as_str(), e.id.kind().as_str()],
                        |row| row.get(0),
                    )
                    .map_err(internal)?;
                if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_team {
                    return Ok(false);
                }
                insert_endpoint(c, &e, 0).map(|()| true)
            })
            .await
    }

    async fn create_bot(&self, bot: &Bot) -> StoreResult<()> {
        let b = bot.clone();
        self.conns
            .write(move |c| {
                c.execute(
                    "INSERT INTO bots (id, team_id, meeting_url, metadata, recording_id, participant_events_id, transcript_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        b.id.as_str(),
                        b.team_id.as_str(),
                        b.meeting_url,
                        b.metadata,
                        b.recording_id,
                        b.participant_events_id,
                        b.transcript_id,
                        b.created_at
                    ],
                )
                .map_err(internal)?;
                for (position, e) in b.endpoints.iter().enumerate() {
                    insert_endpoint(c, e, position)?;
                }
                Ok(())
            })
            .await
    }

    async fn get_bot(&self, team: &TeamId, id: &BotId) -> StoreResult<Bot> {
        let (team, id) = (team.as_str().to_owned(), id.as_str().to_owned());
        self.conns
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {BOT_COLUMNS} FROM bots WHERE id = ?1 AND team_id = ?2"
                    ))
                    .map_err(internal)?;
                let bot = stmt
                    .query_row(params![id, team], bot_from_row)
                    .optional()
                    .map_err(internal)?;
                let mut bot = bot.ok_or(StoreError::NotFound)?;
                bot.endpoints = bot_endpoints(c, &id)?;
                Ok(bot)
            })
            .await
    }

    async fn list_bots(&self, team: &TeamId) -> StoreResult<Vec<Bot>> {
        let team = team.as_str().to_owned();
        self.conns
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {BOT_COLUMNS} FROM bots WHERE team_id = ?1 ORDER BY created_at DESC, id DESC"
                    ))
                    .map_err(internal)?;
                let mut bots = stmt
                    .query_map([team], bot_from_row)
                    .map_err(internal)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?;
                for bot in &mut bots {
                    bot.endpoints = bot_endpoints(c, bot.id.as_str())?;
                }
                Ok(bots)
            })
            .await
    }

    async fn list_webhooks(&self, team: &TeamId) -> StoreResult<Vec<Endpoint>> {
        let team = team.as_str().to_owned();
        self.conns
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE team_id = ?1 AND kind = ?2 ORDER BY created_at, id"
                    ))
                    .map_err(internal)?;
                let rows = stmt
                    .query_map(params![team, EndpointKind::Webhook.as_str()], endpoint_from_row)
                    .map_err(internal)?;
                rows.map(|r| r.map_err(internal)).collect()
            })
            .await
    }

    async fn get_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<Endpoint> {
        let (team, id) = (team.as_str().to_owned(), id.as_str().to_owned());
        self.conns.read(move |c| load_endpoint(c, &team, &id)).await
    }

    async fn update_webhook(&self, team: &TeamId, id: &EndpointId, patch: &WebhookPatch) -> StoreResult<Endpoint> {
        let (team, id, patch) = (team.as_str().to_owned(), id.as_str().to_owned(), patch.clone());
        self.conns
            .write(move |c| {
                let mut e = load_endpoint(c, &team, &id)?;
                if let Some(name) = patch.name {
                    e.name = name;
                }
                if let Some(url) = patch.url {
                    e.url = url;
                }
                if let Some(types) = patch.event_types {
                    e.event_types = types;
                }
                if let Some(status) = patch.status {
                    e.status = status;
                    e.deactivated_reason = None;
                    e.failing_since = None;
                }
                // A status set by a person ends Herald's reason and the
                // failing streak.
                c.execute(
                    "UPDATE endpoints SET name = ?1, url = ?2, event_types = ?3, status = ?4,
                         deactivated_reason = ?5, failing_since = CASE WHEN ?6 THEN NULL ELSE failing_since END
                     WHERE id = ?7",
                    params![
                        e.name,
                        e.url,
                        event_types_json(&e.event_types),
                        e.status.as_str(),
                        e.deactivated_reason,
                        patch.status.is_some(),
                        id
                    ],
                )
                .map_err(internal)?;
                Ok(e)
            })
            .await
    }

    async fn rotate_secret(
        &self,
        team: &TeamId,
        id: &EndpointId,
        secret: &Secret,
        previous_expires_at_ms: i64,
    ) -> StoreResult<Endpoint> {
        let (team, id, secret) = (team.as_str().to_owned(), id.as_str().to_owned(), secret.clone());
        self.conns
            .write(move |c| {
                let changed = c
                    .execute(
                        "UPDATE endpoints SET previous_secret = secret, previous_secret_expires_at = ?1, secret = ?2
                         WHERE id = ?3 AND team_id = ?4 AND kind = 'webhook'",
                        params![previous_expires_at_ms, secret.reveal(), id, team],
                    )
                    .map_err(internal)?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                load_endpoint(c, &team, &id)
            })
            .await
    }

    async fn delete_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<()> {
        let (team, id) = (team.as_str().to_owned(), id.as_str().to_owned());
        self.conns
            .write(move |c| {
                let n = c
                    .execute(
                        "DELETE FROM endpoints WHERE id = ?1 AND team_id = ?2",
                        params![id, team],
                    )
                    .map_err(internal)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                // Every delivery that left `pending` has an attempt in the log;
                // the pending ones are in the three partial indexes (schema 4).
                c.execute(
                    "DELETE FROM deliveries WHERE seq IN (
                         SELECT delivery_seq FROM attempts WHERE endpoint_id = ?1
                         UNION ALL SELECT seq FROM deliveries
                             WHERE state = 'pending' AND ordered = 0 AND locked_until IS NULL AND endpoint_id = ?1
                         UNION ALL SELECT seq FROM deliveries
                             WHERE state = 'pending' AND ordered = 0 AND locked_until IS NOT NULL AND endpoint_id = ?1
                         UNION ALL SELECT seq FROM deliveries WHERE state = 'pending' AND ordered = 1 AND endpoint_id = ?1)",
                    [&id],
                )
                .map_err(internal)?;
                c.execute("DELETE FROM attempts WHERE endpoint_id = ?1", [&id])
                    .map_err(internal)?;
                c.execute("DELETE FROM endpoint_stats WHERE endpoint_id = ?1", [&id])
                    .map_err(internal)?;
                c.execute("DELETE FROM recoveries WHERE endpoint_id = ?1", [&id])
                    .map_err(internal)?;
                Ok(())
            })
            .await
    }
}
