//! Every history query reads through an index in page order: no full scan of
//! the runs and no sort of the matches, so a page costs the same at millions of
//! runs as at ten. The plans are printed (`--nocapture`) for BENCHMARKS.md.

use eflow_runtime::history::{HistoryStore, RunQuery};

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
    history.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        bad.is_empty(),
        "queries that scan or sort:\n{}",
        bad.join("\n")
    );
}
