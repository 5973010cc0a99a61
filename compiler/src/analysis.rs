//! The analysis API that `eflowc` and the language server share: load a workspace of
//! `.eflow` files and their imports, parse, resolve, check, and keep the results so
//! that one edited file can be re-checked without redoing the rest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::check::bindings::{CheckedBinding, check_bindings};
use crate::check::flow::{Callee, CheckedFlow, TExpr, check_flow, check_step_defaults};
use crate::check::sigs::{ItemSig, TypeResolver, module_sigs};
use crate::check::{ModuleCx, World};
use crate::diagnostics::{self, Code, Diagnostic, Edit, Fix};
use crate::graph;
use crate::names::{Namespace, Symbol, SymbolKind, own_items};
use crate::semantics::{self, Def, Resolution, Semantics};
use crate::stdlib;
use crate::syntax::ast::Span;
use crate::syntax::{self, ast};
use crate::types::DefId;

pub use crate::source::{FileId, LineCol, SourceFile, Sources};

/// Every module of the standard library, embedded in the compiler: its file
/// name (`std/ml.eflow`) and its source.
pub fn standard_library() -> &'static [(&'static str, &'static str)] {
    crate::stdlib::FILES
}

/// Where source text comes from: the disk, or an editor's open buffers over it.
pub trait Loader {
    fn read(&self, path: &Path) -> io::Result<String>;
}

/// Reads files from disk. A file that is not UTF-8 is an [`io::ErrorKind::InvalidData`]
/// error holding a [`NotUtf8`], which the analysis reports as E0005 in that file.
pub struct FsLoader;

impl Loader for FsLoader {
    fn read(&self, path: &Path) -> io::Result<String> {
        String::from_utf8(std::fs::read(path)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, NotUtf8::new(e)))
    }
}

/// A file that is not valid UTF-8, as a [`Loader`] reports it (the inner error of
/// its `io::Error`). The analysis reports it as a diagnostic at the first invalid
/// byte instead of failing, so every output format says which file and where.
#[derive(Debug, thiserror::Error)]
#[error("not valid UTF-8: byte {byte:#04x} at offset {valid_up_to}")]
pub struct NotUtf8 {
    /// The offset of the first invalid byte; `text` is the file up to there.
    pub valid_up_to: usize,
    /// The first invalid byte.
    pub byte: u8,
    /// The file with every invalid sequence replaced by U+FFFD, to show it.
    pub text: String,
}

impl NotUtf8 {
    pub fn new(e: std::string::FromUtf8Error) -> NotUtf8 {
        let valid_up_to = e.utf8_error().valid_up_to();
        let bytes = e.into_bytes();
        NotUtf8 {
            valid_up_to,
            byte: bytes[valid_up_to],
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// A file's text as loaded: its text, or for a file that is not UTF-8, its
/// replaced text and where the first invalid byte is.
struct Loaded {
    text: String,
    not_utf8: Option<(usize, u8)>,
}

/// Read a file through `loader`; a file that is not UTF-8 is loaded, to be reported.
fn load(loader: &dyn Loader, path: &Path) -> io::Result<Loaded> {
    match loader.read(path) {
        Ok(text) => Ok(Loaded {
            text,
            not_utf8: None,
        }),
        Err(e) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<NotUtf8>())
        {
            Some(n) => Ok(Loaded {
                text: n.text.clone(),
                not_utf8: Some((n.valid_up_to, n.byte)),
            }),
            None => Err(e),
        },
    }
}

/// A problem with the inputs themselves (not their content): exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: String, source: io::Error },
    #[error("no `.eflow` files found in `{0}`")]
    Empty(String),
}

/// One file's analysis.
#[derive(Debug, Clone)]
pub struct Module {
    pub file: FileId,
    /// `std/ml`, `retraining`, `shared/catalog`: the file's path without
    /// `.eflow`, from the compiled directory (see [`Analysis::from_paths`]),
    /// else from the working directory.
    pub name: String,
    pub ast: ast::File,
    pub namespace: Namespace,
    /// Per item index, for `from … import …` items: the file imported, if found.
    pub imports: HashMap<usize, FileId>,
    pub sigs: Vec<ItemSig>,
    pub flows: Vec<CheckedFlow>,
    /// Each step's parameter defaults that type-checked, by parameter name.
    pub step_defaults: HashMap<DefId, Vec<(String, TExpr)>>,
    pub bindings: Vec<CheckedBinding>,
    /// Every (environment, step) a binding was written for, valid or not.
    pub bound: Vec<(String, DefId)>,
    pub is_std: bool,
    /// Diagnostics of this module alone: syntax, names, types, its flows' graphs.
    pub diagnostics: Vec<Diagnostic>,
    /// Diagnostics in this module that depend on others: recursive subflows,
    /// missing bindings.
    pub workspace_diagnostics: Vec<Diagnostic>,
    /// What every name in this module resolves to, by position (read it
    /// through [`Analysis::semantics`]).
    pub(crate) resolutions: Vec<Resolution>,
    /// The names of its imports, resolved with its namespace.
    import_resolutions: Vec<Resolution>,
    facts: ModuleFacts,
    syntax_diagnostics: Vec<Diagnostic>,
    import_diagnostics: Vec<Diagnostic>,
}

/// The analysis of a workspace.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub sources: Sources,
    pub modules: Vec<Module>,
    /// The files the user asked for (not those only imported).
    pub roots: Vec<FileId>,
    /// The directory module names are relative to (see [`Analysis::from_paths`]).
    base: Option<PathBuf>,
    /// What the cross-module checks need, kept between edits.
    index: WorkspaceIndex,
}

/// Facts about all modules that cross-module checks read.
#[derive(Debug, Clone, Default)]
struct WorkspaceIndex {
    /// Every environment named by a `bindings` block, sorted.
    envs: Vec<String>,
    /// Environment → every step some binding was written for in it.
    bound: HashMap<String, HashSet<DefId>>,
    /// Flow → the flows it calls.
    calls: HashMap<DefId, Vec<DefId>>,
}

impl WorkspaceIndex {
    fn build(modules: &[Module]) -> Self {
        let mut index = WorkspaceIndex::default();
        for facts in modules.iter().map(|m| &m.facts) {
            index.envs.extend(facts.envs.iter().cloned());
            for (env, def) in &facts.bound {
                if let Some(defs) = index.bound.get_mut(env) {
                    defs.insert(*def);
                } else {
                    index.bound.insert(env.clone(), HashSet::from([*def]));
                }
            }
            index
                .calls
                .extend(facts.calls.iter().map(|(f, callees)| (*f, callees.clone())));
        }
        index.envs.sort();
        index.envs.dedup();
        index
    }
}

/// One module's contribution to the [`WorkspaceIndex`]; when an edit leaves it
/// unchanged, the other modules' cross-module diagnostics stay valid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModuleFacts {
    envs: Vec<String>,
    bound: Vec<(String, DefId)>,
    calls: Vec<(DefId, Vec<DefId>)>,
}

impl ModuleFacts {
    fn of(m: &Module) -> Self {
        let mut envs: Vec<String> = m
            .ast
            .items
            .iter()
            .filter_map(|item| match &item.kind {
                ast::ItemKind::Bindings(b) => Some(b.env.name.clone()),
                _ => None,
            })
            .collect();
        envs.sort();
        envs.dedup();
        let calls = m
            .flows
            .iter()
            .map(|f| {
                let mut callees: Vec<DefId> = f
                    .nodes
                    .iter()
                    .filter_map(|n| match n.call.callee {
                        Callee::Flow(d) => Some(d),
                        _ => None,
                    })
                    .collect();
                callees.sort();
                callees.dedup();
                (f.def, callees)
            })
            .collect();
        ModuleFacts {
            envs,
            bound: m.bound.clone(),
            calls,
        }
    }
}

impl Analysis {
    /// Analyse files and directories (searched recursively for `.eflow` files).
    ///
    /// Module names (part of every contract's qualified name and of each flow's
    /// version) are paths from the directory given, or from the closest
    /// directory holding everything given: the same files get the same names
    /// and versions wherever the compiler runs. Diagnostics still show paths
    /// from the working directory.
    pub fn from_paths(paths: &[PathBuf], loader: &dyn Loader) -> Result<Analysis, InputError> {
        let mut files = Vec::new();
        for p in paths {
            collect_files(p, &mut files)?;
        }
        let base = common_base(paths);
        let mut inputs = Vec::new();
        for f in files {
            let loaded = load(loader, &f).map_err(|source| InputError::Read {
                path: f.display().to_string(),
                source,
            })?;
            inputs.push((f, loaded));
        }
        Ok(Analysis::analyse(inputs, base, loader))
    }

    /// Analyse files whose text is given; imports are read through `loader`.
    /// Module names are paths from the working directory.
    pub fn from_texts(inputs: Vec<(PathBuf, String)>, loader: &dyn Loader) -> Analysis {
        let inputs = inputs
            .into_iter()
            .map(|(path, text)| {
                (
                    path,
                    Loaded {
                        text,
                        not_utf8: None,
                    },
                )
            })
            .collect();
        Analysis::analyse(inputs, None, loader)
    }

    fn analyse(
        inputs: Vec<(PathBuf, Loaded)>,
        base: Option<PathBuf>,
        loader: &dyn Loader,
    ) -> Analysis {
        let mut a = Analysis {
            sources: Sources::default(),
            modules: Vec::new(),
            roots: Vec::new(),
            base,
            index: WorkspaceIndex::default(),
        };
        let mut seen = HashSet::new();
        for (path, text) in inputs {
            let key = canonical(&path);
            if !seen.insert(key.clone()) {
                continue;
            }
            let id = a.add_file(display_canonical(&key), Some(key), text, false);
            a.roots.push(id);
        }
        a.load_imports(loader);
        a.check_all();
        a
    }

    fn add_file(
        &mut self,
        name: String,
        path: Option<PathBuf>,
        Loaded { text, not_utf8 }: Loaded,
        is_std: bool,
    ) -> FileId {
        let file = FileId(self.sources.len() as u32);
        // A file that is not UTF-8 is not parsed: its one diagnostic says where it
        // stops being text, and everything it would declare counts as declared.
        let (ast, syntax_diagnostics) = match not_utf8 {
            None => syntax::parse(file, &text),
            Some((at, byte)) => (
                ast::File::default(),
                vec![not_utf8_diagnostic(file, at, byte)],
            ),
        };
        let module = match (&self.base, &path) {
            (Some(base), Some(p)) if !is_std => relative(base, p),
            _ => name.clone(),
        };
        let id = self.sources.add(SourceFile::new(name, path, text));
        self.modules.push(Module {
            file: id,
            name: module.trim_end_matches(".eflow").to_string(),
            ast,
            namespace: Namespace::default(),
            imports: HashMap::new(),
            sigs: Vec::new(),
            flows: Vec::new(),
            step_defaults: HashMap::new(),
            bindings: Vec::new(),
            bound: Vec::new(),
            is_std,
            diagnostics: Vec::new(),
            workspace_diagnostics: Vec::new(),
            resolutions: Vec::new(),
            import_resolutions: Vec::new(),
            facts: ModuleFacts::default(),
            syntax_diagnostics,
            import_diagnostics: Vec::new(),
        });
        id
    }

    /// Follow imports until every imported file is loaded.
    fn load_imports(&mut self, loader: &dyn Loader) {
        let mut next = 0;
        while next < self.modules.len() {
            let file = FileId(next as u32);
            let mut imports = HashMap::new();
            let mut diags = Vec::new();
            let requests: Vec<(usize, ast::StrLit)> = self.modules[next]
                .ast
                .items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match &item.kind {
                    ast::ItemKind::Import(imp) => Some((i, imp.path.clone())),
                    _ => None,
                })
                .collect();
            for (i, path) in requests {
                match self.resolve_import(file, &path.value, loader) {
                    Ok(target) => {
                        imports.insert(i, target);
                    }
                    Err(why) => diags.push(
                        Diagnostic::new(
                            Code::UnresolvedImport,
                            file,
                            path.span,
                            format!("cannot import `{}`: {why}", path.value),
                        )
                        .with_label("imported here")
                        .with_help(import_help(&path.value)),
                    ),
                }
            }
            self.modules[next].imports = imports;
            self.modules[next].import_diagnostics = diags;
            next += 1;
        }
    }

    fn resolve_import(
        &mut self,
        from: FileId,
        spec: &str,
        loader: &dyn Loader,
    ) -> Result<FileId, String> {
        let importer = &self.modules[from.0 as usize];
        let std_name = if let Some(rest) = spec.strip_prefix("std/") {
            Some(format!("std/{rest}"))
        } else if importer.is_std {
            Some(normalize(
                &Path::new(&importer.name)
                    .parent()
                    .unwrap_or(Path::new("std"))
                    .join(spec),
            ))
        } else {
            None
        };
        if let Some(name) = std_name {
            let Some((name, text)) = stdlib::get(&name) else {
                let known: Vec<String> = stdlib::FILES
                    .iter()
                    .map(|(n, _)| n.trim_end_matches(".eflow").to_string())
                    .collect();
                return Err(format!(
                    "the standard library has no module `{name}` (it has `{}`)",
                    known.join("`, `")
                ));
            };
            if let Some(id) = self.sources.find_name(name) {
                return Ok(id);
            }
            let text = Loaded {
                text: text.to_string(),
                not_utf8: None,
            };
            return Ok(self.add_file(name.to_string(), None, text, true));
        }
        let base = self
            .sources
            .get(from)
            .path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let mut path = base.join(spec);
        if path.extension().is_none_or(|e| e != "eflow") {
            path.set_extension("eflow");
        }
        let key = canonical(&path);
        if let Some(id) = self.sources.find_path(&key) {
            return Ok(id);
        }
        let text = load(loader, &key).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!("no file `{}`", display_canonical(&key)),
            _ => format!("cannot read `{}`: {e}", display_canonical(&key)),
        })?;
        Ok(self.add_file(display_canonical(&key), Some(key), text, false))
    }

    /// Resolve and check everything.
    fn check_all(&mut self) {
        for i in 0..self.modules.len() {
            self.build_namespace(i);
        }
        // Signatures first, for every module: bodies refer to other modules' ones.
        let mut sig_results = Vec::with_capacity(self.modules.len());
        {
            let world = World::new(&self.modules);
            for m in &self.modules {
                let cx = ModuleCx::new(m.file, &m.namespace);
                let sigs = module_sigs(&world, &cx);
                sig_results.push((sigs, cx.diags.take(), cx.into_resolved()));
            }
        }
        let mut pending = Vec::with_capacity(self.modules.len());
        for (m, (sigs, diags, used)) in self.modules.iter_mut().zip(sig_results) {
            m.sigs = sigs;
            pending.push((diags, used));
        }
        let results: Vec<BodyResults> = {
            let world = World::new(&self.modules);
            self.modules
                .iter()
                .zip(pending)
                .map(|(m, (diags, used))| {
                    let text = &self.sources.get(m.file).text;
                    check_bodies(world, m.file, text, &m.namespace, diags, used)
                })
                .collect()
        };
        for (m, results) in self.modules.iter_mut().zip(results) {
            m.set_results(results);
        }
        for i in 0..self.modules.len() {
            self.add_import_fixes(i);
        }
        self.check_workspace();
    }

    fn build_namespace(&mut self, i: usize) {
        let file = FileId(i as u32);
        // Name diagnostics of a previous run would otherwise stay after a re-check
        // (`update` re-runs this for every module); only unresolved imports come
        // from loading, before this.
        self.modules[i]
            .import_diagnostics
            .retain(|d| d.code == Code::UnresolvedImport);
        let mut symbols: HashMap<String, Symbol> = HashMap::new();
        let mut broken_names = HashSet::new();
        let mut diags = Vec::new();
        let mut resolved = Vec::new();
        for (name, sym) in own_items(file, &self.modules[i].ast) {
            if let Some(prev) = symbols.get(&name) {
                let ident = ast::Ident {
                    name: name.clone(),
                    span: sym.span,
                };
                diags.push(crate::check::sigs::duplicate(
                    file, &ident, prev.span, "name",
                ));
                continue;
            }
            symbols.insert(name, sym);
        }
        for (idx, item) in self.modules[i].ast.items.iter().enumerate() {
            let ast::ItemKind::Import(imp) = &item.kind else {
                continue;
            };
            let Some(&target) = self.modules[i].imports.get(&idx) else {
                continue;
            };
            resolved.push(Resolution {
                span: imp.path.span,
                def: Def::Module(target),
                decl: false,
                ty: None,
            });
            let target_items = own_items(target, &self.modules[target.0 as usize].ast);
            let mut target_broken = None;
            for n in &imp.names {
                let Some((_, sym)) = target_items.iter().find(|(name, _)| *name == n.name.name)
                else {
                    // An item of the other file that failed to parse (or a file that
                    // is not UTF-8) may declare it: its own error says what is wrong.
                    let t = &self.modules[target.0 as usize];
                    let broken = target_broken
                        .get_or_insert_with(|| Broken::of(&self.sources.get(target).text, &t.ast));
                    let unreadable = t.syntax_diagnostics.iter().any(|d| d.code == Code::NotUtf8);
                    if unreadable || broken.declared.contains(&n.name.name) {
                        broken_names.insert(n.local().name.clone());
                        continue;
                    }
                    let help = || {
                        let mut names: Vec<&str> =
                            target_items.iter().map(|(n, _)| n.as_str()).collect();
                        names.sort();
                        if names.is_empty() {
                            "that module defines nothing".to_string()
                        } else {
                            format!("it defines `{}`", names.join("`, `"))
                        }
                    };
                    diags.push(
                        Diagnostic::new(
                            Code::ImportNotFound,
                            file,
                            n.name.span,
                            format!("`{}` does not define `{}`", imp.path.value, n.name),
                        )
                        .with_label("not found in that module")
                        .with_did_you_mean(
                            &n.name.name,
                            target_items.iter().map(|(n, _)| n.as_str()),
                            help,
                        ),
                    );
                    continue;
                };
                for name in [Some(&n.name), n.alias.as_ref()].into_iter().flatten() {
                    resolved.push(Resolution {
                        span: name.span,
                        def: Def::Item(sym.def),
                        decl: false,
                        ty: None,
                    });
                }
                let local = n.local();
                if let Some(prev) = symbols.get(&local.name) {
                    diags.push(
                        Diagnostic::new(
                            Code::Duplicate,
                            file,
                            local.span,
                            format!("`{}` is already defined in this file", local.name),
                        )
                        .with_secondary(file, prev.span, "defined here")
                        .with_help(format!(
                            "import it under another name: `{} as Other{}`",
                            n.name, n.name
                        )),
                    );
                    continue;
                }
                symbols.insert(
                    local.name.clone(),
                    Symbol {
                        def: sym.def,
                        kind: sym.kind,
                        span: local.span,
                        import: Some(idx),
                    },
                );
            }
        }
        let m = &mut self.modules[i];
        m.namespace = Namespace {
            symbols,
            broken: broken_names,
        };
        m.import_diagnostics.extend(diags);
        m.import_resolutions = resolved;
    }

    /// Checks across modules: recursive subflows and missing bindings.
    fn check_workspace(&mut self) {
        for m in &mut self.modules {
            m.facts = ModuleFacts::of(m);
        }
        self.index = WorkspaceIndex::build(&self.modules);
        for i in 0..self.modules.len() {
            self.check_workspace_of(i);
        }
    }

    /// The cross-module diagnostics whose primary place is in module `i`.
    fn check_workspace_of(&mut self, i: usize) {
        let m = &self.modules[i];
        let mut out = Vec::new();
        let name_of = |d: DefId| {
            self.modules[d.file.0 as usize]
                .flows
                .iter()
                .find(|f| f.def == d)
                .map(|f| f.name.to_string())
                .unwrap_or_default()
        };
        graph::check_recursion(m.file, &m.flows, &self.index.calls, name_of, &mut out);
        if !m.is_std {
            let mut reported = HashSet::new();
            for f in &m.flows {
                for n in &f.nodes {
                    let (Callee::Step(def), Some(kind)) = (n.call.callee, n.call.step_kind) else {
                        continue;
                    };
                    if !matches!(kind, ast::StepKind::Remote | ast::StepKind::Call) {
                        continue;
                    }
                    // The environments of the flow's own file: another file
                    // compiled with it can bind its steps, but never adds an
                    // environment it must be bound in.
                    for env in &m.facts.envs {
                        let bound = self
                            .index
                            .bound
                            .get(env)
                            .is_some_and(|steps| steps.contains(&def));
                        if bound || !reported.insert((def, env.as_str())) {
                            continue;
                        }
                        out.push(
                            Diagnostic::new(
                                Code::MissingBinding,
                                m.file,
                                n.call.callee_span,
                                format!("`{}` has no binding in environment `{env}`", n.call.callee_name),
                            )
                            .with_label(format!("runs in `{env}` with no connector"))
                            .with_help(format!(
                                "add `{} = sim {{ duration: 1m }}` (or `http {{ url: \"…\" }}`) to `bindings {env} {{ … }}`",
                                n.call.callee_name
                            )),
                        );
                    }
                }
            }
        }
        self.modules[i].workspace_diagnostics = out;
    }

    /// The fixes of module `i`'s unknown names that another module defines:
    /// import it from there. They need every module, so they are added once the
    /// module's bodies are checked.
    fn add_import_fixes(&mut self, i: usize) {
        let file = FileId(i as u32);
        let mut fixes = Vec::new();
        for (k, d) in self.modules[i].diagnostics.iter().enumerate() {
            let fits = |kind: SymbolKind| match d.code {
                Code::UnknownType => kind.is_type(),
                Code::UnknownCallee => kind.is_callable(),
                Code::UnknownName => kind == SymbolKind::Enum,
                _ => false,
            };
            if !matches!(
                d.code,
                Code::UnknownType | Code::UnknownCallee | Code::UnknownName
            ) || d.primary.file != file
            {
                continue;
            }
            let text = &self.sources.get(file).text;
            let Some(written) =
                text.get(d.primary.span.start as usize..d.primary.span.end as usize)
            else {
                continue;
            };
            for def in self.items_named(written) {
                let kind = own_items(def.file, &self.modules[def.file.0 as usize].ast)
                    .into_iter()
                    .find(|(_, s)| s.def == def)
                    .map(|(_, s)| s.kind);
                if def.file == file || !kind.is_some_and(fits) {
                    continue;
                }
                if let (Some(edit), Some(from)) = (
                    self.import_edit(file, def.file, written),
                    self.import_path(file, def.file),
                ) {
                    fixes.push((
                        k,
                        Fix {
                            title: format!("Import `{written}` from \"{from}\""),
                            edits: vec![edit],
                            preferred: true,
                        },
                    ));
                }
            }
        }
        for (k, fix) in fixes {
            self.modules[i].diagnostics[k].fixes.push(fix);
        }
    }

    /// Every top-level item named `name`, in every module, the workspace's
    /// modules before the standard library's.
    pub fn items_named(&self, name: &str) -> Vec<DefId> {
        let mut out: Vec<DefId> = self
            .modules
            .iter()
            .flat_map(|m| own_items(m.file, &m.ast))
            .filter(|(n, _)| n == name)
            .map(|(_, s)| s.def)
            .collect();
        out.sort_by_key(|d| self.modules[d.file.0 as usize].is_std);
        out
    }

    /// The import path `from` would write for the module `target`: `std/ml` for
    /// the standard library, a `./`-relative path otherwise.
    pub fn import_path(&self, from: FileId, target: FileId) -> Option<String> {
        let m = self.modules.get(target.0 as usize)?;
        if m.is_std {
            return Some(m.name.clone());
        }
        let from_path = self.sources.get(from).path.as_ref()?;
        let to_path = self.sources.get(target).path.as_ref()?;
        relative_import(from_path.parent()?, to_path)
    }

    /// The edit that imports `name` from `target` into `file`: added to an
    /// import of that module, else a new import after the others, else a new
    /// import at the top.
    pub fn import_edit(&self, file: FileId, target: FileId, name: &str) -> Option<Edit> {
        let path = self.import_path(file, target)?;
        let m = self.modules.get(file.0 as usize)?;
        let edit = |at: u32, text: String| Edit {
            file,
            span: Span { start: at, end: at },
            text,
        };
        let imports: Vec<&ast::Item> = m
            .ast
            .items
            .iter()
            .filter(|i| matches!(i.kind, ast::ItemKind::Import(_)))
            .collect();
        for it in &imports {
            if let ast::ItemKind::Import(imp) = &it.kind
                && imp.path.value.trim_end_matches(".eflow") == path
                && let Some(last) = imp.names.last()
            {
                let end = last.alias.as_ref().unwrap_or(&last.name).span.end;
                return Some(edit(end, format!(", {name}")));
            }
        }
        if let Some(last) = imports.last() {
            return Some(edit(
                last.span.end,
                format!("\nfrom \"{path}\" import {name}"),
            ));
        }
        let at = m
            .ast
            .items
            .first()
            .map(|i| i.doc.as_ref().map_or(i.span.start, |d| d.span.start))
            .unwrap_or(0);
        Some(edit(at, format!("from \"{path}\" import {name}\n\n")))
    }

    /// What every name resolves to: the semantic model.
    pub fn semantics(&self) -> Semantics<'_> {
        Semantics::new(self)
    }

    /// Every environment named by a `bindings` block, sorted.
    pub fn environments(&self) -> &[String] {
        &self.index.envs
    }

    /// Re-check after one file's text changed. Only that file is re-parsed; if its
    /// imports or the signatures it exports change, the rest is re-checked too,
    /// otherwise only its bodies are.
    pub fn update(&mut self, file: FileId, text: String, loader: &dyn Loader) {
        let i = file.0 as usize;
        let (ast, syntax_diagnostics) = syntax::parse(file, &text);
        let old = &self.sources.get(file);
        let name = old.name.clone();
        let path = old.path.clone();
        let imports_of = |f: &ast::File| -> Vec<(String, Vec<String>)> {
            f.items
                .iter()
                .filter_map(|it| match &it.kind {
                    ast::ItemKind::Import(imp) => Some((
                        imp.path.value.clone(),
                        imp.names.iter().map(|n| n.local().name.clone()).collect(),
                    )),
                    _ => None,
                })
                .collect()
        };
        let same_imports = imports_of(&ast) == imports_of(&self.modules[i].ast);
        self.sources
            .replace(file, SourceFile::new(name, path, text));
        let old_items = own_items(file, &self.modules[i].ast);
        let m = &mut self.modules[i];
        m.ast = ast;
        m.syntax_diagnostics = syntax_diagnostics;
        let same_names = own_items(file, &m.ast) == old_items;
        if !same_imports {
            m.import_diagnostics.clear();
            // Import targets may be new files: reload from this module on.
            self.reload_imports_of(file, loader);
            self.check_all();
            return;
        }
        if !same_names {
            m.import_diagnostics
                .retain(|d| d.code == Code::UnresolvedImport);
            self.check_all();
            return;
        }
        self.modules[i]
            .import_diagnostics
            .retain(|d| d.code == Code::UnresolvedImport);
        self.build_namespace(i);
        let (sigs, sig_diags, used) = {
            let world = World::new(&self.modules);
            let m = &self.modules[i];
            let cx = ModuleCx::new(file, &m.namespace);
            let sigs = module_sigs(&world, &cx);
            (sigs, cx.diags.take(), cx.into_resolved())
        };
        if sigs != self.modules[i].sigs {
            // What other modules see of this one changed: check them again too.
            self.check_all();
            return;
        }
        let results = {
            let world = World::new(&self.modules);
            let m = &self.modules[i];
            let text = &self.sources.get(file).text;
            check_bodies(world, file, text, &m.namespace, sig_diags, used)
        };
        self.modules[i].set_results(results);
        self.add_import_fixes(i);
        let facts = ModuleFacts::of(&self.modules[i]);
        if facts == self.modules[i].facts {
            // Nothing other modules' checks read has changed.
            self.check_workspace_of(i);
        } else {
            self.check_workspace();
        }
    }

    fn reload_imports_of(&mut self, _file: FileId, loader: &dyn Loader) {
        self.load_imports(loader);
    }

    /// Every diagnostic, in reading order.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self
            .modules
            .iter()
            .flat_map(|m| m.diagnostics.iter().cloned())
            .chain(
                self.modules
                    .iter()
                    .flat_map(|m| m.workspace_diagnostics.iter().cloned()),
            )
            .collect();
        diagnostics::sort(&mut all);
        all.dedup();
        all
    }

    pub fn has_errors(&self) -> bool {
        self.modules
            .iter()
            .any(|m| m.diagnostics.iter().any(Diagnostic::is_error))
            || self
                .modules
                .iter()
                .any(|m| m.workspace_diagnostics.iter().any(Diagnostic::is_error))
    }

    pub fn module(&self, file: FileId) -> &Module {
        &self.modules[file.0 as usize]
    }

    /// The defaults of step `def`'s parameters, by name: what a call that
    /// leaves one out passes.
    pub fn step_defaults(&self, def: DefId) -> &[(String, TExpr)] {
        self.modules
            .get(def.file.0 as usize)
            .and_then(|m| m.step_defaults.get(&def))
            .map_or(&[], Vec::as_slice)
    }

    pub fn flow(&self, def: DefId) -> Option<&CheckedFlow> {
        self.modules
            .get(def.file.0 as usize)?
            .flows
            .iter()
            .find(|f| f.def == def)
    }

    /// The bindings of every environment, by environment then step.
    pub fn bindings(&self) -> BTreeMap<&str, HashMap<DefId, &CheckedBinding>> {
        let mut out: BTreeMap<&str, HashMap<DefId, &CheckedBinding>> = BTreeMap::new();
        for m in &self.modules {
            for b in &m.bindings {
                out.entry(b.env.as_str())
                    .or_default()
                    .entry(b.step)
                    .or_insert(b);
            }
        }
        out
    }
}

/// A module's checked flows, its valid bindings with every (environment, step)
/// bound, and its diagnostics.
type BodyResults = (
    (Vec<CheckedFlow>, Vec<(DefId, Vec<(String, TExpr)>)>),
    (Vec<CheckedBinding>, Vec<(String, DefId)>),
    Vec<Diagnostic>,
    Vec<Resolution>,
);

impl Module {
    fn set_results(
        &mut self,
        ((flows, step_defaults), (bindings, bound), diags, resolutions): BodyResults,
    ) {
        self.step_defaults = step_defaults.into_iter().collect();
        self.resolutions = self
            .import_resolutions
            .iter()
            .cloned()
            .chain(resolutions)
            .collect();
        semantics::normalize(&mut self.resolutions);
        self.flows = flows;
        self.bindings = bindings;
        self.bound = bound;
        self.diagnostics = self
            .syntax_diagnostics
            .iter()
            .chain(&self.import_diagnostics)
            .cloned()
            .chain(diags)
            .collect();
        if self.is_std {
            // The standard library is checked by its own tests; its warnings are not
            // the user's to fix.
            self.diagnostics.retain(Diagnostic::is_error);
        }
    }
}

impl crate::check::Db for Vec<Module> {
    fn ast(&self, file: FileId) -> &ast::File {
        &self[file.0 as usize].ast
    }

    fn namespace(&self, file: FileId) -> &Namespace {
        &self[file.0 as usize].namespace
    }

    fn sigs(&self, file: FileId) -> &[ItemSig] {
        &self[file.0 as usize].sigs
    }

    fn is_std(&self, file: FileId) -> bool {
        self[file.0 as usize].is_std
    }
}

/// Check every flow and bindings block of one module, and its unused imports.
fn check_bodies(
    world: World,
    file: FileId,
    text: &str,
    ns: &Namespace,
    sig_diags: Vec<Diagnostic>,
    (sig_used, sig_resolutions): (HashSet<String>, Vec<Resolution>),
) -> BodyResults {
    let cx = ModuleCx::new(file, ns);
    cx.used_imports.borrow_mut().extend(sig_used);
    cx.resolutions.borrow_mut().extend(sig_resolutions);
    let types = TypeResolver {
        scope: &world,
        cx: &cx,
    };
    let ast = world.ast(file);
    let mut flows = Vec::new();
    let mut step_defaults = Vec::new();
    let mut bindings = Vec::new();
    let mut bound = Vec::new();
    for (idx, item) in ast.items.iter().enumerate() {
        match &item.kind {
            ast::ItemKind::Flow(decl) => {
                let def = DefId {
                    file,
                    item: idx as u32,
                };
                if let Some(f) = check_flow(
                    &cx,
                    &world,
                    &types,
                    def,
                    item.doc.as_ref().map(|d| d.text.clone()),
                    decl,
                ) {
                    flows.push(f);
                }
            }
            ast::ItemKind::Step(s) => {
                let def = DefId {
                    file,
                    item: idx as u32,
                };
                let defaults = check_step_defaults(&cx, &world, &types, def, s);
                step_defaults.push((def, defaults));
            }
            ast::ItemKind::Bindings(b) => {
                let (ok, attempted) = check_bindings(&cx, &world, b);
                bindings.extend(ok);
                bound.extend(attempted);
            }
            _ => {}
        }
    }
    let mut diags = sig_diags;
    diags.extend(cx.diags.take());
    for f in &flows {
        graph::check_flow_graph(file, f, &mut diags);
    }
    // What failed to parse still declares and uses names: its uses are not
    // missing names, and the imports it reads are not unused.
    let mut broken = Broken::of(text, ast);
    broken.declared.extend(ns.broken.iter().cloned());
    diags.retain(|d| !broken.hides(text, d));
    // A name that did not resolve is most often a misspelled use of an import, which
    // then looks unused: one mistake, one diagnostic, so unused imports wait until
    // every name resolves.
    let unresolved = diags.iter().any(|d| {
        matches!(
            d.code,
            Code::UnknownName | Code::UnknownType | Code::UnknownCallee
        )
    });
    let used = cx.used_imports.borrow();
    for (idx, item) in ast.items.iter().enumerate().filter(|_| !unresolved) {
        let ast::ItemKind::Import(imp) = &item.kind else {
            continue;
        };
        // Each name on its own; only names that resolved can be unused, the others
        // have their own error.
        for (pos, n) in imp.names.iter().enumerate() {
            if ns
                .get(&n.local().name)
                .is_some_and(|s| s.import == Some(idx))
                && !used.contains(&n.local().name)
                && !broken.words.contains(&n.local().name)
                && !bound_only(ast, &n.local().name)
            {
                diags.push(
                    Diagnostic::new(
                        Code::UnusedImport,
                        file,
                        n.local().span,
                        format!("`{}` is imported but never used", n.local()),
                    )
                    .with_help("remove it from the import")
                    .with_fix(Fix {
                        preferred: false,
                        ..Fix::edit(
                            format!("Remove unused import `{}`", n.local().name),
                            file,
                            unused_import_span(text, item, imp, pos),
                            "",
                        )
                    }),
                );
            }
        }
    }
    drop(used);
    (
        (flows, step_defaults),
        (bindings, bound),
        diags,
        cx.resolutions.into_inner(),
    )
}

/// E0005 at the first byte of a file that is not UTF-8.
fn not_utf8_diagnostic(file: FileId, at: usize, byte: u8) -> Diagnostic {
    // In the text shown, the invalid sequence is one U+FFFD.
    let span = Span::new(at, at + '\u{FFFD}'.len_utf8());
    Diagnostic::new(
        Code::NotUtf8,
        file,
        span,
        format!("this file is not UTF-8: byte {byte:#04x} cannot start or continue a character"),
    )
    .with_label("not UTF-8")
    .with_help(
        "eflow source is UTF-8: convert the file (for a Latin-1 file, `iconv -f latin1 -t utf-8`) or save it as UTF-8 in your editor",
    )
}

/// The words of a module's items and statements that failed to parse.
struct Broken {
    /// Every word in them: names they would have used.
    words: HashSet<String>,
    /// The names they would have declared (`record Spec {` … without its `}`).
    declared: HashSet<String>,
}

impl Broken {
    fn of(text: &str, ast: &ast::File) -> Broken {
        let mut spans = Vec::new();
        for item in &ast.items {
            match &item.kind {
                ast::ItemKind::Error => spans.push(item.span),
                ast::ItemKind::Flow(f) => broken_stmts(&f.body, &mut spans),
                _ => {}
            }
        }
        let mut broken = Broken {
            words: HashSet::new(),
            declared: HashSet::new(),
        };
        for span in spans {
            let part = text
                .get(span.start as usize..span.end as usize)
                .unwrap_or("");
            let words: Vec<&str> = part
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            for pair in words.windows(2) {
                if matches!(pair[0], "record" | "enum" | "type" | "step" | "flow") {
                    broken.declared.insert(pair[1].to_string());
                }
            }
            broken.words.extend(words.into_iter().map(str::to_string));
        }
        broken
    }

    /// `d` only repeats that a broken item did not declare a name.
    fn hides(&self, text: &str, d: &Diagnostic) -> bool {
        matches!(
            d.code,
            Code::UnknownName | Code::UnknownType | Code::UnknownCallee
        ) && text
            .get(d.primary.span.start as usize..d.primary.span.end as usize)
            .is_some_and(|name| self.declared.contains(name))
    }
}

fn broken_stmts(body: &[ast::Stmt], out: &mut Vec<Span>) {
    for st in body {
        match &st.kind {
            ast::StmtKind::Error => out.push(st.span),
            ast::StmtKind::When(w) => {
                broken_stmts(&w.then_body, out);
                if let Some(e) = &w.else_body {
                    broken_stmts(e, out);
                }
            }
            _ => {}
        }
    }
}

/// What to delete to remove the `pos`th name of an import: the name and a comma
/// beside it, or the whole line when it is the only one.
fn unused_import_span(text: &str, item: &ast::Item, imp: &ast::Import, pos: usize) -> Span {
    let n = &imp.names[pos];
    let name_span = n.name.span.to(n.local().span);
    if imp.names.len() == 1 {
        let mut end = item.span.end as usize;
        if text.get(end..end + 1) == Some("\n") {
            end += 1;
        }
        Span::new(item.span.start as usize, end)
    } else if pos + 1 < imp.names.len() {
        Span {
            start: name_span.start,
            end: imp.names[pos + 1].name.span.start,
        }
    } else {
        Span {
            start: imp.names[pos - 1].local().span.end,
            end: name_span.end,
        }
    }
}

/// Names used only in bindings are used.
fn bound_only(ast: &ast::File, name: &str) -> bool {
    ast.items.iter().any(|it| match &it.kind {
        ast::ItemKind::Bindings(b) => {
            b.entries.iter().any(|e| e.step.name == name) || b.broken.iter().any(|s| s.name == name)
        }
        _ => false,
    })
}

/// `./x`, `../shared/x`: `to` relative to the directory `from_dir`, without `.eflow`.
pub fn relative_import(from_dir: &Path, to: &Path) -> Option<String> {
    let from: Vec<_> = from_dir.components().collect();
    let stem = to.with_extension("");
    let target: Vec<_> = stem.components().collect();
    let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = Vec::new();
    for _ in common..from.len() {
        parts.push("..".to_string());
    }
    for c in &target[common..] {
        parts.push(c.as_os_str().to_str()?.to_string());
    }
    let joined = parts.join("/");
    Some(if joined.starts_with("..") {
        joined
    } else {
        format!("./{joined}")
    })
}

fn import_help(spec: &str) -> String {
    if spec.starts_with("std/") {
        "standard library modules are imported as `std/<module>`, e.g. `from \"std/ml\" import Dataset`".to_string()
    } else {
        "paths are relative to this file's folder, e.g. `from \"./features\" import Refresh`; the `.eflow` extension is optional".to_string()
    }
}

/// The `.eflow` files at a path: the file itself, or every one under a directory
/// (hidden directories and `target` skipped), sorted.
pub fn collect_eflow_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    collect_files(p, out)
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let meta = std::fs::metadata(p).map_err(|source| InputError::Read {
        path: p.display().to_string(),
        source,
    })?;
    if meta.is_file() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let before = out.len();
    walk(p, out).map_err(|source| InputError::Read {
        path: p.display().to_string(),
        source,
    })?;
    if out.len() == before {
        return Err(InputError::Empty(p.display().to_string()));
    }
    out[before..].sort();
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') || n == "target");
            if !hidden {
                walk(&path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "eflow") {
            out.push(path);
        }
    }
    Ok(())
}

/// An absolute, normalized path used to recognise the same file twice.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(path)
        };
        PathBuf::from(normalize(&abs))
    })
}

/// `path` seen from the directory `base`, with `..` where it lies outside.
fn relative(base: &Path, path: &Path) -> String {
    let b: Vec<Component> = base.components().collect();
    let p: Vec<Component> = path.components().collect();
    let same = b.iter().zip(&p).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in same..b.len() {
        rel.push("..");
    }
    for c in &p[same..] {
        rel.push(c);
    }
    normalize(&rel)
}

/// The directory that module names are relative to: a directory given, or
/// the one holding a file given; for several, their closest common ancestor.
fn common_base(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut base: Option<PathBuf> = None;
    for p in paths {
        let key = canonical(p);
        let dir = if key.is_dir() {
            key
        } else {
            key.parent()?.to_path_buf()
        };
        base = Some(match base {
            None => dir,
            Some(b) => {
                let mut common = PathBuf::new();
                for (x, y) in b.components().zip(dir.components()) {
                    if x != y {
                        break;
                    }
                    common.push(x);
                }
                common
            }
        });
    }
    base
}

/// Resolve `.` and `..` lexically; `/` separators.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut absolute = false;
    for c in path.components() {
        match c {
            Component::RootDir => absolute = true,
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..".into());
                }
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// How a file is shown to users and in the IR: relative to the working directory
/// when under it.
pub fn display_name(path: &Path) -> String {
    display_canonical(&canonical(path))
}

/// [`display_name`] of a path already made canonical (resolving a path costs a
/// system call per component).
fn display_canonical(abs: &Path) -> String {
    static CWD: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    if let Some(cwd) =
        CWD.get_or_init(|| std::env::current_dir().and_then(std::fs::canonicalize).ok())
        && let Ok(rel) = abs.strip_prefix(cwd)
    {
        return normalize(rel);
    }
    normalize(abs)
}
