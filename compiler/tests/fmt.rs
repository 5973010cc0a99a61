//! Integration tests of the formatter: the exact layout of every construct, comments
//! in every position, idempotence and no-op on the shipped `.eflow` files, refusal
//! of broken files, robustness, and property tests that formatting never changes the
//! tree or the compiled IR.

use std::path::{Path, PathBuf};

use eflow_compiler::analysis::FileId;
use eflow_compiler::analysis::{Analysis, FsLoader};
use eflow_compiler::fmt::format_source;
use eflow_compiler::syntax::parse;
use proptest::prelude::*;

#[path = "support/layout.rs"]
mod layout;
use layout::{filler, mutate};

// ---------------------------------------------------------------------------
// Helpers.

fn fmt(text: &str) -> String {
    match format_source(text) {
        Ok(s) => s,
        Err(n) => panic!("{n} syntax errors in:\n{text}"),
    }
}

/// Formats, checks the result is stable, has the same tree and the same comments.
fn check(text: &str) -> String {
    let once = fmt(text);
    let twice = fmt(&once);
    if once != twice {
        panic!(
            "not idempotent: {}\n--- input ---\n{text}",
            first_difference(&once, &twice)
        );
    }
    assert_eq!(tree(text), tree(&once), "tree changed; output:\n{once}");
    assert_eq!(comments(text), comments(&once), "comments changed:\n{once}");
    once
}

/// The first line where two texts differ, with some context.
fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
    let from = i.saturating_sub(4);
    format!(
        "line {}\n--- first ---\n{}\n--- second ---\n{}",
        i + 1,
        la[from..(i + 4).min(la.len())].join("\n"),
        lb[from..(i + 4).min(lb.len())].join("\n")
    )
}

/// Formats and compares with the expected text (which must itself be stable).
#[track_caller]
fn assert_fmt(input: &str, expected: &str) {
    let out = check(input);
    assert_eq!(
        out, expected,
        "\n--- got ---\n{out}--- expected ---\n{expected}"
    );
    assert_eq!(fmt(expected), expected, "expected text is not formatted");
}

/// The tree's `Debug` rendering with every span blanked: equal for two texts that
/// mean the same, whatever their layout.
fn tree(text: &str) -> String {
    let (file, diags) = parse(FileId(0), text);
    assert!(diags.is_empty(), "{diags:?}");
    let debug = format!("{:#?}", file.items);
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug.as_str();
    while let Some(i) = rest.find("Span {") {
        out.push_str(&rest[..i]);
        out.push_str("Span");
        let close = rest[i..].find('}').map_or(rest.len(), |j| i + j + 1);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// Non-empty comment texts in order (the formatter may add an empty `//` to keep a
/// stray `///` from documenting the next node).
fn comments(text: &str) -> Vec<String> {
    parse(FileId(0), text)
        .0
        .comments
        .iter()
        .map(|c| c.text.trim_end().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn eflow_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            eflow_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "eflow") {
            out.push(p);
        }
    }
}

fn shipped_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    eflow_files(&root().join("examples"), &mut files);
    eflow_files(&root().join("stdlib"), &mut files);
    files
}

fn corpus_ok_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    eflow_files(&root().join("compiler/tests/corpus/ok"), &mut files);
    files
}

/// The IR of `text` compiled as the file at `path`, with what legitimately moves
/// with the layout (the source map) removed: the hashes stay.
fn ir(path: &Path, text: &str) -> Result<serde_json::Value, Vec<String>> {
    let analysis = Analysis::from_texts(vec![(path.to_path_buf(), text.to_string())], &FsLoader);
    match eflow_compiler::lower::emit(&analysis, None) {
        Ok(bundle) => {
            let mut v = serde_json::to_value(&bundle).map_err(|e| vec![e.to_string()])?;
            strip_positions(&mut v);
            Ok(v)
        }
        Err(diags) => Err(diags.iter().map(|d| d.code.to_string()).collect()),
    }
}

fn strip_positions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.remove("source_map");
            map.values_mut().for_each(strip_positions);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_positions),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Items.

#[test]
fn imports() {
    assert_fmt(
        r#"from   "std/ml"  import Dataset,Model as   M ,
from "./a" import X



from "./b" import Y
record R {}
"#,
        r#"from "std/ml" import Dataset, Model as M
from "./a" import X

from "./b" import Y

record R {}
"#,
    );
    let long = r#"from "std/ml" import BuildFeatures, Dataset, DatasetVersion, Evaluate, Evaluation, Features, LatestVersion
"#;
    assert_fmt(
        long,
        r#"from "std/ml" import
    BuildFeatures,
    Dataset,
    DatasetVersion,
    Evaluate,
    Evaluation,
    Features,
    LatestVersion,
"#,
    );
}

#[test]
fn records_enums_aliases() {
    assert_fmt(
        r#"/// A pair.
record Pair<A,B>{first:A,/// The second.
second:Map<String,List<B>>?}
record Empty{ }
enum Stage{Staging,Production}
enum None {}
type M<T>=Map<String,T>
"#,
        r#"/// A pair.
record Pair<A, B> {
    first: A,
    /// The second.
    second: Map<String, List<B>>?,
}

record Empty {}

enum Stage {
    Staging,
    Production,
}

enum None {}

type M<T> = Map<String, T>
"#,
    );
}

#[test]
fn doc_comments_keep_their_lines() {
    assert_fmt(
        "///First line.\n///\n///   Indented.\nrecord A { a: Int }\n",
        r#"/// First line.
///
///   Indented.
record A {
    a: Int,
}
"#,
    );
}

#[test]
fn steps() {
    assert_fmt(
        r#"remote step Train(data:Dataset,rate:Float=0.1)->Model raises OutOfMemory,InvalidData
call step Notify(message: String)
wait step W()
approval step Approve<T>(subject: T) -> Decision<T>
"#,
        r#"remote step Train(data: Dataset, rate: Float = 0.1) -> Model raises OutOfMemory, InvalidData

call step Notify(message: String)

wait step W()

approval step Approve<T>(subject: T) -> Decision<T>
"#,
    );
    // Over 100 columns, or a documented parameter: one parameter per line.
    assert_fmt(
        r#"remote step Train(data: Dataset, rate: Float = 0.1, extra: Map<String, Int>?) -> Model raises OutOfMemory
"#,
        r#"remote step Train(
    data: Dataset,
    rate: Float = 0.1,
    extra: Map<String, Int>?,
) -> Model raises OutOfMemory
"#,
    );
    assert_fmt(
        "remote step T(\n/// The data.\ndata: Dataset) -> Model\n",
        r#"remote step T(
    /// The data.
    data: Dataset,
) -> Model
"#,
    );
}

#[test]
fn flows_and_statements() {
    assert_fmt(
        r#"flow F(a: Int = 1) -> Int {
deadline 30d
let x = A(a: a) retry 3 backoff exponential(30s, 1h) non_retryable E1, E2 timeout 6h after y, z
let y = B() backoff fixed(90s)



let z = for s in xs join at_least 2 { C(s: s) } parallel 5
let w = for s in xs join any { C(s: s) }
return x
}
flow Empty() {}
"#,
        r#"flow F(a: Int = 1) -> Int {
    deadline 30d
    let x = A(a: a)
        retry 3
        backoff exponential(30s, 1h)
        non_retryable E1, E2
        timeout 6h
        after y, z
    let y = B()
        backoff fixed(1m30s)

    let z = for s in xs join at_least 2 {
        C(s: s)
    }
        parallel 5
    let w = for s in xs join any {
        C(s: s)
    }
    return x
}

flow Empty() {}
"#,
    );
}

#[test]
fn long_calls_break_one_argument_per_line() {
    assert_fmt(
        r#"flow F() {
    let features = BuildFeatures(source: snapshot, transformation: transformation, label: "churned", x: 1)
        retry 3
}
"#,
        r#"flow F() {
    let features = BuildFeatures(
        source: snapshot,
        transformation: transformation,
        label: "churned",
        x: 1,
    )
        retry 3
}
"#,
    );
    // The outer group breaks first; an inner one that then fits stays on its line.
    assert_fmt(
        r#"flow F() {
    let m = Train(features: features, spec: TrainingSpec { framework: base.framework, objective: base.objective })
}
"#,
        r#"flow F() {
    let m = Train(
        features: features,
        spec: TrainingSpec { framework: base.framework, objective: base.objective },
    )
}
"#,
    );
    // Exactly 100 columns fits.
    let head = "    let x = F(a: \"";
    let call = format!("{head}{}\")", "a".repeat(100 - head.len() - 2));
    assert_eq!(call.len(), 100);
    let src = format!("flow G() {{\n{call}\n}}\n");
    assert_fmt(&src, &src);
    let call = format!("{head}{}\")", "a".repeat(101 - head.len() - 2));
    let out = fmt(&format!("flow G() {{\n{call}\n}}\n"));
    assert!(out.contains("F(\n        a: \""), "{out}");
}

#[test]
fn when_and_else() {
    assert_fmt(
        r#"flow F() {
when a and b { let x = A() } else { when c {} else { let y = B() } }
when d {}
}
"#,
        r#"flow F() {
    when a and b {
        let x = A()
    } else {
        when c {} else {
            let y = B()
        }
    }
    when d {}
}
"#,
    );
}

#[test]
fn long_when_conditions_break_at_their_operators() {
    assert_fmt(
        r#"flow F() {
    when evaluation.metrics.accuracy > baseline.metrics.accuracy and evaluation.metrics.latency_ms < 250 and not decision.rejected { let x = A() }
}
"#,
        r#"flow F() {
    when evaluation.metrics.accuracy > baseline.metrics.accuracy
        and evaluation.metrics.latency_ms < 250
        and not decision.rejected {
        let x = A()
    }
}
"#,
    );
    // Deeper in the flow the continuation lines follow their `when`; an operand
    // that breaks a group of its own keeps the group's rules; `else` is unchanged.
    assert_fmt(
        r#"flow F() {
    when ready {
        when candidate.metrics.accuracy >= champion.metrics.accuracy or candidate.labels == ["a-rather-long-label", "and-another-long-label", "and-a-third-one"] {} else { let x = A() }
    }
}
"#,
        r#"flow F() {
    when ready {
        when candidate.metrics.accuracy >= champion.metrics.accuracy
            or candidate.labels == [
                "a-rather-long-label",
                "and-another-long-label",
                "and-a-third-one",
            ] {} else {
            let x = A()
        }
    }
}
"#,
    );
    // `when COND {` of exactly 100 columns fits; one more breaks.
    let head = "    when a_long_enough_name and ";
    let when = |n: usize| format!("{head}{} {{", "b".repeat(n));
    let exact = when(100 - head.len() - " {".len());
    assert_eq!(exact.len(), 100);
    let src = format!("flow G() {{\n{exact}\n        let x = A()\n    }}\n}}\n");
    assert_fmt(&src, &src);
    let over = when(101 - head.len() - " {".len());
    let out = check(&format!(
        "flow G() {{\n{over}\n        let x = A()\n    }}\n}}\n"
    ));
    assert!(
        out.contains("    when a_long_enough_name\n        and bbb"),
        "{out}"
    );
}

#[test]
fn short_when_conditions_stay_on_one_line() {
    let src = r#"flow F() {
    when a.score > 0.9 and b.approved or c.count >= 3 {
        let x = A()
    }
    when not (a and b) or c {}
}
"#;
    assert_fmt(src, src);
    // Written broken, a condition that fits is joined again.
    assert_fmt(
        "flow F() {\n    when a.score > 0.9\n        and b.approved\n        or c.count >= 3 {}\n}\n",
        "flow F() {\n    when a.score > 0.9 and b.approved or c.count >= 3 {}\n}\n",
    );
    // Only a `when` condition is broken at its operators.
    let long = format!("{} and {}", "a".repeat(60), "b".repeat(60));
    assert_eq!(ret(&long), long);
}

#[test]
fn mixed_and_or_conditions_break_at_the_outermost_chain() {
    // `or` binds looser: its operands are the lines, each `and` chain whole.
    assert_fmt(
        r#"flow F() {
    when run.attempts > 3 and run.last_error == "timeout" or run.attempts > 10 and run.cancelled or forced {}
}
"#,
        r#"flow F() {
    when run.attempts > 3 and run.last_error == "timeout"
        or run.attempts > 10 and run.cancelled
        or forced {}
}
"#,
    );
    // Parenthesised groups stay whole on their lines; no parenthesis is added or
    // dropped (a right operand of the same operator keeps its own).
    assert_fmt(
        r#"flow F() {
    when (champion.metrics.accuracy < 0.5 or champion.stale) and (challenger.ready or forced) and (x and y) {}
}
"#,
        r#"flow F() {
    when (champion.metrics.accuracy < 0.5 or champion.stale)
        and (challenger.ready or forced)
        and (x and y) {}
}
"#,
    );
    // An `and` chain that is still too long on its line breaks in turn, 4 deeper.
    assert_fmt(
        r#"flow F() {
    when evaluation.metrics.accuracy > baseline.metrics.accuracy and evaluation.metrics.latency_ms < 250 or override.enabled and override.reason != "" {}
}
"#,
        r#"flow F() {
    when evaluation.metrics.accuracy > baseline.metrics.accuracy
            and evaluation.metrics.latency_ms < 250
        or override.enabled and override.reason != "" {}
}
"#,
    );
    // `??` is looser than `or`: not a chain of conditions, not broken at `or`.
    let src = format!(
        "flow F() {{\n    when a_{} or b_{} ?? c {{}}\n}}\n",
        "a".repeat(50),
        "b".repeat(50)
    );
    assert_fmt(&src, &src);
}

#[test]
fn comments_inside_a_wrapped_condition() {
    let input = r#"flow F() {
    when evaluation.metrics.accuracy > baseline.metrics.accuracy // better than the baseline
    // and fast enough
    and evaluation.metrics.latency_ms < 250 and // not rejected
    not decision.rejected and decision.reviewer != // anyone
    "" // last
    {
        let x = A()
    }
}
"#;
    let expected = r#"flow F() {
    when evaluation.metrics.accuracy > baseline.metrics.accuracy // better than the baseline
        // and fast enough
        and evaluation.metrics.latency_ms < 250
        // not rejected
        and not decision.rejected
        // anyone
        // last
        and decision.reviewer != "" {
        let x = A()
    }
}
"#;
    assert_fmt(input, expected);
    // A comment after an operand keeps even a short condition broken where it was
    // written; one after an operator or inside an operand moves above the `when`.
    assert_fmt(
        "flow F() {\n    when a // why a\n        and b {}\n}\n",
        "flow F() {\n    when a // why a\n        and b {}\n}\n",
    );
    assert_fmt(
        "flow F() {\n    when a and // why b\n        b {}\n}\n",
        "flow F() {\n    // why b\n    when a and b {}\n}\n",
    );
    // In a nested chain, after redundant parentheses, a stray `///`.
    let out = check(
        r#"flow F() {
    when (long_enough_name_number_one // one
    and long_enough_name_number_two) // two
    /// stray
    or long_enough_name_number_three and // three
    long_enough_name_number_four {}
}
"#,
    );
    assert_eq!(
        out,
        r#"flow F() {
    when long_enough_name_number_one // one
            and long_enough_name_number_two // two
        /// stray
        // three
        or long_enough_name_number_three and long_enough_name_number_four {}
}
"#
    );
}

#[test]
fn schedules() {
    assert_fmt(
        r#"flow F(t: Float) {
schedule "0 3 * * MON" timezone "Europe/Berlin" overlap skip catchup all within 168h jitter 10m input(t: 0.9)
schedule "@daily"
}
"#,
        r#"flow F(t: Float) {
    schedule "0 3 * * MON"
        timezone "Europe/Berlin"
        overlap skip
        catchup all within 7d
        jitter 10m
        input(t: 0.9)
    schedule "@daily"
}
"#,
    );
}

#[test]
fn bindings() {
    assert_fmt(
        r#"bindings dev {
A = sim { duration: 1s }
B = sim { duration: 5s, failure_rate: 0.1, seed: 42 }
C = sim { }
/// Docs.
D = approval { approvers: ["a@example.com"], channel: "ui" }
E = http { url: "https://a-very-long-host-name.internal.example.com/v1/jobs/features", timeout: 30s }
}
bindings empty {}
"#,
        r#"bindings dev {
    A = sim { duration: 1s }
    B = sim {
        duration: 5s,
        failure_rate: 0.1,
        seed: 42,
    }
    C = sim {}
    /// Docs.
    D = approval { approvers: ["a@example.com"], channel: "ui" }
    E = http {
        url: "https://a-very-long-host-name.internal.example.com/v1/jobs/features",
        timeout: 30s,
    }
}

bindings empty {}
"#,
    );
}

// ---------------------------------------------------------------------------
// Expressions and literals.

fn ret(expr: &str) -> String {
    fmt(&format!("flow F() {{ return {expr} }}"))
        .trim_start_matches("flow F() {\n    return ")
        .trim_end_matches("\n}\n")
        .to_string()
}

#[test]
fn literals_are_canonical() {
    assert_eq!(ret("1.50"), "1.5");
    assert_eq!(ret("1e0"), "1.0");
    assert_eq!(ret("2.5E2"), "250.0");
    assert_eq!(ret("0.0002"), "2e-4");
    assert_eq!(ret("1e-3"), "1e-3");
    assert_eq!(ret("0.01"), "0.01");
    assert_eq!(ret("1e20"), "1e20");
    assert_eq!(ret("-0.5"), "-0.5");
    assert_eq!(ret("- 3"), "-3");
    assert_eq!(ret("007"), "7");
    assert_eq!(ret("90m"), "1h30m");
    assert_eq!(ret("2w"), "14d");
    assert_eq!(ret("60s"), "1m");
    assert_eq!(ret("1500ms"), "1s500ms");
    assert_eq!(ret("0ms"), "0s");
    assert_eq!(ret("36h"), "1d12h");
    assert_eq!(ret(r#""a\"b\\c\n\u{2705}""#), r#""a\"b\\c\n\u{2705}""#);
    assert_eq!(ret(r#"("x")"#), r#""x""#);
    assert_eq!(ret("true"), "true");
    assert_eq!(ret("none"), "none");
    assert_eq!(ret("run.flow"), "run.flow");
}

#[test]
fn strings_are_re_escaped_only_when_needed() {
    assert_eq!(ret("\"tab\there\""), "\"tab\there\"");
    assert_eq!(ret(r#""\t\r""#), r#""\t\r""#);
}

#[test]
fn collections() {
    assert_eq!(ret("[ 1 , 2 ,3, ]"), "[1, 2, 3]");
    assert_eq!(ret("[ ]"), "[]");
    assert_eq!(ret("{ }"), "{}");
    assert_eq!(ret("{\"a\":1,\"b\":2}"), "{ \"a\": 1, \"b\": 2 }");
    assert_eq!(ret("R{a:1}"), "R { a: 1 }");
    assert_eq!(ret("R{}"), "R {}");
    let long = format!("[\"{}\", \"{}\"]", "a".repeat(50), "b".repeat(50));
    assert_eq!(
        ret(&long),
        format!(
            "[\n        \"{}\",\n        \"{}\",\n    ]",
            "a".repeat(50),
            "b".repeat(50)
        )
    );
}

#[test]
fn parentheses_only_where_needed() {
    assert_eq!(ret("((a))"), "a");
    assert_eq!(ret("(a ?? b) ?? c"), "a ?? b ?? c");
    assert_eq!(ret("a ?? (b ?? c)"), "a ?? (b ?? c)");
    assert_eq!(ret("(a or b) and c"), "(a or b) and c");
    assert_eq!(ret("a or (b and c)"), "a or b and c");
    assert_eq!(ret("(a ?? 0.0) >= b"), "(a ?? 0.0) >= b");
    assert_eq!(ret("not (a and b)"), "not (a and b)");
    assert_eq!(ret("not (a == b)"), "not a == b");
    assert_eq!(ret("(not a) == b"), "(not a) == b");
    assert_eq!(ret("(a < b) == c"), "(a < b) == c");
    assert_eq!(ret("-(x)"), "-x");
    assert_eq!(ret("-(3)"), "-(3)");
    assert_eq!(ret("-(-3)"), "--3");
    assert_eq!(ret("-(1.5)"), "-(1.5)");
    assert_eq!(ret("- - x"), "--x");
    assert_eq!(ret("-(a ?? b)"), "-(a ?? b)");
    assert_eq!(ret("not not a"), "not not a");
    assert_eq!(ret("(a and b) and c"), "a and b and c");
    assert_eq!(ret("a and (b and c)"), "a and (b and c)");
}

#[test]
fn record_literal_in_a_condition_keeps_its_parentheses() {
    assert_fmt(
        r#"flow F() {
    when (R { a: 1 }) == x {}
    when x == (R {}) and [R {}] == y {}
}
"#,
        r#"flow F() {
    when (R { a: 1 }) == x {}
    when x == (R {}) and [R {}] == y {}
}
"#,
    );
}

// ---------------------------------------------------------------------------
// Comments.

#[test]
fn comments_between_items_and_at_the_end() {
    assert_fmt(
        r#"// Header.

// More.
from "a" import A
// between imports
from "b" import B
record R {} // trailing
// about S
record S {}

// about T

record T {}
// the end


"#,
        r#"// Header.

// More.
from "a" import A
// between imports
from "b" import B

record R {} // trailing

// about S
record S {}

// about T

record T {}
// the end
"#,
    );
}

#[test]
fn comments_in_imports() {
    assert_fmt(
        "from \"a\" import A, // first\n B // last\nfrom \"b\" import C // c\n",
        "from \"a\" import\n    A, // first\n    B, // last\nfrom \"b\" import C // c\n",
    );
}

#[test]
fn only_comments() {
    assert_fmt(
        "// just this\n\n\n// and this",
        "// just this\n\n// and this\n",
    );
    assert_fmt("", "");
    assert_fmt("\n\n", "");
}

#[test]
fn comments_in_statements() {
    assert_fmt(
        r#"flow F() { // opener
    // before x
    let x = F(a: 1) // why
        // before retry
        retry 3 // three
    let y = G(
        a: 1, // first
        // before b
        b: 2
        // after b
    ) // closer
    when c { // when opener
        // inside
    } else { // else opener
    } // after when
    schedule "x" // cron
        timezone "UTC" // tz
    // last
}
"#,
        r#"flow F() { // opener
    // before x
    let x = F(a: 1) // why
        // before retry
        retry 3 // three
    let y = G(
        a: 1, // first
        // before b
        b: 2,
        // after b
    ) // closer
    when c { // when opener
        // inside
    } else { // else opener
    } // after when
    schedule "x" // cron
        timezone "UTC" // tz
    // last
}
"#,
    );
}

#[test]
fn comments_in_bodies_and_empty_blocks() {
    assert_fmt(
        r#"record R { // opener
    a: Int, // a
    // before b

    b: Int
    // end
}
enum E {
    // nothing yet
}
flow F() {
    // todo
}
bindings dev {
    A = sim { // opener
        duration: 1s, // d
    }
    // more later
}
"#,
        r#"record R { // opener
    a: Int, // a
    // before b

    b: Int,
    // end
}

enum E {
    // nothing yet
}

flow F() {
    // todo
}

bindings dev {
    A = sim { // opener
        duration: 1s, // d
    }
    // more later
}
"#,
    );
}

#[test]
fn comments_in_parameters_arguments_and_literals() {
    assert_fmt(
        r#"remote step S(a: Int, // a
 b: Int) -> Int
flow F(x: List<Int> = [1, // one
 2]) {
    let y = S(a: 1, b: R { f: 1, // f
 })
        after x
    schedule "x"
        input(x: { "k": 1, // k
 })
}
"#,
        r#"remote step S(
    a: Int, // a
    b: Int,
) -> Int

flow F(
    x: List<Int> = [
        1, // one
        2,
    ],
) {
    let y = S(
        a: 1,
        b: R {
            f: 1, // f
        },
    )
        after x
    schedule "x"
        input(
            x: {
                "k": 1, // k
            },
        )
}
"#,
    );
}

#[test]
fn comments_inside_expressions_move_above_the_line() {
    let out = check(
        r#"flow F() {
    let x = A(a: b ?? // fallback
 c)
    when a and // second
 b {}
    return x // done
}
"#,
    );
    assert_eq!(
        out,
        r#"flow F() {
    let x = A(
        // fallback
        a: b ?? c,
    )
    // second
    when a and b {}
    return x // done
}
"#
    );
    // In a type, a step head, an option.
    check(
        r#"record R {
    a: Map< // k
 String, Int>,
}
remote step S( // open
) -> // out
 Int raises // e
 E
flow G() {
    let x = S()
        retry // n
 3
}
"#,
    );
}

#[test]
fn comments_around_doc_comments() {
    check(
        r#"// plain
/// doc
record R {
    // plain
    /// doc
    a: Int,
}
"#,
    );
    // A `///` that documents nothing stays a comment and never starts documenting.
    check(
        r#"flow F() {
    /// not a doc: statements have none
    let x = A()
}
"#,
    );
    check(
        r#"record R {
    a: Map<String, /// stray
 Int>,
    b: Int,
}
"#,
    );
    check("remote step S(a: /// stray\n Int)\n");
}

#[test]
fn crlf_and_tabs() {
    assert_fmt(
        "record R {\r\n\ta: Int, // c\r\n}\r\n",
        "record R {\n    a: Int, // c\n}\n",
    );
}

// ---------------------------------------------------------------------------
// Files.

#[test]
fn shipped_files_are_formatted() {
    let mut unformatted = Vec::new();
    for f in shipped_files() {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let out = check(&text);
        if out != text {
            unformatted.push(f.display().to_string());
        }
    }
    assert!(unformatted.is_empty(), "not formatted: {unformatted:?}");
}

#[test]
fn corpus_files_are_stable() {
    let files = corpus_ok_files();
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let out = check(&text);
        assert_eq!(
            ir(&f, &text),
            ir(&f, &out),
            "IR changed for {}",
            f.display()
        );
    }
}

/// The files with semantic errors parse, so they format like any other.
#[test]
fn corpus_error_files_are_stable_or_refused() {
    let mut files = Vec::new();
    eflow_files(&root().join("compiler/tests/corpus/err"), &mut files);
    let mut formatted = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let (_, diags) = parse(FileId(0), &text);
        if diags.is_empty() {
            check(&text);
            formatted += 1;
        } else {
            assert!(format_source(&text).is_err(), "{}", f.display());
        }
    }
    assert!(formatted > 0);
}

#[test]
fn files_with_syntax_errors_are_left_alone() {
    let text = std::fs::read_to_string(root().join("compiler/tests/corpus/err/syntax.eflow"))
        .unwrap_or_default();
    assert!(matches!(format_source(&text), Err(n) if n >= 3));
    assert_eq!(format_source("record R { a Int }"), Err(1));
    assert_eq!(format_source("flow F() { let x = A(a: 10x) }"), Err(1));
    assert_eq!(format_source("flow F() { return \"\\q\" }"), Err(1));
    assert_eq!(
        format_source("flow F() { return 99999999999999999999 }"),
        Err(1)
    );
}

#[test]
fn deep_nesting_does_not_overflow() {
    let depth = 60;
    let list = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    check(&format!("flow F() {{ return {list} }}"));
    let nots = format!("{}a", "not ".repeat(250));
    check(&format!("flow F() {{ return {nots} }}"));
    let chain = vec!["a"; 250].join(" and ");
    check(&format!("flow F() {{ return {chain} }}"));
    let ty = format!("{}Int{}", "List<".repeat(60), ">".repeat(60));
    check(&format!("record R {{ a: {ty} }}"));
    // Past the parser's limits the file is refused, not formatted.
    let too_deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    assert!(format_source(&format!("flow F() {{ return {too_deep} }}")).is_err());
}

// ---------------------------------------------------------------------------
// Properties.

fn sample_file() -> impl Strategy<Value = PathBuf> {
    let mut files = shipped_files();
    files.extend(corpus_ok_files());
    prop::sample::select(files)
}

proptest! {
    // PROPTEST_CASES raises the count for a longer hunt.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
    ))]

    /// Random whitespace, blank lines and comments between the tokens of a real
    /// file: formatting is stable, keeps the tree and the comments, and compiles to
    /// the same IR.
    #[test]
    fn mutated_files_format_to_the_same_program(
        path in sample_file(),
        picks in prop::collection::vec((any::<prop::sample::Index>(), filler()), 1..40),
    ) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mutated = mutate(&text, &picks);
        let (_, diags) = parse(FileId(0), &mutated);
        prop_assume!(diags.is_empty());
        let once = check(&mutated);
        prop_assert_eq!(ir(&path, &mutated), ir(&path, &once));
    }

    /// Spaces and tabs between tokens change nothing at all.
    #[test]
    fn spaces_between_tokens_do_not_matter(
        path in sample_file(),
        picks in prop::collection::vec(
            (any::<prop::sample::Index>(), prop_oneof![Just(" ".to_string()), Just("\t  ".to_string())]),
            1..60,
        ),
    ) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        prop_assert_eq!(fmt(&mutate(&text, &picks)), fmt(&text));
    }

    /// Token soup: never a panic; whatever parses formats stably.
    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(SOUP), 0..60)) {
        let text = tokens.concat();
        if let Ok(once) = format_source(&text) {
            prop_assert_eq!(format_source(&once), Ok(once.clone()));
            prop_assert_eq!(tree(&text), tree(&once));
            prop_assert_eq!(comments(&text), comments(&once));
        }
    }

    /// Random expressions, written with every parenthesis: the formatter keeps only
    /// the ones precedence needs, and the tree is unchanged.
    #[test]
    fn random_expressions_keep_their_tree(e in expr_source()) {
        check(&format!("flow F() {{\n    when ({e}) {{\n        let x = A(v: {e})\n    }}\n    return {e}\n}}\n"));
    }

    /// Random `when` conditions, many too long for one line, mixing `and`, `or`,
    /// `not` and parentheses, with comments, blank lines and stray `///` between
    /// their tokens, at several depths: formatting is stable and keeps the tree and
    /// every comment.
    #[test]
    fn long_conditions_with_comments_are_stable(
        cond in condition_source(),
        depth in 0usize..3,
        picks in prop::collection::vec((any::<prop::sample::Index>(), filler()), 0..16),
    ) {
        let mut text = String::from("flow F() {\n");
        for d in 0..depth {
            text.push_str(&format!("{}when w{d} {{\n", "    ".repeat(d + 1)));
        }
        let pad = "    ".repeat(depth + 1);
        text.push_str(&format!("{pad}when {cond} {{\n{pad}    let x = A()\n{pad}}} else {{}}\n"));
        for d in (0..depth).rev() {
            text.push_str(&format!("{}}}\n", "    ".repeat(d + 1)));
        }
        text.push_str("}\n");
        let mutated = mutate(&text, &picks);
        let (_, diags) = parse(FileId(0), &mutated);
        prop_assume!(diags.is_empty());
        check(&mutated);
    }

    /// Random calls, lists and literals of every width: breaking is stable.
    #[test]
    fn random_layouts_are_stable(names in prop::collection::vec("n_[a-z]{0,28}", 0..8), indent in 0usize..60) {
        let args: Vec<String> = names.iter().map(|n| format!("{n}: [{n}, \"{n}\"]")).collect();
        let pad = format!("v{}", "x".repeat(indent));
        check(&format!("flow F() {{\n    let {pad} = A({})\n        retry 2\n}}\n", args.join(", ")));
    }
}

const SOUP: &[&str] = &[
    "record ",
    "R",
    " {",
    "}",
    "(",
    ")",
    ": ",
    ", ",
    "Int",
    "?",
    "<",
    ">",
    "\nflow ",
    "F",
    "let ",
    "x",
    " = ",
    "// c\n",
    "\n",
    " ",
    "/// d\n",
    "when ",
    " else ",
    "[",
    "]",
    "1",
    "\"s\"",
    "-",
    "not ",
    " and ",
    " ?? ",
    "return ",
    "\nbindings ",
    "sim",
    "retry 2 ",
    "5s",
    "from \"a\" import ",
    "-> ",
    "remote step ",
    "for ",
    " in ",
    " join all ",
    "A",
    "B",
    "enum ",
    "type ",
    " == ",
    "0.5",
    ".",
];

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        (-5i64..1000).prop_map(|v| v.to_string()),
        prop_oneof![
            Just(0.5f64),
            Just(1e-5),
            Just(2.0),
            Just(123.25),
            Just(1e17)
        ]
        .prop_map(|v| format!("{v:?}")),
        "[a-z]{1,3}(\\.[a-z]{1,3}){0,2}".prop_filter("keyword", |s| {
            !matches!(
                s.split('.').next(),
                Some("as" | "in" | "or" | "and" | "not" | "for" | "let" | "all" | "any")
            )
        }),
        Just("\"s\\\"q\\\\\"".to_string()),
        Just("true".to_string()),
        Just("none".to_string()),
        Just("1h30m".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("R { a: 1 }".to_string()),
    ]
}

/// One operand of a condition: a name, a comparison, a `not`, of very different
/// widths (names never collide with a keyword).
fn condition_leaf() -> impl Strategy<Value = String> {
    let name = "[a-z]_[a-z_]{0,24}(\\.[a-z]_[a-z_]{0,12}){0,2}";
    prop_oneof![
        name,
        (
            name,
            prop_oneof![Just("=="), Just("!="), Just("<"), Just(">=")],
            prop_oneof![Just("0.5"), Just("250"), Just("\"a label\""), Just("none")]
        )
            .prop_map(|(n, op, v)| format!("{n} {op} {v}")),
        name.prop_map(|n| format!("not {n}")),
    ]
}

/// `operands` joined by `and` and `or` as `ops` say, without parentheses (so the
/// parser's precedence decides the tree).
fn join_chain(operands: &[String], ops: &[&str]) -> String {
    let mut s = operands[0].clone();
    for (o, op) in operands[1..].iter().zip(ops.iter().cycle()) {
        s.push_str(op);
        s.push_str(o);
    }
    s
}

/// A chain of `and` and `or` whose operands are leaves, chains, parenthesised
/// chains and negated ones.
fn condition_source() -> impl Strategy<Value = String> {
    let and_or = || prop::collection::vec(prop_oneof![Just(" and "), Just(" or ")], 1..5);
    let operand = condition_leaf().prop_recursive(2, 16, 4, move |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 2..4), and_or())
                .prop_map(|(operands, ops)| format!("({})", join_chain(&operands, &ops))),
            (prop::collection::vec(inner.clone(), 2..4), and_or())
                .prop_map(|(operands, ops)| join_chain(&operands, &ops)),
            inner.prop_map(|e| format!("not ({e})")),
        ]
    });
    (prop::collection::vec(operand, 2..7), and_or())
        .prop_map(|(operands, ops)| join_chain(&operands, &ops))
}

fn expr_source() -> impl Strategy<Value = String> {
    leaf().prop_recursive(5, 40, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| format!("(not ({e}))")),
            inner.clone().prop_map(|e| format!("(-({e}))")),
            inner.clone().prop_map(|e| format!("(-{e})")),
            (
                inner.clone(),
                inner.clone(),
                prop_oneof![
                    Just("??"),
                    Just("or"),
                    Just("and"),
                    Just("=="),
                    Just("!="),
                    Just("<"),
                    Just("<="),
                    Just(">"),
                    Just(">=")
                ]
            )
                .prop_map(|(a, b, op)| format!("(({a}) {op} ({b}))")),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            (inner.clone(), inner.clone()).prop_map(|(k, v)| format!("{{ {k}: {v} }}")),
            inner.prop_map(|e| format!("R {{ a: {e}, b: 1 }}")),
        ]
    })
}
