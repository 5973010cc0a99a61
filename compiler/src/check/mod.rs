//! Checking: signatures of every item, then flow bodies and bindings.
//!
//! [`sigs`] resolves the types every item declares (records' fields, steps' and
//! flows' parameters); [`flow`] checks flow bodies into [`flow::CheckedFlow`]s,
//! typed and wired; [`bindings`] checks connector bindings.

pub mod bindings;
pub mod flow;
pub mod sigs;

use std::cell::RefCell;
use std::collections::HashSet;

use crate::diagnostics::{Code, Diagnostic};
use crate::names::{Namespace, Symbol};
use crate::semantics::{Def, Resolution};
use crate::source::FileId;
use crate::syntax::ast::{File, Span};
use crate::types::{DefId, Ty};

pub use sigs::ItemSig;

/// Read access to every module's syntax tree, names and signatures. The analysis
/// implements it over its modules, so checking one module borrows the rest
/// instead of copying them.
pub trait Db {
    fn ast(&self, file: FileId) -> &File;
    fn namespace(&self, file: FileId) -> &Namespace;
    /// Empty while signatures are being resolved.
    fn sigs(&self, file: FileId) -> &[ItemSig];
    /// A module of the standard library, which users cannot change.
    fn is_std(&self, file: FileId) -> bool;
}

/// What checking one module may read of the whole workspace.
#[derive(Clone, Copy)]
pub struct World<'a> {
    pub db: &'a dyn Db,
}

impl<'a> World<'a> {
    pub fn new(db: &'a dyn Db) -> Self {
        World { db }
    }

    pub fn sig(&self, def: DefId) -> &'a ItemSig {
        self.db
            .sigs(def.file)
            .get(def.item as usize)
            .unwrap_or(&ItemSig::None)
    }

    pub fn ast(&self, file: FileId) -> &'a File {
        self.db.ast(file)
    }

    pub fn namespace(&self, file: FileId) -> &'a Namespace {
        self.db.namespace(file)
    }
}

/// Per-module checking state: where diagnostics go and which imported names were
/// used (by their local name, which is unique in the module).
pub struct ModuleCx<'a> {
    pub file: FileId,
    pub namespace: &'a Namespace,
    pub diags: RefCell<Vec<Diagnostic>>,
    pub used_imports: RefCell<HashSet<String>>,
    /// Every name resolved so far: the module's part of the semantic model.
    pub resolutions: RefCell<Vec<Resolution>>,
}

impl<'a> ModuleCx<'a> {
    pub fn new(file: FileId, namespace: &'a Namespace) -> Self {
        ModuleCx {
            file,
            namespace,
            diags: RefCell::new(Vec::new()),
            used_imports: RefCell::new(HashSet::new()),
            resolutions: RefCell::new(Vec::new()),
        }
    }

    pub fn report(&self, diag: Diagnostic) {
        self.diags.borrow_mut().push(diag);
    }

    pub fn error(&self, code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, self.file, span, message)
    }

    /// Record that the name at `span` refers to `def` (naming a value of type `ty`).
    pub fn resolve(&self, span: Span, def: Def, ty: Option<Ty>) {
        self.record(span, def, false, ty);
    }

    /// Record that `span` declares `def`.
    pub fn declare(&self, span: Span, def: Def, ty: Option<Ty>) {
        self.record(span, def, true, ty);
    }

    fn record(&self, span: Span, def: Def, decl: bool, ty: Option<Ty>) {
        self.resolutions.borrow_mut().push(Resolution {
            span,
            def,
            decl,
            ty,
        });
    }

    /// The imported names used and the names resolved, for the next layer to go on from.
    pub fn into_resolved(self) -> (HashSet<String>, Vec<Resolution>) {
        (
            self.used_imports.into_inner(),
            self.resolutions.into_inner(),
        )
    }

    /// Look a name up in the module, marking the import used.
    pub fn lookup(&self, name: &str) -> Option<&'a Symbol> {
        let sym = self.namespace.get(name)?;
        if sym.import.is_some() {
            self.used_imports.borrow_mut().insert(name.to_owned());
        }
        Some(sym)
    }
}
