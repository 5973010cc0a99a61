//! The embedded backend: one SQLite file in WAL mode.
//!
//! Writes go through one connection (SQLite has one writer at a time; queueing in
//! the pool is cheaper than retrying on `SQLITE_BUSY`), reads through a small pool
//! of their own. A batch is written with multi-row statements: one `INSERT` per
//! few hundred rows instead of one per row.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{
    ApprovalRow, Commit, Deployment, DueTimer, Durability, Error, EventRow, FlowRow, LeaseRow,
    MemberRow, NewEntry, PurgeBegun, PurgeHold, RegistryRow, RegistryUse, RegistryUseRow, Result,
    RunMeta, ScheduleQuery, ScheduleRow, ScheduleUpdate, TenantRow, TokenRow, stored_json,
};

/// Rows per multi-row statement, largest first: well under SQLite's limit of
/// 32,766 bound values. A batch is cut into pieces of these sizes only, so each
/// table has a handful of statement texts and every one stays prepared in the
/// connection's statement cache instead of being parsed again per batch.
/// Read at every start: answered from the covering index `runs_tenant_active`
/// alone (a test checks the plan), not from a million rows.
const ACTIVE_RUNS: &str = "SELECT tenant, parent, count(*) FROM runs WHERE status IN ('created', 'running') GROUP BY tenant, parent";

/// The columns [`schedule_row`] reads, in its order.
/// Outbox rows, counted up to `?1`: a scrape of `/metrics` reads a bounded
/// part of a long outbox, not all of it.
const OUTBOX_DEPTH: &str = "SELECT count(*) FROM (SELECT 1 FROM outbox LIMIT ?1)";

const SCHEDULE_COLUMNS: &str = "id, tenant, flow, bundle, position, spec, paused, last_fire, next_due, buffered, partition, last_start, declared, key, version, created_at";

/// A loader's claim of its partition's due schedules, oldest due first: a
/// range scan of the index `schedules_due` (a test reads the plan).
const CLAIM_SCHEDULES: &str = "UPDATE schedules SET claimed_until = ?1 WHERE id IN ( \
    SELECT id FROM schedules WHERE partition = ?2 AND paused = 0 AND next_due IS NOT NULL \
    AND next_due <= ?3 AND claimed_until <= ?3 ORDER BY next_due LIMIT ?4)";

/// At start: every claim on schedules released, found through the index
/// `schedules_claimed` (a test reads the plan).
const RELEASE_SCHEDULE_CLAIMS: &str =
    "UPDATE schedules SET claimed_until = 0 WHERE claimed_until > 0";

/// What a loader did with a schedule; releases its claim.
const UPDATE_SCHEDULE: &str = "UPDATE schedules SET last_fire = ?1, \
    last_start = CASE WHEN ?2 IS NULL THEN last_start ELSE max(coalesce(last_start, ?2), ?2) END, \
    next_due = ?3, buffered = ?4, claimed_until = 0 WHERE id = ?5";

const PIECES: [usize; 5] = [256, 64, 16, 4, 1];

/// `rows` cut into pieces of the sizes in [`PIECES`].
/// Deletes the rows of `table` whose `column` is one of `ids`, a piece at a
/// time; answers how many. For the stores' per-run clean-ups (the engine's
/// sweep, the history's retention), whose table names are constants.
pub(crate) async fn delete_where_in(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
    column: &str,
    ids: &[&str],
) -> sqlx::Result<u64> {
    let mut n = 0;
    for piece in pieces(ids) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
        let mut sep = q.separated(", ");
        for id in piece {
            sep.push_bind(*id);
        }
        q.push(")");
        n += q.build().execute(&mut *conn).await?.rows_affected();
    }
    Ok(n)
}

fn pieces<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let n = PIECES.iter().copied().find(|&n| n <= rows.len())?;
        let (head, tail) = rows.split_at(n);
        rows = tail;
        Some(head)
    })
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
}

fn corrupt(table: &'static str, message: impl Into<String>) -> Error {
    Error::Corrupt {
        table,
        message: message.into(),
    }
}

fn json(table: &'static str, bytes: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(table, e.to_string()))
}

/// Creates the database file at `path`, and its folder, readable by their owner
/// only (0600, 0700), unless they exist: the store holds the callback-signing key
/// and token hashes, and SQLite gives its `-wal` and `-shm` files the database
/// file's mode.
pub(crate) fn create_private(path: &str) -> std::io::Result<()> {
    let path = Path::new(path);
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl SqliteStore {
    pub async fn open(
        path: &str,
        durability: Durability,
    ) -> Result<(Self, crate::schema::Migrated)> {
        create_private(path).map_err(|e| Error::Db(sqlx::Error::Io(e)))?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(30))
            .pragma("temp_store", "memory");
        // Page caches are bounded (32 MiB for the writer, 8 MiB per reader), so
        // memory stays flat however large the file grows.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone().pragma("cache_size", "-32768"))
            .await?;
        // The file is this process's: it upgrades it itself.
        let migrated = crate::schema::prepare(
            &write,
            sqlx::migrate!("./migrations/sqlite"),
            crate::schema::ENGINE,
            "engine store",
            crate::schema::Mode::Migrate,
        )
        .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true).pragma("cache_size", "-8192"))
            .await?;
        Ok((Self { write, read }, migrated))
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    // ---- the engine's commit -------------------------------------------------

    /// Writes a batch in one transaction.
    pub async fn commit(&self, c: &Commit) -> Result<()> {
        let mut tx = self.write.begin().await?;
        if let Some((shard, token)) = c.lease {
            let done = sqlx::query(
                "UPDATE leases SET expires_at = expires_at WHERE shard = ? AND token = ?",
            )
            .bind(shard)
            .bind(token)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(Error::LeaseLost { shard });
            }
        }
        for chunk in pieces(&c.runs) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO runs (id, tenant, bundle, schedule, parent, key, status, created_at, updated_at, state) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.meta.id)
                    .push_bind(&r.meta.tenant)
                    .push_bind(&r.meta.bundle)
                    .push_bind(&r.meta.schedule)
                    .push_bind(&r.meta.parent)
                    .push_bind(&r.meta.key)
                    .push_bind(r.status)
                    .push_bind(r.meta.created_at as i64)
                    .push_bind(r.updated_at as i64)
                    .push_bind(&r.state);
            });
            q.push(
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                 updated_at = excluded.updated_at, state = excluded.state",
            );
            q.build().execute(&mut *tx).await?;
        }
        for chunk in pieces(&c.events) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO events (run, seq, id, at, status, body) ");
            q.push_values(chunk, |mut b, e| {
                b.push_bind(&e.run)
                    .push_bind(e.seq as i64)
                    .push_bind(&e.id)
                    .push_bind(e.at as i64)
                    .push_bind(e.status)
                    .push_bind(&e.body);
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in pieces(&c.timers_deleted) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("DELETE FROM timers WHERE (run, timer) IN (VALUES ");
            let mut sep = q.separated(", ");
            for (run, timer) in chunk {
                sep.push("(")
                    .push_bind_unseparated(run)
                    .push_unseparated(", ")
                    .push_bind_unseparated(timer)
                    .push_unseparated(")");
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        for chunk in pieces(&c.timers) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO timers (run, timer, partition, due_at, claimed_until, event) ",
            );
            q.push_values(chunk, |mut b, t| {
                b.push_bind(&t.run)
                    .push_bind(&t.timer)
                    .push_bind(t.partition)
                    .push_bind(t.due_at as i64)
                    .push_bind(t.claimed_until as i64)
                    .push_bind(&t.event);
            });
            q.push(
                " ON CONFLICT (run, timer) DO UPDATE SET partition = excluded.partition, \
                 due_at = excluded.due_at, claimed_until = excluded.claimed_until, event = excluded.event",
            );
            q.build().execute(&mut *tx).await?;
        }
        for chunk in pieces(&c.outbox_deleted) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("DELETE FROM outbox WHERE pos IN (");
            let mut sep = q.separated(", ");
            for pos in chunk {
                sep.push_bind(*pos);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        for chunk in pieces(&c.outbox) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO outbox (pos, run, effect) ");
            q.push_values(chunk, |mut b, (pos, run, effect)| {
                b.push_bind(*pos).push_bind(run).push_bind(effect);
            });
            q.build().execute(&mut *tx).await?;
        }
        for a in &c.approvals {
            sqlx::query(
                "INSERT INTO approvals (run, step, attempt, tenant, contract, request, requested_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&a.run)
            .bind(&a.step)
            .bind(a.attempt)
            .bind(&a.tenant)
            .bind(&a.contract)
            .bind(&a.request)
            .bind(a.requested_at as i64)
            .bind(a.expires_at.map(|t| t as i64))
            .execute(&mut *tx)
            .await?;
        }
        for a in &c.approvals_closed {
            sqlx::query(
                "UPDATE approvals SET decided_at = ?, decision = ? \
                 WHERE run = ? AND step = ? AND attempt = ? AND decided_at IS NULL",
            )
            .bind(a.at as i64)
            .bind(&a.decision)
            .bind(&a.run)
            .bind(&a.step)
            .bind(a.attempt)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in pieces(&c.results) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO fanout_results (run, node, idx, output) ");
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.run)
                    .push_bind(&r.node)
                    .push_bind(r.index)
                    .push_bind(&r.output);
            });
            q.push(" ON CONFLICT (run, node, idx) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        for v in &c.values {
            if let Some(body) = &v.body {
                sqlx::query(
                    "INSERT INTO stored_values (tenant, hash, bytes, body, created_at) \
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, hash) DO NOTHING",
                )
                .bind(&v.tenant)
                .bind(&v.hash)
                .bind(body.len() as i64)
                .bind(body)
                .bind(v.at as i64)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO run_values (run, tenant, hash) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&v.run)
            .bind(&v.tenant)
            .bind(&v.hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn values(
        &self,
        tenant: &str,
        hashes: &[String],
    ) -> Result<Vec<(String, serde_json::Value)>> {
        let mut out = Vec::with_capacity(hashes.len());
        for hash in hashes {
            let Some(body) = self.value_body(tenant, hash).await? else {
                continue;
            };
            let v = serde_json::from_slice(&body).map_err(|e| Error::Corrupt {
                table: "stored_values",
                message: format!("tenant {tenant}, value {hash}: {e}"),
            })?;
            out.push((hash.clone(), v));
        }
        Ok(out)
    }

    pub async fn value_body(&self, tenant: &str, hash: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT body FROM stored_values WHERE tenant = ? AND hash = ?")
                .bind(tenant)
                .bind(hash)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    pub async fn drop_unreferenced_values(&self, before: u64, limit: u32) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM stored_values WHERE (tenant, hash) IN ( \
               SELECT v.tenant, v.hash FROM stored_values v \
               WHERE v.created_at < ?1 AND NOT EXISTS ( \
                 SELECT 1 FROM run_values rv WHERE rv.tenant = v.tenant AND rv.hash = v.hash) \
               LIMIT ?2)",
        )
        .bind(before as i64)
        .bind(i64::from(limit))
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn value_size(&self, tenant: &str, hash: &str) -> Result<Option<u64>> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT bytes FROM stored_values WHERE tenant = ? AND hash = ?")
                .bind(tenant)
                .bind(hash)
                .fetch_optional(&self.read)
                .await?;
        Ok(n.map(|n| n.max(0) as u64))
    }

    pub async fn run_refers_to(&self, run: &str, hash: &str) -> Result<bool> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM run_values WHERE run = ? AND hash = ?")
                .bind(run)
                .bind(hash)
                .fetch_optional(&self.read)
                .await?;
        Ok(n.is_some())
    }

    pub async fn put_value(
        &self,
        tenant: &str,
        run: Option<&str>,
        hash: &str,
        body: &[u8],
        now: u64,
    ) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let r = sqlx::query(
            "INSERT INTO stored_values (tenant, hash, bytes, body, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?1) \
             ON CONFLICT (tenant, hash) DO NOTHING",
        )
        .bind(tenant)
        .bind(hash)
        .bind(body.len() as i64)
        .bind(body)
        .bind(now as i64)
        .execute(&mut *tx)
        .await?;
        if let Some(run) = run {
            sqlx::query(
                "INSERT INTO run_values (run, tenant, hash) SELECT ?1, ?2, ?3 \
                 WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1) ON CONFLICT DO NOTHING",
            )
            .bind(run)
            .bind(tenant)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Up to `limit` stored outputs of fan-out `node` of `run`, with their
    /// index, in input order, after index `after`.
    pub async fn fanout_results(
        &self,
        run: &str,
        node: &str,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<(u32, serde_json::Value)>> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT idx, output FROM fanout_results WHERE run = ? AND node = ? AND idx > ? \
             ORDER BY idx LIMIT ?",
        )
        .bind(run)
        .bind(node)
        .bind(after.map_or(-1, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(i, o)| {
                let output = serde_json::from_slice(&o).map_err(|e| Error::Corrupt {
                    table: "fanout_results",
                    message: format!("run {run}, fan-out {node}, child {i}: {e}"),
                })?;
                Ok((u32::try_from(i).unwrap_or(u32::MAX), output))
            })
            .collect()
    }

    // ---- runs ----------------------------------------------------------------

    /// A run's routing data, status and encoded state.
    pub async fn load_run(&self, id: &str) -> Result<Option<(RunMeta, String, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT id, tenant, bundle, schedule, parent, created_at, status, state, key FROM runs WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(loaded_run))
    }

    /// [`Self::load_run`] for many runs at once, in no particular order;
    /// runs that do not exist are left out.
    pub async fn load_runs(&self, ids: &[&str]) -> Result<Vec<(RunMeta, String, Vec<u8>)>> {
        let mut out = Vec::with_capacity(ids.len());
        for piece in pieces(ids) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT id, tenant, bundle, schedule, parent, created_at, status, state, key FROM runs WHERE id IN (",
            );
            let mut sep = q.separated(", ");
            for id in piece {
                sep.push_bind(*id);
            }
            q.push(")");
            out.extend(
                q.build()
                    .fetch_all(&self.read)
                    .await?
                    .into_iter()
                    .map(loaded_run),
            );
        }
        Ok(out)
    }

    /// Runs not finished yet, per tenant and parent (`None`: top-level
    /// runs): the quota's starting point.
    pub async fn active_runs(&self) -> Result<Vec<(String, Option<String>, i64)>> {
        let rows = sqlx::query(ACTIVE_RUNS).fetch_all(&self.read).await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub async fn active_runs_of_schedule(&self, schedule: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM runs WHERE schedule = ? AND status IN ('created', 'running')",
        )
        .bind(schedule)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    pub async fn active_runs_of_bundle(&self, tenant: &str, bundle: &str) -> Result<i64> {
        // The tenant's partial index of unfinished runs, then the bundle.
        let row = sqlx::query(
            "SELECT count(*) FROM runs WHERE tenant = ? AND bundle = ? AND status IN ('created', 'running')",
        )
        .bind(tenant)
        .bind(bundle)
        .fetch_one(&self.read)
        .await?;
        Ok(row.get(0))
    }

    pub async fn events_of(
        &self,
        run: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT pos, run, seq, id, at, status, body FROM events WHERE run = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(run)
        .bind(after_seq.map_or(-1, |s| s as i64))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(event_row).collect()
    }

    pub async fn event(&self, run: &str, id: &str) -> Result<Option<EventRow>> {
        let row = sqlx::query(
            "SELECT pos, run, seq, id, at, status, body FROM events WHERE run = ? AND id = ? LIMIT 1",
        )
        .bind(run)
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.map(event_row).transpose()
    }

    /// Events in commit order after `pos`: the history consumer's feed.
    pub async fn events_after(&self, pos: i64, limit: u32) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT pos, run, seq, id, at, status, body FROM events WHERE pos > ? ORDER BY pos LIMIT ?",
        )
        .bind(pos)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(event_row).collect()
    }

    // ---- timers --------------------------------------------------------------

    /// Claims up to `limit` timers of `partition` due by `until` and not claimed,
    /// until `claim_until`.
    pub async fn claim_timers(
        &self,
        partition: u32,
        now: u64,
        until: u64,
        claim_until: u64,
        limit: u32,
    ) -> Result<Vec<DueTimer>> {
        let rows = sqlx::query(
            "UPDATE timers SET claimed_until = ?1 WHERE (run, timer) IN ( \
               SELECT run, timer FROM timers WHERE partition = ?2 AND due_at <= ?3 AND claimed_until <= ?4 \
               ORDER BY due_at LIMIT ?5) \
             RETURNING run, timer, due_at, event",
        )
        .bind(claim_until as i64)
        .bind(partition)
        .bind(until as i64)
        .bind(now as i64)
        .bind(limit)
        .fetch_all(&self.write)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| DueTimer {
                run: r.get(0),
                timer: r.get(1),
                due_at: r.get::<i64, _>(2) as u64,
                event: r.get(3),
            })
            .collect())
    }

    /// Releases every claim on timers and schedules. Only for the embedded
    /// backend at start: one process owns this file, so every claim in it was
    /// made by a process that is gone.
    pub async fn release_claims(&self) -> Result<()> {
        sqlx::query("UPDATE timers SET claimed_until = 0 WHERE claimed_until > 0")
            .execute(&self.write)
            .await?;
        sqlx::query(RELEASE_SCHEDULE_CLAIMS)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    // ---- outbox --------------------------------------------------------------

    pub async fn outbox(&self) -> Result<Vec<(i64, String, Vec<u8>)>> {
        let rows = sqlx::query("SELECT pos, run, effect FROM outbox ORDER BY pos")
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub async fn max_event_pos(&self) -> Result<i64> {
        let max: Option<i64> = sqlx::query_scalar("SELECT max(pos) FROM events")
            .fetch_one(&self.read)
            .await?;
        Ok(max.unwrap_or(0))
    }

    pub async fn outbox_depth(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(OUTBOX_DEPTH)
            .bind(super::OUTBOX_DEPTH_COUNTED as i64)
            .fetch_one(&self.read)
            .await?;
        Ok(n as u64)
    }

    pub async fn outbox_block(&self) -> Result<i64> {
        let max: Option<i64> = sqlx::query_scalar("SELECT max(pos) FROM outbox")
            .fetch_one(&self.read)
            .await?;
        Ok(max.unwrap_or(0) + 1)
    }

    // ---- leases --------------------------------------------------------------

    /// Takes shard `shard` for `owner`, returning the new fencing token: any
    /// commit still carrying an older token fails.
    pub async fn acquire_lease(&self, shard: u32, owner: &str, expires_at: u64) -> Result<i64> {
        let token: i64 = sqlx::query_scalar(
            "INSERT INTO leases (shard, owner, token, expires_at) VALUES (?1, ?2, 1, ?3) \
             ON CONFLICT (shard) DO UPDATE SET owner = ?2, token = token + 1, expires_at = ?3 \
             RETURNING token",
        )
        .bind(shard)
        .bind(owner)
        .bind(expires_at as i64)
        .fetch_one(&self.write)
        .await?;
        Ok(token)
    }

    pub async fn try_lease(
        &self,
        shard: u32,
        owner: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO leases (shard, owner, token, expires_at) VALUES (?1, ?2, 1, ?3) \
             ON CONFLICT (shard) DO UPDATE SET \
               token = CASE WHEN leases.owner = ?2 THEN leases.token ELSE leases.token + 1 END, \
               owner = ?2, expires_at = ?3 \
             WHERE leases.owner = ?2 OR leases.expires_at <= ?4 \
             RETURNING token",
        )
        .bind(shard)
        .bind(owner)
        .bind(expires_at as i64)
        .bind(now as i64)
        .fetch_optional(&self.write)
        .await?)
    }

    pub async fn release_lease(&self, shard: u32, owner: &str, token: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE shard = ? AND owner = ? AND token = ?",
        )
        .bind(shard)
        .bind(owner)
        .bind(token)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn leases(&self) -> Result<Vec<LeaseRow>> {
        let rows = sqlx::query("SELECT shard, owner, token, expires_at FROM leases ORDER BY shard")
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|r| LeaseRow {
                shard: r.get::<i64, _>(0) as u32,
                owner: r.get(1),
                token: r.get(2),
                expires_at: r.get::<i64, _>(3) as u64,
            })
            .collect())
    }

    pub async fn heartbeat(&self, m: &MemberRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO members (id, roles, started_at, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET roles = excluded.roles, expires_at = excluded.expires_at",
        )
        .bind(&m.id)
        .bind(&m.roles)
        .bind(m.started_at as i64)
        .bind(m.expires_at as i64)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn members(&self) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query("SELECT id, roles, started_at, expires_at FROM members ORDER BY id")
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|r| MemberRow {
                id: r.get(0),
                roles: r.get(1),
                started_at: r.get::<i64, _>(2) as u64,
                expires_at: r.get::<i64, _>(3) as u64,
            })
            .collect())
    }

    pub async fn leave(&self, id: &str, before: u64) -> Result<()> {
        sqlx::query("DELETE FROM members WHERE id = ? OR expires_at < ?")
            .bind(id)
            .bind(before as i64)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    // ---- flows ---------------------------------------------------------------

    /// Deploys in one transaction: the bundle, its flow versions (each its
    /// name's head) and each flow's schedules, or nothing.
    pub async fn deploy(&self, d: &Deployment<'_>) -> Result<()> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO bundles (id, tenant, env, ir, deployed_at, sources) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(d.bundle)
        .bind(d.tenant)
        .bind(d.env)
        .bind(d.ir)
        .bind(d.now as i64)
        .bind(d.sources)
        .execute(&mut *tx)
        .await?;
        for (name, version) in d.flows {
            sqlx::query("UPDATE flows SET head = 0 WHERE tenant = ? AND name = ?")
                .bind(d.tenant)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO flows (tenant, name, version, bundle, deployed_at, head) VALUES (?, ?, ?, ?, ?, 1) \
                 ON CONFLICT (tenant, name, version) DO UPDATE SET head = 1, bundle = excluded.bundle, \
                 deployed_at = excluded.deployed_at",
            )
            .bind(d.tenant)
            .bind(name)
            .bind(version)
            .bind(d.bundle)
            .bind(d.now as i64)
            .execute(&mut *tx)
            .await?;
            // Schedules made through the API follow their flow's head unless
            // pinned to a version.
            sqlx::query(
                "UPDATE schedules SET bundle = ?1 WHERE tenant = ?2 AND flow = ?3 \
                 AND declared = 0 AND version IS NULL",
            )
            .bind(d.bundle)
            .bind(d.tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        for (flow, rows) in d.schedules {
            replace_schedules(&mut tx, d.tenant, flow, rows).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A bundle's environment and IR.
    pub async fn bundle(&self, id: &str) -> Result<Option<(String, String, Vec<u8>)>> {
        let row = sqlx::query("SELECT tenant, env, ir FROM bundles WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    pub async fn bundle_sources(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar::<_, Option<Vec<u8>>>("SELECT sources FROM bundles WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?
                .flatten(),
        )
    }

    /// The named flow at `version`, or its head.
    pub async fn flow(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<FlowRow>> {
        let row = match version {
            Some(v) => sqlx::query(
                "SELECT tenant, name, version, bundle, deployed_at, head FROM flows WHERE tenant = ? AND name = ? AND version = ?",
            )
            .bind(tenant)
            .bind(name)
            .bind(v),
            None => sqlx::query(
                "SELECT tenant, name, version, bundle, deployed_at, head FROM flows WHERE tenant = ? AND name = ? AND head = 1",
            )
            .bind(tenant)
            .bind(name),
        }
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(flow_row))
    }

    pub async fn flows(&self, tenant: Option<&str>) -> Result<Vec<FlowRow>> {
        let rows = match tenant {
            Some(t) => sqlx::query(
                "SELECT tenant, name, version, bundle, deployed_at, head FROM flows WHERE tenant = ? ORDER BY name, deployed_at",
            )
            .bind(t),
            None => sqlx::query(
                "SELECT tenant, name, version, bundle, deployed_at, head FROM flows ORDER BY tenant, name, deployed_at",
            ),
        }
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(flow_row).collect())
    }

    // ---- tenants and tokens --------------------------------------------------

    pub async fn create_tenant(&self, t: &TenantRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO tenants (id, created_at, max_active_runs, max_starts_per_sec, allow_egress, history_retention_ms) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (SELECT 1 FROM purges WHERE tenant = ?1) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&t.id)
        .bind(t.created_at as i64)
        .bind(t.max_active_runs)
        .bind(t.max_starts_per_sec)
        .bind(egress_json(&t.allow_egress))
        .bind(t.history_retention_ms.map(|ms| ms as i64))
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRow>> {
        let rows = sqlx::query(
            "SELECT id, created_at, max_active_runs, max_starts_per_sec, allow_egress, history_retention_ms FROM tenants ORDER BY id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(tenant_row).collect()
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>> {
        let row = sqlx::query(
            "SELECT id, created_at, max_active_runs, max_starts_per_sec, allow_egress, history_retention_ms FROM tenants WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.map(tenant_row).transpose()
    }

    pub async fn set_tenant_egress(&self, tenant: &str, rules: &[String]) -> Result<bool> {
        let done = sqlx::query("UPDATE tenants SET allow_egress = ? WHERE id = ?")
            .bind(egress_json(rules))
            .bind(tenant)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_tenant_retention(&self, tenant: &str, ms: Option<u64>) -> Result<bool> {
        let done = sqlx::query("UPDATE tenants SET history_retention_ms = ? WHERE id = ?")
            .bind(ms.map(|ms| ms.min(i64::MAX as u64) as i64))
            .bind(tenant)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- sweeping finished runs ------------------------------------------------

    /// One batch of the sweeper, in one transaction on the writer: the
    /// candidates are read through `runs_finished` and `runs_failed` (oldest
    /// first), then each
    /// per-run table's rows of them are deleted by the table's run index.
    pub async fn sweep_finished(
        &self,
        held_through: i64,
        finished_before: u64,
        failed_before: u64,
        limit: u32,
    ) -> Result<u64> {
        let mut tx = self.write.begin().await?;
        // A run with an event past the history's cursor is not held there
        // yet; one with an effect in the outbox still has to report (a
        // child's result to its parent).
        // Runs that succeeded or were cancelled through `runs_finished`, then,
        // if the batch has room, failed runs (kept for their retry window)
        // through `runs_failed`.
        let mut runs: Vec<(String, String, i64)> = Vec::new();
        for (statuses, before) in [
            ("'succeeded', 'cancelled'", finished_before),
            ("'failed'", failed_before),
        ] {
            let room = i64::from(limit) - runs.len() as i64;
            if room <= 0 {
                break;
            }
            let rows = sqlx::query(&format!(
                "SELECT id, tenant, updated_at FROM runs \
                 WHERE status IN ({statuses}) AND updated_at <= ?1 \
                 AND NOT EXISTS (SELECT 1 FROM events WHERE events.run = runs.id AND events.pos > ?2) \
                 AND id NOT IN (SELECT run FROM outbox) \
                 ORDER BY updated_at LIMIT ?3"
            ))
            .bind(before.min(i64::MAX as u64) as i64)
            .bind(held_through)
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
            runs.extend(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))));
        }
        if runs.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = runs.iter().map(|(id, _, _)| id.as_str()).collect();
        // Fan-out parents keep their results (the results page answers from
        // them) and runs keep the values they refer to (their view, from the
        // history's final state, shows them) until the history lets them go.
        let mut with_results = std::collections::HashSet::new();
        for table in super::KEPT_WITH_HISTORY {
            for piece in pieces(&ids) {
                let mut q: QueryBuilder<Sqlite> =
                    QueryBuilder::new(format!("SELECT DISTINCT run FROM {table} WHERE run IN ("));
                let mut sep = q.separated(", ");
                for id in piece {
                    sep.push_bind(*id);
                }
                q.push(")");
                for r in q.build().fetch_all(&mut *tx).await? {
                    with_results.insert(r.get::<String, _>(0));
                }
            }
        }
        let kept: Vec<&(String, String, i64)> = runs
            .iter()
            .filter(|(id, _, _)| !super::is_fresh_id(id) || with_results.contains(id))
            .collect();
        for piece in pieces(&kept) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO swept_runs (id, tenant, finished_at) ");
            q.push_values(piece, |mut b, (id, tenant, at)| {
                b.push_bind(id).push_bind(tenant).push_bind(*at);
            });
            q.push(" ON CONFLICT (id) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        for (table, column) in super::PER_RUN_TABLES {
            if super::KEPT_WITH_HISTORY.contains(&table) {
                continue;
            }
            delete_where_in(&mut tx, table, column, &ids).await?;
        }
        tx.commit().await?;
        Ok(runs.len() as u64)
    }

    pub async fn swept_run(&self, id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT tenant FROM swept_runs WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    pub async fn forget_swept(&self, ids: &[&str]) -> Result<u64> {
        let mut tx = self.write.begin().await?;
        let mut n = 0;
        for table in super::KEPT_WITH_HISTORY.into_iter().chain(["swept_runs"]) {
            let column = if table == "swept_runs" { "id" } else { "run" };
            n += delete_where_in(&mut tx, table, column, ids).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn expire_swept(&self, tenant: &str, before: u64, limit: u32) -> Result<u64> {
        // A range scan of `swept_runs_tenant`.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM swept_runs WHERE tenant = ? AND finished_at < ? ORDER BY finished_at LIMIT ?",
        )
        .bind(tenant)
        .bind(before.min(i64::MAX as u64) as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.forget_swept(&refs).await?;
        Ok(ids.len() as u64)
    }

    pub async fn per_run_rows(&self) -> Result<Vec<(&'static str, i64)>> {
        let mut out = Vec::new();
        for table in super::PER_RUN_TABLES
            .iter()
            .map(|(t, _)| *t)
            .chain(["swept_runs"])
        {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&self.read)
                .await?;
            out.push((table, n));
        }
        Ok(out)
    }

    pub async fn begin_purge(&self, tenant: &str, hold: &PurgeHold) -> Result<PurgeBegun> {
        // One writer connection: the read and the write below are not
        // interleaved with another process's (SQLite's lock) nor another
        // task's (the pool's single connection).
        let mut tx = self.write.begin().await?;
        let pending: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT owner, lease_until FROM purges WHERE tenant = ?1")
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
        match pending {
            Some((Some(owner), until)) if owner != hold.owner && until as u64 >= hold.now => {
                return Ok(PurgeBegun::Busy {
                    owner,
                    until: until as u64,
                });
            }
            Some(_) => {}
            None => {
                let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?1")
                    .bind(tenant)
                    .fetch_optional(&mut *tx)
                    .await?;
                if known.is_none() {
                    return Ok(PurgeBegun::NoTenant);
                }
            }
        }
        sqlx::query(
            "INSERT INTO purges (tenant, started_at, owner, lease_until) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (tenant) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until",
        )
        .bind(tenant)
        .bind(hold.now as i64)
        .bind(&hold.owner)
        .bind(hold.until as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PurgeBegun::Held)
    }

    pub async fn hold_purge(&self, tenant: &str, hold: &PurgeHold) -> Result<bool> {
        let done =
            sqlx::query("UPDATE purges SET lease_until = ?3 WHERE tenant = ?1 AND owner = ?2")
                .bind(tenant)
                .bind(&hold.owner)
                .bind(hold.until as i64)
                .execute(&self.write)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn end_purge(&self, tenant: &str, owner: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM purges WHERE tenant = ? AND owner = ?")
            .bind(tenant)
            .bind(owner)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn pending_purges(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT tenant FROM purges ORDER BY started_at")
                .fetch_all(&self.read)
                .await?,
        )
    }

    pub async fn abandoned_purges(&self, now: u64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT tenant FROM purges WHERE lease_until < ? ORDER BY started_at",
        )
        .bind(now as i64)
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn gone_tenants(&self, tenants: &[&str]) -> Result<Vec<String>> {
        // The list as one JSON array parameter: one statement whatever its length.
        let list = serde_json::json!(tenants).to_string();
        Ok(sqlx::query_scalar(
            "SELECT j.value FROM json_each(?) AS j \
             WHERE NOT EXISTS (SELECT 1 FROM tenants WHERE id = j.value) \
                OR EXISTS (SELECT 1 FROM purges WHERE tenant = j.value)",
        )
        .bind(list)
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn purge_tenant(&self, tenant: &str, owner: &str) -> Result<Option<u64>> {
        let mut tx = self.write.begin().await?;
        let held: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM purges WHERE tenant = ?1 AND owner = ?2")
                .bind(tenant)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
        if held.is_none() {
            return Ok(None);
        }
        let mut n = 0;
        // Every run's rows (its own and those swept runs left), the runs
        // last, then the tenant's other rows, the tenant last.
        let per_run = super::PER_RUN_TABLES.iter().flat_map(|(table, column)| {
            [
                format!(
                    "DELETE FROM {table} WHERE {column} IN (SELECT id FROM swept_runs WHERE tenant = ?1)"
                ),
                format!("DELETE FROM {table} WHERE {column} IN (SELECT id FROM runs WHERE tenant = ?1)"),
            ]
        });
        let rest = [
            "DELETE FROM swept_runs WHERE tenant = ?1",
            "DELETE FROM run_values WHERE tenant = ?1",
            "DELETE FROM stored_values WHERE tenant = ?1",
            "DELETE FROM approvals WHERE tenant = ?1",
            "DELETE FROM registry_uses WHERE tenant = ?1",
            "DELETE FROM registry WHERE tenant = ?1",
            "DELETE FROM schedules WHERE tenant = ?1",
            "DELETE FROM flows WHERE tenant = ?1",
            "DELETE FROM bundles WHERE tenant = ?1",
            "DELETE FROM tokens WHERE tenant = ?1",
            "DELETE FROM tenants WHERE id = ?1",
        ]
        .map(String::from);
        for sql in per_run.chain(rest) {
            n += sqlx::query(&sql)
                .bind(tenant)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(Some(n))
    }

    /// Adds a token; fails if its hash or id is taken.
    pub async fn insert_token(&self, t: &TokenRow) -> Result<()> {
        insert_token(t).execute(&self.write).await?;
        Ok(())
    }

    /// The token whose secret has this hash, expired or not.
    pub async fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(token_row))
    }

    pub async fn token_by_id(&self, id: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(token_row))
    }

    /// The tokens of `tenant`, or the admin tokens for `None`, oldest first.
    pub async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant IS ? ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(token_row).collect())
    }

    /// Deletes a token; false if there was none with this id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tokens WHERE id = ?")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds `new` in place of token `old`, in one transaction: `old` is
    /// deleted, or with `old_until` expires then (or earlier, if it expires
    /// earlier). False, and nothing added, if there is no token `old`.
    pub async fn rotate_token(
        &self,
        old: &str,
        old_until: Option<u64>,
        new: &TokenRow,
    ) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let done = match old_until {
            None => sqlx::query("DELETE FROM tokens WHERE id = ?").bind(old),
            Some(t) => sqlx::query(
                "UPDATE tokens SET expires_at = min(coalesce(expires_at, ?1), ?1) WHERE id = ?2",
            )
            .bind(t as i64)
            .bind(old),
        }
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_token(new).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Admin tokens not expired at `now`.
    pub async fn admin_token_count(&self, now: u64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM tokens WHERE tenant IS NULL AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(now as i64)
        .fetch_one(&self.read)
        .await?)
    }

    // ---- approvals -----------------------------------------------------------

    pub async fn approvals(
        &self,
        tenant: Option<&str>,
        pending_only: bool,
    ) -> Result<Vec<ApprovalRow>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT run, step, attempt, tenant, contract, request, requested_at, expires_at, decided_at, decision FROM approvals WHERE 1 = 1",
        );
        if let Some(t) = tenant {
            q.push(" AND tenant = ").push_bind(t);
        }
        if pending_only {
            q.push(" AND decided_at IS NULL");
        }
        q.push(" ORDER BY requested_at LIMIT 1000");
        let rows = q.build().fetch_all(&self.read).await?;
        rows.into_iter().map(approval_row).collect()
    }

    /// The newest attempt's approval of `step` in `run`.
    pub async fn approval(&self, run: &str, step: &str) -> Result<Option<ApprovalRow>> {
        let row = sqlx::query(
            "SELECT run, step, attempt, tenant, contract, request, requested_at, expires_at, decided_at, decision \
             FROM approvals WHERE run = ? AND step = ? ORDER BY attempt DESC LIMIT 1",
        )
        .bind(run)
        .bind(step)
        .fetch_optional(&self.read)
        .await?;
        row.map(approval_row).transpose()
    }

    // ---- registry ------------------------------------------------------------

    /// Registers the next version of `name`, or returns the entry already
    /// registered under the same idempotency `key`.
    pub async fn register(
        &self,
        e: &NewEntry<'_>,
        make_entry: impl FnOnce(i64) -> serde_json::Value,
    ) -> Result<RegistryRow> {
        let mut tx = self.write.begin().await?;
        let existing = sqlx::query(
            "SELECT tenant, kind, name, version, entry, run, step, inputs, registered_at FROM registry WHERE key = ?",
        )
        .bind(e.key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = existing {
            return registry_row(r);
        }
        // A call carried out while its tenant was purged registers nothing.
        let live: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM tenants WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM purges WHERE tenant = ?1)",
        )
        .bind(e.tenant)
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_none() {
            return Err(Error::Conflict(format!(
                "tenant `{}` does not exist or is being purged",
                e.tenant
            )));
        }
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT max(version) FROM registry WHERE tenant = ? AND kind = ? AND name = ?",
        )
        .bind(e.tenant)
        .bind(e.kind)
        .bind(e.name)
        .fetch_one(&mut *tx)
        .await?;
        let version = last.unwrap_or(0) + 1;
        let entry = make_entry(version);
        sqlx::query(
            "INSERT INTO registry (tenant, kind, name, version, entry, run, step, key, inputs, registered_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.tenant)
        .bind(e.kind)
        .bind(e.name)
        .bind(version)
        .bind(stored_json(&entry))
        .bind(e.run)
        .bind(e.step)
        .bind(e.key)
        .bind(stored_json(e.inputs))
        .bind(e.now as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RegistryRow {
            tenant: e.tenant.into(),
            kind: e.kind.into(),
            name: e.name.into(),
            version,
            entry,
            run: e.run.into(),
            step: e.step.into(),
            inputs: e.inputs.clone(),
            registered_at: e.now,
        })
    }

    /// Moves a registered version to `stage`; returns the updated entry.
    pub async fn registry_set_stage(
        &self,
        tenant: &str,
        kind: &str,
        name: &str,
        version: i64,
        stage: &str,
    ) -> Result<Option<serde_json::Value>> {
        let mut tx = self.write.begin().await?;
        let entry: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT entry FROM registry WHERE tenant = ? AND kind = ? AND name = ? AND version = ?",
        )
        .bind(tenant)
        .bind(kind)
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(entry) = entry else { return Ok(None) };
        let mut entry = json("registry", &entry)?;
        if let Some(m) = entry.as_object_mut() {
            m.insert("stage".into(), serde_json::Value::String(stage.into()));
        }
        sqlx::query("UPDATE registry SET entry = ? WHERE tenant = ? AND kind = ? AND name = ? AND version = ?")
            .bind(stored_json(&entry))
            .bind(tenant)
            .bind(kind)
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(entry))
    }

    pub async fn record_registry_use(&self, u: &RegistryUse<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO registry_uses (key, tenant, kind, name, version, run, step, action, used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
        )
        .bind(u.key)
        .bind(u.tenant)
        .bind(u.kind)
        .bind(u.name)
        .bind(u.version)
        .bind(u.run)
        .bind(u.step)
        .bind(u.action)
        .bind(u.at as i64)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn registry_uses(
        &self,
        tenant: &str,
        kind: &str,
        name: &str,
        version: i64,
        after: Option<(u64, String)>,
        limit: u32,
    ) -> Result<Vec<RegistryUseRow>> {
        let q = match &after {
            None => sqlx::query("SELECT key, run, step, action, used_at FROM registry_uses WHERE tenant = ? AND kind = ? AND name = ? AND version = ? ORDER BY used_at, key LIMIT ?")
                .bind(tenant)
                .bind(kind)
                .bind(name)
                .bind(version),
            Some((at, key)) => sqlx::query("SELECT key, run, step, action, used_at FROM registry_uses WHERE tenant = ? AND kind = ? AND name = ? AND version = ? AND (used_at, key) > (?, ?) ORDER BY used_at, key LIMIT ?")
                .bind(tenant)
                .bind(kind)
                .bind(name)
                .bind(version)
                .bind(*at as i64)
                .bind(key),
        };
        let rows = q.bind(i64::from(limit)).fetch_all(&self.read).await?;
        Ok(rows
            .iter()
            .map(|r| RegistryUseRow {
                key: r.get(0),
                run: r.get(1),
                step: r.get(2),
                action: r.get(3),
                used_at: r.get::<i64, _>(4) as u64,
            })
            .collect())
    }

    pub async fn registry(
        &self,
        tenant: &str,
        kind: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<RegistryRow>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT tenant, kind, name, version, entry, run, step, inputs, registered_at FROM registry WHERE tenant = ",
        );
        q.push_bind(tenant);
        if let Some(k) = kind {
            q.push(" AND kind = ").push_bind(k);
        }
        if let Some(n) = name {
            q.push(" AND name = ").push_bind(n);
        }
        q.push(" ORDER BY kind, name, version LIMIT 1000");
        let rows = q.build().fetch_all(&self.read).await?;
        rows.into_iter().map(registry_row).collect()
    }

    // ---- schedules -----------------------------------------------------------

    pub async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<ScheduleRow>> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {SCHEDULE_COLUMNS} FROM schedules"));
        if let Some(t) = tenant {
            q.push(" WHERE tenant = ").push_bind(t);
        }
        q.push(" ORDER BY tenant, flow, position");
        let rows = q.build().fetch_all(&self.read).await?;
        Ok(rows.into_iter().map(schedule_row).collect())
    }

    pub async fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(schedule_row))
    }

    /// Claims the unpaused schedules of `partition` due by `now`.
    pub async fn claim_schedules(
        &self,
        partition: u32,
        now: u64,
        claim_until: u64,
        limit: u32,
    ) -> Result<Vec<ScheduleRow>> {
        let rows = sqlx::query(&format!("{CLAIM_SCHEDULES} RETURNING {SCHEDULE_COLUMNS}"))
            .bind(claim_until as i64)
            .bind(partition)
            .bind(now as i64)
            .bind(limit)
            .fetch_all(&self.write)
            .await?;
        Ok(rows.into_iter().map(schedule_row).collect())
    }

    /// Records what the scheduler did with a schedule and releases its claim.
    /// `last_start`: the fire time of a run just started, if any (the
    /// newest one is kept).
    pub async fn update_schedule(
        &self,
        id: &str,
        handled_through: Option<u64>,
        last_start: Option<u64>,
        next_due: Option<u64>,
        buffered: Option<u64>,
    ) -> Result<()> {
        sqlx::query(UPDATE_SCHEDULE)
            .bind(handled_through.map(|t| t as i64))
            .bind(last_start.map(|t| t as i64))
            .bind(next_due.map(|t| t as i64))
            .bind(buffered.map(|t| t as i64))
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Pauses or resumes a schedule. Resuming moves the watermark to `now`, so
    /// fire times missed while paused are not started.
    pub async fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
        now: u64,
        next_due: Option<u64>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE schedules SET paused = ?1, next_due = CASE WHEN ?1 THEN next_due ELSE ?2 END, \
             last_fire = CASE WHEN ?1 THEN last_fire ELSE ?3 END WHERE id = ?4",
        )
        .bind(paused)
        .bind(next_due.map(|t| t as i64))
        .bind(now as i64)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds a schedule made through the API, unless its tenant has
    /// `max_per_tenant` schedules already (false then, nothing added).
    pub async fn insert_schedule(&self, row: &ScheduleRow, max_per_tenant: u64) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        // The count reads the index `schedules_tenant` only.
        let have: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules WHERE tenant = ?")
            .bind(&row.tenant)
            .fetch_one(&mut *tx)
            .await?;
        if have as u64 >= max_per_tenant {
            return Ok(false);
        }
        insert_schedule_rows(&mut tx, std::slice::from_ref(row)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Adds many schedules in one transaction, with no limit: for tools that
    /// fill a store (the bench), not for requests.
    pub async fn insert_schedules(&self, rows: &[ScheduleRow]) -> Result<()> {
        let mut tx = self.write.begin().await?;
        insert_schedule_rows(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces what a schedule is (flow version, spec, key, pause) and when it
    /// is next due, keeping what it has started; false if there is none.
    pub async fn redefine_schedule(&self, row: &ScheduleRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE schedules SET bundle = ?1, version = ?2, spec = ?3, key = ?4, paused = ?5, \
             last_fire = ?6, next_due = ?7, buffered = NULL, claimed_until = 0 WHERE id = ?8",
        )
        .bind(&row.bundle)
        .bind(&row.version)
        .bind(&row.spec)
        .bind(&row.key)
        .bind(row.paused)
        .bind(row.handled_through.map(|t| t as i64))
        .bind(row.next_due.map(|t| t as i64))
        .bind(&row.id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a schedule; false if there was none. Its runs stay.
    pub async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM schedules WHERE id = ?")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One page of schedules in id order: those after `q.after`, at most
    /// `q.limit`. Each filter is an index range scan.
    pub async fn schedule_page(&self, q: &ScheduleQuery) -> Result<Vec<ScheduleRow>> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE 1 = 1"
        ));
        if let Some(t) = &q.tenant {
            b.push(" AND tenant = ").push_bind(t);
        }
        if let Some(k) = &q.key {
            b.push(" AND key = ").push_bind(k);
        }
        if let Some(f) = &q.flow {
            b.push(" AND flow = ").push_bind(f);
        }
        if let Some(a) = &q.after {
            b.push(" AND id > ").push_bind(a);
        }
        b.push(" ORDER BY id LIMIT ").push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.read).await?;
        Ok(rows.into_iter().map(schedule_row).collect())
    }

    /// Records what a loader did with many schedules, in one transaction, and
    /// releases their claims.
    pub async fn update_schedules(&self, updates: &[ScheduleUpdate]) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for u in updates {
            sqlx::query(UPDATE_SCHEDULE)
                .bind(u.handled_through.map(|t| t as i64))
                .bind(u.last_start.map(|t| t as i64))
                .bind(u.next_due.map(|t| t as i64))
                .bind(u.buffered.map(|t| t as i64))
                .bind(&u.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The runs in progress of each of `schedules`, as (schedule, run).
    pub async fn active_runs_of_schedules(
        &self,
        schedules: &[&str],
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for piece in pieces(schedules) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT schedule, id FROM runs WHERE status IN ('created', 'running') AND schedule IN (",
            );
            let mut list = q.separated(", ");
            for s in piece {
                list.push_bind(*s);
            }
            q.push(")");
            let rows = q.build().fetch_all(&self.read).await?;
            out.extend(rows.into_iter().map(|r| (r.get(0), r.get(1))));
        }
        Ok(out)
    }

    /// Which of `runs` exist, or existed and were swept.
    pub async fn existing_runs(&self, runs: &[&str]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for piece in pieces(runs) {
            // A run swept from the store after it finished existed too.
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT id FROM runs WHERE id IN (");
            let mut list = q.separated(", ");
            for r in piece {
                list.push_bind(*r);
            }
            q.push(") UNION SELECT id FROM swept_runs WHERE id IN (");
            let mut list = q.separated(", ");
            for r in piece {
                list.push_bind(*r);
            }
            q.push(")");
            let rows = q.build().fetch_all(&self.read).await?;
            out.extend(rows.into_iter().map(|r| r.get::<String, _>(0)));
        }
        Ok(out)
    }

    /// When the first unpaused schedule of `partition` not claimed at `now`
    /// is due: the index `schedules_due` read in order from its start.
    pub async fn next_schedule_due(&self, partition: u32, now: u64) -> Result<Option<u64>> {
        let t: Option<i64> = sqlx::query_scalar(
            "SELECT next_due FROM schedules WHERE partition = ?1 AND paused = 0 AND next_due IS NOT NULL \
             AND claimed_until <= ?2 ORDER BY next_due LIMIT 1",
        )
        .bind(partition)
        .bind(now as i64)
        .fetch_optional(&self.read)
        .await?;
        Ok(t.map(|t| t as u64))
    }

    // ---- settings ------------------------------------------------------------

    /// Stores `value` unless the key has one; returns the stored value.
    pub async fn setting_or_insert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.write)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_one(&self.write)
                .await?,
        )
    }
}

fn loaded_run(r: sqlx::sqlite::SqliteRow) -> (RunMeta, String, Vec<u8>) {
    (
        RunMeta {
            id: r.get(0),
            tenant: r.get(1),
            bundle: r.get(2),
            schedule: r.get(3),
            parent: r.get(4),
            key: r.get(8),
            created_at: r.get::<i64, _>(5) as u64,
        },
        r.get(6),
        r.get(7),
    )
}

fn event_row(r: sqlx::sqlite::SqliteRow) -> Result<EventRow> {
    Ok(EventRow {
        pos: r.get(0),
        run: r.get(1),
        seq: r.get::<i64, _>(2) as u64,
        id: r.get(3),
        at: r.get::<i64, _>(4) as u64,
        status: r.get(5),
        body: r.get(6),
    })
}

fn flow_row(r: sqlx::sqlite::SqliteRow) -> FlowRow {
    FlowRow {
        tenant: r.get(0),
        name: r.get(1),
        version: r.get(2),
        bundle: r.get(3),
        deployed_at: r.get::<i64, _>(4) as u64,
        head: r.get::<i64, _>(5) != 0,
    }
}

const TOKEN_COLUMNS: &str = "id, hash, tenant, name, last4, created_at, expires_at";

fn insert_token(t: &TokenRow) -> sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    sqlx::query(
        "INSERT INTO tokens (id, hash, tenant, name, last4, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&t.id)
    .bind(&t.hash)
    .bind(&t.tenant)
    .bind(&t.name)
    .bind(&t.last4)
    .bind(t.created_at as i64)
    .bind(t.expires_at.map(|x| x as i64))
}

fn token_row(r: sqlx::sqlite::SqliteRow) -> TokenRow {
    TokenRow {
        id: r.get(0),
        hash: r.get(1),
        tenant: r.get(2),
        name: r.get(3),
        last4: r.get(4),
        created_at: r.get::<i64, _>(5) as u64,
        expires_at: r.get::<Option<i64>, _>(6).map(|t| t as u64),
    }
}

/// Replaces the declared schedules of `flow` with `rows`, in the deploy's
/// transaction; schedules made through the API stay.
async fn replace_schedules(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    tenant: &str,
    flow: &str,
    rows: &[ScheduleRow],
) -> Result<()> {
    let keep: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let old =
        sqlx::query("SELECT id FROM schedules WHERE tenant = ? AND flow = ? AND declared = 1")
            .bind(tenant)
            .bind(flow)
            .fetch_all(&mut **tx)
            .await?;
    for r in old {
        let id: String = r.get(0);
        if !keep.contains(&id) {
            sqlx::query("DELETE FROM schedules WHERE id = ?")
                .bind(&id)
                .execute(&mut **tx)
                .await?;
        }
    }
    for r in rows {
        sqlx::query(
            "INSERT INTO schedules (id, tenant, flow, bundle, position, spec, paused, last_fire, next_due, buffered, partition, last_start) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET bundle = excluded.bundle, position = excluded.position, \
             spec = excluded.spec, next_due = excluded.next_due",
        )
        .bind(&r.id)
        .bind(&r.tenant)
        .bind(&r.flow)
        .bind(&r.bundle)
        .bind(r.position)
        .bind(&r.spec)
        .bind(r.paused)
        .bind(r.handled_through.map(|t| t as i64))
        .bind(r.next_due.map(|t| t as i64))
        .bind(r.buffered.map(|t| t as i64))
        .bind(r.partition)
        .bind(r.last_start.map(|t| t as i64))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Inserts schedule rows, a few hundred per statement.
async fn insert_schedule_rows(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    rows: &[ScheduleRow],
) -> Result<()> {
    for piece in pieces(rows) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("INSERT INTO schedules ({SCHEDULE_COLUMNS}) "));
        q.push_values(piece, |mut b, r| {
            b.push_bind(&r.id)
                .push_bind(&r.tenant)
                .push_bind(&r.flow)
                .push_bind(&r.bundle)
                .push_bind(r.position)
                .push_bind(&r.spec)
                .push_bind(r.paused)
                .push_bind(r.handled_through.map(|t| t as i64))
                .push_bind(r.next_due.map(|t| t as i64))
                .push_bind(r.buffered.map(|t| t as i64))
                .push_bind(r.partition)
                .push_bind(r.last_start.map(|t| t as i64))
                .push_bind(r.declared)
                .push_bind(&r.key)
                .push_bind(&r.version)
                .push_bind(r.created_at.map(|t| t as i64));
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn tenant_row(r: sqlx::sqlite::SqliteRow) -> Result<TenantRow> {
    let id: String = r.get(0);
    let allow_egress = serde_json::from_str(r.get::<&str, _>(4)).map_err(|e| Error::Corrupt {
        table: "tenants",
        message: format!("allow_egress of {id}: {e}"),
    })?;
    Ok(TenantRow {
        id,
        created_at: r.get::<i64, _>(1) as u64,
        max_active_runs: r.get(2),
        max_starts_per_sec: r.get(3),
        allow_egress,
        history_retention_ms: r.get::<Option<i64>, _>(5).map(|ms| ms.max(0) as u64),
    })
}

/// A tenant's egress rules as the `allow_egress` column holds them: a JSON array.
fn egress_json(rules: &[String]) -> String {
    serde_json::Value::from(rules.to_vec()).to_string()
}

fn schedule_row(r: sqlx::sqlite::SqliteRow) -> ScheduleRow {
    ScheduleRow {
        id: r.get(0),
        tenant: r.get(1),
        flow: r.get(2),
        bundle: r.get(3),
        position: r.get::<i64, _>(4) as u32,
        spec: r.get(5),
        paused: r.get::<i64, _>(6) != 0,
        handled_through: r.get::<Option<i64>, _>(7).map(|t| t as u64),
        last_start: r.get::<Option<i64>, _>(11).map(|t| t as u64),
        next_due: r.get::<Option<i64>, _>(8).map(|t| t as u64),
        buffered: r.get::<Option<i64>, _>(9).map(|t| t as u64),
        partition: r.get::<i64, _>(10) as u32,
        declared: r.get::<i64, _>(12) != 0,
        key: r.get(13),
        version: r.get(14),
        created_at: r.get::<Option<i64>, _>(15).map(|t| t as u64),
    }
}

fn approval_row(r: sqlx::sqlite::SqliteRow) -> Result<ApprovalRow> {
    let request: Vec<u8> = r.get(5);
    let decision: Option<Vec<u8>> = r.get(9);
    Ok(ApprovalRow {
        run: r.get(0),
        step: r.get(1),
        attempt: r.get::<i64, _>(2) as u32,
        tenant: r.get(3),
        contract: r.get(4),
        request: json("approvals", &request)?,
        requested_at: r.get::<i64, _>(6) as u64,
        expires_at: r.get::<Option<i64>, _>(7).map(|t| t as u64),
        decided_at: r.get::<Option<i64>, _>(8).map(|t| t as u64),
        decision: decision.map(|d| json("approvals", &d)).transpose()?,
    })
}

fn registry_row(r: sqlx::sqlite::SqliteRow) -> Result<RegistryRow> {
    let entry: Vec<u8> = r.get(4);
    let inputs: Vec<u8> = r.get(7);
    Ok(RegistryRow {
        tenant: r.get(0),
        kind: r.get(1),
        name: r.get(2),
        version: r.get(3),
        entry: json("registry", &entry)?,
        run: r.get(5),
        step: r.get(6),
        inputs: json("registry", &inputs)?,
        registered_at: r.get::<i64, _>(8) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_every_row_once_in_known_sizes() {
        for n in [0usize, 1, 3, 5, 63, 64, 300, 1024, 1500] {
            let rows: Vec<usize> = (0..n).collect();
            let got: Vec<&[usize]> = pieces(&rows).collect();
            assert!(got.iter().all(|p| PIECES.contains(&p.len())), "{n}");
            let flat: Vec<usize> = got.concat();
            assert_eq!(flat, rows, "{n}");
        }
    }

    /// The scheduler's queries over many schedules: a loader's claim is a
    /// range scan of `schedules_due` (its partition, due by now, in due
    /// order), and releasing claims at start reads `schedules_claimed` only.
    #[tokio::test]
    async fn a_loaders_claim_is_an_index_range_scan() {
        let dir = std::env::temp_dir().join(format!("eflow-claim-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(
            &dir.join("eflow.db").display().to_string(),
            Durability::Normal,
        )
        .await
        .map(|(s, _)| s)
        .unwrap();
        let rows: Vec<ScheduleRow> = (0..50_000u64)
            .map(|i| ScheduleRow {
                id: format!("s-{i:06}"),
                tenant: format!("t{}", i % 10),
                flow: "F".into(),
                bundle: "b".into(),
                position: 0,
                spec: b"{}".to_vec(),
                paused: i % 17 == 0,
                handled_through: Some(0),
                last_start: None,
                next_due: Some(1_000 + i % 1_000),
                buffered: None,
                partition: (i % 4) as u32,
                declared: false,
                key: Some(format!("k{}", i % 100)),
                version: None,
                created_at: Some(0),
            })
            .collect();
        store.insert_schedules(&rows).await.unwrap();
        sqlx::query("ANALYZE").execute(&store.write).await.unwrap();
        let plan = |sql: String| {
            let store = store.clone();
            async move {
                sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .bind(70_000i64)
                    .bind(2i64)
                    .bind(1_500i64)
                    .bind(1_000i64)
                    .fetch_all(&store.write)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<String, _>(3))
                    .collect::<Vec<_>>()
            }
        };
        let claim = plan(CLAIM_SCHEDULES.to_string()).await;
        assert!(
            claim
                .iter()
                .any(|d| d.starts_with("SEARCH schedules USING INDEX schedules_due (partition=? AND next_due>? AND next_due<?)")),
            "{claim:?}"
        );
        assert!(
            !claim.iter().any(|d| d.starts_with("SCAN schedules")),
            "{claim:?}"
        );
        let release = plan(RELEASE_SCHEDULE_CLAIMS.to_string()).await;
        assert!(
            release
                .iter()
                .any(|d| d.contains("INDEX schedules_claimed")),
            "{release:?}"
        );
        // And it claims what the plan says: partition 2's due rows, the
        // oldest due first.
        let first = store.claim_schedules(2, 1_010, 70_000, 10).await.unwrap();
        let rest = store
            .claim_schedules(2, 1_010, 70_000, 10_000)
            .await
            .unwrap();
        assert_eq!(first.len(), 10);
        assert!(!rest.is_empty());
        for s in first.iter().chain(&rest) {
            assert!(
                s.partition == 2 && !s.paused && s.next_due <= Some(1_010),
                "{s:?}"
            );
        }
        let newest_first = first.iter().filter_map(|s| s.next_due).max();
        assert!(rest.iter().all(|s| s.next_due >= newest_first));
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn counting_active_runs_reads_only_an_index() {
        let dir = std::env::temp_dir().join(format!("eflow-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(
            &dir.join("eflow.db").display().to_string(),
            Durability::Full,
        )
        .await
        .map(|(s, _)| s)
        .unwrap();
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {ACTIVE_RUNS}"))
            .fetch_all(&store.read)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect();
        assert!(
            plan.iter()
                .any(|d| d.contains("COVERING INDEX runs_tenant_active")),
            "{plan:?}"
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
