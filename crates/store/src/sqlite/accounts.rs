//! Accounts, teams, team keys and the admin key ([`Tenancy`]).

use super::*;

pub(super) const ADMIN_KEY: &str = "admin_key_hash";

#[async_trait]
impl Tenancy for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        if self.conns.file_gone() {
            return Err(StoreError::Unavailable(
                "the database file was deleted or replaced under the running server".into(),
            ));
        }
        self.conns
            .write(|c| {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', strftime('%s','now'))",
                )
                .and_then(|mut stmt| stmt.execute([]))
                .map(|_| ())
                .map_err(|e| StoreError::Unavailable(format!("the store cannot take writes: {e}")))
            })
            .await
    }

    async fn admin_key_hash(&self) -> StoreResult<Option<KeyHash>> {
        self.conns
            .read(|c| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [ADMIN_KEY], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map(|v| v.map(KeyHash::from_stored))
                .map_err(internal)
            })
            .await
    }

    async fn init_admin_key_hash(&self, hash: &KeyHash) -> StoreResult<bool> {
        let hash = hash.as_str().to_owned();
        self.conns
            .write(move |c| {
                let n = c
                    .execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                        params![ADMIN_KEY, hash],
                    )
                    .map_err(internal)?;
                Ok(n == 1)
            })
            .await
    }

    async fn create_account(&self, name: &str, now_ms: i64) -> StoreResult<Account> {
        let account = plan::new_account(name, now_ms);
        let row = account.clone();
        self.conns
            .write(move |c| {
                c.execute(
                    "INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3)",
                    params![row.id.as_str(), row.name, row.created_at],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await?;
        Ok(account)
    }

    async fn create_team(&self, account: &AccountId, name: &str, now_ms: i64) -> StoreResult<Team> {
        let team = plan::new_team(account, name, now_ms);
        let row = team.clone();
        self.conns
            .write(move |c| {
                if !exists(c, "SELECT 1 FROM accounts WHERE id = ?1", row.account_id.as_str())? {
                    return Err(StoreError::NotFound);
                }
                c.execute(
                    "INSERT INTO teams (id, account_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![row.id.as_str(), row.account_id.as_str(), row.name, row.created_at],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await?;
        Ok(team)
    }

    async fn create_team_key(&self, key: &TeamKey, hash: &KeyHash) -> StoreResult<()> {
        let (key, hash) = (key.clone(), hash.as_str().to_owned());
        self.conns
            .write(move |c| {
                if !exists(c, "SELECT 1 FROM teams WHERE id = ?1", key.team_id.as_str())? {
                    return Err(StoreError::NotFound);
                }
                c.execute(
                    "INSERT INTO team_keys (hash, team_id, created_at, id, name, prefix) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        hash,
                        key.team_id.as_str(),
                        key.created_at,
                        key.id.as_str(),
                        key.name,
                        key.prefix
                    ],
                )
                .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn team_for_key(&self, hash: &KeyHash) -> StoreResult<Option<KeyUse>> {
        let hash = hash.as_str().to_owned();
        self.conns
            .read(move |c| {
                c.prepare_cached("SELECT team_id, id, last_used_at FROM team_keys WHERE hash = ?1")
                    .and_then(|mut stmt| {
                        stmt.query_row([hash], |r| {
                            Ok(KeyUse {
                                team: TeamId::from_stored(r.get(0)?),
                                key: KeyId::from_stored(r.get(1)?),
                                last_used_at: r.get(2)?,
                            })
                        })
                        .optional()
                    })
                    .map_err(internal)
            })
            .await
    }

    async fn touch_team_key(&self, key: &KeyId, now_ms: i64) -> StoreResult<()> {
        let key = key.as_str().to_owned();
        self.conns
            .write(move |c| {
                c.execute(
                    "UPDATE team_keys SET last_used_at = ?2 WHERE id = ?1",
                    params![key, now_ms],
                )
                .map(|_| ())
                .map_err(internal)
            })
            .await
    }

    async fn list_team_keys(&self, team: &TeamId) -> StoreResult<Vec<TeamKey>> {
        let team = team.as_str().to_owned();
        self.conns
            .read(move |c| {
                if !exists(c, "SELECT 1 FROM teams WHERE id = ?1", &team)? {
                    return Err(StoreError::NotFound);
                }
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {TEAM_KEY_COLUMNS} FROM team_keys WHERE team_id = ?1 ORDER BY created_at, id"
                    ))
                    .map_err(internal)?;
                stmt.query_map([team], team_key_from_row)
                    .and_then(|rows| rows.collect())
                    .map_err(internal)
            })
            .await
    }

    async fn delete_team_key(&self, team: &TeamId, key: &KeyId) -> StoreResult<()> {
        let (team, key) = (team.as_str().to_owned(), key.as_str().to_owned());
        self.conns
            .write(move |c| {
                let n = c
                    .execute(
                        "DELETE FROM team_keys WHERE id = ?1 AND team_id = ?2",
                        params![key, team],
                    )
                    .map_err(internal)?;
                if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
            })
            .await
    }

    async fn get_team(&self, team: &TeamId) -> StoreResult<Team> {
        let team = team.as_str().to_owned();
        self.conns
            .read(move |c| {
                c.query_row(
                    "SELECT id, account_id, name, created_at FROM teams WHERE id = ?1",
                    [team],
                    |r| {
                        Ok(Team {
                            id: TeamId::from_stored(r.get(0)?),
                            account_id: AccountId::from_stored(r.get(1)?),
                            name: r.get(2)?,
                            created_at: r.get(3)?,
                        })
                    },
                )
                .optional()
                .map_err(internal)?
                .ok_or(StoreError::NotFound)
            })
            .await
    }
}
