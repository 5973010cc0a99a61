//! The standing fault suite (`eflow_tests::chaos`): for each seed, a mixed load
//! against the real `eflow serve`, killed at seeded random moments and started
//! again on the same data; no run lost, none stuck, none completed twice, event
//! logs gapless, no purged tenant's row left. `EFLOW_CHAOS_SEEDS=1,2,3` and
//! `EFLOW_CHAOS_SECONDS=600` choose the seeds and each one's load (CI runs the
//! defaults: seeds 1 and 2, 20 s each).

use eflow_tests::chaos::{Config, run_seed};

#[test]
fn killed_at_random_moments_under_load_loses_nothing_and_doubles_nothing() {
    let config = Config::from_env().unwrap_or_else(|e| panic!("{e}"));
    let mut failed = Vec::new();
    for &seed in &config.seeds {
        let report = run_seed(seed, config.seconds);
        eprintln!("{report}");
        if !report.violations.is_empty() {
            failed.push(report);
        }
    }
    let detail: Vec<String> = failed
        .iter()
        .map(|r| {
            format!(
                "{r}\n(server data and log kept in {})\n  {}",
                r.dir.display(),
                r.violations.join("\n  ")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "violations found:\n{}",
        detail.join("\n\n")
    );
}
