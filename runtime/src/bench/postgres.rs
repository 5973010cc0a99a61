//! With `eflow bench --store postgres://…`: the PostgreSQL server's own
//! limit on this machine, measured in the same sitting by `pgbench`, and
//! what the workload cost the server (commits, rows and WAL bytes, from
//! `pg_stat_database` and the WAL position before and after).

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::baseline::{BATCH_ROWS, ROW_BYTES};

/// Each pgbench measure is taken this many times and its median kept.
const WINDOWS: usize = 3;
const WINDOW_SECS: u32 = 2;
/// Clients of the one-row-a-commit measure: enough for PostgreSQL to group
/// commits, as the engine's shards do.
const COMMIT_CLIENTS: u32 = 8;
/// Clients of the batched measure: as many as the machine's cores here.
const BATCH_CLIENTS: u32 = 2;

/// pgbench against the bench's database, before the workload.
#[derive(Debug, Clone, Serialize)]
pub struct PgBaseline {
    /// Commits per second of one `ROW_BYTES` row each, `commit_clients`
    /// clients at once (median of 3 windows of 2 s; slowest and fastest beside it).
    pub commits_per_sec: f64,
    pub commits_per_sec_range: [f64; 2],
    pub commit_clients: u32,
    /// Rows of `ROW_BYTES` committed per second, `batch_rows` to a commit,
    /// `batch_clients` clients at once (median of 3 windows of 2 s).
    pub rows_per_sec: f64,
    pub rows_per_sec_range: [f64; 2],
    pub batch_rows: usize,
    pub batch_clients: u32,
    pub row_bytes: usize,
    pub synchronous_commit: String,
}

/// What the server counted for the bench's database, at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgCounters {
    pub commits: i64,
    pub rows_written: i64,
    pub wal_bytes: i64,
}

/// The workload's cost to PostgreSQL, per transition the engine applied.
#[derive(Debug, Clone, Serialize)]
pub struct PgReport {
    pub baseline: PgBaseline,
    /// Commits of the whole database over the workload (every role's).
    pub commits: i64,
    pub commits_per_sec: f64,
    /// `commits_per_sec` over pgbench's one-row commits per second.
    pub commits_of_pgbench_limit: f64,
    pub rows_written_per_transition: f64,
    pub wal_bytes_per_transition: f64,
    pub transitions_per_commit: f64,
    /// `--hold-transaction`: a transaction was open (with a transaction id
    /// and a snapshot) from before the first start to the end, holding back
    /// what PostgreSQL's vacuum may clean up.
    pub held_transaction_seconds: Option<f64>,
}

/// A transaction held open on the store's database, as a long report or a
/// forgotten session would: it has a transaction id and a snapshot, so no
/// row deleted or updated after it began can be cleaned up while it lasts.
pub struct HeldTransaction {
    conn: PgConnection,
    since: std::time::Instant,
    pub xid: i64,
}

impl HeldTransaction {
    pub async fn open(url: &str) -> anyhow::Result<HeldTransaction> {
        let mut conn = PgConnection::connect(url)
            .await
            .context("connecting to PostgreSQL to hold a transaction open")?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut conn)
            .await?;
        let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
            .fetch_one(&mut conn)
            .await?;
        Ok(HeldTransaction {
            conn,
            since: std::time::Instant::now(),
            xid,
        })
    }

    /// Still open (PostgreSQL answers inside it); how long it has been.
    pub async fn check(&mut self) -> anyhow::Result<f64> {
        let _: i64 = sqlx::query_scalar("SELECT txid_current()")
            .fetch_one(&mut self.conn)
            .await
            .context("the transaction held open was ended by the server")?;
        Ok(self.since.elapsed().as_secs_f64())
    }

    pub async fn end(mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

/// The database's connection string for libpq (pgbench) and the schema
/// eflow's tables are in: sqlx's `options[search_path]=…` is not libpq's.
fn libpq_url(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

impl PgBaseline {
    /// Runs pgbench twice over (one-row commits, then batches) on a table of
    /// its own in the store's schema, dropped afterwards.
    pub async fn measure(url: &str) -> anyhow::Result<PgBaseline> {
        let mut conn = PgConnection::connect(url)
            .await
            .context("connecting to PostgreSQL for pgbench's baseline")?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut conn)
            .await?;
        let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut conn)
            .await?;
        let table = format!(
            "\"{}\".eflow_bench_pgbench_{}",
            schema.replace('"', "\"\""),
            std::process::id()
        );
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, body text NOT NULL)"
        ))
        .execute(&mut conn)
        .await
        .context("creating pgbench's table")?;
        let measured = Self::pgbench(url, &table).await;
        let dropped = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        let ((commits, commits_range), (batches, batches_range)) = measured?;
        dropped.context("dropping pgbench's table")?;
        let rows = |tps: f64| tps * BATCH_ROWS as f64;
        Ok(PgBaseline {
            commits_per_sec: commits,
            commits_per_sec_range: commits_range,
            commit_clients: COMMIT_CLIENTS,
            rows_per_sec: rows(batches),
            rows_per_sec_range: [rows(batches_range[0]), rows(batches_range[1])],
            batch_rows: BATCH_ROWS,
            batch_clients: BATCH_CLIENTS,
            row_bytes: ROW_BYTES,
            synchronous_commit,
        })
    }

    /// (median, [min, max]) transactions per second of the one-row and the
    /// batched script.
    async fn pgbench(url: &str, table: &str) -> anyhow::Result<((f64, [f64; 2]), (f64, [f64; 2]))> {
        let dir =
            std::env::temp_dir().join(format!("eflow-pgbench-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        let one = dir.join("one.sql");
        let batch = dir.join("batch.sql");
        std::fs::write(
            &one,
            format!("INSERT INTO {table} (body) VALUES (repeat('x', {ROW_BYTES}));\n"),
        )?;
        std::fs::write(
            &batch,
            format!(
                "INSERT INTO {table} (body) SELECT repeat('x', {ROW_BYTES}) FROM generate_series(1, {BATCH_ROWS});\n"
            ),
        )?;
        let url = libpq_url(url);
        let result = async {
            let one = windows(&url, &one, COMMIT_CLIENTS).await?;
            let batch = windows(&url, &batch, BATCH_CLIENTS).await?;
            anyhow::Ok((one, batch))
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

/// The median and range of `WINDOWS` pgbench runs of `script`.
async fn windows(
    url: &str,
    script: &std::path::Path,
    clients: u32,
) -> anyhow::Result<(f64, [f64; 2])> {
    let mut tps = Vec::with_capacity(WINDOWS);
    for _ in 0..WINDOWS {
        let out = tokio::process::Command::new("pgbench")
            .arg("-n")
            .args(["-c", &clients.to_string(), "-j", &clients.min(2).to_string()])
            .args(["-T", &WINDOW_SECS.to_string()])
            .arg("-f")
            .arg(script)
            .arg(url)
            .kill_on_drop(true)
            .output()
            .await
            .context("running pgbench (install PostgreSQL's client programs: apt-get install postgresql-client)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            anyhow::bail!(
                "pgbench failed ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tps.push(
            parse_tps(&stdout)
                .with_context(|| format!("no `tps = …` in pgbench's output: {stdout}"))?,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tps.sort_by(|a, b| a.total_cmp(b));
    Ok((tps[tps.len() / 2], [tps[0], tps[tps.len() - 1]]))
}

/// pgbench's `tps = 1234.5 (without initial connection time)`.
fn parse_tps(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

impl PgCounters {
    /// The database's counters now. `pg_stat_database` is updated by each
    /// backend at least once a second while it works, so read it a moment
    /// after the workload has finished.
    pub async fn read(url: &str) -> anyhow::Result<PgCounters> {
        let mut conn = PgConnection::connect(url)
            .await
            .context("connecting to PostgreSQL to read its counters")?;
        let (commits, rows_written): (i64, i64) = sqlx::query_as(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted \
             FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await
        .context("reading pg_stat_database")?;
        let wal_bytes: i64 =
            sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
                .fetch_one(&mut conn)
                .await
                .context("reading the WAL position")?;
        let _ = conn.close().await;
        Ok(PgCounters {
            commits,
            rows_written,
            wal_bytes,
        })
    }
}

impl PgReport {
    pub fn new(
        baseline: PgBaseline,
        before: PgCounters,
        after: PgCounters,
        transitions: u64,
        seconds: f64,
        held_transaction_seconds: Option<f64>,
    ) -> PgReport {
        let commits = after.commits - before.commits;
        let per = |n: i64| n as f64 / transitions.max(1) as f64;
        let commits_per_sec = commits as f64 / seconds.max(f64::MIN_POSITIVE);
        PgReport {
            commits_of_pgbench_limit: commits_per_sec
                / baseline.commits_per_sec.max(f64::MIN_POSITIVE),
            baseline,
            commits,
            commits_per_sec,
            rows_written_per_transition: per(after.rows_written - before.rows_written),
            wal_bytes_per_transition: per(after.wal_bytes - before.wal_bytes),
            transitions_per_commit: transitions as f64 / commits.max(1) as f64,
            held_transaction_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_pgbench_tps_and_drops_sqlx_only_options() {
        let out = "pgbench (15.20)\ntransaction type: one.sql\nlatency average = 1.2 ms\n\
                   initial connection time = 3.1 ms\ntps = 6543.21 (without initial connection time)\n";
        assert_eq!(super::parse_tps(out), Some(6543.21));
        assert_eq!(super::parse_tps("no figure"), None);
        assert_eq!(
            super::libpq_url("postgres://u@h:5432/db?options[search_path]=s"),
            "postgres://u@h:5432/db"
        );
    }
}
