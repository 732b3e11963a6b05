//! The attempt log ([`AttemptLog`]).

use super::*;

#[async_trait]
impl AttemptLog for PgStore {
    async fn list_attempts(
        &self,
        team: &TeamId,
        endpoint: &EndpointId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<Attempt>> {
        // Only the filters given go into the statement: Herald's connections
        // always plan generically (see `open_at_schema`), and a generic plan
        // of "$3 IS NULL OR status = $3" could not pick the index that serves
        // the filter.
        let mut sql = format!(
            "SELECT {ATTEMPT_COLUMNS}, NULL::bytea, NULL::bytea FROM attempts a
             WHERE a.endpoint_id = $1 AND a.team_id = $2"
        );
        let (endpoint, team, limit) = (endpoint.as_str(), team.as_str(), filter.limit as i64);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&endpoint, &team, &limit];
        let status = filter.status.map(|s| s.as_str());
        if let Some(status) = &status {
            params.push(status);
            sql.push_str(&format!(" AND a.status = ${}", params.len()));
            if *status != AttemptStatus::Success.as_str() {
                // Lets the partial index of unsuccessful attempts serve (migration 3).
                sql.push_str(" AND a.status <> 'success'");
            }
        }
        let event = filter.event_id.as_ref().map(|e| e.as_str());
        if let Some(event) = &event {
            params.push(event);
            sql.push_str(&format!(" AND a.event_id = ${}", params.len()));
        }
        let before = filter.before.map(|c| (c.timestamp_ms, c.seq));
        if let Some((timestamp, seq)) = &before {
            params.push(timestamp);
            params.push(seq);
            let n = params.len();
            sql.push_str(&format!(
                " AND (a.timestamp < ${} OR (a.timestamp = ${} AND a.seq < ${n}))",
                n - 1,
                n - 1
            ));
        }
        sql.push_str(" ORDER BY a.timestamp DESC, a.seq DESC LIMIT $3");
        let rows = self.client().await?.query(&sql, &params).await.map_err(pg_error)?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn webhook_stats(&self, team: &TeamId, id: &EndpointId, from_hour_ms: i64) -> StoreResult<Vec<HourStats>> {
        let client = self.client().await?;
        let owned = client
            .query_opt(
                "SELECT 1 FROM endpoints WHERE id = $1 AND team_id = $2",
                &[&id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        if owned.is_none() {
            return Err(StoreError::NotFound);
        }
        let rows = client
            .query(
                &format!(
                    "SELECT {STATS_COLUMNS} FROM endpoint_stats WHERE endpoint_id = $1 AND hour >= $2 ORDER BY hour"
                ),
                &[&id.as_str(), &from_hour_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(stats_from_row).collect())
    }

    async fn get_attempt(&self, team: &TeamId, id: &AttemptId) -> StoreResult<Attempt> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {ATTEMPT_COLUMNS}, a.response_body, COALESCE(dl.body, v.body) FROM attempts a
                     LEFT JOIN events v ON v.id = a.event_id
                     LEFT JOIN deliveries dl ON dl.seq = a.delivery_seq
                     WHERE a.id = $1 AND a.team_id = $2"
                ),
                &[&id.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        attempt_from_row(&row.ok_or(StoreError::NotFound)?)
    }
}
