//! The catalogue of diagnostic codes. Codes are stable: once published, a code keeps
//! its meaning forever; a retired code is never reused.

use super::Severity;

macro_rules! codes {
    ($($variant:ident = $code:literal, $sev:ident, $title:literal;)*) => {
        /// A stable diagnostic code, the same in the terminal, JSON, SARIF (`ruleId`),
        /// GitHub annotations and the language server.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// `E0200`, `W0001`, …
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            pub fn severity(self) -> Severity {
                match self {
                    $(Code::$variant => Severity::$sev,)*
                }
            }

            /// A short name for the rule, used as the SARIF rule name and in `explain`.
            pub fn title(self) -> &'static str {
                match self {
                    $(Code::$variant => $title,)*
                }
            }
        }
    };
}

codes! {
    // Syntax.
    Syntax = "E0001", Error, "syntax error";
    InvalidDuration = "E0002", Error, "invalid duration";
    InvalidNumber = "E0003", Error, "invalid number";
    InvalidEscape = "E0004", Error, "invalid string escape";
    NotUtf8 = "E0005", Error, "file is not UTF-8";
    // Names.
    UnknownName = "E0100", Error, "unknown name";
    UnknownType = "E0101", Error, "unknown type";
    Duplicate = "E0102", Error, "duplicate definition";
    UnresolvedImport = "E0103", Error, "unresolved import";
    ImportNotFound = "E0104", Error, "imported name not found";
    UnknownCallee = "E0105", Error, "unknown step or flow";
    UnknownField = "E0106", Error, "unknown field";
    UnknownVariant = "E0107", Error, "unknown enum variant";
    UnknownError = "E0108", Error, "unknown error name";
    NotAType = "E0109", Error, "not a type";
    NotCallable = "E0110", Error, "not a step or flow";
    // Types.
    TypeMismatch = "E0200", Error, "type mismatch";
    MissingArgument = "E0201", Error, "missing argument";
    UnknownArgument = "E0202", Error, "unknown argument";
    DuplicateArgument = "E0203", Error, "duplicate argument";
    TypeArity = "E0204", Error, "wrong number of type arguments";
    ConditionNotBool = "E0205", Error, "condition is not a Bool";
    MaybeAbsent = "E0206", Error, "value may be absent";
    MissingField = "E0207", Error, "missing field";
    CannotInfer = "E0208", Error, "cannot infer type parameter";
    MissingReturn = "E0209", Error, "missing or unexpected return";
    InvalidOperands = "E0210", Error, "invalid operands";
    InvalidMapKey = "E0211", Error, "invalid map key type";
    // The flow graph.
    Cycle = "E0300", Error, "dependency cycle";
    RecursiveFlow = "E0301", Error, "recursive subflow";
    ConditionNotAvailable = "E0302", Error, "condition uses a value that is not yet available";
    Unreachable = "E0303", Error, "unreachable step";
    NotAList = "E0304", Error, "fan-out over a value that is not a list";
    MisplacedStatement = "E0305", Error, "misplaced statement";
    RepeatBound = "E0306", Error, "repeat bound out of range";
    RepeatWithoutOutput = "E0307", Error, "repeat of a call without output";
    // Schedules, options and bindings.
    InvalidCron = "E0400", Error, "invalid cron expression";
    UnknownTimezone = "E0401", Error, "unknown time zone";
    BindingUnknownStep = "E0402", Error, "binding for an unknown step";
    UnknownConnector = "E0403", Error, "unknown connector";
    MissingConfig = "E0404", Error, "missing connector configuration";
    InvalidConfig = "E0405", Error, "invalid connector configuration";
    ConnectorKind = "E0406", Error, "connector cannot carry out this kind of step";
    InvalidOption = "E0407", Error, "invalid option";
    DuplicateOption = "E0408", Error, "duplicate option";
    // Warnings.
    UnusedOutput = "W0001", Warning, "unused step output";
    UnusedImport = "W0002", Warning, "unused import";
    MissingBinding = "W0003", Warning, "step has no binding in an environment";
    UnusedParam = "W0004", Warning, "unused parameter";
    LegacyTimezone = "W0005", Warning, "fixed-offset or legacy time zone";
    // Changes between two bundles (`eflowc diff`): breaking, then compatible.
    FlowRemoved = "B0001", Error, "flow removed";
    InputNarrowed = "B0002", Error, "flow input narrowed";
    ResultChanged = "B0003", Error, "flow result changed";
    ContractChanged = "B0004", Error, "step contract changed";
    BindingMoved = "B0005", Error, "binding moved to another connector";
    Compatible = "C0001", Warning, "compatible change";
}

impl Code {
    /// A change `eflowc diff` reports, not a problem `check` finds.
    pub fn is_change(self) -> bool {
        matches!(self.as_str().as_bytes().first(), Some(b'B' | b'C'))
    }

    pub fn parse(s: &str) -> Option<Code> {
        let s = s.trim();
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
