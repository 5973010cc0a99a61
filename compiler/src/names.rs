//! Names: what each module's top-level names refer to, its own items and its imports.

use std::collections::HashMap;

use crate::syntax::ast::{File, ItemKind, Span};
use crate::types::DefId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymbolKind {
    Record,
    Enum,
    Alias,
    Step,
    Flow,
}

impl SymbolKind {
    pub fn describe(self) -> &'static str {
        match self {
            SymbolKind::Record => "record",
            SymbolKind::Enum => "enum",
            SymbolKind::Alias => "type alias",
            SymbolKind::Step => "step",
            SymbolKind::Flow => "flow",
        }
    }

    pub fn is_type(self) -> bool {
        matches!(
            self,
            SymbolKind::Record | SymbolKind::Enum | SymbolKind::Alias
        )
    }

    pub fn is_callable(self) -> bool {
        matches!(self, SymbolKind::Step | SymbolKind::Flow)
    }
}

/// What a name in a module refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub def: DefId,
    pub kind: SymbolKind,
    /// Where the name was introduced in this module: the item's name, or the import.
    pub span: Span,
    /// The index of the import that brought it in, if imported.
    pub import: Option<usize>,
}

/// A module's top-level names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    pub symbols: HashMap<String, Symbol>,
    /// Names imported from another file that an item there which failed to parse
    /// (or a file that is not UTF-8) may declare: they resolve to nothing, and
    /// their uses are not reported, that file's error is.
    pub broken: std::collections::HashSet<String>,
}

impl Namespace {
    pub fn get(&self, name: &str) -> Option<&Symbol> {
        self.symbols.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.symbols.keys().map(String::as_str)
    }
}

/// The items a file defines itself, by name; the first definition of a name wins
/// (duplicates are reported by the checker).
pub fn own_items(file: crate::source::FileId, ast: &File) -> Vec<(String, Symbol)> {
    let mut out = Vec::new();
    for (i, item) in ast.items.iter().enumerate() {
        let (name, kind) = match &item.kind {
            ItemKind::Record(r) => (&r.name, SymbolKind::Record),
            ItemKind::Enum(e) => (&e.name, SymbolKind::Enum),
            ItemKind::Alias(a) => (&a.name, SymbolKind::Alias),
            ItemKind::Step(s) => (&s.name, SymbolKind::Step),
            ItemKind::Flow(f) => (&f.name, SymbolKind::Flow),
            ItemKind::Import(_) | ItemKind::Bindings(_) | ItemKind::Error => continue,
        };
        out.push((
            name.name.clone(),
            Symbol {
                def: DefId {
                    file,
                    item: i as u32,
                },
                kind,
                span: name.span,
                import: None,
            },
        ));
    }
    out
}
