//! Long explanations of the diagnostic codes, printed by `eflowc explain E0200` and
//! used as the SARIF rules' help.
//!
//! Each explanation says what the code means, why eflow rejects (or warns about) it,
//! and shows a triggering `.eflow` snippet and its fixed version, both in fenced
//! ```` ```eflow ```` blocks headed `Example:` and `Fixed:`.

use super::Code;

/// The text printed by `eflowc explain`: a title line, a blank line, the explanation.
pub fn render_explain(code: Code) -> String {
    let mut out = format!("{}: {}\n\n{}", code, code.title(), explanation(code).trim());
    out.push('\n');
    out
}

/// The long explanation of a code, in Markdown.
pub fn explanation(code: Code) -> &'static str {
    match code {
        Code::Syntax => SYNTAX,
        Code::InvalidDuration => INVALID_DURATION,
        Code::InvalidNumber => INVALID_NUMBER,
        Code::InvalidEscape => INVALID_ESCAPE,
        Code::NotUtf8 => NOT_UTF8,
        Code::UnknownName => UNKNOWN_NAME,
        Code::UnknownType => UNKNOWN_TYPE,
        Code::Duplicate => DUPLICATE,
        Code::UnresolvedImport => UNRESOLVED_IMPORT,
        Code::ImportNotFound => IMPORT_NOT_FOUND,
        Code::UnknownCallee => UNKNOWN_CALLEE,
        Code::UnknownField => UNKNOWN_FIELD,
        Code::UnknownVariant => UNKNOWN_VARIANT,
        Code::UnknownError => UNKNOWN_ERROR,
        Code::NotAType => NOT_A_TYPE,
        Code::NotCallable => NOT_CALLABLE,
        Code::TypeMismatch => TYPE_MISMATCH,
        Code::MissingArgument => MISSING_ARGUMENT,
        Code::UnknownArgument => UNKNOWN_ARGUMENT,
        Code::DuplicateArgument => DUPLICATE_ARGUMENT,
        Code::TypeArity => TYPE_ARITY,
        Code::ConditionNotBool => CONDITION_NOT_BOOL,
        Code::MaybeAbsent => MAYBE_ABSENT,
        Code::MissingField => MISSING_FIELD,
        Code::CannotInfer => CANNOT_INFER,
        Code::MissingReturn => MISSING_RETURN,
        Code::InvalidOperands => INVALID_OPERANDS,
        Code::InvalidMapKey => INVALID_MAP_KEY,
        Code::Cycle => CYCLE,
        Code::RecursiveFlow => RECURSIVE_FLOW,
        Code::ConditionNotAvailable => CONDITION_NOT_AVAILABLE,
        Code::Unreachable => UNREACHABLE,
        Code::NotAList => NOT_A_LIST,
        Code::MisplacedStatement => MISPLACED_STATEMENT,
        Code::RepeatBound => REPEAT_BOUND,
        Code::RepeatWithoutOutput => REPEAT_WITHOUT_OUTPUT,
        Code::InvalidCron => INVALID_CRON,
        Code::UnknownTimezone => UNKNOWN_TIMEZONE,
        Code::BindingUnknownStep => BINDING_UNKNOWN_STEP,
        Code::UnknownConnector => UNKNOWN_CONNECTOR,
        Code::MissingConfig => MISSING_CONFIG,
        Code::InvalidConfig => INVALID_CONFIG,
        Code::ConnectorKind => CONNECTOR_KIND,
        Code::InvalidOption => INVALID_OPTION,
        Code::DuplicateOption => DUPLICATE_OPTION,
        Code::UnusedOutput => UNUSED_OUTPUT,
        Code::UnusedImport => UNUSED_IMPORT,
        Code::MissingBinding => MISSING_BINDING,
        Code::UnusedParam => UNUSED_PARAM,
        Code::LegacyTimezone => LEGACY_TIMEZONE,
        Code::FlowRemoved => FLOW_REMOVED,
        Code::InputNarrowed => INPUT_NARROWED,
        Code::ResultChanged => RESULT_CHANGED,
        Code::ContractChanged => CONTRACT_CHANGED,
        Code::BindingMoved => BINDING_MOVED,
        Code::Compatible => COMPATIBLE,
    }
}

// --- Syntax -------------------------------------------------------------------------

const SYNTAX: &str = r##"
The parser met a token it did not expect: a missing or extra bracket, a keyword in
the wrong place, an option without its value, or a chained comparison.

eflow has one way to write each construct, so a syntax error is reported where the
text stops matching the grammar; the message says what was expected there. The
parser recovers at the next item or statement, so later errors are still reported.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10) retry
  return loss
}
```

`retry` needs the total number of attempts.

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10) retry 3
  return loss
}
```
"##;

const INVALID_DURATION: &str = r##"
A duration literal is malformed. A duration is one or more `<digits><unit>` parts
with no spaces, units `ms`, `s`, `m`, `h`, `d` and `w`: `500ms`, `30s`, `1h30m`, `7d`.

Durations are exact: fractions, unknown units (such as `y` or `sec`) and spaces
inside a duration are rejected rather than guessed at, because a timeout or a
backoff that silently means something else is hard to notice.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10) timeout 1.5h
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10) timeout 1h30m
  return loss
}
```
"##;

const INVALID_NUMBER: &str = r##"
A number literal cannot be represented: an integer too large for `Int`, or a float
too large for `Float`.

eflow does not wrap or round such literals, since the value that would reach a step
is not the one written in the source.

Example:

```eflow
remote step Fit(epochs: Int, seed: Int) -> Float

flow Train(seed: Int = 99999999999999999999) -> Float {
  let loss = Fit(epochs: 10, seed: seed)
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int, seed: Int) -> Float

flow Train(seed: Int = 42) -> Float {
  let loss = Fit(epochs: 10, seed: seed)
  return loss
}
```
"##;

const INVALID_ESCAPE: &str = r##"
A string contains a backslash escape that eflow does not know. The escapes are
`\"`, `\\`, `\n`, `\t` and `\u{...}` with a hexadecimal code point, such as
`\u{1F600}`.

Unknown escapes are errors instead of being kept literally, so that a Windows-style
path or a regular expression does not change meaning without notice. Write `\\` for
a backslash.

Example:

```eflow
remote step Load(path: String) -> Int

flow Count(path: String = "models\v2\weights.bin") -> Int {
  let rows = Load(path: path)
  return rows
}
```

Fixed:

```eflow
remote step Load(path: String) -> Int

flow Count(path: String = "models\\v2\\weights.bin") -> Int {
  let rows = Load(path: path)
  return rows
}
```
"##;

const NOT_UTF8: &str = r##"
A file is not UTF-8: it has a byte that cannot start or continue a UTF-8
character, most often because an editor saved it in a legacy encoding such as
Latin-1 (ISO-8859-1) or Windows-1252, where `è` is the one byte `0xE8`.

eflow source is always UTF-8. The file is not read any further: the diagnostic
points at the first invalid byte, and names the file declares are not reported as
missing where other files import them. It is reported like any other error, in
every output format, so a CI job that writes SARIF or annotations still says which
file and where instead of failing with no output.

Example:

```eflow
// Modèle de churn, saved as Latin-1
remote step Fit(epochs: Int) -> Float
```

Fixed, the same text converted to UTF-8 (`iconv -f latin1 -t utf-8`, or "save
with encoding" in an editor):

```eflow
// Modèle de churn, saved as UTF-8
remote step Fit(epochs: Int) -> Float
```
"##;

// --- Names --------------------------------------------------------------------------

const UNKNOWN_NAME: &str = r##"
An expression uses a name that is not defined: not a parameter of the flow, not a
`let` in it, not the built-in `run`.

Flows are checked before they run, so a misspelt name is caught here rather than
hours into a training run.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train(epochs: Int) -> Float {
  let loss = Fit(epochs: epoch)
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train(epochs: Int) -> Float {
  let loss = Fit(epochs: epochs)
  return loss
}
```
"##;

const UNKNOWN_TYPE: &str = r##"
A type annotation names a type that does not exist. The types are the primitives
`Bool`, `Int`, `Float`, `String`, `Duration` and `Timestamp`, `List<T>`, `Map<K, V>`,
optional types `T?`, and the records, enums and aliases defined in the file or
imported into it.

Types are contracts between steps; a contract with an unknown type cannot be
checked, so it is rejected.

Example:

```eflow
remote step Fit(rate: Flaot) -> Float
```

Fixed:

```eflow
remote step Fit(rate: Float) -> Float
```
"##;

const DUPLICATE: &str = r##"
Two definitions have the same name where names must be unique: two top-level items
in one file (types, steps and flows share one namespace), two fields of a record,
two variants of an enum, two parameters, or two `let`s in one flow.

A name must refer to exactly one thing, or references to it would be ambiguous. The
secondary label points at the first definition.

Example:

```eflow
record Model { name: String }

remote step Model(name: String) -> Bool
```

Fixed:

```eflow
record Model { name: String }

remote step RegisterModel(name: String) -> Bool
```
"##;

const UNRESOLVED_IMPORT: &str = r##"
The module named in a `from "..." import` cannot be found. `std/...` paths name
standard library modules; any other path is relative to the directory of the
importing file, with the `.eflow` extension optional.

Every module a flow depends on must be known at compile time so the whole program
can be checked and compiled into one IR.

Example:

```eflow
from "./shared/featurs" import Refresh

flow Daily() -> Int {
  let rows = Refresh()
  return rows
}
```

Fixed:

```eflow
from "./shared/features" import Refresh

flow Daily() -> Int {
  let rows = Refresh()
  return rows
}
```
"##;

const IMPORT_NOT_FOUND: &str = r##"
An import names something the imported module does not define. All top-level names
of a module are public, so the name is either misspelt or defined elsewhere.

Example, where `shared/features.eflow` defines `remote step Refresh() -> Int`:

```eflow
from "./shared/features" import Refesh

flow Daily() -> Int {
  let rows = Refesh()
  return rows
}
```

Fixed:

```eflow
from "./shared/features" import Refresh

flow Daily() -> Int {
  let rows = Refresh()
  return rows
}
```
"##;

const UNKNOWN_CALLEE: &str = r##"
A `let` calls a step or flow that is not defined in the file or imported into it.

Every `let` in a flow is a step, a subflow call or a fan-out, and its contract must
be known to check the arguments and the type of the result.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fitt(epochs: 10)
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10)
  return loss
}
```
"##;

const UNKNOWN_FIELD: &str = r##"
A field access (`value.field`) or a record literal names a field the record does not
have. Records are nominal and closed: their fields are exactly the declared ones.

Example:

```eflow
record Metrics { accuracy: Float, loss: Float }

remote step Evaluate(model: String) -> Metrics

flow Check(model: String) -> Bool {
  let metrics = Evaluate(model: model)
  return metrics.acuracy > 0.9
}
```

Fixed:

```eflow
record Metrics { accuracy: Float, loss: Float }

remote step Evaluate(model: String) -> Metrics

flow Check(model: String) -> Bool {
  let metrics = Evaluate(model: model)
  return metrics.accuracy > 0.9
}
```
"##;

const UNKNOWN_VARIANT: &str = r##"
A path names a variant the enum does not declare. Enums are closed: a value of an
enum type is always one of its declared variants.

Example:

```eflow
enum Stage { Staging, Production }

remote step Deploy(model: String, stage: Stage) -> Bool

flow Ship(model: String) -> Bool {
  let done = Deploy(model: model, stage: Stage.Prod)
  return done
}
```

Fixed:

```eflow
enum Stage { Staging, Production }

remote step Deploy(model: String, stage: Stage) -> Bool

flow Ship(model: String) -> Bool {
  let done = Deploy(model: model, stage: Stage.Production)
  return done
}
```
"##;

const UNKNOWN_ERROR: &str = r##"
`non_retryable` names an error the step cannot raise. The names allowed are those in
the step's `raises` list, plus `Timeout`.

A misspelt error name would silently never match, and the step would be retried on
exactly the failure meant to stop it.

Example:

```eflow
remote step Fit(epochs: Int) -> Float raises OutOfMemory, BadData

flow Train() -> Float {
  let loss = Fit(epochs: 10) retry 3 non_retryable BadInput
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float raises OutOfMemory, BadData

flow Train() -> Float {
  let loss = Fit(epochs: 10) retry 3 non_retryable BadData
  return loss
}
```
"##;

const NOT_A_TYPE: &str = r##"
A type annotation names something that exists but is not a type: a step or a flow.

Steps and flows are called, not used as types. To talk about a step's result, use the
type the step returns.

Example:

```eflow
record Model { name: String }

remote step Fit(epochs: Int) -> Model

remote step Publish(model: Fit) -> Bool
```

Fixed:

```eflow
record Model { name: String }

remote step Fit(epochs: Int) -> Model

remote step Publish(model: Model) -> Bool
```
"##;

const NOT_CALLABLE: &str = r##"
A `let` calls something that is not a step or a flow, such as a record or an enum.

Each `let` becomes a node of the flow graph that some connector carries out, so only
steps, subflows and fan-outs can appear there. To build a record value, write a
record literal (`Model { name: "resnet" }`) where the value is needed.

Example:

```eflow
record Model { name: String }

flow Make() -> Model {
  let model = Model(name: "resnet")
  return model
}
```

Fixed:

```eflow
record Model { name: String }

flow Make() -> Model {
  return Model { name: "resnet" }
}
```
"##;

// --- Types --------------------------------------------------------------------------

const TYPE_MISMATCH: &str = r##"
A value has a different type from the one expected: an argument that does not match
its parameter, a `return` that does not match the flow's result type, a field of a
record literal, or a default value.

eflow does not convert between types implicitly (an `Int` is not a `String`, a
`Float` is not an `Int`), so a contract between steps means exactly what it says. A
secondary label usually shows where the expected type comes from.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: "10")
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10)
  return loss
}
```
"##;

const MISSING_ARGUMENT: &str = r##"
A call does not pass a parameter that has no default value.

Arguments are named and every parameter without a default must be given, so a call
cannot start a step with a missing input.

Example:

```eflow
remote step Fit(epochs: Int, rate: Float) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10)
  return loss
}
```

Fixed, by passing it or by giving the parameter a default:

```eflow
remote step Fit(epochs: Int, rate: Float = 0.01) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10)
  return loss
}
```
"##;

const UNKNOWN_ARGUMENT: &str = r##"
A call passes an argument whose name is not a parameter of the step or flow.

Arguments are matched by name; an unknown one would be dropped, which usually means a
misspelling or a contract that changed.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10, verbose: true)
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10)
  return loss
}
```
"##;

const DUPLICATE_ARGUMENT: &str = r##"
A call passes the same argument twice.

Which of the two values would win is not obvious to a reader, so eflow asks for one.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10, epochs: 20)
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 20)
  return loss
}
```
"##;

const TYPE_ARITY: &str = r##"
A generic type is given the wrong number of type arguments, or a type that takes none
is given some. `List` takes one, `Map` two; generic records and aliases take as many
as they declare.

Example:

```eflow
remote step Score(values: Map<String>) -> Float
```

Fixed:

```eflow
remote step Score(values: Map<String, Float>) -> Float
```
"##;

const CONDITION_NOT_BOOL: &str = r##"
The condition of a `when` is not a `Bool`.

eflow has no truthiness: a number, a string or an optional value is not a condition.
Compare it, or use `??` to give an optional `Bool` a default.

Example:

```eflow
remote step Evaluate(model: String) -> Float
remote step Promote(model: String) -> Bool

flow Release(model: String) -> Bool {
  let accuracy = Evaluate(model: model)
  when accuracy {
    let promoted = Promote(model: model)
  }
  return promoted ?? false
}
```

Fixed:

```eflow
remote step Evaluate(model: String) -> Float
remote step Promote(model: String) -> Bool

flow Release(model: String) -> Bool {
  let accuracy = Evaluate(model: model)
  when accuracy > 0.9 {
    let promoted = Promote(model: model)
  }
  return promoted ?? false
}
```
"##;

const MAYBE_ABSENT: &str = r##"
An optional value (`T?`) is used where a `T` is required. Values defined inside a
`when` are optional outside it, since the branch may not run; `none` and fields of
type `T?` are optional too.

eflow makes absence explicit so a flow cannot pass a missing value to a step. Give a
default with `??`, or use the value inside the `when` where it is present.

Example:

```eflow
remote step Evaluate(model: String) -> Float
remote step Promote(model: String) -> Bool

flow Release(model: String) -> Bool {
  let accuracy = Evaluate(model: model)
  when accuracy > 0.9 {
    let promoted = Promote(model: model)
  }
  return promoted
}
```

Fixed:

```eflow
remote step Evaluate(model: String) -> Float
remote step Promote(model: String) -> Bool

flow Release(model: String) -> Bool {
  let accuracy = Evaluate(model: model)
  when accuracy > 0.9 {
    let promoted = Promote(model: model)
  }
  return promoted ?? false
}
```
"##;

const MISSING_FIELD: &str = r##"
A record literal does not give every field of the record that is not optional.
Fields have no defaults, except that an optional field (`T?`) left out is `none`.

Example:

```eflow
record Config { rate: Float, epochs: Int }

remote step Fit(config: Config) -> Float

flow Train() -> Float {
  let loss = Fit(config: Config { rate: 0.01 })
  return loss
}
```

Fixed:

```eflow
record Config { rate: Float, epochs: Int }

remote step Fit(config: Config) -> Float

flow Train() -> Float {
  let loss = Fit(config: Config { rate: 0.01, epochs: 10 })
  return loss
}
```
"##;

const CANNOT_INFER: &str = r##"
A call to a generic step or flow leaves a type parameter undetermined: no argument of
the call fixes it.

Calls have no explicit type arguments; type parameters are worked out from the
arguments of the call. A type parameter that appears only in the result type cannot
be worked out from them, and the IR could not say what the step returns. Use a concrete type, or make an input
carry the type parameter.

Example:

```eflow
remote step Load<T>(path: String) -> T

flow Rows() -> List<Float> {
  let rows = Load(path: "s3://data/rows.parquet")
  return rows
}
```

Fixed:

```eflow
remote step Load(path: String) -> List<Float>

flow Rows() -> List<Float> {
  let rows = Load(path: "s3://data/rows.parquet")
  return rows
}
```
"##;

const MISSING_RETURN: &str = r##"
A flow that declares a result type (`-> T`) has no `return`, a flow without a
result type has one, or a flow has a second `return`.

The result of a flow is part of its contract with the callers and the runtime: it
must be produced exactly when it is declared.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10)
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10)
  return loss
}
```
"##;

const INVALID_OPERANDS: &str = r##"
An operator is applied to values it does not accept: comparing values of different
types, ordering values that have no order (records, lists, `Bool`), `and`/`or`/`not`
on non-`Bool` values, `-` on a non-number, or `??` on a value that is not optional.

Example:

```eflow
remote step Evaluate(model: String) -> Float

flow Check(model: String) -> Bool {
  let accuracy = Evaluate(model: model)
  return accuracy >= "0.9"
}
```

Fixed:

```eflow
remote step Evaluate(model: String) -> Float

flow Check(model: String) -> Bool {
  let accuracy = Evaluate(model: model)
  return accuracy >= 0.9
}
```
"##;

const INVALID_MAP_KEY: &str = r##"
A `Map` has a key type other than `String`, `Int` or an enum.

Map keys must compare exactly and have a plain text form when maps are passed to
connectors; floats, records and lists do not.

Example:

```eflow
remote step Thresholds() -> Map<Float, String>
```

Fixed:

```eflow
remote step Thresholds() -> Map<String, Float>
```
"##;

// --- The flow graph -----------------------------------------------------------------

const CYCLE: &str = r##"
Steps of a flow depend on each other in a circle, through data references or
`after`. The labels show the steps of the cycle.

A flow body is a dependency graph, not a sequence: each step starts when what it uses
is available. In a cycle no step could ever start.

Example:

```eflow
remote step Prepare(source: String) -> String
remote step Check(data: String) -> String

flow Pipeline(source: String) -> String {
  let data = Prepare(source: report)
  let report = Check(data: data)
  return report
}
```

Fixed:

```eflow
remote step Prepare(source: String) -> String
remote step Check(data: String) -> String

flow Pipeline(source: String) -> String {
  let data = Prepare(source: source)
  let report = Check(data: data)
  return report
}
```
"##;

const RECURSIVE_FLOW: &str = r##"
A flow calls itself as a subflow, directly or through other flows.

Flows compile to a finite graph; recursion would make it infinite. To repeat a step,
use `retry`; to run it over many inputs, use a fan-out `for ... in ... join ...`.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train(epochs: Int) -> Float {
  let loss = Fit(epochs: epochs)
  let again = Train(epochs: epochs)
  return again
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train(epochs: Int) -> Float {
  let loss = Fit(epochs: epochs) retry 3
  return loss
}
```
"##;

const CONDITION_NOT_AVAILABLE: &str = r##"
The condition of a `when` uses a value that is only produced inside that `when` (or
inside a later branch that depends on it), so the condition could never be decided.

A condition is evaluated before its branch starts; everything it reads must come
from steps outside the branch.

Example:

```eflow
remote step Evaluate(model: String) -> Float
remote step Promote(model: String) -> Bool

flow Release(model: String) -> Bool {
  when score > 0.9 {
    let score = Evaluate(model: model)
    let promoted = Promote(model: model)
  }
  return promoted ?? false
}
```

Fixed:

```eflow
remote step Evaluate(model: String) -> Float
remote step Promote(model: String) -> Bool

flow Release(model: String) -> Bool {
  let score = Evaluate(model: model)
  when score > 0.9 {
    let promoted = Promote(model: model)
  }
  return promoted ?? false
}
```
"##;

const UNREACHABLE: &str = r##"
A step can never run, for example because the `when` around it has a condition that
is always false.

An unreachable step is almost always a mistake in a condition, and keeping it would
leave bindings and monitoring for a step that never happens.

Example:

```eflow
remote step Promote(model: String) -> Bool

flow Release(model: String) -> Bool {
  when false {
    let promoted = Promote(model: model)
  }
  return promoted ?? false
}
```

Fixed:

```eflow
remote step Promote(model: String) -> Bool

flow Release(model: String, promote: Bool = false) -> Bool {
  when promote {
    let promoted = Promote(model: model)
  }
  return promoted ?? false
}
```
"##;

const NOT_A_LIST: &str = r##"
A fan-out `for x in value join ...` iterates over a value that is not a `List`.

A fan-out starts one child per element; only a list has elements in a defined order.

Example:

```eflow
remote step Fit(dataset: String) -> Float

flow Sweep(dataset: String) -> List<Float> {
  let losses = for d in dataset join all { Fit(dataset: d) }
  return losses
}
```

Fixed:

```eflow
remote step Fit(dataset: String) -> Float

flow Sweep(datasets: List<String>) -> List<Float> {
  let losses = for d in datasets join all { Fit(dataset: d) }
  return losses
}
```
"##;

const REPEAT_BOUND: &str = r##"
A `repeat … at_most N` loop has a bound below 1 or above 100.

The bound is how many iterations the loop may take at most, written as a number so
that the compiler knows it: a loop with no iteration does nothing, and every
iteration is a step run recorded in the run's history, so a loop is held to 100.
Work that goes on for longer belongs to a schedule that starts runs.

Example:

```eflow
remote step Refine(previous: Float?) -> Float

flow Tune() -> Float {
  let score = repeat s at_most 0 { Refine(previous: s) } until s >= 0.9
  return score
}
```

Fixed:

```eflow
remote step Refine(previous: Float?) -> Float

flow Tune() -> Float {
  let score = repeat s at_most 5 { Refine(previous: s) } until s >= 0.9
  return score
}
```
"##;

const REPEAT_WITHOUT_OUTPUT: &str = r##"
A `repeat` loop calls a step or subflow that returns nothing.

Each iteration is given the previous iteration's output, the `until` condition reads
the iteration's output, and the loop's value is the last iteration's output: a call
without an output gives the loop nothing to go on.

Example:

```eflow
remote step Nudge(previous: Int?)

flow Tune() {
  let n = repeat p at_most 3 { Nudge(previous: none) }
}
```

Fixed:

```eflow
remote step Nudge(previous: Int?) -> Int

flow Tune() -> Int {
  let n = repeat p at_most 3 { Nudge(previous: p) }
  return n
}
```
"##;

const MISPLACED_STATEMENT: &str = r##"
A statement appears where it has no meaning, for example a `schedule` or the
flow's `deadline` inside a `when`.

Schedules and the flow's deadline describe the whole run, not one branch of it, so
they belong at the top level of the flow body.

Example:

```eflow
remote step Refresh() -> Int

flow Daily(enabled: Bool = true) -> Int {
  let rows = Refresh()
  when enabled {
    schedule "0 3 * * *"
  }
  return rows
}
```

Fixed:

```eflow
remote step Refresh() -> Int

flow Daily() -> Int {
  let rows = Refresh()
  schedule "0 3 * * *"
  return rows
}
```
"##;

// --- Schedules, options and bindings ------------------------------------------------

const INVALID_CRON: &str = r##"
A `schedule` string is not a valid cron expression. eflow accepts 5 fields (minute,
hour, day of month, month, day of week), 6 (with seconds first) or 7 (with a year
last), each in its range.

A schedule that cannot be parsed would never start a run, which is easy to miss.

Example:

```eflow
remote step Refresh() -> Int

flow Daily() -> Int {
  let rows = Refresh()
  schedule "0 25 * * *"
  return rows
}
```

Fixed:

```eflow
remote step Refresh() -> Int

flow Daily() -> Int {
  let rows = Refresh()
  schedule "0 3 * * *"
  return rows
}
```
"##;

const UNKNOWN_TIMEZONE: &str = r##"
A schedule's `timezone` is not an IANA time zone name. Use names such as
`Europe/Paris` or `America/New_York`; the default is `UTC`.

Cron times are interpreted in this zone, including its daylight saving changes, so
it must be one the runtime knows exactly.

Example:

```eflow
remote step Refresh() -> Int

flow Daily() -> Int {
  let rows = Refresh()
  schedule "0 3 * * *" timezone "Paris"
  return rows
}
```

Fixed:

```eflow
remote step Refresh() -> Int

flow Daily() -> Int {
  let rows = Refresh()
  schedule "0 3 * * *" timezone "Europe/Paris"
  return rows
}
```
"##;

const BINDING_UNKNOWN_STEP: &str = r##"
A `bindings` block binds a name that is not a step: it is misspelt, not imported, or
names a flow, a type or something else.

Bindings say how each step is carried out per environment; a binding for nothing is
dead configuration, usually left over from a rename.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fitt = http { url: "https://ml.example.com/fit" }
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fit = http { url: "https://ml.example.com/fit" }
}
```
"##;

const UNKNOWN_CONNECTOR: &str = r##"
A binding uses a connector that does not exist. The connectors are `http`, `sim`,
`registry` and `approval`.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fit = kubernetes { url: "https://ml.example.com/fit" }
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fit = http { url: "https://ml.example.com/fit" }
}
```
"##;

const MISSING_CONFIG: &str = r##"
A binding leaves out configuration its connector requires, such as the `url` of an
`http` binding or the `kind` of a `registry` binding.

Bindings are checked at compile time so that a deployment does not fail on its first
run for want of a setting.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fit = http { timeout: 30s }
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fit = http { url: "https://ml.example.com/fit", timeout: 30s }
}
```
"##;

const INVALID_CONFIG: &str = r##"
A binding's configuration has a key the connector does not know, or a value of the
wrong type or out of range: an `http` timeout that is not a duration, a `sim`
`failure_rate` outside 0 to 1, a `registry` `kind` other than `"model"` or
`"dataset"`.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fit = http { url: "https://ml.example.com/fit", timeout: "30s" }
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fit = http { url: "https://ml.example.com/fit", timeout: 30s }
}
```
"##;

const CONNECTOR_KIND: &str = r##"
A step is bound to a connector that cannot carry out its kind of step, for example a
`remote step` bound to the `approval` connector, which only asks people to approve.

Step kinds (`remote`, `call`, `approval`, `wait`) say what happens at run time;
the connector must be able to do that.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fit = approval { approvers: ["ml-leads"], channel: "#releases" }
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

bindings prod {
  Fit = http { url: "https://ml.example.com/fit" }
}
```
"##;

const INVALID_OPTION: &str = r##"
A step option or schedule clause has a value out of range or not among its choices,
for example `retry 0` (the number of attempts is at least 1), `parallel 0`, `join at_least 0`,
an `overlap` other than `skip`, `buffer_one`, `allow_all` or `cancel_running`, a
`catchup` other than `skip`, `once` or `all`, an `exponential` backoff whose
maximum is below its initial delay, or a zero `timeout` or flow `deadline`.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10) retry 0
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10) retry 3
  return loss
}
```
"##;

const DUPLICATE_OPTION: &str = r##"
The same option is given twice to one step (`retry`, `backoff`, `timeout`,
`parallel`, ...), the same clause twice to one schedule (`timezone`, `overlap`,
...), or a flow's `deadline` twice. `after` and `non_retryable` may list several
names, but only once each.

Which value would apply is not obvious to a reader, so eflow asks for one.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10) retry 3 timeout 1h retry 5
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10) retry 5 timeout 1h
  return loss
}
```
"##;

// --- Warnings -----------------------------------------------------------------------

const UNUSED_OUTPUT: &str = r##"
A step produces an output that nothing uses: no other step, condition or `return`
reads its `let` name.

The step still runs, so this is a warning; but work whose result is thrown away is
often a forgotten wire. Use the value, or, if the step runs only for its effect,
declare it without an output and order other steps with `after`.

Example:

```eflow
remote step Evaluate(model: String) -> Float
remote step Deploy(model: String) -> Bool

flow Ship(model: String) -> Bool {
  let accuracy = Evaluate(model: model)
  let done = Deploy(model: model)
  return done
}
```

Fixed:

```eflow
remote step Evaluate(model: String) -> Float
remote step Deploy(model: String) -> Bool

flow Ship(model: String) -> Bool {
  let accuracy = Evaluate(model: model)
  when accuracy > 0.9 {
    let deployed = Deploy(model: model)
  }
  return deployed ?? false
}
```
"##;

const UNUSED_IMPORT: &str = r##"
An imported name is not used in the file.

Unused imports make a module look as if it depends on more than it does. Remove the
name (or the whole import). Each unused name of an import is reported on its own.
While a name in the file does not resolve (E0100, E0101, E0105), unused imports are
not reported: a misspelled use is the usual reason an import looks unused.

Example:

```eflow
from "./shared/features" import Refresh, Backfill

flow Daily() -> Int {
  let rows = Refresh()
  return rows
}
```

Fixed:

```eflow
from "./shared/features" import Refresh

flow Daily() -> Int {
  let rows = Refresh()
  return rows
}
```
"##;

const MISSING_BINDING: &str = r##"
A step used by a flow has no binding in one of the environments that a `bindings`
block of the flow's own file names, in that file or any other compiled with it, so
the flow cannot run there. `wait` steps need no binding; an environment named only
by another file's `bindings` is that file's concern.

This is a warning because a flow may be meant to run only in some environments;
deploying to an environment with unbound steps fails.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10)
  return loss
}

bindings staging {
  Fit = sim { duration: 5s }
}

bindings prod {
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train() -> Float {
  let loss = Fit(epochs: 10)
  return loss
}

bindings staging {
  Fit = sim { duration: 5s }
}

bindings prod {
  Fit = http { url: "https://ml.example.com/fit" }
}
```
"##;

const UNUSED_PARAM: &str = r##"
A parameter of a flow is never used in its body.

Callers and schedules must still pass it, so it is part of the flow's contract for
nothing. Use it, or remove it.

Example:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train(epochs: Int, rate: Float) -> Float {
  let loss = Fit(epochs: epochs)
  return loss
}
```

Fixed:

```eflow
remote step Fit(epochs: Int) -> Float

flow Train(epochs: Int) -> Float {
  let loss = Fit(epochs: epochs)
  return loss
}
```
"##;

const LEGACY_TIMEZONE: &str = r##"
A schedule's time zone is a fixed offset or a legacy name (`EST`, `MST`, `HST`,
`EST5EDT`, `Etc/GMT+5`, `Japan`), not a place.

`EST` is UTC−5 all year: a schedule meant for New York fires an hour early for the
half of the year New York is on daylight saving time. Name the place
(`Area/Location`, e.g. `America/New_York`), whose rules the zone database keeps,
or `UTC` when that is what is meant.

Example:

```eflow
remote step Refresh() -> Int

flow Nightly() -> Int {
  schedule "0 2 * * *"
    timezone "EST"
  let rows = Refresh()
  return rows
}
```

Fixed:

```eflow
remote step Refresh() -> Int

flow Nightly() -> Int {
  schedule "0 2 * * *"
    timezone "America/New_York"
  let rows = Refresh()
  return rows
}
```
"##;

// --- Changes between two bundles (`eflowc diff OLD NEW`) ----------------------------
//
// The first example is the old version, the second the new one.

const FLOW_REMOVED: &str = r##"
A flow of the old bundle is not in the new one. API callers that start it, its
schedules (they stop with it) and flows deployed before that call it as a subflow
break.

Example:

```eflow
remote step Refresh() -> Int

flow Nightly() -> Int {
  schedule "0 2 * * *"
  let rows = Refresh()
  return rows
}
```

Changed:

```eflow
remote step Refresh() -> Int
```
"##;

const INPUT_NARROWED: &str = r##"
A flow accepts fewer inputs than before: a parameter without a default was added,
a parameter was removed, lost its default, or its type accepts fewer values (`Int?`
to `Int`, a record with a new required field). Schedules' inputs and API callers
that start it as before are refused. Give a new parameter a default, or keep the
old type.

Example:

```eflow
remote step Refresh(table: String) -> Int

flow Nightly(table: String) -> Int {
  let rows = Refresh(table: table)
  return rows
}
```

Changed:

```eflow
remote step Refresh(table: String) -> Int

flow Nightly(table: String, limit: Int) -> Int {
  let rows = Refresh(table: table)
  return rows
}
```
"##;

const RESULT_CHANGED: &str = r##"
A flow's result type changed, so that what it returns is not what callers read
before: flows calling it as a subflow and API callers reading runs' results break.
A result that becomes optional, or whose type accepts more values, is compatible
only for those who give it; for those who read it, it is a change too.

Example:

```eflow
remote step Refresh() -> Int

flow Nightly() -> Int {
  let rows = Refresh()
  return rows
}
```

Changed:

```eflow
remote step Refresh() -> String

flow Nightly() -> String {
  let rows = Refresh()
  return rows
}
```
"##;

const CONTRACT_CHANGED: &str = r##"
A step contract's inputs, output or kind changed. The remote systems that implement
it (what its bindings call) receive different inputs or must answer with a
different output: they break until they are changed with it.

Example:

```eflow
remote step Refresh(table: String) -> Int

flow Nightly() -> Int {
  let rows = Refresh(table: "events")
  return rows
}
```

Changed:

```eflow
remote step Refresh(table: String, since: String) -> Int

flow Nightly() -> Int {
  let rows = Refresh(table: "events", since: "2026-01-01")
  return rows
}
```
"##;

const BINDING_MOVED: &str = r##"
A step's binding in an environment moved to another connector (from `sim` to
`http`, say): runs in that environment call a different system, and steps waiting
on the old one when the new version is deployed are not answered by the new one.

Example:

```eflow
remote step Refresh() -> Int

flow Nightly() -> Int {
  let rows = Refresh()
  return rows
}

bindings prod {
  Refresh = sim { duration: 1s }
}
```

Changed:

```eflow
remote step Refresh() -> Int

flow Nightly() -> Int {
  let rows = Refresh()
  return rows
}

bindings prod {
  Refresh = http { url: "https://refresh.example.com/run" }
}
```
"##;

const COMPATIBLE: &str = r##"
A change that breaks no one: a flow added, a parameter added with a default, an
input that accepts more values than before, steps, retries, timeouts, schedules or
bindings' configuration changed. The flow gets a new version; runs in progress
finish on the version they started with.

Example:

```eflow
remote step Refresh() -> Int

flow Nightly() -> Int {
  let rows = Refresh()
  return rows
}
```

Changed:

```eflow
remote step Refresh() -> Int

flow Nightly() -> Int {
  let rows = Refresh()
    retry 3
  return rows
}
```
"##;
