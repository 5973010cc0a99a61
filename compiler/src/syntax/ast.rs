//! The syntax tree: what the parser produces from one `.eflow` file.
//!
//! Every node carries a [`Span`] (byte offsets into its file). The tree is a faithful
//! picture of the source, not yet resolved: names are plain identifiers, types are
//! type expressions. A file that fails to parse still yields a tree: each broken
//! top-level item or statement becomes an `Error` node, so later layers (and the
//! language server) can analyse everything around it.

use std::fmt;

/// A byte range `start..end` in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    pub fn contains(self, offset: usize) -> bool {
        (self.start as usize) <= offset && offset <= (self.end as usize)
    }
}

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// One parsed file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
    /// Plain `//` comments, in source order, for the formatter. Doc comments (`///`)
    /// are attached to the node they document instead.
    pub comments: Vec<Comment>,
}

/// A `//` comment. `text` excludes the leading `//`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

/// The text of consecutive `///` lines, each stripped of `///` and one following space,
/// joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub doc: Option<Doc>,
    pub kind: ItemKind,
    /// The whole item, doc comment excluded.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    Import(Import),
    Record(RecordDecl),
    Enum(EnumDecl),
    Alias(AliasDecl),
    Step(StepDecl),
    Flow(FlowDecl),
    Bindings(BindingsDecl),
    /// An item that failed to parse; its syntax error has been reported.
    Error,
}

/// `from "std/ml" import Dataset, Model as M`
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub path: StrLit,
    pub names: Vec<ImportName>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImportName {
    pub name: Ident,
    pub alias: Option<Ident>,
}

impl ImportName {
    /// The name this import introduces into the importing file.
    pub fn local(&self) -> &Ident {
        self.alias.as_ref().unwrap_or(&self.name)
    }
}

/// `record Approval<T> { subject: T, decision: Decision }`
#[derive(Debug, Clone, PartialEq)]
pub struct RecordDecl {
    pub name: Ident,
    pub generics: Vec<Ident>,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub doc: Option<Doc>,
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

/// `enum Stage { Staging, Production }`
#[derive(Debug, Clone, PartialEq)]
pub struct EnumDecl {
    pub name: Ident,
    pub variants: Vec<Variant>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub doc: Option<Doc>,
    pub name: Ident,
}

/// `type Metrics = Map<String, Float>`
#[derive(Debug, Clone, PartialEq)]
pub struct AliasDecl {
    pub name: Ident,
    pub generics: Vec<Ident>,
    pub ty: TypeExpr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TypeExpr {
    pub kind: TypeExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeExprKind {
    /// `Int`, `Dataset`, `List<Model>`, `Map<String, Float>`, `Approval<T>`
    Named { name: Ident, args: Vec<TypeExpr> },
    /// `T?`
    Optional(Box<TypeExpr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// `remote step`: starts work elsewhere, completes later by callback.
    Remote,
    /// `call step`: a synchronous request/response (e.g. a model registry).
    Call,
    /// `approval step`: waits for a person's decision.
    Approval,
    /// `wait step`: waits for a duration or until a time.
    Wait,
}

impl StepKind {
    pub fn keyword(self) -> &'static str {
        match self {
            StepKind::Remote => "remote",
            StepKind::Call => "call",
            StepKind::Approval => "approval",
            StepKind::Wait => "wait",
        }
    }
}

/// `remote step Train(data: Dataset, spec: TrainingSpec) -> Model raises OutOfMemory`
#[derive(Debug, Clone, PartialEq)]
pub struct StepDecl {
    pub kind: StepKind,
    pub kind_span: Span,
    pub name: Ident,
    pub generics: Vec<Ident>,
    pub params: Vec<Param>,
    /// `None` when the step produces nothing.
    pub output: Option<TypeExpr>,
    /// Error names the step may fail with; `non_retryable` refers to them.
    pub raises: Vec<Ident>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub doc: Option<Doc>,
    pub name: Ident,
    pub ty: TypeExpr,
    pub default: Option<Expr>,
    pub span: Span,
}

/// `flow Retrain(threshold: Float = 0.8) -> ModelVersion? { ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct FlowDecl {
    pub name: Ident,
    pub params: Vec<Param>,
    pub output: Option<TypeExpr>,
    pub body: Vec<Stmt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    Let(LetStmt),
    When(WhenStmt),
    /// `return expr`
    Return(Expr),
    /// `deadline 14d`: how long the whole run may take, counted from its start.
    /// (`timeout` is a step option: how long one attempt of one step may take.)
    Deadline(DurationLit),
    Schedule(Schedule),
    /// A statement that failed to parse; its syntax error has been reported.
    Error,
}

/// `let model = Train(data: features) retry 3 timeout 6h`
#[derive(Debug, Clone, PartialEq)]
pub struct LetStmt {
    pub name: Ident,
    pub value: StepExpr,
    pub options: Vec<StepOption>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepExpr {
    Call(Call),
    /// `for p in space join all { Trial(params: p) }`
    ForEach(ForEach),
    /// `repeat m at_most 5 { Refine(model: m) } until m.auc >= 0.9`
    Repeat(Repeat),
}

impl StepExpr {
    pub fn span(&self) -> Span {
        match self {
            StepExpr::Call(c) => c.span,
            StepExpr::ForEach(f) => f.span,
            StepExpr::Repeat(r) => r.span,
        }
    }
}

/// `Train(data: features, spec: spec)`: a step or a subflow, arguments by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub callee: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForEach {
    pub var: Ident,
    pub over: Expr,
    pub join: Join,
    pub body: Call,
    pub span: Span,
}

/// A bounded loop: `body` runs at most `max` times, each time with `var` the
/// previous iteration's output (`none` in the first), until `until` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Repeat {
    pub var: Ident,
    pub max: IntLit,
    pub body: Call,
    /// `until cond`: read after each iteration, `var` being its output.
    pub until: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub policy: JoinPolicy,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JoinPolicy {
    /// Every child must succeed; the result is the list of outputs in input order.
    All,
    /// The first child to succeed wins; the others are cancelled.
    Any,
    /// At least `k` children must succeed; the result lists the successful
    /// outputs. `k` is a number or an expression over parameters and earlier
    /// outputs, evaluated when the fan-out starts.
    AtLeast(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepOption {
    pub kind: StepOptionKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepOptionKind {
    /// `retry 3`: at most 3 attempts in all.
    Retry(IntLit),
    /// `backoff fixed(30s)` or `backoff exponential(30s, 1h)`
    Backoff(Backoff),
    /// `non_retryable OutOfMemory, InvalidData`
    NonRetryable(Vec<Ident>),
    /// `timeout 6h`: per attempt.
    Timeout(DurationLit),
    /// `after a, b`: ordering without a data dependency.
    After(Vec<Ident>),
    /// `parallel 50`: fan-out only, at most 50 children at once.
    Parallel(IntLit),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    Fixed(DurationLit),
    Exponential {
        initial: DurationLit,
        max: DurationLit,
    },
}

/// `when cond { ... } else { ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct WhenStmt {
    pub cond: Expr,
    pub then_body: Vec<Stmt>,
    pub else_body: Option<Vec<Stmt>>,
}

/// `schedule "0 3 * * MON" timezone "Europe/Berlin" overlap skip catchup once jitter 10m`
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub cron: StrLit,
    pub clauses: Vec<ScheduleClause>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleClause {
    pub kind: ScheduleClauseKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleClauseKind {
    Timezone(StrLit),
    /// `skip | buffer_one | allow_all | cancel_running`, checked by the checker.
    Overlap(Ident),
    /// `catchup skip | once | all within 7d`
    Catchup {
        policy: Ident,
        within: Option<DurationLit>,
    },
    Jitter(DurationLit),
    /// `input(threshold: 0.9)`: arguments for the scheduled runs.
    Input(Vec<Arg>),
}

/// `bindings prod { Train = http { url: "https://..." } }`
#[derive(Debug, Clone, PartialEq)]
pub struct BindingsDecl {
    pub env: Ident,
    pub entries: Vec<Binding>,
    /// The steps named by entries that did not parse (each reported as a
    /// syntax error): not reported again as missing bindings.
    pub broken: Vec<Ident>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub doc: Option<Doc>,
    pub step: Ident,
    pub connector: Ident,
    pub config: Vec<ConfigEntry>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StrLit {
    /// The value, escapes resolved.
    pub value: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IntLit {
    pub value: i64,
    pub span: Span,
}

/// `30s`, `1h30m`, `500ms`, `7d`, `2w`.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationLit {
    /// 0 when the literal is invalid, which has been reported (E0002) already.
    pub millis: u64,
    /// The literal did not parse: checks on its value stay silent, so one mistake
    /// gives one diagnostic.
    pub invalid: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    /// Milliseconds.
    Duration(u64),
    /// `none`: the absent value of any optional type.
    None,
    /// `features`, `eval.metrics.auc`, `Stage.Production`, `run.tenant`
    Path(Vec<Ident>),
    /// `[a, b]`
    List(Vec<Expr>),
    /// `{ "k": v }` (keys are expressions of the map's key type)
    Map(Vec<(Expr, Expr)>),
    /// `TrainingSpec { epochs: 10 }`
    Record {
        name: Ident,
        fields: Vec<FieldInit>,
    },
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// An expression that failed to parse; its syntax error has been reported.
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldInit {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

/// Binary operators, loosest first: `??`, `or`, `and`, comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `a ?? b`: `a` if present, else `b`.
    Coalesce,
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Coalesce => "??",
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
        }
    }
}
