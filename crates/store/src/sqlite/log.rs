//! The attempt log ([`AttemptLog`]).

use super::*;

#[async_trait]
impl AttemptLog for SqliteStore {
    async fn list_attempts(
        &self,
        team: &TeamId,
        endpoint: &EndpointId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<Attempt>> {
        let (team, endpoint, filter) = (team.as_str().to_owned(), endpoint.as_str().to_owned(), filter.clone());
        self.conns
            .read(move |c| {
                // The event filter reads the event's few attempts; the others
                // read the endpoint's log in order (see migration 3).
                let unsuccessful = filter.status.is_some_and(|s| s != AttemptStatus::Success);
                let index = match (&filter.event_id, unsuccessful) {
                    (Some(_), _) => "attempts_event",
                    (None, true) => "attempts_endpoint_unsuccessful",
                    (None, false) => "attempts_endpoint",
                };
                let mut sql = format!(
                    "SELECT {ATTEMPT_COLUMNS}, NULL, NULL FROM attempts a INDEXED BY {index}
                     WHERE a.endpoint_id = ?1 AND a.team_id = ?2"
                );
                let mut args: Vec<rusqlite::types::Value> = vec![endpoint.into(), team.into()];
                if let Some(status) = filter.status {
                    args.push(status.as_str().to_owned().into());
                    sql.push_str(&format!(" AND a.status = ?{}", args.len()));
                    if unsuccessful {
                        // Lets the partial index of unsuccessful attempts serve.
                        sql.push_str(" AND a.status <> 'success'");
                    }
                }
                if let Some(event) = &filter.event_id {
                    args.push(event.as_str().to_owned().into());
                    sql.push_str(&format!(" AND a.event_id = ?{}", args.len()));
                }
                if let Some(before) = filter.before {
                    args.push(before.timestamp_ms.into());
                    args.push(before.seq.into());
                    let (t, q) = (args.len() - 1, args.len());
                    sql.push_str(&format!(
                        " AND (a.timestamp < ?{t} OR (a.timestamp = ?{t} AND a.seq < ?{q}))"
                    ));
                }
                args.push((filter.limit as i64).into());
                sql.push_str(&format!(" ORDER BY a.timestamp DESC, a.seq DESC LIMIT ?{}", args.len()));
                let mut stmt = c.prepare_cached(&sql).map_err(internal)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args), attempt_from_row)
                    .map_err(internal)?;
                rows.map(|r| r.map_err(internal)).collect()
            })
            .await
    }

    async fn webhook_stats(&self, team: &TeamId, id: &EndpointId, from_hour_ms: i64) -> StoreResult<Vec<HourStats>> {
        let (team, id) = (team.as_str().to_owned(), id.as_str().to_owned());
        self.conns
            .read(move |c| {
                load_endpoint(c, &team, &id)?;
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {STATS_COLUMNS} FROM endpoint_stats WHERE endpoint_id = ?1 AND hour >= ?2 ORDER BY hour"
                    ))
                    .map_err(internal)?;
                let rows = stmt
                    .query_map(params![id, from_hour_ms], stats_from_row)
                    .map_err(internal)?;
                rows.map(|r| r.map_err(internal)).collect()
            })
            .await
    }

    async fn get_attempt(&self, team: &TeamId, id: &AttemptId) -> StoreResult<Attempt> {
        let (team, id) = (team.as_str().to_owned(), id.as_str().to_owned());
        self.conns
            .read(move |c| {
                c.query_row(
                    &format!(
                        "SELECT {ATTEMPT_COLUMNS}, a.response_body, COALESCE(dl.body, v.body) FROM attempts a
                         LEFT JOIN events v ON v.id = a.event_id
                         LEFT JOIN deliveries dl ON dl.seq = a.delivery_seq
                         WHERE a.id = ?1 AND a.team_id = ?2"
                    ),
                    params![id, team],
                    attempt_from_row,
                )
                .optional()
                .map_err(internal)?
                .ok_or(StoreError::NotFound)
            })
            .await
    }
}
