//! Team webhooks and bots with their real-time endpoints ([`Endpoints`]).

use super::*;

/// `position` orders a bot's endpoints as its Create Bot request listed them.
pub(super) async fn insert_endpoint(
    client: &impl deadpool_postgres::GenericClient,
    e: &Endpoint,
    position: usize,
) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO endpoints (id, kind, team_id, bot_id, name, url, event_types, status, secret, metadata, created_at, position)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &e.id.as_str(),
                &e.id.kind().as_str(),
                &e.team_id.as_str(),
                &e.bot_id.as_ref().map(|b| b.as_str()),
                &e.name,
                &e.url,
                &event_types_json(&e.event_types),
                &e.status.as_str(),
                &e.secret.reveal(),
                &e.metadata,
                &e.created_at,
                &(position as i32),
            ],
        )
        .await
        .map_err(pg_error)
        .map(|_| ())
}

pub(super) async fn bot_endpoints(
    client: &impl deadpool_postgres::GenericClient,
    bot: &str,
) -> StoreResult<Vec<Endpoint>> {
    let rows = client
        .query(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE bot_id = $1 ORDER BY position"),
            &[&bot],
        )
        .await
        .map_err(pg_error)?;
    rows.iter().map(endpoint_from_row).collect()
}

#[async_trait]
impl Endpoints for PgStore {
    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_team: usize) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // The team's row lock makes concurrent creates for one team count
        // one after the other.
        tx.execute(
            "SELECT 1 FROM teams WHERE id = $1 FOR UPDATE",
            &[&endpoint.team_id.as_str()],
        )
        .await
        .map_err(pg_error)?;
        let count: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM endpoints WHERE team_id = $1 AND kind = $2",
                &[&endpoint.team_id.as_str(), &endpoint.id.kind().as_str()],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_team {
            return Ok(false);
        }
        insert_endpoint(&tx, endpoint, 0).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    async fn list_webhooks(&self, team: &TeamId) -> StoreResult<Vec<Endpoint>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE team_id = $1 AND kind = $2 ORDER BY created_at, id"
                ),
                &[&team.as_str(), &EndpointKind::Webhook.as_str()],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn get_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<Endpoint> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1 AND team_id = $2"),
                &[&id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        endpoint_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn update_webhook(&self, team: &TeamId, id: &EndpointId, patch: &WebhookPatch) -> StoreResult<Endpoint> {
        let types = patch.event_types.as_deref().map(event_types_json);
        let status = patch.status.map(|s| s.as_str());
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE endpoints SET name = COALESCE($3, name), url = COALESCE($4, url),
                         event_types = COALESCE($5, event_types), status = COALESCE($6, status),
                         deactivated_reason = CASE WHEN $6 IS NULL THEN deactivated_reason END,
                         failing_since = CASE WHEN $6 IS NULL THEN failing_since END
                     WHERE id = $1 AND team_id = $2
                     RETURNING {ENDPOINT_COLUMNS}"
                ),
                &[&id.as_str(), &team.as_str(), &patch.name, &patch.url, &types, &status],
            )
            .await
            .map_err(pg_error)?;
        endpoint_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn rotate_secret(
        &self,
        team: &TeamId,
        id: &EndpointId,
        secret: &Secret,
        previous_expires_at_ms: i64,
    ) -> StoreResult<Endpoint> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE endpoints SET previous_secret = secret, previous_secret_expires_at = $1, secret = $2
                     WHERE id = $3 AND team_id = $4 AND kind = 'webhook'
                     RETURNING {ENDPOINT_COLUMNS}"
                ),
                &[&previous_expires_at_ms, &secret.reveal(), &id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        endpoint_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn delete_endpoint(&self, team: &TeamId, id: &EndpointId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let n = tx
            .execute(
                "DELETE FROM endpoints WHERE id = $1 AND team_id = $2",
                &[&id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        // Every delivery that left `pending` has an attempt in the log; the
        // pending ones are in the two partial indexes (schema 3).
        tx.execute(
            "DELETE FROM deliveries WHERE seq IN (
                 SELECT delivery_seq FROM attempts WHERE endpoint_id = $1
                 UNION ALL SELECT seq FROM deliveries
                     WHERE state = 'pending' AND NOT ordered AND locked_until IS NULL AND endpoint_id = $1
                 UNION ALL SELECT seq FROM deliveries
                     WHERE state = 'pending' AND NOT ordered AND locked_until IS NOT NULL AND endpoint_id = $1
                 UNION ALL SELECT seq FROM deliveries WHERE state = 'pending' AND ordered AND endpoint_id = $1)",
            &[&id.as_str()],
        )
        .await
        .map_err(pg_error)?;
        tx.execute("DELETE FROM attempts WHERE endpoint_id = $1", &[&id.as_str()])
            .await
            .map_err(pg_error)?;
        tx.execute("DELETE FROM endpoint_stats WHERE endpoint_id = $1", &[&id.as_str()])
            .await
            .map_err(pg_error)?;
        tx.execute("DELETE FROM recoveries WHERE endpoint_id = $1", &[&id.as_str()])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn create_bot(&self, bot: &Bot) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO bots (id, team_id, meeting_url, metadata, recording_id, participant_events_id, transcript_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &bot.id.as_str(),
                &bot.team_id.as_str(),
                &bot.meeting_url,
                &bot.metadata,
                &bot.recording_id,
                &bot.participant_events_id,
                &bot.transcript_id,
                &bot.created_at,
            ],
        )
        .await
        .map_err(pg_error)?;
        for (position, e) in bot.endpoints.iter().enumerate() {
            insert_endpoint(&tx, e, position).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn get_bot(&self, team: &TeamId, id: &BotId) -> StoreResult<Bot> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {BOT_COLUMNS} FROM bots WHERE id = $1 AND team_id = $2"),
                &[&id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        let mut bot = bot_from_row(&row.ok_or(StoreError::NotFound)?);
        bot.endpoints = bot_endpoints(&client, id.as_str()).await?;
        Ok(bot)
    }

    async fn list_bots(&self, team: &TeamId) -> StoreResult<Vec<Bot>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {BOT_COLUMNS} FROM bots WHERE team_id = $1 ORDER BY created_at DESC, id DESC"),
                &[&team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        let mut bots: Vec<Bot> = rows.iter().map(bot_from_row).collect();
        for bot in &mut bots {
            bot.endpoints = bot_endpoints(&client, bot.id.as_str()).await?;
        }
        Ok(bots)
    }
}
