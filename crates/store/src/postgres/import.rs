//! `herald migrate-store`: a stopped SQLite store copied into an empty
//! PostgreSQL one, for a team that outgrows one machine.
//!
//! Both schemas are at the newest version (each is migrated when opened),
//! so the copy is table by table and column by column: every PostgreSQL
//! table but `herald_migrations` takes the SQLite table of the same name,
//! converted by the PostgreSQL column's type (SQLite's 0/1 integers become
//! booleans, its blobs `bytea`), 1,000 rows per statement, in one
//! transaction: an import that fails leaves the target empty. The id
//! sequences then continue after the copied rows.

use std::path::Path;

use rusqlite::types::Value as SqliteValue;
use tokio_postgres::types::ToSql;

use super::*;

/// Rows per `INSERT … SELECT FROM unnest(…)`.
const IMPORT_BATCH: usize = 1_000;

/// What an import copied.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// (table, rows), in copy order.
    pub tables: Vec<(String, u64)>,
}

/// One PostgreSQL column and how a SQLite value becomes one of its values.
struct Column {
    name: String,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    BigInt,
    Int,
    Bool,
    Bytes,
}

impl Kind {
    fn of(pg_type: &str) -> Option<Self> {
        Some(match pg_type {
            "text" => Self::Text,
            "bigint" => Self::BigInt,
            "integer" => Self::Int,
            "boolean" => Self::Bool,
            "bytea" => Self::Bytes,
            _ => return None,
        })
    }

    fn array_type(self) -> &'static str {
        match self {
            Self::Text => "text[]",
            Self::BigInt => "bigint[]",
            Self::Int => "int[]",
            Self::Bool => "bool[]",
            Self::Bytes => "bytea[]",
        }
    }
}

/// A column's values for one statement.
enum Values {
    Text(Vec<Option<String>>),
    BigInt(Vec<Option<i64>>),
    Int(Vec<Option<i32>>),
    Bool(Vec<Option<bool>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Values {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Text => Self::Text(Vec::new()),
            Kind::BigInt => Self::BigInt(Vec::new()),
            Kind::Int => Self::Int(Vec::new()),
            Kind::Bool => Self::Bool(Vec::new()),
            Kind::Bytes => Self::Bytes(Vec::new()),
        }
    }

    fn push(&mut self, value: SqliteValue, table: &str, column: &str) -> StoreResult<()> {
        let wrong = || StoreError::Internal(format!("{table}.{column}: a value of an unexpected type"));
        match (self, value) {
            (Self::Text(v), SqliteValue::Null) => v.push(None),
            (Self::BigInt(v), SqliteValue::Null) => v.push(None),
            (Self::Int(v), SqliteValue::Null) => v.push(None),
            (Self::Bool(v), SqliteValue::Null) => v.push(None),
            (Self::Bytes(v), SqliteValue::Null) => v.push(None),
            (Self::Text(v), SqliteValue::Text(t)) => v.push(Some(t)),
            (Self::Text(v), SqliteValue::Blob(b)) => v.push(Some(String::from_utf8(b).map_err(|_| wrong())?)),
            (Self::BigInt(v), SqliteValue::Integer(i)) => v.push(Some(i)),
            (Self::Int(v), SqliteValue::Integer(i)) => v.push(Some(i32::try_from(i).map_err(|_| wrong())?)),
            (Self::Bool(v), SqliteValue::Integer(i)) => v.push(Some(i != 0)),
            (Self::Bytes(v), SqliteValue::Blob(b)) => v.push(Some(b)),
            (Self::Bytes(v), SqliteValue::Text(t)) => v.push(Some(t.into_bytes())),
            _ => return Err(wrong()),
        }
        Ok(())
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Text(v) => v,
            Self::BigInt(v) => v,
            Self::Int(v) => v,
            Self::Bool(v) => v,
            Self::Bytes(v) => v,
        }
    }
}

impl PgStore {
    /// Copies the SQLite store at `from` into this store, which must hold
    /// no account and no event yet. `from` must not be served meanwhile:
    /// it is read in one transaction, so the copy is consistent, but what a
    /// server writes after it began is not copied.
    pub async fn import_sqlite(&self, from: &Path) -> StoreResult<ImportReport> {
        // Opening migrates it to this binary's schema, like `serve` would.
        drop(crate::sqlite::SqliteStore::open(
            from,
            crate::sqlite::Durability::Normal,
        )?);
        let mut source = rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", from.display())))?;
        let read = source.transaction().map_err(crate::sqlite::internal)?;

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM events)
                      + (SELECT count(*) FROM meta WHERE key <> 'ready_probe')",
                &[],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if held > 0 {
            return Err(StoreError::Conflict(
                "the PostgreSQL store already holds accounts, events or an admin key; import into an empty database"
                    .into(),
            ));
        }
        // What `/readyz` writes, if a node was started on it: the copy's own goes in.
        tx.execute("DELETE FROM meta", &[]).await.map_err(pg_error)?;
        let columns = tx
            .query(
                "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.column_default::text
                 FROM information_schema.columns c JOIN information_schema.tables t
                   ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                 WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
                   AND c.table_name <> 'herald_migrations'
                 ORDER BY c.table_name, c.ordinal_position",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let mut tables: Vec<(String, Vec<Column>, Vec<String>)> = Vec::new();
        for row in &columns {
            let (table, name, pg_type, default): (String, String, String, Option<String>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let kind = Kind::of(&pg_type)
                .ok_or_else(|| StoreError::Internal(format!("{table}.{name}: cannot import a {pg_type} column")))?;
            if tables.last().is_none_or(|(t, ..)| *t != table) {
                tables.push((table.clone(), Vec::new(), Vec::new()));
            }
            if let Some(last) = tables.last_mut() {
                if default.as_deref().is_some_and(|d| d.starts_with("nextval(")) {
                    last.2.push(name.clone());
                }
                last.1.push(Column { name, kind });
            }
        }
        let mut report = ImportReport::default();
        for (table, columns, serials) in &tables {
            let copied = copy_table(&read, &tx, table, columns).await?;
            for serial in serials {
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', '{serial}'), \
                         GREATEST((SELECT max({serial}) FROM {table}), 1), (SELECT count(*) > 0 FROM {table}))"
                    ),
                    &[],
                )
                .await
                .map_err(pg_error)?;
            }
            report.tables.push((table.clone(), copied));
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(report)
    }
}

async fn copy_table(
    read: &rusqlite::Transaction<'_>,
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    columns: &[Column],
) -> StoreResult<u64> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, c.kind.array_type()))
        .collect();
    let insert = tx
        .prepare(&format!(
            "INSERT INTO {table} ({}) SELECT * FROM unnest({})",
            names.join(", "),
            arrays.join(", ")
        ))
        .await
        .map_err(pg_error)?;
    let mut select = read
        .prepare(&format!("SELECT {} FROM {table} ORDER BY rowid", names.join(", ")))
        .or_else(|_| read.prepare(&format!("SELECT {} FROM {table}", names.join(", "))))
        .map_err(|e| StoreError::Internal(format!("the SQLite store cannot give {table}: {e}")))?;
    let mut rows = select.query([]).map_err(crate::sqlite::internal)?;
    let mut batch: Vec<Values> = columns.iter().map(|c| Values::new(c.kind)).collect();
    let (mut pending, mut copied) = (0usize, 0u64);
    loop {
        let row = rows.next().map_err(crate::sqlite::internal)?;
        if let Some(row) = row {
            for (i, column) in columns.iter().enumerate() {
                let value: SqliteValue = row.get(i).map_err(crate::sqlite::internal)?;
                batch[i].push(value, table, &column.name)?;
            }
            pending += 1;
        }
        if pending == IMPORT_BATCH || (row.is_none() && pending > 0) {
            let params: Vec<&(dyn ToSql + Sync)> = batch.iter().map(Values::as_sql).collect();
            tx.execute(&insert, &params).await.map_err(pg_error)?;
            copied += pending as u64;
            pending = 0;
            batch = columns.iter().map(|c| Values::new(c.kind)).collect();
        }
        if row.is_none() {
            return Ok(copied);
        }
    }
}
