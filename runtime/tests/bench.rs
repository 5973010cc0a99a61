//! `eflow bench` as users run it (the real binary, an embedded server, a real
//! remote system over loopback HTTP), at a tiny size: the report's fields are
//! present and its counts match what was asked. Timings are not checked.

mod common;

use std::process::Command;

use serde_json::Value;

/// Runs `eflow bench ARGS -o json`; returns its exit success and its report.
fn bench(args: &[&str]) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_eflow"))
        .arg("bench")
        .args(args)
        .args(["-o", "json"])
        .env("EFLOW_LOG", "warn")
        .output()
        .expect("run eflow bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "eflow bench {args:?} printed no JSON report ({e}): stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

fn num(r: &Value, path: &str) -> f64 {
    r.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {path} in {r:#}"))
}

fn count(r: &Value, path: &str) -> u64 {
    r.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no count at {path} in {r:#}"))
}

/// The baseline is measured in every run and eflow's figure is given as a ratio to it.
fn check_baseline(r: &Value, per_sec: f64, ratio_field: &str) {
    let rows = num(r, "/baseline/sqlite_rows_per_sec");
    assert!(num(r, "/baseline/fsync_per_sec") > 0.0, "{r:#}");
    assert!(rows > 0.0, "{r:#}");
    assert_eq!(count(r, "/baseline/sqlite_row_bytes"), 580);
    assert_eq!(r["baseline"]["sqlite_synchronous"], "FULL");
    let ratio = num(r, &format!("/{ratio_field}"));
    let expected = per_sec / (rows / 1000.0);
    assert!(
        (ratio - expected).abs() <= expected * 1e-9 + 1e-9,
        "{ratio_field} {ratio} is not {per_sec} per 1,000 of {rows}"
    );
}

#[test]
fn http_connector_runs_every_step_through_the_remote_system() {
    let (ok, r) = bench(&[
        "--connector",
        "http",
        "--runs",
        "24",
        "--steps",
        "3",
        "--tenants",
        "2",
    ]);
    assert!(ok, "the bench failed: {r:#}");
    assert_eq!(r["connector"], "http");
    assert_eq!(count(&r, "/started"), 24);
    assert_eq!(count(&r, "/start_errors"), 0);
    assert_eq!(count(&r, "/completed"), 24);
    // Each run: started, then one completion per step.
    assert_eq!(count(&r, "/transitions"), 24 * 4);
    // Every step went out to the remote system and came back by callback.
    assert_eq!(count(&r, "/remote/invocations"), 24 * 3);
    assert_eq!(count(&r, "/remote/callbacks"), 24 * 3);
    assert_eq!(count(&r, "/remote/callbacks_failed"), 0);
    assert_eq!(count(&r, "/remote/bad_invocations"), 0);
    // A gap is measured between each callback and the same run's next step.
    assert_eq!(
        count(&r, "/remote/callback_to_next_invocation_samples"),
        24 * 2
    );
    let p50 = num(&r, "/remote/callback_to_next_invocation_p50_ms");
    let p99 = num(&r, "/remote/callback_to_next_invocation_p99_ms");
    assert!(0.0 < p50 && p50 <= p99, "p50 {p50}, p99 {p99}");
    assert!(num(&r, "/server_cpu_ms_per_step") >= 0.0);
    assert!(num(&r, "/remote/cpu_ms_per_step") >= 0.0);
    assert!(num(&r, "/remote/peak_rss_mb") > 0.0);
    assert!(num(&r, "/peak_rss_mb") > 0.0);
    let steps_per_sec = num(&r, "/steps_per_sec");
    let seconds = num(&r, "/seconds");
    assert!(
        (steps_per_sec * seconds - 72.0).abs() < 1e-6,
        "steps/s × seconds is the 72 steps"
    );
    check_baseline(&r, steps_per_sec, "steps_per_sec_per_1000_baseline_rows");
}

#[test]
fn fanout_joins_every_child_and_reads_the_parents_state() {
    for connector in ["sim", "http"] {
        let (ok, r) = bench(&["--fanout", "30", "--connector", connector]);
        assert!(ok, "the {connector} fan-out failed: {r:#}");
        assert_eq!(r["connector"], connector);
        assert_eq!(r["status"], "succeeded", "{r:#}");
        assert_eq!(r["failure"], Value::Null);
        assert_eq!(count(&r, "/fanout"), 30);
        assert_eq!(count(&r, "/children_finished"), 30);
        assert_eq!(count(&r, "/result_len"), 30);
        assert!(r["run"].as_str().is_some_and(|id| !id.is_empty()), "{r:#}");
        // Parent and children each start and complete at least once.
        assert!(count(&r, "/transitions") >= 2 * 31, "{r:#}");
        let largest = count(&r, "/parent_state_bytes_max");
        let last = count(&r, "/parent_state_bytes_last");
        assert!(0 < last && last <= largest, "{r:#}");
        assert!(num(&r, "/peak_rss_mb") > 0.0);
        let per_sec = num(&r, "/children_per_sec");
        assert!(
            (per_sec * num(&r, "/seconds") - 30.0).abs() < 1e-6,
            "children/s × seconds is the 30 children"
        );
        check_baseline(&r, per_sec, "children_per_sec_per_1000_baseline_rows");
    }
}

/// The stores' sizes come with every embedded report; with `--sweep-after
/// 0s` the engine's store holds no finished run at the end, and without it,
/// every one.
#[test]
fn the_report_gives_each_stores_bytes_per_finished_run() {
    for (sweep, left) in [("0s", 0), ("1h", 40)] {
        let (ok, r) = bench(&[
            "--runs",
            "40",
            "--steps",
            "2",
            "--tenants",
            "2",
            "--sweep-after",
            sweep,
        ]);
        assert!(ok, "{r:#}");
        assert_eq!(count(&r, "/completed"), 40);
        assert_eq!(count(&r, "/disk/runs_in_engine_store"), left, "{r:#}");
        let engine = num(&r, "/disk/engine_bytes_per_finished_run");
        let history = num(&r, "/disk/history_bytes_per_finished_run");
        assert!(history > 0.0, "{r:#}");
        assert_eq!(
            engine,
            count(&r, "/disk/engine_store_used_bytes") as f64 / 40.0,
            "{r:#}"
        );
        assert!(
            count(&r, "/disk/engine_store_file_bytes")
                >= count(&r, "/disk/engine_store_used_bytes"),
            "{r:#}"
        );
        assert_eq!(
            r["disk"]["swept_after_seconds"].is_number(),
            sweep == "0s",
            "{r:#}"
        );
    }
}

/// On PostgreSQL and NATS JetStream with two engine processes sharing the
/// shards: every run completes, both processes' transitions are counted, and
/// the report gives pgbench's limit and what the workload cost PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_and_nats_two_engines_share_the_work_and_postgres_is_measured() {
    let Some(schema) = common::postgres::Schema::create("bench").await else {
        return;
    };
    let Some(prefix) = common::nats::Prefix::create("bench").await else {
        return;
    };
    let (ok, r) = tokio::task::spawn_blocking(move || {
        bench(&[
            "--runs",
            "120",
            "--steps",
            "2",
            "--tenants",
            "2",
            "--store",
            &schema.url,
            "--history-store",
            &schema.url,
            "--bus",
            &prefix.url,
            "--shards",
            "4",
            "--engines",
            "2",
        ])
    })
    .await
    .expect("the bench");
    assert!(ok, "{r:#}");
    assert_eq!(count(&r, "/completed"), 120, "{r:#}");
    // A start and each step's result, counted in both processes, each once
    // (an input JetStream delivers again is refused, not applied again).
    assert_eq!(count(&r, "/transitions"), 120 * 3, "{r:#}");
    let backend = r["backend"].as_str().expect("backend");
    assert!(backend.contains("2 engine processes"), "{backend}");
    assert!(r["disk"].is_null(), "no SQLite files to measure: {r:#}");
    let pg = &r["postgres"];
    assert!(num(pg, "/baseline/commits_per_sec") > 0.0, "{r:#}");
    assert!(num(pg, "/baseline/rows_per_sec") > 0.0, "{r:#}");
    assert_eq!(count(pg, "/baseline/row_bytes"), 580);
    assert!(count(pg, "/commits") > 0, "{r:#}");
    assert!(num(pg, "/wal_bytes_per_transition") > 0.0, "{r:#}");
    assert!(num(pg, "/rows_written_per_transition") > 0.0, "{r:#}");
}

/// Options that need a shared store and bus are refused, with what to add.
#[test]
fn engines_without_a_shared_store_and_bus_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(["bench", "--runs", "1", "--engines", "2"])
        .output()
        .expect("run eflow bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--store postgres://") && err.contains("--bus nats://"),
        "{err}"
    );
}

/// `eflow bench --console` against a real server filled as the docs say
/// (`eflow bench --server URL --runs N --keys K`): every page it times
/// answers, each with its samples, and the history's runs are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_bench_times_every_page_of_a_filled_server() {
    let server = common::binary::eflow("bench-console", &[]).await;
    let url = format!("http://{}", server.addr);
    let (ok, filled) = bench(&[
        "--server",
        &url,
        "--token",
        common::ADMIN,
        "--runs",
        "40",
        "--steps",
        "2",
        "--keys",
        "8",
        "--tenants",
        "2",
    ]);
    assert!(ok, "{filled:#}");
    assert_eq!(count(&filled, "/completed"), 40, "{filled:#}");
    let data = server.data.to_str().expect("a UTF-8 path").to_string();
    let (ok, r) = bench(&[
        "--console",
        "--server",
        &url,
        "--token",
        common::ADMIN,
        "--samples",
        "3",
        "--data",
        &data,
    ]);
    assert!(ok, "{r:#}");
    // The runs bench waited for its runs; the history may still be writing
    // the last ones when the console bench counts.
    assert!((1..=40).contains(&count(&r, "/runs")), "{r:#}");
    assert!(count(&r, "/history_events") >= count(&r, "/runs"), "{r:#}");
    let pages = r["pages"].as_array().expect("pages");
    let names: Vec<&str> = pages.iter().filter_map(|p| p["page"].as_str()).collect();
    for page in [
        "overview",
        "runs",
        "runs by flow",
        "runs by status (failed)",
        "runs by error code (none match)",
        "runs by key",
        "population",
        "population, failed twice in a row",
        "a run",
        "a page of a run's events (API, 100)",
    ] {
        assert!(names.contains(&page), "{page} in {names:?}");
    }
    for p in pages {
        assert_eq!(p["samples"], 3, "{p}");
        assert!(num(p, "/p99_ms") >= num(p, "/p50_ms"), "{p}");
        assert!(count(p, "/bytes") > 0, "{p}");
    }
    assert!(num(&r, "/baseline/sqlite_rows_per_sec") > 0.0, "{r:#}");
    // Without a server to time it says what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(["bench", "--console"])
        .output()
        .expect("run eflow bench");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--runs 1000000 --steps 3 --keys 10000"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--bulk N`: N failed runs of one tenant, previewed and retried in bulk
/// while another tenant's requests are timed; every run is counted once and
/// acted on, and the other tenant's latencies are there beside the baseline.
#[test]
fn bulk_retries_every_failed_run_and_times_the_other_tenant() {
    let (ok, r) = bench(&["--bulk", "300", "--load-period", "1s"]);
    assert!(ok, "the bulk bench failed: {r:#}");
    assert_eq!(r["failure"], Value::Null, "{r:#}");
    assert_eq!(count(&r, "/runs"), 300);
    assert_eq!(count(&r, "/setup/started"), 300);
    assert_eq!(count(&r, "/setup/start_errors"), 0);
    assert!(num(&r, "/setup/seconds") > 0.0, "{r:#}");
    assert_eq!(count(&r, "/preview_runs"), 300, "{r:#}");
    assert_eq!(r["preview_more"], false, "{r:#}");
    assert_eq!(r["preview_ms_each"].as_array().map(Vec::len), Some(5));
    assert!(num(&r, "/preview_ms") > 0.0, "{r:#}");
    assert_eq!(r["job_state"], "done", "{r:#}");
    assert!(r["job"].as_str().is_some_and(|id| !id.is_empty()), "{r:#}");
    assert_eq!(count(&r, "/bulk_rate"), 100_000);
    assert_eq!(count(&r, "/selected"), 300, "{r:#}");
    assert_eq!(count(&r, "/acted"), 300, "{r:#}");
    assert_eq!(count(&r, "/skipped"), 0, "{r:#}");
    assert_eq!(count(&r, "/errors"), 0, "{r:#}");
    assert!(num(&r, "/retried_runs_ended_seconds") > 0.0, "{r:#}");
    assert_ne!(r["tenant"], r["other_tenant"], "{r:#}");
    let per_sec = num(&r, "/acted_per_sec");
    assert!(
        (per_sec * num(&r, "/seconds") - 300.0).abs() < 1e-6,
        "acted/s × seconds is the 300 runs"
    );
    for load in ["load_baseline", "load_during_job"] {
        let l = &r[load];
        assert!(count(l, "/requests") > 0, "{load}: {r:#}");
        assert_eq!(count(l, "/errors"), 0, "{load}: {r:#}");
        let (p50, p99) = (num(l, "/p50_ms"), num(l, "/p99_ms"));
        assert!(0.0 < p50 && p50 <= p99, "{load}: p50 {p50}, p99 {p99}");
        for field in ["list_p50_ms", "list_p99_ms", "start_p50_ms", "start_p99_ms"] {
            assert!(num(l, &format!("/{field}")) > 0.0, "{load}.{field}: {r:#}");
        }
    }
    assert!(num(&r, "/load_p99_ratio") > 0.0, "{r:#}");
    assert!(num(&r, "/peak_rss_mb") > 0.0, "{r:#}");
    check_baseline(&r, per_sec, "acted_per_sec_per_1000_baseline_rows");
}

/// `--bulk` with options it cannot work with is refused before anything
/// starts, saying what to change.
#[test]
fn bulk_with_options_it_cannot_use_is_refused() {
    for (args, says) in [
        (&["--bulk", "0"][..], "--bulk 0"),
        (&["--bulk", "10", "--bulk-rate", "0"][..], "--bulk-rate"),
        (&["--bulk", "10", "--load-rate", "0"][..], "--load-rate"),
        (
            &["--bulk", "10", "--connector", "http"][..],
            "--connector http",
        ),
        (&["--bulk", "10", "--no-history"][..], "--no-history"),
        (&["--bulk", "10", "--fanout", "10"][..], "--fanout"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_eflow"))
            .arg("bench")
            .args(args)
            .output()
            .expect("run eflow bench");
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
