//! The README's quickstart, command by command, with the real `eflow` binary: a
//! server in a directory of its own, the CLI beside it, the retraining example
//! deployed as it ships (simulated compute), a person's approval, the registered
//! model's lineage, the schedules. About a minute and a half of simulated work.

use std::time::Duration;

use eflow_tests::{Server, copy_dir, repo, wait_for};
use serde_json::Value;

#[test]
fn the_readme_quickstart_runs_end_to_end() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    copy_dir(&repo().join("examples"), &root.join("examples"));
    let server = Server::start(root);

    let created = server.ok(&["tenant", "create", "acme"]);
    assert!(created.contains("token"), "prints acme's token:\n{created}");
    let deployed = server.ok(&["deploy", "examples/retraining.eflow", "--tenant", "acme"]);
    assert!(deployed.contains("Retrain"), "{deployed}");
    let started = server.ok(&[
        "run",
        "start",
        "Retrain",
        "--tenant",
        "acme",
        "--id",
        "churn-1",
        "--input",
        r#"{"model_name": "churn", "threshold": 0}"#,
    ]);
    // The README's run, named as an admin names a tenant's run.
    let run = "acme:churn-1".to_owned();
    assert!(
        started.contains(&run),
        "`run start` names the run:\n{started}"
    );
    let runs = server.json(&["run", "list"]);
    assert_eq!(runs["items"][0]["id"], run.as_str(), "{runs}");
    assert!(server.ok(&["run", "list"]).contains(&run));

    // The run waits for a person about a minute and a half in (simulated steps,
    // whose outcomes follow from the run's id: the README's id meets no simulated
    // failure, so a retry here means the README's promise no longer holds).
    let pending = wait_for("the approval", Duration::from_secs(300), || {
        let r = server.json(&["run", "get", &run]);
        let retried = r["steps"].as_array().and_then(|steps| {
            steps
                .iter()
                .find(|s| s["attempt"].as_u64().is_some_and(|a| a > 1) || s["status"] == "failed")
                .cloned()
        });
        assert!(
            retried.is_none(),
            "the README's run met a simulated failure, so it would not reach its approval in \
             about 1.5 minutes: pick an id in README.md whose simulated steps all succeed: {}",
            retried.unwrap_or_default()
        );
        let approvals = server.json(&["approvals"]);
        approvals
            .as_array()
            .and_then(|a| a.iter().find(|a| a["run"] == run.as_str()).cloned())
    });
    assert!(server.ok(&["approvals"]).contains(&run));
    let step = pending["step"].as_str().expect("the approval's step");
    assert_eq!(step, "decision", "the README approves the step `decision`");
    server.ok(&[
        "approve",
        &run,
        "decision",
        "--approve",
        "--comment",
        "AUC looks right",
    ]);

    let done = wait_for("the run to finish", Duration::from_secs(120), || {
        let r = server.json(&["run", "get", &run]);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(server.ok(&["run", "get", &run]).contains("succeeded"));

    // The registered model version and its lineage: this run.
    let registry = server.json(&["registry", "--tenant", "acme"]);
    let churn: Vec<&Value> = registry
        .as_array()
        .map(|e| e.iter().filter(|e| e["name"] == "churn").collect())
        .unwrap_or_default();
    assert_eq!(churn.len(), 1, "one version of churn: {registry}");
    assert!(churn[0].to_string().contains(&run), "lineage names the run");
    assert!(
        server
            .ok(&["registry", "--tenant", "acme"])
            .contains("churn")
    );

    let made = server.ok(&[
        "schedule",
        "create",
        "Retrain",
        "0 3 * * *",
        "--tenant",
        "acme",
        "--key",
        "churn",
        "--input",
        r#"{"model_name": "churn", "threshold": 0}"#,
    ]);
    assert!(made.contains("churn"), "{made}");
    let schedules = server.ok(&["schedule", "list"]);
    assert!(schedules.contains("Retrain"), "{schedules}");
    let by_key = server.json(&["schedule", "list", "--key", "churn"]);
    assert_eq!(by_key.as_array().map(Vec::len), Some(1), "{by_key}");
    assert_eq!(by_key[0]["declared"], false, "{by_key}");
    let preview = server.ok(&[
        "schedule",
        "preview",
        "0 3 * * MON",
        "--tz",
        "Europe/Berlin",
        "--count",
        "5",
    ]);
    // 03:00 in Berlin, printed in UTC: 02:00 in winter, 01:00 in summer.
    let times: Vec<&str> = preview.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(times.len(), 5, "{preview}");
    assert!(
        times
            .iter()
            .all(|t| t.ends_with("T02:00:00Z") || t.ends_with("T01:00:00Z")),
        "{preview}"
    );
}
