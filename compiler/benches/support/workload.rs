//! A generated workspace of realistic flows, for benchmarks and stress tests:
//! a shared types module and `n` modules of about 50 lines, each with its own
//! steps, a lifecycle flow (options, conditions, a fan-out) and bindings.

use std::fmt::Write;

/// The shared module every generated module imports.
pub const SHARED: &str = r#"// Shared types of the generated workspace.

record Data {
    uri: String,
    rows: Int?,
    tags: Map<String, String>,
}

record Model {
    uri: String,
    score: Float,
    metrics: Metrics,
}

record Metrics {
    auc: Float,
    loss: Float?,
}

enum Stage {
    Staging,
    Production,
}
"#;

/// The text of generated module `i` (about 50 lines).
pub fn module(i: usize) -> String {
    let mut s = String::with_capacity(2048);
    let _ = write!(
        s,
        r#"// Generated lifecycle {i}.

from "./shared" import Data, Model, Stage

/// Refreshes the features of tenant group {i}.
remote step Refresh{i}(tenant: String, since: Duration = 7d) -> Data raises SourceDown
remote step Train{i}(data: Data, rate: Float = 0.1) -> Model raises OutOfMemory
call step Segments{i}(data: Data) -> List<String>
call step Register{i}(model: Model, stage: Stage) -> String
call step Report{i}(segment: String, model: Model)

/// Trains one segment.
flow Segment{i}(segment: String, data: Data) -> Model {{
    let model = Train{i}(data: data, rate: 0.5)
        retry 2
    let _report = Report{i}(segment: segment, model: model)
    return model
}}

/// The lifecycle of model {i}.
flow Lifecycle{i}(threshold: Float = 0.8, tenant: String) -> String? {{
    schedule "0 3 * * MON" timezone "Europe/Berlin" overlap skip catchup once input(tenant: "t{i}")
    deadline 30d
    let data = Refresh{i}(tenant: tenant)
        retry 5
        backoff exponential(30s, 1h)
        non_retryable SourceDown
        timeout 2h
    let segments = Segments{i}(data: data)
    let per_segment = for s in segments join all {{
        Segment{i}(segment: s, data: data)
    }}
        parallel 10
    let model = Train{i}(data: data)
        retry 3
        backoff fixed(1m)
        timeout 6h
        after per_segment
    when model.metrics.auc >= threshold and (model.metrics.loss ?? 1.0) < 0.5 {{
        let version = Register{i}(model: model, stage: Stage.Production)
    }}
    return version
}}

bindings dev {{
    Refresh{i} = sim {{ duration: 1s }}
    Train{i} = sim {{ duration: 5s, failure_rate: 0.1 }}
    Segments{i} = sim {{ duration: 10ms }}
    Register{i} = registry {{ kind: "model" }}
    Report{i} = sim {{ duration: 1s }}
}}
"#
    );
    s
}

/// One file of `flows` generated lifecycles (about 50 lines each), all in one module.
pub fn big_module(flows: usize) -> String {
    let mut s = String::from("from \"./shared\" import Data, Model, Stage\n\n");
    for i in 0..flows {
        let m = module(1_000_000 + i);
        // Drop the per-module header and import: one import serves the file.
        let body = m
            .split_once("import Data, Model, Stage\n")
            .map(|(_, b)| b)
            .unwrap_or(&m);
        s.push_str(body);
        s.push('\n');
    }
    s
}
