//! Every history query reads through an index in page order: no full scan of
//! the runs and no sort of the matches, so a page costs the same at millions of
//! runs as at ten. The plans are printed (`--nocapture`) for BENCHMARKS.md.
//! On SQLite and on PostgreSQL (whose planner weighs the rows, so its test
//! fills the table first).

mod common;

use eflow_runtime::history::{HistoryStore, PopulationQuery, RunQuery};
use sqlx::postgres::PgPoolOptions;

fn queries() -> Vec<(&'static str, RunQuery)> {
    let t = || Some("acme".to_string());
    vec![
        (
            "tenant",
            RunQuery {
                tenant: t(),
                ..RunQuery::default()
            },
        ),
        (
            "tenant + flow",
            RunQuery {
                tenant: t(),
                flow: Some("Retrain".into()),
                ..RunQuery::default()
            },
        ),
        (
            "tenant + flow + version",
            RunQuery {
                tenant: t(),
                flow: Some("Retrain".into()),
                version: Some("sha256:00".into()),
                ..RunQuery::default()
            },
        ),
        (
            "tenant + status",
            RunQuery {
                tenant: t(),
                status: Some("failed".into()),
                ..RunQuery::default()
            },
        ),
        (
            "tenant + error",
            RunQuery {
                tenant: t(),
                error: Some("Timeout".into()),
                ..RunQuery::default()
            },
        ),
        (
            "tenant + failed step",
            RunQuery {
                tenant: t(),
                step: Some("train".into()),
                ..RunQuery::default()
            },
        ),
        (
            "tenant + key",
            RunQuery {
                tenant: t(),
                key: Some("model-7".into()),
                ..RunQuery::default()
            },
        ),
        (
            "tenant + time range",
            RunQuery {
                tenant: t(),
                since: Some(1),
                until: Some(2),
                ..RunQuery::default()
            },
        ),
        (
            "tenant + status + time range",
            RunQuery {
                tenant: t(),
                status: Some("running".into()),
                since: Some(1),
                until: Some(2),
                ..RunQuery::default()
            },
        ),
        ("admin: all tenants", RunQuery::default()),
        (
            "admin: all tenants by status",
            RunQuery {
                status: Some("failed".into()),
                ..RunQuery::default()
            },
        ),
    ]
}

fn population_queries() -> Vec<(&'static str, PopulationQuery)> {
    let q = |tenant: bool, f: fn(&mut PopulationQuery)| {
        let mut q = PopulationQuery {
            tenant: tenant.then(|| "acme".to_string()),
            flow: "Retrain".into(),
            limit: 100,
            ..PopulationQuery::default()
        };
        f(&mut q);
        q
    };
    vec![
        ("population: tenant", q(true, |_| {})),
        (
            "population: tenant + status",
            q(true, |q| q.status = Some("failed".into())),
        ),
        (
            "population: tenant + version",
            q(true, |q| q.version = Some("sha256:01".into())),
        ),
        (
            "population: tenant + failed twice in a row",
            q(true, |q| q.failed_in_a_row = Some(2)),
        ),
        ("population: admin, all tenants", q(false, |_| {})),
        (
            "population: admin, all tenants by status",
            q(false, |q| q.status = Some("failed".into())),
        ),
        (
            "population: admin, all tenants failed twice in a row",
            q(false, |q| q.failed_in_a_row = Some(2)),
        ),
    ]
}

/// A population cursor: (streak, tenant, key) as JSON, base64.
fn population_cursor(streak: u32, tenant: &str, key: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&(streak, tenant, key)).unwrap())
}

#[tokio::test]
async fn run_queries_use_an_index_in_page_order() {
    let dir = std::env::temp_dir().join(format!("eflow-plans-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let history = HistoryStore::open(&format!("sqlite://{}", dir.join("history.db").display()))
        .await
        .unwrap();
    let mut bad = Vec::new();
    for (name, mut q) in queries() {
        q.limit = 100;
        for cursor in [None, Some("MTIzfHItMQ".to_string())] {
            q.cursor = cursor.clone();
            let plan = history.explain_runs(&q).await.unwrap();
            println!(
                "{name}{}: {}",
                if cursor.is_some() { " (next page)" } else { "" },
                plan.join(" | ")
            );
            let scans = plan
                .iter()
                .any(|l| l.starts_with("SCAN h_runs") && !l.contains("INDEX"));
            let sorts = plan.iter().any(|l| l.contains("TEMP B-TREE"));
            if scans || sorts {
                bad.push(format!("{name}: {}", plan.join(" | ")));
            }
        }
    }
    let plan = history.explain_version_runs().await.unwrap();
    println!("runs on a version: {}", plan.join(" | "));
    if !plan.iter().any(|l| l.contains("h_runs_version")) {
        bad.push(format!("runs on a version: {}", plan.join(" | ")));
    }
    for (name, mut q) in population_queries() {
        for cursor in [None, Some(population_cursor(2, "acme", "model-5"))] {
            q.cursor = cursor.clone();
            let plan = history.explain_population(&q).await.unwrap();
            println!(
                "{name}{}: {}",
                if cursor.is_some() { " (next page)" } else { "" },
                plan.join(" | ")
            );
            let scans = plan
                .iter()
                .any(|l| l.starts_with("SCAN h_population") && !l.contains("INDEX"));
            let sorts = plan.iter().any(|l| l.contains("TEMP B-TREE"));
            if scans || sorts {
                bad.push(format!("{name}: {}", plan.join(" | ")));
            }
        }
    }
    history.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        bad.is_empty(),
        "queries that scan or sort:\n{}",
        bad.join("\n")
    );
}

/// The same queries on PostgreSQL over 300,000 runs of 30 tenants (their
/// statistics analysed): no sequential scan of the runs and no sort.
#[tokio::test]
async fn run_queries_use_an_index_in_page_order_on_postgres() {
    let Some(schema) = common::postgres::Schema::create("hplans").await else {
        return;
    };
    let history = HistoryStore::open(&schema.url).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&schema.url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO h_runs (id, tenant, flow, version, status, created_at, updated_at, error_code, failed_step) \
         SELECT 'r-' || i, CASE WHEN i % 30 = 0 THEN 'acme' ELSE 't' || (i % 30) END, \
           CASE WHEN i % 4 = 0 THEN 'Retrain' ELSE 'Score' END, 'sha256:0' || (i % 3), \
           (ARRAY['running', 'succeeded', 'failed', 'cancelled'])[1 + i % 4], i, i + 1, \
           CASE WHEN i % 4 = 2 THEN (ARRAY['Timeout', 'Http'])[1 + i % 2] END, \
           CASE WHEN i % 4 = 2 THEN (ARRAY['train', 'load', 'score'])[1 + i % 3] END \
         FROM generate_series(1, 300000) i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE h_runs").execute(&pool).await.unwrap();
    // A next page from the middle of the runs: the planner weighs how many
    // rows are left, and sorting the few before an early cursor is cheap.
    use base64::Engine as _;
    let middle = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("150000|r-150000");
    let mut bad = Vec::new();
    for (name, mut q) in queries() {
        q.limit = 100;
        for cursor in [None, Some(middle.clone())] {
            q.cursor = cursor.clone();
            let plan = history.explain_runs(&q).await.unwrap();
            println!(
                "{name}{}: {}",
                if cursor.is_some() { " (next page)" } else { "" },
                plan.join(" | ")
            );
            let node = |l: &String| {
                l.trim_start()
                    .trim_start_matches("->")
                    .trim_start()
                    .to_string()
            };
            let scans = plan
                .iter()
                .any(|l| node(l).starts_with("Seq Scan on h_runs"));
            let sorts = plan
                .iter()
                .any(|l| l.trim_start().starts_with("-> Sort") || l.starts_with("Sort"));
            if scans || sorts {
                bad.push(format!("{name}: {}", plan.join(" | ")));
            }
        }
    }
    // A version's run count (the console's flow page): a range of its index.
    let plan = history.explain_version_runs().await.unwrap();
    println!("runs on a version: {}", plan.join(" | "));
    if !plan.iter().any(|l| l.contains("h_runs_version"))
        || plan.iter().any(|l| l.contains("Seq Scan on h_runs"))
    {
        bad.push(format!("runs on a version: {}", plan.join(" | ")));
    }
    // The population: 200,000 keys of 10 tenants, a third failed (half of
    // those twice in a row), on 3 versions.
    sqlx::query(
        "INSERT INTO h_population (tenant, flow, key, run, status, version, created_at, updated_at, \
           error_code, failed_in_a_row, failed_before) \
         SELECT CASE WHEN i % 10 = 0 THEN 'acme' ELSE 't' || (i % 10) END, \
           CASE WHEN i % 4 < 2 THEN 'Retrain' ELSE 'Score' END, 'model-' || i, 'r-' || i, \
           CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'succeeded' END, 'sha256:0' || (i % 7 % 3), i, i + 1, \
           NULL, CASE WHEN i % 3 = 0 THEN 1 + (i / 3) % 2 ELSE 0 END, 0 \
         FROM generate_series(1, 200000) i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE h_population")
        .execute(&pool)
        .await
        .unwrap();
    for (name, mut q) in population_queries() {
        for cursor in [None, Some(population_cursor(2, "acme", "model-50000"))] {
            q.cursor = cursor.clone();
            let plan = history.explain_population(&q).await.unwrap();
            println!(
                "{name}{}: {}",
                if cursor.is_some() { " (next page)" } else { "" },
                plan.join(" | ")
            );
            let node = |l: &String| {
                l.trim_start()
                    .trim_start_matches("->")
                    .trim_start()
                    .to_string()
            };
            let scans = plan
                .iter()
                .any(|l| node(l).starts_with("Seq Scan on h_population"));
            let sorts = plan.iter().any(|l| node(l).starts_with("Sort"));
            if scans || sorts {
                bad.push(format!("{name}: {}", plan.join(" | ")));
            }
        }
    }
    pool.close().await;
    history.close().await;
    assert!(
        bad.is_empty(),
        "queries that scan or sort:\n{}",
        bad.join("\n")
    );
}
