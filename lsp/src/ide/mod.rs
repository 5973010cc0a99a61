//! Editor features computed from the compiler's analysis: what is at an offset,
//! types, completion, symbols, highlighting, quick fixes.
//!
//! Everything here works in the compiler's terms (files, byte spans, types) and
//! knows nothing of the protocol; `handlers` converts. Nothing is checked here:
//! types, errors, their fixes and what each name refers to come from the
//! analysis, so the editor and `eflowc` agree. Completion alone works out what
//! is in scope, on text the checker may not accept yet.

pub mod actions;
pub mod completion;
pub mod hover;
pub mod inlay;
pub mod lex;
pub mod render;
pub mod semantic;
pub mod signature;
pub mod symbols;

use eflow_compiler::analysis::FileId;
use eflow_compiler::analysis::{Analysis, Module};
use eflow_compiler::semantics::CheckedFlow;
use eflow_compiler::semantics::{DefId, Ty};
use eflow_compiler::semantics::{ItemSig, RecordSig};
use eflow_compiler::syntax::ast::{self, Span};

/// A module that exists only in the server's analysis, importing every standard
/// library module so that completion and quick fixes can offer names from
/// modules the workspace does not import yet. It is never shown.
pub const PRELUDE: &str = "/.eflow-lsp/prelude.eflow";

/// Read access to one analysis, with the lookups every feature needs.
#[derive(Clone, Copy)]
pub struct Db<'a> {
    pub analysis: &'a Analysis,
}

impl<'a> Db<'a> {
    pub fn new(analysis: &'a Analysis) -> Self {
        Db { analysis }
    }

    pub fn module(&self, file: FileId) -> Option<&'a Module> {
        self.analysis.modules.get(file.0 as usize)
    }

    /// The server's own prelude module.
    pub fn is_hidden(&self, file: FileId) -> bool {
        (file.0 as usize) < self.analysis.sources.len()
            && self.analysis.sources.get(file).path.as_deref()
                == Some(std::path::Path::new(PRELUDE))
    }

    pub fn text(&self, file: FileId) -> &'a str {
        if (file.0 as usize) < self.analysis.sources.len() {
            &self.analysis.sources.get(file).text
        } else {
            ""
        }
    }

    pub fn item(&self, def: DefId) -> Option<&'a ast::Item> {
        self.module(def.file)?.ast.items.get(def.item as usize)
    }

    pub fn sig(&self, def: DefId) -> Option<&'a ItemSig> {
        self.module(def.file)?.sigs.get(def.item as usize)
    }

    pub fn record(&self, def: DefId) -> Option<&'a RecordSig> {
        match self.sig(def)? {
            ItemSig::Record(r) => Some(r),
            _ => None,
        }
    }

    pub fn flow(&self, def: DefId) -> Option<&'a CheckedFlow> {
        self.module(def.file)?.flows.iter().find(|f| f.def == def)
    }

    /// The name an item declares and where.
    pub fn item_name(&self, def: DefId) -> Option<&'a ast::Ident> {
        item_ident(self.item(def)?)
    }

    pub fn doc(&self, def: DefId) -> Option<&'a str> {
        self.item(def)?.doc.as_ref().map(|d| d.text.as_str())
    }

    /// The type of `ty.field`, with the record's type arguments substituted.
    pub fn field_type(&self, ty: &Ty, field: &str) -> Option<(DefId, Ty)> {
        let Ty::Record { def, args, .. } = ty.unwrap_optional() else {
            return None;
        };
        let sig = self.record(*def)?;
        Some((*def, sig.field_type(field, args)?))
    }

    /// Every top-level item of every module whose name is `name`, workspace
    /// modules first.
    pub fn items_named(&self, name: &str) -> Vec<DefId> {
        self.analysis.items_named(name)
    }

    /// The import path another file would write for a module: `std/ml` for the
    /// standard library, a `./`-relative path otherwise.
    pub fn import_path(&self, from: FileId, target: FileId) -> Option<String> {
        self.analysis.import_path(from, target)
    }
}

pub fn item_ident(item: &ast::Item) -> Option<&ast::Ident> {
    match &item.kind {
        ast::ItemKind::Record(r) => Some(&r.name),
        ast::ItemKind::Enum(e) => Some(&e.name),
        ast::ItemKind::Alias(a) => Some(&a.name),
        ast::ItemKind::Step(s) => Some(&s.name),
        ast::ItemKind::Flow(f) => Some(&f.name),
        _ => None,
    }
}

/// The innermost item of a file containing an offset (doc comment included).
pub fn item_at(ast: &ast::File, offset: usize) -> Option<(usize, &ast::Item)> {
    ast.items.iter().enumerate().find(|(_, it)| {
        let start = it.doc.as_ref().map_or(it.span.start, |d| d.span.start);
        Span {
            start,
            end: it.span.end,
        }
        .contains(offset)
    })
}
