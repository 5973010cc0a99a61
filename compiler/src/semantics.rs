//! The semantic model: what every name in every file resolves to, as the checker
//! resolved it, with the type of the value it names. The language server's
//! navigation, hover, rename and highlighting read it instead of resolving names
//! again.
//!
//! Each layer records the names it resolves into its module's table while it
//! checks (imports while building the namespace, declarations and type names
//! with the signatures, flow bodies with the bodies, bindings with the
//! bindings); [`Semantics`] answers questions over the tables of an analysis.

use crate::analysis::Analysis;
use crate::source::FileId;
use crate::syntax::ast::Span;

// What the model's answers are made of: the checker's read-only results (item
// signatures, checked flows, types, the connector catalogue). The layers that
// produce them are private.
pub use crate::check::bindings::{CheckedBinding, ConfigKey, Connector, connectors};
pub use crate::check::flow::{Callee, CheckedFlow, RUN_FIELDS};
pub use crate::check::sigs::{
    AliasSig, EnumSig, FieldSig, FlowSig, ItemSig, ParamSig, RecordSig, StepSig,
};
pub use crate::names::{Namespace, Symbol, SymbolKind};
pub use crate::types::{DefId, PRIMITIVES, Ty};

/// Something a name can refer to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Def {
    /// A record, enum, alias, step or flow.
    Item(DefId),
    Field {
        record: DefId,
        name: String,
    },
    Variant {
        en: DefId,
        name: String,
    },
    /// A parameter of a step or flow.
    Param {
        owner: DefId,
        name: String,
    },
    /// A `let` of a flow.
    Local {
        flow: DefId,
        name: String,
    },
    /// A fan-out's `for x`, identified by where it is declared.
    ForVar {
        file: FileId,
        decl: Span,
    },
    /// A `repeat`'s variable, identified by where it is declared.
    LoopVar {
        file: FileId,
        decl: Span,
    },
    /// A type parameter of a generic record, alias or step.
    Generic {
        owner: DefId,
        name: String,
    },
    /// An error name a step `raises`.
    ErrorName {
        step: DefId,
        name: String,
    },
    Module(FileId),
    /// A bindings environment, by name.
    Env(String),
    Run,
    RunField(String),
    /// `Int`, `List`, `Timeout`, …
    Builtin(String),
    Connector(String),
    ConnectorKey {
        connector: String,
        key: String,
    },
}

impl Def {
    /// Whether rename may change it: things the user declared in a file.
    pub fn renamable(&self) -> bool {
        matches!(
            self,
            Def::Item(_)
                | Def::Field { .. }
                | Def::Variant { .. }
                | Def::Param { .. }
                | Def::Local { .. }
                | Def::ForVar { .. }
                | Def::LoopVar { .. }
                | Def::Generic { .. }
                | Def::ErrorName { .. }
                | Def::Env(_)
        )
    }

    /// The one file a name local to a file lives in.
    fn local_file(&self) -> Option<FileId> {
        match self {
            Def::Local { flow, .. } => Some(flow.file),
            Def::ForVar { file, .. } | Def::LoopVar { file, .. } => Some(*file),
            Def::Generic { owner, .. } => Some(owner.file),
            _ => None,
        }
    }
}

/// One name in a file and what it resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub span: Span,
    pub def: Def,
    /// This is where it is declared.
    pub decl: bool,
    /// The type of the value named here, when it is a value.
    pub ty: Option<Ty>,
}

/// Sort a module's table by position; a name resolved twice (a type checked
/// with the signatures and again in a body, a record literal's name as a type
/// and as a value) is kept once, with its type when one of them has it.
pub(crate) fn normalize(table: &mut Vec<Resolution>) {
    table.sort_by_key(|o| (o.span.start, o.span.end, o.ty.is_none()));
    table.dedup_by(|a, b| a.span == b.span && a.def == b.def);
}

/// Read access to what every name of an analysis resolves to.
#[derive(Clone, Copy)]
pub struct Semantics<'a> {
    analysis: &'a Analysis,
}

impl<'a> Semantics<'a> {
    pub(crate) fn new(analysis: &'a Analysis) -> Self {
        Semantics { analysis }
    }

    /// Every resolved name of a file, by position.
    pub fn resolutions(&self, file: FileId) -> &'a [Resolution] {
        self.analysis
            .modules
            .get(file.0 as usize)
            .map_or(&[], |m| &m.resolutions)
    }

    /// The name at an offset; a cursor just after a name still finds it.
    pub fn definition_at(&self, file: FileId, offset: usize) -> Option<&'a Resolution> {
        let table = self.resolutions(file);
        let inside = table
            .iter()
            .find(|o| (o.span.start as usize) <= offset && offset < o.span.end as usize);
        inside.or_else(|| {
            table
                .iter()
                .find(|o| o.span.end as usize == offset && !o.span.is_empty())
        })
    }

    /// The items a file declares itself, by name, in order.
    pub fn own_items(&self, file: FileId) -> Vec<(String, Symbol)> {
        self.analysis
            .modules
            .get(file.0 as usize)
            .map_or_else(Vec::new, |m| crate::names::own_items(file, &m.ast))
    }

    /// Every place `def` is declared or used, in the workspace and the standard
    /// library, by file then position.
    pub fn references_to(&self, def: &Def) -> Vec<(FileId, &'a Resolution)> {
        let mut out = Vec::new();
        for m in &self.analysis.modules {
            if def.local_file().is_some_and(|f| f != m.file) {
                continue;
            }
            out.extend(
                m.resolutions
                    .iter()
                    .filter(|o| o.def == *def)
                    .map(|o| (m.file, o)),
            );
        }
        out
    }
}
