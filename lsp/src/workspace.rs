//! The server's view of the files: the editor's open buffers over the disk, the
//! analysis of the whole workspace, and how files map to the protocol's URIs.
//!
//! Edits only record text and mark the file dirty; the analysis is brought up to
//! date when a feature needs it ([`Workspace::refresh`]), so a burst of keystrokes
//! costs one re-check, not one per keystroke.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Component, Path, PathBuf};

use eflow_compiler::analysis::FileId;
use eflow_compiler::analysis::{Analysis, Loader};
use lsp_types::{TextDocumentContentChangeEvent, Url};

use crate::convert::{FileMap, LineIndex};
use crate::ide::Db;
use crate::ide::completion::FlowMemory;

/// An open editor buffer.
pub struct Document {
    pub uri: Url,
    pub text: String,
    pub version: i32,
}

use crate::ide::PRELUDE;

/// At most this many files are loaded from the workspace folders, so opening a
/// file in a huge directory (a home folder) does not read it all.
const MAX_WORKSPACE_FILES: usize = 5000;

pub struct Workspace {
    pub roots: Vec<PathBuf>,
    /// Open buffers by normalized path.
    pub docs: HashMap<PathBuf, Document>,
    pub analysis: Analysis,
    pub memory: FlowMemory,
    /// Where the standard library is written out so editors can open it.
    stdlib_dir: Option<PathBuf>,
    dirty: BTreeSet<PathBuf>,
    rebuild: bool,
    /// Bumped whenever the analysis changes.
    pub generation: u64,
}

/// Reads open buffers first, then the disk.
struct Overlay<'a>(&'a HashMap<PathBuf, Document>);

impl Loader for Overlay<'_> {
    fn read(&self, path: &Path) -> io::Result<String> {
        match self.0.get(&normalize(path)) {
            Some(d) => Ok(d.text.clone()),
            // The compiler's reader: a file that is not UTF-8 is its E0005.
            None => eflow_compiler::FsLoader.read(path),
        }
    }
}

impl Workspace {
    pub fn new(roots: Vec<PathBuf>) -> Workspace {
        let stdlib_dir = write_stdlib();
        let mut ws = Workspace {
            roots,
            docs: HashMap::new(),
            analysis: Analysis::from_texts(Vec::new(), &eflow_compiler::FsLoader),
            memory: FlowMemory::default(),
            stdlib_dir,
            dirty: BTreeSet::new(),
            rebuild: true,
            generation: 0,
        };
        ws.refresh();
        ws
    }

    pub fn db(&self) -> Db<'_> {
        Db::new(&self.analysis)
    }

    /// The path a URI names, normalized the way the analysis keys files; buffers
    /// that are not files get a path of their own that no disk file has.
    pub fn path_of(&self, uri: &Url) -> PathBuf {
        match uri.to_file_path() {
            Ok(p) => normalize(&p),
            Err(()) => {
                let mut name: String = uri
                    .as_str()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                if !name.ends_with(".eflow") {
                    name.push_str(".eflow");
                }
                PathBuf::from("/.eflow-lsp-unsaved").join(name)
            }
        }
    }

    fn stdlib_name(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(self.stdlib_dir.as_ref()?).ok()?;
        let rel = rel.to_str()?.replace('\\', "/");
        Some(rel)
    }

    pub fn is_stdlib(&self, path: &Path) -> bool {
        self.stdlib_name(path).is_some()
    }

    /// Whether a file is the server's own and must not be shown to the user.
    pub fn is_hidden(&self, file: FileId) -> bool {
        self.db().is_hidden(file)
    }

    pub fn file_of_path(&self, path: &Path) -> Option<FileId> {
        if let Some(name) = self.stdlib_name(path) {
            return self.analysis.sources.find_name(&name);
        }
        self.analysis.sources.find_path(path)
    }

    pub fn file_of(&self, uri: &Url) -> Option<FileId> {
        self.file_of_path(&self.path_of(uri))
    }

    pub fn url_of(&self, file: FileId) -> Option<Url> {
        if file.0 as usize >= self.analysis.sources.len() {
            return None;
        }
        let src = self.analysis.sources.get(file);
        match &src.path {
            Some(p) => {
                if let Some(d) = self.docs.get(p) {
                    return Some(d.uri.clone());
                }
                Url::from_file_path(p).ok()
            }
            None => {
                let dir = self.stdlib_dir.as_ref()?;
                Url::from_file_path(dir.join(&src.name)).ok()
            }
        }
    }

    /// The text an open buffer has now, else the analysed text.
    pub fn current_text(&self, uri: &Url) -> Option<&str> {
        let path = self.path_of(uri);
        if let Some(d) = self.docs.get(&path) {
            return Some(&d.text);
        }
        self.file_of_path(&path)
            .map(|f| self.analysis.sources.get(f).text.as_str())
    }

    pub fn open(&mut self, uri: Url, text: String, version: i32) {
        let path = self.path_of(&uri);
        let stdlib = self.is_stdlib(&path);
        self.docs
            .insert(path.clone(), Document { uri, text, version });
        if stdlib {
            // The standard library is read-only: its buffer is never analysed.
            return;
        }
        match self.file_of_path(&path) {
            Some(_) => {
                self.dirty.insert(path);
            }
            None => self.rebuild = true,
        }
    }

    pub fn change(
        &mut self,
        uri: &Url,
        version: i32,
        changes: Vec<TextDocumentContentChangeEvent>,
    ) {
        let path = self.path_of(uri);
        let Some(doc) = self.docs.get_mut(&path) else {
            return;
        };
        for c in changes {
            match c.range {
                Some(range) => {
                    let span = LineIndex::new(&doc.text).span(range);
                    doc.text
                        .replace_range(span.start as usize..span.end as usize, &c.text);
                }
                None => doc.text = c.text,
            }
        }
        doc.version = version;
        if !self.is_stdlib(&path) {
            self.dirty.insert(path);
        }
    }

    pub fn close(&mut self, uri: &Url) {
        let path = self.path_of(uri);
        if self.docs.remove(&path).is_none() || self.is_stdlib(&path) {
            return;
        }
        if path.is_file() && self.in_roots(&path) {
            // Back to what the disk says.
            self.dirty.insert(path);
        } else {
            self.rebuild = true;
        }
    }

    /// A file changed, appeared or disappeared on disk.
    pub fn disk_changed(&mut self, uri: &Url) {
        let path = self.path_of(uri);
        if self.docs.contains_key(&path) {
            return;
        }
        if path.is_file() && self.file_of_path(&path).is_some() {
            self.dirty.insert(path);
        } else {
            self.rebuild = true;
        }
    }

    fn in_roots(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r))
    }

    pub fn needs_refresh(&self) -> bool {
        self.rebuild || !self.dirty.is_empty()
    }

    /// Bring the analysis up to date with the buffers and the disk. A panic in
    /// the compiler is caught: the analysis is then rebuilt from scratch, and if
    /// that fails too, the server carries on with an empty one.
    pub fn refresh(&mut self) -> bool {
        if !self.needs_refresh() {
            return false;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let rebuild = std::mem::take(&mut self.rebuild);
        let ok = catch_unwind(AssertUnwindSafe(|| {
            if rebuild {
                self.rebuild_now();
            } else {
                self.update_now(&dirty);
            }
        }));
        if ok.is_err() {
            eprintln!("eflow-lsp: the analysis panicked; rebuilding it from scratch");
            let again = catch_unwind(AssertUnwindSafe(|| self.rebuild_now()));
            if again.is_err() {
                eprintln!(
                    "eflow-lsp: rebuilding the analysis panicked too; features are off until the next edit"
                );
                self.analysis = Analysis::from_texts(Vec::new(), &eflow_compiler::FsLoader);
            }
        }
        self.generation += 1;
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let db = Db::new(&self.analysis);
            self.memory.remember(db);
        }));
        true
    }

    fn update_now(&mut self, dirty: &BTreeSet<PathBuf>) {
        for path in dirty {
            let Some(file) = self.file_of_path(path) else {
                self.rebuild_now();
                return;
            };
            let text = match self.docs.get(path) {
                Some(d) => d.text.clone(),
                None => match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(_) => {
                        self.rebuild_now();
                        return;
                    }
                },
            };
            if self.analysis.sources.get(file).text == text {
                continue;
            }
            let overlay = Overlay(&self.docs);
            self.analysis.update(file, text, &overlay);
        }
    }

    fn rebuild_now(&mut self) {
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        for root in &self.roots {
            collect(root, &mut paths);
        }
        for (p, _) in self.docs.iter().filter(|(p, _)| !self.is_stdlib(p)) {
            paths.insert(p.clone());
        }
        let prelude: String = eflow_compiler::analysis::standard_library()
            .iter()
            .map(|(name, _)| {
                format!(
                    "from \"{}\" import EflowLspLoad\n",
                    name.trim_end_matches(".eflow")
                )
            })
            .collect();
        let mut inputs = vec![(PathBuf::from(PRELUDE), prelude)];
        for p in paths {
            let text = match self.docs.get(&p) {
                Some(d) => d.text.clone(),
                None => match std::fs::read_to_string(&p) {
                    Ok(t) => t,
                    Err(_) => continue,
                },
            };
            inputs.push((p, text));
        }
        let overlay = Overlay(&self.docs);
        self.analysis = Analysis::from_texts(inputs, &overlay);
    }
}

impl FileMap for Workspace {
    fn text(&self, file: FileId) -> &str {
        self.db().text(file)
    }

    fn url(&self, file: FileId) -> Option<Url> {
        self.url_of(file)
    }
}

fn collect(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if out.len() >= MAX_WORKSPACE_FILES {
            return;
        }
        let path = e.path();
        let Ok(ty) = e.file_type() else {
            continue;
        };
        let name = e.file_name();
        let name = name.to_string_lossy();
        if ty.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                collect(&path, out);
            }
        } else if ty.is_file() && name.ends_with(".eflow") {
            out.insert(normalize(&path));
        }
    }
}

/// The same normalization the analysis applies to paths: canonical when the file
/// exists, else absolute with `.` and `..` resolved.
pub fn normalize(path: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(path) {
        return c;
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Write the standard library to a cache folder, one folder per content, so go
/// to definition can open `std/ml.eflow` like any file.
fn write_stdlib() -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    eflow_compiler::analysis::standard_library().hash(&mut h);
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base
        .join("eflow-lsp")
        .join(format!("stdlib-{:016x}", h.finish()));
    for (name, text) in eflow_compiler::analysis::standard_library() {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == *text) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ok()?;
        }
        // Written to a temporary name first, so a concurrent server never reads
        // half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text).ok()?;
        std::fs::rename(&tmp, &path).ok()?;
    }
    Some(normalize(&dir))
}
