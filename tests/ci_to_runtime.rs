//! What a team's CI does, then what its runtime does with the result: README's
//! "Using eflowc in CI" steps run exactly as written (`eflowc check`, `eflowc
//! compile --out-dir`, `eflow deploy` of the folder, as one bundle) against a real
//! `eflow serve`; `eflow deploy` of a compiled JSON file, a run of it to the end,
//! and the history and the registry showing it. The binaries meet only through
//! files and HTTP.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use eflow_tests::{Server, bin, copy_dir, eflowc, repo, wait_for};

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

/// One step of README's CI example: its command and environment.
struct Step {
    run: String,
    env: Vec<(String, String)>,
}

/// The steps of the YAML block under README's "Using eflowc in CI".
fn readme_ci_steps() -> Vec<Step> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let section = readme
        .split("\n## Using eflowc in CI\n")
        .nth(1)
        .expect("README has a section \"Using eflowc in CI\"");
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section shows the steps as YAML");
    let mut steps: Vec<Step> = Vec::new();
    for line in block.lines() {
        if let Some(run) = line.strip_prefix("- run: ") {
            steps.push(Step {
                run: run.to_string(),
                env: Vec::new(),
            });
        } else if line.trim() != "env:" {
            let (k, v) = line
                .trim()
                .split_once(": ")
                .unwrap_or_else(|| panic!("README's CI step not understood: {line:?}"));
            let step = steps.last_mut().expect("env belongs to a step");
            step.env.push((k.to_string(), v.to_string()));
        }
    }
    steps
}

#[test]
fn the_readme_ci_steps_deploy_every_compiled_flow_as_one_bundle() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    copy_dir(&repo().join("examples"), &root.join("flows"));
    let server = Server::start(root);
    server.ok(&["tenant", "create", "acme"]);
    let token = server.json(&["token", "create", "ci", "--tenant", "acme"]);
    let secrets = BTreeMap::from([
        ("${{ vars.EFLOW_SERVER }}", server.url.clone()),
        (
            "${{ secrets.EFLOW_TOKEN }}",
            token["secret"].as_str().expect("a secret").to_string(),
        ),
    ]);

    let steps = readme_ci_steps();
    assert!(steps.iter().any(|s| s.run.starts_with("eflow deploy")));
    for step in &steps {
        let words: Vec<&str> = step.run.split_whitespace().collect();
        match words.as_slice() {
            // The binaries the harness built from this tree.
            ["cargo", "install", "--path", path] => {
                assert!(
                    repo().join(path).join("Cargo.toml").exists(),
                    "{}",
                    step.run
                );
                continue;
            }
            [program @ ("eflowc" | "eflow"), args @ ..] => {
                let mut cmd = Command::new(bin(program));
                cmd.current_dir(root).args(args);
                // Nothing of the test's own environment leaks into the step.
                cmd.env_remove("EFLOW_SERVER").env_remove("EFLOW_TOKEN");
                for (k, v) in &step.env {
                    let value = secrets
                        .get(v.as_str())
                        .unwrap_or_else(|| panic!("no value for {v} in {}", step.run));
                    cmd.env(k, value);
                }
                let out = cmd.output().expect("the step runs");
                assert!(
                    out.status.success(),
                    "`{}` failed ({}):\n{}{}",
                    step.run,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            _ => panic!(
                "README's CI step runs neither eflowc nor eflow: {}",
                step.run
            ),
        }
    }

    // Every flow CI compiled is deployed, at the version compiled, in one bundle.
    let mut compiled = BTreeMap::new();
    for entry in std::fs::read_dir(root.join("build/ir")).expect("build/ir") {
        let path = entry.expect("an entry").path();
        let ir: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
        for f in ir["flows"].as_array().expect("flows") {
            compiled.insert(
                f["name"].as_str().expect("a name").to_string(),
                f["hash"].as_str().expect("a hash").to_string(),
            );
        }
    }
    assert!(compiled.len() > 5, "{compiled:?}");
    let flows = server.json(&["flows", "--tenant", "acme"]);
    let heads: BTreeMap<String, (String, String)> = flows
        .as_array()
        .expect("a list")
        .iter()
        .filter(|f| f["head"] == true)
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_string(),
                (
                    f["version"].as_str().unwrap_or_default().to_string(),
                    f["bundle"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect();
    let versions: BTreeMap<String, String> = heads
        .iter()
        .map(|(n, (v, _))| (n.clone(), v.clone()))
        .collect();
    assert_eq!(versions, compiled);
    let bundles: std::collections::BTreeSet<&String> = heads.values().map(|(_, b)| b).collect();
    assert_eq!(bundles.len(), 1, "one bundle: {heads:?}");

    // Files of two different compiles deploy nothing: the flow they share
    // differs, and the deploy says which and what to do.
    let text = std::fs::read_to_string(root.join("flows/retraining.eflow")).expect("read");
    std::fs::write(
        root.join("flows/retraining.eflow"),
        text.replacen("retry 3", "retry 4", 1),
    )
    .expect("write");
    let again = eflowc(root, &["compile", "flows/", "--out-dir", "build/new"]);
    assert!(again.status.success());
    std::fs::create_dir(root.join("build/mixed")).expect("mkdir");
    for (from, name) in [("build/ir", "Release.json"), ("build/new", "Retrain.json")] {
        std::fs::copy(
            root.join(from).join(name),
            root.join("build/mixed").join(name),
        )
        .expect("copy");
    }
    let refused = server.eflow(&["deploy", "build/mixed", "--tenant", "acme", "--env", "prod"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("flow `Retrain`") && err.contains("compile them together"),
        "{err}"
    );
    assert_eq!(server.json(&["flows", "--tenant", "acme"]), flows);
    // The new files, as files, deploy together.
    let new: Vec<String> = std::fs::read_dir(root.join("build/new"))
        .expect("build/new")
        .map(|e| e.expect("entry").path().display().to_string())
        .collect();
    let mut args = vec!["deploy"];
    args.extend(new.iter().map(String::as_str));
    args.extend(["--tenant", "acme", "--env", "prod"]);
    let deployed = server.json(&args);
    assert_eq!(
        deployed["flows"].as_array().map(Vec::len),
        Some(compiled.len()),
        "{deployed}"
    );
}
