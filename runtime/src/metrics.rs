//! `GET /metrics`: what a process is doing, in Prometheus' text format, on
//! every role. Counters are this process's since it started; the lag and
//! the outbox are read when scraped. Nothing in it names a tenant or a run.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::engine::Histogram;
use crate::service::Service;

/// The page Prometheus scrapes.
pub async fn render(service: &Service) -> String {
    let engine = service.engine();
    let s = engine.stats();
    let mut out = String::with_capacity(4096);
    let counters = [
        (
            "eflow_transitions_total",
            "Transitions the engine's workers applied.",
            s.transitions.load(Relaxed),
        ),
        (
            "eflow_commits_total",
            "Batches the workers committed.",
            s.commits.load(Relaxed),
        ),
        (
            "eflow_rejected_inputs_total",
            "Inputs the runs refused (a late callback, a stale timer).",
            s.rejected.load(Relaxed),
        ),
        (
            "eflow_runs_finished_total",
            "Runs and subflow children that finished.",
            s.finished.load(Relaxed),
        ),
        (
            "eflow_bytes_written_total",
            "Bytes of states, events, timers and outbox rows committed.",
            s.bytes_written.load(Relaxed),
        ),
        (
            "eflow_scheduled_starts_total",
            "Runs the scheduler started.",
            s.scheduled_starts.load(Relaxed),
        ),
        (
            "eflow_fenced_commits_total",
            "Commits refused because another engine had taken the shard's lease.",
            s.fenced_commits.load(Relaxed),
        ),
        (
            "eflow_shards_taken_total",
            "Shard leases this process took.",
            s.shards_taken.load(Relaxed),
        ),
        (
            "eflow_shards_released_total",
            "Shard leases this process gave up or lost.",
            s.shards_released.load(Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        metric(&mut out, name, help, "counter", value);
    }
    metric(
        &mut out,
        "eflow_shards_held",
        "Shards whose workers run in this process.",
        "gauge",
        s.shards_held.load(Relaxed),
    );
    histogram(
        &mut out,
        "eflow_commit_seconds",
        "How long the store took to commit a worker's batch.",
        &s.commit_seconds,
    );
    if let Ok(Some(lag)) = service.history().behind(engine.bus().events()).await {
        metric(
            &mut out,
            "eflow_history_lag_events",
            "Events committed that this process's history consumer has not written yet.",
            "gauge",
            lag,
        );
    }
    match engine.store().outbox_depth().await {
        Ok(n) => metric(
            &mut out,
            "eflow_outbox_depth",
            "Effects committed and not yet carried out, in the whole store (counted up to 100,000).",
            "gauge",
            n,
        ),
        Err(e) => tracing::debug!(error = %e, "cannot read the outbox's depth for /metrics"),
    }
    out
}

fn metric(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let (counts, sum) = h.read();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, count) in Histogram::BOUNDS.iter().zip(&counts) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let total = counts.last().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}"
    );
}
