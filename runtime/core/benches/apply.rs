//! Throughput of `apply` and the size of a run's state, on the retraining example.
//!
//! One iteration drives a whole `Retrain` run with realistic outputs (URIs,
//! schemas, metrics): start, six step completions, the approval, the
//! registration and the notification. Criterion reports events/s; the encoded
//! state size after each event is printed once before measuring.

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eflow_compiler::analysis::{Analysis, FsLoader};
use eflow_core::{Event, EventKind, Run, ValidatedBundle, Values, apply, validate};
use serde_json::{Value, json};

fn bundle() -> ValidatedBundle {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let analysis = Analysis::from_paths(&[root], &FsLoader).expect("examples are readable");
    let b = eflow_compiler::lower::emit(&analysis, None).expect("examples compile");
    validate(&b).expect("examples validate")
}

fn dataset(uri: &str) -> Value {
    json!({
        "uri": uri,
        "format": "parquet",
        "schema": {"customer_id": "string", "tenure_days": "int", "spend_30d": "double", "churned": "bool"},
        "rows": 1_250_000,
        "version": "2025-06-02"
    })
}

fn metrics() -> Value {
    json!({"auc": 0.87, "accuracy": 0.91, "rows": 250_000, "extra": {}})
}

fn model() -> Value {
    json!({
        "uri": "s3://models/acme/churn/2025-06-02/model.bin",
        "framework": "xgboost",
        "metrics": metrics(),
        "trained_on": "s3://lake/acme/features/churn/2025-06-02/train",
        "spec": {"framework": "xgboost", "objective": "binary:logistic",
                 "hyperparameters": {"learning_rate": 0.05, "max_depth": 6.0, "n_estimators": 400.0},
                 "resources": "cpu-large", "seed": null}
    })
}

/// The events of one successful run, in order.
fn events() -> Vec<EventKind> {
    let ok = |node: &str, output: Value| EventKind::StepCompleted {
        node: node.into(),
        index: None,
        attempt: 1,
        output,
        output_ref: None,
    };
    vec![
        EventKind::Started {
            input: serde_json::from_value(json!({"model_name": "churn"})).unwrap_or_default(),
            input_refs: Default::default(),
        },
        ok("snapshot", dataset("s3://lake/acme/events/2025-06-02")),
        ok(
            "features",
            json!({
                "train": dataset("s3://lake/acme/features/churn/2025-06-02/train"),
                "holdout": dataset("s3://lake/acme/features/churn/2025-06-02/holdout"),
                "label": "churned",
                "columns": ["tenure_days", "spend_30d"]
            }),
        ),
        ok("model", model()),
        ok(
            "eval",
            json!({
                "model_uri": "s3://models/acme/churn/2025-06-02/model.bin",
                "data_uri": "s3://lake/acme/features/churn/2025-06-02/holdout",
                "primary_metric": "auc", "primary": 0.87, "metrics": metrics(), "passed": true,
                "report_uri": "s3://reports/acme/churn/2025-06-02.html"
            }),
        ),
        ok(
            "decision",
            json!({"approved": true, "outcome": "Approved", "reviewer": "ann@example.com",
                   "comment": "looks good", "decided_at": "2025-06-03T09:12:00Z"}),
        ),
        ok(
            "version",
            json!({"name": "churn", "version": 42, "stage": "Staging", "model": model(),
                   "registered_at": "2025-06-03T09:12:05Z"}),
        ),
        ok("announced", Value::Null),
    ]
}

fn drive(b: &ValidatedBundle, start: &Run, events: &[Event]) -> Run {
    let mut run = start.clone();
    for (i, e) in events.iter().enumerate() {
        match apply(b, &run, e, 1_000 + i as u64, &Values::default()) {
            Ok(t) => run = t.run,
            Err(r) => panic!("event {i} rejected: {r}"),
        }
    }
    run
}

fn bench(c: &mut Criterion) {
    let b = bundle();
    let flow = b.flow("Retrain").expect("Retrain is an example").flow;
    let start = Run::new(
        "tenant-0042/Retrain/2025-06-02T03:00:00Z",
        "tenant-0042",
        flow,
        None,
    );
    let events: Vec<Event> = events()
        .into_iter()
        .enumerate()
        .map(|(i, k)| Event::new(format!("ev-{i:04}"), k))
        .collect();

    // State size after each event: what a store writes per transition.
    let mut run = start.clone();
    let mut sizes = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let t = apply(&b, &run, e, 1_000 + i as u64, &Values::default()).expect("event applies");
        run = t.run;
        sizes.push(run.encoded_size());
    }
    assert!(run.status.is_finished(), "the scripted run finishes");
    eprintln!(
        "Retrain: encoded state after each event (bytes): {sizes:?}; mean {} bytes",
        sizes.iter().sum::<usize>() / sizes.len()
    );

    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("retrain_run", |bencher| {
        bencher.iter(|| drive(&b, &start, &events))
    });
    // The engine's other hot path: decoding and encoding the state record.
    let mid = drive(&b, &start, &events[..4]);
    let bytes = mid.encode();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("decode_encode_state", |bencher| {
        bencher.iter(|| {
            let r: Run = serde_json::from_slice(&bytes).expect("decodes");
            r.encode()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
