//! The dashboard's sign-in links and sessions ([`Sessions`]).

use super::*;

#[async_trait]
impl Sessions for PgStore {
    async fn create_dashboard_link(
        &self,
        team: &TeamId,
        link: &KeyHash,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("DELETE FROM dashboard_links WHERE expires_at < $1", &[&now_ms])
            .await
            .map_err(pg_error)?;
        tx.execute("DELETE FROM dashboard_sessions WHERE expires_at < $1", &[&now_ms])
            .await
            .map_err(pg_error)?;
        let n = tx
            .execute(
                "INSERT INTO dashboard_links (hash, team_id, expires_at, created_at)
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM teams WHERE id = $2)",
                &[&link.as_str(), &team.as_str(), &expires_at_ms, &now_ms],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn redeem_dashboard_link(
        &self,
        link: &KeyHash,
        session: &KeyHash,
        session_expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Option<TeamId>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let team: Option<String> = tx
            .query_opt(
                "UPDATE dashboard_links SET used_at = $1
                 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1
                 RETURNING team_id",
                &[&now_ms, &link.as_str()],
            )
            .await
            .map_err(pg_error)?
            .map(|r| r.get(0));
        let Some(team) = team else { return Ok(None) };
        tx.execute(
            "INSERT INTO dashboard_sessions (hash, team_id, expires_at, created_at) VALUES ($1, $2, $3, $4)",
            &[&session.as_str(), &team, &session_expires_at_ms, &now_ms],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Some(TeamId::from_stored(team)))
    }

    async fn dashboard_session(&self, session: &KeyHash, now_ms: i64) -> StoreResult<Option<DashboardSession>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT team_id, expires_at FROM dashboard_sessions WHERE hash = $1 AND expires_at > $2",
                &[&session.as_str(), &now_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| DashboardSession {
            team_id: TeamId::from_stored(r.get(0)),
            expires_at: r.get(1),
        }))
    }

    async fn delete_dashboard_session(&self, session: &KeyHash) -> StoreResult<()> {
        self.client()
            .await?
            .execute("DELETE FROM dashboard_sessions WHERE hash = $1", &[&session.as_str()])
            .await
            .map_err(pg_error)
            .map(|_| ())
    }
}
