//! Accounts, teams, team keys and the admin key ([`Tenancy`]).

use super::*;

pub(super) const ADMIN_KEY: &str = "admin_key_hash";

#[async_trait]
impl Tenancy for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO meta (key, value) VALUES ('ready_probe', now()::text)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[],
            )
            .await
            .map_err(pg_error)
            .map(|_| ())
    }

    async fn admin_key_hash(&self) -> StoreResult<Option<KeyHash>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&ADMIN_KEY])
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| KeyHash::from_stored(r.get(0))))
    }

    async fn init_admin_key_hash(&self, hash: &KeyHash) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&ADMIN_KEY, &hash.as_str()],
            )
            .await
            .map_err(pg_error)?;
        Ok(n == 1)
    }

    async fn create_account(&self, name: &str, now_ms: i64) -> StoreResult<Account> {
        let account = plan::new_account(name, now_ms);
        self.client()
            .await?
            .execute(
                "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)",
                &[&account.id.as_str(), &account.name, &now_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(account)
    }

    async fn create_team(&self, account: &AccountId, name: &str, now_ms: i64) -> StoreResult<Team> {
        let team = plan::new_team(account, name, now_ms);
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO teams (id, account_id, name, created_at)
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $2)",
                &[&team.id.as_str(), &account.as_str(), &team.name, &now_ms],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(team)
    }

    async fn create_team_key(&self, key: &TeamKey, hash: &KeyHash) -> StoreResult<()> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO team_keys (hash, team_id, created_at, id, name, prefix)
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM teams WHERE id = $2)",
                &[
                    &hash.as_str(),
                    &key.team_id.as_str(),
                    &key.created_at,
                    &key.id.as_str(),
                    &key.name,
                    &key.prefix,
                ],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn team_for_key(&self, hash: &KeyHash) -> StoreResult<Option<KeyUse>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT team_id, id, last_used_at FROM team_keys WHERE hash = $1")
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&stmt, &[&hash.as_str()]).await.map_err(pg_error)?;
        Ok(row.map(|r| KeyUse {
            team: TeamId::from_stored(r.get(0)),
            key: KeyId::from_stored(r.get(1)),
            last_used_at: r.get(2),
        }))
    }

    async fn touch_team_key(&self, key: &KeyId, now_ms: i64) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "UPDATE team_keys SET last_used_at = $2 WHERE id = $1",
                &[&key.as_str(), &now_ms],
            )
            .await
            .map_err(pg_error)
            .map(|_| ())
    }

    async fn list_team_keys(&self, team: &TeamId) -> StoreResult<Vec<TeamKey>> {
        let client = self.client().await?;
        let exists = client
            .query_opt("SELECT 1 FROM teams WHERE id = $1", &[&team.as_str()])
            .await
            .map_err(pg_error)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let rows = client
            .query(
                &format!("SELECT {TEAM_KEY_COLUMNS} FROM team_keys WHERE team_id = $1 ORDER BY created_at, id"),
                &[&team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(team_key_from_row).collect())
    }

    async fn delete_team_key(&self, team: &TeamId, key: &KeyId) -> StoreResult<()> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM team_keys WHERE id = $1 AND team_id = $2",
                &[&key.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn get_team(&self, team: &TeamId) -> StoreResult<Team> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id, account_id, name, created_at FROM teams WHERE id = $1",
                &[&team.as_str()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(Team {
            id: TeamId::from_stored(row.get(0)),
            account_id: AccountId::from_stored(row.get(1)),
            name: row.get(2),
            created_at: row.get(3),
        })
    }
}
