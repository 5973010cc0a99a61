//! Latency of the language server on a 5,000-line file, measured the way an editor
//! sees it: the real binary over stdio, wall-clock time from sending a message to
//! receiving the answer.
//!
//! - diagnostics after an edit: `didChange`, then the `publishDiagnostics` of that
//!   version (the debounce set to 0 ms, so this is the work itself);
//! - completion right after an edit (the usual case while typing);
//! - hover with the analysis up to date, and hover right after an edit;
//! - the server's resident memory at the end.
//!
//! `cargo bench -p eflow-lsp` prints p50/p99 of each; BENCHMARKS.md keeps them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, Fixture, at, pos};

const ROUNDS: usize = 200;

/// A module of `blocks` record + step + flow blocks, about 49 lines each.
fn workspace_file(blocks: usize) -> String {
    let mut s = String::from(
        "from \"std/ml\" import BuildFeatures, Evaluate, ModelVersion, RegisterModel, Stage, Train, TrainingSpec, Transformation, Dataset\nfrom \"std/approval\" import Approve\n\n",
    );
    for i in 0..blocks {
        s.push_str(&format!(
            r#"/// Input of block {i}.
record Input{i} {{
    /// Where.
    uri: String,
    rows: Int?,
}}

/// Loads block {i}.
call step Load{i}(tenant: String, source: Input{i}) -> Dataset raises NotFound

/// Retrains block {i}.
flow Retrain{i}(
    model_name: String,
    threshold: Float = 0.8,
    transformation: Transformation = Transformation {{
        name: "f",
        code_uri: "git://x",
        params: {{ "lookback_days": "90" }},
    }},
    spec: TrainingSpec,
) -> ModelVersion? {{
    deadline 10d
    let snapshot = Load{i}(tenant: run.tenant, source: Input{i} {{ uri: "s3://x", rows: none }})
        retry 5
        non_retryable NotFound
    let features = BuildFeatures(source: snapshot, transformation: transformation, label: "y")
        retry 3
        timeout 2h
    let model = Train(features: features, spec: spec)
        retry 4
        backoff exponential(5m, 1h)
    let eval = Evaluate(
        model: model,
        data: features.holdout,
        label: features.label,
        primary_metric: "auc",
    )
    let decision = Approve(subject: eval, summary: "ok?")
    when decision.approved and eval.primary >= threshold {{
        let version = RegisterModel(
            name: model_name,
            model: model,
            evaluation: eval,
            stage: Stage.Staging,
        )
    }}
    return version
}}

"#
        ));
    }
    s
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i.min(samples.len() - 1)]
}

fn report(name: &str, samples: &mut [Duration]) {
    let p50 = percentile(samples, 0.50);
    let p99 = percentile(samples, 0.99);
    println!(
        "{name:<40} p50 {:>7.2} ms   p99 {:>7.2} ms   (n = {})",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.len()
    );
}

fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 5 } else { ROUNDS };
    let text = workspace_file(102);
    let lines = text.lines().count();
    let fx = Fixture::new(&[("big.eflow", &text)]);
    let uri = fx.uri("big.eflow");
    let mut c = Client::start(
        fx.dir.path(),
        support::editor_caps(),
        json!({ "diagnosticsDelayMs": 0 }),
    );
    c.open(&uri, &text);
    let first = c.diagnostics(&uri);
    assert!(
        first.is_empty(),
        "the generated file has diagnostics: {first:?}"
    );
    println!(
        "eflow-lsp on a {lines}-line file ({} KiB), {rounds} rounds each",
        text.len() / 1024
    );

    // The edit: a parameter default in the middle of the file, alternately a type
    // error and valid again, so every edit changes the diagnostics.
    let anchor = "threshold: Float = 0.8";
    let middle = text.len() / 2;
    let at_middle = middle + text[middle..].find(anchor).expect("anchor") + anchor.len() - 3;
    let edit_pos = pos(&text, &text[at_middle..at_middle + 3], 0);
    let edit_pos = {
        // `pos` finds the first occurrence; compute the one in the middle instead.
        let before = &text[..at_middle];
        let line = before.matches('\n').count();
        let col = at_middle - before.rfind('\n').map_or(0, |i| i + 1);
        let _ = edit_pos;
        json!({ "line": line, "character": col })
    };
    let range = json!({ "start": edit_pos, "end": { "line": edit_pos["line"], "character": edit_pos["character"].as_u64().unwrap_or(0) + 3 } });
    let mut version = 1;
    let mut broken = false;
    let mut edit = |c: &mut Client| {
        version += 1;
        broken = !broken;
        c.change_range(
            &uri,
            version,
            range.clone(),
            if broken { "\"x\"" } else { "0.8" },
        );
        version
    };

    let mut diag = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let v = edit(&mut c);
        let _ = c.wait_for("textDocument/publishDiagnostics", |p| p["version"] == v);
        diag.push(start.elapsed());
    }

    // Completion at `features.` of a flow near the end, right after each edit,
    // as while typing: on a second server with the default 150 ms debounce, so
    // the diagnostics of the edit are not yet being computed.
    let probe = text.rfind("data: features.holdout").expect("probe") + "data: features.".len();
    let probe_pos = {
        let before = &text[..probe];
        json!({ "line": before.matches('\n').count(), "character": probe - before.rfind('\n').map_or(0, |i| i + 1) })
    };
    let mut typing = Client::start(fx.dir.path(), support::editor_caps(), json!({}));
    typing.open(&uri, &text);
    let _ = typing.diagnostics(&uri);
    let mut completion = Vec::new();
    let mut tv = 1;
    for i in 0..rounds {
        tv += 1;
        // Type and delete a character in a comment-free spot far from the probe.
        let r = json!({ "start": edit_pos, "end": edit_pos });
        let r2 = json!({ "start": edit_pos, "end": { "line": edit_pos["line"], "character": edit_pos["character"].as_u64().unwrap_or(0) + 1 } });
        if i % 2 == 0 {
            typing.change_range(&uri, tv, r, "1");
        } else {
            typing.change_range(&uri, tv, r2, "");
        }
        let start = Instant::now();
        let r = typing.request("textDocument/completion", at(&uri, probe_pos.clone()));
        completion.push(start.elapsed());
        assert!(support::labels(&r).contains(&"holdout".to_string()));
        // A pause between keystrokes, shorter than the debounce.
        std::thread::sleep(Duration::from_millis(20));
    }
    // Completion while the analysis is being recomputed after an edit (the
    // request waits for it: the analysis runs on the main thread).
    let mut completion_busy = Vec::new();
    for _ in 0..rounds {
        edit(&mut c);
        let start = Instant::now();
        let _ = c.request("textDocument/completion", at(&uri, probe_pos.clone()));
        completion_busy.push(start.elapsed());
    }
    typing.shutdown();
    c.backlog.clear();

    // Hover on a `let` name, analysis up to date.
    let let_pos = {
        let at = text.rfind("let model").expect("let") + 5;
        let before = &text[..at];
        json!({ "line": before.matches('\n').count(), "character": at - before.rfind('\n').map_or(0, |i| i + 1) })
    };
    let _ = c.request("textDocument/hover", at(&uri, let_pos.clone()));
    let mut hover = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let r = c.request("textDocument/hover", at(&uri, let_pos.clone()));
        hover.push(start.elapsed());
        assert!(
            r["contents"]["value"]
                .as_str()
                .unwrap_or("")
                .contains("let model: Model")
        );
    }
    let mut hover_after_edit = Vec::new();
    for _ in 0..rounds {
        edit(&mut c);
        let start = Instant::now();
        let _ = c.request("textDocument/hover", at(&uri, let_pos.clone()));
        hover_after_edit.push(start.elapsed());
    }
    c.backlog.clear();

    report("diagnostics after an edit (push)", &mut diag);
    report("completion while typing", &mut completion);
    report("completion during a re-check", &mut completion_busy);
    report("hover", &mut hover);
    report("hover right after an edit", &mut hover_after_edit);
    let pid = c.pid();
    if let (Some(rss), Some(peak)) = (memory_kib(pid, "VmRSS:"), memory_kib(pid, "VmHWM:")) {
        println!(
            "server memory: {} MiB resident, {} MiB peak",
            rss / 1024,
            peak / 1024
        );
    }
    c.shutdown();
}
