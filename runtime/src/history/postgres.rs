//! The history store on PostgreSQL: its own tables (the migrations in
//! `migrations/history_postgres`), indexed for the run queries, a batch
//! written with one statement per table (columns bound as arrays, expanded by
//! `UNNEST`). Commits are synchronous, so a write is durable when it returns
//! and [`PostgresHistory::sync`] has nothing left to do.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::population::{self, Member};
use super::store::{
    Error, EventRecord, HistoryWrite, PopulationCounts, PopulationPage, PopulationQuery, Result,
    RunPage, RunQuery, RunRecord,
};

/// The columns [`record`] reads, in its order (not the final state).
const RUN_COLUMNS: &str = "SELECT id, tenant, flow, version, status, created_at, updated_at, error_code, failed_step, parent, bundle, schedule, key";

#[derive(Debug, Clone)]
pub struct PostgresHistory {
    pool: PgPool,
}

fn ms(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

/// The runs of a batch with one record per id, as if written one after the
/// other: a run keeps what it was first written with (tenant, flow, version,
/// parent, creation time, bundle, schedule) and takes its status, time, error
/// and state from later records that have them. One statement changes a row
/// once, so repeats are merged here.
fn merged(runs: &[RunRecord]) -> Vec<RunRecord> {
    let mut out: Vec<RunRecord> = Vec::with_capacity(runs.len());
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(runs.len());
    for r in runs {
        match at.get(r.id.as_str()) {
            Some(&i) => {
                let m = &mut out[i];
                m.status = r.status.clone();
                m.updated_at = r.updated_at;
                m.error_code = r.error_code.clone().or(m.error_code.take());
                m.failed_step = r.failed_step.clone().or(m.failed_step.take());
                m.bundle = m.bundle.take().or(r.bundle.clone());
                m.schedule = m.schedule.take().or(r.schedule.clone());
                m.key = m.key.take().or(r.key.clone());
                m.state = r.state.clone().or(m.state.take());
            }
            None => {
                at.insert(r.id.as_str(), out.len());
                out.push(r.clone());
            }
        }
    }
    out
}

impl PostgresHistory {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and brings its
    /// schema to this eflow's version or checks it is there, as `mode` says.
    /// Its migrations are numbered from 1001, apart from the engine's, which
    /// may share the schema (and sqlx's table of applied migrations).
    pub async fn open(
        url: &str,
        mode: crate::schema::Mode,
    ) -> Result<(Self, crate::schema::Migrated)> {
        let options = PgConnectOptions::from_str(url)?.application_name("eflow-history");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        let migrated = crate::schema::prepare(
            &pool,
            sqlx::migrate!("./migrations/history_postgres"),
            crate::schema::HISTORY_POSTGRES,
            "history store",
            mode,
        )
        .await?;
        Ok((Self { pool }, migrated))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Its pool, for the bulk jobs kept beside the runs (`crate::bulk::store`).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn cursor(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT pos FROM h_cursor WHERE id = 0")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn runs_of(&self, ids: &[&str]) -> Result<Vec<RunRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!("{RUN_COLUMNS} FROM h_runs WHERE id = ANY($1)"))
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(record).collect())
    }

    pub async fn write(&self, batch: &HistoryWrite) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // First, so concurrent writers queue on the cursor's row: a
        // consumer resumed after another took over writes nothing it read
        // before.
        let moved = sqlx::query("UPDATE h_cursor SET pos = $1 WHERE id = 0 AND pos = $2")
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
        if !batch.retried.is_empty() {
            sqlx::query(
                "UPDATE h_runs SET error_code = NULL, failed_step = NULL WHERE id = ANY($1)",
            )
            .bind(&batch.retried)
            .execute(&mut *tx)
            .await?;
        }
        if !batch.runs.is_empty() {
            let r = merged(&batch.runs);
            sqlx::query(
                "INSERT INTO h_runs (id, tenant, flow, version, status, parent, created_at, updated_at, \
                   error_code, failed_step, bundle, schedule, state, key) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                   $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], \
                   $14::text[]) \
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, \
                   error_code = CASE WHEN EXCLUDED.status IN ('succeeded', 'failed', 'cancelled') THEN COALESCE(EXCLUDED.error_code, h_runs.error_code) END, \
                   failed_step = CASE WHEN EXCLUDED.status IN ('succeeded', 'failed', 'cancelled') THEN COALESCE(EXCLUDED.failed_step, h_runs.failed_step) END, \
                   bundle = COALESCE(h_runs.bundle, EXCLUDED.bundle), \
                   schedule = COALESCE(h_runs.schedule, EXCLUDED.schedule), \
                   key = COALESCE(h_runs.key, EXCLUDED.key), \
                   state = COALESCE(EXCLUDED.state, h_runs.state)",
            )
            .bind(r.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.flow.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.version.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.parent.as_deref()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| ms(r.created_at)).collect::<Vec<_>>())
            .bind(r.iter().map(|r| ms(r.updated_at)).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.error_code.as_deref()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.failed_step.as_deref()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.bundle.as_deref()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.schedule.as_deref()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.state.as_deref()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.key.as_deref()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        write_population(&mut tx, &batch.runs).await?;
        if !batch.events.is_empty() {
            let e = &batch.events;
            sqlx::query(
                "INSERT INTO h_events (pos, run, seq, tenant, at, kind, step, status, body) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], \
                   $6::text[], $7::text[], $8::text[], $9::bytea[]) \
                 ON CONFLICT (pos) DO NOTHING",
            )
            .bind(e.iter().map(|e| e.pos).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.run.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|e| ms(e.seq)).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.tenant.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|e| ms(e.at)).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.step.as_deref()).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.status.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.body.as_slice()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
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
        let mut b = runs_query(q, "EXPLAIN ")?;
        let rows = b.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    pub async fn purge(&self, tenant: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for sql in [
            "DELETE FROM h_events WHERE tenant = $1",
            "DELETE FROM h_runs WHERE tenant = $1",
            "DELETE FROM h_population WHERE tenant = $1",
            "DELETE FROM h_population_counts WHERE tenant = $1",
        ] {
            n += sqlx::query(sql)
                .bind(tenant)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn final_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query(&format!("{RUN_COLUMNS}, state FROM h_runs WHERE id = $1"))
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
             WHERE run = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id)
        .bind(after_seq.map_or(-1, ms))
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
            "SELECT id FROM h_runs WHERE tenant = $1 AND status IN ('succeeded', 'failed', 'cancelled') \
             AND updated_at < $2 ORDER BY updated_at LIMIT $3",
        )
        .bind(tenant)
        .bind(ms(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn forget(&self, ids: &[&str]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for sql in [
            "DELETE FROM h_events WHERE run = ANY($1)",
            "DELETE FROM h_runs WHERE id = ANY($1)",
        ] {
            n += sqlx::query(sql)
                .bind(ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Every write is durable when it returns (synchronous commits).
    pub async fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// One index seek per tenant (PostgreSQL has no skip scan: a recursive
    /// query asks for the next tenant after the last one).
    pub async fn version_runs(
        &self,
        tenant: &str,
        flow: &str,
        version: &str,
        at_most: u32,
    ) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM h_runs \
             WHERE tenant = $1 AND flow = $2 AND version = $3 LIMIT $4) AS v",
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
        Ok(sqlx::query_scalar(
            "EXPLAIN SELECT count(*) FROM (SELECT 1 FROM h_runs \
             WHERE tenant = 'a' AND flow = 'f' AND version = 'v' LIMIT 10) AS v",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn tenants(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "WITH RECURSIVE t(tenant) AS ( \
               (SELECT tenant FROM h_runs ORDER BY tenant LIMIT 1) \
               UNION ALL \
               SELECT (SELECT h.tenant FROM h_runs h WHERE h.tenant > t.tenant ORDER BY h.tenant LIMIT 1) \
               FROM t WHERE t.tenant IS NOT NULL) \
             SELECT tenant FROM t WHERE tenant IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

impl PostgresHistory {
    pub async fn population(&self, q: &PopulationQuery) -> Result<PopulationPage> {
        let limit = q.limit.clamp(1, 1000) as usize;
        let mut items: Vec<Member> = population::page_query::<Postgres>(q, "")?
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
        let rows = population::page_query::<Postgres>(q, "EXPLAIN ")?
            .build()
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// A range of the counts' primary key: the flow's rows, of one tenant
    /// or of all.
    pub async fn population_counts(
        &self,
        flow: &str,
        tenant: Option<&str>,
    ) -> Result<PopulationCounts> {
        let mut b: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT what, value, sum(keys)::BIGINT FROM h_population_counts WHERE flow = ",
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
/// them ([`population::fold`]) and writes what changed, a statement a table.
async fn write_population(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    runs: &[RunRecord],
) -> Result<()> {
    let keys = population::keys_of(runs);
    if keys.is_empty() {
        return Ok(());
    }
    let held: Vec<Member> = sqlx::query(&format!(
        "{} FROM h_population p \
         JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS k(tenant, flow, key) \
         ON p.tenant = k.tenant AND p.flow = k.flow AND p.key = k.key",
        population::MEMBER_COLUMNS
    ))
    .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(member)
    .collect();
    let (m, d) = population::fold(held, runs);
    if !m.is_empty() {
        sqlx::query(
            "INSERT INTO h_population (tenant, flow, key, run, status, version, created_at, updated_at, \
               error_code, failed_in_a_row, failed_before) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
               $7::bigint[], $8::bigint[], $9::text[], $10::int[], $11::int[]) \
             ON CONFLICT (tenant, flow, key) DO UPDATE SET run = EXCLUDED.run, status = EXCLUDED.status, \
               version = EXCLUDED.version, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
               error_code = EXCLUDED.error_code, failed_in_a_row = EXCLUDED.failed_in_a_row, \
               failed_before = EXCLUDED.failed_before",
        )
        .bind(m.iter().map(|m| m.tenant.as_str()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.flow.as_str()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.key.as_str()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.run.as_str()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.status.as_str()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.version.as_str()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| ms(m.created_at)).collect::<Vec<_>>())
        .bind(m.iter().map(|m| ms(m.updated_at)).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.error_code.as_deref()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| streak(m.failed_in_a_row)).collect::<Vec<_>>())
        .bind(m.iter().map(|m| streak(m.failed_before)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    if !d.is_empty() {
        sqlx::query(
            "INSERT INTO h_population_counts (flow, tenant, what, value, keys) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
             ON CONFLICT (flow, tenant, what, value) DO UPDATE SET keys = h_population_counts.keys + EXCLUDED.keys",
        )
        .bind(d.iter().map(|d| d.flow.as_str()).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.tenant.as_str()).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.what).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.value.as_str()).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.keys).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn streak(n: u32) -> i32 {
    n.min(i32::MAX as u32) as i32
}

fn member(r: &PgRow) -> Member {
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
        failed_in_a_row: r.get::<i32, _>(9).max(0) as u32,
        failed_before: r.get::<i32, _>(10).max(0) as u32,
    }
}

fn record(r: &PgRow) -> RunRecord {
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

/// The SQL of a run query, newest first, one row more than the page. The
/// cursor is a row comparison, which an index in (…, created_at DESC, id
/// DESC) order answers from where the last page ended.
fn runs_query<'a>(q: &'a RunQuery, prefix: &str) -> Result<QueryBuilder<'a, Postgres>> {
    let limit = q.limit.clamp(1, 1000);
    let mut b: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("{prefix}{RUN_COLUMNS} FROM h_runs WHERE true"));
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
        b.push(" AND created_at >= ").push_bind(ms(t));
    }
    if let Some(t) = q.until {
        b.push(" AND created_at < ").push_bind(ms(t));
    }
    if let Some(c) = &q.cursor {
        let (at, id) = decode_cursor(c).ok_or(Error::BadCursor)?;
        b.push(" AND (created_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            tenant: "acme".into(),
            status: status.into(),
            ..RunRecord::default()
        }
    }

    /// Repeats of a run in one batch end as the sequence of upserts would.
    #[test]
    fn repeats_of_a_run_merge_like_upserts_in_order() {
        let first = RunRecord {
            bundle: Some("b1".into()),
            error_code: Some("E1".into()),
            created_at: 5,
            ..rec("r1", "running")
        };
        let second = RunRecord {
            bundle: Some("b2".into()),
            schedule: Some("s".into()),
            state: Some(b"{}".to_vec()),
            updated_at: 9,
            created_at: 7,
            ..rec("r1", "succeeded")
        };
        let got = merged(&[first, rec("r2", "running"), second]);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            RunRecord {
                id: "r1".into(),
                tenant: "acme".into(),
                status: "succeeded".into(),
                created_at: 5,
                updated_at: 9,
                error_code: Some("E1".into()),
                bundle: Some("b1".into()),
                schedule: Some("s".into()),
                state: Some(b"{}".to_vec()),
                ..RunRecord::default()
            }
        );
        assert_eq!(got[1].id, "r2");
    }
}
