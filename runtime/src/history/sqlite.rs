//! The history store on SQLite: its own file (`history.db`) in WAL mode,
//! indexed for the run queries, written with a few multi-row statements a batch.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::population::{self, CountDelta, Member};
use super::store::{
    Error, EventRecord, HistoryWrite, PopulationCounts, PopulationPage, PopulationQuery, Result,
    RunPage, RunQuery, RunRecord,
};

#[derive(Debug, Clone)]
pub struct SqliteHistory {
    pool: SqlitePool,
}

impl SqliteHistory {
    /// Opens the file, made and upgraded as needed: it is this process's.
    pub async fn open(path: &str) -> Result<(Self, crate::schema::Migrated)> {
        crate::store::create_private(path).map_err(|e| Error::Db(sqlx::Error::Io(e)))?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-8192");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let migrated = crate::schema::prepare(
            &pool,
            sqlx::migrate!("./migrations/history"),
            crate::schema::ENGINE,
            "history store",
            crate::schema::Mode::Migrate,
        )
        .await?;
        Ok((Self { pool }, migrated))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Its pool, for the bulk jobs kept beside the runs (`crate::bulk::store`).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn cursor(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT pos FROM h_cursor WHERE id = 0")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn runs_of(&self, ids: &[&str]) -> Result<Vec<RunRecord>> {
        let mut out = Vec::with_capacity(ids.len());
        for piece in ids.chunks(256) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("{RUN_COLUMNS} FROM h_runs WHERE id IN ("));
            let mut sep = q.separated(", ");
            for id in piece {
                sep.push_bind(*id);
            }
            q.push(")");
            out.extend(q.build().fetch_all(&self.pool).await?.iter().map(record));
        }
        Ok(out)
    }

    pub async fn write(&self, batch: &HistoryWrite) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query("UPDATE h_cursor SET pos = ?1 WHERE id = 0 AND pos = ?2")
            .bind(batch.cursor)
            .bind(batch.from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 0 {
            let stored = sqlx::query_scalar("SELECT pos FROM h_cursor WHERE id = 0")
                .fetch_one(&mut *tx)
                .await?;
            return Err(Error::Overtaken {
                stored,
                from: batch.from,
            });
        }
        for piece in batch.retried.chunks(256) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "UPDATE h_runs SET error_code = NULL, failed_step = NULL WHERE id IN (",
            );
            let mut sep = q.separated(", ");
            for id in piece {
                sep.push_bind(id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        for piece in batch.runs.chunks(256) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO h_runs (id, tenant, flow, version, status, parent, created_at, updated_at, error_code, failed_step, bundle, schedule, state, key) ",
            );
            q.push_values(piece, |mut b, r| {
                b.push_bind(&r.id)
                    .push_bind(&r.tenant)
                    .push_bind(&r.flow)
                    .push_bind(&r.version)
                    .push_bind(&r.status)
                    .push_bind(&r.parent)
                    .push_bind(r.created_at as i64)
                    .push_bind(r.updated_at as i64)
                    .push_bind(&r.error_code)
                    .push_bind(&r.failed_step)
                    .push_bind(&r.bundle)
                    .push_bind(&r.schedule)
                    .push_bind(&r.state)
                    .push_bind(&r.key);
            });
            q.push(
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, \
                 error_code = CASE WHEN excluded.status IN ('succeeded', 'failed', 'cancelled') THEN COALESCE(excluded.error_code, h_runs.error_code) END, \
                 failed_step = CASE WHEN excluded.status IN ('succeeded', 'failed', 'cancelled') THEN COALESCE(excluded.failed_step, h_runs.failed_step) END, \
                 bundle = COALESCE(h_runs.bundle, excluded.bundle), \
                 schedule = COALESCE(h_runs.schedule, excluded.schedule), \
                 key = COALESCE(h_runs.key, excluded.key), \
                 state = COALESCE(excluded.state, h_runs.state)",
            );
            q.build().execute(&mut *tx).await?;
        }
        write_population(&mut tx, &batch.runs).await?;
        for piece in batch.events.chunks(256) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO h_events (pos, run, seq, tenant, at, kind, step, status, body) ",
            );
            q.push_values(piece, |mut b, e| {
                b.push_bind(e.pos)
                    .push_bind(&e.run)
                    .push_bind(e.seq as i64)
                    .push_bind(&e.tenant)
                    .push_bind(e.at as i64)
                    .push_bind(&e.kind)
                    .push_bind(&e.step)
                    .push_bind(&e.status)
                    .push_bind(&e.body);
            });
            q.push(" ON CONFLICT (pos) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn runs(&self, q: &RunQuery) -> Result<RunPage> {
        let limit = q.limit.clamp(1, 1000) as usize;
        let mut b = runs_query(q, "")?;
        let mut items: Vec<RunRecord> = b
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record)
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|last| encode_cursor(last.created_at as i64, &last.id))
        } else {
            None
        };
        Ok(RunPage { items, next })
    }

    pub async fn explain_runs(&self, q: &RunQuery) -> Result<Vec<String>> {
        let mut b = runs_query(q, "EXPLAIN QUERY PLAN ")?;
        let rows = b.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(3)).collect())
    }

    pub async fn purge(&self, tenant: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let a = sqlx::query("DELETE FROM h_events WHERE tenant = ?")
            .bind(tenant)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let mut b = 0;
        for sql in [
            "DELETE FROM h_runs WHERE tenant = ?",
            "DELETE FROM h_population WHERE tenant = ?",
            "DELETE FROM h_population_counts WHERE tenant = ?",
        ] {
            b += sqlx::query(sql)
                .bind(tenant)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(a + b)
    }
}

impl SqliteHistory {
    pub async fn final_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query(&format!("{RUN_COLUMNS}, state FROM h_runs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| RunRecord {
            state: r.get(13),
            ..record(&r)
        }))
    }

    pub async fn events_of(
        &self,
        id: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT pos, run, seq, tenant, at, kind, step, status, body FROM h_events \
             WHERE run = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(id)
        .bind(after_seq.map_or(-1, |s| s as i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| EventRecord {
                pos: r.get(0),
                run: r.get(1),
                seq: r.get::<i64, _>(2) as u64,
                tenant: r.get(3),
                at: r.get::<i64, _>(4) as u64,
                kind: r.get(5),
                step: r.get(6),
                status: r.get(7),
                body: r.get(8),
            })
            .collect())
    }

    /// Read through `h_runs_finished`, oldest first.
    pub async fn expired(&self, tenant: &str, before: u64, limit: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM h_runs WHERE tenant = ? AND status IN ('succeeded', 'failed', 'cancelled') \
             AND updated_at < ? ORDER BY updated_at LIMIT ?",
        )
        .bind(tenant)
        .bind(before.min(i64::MAX as u64) as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn forget(&self, ids: &[&str]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for table in ["h_events", "h_runs"] {
            let column = if table == "h_runs" { "id" } else { "run" };
            n += crate::store::sqlite::delete_where_in(&mut tx, table, column, ids).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn sync(&self) -> Result<()> {
        // PASSIVE: waits for no reader or writer. With `synchronous=NORMAL`
        // SQLite syncs the write-ahead log before it checkpoints.
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn version_runs(
        &self,
        tenant: &str,
        flow: &str,
        version: &str,
        at_most: u32,
    ) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM h_runs \
             WHERE tenant = ? AND flow = ? AND version = ? LIMIT ?)",
        )
        .bind(tenant)
        .bind(flow)
        .bind(version)
        .bind(i64::from(at_most))
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    pub async fn explain_version_runs(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM (SELECT 1 FROM h_runs \
             WHERE tenant = 'a' AND flow = 'f' AND version = 'v' LIMIT 10)",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(3)).collect())
    }

    pub async fn tenants(&self) -> Result<Vec<String>> {
        // A skip scan of `h_runs_tenant`: one seek per tenant.
        Ok(
            sqlx::query_scalar("SELECT DISTINCT tenant FROM h_runs ORDER BY tenant")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

impl SqliteHistory {
    pub async fn population(&self, q: &PopulationQuery) -> Result<PopulationPage> {
        let limit = q.limit.clamp(1, 1000) as usize;
        let mut items: Vec<Member> = population::page_query::<Sqlite>(q, "")?
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(member)
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(population::encode_cursor)
        } else {
            None
        };
        Ok(PopulationPage { items, next })
    }

    pub async fn explain_population(&self, q: &PopulationQuery) -> Result<Vec<String>> {
        let rows = population::page_query::<Sqlite>(q, "EXPLAIN QUERY PLAN ")?
            .build()
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(3)).collect())
    }

    /// A range of the counts' primary key: the flow's rows, of one tenant
    /// or of all.
    pub async fn population_counts(
        &self,
        flow: &str,
        tenant: Option<&str>,
    ) -> Result<PopulationCounts> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT what, value, sum(keys) FROM h_population_counts WHERE flow = ",
        );
        b.push_bind(flow);
        if let Some(t) = tenant {
            b.push(" AND tenant = ").push_bind(t);
        }
        b.push(" GROUP BY what, value ORDER BY what, value");
        let rows = b.build().fetch_all(&self.pool).await?;
        Ok(PopulationCounts::from_rows(
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))),
        ))
    }
}

/// Moves the population's rows and counts for a batch's runs, in its
/// transaction: reads the rows of the batch's keys, folds the runs onto
/// them ([`population::fold`]) and writes what changed.
async fn write_population(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    runs: &[RunRecord],
) -> Result<()> {
    let keys = population::keys_of(runs);
    if keys.is_empty() {
        return Ok(());
    }
    let mut held = Vec::new();
    for piece in keys.chunks(256) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "{} FROM h_population p WHERE (p.tenant, p.flow, p.key) IN (VALUES ",
            population::MEMBER_COLUMNS
        ));
        let mut sep = q.separated(", ");
        for (t, f, k) in piece {
            sep.push("(")
                .push_bind_unseparated(t)
                .push_unseparated(", ")
                .push_bind_unseparated(f)
                .push_unseparated(", ")
                .push_bind_unseparated(k)
                .push_unseparated(")");
        }
        q.push(")");
        held.extend(q.build().fetch_all(&mut **tx).await?.iter().map(member));
    }
    let (members, deltas) = population::fold(held, runs);
    for piece in members.chunks(256) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO h_population (tenant, flow, key, run, status, version, created_at, updated_at, error_code, failed_in_a_row, failed_before) ",
        );
        q.push_values(piece, |mut b, m| {
            b.push_bind(&m.tenant)
                .push_bind(&m.flow)
                .push_bind(&m.key)
                .push_bind(&m.run)
                .push_bind(&m.status)
                .push_bind(&m.version)
                .push_bind(m.created_at as i64)
                .push_bind(m.updated_at as i64)
                .push_bind(&m.error_code)
                .push_bind(i64::from(m.failed_in_a_row))
                .push_bind(i64::from(m.failed_before));
        });
        q.push(
            " ON CONFLICT (tenant, flow, key) DO UPDATE SET run = excluded.run, status = excluded.status, \
             version = excluded.version, created_at = excluded.created_at, updated_at = excluded.updated_at, \
             error_code = excluded.error_code, failed_in_a_row = excluded.failed_in_a_row, \
             failed_before = excluded.failed_before",
        );
        q.build().execute(&mut **tx).await?;
    }
    for piece in deltas.chunks(256) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO h_population_counts (flow, tenant, what, value, keys) ");
        q.push_values(piece, |mut b, d: &CountDelta| {
            b.push_bind(&d.flow)
                .push_bind(&d.tenant)
                .push_bind(d.what)
                .push_bind(&d.value)
                .push_bind(d.keys);
        });
        q.push(
            " ON CONFLICT (flow, tenant, what, value) DO UPDATE SET keys = h_population_counts.keys + excluded.keys",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn member(r: &sqlx::sqlite::SqliteRow) -> Member {
    Member {
        tenant: r.get(0),
        flow: r.get(1),
        key: r.get(2),
        run: r.get(3),
        status: r.get(4),
        version: r.get(5),
        created_at: r.get::<i64, _>(6) as u64,
        updated_at: r.get::<i64, _>(7) as u64,
        error_code: r.get(8),
        failed_in_a_row: r.get::<i64, _>(9) as u32,
        failed_before: r.get::<i64, _>(10) as u32,
    }
}

/// The columns [`record`] reads, in its order (not the final state).
const RUN_COLUMNS: &str = "SELECT id, tenant, flow, version, status, created_at, updated_at, error_code, failed_step, parent, bundle, schedule, key";

fn record(r: &sqlx::sqlite::SqliteRow) -> RunRecord {
    RunRecord {
        id: r.get(0),
        tenant: r.get(1),
        flow: r.get(2),
        version: r.get(3),
        status: r.get(4),
        created_at: r.get::<i64, _>(5) as u64,
        updated_at: r.get::<i64, _>(6) as u64,
        error_code: r.get(7),
        failed_step: r.get(8),
        parent: r.get(9),
        bundle: r.get(10),
        schedule: r.get(11),
        key: r.get(12),
        state: None,
    }
}

/// The SQL of a run query, newest first, one row more than the page.
fn runs_query<'a>(q: &'a RunQuery, prefix: &str) -> Result<QueryBuilder<'a, Sqlite>> {
    let limit = q.limit.clamp(1, 1000);
    let mut b: QueryBuilder<Sqlite> =
        QueryBuilder::new(format!("{prefix}{RUN_COLUMNS} FROM h_runs WHERE 1 = 1"));
    if let Some(t) = &q.tenant {
        b.push(" AND tenant = ").push_bind(t);
    }
    if let Some(f) = &q.flow {
        b.push(" AND flow = ").push_bind(f);
    }
    if let Some(v) = &q.version {
        b.push(" AND version = ").push_bind(v);
    }
    if let Some(s) = &q.status {
        b.push(" AND status = ").push_bind(s);
    }
    if let Some(s) = &q.step {
        b.push(" AND failed_step = ").push_bind(s);
    }
    if let Some(e) = &q.error {
        b.push(" AND error_code = ").push_bind(e);
    }
    if let Some(k) = &q.key {
        b.push(" AND key = ").push_bind(k);
    }
    if let Some(t) = q.since {
        b.push(" AND created_at >= ").push_bind(t as i64);
    }
    if let Some(t) = q.until {
        b.push(" AND created_at < ").push_bind(t as i64);
    }
    if let Some(c) = &q.cursor {
        let (at, id) = decode_cursor(c).ok_or(Error::BadCursor)?;
        b.push(" AND (created_at < ")
            .push_bind(at)
            .push(" OR (created_at = ")
            .push_bind(at)
            .push(" AND id < ")
            .push_bind(id)
            .push("))");
    }
    b.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    Ok(b)
}

fn encode_cursor(at: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{at}|{id}"))
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(c).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, id) = text.split_once('|')?;
    Some((at.parse().ok()?, id.to_string()))
}
