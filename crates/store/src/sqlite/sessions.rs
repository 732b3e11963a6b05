//! The dashboard's sign-in links and sessions ([`Sessions`]).

use super::*;

#[async_trait]
impl Sessions for SqliteStore {
    async fn create_dashboard_link(
        &self,
        team: &TeamId,
        link: &KeyHash,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<()> {
        let (team, link) = (team.as_str().to_owned(), link.as_str().to_owned());
        self.conns
            .write(move |c| {
                if !exists(c, "SELECT 1 FROM teams WHERE id = ?1", &team)? {
                    return Err(StoreError::NotFound);
                }
                c.execute("DELETE FROM dashboard_links WHERE expires_at < ?1", [now_ms])
                    .map_err(internal)?;
                c.execute("DELETE FROM dashboard_sessions WHERE expires_at < ?1", [now_ms])
                    .map_err(internal)?;
                c.execute(
                    "INSERT INTO dashboard_links (hash, team_id, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![link, team, expires_at_ms, now_ms],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn redeem_dashboard_link(
        &self,
        link: &KeyHash,
        session: &KeyHash,
        session_expires_at_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Option<TeamId>> {
        let (link, session) = (link.as_str().to_owned(), session.as_str().to_owned());
        self.conns
            .write(move |c| {
                let team: Option<String> = c
                    .query_row(
                        "UPDATE dashboard_links SET used_at = ?1
                         WHERE hash = ?2 AND used_at IS NULL AND expires_at > ?1
                         RETURNING team_id",
                        params![now_ms, link],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(internal)?;
                let Some(team) = team else {
                    return Ok(None);
                };
                c.execute(
                    "INSERT INTO dashboard_sessions (hash, team_id, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![session, team, session_expires_at_ms, now_ms],
                )
                .map_err(internal)?;
                Ok(Some(TeamId::from_stored(team)))
            })
            .await
    }

    async fn dashboard_session(&self, session: &KeyHash, now_ms: i64) -> StoreResult<Option<DashboardSession>> {
        let session = session.as_str().to_owned();
        self.conns
            .read(move |c| {
                c.query_row(
                    "SELECT team_id, expires_at FROM dashboard_sessions WHERE hash = ?1 AND expires_at > ?2",
                    params![session, now_ms],
                    |r| {
                        Ok(DashboardSession {
                            team_id: TeamId::from_stored(r.get(0)?),
                            expires_at: r.get(1)?,
                        })
                    },
                )
                .optional()
                .map_err(internal)
            })
            .await
    }

    async fn delete_dashboard_session(&self, session: &KeyHash) -> StoreResult<()> {
        let session = session.as_str().to_owned();
        self.conns
            .write(move |c| {
                c.execute("DELETE FROM dashboard_sessions WHERE hash = ?1", [session])
                    .map_err(internal)?;
                Ok(())
            })
            .await
    }
}
