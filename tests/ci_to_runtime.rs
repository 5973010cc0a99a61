//! What a team's CI does, then what its runtime does with the result: `eflowc check`
//! and `eflowc compile` as README's "Using eflowc in CI" shows, `eflow deploy` of the
//! compiled JSON to a real `eflow serve`, a run of it to the end, and the history
//! and the registry showing it. The two binaries meet only through files and HTTP.

use std::time::Duration;

use eflow_tests::{Server, eflowc, wait_for};

const PIPELINE: &str = r#"
from "std/ml" import Model, Evaluation, ModelVersion, RegisterModel, Stage

remote step Fit(name: String) -> Model
remote step Score(model: Model) -> Evaluation

flow Pipeline(model_name: String) -> ModelVersion {
    let model = Fit(name: model_name)
    let eval = Score(model: model)
    let version = RegisterModel(name: model_name, model: model, evaluation: eval, stage: Stage.Staging)
    return version
}

// Simulated compute (the `sim` connector), so the test needs no remote system.
bindings dev {
    Fit = sim { duration: 50ms, failure_rate: 0.0 }
    Score = sim { duration: 50ms, failure_rate: 0.0 }
    RegisterModel = registry { kind: "model" }
}
"#;

#[test]
fn compiled_ir_is_deployed_run_and_recorded() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    std::fs::create_dir(root.join("flows")).expect("mkdir");
    std::fs::write(root.join("flows/pipeline.eflow"), PIPELINE).expect("write");

    // CI: check for pull requests, then compile.
    let check = eflowc(
        root,
        &["check", "--format", "github", "--deny-warnings", "flows/"],
    );
    assert!(
        check.status.success(),
        "eflowc check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let compile = eflowc(
        root,
        &["compile", "flows/pipeline.eflow", "-o", "pipeline.json"],
    );
    assert!(
        compile.status.success(),
        "eflowc compile: {}",
        String::from_utf8_lossy(&compile.stderr)
    );
    let ir: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("pipeline.json")).expect("IR written"))
            .expect("the IR is JSON");
    let version = ir["flows"][0]["hash"]
        .as_str()
        .expect("a flow version")
        .to_owned();

    // The runtime: deploy what CI compiled, run it.
    let server = Server::start(root);
    server.ok(&["tenant", "create", "acme"]);
    let deployed = server.ok(&["deploy", "pipeline.json", "--tenant", "acme"]);
    assert!(
        deployed.contains(&version),
        "deploy names the compiled version:\n{deployed}"
    );
    let run = server.json(&[
        "run",
        "start",
        "Pipeline",
        "--tenant",
        "acme",
        "--input",
        r#"{"model_name": "churn"}"#,
    ]);
    let id = run["id"].as_str().expect("a run id").to_owned();
    assert_eq!(run["version"], version.as_str());

    let done = wait_for("the run to finish", Duration::from_secs(30), || {
        let r = server.json(&["run", "get", &id]);
        (r["status"] != "running" && r["status"] != "pending").then_some(r)
    });
    assert_eq!(done["status"], "succeeded", "{done}");

    // History: the run is listed, finished, on the compiled version.
    let listed = wait_for("the history to list it", Duration::from_secs(10), || {
        let page = server.json(&["run", "list", "--tenant", "acme"]);
        page["items"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["id"] == id.as_str()).cloned())
            .filter(|r| r["status"] == "succeeded")
    });
    assert_eq!(listed["version"], version.as_str());
    assert_eq!(listed["flow"], "Pipeline");

    // The registry holds the model the run registered, with its lineage.
    let registry = server.json(&["registry", "--tenant", "acme"]);
    let entry = registry
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "churn"))
        .unwrap_or_else(|| panic!("the model is registered: {registry}"));
    assert!(
        entry.to_string().contains(&id),
        "its lineage names the run: {entry}"
    );
}
