//! Integration tests of the parser: every construct, spans, comments, literals,
//! error recovery, error messages, and robustness on arbitrary input.

use eflow_compiler::analysis::FileId;
use eflow_compiler::syntax::{ast::*, parse};

const SAMPLE: &str = r#"// The retraining pipeline.
from "std/ml" import Dataset, Model as M

/// Quality of a model.
record Metrics<T> {
    /// Area under the curve.
    auc: Float,
    extra: Map<String, List<T>>?,
}

enum Stage { Staging, /// Live traffic.
  Production, }

type Scores = Map<String, Float>

/// Trains a model.
remote step Train(
    /// The data.
    data: Dataset,
    epochs: Int = 10,
) -> Model raises OutOfMemory, InvalidData

call step Register(model: Model, stage: Stage) -> String
approval step Approve<T>(subject: T) -> Bool
wait step Sleep(d: Duration)

flow Retrain(threshold: Float = 0.8, data: Dataset) -> String? {
    deadline 14d
    schedule "0 3 * * MON" timezone "Europe/Berlin" overlap skip catchup all within 7d jitter 10m input(threshold: 0.9)
    let model = Train(data: data, epochs: 5) retry 3 backoff exponential(30s, 1h) non_retryable OutOfMemory timeout 6h after a, b
    let trials = for p in [1, 2, 3] join at_least 2 { Train(data: data, epochs: p) } parallel 5 backoff fixed(1m)
    // a plain comment
    when model.metrics.auc >= threshold and not (run.flow == "x") {
        let reg = Register(model: model, stage: Stage.Production)
    } else {
        return none
    }
    return reg ?? "none"
}

bindings prod {
    /// Trains on the cluster.
    Train = http { url: "https://x/\u{1F600}", timeout: 30s, headers: { "k": "v" }, }
    Approve = approval { approvers: ["a@b.c"], spec: Spec { epochs: -3, rate: 1e-3, ok: true } }
}
"#;

fn parse_ok(text: &str) -> File {
    let (file, diags) = parse(FileId(0), text);
    assert!(diags.is_empty(), "unexpected diagnostics: {diags:#?}");
    file
}

fn parse_err(text: &str) -> (File, Vec<eflow_compiler::diagnostics::Diagnostic>) {
    let (file, diags) = parse(FileId(0), text);
    assert!(!diags.is_empty(), "expected diagnostics for {text:?}");
    (file, diags)
}

/// The byte range of the `n`-th (0-based) occurrence of `needle` in `text`.
fn at(text: &str, needle: &str, n: usize) -> Span {
    let mut from = 0;
    for _ in 0..n {
        from += text[from..].find(needle).expect("needle") + needle.len();
    }
    let start = from + text[from..].find(needle).expect("needle");
    Span::new(start, start + needle.len())
}

fn flow_body(file: &File, index: usize) -> &[Stmt] {
    match &file.items[index].kind {
        ItemKind::Flow(f) => &f.body,
        other => panic!("expected a flow, got {other:?}"),
    }
}

fn return_expr(text: &str) -> Expr {
    let src = format!("flow F() {{\n    return {text}\n}}\n");
    let file = parse_ok(&src);
    match &flow_body(&file, 0)[0].kind {
        StmtKind::Return(e) => e.clone(),
        other => panic!("expected return, got {other:?}"),
    }
}

fn names(path: &Expr) -> Vec<&str> {
    match &path.kind {
        ExprKind::Path(p) => p.iter().map(|i| i.name.as_str()).collect(),
        other => panic!("expected a path, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Constructs.

#[test]
fn sample_parses_without_errors() {
    let file = parse_ok(SAMPLE);
    let kinds: Vec<&str> = file
        .items
        .iter()
        .map(|i| match i.kind {
            ItemKind::Import(_) => "import",
            ItemKind::Record(_) => "record",
            ItemKind::Enum(_) => "enum",
            ItemKind::Alias(_) => "alias",
            ItemKind::Step(_) => "step",
            ItemKind::Flow(_) => "flow",
            ItemKind::Bindings(_) => "bindings",
            ItemKind::Error => "error",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "import", "record", "enum", "alias", "step", "step", "step", "step", "flow", "bindings"
        ]
    );
}

#[test]
fn import_names_and_aliases() {
    let file = parse_ok(SAMPLE);
    let ItemKind::Import(imp) = &file.items[0].kind else {
        panic!()
    };
    assert_eq!(imp.path.value, "std/ml");
    assert_eq!(imp.names.len(), 2);
    assert_eq!(imp.names[0].name.name, "Dataset");
    assert!(imp.names[0].alias.is_none());
    assert_eq!(imp.names[1].local().name, "M");
    assert_eq!(imp.names[1].name.name, "Model");
    // A trailing comma is fine.
    parse_ok("from \"../shared/features\" import Refresh,\n");
}

#[test]
fn record_with_generics_and_optional_types() {
    let file = parse_ok(SAMPLE);
    let ItemKind::Record(r) = &file.items[1].kind else {
        panic!()
    };
    assert_eq!(r.name.name, "Metrics");
    assert_eq!(r.generics[0].name, "T");
    assert_eq!(r.fields.len(), 2);
    assert_eq!(r.fields[0].name.name, "auc");
    let TypeExprKind::Optional(inner) = &r.fields[1].ty.kind else {
        panic!("expected optional: {:?}", r.fields[1].ty)
    };
    let TypeExprKind::Named { name, args } = &inner.kind else {
        panic!()
    };
    assert_eq!(name.name, "Map");
    assert_eq!(args.len(), 2);
    let TypeExprKind::Named { name, args } = &args[1].kind else {
        panic!()
    };
    assert_eq!((name.name.as_str(), args.len()), ("List", 1));
    // The optional's span covers `?`; the inner type's does not.
    assert_eq!(r.fields[1].ty.span, at(SAMPLE, "Map<String, List<T>>?", 0));
    assert_eq!(inner.span, at(SAMPLE, "Map<String, List<T>>", 0));
    parse_ok("record Empty {}\nrecord One { a: Int }\n");
}

#[test]
fn enum_and_alias() {
    let file = parse_ok(SAMPLE);
    let ItemKind::Enum(e) = &file.items[2].kind else {
        panic!()
    };
    let variants: Vec<&str> = e.variants.iter().map(|v| v.name.name.as_str()).collect();
    assert_eq!(variants, ["Staging", "Production"]);
    let ItemKind::Alias(a) = &file.items[3].kind else {
        panic!()
    };
    assert_eq!(a.name.name, "Scores");
    assert!(a.generics.is_empty());
    parse_ok("type Pair<A, B> = Map<A, B>\nenum E {}\n");
}

#[test]
fn steps() {
    let file = parse_ok(SAMPLE);
    let steps: Vec<&StepDecl> = file
        .items
        .iter()
        .filter_map(|i| match &i.kind {
            ItemKind::Step(s) => Some(s),
            _ => None,
        })
        .collect();
    let kinds: Vec<StepKind> = steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            StepKind::Remote,
            StepKind::Call,
            StepKind::Approval,
            StepKind::Wait
        ]
    );
    let train = steps[0];
    assert_eq!(train.kind_span, at(SAMPLE, "remote", 0));
    assert_eq!(train.name.name, "Train");
    assert_eq!(train.params.len(), 2);
    assert_eq!(train.params[1].name.name, "epochs");
    assert!(matches!(
        train.params[1].default,
        Some(Expr {
            kind: ExprKind::Int(10),
            ..
        })
    ));
    assert_eq!(train.params[1].span, at(SAMPLE, "epochs: Int = 10", 0));
    let raises: Vec<&str> = train.raises.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(raises, ["OutOfMemory", "InvalidData"]);
    assert!(train.output.is_some());
    assert_eq!(steps[2].generics[0].name, "T");
    assert!(steps[3].output.is_none());
    assert!(steps[3].raises.is_empty());
}

#[test]
fn flow_statements() {
    let file = parse_ok(SAMPLE);
    let ItemKind::Flow(flow) = &file.items[8].kind else {
        panic!()
    };
    assert_eq!(flow.name.name, "Retrain");
    assert_eq!(flow.params.len(), 2);
    assert!(matches!(
        flow.params[0].default,
        Some(Expr {
            kind: ExprKind::Float(f),
            ..
        }) if f == 0.8
    ));
    assert!(matches!(
        flow.output.as_ref().map(|t| &t.kind),
        Some(TypeExprKind::Optional(_))
    ));
    let body = &flow.body;
    assert_eq!(body.len(), 6);
    assert!(matches!(
        body[0].kind,
        StmtKind::Deadline(DurationLit {
            millis: 1_209_600_000,
            ..
        })
    ));

    let StmtKind::Schedule(sched) = &body[1].kind else {
        panic!()
    };
    assert_eq!(sched.cron.value, "0 3 * * MON");
    let [tz, overlap, catchup, jitter, input] = &sched.clauses[..] else {
        panic!("{:?}", sched.clauses)
    };
    assert!(matches!(&tz.kind, ScheduleClauseKind::Timezone(s) if s.value == "Europe/Berlin"));
    assert!(matches!(&overlap.kind, ScheduleClauseKind::Overlap(p) if p.name == "skip"));
    assert!(matches!(
        &catchup.kind,
        ScheduleClauseKind::Catchup { policy, within: Some(DurationLit { millis: 604_800_000, .. }) }
            if policy.name == "all"
    ));
    assert!(matches!(
        &jitter.kind,
        ScheduleClauseKind::Jitter(DurationLit {
            millis: 600_000,
            ..
        })
    ));
    assert!(matches!(&input.kind, ScheduleClauseKind::Input(args) if args.len() == 1));
    assert_eq!(catchup.span, at(SAMPLE, "catchup all within 7d", 0));

    let StmtKind::Let(model) = &body[2].kind else {
        panic!()
    };
    assert_eq!(model.name.name, "model");
    let StepExpr::Call(call) = &model.value else {
        panic!()
    };
    assert_eq!(call.callee.name, "Train");
    assert_eq!(call.args.len(), 2);
    assert_eq!(call.args[1].name.name, "epochs");
    assert_eq!(call.span, at(SAMPLE, "Train(data: data, epochs: 5)", 0));
    let opts: Vec<&StepOptionKind> = model.options.iter().map(|o| &o.kind).collect();
    assert!(matches!(
        opts[0],
        StepOptionKind::Retry(IntLit { value: 3, .. })
    ));
    assert!(matches!(
        opts[1],
        StepOptionKind::Backoff(Backoff::Exponential {
            initial: DurationLit { millis: 30_000, .. },
            max: DurationLit {
                millis: 3_600_000,
                ..
            }
        })
    ));
    assert!(matches!(opts[2], StepOptionKind::NonRetryable(e) if e[0].name == "OutOfMemory"));
    assert!(matches!(
        opts[3],
        StepOptionKind::Timeout(DurationLit {
            millis: 21_600_000,
            ..
        })
    ));
    assert!(matches!(opts[4], StepOptionKind::After(a) if a.len() == 2));
    assert_eq!(model.options[4].span, at(SAMPLE, "after a, b", 0));
    // The statement ends at its last token, not at the whitespace after it.
    let line = SAMPLE
        .lines()
        .find(|l| l.contains("let model"))
        .expect("line");
    assert_eq!(body[2].span, at(SAMPLE, line.trim(), 0));

    let StmtKind::Let(trials) = &body[3].kind else {
        panic!()
    };
    let StepExpr::ForEach(fe) = &trials.value else {
        panic!()
    };
    assert_eq!(fe.var.name, "p");
    assert!(matches!(fe.over.kind, ExprKind::List(ref xs) if xs.len() == 3));
    assert!(
        matches!(&fe.join.policy, JoinPolicy::AtLeast(k) if k.kind == ExprKind::Int(2)),
        "{:?}",
        fe.join.policy
    );
    assert_eq!(fe.join.span, at(SAMPLE, "at_least 2", 0));
    assert_eq!(fe.body.callee.name, "Train");
    assert!(matches!(
        trials.options[0].kind,
        StepOptionKind::Parallel(IntLit { value: 5, .. })
    ));
    assert!(matches!(
        trials.options[1].kind,
        StepOptionKind::Backoff(Backoff::Fixed(DurationLit { millis: 60_000, .. }))
    ));

    let StmtKind::When(when) = &body[4].kind else {
        panic!()
    };
    assert!(matches!(
        when.cond.kind,
        ExprKind::Binary { op: BinOp::And, .. }
    ));
    assert_eq!(when.then_body.len(), 1);
    let else_body = when.else_body.as_ref().expect("else");
    assert!(matches!(
        else_body[0].kind,
        StmtKind::Return(Expr {
            kind: ExprKind::None,
            ..
        })
    ));
    // A `when` statement spans up to the `}` of its `else` block.
    let when_start = at(SAMPLE, "when model", 0).start;
    let else_close = at(SAMPLE, "return none\n    }", 0).end;
    assert_eq!(
        body[4].span,
        Span::new(when_start as usize, else_close as usize)
    );

    assert!(matches!(
        &body[5].kind,
        StmtKind::Return(Expr {
            kind: ExprKind::Binary {
                op: BinOp::Coalesce,
                ..
            },
            ..
        })
    ));
}

#[test]
fn deadline_and_step_timeout() {
    // `timeout` after a call is the step's option, even on its own line; the flow's
    // limit is `deadline`, wherever it stands among the statements.
    let src = "flow F() {\n    let a = A()\n        retry 2\n    timeout 1h\n    deadline 3d\n    return a\n}\n";
    let file = parse_ok(src);
    let body = flow_body(&file, 0);
    assert_eq!(body.len(), 3);
    let StmtKind::Let(a) = &body[0].kind else {
        panic!()
    };
    assert!(matches!(
        a.options[1].kind,
        StepOptionKind::Timeout(DurationLit {
            millis: 3_600_000,
            ..
        })
    ));
    assert!(matches!(
        body[1].kind,
        StmtKind::Deadline(DurationLit {
            millis: 259_200_000,
            ..
        })
    ));
    assert_eq!(body[1].span, at(src, "deadline 3d", 0));
}

#[test]
fn timeout_as_a_statement_points_to_deadline() {
    let help =
        "a flow's overall time limit is written `deadline 14d`; `timeout` applies to one step";
    // First in the body, after a `return`, a `schedule`, a `deadline` or a `when`.
    for body in [
        "    timeout 14d\n    let a = A()\n",
        "    let a = A()\n    return a\n    timeout 14d\n",
        "    schedule \"0 3 * * *\" timezone \"UTC\"\n    timeout 14d\n",
        "    deadline 1d\n    timeout 14d\n",
        "    when x {\n        let a = A()\n    }\n    timeout 14d\n",
        "    when x {\n        timeout 14d\n    }\n",
    ] {
        let src = format!("flow F() {{\n{body}}}\n");
        let (file, diags) = parse_err(&src);
        assert_eq!(diags.len(), 1, "{src}: {diags:#?}");
        assert_eq!(diags[0].help.as_deref(), Some(help), "{src}");
        assert_eq!(diags[0].primary.span, at(&src, "timeout", 0), "{src}");
        // The rest of the flow is kept.
        assert!(matches!(file.items[0].kind, ItemKind::Flow(_)));
    }
    // At the top level, it is not a statement at all.
    let d = first("timeout 14d\nrecord A {}\n");
    assert!(
        d.help.as_deref().unwrap_or("").contains("step option"),
        "{d:?}"
    );
}

#[test]
fn join_policies() {
    for (src, kind) in [
        ("all", "all"),
        ("any", "any"),
        ("at_least 3", "at_least"),
        ("at_least min_ok", "at_least"),
        ("at_least eval.quorum ?? 2", "at_least"),
    ] {
        let text = format!("flow F() {{\n let r = for x in xs join {src} {{ S(x: x) }}\n}}\n");
        let file = parse_ok(&text);
        let StmtKind::Let(l) = &flow_body(&file, 0)[0].kind else {
            panic!()
        };
        let StepExpr::ForEach(fe) = &l.value else {
            panic!()
        };
        let got = match &fe.join.policy {
            JoinPolicy::All => "all",
            JoinPolicy::Any => "any",
            JoinPolicy::AtLeast(_) => "at_least",
        };
        assert_eq!(got, kind, "{src}");
    }
}

#[test]
fn bindings() {
    let file = parse_ok(SAMPLE);
    let ItemKind::Bindings(b) = &file.items[9].kind else {
        panic!()
    };
    assert_eq!(b.env.name, "prod");
    assert_eq!(b.entries.len(), 2);
    let train = &b.entries[0];
    assert_eq!(train.step.name, "Train");
    assert_eq!(train.connector.name, "http");
    let keys: Vec<&str> = train.config.iter().map(|c| c.key.name.as_str()).collect();
    // `timeout` is a keyword but fine as a configuration key.
    assert_eq!(keys, ["url", "timeout", "headers"]);
    assert!(matches!(&train.config[0].value.kind, ExprKind::Str(s) if s == "https://x/\u{1F600}"));
    assert!(matches!(
        train.config[1].value.kind,
        ExprKind::Duration(30_000)
    ));
    let ExprKind::Map(entries) = &train.config[2].value.kind else {
        panic!()
    };
    assert!(matches!(&entries[0].0.kind, ExprKind::Str(k) if k == "k"));
    // `approval` is a keyword but fine as a connector name.
    assert_eq!(b.entries[1].connector.name, "approval");
    let ExprKind::Record { name, fields } = &b.entries[1].config[1].value.kind else {
        panic!()
    };
    assert_eq!(name.name, "Spec");
    assert_eq!(fields.len(), 3);
    assert!(matches!(fields[0].value.kind, ExprKind::Int(-3)));
    assert!(matches!(fields[1].value.kind, ExprKind::Float(f) if f == 1e-3));
    assert!(matches!(fields[2].value.kind, ExprKind::Bool(true)));
    parse_ok("bindings dev {}\n");
}

// ---------------------------------------------------------------------------
// Expressions.

#[test]
fn precedence() {
    // `??` < `or` < `and` < `not` < comparison < unary minus.
    let e = return_expr("a ?? b or c and not d == -e");
    let ExprKind::Binary {
        op: BinOp::Coalesce,
        lhs,
        rhs,
    } = e.kind
    else {
        panic!("{e:?}")
    };
    assert_eq!(names(&lhs), ["a"]);
    let ExprKind::Binary {
        op: BinOp::Or, rhs, ..
    } = rhs.kind
    else {
        panic!()
    };
    let ExprKind::Binary {
        op: BinOp::And,
        rhs,
        ..
    } = rhs.kind
    else {
        panic!()
    };
    let ExprKind::Unary {
        op: UnaryOp::Not,
        expr,
    } = rhs.kind
    else {
        panic!()
    };
    let ExprKind::Binary {
        op: BinOp::Eq, rhs, ..
    } = expr.kind
    else {
        panic!()
    };
    assert!(matches!(
        rhs.kind,
        ExprKind::Unary {
            op: UnaryOp::Neg,
            ..
        }
    ));
}

#[test]
fn operators_are_left_associative() {
    let e = return_expr("a or b or c");
    let ExprKind::Binary { op, lhs, rhs } = e.kind else {
        panic!()
    };
    assert_eq!(op, BinOp::Or);
    assert!(matches!(lhs.kind, ExprKind::Binary { op: BinOp::Or, .. }));
    assert_eq!(names(&rhs), ["c"]);
    assert_eq!(e.span.len(), "a or b or c".len());
}

#[test]
fn all_comparisons() {
    for (src, op) in [
        ("==", BinOp::Eq),
        ("!=", BinOp::Ne),
        ("<", BinOp::Lt),
        ("<=", BinOp::Le),
        (">", BinOp::Gt),
        (">=", BinOp::Ge),
    ] {
        let e = return_expr(&format!("x {src} 1"));
        assert!(
            matches!(e.kind, ExprKind::Binary { op: o, .. } if o == op),
            "{src}"
        );
    }
}

#[test]
fn literals_and_paths() {
    assert!(matches!(return_expr("42").kind, ExprKind::Int(42)));
    assert!(matches!(return_expr("-3").kind, ExprKind::Int(-3)));
    assert!(matches!(
        return_expr("-9223372036854775808").kind,
        ExprKind::Int(i64::MIN)
    ));
    assert!(matches!(return_expr("0.8").kind, ExprKind::Float(f) if f == 0.8));
    assert!(matches!(return_expr("1e-3").kind, ExprKind::Float(f) if f == 1e-3));
    assert!(matches!(return_expr("2.5E3").kind, ExprKind::Float(f) if f == 2500.0));
    assert!(matches!(return_expr("true").kind, ExprKind::Bool(true)));
    assert!(matches!(return_expr("false").kind, ExprKind::Bool(false)));
    assert!(matches!(return_expr("none").kind, ExprKind::None));
    assert!(matches!(return_expr("\"hi\"").kind, ExprKind::Str(ref s) if s == "hi"));
    assert_eq!(
        names(&return_expr("eval.metrics.auc")),
        ["eval", "metrics", "auc"]
    );
    // Keywords are fine after a dot: `run` has a field `flow`.
    assert_eq!(names(&return_expr("run.flow")), ["run", "flow"]);
    assert_eq!(
        names(&return_expr("Stage.Production")),
        ["Stage", "Production"]
    );
    assert!(matches!(return_expr("[]").kind, ExprKind::List(ref v) if v.is_empty()));
    assert!(matches!(return_expr("[1, 2,]").kind, ExprKind::List(ref v) if v.len() == 2));
    assert!(matches!(return_expr("{}").kind, ExprKind::Map(ref v) if v.is_empty()));
    assert!(
        matches!(return_expr("{ \"a\": 1, \"b\": 2 }").kind, ExprKind::Map(ref v) if v.len() == 2)
    );
    assert!(
        matches!(return_expr("Spec {}").kind, ExprKind::Record { ref fields, .. } if fields.is_empty())
    );
    // Parentheses group without a node of their own; the span covers them.
    let e = return_expr("(a or b) and c");
    let ExprKind::Binary {
        op: BinOp::And,
        lhs,
        ..
    } = e.kind
    else {
        panic!()
    };
    assert!(matches!(lhs.kind, ExprKind::Binary { op: BinOp::Or, .. }));
    assert_eq!(lhs.span.len(), "(a or b)".len());
    // A `-` before a parenthesised number stays an operator.
    assert!(matches!(
        return_expr("-(3)").kind,
        ExprKind::Unary {
            op: UnaryOp::Neg,
            ..
        }
    ));
}

#[test]
fn record_literal_needs_an_upper_case_name() {
    let (_, diags) = parse_err("flow F() {\n    return spec { a: 1 }\n}\n");
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code.as_str(), "E0001");
}

#[test]
fn when_condition_is_not_a_record_literal() {
    let src =
        "flow F() {\n    when Ready {\n        return 1\n    }\n    when ok { return 2 }\n}\n";
    let file = parse_ok(src);
    let body = flow_body(&file, 0);
    for stmt in body {
        let StmtKind::When(w) = &stmt.kind else {
            panic!()
        };
        assert!(matches!(w.cond.kind, ExprKind::Path(_)));
        assert_eq!(w.then_body.len(), 1);
    }
    // Inside brackets a record literal is fine again.
    parse_ok("flow F() {\n    when (A {} == x) { return 1 }\n}\n");
}

#[test]
fn comparisons_do_not_chain() {
    let (_, diags) = parse_err("flow F() {\n    return a < b < c\n}\n");
    assert_eq!(diags.len(), 1);
    assert!(
        diags[0]
            .help
            .as_deref()
            .unwrap_or("")
            .contains("do not chain")
    );
}

// ---------------------------------------------------------------------------
// Spans, comments, docs.

#[test]
fn spans() {
    let file = parse_ok(SAMPLE);
    let record = &file.items[1];
    // The item span starts at its keyword, after its doc comment.
    assert_eq!(record.span.start, at(SAMPLE, "record Metrics", 0).start);
    assert_eq!(record.span.end, at(SAMPLE, "List<T>>?,\n}", 0).end);
    let ItemKind::Record(r) = &record.kind else {
        panic!()
    };
    assert_eq!(r.name.span, at(SAMPLE, "Metrics", 0));
    assert_eq!(r.fields[0].span, at(SAMPLE, "auc: Float", 0));
    let flow = &file.items[8];
    assert_eq!(flow.span.start, at(SAMPLE, "flow Retrain", 0).start);
    assert_eq!(
        &SAMPLE[flow.span.end as usize - 1..flow.span.end as usize],
        "}"
    );
    // An item ending in an optional part does not swallow a trailing comment.
    let src = "type A = Int // trailing\n";
    let file = parse_ok(src);
    assert_eq!(file.items[0].span, at(src, "type A = Int", 0));
    assert_eq!(file.comments[0].text, " trailing");
}

#[test]
fn doc_comments() {
    let file = parse_ok(SAMPLE);
    let doc = |i: usize| file.items[i].doc.as_ref().map(|d| d.text.as_str());
    assert_eq!(doc(1), Some("Quality of a model."));
    assert_eq!(doc(4), Some("Trains a model."));
    assert_eq!(doc(0), None);
    let ItemKind::Record(r) = &file.items[1].kind else {
        panic!()
    };
    assert_eq!(
        r.fields[0].doc.as_ref().map(|d| d.text.as_str()),
        Some("Area under the curve.")
    );
    assert!(r.fields[1].doc.is_none());
    let ItemKind::Enum(e) = &file.items[2].kind else {
        panic!()
    };
    assert_eq!(
        e.variants[1].doc.as_ref().map(|d| d.text.as_str()),
        Some("Live traffic.")
    );
    let ItemKind::Step(s) = &file.items[4].kind else {
        panic!()
    };
    assert_eq!(
        s.params[0].doc.as_ref().map(|d| d.text.as_str()),
        Some("The data.")
    );
    let ItemKind::Bindings(b) = &file.items[9].kind else {
        panic!()
    };
    assert_eq!(
        b.entries[0].doc.as_ref().map(|d| d.text.as_str()),
        Some("Trains on the cluster.")
    );

    // Several lines join with `\n`; only one space after `///` is stripped.
    let src = "///  Two spaces.\n///Line two.\n///\nrecord A {}\n";
    let file = parse_ok(src);
    let doc = file.items[0].doc.as_ref().expect("doc");
    assert_eq!(doc.text, " Two spaces.\nLine two.\n");
    assert_eq!(
        doc.span,
        Span::new(0, src.find("\nrecord").expect("record"))
    );
    assert_eq!(
        file.items[0].span.start as usize,
        src.find("record").expect("record")
    );
}

#[test]
fn comments_are_collected() {
    let file = parse_ok(SAMPLE);
    let texts: Vec<&str> = file.comments.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, [" The retraining pipeline.", " a plain comment"]);
    assert_eq!(file.comments[1].span, at(SAMPLE, "// a plain comment", 0));

    // `//` inside a string is not a comment; CRLF line ends stay out of the text.
    let src = "from \"a//b\" import X // c\r\n//// four\r\nrecord A {}\r\n";
    let file = parse_ok(src);
    let texts: Vec<&str> = file.comments.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, [" c", "// four"]);
}

#[test]
fn stray_doc_comments_are_kept_as_comments() {
    let src = "flow F() {\n    /// not documenting anything\n    return 1\n}\n/// at the end\n";
    let file = parse_ok(src);
    let texts: Vec<&str> = file.comments.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["/ not documenting anything", "/ at the end"]);
}

// ---------------------------------------------------------------------------
// Literals.

#[test]
fn durations() {
    for (src, ms) in [
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h30m", 5_400_000),
        ("7d", 604_800_000),
        ("2w", 1_209_600_000),
        ("1h1m1s1ms", 3_661_001),
    ] {
        assert!(
            matches!(return_expr(src).kind, ExprKind::Duration(v) if v == ms),
            "{src}"
        );
    }
}

#[test]
fn invalid_durations() {
    for (src, needle) in [
        ("deadline 5x", "unknown unit `x`"),
        ("deadline 5", "has no unit"),
        ("deadline 99999999999w", "too large"),
        ("return 3sec", "unknown unit `sec`"),
    ] {
        let text = format!("flow F() {{\n    {src}\n}}\n");
        let (_, diags) = parse_err(&text);
        assert_eq!(diags.len(), 1, "{src}: {diags:?}");
        assert_eq!(diags[0].code.as_str(), "E0002");
        assert!(diags[0].message.contains(needle), "{}", diags[0].message);
        let help = diags[0].help.as_deref().unwrap_or("");
        assert!(help.contains("`ms`") && help.contains("`w`"), "{help}");
        assert_eq!(
            diags[0].primary.span.len(),
            src.split(' ').nth(1).unwrap_or("").len()
        );
    }
}

#[test]
fn integer_overflow() {
    let (_, diags) = parse_err("flow F() {\n    return 9223372036854775808\n}\n");
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code.as_str(), "E0003");
    let (_, diags) = parse_err("flow F() {\n    let a = A() retry 99999999999999999999\n}\n");
    assert_eq!(diags[0].code.as_str(), "E0003");
}

#[test]
fn escapes() {
    let e = return_expr(r#""q\" b\\ n\n t\t r\r u\u{41}\u{1F600}""#);
    assert!(matches!(e.kind, ExprKind::Str(ref s) if s == "q\" b\\ n\n t\t r\r uA\u{1F600}"));
}

#[test]
fn invalid_escape_keeps_the_rest() {
    let src = "flow F() {\n    return \"a\\qb\\n\"\n}\n";
    let (file, diags) = parse_err(src);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code.as_str(), "E0004");
    assert_eq!(diags[0].primary.span, at(src, "\\q", 0));
    let StmtKind::Return(e) = &flow_body(&file, 0)[0].kind else {
        panic!()
    };
    assert!(matches!(e.kind, ExprKind::Str(ref s) if s == "a\\qb\n"));
    let (_, diags) = parse_err("from \"\\u{110000}\" import X\n");
    assert_eq!(diags[0].code.as_str(), "E0004");
}

// ---------------------------------------------------------------------------
// Recovery.

#[test]
fn two_broken_items_two_errors() {
    // One error per broken item.
    let src = "record A { a: Int }\n\
               record B { b Int }\n\
               enum C { X, Y }\n\
               remote step D(x: Int) -> \n\
               flow E() {\n    return 1\n}\n";
    let (file, diags) = parse_err(src);
    assert_eq!(diags.len(), 2, "{diags:#?}");
    let kinds: Vec<bool> = file
        .items
        .iter()
        .map(|i| matches!(i.kind, ItemKind::Error))
        .collect();
    // `B` keeps its name (its broken field is dropped), so uses of `B` do
    // not cascade; `D` has no output type and is lost.
    assert_eq!(kinds, [false, false, false, true, false]);
    assert_eq!(file.items[1].span, at(src, "record B { b Int }", 0));
    match &file.items[1].kind {
        ItemKind::Record(r) => assert!(r.fields.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(file.items[4].kind, ItemKind::Flow(_)));
}

#[test]
fn broken_statement_becomes_error_and_the_rest_parses() {
    let src = "flow F() {\n    let a = A(x = 1)\n    let b = B(y: 2)\n    lett c = C()\n    return b\n}\n";
    let (file, diags) = parse_err(src);
    assert_eq!(diags.len(), 2, "{diags:#?}");
    let body = flow_body(&file, 0);
    assert!(matches!(body[0].kind, StmtKind::Error));
    assert_eq!(body[0].span, at(src, "let a = A(x = 1)", 0));
    assert!(matches!(body[1].kind, StmtKind::Let(_)));
    assert!(matches!(body[2].kind, StmtKind::Error));
    assert!(matches!(body[3].kind, StmtKind::Return(_)));
    assert_eq!(body.len(), 4);
}

#[test]
fn statement_by_statement_parse_agrees_with_whole_flow_parse() {
    // A broken last statement sends the flow down the recovering path; everything
    // before it must come out exactly as the one-go parse gives it.
    let good = parse_ok(SAMPLE);
    let cut = SAMPLE.find("    return reg").expect("return");
    let broken_src = format!("{}    let = \n{}", &SAMPLE[..cut], &SAMPLE[cut..]);
    let (broken, diags) = parse_err(&broken_src);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let (a, b) = (flow_body(&good, 8), flow_body(&broken, 8));
    assert_eq!(b.len(), a.len() + 1);
    assert_eq!(a[..5], b[..5]);
    assert!(matches!(b[5].kind, StmtKind::Error));
    let ItemKind::Flow(fa) = &good.items[8].kind else {
        panic!()
    };
    let ItemKind::Flow(fb) = &broken.items[8].kind else {
        panic!()
    };
    assert_eq!(
        (&fa.name, &fa.params, &fa.output),
        (&fb.name, &fb.params, &fb.output)
    );
}

#[test]
fn recovery_inside_when_blocks() {
    let src =
        "flow F() {\n    when x {\n        let a = A(\n    }\n    let b = B()\n}\nrecord R {}\n";
    let (file, diags) = parse_err(src);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let body = flow_body(&file, 0);
    let StmtKind::When(w) = &body[0].kind else {
        panic!()
    };
    assert!(matches!(w.then_body[0].kind, StmtKind::Error));
    assert!(matches!(body[1].kind, StmtKind::Let(_)));
    assert!(matches!(file.items[1].kind, ItemKind::Record(_)));
}

#[test]
fn missing_closing_brace_costs_one_item() {
    let src = "flow F() {\n    let a = A()\n\nrecord R { r: Int }\n";
    let (file, diags) = parse_err(src);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].message, "expected `}`, found keyword `record`");
    assert_eq!(diags[0].secondary[0].span, at(src, "{", 0));
    assert!(matches!(file.items[0].kind, ItemKind::Flow(ref f) if f.body.len() == 1));
    assert!(matches!(file.items[1].kind, ItemKind::Record(_)));
}

#[test]
fn junk_before_first_item() {
    let (file, diags) = parse_err("garbage here\nrecord A {}\n");
    assert_eq!(diags.len(), 1);
    assert!(matches!(file.items[0].kind, ItemKind::Error));
    assert!(matches!(file.items[1].kind, ItemKind::Record(_)));
}

#[test]
fn empty_and_comment_only_files() {
    assert!(parse_ok("").items.is_empty());
    let file = parse_ok("// just a comment\n\n   \n");
    assert!(file.items.is_empty());
    assert_eq!(file.comments.len(), 1);
    parse_ok("\u{FEFF}record A {}\n");
}

// ---------------------------------------------------------------------------
// Messages.

fn first(text: &str) -> eflow_compiler::diagnostics::Diagnostic {
    let (_, mut diags) = parse_err(text);
    diags.remove(0)
}

#[test]
fn message_equals_instead_of_colon() {
    let src = "flow F() {\n    let m = Train(data = x)\n}\n";
    let d = first(src);
    assert_eq!(d.message, "expected `:`, found `=`");
    assert_eq!(d.primary.span, at(src, "=", 1));
    assert!(d.help.as_deref().unwrap_or("").contains("`name: value`"));
}

#[test]
fn message_positional_argument() {
    let d = first("flow F() {\n    let m = Train(features)\n}\n");
    assert_eq!(d.message, "expected `:`, found `)`");
    assert!(d.help.as_deref().unwrap_or("").contains("passed by name"));
}

#[test]
fn message_argument_list() {
    let d = first("flow F() {\n    let m = Train(a: 1, = 2)\n}\n");
    assert_eq!(d.message, "expected `)` or an argument name, found `=`");
}

#[test]
fn message_missing_let() {
    let d = first("flow F() {\n    m = Train(data: x)\n}\n");
    assert_eq!(d.message, "expected a statement or `}`, found `m`");
    assert_eq!(
        d.help.as_deref(),
        Some("add `let` to bind a result: `let m = …`")
    );
}

#[test]
fn message_if_instead_of_when() {
    let d = first("flow F() {\n    if x { let a = A() }\n}\n");
    assert_eq!(d.message, "expected a statement or `}`, found `if`");
    assert!(d.help.as_deref().unwrap_or("").contains("`when`"));
}

#[test]
fn message_missing_arrow() {
    let d = first("remote step A(x: Int) Model\n");
    assert_eq!(
        d.message,
        "expected one of `->`, `raises` or a new item, found `Model`"
    );
    assert_eq!(
        d.help.as_deref(),
        Some("the result type follows `->`: `-> Model`")
    );
    let d = first("flow F(x: Int): Model {}\n");
    assert!(d.help.as_deref().unwrap_or("").contains("`->`"));
}

#[test]
fn message_unterminated_string() {
    let src = "from \"std/ml import X\nrecord A {}\n";
    let (file, diags) = parse_err(src);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].message, "unterminated string");
    assert_eq!(diags[0].primary.span, at(src, "\"std/ml import X", 0));
    assert!(diags[0].help.as_deref().unwrap_or("").contains("closing"));
    assert!(matches!(file.items[1].kind, ItemKind::Record(_)));
}

#[test]
fn message_unbalanced_braces() {
    let d = first("flow F() {\n    let a = A()\n");
    assert_eq!(d.message, "expected `}`, found end of file");
    assert_eq!(d.help.as_deref(), Some("add the missing `}`"));
    // Not a zero-width label at the end of the file: the last token.
    assert_eq!(d.primary.span.len(), 1);
    let d = first("record A { a: Int }\n}\n");
    assert_eq!(d.message, "expected a new item, found `}`");
    assert_eq!(d.help.as_deref(), Some("this `}` has no matching `{`"));
    let d = first("record A {\n    a: Int\n\nenum B { X }\n");
    assert_eq!(
        d.message,
        "expected one of `}`, `,`, `<` or `?`, found keyword `enum`"
    );
    assert_eq!(d.secondary[0].message, "this `{` is not closed");
}

#[test]
fn message_keyword_as_name() {
    let d = first("record step { a: Int }\n");
    assert_eq!(d.message, "expected a type name, found keyword `step`");
    assert!(
        d.help
            .as_deref()
            .unwrap_or("")
            .contains("`step` is a reserved keyword")
    );
    let d = first("flow F() {\n    let flow = A()\n}\n");
    assert_eq!(
        d.message,
        "expected a name for the result, found keyword `flow`"
    );
    // The field alone is reported; the rest of the record is kept.
    let d = first("record A { for: Int }\n");
    assert_eq!(d.message, "expected a field name, found keyword `for`");
}

#[test]
fn message_comparisons_and_operators() {
    let d = first("flow F() {\n    when a = b { return 1 }\n}\n");
    assert_eq!(d.message, "expected `{` or an operator, found `=`");
    assert_eq!(d.help.as_deref(), Some("use `==` to compare values"));
    let d = first("flow F() {\n    return a && b\n}\n");
    assert_eq!(d.help.as_deref(), Some("use `and` for logical and"));
    for op in ["+", "-", "*", "/", "%"] {
        let d = first(&format!(
            "flow F() {{\n    when a {op} b < c {{ return 1 }}\n}}\n"
        ));
        assert!(
            d.help
                .as_deref()
                .is_some_and(|h| h.starts_with("eflow expressions have no arithmetic")),
            "{op}: {d:?}"
        );
    }
}

#[test]
fn message_unknown_item_and_option() {
    let d = first("fow F() {}\n");
    assert_eq!(d.message, "expected an item, found `fow`");
    assert_eq!(d.help.as_deref(), Some("did you mean `flow`?"));
    let d = first("flow F() {\n    let x = A() retyr 3\n}\n");
    assert!(d.message.ends_with("found `retyr`"), "{}", d.message);
    assert_eq!(d.help.as_deref(), Some("did you mean `retry`?"));
    let d = first("step A()\n");
    assert!(d.help.as_deref().unwrap_or("").contains("`remote step`"));
}

#[test]
fn message_missing_comma() {
    let d = first("enum E { A B }\n");
    assert_eq!(d.message, "expected `}` or `,`, found `B`");
    assert_eq!(d.help.as_deref(), Some("add a `,` before this"));
}

#[test]
fn message_let_needs_a_call() {
    let d = first("flow F() {\n    let x = y\n    return x\n}\n");
    assert_eq!(d.message, "expected `(`, found keyword `return`");
    assert!(
        d.help
            .as_deref()
            .unwrap_or("")
            .contains("step or flow call")
    );
}

#[test]
fn messages_never_name_grammar_rules() {
    let broken = [
        "record",
        "record A",
        "record A {",
        "record A { a",
        "record A { a:",
        "enum",
        "type A",
        "type A =",
        "from",
        "from \"x\"",
        "from \"x\" import",
        "remote",
        "remote step",
        "remote step A",
        "remote step A(",
        "remote step A(x",
        "remote step A() raises",
        "flow",
        "flow F",
        "flow F(",
        "flow F() {\n let",
        "flow F() {\n let a",
        "flow F() {\n let a =",
        "flow F() {\n let a = for",
        "flow F() {\n let a = for x in",
        "flow F() {\n let a = for x in y join",
        "flow F() {\n let a = for x in y join all {",
        "flow F() {\n let a = A() backoff",
        "flow F() {\n let a = A() backoff fixed(",
        "flow F() {\n schedule",
        "flow F() {\n schedule \"x\" overlap",
        "flow F() {\n when",
        "flow F() {\n return",
        "flow F() {\n return [1,",
        "flow F() {\n return {\"a\"",
        "bindings",
        "bindings p {",
        "bindings p { A",
        "bindings p { A =",
        "bindings p { A = http {",
    ];
    for src in broken {
        for d in parse(FileId(0), src).1 {
            let all = format!("{} {} {:?}", d.message, d.primary.message, d.help);
            assert!(
                !all.contains('_') || all.contains("at_least"),
                "{src:?}: {all}"
            );
            assert!(
                !all.contains("EOI") && !all.contains("SOI"),
                "{src:?}: {all}"
            );
            assert!(
                d.primary.span.end as usize <= src.len(),
                "{src:?}: label out of range"
            );
        }
    }
}

const RESERVED: &str = "from import record enum flow step bindings let when else for return true false none and or not";

const CONTEXTUAL: &str = "as type remote call approval wait in join all any at_least deadline \
    schedule timezone overlap catchup within jitter input retry backoff fixed exponential \
    non_retryable timeout after parallel raises";

#[test]
fn reserved_keywords_are_not_names() {
    for kw in RESERVED.split_whitespace() {
        let (_, diags) = parse(FileId(0), &format!("record R {{ {kw}: Int }}\n"));
        assert_eq!(diags.len(), 1, "`{kw}` should be reserved");
        assert!(
            diags[0].message.contains(&format!("keyword `{kw}`")),
            "{kw}: {}",
            diags[0].message
        );
        assert!(
            diags[0]
                .help
                .as_deref()
                .unwrap_or("")
                .contains("reserved keyword"),
            "{kw}"
        );
        // A name that merely starts with a keyword is fine.
        parse_ok(&format!("record R {{ {kw}x: Int, {kw}_: Int }}\n"));
    }
}

/// Every name of `text` in source order, whatever its role.
fn all_names(file: &File) -> Vec<String> {
    let mut out = Vec::new();
    let expr = |e: &Expr, out: &mut Vec<String>| {
        if let ExprKind::Path(p) = &e.kind {
            out.extend(p.iter().map(|i| i.name.clone()));
        }
    };
    for item in &file.items {
        match &item.kind {
            ItemKind::Import(i) => {
                for n in &i.names {
                    out.push(n.name.name.clone());
                    out.extend(n.alias.iter().map(|a| a.name.clone()));
                }
            }
            ItemKind::Record(r) => {
                out.push(r.name.name.clone());
                out.extend(r.generics.iter().map(|g| g.name.clone()));
                for f in &r.fields {
                    out.push(f.name.name.clone());
                    if let TypeExprKind::Named { name, .. } = &f.ty.kind {
                        out.push(name.name.clone());
                    }
                }
            }
            ItemKind::Enum(e) => {
                out.push(e.name.name.clone());
                out.extend(e.variants.iter().map(|v| v.name.name.clone()));
            }
            ItemKind::Alias(a) => out.push(a.name.name.clone()),
            ItemKind::Step(st) => {
                out.push(st.name.name.clone());
                out.extend(st.params.iter().map(|p| p.name.name.clone()));
                out.extend(st.raises.iter().map(|r| r.name.clone()));
            }
            ItemKind::Flow(f) => {
                out.push(f.name.name.clone());
                out.extend(f.params.iter().map(|p| p.name.name.clone()));
                for stmt in &f.body {
                    match &stmt.kind {
                        StmtKind::Let(l) => {
                            out.push(l.name.name.clone());
                            let call = match &l.value {
                                StepExpr::Call(c) => c,
                                StepExpr::ForEach(fe) => {
                                    out.push(fe.var.name.clone());
                                    expr(&fe.over, &mut out);
                                    &fe.body
                                }
                                StepExpr::Repeat(r) => {
                                    out.push(r.var.name.clone());
                                    if let Some(u) = &r.until {
                                        expr(u, &mut out);
                                    }
                                    &r.body
                                }
                            };
                            out.push(call.callee.name.clone());
                            for a in &call.args {
                                out.push(a.name.name.clone());
                                expr(&a.value, &mut out);
                            }
                            for o in &l.options {
                                match &o.kind {
                                    StepOptionKind::After(n) | StepOptionKind::NonRetryable(n) => {
                                        out.extend(n.iter().map(|i| i.name.clone()));
                                    }
                                    _ => {}
                                }
                            }
                        }
                        StmtKind::Return(e) => expr(e, &mut out),
                        StmtKind::When(w) => expr(&w.cond, &mut out),
                        StmtKind::Schedule(sc) => {
                            for c in &sc.clauses {
                                if let ScheduleClauseKind::Input(args) = &c.kind {
                                    out.extend(args.iter().map(|a| a.name.name.clone()));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            ItemKind::Bindings(b) => {
                out.push(b.env.name.clone());
                for e in &b.entries {
                    out.push(e.step.name.clone());
                    out.push(e.connector.name.clone());
                    out.extend(e.config.iter().map(|c| c.key.name.clone()));
                }
            }
            ItemKind::Error => out.push("<error>".to_string()),
        }
    }
    out
}

#[test]
fn contextual_keywords_are_names_everywhere_a_name_is_expected() {
    for kw in CONTEXTUAL.split_whitespace() {
        // `kw` in every role: import, alias, type name, generic, record, field,
        // variant, enum, step, parameter, error, flow, let, callee, argument, path,
        // member, fan-out variable and list, `after`, `non_retryable`, schedule input,
        // environment, binding, connector and configuration key.
        let src = format!(
            "from \"./x\" import {kw} as {kw}\n\
             type {kw} = {kw}<{kw}>\n\
             record {kw}<{kw}> {{\n    {kw}: {kw},\n}}\n\
             enum {kw} {{ {kw} }}\n\
             remote step {kw}({kw}: Int) -> Int raises {kw}\n\
             flow {kw}({kw}: Int) -> Int {{\n\
             \x20   schedule \"0 3 * * *\" input({kw}: 1)\n\
             \x20   let {kw} = {kw}({kw}: {kw}.{kw})\n\
             \x20       after {kw}\n\
             \x20       non_retryable {kw}\n\
             \x20   let {kw} = for {kw} in {kw} join all {{ {kw}({kw}: {kw}) }}\n\
             \x20   when {kw} {{\n        let {kw} = {kw}()\n    }}\n\
             \x20   return {kw}\n\
             }}\n\
             bindings {kw} {{\n    {kw} = {kw} {{ {kw}: 1 }}\n}}\n"
        );
        let file = parse_ok(&src);
        let names = all_names(&file);
        assert!(names.iter().all(|n| n == kw), "{kw}: {names:?}");
        assert_eq!(names.len(), 34, "{kw}: {names:?}");
    }
}

#[test]
fn contextual_keywords_are_still_keywords_where_expected() {
    // A `let` named like a step option, followed by that option.
    let src = "flow F() {\n    let retry = A(a: 1)\n        retry 3\n        timeout 5s\n    let after = B(input: retry)\n        after after\n    let timeout = C() timeout 1m\n    deadline 2d\n    schedule \"0 3 * * *\" input(input: 1) timezone \"UTC\"\n    return timeout\n}\n";
    let file = parse_ok(src);
    let body = flow_body(&file, 0);
    let kinds: Vec<&str> = body
        .iter()
        .map(|s| match &s.kind {
            StmtKind::Let(l) => l.name.name.as_str(),
            StmtKind::Deadline(_) => "<deadline>",
            StmtKind::Schedule(_) => "<schedule>",
            StmtKind::Return(_) => "<return>",
            _ => "<other>",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "retry",
            "after",
            "timeout",
            "<deadline>",
            "<schedule>",
            "<return>"
        ]
    );
    let StmtKind::Let(retry) = &body[0].kind else {
        panic!()
    };
    assert!(matches!(
        retry.options[..],
        [
            StepOption {
                kind: StepOptionKind::Retry(IntLit { value: 3, .. }),
                ..
            },
            StepOption {
                kind: StepOptionKind::Timeout(_),
                ..
            }
        ]
    ));
    let StmtKind::Let(after) = &body[1].kind else {
        panic!()
    };
    assert!(
        matches!(&after.options[0].kind, StepOptionKind::After(n) if n.len() == 1 && n[0].name == "after")
    );
    let StmtKind::Schedule(sched) = &body[4].kind else {
        panic!()
    };
    assert_eq!(sched.clauses.len(), 2);

    // Items that start with a contextual keyword, next to fields named like them in
    // column 0.
    let src = "record R {\ntype: String,\ninput: Data,\nremote: Bool,\n}\ntype X = R\ntype Y<T> = List<T>\nremote step S(type: String, wait: Duration) -> R\ncall step C()\napproval step A()\nwait step W()\n";
    let file = parse_ok(src);
    assert_eq!(file.items.len(), 7);
    assert!(matches!(&file.items[0].kind, ItemKind::Record(r) if r.fields.len() == 3));
    assert!(matches!(file.items[1].kind, ItemKind::Alias(_)));
    assert!(matches!(file.items[2].kind, ItemKind::Alias(_)));
    let kinds: Vec<StepKind> = file.items[3..]
        .iter()
        .map(|i| match &i.kind {
            ItemKind::Step(s) => s.kind,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            StepKind::Remote,
            StepKind::Call,
            StepKind::Approval,
            StepKind::Wait
        ]
    );

    // Join policies, schedule clauses and backoff kinds.
    let src = "flow F(all: List<Int>) {\n    let any = for in in all join any { G(x: in) }\n    let a = for x in any join all { G(x: x) } backoff fixed(1s)\n    let b = for x in all join at_least 2 { G(x: x) } parallel 2 backoff exponential(1s, 1m)\n    schedule \"0 3 * * *\" overlap skip catchup all within 1d jitter 5m\n}\n";
    let file = parse_ok(src);
    let body = flow_body(&file, 0);
    let StmtKind::Let(any) = &body[0].kind else {
        panic!()
    };
    assert!(
        matches!(&any.value, StepExpr::ForEach(f) if f.var.name == "in" && f.join.policy == JoinPolicy::Any)
    );
}

#[test]
fn contextual_keywords_in_messages() {
    // Not called a keyword where it is merely out of place.
    let d = first("record A { a: Int timeout }\n");
    assert_eq!(
        d.message,
        "expected one of `}`, `,`, `<` or `?`, found `timeout`"
    );
    assert!(!d.help.as_deref().unwrap_or("").contains("reserved"));
    // A `let` without its keyword, even when the name is a contextual keyword.
    for name in ["schedule", "deadline", "timeout", "input"] {
        let d = first(&format!("flow F() {{\n    {name} = Train(data: x)\n}}\n"));
        assert_eq!(
            d.help.as_deref(),
            Some(format!("add `let` to bind a result: `let {name} = …`").as_str()),
            "{name}"
        );
    }
    // A step kind with a typo: only that item is lost.
    let (file, diags) = parse_err("remote stpe S()\nrecord R {}\n");
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].message, "expected `step`, found `stpe`");
    assert!(matches!(file.items[1].kind, ItemKind::Record(_)));
    // A missing `}` before a column-0 alias costs only the record.
    let (file, diags) = parse_err("record R {\n    a: Int\ntype X = Int\n");
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(matches!(file.items[1].kind, ItemKind::Alias(_)));
}

// ---------------------------------------------------------------------------
// Robustness.

#[test]
fn nesting_too_deep() {
    let deep = format!(
        "flow F() {{\n    return {}1{}\n}}\n",
        "(".repeat(200),
        ")".repeat(200)
    );
    let d = first(&deep);
    assert_eq!(d.message, "nesting too deep");
    let deep_type = format!("type A = {}Int{}\n", "List<".repeat(200), ">".repeat(200));
    assert_eq!(first(&deep_type).message, "nesting too deep");
    let nots = format!("flow F() {{\n    return {}x\n}}\n", "not ".repeat(50_000));
    assert_eq!(first(&nots).message, "nesting too deep");
    let chain = format!("flow F() {{\n    return x{}\n}}\n", " and x".repeat(50_000));
    assert_eq!(first(&chain).message, "nesting too deep");
    // Modest nesting is fine.
    let ok = format!(
        "flow F() {{\n    return {}1{}\n}}\n",
        "[".repeat(40),
        "]".repeat(40)
    );
    parse_ok(&ok);
    // Unbalanced openers alone must not hurt either.
    parse_err(&"(".repeat(100_000));
    parse_err(&"{".repeat(100_000));
    parse_err(&format!("flow F() {{ {}", "when x { ".repeat(10_000)));
}

#[test]
fn large_input_is_linear() {
    let one = big_file(2_000);
    let (f, d) = parse(FileId(0), &one);
    assert!(d.is_empty(), "{:?}", d.first());
    assert!(f.items.len() > 400);
    // Many errors in one huge flow must not make recovery quadratic.
    let broken_flow = |n: usize| {
        let mut src = String::from("flow F() {\n");
        for _ in 0..n {
            src.push_str("    let a = A(x = 1)\n");
        }
        src + "}\n"
    };
    // Every broken statement is reported once and recovery goes on. (How the
    // time grows with the number of errors is measured, not asserted: a timed
    // assertion fails on a loaded machine. Release build, 2026-11-29:
    // `eflowc check` of 1,000 / 8,000 / 32,000 such statements takes
    // <0.01 / 0.04 / 0.18 s, linear.)
    for n in [1_000, 8_000] {
        let (_, d) = parse(FileId(0), &broken_flow(n));
        assert_eq!(d.len(), n);
    }
}

fn big_file(lines: usize) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i * 14 < lines {
        s.push_str(&format!(
            "/// Step {i}.\nremote step S{i}(data: Dataset, n: Int = {i}) -> Map<String, List<Float>>? raises E\n\
             record R{i} {{ a: Int, b: List<String>, c: Map<String, Float>? }}\n\
             flow F{i}(x: Float = 0.5) -> Float {{\n    // step\n    let a = S{i}(data: x, n: 3) retry 3 timeout 1h30m\n    \
             let b = for p in [1, 2, 3] join all {{ S{i}(data: p, n: -1) }} parallel 4\n    \
             when a.auc >= 0.8 and not b.ok ?? false {{\n        let c = S{i}(data: \"str\\n\", n: 1)\n    }} else {{\n        return none\n    }}\n    return a.auc\n}}\n"
        ));
        i += 1;
    }
    s
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// The sample's tokens, roughly: enough to delete, duplicate and move real tokens.
    fn tokens(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            let word = c.is_alphanumeric() || c == '_';
            match (start, word) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    out.push(&text[s..i]);
                    start = None;
                }
                _ => {}
            }
            if !word {
                out.push(&text[i..i + c.len_utf8()]);
            }
        }
        if let Some(s) = start {
            out.push(&text[s..]);
        }
        out
    }

    const EXTRA: &[&str] = &[
        "{", "}", "(", ")", "[", "]", "<", ">", ",", ":", "=", "->", "?", "??", "\"", "\\", "//",
        "///", "\n", "let", "when", "else", "flow", "record", "not", "-", "1", "5x", "x", "Spec",
        "é", "\u{FEFF}", "\r",
    ];

    #[derive(Debug, Clone)]
    enum Edit {
        Delete(usize),
        Insert(usize, usize),
        Duplicate(usize, usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            any::<usize>().prop_map(Edit::Delete),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Insert(a, b)),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Duplicate(a, b)),
        ]
    }

    fn check(text: &str) {
        let (file, diags) = parse(FileId(0), text);
        for d in &diags {
            assert!(d.primary.span.start <= d.primary.span.end);
            assert!(d.primary.span.end as usize <= text.len());
            assert!(!d.message.is_empty());
            // The parser and the grammar that explains its errors agree.
            assert!(!d.message.starts_with("internal"), "{text:?}: {d:?}");
        }
        for item in &file.items {
            assert!(item.span.end as usize <= text.len());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            check(&s);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            check(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn token_soup_never_panics(picks in proptest::collection::vec(0usize..200, 0..300)) {
            let toks = tokens(SAMPLE);
            let text: Vec<&str> = picks
                .iter()
                .map(|&i| if i < 100 { toks[i * toks.len() / 100] } else { EXTRA[i % EXTRA.len()] })
                .collect();
            check(&text.join(" "));
        }

        #[test]
        fn mutations_of_the_sample_never_panic(edits in proptest::collection::vec(edit(), 1..8)) {
            let mut toks: Vec<&str> = tokens(SAMPLE);
            for e in edits {
                let n = toks.len().max(1);
                match e {
                    Edit::Delete(i) => {
                        if !toks.is_empty() {
                            toks.remove(i % n);
                        }
                    }
                    Edit::Insert(i, j) => toks.insert(i % (n + 1), EXTRA[j % EXTRA.len()]),
                    Edit::Duplicate(i, j) => {
                        if !toks.is_empty() {
                            let t = toks[i % n];
                            toks.insert(j % (n + 1), t);
                        }
                    }
                }
            }
            check(&toks.concat());
        }
    }
}

#[test]
fn a_broken_field_parameter_or_binding_costs_only_itself() {
    let src = "record P {\n    x: Int,\n    y: ,\n    z: String,\n}\n\
               remote step S(a: Int, b: = 3, c: P) -> Int\n\
               bindings dev {\n    S sim { duration: 1s }\n    T = sim { duration: 1s }\n}\n";
    let (file, diags) = parse_err(src);
    let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "expected a type name, found `,`",
            "expected a type name, found `=`",
            "expected `=`, found `sim`",
        ],
        "{diags:#?}"
    );
    match &file.items[0].kind {
        ItemKind::Record(r) => {
            let names: Vec<&str> = r.fields.iter().map(|f| f.name.name.as_str()).collect();
            assert_eq!(names, ["x", "z"]);
        }
        other => panic!("{other:?}"),
    }
    match &file.items[1].kind {
        ItemKind::Step(s) => {
            let names: Vec<&str> = s.params.iter().map(|p| p.name.name.as_str()).collect();
            assert_eq!(names, ["a", "c"]);
        }
        other => panic!("{other:?}"),
    }
    match &file.items[2].kind {
        ItemKind::Bindings(b) => {
            assert_eq!(b.entries.len(), 1);
            // Remembered, so `S` is not also reported as having no binding.
            let broken: Vec<&str> = b.broken.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(broken, ["S"]);
        }
        other => panic!("{other:?}"),
    }
    // A whole element followed by junk is still the item's error.
    let (file, diags) = parse_err("record A { a: Int timeout }\n");
    assert_eq!(diags.len(), 1);
    assert!(matches!(file.items[0].kind, ItemKind::Error));
}
