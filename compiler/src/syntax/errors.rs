//! Syntax error messages: pest's failures and the driver's own checks turned into
//! diagnostics written for people ("expected `:`, found `=`"), with a help line
//! where the mistake is a common one.

use pest::error::{Error, ErrorVariant};

use super::grammar::Rule;
use super::lexer::{self, ITEM_KEYWORDS, TokKind, Token};
use crate::diagnostics::{Code, Diagnostic};
use crate::source::FileId;
use crate::syntax::ast::Span;

/// What the failed parse was reading: it changes what "the end of the input" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    /// A top-level item: its end is where the next item starts.
    Item,
    /// A statement or block header inside a flow.
    Stmt,
}

/// Where a parse ran: the whole text, and the slice `base..limit` given to pest.
pub(crate) struct Site<'a> {
    pub text: &'a str,
    pub file: FileId,
    pub base: usize,
    pub limit: usize,
    pub ctx: Ctx,
}

/// Groups order the alternatives in a message: concrete tokens first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Token,
    Name,
    Value,
    Statement,
    Operator,
    End,
}

fn expectation(rule: Rule, ctx: Ctx) -> Option<(Group, &'static str)> {
    use Group::*;
    let e = match rule {
        Rule::lparen | Rule::params | Rule::paren_expr => (Token, "`(`"),
        Rule::rparen => (Token, "`)`"),
        Rule::lbrace => (Token, "`{`"),
        Rule::rbrace => (Token, "`}`"),
        Rule::lbracket | Rule::list_lit => (Token, "`[`"),
        Rule::rbracket => (Token, "`]`"),
        Rule::comma => (Token, "`,`"),
        Rule::colon => (Token, "`:`"),
        Rule::dot => (Token, "`.`"),
        Rule::assign => (Token, "`=`"),
        Rule::arrow | Rule::ret_type => (Token, "`->`"),
        Rule::lt | Rule::generics | Rule::type_args => (Token, "`<`"),
        Rule::gt => (Token, "`>`"),
        Rule::question => (Token, "`?`"),
        Rule::raises_clause | Rule::kw_raises => (Token, "`raises`"),
        Rule::kw_from => (Token, "`from`"),
        Rule::kw_import => (Token, "`import`"),
        Rule::kw_as => (Token, "`as`"),
        Rule::kw_step => (Token, "`step`"),
        Rule::kw_flow => (Token, "`flow`"),
        Rule::kw_else => (Token, "`else`"),
        Rule::kw_for | Rule::for_each => (Token, "`for`"),
        Rule::kw_in => (Token, "`in`"),
        Rule::kw_join => (Token, "`join`"),
        Rule::kw_repeat | Rule::repeat_loop => (Token, "`repeat`"),
        Rule::kw_at_most => (Token, "`at_most`"),
        Rule::kw_until | Rule::until_clause => (Token, "`until`"),
        Rule::kw_within => (Token, "`within`"),
        Rule::kw_let | Rule::kw_when | Rule::kw_return | Rule::kw_deadline | Rule::kw_schedule => {
            (Statement, "a statement")
        }
        Rule::join | Rule::kw_all | Rule::kw_any | Rule::kw_at_least => {
            (Token, "a join policy (`all`, `any` or `at_least <n>`)")
        }
        Rule::backoff_fixed | Rule::backoff_exp | Rule::kw_fixed | Rule::kw_exponential => {
            (Token, "`fixed(…)` or `exponential(…, …)`")
        }
        Rule::step_kind => (
            Token,
            "a step kind (`remote`, `call`, `approval` or `wait`)",
        ),
        Rule::step_option => (Statement, "a step option (`retry`, `timeout`, …)"),
        Rule::schedule_clause => (Statement, "a schedule clause (`timezone`, `jitter`, …)"),
        Rule::name | Rule::import_name => (Name, "a name"),
        Rule::type_name => (Name, "a type name"),
        Rule::type_param => (Name, "a type parameter name"),
        Rule::record_name => (Name, "a record name"),
        Rule::field_name | Rule::field | Rule::field_init | Rule::member_name => {
            (Name, "a field name")
        }
        Rule::variant_name | Rule::variant => (Name, "a variant name"),
        Rule::param_name | Rule::param => (Name, "a parameter name"),
        Rule::arg_name | Rule::arg => (Name, "an argument name"),
        Rule::var_name => (Name, "a name for the result"),
        Rule::step_name | Rule::binding => (Name, "a step name"),
        Rule::callee_name | Rule::call => (Name, "a step or flow name"),
        Rule::error_name => (Name, "an error name"),
        Rule::env_name => (Name, "an environment name"),
        Rule::connector_name => (Name, "a connector name"),
        Rule::config_key | Rule::config => (Name, "a configuration key"),
        Rule::policy_name => (Name, "a policy name"),
        Rule::expr
        | Rule::expr_nr
        | Rule::operand
        | Rule::operand_nr
        | Rule::path
        | Rule::record_lit
        | Rule::map_lit
        | Rule::map_entry
        | Rule::neg
        | Rule::kw_not
        | Rule::kw_true
        | Rule::kw_false
        | Rule::kw_none
        | Rule::float_lit => (Value, "an expression"),
        Rule::type_expr => (Value, "a type"),
        Rule::string_lit => (Value, "a string"),
        Rule::int_lit => (Value, "an integer"),
        Rule::duration_lit => (Value, "a duration such as `30s`"),
        Rule::logic_op | Rule::op_coalesce | Rule::kw_or | Rule::kw_and | Rule::cmp_op => {
            (Operator, "an operator")
        }
        Rule::EOI if ctx == Ctx::Item => (End, "a new item"),
        Rule::item
        | Rule::flow_head
        | Rule::import_decl
        | Rule::record_decl
        | Rule::enum_decl
        | Rule::alias_decl
        | Rule::step_decl
        | Rule::bindings_decl => (Token, "an item"),
        _ => return None,
    };
    Some(e)
}

const NAME_RULES: &[Rule] = &[
    Rule::name,
    Rule::import_name,
    Rule::type_name,
    Rule::type_param,
    Rule::record_name,
    Rule::field_name,
    Rule::field,
    Rule::field_init,
    Rule::variant_name,
    Rule::variant,
    Rule::param_name,
    Rule::param,
    Rule::arg_name,
    Rule::arg,
    Rule::var_name,
    Rule::step_name,
    Rule::binding,
    Rule::callee_name,
    Rule::call,
    Rule::error_name,
    Rule::env_name,
];

/// `a`, `a or b`, `one of a, b or c`.
fn one_of(items: &[&str]) -> String {
    match items {
        [] => "something else".to_string(),
        [one] => (*one).to_string(),
        [a, b] => format!("{a} or {b}"),
        [init @ .., last] => format!("one of {} or {last}", init.join(", ")),
    }
}

/// How a token reads in a message.
pub(crate) fn describe(text: &str, tok: Token) -> String {
    let raw = tok.text(text);
    let short = if raw.chars().count() > 24 {
        let cut: String = raw.chars().take(20).collect();
        format!("{cut}…")
    } else {
        raw.to_string()
    };
    match tok.kind {
        TokKind::Eof => "end of file".to_string(),
        TokKind::Word if lexer::is_reserved(raw) => format!("keyword `{short}`"),
        TokKind::Str { .. } => "a string".to_string(),
        _ => format!("`{short}`"),
    }
}

/// The token an error at `pos` is about. At the end of the slice that is whatever
/// follows it in the file (usually the next item), so the message can name it.
fn found_token(site: &Site<'_>, pos: usize) -> Token {
    let limit = site.limit.min(site.text.len());
    let pos = pos.min(limit);
    let tok = lexer::next_token(&site.text[..limit], pos);
    if tok.kind == TokKind::Eof {
        lexer::next_token(site.text, limit)
    } else {
        tok
    }
}

/// Label span for `found`: the token itself, or at the end of the file the last
/// token before it (a zero-width label at the very end is hard to see).
fn label_span(site: &Site<'_>, pos: usize, found: Token) -> (Span, bool) {
    if found.kind != TokKind::Eof {
        return (Span::new(found.start, found.end), false);
    }
    match lexer::prev_token_end(site.text, site.base, pos.max(site.base)) {
        Some((s, e)) => (Span::new(s, e), true),
        None => (Span::new(found.start, found.end), false),
    }
}

pub(crate) fn too_deep(file: FileId, span: Span) -> Diagnostic {
    Diagnostic::new(Code::Syntax, file, span, "nesting too deep")
        .with_label(format!(
            "more than {} levels of brackets or type arguments",
            lexer::MAX_NESTING
        ))
        .with_help("split the expression or type into smaller named parts")
}

/// The diagnostic for a failed pest parse of `site`, whose error is at byte `pos`.
pub(crate) fn from_pest(site: &Site<'_>, err: &Error<Rule>, pos: usize) -> Diagnostic {
    let found = found_token(site, pos);
    let positives = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        // pest's own limits (stack or call budget): only deep nesting gets there.
        ErrorVariant::CustomError { .. } => {
            return too_deep(site.file, Span::new(found.start, found.end));
        }
    };
    if let TokKind::Str { closed: false } = found.kind {
        return Diagnostic::new(
            Code::Syntax,
            site.file,
            Span::new(found.start, found.end),
            "unterminated string",
        )
        .with_label("this string has no closing `\"`")
        .with_help(
            "add the closing `\"`; a string cannot span lines (use `\\n` for a line break)",
        );
    }
    expected_found(site, pos, &positives, found)
}

fn expected_found(site: &Site<'_>, pos: usize, rules: &[Rule], found: Token) -> Diagnostic {
    let mut items: Vec<(Group, &'static str)> = Vec::new();
    for &r in rules {
        if let Some(e) = expectation(r, site.ctx)
            && !items.iter().any(|(_, t)| *t == e.1)
        {
            items.push(e);
        }
    }
    if items.len() > 1 {
        items.retain(|(_, t)| *t != "`.`");
    }
    items.sort_by_key(|(g, _)| *g);
    let texts: Vec<&str> = items.iter().map(|(_, t)| *t).collect();
    let expected = one_of(&texts);
    let found_text = describe(site.text, found);
    let (span, after) = label_span(site, pos, found);
    let label = if after {
        format!("expected {expected} after this")
    } else {
        format!("expected {expected}")
    };
    let mut diag = Diagnostic::new(
        Code::Syntax,
        site.file,
        span,
        format!("expected {expected}, found {found_text}"),
    )
    .with_label(label);
    let beyond = found.start >= site.limit;
    if rules.contains(&Rule::rbrace)
        && beyond
        && let Some(open) = lexer::unclosed_brace(&site.text[..site.limit], site.base)
    {
        diag = diag.with_secondary(
            site.file,
            Span::new(open, open + 1),
            "this `{` is not closed",
        );
    }
    let misspelt = (found.kind == TokKind::Word)
        .then(|| misspelt_option(rules, found.text(site.text)))
        .flatten();
    match (help(site, rules, found, beyond), misspelt) {
        (Some(help), Some(k)) if help == did_you_mean(k) => {
            let span = Span::new(found.start, found.end);
            diag = diag.with_replacement(found.text(site.text), k, span);
        }
        (Some(help), _) => diag = diag.with_help(help),
        (None, _) => {}
    }
    // Where the next item starts, a word close to an item keyword is that
    // keyword misspelt (`flwo F() …` after a record).
    if diag.help.is_none()
        && found.kind == TokKind::Word
        && site.ctx == Ctx::Item
        && rules.contains(&Rule::EOI)
        && let Some(k) = closest(found.text(site.text), ITEM_KEYWORDS)
    {
        let span = Span::new(found.start, found.end);
        diag = diag.with_replacement(found.text(site.text), k, span);
    }
    diag
}

fn did_you_mean(k: &str) -> String {
    format!("did you mean `{k}`?")
}

fn help(site: &Site<'_>, rules: &[Rule], found: Token, beyond: bool) -> Option<String> {
    let text = site.text;
    let f = found.text(text);
    let has = |r: Rule| rules.contains(&r);
    let has_name = rules.iter().any(|r| NAME_RULES.contains(r));
    let has_operator = rules.iter().any(|r| {
        matches!(
            r,
            Rule::logic_op | Rule::op_coalesce | Rule::kw_or | Rule::kw_and | Rule::cmp_op
        )
    });
    let is_cmp = matches!(f, "<" | ">" | "<=" | ">=" | "==" | "!=");
    let wants_stmt = rules.iter().any(|r| {
        matches!(
            r,
            Rule::kw_let | Rule::kw_when | Rule::kw_return | Rule::kw_deadline | Rule::kw_schedule
        )
    });
    // A keyword that starts a statement or an item, first on its line, where a
    // bracket could close: the bracket is what is missing, not a `,` or a name.
    let starts_line = text
        .get(..found.start)
        .unwrap_or("")
        .trim_end_matches([' ', '\t', '\r'])
        .ends_with('\n');
    let closer = [
        (Rule::rparen, ")"),
        (Rule::rbracket, "]"),
        (Rule::rbrace, "}"),
    ]
    .into_iter()
    .find(|(r, _)| has(*r))
    .map(|(_, c)| c);
    let h = if found.kind == TokKind::Word && f == "timeout" && wants_stmt {
        TIMEOUT_STATEMENT_HELP.to_string()
    } else if let Some(c) =
        closer.filter(|_| found.kind == TokKind::Word && starts_line && STARTERS.contains(&f))
    {
        format!("add the missing `{c}` before this line")
    } else if found.kind == TokKind::Word && STEP_OPTIONS.contains(&f) && wants_stmt {
        step_option_help(f)
    } else if found.kind == TokKind::Word && lexer::is_reserved(f) && has_name {
        format!(
            "`{f}` is a reserved keyword and cannot be used as a name; choose another name, such as `{f}_`"
        )
    } else if f == "=" && has(Rule::colon) {
        "use `:` here: arguments, fields and entries are written `name: value`".to_string()
    } else if has(Rule::arrow) && f == ":" {
        "write `->` before the result type, not `:`".to_string()
    } else if has(Rule::arrow) && found.kind == TokKind::Word && !lexer::is_reserved(f) {
        format!("the result type follows `->`: `-> {f}`")
    } else if f == "=" && has_operator {
        "use `==` to compare values".to_string()
    } else if is_cmp && has_operator && !has(Rule::cmp_op) {
        "comparisons do not chain; combine them with `and`, as in `a < b and b < c`".to_string()
    } else if f == "&&" {
        "use `and` for logical and".to_string()
    } else if f == "||" {
        "use `or` for logical or".to_string()
    } else if f == "!" {
        "use `not` for logical negation".to_string()
    } else if matches!(f, "+" | "-" | "*" | "/" | "%") && has_operator {
        format!(
            "eflow expressions have no arithmetic (`{f}`): a flow passes references and decides; compute the value in a step and use its output"
        )
    } else if f.starts_with('\'') {
        "strings use double quotes: `\"…\"`".to_string()
    } else if has(Rule::rbrace) && beyond {
        "add the missing `}`".to_string()
    } else if f == "}" && rules == [Rule::EOI] {
        "this `}` has no matching `{`".to_string()
    } else if has(Rule::colon) && matches!(f, ")" | ",") {
        "arguments are passed by name: `name: value`".to_string()
    } else if has(Rule::comma)
        && matches!(
            found.kind,
            TokKind::Word | TokKind::Number | TokKind::Str { .. }
        )
        && !beyond
    {
        "add a `,` before this".to_string()
    } else if let Some(k) = (found.kind == TokKind::Word)
        .then(|| misspelt_option(rules, f))
        .flatten()
    {
        did_you_mean(k)
    } else if site.ctx == Ctx::Stmt && rules == [Rule::lparen] && found.kind != TokKind::Punct {
        "`let` binds the result of a step or flow call, such as `Train(data: features)`".to_string()
    } else {
        return None;
    };
    Some(h)
}

/// Words that start a statement or an item when they begin a line.
const STARTERS: &[&str] = &[
    "let", "when", "return", "deadline", "schedule", "from", "record", "enum", "flow", "bindings",
    "remote", "call", "approval", "wait",
];

/// Step options: they follow the call they apply to.
const STEP_OPTIONS: &[&str] = &["retry", "backoff", "non_retryable", "after", "parallel"];

fn step_option_help(option: &str) -> String {
    format!(
        "`{option}` is a step option: put it on the lines right after the `let … = Step(…)` it applies to"
    )
}

/// An item that does not start with an item keyword.
pub(crate) fn bad_item_start(text: &str, file: FileId, tok: Token) -> Diagnostic {
    let word = tok.text(text);
    let found = describe(text, tok);
    let mut diag = Diagnostic::new(
        Code::Syntax,
        file,
        Span::new(tok.start, tok.end),
        format!("expected an item, found {found}"),
    )
    .with_label("expected `from`, `record`, `enum`, `type`, a step, `flow` or `bindings`");
    let help = if tok.kind == TokKind::Word {
        match word {
            "step" => Some(
                "a step starts with its kind: `remote step`, `call step`, `approval step` or `wait step`"
                    .to_string(),
            ),
            "import" => Some("imports are written `from \"path\" import Name`".to_string()),
            "let" | "when" | "return" | "deadline" | "schedule" => {
                Some(format!("`{word}` is a statement; it belongs inside a `flow` body"))
            }
            "timeout" => Some(
                "`timeout` is a step option and follows a call inside a `flow` body".to_string(),
            ),
            _ => {
                if let Some(k) = closest(word, ITEM_KEYWORDS) {
                    return diag.with_replacement(word, k, Span::new(tok.start, tok.end));
                }
                None
            }
        }
    } else if word == "}" {
        Some("this `}` has no matching `{`".to_string())
    } else {
        None
    };
    if let Some(h) = help {
        diag = diag.with_help(h);
    }
    diag
}

/// The help for `timeout` where a statement is expected.
const TIMEOUT_STATEMENT_HELP: &str =
    "a flow's overall time limit is written `deadline 14d`; `timeout` applies to one step";

/// A statement that does not start with a statement keyword. `next` is the token
/// after it, to recognise `x = Step(...)` (a missing `let`).
pub(crate) fn bad_stmt_start(text: &str, file: FileId, tok: Token, next: Token) -> Diagnostic {
    let word = tok.text(text);
    let found = describe(text, tok);
    let mut diag = Diagnostic::new(
        Code::Syntax,
        file,
        Span::new(tok.start, tok.end),
        format!("expected a statement or `}}`, found {found}"),
    )
    .with_label("expected `let`, `when`, `return`, `deadline`, `schedule` or `}`");
    let help = match (tok.kind, word) {
        // A step option where no `let` precedes it: most likely the old flow-wide
        // time limit, which is now its own keyword.
        (TokKind::Word, "timeout") if !next.is_punct(text, "=") => {
            Some(TIMEOUT_STATEMENT_HELP.to_string())
        }
        (TokKind::Word, w) if STEP_OPTIONS.contains(&w) && !next.is_punct(text, "=") => {
            Some(step_option_help(w))
        }
        (TokKind::Word, "if") => {
            Some("eflow writes conditions with `when`: `when cond { … }`".to_string())
        }
        (TokKind::Word, "else") => Some("`else` must follow the `}` of a `when` block".to_string()),
        (TokKind::Word, "for") => Some(
            "a fan-out is bound with `let`: `let results = for x in xs join all { Step(arg: x) }`"
                .to_string(),
        ),
        (TokKind::Word, w) if next.is_punct(text, "=") && !lexer::is_reserved(w) => {
            Some(format!("add `let` to bind a result: `let {w} = …`"))
        }
        (TokKind::Word, w) if lexer::starts_item(text, tok, true) => Some(format!(
            "`{w}` starts a top-level item; is a `}}` missing before it?"
        )),
        (TokKind::Word, w) => {
            if let Some(k) = closest(w, &["let", "when", "return", "deadline", "schedule"]) {
                return diag.with_replacement(w, k, Span::new(tok.start, tok.end));
            }
            None
        }
        _ => None,
    };
    if let Some(h) = help {
        diag = diag.with_help(h);
    }
    diag
}

/// A block that reaches the end of its item without its `}`.
pub(crate) fn unclosed_block(site: &Site<'_>, open: usize, pos: usize) -> Diagnostic {
    let found = found_token(site, pos);
    let (span, after) = label_span(site, pos, found);
    let label = if after {
        "expected `}` after this"
    } else {
        "expected `}`"
    };
    Diagnostic::new(
        Code::Syntax,
        site.file,
        span,
        format!("expected `}}`, found {}", describe(site.text, found)),
    )
    .with_label(label)
    .with_secondary(
        site.file,
        Span::new(open, open + 1),
        "this `{` is not closed",
    )
    .with_help("add the missing `}`")
}

/// Stray tokens after a complete item.
pub(crate) fn trailing(site: &Site<'_>, tok: Token) -> Diagnostic {
    let found = describe(site.text, tok);
    let mut diag = Diagnostic::new(
        Code::Syntax,
        site.file,
        Span::new(tok.start, tok.end),
        format!("expected a new item, found {found}"),
    )
    .with_label("expected a new item");
    if tok.is_punct(site.text, "}") {
        diag = diag.with_help("this `}` has no matching `{`");
    } else if let Some(word) = site.text.get(tok.start..tok.end)
        && let Some(k) = closest(word, ITEM_KEYWORDS)
    {
        // A misspelt keyword of the next item (`flwo F() …` after a record).
        diag = diag.with_replacement(word, k, Span::new(tok.start, tok.end));
    }
    diag
}

/// A step option or schedule clause keyword close to `word`, where one was expected.
fn misspelt_option(rules: &[Rule], word: &str) -> Option<&'static str> {
    const OPTIONS: &[&str] = &[
        "retry",
        "backoff",
        "non_retryable",
        "timeout",
        "after",
        "parallel",
    ];
    const CLAUSES: &[&str] = &["timezone", "overlap", "catchup", "jitter", "input"];
    let mut candidates: Vec<&'static str> = Vec::new();
    if rules.contains(&Rule::step_option) {
        candidates.extend(OPTIONS);
    }
    if rules.contains(&Rule::schedule_clause) {
        candidates.extend(CLAUSES);
    }
    closest(word, &candidates)
}

/// The keyword closest to a misspelled `word`, with the checker's own rule.
fn closest<'k>(word: &str, candidates: &[&'k str]) -> Option<&'k str> {
    crate::suggest::closest(word, candidates.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(one_of(&["`)`"]), "`)`");
        assert_eq!(one_of(&["`)`", "`,`"]), "`)` or `,`");
        assert_eq!(
            one_of(&["`)`", "`,`", "an argument name"]),
            "one of `)`, `,` or an argument name"
        );
        assert_eq!(one_of(&["a", "b", "c", "d"]), "one of a, b, c or d");
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("fow", ITEM_KEYWORDS), Some("flow"));
        assert_eq!(closest("recrod", ITEM_KEYWORDS), Some("record"));
        assert_eq!(closest("zzzzzz", ITEM_KEYWORDS), None);
    }
}
